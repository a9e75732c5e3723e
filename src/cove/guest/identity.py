"""A fresh identity after a restore from a snapshot: clock, entropy, hostname, MAC.

Two VMs restored from one snapshot start with the same memory, and so with the same kernel
RNG state, clock and names. The host sends `resumed` at once; this makes the instance its
own. Standard library only, imported only when a restore happens.
"""

from __future__ import annotations

import binascii
import fcntl
import os
import struct
import time

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07): reseed the CRNG now, from the pool


def set_clock(epoch: float) -> None:
    time.clock_settime(time.CLOCK_REALTIME, epoch)


def add_entropy(data: bytes) -> None:
    """Credit the host's random bytes to the kernel pool and reseed, so /dev/urandom's next
    output differs from every other instance's."""
    fd = os.open("/dev/urandom", os.O_WRONLY)
    try:
        request = struct.pack("ii", len(data) * 8, len(data)) + data
        fcntl.ioctl(fd, RNDADDENTROPY, request)
        try:
            fcntl.ioctl(fd, RNDRESEEDCRNG)
        except OSError:
            pass  # older kernels reseed on their own once credited
    finally:
        os.close(fd)


def set_hostname(name: str) -> None:
    import _socket

    _socket.sethostname(name)
    try:
        with open("/etc/hosts") as handle:
            lines = [line for line in handle.read().splitlines()
                     if not line.startswith("127.0.1.1")]
        with open("/etc/hosts", "w") as handle:
            handle.write("\n".join([*lines, f"127.0.1.1\t{name}"]) + "\n")
    except OSError:
        pass


def mac_argvs(mac: str, gateway: str) -> list[list[str]]:
    """The commands that give eth0 a new MAC (busybox ip; the address stays; taking the
    link down drops the default route, so it is added again)."""
    ip = ["/bin/busybox", "ip"]
    argvs = [[*ip, "link", "set", "eth0", "down"], [*ip, "link", "set", "eth0", "address", mac],
             [*ip, "link", "set", "eth0", "up"]]
    if not gateway:
        return argvs
    # one packet out: QEMU's user networking learns the new MAC only from the guest's own
    # traffic, and until then forwarded connections go nowhere
    return [*argvs, [*ip, "route", "add", "default", "via", gateway],
            ["/bin/busybox", "ping", "-c", "1", "-W", "1", gateway]]


def apply(frame: dict[str, object]) -> list[list[str]]:
    """Clock, entropy and hostname now; returns the commands for the MAC (run by the
    agent's reactor, so it never blocks)."""
    if isinstance(frame.get("time"), int | float):
        set_clock(float(frame["time"]))  # type: ignore[arg-type]
    if frame.get("entropy"):
        add_entropy(binascii.a2b_base64(str(frame["entropy"])))
    if frame.get("hostname"):
        set_hostname(str(frame["hostname"]))
    if not frame.get("mac") or not os.path.exists("/sys/class/net/eth0"):
        return []
    gateway = str(frame.get("gateway") or "")
    try:
        with open("/sys/class/net/eth0/address") as handle:
            same = handle.read().strip() == str(frame["mac"]).lower()
    except OSError:
        same = False
    if same:  # the same VM again: no link flap, only the packet that teaches the new QEMU
        return [["/bin/busybox", "ping", "-c", "1", "-W", "1", gateway]] if gateway else []
    return mac_argvs(str(frame["mac"]), gateway)
