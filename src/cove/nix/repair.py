"""`cove store repair`: remove what verify found, in one transaction, after a backup.

Only rows for paths that are really gone go; derivers that are gone become NULL; stale .drv
files go only when asked. A path that exists and is valid is never touched.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from cove.errors import die
from cove.nix.store import Report, Store, connect, verify

DB_FILES = ("db.sqlite", "db.sqlite-wal", "db.sqlite-shm")


@dataclass(frozen=True)
class Step:
    sql: str
    args: tuple[object, ...]
    why: str


def plan_repair(report: Report, remove_stale_drvs: bool) -> tuple[list[Step], list[str]]:
    """SQL steps (foreign keys in mind: references to a path go before the path) and the
    .drv files to delete."""
    gone = set(report.missing_paths.values())
    drop = sorted(gone | (set(report.stale_drvs) if remove_stale_drvs else set()))
    steps = [Step("delete from Refs where reference = (select id from ValidPaths where path = ?)",
                  (p,), f"forget references to {p}") for p in drop]
    steps += [Step("delete from ValidPaths where path = ?", (p,),
                   f"forget {p} (its own references and outputs go with it)") for p in drop]
    derivers = {d for _, d in report.missing_derivers} | {p for p in drop if p.endswith(".drv")}
    steps += [Step("update ValidPaths set deriver = null where deriver = ?", (d,),
                   f"forget deriver {d}") for d in sorted(derivers)]
    return steps, (sorted(report.stale_drvs) if remove_stale_drvs else [])


def store_in_use(store: Store) -> str | None:
    """Why the store must not be changed now, or None."""
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and (entry / "comm").read_text().strip() == "nix-daemon":
                return f"nix-daemon is running (pid {entry.name})"
        except OSError:
            continue
    big_lock = store.db.parent / "big-lock"
    if big_lock.exists():
        with big_lock.open("a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                return "a Nix process holds the store's big-lock"
    return None


def backup(store: Store) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    target = store.db.parent / f"cove-backup-{stamp}"
    target.mkdir()
    for name in DB_FILES:
        source = store.db.parent / name
        if source.exists():
            shutil.copy2(source, target / name)
    return target


@contextmanager
def exclusive(store: Store) -> Iterator[object]:
    db = connect(store)
    try:
        try:
            db.execute("begin exclusive")
        except Exception as error:  # sqlite3.OperationalError: database is locked
            die(f"the store database is in use: {error}", "stop whatever uses Nix, then retry")
        yield db
    finally:
        db.close()


def apply_repair(store: Store, remove_stale_drvs: bool) -> tuple[Path, list[Step], Report]:
    reason = store_in_use(store)
    if reason:
        die(f"refusing to change the store: {reason}", "stop it, then run the repair again")
    report = verify(store, check_contents=False)
    steps, files = plan_repair(report, remove_stale_drvs)
    with exclusive(store) as db:
        saved = backup(store)
        try:
            for step in steps:
                db.execute(step.sql, step.args)  # type: ignore[attr-defined]
            db.execute("commit")  # type: ignore[attr-defined]
        except Exception:
            db.execute("rollback")  # type: ignore[attr-defined]
            raise
    for path in files:
        on_disk = store.on_disk(path)
        os.chmod(on_disk.parent, on_disk.parent.stat().st_mode | 0o200)
        on_disk.unlink()
    return saved, steps, verify(store)


def restore(store: Store, saved: Path) -> None:
    for name in DB_FILES:
        target = store.db.parent / name
        target.unlink(missing_ok=True)
        if (saved / name).exists():
            shutil.copy2(saved / name, target)
