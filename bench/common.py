"""Shared helpers for the benchmarks: throw-away homes, timing, tables, JSON results."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def bench_home(tmp: Path, spec_text: str, spec_name: str = "spec"
               ) -> tuple[dict[str, str], Path]:
    """A throw-away cove home sharing the real artifact cache, and a spec written in `tmp`."""
    from cove.host.home import cove_home

    home = tmp / "home"
    home.mkdir()
    (home / "cache").symlink_to(cove_home() / "cache")
    spec = tmp / spec_name
    spec.mkdir()
    (spec / "cove.toml").write_text(spec_text)
    return {**os.environ, "COVE_HOME": str(home)}, spec


def daemon_pid(home: Path) -> int | None:
    """The daemon serving `home` (found by its command line and COVE_HOME)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"cove.daemon.server" in cmdline and f"COVE_HOME={home}".encode() in environ:
            return int(entry.name)
    return None


def stop_home(home: Path) -> None:
    """A bench's home is left with nothing running: its VMs down, then its daemon stopped."""
    subprocess.run([sys.executable, "-m", "cove.cli.main", "down", "--all"], check=False,
                   capture_output=True, env={**os.environ, "COVE_HOME": str(home)})
    pid = daemon_pid(home)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)


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
