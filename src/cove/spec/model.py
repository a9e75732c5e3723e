"""Frozen dataclasses and enums for one VM declaration."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path


class Restart(enum.StrEnum):
    ALWAYS = "always"
    ON_FAILURE = "on-failure"
    NEVER = "never"


class Accel(enum.StrEnum):
    AUTO = "auto"
    KVM = "kvm"
    TCG = "tcg"


class Hypervisor(enum.StrEnum):
    AUTO = "auto"
    QEMU = "qemu"
    FIRECRACKER = "firecracker"
    CLOUD_HYPERVISOR = "cloud-hypervisor"
    CROSVM = "crosvm"
    KVMTOOL = "kvmtool"


class ShareProto(enum.StrEnum):
    VIRTIOFS = "virtiofs"
    P9 = "9p"


class Filesystem(enum.StrEnum):
    EXT4 = "ext4"


class Source(enum.StrEnum):
    HOST = "host"
    DEBIAN = "debian"
    NIX = "nix"


class StoreMode(enum.StrEnum):
    IMAGE = "image"
    SHARE = "share"


class Proto(enum.StrEnum):
    TCP = "tcp"
    UDP = "udp"


@dataclass(frozen=True)
class Port:
    host: int
    guest: int
    proto: Proto = Proto.TCP
    bind: str = "127.0.0.1"

    def __str__(self) -> str:
        return f"{self.bind}:{self.host}->{self.guest}/{self.proto}"


@dataclass(frozen=True)
class Health:
    command: str
    interval: float = 5.0
    timeout: float = 2.0
    retries: int = 3
    start_period: float = 0.0


@dataclass(frozen=True)
class VmRestart:
    policy: Restart = Restart.ON_FAILURE
    max: int = 5


@dataclass(frozen=True)
class Share:
    """A host directory seen inside the guest; read-only unless asked otherwise."""

    source: Path
    target: str
    readonly: bool = True
    proto: ShareProto = ShareProto.VIRTIOFS


@dataclass(frozen=True)
class Volume:
    """A persistent ext4 disk image: a name (kept in the cove home) or an image path."""

    source: str
    target: str
    size_mib: int = 1024
    fs: Filesystem = Filesystem.EXT4


@dataclass(frozen=True)
class Service:
    name: str
    command: str
    pre_start: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    restart: Restart = Restart.ON_FAILURE
    stop_timeout: float = 5.0
    health: Health | None = None
    user: str = "root"


@dataclass(frozen=True)
class Kernel:
    """Either a Debian package to fetch, or a kernel the user brings."""

    package: str = "linux-image-cloud-amd64"
    path: Path | None = None
    modules: Path | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class Segment:
    """A stack's private L2 segment as one VM sees it: its own address and every member's
    (by short and full name), handed out by cove, so VMs reach each other without root."""

    stack: str
    member: str  # its name in the stack
    address: str  # e.g. 10.89.0.11/24
    peers: tuple[tuple[str, str], ...] = ()  # (name, address) for /etc/hosts


@dataclass(frozen=True)
class Spec:
    file: Path
    name: str
    vcpu: int = 1
    memory_mib: int = 256
    packages: tuple[str, ...] = ()
    keep: tuple[str, ...] = ()  # paths kept although a trim rule drops them
    services: tuple[Service, ...] = ()
    ports: tuple[Port, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    kernel: Kernel = Kernel()
    restart: VmRestart = VmRestart()
    source: Source = Source.HOST
    flake: str = ""
    store: StoreMode = StoreMode.IMAGE
    nix_root: Path = Path("/")
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    hypervisor: Hypervisor = Hypervisor.AUTO
    shares: tuple[Share, ...] = ()
    volumes: tuple[Volume, ...] = ()
    network: str = "user"  # "user" (QEMU's NAT), "none", or a network from `cove network`
    auto_forward: bool = False
    config: Path | None = None  # delivered read-only at /config
    secrets: Path | None = None  # delivered at /run/secrets on tmpfs, files 0400
    ephemeral: bool = False
    accel: Accel = Accel.AUTO
    idle_suspend_after: float = 0.0  # seconds; 0 = never
    template: bool = True  # [warm] template: save and restore templates
    balloon: bool = True
    segment: Segment | None = None  # set when the VM is a stack's member

    @property
    def directory(self) -> Path:
        return self.file.parent
