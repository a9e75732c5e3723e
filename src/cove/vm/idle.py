"""`[idle] suspend_after`: a VM whose ports and exec sessions have been idle that long is
suspended; a connection to one of its ports resumes it and is then served, not dropped.

For that the daemon owns the listening sockets of such a VM's ports for as long as it keeps
the VM (QEMU's own forwards would close with QEMU): each connection waits for the resume,
then goes through the agent tunnel of whichever instance is running.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from cove.errors import CoveError
from cove.spec.model import Proto
from cove.vm import lifecycle

if TYPE_CHECKING:
    from cove.vm.supervisor import VmSupervisor

CHECK_EVERY = 1.0


class IdleKeeper:
    def __init__(self, supervisor: VmSupervisor) -> None:
        self.supervisor = supervisor
        self.after = supervisor.record.plan.idle_suspend_after
        self.servers: list[asyncio.Server] = []
        self.waking: asyncio.Task[None] | None = None
        self.watcher: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Listen on the VM's ports (once) and watch for idleness."""
        if not self.servers:
            for port in self.supervisor.record.plan.ports:
                if port.proto is not Proto.TCP:
                    continue
                self.servers.append(await asyncio.start_server(
                    self.handler(port.guest), port.bind, port.host))
        if self.watcher is None:
            self.watcher = asyncio.create_task(self.watch())

    def handler(self, guest: int) -> Callable[[asyncio.StreamReader, asyncio.StreamWriter],
                                              Awaitable[None]]:
        return lambda reader, writer: self.connection(reader, writer, guest)

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(min(CHECK_EVERY, self.after / 4))
            machine = self.supervisor.machine
            if machine is None:
                continue
            if not self.settled():
                machine.activity.touch()  # idleness counts from when the VM is up and ready
                continue
            if machine.activity.idle_for() >= self.after and \
                    not self.supervisor.operation.locked():
                try:
                    async with self.supervisor.operation:
                        if self.supervisor.state != "running":
                            continue  # someone else changed it meanwhile
                        await lifecycle.suspend(self.supervisor)
                    self.supervisor.emit("idle-suspended", after=self.after)
                except CoveError as error:
                    self.supervisor.emit("idle-suspend-failed", error=error.message)

    def settled(self) -> bool:
        """Running, healthy, and no template save under way (one save at a time): a VM
        still starting is not idle, and `up` must see it healthy before it sleeps."""
        supervisor, saver = self.supervisor, self.supervisor.saver
        return supervisor.state == "running" and (saver is None or saver.done()) and \
            supervisor.status_health() in ("healthy", "-")

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                         guest: int) -> None:
        try:
            await self.wake()
        except CoveError as error:
            self.supervisor.emit("wake-failed", error=error.message)
            writer.close()
            return
        machine = self.supervisor.machine
        if machine is None or self.supervisor.state != "running":
            writer.close()
            return
        await machine.forwards.tunnel(reader, writer, guest)

    async def wake(self) -> None:
        """Resume a suspended VM; connections that come meanwhile wait for the same resume."""
        while self.supervisor.state in ("suspending", "paused"):
            await asyncio.sleep(0.05)
        if self.supervisor.state != "suspended":
            return
        if self.waking is None or self.waking.done():
            self.waking = asyncio.create_task(self.resume())
        await asyncio.shield(self.waking)

    async def resume(self) -> None:
        async with self.supervisor.operation:
            if self.supervisor.state != "suspended":
                return
            await lifecycle.resume(self.supervisor)
        self.supervisor.emit("woken")

    def close(self) -> None:
        for server in self.servers:
            server.close()
        self.servers.clear()
        if self.watcher is not None:
            self.watcher.cancel()
            self.watcher = None
        with contextlib.suppress(Exception):
            if self.waking is not None:
                self.waking.cancel()
