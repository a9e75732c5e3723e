"""A Cloud Hypervisor API stand-in: vm.create checked against the upstream OpenAPI, and the
VM life cycle (create, boot, power-button) with its real refusals."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from tests.standins.schemas import cloud_hypervisor_validator, problems


async def booted(_config: dict[str, Any]) -> None:
    """What an API-only stand-in does at vm.boot: nothing."""


class CloudHypervisorStandIn:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.state = "none"  # none -> Created -> Running -> Shutdown
        self.config: dict[str, Any] | None = None
        self.on_boot: Callable[[dict[str, Any]], Awaitable[None]] = booted
        self.on_power_button: Callable[[], None] = lambda: None
        self.on_shutdown: Callable[[], None] = lambda: None  # vmm.shutdown: the VMM exits
        self.validator = cloud_hypervisor_validator("VmConfig")
        self.app = web.Application()
        self.app.router.add_put("/api/v1/vm.create", self.create)
        self.app.router.add_put("/api/v1/vm.boot", self.boot)
        self.app.router.add_put("/api/v1/vm.power-button", self.power_button)
        self.app.router.add_get("/api/v1/vm.info", self.info)
        self.app.router.add_put("/api/v1/vmm.shutdown", self.shutdown)

    async def create(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.calls.append(("PUT", request.path, body))
        errors = problems(self.validator, body)
        if errors:
            return web.Response(status=400, text="; ".join(errors))
        if self.state != "none":
            return web.Response(status=400, text="VM already created")
        self.config, self.state = body, "Created"
        return web.Response(status=204)

    async def boot(self, request: web.Request) -> web.Response:
        self.calls.append(("PUT", request.path, None))
        if self.state != "Created":
            return web.Response(status=400, text=f"cannot boot a VM in state {self.state}")
        assert self.config is not None
        await self.on_boot(self.config)
        self.state = "Running"
        return web.Response(status=204)

    async def power_button(self, request: web.Request) -> web.Response:
        self.calls.append(("PUT", request.path, None))
        if self.state != "Running":
            return web.Response(status=400, text="VM is not running")
        self.state = "Shutdown"
        self.on_power_button()
        return web.Response(status=204)

    async def shutdown(self, request: web.Request) -> web.Response:
        self.calls.append(("PUT", request.path, None))
        self.on_shutdown()
        return web.Response(status=204)

    async def info(self, request: web.Request) -> web.Response:
        if self.config is None:
            return web.Response(status=400, text="VM is not created")
        return web.json_response({"config": self.config, "state": self.state})
