"""`cove exec` and `cove console`: a terminal wired to a guest through the daemon."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any

from cove.client.http import Client
from cove.errors import die
from cove.host.local_http import aiohttp
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


def session(client: Client) -> aiohttp.ClientSession:
    return aiohttp.ClientSession(connector=aiohttp.UnixConnector(path=str(client.socket)))


def input_frame(data: bytes) -> dict[str, Any]:
    message: dict[str, Any] = {"t": "in", "data": base64.b64encode(data).decode()}
    if not data:
        message["eof"] = True
    return message


def pump_stdin(ws: aiohttp.ClientWebSocketResponse) -> None:
    """Forward our stdin to the guest as it becomes readable (EOF closes the guest's)."""
    loop = asyncio.get_running_loop()

    def readable() -> None:
        data = os.read(0, 65536)
        if not data:
            loop.remove_reader(0)
        background(ws.send_json(input_frame(data)))

    try:
        loop.add_reader(0, readable)
    except PermissionError:  # a regular file or /dev/null cannot be polled: read it whole
        background(send_file_input(ws))


async def send_file_input(ws: aiohttp.ClientWebSocketResponse) -> None:
    loop = asyncio.get_running_loop()
    while True:
        data = await loop.run_in_executor(None, os.read, 0, 65536)
        await ws.send_json(input_frame(data))
        if not data:
            return


async def exec_remote(client: Client, name: str, argv: list[str], env: dict[str, str],
                      cwd: str | None, user: str | None, interactive: bool, use_tty: bool) -> int:
    rows, cols = terminal_size()
    async with session(client) as http, http.ws_connect(f"http://cove/v1/vms/{name}/exec") as ws:
        await ws.send_json({"argv": argv, "env": env, "cwd": cwd, "user": user, "tty": use_tty,
                            "stdin": interactive, "rows": rows, "cols": cols})
        loop = asyncio.get_running_loop()
        with raw_terminal(use_tty):
            if interactive:
                pump_stdin(ws)
            if use_tty:
                loop.add_signal_handler(signal.SIGWINCH, lambda: background(
                    ws.send_json({"t": "resize", "rows": terminal_size()[0],
                                  "cols": terminal_size()[1]})))
            async for message in ws:
                frame = message.json()
                if frame.get("t") == "out":
                    stream = sys.stderr if frame.get("fd") == 2 else sys.stdout
                    stream.buffer.write(base64.b64decode(frame["data"]))
                    stream.flush()
                elif frame.get("t") == "exit":
                    if frame.get("error"):
                        die(f"cannot run {argv[0]} in {name}: {frame['error']}")
                    return int(frame["code"])
    die(f"the connection to {name} closed before the command finished")


async def console_remote(client: Client, name: str) -> None:
    async with session(client) as http, \
            http.ws_connect(f"http://cove/v1/vms/{name}/console") as ws:
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
