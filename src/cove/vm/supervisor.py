"""One VM hosted by the daemon: boot or adopt it, keep it up per policy, record what it says."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import dataclasses
import os
import signal
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cove.errors import CoveError
from cove.host.journal import Journal, bound_file
from cove.host.lines import LineSplitter
from cove.host.tasks import background
from cove.spec.model import Port, Restart
from cove.spec.overrides import parse_port
from cove.vm.frames import Frame
from cove.vm.idle import IdleKeeper
from cove.vm.machine import Machine
from cove.vm.record import VmRecord
from cove.vm.snapshots import Snapshot
from cove.vm.storage import lock_volumes
from cove.vm.vmdir import VmDir
from cove.vm.vmstate import keep_template, summarize_health

if TYPE_CHECKING:
    from cove.vm.memory_image import MemoryImage

TEMPLATE_WAIT = 300.0  # a VM not healthy by then gets no template from this boot
BACKOFF_FIRST = 1.0
BACKOFF_MAX = 30.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
SERVICE_STATE_AFTER = {"started": "running", "restarting": "restarting", "stopped": "stopped",
                       "failed": "failed"}


CONSOLE_CAP = 8 * 2**20  # bytes of console log; one rotated file is kept beside it
CONSOLE_CHECK = 2.0  # seconds between looks at its size
AUTO_FORWARD_LOWEST = 1024  # a guest never gets a privileged host port by saying it listens
MAX_AUTO_FORWARDS = 64  # auto forwards of one VM at once


def vm_should_restart(policy: Restart, clean: bool) -> bool:
    return policy is Restart.ALWAYS or (policy is Restart.ON_FAILURE and not clean)


def vm_backoff(attempt: int) -> float:
    return float(min(BACKOFF_FIRST * 2 ** max(attempt - 1, 0), BACKOFF_MAX))


def process_usage(pid: int) -> tuple[float, int]:
    """(CPU seconds used, resident bytes) of a process, from /proc."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        rss_pages = int(Path(f"/proc/{pid}/statm").read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0.0, 0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS, rss_pages * os.sysconf("SC_PAGESIZE")


CpuSample = tuple[int, float, float]  # pid, monotonic time, CPU seconds used by then


def cpu_interval(last: CpuSample | None, now: CpuSample) -> tuple[CpuSample, float | None]:
    """The sample to keep and the CPU percent since `last` (None until 0.5 s have passed).
    A sample of another process (the VM restarted with a new hypervisor) or one whose CPU
    time is larger than now starts afresh: a percentage across two processes is no
    measurement (it read -63.7% right after a restart)."""
    if last is None or last[0] != now[0] or last[2] > now[2] or now[1] < last[1]:
        return now, None
    if now[1] - last[1] < 0.5:
        return last, None
    return now, round(100 * (now[2] - last[2]) / (now[1] - last[1]), 1)


