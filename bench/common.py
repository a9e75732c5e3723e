"""Shared helpers for the benchmarks: timing, tables, JSON results."""

from __future__ import annotations

import json
import os
import socket
import statistics
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def bench_home(tmp: Path, spec_text: str, spec_name: str = "spec"
               ) -> tuple[dict[str, str], Path]:
    """A throw-away cove home sharing the real artifact cache, and a spec written in `tmp`."""
    from cove.home import cove_home

    home = tmp / "home"
    home.mkdir()
    (home / "cache").symlink_to(cove_home() / "cache")
    spec = tmp / spec_name
    spec.mkdir()
    (spec / "cove.toml").write_text(spec_text)
    return {**os.environ, "COVE_HOME": str(home)}, spec


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def print_table(title: str, rows: list[tuple[str, str]]) -> None:
    width = max(len(name) for name, _ in rows)
    print(f"\n{title}")
    print("-" * (width + 30))
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    sys.stdout.flush()


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps(data, indent=2))
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])
