"""coved: hosts the VMs of one cove home behind a JSON/HTTP API on a unix socket.

VMs outlive it: a new daemon adopts the QEMUs it finds running (see supervisor.py).
Run by `cove daemon`, or started on demand by the CLI; docs/api.yaml documents the API.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any

from aiohttp import web

from cove import __version__
from cove.errors import CoveError
from cove.home import cove_home
from cove.runtime.api import routes
from cove.runtime.journal import Journal
from cove.runtime.state import VmRecord
from cove.runtime.supervisor import VmSupervisor
from cove.tasks import background

log = logging.getLogger("coved")
SOCKET_NAME = "coved.sock"


def peer_uid(request: web.Request) -> tuple[int, int] | None:
    """(pid, uid) of the process at the other end of the unix socket."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    pid, uid, _gid = struct.unpack("3i", data)
    return pid, uid


@web.middleware
async def same_user_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Only our own uid and root may drive the daemon; others are refused and logged."""
    peer = peer_uid(request)
    if peer is None or peer[1] not in (os.getuid(), 0):
        log.warning("refused %s %s from pid %s uid %s", request.method, request.path,
                    *(peer or ("?", "?")))
        return web.json_response({"error": "permission denied: this cove daemon serves "
                                           f"uid {os.getuid()} only"}, status=403)
    try:
        response: web.StreamResponse = await handler(request)
    except CoveError as error:
        return web.json_response({"error": error.message, "hint": error.hint}, status=400)
    return response


class Daemon:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.events = Journal(home / "events.jsonl")
        self.vms: dict[str, VmSupervisor] = {}
        self.started = time.time()

    def vm(self, name: str) -> VmSupervisor:
        if name not in self.vms:
            raise web.HTTPNotFound(text=f'{{"error": "no VM named {name!r}"}}',
                                   content_type="application/json")
        return self.vms[name]

    async def create(self, record: VmRecord) -> VmSupervisor:
        """Boot a new VM; a name is unique per home (checked before any await)."""
        if record.name in self.vms:
            raise CoveError(f"a VM named {record.name!r} already exists",
                            f"stop it with `cove down {record.name}`, or pass --name")
        supervisor = VmSupervisor(record, self.home, self.events)
        self.vms[record.name] = supervisor
        try:
            await supervisor.boot()
        except BaseException:
            del self.vms[record.name]
            raise
        record.save(supervisor.dir.record)
        return supervisor

    async def remove(self, name: str, timeout: float) -> None:
        supervisor = self.vm(name)
        await supervisor.stop(timeout)
        supervisor.dir.record.unlink(missing_ok=True)
        del self.vms[name]

    async def adopt_all(self) -> None:
        """Find the VMs of this home: adopt running ones, apply the policy to dead ones."""
        for path in sorted((self.home / "vms").glob("*/vm.json")):
            try:
                record = VmRecord.load(path)
            except (OSError, ValueError, KeyError) as error:
                log.error("cannot read %s: %s", path, error)
                continue
            self.vms[record.name] = VmSupervisor(record, self.home, self.events)
        # adopt before serving, so the first `ls` after a daemon restart is complete
        await asyncio.gather(*(self.take_over(s) for s in self.vms.values()))

    async def take_over(self, supervisor: VmSupervisor) -> None:
        if supervisor.dir.running_pid() is not None:
            try:
                await supervisor.adopt()
                await supervisor.refresh_services()
                return
            except CoveError as error:
                log.error("%s: cannot adopt: %s", supervisor.name, error)
                supervisor.error = str(error)
        supervisor.state = "exited"
        supervisor.emit("exited", code=None, clean=False, seen="while no daemon ran")
        background(supervisor.apply_policy(clean=False))


def claim_home(home: Path) -> int | None:
    """One daemon per home: hold coved.lock for life. None if another daemon has it."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(home / "coved.lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def serve(home: Path) -> None:
    daemon = Daemon(home)
    app = web.Application(middlewares=[same_user_only])
    app["daemon"] = daemon
    app.add_routes(routes)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    await daemon.adopt_all()
    path = home / SOCKET_NAME
    path.unlink(missing_ok=True)
    old_umask = os.umask(0o177)  # the socket is born 0600: no window where others connect
    try:
        await web.UnixSite(runner, str(path)).start()
    finally:
        os.umask(old_umask)
    log.info("coved %s serving %s (pid %d)", __version__, path, os.getpid())
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("coved exiting; VMs keep running")
    await runner.cleanup()


def main() -> None:
    home = cove_home()
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s coved[%(process)d] %(levelname)s %(message)s")
    if claim_home(home) is None:
        log.info("another daemon serves %s", home)
        return
    asyncio.run(serve(home))


if __name__ == "__main__":
    main()
