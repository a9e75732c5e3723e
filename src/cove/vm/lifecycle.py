"""What the daemon does to a VM's state: pause, suspend to disk, resume, clone.

Pause stops the vCPUs (QMP stop/cont). Suspend saves the state to a snapshot and ends the
hypervisor, so the host gets the memory back; resume restores it (ports, volumes and logs as
before). Clones are restored from one save of a running VM, each with its own name, ports,
identity and throw-away overlays over a frozen copy of the source's volumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from typing import TYPE_CHECKING

from cove.errors import CoveError, die
from cove.plan.vmplan import Plan
from cove.spec.model import Port
from cove.spec.overrides import parse_port
from cove.spec.settings import valid_name
from cove.vm.record import VmRecord
from cove.vm.snapshots import Snapshot, get_snapshot, remove_snapshot

if TYPE_CHECKING:
    from cove.vm.machine import Machine
    from cove.vm.supervisor import VmSupervisor


async def settled_machine(supervisor: VmSupervisor, doing: str) -> Machine:
    """The running VM's Machine, once a template save under way has finished."""
    machine = supervisor.machine
    if machine is None or not machine.running or supervisor.state not in ("running", "paused"):
        die(f"cannot {doing} {supervisor.name}: it is {supervisor.state}",
            f"start it with `cove up` or `cove resume {supervisor.name}`")
    await supervisor.settle()
    return machine


async def pause(supervisor: VmSupervisor) -> None:
    machine = await settled_machine(supervisor, "pause")
    if supervisor.state == "paused":
        return
    await machine.launcher.pause()
    machine.paused = True
    supervisor.state = "paused"
    await save_phase(supervisor, "paused")  # a new daemon adopts it paused (QMP says so)
    supervisor.emit("paused")


async def resume(supervisor: VmSupervisor) -> None:
    """A paused VM runs on; a suspended one is restored from its snapshot."""
    if supervisor.state == "paused":
        machine = supervisor.machine
        assert machine is not None
        await machine.launcher.unpause()
        machine.paused = False
        if machine.agent is None and machine.token is not None:  # adopted while paused
            await machine.greet_agent(machine.token)
            await supervisor.learn_services()
        supervisor.state = "running"
        await save_phase(supervisor, "running")
        supervisor.emit("resumed")
        return
    if supervisor.state != "suspended":
        die(f"{supervisor.name} is {supervisor.state}: only a paused or suspended VM resumes")
    snapshot = get_snapshot(supervisor.dir.root.parent.parent, supervisor.record.snapshot)
    started = time.monotonic()
    supervisor.let_volumes_go()  # the restored hypervisor takes the locks over
    try:
        await supervisor.boot(snapshot=snapshot)
    except BaseException:
        supervisor.state = "suspended"  # still on disk: resume may be asked again
        with contextlib.suppress(CoveError):
            supervisor.hold_volumes()
        raise
    supervisor.record = dataclasses.replace(supervisor.record, phase="running", snapshot="")
    await asyncio.to_thread(supervisor.record.save, supervisor.dir.record)
    await asyncio.to_thread(remove_snapshot, snapshot)
    supervisor.emit("resumed", snapshot=snapshot.id,
                    seconds=round(time.monotonic() - started, 3))


async def save_phase(supervisor: VmSupervisor, phase: str) -> None:
    supervisor.record = dataclasses.replace(supervisor.record, phase=phase)
    await asyncio.to_thread(supervisor.record.save, supervisor.dir.record)


async def suspend(supervisor: VmSupervisor) -> Snapshot:
    """State to disk, hypervisor gone; survives a daemon restart (the record says so)."""
    machine = await settled_machine(supervisor, "suspend")
    supervisor.state = "suspending"
    try:
        snapshot = await machine.save("suspend", resume=False)
    except BaseException:
        supervisor.state = "running"
        if machine.running:
            await machine.launcher.unpause()
        raise
    supervisor.record = dataclasses.replace(supervisor.record, phase="suspended",
                                            snapshot=snapshot.id)
    await asyncio.to_thread(supervisor.record.save, supervisor.dir.record)
    machine.kill()
    await machine.wait()
    await machine.stop()  # helpers, network, forwards
    await machine.release()
    supervisor.machine = None
    supervisor.hold_volumes()
    supervisor.state = "suspended"
    supervisor.emit("suspended", snapshot=snapshot.id, size=snapshot.size)
    return snapshot


def clone_ports(ports: tuple[str, ...], index: int) -> tuple[Port, ...]:
    """-p HOST:GUEST for clone i (from 1) forwards HOST+i-1: each clone its own port."""
    shifted = []
    for text in ports:
        port = parse_port(text)
        host = port.host + index - 1
        if host > 65535:
            die(f"-p {text}: clone {index} would need host port {host}")
        shifted.append(dataclasses.replace(port, host=host))
    return tuple(shifted)


def clone_plan(plan: Plan, snapshot: Snapshot, name: str, ports: tuple[Port, ...]) -> Plan:
    """The source's plan under another name: its own ports, and its volumes as throw-away
    overlays over the copies frozen in the snapshot."""
    frozen = {d.path.rsplit("/", 1)[-1].removesuffix(".img"): d.path for d in snapshot.disks
              if d.path.startswith(str(snapshot.directory))}
    drives = tuple(dataclasses.replace(d, path=frozen.get(d.id, d.path)) for d in plan.drives)
    return dataclasses.replace(
        plan, name=name, ports=ports, ephemeral=True, drives=drives,
        init_env={**plan.init_env, "COVE_HOSTNAME": name},
        agent_config={**plan.agent_config, "name": name})


def clone_names(prefix: str, count: int) -> list[str]:
    names = [f"{prefix}{index}" for index in range(1, count + 1)]
    for name in names:
        if not valid_name(name):
            die(f"clone name {name!r} is not a valid VM name", "choose another --prefix")
    return names


def clone_records(source: VmRecord, snapshot: Snapshot, count: int, prefix: str,
                  ports: tuple[str, ...]) -> list[VmRecord]:
    records = []
    for index, name in enumerate(clone_names(prefix, count), start=1):
        plan = clone_plan(source.plan, snapshot, name, clone_ports(ports, index))
        records.append(dataclasses.replace(source, plan=plan, forwards=(), created=time.time(),
                                           snapshot=snapshot.id, phase="booting"))
    return records


async def save_for_clones(supervisor: VmSupervisor, kind: str = "clone") -> Snapshot:
    """One save of the running source (paused only for it), volumes frozen for clones."""
    machine = await settled_machine(supervisor, "clone" if kind == "clone" else "snapshot")
    if supervisor.state == "paused":
        raise CoveError(f"{supervisor.name} is paused", f"`cove resume {supervisor.name}` first")
    snapshot = await machine.save(kind, resume=True, freeze_volumes=True)
    supervisor.emit("cloned" if kind == "clone" else "snapshot-saved", snapshot=snapshot.id)
    return snapshot
