"""Files in and out of a guest as tar streams through the agent (`cove cp`, `vm.put_file`).

Nothing is held whole in memory: a thread writes or reads the tar through a pipe while the
exec session moves its bytes. What a guest sends back is untrusted: members that would land
outside the destination (absolute names, `..`, through a symlink, hard links out), devices
and FIFOs are refused, and set-id bits are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import re
import stat
import tarfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, Any

from cove.errors import CoveError, die

PIPE_READ = 256 * 1024
# member_target has checked each member; Python's own filters (where it has them) would
# also drop the modes and owners that a copy keeps
TRUSTED: dict[str, Any] = {"filter": "fully_trusted"} \
    if hasattr(tarfile, "fully_trusted_filter") else {}

# Run in the guest with the destination and the member's name as $1 and $2: never spliced.
UNPACK_SCRIPT = r'''
dest=$1 base=$2
if [ -d "$dest" ]; then exec tar -x -p --numeric-owner -C "$dest"; fi
case $dest in */) echo "cove: $dest: no such directory" >&2; exit 2;; esac
parent=$(dirname -- "$dest")
if [ ! -d "$parent" ]; then echo "cove: $parent: no such directory" >&2; exit 2; fi
tmp=$(mktemp -d "$parent/.cove-cp.XXXXXX") || exit 2
trap 'rm -rf -- "$tmp"' EXIT
tar -x -p --numeric-owner -C "$tmp" && mv -f -T -- "$tmp/$base" "$dest"
'''

PUT_SCRIPT = r'''
set -e
mkdir -p -- "$(dirname -- "$1")"
tmp="$1.cove-put.$$"
trap 'rm -f -- "$tmp"' EXIT
cat > "$tmp"
chmod "$2" "$tmp"
mv -f -- "$tmp" "$1"
trap - EXIT
'''


def unpack_argv(dest: str, base: str) -> list[str]:
    return ["/bin/sh", "-c", UNPACK_SCRIPT, "sh", dest, base]


def put_argv(path: str, mode: int) -> list[str]:
    return ["/bin/sh", "-c", PUT_SCRIPT, "sh", path, f"{mode & 0o7777:o}"]


def pack_argv(path: str) -> list[str]:
    parent, base = posixpath.split(posixpath.normpath(path))
    return ["tar", "-c", "--numeric-owner", "-C", parent or "/", "--", base or "."]


def pack_into(fd: int, source: Path) -> None:
    """Write `source` (a file or a tree) as a tar stream to `fd`, then close it."""
    with os.fdopen(fd, "wb") as pipe, tarfile.open(fileobj=pipe, mode="w|",
                                                   format=tarfile.PAX_FORMAT) as archive:
        archive.add(source, arcname=source.name)


async def packed(source: Path) -> AsyncIterator[bytes]:
    """`source` as tar, chunk by chunk, made by a thread as the reader takes it."""
    if not source.exists() and not source.is_symlink():
        raise CoveError(f"{source}: no such file or directory")
    read_end, write_end = os.pipe()
    packer = asyncio.create_task(asyncio.to_thread(pack_into, write_end, source))
    try:
        while data := await asyncio.to_thread(os.read, read_end, PIPE_READ):
            yield data
        await packer
    finally:
        os.close(read_end)  # a packer still writing gets EPIPE and stops
        with contextlib.suppress(Exception):
            await packer


def inside(root: str, path: str) -> bool:
    return path == root or path.startswith(root.rstrip("/") + "/")


def member_target(root: str, member: tarfile.TarInfo) -> str:
    """Where a member from a guest may be written, or a CoveError saying why not."""
    name = posixpath.normpath(member.name)
    if name.startswith("/") or name == ".." or name.startswith("../"):
        raise CoveError(f"the guest sent {member.name!r}, which would land outside the "
                        "destination; nothing more was copied")
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise CoveError(f"the guest sent {member.name!r}, a device or FIFO; cove copies "
                        "files, directories and links only")
    target = os.path.join(root, name)
    if not inside(root, os.path.realpath(os.path.dirname(target))):
        raise CoveError(f"the guest sent {member.name!r} through a link that leaves the "
                        "destination; nothing more was copied")
    if member.islnk():
        linked = os.path.realpath(os.path.join(root, posixpath.normpath(member.linkname)))
        if member.linkname.startswith("/") or not inside(root, linked):
            raise CoveError(f"the guest sent a hard link {member.name!r} to outside the "
                            "destination")
    return target


def extract_from(stream: IO[bytes], root: Path) -> list[str]:
    """Extract a guest's tar stream under `root`; returns the top-level names."""
    real_root = os.path.realpath(root)
    tops: list[str] = []
    directories: list[tarfile.TarInfo] = []
    with tarfile.open(fileobj=stream, mode="r|") as archive:
        for member in archive:
            target = member_target(real_root, member)
            member.mode &= ~(stat.S_ISUID | stat.S_ISGID)
            top = posixpath.normpath(member.name).split("/")[0]
            if top not in tops:
                tops.append(top)
            if os.path.islink(target) or (os.path.lexists(target)
                                          and not os.path.isdir(target)):
                os.unlink(target)  # never write through what was there
            if member.isdir():  # modes and times after the contents, as tar does
                os.makedirs(target, mode=0o700, exist_ok=True)
                directories.append(member)
                continue
            archive.extract(member, real_root, numeric_owner=True, **TRUSTED)
    for member in reversed(directories):
        target = os.path.join(real_root, posixpath.normpath(member.name))
        if os.path.islink(target):
            continue
        archive.chown(member, target, numeric_owner=True)
        os.chmod(target, member.mode & 0o7777)
        os.utime(target, (member.mtime, member.mtime))
    return tops


