"""cove's command line."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import click

from cove import __version__
from cove.errors import CoveError
from cove.spec.load import SpecError

SPEC_ARG = click.argument("spec", type=click.Path(path_type=Path), default=Path("."))
ACCEL_OPT = click.option("--accel", type=click.Choice(["auto", "kvm", "tcg"]), default=None,
                         help="Override the accelerator decision.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cove")
def cli() -> None:
    """Declarative microVMs: build a guest from cove.toml and run it."""


@cli.command()
@SPEC_ARG
def check(spec: Path) -> None:
    """Validate a spec; print every problem with its key and a fix."""
    from cove.spec.load import load_spec

    loaded = load_spec(spec)
    click.echo(f"{loaded.file}: ok ({loaded.name}: {len(loaded.services)} service(s), "
               f"{len(loaded.ports)} port(s))")


@cli.command()
def schema() -> None:
    """Print the JSON schema of cove.toml (for editors)."""
    from cove.spec.schema import spec_schema

    click.echo(json.dumps(spec_schema(), indent=2))


@cli.command()
@SPEC_ARG
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def build(spec: Path, as_json: bool) -> None:
    """Build (or reuse) the kernel, initramfs and root image of a spec."""
    from cove.cli.commands import build_command

    build_command(spec, as_json)


@cli.command()
@SPEC_ARG
@ACCEL_OPT
@click.option("--json", "as_json", is_flag=True, help="Print JSON for programs.")
def plan(spec: Path, accel: str | None, as_json: bool) -> None:
    """Show the resolved plan: kernel, modules, command line, accel and why, QEMU argv."""
    from cove.cli.commands import plan_command

    plan_command(spec, accel, as_json)


@cli.command()
@SPEC_ARG
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
@ACCEL_OPT
@click.option("-p", "--publish", "ports", multiple=True, metavar="[BIND:]HOST:GUEST[/udp]",
              help="Forward a host port into the guest (repeatable).")
@click.option("-e", "--env", "env", multiple=True, metavar="KEY=VALUE",
              help="Set an environment variable for services and the command.")
@click.option("--name", default=None, help="Run under another name than the spec's.")
def run(spec: Path, command: tuple[str, ...], accel: str | None, ports: tuple[str, ...],
        env: tuple[str, ...], name: str | None) -> None:
    """Boot a VM in the foreground; with `-- COMMAND` run that instead of the services.

    Service output streams to the terminal; Ctrl-C shuts the VM down gracefully. With a
    command, cove prints its output and exits with its exit code.
    """
    from cove.cli.commands import run_command

    argv = list(command[1:] if command[:1] == ("--",) else command)
    sys.exit(run_command(spec, argv or None, accel, ports, env, name))


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
    except asyncio.CancelledError:
        sys.exit(130)


if __name__ == "__main__":
    main()
