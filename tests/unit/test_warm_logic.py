"""The pure parts of warm starts: which inputs change a VM's shape, what blocks snapshots,
clone ports, and what `cove gc` removes of the snapshots."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.plan.warm import snapshot_blockers, template_key
from cove.spec.model import Hypervisor
from cove.vm.lifecycle import clone_names, clone_ports
from cove.vm.snapshots import unused_snapshots
from tests.unit.test_backends import plan_for

ARTIFACTS = {"kernel": "/cache/kernel/k", "initramfs": "/cache/i", "root": "/cache/r"}


def test_the_key_follows_the_shape_not_the_instance(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "minimal", Hypervisor.QEMU)
    key = template_key(plan, ARTIFACTS, {})
    same = [dataclasses.replace(plan, name="other", ports=()),
            dataclasses.replace(plan, init_env={**plan.init_env, "COVE_HOSTNAME": "other"})]
    for variant in same:
        assert template_key(variant, ARTIFACTS, {}) == key
    assert template_key(plan, ARTIFACTS, {}, "qemu 7.2 qemu64") != \
        template_key(plan, ARTIFACTS, {}, "qemu 7.2 qemu64,+arat")  # the hypervisor's shape
    changed = [dataclasses.replace(plan, memory_mib=512), dataclasses.replace(plan, vcpu=2),
               dataclasses.replace(plan, cmdline=(*plan.cmdline, "x")),
               dataclasses.replace(plan, agent_config={**plan.agent_config, "env": {"A": "1"}})]
    for variant in changed:
        assert template_key(variant, ARTIFACTS, {}) != key
    assert template_key(plan, {**ARTIFACTS, "root": "/cache/r2"}, {}) != key
    assert template_key(plan, ARTIFACTS, {"secrets/token": b"a"}) != \
        template_key(plan, ARTIFACTS, {"secrets/token": b"b"})


def test_what_blocks_a_snapshot(tmp_path: Path) -> None:
    assert snapshot_blockers(plan_for(tmp_path, "minimal", Hypervisor.QEMU)) == []
    storage = " ".join(snapshot_blockers(plan_for(tmp_path, "storage", Hypervisor.QEMU)))
    assert "virtiofs share blocks" in storage and "bridge network 'lab'" in storage
    assert "wired for QEMU only" in snapshot_blockers(
        plan_for(tmp_path, "minimal", Hypervisor.FIRECRACKER))[0]


def test_clone_ports_and_names() -> None:
    assert [p.host for i in (1, 2, 3) for p in clone_ports(("9000:8080",), i)] == \
        [9000, 9001, 9002]
    with pytest.raises(CoveError, match="would need host port 65536"):
        clone_ports(("65535:80",), 2)
    assert clone_names("web-", 2) == ["web-1", "web-2"]
    with pytest.raises(CoveError, match="not a valid VM name"):
        clone_names("Bad/", 1)


def test_gc_keeps_what_a_vm_needs_and_the_newest_template(tmp_path: Path) -> None:
    def snapshot(ident: str, kind: str, key: str, created: float) -> None:
        directory = tmp_path / "snapshots" / ident
        directory.mkdir(parents=True)
        (directory / "state").write_bytes(b"")
        (directory / "meta.json").write_text(json.dumps({
            "id": ident, "kind": kind, "directory": str(directory), "key": key, "vm": "v",
            "spec": "", "created": created, "size": 1, "memory_mib": 256, "token": "t"}))

    snapshot("t1", "template", "a", 1)
    snapshot("t2", "template", "a", 2)
    snapshot("t3", "template", "b", 3)
    snapshot("s1", "suspend", "a", 4)
    snapshot("s2", "suspend", "a", 5)
    (tmp_path / "vms" / "v").mkdir(parents=True)
    (tmp_path / "vms" / "v" / "vm.json").write_text(json.dumps({"snapshot": "s2"}))
    assert sorted(s.id for s in unused_snapshots(tmp_path)) == ["s1", "t1"]
    assert os.path.isdir(tmp_path / "snapshots" / "t1")  # listing removes nothing


class StatesInTurn:
    """What the daemon says of one VM on each look (the last answer repeats)."""

    def __init__(self, *states: tuple[str, str]) -> None:
        self.states = list(states)

    def get(self, name: str, settled: float | None = None) -> dict[str, object]:
        assert settled is not None and 0 < settled <= 30  # every look is a held one
        state, health = self.states.pop(0) if len(self.states) > 1 else self.states[0]
        return {"name": name, "state": state, "health": health, "services": {}}


def test_up_accepts_a_vm_that_fell_asleep_as_idle_asks() -> None:
    from cove.start import prepare
    for asleep in ("suspending", "suspended"):
        client = StatesInTurn(("starting", "starting"), ("running", "starting"), (asleep, "-"))
        assert prepare.wait_healthy(client, "dozer", 5)["state"] == asleep  # type: ignore[arg-type]
    with pytest.raises(CoveError, match="dozer is exited"):
        prepare.wait_healthy(StatesInTurn(("running", "starting"), ("exited", "-")),  # type: ignore[arg-type]
                             "dozer", 5)


def test_clone_memory_stands_in_for_the_machines_own_ram(tmp_path: Path) -> None:
    """A clone's RAM is the image's fd, under the id of the RAM it replaces: its streams
    then load into VMs with default RAM, and theirs into it."""
    from cove.vmm.layout import MemoryFile
    from cove.vmm.qemu import SHAPES, qemu_argv
    from tests.unit.test_backends import FILES, PATHS

    plan = plan_for(tmp_path, "storage", Hypervisor.QEMU)
    argv = qemu_argv(plan, FILES, PATHS, memory=MemoryFile(7, shared=False))
    backend = argv[argv.index("-object") + 1]
    assert backend == (f"memory-backend-file,id=microvm.ram,size={plan.memory_mib}M,"
                       "mem-path=/dev/fd/7,share=off")
    assert argv[argv.index("-machine") + 1] == "microvm,memory-backend=microvm.ram"
    pci = qemu_argv(plan, FILES, PATHS, SHAPES["pci"], MemoryFile(9, shared=True))
    assert "id=pc.ram," in pci[pci.index("-object") + 1]
    assert pci[pci.index("-object") + 1].endswith("share=on")
    assert "memory-backend-file" not in " ".join(qemu_argv(plan, FILES, PATHS))


def test_arp_announcement_says_the_address_is_at_the_new_mac() -> None:
    from cove.guest.identity import arp_announcement

    mac, address = bytes.fromhex("02491700aabb"), bytes([10, 0, 2, 15])
    frame = arp_announcement(mac, address)
    assert len(frame) == 42 and frame[:6] == b"\xff" * 6 and frame[6:12] == mac
    assert frame[12:14] == b"\x08\x06" and frame[20:22] == b"\x00\x01"  # ARP, a request
    assert frame[22:28] == mac and frame[28:32] == address == frame[38:42]  # gratuitous


def test_what_up_waits_for_is_what_the_daemon_holds_until() -> None:
    """`vm_settled` is the daemon's rule for `?settled=`; `up` stops at the same states."""
    from cove.daemon.status import vm_settled
    for state, health, settled in (
            ("starting", "starting", False), ("running", "starting", False),
            ("running", "healthy", True), ("running", "-", True),
            ("running", "unhealthy", True), ("suspended", "-", True),
            ("exited", "-", True), ("failed", "-", True)):
        assert vm_settled({"state": state, "health": health}) is settled, (state, health)


