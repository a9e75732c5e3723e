"""The guest agent's logic, run on the host over the socket transport (fast; no VM)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from cove.vm.agent_client import AgentClient, AgentError, greeted
from cove.vm.frames import Frame
from cove.vmm.vsock import unix_connector
from tests.agent_harness import running_agent
from tests.standins.guest import pipe


async def wait_until(frames: list[Frame], predicate: Any, timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not predicate(frames):
            await asyncio.sleep(0.02)


def ignore(_frame: Frame) -> None:
    """Frames a test does not look at."""


def events(frames: list[Frame], kind: str, svc: str) -> list[Frame]:
    return [f for f in frames if f.get("kind") == kind and f.get("svc") == svc]


def test_exec_status_and_stdin(tmp_path: Path) -> None:
    async def scenario() -> None:
        frames: list[Frame] = []
        async with running_agent(tmp_path, {}, frames) as (client, _process):
            out: list[bytes] = []
            code = await client.exec(["sh", "-c", "echo out; echo err >&2; exit 3"],
                                     lambda fd, data: out.append(data))
            assert code == 3
            assert b"".join(out) == b"out\nerr\n"
            big = b"x" * (3 * 2**20)  # more than a pipe holds: written without blocking
            counted: list[bytes] = []
            assert await client.exec(["wc", "-c"], lambda fd, d: counted.append(d),
                                     stdin=big) == 0
            assert b"".join(counted).strip() == str(len(big)).encode()
            assert (await client.request("ping"))["ok"]

    asyncio.run(scenario())


def test_health_check_transitions_and_output(tmp_path: Path) -> None:
    flag = tmp_path / "ready"
    services = {"web": {"command": "sleep 100", "health": {
        "command": f"test -e {flag} || {{ echo not ready; exit 1; }}", "interval": 0.2,
        "timeout": 1, "retries": 2, "start_period": 0}}}

    async def scenario() -> None:
        frames: list[Frame] = []
        async with running_agent(tmp_path, services, frames) as (client, _process):
            await wait_until(frames, lambda f: events(f, "unhealthy", "web"))
            assert events(frames, "unhealthy", "web")[0]["output"] == "not ready"
            flag.touch()
            await wait_until(frames, lambda f: events(f, "healthy", "web"))
            status = await client.request("status")
            assert status["services"]["web"]["health"] == "healthy"

    asyncio.run(scenario())


def test_a_starting_service_is_judged_on_its_interval(tmp_path: Path) -> None:
    """Checks run every second while starting, but failures count once per interval:
    retries=2 at interval 1.5 s cannot be unhealthy before 1.5 s after the first failure."""
    runs = tmp_path / "runs"
    services = {"web": {"command": "sleep 100", "health": {
        "command": f"date +%s.%N >> {runs}; echo no; exit 1", "interval": 1.5, "timeout": 1,
        "retries": 2, "start_period": 0}}}

    async def scenario() -> None:
        frames: list[Frame] = []
        async with running_agent(tmp_path, services, frames):
            await wait_until(frames, lambda f: events(f, "unhealthy", "web"))
        # Each check wrote its start time. A new listening port anywhere on this host
        # brings a check forward, so the checks' own times are the reference, and the
        # agent's clock (the event's ts) the verdict's.
        checks = [float(line) for line in runs.read_text().split()]
        unhealthy = events(frames, "unhealthy", "web")[0]["ts"]
        assert checks[1] - checks[0] < 1.45  # the starting cadence: faster than interval
        assert unhealthy - checks[0] >= 1.45, (checks, unhealthy)  # ... counted once in it

    asyncio.run(scenario())


def test_output_is_kept_while_no_host_listens(tmp_path: Path) -> None:
    services = {"ticker": {"command": "sleep 0.5; echo while-away; sleep 100"}}

    async def scenario() -> None:
        frames: list[Frame] = []
        async with running_agent(tmp_path, services, frames) as (client, _process):
            await client.close()  # the host goes away ...
            await asyncio.sleep(1.5)
            again: list[Frame] = []  # ... and a new one connects later
            second = AgentClient(unix_connector(tmp_path / "agent.sock"), again.append,
                                 "harness-token")
            await second.greet()
            await wait_until(again, lambda f: any(
                base64.b64decode(x.get("data", "")) == b"while-away\n" for x in f))
            await second.close()

    asyncio.run(scenario())


@pytest.mark.parametrize(("policy", "code", "restarts"), [
    ("on-failure", 3, True), ("on-failure", 0, False), ("never", 3, False), ("always", 0, True),
])
def test_restart_policy(tmp_path: Path, policy: str, code: int, restarts: bool) -> None:
    services = {"job": {"command": f"exit {code}", "restart": policy}}

    async def scenario() -> None:
        frames: list[Frame] = []
        async with running_agent(tmp_path, services, frames) as (_client, _process):
            await wait_until(frames, lambda f: events(f, "exited", "job"))
            await asyncio.sleep(1.0)  # the first backoff is 0.5 s
            assert bool(events(frames, "restarting", "job")) is restarts
            assert (len(events(frames, "started", "job")) > 1) is restarts

    asyncio.run(scenario())


def test_shutdown_stops_services_then_exits(tmp_path: Path) -> None:
    services = {"stubborn": {"command": "trap '' TERM; echo ready; sleep 100",
                             "stop_timeout": 0.5}}

    async def scenario() -> None:
        frames: list[Frame] = []
        async with running_agent(tmp_path, services, frames) as (client, process):
            await wait_until(frames, lambda f: any(  # the trap is set: TERM is ignored
                base64.b64decode(x.get("data", "")) == b"ready\n" for x in f))
            await client.request("shutdown")
            await wait_until(frames, lambda f: any(x.get("kind") == "poweroff" for x in f))
            assert events(frames, "stopped", "stubborn")[0]["code"] == 137  # SIGKILLed
            assert process.wait(timeout=5) == 0

    asyncio.run(scenario())


def test_a_host_without_the_boot_token_is_refused(tmp_path: Path) -> None:
    """Anyone who can reach the channel (on vsock: any local user) gets nothing without this
    boot's token; the right token still works afterwards."""

    async def scenario() -> None:
        async with running_agent(tmp_path, {}, []) as (client, _process):
            await client.close()
            for wrong in ("", "guessed", "harness-token\n"):
                stranger = AgentClient(unix_connector(tmp_path / "agent.sock"), ignore,
                                       wrong)
                await stranger.connect()
                with pytest.raises(AgentError, match="refused this connection"):
                    await asyncio.wait_for(stranger.hello, 5)
                with pytest.raises(AgentError):
                    await asyncio.wait_for(stranger.request("ping"), 5)
                await stranger.close()
            owner = AgentClient(unix_connector(tmp_path / "agent.sock"), ignore,
                                "harness-token")
            await owner.connect()
            await asyncio.wait_for(owner.hello, 5)
            assert (await owner.request("ping"))["ok"]
            await owner.close()

    asyncio.run(scenario())


