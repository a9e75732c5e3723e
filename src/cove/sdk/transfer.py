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
MAX_COPY_BYTES = 64 * 2**30  # one `cove cp` out of a guest, at most (and the disk's room)
MAX_COPY_MEMBERS = 1_000_000
DISK_MARGIN = 256 * 2**20  # a copy never fills the destination's disk to the last byte
MAX_PATH, MAX_NAME = 4096, 255  # bytes: Linux's PATH_MAX and NAME_MAX
MAX_FILE_READ = 256 * 2**20  # `get_file` holds the file in memory: at most this much
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


def source_top(path: str) -> str:
    """The one top-level name a guest's tar of `path` may hold ("." for the root)."""
    return posixpath.split(posixpath.normpath(path))[1] or "."


def pack_argv(path: str) -> list[str]:
    parent = posixpath.split(posixpath.normpath(path))[0]
    return ["tar", "-c", "--numeric-owner", "-C", parent or "/", "--", source_top(path)]


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


class Budget:
    """What one copy from a guest may hold: members, bytes, and the room the destination's
    file system has (less a margin), whatever the tar headers claim."""

    def __init__(self, root: str) -> None:
        room = os.statvfs(root)
        self.bytes = min(MAX_COPY_BYTES, room.f_bavail * room.f_frsize - DISK_MARGIN)
        self.members = MAX_COPY_MEMBERS

    def take(self, member: tarfile.TarInfo) -> None:
        self.members -= 1
        self.bytes -= max(member.size, 0)
        if self.members < 0:
            raise CoveError(f"the guest sent more than {MAX_COPY_MEMBERS} entries; "
                            "nothing more was copied", "copy a smaller tree")
        if self.bytes < 0:
            raise CoveError(f"the guest sent more than the destination can take (at most "
                            f"{MAX_COPY_BYTES // 2**30} GiB, and the disk's free room); "
                            "nothing more was copied", "free room, or copy less")


def check_name(member: tarfile.TarInfo, top: str | None) -> str:
    """The member's normalised name, or a CoveError: outside the destination, under a
    name the user did not ask for, or longer than any file system takes."""
    name = posixpath.normpath(member.name)
    if name.startswith("/") or name == ".." or name.startswith("../"):
        raise CoveError(f"the guest sent {shown(member.name)}, which would land outside the "
                        "destination; nothing more was copied")
    if len(name.encode(errors="surrogateescape")) > MAX_PATH or any(
            len(part.encode(errors="surrogateescape")) > MAX_NAME for part in name.split("/")):
        raise CoveError(f"the guest sent a name of {len(name)} characters "
                        f"({shown(name[:60])}...), longer than a file system takes")
    if top not in (None, ".") and name.split("/")[0] != top:
        raise CoveError(f"the guest sent {shown(member.name)}, which is not under the "
                        f"{shown(top)} that was asked for; nothing more was copied")
    return name


def member_target(root: str, member: tarfile.TarInfo, top: str | None = None) -> str:
    """Where a member from a guest may be written, or a CoveError saying why not."""
    name = check_name(member, top)
    if not (member.isreg() or member.isdir() or member.issym() or member.islnk()):
        raise CoveError(f"the guest sent {shown(member.name)}, a device or FIFO; cove "
                        "copies files, directories and links only")
    target = os.path.join(root, name)
    if os.path.realpath(os.path.dirname(target)) != os.path.dirname(target):
        # through a link the stream made: never followed, even one that stays inside (a
        # link's own target is checked against where its name says it is)
        raise CoveError(f"the guest sent {shown(member.name)} through a link; nothing more "
                        "was copied")
    if member.islnk():
        linked = os.path.realpath(os.path.join(root, posixpath.normpath(member.linkname)))
        if member.linkname.startswith("/") or not inside(root, linked):
            raise CoveError(f"the guest sent a hard link {shown(member.name)} to outside the "
                            "destination")
    if member.issym():
        pointed = posixpath.normpath(posixpath.join(posixpath.dirname(name), member.linkname))
        if member.linkname.startswith("/") or pointed == ".." or pointed.startswith("../"):
            raise CoveError(f"the guest sent a symbolic link {shown(member.name)} -> "
                            f"{shown(member.linkname)}, which points outside the destination;"
                            " nothing more was copied")
    return target


def extract_one(archive: tarfile.TarFile, member: tarfile.TarInfo, root: str) -> None:
    try:
        archive.extract(member, root, numeric_owner=True, **TRUSTED)
    except KeyError:  # tarfile's word for a hard link to a member it has not seen
        raise CoveError(f"the guest sent a hard link {shown(member.name)} to "
                        f"{shown(member.linkname)}, which it did not send before") from None
    except tarfile.TarError as error:
        raise CoveError(f"the guest sent a broken archive at {shown(member.name)}: "
                        f"{error}") from None


def shown(text: str) -> str:
    """A guest's name as it may be printed: quoted, control characters escaped."""
    return repr(text)


def extract_from(stream: IO[bytes], root: Path, top: str | None = None) -> list[str]:
    """Extract a guest's tar stream under `root`, every member under `top` (the name that
    was asked for) when given; returns the top-level names."""
    real_root = os.path.realpath(root)
    budget = Budget(real_root)
    tops: list[str] = []
    directories: list[tarfile.TarInfo] = []
    try:
        with tarfile.open(fileobj=stream, mode="r|") as archive:
            for member in archive:
                target = member_target(real_root, member, top)
                budget.take(member)
                first = posixpath.normpath(member.name).split("/")[0]
                if first not in tops:
                    tops.append(first)
                if write_member(archive, member, target, real_root):
                    directories.append(member)
            for member in reversed(directories):  # modes and times after the contents
                set_directory(archive, member, os.path.join(real_root, posixpath.normpath(
                    member.name)))
    except tarfile.TarError as error:
        raise CoveError(f"the guest sent a broken archive: {error}") from None
    except OSError as error:
        raise CoveError(f"cannot write what the guest sent: {error.strerror}: "
                        f"{shown(str(error.filename))}") from None
    return tops


def write_member(archive: tarfile.TarFile, member: tarfile.TarInfo, target: str,
                 root: str) -> bool:
    """Write one checked member (set-id bits dropped); True for a directory, whose mode
    and times are set once its contents are in."""
    member.mode &= ~(stat.S_ISUID | stat.S_ISGID)
    if os.path.islink(target) or (os.path.lexists(target) and not os.path.isdir(target)):
        os.unlink(target)  # never write through what was there
    if member.isdir():
        os.makedirs(target, mode=0o700, exist_ok=True)
        return True
    extract_one(archive, member, root)
    return False


def set_directory(archive: tarfile.TarFile, member: tarfile.TarInfo, target: str) -> None:
    if os.path.islink(target) or not os.path.isdir(target):
        return
    archive.chown(member, target, numeric_owner=True)
    os.chmod(target, member.mode & 0o7777)
    os.utime(target, (member.mtime, member.mtime))


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
