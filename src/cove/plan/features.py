"""What each hypervisor can give a guest: the one table `cove check`, `auto` and the docs use.

No backend silently drops a declared feature: `missing_features` names each one with its
alternative, and `cove check`/`cove up` refuse the spec.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from cove.spec.model import Hypervisor, ShareProto, Source, Spec, StoreMode


class Feature(enum.StrEnum):
    VIRTIOFS = "virtiofs shares"
    P9 = "9p shares"
    USER_NET = "user networking"
    TAP = "tap networking"
    VSOCK = "vsock"
    BALLOON = "balloon"
    GRACEFUL_SHUTDOWN = "graceful shutdown"
    RUNTIME_FORWARD = "runtime port forwards"
    QCOW2 = "qcow2 overlays (ephemeral volumes)"
    TCG = "software emulation (no KVM)"
    SEGMENT = "stack segment (VM to VM without root)"
    SNAPSHOTS = "snapshots (warm starts, pause, suspend, clones)"
    CONSOLE = "attachable console (cove console)"
    DEVICES = "virtio devices"


@dataclass(frozen=True)
class Support:
    ok: bool
    note: str = ""  # how it is done, or what to do instead


Y = Support(True)
NO_SNAPSHOTS = "not wired yet: this hypervisor always boots cold; use hypervisor = \"qemu\""
NO_CONSOLE = ("the serial console goes to console.log ({}): `cove logs --console`; for a "
              "shell, `cove exec -t NAME -- sh`")
# Decided: network = "user" stays refused where there is no user networking (it promises
# outbound access these cannot give), and the hint says how ports still work.
NO_USER_NET = ("{} has tap networking only: use network = \"none\" and ports still work "
               "through the agent tunnel (no outbound network), or network = \"<name>\" "
               "(cove network create, as root) for outbound")
MATRIX: dict[Hypervisor, dict[Feature, Support]] = {
    Hypervisor.QEMU: {
        Feature.VIRTIOFS: Support(True, "vhost-user-fs-device + virtiofsd"),
        Feature.P9: Support(True, "virtio-9p-device (the guest kernel must have 9p)"),
        Feature.USER_NET: Support(True, "-netdev user"),
        Feature.TAP: Y,
        Feature.VSOCK: Support(False, "not wired: cove reaches QEMU's agent over virtio-serial, "
                                      "which needs no host module"),
        Feature.BALLOON: Support(True, "virtio-balloon-device, free page reporting"),
        Feature.GRACEFUL_SHUTDOWN: Support(True, "agent, then ACPI power button (QMP)"),
        Feature.RUNTIME_FORWARD: Support(True, "QMP hostfwd_add, or the agent tunnel"),
        Feature.QCOW2: Y,
        Feature.TCG: Y,
        Feature.SEGMENT: Support(True, "a second NIC, -netdev dgram to the daemon's hub"),
        Feature.SNAPSHOTS: Support(True, "QMP stop + migrate to a file; -incoming to restore"),
        Feature.CONSOLE: Support(True, "a console socket the daemon attaches to"),
        Feature.DEVICES: Support(True, "virtio-mmio on the microvm machine, found through ACPI"),
    },
    Hypervisor.FIRECRACKER: {
        Feature.VIRTIOFS: Support(False, "firecracker has no virtiofs/9p; use a volume or "
                                         "hypervisor = qemu"),
        Feature.P9: Support(False, "firecracker has no virtiofs/9p; use a volume or "
                                   "hypervisor = qemu"),
        Feature.USER_NET: Support(False, NO_USER_NET.format("firecracker")),
        Feature.TAP: Y,
        Feature.VSOCK: Support(True, "hybrid vsock over a unix socket"),
        Feature.BALLOON: Support(False, "not wired in cove yet, so freed guest memory stays "
                                        "with the VM; use hypervisor = qemu to give it back"),
        Feature.GRACEFUL_SHUTDOWN: Support(True, "agent, then SendCtrlAltDel"),
        Feature.RUNTIME_FORWARD: Support(True, "the agent tunnel"),
        Feature.QCOW2: Support(False, "firecracker takes raw images only; drop ephemeral"),
        Feature.TCG: Support(False, "firecracker needs KVM; use hypervisor = qemu"),
        Feature.SEGMENT: Support(False, "not wired for firecracker yet; use hypervisor = "
                                        "qemu for a stack's VMs"),
        Feature.SNAPSHOTS: Support(False, NO_SNAPSHOTS),
        Feature.CONSOLE: Support(False, NO_CONSOLE.format("firecracker's stdout")),
        Feature.DEVICES: Support(True, "virtio-mmio: through ACPI from 1.8 on; before, only "
                                       "virtio_mmio.device= (the kernel then needs "
                                       "CONFIG_VIRTIO_MMIO_CMDLINE_DEVICES)"),
    },
    Hypervisor.CLOUD_HYPERVISOR: {
        Feature.VIRTIOFS: Support(True, "--fs with virtiofsd, memory shared=on"),
        Feature.P9: Support(False, "cloud-hypervisor has no 9p; use proto = \"virtiofs\""),
        Feature.USER_NET: Support(False, NO_USER_NET.format("cloud-hypervisor")),
        Feature.TAP: Y,
        Feature.VSOCK: Support(True, "hybrid vsock over a unix socket"),
        Feature.BALLOON: Support(False, "not wired in cove yet, so freed guest memory stays "
                                        "with the VM; use hypervisor = qemu to give it back"),
        Feature.GRACEFUL_SHUTDOWN: Support(True, "agent, then vm.power-button"),
        Feature.RUNTIME_FORWARD: Support(True, "the agent tunnel"),
        Feature.QCOW2: Y,
        Feature.TCG: Support(False, "cloud-hypervisor needs KVM; use hypervisor = qemu"),
        Feature.SEGMENT: Support(False, "not wired for cloud-hypervisor yet; use hypervisor = "
                                        "qemu for a stack's VMs"),
        Feature.SNAPSHOTS: Support(False, NO_SNAPSHOTS),
        Feature.CONSOLE: Support(False, NO_CONSOLE.format("serial file=")),
        Feature.DEVICES: Support(True, "virtio-pci (the guest loads virtio_pci)"),
    },
    Hypervisor.CROSVM: {
        Feature.VIRTIOFS: Support(True, "--shared-dir type=fs (built-in device)"),
        Feature.P9: Support(True, "--shared-dir type=p9"),
        Feature.USER_NET: Support(False, NO_USER_NET.format("crosvm")),
        Feature.TAP: Y,
        Feature.VSOCK: Support(True, "vhost-vsock; the host connects with AF_VSOCK"),
        Feature.BALLOON: Support(False, "not wired in cove yet, so freed guest memory stays "
                                        "with the VM; use hypervisor = qemu to give it back"),
        Feature.GRACEFUL_SHUTDOWN: Support(True, "agent, then `crosvm powerbtn`"),
        Feature.RUNTIME_FORWARD: Support(True, "the agent tunnel"),
        Feature.QCOW2: Y,
        Feature.TCG: Support(False, "crosvm needs KVM; use hypervisor = qemu"),
        Feature.SEGMENT: Support(False, "not wired for crosvm yet; use hypervisor = "
                                        "qemu for a stack's VMs"),
        Feature.SNAPSHOTS: Support(False, NO_SNAPSHOTS),
        Feature.CONSOLE: Support(False, NO_CONSOLE.format("--serial type=file")),
        Feature.DEVICES: Support(True, "virtio-pci (the guest loads virtio_pci)"),
    },
    Hypervisor.KVMTOOL: {
        Feature.VIRTIOFS: Support(False, "kvmtool has no virtiofs; use proto = \"9p\""),
        Feature.P9: Support(True, "--9p"),
        Feature.USER_NET: Support(True, "--network mode=user"),
        Feature.TAP: Y,
        Feature.VSOCK: Support(True, "vhost-vsock; the host connects with AF_VSOCK"),
        Feature.BALLOON: Support(False, "not wired in cove yet, so freed guest memory stays "
                                        "with the VM; use hypervisor = qemu to give it back"),
        Feature.GRACEFUL_SHUTDOWN: Support(False, "kvmtool has no graceful stop: cove asks the "
                                                  "agent to power off, else `lkvm stop` kills"),
        Feature.RUNTIME_FORWARD: Support(True, "the agent tunnel (kvmtool's user net has no "
                                               "forwards)"),
        Feature.QCOW2: Support(False, "kvmtool cannot write qcow2 overlays; drop ephemeral"),
        Feature.TCG: Support(False, "kvmtool needs KVM; use hypervisor = qemu"),
        Feature.SEGMENT: Support(False, "not wired for kvmtool yet; use hypervisor = "
                                        "qemu for a stack's VMs"),
        Feature.SNAPSHOTS: Support(False, NO_SNAPSHOTS),
        Feature.CONSOLE: Support(False, NO_CONSOLE.format("lkvm's stdout")),
        Feature.DEVICES: Support(True, "virtio-pci (the guest loads virtio_pci)"),
    },
}
# Guest boot speed on KVM, fastest first: what `auto` prefers among capable hypervisors.
SPEED_ORDER = (Hypervisor.FIRECRACKER, Hypervisor.CLOUD_HYPERVISOR, Hypervisor.CROSVM,
               Hypervisor.KVMTOOL, Hypervisor.QEMU)
# Good to have, not requirements: a lack is said, not refused (balloon is on by default).
# (vsock is how cove reaches some agents, never something a spec asks for)
SOFT = frozenset({Feature.GRACEFUL_SHUTDOWN, Feature.BALLOON, Feature.CONSOLE, Feature.VSOCK})


def required_features(spec: Spec, accel: str) -> list[Feature]:
    """What a spec declares, in the matrix's terms."""
    wanted = [Feature.GRACEFUL_SHUTDOWN]
    protos = {share.proto for share in spec.shares}
    if ShareProto.VIRTIOFS in protos or (spec.source is Source.NIX
                                         and spec.store is StoreMode.SHARE):
        wanted.append(Feature.VIRTIOFS)
    if ShareProto.P9 in protos:
        wanted.append(Feature.P9)
    if spec.network == "user":
        wanted.append(Feature.USER_NET)
    elif spec.network != "none":
        wanted.append(Feature.TAP)
    if spec.auto_forward:
        wanted.append(Feature.RUNTIME_FORWARD)
    if spec.ephemeral and spec.volumes:
        wanted.append(Feature.QCOW2)
    if accel == "tcg":
        wanted.append(Feature.TCG)
    if spec.segment:
        wanted.append(Feature.SEGMENT)
    if spec.idle_suspend_after:
        wanted.append(Feature.SNAPSHOTS)
    return wanted


def missing_features(hypervisor: Hypervisor, wanted: list[Feature]) -> list[tuple[Feature, str]]:
    """(feature, what to do instead) for each declared feature `hypervisor` cannot give."""
    table = MATRIX[hypervisor]
    return [(f, table[f].note) for f in wanted if not table[f].ok and f not in SOFT]


def markdown_table() -> str:
    """The docs table (docs/hypervisors.md is generated from this)."""
    hypervisors = list(MATRIX)
    lines = ["| feature | " + " | ".join(h.value for h in hypervisors) + " |",
             "|---|" + "---|" * len(hypervisors)]
    for feature in Feature:
        cells = []
        for hypervisor in hypervisors:
            support = MATRIX[hypervisor][feature]
            mark = "yes" if support.ok else "no"
            cells.append(f"{mark}: {support.note}" if support.note else mark)
        lines.append(f"| {feature.value} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":  # regenerates the table in docs/hypervisors.md
    print(markdown_table(), end="")
