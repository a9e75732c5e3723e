"""`cove store verify`: compare a Nix store's database (schema 10) with its files.

Finds what a guest that garbage-collected a shared store leaves behind: paths the database
calls valid that are gone, references and derivation outputs pointing at them, derivers that
no longer exist, .drv files that name missing derivations, and contents whose hash is wrong.
"""

from __future__ import annotations

import sqlite3
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from cove.errors import die
from cove.host.proc import require_tool

STORE_PREFIX = "/nix/store/"


@dataclass(frozen=True)
class Store:
    root: Path  # the directory holding store/ and var/nix/db (e.g. /nix)

    @property
    def db(self) -> Path:
        return self.root / "var" / "nix" / "db" / "db.sqlite"

    def on_disk(self, store_path: str) -> Path:
        return self.root / "store" / store_path.removeprefix(STORE_PREFIX)

    def exists(self, store_path: str) -> bool:
        path = self.on_disk(store_path)
        return path.exists() or path.is_symlink()


def find_store(given: str | Path) -> Store:
    """Accept /nix, or a chroot store's root holding nix/ (as `nix --store ROOT` makes)."""
    root = Path(given)
    for candidate in (root, root / "nix"):
        if (candidate / "var" / "nix" / "db" / "db.sqlite").exists():
            return Store(candidate)
    die(f"no Nix store database under {given}",
        "pass the store's directory, e.g. --store /nix (or the root of a chroot store)")


def connect(store: Store) -> sqlite3.Connection:
    connection = sqlite3.connect(store.db, timeout=0.5, isolation_level=None)
    connection.execute("pragma foreign_keys = on")
    return connection


def input_drvs(text: str) -> list[str]:
    """The input derivations of a .drv (its second Derive field), from its ATerm text."""
    fields, depth, start, quoted, escaped = [], 0, 0, False, False
    body = text[len("Derive("):]
    for index, char in enumerate(body):
        if quoted:
            escaped, quoted = (False, True) if escaped else (char == "\\", char != '"')
        elif char == '"':
            quoted = True
        elif char in "([":
            depth += 1
        elif char in ")]":
            depth -= 1
        elif char == "," and depth == 0:
            fields.append(body[start:index])
            start = index + 1
            if len(fields) == 2:
                break
    if len(fields) < 2:
        return []
    return [part.split('"')[0] for part in fields[1].split('("')[1:]]


@dataclass
class Report:
    missing_paths: dict[int, str] = field(default_factory=dict)  # ValidPaths rows gone
    dangling_refs: list[tuple[str, str]] = field(default_factory=list)  # (referrer, gone)
    dangling_outputs: list[tuple[str, str, str]] = field(default_factory=list)  # drv, out, path
    missing_derivers: list[tuple[str, str]] = field(default_factory=list)  # (path, deriver)
    stale_drvs: dict[str, list[str]] = field(default_factory=dict)  # drv -> missing inputs
    wrong_hashes: list[tuple[str, str, str]] = field(default_factory=list)  # path, db, disk

    @property
    def clean(self) -> bool:
        return not (self.missing_paths or self.dangling_refs or self.dangling_outputs
                    or self.missing_derivers or self.stale_drvs or self.wrong_hashes)

    def lines(self) -> list[str]:
        out = [f"valid in the database but gone from disk: {p}"
               for p in self.missing_paths.values()]
        out += [f"reference to a gone path: {a} -> {b}" for a, b in self.dangling_refs]
        out += [f"derivation output row of a gone derivation: {d} ({o}: {p})"
                for d, o, p in self.dangling_outputs]
        out += [f"deriver gone: {p} was built by {d}" for p, d in self.missing_derivers]
        out += [f"stale .drv on disk: {d} needs missing {', '.join(m)}"
                for d, m in self.stale_drvs.items()]
        out += [f"contents changed: {p} (database {h}, disk {d})"
                for p, h, d in self.wrong_hashes]
        return out


def nar_hash(path: Path) -> str:
    result = subprocess.run([require_tool("nix-hash"), "--type", "sha256", str(path)],
                            capture_output=True, text=True, check=True)
    return "sha256:" + result.stdout.strip()


def verify(store: Store, check_contents: bool = True) -> Report:
    with connect(store) as db:
        valid = dict(db.execute("select id, path from ValidPaths"))
        report = Report(missing_paths={i: p for i, p in valid.items() if not store.exists(p)})
        gone = report.missing_paths
        report.dangling_refs = [(valid[a], valid[b]) for a, b in db.execute(
            "select referrer, reference from Refs") if b in gone and a not in gone]
        report.dangling_outputs = [(valid[d], o, p) for d, o, p in db.execute(
            "select drv, id, path from DerivationOutputs") if d in gone]
        report.missing_derivers = [(p, d) for i, p, d in db.execute(
            "select id, path, deriver from ValidPaths where deriver is not null")
            if i not in gone and not store.exists(d)]
        hashes = list(db.execute("select id, path, hash from ValidPaths"))
    for path in sorted(p for p in valid.values() if p.endswith(".drv") and store.exists(p)):
        missing = [d for d in input_drvs(store.on_disk(path).read_text(errors="replace"))
                   if not store.exists(d)]
        if missing:
            report.stale_drvs[path] = missing
    if check_contents:
        for path_id, path, expected in hashes:
            if path_id not in gone:
                actual = nar_hash(store.on_disk(path))
                if actual != expected:
                    report.wrong_hashes.append((path, expected, actual))
    return report
