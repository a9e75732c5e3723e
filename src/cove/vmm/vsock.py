"""Reaching a guest's vsock port from the host.

Firecracker and Cloud Hypervisor expose guest vsock as "hybrid vsock": connect to their unix
socket, send `CONNECT <port>\\n`, and read `OK <host port>\\n` before the stream is the guest's.
Without a listener in the guest they close the connection. crosvm and kvmtool use the host
kernel's vhost-vsock: a plain AF_VSOCK connection to (cid, port).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from pathlib import Path

from cove.errors import CoveError

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]
Connector = Callable[[], Awaitable[Stream]]
HANDSHAKE_TIMEOUT = 5.0
MAX_LINE = 64


class VsockError(CoveError, ConnectionError):
    pass


def parse_ok(line: bytes, port: int) -> int:
    """The host-side port number in an `OK <n>` reply; anything else is a refusal."""
    if not line:
        raise VsockError(f"no listener on guest vsock port {port} (the connection was closed)")
    text = line.decode(errors="replace").strip()
    parts = text.split()
    if len(parts) != 2 or parts[0] != "OK" or not parts[1].isdigit():
        raise VsockError(f"guest vsock port {port} refused: {text!r}")
    return int(parts[1])


async def connect_hybrid(uds: Path, port: int, timeout: float = HANDSHAKE_TIMEOUT) -> Stream:
    reader, writer = await asyncio.open_unix_connection(str(uds))
    try:
        writer.write(f"CONNECT {port}\n".encode())
        await writer.drain()
        line = await asyncio.wait_for(reader.readline(), timeout)
        parse_ok(line[:MAX_LINE], port)
    except TimeoutError:
        writer.close()
        raise VsockError(f"no answer to CONNECT {port} within {timeout:g} s") from None
    except BaseException:
        writer.close()
        raise
    return reader, writer


async def connect_af_vsock(cid: int, port: int) -> Stream:
    sock = socket.socket(socket.AF_VSOCK, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, (cid, port))
    except BaseException:
        sock.close()
        raise
    return await asyncio.open_connection(sock=sock)


def hybrid_connector(uds: Path, port: int) -> Connector:
    return lambda: connect_hybrid(uds, port)


def af_vsock_connector(cid: int, port: int) -> Connector:
    return lambda: connect_af_vsock(cid, port)


def unix_connector(path: Path) -> Connector:
    return lambda: asyncio.open_unix_connection(str(path))
