"""Append-only JSON-lines files with a size cap, and live subscribers.

Service logs (one file per VM) and lifecycle events (one file per cove home) both use it:
`cove logs -f` and `cove events -f` are subscribers.
"""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

Entry = dict[str, Any]
DEFAULT_CAP = 8 * 1024 * 1024  # bytes per file; one rotated file is kept beside it


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
        for queue in self.subscribers:
            queue.put_nowait(entry)

    def tail(self, count: int | None = None, **match: Any) -> list[Entry]:
        entries = [e for e in read_entries(self.rotated, self.path)
                   if all(e.get(k) == v for k, v in match.items() if v is not None)]
        return last(entries, count)

    @contextmanager
    def subscribe(self) -> Iterator[asyncio.Queue[Entry]]:
        queue: asyncio.Queue[Entry] = asyncio.Queue()
        self.subscribers.add(queue)
        try:
            yield queue
        finally:
            self.subscribers.discard(queue)

    def close(self) -> None:
        self.handle.close()


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


class LineSplitter:
    """Service output arrives in chunks; the log stores whole lines per service and stream."""

    def __init__(self) -> None:
        self.partial: dict[tuple[str, int], str] = {}

    def feed(self, svc: str, fd: int, text: str) -> list[str]:
        text = self.partial.pop((svc, fd), "") + text
        *lines, rest = text.split("\n")
        if rest:
            self.partial[(svc, fd)] = rest
        return lines
