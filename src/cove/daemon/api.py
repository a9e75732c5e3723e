"""The daemon's HTTP routes (documented in docs/api.yaml)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from cove.daemon.intake import check_record
from cove.daemon.status import SETTLED_WAIT_MAX, vm_settled
from cove.errors import CoveError
from cove.guest import proto
from cove.host.journal import FOLLOW_BACKLOG, LAGGED, Journal, last_entries, last_lines
from cove.host.local_http import WSMsgType, web
from cove.version import __version__
from cove.vm import lifecycle
from cove.vm.agent_client import AgentClient
from cove.vm.record import VmRecord
from cove.vm.snapshots import Snapshot, get_snapshot, list_snapshots, remove_snapshot
from cove.vm.vmdir import VmDir

if TYPE_CHECKING:
    from cove.daemon.server import Daemon
    from cove.vm.supervisor import VmSupervisor

routes = web.RouteTableDef()
NDJSON = "application/x-ndjson"


def the_daemon(request: web.Request) -> Daemon:
    daemon: Daemon = request.app["daemon"]
    return daemon


def running_vm(request: web.Request) -> VmSupervisor:
    """The VM, while its hypervisor runs (forwards, the console)."""
    supervisor = the_daemon(request).vm(request.match_info["name"])
    if supervisor.machine is None or supervisor.machine.agent is None:
        raise CoveError(f"{supervisor.name} is {supervisor.state}, not running",
                        f"start it with `cove up` or `cove restart {supervisor.name}`")
    return supervisor


def answering_vm(request: web.Request) -> VmSupervisor:
    """The VM, if its agent can answer now: not paused (its vCPUs would hold the request),
    not broken (its guest broke the protocol), not booting or stopping."""
    supervisor = the_daemon(request).vm(request.match_info["name"])
    if supervisor.state == "paused":
        raise CoveError(f"{supervisor.name} is paused", f"`cove resume {supervisor.name}` first")
    if supervisor.state == "broken":
        raise CoveError(f"{supervisor.name} is broken: {supervisor.error}",
                        f"`cove restart {supervisor.name}` boots it again, or `cove down`")
    if supervisor.state != "running" or supervisor.machine is None \
            or supervisor.machine.agent is None:
        raise CoveError(f"{supervisor.name} is {supervisor.state}, not running",
                        f"start it with `cove up` or `cove restart {supervisor.name}`")
    return supervisor


def check_query(request: web.Request, allowed: tuple[str, ...]) -> None:
    """Unknown query parameters are refused, not ignored: a typo should not pass silently."""
    for key in request.query:
        if key not in allowed:
            raise CoveError(f"unknown query parameter {key!r}",
                            f"this route takes: {', '.join(allowed) or 'none'}")


def query_int(request: web.Request, key: str, default: int | None) -> int | None:
    value = request.query.get(key)
    if value is None:
        return default
    if not value.isascii() or not value.isdigit() or len(value) > 9:
        raise CoveError(f"query parameter {key}={value!r} is not a count",
                        f"give a whole number from 0, e.g. {key}=20")
    return int(value)


def query_seconds(request: web.Request, key: str, most: float) -> float | None:
    value = request.query.get(key)
    if value is None:
        return None
    try:
        seconds = float(value) if value.isascii() and len(value) <= 12 else -1.0
    except ValueError:
        seconds = -1.0
    if not 0 <= seconds <= most:  # (also refuses nan)
        raise CoveError(f"query parameter {key}={value!r} is not a number of seconds",
                        f"give one from 0 to {most:g}, e.g. {key}=10")
    return seconds


def query_follow(request: web.Request) -> bool:
    value = request.query.get("follow", "0")
    if value not in ("0", "1", "true", "false"):
        raise CoveError(f"query parameter follow={value!r} is not 0 or 1")
    return value in ("1", "true")


async def json_body(request: web.Request, required: bool = False) -> dict[str, Any]:
    """The request's JSON object; anything else is a 400 that says so."""
    if not request.can_read_body:
        if required:
            raise CoveError("this request needs a JSON body")
        return {}
    try:
        body = await request.json()
    except ValueError as error:
        raise CoveError(f"the body is not JSON: {error}") from None
    if not isinstance(body, dict):
        raise CoveError("the body must be a JSON object")
    return body


def body_timeout(body: dict[str, Any]) -> float:
    value = body.get("timeout", 20.0)
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 3600:
        raise CoveError(f"timeout {value!r} is not a number of seconds from 0 to 3600")
    return float(value)


@routes.get("/v1/info")
async def info(request: web.Request) -> web.Response:
    daemon = the_daemon(request)
    return web.json_response({"version": __version__, "home": str(daemon.home),
                              "vms": len(daemon.vms), "since": daemon.started})


