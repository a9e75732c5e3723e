"""The guest agent: PID 1 after /init, supervises services and serves the host.

Runs as `python3 -S -B -c "from cove.guest import agent; agent.main()"` (see init.sh).
Standard library only, and as few
imports as possible: under TCG every import costs tens of milliseconds.
"""

from __future__ import annotations

import select
import sys
import time

from . import proto
from .lean import deque, exists, isdir, os, signal
from .link import HostLink, SocketLink, find_port, unix_listener, vsock_listener
from .reactor import Child, Reactor, set_window_size
from .services import Service

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .tunnel import Tunnel
# tunnel, users, listening and health are imported where first needed: a VM without
# services answers its host without them (each import is milliseconds at boot under TCG)

CONFIG = os.environ.get(b"COVE_AGENT_CONFIG", b"/cove/config.json").decode()
CONSOLE = "/dev/ttyS0"
SECRETS = "/run/secrets"
NIX_DB_DUMP = "/cove/nix-db"
LISTEN_POLL = 1.0
BASE_ENV = {
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "HOME": "/root",
    "LANG": "C.UTF-8",
    "TERM": "linux",
    "PYTHONUNBUFFERED": "1",  # service output should reach `cove logs` as it is printed
}
LOG_RING = 2000  # output chunks remembered per service for the `logs` request
SHUTDOWN_GRACE = 1.0
KEY_POWER = 116
EV_KEY = 1
# /init's background half (power button, balloon) waits for a line on the fd it names
# (init.sh): a moment (LATER_SETTLE: the host's first requests) after the host is answered
# and every health check has a first verdict, or after LATER_AT_MOST, whichever is first.
LATER_SETTLE = 1.0
LATER_AT_MOST = 10.0


def say(text: str) -> None:
    sys.stderr.write(f"cove-agent: {text}\n")
    sys.stderr.flush()




def open_link(reactor: Reactor, config: dict[str, object],
              on_frame: Callable[[dict[str, object]], None],
              on_hello: Callable[[dict[str, object]], None]) -> HostLink:
    """The host channel the hypervisor gives: a named virtio-serial port, or vsock. Every
    host must say this boot's token in its hello."""
    token = str(config.get("token") or "")
    if config.get("transport") == "vsock":
        port = int(config.get("vsock_port", 1024))  # type: ignore[call-overload]
        return SocketLink(reactor, vsock_listener(port), on_frame, on_hello, token)
    if config.get("transport") == "unix":  # an agent outside a VM (tests, sandboxes)
        return SocketLink(reactor, unix_listener(str(config["unix_path"])), on_frame, on_hello,
                          token)
    return HostLink(reactor, find_port(proto.PORT_NAME), on_frame, on_hello, token)


