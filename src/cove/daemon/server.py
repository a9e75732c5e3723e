"""coved: hosts the VMs of one cove home behind a JSON/HTTP API on a unix socket.

VMs outlive it: a new daemon adopts the QEMUs it finds running (see supervisor.py).
Run by `cove daemon`, or started on demand by the CLI; docs/api.yaml documents the API.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import fcntl
import logging
import os
import signal
import socket
import struct
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

from cove.daemon.api import routes
from cove.daemon.autostart import start_enabled
from cove.daemon.status import AUTOSTART_HEADER
from cove.errors import CoveError, VMNotFound
from cove.host.fsutil import write_json
from cove.host.home import Home, prepare_home
from cove.host.journal import Journal
from cove.host.local_http import web
from cove.host.tasks import background
from cove.net.segment import Segments
from cove.spec.model import Restart
from cove.version import __version__
from cove.vm.lifecycle import clone_names, clone_records, save_for_clones
from cove.vm.machine import BOOT_TIMEOUT
from cove.vm.memory_image import MemoryImage, can_share_memory, shared_memory
from cove.vm.record import VmRecord
from cove.vm.snapshots import (
    KEPT,
    RECORD,
    Snapshot,
    get_snapshot,
    reap_leftovers,
    remove_snapshot,
    snapshots_dir,
)
from cove.vm.supervisor import VmSupervisor
from cove.vm.vmdir import VmDir

log = logging.getLogger("coved")
AUTOSTART_WAIT = 300.0  # seconds a command waits for the enabled VMs' start, at most
ADOPT_TIMEOUT = 5.0


class Peer(NamedTuple):
    pid: int
    uid: int
    gid: int


def peer_of(request: web.Request) -> Peer | None:
    """Who is at the other end of the unix socket (SO_PEERCRED)."""
    sock = request.transport.get_extra_info("socket") if request.transport else None
    if sock is None:
        return None
    data = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    return Peer(*struct.unpack("3i", data))


@web.middleware
async def same_user_only(request: web.Request, handler: Any) -> web.StreamResponse:
    """Only our own uid and root may drive the daemon; others are refused and logged."""
    peer = peer_of(request)
    if peer is None or peer.uid not in (os.getuid(), 0):
        log.warning("refused %s %s from pid %s uid %s", request.method, request.path,
                    *((peer.pid, peer.uid) if peer else ("?", "?")))
        return web.json_response({"error": "permission denied: this cove daemon serves "
                                           f"uid {os.getuid()} only"}, status=403)
    await after_autostart(request)
    try:
        response: web.StreamResponse = await handler(request)
    except CoveError as error:
        body = {"error": error.message, "hint": error.hint}
        if code := getattr(error, "code", None):
            body["code"] = code  # lets a program tell "no such VM" from other refusals
        return web.json_response(body, status=getattr(error, "status", 400))
    except web.HTTPException as error:  # aiohttp's own 404/405/413...: JSON like the rest
        if error.content_type == "application/json":
            raise
        return web.json_response({"error": error.reason}, status=error.status)
    except (ConnectionError, asyncio.CancelledError):
        raise  # the client went away
    except Exception as error:  # a bug: say so in JSON, keep serving, keep the VMs
        log.exception("%s %s failed", request.method, request.path)
        return web.json_response({"error": f"internal error: {type(error).__name__}: {error}",
                                  "hint": "this is a cove bug; coved.log has the details"},
                                 status=500)
    return response


class Daemon:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.events = Journal(Home(home).events)
        self.vms: dict[str, VmSupervisor] = {}
        self.broken: dict[str, str] = {}  # VM records that cannot be read: name -> why
        self.started = time.time()
        self.segments = Segments(Home(home).stacks)
        self.snapshot_locks: dict[str, asyncio.Lock] = {}  # one operation per snapshot
        self.autostarted = asyncio.Event()  # set once the enabled VMs' start has settled

    def join_segment(self, supervisor: VmSupervisor) -> None:
        if supervisor.record.plan.stack:
            self.segments.join(supervisor.record.plan.stack, supervisor.dir.sockets.segment)

    def leave_segment(self, supervisor: VmSupervisor) -> None:
        if supervisor.record.plan.stack:
            self.segments.leave(supervisor.record.plan.stack, supervisor.dir.sockets.segment)

    def vm(self, name: str) -> VmSupervisor:
        if name not in self.vms:
            if name in self.broken:
                raise CoveError(f"{name}'s record is broken: {self.broken[name]}",
                                f"`cove down {name}` forgets it (its volumes stay)")
            raise VMNotFound(f"no VM named {name!r}", "see `cove ls`")
        return self.vms[name]

    async def create(self, record: VmRecord, cold: bool = False,
                     snapshot: Snapshot | None = None, image: MemoryImage | None = None
                     ) -> VmSupervisor:
        """Boot a new VM; a name is unique per home (checked before any await). The record
        is on disk before the hypervisor starts, so a daemon killed mid-boot leaves no
        untracked VM: the next daemon adopts it or applies its restart policy."""
        if record.name in self.vms or record.name in self.broken:
            raise CoveError(f"a VM named {record.name!r} already exists",
                            f"stop it with `cove down {record.name}`, or pass --name")
        supervisor = VmSupervisor(record, self.home, self.events)
        self.vms[record.name] = supervisor
        async with supervisor.operation:
            try:
                self.join_segment(supervisor)
                await asyncio.to_thread(record.save, supervisor.dir.record)
                await supervisor.boot(cold=cold, snapshot=snapshot, image=image)
            except BaseException:
                del self.vms[record.name]
                self.leave_segment(supervisor)
                supervisor.dir.record.unlink(missing_ok=True)
                raise
            supervisor.record = dataclasses.replace(supervisor.record, phase="running")
            await asyncio.to_thread(supervisor.record.save, supervisor.dir.record)
        return supervisor

    async def remove(self, name: str, timeout: float) -> None:
        if name in self.broken and name not in self.vms:
            VmDir.for_name(name, self.home).record.unlink(missing_ok=True)
            del self.broken[name]
            return
        supervisor = self.vm(name)
        async with supervisor.operation:
            if self.vms.get(name) is not supervisor:
                return  # another `down` of it went first
            await supervisor.stop(timeout)
            supervisor.dir.record.unlink(missing_ok=True)
            del self.vms[name]
        self.leave_segment(supervisor)
        await asyncio.to_thread(self.forget_snapshot, supervisor.record.snapshot)

    def forget_snapshot(self, ident: str) -> None:
        """A suspend image or clone source no remaining VM needs is removed with its VM."""
        if not ident or any(s.record.snapshot == ident for s in self.vms.values()):
            return
        snapshot = Snapshot.load(snapshots_dir(self.home) / ident)
        if snapshot is not None and snapshot.kind not in KEPT:
            remove_snapshot(snapshot)

    async def clone(self, name: str, count: int, prefix: str, ports: tuple[str, ...]
                    ) -> list[VmSupervisor]:
        """`count` VMs restored from one save of `name`, which runs on."""
        source = self.vm(name)
        self.check_clonable(source.record, prefix, count)
        async with source.operation:
            snapshot = await save_for_clones(source)
        return await self.start_clones(source.record, snapshot, count, prefix, ports)

    async def save_snapshot(self, name: str) -> Snapshot:
        """`name`'s state now, kept (with what is needed to clone it) until removed."""
        source = self.vm(name)
        self.check_clonable(source.record, "", 0)
        async with source.operation:
            snapshot = await save_for_clones(source, kind="saved")
        await asyncio.to_thread(write_json, snapshot.directory / RECORD,
                                source.record.to_json())
        return snapshot

    async def clone_snapshot(self, ident: str, count: int, prefix: str | None,
                             ports: tuple[str, ...]) -> list[VmSupervisor]:
        """`count` VMs restored from a saved snapshot (its VM may be long gone); a
        `snapshot rm` of it waits until they are up (and then refuses: they need it)."""
        async with self.snapshot_lock(ident):
            return await self.clone_saved(ident, count, prefix, ports)

    def snapshot_lock(self, ident: str) -> asyncio.Lock:
        return self.snapshot_locks.setdefault(ident, asyncio.Lock())

    async def clone_saved(self, ident: str, count: int, prefix: str | None,
                          ports: tuple[str, ...]) -> list[VmSupervisor]:
        snapshot = await asyncio.to_thread(get_snapshot, self.home, ident)
        if snapshot.kind != "saved":
            raise CoveError(f"snapshot {ident} is a {snapshot.kind}, not one saved with "
                            "`cove snapshot save`", "clone a running VM with `cove clone`")
        record = await asyncio.to_thread(VmRecord.load, snapshot.directory / RECORD)
        prefix = prefix if prefix is not None else f"{snapshot.vm}-"
        self.check_clonable(record, prefix, count)
        return await self.start_clones(record, snapshot, count, prefix, ports)

    def check_clonable(self, record: VmRecord, prefix: str, count: int) -> None:
        if record.plan.stack:
            raise CoveError(f"{record.name} is a VM of stack {record.plan.stack}: its clones "
                            "would take its address on the stack's segment",
                            "clone a VM that is not in a stack")
        taken = [n for n in clone_names(prefix, count) if n in self.vms or n in self.broken]
        if taken:
            raise CoveError(f"VMs named {', '.join(taken)} exist already",
                            "choose another --prefix, or `cove down` them")

    async def start_clones(self, source: VmRecord, snapshot: Snapshot, count: int,
                           prefix: str, ports: tuple[str, ...]) -> list[VmSupervisor]:
        records = clone_records(source, snapshot, count, prefix, ports)
        if len(records) < 2 or not can_share_memory(records[0]):
            return await self.create_clones(records, snapshot, None)
        async with shared_memory(records[0], snapshot) as (image, why_not):
            if image is None:  # each clone gets memory of its own: slower, and more of it
                self.events.append({"ts": time.time(), "vm": source.name,
                                    "kind": "clones-share-no-memory", "why": why_not})
            return await self.create_clones(records, snapshot, image)

    async def create_clones(self, records: list[VmRecord], snapshot: Snapshot,
                            image: MemoryImage | None) -> list[VmSupervisor]:
        results = await asyncio.gather(*(self.create(r, snapshot=snapshot, image=image)
                                         for r in records), return_exceptions=True)
        failed = [f"{r.name}: {e}" for r, e in zip(records, results, strict=True)
                  if isinstance(e, BaseException)]
        if failed:
            raise CoveError("some clones did not start:\n  " + "\n  ".join(failed))
        return [r for r in results if isinstance(r, VmSupervisor)]

    def load_records(self) -> None:
        """Every VM record of this home; one that cannot be read marks that VM broken and
        the daemon starts anyway."""
        for path in sorted(Home(self.home).vms.glob("*/vm.json")):
            name = path.parent.name
            try:
                record = VmRecord.load(path)
                if record.name != name:
                    raise ValueError(f"it names VM {record.name!r}")
            except Exception as error:
                log.error("cannot read %s: %s", path, error)
                self.broken[name] = f"cannot read {path}: {type(error).__name__}: {error}"
                continue
            self.vms[record.name] = VmSupervisor(record, self.home, self.events)

    async def adopt_all(self) -> None:
        """Find the VMs of this home: adopt running ones, apply the policy to dead ones."""
        for leftover in await asyncio.to_thread(reap_leftovers, self.home):
            log.info("removed %s, a save a crash cut short", leftover)
        await asyncio.to_thread(self.load_records)
        for supervisor in self.vms.values():
            self.join_segment(supervisor)  # the hub before any VM of it runs again
        # adopt before serving, so the first `ls` after a daemon restart is complete
        await asyncio.gather(*(self.take_over(s) for s in self.vms.values()))

    def broken_status(self) -> list[dict[str, object]]:
        return [{"name": name, "state": "broken", "health": "-", "ports": [], "uptime": None,
                 "cpu_percent": None, "rss_bytes": None, "restarts": 0, "services": {},
                 "error": why, "pid": None, "spec": "", "stack": "", "member": ""}
                for name, why in self.broken.items()]

    async def take_over(self, supervisor: VmSupervisor) -> None:
        if supervisor.record.phase == "suspended":
            supervisor.state = "suspended"  # its state waits on disk for `cove resume`
            try:
                supervisor.hold_volumes()
            except CoveError as error:  # another VM took a disk while no daemon ran
                supervisor.error = f"{error.message}; resuming would pair old memory with it"
            if supervisor.idle is not None:
                await supervisor.keep_idle_watch()  # a connection wakes it
            return
        if supervisor.dir.running_pid() is not None:
            try:
                # a VM the last daemon was still booting gets a boot's time to answer
                await supervisor.adopt(BOOT_TIMEOUT if supervisor.record.phase == "booting"
                                       else ADOPT_TIMEOUT)
                await supervisor.learn_services()
            except Exception as error:
                log.error("%s: cannot adopt: %s", supervisor.name, error)
                supervisor.error = str(error)
                await supervisor.kill_unreachable()
            else:
                if supervisor.record.phase == "booting":
                    supervisor.record = dataclasses.replace(supervisor.record, phase="running")
                    await asyncio.to_thread(supervisor.record.save, supervisor.dir.record)
                return
        supervisor.state = "exited"
        supervisor.emit("exited", code=None, clean=False, seen="while no daemon ran")
        # as Docker does on a daemon restart: only `always` brings it back by itself (the
        # host may have rebooted); `cove enable` decides the rest (autostart.py)
        if supervisor.record.restart.policy is Restart.ALWAYS:
            background(supervisor.apply_policy(clean=False))


