"""The agent's event loop: poll, timers, and child processes with piped output.

Hand-written on select.poll rather than asyncio: asyncio's imports alone cost over a second
under TCG, and the agent is PID 1, so it must also reap every orphan.
"""

from __future__ import annotations

import select
import time

from .lean import heapq, os, signal

READ = select.POLLIN | select.POLLPRI
CLOSED = select.POLLHUP | select.POLLERR | select.POLLNVAL
CHUNK = 65536

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    OutputHandler = Callable[[int, bytes], None]
    ExitHandler = Callable[[int], None]


def exit_code(status: int) -> int:
    """A wait status as a shell would report it: the code, or 128 + signal."""
    code = os.waitstatus_to_exitcode(status)
    return 128 - code if code < 0 else code


class Timer:
    __slots__ = ("cancelled",)

    def __init__(self) -> None:
        self.cancelled = False

    def cancel(self) -> None:
        self.cancelled = True


class Child:
    """A process the agent started: its pid, output pipes and optional stdin pipe."""

    def __init__(self, pid: int, outputs: dict[int, int], stdin_fd: int | None,
                 on_output: OutputHandler, on_exit: ExitHandler) -> None:
        self.pid = pid
        self.outputs = outputs  # pipe fd -> 1 or 2
        self.stdin_fd = stdin_fd
        self.on_output = on_output
        self.on_exit = on_exit
        self.code: int | None = None


class Reactor:
    def __init__(self) -> None:
        self.poller = select.poll()
        self.handlers: dict[int, Callable[[int], None]] = {}
        # flow control: while the host is slow to take output (HostLink.congested), the
        # children's output pipes are not read, so their writes block, not our memory grow
        self.holding = False
        self.held: set[int] = set()
        self.timers: list[tuple[float, int, Timer, Callable[[], None]]] = []
        self.sequence = 0
        self.children: dict[int, Child] = {}
        self.wake_r, wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(wake_w, False)
        signal.set_wakeup_fd(wake_w)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        self.watch(self.wake_r, READ, self._woken)
        self.signal_handlers: dict[int, Callable[[], None]] = {}

    def on_signal(self, signum: int, handler: Callable[[], None]) -> None:
        self.signal_handlers[signum] = handler
        signal.signal(signum, lambda *_: None)

    def watch(self, fd: int, events: int, handler: Callable[[int], None]) -> None:
        self.handlers[fd] = handler
        self.poller.register(fd, events)

    def modify(self, fd: int, events: int) -> None:
        self.poller.modify(fd, events)

    def unwatch(self, fd: int) -> None:
        self.held.discard(fd)
        if self.handlers.pop(fd, None) is not None:
            self.poller.unregister(fd)

    def hold_output(self) -> None:
        """Stop reading children's output until `release_output`."""
        if self.holding:
            return
        self.holding = True
        for child in self.children.values():
            for fd in child.outputs:
                if fd in self.handlers and fd not in self.held:
                    self.poller.unregister(fd)
                    self.held.add(fd)

    def release_output(self) -> None:
        self.holding = False
        for fd in self.held:
            self.poller.register(fd, READ)
        self.held.clear()

    def later(self, delay: float, callback: Callable[[], None]) -> Timer:
        timer = Timer()
        self.sequence += 1
        heapq.heappush(self.timers, (time.monotonic() + delay, self.sequence, timer, callback))
        return timer

    def run_once(self) -> None:
        timeout: int | None = None
        if self.timers:
            timeout = max(0, int((self.timers[0][0] - time.monotonic()) * 1000) + 1)
        events = self.poller.poll(timeout)
        polled = dict(self.handlers)
        for fd, revents in events:
            handler = self.handlers.get(fd)
            # an fd closed and reused by an earlier handler of this batch (a child's pipe,
            # then a new connection) must not get the old fd's event (a HUP would drop it)
            if handler is not None and handler is polled.get(fd):
                handler(revents)
        self._fire_timers()

    def _fire_timers(self) -> None:
        now = time.monotonic()
        while self.timers and self.timers[0][0] <= now:
            _, _, timer, callback = heapq.heappop(self.timers)
            if not timer.cancelled:
                callback()

    def _woken(self, _revents: int) -> None:
        try:
            signums = os.read(self.wake_r, 512)
        except BlockingIOError:
            return
        for signum in set(signums):
            if signum == signal.SIGCHLD:
                self.reap()
            elif signum in self.signal_handlers:
                self.signal_handlers[signum]()

    def reap(self) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            child = self.children.pop(pid, None)
            if child is not None:
                self._finish(child, exit_code(status))

    def _finish(self, child: Child, code: int) -> None:
        child.code = code
        for fd in list(child.outputs):
            self._drain(child, fd)
        if child.stdin_fd is not None:
            _close(child.stdin_fd)
            child.stdin_fd = None
        child.on_exit(code)

    def _drain(self, child: Child, fd: int) -> None:
        """Deliver what is left in a pipe, then close it (orphans may hold it open)."""
        while True:
            try:
                data = os.read(fd, CHUNK)
            except OSError:  # EAGAIN; EIO from a pty whose other side is gone
                break
            if not data:
                break
            child.on_output(child.outputs[fd], data)
        self.unwatch(fd)
        child.outputs.pop(fd, None)
        _close(fd)

    def _pipe_readable(self, child: Child, fd: int, revents: int) -> None:
        try:
            data = os.read(fd, CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            child.on_output(child.outputs[fd], data)
        elif revents & CLOSED or not data:
            self.unwatch(fd)
            child.outputs.pop(fd, None)
            _close(fd)

    def spawn(self, argv: list[str], env: dict[str, str], on_output: OutputHandler,
              on_exit: ExitHandler, cwd: str | None = None, stdin: bool = False,
              user: tuple[int, int] | None = None, tty: tuple[int, int] | None = None
              ) -> Child:
        """Start argv in its own session with piped output, or on a new pty of `tty` (rows,
        columns); returns the Child."""
        if tty is not None:
            return self._spawn_tty(argv, env, on_output, on_exit, cwd, user, tty)
        out_r, out_w = os.pipe()
        err_r, err_w = os.pipe()
        if stdin:
            in_r, in_w = os.pipe()
        else:
            in_r, in_w = os.open("/dev/null", os.O_RDONLY), -1
        pid = _spawn_fast(argv, env, (in_r, out_w, err_w)) if user is None and not cwd else None
        if pid is None:
            pid = os.fork()
            if pid == 0:
                _exec_child(argv, env, cwd, (in_r, out_w, err_w), user, None)
        for fd in (in_r, out_w, err_w):
            os.close(fd)
        if stdin:
            os.set_blocking(in_w, False)
        return self._track(Child(pid, {out_r: 1, err_r: 2}, in_w if stdin else None,
                                 on_output, on_exit))

    def _spawn_tty(self, argv: list[str], env: dict[str, str], on_output: OutputHandler,
                   on_exit: ExitHandler, cwd: str | None, user: tuple[int, int] | None,
                   size: tuple[int, int]) -> Child:
        master, slave = os.openpty()
        set_window_size(master, *size)  # before the child runs: it may ask at once
        pid = os.fork()
        if pid == 0:
            os.close(master)
            _exec_child(argv, env, cwd, (slave, slave, slave), user, slave)
        os.close(slave)
        return self._track(Child(pid, {master: 1}, os.dup(master), on_output, on_exit))

    def spawn_on_terminal(self, argv: list[str], env: dict[str, str], device: str,
                          on_exit: ExitHandler) -> Child:
        """Start argv with an existing terminal (the serial console) as its own."""
        fd = os.open(device, os.O_RDWR | os.O_NOCTTY)
        pid = os.fork()
        if pid == 0:
            _exec_child(argv, env, "/root", (fd, fd, fd), None, fd)
        os.close(fd)
        return self._track(Child(pid, {}, None, lambda _fd, _data: None, on_exit))

    def _track(self, child: Child) -> Child:
        self.children[child.pid] = child
        for fd in child.outputs:
            os.set_blocking(fd, False)
            self.watch(fd, READ, self._reader(child, fd))
            if self.holding:
                self.poller.unregister(fd)
                self.held.add(fd)
        return child

    def _reader(self, child: Child, fd: int) -> Callable[[int], None]:
        return lambda revents: self._pipe_readable(child, fd, revents)


def set_window_size(fd: int, rows: int, cols: int) -> None:
    import _struct as struct
    import fcntl
    import termios

    try:
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))
    except OSError:
        pass


