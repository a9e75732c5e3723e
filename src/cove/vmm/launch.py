"""How each hypervisor is started, how its guest agent is reached, and how it is stopped.

The Machine drives every VM through this interface; only QEMU can run on hosts without KVM.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shutil
import subprocess
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from qemu.qmp import ConnectError, QMPClient

from cove.errors import CoveError, die
from cove.host.fsutil import write_json
from cove.plan.choose import INSTALL_HINTS
from cove.plan.vmplan import AGENT_VSOCK_PORT, Plan
from cove.spec.model import Hypervisor
from cove.vmm import cloud_hypervisor, crosvm, firecracker, kvmtool
from cove.vmm.layout import BootFiles, MemoryFile, RunPaths
from cove.vmm.qemu import MICROVM, QEMU, Shape, cpu_model, qemu_argv
from cove.vmm.rest import RestClient
from cove.vmm.vsock import Connector, af_vsock_connector, hybrid_connector, unix_connector

CONTROL_TIMEOUT = 3.0
SAVE_TIMEOUT = 60.0
MIGRATE_BANDWIDTH = 16 * 2**30  # bytes/s: no cap worth the name

# qemu.qmp logs each failed attempt at ERROR before raising it: a warm start's connect
# retries (the socket appears a moment after QEMU starts) filled coved.log with them, and
# reached a `cove run` terminal through logging's last-resort handler. What cove does not
# retry it reports from the exception.
logging.getLogger("qemu.qmp").setLevel(logging.CRITICAL)


ApiCall = tuple[str, str, Any]
SOCKET_TIMEOUT = 10.0  # a hypervisor's API socket appears within milliseconds of its start


class Launcher:
    """What `cove plan` shows is what runs: argv(), config_files() (written by prepare())
    and boot_calls() (made by after_spawn()) are all a launcher does to start a VM."""

    binary = ""
    serial_on_stdout = False  # the serial console is the process's stdout (else a file)
    attachable_console = False  # cove console can attach (QEMU's console socket)

    def __init__(self, plan: Plan, files: BootFiles, paths: RunPaths) -> None:
        self.plan = plan
        self.files = files
        self.paths = paths

    def argv(self) -> list[str]:
        raise NotImplementedError

    def config_files(self) -> dict[str, Any]:
        """JSON files the hypervisor reads at start, by name in the run dir."""
        return {}

    def boot_calls(self) -> list[ApiCall]:
        """API calls that configure and boot the VM once the process is up."""
        return []

    def require_binary(self) -> str:
        """The hypervisor's executable, or a clear error naming it and how to get it."""
        path = shutil.which(self.binary)
        if path is None:
            die(f"{self.binary} is not installed (needed by hypervisor = "
                f"\"{self.plan.hypervisor}\")",
                INSTALL_HINTS.get(self.binary, f"put {self.binary} on PATH"))
        return path

    def restore_shape(self) -> str:
        """What the hypervisor adds to the VM's shape beyond the plan (its build, the CPU
        it presents): part of the template key, so a QEMU upgrade or a new CPU model means
        a cold boot, never a restore into a machine unlike the saved one."""
        path = shutil.which(self.binary)
        if path is None:
            return f"{self.binary}: missing"
        status = os.stat(path)
        return f"{os.path.realpath(path)}:{status.st_size}:{status.st_mtime_ns}"

    def prepare(self) -> None:
        """Write what the hypervisor reads at start (config files)."""
        for name, config in self.config_files().items():
            write_json(self.paths.run / name, config)

    async def after_spawn(self, alive: Callable[[], bool]) -> None:
        """Make the boot calls, for hypervisors that boot through their API: once the API
        socket is there, within SOCKET_TIMEOUT, while the process is `alive`."""
        calls = self.boot_calls()
        if not calls:
            return
        deadline = asyncio.get_running_loop().time() + SOCKET_TIMEOUT
        while not await self._api_listening():
            # (the socket file appears at bind(), a moment before listen(): connecting in
            # between is refused, so the wait is for a connection, not for the file)
            if not alive():
                raise CoveError(f"{self.binary} exited before its API socket appeared")
            if asyncio.get_running_loop().time() > deadline:
                raise CoveError(f"{self.binary}'s API socket {self.paths.api} did not appear "
                                f"within {SOCKET_TIMEOUT:.0f} s")
            await asyncio.sleep(0.01)
        await RestClient(self.paths.api, self.plan.hypervisor).run(calls)

    async def _api_listening(self) -> bool:
        try:
            _reader, writer = await asyncio.open_unix_connection(str(self.paths.api))
        except OSError:  # not there yet, or not listening yet
            return False
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
        return True

    def agent_connector(self) -> Connector:
        return hybrid_connector(self.paths.vsock, AGENT_VSOCK_PORT)

    async def power_button(self) -> bool:
        """Ask the guest to shut down the way the hardware would; False if there is none."""
        return False

    async def quit(self) -> bool:
        """Stop the hypervisor through its control channel; False if that failed."""
        return False

    # -- VM state: pause, save, restore (QEMU only on this host; see docs/snapshots.md) ----
    snapshots = False

    def refuse_state(self, what: str) -> CoveError:
        return CoveError(f"{what} is not wired for {self.plan.hypervisor} yet",
                         'use hypervisor = "qemu" for pause, suspend, clones and warm starts')

    async def pause(self) -> None:
        raise self.refuse_state("pause")

    async def unpause(self) -> None:
        raise self.refuse_state("resume")

    async def is_paused(self) -> bool:
        """Whether the vCPUs are stopped (a paused VM a new daemon finds); False where the
        hypervisor cannot pause at all."""
        return False

    async def save_state(self, path: Path, with_memory: bool = True) -> int:
        """Stop the vCPUs and write the VM's state to `path`; the VM stays paused. Without
        `with_memory`, RAM in a shared MemoryFile is left out (it is in that file)."""
        raise self.refuse_state("saving a snapshot")

    def incoming_argv(self, fd: int) -> list[str]:
        """argv that starts the hypervisor loading a saved state from fd (then it runs)."""
        raise self.refuse_state("restoring a snapshot")

    shares_memory = False  # clones can map one sealed image of their source's memory

    def image_argv(self, memory: MemoryFile, state: int | None) -> list[str]:
        """argv with guest RAM in `memory`, loading a saved state: from fd `state` at once
        (filling a clone image), or, with None, the device state wait_incoming() is given
        (a clone over a sealed image, whose RAM is that image)."""
        raise self.refuse_state("sharing clone memory")

    async def wait_incoming(self, timeout: float, devices: int | None = None,
                            run: bool = True) -> None:
        """Until the state is loaded (from fd `devices` when image_argv() deferred it);
        then the VM runs, unless not `run`."""
        raise self.refuse_state("restoring a snapshot")

    async def rest(self, calls: list[tuple[str, str, object]]) -> bool:
        try:
            await asyncio.wait_for(RestClient(self.paths.api, self.plan.hypervisor).run(calls),
                                   CONTROL_TIMEOUT)
        except Exception:  # the caller falls back to the next way to stop
            return False
        return True


