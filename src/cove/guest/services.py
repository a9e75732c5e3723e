"""Supervising one declared service: pre_start, start, restart policy with backoff, stop."""

from __future__ import annotations

import time

from .lean import os, signal

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .health import HealthCheck
    from .reactor import Child, Reactor, Timer

    Emit = Callable[[dict[str, object]], None]
    Output = Callable[[str, int, bytes], None]

BACKOFF_FIRST = 0.5
BACKOFF_MAX = 10.0
STABLE_AFTER = 10.0  # a run this long resets the backoff


def should_restart(policy: str, code: int) -> bool:
    return policy == "always" or (policy == "on-failure" and code != 0)


def backoff_delay(failures: int) -> float:
    return float(min(BACKOFF_FIRST * (2 ** max(failures - 1, 0)), BACKOFF_MAX))


class Service:
    def __init__(self, reactor: Reactor, name: str, spec: dict[str, object],
                 env: dict[str, str], emit: Emit, output: Output) -> None:
        self.reactor = reactor
        self.name = name
        self.command = str(spec["command"])
        self.pre_start = str(spec.get("pre_start") or "")
        self.policy = str(spec.get("restart", "on-failure"))
        self.stop_timeout = float(spec.get("stop_timeout", 5.0))  # type: ignore[arg-type]
        self.user = str(spec.get("user") or "root")
        self.env = env
        self.emit = emit
        self.output = output
        self.state = "created"
        self.child: Child | None = None
        self.phase = ""
        self.started_at = 0.0
        self.restarts = 0
        self.failures = 0
        self.last_code: int | None = None
        self.timer: Timer | None = None
        self.stopping = False
        self.on_stopped: Callable[[], None] | None = None
        health = spec.get("health")
        self.health: HealthCheck | None = None
        if isinstance(health, dict):
            from .health import HealthCheck  # (only where a service has a check)

            self.health = HealthCheck(reactor, name, health, env, emit)

    def status(self) -> dict[str, object]:
        status: dict[str, object] = {
            "state": self.state, "pid": self.child.pid if self.child else None,
            "restarts": self.restarts, "exit_code": self.last_code, "since": self.started_at,
            "health": self.health.state if self.health else None}
        if self.health is not None and self.health.output:
            status["health_output"] = self.health.output
        return status

    def start(self) -> None:
        self.timer = None
        if self.pre_start:
            self._spawn("pre_start", self.pre_start)
        else:
            self._spawn("main", self.command)

    def _spawn(self, phase: str, script: str) -> None:
        self.phase = phase
        self.state = "starting" if phase == "pre_start" else "running"
        self.started_at = time.time()
        user, env = None, self.env
        if self.user != "root":
            from .users import lookup_user

            try:
                uid, gid, home = lookup_user(self.user)
            except ValueError as error:
                self.output(self.name, 2, f"cove-agent: {error}\n".encode())
                self.reactor.later(0, lambda: self._exited(127))
                return
            user, env = (uid, gid), {**self.env, "HOME": home, "USER": self.user}
        self.child = self.reactor.spawn(
            ["/bin/sh", "-c", script], env,
            lambda fd, data: self.output(self.name, fd, data),
            self._exited, user=user)
        if phase == "main":
            self.emit({"kind": "started", "svc": self.name, "pid": self.child.pid})
            if self.health is not None:
                self.health.start()

    def _exited(self, code: int) -> None:
        self.child = None
        self.last_code = code
        if self.health is not None:
            self.health.stop()
        if self.stopping:
            self._stopped()
            return
        if self.phase == "pre_start" and code == 0:
            self._spawn("main", self.command)
            return
        ran_for = time.time() - self.started_at
        self.failures = 0 if ran_for >= STABLE_AFTER else self.failures + 1
        self.emit({"kind": "failed" if self.phase == "pre_start" else "exited",
                   "svc": self.name, "phase": self.phase, "code": code})
        if should_restart(self.policy, code):
            delay = backoff_delay(self.failures)
            self.state = "restarting"
            self.restarts += 1
            self.emit({"kind": "restarting", "svc": self.name, "delay": delay,
                       "restarts": self.restarts})
            self.timer = self.reactor.later(delay, self.start)
        else:
            self.state = "failed" if code != 0 else "exited"

    def stop(self, on_stopped: Callable[[], None]) -> None:
        """SIGTERM the service's process group, SIGKILL after stop_timeout."""
        self.stopping = True
        self.on_stopped = on_stopped
        if self.timer is not None:
            self.timer.cancel()
        if self.child is None:
            self._stopped()
            return
        self.state = "stopping"
        _signal_group(self.child.pid, signal.SIGTERM)
        pid = self.child.pid
        self.reactor.later(self.stop_timeout, lambda: _signal_group(pid, signal.SIGKILL))

    def _stopped(self) -> None:
        self.state = "stopped"
        self.emit({"kind": "stopped", "svc": self.name, "code": self.last_code})
        if self.on_stopped is not None:
            callback, self.on_stopped = self.on_stopped, None
            callback()


def _signal_group(pid: int, signum: int) -> None:
    try:
        os.killpg(pid, signum)
    except (ProcessLookupError, PermissionError):
        pass