def place(staging: Path, top: str, dest: Path) -> Path:
    """Move what landed in `staging` to `dest`, Docker's way: into an existing directory,
    else as `dest` itself."""
    source = staging / top
    final = dest / top if dest.is_dir() and not dest.is_symlink() else dest
    if final.is_dir() and not final.is_symlink() and not source.is_dir():
        raise CoveError(f"{final} is a directory; cannot replace it with a file")
    if source.is_dir() and final.exists() and not final.is_dir():
        raise CoveError(f"{final} is a file; cannot replace it with a directory")
    if source.is_dir() and final.is_dir():
        merge_tree(source, final)
    else:
        os.replace(source, final)
    return final


def merge_tree(source: Path, target: Path) -> None:
    for entry in list(source.iterdir()):
        into = target / entry.name
        if entry.is_dir() and not entry.is_symlink() and into.is_dir():
            merge_tree(entry, into)
        else:
            os.replace(entry, into)


@contextlib.contextmanager
def staging_beside(dest: Path) -> Iterator[Path]:
    """A private directory on dest's filesystem (so the final move is a rename)."""
    parent = dest if dest.is_dir() else dest.parent
    if not parent.is_dir():
        raise CoveError(f"{parent}: no such directory", "create it first, or copy elsewhere")
    import tempfile

    staging = Path(tempfile.mkdtemp(prefix=".cove-cp.", dir=parent))
    try:
        yield staging
    finally:
        from cove.host.fsutil import remove_tree

        remove_tree(staging)


_REMOTE = re.compile(r"(?P<vm>[a-z0-9][a-z0-9_.-]{0,62}):(?P<path>.*)", re.DOTALL)


def split_location(text: str) -> tuple[str | None, str]:
    """'web:/tmp/x' -> ('web', '/tmp/x'); a local path (even with a colon) -> (None, path)."""
    if text.startswith(("/", ".", "~")):
        return None, text
    match = _REMOTE.fullmatch(text)
    if match is None:
        return None, text
    return match["vm"], match["path"]


def copy_plan(source: str, dest: str) -> tuple[str, str, str, str]:
    """(direction, vm, guest path, host path) for `cove cp SOURCE DEST`, or a clear error."""
    source_vm, source_path = split_location(source)
    dest_vm, dest_path = split_location(dest)
    if (source_vm is None) == (dest_vm is None):
        die(f"cove cp {source} {dest}: exactly one side must be VM:PATH",
            "e.g. `cove cp ./a.txt web:/tmp/` or `cove cp web:/var/log/x .`")
    guest_path = source_path if source_vm else dest_path
    if not guest_path.startswith("/"):
        die(f"{source_vm or dest_vm}:{guest_path}: the guest path must be absolute",
            "write it from /, e.g. web:/tmp/")
    if source_vm:
        return "out", source_vm, source_path, dest_path
    return "in", str(dest_vm), dest_path, source_path
