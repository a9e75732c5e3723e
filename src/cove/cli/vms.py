"""The commands for background VMs: up, ls, logs, exec, console, restart, down, events."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

import click

from cove.cli.output import format_log
from cove.client.http import Client
from cove.errors import CoveError, die

if TYPE_CHECKING:
    from cove.start.prepare import Overrides


def follow_logs(client: Client, name: str, count: int | None, follow: bool,
                service: str | None, timestamps: bool) -> None:
    try:
        for entry in client.logs(name, count, follow, service):
            click.echo(format_log(entry, timestamps))
    except KeyboardInterrupt:
        pass


def resolve_vm(client: Client, name: str) -> str:
    from cove.start.stacks import resolve_vm as resolve

    return resolve(client, name)


def up_command(spec_path: Path, detach: bool, flags: Overrides, accel: str | None,
               timeout: float, no_wait: bool, cold: bool = False) -> None:
    from cove.cli.output import progress
    from cove.start.prepare import load_with, start_detached, wait_healthy
    from cove.start.stacks import replace_dead

    spec = load_with(spec_path, flags)
    client = Client()
    started = time.monotonic()
    old = next((vm["state"] for vm in client.list_vms() if vm["name"] == spec.name), None)
    replace_dead(client, spec.name, old)
    plan, created = start_detached(client, spec, accel, cold)
    if not no_wait:
        wait_healthy(client, spec.name, timeout)
    state = "started" if no_wait else ("up" if created.get("warm") else "healthy")
    how = f" (warm start from snapshot {created['warm']})" if created.get("warm") else ""
    progress(f"{spec.name} is {state} in {time.monotonic() - started:.1f} s{how}"
             + (f"; ports {', '.join(map(str, plan.ports))}" if plan.ports else ""))
    if detach:
        return
    progress(f"following logs; Ctrl-C stops {spec.name}")
    follow_logs(client, spec.name, 0, True, None, False)
    progress(f"stopping {spec.name}")
    client.down(spec.name)


def down_command(names: tuple[str, ...], all_vms: bool, timeout: float) -> None:
    client = Client()
    if all_vms:
        names = tuple(vm["name"] for vm in client.list_vms(after_autostart=True))
    elif not names:
        die("name the VMs to stop, or pass --all")
    failed = []
    for name in names:
        from cove.cli.stacks import stack_down, stack_name

        if stack := stack_name(client, name):
            stack_down(client, stack, timeout)
            continue
        try:
            client.down(name if "/" not in name else resolve_vm(client, name), timeout)
            click.echo(f"{name} stopped")
        except CoveError as error:
            click.echo(f"cove: error: {error}", err=True)
            failed.append(name)
    if failed:
        sys.exit(1)
