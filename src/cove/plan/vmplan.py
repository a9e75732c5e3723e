"""The plan: a pure function of the spec, host facts and the kernel's capabilities.

It decides the hypervisor, devices, modules, kernel command line, guest mounts and the
accelerator; `cove plan` prints it and a backend turns it into an argv or API calls.
Nothing here touches the host.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from cove.errors import die
from cove.host.home import Home
from cove.image.kernel import KernelArtifact
from cove.image.modules import modules_to_load, normalize, read_builtin, read_dep_table
from cove.image.pack import ROOT_FS
from cove.plan.accel import AccelDecision
from cove.plan.choose import HypervisorChoice, choose_hypervisor
from cove.plan.features import MATRIX, Feature, required_features
from cove.spec.model import Hypervisor, Port, Proto, ShareProto, Source, Spec, StoreMode

ROOT_SERIAL = "cove-root"
NIX_LOWER = "/nix/.ro-store"  # the read-only store; /nix/store is an overlay on top
NIX_SERIAL = "cove-nix"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
GUEST_IP = "10.0.2.15/24"  # QEMU user networking's fixed addresses
GUEST_GATEWAY = "10.0.2.2"
GUEST_DNS = "10.0.2.3"
AGENT_VSOCK_PORT = 1024
GUEST_CID = 3
AF_VSOCK_BACKENDS = frozenset({Hypervisor.CROSVM, Hypervisor.KVMTOOL})
SERIAL_AGENT = frozenset({Hypervisor.QEMU})  # the others reach the agent over vsock
# Where the virtio devices sit on x86_64: on PCI for these, virtio-mmio for QEMU's microvm
# and Firecracker (found through ACPI, or `virtio_mmio.device=` on the command line).
PCI_BACKENDS = frozenset({Hypervisor.CLOUD_HYPERVISOR, Hypervisor.CROSVM, Hypervisor.KVMTOOL})
# (erofs only for a Nix store image: loading it and libcrc32c cost ~35 ms of a TCG boot)
# Modules no service waits for: the ACPI power button (a stop's fallback) and the balloon.
# /init's background half loads them at the lowest priority once the agent runs; under TCG
# the vCPU is busy until then, so they no longer delay it (~35 ms of a boot).
LATER_MODULES = frozenset({"button", "evdev", "virtio_balloon"})
BASE_FEATURES = ("crc32c", "virtio-blk", "virtio-console", "virtio-rng", "overlay",
                 "acpi-button", "evdev")


@dataclass(frozen=True)
class HostFacts:
    accel: AccelDecision
    tsc_khz: int | None
    installed: frozenset[Hypervisor] = frozenset({Hypervisor.QEMU})
    home: Path = Path("/var/lib/cove")


@dataclass(frozen=True)
class PlannedShare:
    tag: str
    source: str
    target: str
    readonly: bool
    proto: str


@dataclass(frozen=True)
class Drive:
    """A data disk: its host image, the serial the guest finds it by, where it mounts."""

    id: str
    path: str
    serial: str
    target: str
    fs: str
    size_mib: int


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
    hypervisor_reason: str = ""
    shares: tuple[PlannedShare, ...] = ()
    drives: tuple[Drive, ...] = ()
    network: str = "user"
    agent_transport: str = "serial"  # or "vsock"
    vsock_cid: int = GUEST_CID
    ephemeral: bool = False
    guest_mounts: tuple[str, ...] = ()
    delivery: dict[str, str] = field(default_factory=dict)  # config/secrets host dirs
    nix_outputs: tuple[str, ...] = ()
    nix_closure: tuple[str, ...] = ()
    nix_root: str = "/"
    idle_suspend_after: float = 0.0  # the daemon suspends it after this long idle
    template: bool = True  # [warm] template: a template may be saved and restored
    balloon: bool = False  # virtio-balloon with free page reporting
    host_python: bool = False  # the guest's Python is the host's own python3 (source = host)
    stack: str = ""  # the stack it belongs to: a second NIC on that stack's segment
    member: str = ""  # its name within the stack

    @property
    def segment_mac(self) -> str:
        return self.init_env.get("COVE_SEG_MAC", "")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["ports"] = [{**asdict(p), "proto": p.proto.value} for p in self.ports]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Plan:
        """A saved plan; fields a newer cove added are ignored, missing ones raise."""
        known = {f.name for f in fields(cls)}
        data = {key: value for key, value in data.items() if key in known}
        return cls(**{
            **data,
            "accel": AccelDecision(**data["accel"]),
            "features": tuple(data["features"]),
            "modules": tuple(data["modules"]),
            "cmdline": tuple(data["cmdline"]),
            "ports": tuple(Port(p["host"], p["guest"], Proto(p["proto"]), p["bind"])
                           for p in data["ports"]),
            "shares": tuple(PlannedShare(**s) for s in data.get("shares", ())),
            "drives": tuple(Drive(**d) for d in data.get("drives", ())),
            "guest_mounts": tuple(data.get("guest_mounts", ())),
            "nix_outputs": tuple(data.get("nix_outputs", ())),
            "nix_closure": tuple(data.get("nix_closure", ())),
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
    if accel == "tcg":
        # TCG's TSC drifts against jiffies when the host is busy, so the clocksource
        # watchdog marks it unstable and the guest falls back to jiffies, which rules out
        # high-resolution timers and tickless idle (with the CPU's `arat`, see
        # vmm/qemu.cpu_model): 250 timer interrupts a second cost an idle VM ~6% of a core.
        args.append(kernel_arg("tsc", "reliable"))
    return (*args, *extra.split())


RESET_TO_STOP = frozenset({Hypervisor.FIRECRACKER, Hypervisor.KVMTOOL})


def agent_config(spec: Spec, with_services: bool, transport: str,
                 hypervisor: Hypervisor = Hypervisor.QEMU) -> dict[str, Any]:
    services = {
        s.name: {"command": s.command, "pre_start": s.pre_start, "env": dict(s.env),
                 "restart": s.restart.value, "stop_timeout": s.stop_timeout,
                 "health": asdict(s.health) if s.health else None, "user": s.user}
        for s in spec.services
    } if with_services else {}
    users = [s.user for s in spec.services if s.user != "root"]
    return {"name": spec.name, "env": dict(spec.env), "services": services,
            "transport": transport, "vsock_port": AGENT_VSOCK_PORT,
            "secrets_owner": users[0] if users else "root", "auto_forward": spec.auto_forward,
            "halt": "reboot" if hypervisor in RESET_TO_STOP else "poweroff"}


def with_nix_path(config: dict[str, Any], outputs: tuple[str, ...]) -> dict[str, Any]:
    """A flake's programs are on the services' PATH, first."""
    if not outputs:
        return config
    path = ":".join([*(f"{out}/bin" for out in outputs), DEFAULT_PATH])
    return {**config, "env": {"PATH": path, **config["env"]}}


def guest_cid(name: str) -> int:
    """With host-kernel vsock every guest on the host needs its own CID (3 and up)."""
    return GUEST_CID + int(hashlib.sha256(name.encode()).hexdigest(), 16) % (1 << 24)


def volume_image(source: str, home: Path) -> str:
    """A named volume lives in the cove home; otherwise the source is the image path."""
    return source if "/" in source else str(Home(home).volume(source))


def plan_storage(spec: Spec, home: Path) -> tuple[tuple[PlannedShare, ...], tuple[Drive, ...]]:
    shares = tuple(PlannedShare(f"share{i}", str(s.source), s.target, s.readonly, s.proto.value)
                   for i, s in enumerate(spec.shares))
    if spec.source is Source.NIX and spec.store is StoreMode.SHARE:
        # the host store: read-only at every layer (virtiofsd's bind, the guest mount)
        shares += (PlannedShare("nixstore", str(spec.nix_root / "nix" / "store"), NIX_LOWER,
                                True, "virtiofs"),)
    drives = tuple(Drive(f"vol{i}", volume_image(v.source, home), f"cove-vol{i}", v.target,
                         v.fs.value, v.size_mib)
                   for i, v in enumerate(spec.volumes))
    return shares, drives


def guest_mounts(shares: tuple[PlannedShare, ...], drives: tuple[Drive, ...],
                 nix: str = "") -> tuple[str, ...]:
    """Lines /init reads: KIND SOURCE TARGET OPTIONS (targets hold no spaces: validated).

    A Nix guest's store: read-only underneath (an erofs disk or the host's store), with an
    overlay on guest tmpfs on top, so the guest's own Nix can write and the host never sees.
    """
    lines = [f"disk {NIX_SERIAL} {NIX_LOWER} erofs"] if nix == "image" else []
    for share in shares:
        mode = "ro" if share.readonly else "rw"
        lines.append(f"{share.proto} {share.tag} {share.target} {mode}")
    lines += [f"disk {d.serial} {d.target} {d.fs}" for d in drives]
    if nix:
        lines.append(f"overlay {NIX_LOWER} /nix/store tmpfs")
    return tuple(lines)


def boot_modules(modules: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(modules /init loads before the root is mounted, modules loaded once the agent is up)."""
    later = tuple(m for m in modules if normalize(m) in LATER_MODULES)
    return tuple(m for m in modules if m not in later), later


