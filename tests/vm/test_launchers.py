"""Each hypervisor's Launcher end to end, against a stand-in executable found on PATH under
the real binary's name (tests/standins/hypervisor.py): spawn, the API calls, the agent
connection, exec, the port through the agent tunnel, the console log, adoption after a
daemon restart, and every way to stop (agent, power button, quit, kill).

No guest kernel boots here (these hypervisors need KVM); the stand-in's "guest" is cove's real
agent, run with the config cove wrote into the initrd. The guest side of each hypervisor's
device shape is booted for real under QEMU in tests/vm/test_shapes.py.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.image.build import Artifacts, build_artifacts
from cove.plan.accel import AccelDecision
from cove.plan.vmplan import HostFacts, Plan, make_plan
from cove.spec import load_spec
from cove.spec.model import Hypervisor
from cove.vm.frames import Frame
from cove.vm.machine import Machine
from cove.vm.vmdir import VmDir
from cove.vmm import launch
from cove.vmm.layout import BootFiles
from cove.vmm.render import render
from cove.vmm.vsock import Connector, unix_connector
from tests.vm.conftest import fetch, free_port, write_spec

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
BINARIES = {Hypervisor.FIRECRACKER: "firecracker", Hypervisor.CLOUD_HYPERVISOR:
            "cloud-hypervisor", Hypervisor.CROSVM: "crosvm", Hypervisor.KVMTOOL: "lkvm"}
# A name Firecracker's --id would refuse as it is ('_' and '.'): cove derives a valid one.
SPEC = '''
name = "std_in.{suffix}"
packages = ["python3", "curl"]
network = "none"

[services.web]
command = "python3 -m http.server {guest} --bind 127.0.0.1"

[[ports]]
host = {host}
guest = {guest}
'''
# What each stop step does on each hypervisor (True: it ends the VM)
STOPS = {
    Hypervisor.FIRECRACKER: {"power_button": True, "quit": False},
    Hypervisor.CLOUD_HYPERVISOR: {"power_button": True, "quit": True},
    Hypervisor.CROSVM: {"power_button": True, "quit": True},
    Hypervisor.KVMTOOL: {"power_button": False, "quit": True},  # no graceful stop
}


@pytest.fixture
def standins(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The four stand-ins on PATH; AF_VSOCK (no vhost-vsock here) dialled as their relay."""
    work = Path(tempfile.mkdtemp(prefix="cove-si-"))  # short: unix socket paths
    bin_dir = work / "bin"
    bin_dir.mkdir()
    for binary in BINARIES.values():
        script = bin_dir / binary
        script.write_text(f"#!{sys.executable}\nimport sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                          f"from tests.standins.hypervisor import main\nmain({binary!r})\n")
        script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    monkeypatch.setenv("COVE_STANDIN_VSOCK", str(work / "vsock"))
    monkeypatch.setenv("HOME", str(work / "home"))  # kvmtool keeps its sockets in ~/.lkvm

    def relay_connector(cid: int, _port: int) -> Connector:
        return unix_connector(work / "vsock" / f"{cid}.sock")

    monkeypatch.setattr(launch, "af_vsock_connector", relay_connector)
    yield work
    shutil.rmtree(work, ignore_errors=True)


def ignore(_frame: Frame) -> None:
    """Frames these tests do not look at."""


async def run(machine: Machine, *argv: str) -> str:
    output: list[bytes] = []
    code = await machine.exec(list(argv), lambda _fd, data: output.append(data))
    assert code == 0
    return b"".join(output).decode().strip()


async def page_on(port: int) -> str:
    async with asyncio.timeout(20):
        while (page := await asyncio.to_thread(fetch, port)) is None:
            await asyncio.sleep(0.2)
    return page


def ran_argv(machine: Machine) -> str:
    """The argv the stand-in process really got (after its interpreter and script)."""
    assert machine.process is not None
    argv = Path(f"/proc/{machine.process.pid}/cmdline").read_bytes().decode().split("\0")
    return " ".join([Path(argv[1]).name, *argv[2:]]).strip()


async def start_adopt_stop(plan: Plan, artifacts: Artifacts, port: int) -> dict[str, str]:
    """Start, use, hand over to a new owner (a daemon restart), use, stop through the agent."""
    vm_dir = VmDir.for_name(plan.name)
    first = Machine(plan, artifacts, vm_dir, ignore, bound_to_owner=False)
    first.claim()
    await first.start(cold=True)
    seen = {"hello": await run(first, "echo", "hello from the guest"),
            "page": await page_on(port),
            "console": vm_dir.sockets.console_log.read_text(),
            "argv": " ".join(first.launcher.argv()),
            "ran": ran_argv(first)}
    first.forwards.close()
    await first.release()  # the old daemon is gone; the hypervisor runs on
    second = Machine(plan, artifacts, vm_dir, ignore, bound_to_owner=False)
    second.claim(adopt=True)
    await second.adopt()
    seen["adopted"] = await run(second, "echo", "still here")
    seen["page again"] = await page_on(port)
    assert second.process is not None
    pid = second.process.pid
    await second.stop()
    await second.release()
    seen["gone"] = str(not Path(f"/proc/{pid}").exists() or
                       "zombie" in Path(f"/proc/{pid}/status").read_text().lower())
    return seen


async def stop_by(plan: Plan, artifacts: Artifacts, step: str) -> bool:
    """Start, then stop only by `step`; True if that ended the hypervisor."""
    async with Machine(plan, artifacts, VmDir.for_name(plan.name), ignore) as machine:
        await machine.start(cold=True)
        if step == "kill":
            machine.kill()
            ended = True
        else:
            ended = await getattr(machine.launcher, step)()
        if not ended:
            return False
        async with asyncio.timeout(10):
            await machine.wait()
        return True


def plan_on_kvm(tmp_path: Path, hypervisor: Hypervisor, host: int = 1, guest: int = 2
                ) -> tuple[Plan, Artifacts]:
    """SPEC planned for `hypervisor` as on a KVM host with it installed."""
    spec_dir = write_spec(tmp_path / "spec", SPEC.format(suffix=BINARIES[hypervisor],
                                                         host=host, guest=guest))
    spec = load_spec(spec_dir)
    artifacts = build_artifacts(spec)
    facts = HostFacts(AccelDecision("kvm", "stand-ins"), None, frozenset({hypervisor}))
    return make_plan(spec, facts, artifacts.kernel, hypervisor=hypervisor), artifacts


@pytest.mark.parametrize("hypervisor", list(BINARIES), ids=[h.value for h in BINARIES])
def test_launcher_end_to_end(cove_home: Path, tmp_path: Path, standins: Path,
                             hypervisor: Hypervisor) -> None:
    host = free_port()
    plan, artifacts = plan_on_kvm(tmp_path, hypervisor, host, free_port())

    seen = asyncio.run(start_adopt_stop(plan, artifacts, host))
    # what `cove plan --hypervisor` shows (the launcher's argv, golden-tested) is what ran
    assert seen["ran"] == seen["argv"] == " ".join(render(plan, BootFiles(
        artifacts.kernel.vmlinux, VmDir.for_name(plan.name).initrd, artifacts.root.path),
        VmDir.for_name(plan.name).sockets)["argv"])
    assert seen["hello"] == "hello from the guest"  # exec through the launcher's connector
    assert "Directory listing" in seen["page"]  # -p through the agent tunnel, no user net
    assert f"[stand-in {BINARIES[hypervisor]}]" in seen["console"]  # serial -> console.log
    assert seen["adopted"] == "still here" and "Directory listing" in seen["page again"]
    assert seen["gone"] == "True"
    if hypervisor is Hypervisor.FIRECRACKER:
        assert "--id std-in-firecracker-" in seen["argv"]  # derived: '_' and '.' replaced
    for step, ends in STOPS[hypervisor].items():
        assert asyncio.run(stop_by(plan, artifacts, step)) is ends, step
    assert asyncio.run(stop_by(plan, artifacts, "kill"))


def test_a_missing_binary_is_named_with_how_to_get_it(cove_home: Path, tmp_path: Path) -> None:
    plan, artifacts = plan_on_kvm(tmp_path, Hypervisor.FIRECRACKER)

    async def attempt() -> str:
        async with Machine(plan, artifacts, VmDir.for_name(plan.name), ignore) as machine:
            with pytest.raises(CoveError) as caught:
                await machine.start(cold=True)
            return f"{caught.value.message} {caught.value.hint}"

    os.environ["PATH"], saved = "/usr/bin:/bin", os.environ["PATH"]
    try:
        said = asyncio.run(attempt())
    finally:
        os.environ["PATH"] = saved
    assert "firecracker is not installed" in said and "GitHub releases" in said


def test_doctor_lists_each_hypervisor(standins: Path) -> None:
    import subprocess

    done = subprocess.run([sys.executable, "-m", "cove.cli.main", "doctor"], capture_output=True,
                          text=True, check=False)
    assert "firecracker: Firecracker v1.16.1 (cove's stand-in)" in done.stdout
    assert "kvmtool: kvm tool stand-in" in done.stdout
    if "accelerator: tcg" in done.stdout:  # as here: installed, never chosen by auto
        assert "needs KVM, which this host cannot use: auto will not choose it" in done.stdout
    assert "Traceback" not in done.stderr


def test_an_api_hypervisor_that_dies_at_start_is_reported(cove_home: Path, tmp_path: Path,
                                                          standins: Path) -> None:
    """Cloud Hypervisor's API socket is waited for only while the process lives (and at
    most SOCKET_TIMEOUT): one that exits at once is said so, not waited on forever."""
    broken = standins / "bin" / "cloud-hypervisor"
    broken.write_text("#!/bin/sh\necho 'cloud-hypervisor: cannot open /dev/kvm' >&2\nexit 1\n")
    plan, artifacts = plan_on_kvm(tmp_path, Hypervisor.CLOUD_HYPERVISOR)

    async def attempt() -> str:
        async with Machine(plan, artifacts, VmDir.for_name(plan.name), ignore) as machine:
            async with asyncio.timeout(launch.SOCKET_TIMEOUT / 2):
                with pytest.raises(CoveError) as caught:
                    await machine.start(cold=True)
            return str(caught.value)

    assert "cloud-hypervisor exited before its API socket appeared" in asyncio.run(attempt())


BROKEN_API = '''#!{python}
"""A Cloud Hypervisor whose API answers every call with a 500."""
import sys

from aiohttp import web


async def trouble(_request: web.Request) -> web.Response:
    return web.Response(status=500, text="Server got itself in trouble")

app = web.Application()
app.router.add_route("*", "/{{tail:.*}}", trouble)
web.run_app(app, path=sys.argv[sys.argv.index("--api-socket") + 1].removeprefix("path="),
            print=None)
'''


def test_a_hypervisor_whose_api_fails_is_not_left_running(cove_home: Path, tmp_path: Path,
                                                          standins: Path) -> None:
    """The boot call fails, and so does every graceful stop (power button, shutdown): the
    process is still killed when the Machine is left, never orphaned."""
    broken = standins / "bin" / "cloud-hypervisor"
    broken.write_text(BROKEN_API.format(python=sys.executable))
    plan, artifacts = plan_on_kvm(tmp_path, Hypervisor.CLOUD_HYPERVISOR)

    async def attempt() -> tuple[str, int | None]:
        async with Machine(plan, artifacts, VmDir.for_name(plan.name), ignore) as machine:
            with pytest.raises(CoveError) as caught:
                await machine.start(cold=True)
            process = machine.process
        assert process is not None
        return str(caught.value), process.returncode

    message, code = asyncio.run(attempt())
    assert "refused PUT /api/v1/vm.create: Server got itself in trouble" in message
    assert code is not None  # exited (killed), not left behind
