"""cove as a service: `enable`/`disable` (what the daemon starts when it starts) and
`systemd install` (the units)."""

from __future__ import annotations

import getpass
import json
import os
import sys
from pathlib import Path

import click

from cove.errors import die
from cove.host.home import Home, cove_home


def entry_for(target: str) -> object:
    """What TARGET names: a spec or stack path, a stack's name, or a VM's name."""
    from cove.daemon.autostart import Entry
    from cove.spec.load import load_spec
    from cove.spec.stack import load_stack, stack_file_of

    path = Path(target)
    if path.exists():
        if stack_file_of(path):
            stack = load_stack(path)
            return Entry("stack", str(stack.file), stack.name)
        spec = load_spec(path)
        return Entry("spec", str(spec.file), spec.name)
    saved = Home().stacks / target / "stack.json"
    if saved.is_file():
        return Entry("stack", str(json.loads(saved.read_text())["file"]), target)
    from cove.client.http import Client

    if any(vm["name"] == target for vm in Client().list_vms()):
        return Entry("vm", target, target)
    die(f"{target!r} is no VM, stack, or path to a cove.toml or cove-stack.toml",
        "name a VM (`cove ls`), or give the spec's or stack's directory")


@click.command()
@click.argument("target", required=False)
def enable(target: str | None) -> None:
    """Start TARGET whenever the daemon starts (a VM, a spec or stack directory, or a stack
    name); without TARGET, list what is enabled."""
    from cove.daemon.autostart import Entry, load_entries
    from cove.daemon.autostart import enable as add

    if target is None:
        for item in load_entries(cove_home()):
            click.echo(f"{item.name}\t{item.kind}\t{item.target}")
        return
    entry = entry_for(target)
    assert isinstance(entry, Entry)
    added = add(cove_home(), entry)
    click.echo(f"{entry.name} ({entry.kind}) " + ("starts whenever the cove daemon starts"
                                                  if added else "was enabled already"))


@click.command()
@click.argument("target")
def disable(target: str) -> None:
    """Stop starting TARGET (a name or path given to `cove enable`) with the daemon."""
    from cove.daemon.autostart import disable as remove

    gone = remove(cove_home(), target)
    if not gone and Path(target).exists():  # a path: the file it names was enabled
        from cove.daemon.autostart import Entry

        entry = entry_for(target)
        assert isinstance(entry, Entry)
        gone = remove(cove_home(), entry.target)
    if not gone:
        die(f"{target} is not enabled", "`cove enable` lists what is")
    for entry in gone:
        click.echo(f"{entry.name} ({entry.kind}) no longer starts with the daemon")


@click.group()
def systemd() -> None:
    """systemd units for the cove daemon and for single VMs or stacks."""


@systemd.command(name="install")
@click.option("--user", "as_user", is_flag=True,
              help="A user unit (~/.config/systemd/user) for this user's cove home.")
@click.option("--vm", "targets", multiple=True, metavar="SPEC|STACK",
              help="Also a cove@NAME.service instance for this spec or stack (repeatable).")
@click.option("--dir", "directory", type=click.Path(path_type=Path), default=None,
              help="Write the units here instead (packaging, review).")
def systemd_install(as_user: bool, targets: tuple[str, ...], directory: Path | None) -> None:
    """Write coved.service (and cove@.service with --vm), and say how to start them."""
    from cove.daemon.autostart import Entry
    from cove.daemon.units import (
        TEMPLATE_NAME,
        UNIT_NAME,
        daemon_unit,
        instance_dropin,
        unit_dir,
        vm_template,
    )

    if not as_user and os.geteuid() != 0 and directory is None:
        die("system units go to /etc/systemd/system, which needs root",
            "run it as root, or pass --user for a unit of your own (with lingering)")
    home, cove = cove_home(), [sys.executable, "-m", "cove"]
    out = directory or unit_dir(as_user, Path.home())
    out.mkdir(parents=True, exist_ok=True)
    written = [write_unit(out / UNIT_NAME, daemon_unit(cove, home, as_user))]
    if targets:
        written.append(write_unit(out / TEMPLATE_NAME, vm_template(cove, home, as_user)))
    for target in targets:
        entry = entry_for(target)
        assert isinstance(entry, Entry)
        if entry.kind == "vm":
            die(f"{target}: --vm takes a spec or stack path (the unit runs `cove up -d` of it)")
        dropin = out / f"cove@{entry.name}.service.d" / "cove.conf"
        dropin.parent.mkdir(exist_ok=True)
        written.append(write_unit(dropin, instance_dropin(Path(entry.target))))
    for path in written:
        click.echo(f"wrote {path}")
    say_next(as_user, bool(targets))


def write_unit(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(0o644)  # systemd reads units as any user; they hold no secret
    return path


def say_next(as_user: bool, instances: bool) -> None:
    ctl = "systemctl --user" if as_user else "systemctl"
    click.echo(f"next: {ctl} daemon-reload && {ctl} enable --now coved")
    if instances:
        click.echo(f"      {ctl} enable --now cove@NAME   (NAME: the VM's or stack's name)")
    if as_user:
        click.echo(f"      loginctl enable-linger {getpass.getuser()}   (so it starts at boot, "
                   "before you log in, and outlives your sessions)")
    click.echo("      `cove enable NAME|DIR` chooses what the daemon starts when it starts")
