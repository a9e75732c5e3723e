"""Small pure helpers every backend shares: names, MACs, drive lists, command lines."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from cove.errors import die
from cove.plan.vmplan import NIX_SERIAL, ROOT_SERIAL, Plan
from cove.vmm.layout import BootFiles, RunPaths

# A guest kernel on these hypervisors resets the VM to stop it (no ACPI power-off path).
REBOOT_ARGS = ("reboot=k",)


@dataclass(frozen=True)
class Disk:
    id: str
    path: str
    serial: str
    readonly: bool
    format: str = "raw"


def plain(value: str | object, separators: str, what: str) -> str:
    """A value for an option string that has no escape for its separators (crosvm's and
    kvmtool's key=value lists): refused with a clear error rather than spliced in."""
    text = str(value)
    bad = sorted({c for c in text if c in separators or c in '"\n\0'})
    if bad:
        die(f"{what} {text!r} holds {' '.join(repr(c) for c in bad)}, which this hypervisor's "
            "options cannot carry", "rename or move it, or use hypervisor = \"qemu\"")
    return text


def tap_name(vm: str) -> str:
    """A tap interface name for a VM: at most 15 bytes, stable, unlikely to collide."""
    return "ct" + hashlib.sha256(vm.encode()).hexdigest()[:10]


def guest_mac(vm: str) -> str:
    """A stable locally administered unicast MAC for a VM."""
    digest = hashlib.sha256(b"mac:" + vm.encode()).digest()
    return "02:" + ":".join(f"{b:02x}" for b in digest[:5])


def disks(plan: Plan, files: BootFiles, paths: RunPaths) -> list[Disk]:
    """The read-only root image, then the data volumes (through throw-away qcow2 overlays
    when the VM is ephemeral, so their images are only read)."""
    root = Disk("root", str(files.root), ROOT_SERIAL, readonly=True)
    store = [Disk("nix", str(files.nix_store), NIX_SERIAL, readonly=True)] \
        if files.nix_store else []
    if plan.ephemeral:
        volumes = [Disk(d.id, str(paths.overlay(d.id)), d.serial, readonly=False,
                        format="qcow2") for d in plan.drives]
    else:
        volumes = [Disk(d.id, d.path, d.serial, readonly=False) for d in plan.drives]
    return [root, *store, *volumes]


def cmdline(plan: Plan, extra: tuple[str, ...] = ()) -> str:
    return " ".join((*plan.cmdline, *extra))
