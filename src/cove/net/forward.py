"""Port forwards of a running VM: QEMU user-net host forwards, or tunnels through the agent.

A tunnel works on every hypervisor and with guest networking off: the host listens, and
each connection becomes an agent channel to 127.0.0.1:<guest port> inside the guest.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import socket
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cove.errors import CoveError, die
from cove.guest import proto
from cove.host.tasks import background
from cove.spec.model import Port, Proto
from cove.vmm.launch import QemuLauncher

if TYPE_CHECKING:
    from cove.vm.machine import Machine

Key = tuple[str, int, str]


@dataclass(frozen=True)
class Forward:
    port: Port
    via: str  # "user-net" or "agent"
    auto: bool = False

    def to_json(self) -> dict[str, Any]:
        return {"port": str(self.port), "bind": self.port.bind, "host": self.port.host,
                "guest": self.port.guest, "proto": self.port.proto.value, "via": self.via,
                "auto": self.auto}


def check_ports_free(ports: tuple[Port, ...]) -> None:
    """Fail before boot, naming the port, rather than with QEMU's generic message."""
    for port in ports:
        kind = socket.SOCK_STREAM if port.proto is Proto.TCP else socket.SOCK_DGRAM
        with socket.socket(socket.AF_INET, kind) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind((port.bind, port.host))
            except OSError as error:
                reason = "is already in use" if error.errno == errno.EADDRINUSE else \
                    f"cannot be bound ({error.strerror})"
                die(f"host port {port.bind}:{port.host}/{port.proto} {reason}",
                    f"pick another host port, e.g. -p {port.host + 1}:{port.guest}")


def key_of(port: Port) -> Key:
    return (port.bind, port.host, port.proto.value)


def hostfwd_rule(port: Port) -> str:
    return f"{port.proto.value}:{port.bind}:{port.host}-:{port.guest}"


class Activity:
    """When a VM last did something for someone: open tunnel connections and exec sessions
    keep it busy; `idle.suspend_after` counts from the last of them."""

    def __init__(self) -> None:
        self.open = 0
        self.last = time.monotonic()

    def touch(self) -> None:
        self.last = time.monotonic()

    def opened(self) -> None:
        self.open += 1
        self.touch()

    def closed(self) -> None:
        self.open -= 1
        self.touch()

    def idle_for(self) -> float:
        return 0.0 if self.open else time.monotonic() - self.last


class Forwards:
    def __init__(self, machine: Machine) -> None:
        self.machine = machine
        self.active: dict[Key, Forward] = {}
        self.servers: dict[Key, asyncio.Server] = {}

    def list(self) -> list[Forward]:
        return list(self.active.values())

    def user_net(self) -> QemuLauncher | None:
        launcher = self.machine.launcher
        if self.machine.plan.network == "user" and isinstance(launcher, QemuLauncher):
            return launcher
        return None

    async def add(self, port: Port, tunnel: bool = False, auto: bool = False,
                  existing: bool = False) -> Forward:
        """Forward a host port; `existing`: QEMU already has it (an adopted VM)."""
        key = key_of(port)
        if key in self.active:
            die(f"{port.bind}:{port.host}/{port.proto} is already forwarded",
                f"remove it first: cove forward {self.machine.plan.name} --remove {port.host}")
        qemu = None if tunnel else self.user_net()
        if qemu is not None:
            if not existing:
                await self._hostfwd(qemu, f"hostfwd_add net0 {hostfwd_rule(port)}", port)
            forward = Forward(port, "user-net", auto)
        else:
            await self._listen(port)
            forward = Forward(port, "agent", auto)
        self.active[key] = forward
        return forward

    async def _hostfwd(self, qemu: QemuLauncher, command: str, port: Port) -> None:
        if command.startswith("hostfwd_add"):
            check_ports_free((port,))
        answer = await qemu.hmp(command)
        # QEMU says nothing when a rule is added and "... removed" when one is removed
        if answer and not answer.endswith(" removed"):
            die(f"QEMU could not change the forward of port {port.host}: {answer}")

    async def _listen(self, port: Port) -> None:
        if port.proto is not Proto.TCP:
            die(f"port {port.host}/udp: the agent tunnel carries TCP only",
                "UDP forwards need network = \"user\" on QEMU")
        try:
            server = await asyncio.start_server(
                lambda r, w: self.tunnel(r, w, port.guest), port.bind, port.host)
        except OSError as error:
            die(f"host port {port.bind}:{port.host} cannot be forwarded: {error.strerror}",
                f"pick another host port, e.g. -p {port.host + 1}:{port.guest}")
        self.servers[key_of(port)] = server

    async def remove(self, host: int, bind: str | None = None) -> Forward:
        matches = [k for k in self.active if k[1] == host and bind in (None, k[0])]
        if not matches:
            die(f"port {host} is not forwarded to {self.machine.plan.name}",
                f"see: cove forward {self.machine.plan.name} --list")
        forward = self.active.pop(matches[0])
        server = self.servers.pop(matches[0], None)
        if server is not None:
            server.close()
        qemu = self.user_net()
        if forward.via == "user-net" and qemu is not None:
            port = forward.port
            await self._hostfwd(qemu, f"hostfwd_remove net0 {port.proto.value}:{port.bind}:"
                                      f"{port.host}", port)
        return forward

    def close(self) -> None:
        for server in self.servers.values():
            server.close()
        self.servers.clear()
        self.active.clear()

    async def tunnel(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     guest_port: int) -> None:
        """One host connection, relayed to 127.0.0.1:<guest_port> in the guest."""
        self.machine.activity.opened()
        try:
            await self._relay(reader, writer, guest_port)
        finally:
            self.machine.activity.closed()

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     guest_port: int) -> None:
        agent = self.machine.agent
        try:
            if agent is None:
                raise CoveError("the VM's agent is not connected")
            channel, stream = await agent.open_channel("connect", port=guest_port)
        except CoveError:
            writer.close()
            return
        upstream = background(self._upstream(reader, agent, channel))
        try:
            while (frame := await stream.queue.get()).get("t") == "out":
                self.machine.activity.touch()
                writer.write(proto.payload(frame))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            upstream.cancel()
            agent.close_stream(channel)
            writer.close()

    async def _upstream(self, reader: asyncio.StreamReader, agent: Any, channel: int) -> None:
        with contextlib.suppress(ConnectionError, CoveError):
            while data := await reader.read(65536):
                self.machine.activity.touch()
                agent.send_input(channel, data)
            agent.send({"t": "in", "ch": channel, "eof": True})
