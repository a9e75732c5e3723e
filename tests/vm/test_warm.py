"""VM state on real guests: warm starts from templates, cold starts after every kind of input
change, pause/resume, suspend across a daemon kill, clones with identities of their own."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from tests.vm.conftest import (
    HELLO,
    cove,
    daemon_pid,
    fetch,
    free_port,
    ls,
    qemu_pids_for,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.vm
SERVED = "<h1>Hello from cove!</h1>\n"


def events(kind: str, vm: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, cove("events", "--vm", vm, "-n", "1000").stdout
                           .splitlines()) if e["kind"] == kind]


def started(vm: str) -> dict[str, Any]:
    """The last boot's `started` event: warm (the snapshot id) or cold (and why)."""
    return [e for e in events("started", vm) if "svc" not in e][-1]


def up_with_template(spec: Path, *flags: str, name: str = "hello") -> str:
    """`cove up` cold, until the template is saved; returns its id."""
    saved = len(events("template-saved", name))
    cove("up", str(spec), "-d", *flags)
    wait_for(lambda: len(events("template-saved", name)) > saved, 60, "the template")
    return str(events("template-saved", name)[-1]["snapshot"])


def spec_copy(tmp_path: Path, top: str = "") -> Path:
    """hello without its fixed port, with a health check patient enough for a loaded TCG
    host; `top` holds top-level keys (before any table)."""
    text = HELLO.read_text().split("[[ports]]")[0].replace('timeout = "2s"', 'timeout = "15s"')
    return write_spec(tmp_path / "hello", top + text.replace("retries = 3", "retries = 8"))


def test_warm_start_and_cold_after_any_input_change(home: Path, tmp_path: Path) -> None:
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "a").write_text("one")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "s").write_text("two")
    spec = spec_copy(tmp_path, f'config = "{tmp_path / "config"}"\n'
                               f'secrets = "{tmp_path / "secrets"}"\n')
    port = free_port()
    template = up_with_template(spec, "-p", f"{port}:8080")
    cove("down", "hello")
    result = cove("up", str(spec), "-d", "-p", f"{port}:8080")
    assert f"warm start from snapshot {template}" in result.stderr
    assert started("hello")["warm"] == template
    assert fetch(port) == SERVED and ls(home)["hello"]["health"] == "healthy"
    assert cove("exec", "hello", "--", "cat", "/config/a").stdout == "one"
    # the template was saved with the boot finished (/init's background half: the power
    # button's and the balloon's modules), so a restore does not finish it again
    time.sleep(3)  # (a restored guest that had not would have by now: 1 s after healthy)
    kinds = [e["kind"] for e in map(json.loads, cove("events", "--vm", "hello", "-n", "1000")
                                    .stdout.splitlines())]
    assert kinds.count("boot-finished") == 1, kinds
    assert kinds.index("boot-finished") < kinds.index("template-saved"), kinds
    modules = cove("exec", "hello", "--", "cut", "-d ", "-f1", "/proc/modules").stdout.split()
    assert {"button", "evdev", "virtio_balloon"} <= set(modules), modules
    cove("down", "hello")
    changes: list[tuple[str, tuple[str, ...]]] = [
        ("env", ("-e", "NEW=1")), ("memory", ()), ("config", ()), ("secrets", ()),
        ("cold flag", ("--cold",))]
    for what, flags in changes:
        if what == "memory":
            (spec / "cove.toml").write_text((spec / "cove.toml").read_text()
                                            .replace('memory = "256M"', 'memory = "320M"'))
        if what in ("config", "secrets"):
            (tmp_path / what / ("a" if what == "config" else "s")).write_text("changed")
        cove("up", str(spec), "-d", "--no-wait", *flags)
        assert started("hello")["warm"] is None, what  # never a restore into another shape
        cove("down", "hello")


