"""Bringing a stack up and down through the daemon: members in dependency order, waiting
for health where a dependent asks for it, and a report of what started when one fails."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cove.errors import CoveError, die
from cove.host.fsutil import write_json
from cove.host.home import Home
from cove.spec.stack import Condition, Member, Stack

if TYPE_CHECKING:
    from cove.client.http import Client

RUNNING = ("running", "starting", "paused")
DEAD = ("exited", "failed", "stopped", "created")  # `up` replaces these (volumes are kept)


@dataclass
class Report:
    stack: str
    started: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    failed: tuple[str, str] | None = None  # (VM, why)
    not_started: list[str] = field(default_factory=list)
    stopped: list[str] = field(default_factory=list)  # by --abort-on-failure

    def summary(self) -> str:
        lines = [f"stack {self.stack} did not come up:"]
        if self.failed:
            why = self.failed[1].replace("\n", "\n      ")
            lines.append(f"  failed:      {self.failed[0]}: {why}")
        started = [name for name in self.started if not self.failed or name != self.failed[0]]
        for label, names in (("started:", started), ("already up:", self.already),
                             ("not started:", self.not_started),
                             ("stopped:", self.stopped)):
            if names:
                lines.append(f"  {label:<12} {', '.join(names)}")
        return "\n".join(lines)


def stack_dir(name: str, home: Path | None = None) -> Path:
    return Home(home).stacks / name


def save_order(stack: Stack) -> None:
    """What `down STACK` and `ls` need once the file is gone: its path and start order."""
    directory = stack_dir(stack.name)
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    write_json(directory / "stack.json", {"file": str(stack.file),
                                          "order": [m.spec.name for m in stack.members]})


def saved_order(name: str) -> list[str]:
    try:
        data = json.loads((stack_dir(name) / "stack.json").read_text())
        return [str(vm) for vm in data.get("order", [])]
    except (OSError, ValueError):
        return []


def needs_healthy(stack: Stack, member: Member) -> bool:
    return any(name == member.key and condition is Condition.HEALTHY
               for other in stack.members for name, condition in other.depends_on)


def up_stack(client: Client, stack: Stack, start: Callable[[Member], None],
             wait: Callable[[str], None], say: Callable[[str], None],
             abort_on_failure: bool = False, no_wait: bool = False) -> Report:
    """Start each member not already running, in order; on the first failure stop and say
    what started and what did not (and, with abort_on_failure, stop what this call started)."""
    save_order(stack)
    vms = {vm["name"]: vm for vm in client.list_vms()}
    report = Report(stack.name)
    members = list(stack.members)
    waited: set[str] = set()
    for index, member in enumerate(members):
        name = member.spec.name
        try:
            state = vms.get(name, {}).get("state")
            if state is None or state in DEAD:
                replace_dead(client, name, state)
                start(member)
                report.started.append(name)
            else:
                if state == "suspended":
                    client.state_change(name, "resume")
                report.already.append(name)
                say(f"{name} is {state} already" if state != "suspended" else f"{name} resumed")
            if needs_healthy(stack, member):
                wait(name)
                waited.add(name)
        except CoveError as error:
            report.failed = (name, error.message)
            report.not_started = [m.spec.name for m in members[index + 1:]]
            break
    if report.failed is None and not no_wait:
        for name in (n for n in report.started if n not in waited):  # all healthy, then up
            try:
                wait(name)
            except CoveError as error:
                report.failed = (name, error.message)
                break
    if report.failed and abort_on_failure:
        for name in reversed(report.started):
            stop_quietly(client, name)
            report.stopped.append(name)
    return report


def replace_dead(client: Client, name: str, state: str | None) -> None:
    """A VM of this name that is not running is forgotten (its volumes and logs stay), so
    `up` after a crash or a host reboot starts it afresh, as compose does."""
    if state in DEAD:
        client.down(name)


def stop_quietly(client: Client, name: str) -> None:
    with contextlib.suppress(CoveError):  # already gone
        client.down(name)


def stack_members(vms: list[dict[str, Any]], stack: str) -> list[dict[str, Any]]:
    """A stack's VMs in start order (as saved at `up`; others after them)."""
    order = saved_order(stack)
    mine = [vm for vm in vms if vm.get("stack") == stack]
    return sorted(mine, key=lambda vm: (order.index(vm["name"]) if vm["name"] in order
                                        else len(order), vm["name"]))


def down_order(client: Client, stack: str) -> list[str]:
    """The stack's VMs, last started first; dies when no VM belongs to `stack`."""
    members = stack_members(client.list_vms(), stack)
    if not members:
        die(f"no VM named {stack!r} and no stack of that name runs", "see `cove ls`")
    return [vm["name"] for vm in reversed(members)]


def resolve_vm(client: Client, text: str) -> str:
    """`STACK/VM` (a member's name in its stack) to the VM's name; other names unchanged."""
    stack, slash, member = text.partition("/")
    if not slash:
        return text
    for vm in client.list_vms():
        if vm.get("stack") == stack and vm.get("member") == member:
            return str(vm["name"])
    die(f"no VM {member!r} in stack {stack!r}", "see `cove ls`")
