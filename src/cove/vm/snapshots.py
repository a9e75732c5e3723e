"""Saved VM states in the cove home: templates (warm starts), suspend images, clone sources,
and snapshots a user saved (`cove snapshot save`: kept until `cove snapshot rm`).

`snapshots/<id>/` holds `state` (QEMU's migration stream: guest memory and devices),
`meta.json`, and the disks the state was saved with: the throw-away overlays of ephemeral
volumes, and for clone sources a frozen copy of each volume. Snapshots hold guest memory,
so secrets and env values too: they live only here, 0600 in 0700 directories, never in the
shared artifact cache. A snapshot is published by renaming a complete directory.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cove.errors import die
from cove.host.fsutil import fsync_directory, read_json_or, remove_tree
from cove.host.home import Home

KINDS = ("template", "suspend", "clone", "saved")
TMP_PREFIX = ".tmp-"  # a save under way (or one a crash cut short)
LEFTOVER_AGE = 600.0  # seconds: a save takes a few
KEPT = frozenset({"template", "saved"})  # not removed with the VM they came from
RECORD = "record.json"  # in a saved snapshot: the VM it was saved from, to clone it later


@dataclass(frozen=True)
class DiskPrint:
    """What a disk looked like when the state was saved: a restore must find it unchanged
    (saved memory with a changed disk corrupts data)."""

    path: str
    size: int
    mtime_ns: int
    inode: int

    @classmethod
    def of(cls, path: str) -> DiskPrint:
        info = os.stat(path)
        return cls(path, info.st_size, info.st_mtime_ns, info.st_ino)


@dataclass(frozen=True)
class Snapshot:
    id: str
    kind: str
    directory: Path
    key: str  # the template key of the VM's shape
    vm: str  # the VM it was saved from
    spec: str
    created: float
    size: int
    memory_mib: int
    token: str  # the agent token inside the saved memory
    disks: tuple[DiskPrint, ...] = ()
    overlays: dict[str, str] = field(default_factory=dict)  # drive id -> saved overlay

    @property
    def state(self) -> Path:
        return self.directory / "state"

    def meta(self) -> dict[str, Any]:
        data = asdict(self)
        data["directory"] = str(self.directory)
        data["disks"] = [asdict(d) for d in self.disks]
        return data

    @classmethod
    def load(cls, directory: Path) -> Snapshot | None:
        data = read_json_or(directory / "meta.json", None)
        if not isinstance(data, dict) or not (directory / "state").exists():
            return None
        try:
            return cls(**{**data, "directory": directory,
                          "disks": tuple(DiskPrint(**d) for d in data.get("disks", ()))})
        except TypeError:
            return None

    def changed_disks(self) -> list[str]:
        """Disks that are not as they were at the save (each one forces a cold boot)."""
        changed = []
        for disk in self.disks:
            try:
                now = DiskPrint.of(disk.path)
            except OSError:
                changed.append(f"{disk.path} is gone")
                continue
            if now != disk:
                changed.append(f"{disk.path} was written after the snapshot was saved")
        return changed


def snapshots_dir(home: Path) -> Path:
    return Home(home).snapshots


def new_id(kind: str) -> str:
    return f"{kind[0]}{secrets.token_hex(6)}"


@contextlib.contextmanager
def publishing(home: Path, kind: str) -> Any:
    """A private directory to save into, renamed into place only when complete."""
    root = snapshots_dir(home)
    root.mkdir(mode=0o700, parents=True, exist_ok=True)
    ident = new_id(kind)
    tmp = root / f"{TMP_PREFIX}{ident}"
    tmp.mkdir(mode=0o700)
    try:
        yield ident, tmp
        sync_tree(tmp)  # every file on disk before the name says the snapshot is whole
        tmp.rename(root / ident)
        fsync_directory(root)
    except BaseException:
        remove_tree(tmp)
        raise


def sync_tree(directory: Path) -> None:
    for path in directory.iterdir():
        if path.is_file() and not path.is_symlink():
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    fsync_directory(directory)


def reap_leftovers(home: Path, older_than: float = LEFTOVER_AGE) -> list[Path]:
    """Saves a crash cut short (guest RAM in `.tmp-*`): removed when the daemon starts.
    Only old ones: a `cove run` in the foreground may be saving its template right now."""
    root = snapshots_dir(home)
    reaped = []
    for path in sorted(root.glob(f"{TMP_PREFIX}*")) if root.is_dir() else ():
        with contextlib.suppress(OSError):
            if time.time() - path.stat().st_mtime > older_than:
                remove_tree(path)
                reaped.append(path)
    return reaped


def list_snapshots(home: Path) -> list[Snapshot]:
    root = snapshots_dir(home)
    if not root.is_dir():
        return []
    found = [Snapshot.load(p) for p in sorted(root.iterdir()) if not p.name.startswith(".")]
    return sorted((s for s in found if s is not None), key=lambda s: s.created)


def find_template(home: Path, key: str) -> Snapshot | None:
    """The newest template for this shape whose disks are unchanged."""
    for snapshot in reversed(list_snapshots(home)):
        if snapshot.kind == "template" and snapshot.key == key:
            return snapshot
    return None


def get_snapshot(home: Path, ident: str) -> Snapshot:
    if not ident.isalnum():
        die(f"{ident!r} is not a snapshot id", "see `cove snapshot ls`")
    snapshot = Snapshot.load(snapshots_dir(home) / ident)
    if snapshot is None:
        die(f"no snapshot {ident!r}", "see `cove snapshot ls`")
    return snapshot


def remove_snapshot(snapshot: Snapshot) -> None:
    remove_tree(snapshot.directory)


def copy_sparse(source: str, target: Path) -> None:
    """A frozen copy of a volume for clones (holes stay holes)."""
    from cove.host.proc import run

    run(["cp", "--sparse=always", "--reflink=auto", source, str(target)],
        what=f"copying {source}")
    target.chmod(0o600)


def needed_snapshots(home: Path) -> set[str]:
    """Snapshots VM records name: suspend images and clone sources."""
    needed = set()
    for record in Home(home).vms.glob("*/vm.json"):
        data = read_json_or(record, {})
        if isinstance(data, dict) and data.get("snapshot"):
            needed.add(str(data["snapshot"]))
    return needed


def unused_snapshots(home: Path) -> list[Snapshot]:
    """What `cove gc` removes: suspend images and clone sources no VM needs any more, and
    templates a newer template of the same shape replaced (never a saved snapshot)."""
    needed = needed_snapshots(home)
    newest: dict[str, Snapshot] = {}
    unused = []
    for snapshot in list_snapshots(home):  # oldest first
        if snapshot.kind == "saved":
            continue  # the user's: only `cove snapshot rm` removes it
        if snapshot.kind != "template":
            if snapshot.id not in needed:
                unused.append(snapshot)
            continue
        if snapshot.key in newest:
            unused.append(newest[snapshot.key])
        newest[snapshot.key] = snapshot
    return unused