@contextlib.asynccontextmanager
async def stuck_first_channel(front: Path, agent: Path, first: bytes
                              ) -> AsyncIterator[list[int]]:
    """A channel in front of the agent, as a hypervisor's socket is: its first connection
    is stuck (it writes `first`, a frame cut short, and never passes the hello on); later
    ones reach the agent. Yields the count of connections seen."""
    seen: list[int] = [0]

    async def connected(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen[0] += 1
        if seen[0] == 1:
            writer.write(first)
            await reader.read()  # swallows whatever comes, answers nothing
            writer.close()
            return
        agent_reader, agent_writer = await asyncio.open_unix_connection(str(agent))
        await asyncio.gather(pipe(reader, agent_writer), pipe(agent_reader, writer))

    server = await asyncio.start_unix_server(connected, str(front))
    async with server:
        yield seen


@pytest.mark.parametrize("first", [b"", b"\x00\x00\x01\x00{\"t\":\"log\""])
def test_a_stuck_channel_is_greeted_again(tmp_path: Path, first: bytes) -> None:
    """A daemon adopting a VM whose channel the last daemon left mid-frame (the hello is
    swallowed, or the answer starts with the tail of an old frame) hangs up and greets
    again, so it does not take a live guest for a dead one."""

    async def scenario() -> None:
        async with running_agent(tmp_path, {}, []) as (client, _process):
            await client.close()
            front = tmp_path / "front.sock"
            async with stuck_first_channel(front, tmp_path / "agent.sock", first) as seen:
                started = time.monotonic()
                agent = await greeted(unix_connector(front), ignore, "harness-token", 5.0)
                assert (await asyncio.wait_for(agent.request("ping"), 5))["ok"]
                assert seen[0] == 2 and time.monotonic() - started < 4.0
                await agent.close()
                with pytest.raises(AgentError, match="refused"):  # no retry can help that
                    await greeted(unix_connector(tmp_path / "agent.sock"), ignore, "wrong",
                                  5.0)

    asyncio.run(scenario())
