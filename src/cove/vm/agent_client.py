"""The host's end of the agent channel: requests, exec streams, logs and events."""

from __future__ import annotations

import asyncio
import base64
import itertools
import time
from collections.abc import Callable
from typing import Any

from cove.errors import CoveError
from cove.guest import proto
from cove.vm.frames import Frame, GuestViolation, checked
from cove.vmm.vsock import Connector


class AgentError(CoveError):
    pass


class AgentRefused(AgentError):
    """The agent refused this connection (a wrong token): asking again cannot help."""


HELLO_RETRY = 2.0  # a hello unanswered this long is sent again, on a new connection
REQUEST_DEADLINE = 30.0  # seconds an agent has to answer a request, unless it says otherwise
STREAM_BACKLOG = 64  # frames of one exec or tunnel waiting for their reader (each <= 64 KiB)
LOG_RATE = 8 * 2**20  # bytes a second of service output (base64) through the daemon
LOG_BURST = 16 * 2**20
REJOIN_GAP = 0.3  # longer than the agent's look for a host (guest/link.py RECHECK)


class ExecStream:
    """Output and exit code of one command run by the agent. Bounded: while its reader is
    slow, the channel's reader waits (and the guest's output with it), not memory."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Frame] = asyncio.Queue(maxsize=STREAM_BACKLOG)

    def end(self, frame: Frame) -> None:
        """Put the last frame in even when the queue is full (what it pushes out is moot)."""
        while self.queue.full():
            self.queue.get_nowait()
        self.queue.put_nowait(frame)


class LogBudget:
    """Service output a VM may push through the daemon: LOG_RATE bytes a second after a
    burst of LOG_BURST. Past it, the channel's reader waits, so the guest agent's own flow
    control holds its services' output there: a flooding guest costs the daemon a bounded
    share of its loop, and other VMs' requests stay fast."""

    def __init__(self, rate: float = LOG_RATE, burst: float = LOG_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.at = burst, time.monotonic()

    async def take(self, count: int) -> None:
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate) - count
        self.at = now
        if self.tokens < 0:
            await asyncio.sleep(-self.tokens / self.rate)


