"""The Machine API (what the daemon will host) against a real guest: restart policies."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

import pytest

from cove.image.build import build_artifacts
from cove.plan.accel import decide_accel, host_tsc_khz
from cove.plan.vmplan import HostFacts, make_plan
from cove.spec import load_spec
from cove.vm.agent_client import AgentError, greeted
from cove.vm.frames import Frame
from cove.vm.machine import Machine
from cove.vm.vmdir import VmDir
from cove.vmm.vsock import unix_connector
from tests.vm.conftest import HELLO, write_spec

pytestmark = pytest.mark.vm

POLICIES = '''
name = "policies"
packages = ["python3", "curl"]

[services.flaky]
command = "echo boom; exit 3"
restart = "on-failure"

[services.once]
command = "exit 3"
restart = "never"

[services.done]
command = "echo finished"
restart = "on-failure"

[services.always]
command = "exit 0"
restart = "always"
'''


async def boot_and_watch(spec_dir: Path, until: Any, timeout: float
                         ) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    spec = load_spec(spec_dir)
    artifacts = build_artifacts(spec)
    plan = make_plan(spec, HostFacts(decide_accel(spec.accel), host_tsc_khz()),
                     artifacts.kernel)
    frames: list[dict[str, Any]] = []
    changed = asyncio.Event()

    def on_frame(frame: dict[str, Any]) -> None:
        frames.append(frame)
        changed.set()

    async with Machine(plan, artifacts, VmDir.for_name(plan.name), on_frame) as machine:
        await machine.start()
        async with asyncio.timeout(timeout):
            while not until(frames):
                changed.clear()
                await changed.wait()
        assert machine.agent is not None
        status = await machine.agent.request("status")
    return frames, status


def ignore(_frame: Frame) -> None:
    """Frames a test does not look at."""


def events(frames: list[dict[str, Any]], kind: str, svc: str) -> list[dict[str, Any]]:
    return [f for f in frames if f.get("t") == "event" and f.get("kind") == kind
            and f.get("svc") == svc]


def test_restart_policies(cove_home: Path, tmp_path: Path) -> None:
    spec_dir = write_spec(tmp_path / "policies", POLICIES)

    def enough(frames: list[dict[str, Any]]) -> bool:
        return len(events(frames, "started", "flaky")) >= 3 and \
            len(events(frames, "started", "always")) >= 2

    frames, status = asyncio.run(boot_and_watch(spec_dir, enough, 60))
    assert len(events(frames, "restarting", "flaky")) >= 2
    delays = [e["delay"] for e in events(frames, "restarting", "flaky")]
    assert delays[1] > delays[0]  # backoff grows
    assert [e["code"] for e in events(frames, "exited", "once")] == [3]
    assert events(frames, "restarting", "once") == []
    assert events(frames, "restarting", "done") == []
    assert any(f.get("svc") == "flaky" and f.get("t") == "log" for f in frames)
    services = status["services"]
    assert services["once"]["state"] == "failed"
    assert services["done"]["state"] == "exited"
    assert services["flaky"]["restarts"] >= 2


def test_guest_refuses_a_host_without_this_boots_token(cove_home: Path, tmp_path: Path) -> None:
    """Under QEMU: the agent in a real guest refuses a hello without the per-boot token
    (the initrd carried it; the host keeps it in run/agent.token), then serves the owner."""
    spec_dir = write_spec(tmp_path / "guarded", 'name = "guarded"\npackages = ["python3"]\n'
                          'network = "none"\n')

    async def scenario() -> None:
        spec = load_spec(spec_dir)
        artifacts = build_artifacts(spec)
        plan = make_plan(spec, HostFacts(decide_accel(spec.accel), host_tsc_khz()),
                         artifacts.kernel)
        vm_dir = VmDir.for_name(plan.name)
        async with Machine(plan, artifacts, vm_dir, lambda _frame: None) as machine:
            await machine.start()
            assert machine.agent is not None
            await machine.agent.close()  # QEMU's socket serves one host at a time
            token = vm_dir.token.read_text()
            assert len(token) == 32 and vm_dir.token.stat().st_mode & 0o777 == 0o600
            # greeted() as the daemon connects: QEMU may hand a new connection the tail of
            # a frame meant for the last one (docs in greeted), and then it greets again
            connector = unix_connector(vm_dir.sockets.agent)
            for wrong in ("", token[:-1] + "0" if token[-1] != "0" else token[:-1] + "1"):
                with pytest.raises(AgentError, match="refused this connection"):
                    await greeted(connector, ignore, wrong, 20)
            owner = await greeted(connector, ignore, token, 20)
            assert (await owner.request("ping"))["ok"]
            machine.agent = owner

    asyncio.run(scenario())


def test_an_unchanged_spec_takes_its_artifacts_from_the_stamp(
        cove_home: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`up` and `run` of a spec built before read the last build's record: nothing is
    hashed, parsed or built (cove_home built hello with `cove build`)."""
    from cove.image import build

    spec = load_spec(HELLO)
    first = build.build_artifacts(spec)

    def no_build(*_args: object) -> None:
        raise AssertionError("built again although nothing changed")

    monkeypatch.setattr(build, "build_fresh", no_build)
    assert build.build_artifacts(spec) == first
    assert first.initramfs.exists() and first.root.path.exists()


