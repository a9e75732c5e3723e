"""The guest side of the other hypervisors, booted under QEMU in each one's device shape.

Firecracker, Cloud Hypervisor, crosvm and kvmtool need KVM, which this host cannot give. What
they give a guest can still be reproduced: cove plans the VM for that hypervisor (its module
list, command line, stop by reset) and QEMU boots it with the devices where that hypervisor
puts them (`cove.vmm.qemu.SHAPES`). Only the agent's channel differs: those reach it over
vsock, which needs /dev/vhost-vsock, so here it stays on virtio-serial (the vsock link itself
is tested over a socket in tests/unit/test_agent_host.py).
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from pathlib import Path

import pytest

from cove.image.build import build_artifacts
from cove.plan.accel import AccelDecision, decide_accel, host_tsc_khz
from cove.plan.vmplan import HostFacts, Plan, make_plan
from cove.spec import load_spec
from cove.spec.model import Hypervisor
from cove.vm.frames import Frame
from cove.vm.machine import Machine
from cove.vm.vmdir import VmDir
from cove.vmm.launch import QemuLauncher
from cove.vmm.qemu import SHAPES
from tests.vm.conftest import HELLO, fetch, free_port, write_spec

pytestmark = pytest.mark.vm

# A module parameter given on the command line, which /init must hand to the module it loads
# (the way Firecracker's `virtio_mmio.device=` entries reach virtio_mmio), and one the module
# does not have (as `virtio_mmio.device=` is for a kernel without MMIO_CMDLINE_DEVICES): the
# kernel ignores that one, and the boot goes on.
PARAMS = ("virtio_blk.queue_depth=77", "virtio_mmio.device=4K@0xd0000000:5")


def plan_as_for(spec_dir: Path, hypervisor: Hypervisor) -> tuple[Plan, Plan]:
    """(the plan cove makes for `hypervisor` on a KVM host, that plan made bootable here):
    QEMU under TCG, with TCG's command line, and the agent on virtio-serial."""
    spec = load_spec(spec_dir)
    kernel = build_artifacts(spec).kernel
    here = HostFacts(decide_accel(spec.accel), host_tsc_khz())
    on_kvm = dataclasses.replace(here, accel=AccelDecision("kvm", "as on a KVM host"),
                                 installed=frozenset({hypervisor}))
    planned = make_plan(spec, on_kvm, kernel, hypervisor=hypervisor)
    tcg = make_plan(spec, here, kernel)
    return planned, dataclasses.replace(
        planned, hypervisor="qemu", accel=tcg.accel, cmdline=(*tcg.cmdline, *PARAMS),
        agent_transport="serial", agent_config={**planned.agent_config, "transport": "serial"})


def ignore(_frame: Frame) -> None:
    """Frames these tests do not look at."""


async def boot_in_shape(spec_dir: Path, plan: Plan, shape: str, port: int) -> dict[str, str]:
    """Boot `plan` in `shape`, wait for hello to answer on `port`, look around, stop it."""
    artifacts = build_artifacts(load_spec(spec_dir))
    found: dict[str, str] = {}
    async with Machine(plan, artifacts, VmDir.for_name(plan.name), ignore) as machine:
        machine.launcher = QemuLauncher(plan, machine.launcher.files, machine.launcher.paths,
                                        SHAPES[shape])
        await machine.start(cold=True)
        async with asyncio.timeout(90):
            while (page := await asyncio.to_thread(fetch, port)) is None:
                await asyncio.sleep(0.5)
        found["page"] = page
        for key, command in LOOKS.items():
            found[key] = await shell(machine, command)
        began = time.monotonic()
        await machine.stop()
        found["stopped in"] = f"{time.monotonic() - began:.1f}"
        found["exit"] = str(machine.process.returncode if machine.process else None)
    return found


async def shell(machine: Machine, command: str) -> str:
    output: list[bytes] = []
    code = await machine.exec(["sh", "-c", command], lambda _fd, data: output.append(data))
    return b"".join(output).decode().strip() if code == 0 else f"exit {code}"


LOOKS = {
    "queue_depth": "cat /sys/module/virtio_blk/parameters/queue_depth",
    "pci": "ls /sys/bus/pci/drivers/virtio-pci 2>/dev/null | grep -c : || true",
    "mmio": "ls /sys/bus/platform/drivers/virtio-mmio 2>/dev/null | "
            "grep -cvxe bind -e unbind -e uevent -e module || true",
    "modules": "cut -d' ' -f1 /proc/modules | sort | tr '\\n' ' '",
}


def hello_spec(tmp_path: Path, name: str, network: str, port: int) -> Path:
    text = HELLO.read_text().split("[[ports]]")[0].replace('name = "hello"', f'name = "{name}"')
    text = text.replace("vcpu = 1", f'vcpu = 1\nnetwork = "{network}"')
    return write_spec(tmp_path / name, text + f"[[ports]]\nhost = {port}\nguest = 8080\n")


def test_firecracker_shape(cove_home: Path, tmp_path: Path) -> None:
    """virtio-mmio described through ACPI, as Firecracker does on x86_64 from 1.8 on; no user
    networking, so the port goes through the agent tunnel; stopped by a reset (reboot=k)."""
    port = free_port()
    spec_dir = hello_spec(tmp_path, "fc-shape", "none", port)
    planned, plan = plan_as_for(spec_dir, Hypervisor.FIRECRACKER)
    assert "virtio_mmio" in planned.modules and "virtio_pci" not in planned.modules
    assert planned.agent_config["halt"] == "reboot"
    found = asyncio.run(boot_in_shape(spec_dir, plan, "microvm", port))
    assert "Hello from cove!" in found["page"]  # through the tunnel: network = "none"
    assert found["queue_depth"] == "77"  # the command line's parameter reached the module
    assert int(found["mmio"]) >= 3 and found["pci"] == "0"
    assert "virtio_net" not in found["modules"]
    assert float(found["stopped in"]) < 15  # the agent's reset, not the kill at the end


@pytest.mark.parametrize(("hypervisor", "network"), [
    (Hypervisor.KVMTOOL, "user"),  # kvmtool has user networking: QEMU's plays it here
    (Hypervisor.CLOUD_HYPERVISOR, "none"),  # tap only: the port goes through the tunnel
])
def test_pci_shape(cove_home: Path, tmp_path: Path, hypervisor: Hypervisor,
                   network: str) -> None:
    """virtio-pci (q35), as Cloud Hypervisor, crosvm and kvmtool give on x86_64: the plan
    loads virtio_pci, and the root disk, console, rng (and network) are found on PCI."""
    port = free_port()
    name = f"pci-{hypervisor.value}"
    spec_dir = hello_spec(tmp_path, name, network, port)
    planned, plan = plan_as_for(spec_dir, hypervisor)
    assert "virtio_pci" in planned.modules and "virtio_mmio" not in planned.modules
    found = asyncio.run(boot_in_shape(spec_dir, plan, "pci", port))
    assert "Hello from cove!" in found["page"]
    assert found["queue_depth"] == "77"
    assert int(found["pci"]) >= 3 and found["mmio"] == "0"
    assert ("virtio_net" in found["modules"]) == (network == "user")
    assert float(found["stopped in"]) < 15
