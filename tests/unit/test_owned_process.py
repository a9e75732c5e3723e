"""A hypervisor tied to its owner through setpriv: it dies with the owner, even by SIGKILL,
and is recognised as the VM's hypervisor in front of and behind setpriv's exec."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from cove.host.proc import running_hypervisor, unwrapped
from cove.host.process import dying_with_owner

OWNER = """
import subprocess, sys
from cove.host.process import dying_with_owner
child = subprocess.Popen(dying_with_owner(["sleep", "60"]))
print(child.pid, flush=True)
child.wait()
"""


def gone(pid: int, within: float) -> bool:
    deadline = time.monotonic() + within
    while True:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)


def test_the_child_dies_when_its_owner_is_killed() -> None:
    owner = subprocess.Popen([sys.executable, "-c", OWNER], stdout=subprocess.PIPE, text=True)
    assert owner.stdout is not None
    child = int(owner.stdout.readline())
    try:
        time.sleep(0.2)  # (setpriv has exec'd sleep by now)
        assert Path(f"/proc/{child}/cmdline").read_bytes().startswith(b"sleep\0")
        owner.send_signal(signal.SIGKILL)
        owner.wait()
        assert gone(child, 5), "the child outlived its owner"
    finally:
        if not gone(child, 0):
            os.kill(child, signal.SIGKILL)


def test_a_wrapped_hypervisor_is_recognised(tmp_path: Path) -> None:
    qemu = tmp_path / "qemu-system-x86_64"
    qemu.symlink_to(sys.executable)
    marker = tmp_path / "run"
    argv = dying_with_owner([str(qemu), "-c", "import time; time.sleep(30)", str(marker)])
    assert unwrapped([a.encode() for a in argv])[0] == str(qemu).encode()
    process = subprocess.Popen(argv)
    try:
        (tmp_path / "pid").write_text(f"{process.pid}\n")
        # (while an exec is under way its command line reads empty for an instant)
        deadline = time.monotonic() + 5
        while running_hypervisor(tmp_path / "pid", marker) != process.pid:
            assert time.monotonic() < deadline, Path(f"/proc/{process.pid}/cmdline").read_bytes()
            time.sleep(0.01)
        assert running_hypervisor(tmp_path / "pid", tmp_path / "another") is None
    finally:
        process.kill()
        process.wait()


def test_unwrapped_leaves_other_command_lines_alone() -> None:
    argv = [b"/usr/bin/qemu-system-x86_64", b"-name", b"x", b"--", b"y"]
    assert unwrapped(argv) == argv
    assert unwrapped([]) == []
