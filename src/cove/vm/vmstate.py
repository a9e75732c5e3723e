"""Saving a running VM's state, and making a restored VM an instance of its own."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import secrets
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from cove.host.fsutil import write_atomic, write_json
from cove.plan.vmplan import GUEST_GATEWAY, Plan
from cove.plan.warm import snapshot_blockers
from cove.vm.agent_client import AgentClient, AgentError
from cove.vm.snapshots import (
    DiskPrint,
    Snapshot,
    copy_sparse,
    find_template,
    publishing,
    snapshots_dir,
)
from cove.vm.vmdir import VmDir
from cove.vmm.common import guest_mac

if TYPE_CHECKING:
    from cove.vm.machine import Machine

RESUMED_TIMEOUT = 30.0
SAVING_TIMEOUT = 5.0  # the agent's last step before a save; a save goes on without it


async def save_snapshot(machine: Machine, kind: str, freeze_volumes: bool) -> Snapshot:
    """The VM's memory and devices, and the disks as they are at that moment: overlays of
    an ephemeral VM, and (for clones) a frozen copy of each volume. The VM is left paused."""
    plan = machine.plan
    if machine.agent is not None and not machine.paused:
        with contextlib.suppress(AgentError, TimeoutError):
            await asyncio.wait_for(machine.agent.request("saving"), SAVING_TIMEOUT)
    with publishing(machine.home, kind) as (ident, tmp):
        final = snapshots_dir(machine.home) / ident
        size = await machine.launcher.save_state(tmp / "state")
        overlays, disks = await asyncio.to_thread(save_disks, plan, machine.dir, tmp, final,
                                                  freeze_volumes)
        snapshot = Snapshot(ident, kind, final, machine.key, plan.name, "", time.time(),
                            size, plan.memory_mib, machine.dir.token.read_text().strip(),
                            disks, overlays)
        write_json(tmp / "meta.json", snapshot.meta())
    return snapshot


def save_disks(plan: Plan, vm_dir: VmDir, tmp: Path, final: Path, freeze: bool
               ) -> tuple[dict[str, str], tuple[DiskPrint, ...]]:
    """(saved overlays by drive id, prints of the disks a restore must find unchanged)."""
    overlays: dict[str, str] = {}
    prints = []
    for drive in plan.drives:
        if plan.ephemeral:
            shutil.copyfile(vm_dir.sockets.overlay(drive.id), tmp / f"{drive.id}.qcow2")
            overlays[drive.id] = str(final / f"{drive.id}.qcow2")
            prints.append(DiskPrint.of(drive.path))
        elif freeze:
            copy_sparse(drive.path, tmp / f"{drive.id}.img")
            copy = DiskPrint.of(str(tmp / f"{drive.id}.img"))
            prints.append(dataclasses.replace(copy, path=str(final / f"{drive.id}.img")))
        else:
            prints.append(DiskPrint.of(drive.path))
    return overlays, tuple(prints)


async def become_new_instance(agent: AgentClient, plan: Plan, vm_dir: VmDir) -> None:
    """Right after a restore: the guest takes the host's clock, fresh entropy (no two
    instances share RNG state), this VM's hostname and MAC, and a token of its own."""
    token = secrets.token_hex(16)
    await asyncio.wait_for(agent.request(
        "resumed", time=time.time(), entropy=base64.b64encode(os.urandom(64)).decode(),
        hostname=plan.name, mac=guest_mac(plan.name), name=plan.name, token=token,
        gateway=GUEST_GATEWAY if plan.network == "user" else ""), RESUMED_TIMEOUT)
    write_atomic(vm_dir.token, token)
    agent.token = token


def summarize_health(services: dict[str, dict[str, object]], declared: list[str]) -> str:
    """One word for `ls`: healthy, starting, unhealthy, or - with no services."""
    if not services and not declared:
        return "-"
    words = {"starting"} if set(declared) - set(services) else set()
    for service in services.values():
        if service.get("health"):
            words.add(str(service["health"]))
        elif service.get("state") == "running":
            words.add("healthy")
        elif service.get("state") in ("failed",):
            words.add("unhealthy")
        elif service.get("state") == "exited" and service.get("exit_code") == 0:
            words.add("healthy")
        else:
            words.add("starting")
    for word in ("unhealthy", "starting"):
        if word in words:
            return word
    return "healthy"


async def until_healthy(agent: AgentClient, declared: list[str], timeout: float) -> bool:
    """Poll the agent until every service is healthy; False if one is not, or time runs out."""
    deadline = asyncio.get_running_loop().time() + timeout
    while asyncio.get_running_loop().time() < deadline:
        reply = await agent.request("status")
        word = summarize_health(reply.get("services", {}), declared)
        if word in ("healthy", "-"):
            return True
        if word == "unhealthy":
            return False
        await asyncio.sleep(0.2)
    return False


async def keep_template(machine: Machine, timeout: float,
                        saving: Callable[[], None] = lambda: None) -> Snapshot | None:
    """After a cold boot: once every service is healthy, save this shape's template (the
    VM pauses for the save, then runs on), unless one exists or the VM cannot be saved."""
    if machine.warm is not None or machine.agent is None or not machine.plan.template \
            or snapshot_blockers(machine.plan) or find_template(machine.home, machine.key):
        return None
    declared = list(machine.plan.agent_config.get("services", {}))
    if not await until_healthy(machine.agent, declared, timeout):
        return None
    saving()
    return await machine.save("template", resume=True)
