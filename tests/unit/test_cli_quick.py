"""The quick paths of the `cove` command: `ls` answered without click or http.client, from
a real daemon (no VMs needed), and the plain tables every `ls` prints."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.cli.table import human_duration, ls_table, plain_table
from tests.vm.conftest import daemon_pid

PROBE = ("import sys\nfrom cove.cli.entry import quick_ls\n"
         "answered = quick_ls(sys.argv[1:])\n"
         "print(answered, 'click' in sys.modules, 'http.client' in sys.modules, file=sys.stderr)\n")


@pytest.fixture
def home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "home"
    yield home
    pid = daemon_pid(home)
    if pid is not None:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while daemon_pid(home) == pid and time.monotonic() < deadline:
            time.sleep(0.05)


def quick(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, text=True,
                          timeout=60, check=True, env={**os.environ, "COVE_HOME": str(home)})


def test_ls_starts_the_daemon_and_answers_without_click(home: Path) -> None:
    first = quick(home, "ls", "--json")  # no daemon yet: the quick path starts it
    assert json.loads(first.stdout) == []
    assert first.stderr.split() == ["True", "False", "False"]
    assert daemon_pid(home) is not None
    assert (home / "coved.log").stat().st_mode & 0o777 == 0o600  # as every command: umask 077
    table = quick(home, "ls")
    assert table.stdout.split() == ["NAME", "STATE", "HEALTH", "PORTS", "UPTIME", "CPU", "MEM"]


def test_anything_else_takes_the_full_path(home: Path) -> None:
    for args in (["ls", "-a"], ["ls", "--json", "x"], ["logs", "x"]):
        assert quick(home, *args).stderr.split() == ["False", "False", "False"]
    home.mkdir(mode=0o700, exist_ok=True)
    home.chmod(0o777)  # an unsafe home: the full path refuses it and says why
    assert quick(home, "ls").stderr.split()[0] == "False"
    result = subprocess.run([sys.executable, "-m", "cove.cli.entry", "ls"], capture_output=True,
                            text=True, timeout=60, check=False,
                            env={**os.environ, "COVE_HOME": str(home)})
    assert result.returncode == 1 and "refusing the cove home" in result.stderr


def test_plain_table_aligns_columns_without_trailing_blanks() -> None:
    text = plain_table(["NAME", "STATE", "P"], [["a", "running", "-"], ["bbbbbbb", "x", "yy"]])
    assert text.splitlines() == ["NAME     STATE    P", "a        running  -",
                                 "bbbbbbb  x        yy"]
    assert plain_table(["ID"], []) == "ID"


def test_ls_table_renders_each_field() -> None:
    vm = {"name": "web", "state": "running", "health": "healthy",
          "ports": ["127.0.0.1:8080->80/tcp"], "uptime": 3725.0, "cpu_percent": 1.25,
          "rss_bytes": 180 * 2**20, "stack": ""}
    rows = ls_table([vm, {**vm, "name": "db", "ports": [], "uptime": None, "cpu_percent": None,
                          "rss_bytes": None}]).splitlines()
    assert rows[1].split() == ["web", "running", "healthy", "127.0.0.1:8080->80/tcp", "1h02m",
                               "1.2%", "180MiB"]
    assert rows[2].split() == ["db", "running", "healthy", "-", "-", "-", "-"]
    assert [human_duration(s) for s in (5, 65, 90061)] == ["5s", "1m05s", "1d1h"]
