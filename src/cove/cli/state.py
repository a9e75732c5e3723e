"""The commands for a VM's state: pause, resume, suspend, clone, snapshot save/clone/ls/rm."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, TypeVar

import click


@click.command()
@click.argument("name")
def pause(name: str) -> None:
    """Stop a VM's vCPUs (it keeps its memory; `cove resume` goes on at once)."""
    from cove.client.http import Client

    Client().state_change(name, "pause")
    click.echo(f"{name} paused")


@click.command()
@click.argument("name")
def resume(name: str) -> None:
    """Go on with a paused VM, or restore a suspended one (ports, volumes, logs as before)."""
    import time

    from cove.client.http import Client

    started = time.monotonic()
    vm = Client().state_change(name, "resume")
    click.echo(f"{name} is {vm['state']} ({time.monotonic() - started:.2f} s)")


@click.command()
@click.argument("name")
def suspend(name: str) -> None:
    """Save a VM's state to disk and end its hypervisor: the host gets the memory back."""
    from cove.client.http import Client

    vm = Client().state_change(name, "suspend")
    click.echo(f"{name} suspended (snapshot {vm['snapshot']})")


Command = TypeVar("Command", bound=Callable[..., None])


def clone_options(default_prefix: str) -> Callable[[Command], Command]:
    """--count, --prefix and -p, as `clone` and `snapshot clone` share them."""
    def decorate(command: Command) -> Command:
        for option in (
            click.option("-p", "--publish", "ports", multiple=True,
                         metavar="[BIND:]HOST:GUEST",
                         help="Forward HOST+i-1 to GUEST for VM i (without -p: no ports)."),
            click.option("--prefix", default=None, help="Their names: PREFIX1, PREFIX2, ... "
                         f"(default: {default_prefix})."),
            click.option("--count", "-n", default=1, show_default=True, help="How many VMs."),
        ):
            command = option(command)
        return command
    return decorate


@click.command()
@click.argument("name")
@clone_options("NAME-")
def clone(name: str, count: int, prefix: str | None, ports: tuple[str, ...]) -> None:
    """New VMs from NAME's current state (NAME pauses only for the save and runs on)."""
    import time

    from cove.client.http import Client

    started = time.monotonic()
    clones = Client().clone(name, count, prefix, ports)
    print_clones(clones, name, time.monotonic() - started)


def print_clones(clones: list[dict[str, Any]], source: str, seconds: float) -> None:
    for vm in clones:
        click.echo(f"{vm['name']}  {', '.join(vm['ports']) or '-'}")
    click.echo(f"{len(clones)} clone(s) of {source} up in {seconds:.2f} s")


@click.group()
def snapshot() -> None:
    """Saved VM states: templates (warm starts), suspend images, clone sources, and the
    snapshots you save (kept until `cove snapshot rm`)."""


@snapshot.command(name="save")
@click.argument("name")
def snapshot_save(name: str) -> None:
    """Save NAME's state now (it pauses only for the save and runs on); prints the id that
    `cove snapshot clone` starts new VMs from, even after NAME is gone."""
    from cove.client.http import Client

    saved = Client().save_snapshot(name)
    click.echo(f"{saved['id']}  ({saved['size'] / 2**20:.0f} MiB, saved from {name})")


@snapshot.command(name="clone")
@click.argument("ident", metavar="ID")
@clone_options("the saved VM's name and -")
def snapshot_clone(ident: str, count: int, prefix: str | None, ports: tuple[str, ...]) -> None:
    """New VMs restored from a snapshot saved with `cove snapshot save`."""
    import time

    from cove.client.http import Client

    started = time.monotonic()
    clones = Client().clone_snapshot(ident, count, prefix, ports)
    print_clones(clones, f"snapshot {ident}", time.monotonic() - started)


@snapshot.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def snapshot_ls(as_json: bool) -> None:
    """List snapshots: ID KIND VM SIZE AGE USED-BY."""
    import time

    from cove.cli.table import human_duration, plain_table
    from cove.client.http import Client

    found = Client().snapshots()
    if as_json:
        click.echo(json.dumps(found, indent=2))
        return
    rows = [[s["id"], s["kind"], s["vm"], f"{s['size'] / 2**20:.0f}MiB",
             human_duration(time.time() - s["created"]), s["used_by"] or "-"] for s in found]
    click.echo(plain_table(["ID", "KIND", "VM", "SIZE", "AGE", "USED-BY"], rows))


@snapshot.command(name="rm")
@click.argument("ids", nargs=-1, required=True)
def snapshot_rm(ids: tuple[str, ...]) -> None:
    """Remove snapshots (refused for one a VM still needs)."""
    from cove.client.http import Client

    client = Client()
    for ident in ids:
        client.remove_snapshot(ident)
        click.echo(f"{ident} removed")
