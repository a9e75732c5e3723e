"""Stacks on the command line: `up`, `down`, `logs`, `ls` and `check` of a cove-stack.toml."""

from __future__ import annotations

import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any

import click

from cove.cli.output import format_log, progress
from cove.client.http import Client
from cove.errors import CoveError, die
from cove.spec.stack import Member, load_stack


def check_stack(path: Path) -> None:
    from cove.start.prepare import check_hypervisor, require_privileges

    stack = load_stack(path)
    for member in stack.members:
        require_privileges(member.spec)
        check_hypervisor(member.spec)
    order = " -> ".join(m.key for m in stack.members)
    click.echo(f"{stack.file}: ok (stack {stack.name}: {len(stack.members)} VM(s), "
               f"start order {order})")


def stack_up_command(path: Path, detach: bool, accel: str | None, timeout: float,
                     no_wait: bool, cold: bool, abort_on_failure: bool) -> None:
    from cove.start.prepare import require_privileges, start_detached, wait_healthy
    from cove.start.stacks import up_stack

    stack = load_stack(path)
    for member in stack.members:
        require_privileges(member.spec)
    client = Client()
    began = time.monotonic()

    def start(member: Member) -> None:
        plan, created = start_detached(client, member.spec, accel, cold)
        how = " (warm start)" if created.get("warm") else ""
        progress(f"{member.spec.name} started{how}"
                 + (f"; ports {', '.join(map(str, plan.ports))}" if plan.ports else ""))

    def wait(name: str) -> None:
        wait_healthy(client, name, timeout)
        progress(f"{name} is healthy")

    report = up_stack(client, stack, start, wait, progress, abort_on_failure, no_wait)
    if report.failed:
        die(report.summary(), f"see `cove logs {stack.name}`; `cove down {stack.name}` stops "
                              "what started" if report.started and not report.stopped else None)
    state = "started" if no_wait else "up"
    progress(f"stack {stack.name} is {state} in {time.monotonic() - began:.1f} s "
             f"({len(stack.members)} VMs)")
    if detach:
        return
    progress(f"following logs; Ctrl-C stops stack {stack.name}")
    follow_stack_logs(client, stack.name, 0, True, None, False)
    stack_down(client, stack.name, 20.0)


def stack_down(client: Client, name: str, timeout: float) -> None:
    from cove.start.stacks import down_order

    failed = False
    for vm in down_order(client, name):
        try:
            client.down(vm, timeout)
            click.echo(f"{vm} stopped")
        except CoveError as error:
            click.echo(f"cove: error: {error}", err=True)
            failed = True
    if failed:
        sys.exit(1)


def stack_name(client: Client, text: str) -> str | None:
    """The stack `text` names (a stack's name, its directory or file), or None if it names
    a VM or nothing cove knows as a stack."""
    from cove.spec.stack import stack_file_of

    if "/" in text or text in (".", ".."):
        path = Path(text)
        if path.exists() and stack_file_of(path):
            return load_stack(path).name
        return None
    vms = client.list_vms()
    if any(vm["name"] == text for vm in vms):
        return None
    return text if any(vm.get("stack") == text for vm in vms) else None


def follow_stack_logs(client: Client, stack: str, count: int | None, follow: bool,
                      service: str | None, timestamps: bool) -> None:
    """Every member's logs with a `vm |` prefix, like compose: merged by time, and then
    (with follow) as they come, one reader thread per VM."""
    from cove.start.stacks import stack_members

    members = stack_members(client.list_vms(), stack)
    if not members:
        die(f"no VM of stack {stack!r} runs", "see `cove ls`")
    width = max(len(vm.get("member") or vm["name"]) for vm in members)
    lines: queue.Queue[tuple[str, dict[str, Any]] | None] = queue.Queue(maxsize=10_000)

    def read(vm: dict[str, Any]) -> None:
        label = (vm.get("member") or vm["name"]).ljust(width)
        try:
            for entry in Client(client.home).logs(vm["name"], count, follow, service):
                lines.put((label, entry))
        except CoveError:
            pass  # that VM went away: the others go on
        finally:
            lines.put(None)

    if not follow:
        merged = [(entry.get("ts") or 0, vm.get("member") or vm["name"], entry)
                  for vm in members for entry in client.logs(vm["name"], count, False, service)]
        for _, label, entry in sorted(merged, key=lambda item: item[0]):
            click.echo(f"{label.ljust(width)} | {format_log(entry, timestamps)}")
        return
    for vm in members:
        threading.Thread(target=read, args=(vm,), daemon=True).start()
    left = len(members)
    try:
        while left:
            item = lines.get()
            if item is None:
                left -= 1
                continue
            click.echo(f"{item[0]} | {format_log(item[1], timestamps)}")
    except KeyboardInterrupt:
        pass