def test_a_started_service_with_a_check_is_starting_until_the_check_speaks(
        tmp_path: Path) -> None:
    """The daemon's status comes from the agent's events while `up` waits: a service that
    has just started is healthy only if it has no check (the CI failure of a stack member
    whose check always fails, reported healthy on its `started` event)."""
    from typing import Any, cast

    from cove.host.journal import Journal
    from cove.plan.vmplan import make_plan
    from cove.spec import load_spec
    from cove.vm.record import VmRecord
    from cove.vm.supervisor import VmSupervisor
    from tests.unit.test_backends import HOST, KERNEL

    (tmp_path / "cove.toml").write_text(
        'name = "two"\n[services.checked]\ncommand = "sleep 9"\n'
        '[services.checked.health]\ncommand = "false"\n'
        '[services.plain]\ncommand = "sleep 9"\n')
    plan = make_plan(load_spec(tmp_path), HOST, KERNEL)
    record = VmRecord(plan, cast(Any, None))
    supervisor = VmSupervisor(record, tmp_path / "home", Journal(tmp_path / "events.jsonl"))
    supervisor.state = "running"
    for svc in ("checked", "plain"):
        supervisor.on_frame({"t": "event", "kind": "started", "svc": svc, "pid": 7})
    assert supervisor.status()["health"] == "starting"
    supervisor.on_frame({"t": "event", "kind": "unhealthy", "svc": "checked", "output": "no"})
    assert supervisor.status()["health"] == "unhealthy"
    supervisor.on_frame({"t": "event", "kind": "started", "svc": "checked", "pid": 8})
    assert supervisor.status()["health"] == "starting"  # a restart checks afresh
    supervisor.on_frame({"t": "event", "kind": "healthy", "svc": "checked", "output": ""})
    assert supervisor.status()["health"] == "healthy"


def test_saves_a_crash_cut_short_are_reaped_but_not_one_under_way(tmp_path: Path) -> None:
    from cove.vm.snapshots import publishing, reap_leftovers, snapshots_dir

    root = snapshots_dir(tmp_path)
    root.mkdir(parents=True)
    old, new = root / ".tmp-c0ld", root / ".tmp-n3w"
    for path in (old, new):
        path.mkdir()
        (path / "state").write_bytes(b"guest ram")
    os.utime(old, (0, 0))
    assert reap_leftovers(tmp_path) == [old]
    assert new.exists() and not old.exists()
    with publishing(tmp_path, "saved") as (ident, tmp):
        (tmp / "state").write_bytes(b"ram")
    assert (root / ident / "state").read_bytes() == b"ram" and not tmp.exists()
