"""A VM's directory under the cove home: lock, sockets, logs."""

from __future__ import annotations

import fcntl
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cove.errors import die
from cove.host.home import Home
from cove.host.proc import running_hypervisor
from cove.spec.settings import valid_name
from cove.vmm.layout import RunPaths

UNIX_PATH_MAX = 107


@dataclass(frozen=True)
class VmDir:
    root: Path

    @classmethod
    def for_name(cls, name: str, home: Path | None = None) -> VmDir:
        """A VM's directory; the name is checked, so it can never leave `vms/`."""
        if not valid_name(name):
            die(f"{name!r} is not a valid VM name",
                "names are lower-case letters, digits, '.', '_' and '-' (at most 63)")
        return cls(Home(home).vm(name))

    @property
    def run(self) -> Path:
        """Sockets and per-boot files: removed when the VM stops."""
        return self.root / "run"

    @property
    def sockets(self) -> RunPaths:
        return RunPaths(self.run, self.root / "console.log",
                        stacks=self.root.parent.parent / "stacks")

    @property
    def record(self) -> Path:
        """What the daemon needs to boot this VM again or adopt it: see state.py."""
        return self.root / "vm.json"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def initrd(self) -> Path:
        return self.run / "initrd"

    @property
    def qemu_log(self) -> Path:
        return self.root / "qemu.log"

    @property
    def pidfile(self) -> Path:
        return self.run / "qemu.pid"  # the hypervisor's pid, whichever it is

    @property
    def token(self) -> Path:
        """This boot's agent secret (the guest got it in its initrd): needed to adopt."""
        return self.run / "agent.token"

    def running_pid(self) -> int | None:
        return running_hypervisor(self.pidfile, self.run)

    def claim(self, adopt: bool = False) -> int:
        """Take the VM's lock for this process's lifetime: one owner per name.

        With adopt, a QEMU left running by a previous owner is kept (and its run dir);
        otherwise a running one means the name is taken.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o700)
        for path in (self.sockets.qmp, self.sockets.agent):
            if len(str(path)) > UNIX_PATH_MAX:
                die(f"socket path too long for Linux ({len(str(path))} > {UNIX_PATH_MAX}): "
                    f"{path}", "set COVE_HOME to a shorter directory")
        fd = os.open(self.root / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            if not adopt and self.running_pid() is not None:
                raise BlockingIOError
        except BlockingIOError:
            os.close(fd)
            die(f"a VM named {self.root.name!r} is already running",
                "stop it first, or give this one another name (--name)")
        if not adopt:
            shutil.rmtree(self.run, ignore_errors=True)
            self.run.mkdir(mode=0o700)
        return fd

    def release(self, lock_fd: int) -> None:
        shutil.rmtree(self.run, ignore_errors=True)
        os.close(lock_fd)
