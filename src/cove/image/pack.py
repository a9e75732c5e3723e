"""Packing a root tree into its read-only image: one format for every root, chosen by
measurement (bench/image.py, docs/images.md)."""

from __future__ import annotations

from pathlib import Path

from cove.proc import run

# squashfs, zstd level 19 in 1 MiB blocks, by bench/image.py (python3 + curl, trimmed, TCG):
# 19.1 MiB against erofs lz4hc's 34.4 (xz: 19.2), Python up 1.20x erofs's time but
# `import http.server` done in 0.87x (xz: 1.79x and 1.32x; zstd in 128 KiB blocks: 20.8 MiB).
ROOT_FS = "squashfs"
ROOT_FILE = f"root.{ROOT_FS}"


def pack_root(tree: Path, out: Path) -> None:
    """A reproducible image of `tree`: every file owned by root, timestamps fixed."""
    if ROOT_FS == "squashfs":
        run(["mksquashfs", str(tree), str(out), "-comp", "zstd", "-Xcompression-level", "19",
             "-b", "1M", "-all-root", "-noappend", "-quiet", "-no-progress", "-mkfs-time", "0",
             "-all-time", "0"], what="mksquashfs")
    else:
        run(["mkfs.erofs", "-zlz4hc", "--all-root", "-T0", "--quiet", str(out), str(tree)],
            what="mkfs.erofs")