class QemuLauncher(Launcher):
    binary = QEMU

    attachable_console = True

    def __init__(self, plan: Plan, files: BootFiles, paths: RunPaths,
                 shape: Shape = MICROVM) -> None:
        super().__init__(plan, files, paths)
        self.shape = shape  # another hypervisor's device layout (tests of the guest side)

    def argv(self) -> list[str]:
        return qemu_argv(self.plan, self.files, self.paths, self.shape)

    def restore_shape(self) -> str:
        return (f"{super().restore_shape()} {self.shape.machine} {self.shape.bus} "
                f"{cpu_model(self.plan.accel.accel)}")

    def agent_connector(self) -> Connector:
        return unix_connector(self.paths.agent)

    async def qmp(self, command: str) -> bool:
        client = QMPClient(self.plan.name)
        try:
            await asyncio.wait_for(client.connect(str(self.paths.qmp)), CONTROL_TIMEOUT)
            await asyncio.wait_for(client.execute(command), CONTROL_TIMEOUT)
        except Exception:  # any QMP failure falls through to the next step
            return False
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()
        return True

    async def hmp(self, command: str) -> str:
        """A monitor command; QEMU answers failures as text in a successful reply."""
        client = QMPClient(self.plan.name)
        await asyncio.wait_for(client.connect(str(self.paths.qmp)), CONTROL_TIMEOUT)
        try:
            reply = await asyncio.wait_for(
                client.execute("human-monitor-command", {"command-line": command}),
                CONTROL_TIMEOUT)
        finally:
            await client.disconnect()
        return str(reply).strip()

    async def power_button(self) -> bool:
        return await self.qmp("system_powerdown")

    async def quit(self) -> bool:
        return await self.qmp("quit")

    snapshots = True

    @contextlib.asynccontextmanager
    async def session(self, wait: float = 0.0) -> AsyncIterator[QMPClient]:
        """A QMP connection; with `wait`, for a QEMU just started: its socket appears, and
        is bound a moment before it listens (connecting in between is refused)."""
        client = QMPClient(self.plan.name)
        deadline = asyncio.get_running_loop().time() + wait
        while True:
            try:
                await asyncio.wait_for(client.connect(str(self.paths.qmp)), CONTROL_TIMEOUT)
                break
            except (ConnectError, OSError):
                if asyncio.get_running_loop().time() > deadline:
                    raise CoveError("QEMU's control socket did not answer") from None
                await asyncio.sleep(0.005)
        try:
            yield client
        finally:
            with contextlib.suppress(Exception):
                await client.disconnect()

    async def pause(self) -> None:
        async with self.session() as client:
            await asyncio.wait_for(client.execute("stop"), CONTROL_TIMEOUT)

    async def unpause(self) -> None:
        async with self.session() as client:
            await asyncio.wait_for(client.execute("cont"), CONTROL_TIMEOUT)

    async def is_paused(self) -> bool:
        async with self.session() as client:
            status = await asyncio.wait_for(client.execute("query-status"), CONTROL_TIMEOUT)
        return isinstance(status, dict) and status.get("status") == "paused"

    async def save_state(self, path: Path, with_memory: bool = True) -> int:
        """QMP stop, then migrate to a file QEMU gets as an fd over the QMP socket (no shell
        in between): zero pages are not written. Returns the file's size."""
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        try:
            async with self.session() as client:
                await client.execute("stop")
                if not with_memory:
                    await ignore_shared_memory(client, True)
                # the VM is stopped: nothing gets dirty, so copy as fast as the disk takes it
                await client.execute("migrate-set-parameters",
                                     {"max-bandwidth": MIGRATE_BANDWIDTH})
                client.send_fd_scm(fd)
                await client.execute("getfd", {"fdname": "cove-state"})
                await client.execute("migrate", {"uri": "fd:cove-state"})
                await migration_done(client, SAVE_TIMEOUT)
            await asyncio.to_thread(os.fsync, fd)  # on disk before anything names it
        finally:
            os.close(fd)
        return path.stat().st_size

    def incoming_argv(self, fd: int) -> list[str]:
        return [*self.argv(), "-incoming", f"fd:{fd}"]

    shares_memory = True

    def image_argv(self, memory: MemoryFile, state: int | None) -> list[str]:
        incoming = "defer" if state is None else f"fd:{state}"
        return [*qemu_argv(self.plan, self.files, self.paths, self.shape, memory),
                "-incoming", incoming]

    async def wait_incoming(self, timeout: float, devices: int | None = None,
                            run: bool = True) -> None:
        async with self.session(timeout) as client:
            if devices is not None:
                # the stream holds no RAM (the image has it); the flag must match the save's
                await ignore_shared_memory(client, True)
                await client.execute("migrate-incoming", {"uri": f"fd:{devices}"})
            await migration_done(client, timeout)
            if devices is not None:
                await ignore_shared_memory(client, False)  # its own saves hold all its RAM
            if run:
                # the state was saved with the vCPUs stopped, and QEMU keeps that run state
                await client.execute("cont")


