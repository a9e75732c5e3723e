"""A service's health check, run by the agent: interval, timeout, retries, start period."""

from __future__ import annotations

import time

from .lean import os, signal
from .listening import local_check_port, read_listening
from .probe import HttpProbe, parse_curl_check

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .probe import HttpRequest
    from .reactor import Child, Reactor, Timer

OUTPUT_LIMIT = 4096
FIRST_CHECK_AFTER = 0.5  # check soon after start, so `cove up` returns quickly
# Until the first success, checks come 1, 2, 4... s apart (at most `interval`), and a new
# listening TCP port (read from /proc, no process spawned) brings the next one forward: most
# services are ready when they listen. A fixed one-second cadence cost twice: half a second
# of waiting on average, and under TCG a check (curl: 0.35 s of vCPU) every second taken
# from the service that is starting.
STARTING_INTERVAL = 1.0
LISTEN_WATCH = 0.05  # a look at /proc/net/tcp{,6} costs ~1 ms of guest CPU under TCG
CONNECT_FAILED = 7  # curl's exit status for "could not connect"
TIMED_OUT = 28  # and for "operation timed out"


class HealthCheck:
    def __init__(self, reactor: Reactor, name: str, spec: dict[str, object],
                 env: dict[str, str], emit: Callable[[dict[str, object]], None]) -> None:
        self.reactor = reactor
        self.name = name
        self.command = str(spec["command"])
        self.interval = float(spec.get("interval", 5.0))  # type: ignore[arg-type]
        self.timeout = float(spec.get("timeout", 2.0))  # type: ignore[arg-type]
        self.retries = int(spec.get("retries", 3))  # type: ignore[call-overload]
        self.start_period = float(spec.get("start_period", 0.0))  # type: ignore[arg-type]
        self.env = env
        self.emit = emit
        self.state = "starting"
        self.failures = 0
        self.output = ""
        self.started_at = 0.0
        self.counted_at = 0.0
        self.timer: Timer | None = None
        self.child: Child | None = None
        self.buffer = bytearray()
        self.watch: Timer | None = None
        self.listening: set[int] = set()
        self.starting_gap = STARTING_INTERVAL
        self.port = local_check_port(self.command, env)
        self.request = parse_curl_check(self.command, env)  # (made by the agent: probe.py)
        self.probe: HttpProbe | None = None
        self.checks = 0  # how many have started (a probe's answer names the one it ends)

    def start(self) -> None:
        self.stop()
        self.state = "starting"
        self.failures = 0
        self.started_at = time.monotonic()
        self.starting_gap = STARTING_INTERVAL
        self.timer = self.reactor.later(min(self.interval, FIRST_CHECK_AFTER), self._check)
        self.listening = read_listening()
        self.watch = self.reactor.later(LISTEN_WATCH, self._watch_listening)

    def stop(self) -> None:
        for timer in (self.timer, self.watch):
            if timer is not None:
                timer.cancel()
        self.timer = self.watch = None
        if self.child is not None:
            _kill_group(self.child.pid)
            self.child = None
        self._cancel_probe()

    def _cancel_probe(self) -> None:
        if self.probe is not None:
            self.probe.cancel()
            self.probe = None

    def _watch_listening(self) -> None:
        """While starting: check at once when a port starts listening (see LISTEN_WATCH)."""
        if self.state != "starting":
            self.watch = None
            return
        now = read_listening()
        if not now - self.listening:
            self.listening = now
        elif self.child is None and self.probe is None:  # (a new port waits for its end)
            if self.timer is not None:
                self.timer.cancel()
            self.listening = now
            self._check()
        self.watch = self.reactor.later(LISTEN_WATCH, self._watch_listening)

    def _check(self) -> None:
        self.buffer = bytearray()
        if self.port is not None and self.port not in read_listening():
            # it would fail (connection refused): judged so without running it
            self.output = f"nothing listens on port {self.port} (the check was not run)"
            self._judge(CONNECT_FAILED)
            self._next()
            return
        if self.request is not None:
            self._probe(self.request)
            return
        child = self.reactor.spawn(["/bin/sh", "-c", self.command], self.env, self._collect,
                                   lambda code: self._done(child, code))
        self.child = child
        self.timer = self.reactor.later(self.timeout, lambda: self._expired(child))

    def _probe(self, request: HttpRequest) -> None:
        self.checks += 1
        number = self.checks
        self.timer = self.reactor.later(self.timeout, lambda: self._probed(
            number, TIMED_OUT, f"(health check timed out after {self.timeout:g} s)"))
        probe = HttpProbe(self.reactor, request, lambda code, output: self._probed(
            number, code, output))
        if self.checks == number:  # (not answered already, as a refused connect is)
            self.probe = probe

    def _probed(self, number: int, code: int, output: str) -> None:
        if number != self.checks or self.timer is None:
            return  # stopped, or already judged
        self.timer.cancel()
        self.timer = None
        self._cancel_probe()
        self.checks += 1  # whatever else was under way for this check is now stale
        self.output = output.strip()[:OUTPUT_LIMIT]
        self._judge(code)
        self._next()

    def _collect(self, _fd: int, data: bytes) -> None:
        if len(self.buffer) < OUTPUT_LIMIT:
            self.buffer += data[:OUTPUT_LIMIT - len(self.buffer)]

    def _expired(self, child: Child) -> None:
        if self.child is child:
            self.buffer += f"\n(health check timed out after {self.timeout:g} s)".encode()
            _kill_group(child.pid)

    def _done(self, child: Child, code: int) -> None:
        if self.child is not child:
            return  # stopped meanwhile
        self.child = None
        if self.timer is not None:
            self.timer.cancel()
        self.output = self.buffer.decode(errors="replace").strip()
        self._judge(code)
        self._next()

    def _next(self) -> None:
        interval = self.interval
        if self.state == "starting":
            interval = min(interval, self.starting_gap)
            self.starting_gap *= 2
        self.timer = self.reactor.later(interval, self._check)

    def _judge(self, code: int) -> None:
        if code == 0:
            self.failures = 0
            self._become("healthy", code)
            return
        now = time.monotonic()
        if self.state == "starting":
            if now - self.started_at < self.start_period:
                return
            # Checks come faster while starting, but a failure counts once per interval,
            # so a slow start is judged on Docker's clock, not on the fast one.
            if self.failures and now - self.counted_at < self.interval - 0.05:
                return
        self.counted_at = now
        self.failures += 1
        if self.failures >= self.retries:
            self._become("unhealthy", code)

    def _become(self, state: str, code: int) -> None:
        if state != self.state:
            self.state = state
            self.emit({"kind": state, "svc": self.name, "code": code, "output": self.output})


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except OSError:
        pass
