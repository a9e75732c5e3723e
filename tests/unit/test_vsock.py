"""Hybrid vsock (Firecracker, Cloud Hypervisor): the CONNECT/OK handshake, refusals, slow
peers; and the real agent reached through it."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from cove.vm.agent_client import AgentClient
from cove.vm.frames import Frame
from cove.vmm.vsock import VsockError, connect_hybrid, hybrid_connector, parse_ok
from tests.agent_harness import running_agent
from tests.standins.hybrid_vsock import HybridVsockStandIn


async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(4096):
        writer.write(data)
        await writer.drain()
    writer.close()


def test_parse_ok() -> None:
    assert parse_ok(b"OK 1073741824\n", 1024) == 1073741824
    with pytest.raises(VsockError, match="no listener"):
        parse_ok(b"", 1024)
    with pytest.raises(VsockError, match="refused"):
        parse_ok(b"ERR\n", 1024)


def test_handshake_then_stream(tmp_path: Path) -> None:
    async def scenario() -> bytes:
        async with HybridVsockStandIn(tmp_path / "v.sock", {1024: echo}):
            reader, writer = await connect_hybrid(tmp_path / "v.sock", 1024)
            writer.write(b"ping")
            await writer.drain()
            data = await reader.readexactly(4)
            writer.close()
            return data

    assert asyncio.run(scenario()) == b"ping"


@pytest.mark.parametrize(("reply", "words"), [(None, "no listener on guest vsock port 2000"),
                                              (b"NO\n", "refused: 'NO'")])
def test_refusals(tmp_path: Path, reply: bytes | None, words: str) -> None:
    async def scenario() -> None:
        async with HybridVsockStandIn(tmp_path / "v.sock", {1024: echo}, reply=reply):
            await connect_hybrid(tmp_path / "v.sock", 2000)

    with pytest.raises(VsockError, match=words):
        asyncio.run(scenario())


def test_slow_peer(tmp_path: Path) -> None:
    async def scenario(delay: float, timeout: float) -> None:
        async with HybridVsockStandIn(tmp_path / "v.sock", {1024: echo}, delay=delay):
            _, writer = await connect_hybrid(tmp_path / "v.sock", 1024, timeout=timeout)
            writer.close()

    asyncio.run(scenario(0.3, 2.0))  # slow but in time
    (tmp_path / "v.sock").unlink()
    with pytest.raises(VsockError, match=r"no answer to CONNECT 1024 within 0\.2 s"):
        asyncio.run(scenario(1.0, 0.2))


def test_agent_through_hybrid_vsock(tmp_path: Path) -> None:
    """The host's agent client, through the handshake, to a real agent (as in a guest)."""

    async def scenario() -> int:
        async with running_agent(tmp_path, {}, []) as (_direct, _process):
            async def relay(reader: asyncio.StreamReader,
                            writer: asyncio.StreamWriter) -> None:
                agent_reader, agent_writer = await asyncio.open_unix_connection(
                    str(tmp_path / "agent.sock"))
                await asyncio.gather(pipe(reader, agent_writer), pipe(agent_reader, writer))

            async with HybridVsockStandIn(tmp_path / "v.sock", {1024: relay}):
                frames: list[Frame] = []
                client = AgentClient(hybrid_connector(tmp_path / "v.sock", 1024), frames.append,
                                     "harness-token")
                await client.connect()
                await asyncio.wait_for(client.hello, 5)
                out: list[bytes] = []
                code = await client.exec(["sh", "-c", "echo via vsock; exit 4"],
                                         lambda _fd, data: out.append(data))
                await client.close()
                assert b"".join(out) == b"via vsock\n"
                return code

    assert asyncio.run(scenario()) == 4


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while data := await reader.read(65536):
        writer.write(data)
        await writer.drain()
    writer.close()
