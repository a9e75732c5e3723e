"""cove's Firecracker and Cloud Hypervisor code paths against stand-ins that speak the real
API and check every body against the upstream spec (the binaries need KVM; not here)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from cove.spec.model import Hypervisor
from cove.vmm import cloud_hypervisor, firecracker
from cove.vmm.rest import ApiError, RestClient
from tests.standins.cloud_hypervisor import CloudHypervisorStandIn
from tests.standins.firecracker import FirecrackerStandIn
from tests.unit.test_backends import FILES, PATHS, plan_for


@asynccontextmanager
async def serving(app: web.Application, socket: Path) -> AsyncIterator[RestClient]:
    runner = web.AppRunner(app)
    await runner.setup()
    await web.UnixSite(runner, str(socket)).start()
    try:
        yield RestClient(socket, "stand-in")
    finally:
        await runner.cleanup()


def config_as_calls(config: dict[str, Any]) -> list[tuple[str, str, Any]]:
    """What Firecracker does with a --config-file: each section as its API call, in the
    order its API wants them, then InstanceStart."""
    calls: list[tuple[str, str, Any]] = [("PUT", f"/{key}", config[key]) for key in
                                         ("logger", "metrics", "boot-source", "machine-config")]
    calls += [("PUT", f"/drives/{d['drive_id']}", d) for d in config["drives"]]
    calls += [("PUT", f"/network-interfaces/{n['iface_id']}", n)
              for n in config["network-interfaces"]]
    calls += [("PUT", "/vsock", config["vsock"]),
              ("PUT", "/actions", {"action_type": "InstanceStart"})]
    return calls


def test_firecracker_configure_start_and_stop(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "minimal", Hypervisor.FIRECRACKER)
    standin = FirecrackerStandIn()

    async def scenario() -> None:
        async with serving(standin.app, tmp_path / "fc.sock") as api:
            await api.run(config_as_calls(firecracker.config_file(plan, FILES, PATHS)))
            assert standin.started
            await api.call(*firecracker.SHUTDOWN_CALL)
            with pytest.raises(ApiError, match="already running"):
                await api.call("PUT", "/actions", {"action_type": "InstanceStart"})
            with pytest.raises(ApiError, match="cannot be configured now"):
                await api.call("PUT", "/machine-config", {"vcpu_count": 2,
                                                          "mem_size_mib": 128})

    asyncio.run(scenario())
    paths = [path for _, path, _ in standin.calls]
    assert paths[:4] == ["/logger", "/metrics", "/boot-source", "/machine-config"]
    assert paths[4:] == ["/drives/cove-root", "/vsock", "/actions", "/actions", "/actions",
                         "/machine-config"]
    assert [body for _, path, body in standin.calls if path == "/actions"] == [
        {"action_type": "InstanceStart"}, {"action_type": "SendCtrlAltDel"},
        {"action_type": "InstanceStart"}]


def test_firecracker_standin_refuses_what_firecracker_refuses(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with serving(FirecrackerStandIn().app, tmp_path / "fc.sock") as api:
            with pytest.raises(ApiError, match="no boot source"):
                await api.call("PUT", "/actions", {"action_type": "InstanceStart"})
            with pytest.raises(ApiError, match="is_root_device"):
                await api.call("PUT", "/drives/root", {"drive_id": "root"})
            with pytest.raises(ApiError, match="differs"):
                await api.call("PUT", "/drives/a", {"drive_id": "b", "is_root_device": False})
            with pytest.raises(ApiError, match="Additional properties"):
                await api.call("PUT", "/vsock", {"guest_cid": 3, "uds_path": "/x", "port": 1})

    asyncio.run(scenario())


def test_cloud_hypervisor_create_boot_power_button(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "storage", Hypervisor.CLOUD_HYPERVISOR)
    standin = CloudHypervisorStandIn()

    async def scenario() -> dict[str, Any]:
        async with serving(standin.app, tmp_path / "ch.sock") as api:
            await api.run(cloud_hypervisor.api_calls(plan, FILES, PATHS))
            info: dict[str, Any] = await api.call("GET", "/api/v1/vm.info")
            await api.run(cloud_hypervisor.SHUTDOWN_CALLS)
            with pytest.raises(ApiError, match="not running"):
                await api.run(cloud_hypervisor.SHUTDOWN_CALLS)
            return info

    info = asyncio.run(scenario())
    assert info["state"] == "Running"
    assert info["config"]["fs"][0]["tag"] == "share0"
    assert info["config"]["memory"]["shared"] is True
    assert standin.state == "Shutdown"
