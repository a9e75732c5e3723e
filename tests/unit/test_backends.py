"""Every backend's argv/config for three specs, against golden files and the upstream specs.

Set COVE_UPDATE_GOLDEN=1 to rewrite the golden files after a deliberate change (and read the
diff before committing it).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cove.errors import CoveError
from cove.image.kernel import KernelArtifact
from cove.image.modules import FEATURES
from cove.plan.accel import AccelDecision
from cove.plan.vmplan import HostFacts, Plan, make_plan
from cove.spec import load_spec
from cove.spec.model import Hypervisor
from cove.spec.settings import NAME_PATTERN
from cove.vmm import cloud_hypervisor, firecracker
from cove.vmm.layout import BootFiles, RunPaths
from cove.vmm.render import render
from tests.standins.schemas import cloud_hypervisor_validator, firecracker_validator, problems

GOLDEN = Path(__file__).resolve().parents[1] / "golden"
SPECS = {
    "minimal": 'name = "mini"\nnetwork = "none"\n',
    "storage": '''name = "store"
network = "lab"
[[shares]]
source = "./src"
target = "/src"
[[volumes]]
source = "data"
target = "/var/lib/data"
size = "2G"
[[ports]]
host = 8080
guest = 80
''',
    "everything": '''name = "full"
vcpu = 2
memory = "1G"
network = "lab"
auto_forward = true
ephemeral = true
env = { MODE = "test" }
[[shares]]
source = "./src"
target = "/src"
readonly = false
[[shares]]
source = "./docs"
target = "/docs"
proto = "9p"
[[volumes]]
source = "./pg.ext4"
target = "/var/lib/postgresql"
size = 512
[[ports]]
host = 5432
guest = 5432
[services.db]
command = "sleep 1000"
''',
}
KERNEL = KernelArtifact("6.1.0-test", Path("/cache/kernel/vmlinux"),
                        {f.symbol: "m" for f in FEATURES.values()}, None)
HOST = HostFacts(AccelDecision("kvm", "test host"), None, frozenset(Hypervisor) - {Hypervisor.AUTO},
                 Path("/var/lib/cove"))
FILES = BootFiles(Path("/cache/kernel/vmlinux"), Path("/vms/x/run/initrd"),
                  Path("/cache/root/root.erofs"))
PATHS = RunPaths(Path("/vms/x/run"), Path("/vms/x/console.log"))
BACKENDS = [h for h in Hypervisor if h is not Hypervisor.AUTO]


def plan_for(tmp_path: Path, spec_name: str, hypervisor: Hypervisor) -> Plan:
    (tmp_path / "src").mkdir(exist_ok=True)
    (tmp_path / "docs").mkdir(exist_ok=True)
    (tmp_path / "cove.toml").write_text(SPECS[spec_name])
    return make_plan(load_spec(tmp_path), HOST, KERNEL, hypervisor=hypervisor)


def outcome(tmp_path: Path, spec_name: str, hypervisor: Hypervisor) -> dict[str, Any]:
    try:
        plan = plan_for(tmp_path, spec_name, hypervisor)
    except CoveError as error:
        return {"refused": str(error)}
    text = json.dumps(render(plan, FILES, PATHS), indent=1)
    return dict(json.loads(text.replace(str(tmp_path), "<spec dir>")))


@pytest.mark.parametrize("spec_name", list(SPECS))
@pytest.mark.parametrize("hypervisor", BACKENDS, ids=[h.value for h in BACKENDS])
def test_golden(tmp_path: Path, spec_name: str, hypervisor: Hypervisor) -> None:
    result = outcome(tmp_path, spec_name, hypervisor)
    path = GOLDEN / f"{spec_name}-{hypervisor.value}.json"
    if os.environ.get("COVE_UPDATE_GOLDEN"):
        path.write_text(json.dumps(result, indent=1) + "\n")
    assert result == json.loads(path.read_text())


def test_unsupported_declarations_are_refused_not_dropped(tmp_path: Path) -> None:
    refusals = {(s, h.value): outcome(tmp_path, s, h).get("refused")
                for s in SPECS for h in BACKENDS}
    assert refusals[("storage", "firecracker")] == (
        "virtiofs shares is not supported by firecracker: firecracker has no virtiofs/9p; "
        "use a volume or hypervisor = qemu")
    assert "kvmtool has no virtiofs" in str(refusals[("storage", "kvmtool")])
    assert "cloud-hypervisor has no 9p" in str(refusals[("everything", "cloud-hypervisor")])
    assert refusals[("everything", "qemu")] is None
    assert refusals[("everything", "crosvm")] is None


# (the other specs are refused for these hypervisors, as the test above checks)
@pytest.mark.parametrize("spec_name", ["minimal"])
def test_firecracker_bodies_match_upstream_swagger(tmp_path: Path, spec_name: str) -> None:
    plan = plan_for(tmp_path, spec_name, Hypervisor.FIRECRACKER)
    config = firecracker.config_file(plan, FILES, PATHS)
    single = {"boot-source": "BootSource", "machine-config": "MachineConfiguration",
              "vsock": "Vsock", "logger": "Logger", "metrics": "Metrics"}
    for key, definition in single.items():
        assert problems(firecracker_validator(definition), config[key]) == [], key
    for drive in config["drives"]:
        assert problems(firecracker_validator("Drive"), drive) == []
    for interface in config["network-interfaces"]:
        assert problems(firecracker_validator("NetworkInterface"), interface) == []
    assert problems(firecracker_validator("InstanceActionInfo"),
                    firecracker.SHUTDOWN_CALL[2]) == []


@pytest.mark.parametrize("spec_name", ["minimal", "storage"])
def test_cloud_hypervisor_body_matches_upstream_openapi(tmp_path: Path, spec_name: str) -> None:
    plan = plan_for(tmp_path, spec_name, Hypervisor.CLOUD_HYPERVISOR)
    body = cloud_hypervisor.vm_config(plan, FILES, PATHS)
    assert problems(cloud_hypervisor_validator("VmConfig"), body) == []


def test_the_validators_are_strict() -> None:
    """A validator that accepted anything would make the checks above worthless."""
    assert problems(firecracker_validator("BootSource"), {"kernel_image_path": "/k",
                                                          "kernel_path": "/typo"})
    assert problems(firecracker_validator("Drive"), {"drive_id": "root"})  # missing field
    assert problems(firecracker_validator("Logger"), {"level": "Loud"})
    assert problems(firecracker_validator("Logger"), {"level": "Off"}) == []  # YAML 1.2
    assert problems(cloud_hypervisor_validator("VmConfig"), {"payload": {}, "cpus": {
        "boot_vcpus": 1}})  # max_vcpus is required
    assert problems(cloud_hypervisor_validator("VmConfig"), {"payload": {}, "memory": {
        "size": "256M"}})  # bytes, as an integer


@given(st.from_regex(NAME_PATTERN, fullmatch=True), st.from_regex(NAME_PATTERN, fullmatch=True))
def test_firecracker_ids_are_valid_and_keep_names_apart(one: str, other: str) -> None:
    rule = re.compile(r"[A-Za-z0-9-]{1,64}")  # Firecracker's validate_instance_id
    assert rule.fullmatch(firecracker.instance_id(one))
    if rule.fullmatch(one):
        assert firecracker.instance_id(one) == one  # a name Firecracker takes is kept
    if one != other:
        assert firecracker.instance_id(one) != firecracker.instance_id(other)


def test_pci_hypervisors_load_virtio_pci(tmp_path: Path) -> None:
    buses = {h: {m for m in plan_for(tmp_path, "minimal", h).modules
                 if m.startswith("virtio_pci") or m == "virtio_mmio"} for h in BACKENDS}
    assert buses[Hypervisor.QEMU] == buses[Hypervisor.FIRECRACKER] == {"virtio_mmio"}
    for hypervisor in (Hypervisor.CLOUD_HYPERVISOR, Hypervisor.CROSVM, Hypervisor.KVMTOOL):
        assert buses[hypervisor] == {"virtio_pci"}, hypervisor
