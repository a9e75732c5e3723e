"""A Cloud Hypervisor API stand-in: vm.create checked against the upstream OpenAPI, and the
VM life cycle (create, boot, power-button) with its real refusals."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from tests.standins.schemas import cloud_hypervisor_validator, problems


class CloudHypervisorStandIn:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.state = "none"  # none -> Created -> Running -> Shutdown
        self.config: dict[str, Any] | None = None
        self.validator = cloud_hypervisor_validator("VmConfig")
        self.app = web.Application()
        self.app.router.add_put("/api/v1/vm.create", self.create)
        self.app.router.add_put("/api/v1/vm.boot", self.boot)
        self.app.router.add_put("/api/v1/vm.power-button", self.power_button)
        self.app.router.add_get("/api/v1/vm.info", self.info)

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
        self.state = "Running"
        return web.Response(status=204)

    async def power_button(self, request: web.Request) -> web.Response:
        self.calls.append(("PUT", request.path, None))
        if self.state != "Running":
            return web.Response(status=400, text="VM is not running")
        self.state = "Shutdown"
        return web.Response(status=204)

    async def info(self, request: web.Request) -> web.Response:
        if self.config is None:
            return web.Response(status=400, text="VM is not created")
        return web.json_response({"config": self.config, "state": self.state})