def test_pause_and_resume(home: Path, tmp_path: Path) -> None:
    port = free_port()
    cove("up", str(spec_copy(tmp_path)), "--name", "pausing", "-d", "-p", f"{port}:8080")
    try:
        cove("pause", "pausing")
        assert ls(home)["pausing"]["state"] == "paused"
        assert fetch(port) is None  # nothing runs: the request times out
        time.sleep(3)
        assert ls(home)["pausing"]["health"] == "healthy"  # a pause is not a failure
        pid = ls(home)["pausing"]["pid"]
        daemon = daemon_pid(home)
        assert daemon is not None
        os.kill(daemon, signal.SIGKILL)  # a new daemon must adopt it paused, not kill it
        wait_for(lambda: daemon_pid(home) is None, 10, "the daemon to die")
        vm = ls(home)["pausing"]
        assert (vm["state"], vm["pid"]) == ("paused", pid), vm
        assert fetch(port) is None
        cove("resume", "pausing")
        assert fetch(port) == SERVED
        vm = ls(home)["pausing"]
        assert vm["state"] == "running" and vm["health"] == "healthy" and vm["pid"] == pid
        assert cove("exec", "pausing", "--", "echo", "back").stdout == "back\n"
    finally:
        cove("down", "pausing")


def test_suspend_survives_a_daemon_kill(home: Path, tmp_path: Path) -> None:
    port = free_port()
    cove("up", str(spec_copy(tmp_path)), "--name", "sleeper", "-d", "-p", f"{port}:8080",
         "-v", "sleepvol:/data:32")
    cove("exec", "sleeper", "--", "sh", "-c", "echo kept > /data/f; sync")
    pids = set(qemu_pids_for(home))
    cove("suspend", "sleeper")
    assert ls(home)["sleeper"]["state"] == "suspended"
    wait_for(lambda: len(set(qemu_pids_for(home)) & pids) < len(pids), 20, "QEMU to go")
    daemon = daemon_pid(home)
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: daemon_pid(home) is None, 10, "the daemon to die")
    assert ls(home)["sleeper"]["state"] == "suspended"  # a new daemon knows it
    # its disk waits for it: no other VM may open the volume while it is suspended
    other = cove("up", str(spec_copy(tmp_path / "other")), "--name", "intruder", "-d",
                 "-v", "sleepvol:/data:32", check=False)
    assert other.returncode != 0 and "in use by another VM" in other.stderr, other.stderr
    cove("down", "intruder", check=False)
    cove("resume", "sleeper")
    assert fetch(port) == SERVED
    assert cove("exec", "sleeper", "--", "cat", "/data/f").stdout == "kept\n"
    cove("down", "sleeper")
    assert not [s for s in json.loads(cove("snapshot", "ls", "--json").stdout)
                if s["kind"] == "suspend"]  # the suspend image went with the resume


