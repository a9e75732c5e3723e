"""A fresh identity after a restore from a snapshot: clock, entropy, hostname, MAC.

Two VMs restored from one snapshot start with the same memory, and so with the same kernel
RNG state, clock and names. The host sends `resumed` at once; this makes the instance its
own. Standard library only, imported only when a restore happens.
"""

from __future__ import annotations

import _struct as struct  # (struct.py is read from the image: ~25 ms of a restore)
import binascii
import fcntl
import time

from .lean import exists, os
from .netconf import NetworkError, configured

RNDADDENTROPY = 0x40085203  # _IOW('R', 0x03, int[2])
RNDRESEEDCRNG = 0x5207  # _IO('R', 0x07): reseed the CRNG now, from the pool
ETH_P_ARP = 0x0806


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


def set_mac_live(ifname: str, mac: bytes) -> bool:
    """A new MAC on a link that stays up, so routes and connections stay and no command
    runs; False where the driver refuses."""
    try:
        configured(lambda conf: conf.hardware_address(ifname, mac))
    except NetworkError:
        return False
    return True


def ipv4_address(ifname: str) -> bytes | None:
    try:
        return configured(lambda conf: conf.ipv4_address(ifname))
    except NetworkError:
        return None


def arp_announcement(mac: bytes, address: bytes) -> bytes:
    """A gratuitous ARP request: "address is at mac", to everyone on the link."""
    arp = struct.pack("!HHBBH", 1, 0x0800, 6, 4, 1) + mac + address + bytes(6) + address
    return b"\xff" * 6 + mac + struct.pack("!H", ETH_P_ARP) + arp


def announce(ifname: str, mac: bytes) -> bool:
    """Tell the link (QEMU's user networking learns the guest's MAC only from its ARP) that
    this address is at the new MAC: without it, forwarded connections go to the old one."""
    import _socket

    address = ipv4_address(ifname)
    if address is None:
        return False
    sock = _socket.socket(_socket.AF_PACKET, _socket.SOCK_RAW, _socket.htons(ETH_P_ARP))
    try:
        sock.bind((ifname, ETH_P_ARP))
        sock.send(arp_announcement(mac, address))
    except OSError:
        return False
    finally:
        sock.close()
    return True


def new_mac(mac: str, gateway: str) -> list[list[str]]:
    """eth0 takes `mac`; returns the commands still to run where it could not be done
    in-process (they take the link down and up: seconds under TCG)."""
    raw = binascii.unhexlify(mac.replace(":", ""))
    try:
        with open("/sys/class/net/eth0/address") as handle:
            same = handle.read().strip() == mac.lower()
    except OSError:
        same = False
    if (same or set_mac_live("eth0", raw)) and (not gateway or announce("eth0", raw)):
        return []
    if same:  # the same VM again: no link flap, only the packet that teaches the new QEMU
        return [["/bin/busybox", "ping", "-c", "1", "-W", "1", gateway]]
    return mac_argvs(mac, gateway)


def apply(frame: dict[str, object]) -> list[list[str]]:
    """Clock, entropy, hostname and MAC now; returns the commands still needed for the MAC
    where the driver refused it in-process (run by the agent's reactor: it never blocks)."""
    if isinstance(frame.get("time"), int | float):
        set_clock(float(frame["time"]))  # type: ignore[arg-type]
    if frame.get("entropy"):
        add_entropy(binascii.a2b_base64(str(frame["entropy"])))
    if frame.get("hostname"):
        set_hostname(str(frame["hostname"]))
    if not frame.get("mac") or not exists("/sys/class/net/eth0"):
        return []
    return new_mac(str(frame["mac"]), str(frame.get("gateway") or ""))
