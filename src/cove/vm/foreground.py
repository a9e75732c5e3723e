"""`cove run`: one VM in the foreground, stopped gracefully on Ctrl-C."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Callable
from typing import Any

from cove.errors import CoveError
from cove.image.build import Artifacts, default_cache
from cove.plan.vmplan import Plan
from cove.vm.frames import Frame
from cove.vm.machine import Machine
from cove.vm.vmdir import VmDir
from cove.vm.vmstate import keep_template

Report = Callable[[str], None]


class Interrupts:
    """First Ctrl-C (or SIGTERM) asks for a graceful stop; the second kills."""

    def __init__(self) -> None:
        self.stop = asyncio.Event()
        self.count = 0
        self.on_second: Callable[[], None] = lambda: None

    def __enter__(self) -> Interrupts:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._fired)
        return self

    def __exit__(self, *_: object) -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    def _fired(self) -> None:
        self.count += 1
        self.stop.set()
        if self.count > 1:
            self.on_second()


async def _until_stopped(awaitable: asyncio.Future[int] | asyncio.Task[int],
                         stop: asyncio.Event) -> int | None:
    """The awaitable's result, or None if a stop was asked for first."""
    stopper = asyncio.create_task(stop.wait())
    racers: set[asyncio.Future[Any]] = {awaitable, stopper}
    done, _ = await asyncio.wait(racers, return_when=asyncio.FIRST_COMPLETED)
    stopper.cancel()
    if awaitable in done:
        return awaitable.result()
    awaitable.cancel()
    return None


TEMPLATE_WAIT = 120.0  # a service that is not healthy by then gets no template this time


def up_line(machine: Machine) -> str:
    """`hello is up in 0.41 s (warm start from snapshot t3f2a...)`, or why it booted cold."""
    plan = machine.plan
    how = f" (warm start from snapshot {machine.warm.id})" if machine.warm else ""
    ports = f"; ports {', '.join(map(str, plan.ports))}" if plan.ports else ""
    return f"{plan.name} is up in {machine.ready_at - machine.started_at:.2f} s{how}{ports}"


async def run_foreground(plan: Plan, artifacts: Artifacts, command: list[str] | None,
                         on_frame: Callable[[Frame], None],
                         on_output: Callable[[int, bytes], None], report: Report,
                         cold: bool = False) -> int:
    vm_dir = VmDir.for_name(plan.name)
    with Interrupts() as interrupts:
        async with Machine(plan, artifacts, vm_dir, on_frame) as machine:
            interrupts.on_second = machine.kill
            boot = asyncio.create_task(_started(machine, cold))
            if await _until_stopped(boot, interrupts.stop) is None:
                report("interrupted while booting; stopping")
                return 130
            report(up_line(machine))
            if command is not None:
                # a command's run is saved before the command, so later runs start warm
                await _saved(machine, report)
                return await _run_workload(machine, command, on_output, interrupts, report)
            saving = asyncio.create_task(_saved(machine, report))
            report("Ctrl-C stops it")
            exited = asyncio.create_task(machine.wait())
            code = await _until_stopped(exited, interrupts.stop)
            saving.cancel()
            if code is None:
                report(f"stopping {plan.name}")
                started = time.monotonic()
                await machine.stop()
                report(f"stopped in {time.monotonic() - started:.2f} s")
                return 0
            report(f"the VM exited (QEMU exit {code})")
            return 0 if code == 0 else 1


async def _started(machine: Machine, cold: bool) -> int:
    await machine.start(cold=cold)
    default_cache().let_go()  # the running VM's boot record protects its artifacts now
    return 0


async def _saved(machine: Machine, report: Report) -> None:
    """Save this shape's template once healthy; a failure only costs the next warm start."""
    try:
        snapshot = await keep_template(machine, TEMPLATE_WAIT)
    except CoveError as error:
        report(f"no template saved: {error.message}")
        return
    if snapshot is not None:
        report(f"saved template snapshot {snapshot.id} ({snapshot.size / 2**20:.0f} MiB): the "
               "next start of this spec is warm")


async def _run_workload(machine: Machine, command: list[str],
                        on_output: Callable[[int, bytes], None], interrupts: Interrupts,
                        report: Report) -> int:
    task = asyncio.create_task(machine.exec(command, on_output))
    code = await _until_stopped(task, interrupts.stop)
    if code is None:
        report("interrupted; stopping the VM")
        return 130
    await machine.stop()
    return code
