"""cove's command line."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import click

from cove.cli import copy, export, mcp, service, state
from cove.errors import CoveError, SpecError, die
from cove.version import __version__

SPEC_ARG = click.argument("spec", type=click.Path(path_type=Path), default=Path("."))
ACCEL_OPT = click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default=None,
                         help="Override the accelerator decision.")


PORT_OPT = click.option("-p", "--publish", "ports", multiple=True,
                        metavar="[BIND:]HOST:GUEST[/udp]",
                        help="Forward a host port into the guest (repeatable).")
ENV_OPT = click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE",
                       help="Set an environment variable for services and commands.")


def vm_options(command: Any) -> Any:
    """The Docker-style flags `run` and `up` share; they become one Overrides."""
    options = [
        PORT_OPT,
        ENV_OPT,
        click.option("--name", default=None, help="Run under another name than the spec's."),
        click.option("-v", "--volume", "volumes", multiple=True,
                     metavar="NAME:DST[:SIZE] | IMAGE:DST:SIZE | DIR:DST[:ro]",
                     help="A data volume (created once), or a host directory (like Docker)."),
        click.option("--share", "shares", multiple=True, metavar="DIR:DST[:rw]",
                     help="Share a host directory (read-only unless :rw)."),
        click.option("--network", default=None, help='"user" (default), "none", or a network.'),
        click.option("--ephemeral", is_flag=True, help="Volumes get throw-away overlays."),
        click.option("--config", "config_dir", default=None, metavar="DIR",
                     help="Deliver DIR read-only at /config."),
        click.option("--secrets", "secrets_dir", default=None, metavar="DIR",
                     help="Deliver DIR at /run/secrets (tmpfs, files 0400)."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def overrides(ports: tuple[str, ...], env: tuple[str, ...], name: str | None,
              volumes: tuple[str, ...], shares: tuple[str, ...], network: str | None,
              ephemeral: bool, config_dir: str | None, secrets_dir: str | None) -> Any:
    from cove.start.prepare import Overrides

    return Overrides(ports, env, name, volumes, shares, network, ephemeral, config_dir,
                     secrets_dir)


HOMELESS = frozenset({"schema"})  # commands that never touch the cove home


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cove")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Declarative microVMs: build a guest from cove.toml and run it."""
    if ctx.invoked_subcommand not in HOMELESS:
        from cove.host.home import prepare_home

        prepare_home()


@cli.command()
@SPEC_ARG
def check(spec: Path) -> None:
    """Validate a spec or a stack; print every problem with its key and a fix."""
    from cove.spec.load import load_spec
    from cove.spec.stack import stack_file_of
    from cove.start.prepare import check_hypervisor, require_privileges

    if stack_file_of(spec):
        from cove.cli.stacks import check_stack

        return check_stack(spec)
    loaded = load_spec(spec)
    require_privileges(loaded)
    choice = check_hypervisor(loaded)
    click.echo(f"{loaded.file}: ok ({loaded.name}: {len(loaded.services)} service(s), "
               f"{len(loaded.ports)} port(s); runs on {choice})")


@cli.command()
@click.option("--stack", is_flag=True, help="The schema of cove-stack.toml instead.")
def schema(stack: bool) -> None:
    """Print the JSON schema of cove.toml (for editors)."""
    from cove.spec.schema import spec_schema
    from cove.spec.stack import stack_schema

    click.echo(json.dumps(stack_schema() if stack else spec_schema(), indent=2))


@cli.command()
@SPEC_ARG
@click.option("--flake", default=None, metavar="REF#ATTR",
              help='Build this flake output (source = "nix"); no cove.toml needed.')
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def build(spec: Path, flake: str | None, as_json: bool) -> None:
    """Build (or reuse) the kernel, initramfs and root image of a spec."""
    from cove.cli.commands import build_command

    build_command(spec, as_json, flake)


