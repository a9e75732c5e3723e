"""One running VM: its QEMU process, agent channel and shutdown sequence.

The same Machine serves `cove run` in the foreground and, later, the daemon hosting many.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import secrets
import signal
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from cove.errors import CoveError
from cove.fsutil import write_atomic, write_json
from cove.image.build import Artifacts
from cove.image.gc import BOOT_RECORD
from cove.image.initramfs import BootConfig, load_order, write_initrd
from cove.image.sources.nix import add_gc_roots, remove_gc_roots
from cove.plan import Plan
from cove.runtime.agent_client import AgentClient, AgentError, Frame
from cove.runtime.forward import Forwards, check_ports_free
from cove.runtime.network import attach, detach
from cove.runtime.process import Adopted, VmProcess
from cove.runtime.state import artifacts_to_json
from cove.runtime.storage import (
    delivered_files,
    lock_volumes,
    prepare_drives,
    start_virtiofsd,
)
from cove.runtime.vmdir import VmDir
from cove.vmm.launch import launcher_for
from cove.vmm.layout import BootFiles

BOOT_TIMEOUT = 120.0  # TCG boots take ~3 s; this only catches guests that hang
AGENT_STOP_TIMEOUT = 20.0
QUIT_TIMEOUT = 3.0


class BootError(CoveError):
    pass


def tail(path: os.PathLike[str] | str, lines: int = 15) -> str:
    try:
        with open(path, errors="replace") as handle:
            return "\n".join(handle.read().splitlines()[-lines:])
    except OSError:
        return ""


def die_with_parent() -> None:
    """In the QEMU child: get SIGKILLed when the owning cove process dies, even by SIGKILL."""
    import ctypes

    pr_set_pdeathsig = 1
    ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGKILL)


def boot_config(plan: Plan, artifacts: Artifacts, env: dict[str, str]) -> BootConfig:
    """Read at every boot: changed config or secrets need no image rebuild."""
    return BootConfig(plan.agent_config, {**plan.init_env, **env},
                      load_order(artifacts.kernel, plan.modules), plan.guest_mounts,
                      delivered_files(plan))


class Machine:
    def __init__(self, plan: Plan, artifacts: Artifacts, vm_dir: VmDir,
                 on_frame: Callable[[Frame], None], bound_to_owner: bool = True) -> None:
        """bound_to_owner: QEMU dies with this process (foreground runs); a daemon's
        VMs are not bound, so they outlive it."""
        self.bound_to_owner = bound_to_owner
        self.plan = plan
        self.artifacts = artifacts
        self.dir = vm_dir
        self.on_frame = on_frame
        self.process: VmProcess | None = None
        self.agent: AgentClient | None = None
        self.lock_fd: int | None = None
        self.started_at = 0.0
        self.ready_at = 0.0
        self.helpers: list[asyncio.subprocess.Process] = []  # virtiofsd
        self.forwards = Forwards(self)
        self.launcher = launcher_for(plan, BootFiles(artifacts.kernel.vmlinux, vm_dir.initrd,
                                                     artifacts.root.path,
                                                     artifacts.nix_store_image), vm_dir.sockets)

    async def __aenter__(self) -> Machine:
        self.claim()
        return self

    async def __aexit__(self, kind: type[BaseException] | None, error: BaseException | None,
                        trace: TracebackType | None) -> None:
        with contextlib.suppress(Exception):
            await asyncio.shield(self.stop())
        await self.release()

    def claim(self, adopt: bool = False) -> None:
        self.lock_fd = self.dir.claim(adopt)

    async def release(self) -> None:
        """Drop the agent channel and the name; the run dir goes only if QEMU is gone."""
        if self.agent is not None:
            await self.agent.close()
            self.agent = None
        if self.lock_fd is not None:
            if self.running:
                os.close(self.lock_fd)
            else:
                self.dir.release(self.lock_fd)
            self.lock_fd = None

    async def adopt(self, timeout: float = 5.0) -> None:
        """Take over a hypervisor a previous daemon started: pidfd, then the agent."""
        pid = self.dir.running_pid()
        if pid is None:
            raise BootError(f"{self.plan.name}: its hypervisor is no longer running")
        try:
            token = self.dir.token.read_text().strip()
        except OSError:
            raise BootError(f"{self.plan.name}: its agent token is gone ({self.dir.token})",
                            f"stop it with `cove down {self.plan.name}`") from None
        self.process = Adopted(pid)
        self.agent = AgentClient(self.launcher.agent_connector(), self.on_frame, token)
        try:
            await asyncio.wait_for(self._connect_and_greet(self.agent), timeout)
        except TimeoutError:
            raise AgentError(f"{self.plan.name}: the agent did not answer within "
                             f"{timeout:.0f} s") from None
        self.ready_at = time.monotonic()
        await self.forward_static_ports()

    async def start(self) -> None:
        binary = self.launcher.require_binary()
        if self.plan.network == "user":
            check_ports_free(self.plan.ports)
        token = secrets.token_hex(16)
        # file work, mkfs and `ip` run in a thread: a daemon's event loop never blocks
        await asyncio.to_thread(self._prepare_host, token)
        self.started_at = time.monotonic()
        self.helpers = await start_virtiofsd(self.plan, self.dir.sockets, self.dir.qemu_log)
        locks = lock_volumes(self.plan)
        try:
            with self.dir.qemu_log.open("ab") as log:
                self.process = await asyncio.create_subprocess_exec(
                    binary, *self.launcher.argv()[1:], stdin=asyncio.subprocess.DEVNULL,
                    stdout=log, stderr=log, pass_fds=locks,
                    start_new_session=True,  # Ctrl-C reaches cove, which stops it gracefully
                    preexec_fn=die_with_parent if self.bound_to_owner else None)
        finally:
            for fd in locks:  # the hypervisor holds them now, for as long as it runs
                os.close(fd)
        write_atomic(self.dir.pidfile, f"{self.process.pid}\n")
        write_json(self.dir.run / BOOT_RECORD, artifacts_to_json(self.artifacts))
        await self.launcher.after_spawn()
        self.agent = AgentClient(self.launcher.agent_connector(), self.on_frame, token)
        await self._await_agent(self.agent)
        self.ready_at = time.monotonic()
        await self.forward_static_ports()

    def _prepare_host(self, token: str) -> None:
        """Everything on the host before the hypervisor starts (blocking; in a thread)."""
        network_env = self.join_network()
        write_atomic(self.dir.token, token)
        config = boot_config(self.plan, self.artifacts, network_env)
        boot = dataclasses.replace(config, agent={**config.agent, "token": token})
        write_initrd(self.artifacts.initramfs, boot, self.dir.initrd)
        if self.plan.nix_outputs:
            add_gc_roots(Path(self.plan.nix_root), self.dir.root.parent.parent,
                         self.plan.name, self.plan.nix_outputs)
        prepare_drives(self.plan, self.dir.sockets)
        self.dir.qemu_log.write_bytes(b"")
        self.launcher.prepare()

    def join_network(self) -> dict[str, str]:
        """On a cove network: the VM's address, and its tap on the bridge."""
        if self.plan.network in ("user", "none"):
            return {}
        return attach(self.plan.network, self.plan.name, self.dir.root.parent.parent
                      ).init_env()

    def leave_network(self) -> None:
        if self.plan.network not in ("user", "none"):
            detach(self.plan.network, self.plan.name, self.dir.root.parent.parent)

    async def forward_static_ports(self) -> None:
        """The spec's ports: QEMU has them from its argv on user networking; everywhere
        else they become agent tunnels."""
        for port in self.plan.ports:
            await self.forwards.add(port, existing=True)

    async def _await_agent(self, agent: AgentClient) -> None:
        assert self.process is not None
        exited = asyncio.create_task(self.process.wait())
        hello = asyncio.create_task(self._connect_and_greet(agent))
        done, _ = await asyncio.wait({exited, hello}, timeout=BOOT_TIMEOUT,
                                     return_when=asyncio.FIRST_COMPLETED)
        if hello in done and hello.exception() is None:
            exited.cancel()
            return
        hello.cancel()
        if not done:
            exited.cancel()
            raise BootError(f"the guest did not answer within {BOOT_TIMEOUT:.0f} s",
                            self.diagnosis())
        # the channel closes a moment before QEMU exits: wait for the exit status
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(exited, QUIT_TIMEOUT)
        raise BootError(f"the guest stopped while booting (QEMU exit "
                        f"{self.process.returncode})", self.diagnosis())

    async def _connect_and_greet(self, agent: AgentClient) -> None:
        await agent.connect()
        await agent.hello

    def diagnosis(self) -> str:
        qemu_said = tail(self.dir.qemu_log, 5)
        if 'Failed to get "write" lock' in qemu_said:
            return ("a disk image is in use by another VM (QEMU's image lock); give this VM "
                    "its own volume, or make it ephemeral to share one read-only\n" + qemu_said)
        parts = []
        if qemu := tail(self.dir.qemu_log, 5):
            parts.append(f"QEMU said:\n{qemu}")
        if console := tail(self.dir.sockets.console_log):
            parts.append(f"the guest console ended with:\n{console}")
        return "\n".join(parts) or f"see {self.dir.root}"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.returncode is None

    async def exec(self, argv: list[str], on_output: Callable[[int, bytes], None],
                   env: dict[str, str] | None = None, stdin: bytes | None = None) -> int:
        if self.agent is None:
            raise AgentError("the VM has not started")
        return await self.agent.exec(argv, on_output, env, stdin)

    async def wait(self) -> int:
        """QEMU's exit status (-1 for an adopted QEMU, whose status cannot be read)."""
        assert self.process is not None
        return await self.process.wait()

    async def stop(self, timeout: float = AGENT_STOP_TIMEOUT) -> None:
        """Graceful first: the agent stops the services and powers off; then the virtual
        power button; then the hypervisor's own quit; then SIGKILL."""
        self.forwards.close()
        if self.running:
            await self._stop_steps(timeout)
        for helper in self.helpers:
            if helper.returncode is None:
                helper.kill()
                await helper.wait()
        self.helpers = []
        if not self.running:
            await asyncio.to_thread(self._clean_host)

    def _clean_host(self) -> None:
        self.leave_network()
        if self.plan.nix_outputs:
            remove_gc_roots(Path(self.plan.nix_root), self.dir.root.parent.parent,
                            self.plan.name)

    async def _stop_steps(self, timeout: float) -> None:
        if self.agent is not None and await self._try(self.agent.request("shutdown"), 2.0) \
                and await self._exited_within(timeout):
            return
        if await self.launcher.power_button() and await self._exited_within(timeout / 2):
            return
        if await self.launcher.quit() and await self._exited_within(QUIT_TIMEOUT):
            return
        self.kill()
        await self._exited_within(QUIT_TIMEOUT)

    async def _try(self, awaitable: Any, timeout: float) -> bool:
        try:
            await asyncio.wait_for(awaitable, timeout)
        except (AgentError, TimeoutError, OSError):
            return False
        return True

    async def _exited_within(self, timeout: float) -> bool:
        assert self.process is not None
        try:
            await asyncio.wait_for(self.process.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def kill(self) -> None:
        if self.running:
            assert self.process is not None
            with contextlib.suppress(ProcessLookupError):
                self.process.send_signal(signal.SIGKILL)
