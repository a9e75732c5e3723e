"""A content-addressed artifact cache, published by atomic rename.

A build writes into a private temp directory next to its final place and renames it into
place only when complete, so a killed build never leaves a half entry behind; leftovers of
killed builds are swept by the next build.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

from cove.host.fsutil import remove_tree

TMP_PREFIX = ".tmp-"
LOCK_NAME = ".lock"  # shared by builds until their VM boots; exclusive for `gc --apply`
_held: dict[Path, int] = {}


def content_key(inputs: object) -> str:
    """A stable hash of JSON-able inputs (the cache key)."""
    canonical = json.dumps(inputs, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class Cache:
    def __init__(self, root: Path) -> None:
        self.root = root

    def hold(self) -> None:
        """Keep `cove gc --apply` away from this process's artifacts until `let_go`: from
        the build until the VM that uses them has booted (then its records protect them)."""
        if self.root in _held:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        fcntl.flock(fd, fcntl.LOCK_SH)
        _held[self.root] = fd

    def let_go(self) -> None:
        fd = _held.pop(self.root, None)
        if fd is not None:
            os.close(fd)

    @contextlib.contextmanager
    def exclusive(self) -> Iterator[bool]:
        """For gc: True while no build or boot holds the cache (then it cannot start one)."""
        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.root / LOCK_NAME, os.O_RDONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
                return
            yield True
        finally:
            os.close(fd)

    def entry(self, kind: str, key: str) -> Path:
        return self.root / kind / key

    def get_or_build(self, kind: str, key: str, build: Callable[[Path], None]) -> Path:
        final = self.entry(kind, key)
        if final.is_dir():
            return final
        final.parent.mkdir(parents=True, exist_ok=True)
        sweep_dead_builds(final.parent)
        with building(final) as tmp:
            build(tmp)
        return final


@contextlib.contextmanager
def building(final: Path) -> Iterator[Path]:
    """Yield a temp dir; on success rename it to `final`, on any error remove it.

    Inside, files get ordinary modes (umask 022): they become the guest's files, where
    /etc or /usr at 0700 would lock out its non-root users. The cache itself stays
    private: it lives in the 0700 cove home.
    """
    tmp = final.parent / f"{TMP_PREFIX}{final.name}-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    private = os.umask(0o022)
    try:
        yield tmp
        try:
            tmp.rename(final)
        except OSError:
            if not final.is_dir():
                raise
            shutil.rmtree(tmp)  # a concurrent build of the same key won; same content
    except BaseException:
        with contextlib.suppress(OSError):
            remove_tree(tmp)
        raise
    finally:
        os.umask(private)


def sweep_dead_builds(directory: Path) -> None:
    for leftover in directory.glob(f"{TMP_PREFIX}*"):
        pid = leftover.name.rsplit("-", 1)[-1]
        if pid.isdigit() and not _alive(int(pid)):
            shutil.rmtree(leftover, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
