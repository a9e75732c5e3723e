"""The guest's network at boot: loopback up, an address and default route on eth0, and a
stack's NIC (found by its MAC), set with ioctls from the agent.

/init did this with busybox `ip`, one process per step: under TCG each costs milliseconds,
and the address, link and route are three ioctls. Standard library only, and only modules
built into the interpreter (the first one read from the root image costs ~25 ms).
"""

from __future__ import annotations

import _socket
import _struct as struct  # (struct.py would be the first module the agent reads from the image)
import fcntl

from .lean import os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable
    from typing import TypeVar

    T = TypeVar("T")

SIOCGIFADDR = 0x8915
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
SIOCSIFADDR = 0x8916
SIOCSIFNETMASK = 0x891C
SIOCADDRT = 0x890B
SIOCSIFHWADDR = 0x8924
ARPHRD_ETHER = 1
IFF_UP = 0x1
RTF_UP = 0x1
RTF_GATEWAY = 0x2
IFNAMSIZ = 16
IFREQ_SIZE = 40  # struct ifreq on 64-bit Linux: the name, then a 24-byte union
# struct rtentry (64-bit): pad, dst, gateway, genmask, flags, pad, pad, pad, metric, dev,
# mtu, window, irtt, with the C alignment ("@") and its tail padding
RTENTRY = "@L16s16s16sHhLPhPLLH6x"
SYS_NET = "/sys/class/net"


class NetworkError(Exception):
    pass


def sockaddr_in(address: str) -> bytes:
    return struct.pack("@H2s4s8x", _socket.AF_INET, b"\0\0", _socket.inet_aton(address))


def netmask(prefix: int) -> str:
    if not 0 <= prefix <= 32:
        raise NetworkError(f"bad prefix length /{prefix}")
    bits = (0xFFFFFFFF << (32 - prefix)) & 0xFFFFFFFF
    return _socket.inet_ntoa(bits.to_bytes(4, "big"))


def ifreq(name: str, payload: bytes = b"") -> bytes:
    raw = name.encode()
    if not raw or len(raw) >= IFNAMSIZ:
        raise NetworkError(f"bad interface name {name!r}")
    return struct.pack(f"{IFNAMSIZ}s", raw) + payload.ljust(IFREQ_SIZE - IFNAMSIZ, b"\0")


def rtentry(gateway: str) -> bytes:
    anywhere = sockaddr_in("0.0.0.0")
    return struct.pack(RTENTRY, 0, anywhere, sockaddr_in(gateway), anywhere,
                       RTF_UP | RTF_GATEWAY, 0, 0, 0, 0, 0, 0, 0, 0)


class Configurator:
    """One datagram socket for the ioctls, closed when done."""

    def __init__(self) -> None:
        self.sock = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)

    def close(self) -> None:
        self.sock.close()

    def ioctl(self, request: int, data: bytes, what: str) -> bytes:
        try:
            return fcntl.ioctl(self.sock.fileno(), request, data)
        except OSError as error:
            raise NetworkError(f"{what}: {error.strerror}") from None

    def link_up(self, name: str) -> None:
        reply = self.ioctl(SIOCGIFFLAGS, ifreq(name), f"no interface {name}")
        flags = struct.unpack_from("@H", reply, IFNAMSIZ)[0]
        self.ioctl(SIOCSIFFLAGS, ifreq(name, struct.pack("@H", flags | IFF_UP)),
                   f"cannot bring {name} up")

    def address(self, name: str, cidr: str) -> None:
        """CIDR as 10.0.2.15/24; the kernel adds the subnet's route with the mask."""
        address, _, prefix = cidr.partition("/")
        try:
            mask = netmask(int(prefix or "32"))
            addr = sockaddr_in(address)
        except (ValueError, OSError):
            raise NetworkError(f"bad address {cidr!r} for {name}") from None
        self.ioctl(SIOCSIFADDR, ifreq(name, addr), f"cannot give {name} the address {address}")
        self.ioctl(SIOCSIFNETMASK, ifreq(name, sockaddr_in(mask)),
                   f"cannot give {name} the netmask {mask}")

    def default_route(self, gateway: str) -> None:
        self.ioctl(SIOCADDRT, rtentry(gateway), f"cannot add the default route via {gateway}")

    def hardware_address(self, name: str, mac: bytes) -> None:
        """A new MAC on a link that may stay up (virtio-net takes it through its control
        queue; another driver may refuse: NetworkError)."""
        self.ioctl(SIOCSIFHWADDR, ifreq(name, struct.pack("@H", ARPHRD_ETHER) + mac),
                   f"cannot give {name} a new MAC")

    def ipv4_address(self, name: str) -> bytes:
        reply = self.ioctl(SIOCGIFADDR, ifreq(name), f"{name} has no IPv4 address")
        return reply[IFNAMSIZ + 4:IFNAMSIZ + 8]  # (sockaddr_in: family, port, address)


def configured(action: Callable[[Configurator], T]) -> T:
    """`action` with a Configurator that is closed afterwards, whatever happens."""
    conf = Configurator()
    try:
        return action(conf)
    finally:
        conf.close()


def nic_with_mac(mac: str, root: str = SYS_NET) -> str:
    """The interface whose MAC is `mac` (NIC order is not an ABI; cove chose the MAC)."""
    for name in sorted(os.listdir(root)):
        try:
            with open(f"{root}/{name}/address") as handle:
                if handle.read().strip() == mac.lower():
                    return name
        except OSError:
            continue
    raise NetworkError(f"no NIC with the stack segment's MAC {mac}")


def configure(net: dict[str, str]) -> None:
    """Loopback, then eth0 (user or bridge networking), then a stack's segment NIC."""
    configured(lambda conf: boot_network(conf, net))


def boot_network(conf: Configurator, net: dict[str, str]) -> None:
    conf.link_up("lo")
    if net.get("ip"):
        conf.address("eth0", net["ip"])
        conf.link_up("eth0")
        if net.get("gateway"):
            conf.default_route(net["gateway"])
    if net.get("seg_ip"):
        nic = nic_with_mac(net.get("seg_mac", ""))
        conf.address(nic, net["seg_ip"])
        conf.link_up(nic)
