"""A stack's private L2 segment without root: each member's QEMU sends its NIC's frames as
unix datagrams to one hub socket the daemon owns, and the hub floods every frame to the
other members (virtio-net drops frames not for its MAC). No bridge, tap or multicast: only
the stack's own VMs, named by their socket paths in a 0700 directory, can take part."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from pathlib import Path

from cove.vmm.layout import stack_hub

log = logging.getLogger("coved")
FRAME_MAX = 65536
BATCH = 64  # frames per wake-up, so one chatty VM cannot hold the event loop
MEMBER_RATE = 32 * 2**20  # bytes a second one member may send through the hub; past it,
MEMBER_BURST = 8 * 2**20  # frames are dropped, as a switch drops what its port cannot take


class SegmentHub:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.members: set[str] = set()
        self.budgets: dict[str, tuple[float, float]] = {}  # member -> (tokens, at)
        path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        path.unlink(missing_ok=True)  # a dead daemon's socket; members find the new one
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self.sock.bind(str(path))  # in a 0700 directory, under the daemon's umask (077)
        os.chmod(path, 0o600)
        self.sock.setblocking(False)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
        asyncio.get_running_loop().add_reader(self.sock.fileno(), self.relay)

    def relay(self) -> None:
        for _ in range(BATCH):
            try:
                frame, source = self.sock.recvfrom(FRAME_MAX)
            except (BlockingIOError, InterruptedError):
                return
            if source not in self.members:
                continue  # not one of this stack's VMs
            if not self.within_budget(source, len(frame)):
                continue  # a flooding member: the hub (the daemon's loop) is not its own
            for member in self.members:
                if member != source:
                    self.send(frame, member)

    def within_budget(self, member: str, size: int) -> bool:
        now = time.monotonic()
        tokens, at = self.budgets.get(member, (MEMBER_BURST, now))
        tokens = min(MEMBER_BURST, tokens + (now - at) * MEMBER_RATE) - size
        self.budgets[member] = (max(tokens, 0.0), now)
        return tokens >= 0

    def send(self, frame: bytes, member: str) -> None:
        try:
            self.sock.sendto(frame, member)
        except (BlockingIOError, FileNotFoundError, ConnectionRefusedError):
            pass  # a member that is full, booting or gone loses the frame, as on a wire
        except OSError as error:
            log.warning("segment %s: cannot reach %s: %s", self.path.parent.name, member, error)

    def close(self) -> None:
        asyncio.get_running_loop().remove_reader(self.sock.fileno())
        self.sock.close()
        self.path.unlink(missing_ok=True)


class Segments:
    """The daemon's hubs, one per stack that has a VM."""

    def __init__(self, stacks: Path) -> None:
        self.stacks = stacks
        self.hubs: dict[str, SegmentHub] = {}

    def join(self, stack: str, member: Path) -> None:
        if stack not in self.hubs:
            self.hubs[stack] = SegmentHub(stack_hub(self.stacks, stack))
        self.hubs[stack].members.add(str(member))

    def leave(self, stack: str, member: Path) -> None:
        hub = self.hubs.get(stack)
        if hub is None:
            return
        hub.members.discard(str(member))
        if not hub.members:
            hub.close()
            del self.hubs[stack]
