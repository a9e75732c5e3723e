"""The daemon checks every field of a VM record that reaches a host tool (daemon/intake.py):
a record sent to the API by anyone but `cove up` cannot smuggle an option into QEMU's
argv, a word into the kernel command line or a line into the guest's init."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from cove.daemon.intake import check_record
from cove.errors import CoveError
from cove.image.build import Artifacts
from cove.image.rootfs import RootImage
from cove.spec.model import Hypervisor, Port
from cove.vm.record import VmRecord
from tests.unit.test_backends import KERNEL, plan_for


def good_record(tmp_path: Path) -> VmRecord:
    files = []
    for name in ("vmlinux", "initrd", "root.img"):
        (tmp_path / name).write_bytes(b"x")
        files.append(tmp_path / name)
    kernel = dataclasses.replace(KERNEL, vmlinux=files[0])
    artifacts = Artifacts(kernel, files[1], RootImage(files[2], (), 1))
    return VmRecord(plan_for(tmp_path, "everything", Hypervisor.QEMU), artifacts)


def test_a_record_cove_makes_passes(tmp_path: Path) -> None:
    check_record(good_record(tmp_path))


@pytest.mark.parametrize(("change", "field"), [
    (lambda p: {"shares": (dataclasses.replace(p.shares[0], tag="s0,readonly=off"),)},
     "plan.shares[0].tag"),
    (lambda p: {"shares": (dataclasses.replace(p.shares[0], source="rel/dir"),)},
     "plan.shares[0].source"),
    (lambda p: {"drives": (dataclasses.replace(p.drives[0], serial="a" * 21),)},
     "plan.drives[0].serial"),
    (lambda p: {"drives": (dataclasses.replace(p.drives[0], target="/data\nrm -rf /"),)},
     "plan.drives[0].target"),
    (lambda p: {"cmdline": (*p.cmdline, "init=/bin/sh quiet")}, "plan.cmdline"),
    (lambda p: {"modules": ("virtio_blk; reboot",)}, "plan.modules[0]"),
    (lambda p: {"network": "lab,script=/x"}, "plan.network"),
    (lambda p: {"ports": (Port(8080, 80, bind="127.0.0.1,hostfwd=tcp::22-:22"),)},
     "plan.ports[0].bind"),
    (lambda p: {"ports": (Port(0, 80),)}, "plan.ports[0].host"),
    (lambda p: {"init_env": {"A B": "x"}}, "plan.init_env"),
    (lambda p: {"vcpu": True}, "plan.vcpu"),
    (lambda p: {"agent_transport": "tcp"}, "plan.agent_transport"),
    (lambda p: {"nix_closure": ("/nix/store/a,b",)}, "plan.nix_closure[0]"),
])
def test_each_field_that_reaches_a_tool_is_checked(tmp_path: Path, change: object,
                                                   field: str) -> None:
    record = good_record(tmp_path)
    plan = dataclasses.replace(record.plan, **change(record.plan))  # type: ignore[operator]
    with pytest.raises(CoveError, match=field.replace("[", r"\[").replace("]", r"\]")):
        check_record(dataclasses.replace(record, plan=plan))