def process_start(pid: int) -> float | None:
    """When a process started (epoch seconds): an adopted VM's uptime counts from there."""
    try:
        ticks = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19])
        boot = next(int(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime "))
    except (OSError, IndexError, ValueError, StopIteration):
        return None
    return boot + ticks / CLOCK_TICKS


class VmSupervisor:
    def __init__(self, record: VmRecord, home: Path, events: Journal) -> None:
        self.record = record
        self.dir = VmDir.for_name(record.name, home)
        self.dir.root.mkdir(parents=True, exist_ok=True)
        self.logs = Journal(self.dir.logs / "services.log")
        self.splitter = LineSplitter()
        self.events = events
        self.machine: Machine | None = None
        self.state = "created"
        self.services: dict[str, dict[str, Any]] = {}
        self.restarts = 0
        self.since = time.time()
        self.stopping = False
        self.clean_exit = False
        self.error = ""
        self.watcher: asyncio.Task[None] | None = None
        self.cpu_sample: CpuSample | None = None
        self.saver: asyncio.Task[None] | None = None
        self.saving = False
        self.idle = IdleKeeper(self) if record.plan.idle_suspend_after else None
        self.cpu_percent: float | None = None
        self.auto_ports: set[int] = set()  # auto_forward's ports, forwarded or on the way
        self.volume_locks: list[int] = []  # held for a suspended VM: its disks wait for it
        # one lifecycle operation at a time (up, down, restart, pause, resume, suspend, a
        # save for clones): a `down` during a boot waits for the boot, then stops the VM
        self.operation = asyncio.Lock()

    @property
    def name(self) -> str:
        return self.record.name

    def emit(self, kind: str, **fields: Any) -> None:
        # the VM's name last: a field of a guest's event never names another VM
        self.events.append({"ts": time.time(), **fields, "vm": self.name, "kind": kind})

    def on_frame(self, frame: Frame) -> None:
        """A checked frame from this VM's agent (vm/frames.py), or the host's own `broken`."""
        if frame.get("t") == "broken":
            self.mark_broken(str(frame.get("error")))
        elif frame.get("t") == "log":
            text = base64.b64decode(frame.get("data", "")).decode(errors="replace")
            svc, fd = str(frame.get("svc")), int(frame.get("fd", 1))
            for line in self.splitter.feed(svc, fd, text):
                self.logs.append({"ts": frame.get("ts"), "svc": svc, "fd": fd, "text": line})
        elif frame.get("t") == "event":
            self.service_event(frame)

    def hold_volumes(self) -> None:
        """While the VM is suspended its saved memory expects its disks as they are: no
        other VM may open them (cove's own lock, as a running hypervisor holds it)."""
        if not self.volume_locks:
            self.volume_locks = lock_volumes(self.record.plan)

    def let_volumes_go(self) -> None:
        for fd in self.volume_locks:
            os.close(fd)
        self.volume_locks = []

    def mark_broken(self, reason: str) -> None:
        """The guest broke the agent protocol: the VM is `broken` (in `ls`, with the reason)
        until it is restarted or brought down; its hypervisor is left to the user."""
        self.state, self.error = "broken", f"the guest broke the agent protocol: {reason}"
        self.logs.append({"ts": time.time(), "svc": "cove", "fd": 2, "text": self.error})
        self.emit("broken", error=self.error)

    def service_event(self, frame: Frame) -> None:
        kind, svc = str(frame.get("kind")), frame.get("svc")
        if kind in ("listening", "closed") and "port" in frame:
            self.guest_port(kind, int(frame["port"]))
        if kind == "poweroff":
            self.clean_exit = True
        if svc is not None:
            service = self.services.setdefault(str(svc), {})
            if kind in SERVICE_STATE_AFTER:
                service["state"] = SERVICE_STATE_AFTER[kind]
            if kind == "exited":
                service["state"] = "failed" if frame.get("code") else "exited"
                service["exit_code"] = frame.get("code")
            if kind == "started":  # a declared check has not spoken yet: starting
                service["health"] = "starting" if self.checks_health(str(svc)) else None
            if kind in ("healthy", "unhealthy"):
                service["health"] = kind
                service["health_output"] = frame.get("output", "")
            if kind == "restarting":
                service["restarts"] = frame.get("restarts")
        fields = {k: v for k, v in frame.items() if k not in ("t", "kind", "ts")}
        self.emit(kind, **fields)

    def checks_health(self, service: str) -> bool:
        """Whether the spec gives `service` a health check (then it is not healthy until
        that check passes, whatever the events have said so far)."""
        declared = self.record.plan.agent_config.get("services", {}).get(service)
        return isinstance(declared, dict) and bool(declared.get("health"))

    async def learn_services(self) -> None:
        """Services' status right after connecting: from the agent's hello where it says
        (a daemon adopting many VMs saves a round trip that wakes each guest), else asked."""
        agent = self.machine.agent if self.machine is not None else None
        said = agent.hello.result().get("services") if agent and agent.hello.done() else None
        if not isinstance(said, dict):
            await self.refresh_services()
            return
        # events that came after the hello are newer than it: what they set stands
        self.services = {name: {**(said.get(name) or {}), **self.services.get(name, {})}
                         for name in {*said, *self.services}}

    async def refresh_services(self) -> None:
        if self.machine is not None and self.machine.agent is not None:
            with contextlib.suppress(CoveError, TimeoutError):
                reply = await asyncio.wait_for(self.machine.agent.request("status"), 5)
                self.services = reply.get("services", {})

    def new_machine(self) -> Machine:
        return Machine(self.record.plan, self.record.artifacts, self.dir, self.on_frame,
                       bound_to_owner=False)

    async def boot(self, cold: bool = False, snapshot: Snapshot | None = None,
                   image: MemoryImage | None = None) -> None:
        """Start the VM (warm from a template where one fits, unless `cold`; or from
        `snapshot`); returns when the agent answers. Raises with the reason otherwise."""
        machine = self.new_machine()
        machine.claim()
        self.machine, self.state, self.clean_exit = machine, "starting", False
        self.services = {}  # what a previous boot said no longer holds
        self.auto_ports = set()
        try:
            await machine.start(cold=cold, snapshot=snapshot, image=image)
        except BaseException as error:
            self.state, self.error = "failed", str(error)
            with contextlib.suppress(Exception):
                await machine.stop()
            await machine.release()
            raise
        self.started(machine)
        await self.restore_forwards(machine, adopted=False)
        await self.learn_services()  # a restore's are as they were saved: healthy
        self.emit("started", pid=machine.process.pid if machine.process else None,
                  warm=machine.warm.id if machine.warm else None, why_cold=machine.why_cold,
                  shared_memory=machine.shared_memory,
                  seconds=round(machine.ready_at - machine.started_at, 3))
        if machine.warm is None:
            self.saver = background(self.save_template(machine))

    async def keep_idle_watch(self) -> None:
        assert self.idle is not None
        try:
            await self.idle.start()
        except OSError as error:
            self.emit("idle-failed", error=str(error))

    async def settle(self) -> None:
        """Before a pause, suspend or clone: a template save under way finishes first (its
        `cont` would undo a pause); one still waiting for health is given up."""
        saver = self.saver
        if saver is None or saver.done():
            return
        if self.saving:
            with contextlib.suppress(Exception):
                await saver
        else:
            saver.cancel()

    def mark_saving(self) -> None:
        self.saving = True

    async def save_template(self, machine: Machine) -> None:
        """After a cold boot, the template that makes the next start of this shape warm."""
        started = time.monotonic()
        try:
            snapshot = await keep_template(machine, TEMPLATE_WAIT, self.mark_saving)
        except Exception as error:  # only the next warm start is lost
            self.emit("template-failed", error=str(error))
            return
        finally:
            self.saving = False
        if snapshot is not None:
            self.emit("template-saved", snapshot=snapshot.id, size=snapshot.size,
                      seconds=round(time.monotonic() - started, 3))

    async def adopt(self, timeout: float) -> None:
        machine = self.new_machine()
        machine.claim(adopt=True)
        self.machine = machine
        try:
            await machine.adopt(timeout)
        except BaseException:
            await machine.release()
            raise
        self.started(machine)
        await self.restore_forwards(machine, adopted=True)
        if machine.process is not None:
            self.since = process_start(machine.process.pid) or self.since
        if machine.paused:  # as it was left: a daemon restart never unpauses or kills it
            self.state = "paused"
        self.emit("reattached", paused=machine.paused)

    async def kill_unreachable(self) -> None:
        """A hypervisor whose agent cannot be reached is killed before the restart policy
        boots the VM again: two instances must never write one volume."""
        pid = self.dir.running_pid()
        if pid is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        for _ in range(50):
            if self.dir.running_pid() is None:
                return
            await asyncio.sleep(0.1)

    def guest_port(self, kind: str, port: int) -> None:
        """A guest says a port opened or closed. Only where the spec asks for auto_forward
        (the guest's own word on that is not taken), only unprivileged ports, and at most
        MAX_AUTO_FORWARDS at once: a guest cannot take the host's ports for itself."""
        if not self.record.plan.agent_config.get("auto_forward"):
            return
        if kind == "closed":
            if port in self.auto_ports:
                self.auto_ports.discard(port)
                background(self.auto_forward(kind, port))
            return
        if port in self.auto_ports:
            return
        if port < AUTO_FORWARD_LOWEST or len(self.auto_ports) >= MAX_AUTO_FORWARDS:
            self.emit("forward-refused", port=port, error=(
                f"port {port} is below {AUTO_FORWARD_LOWEST}" if port < AUTO_FORWARD_LOWEST
                else f"{MAX_AUTO_FORWARDS} ports are forwarded already"))
            return
        self.auto_ports.add(port)  # counted now: the forwards themselves come later
        background(self.auto_forward(kind, port))

    async def auto_forward(self, kind: str, port: int) -> None:
        """auto_forward: a guest port that starts listening gets the same host port."""
        machine = self.machine
        if machine is None:
            return
        try:
            if kind == "listening":
                await machine.forwards.add(Port(port, port), tunnel=True, auto=True)
                self.emit("forwarded", port=port, auto=True)
            elif any(f.auto and f.port.host == port for f in machine.forwards.list()):
                await machine.forwards.remove(port)
                self.emit("unforwarded", port=port, auto=True)
        except CoveError as error:
            self.auto_ports.discard(port)
            self.emit("forward-failed", port=port, error=error.message)

    async def add_forward(self, text: str, tunnel: bool) -> dict[str, Any]:
        if self.machine is None or not self.machine.running:
            raise CoveError(f"{self.name} is {self.state}, not running")
        forward = await self.machine.forwards.add(parse_port(text), tunnel=tunnel)
        self.record = dataclasses.replace(self.record,
                                          forwards=(*self.record.forwards, (text, tunnel)))
        self.record.save(self.dir.record)
        self.emit("forwarded", port=str(forward.port), via=forward.via)
        return forward.to_json()

    async def remove_forward(self, host: int) -> dict[str, Any]:
        if self.machine is None:
            raise CoveError(f"{self.name} is {self.state}, not running")
        forward = await self.machine.forwards.remove(host)
        self.record = dataclasses.replace(self.record, forwards=tuple(
            f for f in self.record.forwards if parse_port(f[0]).host != host))
        self.record.save(self.dir.record)
        self.emit("unforwarded", port=str(forward.port))
        return forward.to_json()

    async def restore_forwards(self, machine: Machine, adopted: bool) -> None:
        """Forwards added at run time come back after a restart or a daemon restart."""
        for text, tunnel in self.record.forwards:
            try:
                await machine.forwards.add(parse_port(text), tunnel=tunnel, existing=adopted)
            except CoveError as error:
                self.emit("forward-failed", port=text, error=error.message)

    def started(self, machine: Machine) -> None:
        self.state, self.since, self.error = "running", time.time(), ""
        if self.idle is not None:
            background(self.keep_idle_watch())
        # CPU use is reported per interval between looks; the first interval starts at spawn
        pid = machine.process.pid if machine.process is not None else 0
        self.cpu_sample = (pid, machine.started_at, 0.0) if machine.started_at else None
        self.cpu_percent = None
        self.watcher = asyncio.create_task(self.watch(machine))
        background(self.bound_console(machine))

    async def bound_console(self, machine: Machine) -> None:
        """The console log a guest can write without end stays under CONSOLE_CAP, while
        this machine runs."""
        path = self.dir.sockets.console_log
        while self.machine is machine and machine.running:
            if await asyncio.to_thread(bound_file, path, CONSOLE_CAP):
                self.emit("console-log-rotated", cap=CONSOLE_CAP)
            await asyncio.sleep(CONSOLE_CHECK)

    async def watch(self, machine: Machine) -> None:
        code = await machine.wait()
        if self.stopping or self.state in ("suspending", "suspended"):
            return
        await machine.release()
        clean = self.clean_exit or code == 0
        self.state = "exited"
        self.emit("exited", code=code, clean=clean)
        await self.apply_policy(clean)

    async def apply_policy(self, clean: bool) -> None:
        policy = self.record.restart
        while not self.stopping and vm_should_restart(policy.policy, clean):
            if self.restarts >= policy.max:
                self.state, self.error = "failed", f"gave up after {self.restarts} restarts"
                self.emit("gave-up", restarts=self.restarts)
                return
            self.restarts += 1
            delay = vm_backoff(self.restarts)
            self.state = "restarting"
            self.emit("restarting", delay=delay, restarts=self.restarts)
            await asyncio.sleep(delay)
            try:
                await self.boot()
            except Exception as error:  # any failure: try again later, never stay stuck
                self.emit("restart-failed", error=str(error))
                clean = False
                continue
            self.emit("restarted", restarts=self.restarts)
            return

    async def stop(self, timeout: float, final: bool = True) -> None:
        """Stop the VM; `final` (down) also closes its log. A restart keeps the log open,
        so `logs -f` followers go on seeing the next boot's output."""
        self.stopping = True
        if self.saver is not None:
            if self.saving:  # a save under way takes a second: let it finish
                with contextlib.suppress(Exception):
                    await self.saver
            self.saver.cancel()
        if self.watcher is not None:
            self.watcher.cancel()
        if self.machine is not None:
            self.state = "stopping"
            await self.machine.stop(timeout)
            await self.machine.release()
        self.let_volumes_go()
        self.state = "stopped"
        self.emit("stopped")
        if final:
            if self.idle is not None:
                self.idle.close()
            self.logs.close()

    async def restart(self, timeout: float) -> None:
        await self.stop(timeout, final=False)
        self.stopping = False
        await self.boot()

    def usage(self) -> tuple[float | None, int | None]:
        """(CPU percent over the last interval of >= 0.5 s, resident bytes) of QEMU."""
        machine = self.machine
        if machine is None or machine.process is None or not machine.running:
            return None, None
        pid = machine.process.pid
        cpu, rss = process_usage(pid)
        sample = (pid, time.monotonic(), cpu)
        kept, percent = cpu_interval(self.cpu_sample, sample)
        if percent is not None or kept is sample:  # a new interval, or one started afresh
            self.cpu_percent = percent
        self.cpu_sample = kept
        return self.cpu_percent, rss

    def status_health(self) -> str:
        return summarize_health(self.services,
                                list(self.record.plan.agent_config.get("services", {})))

    def status(self) -> dict[str, Any]:
        cpu, rss = self.usage()
        return {
            "name": self.name, "state": self.state,
            "stack": self.record.plan.stack, "member": self.record.plan.member,
            "health": self.status_health() if self.state in ("running", "paused") else "-",
            "ports": [str(p) for p in self.record.plan.ports],
            "uptime": round(time.time() - self.since, 1)
            if self.state in ("running", "paused") else None,
            "warm": self.machine.warm.id if self.machine and self.machine.warm else None,
            "why_cold": self.machine.why_cold if self.machine else "",
            "snapshot": self.record.snapshot or None,
            "cpu_percent": cpu, "rss_bytes": rss, "restarts": self.restarts,
            "services": self.services, "error": self.error,
            "pid": self.machine.process.pid if self.machine and self.machine.process else None,
            "spec": self.record.spec_file,
        }