def wants_balloon(spec: Spec, hypervisor: Hypervisor) -> bool:
    """On unless the spec says no, where the hypervisor's balloon is wired (features table)."""
    return spec.balloon and MATRIX[hypervisor][Feature.BALLOON].ok


def needed_features(spec: Spec, transport: str, balloon: bool = False,
                    bus: str = "virtio-mmio") -> list[str]:
    features = [bus, *BASE_FEATURES]
    if spec.source is Source.NIX and spec.store is StoreMode.IMAGE:
        features.append("erofs")
    if ROOT_FS not in features:
        features.append(ROOT_FS)
    if balloon:
        features.append("virtio-balloon")
    protos = {share.proto for share in spec.shares}
    if ShareProto.VIRTIOFS in protos or (spec.source is Source.NIX
                                         and spec.store is StoreMode.SHARE):
        features.append("virtiofs")
    if ShareProto.P9 in protos:
        features += ["9p", "9p-virtio"]
    if spec.volumes:
        features.append("ext4")
    if spec.network != "none" or spec.segment:
        features.append("virtio-net")
    if transport == "vsock":
        features.append("vsock")
    return features


def network_env(spec: Spec) -> dict[str, str]:
    env = {}
    if spec.network == "user":
        env = {"COVE_IP": GUEST_IP, "COVE_GATEWAY": GUEST_GATEWAY, "COVE_DNS": GUEST_DNS}
    if spec.segment:
        env |= {"COVE_SEG_IP": spec.segment.address, "COVE_SEG_MAC": segment_mac(spec.name),
                "COVE_SEG_HOSTS": " ".join(f"{name}={address}"
                                           for name, address in spec.segment.peers)}
    return env


