"""The daemon's HTTP routes (documented in docs/api.yaml)."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from cove import __version__
from cove.errors import CoveError
from cove.runtime.journal import Journal, last, read_entries
from cove.runtime.machine import tail
from cove.runtime.state import VmRecord
from cove.runtime.vmdir import VmDir

if TYPE_CHECKING:
    from cove.runtime.daemon import Daemon
    from cove.runtime.supervisor import VmSupervisor

routes = web.RouteTableDef()
NDJSON = "application/x-ndjson"


def the_daemon(request: web.Request) -> Daemon:
    daemon: Daemon = request.app["daemon"]
    return daemon


def running_vm(request: web.Request) -> VmSupervisor:
    supervisor = the_daemon(request).vm(request.match_info["name"])
    if supervisor.machine is None or supervisor.machine.agent is None:
        raise CoveError(f"{supervisor.name} is {supervisor.state}, not running",
                        f"start it with `cove up` or `cove restart {supervisor.name}`")
    return supervisor


def query_int(request: web.Request, key: str, default: int | None) -> int | None:
    value = request.query.get(key)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError:
        raise CoveError(f"query parameter {key}={value!r} is not a number") from None


@routes.get("/v1/info")
async def info(request: web.Request) -> web.Response:
    daemon = the_daemon(request)
    return web.json_response({"version": __version__, "home": str(daemon.home),
                              "vms": len(daemon.vms), "since": daemon.started})


@routes.get("/v1/vms")
async def list_vms(request: web.Request) -> web.Response:
    return web.json_response([s.status() for s in the_daemon(request).vms.values()])


@routes.post("/v1/vms")
async def create_vm(request: web.Request) -> web.Response:
    try:
        record = VmRecord.from_json((await request.json())["record"])
    except (ValueError, KeyError, TypeError) as error:
        raise CoveError(f"bad VM record: {error}") from None
    supervisor = await the_daemon(request).create(record)
    return web.json_response(supervisor.status(), status=201)


@routes.get("/v1/vms/{name}")
async def show_vm(request: web.Request) -> web.Response:
    supervisor = the_daemon(request).vm(request.match_info["name"])
    await supervisor.refresh_services()
    return web.json_response(supervisor.status())


@routes.post("/v1/vms/{name}/down")
async def down_vm(request: web.Request) -> web.Response:
    body = await request.json() if request.can_read_body else {}
    await the_daemon(request).remove(request.match_info["name"],
                                     float(body.get("timeout", 20.0)))
    return web.json_response({"ok": True})


@routes.post("/v1/vms/{name}/restart")
async def restart_vm(request: web.Request) -> web.Response:
    supervisor = the_daemon(request).vm(request.match_info["name"])
    body = await request.json() if request.can_read_body else {}
    await supervisor.stop(float(body.get("timeout", 20.0)))
    supervisor.stopping = False
    supervisor.logs = Journal(supervisor.dir.logs / "services.log")
    await supervisor.boot()
    return web.json_response(supervisor.status())


async def stream_entries(request: web.Request, backlog: list[dict[str, Any]],
                         journal: Journal | None, match: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    await response.prepare(request)
    for entry in backlog:
        await response.write((json.dumps(entry) + "\n").encode())
    if journal is None or request.query.get("follow") not in ("1", "true"):
        await response.write_eof()
        return response
    with journal.subscribe() as queue, contextlib.suppress(ConnectionError):
        while True:
            entry = await queue.get()
            if all(entry.get(k) == v for k, v in match.items() if v is not None):
                await response.write((json.dumps(entry) + "\n").encode())
    return response


@routes.get("/v1/vms/{name}/forwards")
async def list_forwards(request: web.Request) -> web.Response:
    supervisor = running_vm(request)
    assert supervisor.machine is not None
    return web.json_response([f.to_json() for f in supervisor.machine.forwards.list()])


@routes.post("/v1/vms/{name}/forwards")
async def add_forward(request: web.Request) -> web.Response:
    body = await request.json()
    supervisor = running_vm(request)
    forward = await supervisor.add_forward(str(body.get("port")), bool(body.get("tunnel")))
    return web.json_response(forward, status=201)


@routes.delete("/v1/vms/{name}/forwards/{host}")
async def remove_forward(request: web.Request) -> web.Response:
    supervisor = running_vm(request)
    host = request.match_info["host"]
    if not host.isdigit():
        raise CoveError(f"{host!r} is not a port number")
    return web.json_response(await supervisor.remove_forward(int(host)))


@routes.get("/v1/vms/{name}/logs")
async def vm_logs(request: web.Request) -> web.StreamResponse:
    daemon, name = the_daemon(request), request.match_info["name"]
    count = query_int(request, "n", None)
    match = {"svc": request.query.get("service")}
    supervisor = daemon.vms.get(name)
    if supervisor is not None:
        return await stream_entries(request, supervisor.logs.tail(count, **match),
                                    supervisor.logs, match)
    logs = VmDir.for_name(name, daemon.home).logs
    if not logs.is_dir():
        daemon.vm(name)  # raises 404
    entries = [e for e in read_entries(logs / "services.log.1", logs / "services.log")
               if match["svc"] in (None, e.get("svc"))]
    return await stream_entries(request, last(entries, count), None, match)


@routes.get("/v1/vms/{name}/console-log")
async def console_log(request: web.Request) -> web.Response:
    daemon, name = the_daemon(request), request.match_info["name"]
    path = VmDir.for_name(name, daemon.home).sockets.console_log
    if not path.exists():
        daemon.vm(name)
    return web.Response(text=tail(path, query_int(request, "n", 100) or 100) + "\n")


@routes.get("/v1/events")
async def events(request: web.Request) -> web.StreamResponse:
    daemon = the_daemon(request)
    match = {"vm": request.query.get("vm")}
    backlog = daemon.events.tail(query_int(request, "n", 100), **match)
    return await stream_entries(request, backlog, daemon.events, match)


@routes.get("/v1/vms/{name}/exec")
async def exec_ws(request: web.Request) -> web.WebSocketResponse:
    """First message: {argv, env, cwd, user, tty, stdin, rows, cols}; then proto frames."""
    supervisor = running_vm(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    args = await ws.receive_json()
    agent = supervisor.machine.agent  # type: ignore[union-attr]
    assert agent is not None
    try:
        channel, stream = await agent.open_exec(**{k: args.get(k) for k in (
            "argv", "env", "cwd", "user", "tty", "stdin", "rows", "cols")})
    except CoveError as error:
        await ws.send_json({"t": "exit", "code": 127, "error": error.message})
        await ws.close()
        return ws
    pump = asyncio.create_task(forward_input(ws, agent.send, channel))
    try:
        while True:
            frame = await stream.queue.get()
            await ws.send_json(frame)
            if frame.get("t") == "exit":
                break
    finally:
        pump.cancel()
        agent.streams.pop(channel, None)
        await ws.close()
    return ws


async def forward_input(ws: web.WebSocketResponse, send: Any, channel: int) -> None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            frame = json.loads(message.data)
            if frame.get("t") in ("in", "resize"):
                send({**frame, "ch": channel})


@routes.get("/v1/vms/{name}/console")
async def console_ws(request: web.Request) -> web.WebSocketResponse:
    supervisor = running_vm(request)
    path = supervisor.dir.sockets.console
    assert path is not None
    try:
        reader, writer = await asyncio.open_unix_connection(str(path))
    except OSError as error:
        raise CoveError(f"cannot attach to {supervisor.name}'s console: {error}",
                        "is another `cove console` attached?") from None
    ws = web.WebSocketResponse()
    await ws.prepare(request)

    async def guest_to_client() -> None:
        while data := await reader.read(4096):
            await ws.send_bytes(data)
        await ws.close()

    copier = asyncio.create_task(guest_to_client())
    async for message in ws:
        if message.type == WSMsgType.BINARY:
            writer.write(message.data)
    copier.cancel()
    writer.close()
    return ws
