"""`cove exec` and `cove console`: a terminal wired to a guest through the daemon."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import AsyncIterator, Iterator

# first: aiohttp imported without the CA store, which cove.client.exec then finds loaded
from cove.host.local_http import aiohttp

# isort: split
from cove.client.exec import Command, run_when_ready, session
from cove.client.http import Client
from cove.host.tasks import background

DETACH_KEY = b"\x1d"  # Ctrl-]


@contextlib.contextmanager
def raw_terminal(enabled: bool) -> Iterator[None]:
    if not enabled or not os.isatty(0):
        yield
        return
    saved = termios.tcgetattr(0)
    tty.setraw(0)
    try:
        yield
    finally:
        termios.tcsetattr(0, termios.TCSADRAIN, saved)


def terminal_size() -> tuple[int, int]:
    try:
        size = os.get_terminal_size(0)
    except OSError:
        return 24, 80
    return size.lines, size.columns


async def stdin_chunks() -> AsyncIterator[bytes]:
    """Our stdin as it becomes readable, until EOF. A regular file or /dev/null cannot be
    polled; it is read in a thread instead. The queue is bounded: a reader that cannot
    keep up (the guest's window is full) stops the reading, not our memory."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes] = asyncio.Queue(maxsize=8)

    def readable() -> None:
        if chunks.full():
            return  # read again once the sender has taken one
        data = os.read(0, 65536)
        if not data:
            loop.remove_reader(0)
        chunks.put_nowait(data)

    try:
        loop.add_reader(0, readable)
    except PermissionError:
        while data := await loop.run_in_executor(None, os.read, 0, 65536):
            yield data
        return
    try:
        while data := await chunks.get():
            yield data
    finally:
        loop.remove_reader(0)


async def write_output(fd: int, data: bytes) -> None:
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.buffer.write(data)
    stream.flush()


def follow_resizes(ws: aiohttp.ClientWebSocketResponse) -> None:
    asyncio.get_running_loop().add_signal_handler(signal.SIGWINCH, lambda: background(
        ws.send_json({"t": "resize", "rows": terminal_size()[0], "cols": terminal_size()[1]})))


async def exec_remote(client: Client, name: str, argv: list[str], env: dict[str, str],
                      cwd: str | None, user: str | None, interactive: bool, use_tty: bool) -> int:
    command = Command(argv, env, cwd, user, stdin_chunks() if interactive else None,
                      tty=terminal_size() if use_tty else None)
    with raw_terminal(use_tty):
        return await run_when_ready(client, name, command, write_output,
                                    follow_resizes if use_tty else None)


async def console_remote(client: Client, name: str) -> None:
    async with session(client.socket, name, "console") as ws:
        sys.stderr.write(f"attached to {name}'s console (Enter starts a shell); "
                         "Ctrl-] detaches\r\n")
        detached = asyncio.Event()
        loop = asyncio.get_running_loop()

        def readable() -> None:
            data = os.read(0, 4096)
            if not data or DETACH_KEY in data:
                detached.set()
                return
            background(ws.send_bytes(data))

        with raw_terminal(True):
            loop.add_reader(0, readable)
            printer = asyncio.create_task(print_console(ws))
            await asyncio.wait({printer, asyncio.create_task(detached.wait())},
                               return_when=asyncio.FIRST_COMPLETED)
            loop.remove_reader(0)
            printer.cancel()
        sys.stderr.write("\ndetached\n")


async def print_console(ws: aiohttp.ClientWebSocketResponse) -> None:
    async for message in ws:
        if message.type == aiohttp.WSMsgType.BINARY:
            sys.stdout.buffer.write(message.data)
            sys.stdout.flush()