def shared_busybox(host_root: bool) -> dict[str, str]:
    """A host-source root carries the host's busybox-static, the very binary the initramfs
    has: /init lets the root use the initramfs's copy (see init.sh)."""
    return {"COVE_SHARED_BUSYBOX": "/usr/bin/busybox"} if host_root else {}


def segment_mac(name: str) -> str:
    """A stable, locally administered MAC for a VM's stack NIC (0a:c5: never a vendor's)."""
    digest = hashlib.sha256(f"segment/{name}".encode()).digest()
    return "0a:c5:" + ":".join(f"{b:02x}" for b in digest[:4])


def choose(spec: Spec, host: HostFacts, hypervisor: Hypervisor | None) -> HypervisorChoice:
    wanted = required_features(spec, host.accel.accel)
    return choose_hypervisor(hypervisor or spec.hypervisor, host.accel.accel, host.installed,
                             wanted)


def make_plan(spec: Spec, host: HostFacts, kernel: KernelArtifact,
              with_services: bool = True, hypervisor: Hypervisor | None = None,
              nix_outputs: tuple[str, ...] = (), nix_closure: tuple[str, ...] = ()) -> Plan:
    choice = choose(spec, host, hypervisor)
    transport = "serial" if choice.hypervisor in SERIAL_AGENT else "vsock"
    balloon = wants_balloon(spec, choice.hypervisor)
    bus = "virtio-pci" if choice.hypervisor in PCI_BACKENDS else "virtio-mmio"
    features = needed_features(spec, transport, balloon, bus)
    modules, missing = modules_to_load(features, kernel.config)
    if kernel.modules is not None and not kernel.config:  # no config: the module lists decide
        available = read_dep_table(kernel.modules)
        builtin = read_builtin(kernel.modules)
        missing += [m for m in modules
                    if normalize(m) not in available and normalize(m) not in builtin]
        modules = [m for m in modules if normalize(m) in available]
    if missing:
        die(f"kernel {kernel.version} lacks what this spec needs: {', '.join(missing)}",
            "for shares use proto = \"virtiofs\" (Debian's cloud kernel has no 9p), or "
            "bring a kernel built with these (kernel.path)")
    shares, drives = plan_storage(spec, host.home)
    host_root = spec.source is Source.HOST  # its busybox and python3 are the host's own
    return Plan(
        name=spec.name,
        vcpu=spec.vcpu,
        memory_mib=spec.memory_mib,
        hypervisor=choice.hypervisor.value,
        hypervisor_reason=choice.reason,
        accel=host.accel,
        kernel_version=kernel.version,
        features=tuple(features),
        modules=tuple(modules),
        cmdline=kernel_cmdline(host.accel.accel, host.tsc_khz, spec.kernel.cmdline),
        ports=spec.ports,
        init_env={"COVE_HOSTNAME": spec.name, "COVE_ROOT_SERIAL": ROOT_SERIAL,
                  "COVE_ROOT_FS": ROOT_FS, **network_env(spec), **shared_busybox(host_root)},
        agent_config=with_nix_path(agent_config(spec, with_services, transport,
                                                choice.hypervisor), nix_outputs),
        shares=shares,
        drives=drives,
        network=spec.network,
        agent_transport=transport,
        ephemeral=spec.ephemeral,
        guest_mounts=guest_mounts(shares, drives, spec.store.value
                                  if spec.source is Source.NIX else ""),
        nix_outputs=nix_outputs,
        nix_closure=nix_closure,
        nix_root=str(spec.nix_root),
        vsock_cid=guest_cid(spec.name) if choice.hypervisor in AF_VSOCK_BACKENDS else GUEST_CID,
        delivery={key: str(path) for key, path in (("config", spec.config),
                                                    ("secrets", spec.secrets)) if path},
        idle_suspend_after=spec.idle_suspend_after,
        template=spec.template,
        balloon=balloon,
        host_python=host_root,
        stack=spec.segment.stack if spec.segment else "",
        member=spec.segment.member if spec.segment else "",
    )
