"""Files a booted VM uses, the same for every hypervisor backend."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class BootFiles:
    vmlinux: Path
    initrd: Path
    root: Path
    nix_store: Path | None = None  # an erofs image of a Nix closure, mounted at /nix/store


@dataclass(frozen=True)
class MemoryFile:
    """Guest RAM in a file the hypervisor gets as an open fd: `shared` writes go to the file
    (a clone image being filled); private ones stay in the process (a clone over a sealed
    image)."""

    fd: int
    shared: bool


@dataclass(frozen=True)
class RunPaths:
    """Sockets and per-boot files in a VM's run dir (removed when it stops)."""

    run: Path
    console_log: Path
    console_socket: bool = True  # attachable console; else the console only goes to the log
    stacks: Path | None = None  # the home's stacks dir, where each stack's segment hub is

    @property
    def qmp(self) -> Path:
        return self.run / "qmp.sock"

    @property
    def agent(self) -> Path:
        return self.run / "agent.sock"

    @property
    def console(self) -> Path | None:
        return self.run / "console.sock" if self.console_socket else None

    @property
    def api(self) -> Path:
        """The REST socket of Firecracker or Cloud Hypervisor, crosvm's control socket."""
        return self.run / "api.sock"

    @property
    def vsock(self) -> Path:
        """Hybrid vsock: Firecracker's and Cloud Hypervisor's unix socket for guest vsock."""
        return self.run / "vsock.sock"

    @property
    def segment(self) -> Path:
        """This VM's end of its stack's segment (a unix datagram socket QEMU binds)."""
        return self.run / "segment.sock"

    def hub(self, stack: str) -> Path:
        """The daemon's end of a stack's segment: every member sends its frames here."""
        if self.stacks is None:
            raise ValueError("these run paths have no stacks directory")
        return stack_hub(self.stacks, stack)

    def overlay(self, drive: str) -> Path:
        """An ephemeral VM's throw-away overlay over one of its volumes."""
        return self.run / f"{drive}.qcow2"

    def virtiofs(self, tag: str) -> Path:
        return self.run / f"fs-{tag}.sock"


def stack_hub(stacks: Path, stack: str) -> Path:
    return stacks / stack / "hub.sock"