class AgentClient:
    def __init__(self, connector: Connector, on_frame: Callable[[Frame], None],
                 token: str = "") -> None:
        self.connector = connector
        self.token = token
        self.on_frame = on_frame
        self.ids = itertools.count(1)
        self.pending: dict[int, asyncio.Future[Frame]] = {}
        self.streams: dict[int, ExecStream] = {}
        self.channel_requests: set[int] = set()  # exec and connect open channels
        self.hello: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None
        self.broken: AgentError | None = None  # once the channel failed, it stays failed
        self.binary = False  # the agent reads data frames (its hello says so)

    async def connect(self) -> None:
        """Connect (retrying until the VMM's socket or the guest's listener is there; the
        caller bounds the wait) and say hello first."""
        while True:
            try:
                reader, self.writer = await self.connector()
                break
            except (FileNotFoundError, ConnectionError, OSError):
                await asyncio.sleep(0.01)
        self.reader_task = asyncio.create_task(self._read(reader))
        self.send({"t": "hello", "v": proto.VERSION, "token": self.token, "caps": ["binary"]})

    async def greet(self) -> Frame:
        """Connect, say hello, and return the agent's answer to it."""
        await self.connect()
        return await self.hello

    def send_input(self, channel: int, data: bytes) -> None:
        """Bytes for a stream's stdin or tunnel: raw in a data frame where the agent reads
        them (empty input sends nothing)."""
        if not data:
            return
        if self.binary:
            self.send_raw(proto.encode_data("in", channel, 0, data))
        else:
            self.send({"t": "in", "ch": channel, "data": base64.b64encode(data).decode()})

    def send_raw(self, encoded: bytes) -> None:
        if self.broken is not None:
            raise self.broken
        if self.writer is None or self.writer.is_closing():
            raise AgentError("the guest agent is not connected")
        self.writer.write(encoded)

    def send(self, frame: Frame) -> None:
        self.send_raw(proto.encode(frame))

    async def _read(self, reader: asyncio.StreamReader) -> None:
        decoder, budget = proto.Decoder(), LogBudget()
        try:
            while data := await reader.read(1 << 16):
                for raw in decoder.feed(data):
                    await self._deliver(checked(raw), budget)
        except (proto.ProtocolError, GuestViolation) as error:
            self._violated(str(error))
            return
        except ConnectionError as error:
            self._fail(AgentError(f"agent channel broken: {error}"))
            return
        self._fail(AgentError("the guest agent closed the channel"))

    async def _deliver(self, frame: Frame, budget: LogBudget) -> None:
        if frame["t"] == "log":
            await budget.take(len(frame["data"]))
        stream = self.streams.get(frame.get("ch", -1)) \
            if frame["t"] in ("out", "exit", "ack") else None
        if stream is not None:
            await stream.queue.put(frame)  # bounded: a slow reader holds the channel
        else:
            self._dispatch(frame)

    def _violated(self, reason: str) -> None:
        """The guest broke the protocol: nothing more is read from it, everything waiting
        fails now, and the owner hears why (a `broken` frame of the host's own)."""
        self._fail(AgentError(f"the guest broke the agent protocol: {reason}"))
        if self.writer is not None:
            self.writer.close()
        self.on_frame({"t": "broken", "error": reason})

    def _dispatch(self, frame: Frame) -> None:
        kind = frame.get("t")
        if kind == "hello":
            caps = frame.get("caps")
            self.binary = isinstance(caps, list) and "binary" in caps  # it reads data frames
            if not self.hello.done():
                self.hello.set_result(frame)
        elif kind == "refused":
            self._fail(AgentRefused(f"the guest agent refused this connection: "
                                    f"{frame.get('error')}"))
        elif kind == "res":
            if frame.get("id") in self.channel_requests and frame.get("ok"):
                # register now: output may follow in the same read, before the caller runs
                self.streams[int(frame["ch"])] = ExecStream()
            self.channel_requests.discard(frame.get("id", -1))
            future = self.pending.pop(frame.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(frame)
        else:
            self.on_frame(frame)

    def _fail(self, error: AgentError) -> None:
        self.broken = self.broken or error
        for future in [self.hello, *self.pending.values()]:
            if not future.done():
                future.set_exception(error)
        self.pending.clear()
        for stream in self.streams.values():
            stream.end({"t": "exit", "code": None, "error": str(error)})

    async def request(self, op: str, timeout: float = REQUEST_DEADLINE, **args: Any) -> Frame:
        """Ask the agent; its answer within `timeout` s, or AgentError (a guest that does
        not answer holds nothing of the host's for longer)."""
        request_id = next(self.ids)
        if op in ("exec", "connect"):
            self.channel_requests.add(request_id)
        future: asyncio.Future[Frame] = asyncio.get_running_loop().create_future()
        self.pending[request_id] = future
        self.send({"t": "req", "id": request_id, "op": op, **args})
        try:
            reply = await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise AgentError(f"the guest agent did not answer {op} within {timeout:g} s"
                             ) from None
        finally:
            self.pending.pop(request_id, None)
            self.channel_requests.discard(request_id)
        if not reply.get("ok"):
            raise AgentError(f"the guest agent refused {op}: {reply.get('error')}")
        return reply

    async def open_exec(self, **args: Any) -> tuple[int, ExecStream]:
        """Start a command; its `out` and `exit` frames arrive on the returned stream."""
        return await self.open_channel("exec", **args)

    async def open_channel(self, op: str, **args: Any) -> tuple[int, ExecStream]:
        """exec or connect: `out` and finally `exit` frames arrive on the returned stream."""
        reply = await self.request(op, **args)
        channel = int(reply["ch"])
        return channel, self.streams[channel]

    async def exec(self, argv: list[str], on_output: Callable[[int, bytes], None],
                   env: dict[str, str] | None = None, stdin: bytes | None = None) -> int:
        """Run argv in the guest, stream its output, return its exit code."""
        channel, stream = await self.open_exec(argv=argv, env=env or {},
                                               stdin=stdin is not None)
        if stdin is not None:
            self.send_input(channel, stdin)
            self.send({"t": "in", "ch": channel, "eof": True})
        try:
            while True:
                frame = await stream.queue.get()
                if frame["t"] == "out":
                    on_output(int(frame["fd"]), proto.payload(frame))
                elif frame["t"] == "ack":
                    continue  # input taken; this helper sends all of it at once
                elif frame.get("code") is None:
                    raise AgentError(frame.get("error", "the command's channel broke"))
                else:
                    return int(frame["code"])
        finally:
            self.close_stream(channel)

    def close_stream(self, channel: int) -> None:
        """Forget a channel; a reader waiting to hand it a frame goes on."""
        stream = self.streams.pop(channel, None)
        while stream is not None and not stream.queue.empty():
            stream.queue.get_nowait()

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
        if self.reader_task is not None:
            self.reader_task.cancel()
            await asyncio.gather(self.reader_task, return_exceptions=True)


async def greeted(connector: Connector, on_frame: Callable[[Frame], None], token: str,
                  timeout: float) -> AgentClient:
    """A connection whose hello the agent answered, within `timeout` (TimeoutError else).

    A channel a dead host left mid-frame (a daemon killed while writing, or a reply of the
    guest's cut short in the hypervisor) can swallow the next hello or its answer. Then hang
    up, give the agent a moment to see it (it starts afresh on a hang-up) and greet again:
    a daemon adopting its VMs must not take a stuck channel for a dead guest."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        agent = AgentClient(connector, on_frame, token)
        try:
            async with asyncio.timeout(min(HELLO_RETRY, deadline - loop.time())):
                await agent.greet()
            return agent
        except AgentRefused:
            await agent.close()
            raise
        except (TimeoutError, AgentError):
            await agent.close()
            if deadline - loop.time() < REJOIN_GAP + 0.2:
                raise TimeoutError from None
            await asyncio.sleep(REJOIN_GAP)
