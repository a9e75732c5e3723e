"""`cove cp`: files and trees in and out of a running VM, Docker's way, through the agent
(so it works on every hypervisor and without a guest network)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.argument("source")
@click.argument("dest")
def cp(source: str, dest: str) -> None:
    """Copy files or directories between the host and a running VM.

    \b
      cove cp ./app web:/srv/        a tree into /srv/app
      cove cp web:/var/log/app.log .  a file out
    Modes are kept; owners too where the receiving side runs as root.
    """
    from cove.sdk.sync import VM
    from cove.sdk.transfer import copy_plan

    direction, name, guest_path, host_path = copy_plan(source, dest)
    vm = VM.get(name)
    if direction == "in":
        vm.copy_in(Path(host_path).expanduser(), guest_path)
    else:
        vm.copy_out(guest_path, Path(host_path).expanduser())