def test_a_spec_can_keep_its_ram_off_disk(home: Path, tmp_path: Path) -> None:
    """[warm] template = false: no template is saved, so no RAM (and no secret in it) is
    written; `cove plan` says a template would hold the secrets."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "token").write_text("s3cret")
    spec = spec_copy(tmp_path, f'secrets = "{secrets}"\n')
    plan = cove("plan", str(spec)).stdout
    assert "holds /run/secrets (opt out: [warm] template = false)" in plan, plan
    text = (spec / "cove.toml").read_text()
    (spec / "cove.toml").write_text(text + "\n[warm]\ntemplate = false\n")
    assert "never: it always boots cold, because [warm] template = false" in \
        cove("plan", str(spec)).stdout
    cove("up", str(spec), "--name", "noram", "-d")
    try:
        time.sleep(3)  # (a template is saved about a second after healthy)
        assert not events("template-saved", "noram")
        cove("restart", "noram")
        assert "[warm] template = false" in started("noram")["why_cold"]
    finally:
        cove("down", "noram")


def test_resume_over_a_changed_disk_is_refused(home: Path, tmp_path: Path) -> None:
    """Saved memory over a disk written since would corrupt it: the resume says why."""
    cove("up", str(spec_copy(tmp_path)), "--name", "moved", "-d", "-v", "movedvol:/data:32")
    try:
        cove("suspend", "moved")
        image = home / "volumes" / "movedvol.ext4"
        with image.open("r+b") as disk:  # written behind cove's back (its lock is advisory)
            disk.seek(2**20)
            disk.write(b"changed")
        refused = cove("resume", "moved", check=False)
        assert refused.returncode != 0
        assert "was written after the snapshot was saved" in refused.stderr, refused.stderr
        assert ls(home)["moved"]["state"] == "suspended"
    finally:
        cove("down", "moved")


def test_clones_answer_each_with_its_own_identity(home: Path, tmp_path: Path) -> None:
    port = free_port()
    cove("up", str(spec_copy(tmp_path)), "--name", "origin", "-d")
    try:
        result = cove("clone", "origin", "--count", "5", "-p", f"{port}:8080")
        assert "5 clone(s) of origin up" in result.stdout
        for index in range(5):  # each answers once its new MAC is set
            wait_for(lambda i=index: fetch(port + i) == SERVED, 60, f"clone {index + 1}")
        seen = [cove("exec", f"origin-{i}", "--", "sh", "-c",
                     "hostname; cat /sys/class/net/eth0/address; "
                     "head -c 16 /dev/urandom | od -An -tx1").stdout for i in range(1, 6)]
        identities = [tuple(text.split("\n", 2)) for text in seen]
        for column in range(3):
            assert len({ident[column] for ident in identities}) == 5, identities
        assert [ident[0] for ident in identities] == [f"origin-{i}" for i in range(1, 6)]
        assert ls(home)["origin"]["state"] == "running"  # the source runs on
        assert all(started(f"origin-{i}")["shared_memory"] for i in range(1, 6))
        check_shared_memory_is_sealed(int(ls(home)["origin-1"]["pid"]))
        # a clone's writes are its own: its siblings read the image as it was saved
        cove("exec", "origin-1", "--", "sh", "-c", "echo mine > /tmp/www/index.html")
        assert fetch(port) == "mine\n" and fetch(port + 1) == SERVED
        cove("suspend", "origin-2")  # its own state, all of it, saved and restored
        cove("resume", "origin-2")
        wait_for(lambda: fetch(port + 1) == SERVED, 60, "origin-2 after its resume")
    finally:
        cove("down", "--all")


def check_shared_memory_is_sealed(pid: int) -> None:
    """The image every clone maps: no process (its hypervisor included, whatever the guest
    asks of it) can write it, punch holes into it, or resize it."""
    import ctypes
    import fcntl

    links = [fd for fd in Path(f"/proc/{pid}/fd").iterdir()
             if "memfd:cove-" in str(fd.readlink())]
    assert links, f"QEMU {pid} maps no clone memory image"
    image = os.open(links[0], os.O_RDWR)
    try:
        seals = fcntl.fcntl(image, fcntl.F_GET_SEALS)
        assert seals & fcntl.F_SEAL_WRITE and seals & fcntl.F_SEAL_SEAL, seals
        with pytest.raises(PermissionError):
            os.pwrite(image, b"x", 0)
        with pytest.raises(PermissionError):
            os.ftruncate(image, 4096)
        libc = ctypes.CDLL(None, use_errno=True)
        punch = 0x02 | 0x01  # FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE
        assert libc.fallocate(image, punch, ctypes.c_long(0), ctypes.c_long(4096)) == -1
        assert ctypes.get_errno() == 1  # EPERM
    finally:
        os.close(image)


def test_saved_snapshot_starts_vms_after_its_source_is_gone(home: Path, tmp_path: Path
                                                             ) -> None:
    """`vm.snapshot()`: the state now (here a file the program wrote into the guest's memory
    backed root), kept when the VM goes; `cove.from_snapshot` and `cove snapshot clone`
    start VMs from it, each its own instance; gc keeps it; `snapshot rm` removes it."""
    import cove as api

    port = free_port()
    cove("up", str(spec_copy(tmp_path)), "--name", "saver", "-d")
    try:
        source = api.VM.get("saver")
        source.put_file("/root/state.txt", b"prepared before the snapshot\n")
        saved = source.snapshot()
        assert saved.kind == "saved" and saved.vm == "saver" and saved.size > 0
        assert source.info().state == "running"  # it paused only for the save
        source.down()
        first = api.from_snapshot(saved, prefix="fromsnap-")
        assert [vm.name for vm in first] == ["fromsnap-1"]
        assert first[0].get_file("/root/state.txt") == b"prepared before the snapshot\n"
        result = cove("snapshot", "clone", saved.id, "-n", "2", "-p", f"{port}:8080")
        assert "2 clone(s) of snapshot" in result.stdout  # named saver-1, saver-2
        for index in range(2):
            wait_for(lambda i=index: fetch(port + i) == SERVED, 60, f"VM {index + 1}")
        names = [cove("exec", n, "--", "hostname").stdout.strip()
                 for n in ("saver-1", "saver-2", "fromsnap-1")]
        assert names == ["saver-1", "saver-2", "fromsnap-1"]
        cove("down", "--all")
        from cove.vm.snapshots import unused_snapshots

        # what `cove gc` would remove (not run here: it would clear the shared build cache)
        assert saved.id not in [s.id for s in unused_snapshots(home)]
        listed = json.loads(cove("snapshot", "ls", "--json").stdout)
        assert [s["kind"] for s in listed if s["id"] == saved.id] == ["saved"]  # down kept it
        templates = [s["id"] for s in listed if s["kind"] == "template"]
        for wrong, said in [("s000000000000", "no snapshot"),
                            *[(t, "is a template, not one saved") for t in templates[:1]]]:
            refused = cove("snapshot", "clone", wrong, check=False)
            assert refused.returncode == 1 and said in refused.stderr, refused.stderr
            assert "Traceback" not in refused.stderr
        cove("snapshot", "rm", saved.id)
        assert saved.id not in cove("snapshot", "ls").stdout
    finally:
        cove("down", "--all")


def test_share_and_written_volume_force_a_cold_boot(home: Path, tmp_path: Path) -> None:
    share = tmp_path / "share"
    share.mkdir()
    spec = spec_copy(tmp_path)
    plan = cove("plan", str(spec), "--share", f"{share}:/s")
    assert "never: it always boots cold, because a virtiofs share blocks" in plan.stdout
    volume = ("-v", "warmvol:/data:32")
    up_with_template(spec, *volume, name="hello")
    cove("exec", "hello", "--", "sh", "-c", "echo after > /data/f; sync")  # after the save
    cove("down", "hello")
    assert "was written after the snapshot was saved" in cove("plan", str(spec),
                                                               *volume).stdout
    cove("up", str(spec), "-d", *volume)
    assert started("hello")["warm"] is None
    assert "written after the snapshot" in started("hello")["why_cold"]
    cove("down", "hello")


@pytest.mark.per_user
def test_snapshots_are_private_and_hold_the_secret_only_there(home: Path,
                                                              tmp_path: Path) -> None:
    secret = "s3cret-" + os.urandom(8).hex()
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(secret)
    spec = spec_copy(tmp_path, f'secrets = "{tmp_path / "secrets"}"\n')
    template = up_with_template(spec, "--name", "keeper", name="keeper")
    cove("exec", "keeper", "--", "cat", "/run/secrets/token")  # in guest memory now
    cove("down", "keeper")
    directory = home / "snapshots" / template
    assert directory.stat().st_mode & 0o777 == 0o700
    assert all(p.stat().st_mode & 0o777 == 0o600 for p in directory.iterdir())
    found = subprocess.run(["grep", "-rlF", secret, str(home), "--exclude-dir=cache"],
                           capture_output=True, text=True, check=False).stdout.split()
    assert found and all(f.startswith(str(home / "snapshots")) for f in found), found
    cove("snapshot", "rm", template)
    assert not directory.exists()


def test_idle_suspend_then_resume_on_connect(home: Path, tmp_path: Path) -> None:
    port = free_port()
    spec = spec_copy(tmp_path)
    (spec / "cove.toml").write_text((spec / "cove.toml").read_text() +
                                    '\n[idle]\nsuspend_after = "3s"\n')
    cove("up", str(spec), "--name", "dozer", "-d", "-p", f"{port}:8080")
    try:
        assert fetch(port) == SERVED  # served through the daemon's own listener
        wait_for(lambda: ls(home)["dozer"]["state"] == "suspended", 60, "the idle suspend")
        assert events("idle-suspended", "dozer")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60) as response:
            assert response.read().decode() == SERVED  # the waking request is answered
        assert ls(home)["dozer"]["state"] == "running" and events("woken", "dozer")
    finally:
        cove("down", "dozer")
