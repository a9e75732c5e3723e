"""From a spec (a file or a program's dict) and Docker-style flags to a started VM: what the
CLI's `up`/`run` and the Python API share, so both give the same results and errors."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cove.errors import CoveError, die
from cove.host.home import Home, cove_home
from cove.image.build import Artifacts, build_artifacts
from cove.plan.accel import AccelDecision, decide_accel, host_tsc_khz
from cove.plan.choose import choose_hypervisor, installed_hypervisors
from cove.plan.features import required_features
from cove.plan.vmplan import HostFacts, Plan, make_plan
from cove.spec.load import load_spec, load_spec_dict
from cove.spec.model import Accel, Hypervisor, Spec
from cove.spec.overrides import apply_overrides, command_line_spec

if TYPE_CHECKING:
    from cove.client.http import Client

WAIT_SLICE = 30.0  # one held request's longest wait: the deadline is checked between them


@dataclass(frozen=True)
class Overrides:
    """What `run` and `up` flags (or the API's keyword arguments) change in a spec."""

    ports: tuple[str, ...] = ()
    env: tuple[str, ...] = ()
    name: str | None = None
    volumes: tuple[str, ...] = ()
    shares: tuple[str, ...] = ()
    network: str | None = None
    ephemeral: bool = False
    config: str | None = None
    secrets: str | None = None


@dataclass(frozen=True)
class DictSource:
    """A spec a program gave as a dict; relative paths in it are relative to `base`."""

    raw: dict[str, Any]
    base: Path


def load_with(source: Path | DictSource, flags: Overrides) -> Spec:
    extra = command_line_spec(flags.shares, flags.volumes, flags.network, flags.ephemeral,
                              flags.config, flags.secrets)
    if isinstance(source, DictSource):
        loaded = load_spec_dict(source.raw, source.base, extra)
    else:
        loaded = load_spec(source, extra)
    spec = apply_overrides(loaded, flags.ports, flags.env, flags.name)
    require_privileges(spec)
    return spec


def require_privileges(spec: Spec) -> None:
    """Whatever needs root is said before anything is built."""
    from cove.net.networks import root_problem

    problem = root_problem(spec.network)
    if problem:
        die(f"{spec.file}: {problem}", 'run cove as root, or use network = "user": its NAT '
            "and port forwards need no root")


def host_facts(spec: Spec, accel: str | None, hypervisor: Hypervisor | None = None
               ) -> HostFacts:
    requested = Accel(accel) if accel else spec.accel
    decision = decide_accel(requested, Home().host_facts)
    if hypervisor not in (None, Hypervisor.QEMU, Hypervisor.AUTO) and accel is None \
            and decision.accel != "kvm":
        # show what that hypervisor would get on a KVM host (it cannot run without one)
        decision = AccelDecision("kvm", f"assumed: {hypervisor.value} runs only on KVM; "
                                        f"this host: {decision.reason}")
    return HostFacts(decision, host_tsc_khz(), installed_hypervisors(), cove_home())


def plan_for(spec: Spec, accel: str | None, with_services: bool = True,
             hypervisor: Hypervisor | None = None) -> tuple[Plan, Artifacts]:
    artifacts = build_artifacts(spec)
    plan = make_plan(spec, host_facts(spec, accel, hypervisor), artifacts.kernel,
                     with_services, hypervisor, artifacts.nix_outputs, artifacts.nix_closure)
    if plan.idle_suspend_after:
        from cove.plan.warm import snapshot_blockers

        if blockers := snapshot_blockers(plan):
            die(f"{spec.file}: idle.suspend_after needs snapshots, but "
                + "; ".join(blockers), "remove [idle], or what blocks the snapshot")
    return plan, artifacts


def start_detached(client: Client, spec: Spec, accel: str | None = None,
                   cold: bool = False) -> tuple[Plan, dict[str, Any]]:
    """Build, then hand the VM to the daemon; the daemon's record protects the artifacts
    from `cove gc` from then on."""
    from cove.image.build import default_cache
    from cove.vm.record import VmRecord

    plan, artifacts = plan_for(spec, accel)
    record = VmRecord(plan, artifacts, spec.restart, str(spec.file), time.time())
    try:
        created = client.create(record.to_json(), cold)
    finally:
        default_cache().let_go()
    return plan, created


def problems_of(vm: dict[str, Any]) -> list[str]:
    """Why a VM is not healthy, one sentence per service, for `up` to report."""
    reasons = []
    for name, service in vm.get("services", {}).items():
        if service.get("health") == "unhealthy":
            output = service.get("health_output") or "(no output)"
            reasons.append(f"service {name} is unhealthy; its health check said:\n    "
                           + output.replace("\n", "\n    "))
        elif service.get("state") == "failed":
            reasons.append(f"service {name} failed (exit code {service.get('exit_code')})")
    return reasons


def recent_logs(client: Client, vm: dict[str, Any], count: int = 8) -> list[str]:
    """The last lines each unhealthy service printed: usually the reason it is not serving."""
    found = []
    for name, service in vm.get("services", {}).items():
        if service.get("health") != "unhealthy":
            continue
        try:
            lines = [str(entry.get("text")) for entry in client.logs(vm["name"], count,
                                                                  service=name)]
        except CoveError:
            continue
        found.append(f"service {name}'s last lines:\n    "
                     + ("\n    ".join(lines) if lines else "(it printed nothing)"))
    return found


def wait_healthy(client: Client, name: str, timeout: float) -> dict[str, Any]:
    """The VM's status once it is healthy; a user error if it fails, turns unhealthy or
    takes longer than `timeout`. The daemon holds each request until the VM settles, so
    `up` returns the moment it does, and nothing asks the guest while its services start."""
    deadline = time.monotonic() + timeout
    while True:
        vm = client.get(name, settled=max(0.0, min(deadline - time.monotonic(), WAIT_SLICE)))
        if vm["state"] in ("suspending", "suspended"):
            return vm  # it was up and fell asleep as `[idle]` asks; a connection wakes it
        if vm["state"] != "running" and vm["state"] != "starting":
            die(f"{name} is {vm['state']}: {vm.get('error') or 'see cove events'}")
        if vm["health"] in ("healthy", "-"):
            return vm
        if vm["health"] == "unhealthy":
            reasons = "\n  ".join(problems_of(vm) + recent_logs(client, vm))
            die(f"{name} is running but unhealthy:\n  {reasons}",
                f"see `cove logs {name}`; stop it with `cove down {name}`")
        if time.monotonic() >= deadline:
            die(f"{name} did not become healthy within {timeout:g} s",
                f"see `cove logs {name}`; `cove up --timeout` waits longer")


def check_hypervisor(spec: Spec) -> str:
    """The hypervisor the spec would run on here; dies naming what it cannot give."""
    accel = decide_accel(spec.accel, Home().host_facts).accel
    if spec.hypervisor not in (Hypervisor.AUTO, Hypervisor.QEMU):
        accel = "kvm"  # judge the spec, not this host: it names a KVM-only hypervisor
    choice = choose_hypervisor(spec.hypervisor, accel, installed_hypervisors(),
                               required_features(spec, accel))
    return choice.hypervisor.value
