"""QEMU's microvm machine: the argv for a plan. Nothing else in cove knows QEMU's flags."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cove.guest.proto import PORT_NAME
from cove.plan import ROOT_SERIAL, Plan
from cove.spec.model import Port

QEMU = "qemu-system-x86_64"


@dataclass(frozen=True)
class BootFiles:
    vmlinux: Path
    initrd: Path
    root: Path


@dataclass(frozen=True)
class Sockets:
    qmp: Path
    agent: Path
    console_log: Path
    console: Path | None = None  # a socket to attach to the serial console, if wanted


def opt(value: str | Path) -> str:
    """Escape a value inside a QEMU option list: commas are doubled."""
    return str(value).replace(",", ",,")


def hostfwd(port: Port) -> str:
    return f"hostfwd={port.proto}:{port.bind}:{port.host}-:{port.guest}"


def cpu_model(accel: str) -> str:
    # rdrand seeds the guest's RNG at once: Python's first getrandom() otherwise blocks ~2 s
    return "host" if accel == "kvm" else "qemu64,+rdrand"


def console_chardev(sockets: Sockets) -> list[str]:
    """The serial console goes to a file; with a socket, also to whoever attaches."""
    if sockets.console is None:
        return ["-chardev", f"file,id=console,path={opt(sockets.console_log)}"]
    return ["-chardev", f"socket,id=console,path={opt(sockets.console)},server=on,wait=off,"
                        f"logfile={opt(sockets.console_log)},logappend=on"]


def qemu_argv(plan: Plan, files: BootFiles, sockets: Sockets) -> list[str]:
    netdev = ",".join(["user,id=net0", *(hostfwd(p) for p in plan.ports)])
    return [
        QEMU,
        "-name", opt(plan.name),
        "-machine", "microvm",
        "-accel", plan.accel.accel,
        "-cpu", cpu_model(plan.accel.accel),
        "-m", f"{plan.memory_mib}M",
        "-smp", str(plan.vcpu),
        "-nodefaults",
        "-no-user-config",
        "-display", "none",
        "-no-reboot",
        "-global", "virtio-mmio.force-legacy=false",
        "-kernel", str(files.vmlinux),
        "-initrd", str(files.initrd),
        "-append", " ".join(plan.cmdline),
        *console_chardev(sockets),
        "-serial", "chardev:console",
        "-chardev", f"socket,id=qmp,path={opt(sockets.qmp)},server=on,wait=off",
        "-mon", "chardev=qmp,mode=control",
        "-chardev", f"socket,id=agent,path={opt(sockets.agent)},server=on,wait=off",
        "-device", "virtio-serial-device",
        "-device", f"virtserialport,chardev=agent,name={PORT_NAME}",
        "-device", "virtio-rng-device",
        "-drive", f"id=root,file={opt(files.root)},format=raw,if=none,readonly=on",
        "-device", f"virtio-blk-device,drive=root,serial={ROOT_SERIAL}",
        "-netdev", netdev,
        "-device", "virtio-net-device,netdev=net0",
    ]