class Agent:
    def __init__(self, config: dict[str, object]) -> None:
        self.config = config
        self.booted = time.monotonic()
        self.reactor = Reactor()
        self.link = open_link(self.reactor, config, self.handle, self.greet)
        self.logs: dict[str, deque[tuple[float, int, str]]] = {}
        self.channels: dict[int, Child] = {}
        self.stdin_pending: dict[int, bytearray] = {}
        self.stdin_eof: set[int] = set()
        self.tunnels: dict[int, Tunnel] = {}
        self.listening: set[int] = set()
        self.next_channel = 1
        self.shutting_down = False
        self.finished = False
        self.ready = True
        self.greet_pending = False
        env = {**BASE_ENV, **config.get("env", {})}  # type: ignore[dict-item]
        services: dict[str, dict[str, object]] = config.get("services", {})  # type: ignore[assignment]
        self.services = {
            name: Service(self.reactor, name, spec,
                          {**env, **spec.get("env", {})},  # type: ignore[dict-item]
                          self.event, self.service_output)
            for name, spec in services.items()
        }
        self.reactor.on_signal(signal.SIGTERM, self.shutdown)
        self.reactor.on_signal(signal.SIGINT, self.shutdown)  # also Ctrl-Alt-Del (Firecracker)
        self.in_vm = os.getpid() == 1  # outside a VM (tests) leave the machine's devices be
        self.power_devices: set[str] = set()
        if self.in_vm:
            # /init's background half loads the button's modules and then signals (the
            # handler first, so that no load falls between the look and the handler)
            self.reactor.on_signal(signal.SIGUSR1, self.later_done)
            self.watch_power_button()
        self.greeted = False
        self.later_fd = later_fd()
        self.settled = self.later_fd is None  # (the background half has ended)
        self.when_settled: list[Callable[[], None]] = []
        if self.later_fd is not None:
            self.reactor.later(LATER_AT_MOST, self.later_go)

    # -- host channel ---------------------------------------------------------------
    def greet(self, _frame: dict[str, object]) -> None:
        if not self.ready:  # answered once the guest is ready (its Nix knows its closure)
            self.greet_pending = True
            return
        self.greet_pending = False
        # the services' status rides along: a daemon adopting many VMs after a restart
        # needs no second round trip per VM (each one wakes a guest under TCG)
        self.link.send({"t": "hello", "v": proto.VERSION,
                        "caps": ["exec", "logs", "status", "binary"],
                        "uptime": self.uptime(),
                        "services": {name: s.status() for name, s in self.services.items()}})
        self.greeted = True
        self.let_later_run()

    def let_later_run(self) -> None:
        """Tell /init's background half to go on in a moment, once nothing it would slow is
        starting: the host has been answered, no health check still waits for its first
        verdict."""
        starting = any(s.health is not None and s.health.state == "starting"
                       for s in self.services.values())
        if self.later_fd is not None and self.greeted and not starting:
            self.reactor.later(LATER_SETTLE, self.later_go)

    def later_done(self) -> None:
        self.settled = True
        self.event({"kind": "boot-finished"})
        self.watch_power_button()
        for answer in self.when_settled:
            answer()
        self.when_settled.clear()

    def later_go(self) -> None:
        fd, self.later_fd = self.later_fd, None
        if fd is None:
            return
        try:
            os.write(fd, b"go\n")
            os.close(fd)
        except OSError as error:
            say(f"cannot start the late modules: {error}")
            self.later_done()  # (nothing more will come of the background half)

    def event(self, body: dict[str, object]) -> None:
        say(" ".join(f"{k}={v}" for k, v in body.items()))
        self.link.send({"t": "event", "ts": time.time(), **body}, keep=True)
        if body.get("kind") in ("healthy", "unhealthy"):
            self.let_later_run()

    def service_output(self, name: str, fd: int, data: bytes) -> None:
        now = time.time()
        ring = self.logs.setdefault(name, deque(maxlen=LOG_RING))
        ring.append((now, fd, data.decode(errors="replace")))
        self.link.send({"t": "log", "svc": name, "fd": fd, "ts": now, "data": proto.b64(data)},
                       keep=True)

    def handle(self, frame: dict[str, object]) -> None:
        kind = frame.get("t")
        if kind == "in":
            self.exec_input(frame)
            return
        if kind == "resize":
            self.exec_resize(frame)
            return
        if kind == "kill":
            self.exec_kill(frame)
            return
        if kind != "req":
            return
        op = str(frame.get("op"))
        handler = getattr(self, f"op_{op.replace('-', '_')}", None)
        try:
            if handler is None:
                raise ValueError(f"unknown request {op!r}")
            result = handler(frame)
        except Exception as error:
            self.link.send({"t": "res", "id": frame.get("id"), "ok": False,
                            "error": f"{type(error).__name__}: {error}"})
            return
        if result is not None:  # None: the handler answers later itself
            self.link.send({"t": "res", "id": frame.get("id"), "ok": True, **result})

    # -- requests -----------------------------------------------------------------------
    def uptime(self) -> float:
        return round(time.monotonic() - self.booted, 3)

    def op_ping(self, _frame: dict[str, object]) -> dict[str, object]:
        return {"uptime": self.uptime()}

    def op_status(self, _frame: dict[str, object]) -> dict[str, object]:
        return {"uptime": self.uptime(),
                "services": {name: s.status() for name, s in self.services.items()}}

    def op_logs(self, frame: dict[str, object]) -> dict[str, object]:
        wanted = frame.get("svc")
        entries = [
            {"svc": name, "ts": ts, "fd": fd, "text": text}
            for name, ring in self.logs.items() if wanted in (None, name)
            for ts, fd, text in ring
        ]
        entries.sort(key=lambda e: e["ts"])  # type: ignore[arg-type,return-value]
        return {"entries": entries}

    def op_exec(self, frame: dict[str, object]) -> dict[str, object]:
        argv = frame.get("argv")
        if not isinstance(argv, list) or not argv:
            raise ValueError("exec needs a non-empty argv")
        env = {**BASE_ENV, **self.config.get("env", {}), **frame.get("env", {})}  # type: ignore[dict-item]
        user = None
        if frame.get("user"):
            from .users import lookup_user

            user = lookup_user(str(frame["user"]))
            env["HOME"], env["USER"] = user[2], str(frame["user"])
        channel = self.next_channel
        self.next_channel += 1
        child = self.reactor.spawn(
            [str(a) for a in argv], env,
            lambda fd, data: self.link.send_data(channel, fd, data),
            lambda code: self.exec_exited(channel, code),
            cwd=str(frame["cwd"]) if frame.get("cwd") else None,
            stdin=bool(frame.get("stdin")), user=user[:2] if user else None,
            tty=window_size(frame) if frame.get("tty") else None)
        self.channels[channel] = child
        return {"ch": channel, "pid": child.pid}

    def exec_exited(self, channel: int, code: int) -> None:
        self.channels.pop(channel, None)
        self.stdin_pending.pop(channel, None)
        self.stdin_eof.discard(channel)
        self.link.send({"t": "exit", "ch": channel, "code": code})

    def op_connect(self, frame: dict[str, object]) -> dict[str, object]:
        """A TCP connection to a guest port, relayed over this channel (port tunnels)."""
        port = int(frame.get("port", 0))  # type: ignore[call-overload]
        channel = self.next_channel
        self.next_channel += 1
        from .tunnel import Tunnel

        self.tunnels[channel] = Tunnel(self.reactor, channel, port, self.link.send,
                                       self.link.send_data, self._tunnel_closed)
        return {"ch": channel}

    def _tunnel_closed(self, channel: int) -> None:
        self.tunnels.pop(channel, None)

    def exec_input(self, frame: dict[str, object]) -> None:
        channel = frame.get("ch")
        if isinstance(channel, int) and channel in self.tunnels:
            self.tunnels[channel].write(proto.payload(frame), bool(frame.get("eof")))
            return
        if not isinstance(channel, int) or channel not in self.channels:
            return
        pending = self.stdin_pending.setdefault(channel, bytearray())
        pending += proto.payload(frame)
        if frame.get("eof"):
            self.stdin_eof.add(channel)
        self.flush_stdin(channel)

    def flush_stdin(self, channel: int) -> None:
        """Write queued input without blocking the agent; close stdin after EOF."""
        child = self.channels.get(channel)
        pending = self.stdin_pending.get(channel)
        if child is None or child.stdin_fd is None or pending is None:
            return
        try:
            written = os.write(child.stdin_fd, pending) if pending else 0
        except BlockingIOError:
            written = 0
        except OSError:  # the command closed its stdin: drop the rest
            written = len(pending)
        del pending[:written]
        if written:  # the host sends more only as its input is taken (flow control)
            self.link.send({"t": "ack", "ch": channel, "n": written})
        if pending:
            self.reactor.later(0.05, lambda: self.flush_stdin(channel))
        elif channel in self.stdin_eof:
            os.close(child.stdin_fd)
            child.stdin_fd = None

    def exec_kill(self, frame: dict[str, object]) -> None:
        """The host gave up on a command (a timeout): its whole process group goes."""
        channel = frame.get("ch")
        child = self.channels.get(channel) if isinstance(channel, int) else None
        if child is not None:
            try:
                os.killpg(child.pid, signal.SIGKILL)
            except OSError:
                pass

    def exec_resize(self, frame: dict[str, object]) -> None:
        channel = frame.get("ch")
        child = self.channels.get(channel) if isinstance(channel, int) else None
        if child is None or child.stdin_fd is None:
            return
        set_window_size(child.stdin_fd, *window_size(frame))

    def op_saving(self, frame: dict[str, object]) -> dict[str, object] | None:
        """The host saves this VM's state next: what a restore runs is loaded now, into the
        saved memory, so no restored instance pays for the import (cold under TCG); and
        the boot is finished first (/init's background half), so no restored instance
        loads those modules again. The answer comes once it has."""
        from . import identity  # noqa: F401

        if self.settled:
            return {}
        ident = frame.get("id")
        self.when_settled.append(lambda: self.link.send({"t": "res", "id": ident, "ok": True}))
        self.later_go()
        return None

    def op_resumed(self, frame: dict[str, object]) -> dict[str, object] | None:
        """Restored from a snapshot: become this instance (clock, entropy, names, MAC) and
        take this boot's token; services and health checks simply go on. The answer comes
        once the network is back, so the host's "up" means its ports answer."""
        from . import identity

        commands = identity.apply(frame) if self.in_vm else []
        if frame.get("token"):
            self.link.token = str(frame["token"])
        if frame.get("name"):
            self.config["name"] = frame["name"]
        ident = frame.get("id")
        self.run_in_order(commands, lambda: self.link.send(
            {"t": "res", "id": ident, "ok": True, "uptime": self.uptime()}))
        return None

    def run_in_order(self, commands: list[list[str]], done: Callable[[], None]) -> None:
        if not commands:
            done()
            return
        first, rest = commands[0], commands[1:]
        self.reactor.spawn(first, dict(BASE_ENV), lambda _fd, data: say(data.decode().strip()),
                           lambda _code: self.run_in_order(rest, done))

    def op_shutdown(self, _frame: dict[str, object]) -> dict[str, object]:
        self.reactor.later(0, self.shutdown)
        return {}

    # -- lifecycle ----------------------------------------------------------------------
    def watch_power_button(self) -> None:
        """The ACPI power button (QMP system_powerdown) means: shut down gracefully."""
        try:
            names = [n for n in os.listdir("/dev/input") if n.startswith("event")]
        except FileNotFoundError:
            return
        for name in names:
            if name in self.power_devices:
                continue
            self.power_devices.add(name)
            fd = os.open(f"/dev/input/{name}", os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            self.reactor.watch(fd, 1, self._power_reader(fd))

    def _power_reader(self, fd: int) -> Callable[[int], None]:
        return lambda _revents: self.power_event(fd)

    def power_event(self, fd: int) -> None:
        try:
            data = os.read(fd, 24 * 16)
        except BlockingIOError:
            return
        for offset in range(0, len(data) - 23, 24):
            kind = int.from_bytes(data[offset + 16:offset + 18], "little")
            code = int.from_bytes(data[offset + 18:offset + 20], "little")
            if kind == EV_KEY and code == KEY_POWER:
                say("power button pressed")
                self.shutdown()
                return

    def start(self) -> None:
        self.own_secrets()
        if not self.register_nix_closure():
            self.start_services()

    def start_services(self) -> None:
        for service in self.services.values():
            service.start()
        if self.in_vm and self.config.get("console_shell", True):
            self.console_shell()
        if self.config.get("auto_forward"):
            self.watch_listening()

    def watch_listening(self) -> None:
        """Report ports guest programs start or stop listening on (auto_forward)."""
        from .listening import read_listening

        now = read_listening()
        for port in sorted(now - self.listening):
            self.event({"kind": "listening", "port": port})
        for port in sorted(self.listening - now):
            self.event({"kind": "closed", "port": port})
        self.listening = now
        self.reactor.later(LISTEN_POLL, self.watch_listening)

    def register_nix_closure(self) -> bool:
        """A guest with Nix learns the paths it was given (cove's dump of their DB rows)
        before its services start or the host is answered; True while that is under way."""
        if not (exists(NIX_DB_DUMP) and exists("/usr/bin/nix-store")):
            return False
        self.ready = False
        self.reactor.spawn(["/bin/sh", "-c", f"nix-store --load-db < {NIX_DB_DUMP}"],
                           dict(BASE_ENV), lambda fd, data: say(data.decode().strip()),
                           self.nix_closure_loaded)
        return True

    def nix_closure_loaded(self, code: int) -> None:
        self.ready = True
        self.event({"kind": "nix-db-loaded", "code": code})
        self.start_services()
        if self.greet_pending:
            self.greet({})

    def own_secrets(self) -> None:
        """Secrets belong to the user the services run as (init made them 0400 root)."""
        owner = str(self.config.get("secrets_owner") or "root")
        if owner == "root" or not isdir(SECRETS):
            return
        try:
            from .users import lookup_user

            uid, gid, _home = lookup_user(owner)
        except ValueError as error:
            say(f"secrets stay root's: {error}")
            return
        chown_tree(SECRETS, uid, gid)

    def console_shell(self) -> None:
        """A root shell on the serial console for `cove console`, once someone presses Enter
        there (as busybox init's askfirst): a login shell started at boot costs the starting
        services a tenth of a second of vCPU under TCG, and most VMs never get a visitor.
        The line typed stays queued for the shell (poll does not consume it)."""
        if self.shutting_down or not exists(CONSOLE):
            return
        fd = os.open(CONSOLE, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
        self.reactor.watch(fd, select.POLLIN, lambda revents: self._console_typed(fd, revents))

    def _console_typed(self, fd: int, revents: int) -> None:
        self.reactor.unwatch(fd)
        os.close(fd)
        if not revents & select.POLLIN:  # (a hang-up: look again in a moment)
            self.reactor.later(1.0, self.console_shell)
            return
        if self.shutting_down:
            return
        env = {**BASE_ENV, "TERM": "vt100", "PS1": f"{self.config.get('name', 'cove')}:\\w# "}
        self.reactor.spawn_on_terminal(["/bin/sh", "-l"], env, CONSOLE, self._shell_exited)

    def _shell_exited(self, _code: int) -> None:
        self.console_shell()

    def shutdown(self) -> None:
        if self.shutting_down:
            return
        self.shutting_down = True
        self.event({"kind": "shutdown"})
        for child in self.channels.values():
            try:
                os.killpg(child.pid, signal.SIGTERM)
            except OSError:
                pass
        waiting = set(self.services)
        if not waiting:
            self.reactor.later(0, self.power_off)
            return
        longest = max(s.stop_timeout for s in self.services.values())
        self.reactor.later(longest + SHUTDOWN_GRACE, self.power_off)
        for name, service in self.services.items():
            service.stop(self._stop_callback(waiting, name))

    def _stop_callback(self, waiting: set[str], name: str) -> Callable[[], None]:
        return lambda: self._service_stopped(waiting, name)

    def _service_stopped(self, waiting: set[str], name: str) -> None:
        waiting.discard(name)
        if not waiting:
            self.power_off()

    def power_off(self) -> None:
        if self.finished:
            return
        self.finished = True
        self.link.send({"t": "event", "ts": time.time(), "kind": "poweroff"})
        self.link.flush_blocking(1.0)
        os.sync()
        if os.getpid() == 1:
            # where the hypervisor has no ACPI power-off, a reset ends the VM (reboot=k)
            halt = "reboot" if self.config.get("halt") == "reboot" else "poweroff"
            os.execv("/bin/busybox", [halt, "-f"])
        raise SystemExit(0)

    def run(self) -> None:
        self.start()
        while True:
            self.reactor.run_once()


def later_fd() -> int | None:
    """The fd /init's background half waits on (COVE_LATER_FD), kept from the services."""
    named = os.environ.get(b"COVE_LATER_FD")
    if not named or not named.isdigit():
        return None
    fd = int(named)
    try:
        os.set_inheritable(fd, False)
    except OSError:
        return None
    return fd


def window_size(frame: dict[str, object]) -> tuple[int, int]:
    """(rows, columns) a frame asks for; a terminal's usual 24x80 where it says nothing."""
    return (int(frame.get("rows") or 24),  # type: ignore[call-overload]
            int(frame.get("cols") or 80))  # type: ignore[call-overload]


def chown_tree(top: str, uid: int, gid: int) -> None:
    os.chown(top, uid, gid)
    for entry in os.scandir(top):
        if entry.is_dir(follow_symlinks=False):
            chown_tree(entry.path, uid, gid)
        else:
            os.chown(entry.path, uid, gid, follow_symlinks=False)


def main() -> None:
    try:
        with open(CONFIG) as handle:
            loaded = proto.loads(handle.read())
        config = loaded if isinstance(loaded, dict) else {}
    except (OSError, ValueError) as error:
        say(f"cannot read {CONFIG}: {error}")
        config = {}
    try:
        net = config.get("net")
        if isinstance(net, dict):  # (a VM always has it; an agent in a test has not)
            from .netconf import configure

            configure(net)
        Agent(config).run()
    except Exception as error:
        say(f"fatal: {type(error).__name__}: {error}")
        os.sync()
        if os.getpid() == 1:
            os.execv("/bin/busybox", ["poweroff", "-f"])
        raise


if __name__ == "__main__":
    main()
