"""`hypervisor = "auto"`: which hypervisor runs a spec on this host, and why."""

from __future__ import annotations

import shutil
from dataclasses import dataclass

from cove.errors import die
from cove.plan.features import SPEED_ORDER, Feature, missing_features
from cove.spec.model import Hypervisor

BINARIES = {
    Hypervisor.QEMU: "qemu-system-x86_64",
    Hypervisor.FIRECRACKER: "firecracker",
    Hypervisor.CLOUD_HYPERVISOR: "cloud-hypervisor",
    Hypervisor.CROSVM: "crosvm",
    Hypervisor.KVMTOOL: "lkvm",
}

# How to get each hypervisor, for the error when its binary is missing.
INSTALL_HINTS = {
    "qemu-system-x86_64": "install it with: apt-get install qemu-system-x86",
    "firecracker": "get a release from Firecracker's GitHub releases and put `firecracker` "
                   "on PATH (it needs KVM)",
    "cloud-hypervisor": "get a release from Cloud Hypervisor's GitHub releases and put "
                        "`cloud-hypervisor` on PATH (it needs KVM)",
    "crosvm": "build crosvm from source (cargo) and put `crosvm` on PATH (it needs KVM)",
    "lkvm": "build kvmtool from source and put `lkvm` on PATH (it needs KVM)",
}


@dataclass(frozen=True)
class HypervisorChoice:
    hypervisor: Hypervisor
    reason: str


def installed_hypervisors() -> frozenset[Hypervisor]:
    return frozenset(h for h, binary in BINARIES.items() if shutil.which(binary))


def choose_hypervisor(requested: Hypervisor, accel: str, installed: frozenset[Hypervisor],
                      wanted: list[Feature]) -> HypervisorChoice:
    """The requested hypervisor if it can run the spec; for auto the fastest that can."""
    if requested is not Hypervisor.AUTO:
        return explicit_choice(requested, wanted)
    if accel != "kvm":
        return HypervisorChoice(Hypervisor.QEMU, "no usable KVM: only QEMU runs guests under TCG")
    skipped: list[str] = []
    for hypervisor in SPEED_ORDER:
        if hypervisor not in installed:
            continue
        missing = missing_features(hypervisor, wanted)
        if not missing:
            reason = "fastest installed hypervisor with everything the spec declares"
            if skipped:
                reason += f" ({'; '.join(skipped)})"
            return HypervisorChoice(hypervisor, reason)
        skipped.append(f"{hypervisor.value} lacks {', '.join(f.value for f, _ in missing)}")
    die("no installed hypervisor supports everything this spec declares: " + "; ".join(skipped)
        if skipped else "no hypervisor is installed",
        "install QEMU with: apt-get install qemu-system-x86")


def explicit_choice(requested: Hypervisor, wanted: list[Feature]) -> HypervisorChoice:
    missing = missing_features(requested, wanted)
    if missing:
        feature, note = missing[0]
        die(f"{feature.value} is not supported by {requested.value}: {note}",
            "; ".join(f"{f.value}: {n}" for f, n in missing[1:]) or None)
    return HypervisorChoice(requested, f"requested (hypervisor = {requested.value})")
