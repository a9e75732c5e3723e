"""The real guest agent run as a host process over a unix socket, for fast tests of the
agent and of the host's client (no VM: what needs a guest kernel is tested in tests/vm)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from cove.vm.agent_client import AgentClient
from cove.vm.frames import Frame
from cove.vmm.vsock import unix_connector


@asynccontextmanager
async def running_agent(tmp: Path, services: dict[str, Any], frames: list[Frame],
                        token: str = "harness-token") -> AsyncIterator[tuple[AgentClient, Any]]:
    socket_path = tmp / "agent.sock"
    config = {"name": "test", "env": {}, "services": services, "transport": "unix",
              "unix_path": str(socket_path), "token": token}
    (tmp / "config.json").write_text(json.dumps(config))
    with (tmp / "agent.err").open("w") as errors:  # kept beside the test, for a failure
        process = subprocess.Popen([sys.executable, "-m", "cove.guest.agent"],
                                   env={**os.environ,
                                        "COVE_AGENT_CONFIG": str(tmp / "config.json")},
                                   stderr=errors)
    client = AgentClient(unix_connector(socket_path), frames.append, token)
    try:
        async with asyncio.timeout(10):
            await client.greet()
        yield client, process
    finally:
        await client.close()
        if process.poll() is None:
            process.kill()
        process.wait()
