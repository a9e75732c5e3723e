"""Clones that share guest memory: one sealed image of the saved RAM, mapped privately by
every clone, so a page no clone has changed is in host memory once.

A clone source's state is a migration stream. A hypervisor whose RAM is a memfd it shares
loads that stream once, saves only its devices (the RAM is in the memfd) and exits. Zero
pages become holes, and the memfd is sealed against writes, shrinking and growing: the
kernel refuses those to every process, so no clone (whatever its guest does, a balloon's
free-page report included) can change what its siblings read. Each clone maps the image
privately (its writes go to pages of its own) and loads the device state.

The daemon holds the image only while the clones start: their mappings keep it, and the
kernel frees it with the last of them. A clone restarted later restores from the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import os
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

from cove.errors import CoveError
from cove.host.fsutil import remove_tree
from cove.host.process import VM_PROCESS_GROUP, dying_with_owner
from cove.vm.record import VmRecord
from cove.vm.snapshots import Snapshot
from cove.vm.storage import prepare_drives
from cove.vmm.launch import Launcher, launcher_for
from cove.vmm.layout import BootFiles, MemoryFile, RunPaths

FILL_TIMEOUT = 60.0
SEALS = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


@dataclass(frozen=True)
class MemoryImage:
    memory: int  # the sealed memfd
    devices: Path  # the device state saved without RAM

    def private(self) -> MemoryFile:
        return MemoryFile(self.memory, shared=False)


def image_launcher(record: VmRecord, work: Path) -> Launcher:
    """The first clone's launcher, with no ports, its run files in `work`."""
    plan = dataclasses.replace(record.plan, ports=())
    artifacts = record.artifacts
    files = BootFiles(artifacts.kernel.vmlinux, artifacts.initramfs, artifacts.root.path,
                      artifacts.nix_store_image)
    return launcher_for(plan, files, RunPaths(work, work / "console.log",
                                              console_socket=False))


def can_share_memory(record: VmRecord) -> bool:
    return image_launcher(record, Path()).shares_memory


def new_memfd(name: str, size: int) -> int:
    memory = os.memfd_create(name, os.MFD_ALLOW_SEALING | os.MFD_CLOEXEC)
    os.ftruncate(memory, size)
    return memory


async def run_tool(argv: list[str], fds: tuple[int, ...]) -> None:
    process = await asyncio.create_subprocess_exec(
        *argv, stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE, pass_fds=fds)
    _, err = await process.communicate()
    if process.returncode:
        raise CoveError(f"{argv[0]} failed: {err.decode(errors='replace').strip()}")


async def load_into(launcher: Launcher, memory: int, snapshot: Snapshot, work: Path) -> Path:
    """Load the snapshot's stream into the shared memfd; returns the device state's path."""
    state = os.open(snapshot.state, os.O_RDONLY | os.O_CLOEXEC)
    log = work / "hypervisor.log"
    try:
        with log.open("ab") as out:
            process = await asyncio.create_subprocess_exec(  # (it goes with this daemon)
                *dying_with_owner(launcher.image_argv(MemoryFile(memory, shared=True), state)),
                stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out,
                pass_fds=(memory, state), process_group=VM_PROCESS_GROUP)
    finally:
        os.close(state)
    try:
        await launcher.wait_incoming(FILL_TIMEOUT, run=False)
        await launcher.save_state(work / "devices", with_memory=False)
        await launcher.quit()
        await asyncio.wait_for(process.wait(), FILL_TIMEOUT)
    except (CoveError, OSError, TimeoutError) as error:
        said = log.read_text(errors="replace").strip()[-500:]
        raise CoveError(f"{error}{': ' + said if said else ''}") from None
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    return work / "devices"


async def fill_image(record: VmRecord, snapshot: Snapshot, work: Path) -> MemoryImage:
    launcher = image_launcher(record, work)
    await asyncio.to_thread(prepare_drives, launcher.plan, launcher.paths, snapshot.overlays)
    memory = new_memfd(f"cove-{snapshot.id}", record.plan.memory_mib << 20)
    try:
        devices = await load_into(launcher, memory, snapshot, work)
        # loading reads every page once, which allocates it: zero pages go back to holes
        await run_tool(["fallocate", "--dig-holes", f"/dev/fd/{memory}"], (memory,))
        fcntl.fcntl(memory, fcntl.F_ADD_SEALS, SEALS)  # fails while anyone maps it shared
    except BaseException:
        os.close(memory)
        raise
    return MemoryImage(memory, devices)


@contextlib.asynccontextmanager
async def shared_memory(record: VmRecord, snapshot: Snapshot
                        ) -> AsyncIterator[tuple[MemoryImage | None, str]]:
    """(the image, "") while clones of `record` start, or (None, why not): they then
    restore from the stream, each with memory of its own."""
    work = snapshot.directory / "image"
    image: MemoryImage | None = None
    why_not = ""
    try:
        try:
            work.mkdir(mode=0o700)
            image = await fill_image(record, snapshot, work)
        except (CoveError, OSError) as error:
            why_not = str(error)
        yield image, why_not
    finally:
        if image is not None:
            os.close(image.memory)
        await asyncio.to_thread(remove_tree, work)
