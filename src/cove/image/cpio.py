"""A writer for the newc cpio format the kernel unpacks as an initramfs."""

from __future__ import annotations

import stat
from typing import BinaryIO

TRAILER = "TRAILER!!!"


def _pad4(length: int) -> bytes:
    return b"\0" * (-length % 4)


class CpioWriter:
    """Writes entries in order; directories must be added before what they contain."""

    def __init__(self, out: BinaryIO) -> None:
        self.out = out
        self.inode = 1
        self.names: set[str] = set()

    def _entry(self, name: str, mode: int, data: bytes, *, nlink: int = 1,
               rdev: tuple[int, int] = (0, 0)) -> None:
        name = name.strip("/") or "."
        encoded = name.encode() + b"\0"
        fields = [self.inode, mode, 0, 0, nlink, 0, len(data), 0, 0, *rdev,
                  len(encoded), 0]
        header = b"070701" + b"".join(f"{value:08X}".encode() for value in fields)
        self.out.write(header + encoded + _pad4(len(header) + len(encoded)))
        self.out.write(data + _pad4(len(data)))
        self.inode += 1
        self.names.add(name)

    def directory(self, name: str, mode: int = 0o755) -> None:
        self._entry(name, stat.S_IFDIR | mode, b"", nlink=2)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def fifo(self, name: str, mode: int = 0o600) -> None:
        self._entry(name, stat.S_IFIFO | mode, b"")

    def char_device(self, name: str, major: int, minor: int, mode: int = 0o666) -> None:
        self._entry(name, stat.S_IFCHR | mode, b"", rdev=(major, minor))

    def parents(self, name: str) -> None:
        """Add any missing parent directories of `name`."""
        parts = name.strip("/").split("/")[:-1]
        for depth in range(1, len(parts) + 1):
            parent = "/".join(parts[:depth])
            if parent not in self.names:
                self.directory(parent)

    def close(self) -> None:
        self._entry(TRAILER, 0, b"")
        self.out.write(b"\0" * (-self.out.tell() % 512))
