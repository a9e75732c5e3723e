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
from typing import TYPE_CHECKING, Any

from cove.errors import CoveError
from cove.host.fsutil import write_atomic, write_json
from cove.host.journal import last_lines
from cove.host.process import VM_PROCESS_GROUP, Adopted, VmProcess, dying_with_owner
from cove.image.build import Artifacts, artifacts_to_json
from cove.image.gc import BOOT_RECORD
from cove.image.initramfs import BootConfig, later_order, load_order, write_initrd
from cove.image.sources.nix import add_gc_roots, remove_gc_roots
from cove.net.forward import Activity, Forwards, check_ports_free
from cove.net.networks import attach, detach
from cove.plan.vmplan import Plan, boot_modules
from cove.plan.warm import snapshot_blockers, template_key
from cove.vm.agent_client import AgentClient, AgentError, greeted
from cove.vm.frames import Frame
from cove.vm.snapshots import Snapshot, find_template
from cove.vm.storage import (
    delivered_files,
    lock_volumes,
    prepare_drives,
    start_virtiofsd,
)
from cove.vm.vmdir import VmDir
from cove.vm.vmstate import become_new_instance, save_snapshot
from cove.vmm.launch import launcher_for
from cove.vmm.layout import BootFiles

if TYPE_CHECKING:
    from cove.vm.memory_image import MemoryImage

BOOT_TIMEOUT = 120.0  # TCG boots take ~3 s; this only catches guests that hang
AGENT_STOP_TIMEOUT = 20.0
QUIT_TIMEOUT = 3.0


class BootError(CoveError):
    pass


def tail(path: os.PathLike[str] | str, lines: int = 15) -> str:
    """The last lines of a log (read from its end: a guest may have made it huge)."""
    try:
        return "\n".join(last_lines(Path(path), lines))
    except OSError:
        return ""


def boot_config(plan: Plan, artifacts: Artifacts, env: dict[str, str],
                delivered: dict[str, bytes]) -> BootConfig:
    """Read at every boot: changed config or secrets need no image rebuild."""
    init_env = {**plan.init_env, **env}
    now, later = boot_modules(plan.modules)
    load = load_order(artifacts.kernel, now)
    return BootConfig({**plan.agent_config, "net": guest_net(init_env)}, init_env, load,
                      later_order(artifacts.kernel, later, load), plan.guest_mounts, delivered)


