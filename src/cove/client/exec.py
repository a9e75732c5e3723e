"""Running one command in a guest through the daemon's exec WebSocket: input sent only as
fast as the guest takes it, output handed on as it comes, a timeout that kills the
command's whole process group. The Python API and `cove exec` both run commands here.

aiohttp is imported plainly: in a program of the user's, its own aiohttp use must not
change. cove's own processes import `cove.host.local_http` first (no CA store loaded)."""

from __future__ import annotations

import asyncio
import base64
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiohttp

from cove.errors import CoveError, ExecTimeout

TYPE_CHECKING = False
if TYPE_CHECKING:
    from cove.client.http import Client

CHUNK = 256 * 1024
WINDOW = 2 * 2**20  # input bytes in flight before the guest acknowledges them
READY_WAIT = 60.0  # how long an exec waits for a VM that is starting or restarting
READY_POLL = 0.2  # (a restarting VM counts as settled: a held `?settled=` returns at once)
BECOMING_RUNNING = ("created", "starting", "restarting")

Sink = Callable[[int, bytes], Awaitable[None]]
Input = bytes | AsyncIterator[bytes] | None


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    cwd: str | None = None
    user: str | None = None
    stdin: Input = None
    timeout: float | None = None
    tty: tuple[int, int] | None = None  # a terminal of (rows, cols)

    def request(self) -> dict[str, Any]:
        request: dict[str, Any] = {
            "argv": self.argv, "env": self.env, "cwd": self.cwd, "user": self.user,
            "tty": self.tty is not None, "stdin": self.stdin is not None}
        if self.tty is not None:
            request["rows"], request["cols"] = self.tty
        return request


class Window:
    """Credit for input in flight: the sender takes, the guest's `ack`s give back."""

    def __init__(self, size: int = WINDOW) -> None:
        self.free = size
        self.changed = asyncio.Event()

    async def take(self, count: int) -> None:
        while self.free < count:
            self.changed.clear()
            await self.changed.wait()
        self.free -= count

    def give(self, count: int) -> None:
        self.free += count
        self.changed.set()


async def chunks_of(stdin: Input) -> AsyncIterator[bytes]:
    if isinstance(stdin, bytes):
        for start in range(0, len(stdin), CHUNK):
            yield stdin[start:start + CHUNK]
    elif stdin is not None:
        async for piece in stdin:
            for start in range(0, len(piece), CHUNK):
                yield piece[start:start + CHUNK]


async def feed(ws: aiohttp.ClientWebSocketResponse, stdin: Input, window: Window) -> None:
    async for piece in chunks_of(stdin):
        await window.take(len(piece))
        await ws.send_json({"t": "in", "data": base64.b64encode(piece).decode()})
    await ws.send_json({"t": "in", "eof": True})


@contextlib.asynccontextmanager
async def session(socket: Path, vm: str, what: str) -> AsyncIterator[
        aiohttp.ClientWebSocketResponse]:
    """A WebSocket to `vm`'s route `what` (exec, console); NotReady when the daemon will
    not open one (the VM is not running)."""
    connector = aiohttp.UnixConnector(path=str(socket))
    async with aiohttp.ClientSession(connector=connector) as http:
        try:
            ws = await http.ws_connect(f"http://cove/v1/vms/{quote(vm)}/{what}")
        except aiohttp.WSServerHandshakeError:
            raise NotReady(vm) from None
        except aiohttp.ClientConnectionError as error:
            raise CoveError(f"cannot reach the cove daemon at {socket}: {error}",
                            "any cove command starts it; see coved.log") from None
        async with ws:
            yield ws


async def run_command(socket: Path, vm: str, command: Command, sink: Sink,
                      on_open: Callable[[aiohttp.ClientWebSocketResponse], None] | None = None
                      ) -> int:
    """Run `command` in `vm`; output goes to `sink` as it comes; returns the exit code.
    `on_open` sees the socket once the command is asked for (a terminal's resizes)."""
    async with session(socket, vm, "exec") as ws:
        await ws.send_json(command.request())
        if on_open is not None:
            on_open(ws)
        return await exchange(ws, vm, command, sink)


async def when_running(client: Client, vm: str, wait: float) -> None:
    """After a NotReady: wait up to `wait` s while `vm` is starting or restarting (its
    hypervisor died and the policy brings it back); else say what state it is in."""
    deadline = asyncio.get_running_loop().time() + wait
    while True:
        info = await asyncio.to_thread(client.get, vm)  # VMNotFound when there is none
        left = deadline - asyncio.get_running_loop().time()
        if info["state"] == "running" or info["state"] not in BECOMING_RUNNING or left <= 0:
            break
        await asyncio.sleep(min(left, READY_POLL))
    if info["state"] != "running":
        raise CoveError(f"{vm} is {info['state']}, not running",
                        f"start it with `cove up` or `cove restart {vm}`")


async def run_when_ready(client: Client, vm: str, command: Command, sink: Sink,
                         on_open: Callable[[aiohttp.ClientWebSocketResponse], None] | None
                         = None, wait: float = READY_WAIT) -> int:
    """`run_command`, waiting for a VM that is on its way to running instead of failing."""
    try:
        return await run_command(client.socket, vm, command, sink, on_open)
    except NotReady:
        await when_running(client, vm, wait)
    return await run_command(client.socket, vm, command, sink, on_open)


class NotReady(CoveError):
    """The daemon would not open an exec session; the caller asks it why."""

    def __init__(self, vm: str) -> None:
        super().__init__(f"{vm} is not running")
        self.vm = vm


async def exchange(ws: aiohttp.ClientWebSocketResponse, vm: str, command: Command,
                   sink: Sink) -> int:
    window = Window()
    feeder = asyncio.create_task(feed(ws, command.stdin, window)) \
        if command.stdin is not None else None
    try:
        async with asyncio.timeout(command.timeout):
            return await receive(ws, vm, command, sink, window)
    except TimeoutError:
        await kill(ws)
        raise ExecTimeout(f"{command.argv[0]} in {vm} ran past its timeout of "
                          f"{command.timeout:g} s; its process group was killed") from None
    except BaseException:
        await kill(ws)  # Ctrl-C, a cancelled task or a sink that refused: the command goes too
        raise
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionError):
                await feeder


async def receive(ws: aiohttp.ClientWebSocketResponse, vm: str, command: Command, sink: Sink,
                  window: Window) -> int:
    async for message in ws:
        if message.type != aiohttp.WSMsgType.TEXT:
            continue
        frame = message.json()
        kind = frame.get("t")
        if kind == "out":
            await sink(int(frame.get("fd", 1)), base64.b64decode(frame["data"]))
        elif kind == "ack":
            window.give(int(frame.get("n", 0)))
        elif kind == "exit":
            if frame.get("error"):
                raise CoveError(f"cannot run {command.argv[0]} in {vm}: {frame['error']}")
            return int(frame["code"])
    raise CoveError(f"the connection to {vm} closed before {command.argv[0]} finished",
                    f"see `cove events --vm {vm}`")


async def kill(ws: aiohttp.ClientWebSocketResponse) -> None:
    with contextlib.suppress(ConnectionError, RuntimeError):
        await ws.send_json({"t": "kill"})
