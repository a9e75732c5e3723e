"""kill -9 at the worst moments: the CLI mid-build, the daemon mid-boot, QEMU mid-write.
No cache entry is corrupt, no VM is untracked, and no data the guest synced is lost."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from cove.image.pack import ROOT_FILE
from tests.vm.conftest import (
    cove,
    cove_argv,
    daemon_pid,
    ls,
    qemu_pids_for,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.vm
ONLY_PYTHON = 'name = "{name}"\npackages = ["python3"]\nnetwork = "none"\n'


def fresh_home(cove_home: Path, tmp_path: Path, kinds: tuple[str, ...]) -> Path:
    """A home whose cache shares only `kinds` with the session's, so the rest is built."""
    home = tmp_path / "home"
    (home / "cache").mkdir(parents=True)
    for kind in kinds:
        (home / "cache" / kind).symlink_to(cove_home / "cache" / kind)
    return home


def test_cli_killed_mid_build_leaves_no_corrupt_entry(cove_home: Path, tmp_path: Path) -> None:
    home = fresh_home(cove_home, tmp_path, ("kernel", "initramfs"))
    env = {**os.environ, "COVE_HOME": str(home)}
    spec = write_spec(tmp_path / "spec", ONLY_PYTHON.format(name="chaos"))
    for delay in (0.2, 0.5, 0.9):  # while closing over packages, copying, running mkfs
        build = subprocess.Popen(cove_argv("build", str(spec)), env=env,
                                 stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        build.send_signal(signal.SIGKILL)
        build.wait()
        for entry in (home / "cache" / "root").glob("*"):
            if not entry.name.startswith(".tmp-"):  # published means complete
                assert (entry / ROOT_FILE).stat().st_size > 0, entry
    subprocess.run(cove_argv("build", str(spec)), env=env, check=True, capture_output=True)
    assert not list((home / "cache" / "root").glob(".tmp-*"))  # the dead build was swept
    result = subprocess.run(cove_argv("run", str(spec), "--", "python3", "-c", "print(6*7)"),
                            env=env, capture_output=True, text=True, timeout=180, check=False)
    assert result.stdout == "42\n", result.stderr


def test_daemon_killed_mid_boot_leaves_no_untracked_vm(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", ONLY_PYTHON.format(name="midboot") +
                      '[services.idle]\ncommand = "sleep 100000"\n')
    up = subprocess.Popen(cove_argv("up", str(spec), "-d"), stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    pidfile = home / "vms" / "midboot" / "run" / "qemu.pid"
    wait_for(pidfile.exists, 60, "QEMU to be started")
    daemon = daemon_pid(home)
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)  # the guest is still booting
    up.wait(timeout=30)
    assert up.returncode != 0  # the CLI says its daemon went away, in one line
    assert up.stderr is not None and "Traceback" not in up.stderr.read()
    assert qemu_pids_for(home), "the guest keeps booting without a daemon"
    wait_for(lambda: ls(home)["midboot"]["state"] == "running", 90, "adoption")
    assert len(qemu_pids_for(home)) == 1  # adopted, not booted a second time
    again = cove("up", str(spec), "-d", check=False)
    assert "already exists" in again.stderr
    cove("down", "midboot")
    wait_for(lambda: not qemu_pids_for(home), 20, "QEMU to stop")
    assert "midboot" not in ls(home)


WRITER = '''
[services.writer]
command = """
i=0
while true; do
  i=$((i+1)); echo "line $i" >> /data/log; sync /data/log; echo "synced $i"
done
"""
'''


def test_qemu_killed_mid_write_loses_no_synced_data(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", ONLY_PYTHON.format(name="writer") + WRITER)
    volume = "chaosvol:/data:64"
    cove("up", str(spec), "-d", "-v", volume, "--no-wait")
    wait_for(lambda: "synced 20" in cove("logs", "writer").stdout, 60, "writes to begin")
    for pid in qemu_pids_for(home):
        os.kill(pid, signal.SIGKILL)
    synced = max(int(line.rsplit(" ", 1)[1]) for line in cove("logs", "writer").stdout
                 .splitlines() if " synced " in f" {line}")
    cove("down", "writer")
    image = home / "volumes" / "chaosvol.ext4"
    fsck = subprocess.run(["e2fsck", "-fy", str(image)], capture_output=True, text=True,
                          check=False)
    assert fsck.returncode in (0, 1), fsck.stdout  # at most the journal replayed
    read = subprocess.run(cove_argv("run", str(spec), "-v", volume, "--", "cat", "/data/log"),
                          capture_output=True, text=True, timeout=180, check=False)
    lines = read.stdout.splitlines()
    complete = lines[:-1] if lines and not read.stdout.endswith("\n") else lines
    assert complete[:synced] == [f"line {i}" for i in range(1, synced + 1)], read.stderr