async def ignore_shared_memory(client: QMPClient, state: bool) -> None:
    await client.execute("migrate-set-capabilities",
                         {"capabilities": [{"capability": "x-ignore-shared", "state": state}]})


async def migration_done(client: QMPClient, timeout: float) -> None:
    """Poll query-migrate until the save or the load is complete."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        reply = await client.execute("query-migrate")
        info: dict[str, object] = reply if isinstance(reply, dict) else {}
        status = info.get("status")
        if status == "completed":
            return
        if status in ("failed", "cancelled"):
            raise CoveError(f"QEMU's migration {status}: {info.get('error-desc', '')}",
                            "a device that cannot migrate (virtiofs, 9p) blocks snapshots")
        if asyncio.get_running_loop().time() > deadline:
            raise CoveError(f"QEMU's migration did not complete within {timeout:.0f} s")
        await asyncio.sleep(0.005)


class FirecrackerLauncher(Launcher):
    binary = firecracker.BINARY
    serial_on_stdout = True

    def argv(self) -> list[str]:
        return firecracker.argv(self.plan, self.paths)

    def config_files(self) -> dict[str, Any]:
        return {firecracker.CONFIG_FILE: firecracker.config_file(self.plan, self.files,
                                                                 self.paths)}

    def prepare(self) -> None:
        for name in ("firecracker.log", "firecracker-metrics.json"):
            (self.paths.run / name).touch(mode=0o600)
        super().prepare()

    async def power_button(self) -> bool:
        return await self.rest([firecracker.SHUTDOWN_CALL])


class CloudHypervisorLauncher(Launcher):
    binary = cloud_hypervisor.BINARY

    def argv(self) -> list[str]:
        return cloud_hypervisor.argv(self.paths)

    def boot_calls(self) -> list[ApiCall]:
        return cloud_hypervisor.api_calls(self.plan, self.files, self.paths)

    async def power_button(self) -> bool:
        return await self.rest(list(cloud_hypervisor.SHUTDOWN_CALLS))

    async def quit(self) -> bool:
        return await self.rest([("PUT", "/api/v1/vmm.shutdown", None)])


async def run_quietly(argv: list[str]) -> bool:
    process = await asyncio.create_subprocess_exec(*argv, stdout=subprocess.DEVNULL,
                                                   stderr=subprocess.DEVNULL)
    try:
        return await asyncio.wait_for(process.wait(), CONTROL_TIMEOUT) == 0
    except TimeoutError:
        process.kill()
        return False


class CrosvmLauncher(Launcher):
    binary = crosvm.BINARY

    def argv(self) -> list[str]:
        return crosvm.argv(self.plan, self.files, self.paths)

    def agent_connector(self) -> Connector:
        return af_vsock_connector(self.plan.vsock_cid, AGENT_VSOCK_PORT)

    async def power_button(self) -> bool:
        return await run_quietly(crosvm.powerbtn_argv(self.paths))

    async def quit(self) -> bool:
        return await run_quietly(crosvm.stop_argv(self.paths))


class KvmtoolLauncher(Launcher):
    binary = kvmtool.BINARY
    serial_on_stdout = True  # --console serial: the guest's ttyS0 is lkvm's stdio

    def argv(self) -> list[str]:
        return kvmtool.argv(self.plan, self.files, self.paths)

    def agent_connector(self) -> Connector:
        return af_vsock_connector(self.plan.vsock_cid, AGENT_VSOCK_PORT)

    async def quit(self) -> bool:  # kvmtool has no graceful stop: this ends the VM at once
        return await run_quietly(kvmtool.stop_argv(self.plan))


LAUNCHERS: dict[Hypervisor, type[Launcher]] = {
    Hypervisor.QEMU: QemuLauncher,
    Hypervisor.FIRECRACKER: FirecrackerLauncher,
    Hypervisor.CLOUD_HYPERVISOR: CloudHypervisorLauncher,
    Hypervisor.CROSVM: CrosvmLauncher,
    Hypervisor.KVMTOOL: KvmtoolLauncher,
}


def launcher_for(plan: Plan, files: BootFiles, paths: RunPaths) -> Launcher:
    return LAUNCHERS[Hypervisor(plan.hypervisor)](plan, files, paths)
