"""Fixtures for tests that boot real guests under QEMU (TCG here).

One cove home per session: the kernel, initramfs and root image are built once and shared
by every test (all test specs use the same packages as examples/hello).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    return [sys.executable, "-m", "cove.cli.entry", *args]  # what the `cove` command runs


def run_until_up(spec: Path, *flags: str) -> subprocess.Popen[str]:
    """`cove run SPEC` in the background, returned once it says the VM is up."""
    process = subprocess.Popen(cove_argv("run", str(spec), *flags), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    assert process.stderr is not None
    for line in process.stderr:
        if "is up" in line:
            break
    return process


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


def kill_home_processes(home: Path) -> None:
    """SIGKILL every process started for this cove home (its daemon, QEMUs, helpers)."""
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"COVE_HOME={home}".encode() in environ and entry.name.isdigit():
            os.kill(int(entry.name), signal.SIGKILL)
    for pid in qemu_pids_for(home):
        os.kill(pid, signal.SIGKILL)


def wait_for(predicate: object, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if callable(predicate) and predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def home(cove_home: Path) -> Iterator[Path]:
    """A cove home other users can traverse (to test the socket's own checks), sharing the
    session's built artifacts."""
    directory = Path(tempfile.mkdtemp(prefix="cove-d-"))
    directory.chmod(0o711)
    (directory / "cache").symlink_to(cove_home / "cache")
    saved = os.environ["COVE_HOME"]
    os.environ["COVE_HOME"] = str(directory)
    yield directory
    subprocess.run(cove_argv("down", "--all", "--timeout", "5"), capture_output=True, check=False)
    daemon = daemon_pid(directory)
    if daemon:
        os.kill(daemon, signal.SIGKILL)
    for pid in qemu_pids_for(directory):
        os.kill(pid, signal.SIGKILL)
    os.environ["COVE_HOME"] = saved
    shutil.rmtree(directory, ignore_errors=True)


def cove(*args: str, check: bool = True, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cove_argv(*args), capture_output=True, text=True, timeout=180,
                            check=False, **kwargs)
    if check and result.returncode != 0:
        raise AssertionError(f"cove {' '.join(args)} failed:\n{result.stderr}")
    return result


def ls(home: Path) -> dict[str, dict[str, Any]]:
    return {vm["name"]: vm for vm in json.loads(cove("ls", "--json").stdout)}


def daemon_pid(home: Path) -> int | None:
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
                environ = (entry / "environ").read_bytes()
            except OSError:
                continue
            if b"cove.daemon.server" in cmdline and str(home).encode() in environ:
                return int(entry.name)
    return None
