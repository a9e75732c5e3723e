"""What the CLI commands do, kept out of the click wiring so `cove --help` starts fast."""

from __future__ import annotations

import asyncio
import json
import shlex
import sys
import time
from pathlib import Path

import click

from cove.cli.output import ServicePrinter, progress, write_stream
from cove.host.home import cove_home
from cove.image.build import Artifacts, build_artifacts
from cove.image.pack import ROOT_FS
from cove.plan.vmplan import Plan
from cove.spec.load import load_spec
from cove.spec.model import Hypervisor
from cove.start.prepare import Overrides, load_with, plan_for
from cove.vm.vmdir import VmDir
from cove.vmm.layout import BootFiles
from cove.vmm.render import render


def build_command(spec_path: Path, as_json: bool, flake: str | None = None) -> None:
    from cove.image.build import default_cache
    from cove.image.stamp import format_result, record

    spec = load_spec(spec_path, {"flake": flake, "source": "nix"} if flake else None)
    started = time.monotonic()
    artifacts = build_artifacts(spec)
    result = {
        "name": spec.name,
        "kernel": {"version": artifacts.kernel.version, "path": str(artifacts.kernel.vmlinux)},
        "initramfs": str(artifacts.initramfs),
        "root": {"path": str(artifacts.root.path), "size": artifacts.root.size,
                 "packages": len(artifacts.root.packages)},
        "nix_outputs": list(artifacts.nix_outputs),
        "seconds": round(time.monotonic() - started, 3),
    }
    if not flake:
        record(default_cache().root, spec.file, result)
    click.echo(format_result(result, as_json))


def plan_command(spec_path: Path, accel: str | None, hypervisor: str | None,
                 as_json: bool, flags: Overrides | None = None) -> None:
    spec = load_with(spec_path, flags or Overrides())
    chosen = Hypervisor(hypervisor) if hypervisor else None
    plan, artifacts = plan_for(spec, accel, hypervisor=chosen)
    vm_dir = VmDir.for_name(spec.name)
    files = BootFiles(artifacts.kernel.vmlinux, vm_dir.initrd, artifacts.root.path,
                      artifacts.nix_store_image)
    rendered = render(plan, files, vm_dir.sockets)
    if as_json:
        click.echo(json.dumps({**plan.to_json(), **rendered}, indent=2))
        return
    click.echo(f"name        {plan.name}  ({plan.vcpu} vCPU, {plan.memory_mib} MiB)")
    click.echo(f"hypervisor  {plan.hypervisor}: {plan.hypervisor_reason}")
    click.echo(f"accel       {plan.accel.accel}: {plan.accel.reason}")
    click.echo(f"kernel      {plan.kernel_version}")
    click.echo(f"modules     {' '.join(plan.modules) or '(all built in)'}")
    click.echo(f"cmdline     {' '.join(plan.cmdline)}")
    click.echo(f"root        {artifacts.root.path} ({ROOT_FS}, read-only, tmpfs overlay)")
    click.echo(f"ports       {', '.join(map(str, plan.ports)) or '-'}")
    click.echo(f"services    {', '.join(plan.agent_config['services']) or '-'}")
    click.echo(f"shares      {', '.join(f'{s.source}->{s.target}' for s in plan.shares) or '-'}")
    click.echo(f"volumes     {', '.join(f'{d.path}->{d.target}' for d in plan.drives) or '-'}")
    click.echo(f"network     {plan.network}; agent over {plan.agent_transport}")
    click.echo(f"warm start  {warm_start_line(plan, artifacts, files, vm_dir)}")
    click.echo("argv")
    click.echo(format_argv(rendered["argv"]))
    for path, body in rendered.get("config", {}).items():
        click.echo(f"config file {path}")
        click.echo(json.dumps(body, indent=2))
    if rendered.get("api"):
        click.echo("then on its API socket")
    for method, path, body in rendered.get("api", []):
        click.echo(f"  {method} {path} {json.dumps(body) if body is not None else ''}")


def warm_start_line(plan: Plan, artifacts: Artifacts, files: BootFiles, vm_dir: VmDir) -> str:
    """Whether a start of this plan can restore a template, and why not."""
    from cove.image.build import artifacts_to_json
    from cove.plan.warm import snapshot_blockers, template_key
    from cove.vm.snapshots import find_template
    from cove.vm.storage import delivered_files
    from cove.vmm.launch import launcher_for

    blockers = snapshot_blockers(plan) + ([] if plan.template else ["[warm] template = false"])
    if blockers:
        return "never: it always boots cold, because " + "; ".join(blockers)
    hypervisor = launcher_for(plan, files, vm_dir.sockets).restore_shape()
    delivered = delivered_files(plan)
    key = template_key(plan, artifacts_to_json(artifacts), delivered, hypervisor)
    template = find_template(cove_home(), key)
    holds = " It is the guest's RAM and holds /run/secrets (opt out: [warm] template = " \
        "false)." if any(name.startswith("secrets/") for name in delivered) else ""
    if template is None:
        return f"not yet: the first healthy start saves the template (key {key}).{holds}"
    changed = template.changed_disks()
    if changed:
        return "no: " + "; ".join(changed) + f" (template {template.id})"
    return f"yes, from template {template.id} ({template.size / 2**20:.0f} MiB).{holds}"


def format_argv(argv: list[str]) -> str:
    """One `-flag value` pair per line, shell-quoted, for reading."""
    lines, index = [f"  {shlex.quote(argv[0])}"], 1
    while index < len(argv):
        item = argv[index]
        if index + 1 < len(argv) and not argv[index + 1].startswith("-"):
            lines.append(f"    {item} {shlex.quote(argv[index + 1])}")
            index += 2
        else:
            lines.append(f"    {item}")
            index += 1
    return " \\\n".join(lines)


def run_command(spec_path: Path, command: list[str] | None, accel: str | None,
                flags: Overrides, cold: bool = False) -> int:
    from cove.vm.foreground import run_foreground

    spec = load_with(spec_path, flags)
    talkative = command is None or sys.stderr.isatty()
    report = progress if talkative else (lambda _text: None)
    report(f"building {spec.name}")
    plan, artifacts = plan_for(spec, accel, with_services=command is None)
    report(f"booting {spec.name} ({plan.accel.accel}: {plan.accel.reason})")
    printer = ServicePrinter()
    return asyncio.run(run_foreground(plan, artifacts, command, printer.frame, write_stream,
                                      report, cold))
