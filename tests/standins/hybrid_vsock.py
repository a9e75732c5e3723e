"""A hybrid-vsock endpoint as Firecracker and Cloud Hypervisor implement it: a unix socket
where the host writes `CONNECT <port>\\n`; with a guest listener on that port it answers
`OK <host port>\\n` and then relays; without one it closes the connection."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Awaitable, Callable
from pathlib import Path

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class HybridVsockStandIn:
    def __init__(self, path: Path, listeners: dict[int, Handler], delay: float = 0.0,
                 reply: bytes | None = None) -> None:
        self.path = path
        self.listeners = listeners  # guest vsock port -> what the guest does with the stream
        self.delay = delay  # a slow peer: wait this long before answering
        self.reply = reply  # a broken peer: answer this instead of OK
        self.host_ports = itertools.count(1073741824)
        self.server: asyncio.Server | None = None

    async def __aenter__(self) -> HybridVsockStandIn:
        self.server = await asyncio.start_unix_server(self.accept, str(self.path))
        return self

    async def __aexit__(self, *_: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        line = await reader.readline()
        words = line.decode(errors="replace").split()
        port = int(words[1]) if len(words) == 2 and words[0] == "CONNECT" \
            and words[1].isdigit() else None
        await asyncio.sleep(self.delay)
        if self.reply is not None:
            writer.write(self.reply)
            await writer.drain()
            writer.close()
            return
        if port is None or port not in self.listeners:
            writer.close()
            return
        writer.write(f"OK {next(self.host_ports)}\n".encode())
        await writer.drain()
        await self.listeners[port](reader, writer)
