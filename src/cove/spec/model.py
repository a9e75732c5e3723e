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
    QEMU = "qemu"


class Source(enum.StrEnum):
    HOST = "host"


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
class Service:
    name: str
    command: str
    pre_start: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    restart: Restart = Restart.ON_FAILURE
    stop_timeout: float = 5.0
    health: Health | None = None


@dataclass(frozen=True)
class Kernel:
    """Either a Debian package to fetch, or a kernel the user brings."""

    package: str = "linux-image-cloud-amd64"
    path: Path | None = None
    modules: Path | None = None
    cmdline: str = ""


@dataclass(frozen=True)
class Spec:
    file: Path
    name: str
    vcpu: int = 1
    memory_mib: int = 256
    packages: tuple[str, ...] = ()
    services: tuple[Service, ...] = ()
    ports: tuple[Port, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    kernel: Kernel = Kernel()
    restart: VmRestart = VmRestart()
    source: Source = Source.HOST
    hypervisor: Hypervisor = Hypervisor.QEMU
    accel: Accel = Accel.AUTO

    @property
    def directory(self) -> Path:
        return self.file.parent