@routes.get("/v1/vms")
async def list_vms(request: web.Request) -> web.Response:
    """(`?autostarted=1`: once the enabled VMs' start has settled; see after_autostart.)"""
    check_query(request, ("autostarted",))
    daemon = the_daemon(request)
    return web.json_response([s.status() for s in daemon.vms.values()]
                             + daemon.broken_status())


@routes.post("/v1/vms")
async def create_vm(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    try:
        record = VmRecord.from_json(body["record"])
    except Exception as error:  # any malformed record: say what, never a 500
        raise CoveError(f"bad VM record: {type(error).__name__}: {error}",
                        "records are made by `cove up`; see docs/api.yaml") from None
    check_record(record)
    cold = body.get("cold", False)
    if not isinstance(cold, bool):
        raise CoveError('"cold" must be true or false')
    supervisor = await the_daemon(request).create(record, cold=cold)
    return web.json_response(supervisor.status(), status=201)


@routes.get("/v1/vms/{name}")
async def show_vm(request: web.Request) -> web.Response:
    check_query(request, ("settled",))
    daemon, name = the_daemon(request), request.match_info["name"]
    wait = query_seconds(request, "settled", SETTLED_WAIT_MAX)
    if wait is None:
        await daemon.vm(name).refresh_services()
    else:
        await until_settled(daemon, name, wait)
    return web.json_response(daemon.vm(name).status())


async def until_settled(daemon: Daemon, name: str, wait: float) -> None:
    """Return once `name` has settled (`vm_settled`) or `wait` seconds have passed. Its
    events keep its status current, so the guest is not asked while services start."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(wait):
            while not await settled_or_lagged(daemon, name):
                pass  # the follower fell behind (a flood of events): follow again


async def settled_or_lagged(daemon: Daemon, name: str) -> bool:
    """True once `name` has settled; False if the event follower was cut off first."""
    with daemon.events.subscribe() as queue:  # before the look: no event falls between
        while not vm_settled(daemon.vm(name).status()):
            while (entry := await queue.get()).get("vm") != name:
                if entry is LAGGED:
                    return False
    return True


@routes.post("/v1/vms/{name}/down")
async def down_vm(request: web.Request) -> web.Response:
    timeout = body_timeout(await json_body(request))
    await the_daemon(request).remove(request.match_info["name"], timeout)
    return web.json_response({"ok": True})


@routes.post("/v1/vms/{name}/ping")
async def ping_vm(request: web.Request) -> web.Response:
    """One round trip to the guest agent: the floor under every exec."""
    agent = answering_vm(request).machine.agent  # type: ignore[union-attr]
    assert agent is not None
    reply = await agent.request("ping")
    return web.json_response({"uptime": reply.get("uptime")})


@routes.post("/v1/vms/{name}/restart")
async def restart_vm(request: web.Request) -> web.Response:
    supervisor = the_daemon(request).vm(request.match_info["name"])
    timeout = body_timeout(await json_body(request))
    async with supervisor.operation:
        await supervisor.restart(timeout)
    return web.json_response(supervisor.status())


STATE_CHANGES: dict[str, Callable[[VmSupervisor], Awaitable[object]]] = {
    "pause": lifecycle.pause, "resume": lifecycle.resume, "suspend": lifecycle.suspend}


async def change_state(request: web.Request) -> web.Response:
    """pause, resume or suspend (the last path part says which)."""
    supervisor = the_daemon(request).vm(request.match_info["name"])
    async with supervisor.operation:
        await STATE_CHANGES[request.path.rsplit("/", 1)[-1]](supervisor)
    return web.json_response(supervisor.status())


for change in STATE_CHANGES:
    routes.post(f"/v1/vms/{{name}}/{change}")(change_state)


def clone_request(body: dict[str, Any], default_prefix: str | None
                  ) -> tuple[int, str | None, tuple[str, ...]]:
    """(count, prefix, ports) of a clone request, checked."""
    count, prefix, ports = body.get("count", 1), body.get("prefix", default_prefix), \
        body.get("ports", [])
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 64:
        raise CoveError(f"count {count!r} is not a number of clones from 1 to 64")
    if not isinstance(prefix, str | None) or not isinstance(ports, list) or \
            not all(isinstance(p, str) for p in ports):
        raise CoveError('"prefix" must be a string and "ports" a list of strings')
    return count, prefix, tuple(ports)


@routes.post("/v1/vms/{name}/clone")
async def clone_vm(request: web.Request) -> web.Response:
    name = request.match_info["name"]
    count, prefix, ports = clone_request(await json_body(request), f"{name}-")
    assert prefix is not None
    clones = await the_daemon(request).clone(name, count, prefix, ports)
    return web.json_response([c.status() for c in clones], status=201)


@routes.post("/v1/vms/{name}/snapshot")
async def save_snapshot_route(request: web.Request) -> web.Response:
    await json_body(request)
    snapshot = await the_daemon(request).save_snapshot(request.match_info["name"])
    return web.json_response(snapshot_json(snapshot, None), status=201)


@routes.post("/v1/snapshots/{id}/clone")
async def clone_snapshot_route(request: web.Request) -> web.Response:
    count, prefix, ports = clone_request(await json_body(request), None)
    clones = await the_daemon(request).clone_snapshot(request.match_info["id"], count, prefix,
                                                      ports)
    return web.json_response([c.status() for c in clones], status=201)


@routes.get("/v1/snapshots")
async def list_snapshots_route(request: web.Request) -> web.Response:
    daemon = the_daemon(request)
    check_query(request, ())
    found = await asyncio.to_thread(list_snapshots, daemon.home)
    users = {s.record.snapshot: s.name for s in daemon.vms.values() if s.record.snapshot}
    return web.json_response([snapshot_json(s, users.get(s.id)) for s in found])


@routes.delete("/v1/snapshots/{id}")
async def remove_snapshot_route(request: web.Request) -> web.Response:
    daemon = the_daemon(request)
    async with daemon.snapshot_lock(request.match_info["id"]):
        snapshot = await asyncio.to_thread(get_snapshot, daemon.home, request.match_info["id"])
        users = [s.name for s in daemon.vms.values() if s.record.snapshot == snapshot.id]
        if users:
            raise CoveError(f"snapshot {snapshot.id} is needed by {', '.join(users)}",
                            f"`cove down {users[0]}` first")
        await asyncio.to_thread(remove_snapshot, snapshot)
    return web.json_response(snapshot_json(snapshot, None))


def snapshot_json(snapshot: Snapshot, used_by: str | None) -> dict[str, Any]:
    return {"id": snapshot.id, "kind": snapshot.kind, "vm": snapshot.vm, "key": snapshot.key,
            "created": snapshot.created, "size": snapshot.size,
            "memory_mib": snapshot.memory_mib, "used_by": used_by}


async def stream_entries(request: web.Request, backlog: list[dict[str, Any]],
                         journal: Journal | None, match: dict[str, Any]) -> web.StreamResponse:
    response = web.StreamResponse(headers={"Content-Type": NDJSON})
    follow = query_follow(request)
    await response.prepare(request)
    for entry in backlog:
        await response.write((json.dumps(entry) + "\n").encode())
    if journal is None or not follow:
        await response.write_eof()
        return response
    with journal.subscribe() as queue, contextlib.suppress(ConnectionError):
        while (entry := await queue.get()) is not LAGGED:
            if all(entry.get(k) == v for k, v in match.items() if v is not None):
                await response.write((json.dumps(entry) + "\n").encode())
        await response.write((json.dumps(lagged_notice()) + "\n").encode())
    return response


def lagged_notice() -> dict[str, Any]:
    """What a follower that fell FOLLOW_BACKLOG entries behind gets last, in the shape of a
    log line (and of an event: kind)."""
    return {"ts": time.time(), "svc": "cove", "fd": 2, "kind": "follower-lagged",
            "text": f"this follower fell over {FOLLOW_BACKLOG} entries behind and was cut "
                    "off; follow again to go on"}


@routes.get("/v1/vms/{name}/forwards")
async def list_forwards(request: web.Request) -> web.Response:
    supervisor = running_vm(request)
    assert supervisor.machine is not None
    return web.json_response([f.to_json() for f in supervisor.machine.forwards.list()])


@routes.post("/v1/vms/{name}/forwards")
async def add_forward(request: web.Request) -> web.Response:
    body = await json_body(request, required=True)
    port, tunnel = body.get("port"), body.get("tunnel", False)
    if not isinstance(port, str) or not isinstance(tunnel, bool):
        raise CoveError('the body needs "port" (a string like "9090:8080") and optionally '
                        '"tunnel" (true or false)')
    supervisor = running_vm(request)
    forward = await supervisor.add_forward(port, tunnel)
    return web.json_response(forward, status=201)


@routes.delete("/v1/vms/{name}/forwards/{host}")
async def remove_forward(request: web.Request) -> web.Response:
    supervisor = running_vm(request)
    host = request.match_info["host"]
    if not host.isascii() or not host.isdigit() or not 1 <= int(host[:6]) <= 65535:
        raise CoveError(f"{host!r} is not a port number")
    return web.json_response(await supervisor.remove_forward(int(host)))


@routes.get("/v1/vms/{name}/logs")
async def vm_logs(request: web.Request) -> web.StreamResponse:
    daemon, name = the_daemon(request), request.match_info["name"]
    check_query(request, ("n", "follow", "service"))
    count = query_int(request, "n", None)
    query_follow(request)
    match = {"svc": request.query.get("service")}
    supervisor = daemon.vms.get(name)
    if supervisor is not None:
        backlog = await asyncio.to_thread(supervisor.logs.tail, count, **match)
        return await stream_entries(request, backlog, supervisor.logs, match)
    logs = VmDir.for_name(name, daemon.home).logs
    if not logs.is_dir():
        daemon.vm(name)  # raises 404
    entries = await asyncio.to_thread(last_entries, (logs / "services.log",
                                                     logs / "services.log.1"), count, match)
    return await stream_entries(request, entries, None, match)


@routes.get("/v1/vms/{name}/console-log")
async def console_log(request: web.Request) -> web.Response:
    daemon, name = the_daemon(request), request.match_info["name"]
    check_query(request, ("n",))
    count = query_int(request, "n", 100)
    path = VmDir.for_name(name, daemon.home).sockets.console_log
    if not path.exists():
        daemon.vm(name)
    lines = await asyncio.to_thread(last_lines, path, count or 100)
    return web.Response(text="\n".join(lines) + "\n")


@routes.get("/v1/events")
async def events(request: web.Request) -> web.StreamResponse:
    daemon = the_daemon(request)
    check_query(request, ("n", "follow", "vm"))
    query_follow(request)
    match = {"vm": request.query.get("vm")}
    backlog = await asyncio.to_thread(daemon.events.tail, query_int(request, "n", 100),
                                      **match)
    return await stream_entries(request, backlog, daemon.events, match)


@routes.get("/v1/vms/{name}/exec")
async def exec_ws(request: web.Request) -> web.WebSocketResponse:
    """First message: {argv, env, cwd, user, tty, stdin, rows, cols}; then proto frames."""
    supervisor = answering_vm(request)
    ws = web.WebSocketResponse()
    await ws.prepare(request)
    try:
        args = await ws.receive_json()
        if not isinstance(args, dict):
            raise ValueError("the first message must be a JSON object")
    except (ValueError, TypeError) as error:
        await ws.send_json({"t": "exit", "code": 127, "error": f"bad exec request: {error}"})
        await ws.close()
        return ws
    agent = supervisor.machine.agent  # type: ignore[union-attr]
    assert agent is not None
    try:
        channel, stream = await agent.open_exec(**{k: args.get(k) for k in (
            "argv", "env", "cwd", "user", "tty", "stdin", "rows", "cols")})
    except CoveError as error:
        await ws.send_json({"t": "exit", "code": 127, "error": error.message})
        await ws.close()
        return ws
    pump = asyncio.create_task(forward_input(ws, agent, channel))
    activity = supervisor.machine.activity  # type: ignore[union-attr]
    activity.opened()  # an exec session keeps an idle-suspending VM up
    ended = False
    try:
        while not ended:
            frame = await stream.queue.get()
            ended = frame.get("t") == "exit"
            await ws.send_json(for_client(frame))
    finally:
        activity.closed()
        pump.cancel()
        if not ended:  # the client went first: its command goes too
            with contextlib.suppress(CoveError):
                agent.send({"t": "kill", "ch": channel})
        agent.close_stream(channel)
        await ws.close()
    return ws


def for_client(frame: dict[str, Any]) -> dict[str, Any]:
    """An agent frame as the exec WebSocket carries it: JSON, bytes base64-encoded."""
    if "raw" not in frame:
        return frame
    return {**{k: v for k, v in frame.items() if k != "raw"}, "data": proto.b64(frame["raw"])}


async def forward_input(ws: web.WebSocketResponse, agent: AgentClient, channel: int) -> None:
    async for message in ws:
        if message.type == WSMsgType.TEXT:
            try:
                frame = json.loads(message.data)
            except ValueError:
                continue  # not a frame: nothing to pass on
            if not isinstance(frame, dict) or frame.get("t") not in ("in", "resize", "kill"):
                continue
            if frame["t"] == "in":  # the bytes as a data frame where the agent reads them
                try:
                    data = proto.payload(frame)
                except ValueError:
                    continue  # not base64: nothing to pass on
                agent.send_input(channel, data)
                if frame.get("eof"):
                    agent.send({"t": "in", "ch": channel, "eof": True})
                continue
            agent.send({**frame, "ch": channel})


@routes.get("/v1/vms/{name}/console")
async def console_ws(request: web.Request) -> web.WebSocketResponse:
    supervisor = running_vm(request)
    path = supervisor.dir.sockets.console
    assert supervisor.machine is not None  # (running_vm)
    launcher = supervisor.machine.launcher
    if path is None or not launcher.attachable_console:
        raise CoveError(f"{supervisor.name} runs on {launcher.plan.hypervisor}, whose serial "
                        "console cove cannot attach to: it only goes to the console log",
                        f"read it with `cove logs --console {supervisor.name}`, or get a shell "
                        f"with `cove exec -t {supervisor.name} -- sh`")
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
