"""A host reboot, simulated: every QEMU and the daemon are killed with SIGKILL, then `cove
daemon` starts as a service manager would start it. What is enabled comes back healthy in
dependency order with its volume's data; what is not stays down."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.vm.conftest import (
    ROOT,
    cove,
    cove_argv,
    daemon_pid,
    ls,
    qemu_pids_for,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.vm
STACK = f'''name = "boot"
[vms.db]
spec = "{ROOT}/examples/stack/db"
volumes = [{{ source = "bootdata", target = "/data", size = "32M" }}]
[vms.web]
spec = "{ROOT}/examples/stack/web"
depends_on = {{ db = "healthy" }}
ports = []
'''
LONER = '''name = "loner"
packages = ["python3"]
[services.idle]
command = "sleep 100000"
'''


def power_cut(home: Path) -> bool:
    """Kill what is left of the home's daemon, VMs and the daemon's own `cove up` children
    (one still waiting for a VM's health starts a daemon again when its own goes); True
    once nothing is left."""
    for pid in [*qemu_pids_for(home), daemon_pid(home), *autostart_children(home)]:
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    return not qemu_pids_for(home) and daemon_pid(home) is None


def autostart_children(home: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        try:
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"COVE_HOME={home}".encode() in environ and b"COVE_AUTOSTART=1" in environ:
            found.append(int(entry.name))
    return found


def test_enabled_stack_comes_back_after_a_reboot(home: Path, tmp_path: Path) -> None:
    stack = tmp_path / "boot"
    stack.mkdir()
    (stack / "cove-stack.toml").write_text(STACK)
    cove("up", str(stack), "-d")
    cove("up", str(write_spec(tmp_path / "loner", LONER)), "-d")
    cove("up", str(write_spec(tmp_path / "keeper", LONER.replace("loner", "keeper"))), "-d")
    assert "boot (stack) starts whenever" in cove("enable", str(stack)).stdout
    assert "keeper (vm) starts whenever" in cove("enable", "keeper").stdout  # by its name
    cove("exec", "boot/db", "--", "sh", "-c", "echo kept > /data/mark && sync")
    enabled = [line.split("\t")[:2] for line in cove("enable").stdout.splitlines()]
    assert enabled == [["boot", "stack"], ["keeper", "vm"]]

    daemon = daemon_pid(home)
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    for pid in qemu_pids_for(home):
        os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not qemu_pids_for(home) and daemon_pid(home) is None, 20, "all dead")

    service = subprocess.Popen(cove_argv("daemon"), stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: all(ls(home).get(vm, {}).get("health") == "healthy"
                             for vm in ("boot-db", "boot-web", "keeper")), 240,
                 "the stack and keeper back")
        assert ls(home)["loner"]["state"] == "exited"  # not enabled: it stays down
        assert cove("exec", "boot/db", "--", "cat", "/data/mark").stdout == "kept\n"
        events = [json.loads(line) for line in (home / "events.jsonl").read_text().splitlines()]
        after = events[max(i for i, e in enumerate(events) if e.get("seen")):]
        started = [e["vm"] for e in after if e.get("kind") == "started" and "vm" in e
                   and "svc" not in e]
        assert started.index("boot-db") < started.index("boot-web")
    finally:
        service.terminate()
        service.wait(timeout=20)
    # another reboot, and `cove down --all` is the first command: it starts the daemon,
    # which starts what is enabled; the down waits for that, then stops all of it
    wait_for(lambda: power_cut(home), 30, "all dead")
    try:
        cove("down", "--all")
        running = {name: vm["state"] for name, vm in ls(home).items()
                   if vm["state"] not in ("stopped", "exited")}
        assert running == {}, running
        assert not qemu_pids_for(home)
        assert "boot (stack) no longer starts" in cove("disable", "boot").stdout
        assert "keeper (vm) no longer starts" in cove("disable", "keeper").stdout
        assert cove("enable").stdout == ""
    finally:
        cove("down", "boot", check=False)
        cove("down", "keeper", "loner", check=False)