RESET_SIGNALS = (signal.SIGCHLD, signal.SIGPIPE, signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def _resolve(name: str, search: str) -> str | None:
    """execvpe's lookup, by the command's own PATH (posix_spawnp would use the agent's)."""
    if "/" in name:
        return name
    for directory in search.split(":"):
        candidate = f"{directory or '.'}/{name}"
        if os.access(candidate, os.X_OK):
            return candidate
    return None


def _spawn_fast(argv: list[str], env: dict[str, str], stdio: tuple[int, int, int]) -> int | None:
    """Start a command the way vfork does, for the common case (no user, no cwd): under TCG
    fork() of the agent costs twice what posix_spawn does, on every exec and health check.
    None means: take the fork path (which also reports a command that cannot run)."""
    path = _resolve(argv[0], env.get("PATH", ""))
    if path is None or any(fd == target for target, fd in enumerate(stdio)):
        return None
    try:
        return os.posix_spawn(path, argv, env, setsid=True, setsigdef=RESET_SIGNALS,
                              file_actions=[(os.POSIX_SPAWN_DUP2, fd, target)
                                            for target, fd in enumerate(stdio)])
    except OSError:
        return None


def _exec_child(argv: list[str], env: dict[str, str], cwd: str | None,
                stdio: tuple[int, int, int], user: tuple[int, int] | None,
                controlling_tty: int | None) -> None:
    try:
        signal.set_wakeup_fd(-1)
        for signum in RESET_SIGNALS:
            signal.signal(signum, signal.SIG_DFL)
        os.setsid()
        if controlling_tty is not None:
            import fcntl
            import termios

            fcntl.ioctl(controlling_tty, termios.TIOCSCTTY, 0)
        for target, fd in enumerate(stdio):
            os.dup2(fd, target)
        if user is not None:
            os.setgroups([])
            os.setgid(user[1])
            os.setuid(user[0])
        if cwd:
            os.chdir(cwd)
        os.execve(_resolve(argv[0], env.get("PATH", "")) or argv[0], argv, env)
    except BaseException as error:
        os.write(2, f"cove-agent: cannot run {argv[0]}: {error}\n".encode())
    os._exit(127)


def _close(fd: int) -> None:
    try:
        os.close(fd)
    except OSError:
        pass
