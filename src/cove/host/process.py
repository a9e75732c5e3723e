"""Hypervisor processes a Machine owns: its own child, or one adopted after a daemon restart."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import Sequence
from typing import Protocol

from cove.host.proc import require_tool

# A hypervisor and its helpers (virtiofsd, the memory-image loader) get a process group of
# their own, so a terminal's Ctrl-C reaches cove (which stops them gracefully) and not them;
# but no session of their own. With the kernel's autogroup scheduling each session is one
# scheduling entity, so all the VMs of one owner (the daemon, or a foreground `cove`) weigh
# together as one against the host's other sessions, as libvirt's machine.slice does with
# cgroups: a burst of booting guests cannot starve the user's shell or `cove ls`.
VM_PROCESS_GROUP = 0  # Popen's process_group: a new group, led by the child


def dying_with_owner(argv: Sequence[str]) -> list[str]:
    """argv run so that it is SIGKILLed when the cove process that starts it dies, even by
    SIGKILL: util-linux's setpriv sets the parent-death signal, then execs it. (A preexec_fn
    doing the same makes Python fork() the whole interpreter instead of vfork(): ~4 ms a
    start for the CLI, more for a program with a large heap using the SDK.)"""
    return [require_tool("setpriv"), "--pdeathsig", "KILL", "--", *argv]


class VmProcess(Protocol):
    pid: int

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...

    def send_signal(self, signum: int) -> None: ...


class Adopted:
    """A running QEMU that is not our child: watched through a pidfd.

    Its exit status cannot be read (only a parent can reap), so it reports -1 when gone.
    """

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.fd = os.pidfd_open(pid)
        self._code: int | None = None
        self._gone = asyncio.Event()
        asyncio.get_running_loop().add_reader(self.fd, self._exited)

    @property
    def returncode(self) -> int | None:
        return self._code

    def _exited(self) -> None:
        asyncio.get_running_loop().remove_reader(self.fd)
        os.close(self.fd)
        self._code = -1
        self._gone.set()

    async def wait(self) -> int:
        await self._gone.wait()
        return -1

    def send_signal(self, signum: int) -> None:
        if self._code is None:
            with contextlib.suppress(ProcessLookupError):
                signal.pidfd_send_signal(self.fd, signum)
