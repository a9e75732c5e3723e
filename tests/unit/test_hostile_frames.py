"""The host against a guest that speaks the agent protocol badly on purpose (no VM: a
stand-in agent on a unix socket; tests/vm/test_hostile.py boots the same in real guests).

For each case the host's client must fail at once with a reason, never hang, and never
pass a guest's field on as the host's own."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cove.guest import proto
from cove.vm.agent_client import AgentClient, AgentError
from cove.vm.frames import GuestViolation, checked
from cove.vmm.vsock import unix_connector
from tests.agent_harness import running_agent

HELLO = proto.encode({"t": "hello", "v": 1, "caps": ["binary"]})


def frame_bytes(obj: object) -> bytes:
    body = json.dumps(obj).encode()
    return struct.pack(">I", len(body)) + body


CASES: dict[str, tuple[bytes, str]] = {
    "oversized": (struct.pack(">I", proto.MAX_FRAME + 1), "exceeds the limit"),
    "not json": (struct.pack(">I", 5) + b"{nope", "bad frame"),
    "not an object": (frame_bytes([1, 2]), "JSON object"),
    "unknown kind": (frame_bytes({"t": "takeover"}), "unknown kind 'takeover'"),
    "wrong type": (frame_bytes({"t": "log", "svc": "a", "fd": "1", "data": ""}),
                   "log frame whose fd"),
    "missing field": (frame_bytes({"t": "res", "ok": True}), "res frame without id"),
    "huge text": (frame_bytes({"t": "event", "kind": "unhealthy", "output": "x" * 70_000}),
                  "whose output is a str of 70000"),
    "bad data frame": (struct.pack(">I", 3 | proto.DATA_FRAME) + b"\x07\x01\x00",
                       "bad data frame"),
    "nan": (struct.pack(">I", 30) + b'{"t":"log","svc":"a","fd":1,"ts":NaN,"data":""}'[:30],
            "bad frame"),
}


async def hostile_agent(path: Path, payload: bytes, ready: asyncio.Event) -> None:
    """Answers the host's hello properly, then sends `payload`, then stays silent."""
    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.read(4096)
        writer.write(HELLO + payload)
        await writer.drain()
        await asyncio.sleep(30)

    server = await asyncio.start_unix_server(serve, path)
    ready.set()
    async with server:
        await asyncio.sleep(30)


@pytest.mark.parametrize("case", sorted(CASES))
def test_a_violation_fails_everything_at_once_with_its_reason(tmp_path: Path,
                                                              case: str) -> None:
    payload, reason = CASES[case]

    async def scenario() -> None:
        seen: list[dict[str, Any]] = []
        ready = asyncio.Event()
        server = asyncio.create_task(hostile_agent(tmp_path / "a.sock", payload, ready))
        await ready.wait()
        client = AgentClient(unix_connector(tmp_path / "a.sock"), seen.append, "t")
        try:
            async with asyncio.timeout(5):  # at the hello, or at the first request after it
                with pytest.raises(AgentError, match="broke the agent protocol"):
                    await client.greet()
                    await client.request("ping")
            assert seen[-1]["t"] == "broken" and reason in seen[-1]["error"], seen
            with pytest.raises(AgentError):  # and stays failed, at once
                await client.request("ping")
        finally:
            await client.close()
            server.cancel()

    asyncio.run(scenario())


def test_a_silent_agent_is_given_a_deadline(tmp_path: Path) -> None:
    async def scenario() -> None:
        ready = asyncio.Event()
        server = asyncio.create_task(hostile_agent(tmp_path / "a.sock", b"", ready))
        await ready.wait()
        client = AgentClient(unix_connector(tmp_path / "a.sock"), lambda _f: None, "t")
        try:
            await client.greet()
            with pytest.raises(AgentError, match=r"did not answer ping within 0\.3 s"):
                await client.request("ping", timeout=0.3)
            assert not client.pending
        finally:
            await client.close()
            server.cancel()

    asyncio.run(scenario())


def test_known_fields_only_and_never_the_vm_name() -> None:
    frame = checked({"t": "event", "kind": "started", "svc": "web", "pid": 7, "vm": "other",
                     "ts": 1.5, "extra": {"deep": 1}})
    assert frame == {"t": "event", "kind": "started", "svc": "web", "pid": 7, "ts": 1.5}


JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner,
                                                                  max_size=3), max_leaves=8)
KINDS = st.sampled_from(["hello", "res", "log", "event", "out", "exit", "ack", "refused", "x"])
FIELDS = st.sampled_from(["t", "v", "id", "ok", "svc", "fd", "ts", "data", "kind", "ch",
                          "code", "n", "port", "services", "entries", "caps", "error"])


@settings(max_examples=int(os.environ.get("COVE_FRAME_EXAMPLES", "2000")), deadline=None)
@given(KINDS, st.dictionaries(FIELDS, JSONISH, max_size=6))
def test_the_checker_accepts_only_what_it_can_vouch_for(kind: str,
                                                        fields: dict[str, Any]) -> None:
    try:
        frame = checked({**fields, "t": kind})
    except GuestViolation as violation:
        assert len(str(violation)) < 300  # a reason, never the guest's bytes echoed whole
        return
    fields_of, required = SCHEMA_OF(kind)
    assert set(frame) <= {"t", *fields_of} and required <= frame.keys()
    for key, value in frame.items():
        if key == "t":
            continue
        assert fields_of[key](value)
        if isinstance(value, str):
            assert len(value) <= 2 * 64 * 1024


def SCHEMA_OF(kind: str) -> tuple[dict[str, Callable[[object], bool]], frozenset[str]]:
    from cove.vm.frames import SCHEMA

    return SCHEMA[kind]


@settings(max_examples=int(os.environ.get("COVE_FRAME_EXAMPLES", "2000")), deadline=None)
@given(st.lists(st.binary(max_size=64), max_size=12))
def test_the_decoder_never_fails_but_with_a_protocol_error(chunks: list[bytes]) -> None:
    decoder = proto.Decoder()
    try:
        for chunk in chunks:
            for frame in decoder.feed(chunk):
                assert isinstance(frame, dict)
    except proto.ProtocolError:
        pass
    assert len(decoder.buffer) <= proto.MAX_FRAME + 4


def test_a_new_connection_does_not_cut_off_the_host(tmp_path: Path) -> None:
    """crosvm and kvmtool reach the agent over vsock, which any local user can connect to:
    the agent keeps the host's connection until a newcomer proves itself with the token."""
    async def scenario() -> None:
        async with running_agent(tmp_path, {}, []) as (client, _process):
            intruders = []
            for offer in (None, b"", proto.encode({"t": "hello", "token": "guess"})):
                sock = socket.socket(socket.AF_UNIX)
                sock.connect(str(tmp_path / "agent.sock"))
                if offer:
                    sock.sendall(offer)
                intruders.append(sock)
            await asyncio.sleep(0.3)
            assert (await client.request("ping"))["ok"]  # still the host's channel
            refused = intruders[2].recv(4096)
            assert b"refused" in refused
            for sock in intruders:
                sock.close()
            newcomer = AgentClient(unix_connector(tmp_path / "agent.sock"), lambda _f: None,
                                   "harness-token")
            try:
                await newcomer.greet()  # the right token: it takes over
                assert (await newcomer.request("ping"))["ok"]
                with pytest.raises(AgentError):
                    async with asyncio.timeout(5):
                        while True:
                            await client.request("ping", timeout=1)
                            await asyncio.sleep(0.05)
            finally:
                await newcomer.close()

    asyncio.run(scenario())


def test_a_host_that_stops_reading_holds_the_guests_output(tmp_path: Path) -> None:
    """Flow control: a service writing at full speed while the host reads nothing does not
    grow the agent's memory; its writes block, and go on once the host reads again."""
    services = {"flood": {"command": "yes flood-line-of-some-length"}}

    async def scenario() -> None:
        async with running_agent(tmp_path, services, []) as (client, process):
            await asyncio.sleep(1.0)
            assert client.reader_task is not None
            first = rss_kib(process.pid)
            client.reader_task.cancel()  # the host stops reading
            await asyncio.sleep(3.0)
            # held at CONGESTED (1 MiB) waiting; without flow control it grew to OUT_LIMIT
            assert rss_kib(process.pid) - first < 6 * 1024, "the agent's memory grew"

    asyncio.run(scenario())


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")
