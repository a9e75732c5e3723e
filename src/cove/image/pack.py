"""Packing a root tree into its read-only image: one format for every root, chosen by
measurement (bench/image.py, docs/images.md)."""

from __future__ import annotations

import os
import stat
import struct
from pathlib import Path

from cove.host.proc import run

# squashfs, zstd level 19 in 1 MiB blocks, by bench/image.py (python3 + curl, trimmed, TCG):
# 19.1 MiB against erofs lz4hc's 34.4 (xz: 19.2), Python up 1.20x erofs's time but
# `import http.server` done in 0.87x (xz: 1.79x and 1.32x; zstd in 128 KiB blocks: 20.8 MiB).
ROOT_FS = "squashfs"
ROOT_FILE = f"root.{ROOT_FS}"
# In every image key: images packed before bytecode was settled get rebuilt.
PACK_FORMAT = f"{ROOT_FS}-2"
FIXED_TIME = 0  # every file's mtime in the image
PYC_HEADER = struct.Struct("<4sIII")  # magic, flags, source mtime, source size


def pack_root(tree: Path, out: Path) -> None:
    """A reproducible image of `tree`: every file owned by root, timestamps fixed."""
    settle_bytecode(tree)
    if ROOT_FS == "squashfs":
        run(["mksquashfs", str(tree), str(out), "-comp", "zstd", "-Xcompression-level", "19",
             "-b", "1M", "-all-root", "-noappend", "-quiet", "-no-progress", "-mkfs-time",
             str(FIXED_TIME), "-all-time", str(FIXED_TIME)], what="mksquashfs")
    else:
        run(["mkfs.erofs", "-zlz4hc", "--all-root", f"-T{FIXED_TIME}", "--quiet", str(out),
             str(tree)], what="mkfs.erofs")


def settle_bytecode(tree: Path) -> int:
    """Re-stamp each timestamp-based .pyc that matches its source with the image's fixed
    time, so the guest's Python uses it. Otherwise the fixed time makes every one stale,
    and each boot compiles the stdlib it imports again (seconds under TCG). Returns how
    many were re-stamped."""
    settled = 0
    for folder, _dirs, files in os.walk(tree):
        if os.path.basename(folder) != "__pycache__":
            continue
        for name in files:
            source = os.path.join(os.path.dirname(folder), name.split(".", 1)[0] + ".py")
            if name.endswith(".pyc") and restamp(os.path.join(folder, name), source):
                settled += 1
    return settled


def restamp(compiled: str, source: str) -> bool:
    """Give `compiled` the fixed source time if it is timestamp-based and was made from
    `source` as it is (same mtime and size); a new file replaces it, so a hard link into
    the host's files is never written through."""
    try:
        info, own = os.lstat(source), os.lstat(compiled)
        with open(compiled, "rb") as handle:
            data = handle.read()
    except OSError:
        return False
    if len(data) < PYC_HEADER.size or not stat.S_ISREG(own.st_mode):
        return False
    magic, flags, mtime, size = PYC_HEADER.unpack_from(data)
    if flags != 0 or (mtime, size) != (int(info.st_mtime) & 0xFFFFFFFF,
                                       info.st_size & 0xFFFFFFFF):
        return False
    partial = compiled + ".settling"
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    os.fchmod(fd, stat.S_IMODE(own.st_mode))  # (the guest's users read it as before)
    with os.fdopen(fd, "wb") as handle:
        handle.write(PYC_HEADER.pack(magic, flags, FIXED_TIME, size) + data[PYC_HEADER.size:])
    os.replace(partial, compiled)
    return True