def claim_home(home: Path) -> int | None:
    """One daemon per home: hold coved.lock for life. None if another daemon has it."""
    home.mkdir(parents=True, exist_ok=True)
    fd = os.open(Home(home).daemon_lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


async def after_autostart(request: web.Request) -> None:
    """While the daemon is still starting enabled VMs, a command (any change, and a list
    asked for with `?autostarted=1`, as `down --all` does) waits for that start to settle:
    a `cove down --all` must not miss the stack the new daemon is bringing up. The start's
    own `cove up` children (header AUTOSTART_HEADER) go first."""
    daemon: Daemon = request.app["daemon"]
    if daemon.autostarted.is_set() or AUTOSTART_HEADER in request.headers:
        return
    if request.method in ("POST", "DELETE") or request.query.get("autostarted") == "1":
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(daemon.autostarted.wait(), AUTOSTART_WAIT)


async def autostart(daemon: Daemon) -> None:
    try:
        await start_enabled(daemon)
    finally:
        daemon.autostarted.set()


async def serve(home: Path) -> None:
    daemon = Daemon(home)
    app = web.Application(middlewares=[same_user_only])
    app["daemon"] = daemon
    app.add_routes(routes)
    runner = web.AppRunner(app, handle_signals=False, access_log=None)
    await runner.setup()
    started = time.monotonic()
    await daemon.adopt_all()
    if daemon.vms:
        log.info("took over %d VM(s) in %.2f s", len(daemon.vms), time.monotonic() - started)
    path = Home(home).socket
    path.unlink(missing_ok=True)
    # born 0700 under the umask main() set (077) before any thread ran: no window where
    # others could connect; never changed here, where worker threads create files
    await web.UnixSite(runner, str(path)).start()
    os.chmod(path, 0o600)
    log.info("coved %s serving %s (pid %d)", __version__, path, os.getpid())
    starting = background(autostart(daemon))  # once serving: `cove up` talks to us
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    log.info("coved exiting; VMs keep running")
    starting.cancel()  # its `cove up` children go first, while the socket still answers
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    await runner.cleanup()


def main() -> None:
    try:
        home = prepare_home()
    except CoveError as error:
        sys.exit(f"coved: {error}")
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s coved[%(process)d] %(levelname)s %(message)s")
    if claim_home(home) is None:
        log.info("another daemon serves %s", home)
        return
    asyncio.run(serve(home))


if __name__ == "__main__":
    main()