def test_late_modules_wait_for_the_first_health_verdict_and_the_power_button_stops_it(
        cove_home: Path, tmp_path: Path) -> None:
    """The power button's and the balloon's modules are not loaded before the root: /init's
    background half loads them once the agent has answered and every health check has a
    first verdict (not while a service starts), and tells the agent, which then watches the
    new input device: QEMU's power button stops the guest."""
    spec_dir = write_spec(tmp_path / "late", 'name = "late"\npackages = ["python3"]\n'
                          'network = "none"\n[services.slow]\ncommand = "sleep 1000"\n'
                          '[services.slow.health]\ncommand = "test -e /tmp/ready"\n'
                          'interval = 1\nstart_period = 600\n')
    wait_for_modules = ("for i in $(seq 100); do [ \"$(grep -c -e '^evdev ' -e '^button ' "
                        "-e '^virtio_balloon ' /proc/modules)\" = 3 ] && break; sleep 0.1; "
                        "done; cut -d' ' -f1 /proc/modules")

    async def scenario() -> tuple[str, str, float, str]:
        spec = load_spec(spec_dir)
        artifacts = build_artifacts(spec)
        plan = make_plan(spec, HostFacts(decide_accel(spec.accel), host_tsc_khz()),
                         artifacts.kernel)
        assert {"button", "evdev", "virtio_balloon"} <= set(plan.modules)
        vm_dir = VmDir.for_name(plan.name)
        async with Machine(plan, artifacts, vm_dir, ignore) as machine:
            await machine.start(cold=True)
            before: list[bytes] = []
            await machine.exec(["sh", "-c", "sleep 1; cut -d' ' -f1 /proc/modules; "
                                "touch /tmp/ready"], lambda _fd, data: before.append(data))
            output: list[bytes] = []
            await machine.exec(["sh", "-c", wait_for_modules],
                               lambda _fd, data: output.append(data))
            await asyncio.sleep(0.5)  # the signal after the last module reaches the agent
            assert machine.process is not None
            began = time.monotonic()
            assert await machine.launcher.power_button()
            await asyncio.wait_for(machine.process.wait(), 30)
            return (b"".join(before).decode(), b"".join(output).decode(),
                    time.monotonic() - began,
                    vm_dir.sockets.console_log.read_text(errors="replace"))

    starting, modules, stopped_in, console = asyncio.run(scenario())
    assert not {"evdev", "button", "virtio_balloon"} & set(starting.split()), starting
    assert {"evdev", "button", "virtio_balloon"} <= set(modules.split()), modules
    assert "erofs" not in modules.split()  # only a Nix store image needs it
    assert "power button pressed" in console, console[-2000:]
    assert stopped_in < 20
