"""A Firecracker API stand-in: the real paths, every body checked against the upstream
swagger, and the real ordering rules (configure before InstanceStart, not after)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from aiohttp import web

from tests.standins.schemas import firecracker_validator, problems

BODIES = {
    "/boot-source": "BootSource", "/machine-config": "MachineConfiguration",
    "/drives/{id}": "Drive", "/network-interfaces/{id}": "NetworkInterface",
    "/vsock": "Vsock", "/logger": "Logger", "/metrics": "Metrics",
    "/actions": "InstanceActionInfo", "/balloon": "Balloon",
}


def fault(message: str) -> web.Response:
    return web.json_response({"fault_message": message}, status=400)


class FirecrackerStandIn:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, Any]] = []
        self.config: dict[str, Any] = {}
        self.started = False
        self.on_ctrl_alt_del: Callable[[], None] = lambda: None  # what the guest then does
        self.validators = {path: firecracker_validator(name) for path, name in BODIES.items()}
        self.app = web.Application()
        for path in BODIES:
            self.app.router.add_put(path, self.put)

    async def put(self, request: web.Request) -> web.Response:
        route = request.match_info.route.resource.canonical  # type: ignore[union-attr]
        try:
            body = await request.json()
        except ValueError:
            return fault("the body is not JSON")
        self.calls.append(("PUT", request.path, body))
        errors = problems(self.validators[route], body)
        if errors:
            return fault("; ".join(errors))
        if route.endswith("{id}"):
            key = "drive_id" if route.startswith("/drives") else "iface_id"
            if body[key] != request.match_info["id"]:
                return fault(f"the path id {request.match_info['id']} differs from {key}")
        if route == "/actions":
            return self.action(body["action_type"])
        if self.started:
            return fault("the microVM is running: it cannot be configured now")
        self.config[request.path] = body
        return web.Response(status=204)

    def action(self, kind: str) -> web.Response:
        if kind == "InstanceStart":
            if "/boot-source" not in self.config:
                return fault("cannot start: no boot source")
            if self.started:
                return fault("the microVM is already running")
            self.started = True
        elif kind == "SendCtrlAltDel":
            if not self.started:
                return fault("the microVM is not running")
            self.on_ctrl_alt_del()
        return web.Response(status=204)
