"""QEMU's microvm machine: the argv for a plan. Nothing else in cove knows QEMU's flags.

Also the device shapes of the other hypervisors (`SHAPES`): cove's tests boot a guest planned
for Firecracker or a PCI hypervisor under QEMU, with the devices where that hypervisor puts
them, to prove the guest side on a host where those hypervisors cannot run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cove.guest.proto import PORT_NAME
from cove.plan.vmplan import Plan
from cove.spec.model import Port
from cove.vmm.common import disks, guest_mac, tap_name
from cove.vmm.layout import BootFiles, MemoryFile, RunPaths

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class Shape:
    """Where a machine puts its virtio devices, and how the guest learns of them."""

    machine: str  # -machine type and options
    bus: str  # the suffix of QEMU's virtio device names: "device" (mmio) or "pci"
    ram_id: str = "microvm.ram"  # the machine's own RAM block: a memory backend standing in
    # for it takes this id, so its migration streams stay compatible with the default RAM's


MICROVM = Shape("microvm", "device")  # virtio-mmio, described through ACPI (so is Firecracker
# from 1.8 on x86_64)
SHAPES = {
    "microvm": MICROVM,
    # Firecracker before 1.8 (and guests without ACPI): virtio-mmio described only by
    # `virtio_mmio.device=` entries, which QEMU's microvm adds to the command line itself
    "mmio-cmdline": Shape("microvm,acpi=off", "device"),
    # Cloud Hypervisor, crosvm, kvmtool on x86_64: virtio-pci
    "pci": Shape("q35", "pci", "pc.ram"),
}


def opt(value: str | Path) -> str:
    """Escape a value inside a QEMU option list: commas are doubled."""
    return str(value).replace(",", ",,")


def hostfwd(port: Port) -> str:
    return f"hostfwd={port.proto}:{port.bind}:{port.host}-:{port.guest}"


def cpu_model(accel: str) -> str:
    # rdrand seeds the guest's RNG at once: Python's first getrandom() otherwise blocks ~2 s.
    # arat (the APIC timer runs in deep idle) lets the kernel go tickless: without it, and
    # with no HPET on microvm, the tick stays periodic and an idle guest costs ~6% of a core
    return "host" if accel == "kvm" else "qemu64,+rdrand,+arat"


def console_chardev(sockets: RunPaths) -> list[str]:
    """The serial console goes to a file; with a socket, also to whoever attaches."""
    if sockets.console is None:
        # append: the daemon bounds the log by truncating it (host/journal.py bound_file)
        return ["-chardev", f"file,id=console,path={opt(sockets.console_log)},append=on"]
    return ["-chardev", f"socket,id=console,path={opt(sockets.console)},server=on,wait=off,"
                        f"logfile={opt(sockets.console_log)},logappend=on"]


def machine_args(plan: Plan, shape: Shape, memory: MemoryFile | None = None) -> list[str]:
    if memory is not None:
        share = "on" if memory.shared else "off"
        return ["-object", f"memory-backend-file,id={shape.ram_id},size={plan.memory_mib}M,"
                           f"mem-path=/dev/fd/{memory.fd},share={share}",
                "-machine", f"{shape.machine},memory-backend={shape.ram_id}"]
    if any(share.proto == "virtiofs" for share in plan.shares):
        # virtiofsd maps guest memory: it must live in a shared memfd
        return ["-object", f"memory-backend-memfd,id=mem,size={plan.memory_mib}M,share=on",
                "-machine", f"{shape.machine},memory-backend=mem"]
    return ["-machine", shape.machine]


def drive_args(plan: Plan, files: BootFiles, paths: RunPaths, shape: Shape = MICROVM
               ) -> list[str]:
    args = []
    for disk in disks(plan, files, paths):
        flags = "readonly=on" if disk.readonly else "cache=writeback,discard=unmap"
        args += ["-drive", f"id={disk.id},file={opt(disk.path)},format={disk.format},if=none,"
                           f"{flags}",
                 "-device", f"virtio-blk-{shape.bus},drive={disk.id},serial={disk.serial}"]
    return args


def share_args(plan: Plan, paths: RunPaths, shape: Shape = MICROVM) -> list[str]:
    args = []
    for index, share in enumerate(plan.shares):
        if share.proto == "virtiofs":
            args += ["-chardev", f"socket,id=fs{index},path={opt(paths.virtiofs(share.tag))}",
                     "-device", f"vhost-user-fs-{shape.bus},chardev=fs{index},tag={share.tag}"]
        else:
            readonly = ",readonly=on" if share.readonly else ""
            args += ["-fsdev", f"local,id=fsdev{index},path={opt(share.source)},"
                               f"security_model=none{readonly}",
                     "-device", f"virtio-9p-{shape.bus},fsdev=fsdev{index},mount_tag={share.tag}"]
    return args


def segment_args(plan: Plan, sockets: RunPaths, shape: Shape = MICROVM) -> list[str]:
    """The stack's private L2 segment: frames go to the daemon's hub as unix datagrams, and
    the hub floods them to the other members (no root, no host interface)."""
    if not plan.stack:
        return []
    netdev = (f"dgram,id=seg0,local.type=unix,local.path={opt(sockets.segment)},"
              f"remote.type=unix,remote.path={opt(sockets.hub(plan.stack))}")
    return ["-netdev", netdev,
            "-device", f"virtio-net-{shape.bus},netdev=seg0,mac={plan.segment_mac}"]


def network_args(plan: Plan, shape: Shape = MICROVM) -> list[str]:
    if plan.network == "none":
        return []
    if plan.network == "user":
        # an idle-suspending VM's ports are the daemon's sockets, which outlive QEMU
        forwards = () if plan.idle_suspend_after else plan.ports
        netdev = ",".join(["user,id=net0", *(hostfwd(p) for p in forwards)])
    else:
        netdev = f"tap,id=net0,ifname={tap_name(plan.name)},script=no,downscript=no"
    return ["-netdev", netdev,
            "-device", f"virtio-net-{shape.bus},netdev=net0,mac={guest_mac(plan.name)}"]


def qemu_argv(plan: Plan, files: BootFiles, sockets: RunPaths, shape: Shape = MICROVM,
              memory: MemoryFile | None = None) -> list[str]:
    bus = shape.bus
    return [
        QEMU,
        "-name", opt(plan.name),
        *machine_args(plan, shape, memory),
        "-accel", plan.accel.accel,
        "-cpu", cpu_model(plan.accel.accel),
        "-m", f"{plan.memory_mib}M",
        "-smp", str(plan.vcpu),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        *(["-global", "virtio-mmio.force-legacy=false"] if bus == "device" else []),
        "-kernel", str(files.vmlinux),
        "-initrd", str(files.initrd),
        "-append", " ".join(plan.cmdline),
        *console_chardev(sockets),
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,path={opt(sockets.qmp)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=agent,path={opt(sockets.agent)},server=on,wait=off",
        "-device", f"virtio-serial-{bus}",
        "-device", f"virtserialport,chardev=agent,name={PORT_NAME}",
        "-device", f"virtio-rng-{bus}",
        *(["-device", f"virtio-balloon-{bus},free-page-reporting=on"] if plan.balloon else []),
        *drive_args(plan, files, sockets, shape),
        *share_args(plan, sockets, shape),
        *network_args(plan, shape),
        *segment_args(plan, sockets, shape),
    ]
