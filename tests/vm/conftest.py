"""Fixtures for tests that boot real guests under QEMU (TCG here).

One cove home per session: the kernel, initramfs and root image are built once and shared
by every test (all test specs use the same packages as examples/hello).
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello" / "cove.toml"


def fetch(port: int) -> str | None:
    """The page a guest serves on a forwarded host port, or None if nothing answers."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=3) as response:
            return str(response.read().decode())
    except OSError:
        return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture(scope="session")
def cove_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    home = tmp_path_factory.mktemp("cove") / "home"
    saved = os.environ.get("COVE_HOME")
    os.environ["COVE_HOME"] = str(home)
    subprocess.run([sys.executable, "-m", "cove.cli.main", "build", str(HELLO)], check=True,
                   capture_output=True)
    yield home
    if saved is None:
        os.environ.pop("COVE_HOME", None)
    else:
        os.environ["COVE_HOME"] = saved


@pytest.fixture(scope="session")
def plain_spec(cove_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """hello's packages and name, but no host ports: for tests that run a command."""
    text = HELLO.read_text().split("[[ports]]")[0]
    return write_spec(tmp_path_factory.mktemp("plain") / "hello", text)


def cove_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "cove.cli.main", *args]


def write_spec(directory: Path, text: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "cove.toml"
    path.write_text(text)
    return directory


def qemu_pids_for(home: Path) -> list[int]:
    """QEMU processes whose command line mentions this cove home."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmdline and cmdline[0].endswith(b"qemu-system-x86_64") and \
                any(str(home).encode() in part for part in cmdline):
            pids.append(int(entry.name))
    return pids


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")
