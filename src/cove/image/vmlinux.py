"""Getting an uncompressed ELF vmlinux (PVH entry) out of a bzImage.

The x86 boot header says where the compressed payload is (payload_offset/length at 0x248);
its first bytes say how it is compressed.
"""

from __future__ import annotations

import gzip
import lzma
import struct
import subprocess
from pathlib import Path

from cove.errors import die
from cove.host.proc import require_tool

ELF_MAGIC = b"\x7fELF"
HDRS_MAGIC = b"HdrS"

# magic prefix -> (name, decompressing command or None for the stdlib)
_COMPRESSIONS: tuple[tuple[bytes, str], ...] = (
    (b"\x1f\x8b", "gzip"),
    (b"\xfd7zXZ\x00", "xz"),
    (b"\x02\x21\x4c\x18", "lz4"),
    (b"\x28\xb5\x2f\xfd", "zstd"),
    (b"\x5d\x00\x00", "lzma"),
)


def is_elf(path: Path) -> bool:
    with path.open("rb") as handle:
        return handle.read(4) == ELF_MAGIC


def bzimage_payload(image: bytes) -> bytes:
    """The compressed kernel inside a bzImage."""
    if len(image) < 0x250 or image[0x202:0x206] != HDRS_MAGIC:
        raise ValueError("not a bzImage (no HdrS boot header)")
    setup_sects = image[0x1F1] or 4
    offset, length = struct.unpack_from("<II", image, 0x248)
    start = (setup_sects + 1) * 512 + offset
    return image[start:start + length]


def bzimage_version(image: bytes) -> str | None:
    """The version string a bzImage carries (kernel_version at 0x20e), if any."""
    if len(image) < 0x210 or image[0x202:0x206] != HDRS_MAGIC:
        return None
    (pointer,) = struct.unpack_from("<H", image, 0x20E)
    if not pointer:
        return None
    text = image[pointer + 0x200:pointer + 0x200 + 256].split(b"\0")[0].decode(errors="replace")
    return text.split(" ")[0] or None


def compression_of(payload: bytes) -> str:
    for magic, name in _COMPRESSIONS:
        if payload.startswith(magic):
            return name
    raise ValueError(f"unknown kernel compression (magic {payload[:4].hex()})")


def decompress(payload: bytes, method: str) -> bytes:
    if method == "gzip":
        return gzip.decompress(payload)
    if method in ("xz", "lzma"):
        # the payload may carry trailing bytes (size field); decompress the first stream
        return lzma.LZMADecompressor().decompress(payload)
    tool = require_tool(method)
    result = subprocess.run([tool, "-dc"], input=payload, capture_output=True, check=False)
    if not result.stdout.startswith(ELF_MAGIC):
        die(f"{method} could not decompress the kernel: {result.stderr.decode().strip()}")
    return result.stdout


def extract_vmlinux(bzimage: Path, out: Path) -> None:
    image = bzimage.read_bytes()
    try:
        payload = bzimage_payload(image)
        data = decompress(payload, compression_of(payload))
    except (ValueError, EOFError, lzma.LZMAError, OSError) as error:
        die(f"{bzimage}: cannot extract vmlinux: {error}",
            "pass an uncompressed vmlinux ELF as kernel.path instead")
    if not data.startswith(ELF_MAGIC):
        die(f"{bzimage}: the decompressed kernel is not an ELF file")
    out.write_bytes(data)
