"""Which TCP ports guest programs listen on, from /proc/net/tcp{,6} (for auto_forward)."""

from __future__ import annotations

LISTEN = "0A"


def listening_ports(text: str) -> set[int]:
    """Ports in LISTEN state on any address or loopback, from a /proc/net/tcp table."""
    ports = set()
    for line in text.splitlines()[1:]:
        fields = line.split()
        if len(fields) > 3 and fields[3] == LISTEN:
            ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def read_listening() -> set[int]:
    ports: set[int] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as handle:
                ports |= listening_ports(handle.read())
        except OSError:
            continue
    return ports
