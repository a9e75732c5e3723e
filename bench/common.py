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


HELLO = Path(__file__).resolve().parents[1] / "examples" / "hello"


def bench_home(tmp: Path, spec_text: str, spec_name: str = "spec"
               ) -> tuple[dict[str, str], Path]:
    """A fresh cove home in `tmp` (nothing shared with the user's: every bench starts from
    an empty home), made this process's home too, and a spec written in `tmp`. The hello
    example and the spec are built here, untimed, so no measurement pays for a build."""
    home = tmp / "home"
    home.mkdir(mode=0o700)
    os.environ["COVE_HOME"] = str(home)
    spec = tmp / spec_name
    spec.mkdir()
    (spec / "cove.toml").write_text(spec_text)
    env = {**os.environ}
    for target in (HELLO, spec) if spec_text else (HELLO,):
        subprocess.run([sys.executable, "-m", "cove", "build", str(target)], check=True,
                       env=env, capture_output=True)
    return env, spec


def home_sharing_cache(tmp: Path, name: str, cache: Path) -> dict[str, str]:
    """A second home whose artifacts are the first one's (its cache, linked)."""
    home = tmp / name
    home.mkdir(mode=0o700)
    cache.mkdir(parents=True, exist_ok=True)
    (home / "cache").symlink_to(cache)
    return {**os.environ, "COVE_HOME": str(home)}


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