def guest_net(init_env: dict[str, str]) -> dict[str, str]:
    """What the agent configures at boot (guest/netconf.py), from /init's settings."""
    keys = {"ip": "COVE_IP", "gateway": "COVE_GATEWAY", "seg_ip": "COVE_SEG_IP",
            "seg_mac": "COVE_SEG_MAC"}
    return {key: init_env[name] for key, name in keys.items() if init_env.get(name)}


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
        self.activity = Activity()
        self.key = ""  # the template key of this VM's shape (see cove/plan/warm.py)
        self.warm: Snapshot | None = None  # what this start restored, if it did
        self.why_cold = ""
        self.paused = False  # vCPUs stopped by `cove pause`: the agent cannot answer
        self.token: str | None = None  # an adopted paused VM's, for the greeting at resume
        self.shared_memory = False  # restored over a memory image its sibling clones share
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
        if await self.found_paused():  # its agent cannot answer: greeted at resume
            self.paused, self.token = True, token
            return
        await self.greet_agent(token, timeout)

    async def found_paused(self) -> bool:
        try:
            return await self.launcher.is_paused()
        except Exception:  # no answer from its control socket: as if running (greet it)
            return False

    async def greet_agent(self, token: str, timeout: float = 5.0) -> None:
        """A channel to the running guest's agent, answered within `timeout`."""
        try:
            self.agent = await greeted(self.launcher.agent_connector(), self.on_frame, token,
                                       timeout)
        except TimeoutError:
            raise AgentError(f"{self.plan.name}: the agent did not answer within "
                             f"{timeout:.0f} s") from None
        self.ready_at = time.monotonic()
        await self.forward_static_ports()

    async def start(self, cold: bool = False, snapshot: Snapshot | None = None,
                    image: MemoryImage | None = None) -> None:
        """Boot, or restore `snapshot` (suspend, clone: over the sibling clones' shared
        memory `image` when there is one), or, unless `cold`, restore this shape's template
        when there is a usable one. `self.warm` says which happened."""
        binary = self.launcher.require_binary()
        if self.plan.network == "user" and not self.plan.idle_suspend_after:
            check_ports_free(self.plan.ports)  # (an idle-suspending VM's are the daemon's)
        delivered = await asyncio.to_thread(delivered_files, self.plan)
        self.key = template_key(self.plan, artifacts_to_json(self.artifacts), delivered,
                                self.launcher.restore_shape())
        if snapshot is not None and (changed := snapshot.changed_disks()):
            raise CoveError(f"cannot restore {self.plan.name} from {snapshot.id}: "
                            f"{'; '.join(changed)}", "its saved memory expects its disks as "
                            f"they were; `cove down {self.plan.name}` and boot it afresh")
        self.warm = snapshot or (None if cold else self.usable_template())
        self.shared_memory = image is not None and snapshot is not None
        token = self.warm.token if self.warm else secrets.token_hex(16)
        # file work, mkfs and `ip` run in a thread: a daemon's event loop never blocks
        await asyncio.to_thread(self._prepare_host, token, delivered)
        self.started_at = time.monotonic()
        self.helpers = await start_virtiofsd(self.plan, self.dir.sockets, self.dir.qemu_log)
        devices = await self._spawn(binary, image)
        self.agent = AgentClient(self.launcher.agent_connector(), self.on_frame, token)
        if self.warm is not None:
            loaded = self.launcher.wait_incoming(BOOT_TIMEOUT, devices)
            await self._await_agent(self.agent, loaded)
            await become_new_instance(self.agent, self.plan, self.dir)
        else:
            await self.launcher.after_spawn(lambda: self.running)
            await self._await_agent(self.agent)
        self.ready_at = time.monotonic()
        await self.forward_static_ports()

    def usable_template(self) -> Snapshot | None:
        """This shape's template, if nothing forbids restoring it (else `why_cold` says)."""
        blockers = snapshot_blockers(self.plan)
        if not self.plan.template:
            blockers.append("the spec says [warm] template = false")
        template = find_template(self.home, self.key)
        if blockers or template is None:
            self.why_cold = "; ".join(blockers) or "no template for this shape yet"
            return None
        changed = template.changed_disks()
        if changed:
            self.why_cold = "; ".join(changed)
            return None
        return template

    def _argv(self, image: MemoryImage | None) -> tuple[list[str], list[int], int | None]:
        """(argv, fds it needs, the device state's fd when the RAM comes from `image`)."""
        locks = lock_volumes(self.plan)
        if self.warm is None:
            return self.launcher.argv(), locks, None
        if image is not None:
            devices = os.open(image.devices, os.O_RDONLY | os.O_CLOEXEC)
            return self.launcher.image_argv(image.private(), None), [*locks, devices], devices
        state = os.open(self.warm.state, os.O_RDONLY | os.O_CLOEXEC)
        return self.launcher.incoming_argv(state), [*locks, state], None

    async def _spawn(self, binary: str, image: MemoryImage | None) -> int | None:
        """Start the hypervisor; returns the fd number it loads the device state from when
        the restore is over a shared memory image (then wait_incoming starts the load)."""
        argv, fds, devices = self._argv(image)
        argv = [binary, *argv[1:]]
        if self.bound_to_owner:
            argv = dying_with_owner(argv)
        shared = (image.memory,) if image is not None else ()
        # where the serial console is the hypervisor's stdout, it goes to the console log
        console = self.dir.sockets.console_log if self.launcher.serial_on_stdout \
            else self.dir.qemu_log
        try:
            with self.dir.qemu_log.open("ab") as log, console.open("ab") as out:
                self.process = await asyncio.create_subprocess_exec(
                    *argv, stdin=asyncio.subprocess.DEVNULL,
                    stdout=out, stderr=log, pass_fds=(*fds, *shared),
                    process_group=VM_PROCESS_GROUP)
        finally:
            for fd in fds:  # the hypervisor holds the locks now, for as long as it runs
                os.close(fd)
        write_atomic(self.dir.pidfile, f"{self.process.pid}\n")
        write_json(self.dir.run / BOOT_RECORD, artifacts_to_json(self.artifacts))
        return devices

    def _prepare_host(self, token: str, delivered: dict[str, bytes]) -> None:
        """Everything on the host before the hypervisor starts (blocking; in a thread)."""
        network_env = self.join_network()
        write_atomic(self.dir.token, token)
        config = boot_config(self.plan, self.artifacts, network_env, delivered)
        boot = dataclasses.replace(config, agent={**config.agent, "token": token})
        write_initrd(self.artifacts.initramfs, boot, self.dir.initrd)
        if self.plan.nix_outputs:
            add_gc_roots(Path(self.plan.nix_root), self.home, self.plan.name,
                         self.plan.nix_outputs)
        prepare_drives(self.plan, self.dir.sockets,
                       self.warm.overlays if self.warm else None)
        self.dir.qemu_log.write_bytes(b"")
        self.launcher.prepare()

    async def save(self, kind: str, resume: bool, freeze_volumes: bool = False) -> Snapshot:
        """Save this VM's state as a snapshot; with `resume` it runs on afterwards."""
        if blockers := snapshot_blockers(self.plan):
            raise CoveError(f"{self.plan.name} cannot be saved: {'; '.join(blockers)}")
        try:
            return await save_snapshot(self, kind, freeze_volumes)
        finally:
            if resume and self.running:
                await self.launcher.unpause()

    @property
    def home(self) -> Path:
        return self.dir.root.parent.parent

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
        else they become agent tunnels. An idle-suspending VM's are the daemon's."""
        if self.plan.idle_suspend_after:
            return
        for port in self.plan.ports:
            await self.forwards.add(port, existing=True)

    async def _await_agent(self, agent: AgentClient, first: Any = None) -> None:
        """Until the agent answers (after `first`, a restore's load), or the VM dies."""
        assert self.process is not None
        exited = asyncio.create_task(self.process.wait())
        hello = asyncio.create_task(self._after(first, agent.greet()))
        hello.add_done_callback(lambda task: task.cancelled() or task.exception())
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
        if self.process.returncode is None and hello in done:
            failure = hello.exception()
            raise BootError(f"the guest did not come up: {failure}", self.diagnosis())
        raise BootError(f"the guest stopped while booting (QEMU exit "
                        f"{self.process.returncode})", self.diagnosis())

    @staticmethod
    async def _after(first: Any, then: Any) -> None:
        if first is not None:
            await first
        await then

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
        try:
            if self.agent is not None and await self._try(self.agent.request("shutdown"),
                                                          2.0) \
                    and await self._exited_within(timeout):
                return
            if await self.launcher.power_button() and await self._exited_within(timeout / 2):
                return
            if await self.launcher.quit() and await self._exited_within(QUIT_TIMEOUT):
                return
        finally:  # also when a step raised (a hypervisor's API in trouble): never left behind
            if self.running:
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
