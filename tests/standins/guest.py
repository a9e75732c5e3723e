"""The "VM" behind a hypervisor stand-in: cove's real guest agent, run as a host process with
the agent config cove put into the initrd, reached through a unix socket.

The stand-in reads that config out of the initrd itself (the newc archive cove appends to the
base initramfs), so the token and services the test sees are the ones cove delivered.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import json
import os
import signal
import sys
from pathlib import Path

HEADER = 110  # "070701" and 13 eight-digit hex fields
AGENT_PORT = 1024
AGENT_CONFIG = "upper/cove/config.json"  # in the per-boot archive (cove.image.initramfs)


def initrd_files(data: bytes) -> dict[str, bytes]:
    """Every regular file in a chain of newc archives; a later one wins, as in the kernel."""
    files: dict[str, bytes] = {}
    at = 0
    while at + HEADER <= len(data):
        if data[at:at + 6] != b"070701":
            at += 4  # the padding between concatenated archives
            continue
        fields = [int(data[at + 6 + 8 * i:at + 14 + 8 * i], 16) for i in range(13)]
        mode, size, name_size = fields[1], fields[6], fields[11]
        name_at = at + HEADER
        name = data[name_at:name_at + name_size - 1].decode()
        body_at = name_at + name_size + (-(HEADER + name_size) % 4)
        if mode & 0o170000 == 0o100000:
            files[name] = data[body_at:body_at + size]
        at = body_at + size + (-size % 4)
    return files


def die_with_parent() -> None:
    """In the agent child: a guest ends when its hypervisor does, even by SIGKILL."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


class Guest:
    def __init__(self, initrd: Path, workdir: Path) -> None:
        self.initrd = initrd
        self.workdir = workdir
        self.socket = workdir / "agent.sock"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        files = initrd_files(self.initrd.read_bytes())
        config = json.loads(files[AGENT_CONFIG])
        # the same agent, its channel a unix socket instead of vsock (no vhost-vsock here)
        config.update(transport="unix", unix_path=str(self.socket))
        config_path = self.workdir / "agent-config.json"
        config_path.write_text(json.dumps(config))
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "cove.guest.agent", preexec_fn=die_with_parent,
            env={**os.environ, "COVE_AGENT_CONFIG": str(config_path)})

    async def relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One host connection to the agent's port, piped both ways."""
        for _ in range(200):
            try:
                agent_reader, agent_writer = await asyncio.open_unix_connection(str(self.socket))
                break
            except OSError:
                await asyncio.sleep(0.02)
        else:
            writer.close()
            return
        await asyncio.gather(pipe(reader, agent_writer), pipe(agent_reader, writer))

    def stop(self) -> None:
        """What a power button or Ctrl-Alt-Del does to a guest without an agent request."""
        if self.process is not None and self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)

    async def wait(self) -> None:
        if self.process is not None:
            await self.process.wait()


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    with contextlib.suppress(OSError):
        while data := await reader.read(1 << 16):
            writer.write(data)
            await writer.drain()
    writer.close()


async def serve_relay(path: Path, guest: Guest) -> asyncio.Server:
    """A plain unix socket into the agent: where AF_VSOCK would reach it (crosvm, kvmtool)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    return await asyncio.start_unix_server(guest.relay, str(path))
