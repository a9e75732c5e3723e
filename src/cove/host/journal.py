"""Append-only JSON-lines files with a size cap, and live subscribers.

Service logs (one file per VM) and lifecycle events (one file per cove home) both use it:
`cove logs -f` and `cove events -f` are subscribers.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Entry = dict[str, Any]
DEFAULT_CAP = 8 * 1024 * 1024  # bytes per file; one rotated file is kept beside it


FOLLOW_BACKLOG = 256  # entries (each <= MAX_LINE) a follower may lag before it is cut off
LAGGED: Entry = {"lagged": True}  # the last entry a cut-off follower gets
TAIL_BLOCK = 64 * 1024


class Journal:
    def __init__(self, path: Path, cap: int = DEFAULT_CAP) -> None:
        self.path = path
        self.cap = cap
        self.subscribers: set[asyncio.Queue[Entry]] = set()
        path.parent.mkdir(parents=True, exist_ok=True)
        self.handle = path.open("a", encoding="utf-8")

    @property
    def rotated(self) -> Path:
        return self.path.with_name(self.path.name + ".1")

    def append(self, entry: Entry) -> None:
        self.handle.write(json.dumps(entry, separators=(",", ":")) + "\n")
        self.handle.flush()
        if self.handle.tell() > self.cap:
            self.handle.close()
            os.replace(self.path, self.rotated)
            self.handle = self.path.open("a", encoding="utf-8")
        for queue in list(self.subscribers):
            try:
                queue.put_nowait(entry)
            except asyncio.QueueFull:  # a follower that stopped reading: cut it off
                self.subscribers.discard(queue)
                while not queue.empty():
                    queue.get_nowait()
                queue.put_nowait(LAGGED)

    def tail(self, count: int | None = None, **match: Any) -> list[Entry]:
        """The last `count` entries that match (all for None), read from the end of the
        files: blocking, so the daemon calls it in a thread."""
        return last_entries((self.path, self.rotated), count, match)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Entry]]:
        queue: asyncio.Queue[Entry] = asyncio.Queue(maxsize=FOLLOW_BACKLOG)
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)

    def close(self) -> None:
        self.handle.close()


def lines_from_end(path: Path) -> Iterator[bytes]:
    """A file's lines, last first, read in blocks from its end (a log of megabytes is not
    read whole to show its last twenty lines)."""
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        return
    with handle:
        end = handle.seek(0, os.SEEK_END)
        rest = b""
        while end > 0:
            start = max(0, end - TAIL_BLOCK)
            handle.seek(start)
            block = handle.read(end - start) + rest
            end = start
            first, *lines = block.split(b"\n")
            rest = first
            yield from reversed([line for line in lines if line])
        if rest:
            yield rest


def last_lines(path: Path, count: int) -> list[str]:
    """The last `count` lines of a text file (the console log)."""
    found: list[str] = []
    for line in lines_from_end(path):
        if len(found) >= count:
            break
        found.append(line.decode(errors="replace"))
    return found[::-1]


def last_entries(paths: tuple[Path, ...], count: int | None, match: dict[str, Any]
                 ) -> list[Entry]:
    """The last `count` matching entries of JSON-lines files, newest file first."""
    found: list[Entry] = []
    for path in paths:
        for line in lines_from_end(path):
            if count is not None and len(found) >= count:
                return found[::-1]
            try:
                entry = json.loads(line)
            except ValueError:
                continue  # a line cut short by a crash
            if isinstance(entry, dict) and all(
                    entry.get(k) == v for k, v in match.items() if v is not None):
                found.append(entry)
    return found[::-1]


def read_entries(*paths: Path) -> list[Entry]:
    entries = []
    for path in paths:
        try:
            lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
        except FileNotFoundError:
            continue
        for line in lines:
            try:
                entries.append(json.loads(line))
            except ValueError:
                continue  # a line cut short by a crash
    return entries


def last(entries: list[Entry], count: int | None) -> list[Entry]:
    """The last `count` entries (all for None; none for 0, which `entries[-0:]` gets wrong)."""
    if count is None:
        return entries
    return entries[len(entries) - count:] if 0 <= count < len(entries) else \
        (entries if count >= 0 else [])


def bound_file(path: Path, cap: int) -> bool:
    """Keep a file another process appends to (a console log QEMU writes with O_APPEND)
    under `cap`: past it, its contents move to `path.1` and it starts again from empty.
    A rename would not do: the writer keeps its descriptor. True when it was cut."""
    try:
        if path.stat().st_size <= cap:
            return False
        with path.open("rb") as source, path.with_name(path.name + ".1").open("wb") as kept:
            shutil.copyfileobj(source, kept, TAIL_BLOCK)
        os.truncate(path, 0)
    except FileNotFoundError:
        return False
    return True