@cli.command()
@SPEC_ARG
@ACCEL_OPT
@click.option("--hypervisor", type=click.Choice(["auto", "qemu", "firecracker",
                                                 "cloud-hypervisor", "crosvm", "kvmtool"]),
              default=None, help="Show what this hypervisor would be given.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
@vm_options
def plan(spec: Path, accel: str | None, hypervisor: str | None, as_json: bool,
         **flags: Any) -> None:
    """Show the resolved plan: hypervisor and accel and why, kernel, modules, command line,
    and the argv (or config and API calls) the hypervisor gets, for the spec with the
    same flags as `run` and `up`, and whether a start would be warm."""
    from cove.cli.commands import plan_command

    plan_command(spec, accel, hypervisor, as_json, overrides(**flags))


COLD_OPT = click.option("--cold", is_flag=True,
                        help="Boot cold even where a template snapshot could start it warm.")


@cli.command()
@SPEC_ARG
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@ACCEL_OPT
@COLD_OPT
@vm_options
def run(spec: Path, command: tuple[str, ...], accel: str | None, cold: bool,
        **flags: Any) -> None:
    """Boot a VM in the foreground; with `-- COMMAND` run that instead of the services.

    Service output streams to the terminal; Ctrl-C shuts the VM down gracefully. With a
    command, cove prints its output and exits with its exit code.
    """
    from cove.cli.commands import run_command

    argv = list(command[1:] if command[:1] == ("--",) else command)
    sys.exit(run_command(spec, argv or None, accel, overrides(**flags), cold))


@cli.command()
@SPEC_ARG
@click.option("-d", "--detach", is_flag=True, help="Return once healthy; the VM runs on.")
@vm_options
@ACCEL_OPT
@COLD_OPT
@click.option("--timeout", default=120.0, show_default=True, help="Seconds to wait for healthy.")
@click.option("--no-wait", is_flag=True, help="Return once booted, without waiting for health.")
@click.option("--abort-on-failure", is_flag=True,
              help="A stack: when one VM fails, stop the ones this call started.")
def up(spec: Path, detach: bool, accel: str | None, cold: bool, timeout: float,
       no_wait: bool, abort_on_failure: bool, **flags: Any) -> None:
    """Start a VM, or a stack's VMs in dependency order, in the background (kept by the
    cove daemon) and wait until healthy.

    Without -d, follow the logs afterwards; Ctrl-C then stops what it started.
    """
    from cove.cli.vms import up_command
    from cove.spec.stack import stack_file_of

    if stack_file_of(spec):
        from cove.cli.stacks import stack_up_command

        if any(flags.values()):
            die("-p, -e, -v, --name and the like change one VM, not a stack",
                "set them per VM in cove-stack.toml ([vms.NAME] ports = ..., env = ...)")
        return stack_up_command(spec, detach, accel, timeout, no_wait, cold, abort_on_failure)
    up_command(spec, detach, overrides(**flags), accel, timeout, no_wait, cold)


def vm_of(client: Any, name: str) -> str:
    """A VM's name from NAME or STACK/VM."""
    if "/" not in name:
        return name
    from cove.start.stacks import resolve_vm

    return resolve_vm(client, name)


@cli.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def ls_command(as_json: bool) -> None:
    """List VMs: NAME STATE HEALTH PORTS UPTIME CPU MEM."""
    from cove.cli.table import ls_table
    from cove.client.http import Client

    vms = Client().list_vms()
    click.echo(json.dumps(vms, indent=2) if as_json else ls_table(vms))


@cli.command()
@click.argument("name")
@click.option("-f", "--follow", is_flag=True, help="Keep printing new lines.")
@click.option("-n", "--tail", "count", type=int, default=None, help="Only the last N lines.")
@click.option("-s", "--service", default=None, help="Only this service.")
@click.option("--console", is_flag=True, help="The guest's serial console instead.")
@click.option("--no-timestamps", is_flag=True, help="Leave out timestamps.")
def logs(name: str, follow: bool, count: int | None, service: str | None, console: bool,
         no_timestamps: bool) -> None:
    """Print a VM's service logs (kept across restarts and daemon restarts); of a stack, its
    VMs' logs interleaved with a `vm |` prefix."""
    from cove.cli.stacks import follow_stack_logs, stack_name
    from cove.cli.vms import follow_logs
    from cove.client.http import Client

    client = Client()
    if not console and (stack := stack_name(client, name)):
        return follow_stack_logs(client, stack, count, follow, service, not no_timestamps)
    name = vm_of(client, name)
    if console:
        click.echo(client.console_log(name, count or 100), nl=False)
        return
    follow_logs(client, name, count, follow, service, not no_timestamps)


@cli.command(name="exec")
@click.argument("name")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@click.option("-i", "--interactive", is_flag=True, help="Pass our stdin to the command.")
@click.option("-t", "--tty", "use_tty", is_flag=True, help="Give the command a terminal.")
@ENV_OPT
@click.option("-w", "--workdir", default=None, help="Working directory in the guest.")
@click.option("-u", "--user", default=None, help="User name or uid in the guest.")
def exec_command(name: str, command: tuple[str, ...], interactive: bool, use_tty: bool,
                 env: tuple[str, ...], workdir: str | None, user: str | None) -> None:
    """Run a command in a running VM; its exit code becomes ours."""
    import asyncio

    from cove.cli.attach import exec_remote
    from cove.client.http import Client
    from cove.spec.overrides import parse_env

    client = Client()
    name = vm_of(client, name)
    client.get(name)  # a clear error if there is no such VM
    code = asyncio.run(exec_remote(client, name, list(command), dict(map(parse_env, env)),
                                   workdir, user, interactive or use_tty, use_tty))
    sys.exit(code)


@cli.command()
@click.argument("name")
@click.option("-p", "--publish", "ports", multiple=True, metavar="[BIND:]HOST:GUEST[/udp]",
              help="Add a forward to the running VM.")
@click.option("--tunnel", is_flag=True, help="Through the agent even where user-net could.")
@click.option("--remove", "remove", type=int, multiple=True, metavar="HOST",
              help="Remove the forward of this host port.")
@click.option("--list", "show", is_flag=True, help="List the VM's forwards.")
def forward(name: str, ports: tuple[str, ...], tunnel: bool, remove: tuple[int, ...],
            show: bool) -> None:
    """Add, remove or list port forwards of a running VM (any hypervisor)."""
    from cove.client.http import Client

    client = Client()
    name = vm_of(client, name)
    for port in ports:
        added = client.add_forward(name, port, tunnel)
        click.echo(f"{added['port']} (via {added['via']})")
    for host in remove:
        removed = client.remove_forward(name, host)
        click.echo(f"removed {removed['port']}")
    if show or not (ports or remove):
        for item in client.forwards(name):
            click.echo(f"{item['port']}  via {item['via']}{'  (auto)' if item['auto'] else ''}")


@cli.command()
@click.argument("name")
def console(name: str) -> None:
    """Attach to a VM's serial console (Ctrl-] detaches)."""
    import asyncio

    from cove.cli.attach import console_remote
    from cove.client.http import Client

    client = Client()
    name = vm_of(client, name)
    client.get(name)
    asyncio.run(console_remote(client, name))


@cli.command()
@click.argument("name")
@click.option("--timeout", default=20.0, show_default=True, help="Seconds for a graceful stop.")
def restart(name: str, timeout: float) -> None:
    """Stop a VM (or STACK/VM) gracefully and boot it again."""
    from cove.client.http import Client

    client = Client()
    name = vm_of(client, name)
    vm = client.restart(name, timeout)
    click.echo(f"{name} restarted ({vm['state']})")


@cli.command()
@click.argument("names", nargs=-1)
@click.option("--all", "all_vms", is_flag=True, help="Stop every VM.")
@click.option("--timeout", default=20.0, show_default=True,
              help="Seconds for the graceful stop (agent, then ACPI) before QEMU is killed.")
def down(names: tuple[str, ...], all_vms: bool, timeout: float) -> None:
    """Stop VMs gracefully and forget them (their logs stay); a stack's VMs in reverse
    start order."""
    from cove.cli.vms import down_command

    down_command(names, all_vms, timeout)


@cli.command()
@click.option("-f", "--follow", is_flag=True, help="Keep printing new events.")
@click.option("-n", "--tail", "count", type=int, default=100, show_default=True)
@click.option("--vm", default=None, help="Only this VM's events.")
def events(follow: bool, count: int, vm: str | None) -> None:
    """Lifecycle events as JSON lines (started, healthy, exited, restarted, ...)."""
    from cove.client.http import Client

    try:
        for event in Client().events(follow, count, vm):
            click.echo(json.dumps(event))
    except KeyboardInterrupt:
        pass


@cli.command()
@click.option("--apply", "apply_it", is_flag=True, help="Remove them (default: only list).")
def gc(apply_it: bool) -> None:
    """Remove cached artifacts no declared or running VM uses, and snapshots no VM needs
    (older templates of a shape, suspend images and clone sources left behind); a dry run
    unless --apply."""
    from cove.host.home import cove_home
    from cove.image.gc import collect
    from cove.vm.snapshots import remove_snapshot, unused_snapshots

    unused = collect(cove_home(), apply_it)
    verb = "removed" if apply_it else "unused"
    for entry in unused:
        click.echo(f"{verb}  {entry.size / 2**20:8.1f} MiB  {entry.path}")
    snapshots = unused_snapshots(cove_home())
    for snapshot in snapshots:
        if apply_it:
            remove_snapshot(snapshot)
        click.echo(f"{verb}  {snapshot.size / 2**20:8.1f} MiB  snapshot {snapshot.id} "
                   f"({snapshot.kind} of {snapshot.vm})")
    total = (sum(e.size for e in unused) + sum(s.size for s in snapshots)) / 2**20
    click.echo(f"{len(unused) + len(snapshots)} entries, {total:.1f} MiB" +
               ("" if apply_it or not unused else "; --apply removes them"))


@cli.command()
def doctor() -> None:
    """Check this host: KVM or TCG and why, QEMU, virtiofsd and the other tools, and that no
    VM could write a host store. Exit 1 if something required is missing."""
    from cove.cli.doctor import diagnose

    findings = diagnose()
    for finding in findings:
        mark = "ok  " if finding.ok else ("FAIL" if finding.required else "warn")
        click.echo(f"{mark}  {finding.what}: {finding.detail}")
    sys.exit(0 if all(f.ok or not f.required for f in findings) else 1)


@cli.group()
def store() -> None:
    """Check and repair a Nix store's database against its files."""


STORE_OPT = click.option("--store", "store_dir", default="/nix", show_default=True,
                         help="The store directory (or a chroot store's root).")


@store.command(name="verify")
@STORE_OPT
@click.option("--no-contents", is_flag=True, help="Skip hashing every path's contents.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def store_verify(store_dir: str, no_contents: bool, as_json: bool) -> None:
    """Report rows for gone paths, dangling references, gone derivers, stale .drv files and
    changed contents; exit 1 if anything is wrong."""
    from dataclasses import asdict

    from cove.nix.store import find_store, verify

    report = verify(find_store(store_dir), check_contents=not no_contents)
    if as_json:
        click.echo(json.dumps(asdict(report), indent=2))
    else:
        for line in report.lines() or ["the store database matches the store"]:
            click.echo(line)
    sys.exit(0 if report.clean else 1)


@store.command(name="repair")
@STORE_OPT
@click.option("--apply", "apply_it", is_flag=True,
              help="Change the database (after a backup); without it, only show the plan.")
@click.option("--remove-stale-drvs", is_flag=True,
              help="Also delete .drv files whose input derivations are gone.")
def store_repair(store_dir: str, apply_it: bool, remove_stale_drvs: bool) -> None:
    """Remove what `verify` found, in one transaction; a dry run unless --apply."""
    from cove.nix.repair import apply_repair, plan_repair
    from cove.nix.store import find_store, verify

    found = find_store(store_dir)
    if not apply_it:
        steps, files = plan_repair(verify(found, check_contents=False), remove_stale_drvs)
        for step in steps:
            click.echo(f"would {step.why}")
        for path in files:
            click.echo(f"would delete {path}")
        click.echo("nothing to repair" if not (steps or files) else
                   "dry run: nothing changed; --apply does it (after a backup)")
        return
    saved, steps, after = apply_repair(found, remove_stale_drvs)
    click.echo(f"backed up the database to {saved}")
    for step in steps:
        click.echo(step.why)
    for line in after.lines() or ["the store database now matches the store"]:
        click.echo(line)
    sys.exit(0 if after.clean else 1)


@cli.group()
def network() -> None:
    """Private networks: VMs on one reach each other by name (needs root)."""


@network.command(name="create")
@click.argument("name")
@click.option("--subnet", required=True, metavar="CIDR", help="e.g. 10.77.0.0/24")
def network_create(name: str, subnet: str) -> None:
    """Make a bridge with NAT and name service for VMs started with --network NAME."""
    from cove.net.networks import create_network

    made = create_network(name, subnet)
    click.echo(f"{made.name}: bridge {made.bridge}, gateway {made.gateway}, {made.subnet}")


@network.command(name="ls")
def network_ls() -> None:
    """List networks."""
    from cove.net.networks import list_networks, network_dir, read_leases

    for item in list_networks():
        vms = ", ".join(sorted(read_leases(network_dir(item.name)))) or "-"
        click.echo(f"{item.name}  {item.subnet}  bridge {item.bridge}  VMs: {vms}")


@network.command(name="rm")
@click.argument("names", nargs=-1, required=True)
def network_rm(names: tuple[str, ...]) -> None:
    """Remove networks that no VM uses."""
    from cove.net.networks import remove_network

    for name in names:
        remove_network(name)
        click.echo(f"{name} removed")


@cli.group()
def volume() -> None:
    """Named data volumes (kept in the cove home across VMs)."""


@volume.command(name="ls")
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def volume_ls(as_json: bool) -> None:
    """List volumes: NAME SIZE ALLOCATED IN-USE."""
    from dataclasses import asdict

    from cove.vm.volumes import list_volumes

    volumes = list_volumes()
    if as_json:
        click.echo(json.dumps([{**asdict(v), "path": str(v.path)} for v in volumes], indent=2))
        return
    from cove.cli.table import plain_table

    rows = [[v.name, f"{v.size_mib}MiB", f"{v.allocated_mib:.1f}MiB", "yes" if v.in_use else "no"]
            for v in volumes]
    click.echo(plain_table(["NAME", "SIZE", "ALLOCATED", "IN-USE"], rows))


@volume.command(name="rm")
@click.argument("names", nargs=-1, required=True)
def volume_rm(names: tuple[str, ...]) -> None:
    """Delete volumes (refused while a VM uses one)."""
    from cove.vm.volumes import remove_volume

    for name in names:
        remove_volume(name)
        click.echo(f"{name} removed")


@volume.command(name="grow")
@click.argument("name")
@click.argument("size")
def volume_grow(name: str, size: str) -> None:
    """Grow a volume and its filesystem to SIZE (e.g. 2G); the VM using it must be down."""
    from cove.vm.volumes import grow_volume

    click.echo(f"{name} is now {grow_volume(name, size)} MiB")


@cli.command()
def daemon() -> None:
    """Run the cove daemon in the foreground, for service managers (the CLI otherwise starts
    it on demand)."""
    from cove.daemon.server import main as daemon_main

    daemon_main()


for command in (state.pause, state.resume, state.suspend, state.clone, state.snapshot,
                copy.cp, mcp.mcp, service.enable, service.disable, service.systemd,
                export.export):
    cli.add_command(command)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except SpecError as error:
        click.echo(str(error), err=True)
        sys.exit(2)
    except CoveError as error:
        click.echo(f"cove: error: {error}", err=True)
        sys.exit(1)
    except click.exceptions.Abort:
        sys.exit(130)
    except click.ClickException as error:
        error.show()
        sys.exit(error.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except BrokenPipeError:
        # `cove logs | head`: the reader left; exit quietly, as other tools do
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(141)
    except Exception as error:
        from cove.cli.output import explain

        message, hint = explain(error)
        click.echo(f"cove: error: {message}" + (f"\n  hint: {hint}" if hint else ""), err=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
