"""The plan: a pure function of the spec, host facts and the kernel's capabilities.

It decides the devices, modules, kernel command line and accelerator; `cove plan` prints it
and the hypervisor backend turns it into an argv. Nothing here touches the host.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from cove.errors import die
from cove.image.kernel import KernelArtifact
from cove.image.modules import modules_to_load
from cove.spec.model import Port, Proto, Spec
from cove.vmm.accel import AccelDecision

ROOT_SERIAL = "cove-root"
GUEST_IP = "10.0.2.15/24"  # QEMU user networking's fixed addresses
GUEST_GATEWAY = "10.0.2.2"
GUEST_DNS = "10.0.2.3"
BASE_FEATURES = ("virtio-mmio", "virtio-blk", "virtio-console", "virtio-rng", "erofs",
                 "overlay", "acpi-button", "evdev", "virtio-net")


@dataclass(frozen=True)
class HostFacts:
    accel: AccelDecision
    tsc_khz: int | None


@dataclass(frozen=True)
class Plan:
    name: str
    vcpu: int
    memory_mib: int
    hypervisor: str
    accel: AccelDecision
    kernel_version: str
    features: tuple[str, ...]
    modules: tuple[str, ...]
    cmdline: tuple[str, ...]
    ports: tuple[Port, ...]
    init_env: dict[str, str] = field(default_factory=dict)
    agent_config: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ports"] = [{**asdict(p), "proto": p.proto.value} for p in self.ports]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        return cls(**{
            **data,
            "accel": AccelDecision(**data["accel"]),
            "features": tuple(data["features"]),
            "modules": tuple(data["modules"]),
            "cmdline": tuple(data["cmdline"]),
            "ports": tuple(Port(p["host"], p["guest"], Proto(p["proto"]), p["bind"])
                           for p in data["ports"]),
        })


def kernel_arg(key: str, value: str | int | None = None) -> str:
    """One kernel command line argument, quoted when its value has spaces."""
    if value is None:
        return key
    text = str(value)
    if any(c.isspace() for c in text) or '"' in text:
        if '"' in text:
            raise ValueError(f"kernel argument {key} cannot hold a double quote")
        text = f'"{text}"'
    return f"{key}={text}"


def kernel_cmdline(accel: str, tsc_khz: int | None, extra: str) -> tuple[str, ...]:
    args = [
        kernel_arg("console", "ttyS0"),
        kernel_arg("quiet"),
        kernel_arg("panic", -1),  # with -no-reboot a panic ends QEMU instead of hanging
        kernel_arg("cryptomgr.notests"),  # self-tests cost ~0.25 s under TCG
        kernel_arg("rdinit", "/init"),
    ]
    if accel == "tcg" and tsc_khz:
        args.append(kernel_arg("tsc_early_khz", tsc_khz))
    return (*args, *extra.split())


def agent_config(spec: Spec, with_services: bool) -> dict[str, Any]:
    services = {
        s.name: {"command": s.command, "pre_start": s.pre_start, "env": dict(s.env),
                 "restart": s.restart.value, "stop_timeout": s.stop_timeout,
                 "health": asdict(s.health) if s.health else None}
        for s in spec.services
    } if with_services else {}
    return {"name": spec.name, "env": dict(spec.env), "services": services}


def make_plan(spec: Spec, host: HostFacts, kernel: KernelArtifact,
              with_services: bool = True) -> Plan:
    modules, missing = modules_to_load(list(BASE_FEATURES), kernel.config)
    if missing:
        die(f"kernel {kernel.version} lacks what cove needs: {', '.join(missing)}",
            "use Debian's linux-image-cloud-amd64 (the default), or a kernel built with these")
    return Plan(
        name=spec.name,
        vcpu=spec.vcpu,
        memory_mib=spec.memory_mib,
        hypervisor=spec.hypervisor.value,
        accel=host.accel,
        kernel_version=kernel.version,
        features=BASE_FEATURES,
        modules=tuple(modules),
        cmdline=kernel_cmdline(host.accel.accel, host.tsc_khz, spec.kernel.cmdline),
        ports=spec.ports,
        init_env={"COVE_HOSTNAME": spec.name, "COVE_ROOT_SERIAL": ROOT_SERIAL,
                  "COVE_ROOT_FS": "erofs", "COVE_IP": GUEST_IP, "COVE_GATEWAY": GUEST_GATEWAY,
                  "COVE_DNS": GUEST_DNS},
        agent_config=agent_config(spec, with_services),
    )
