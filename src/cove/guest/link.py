"""The agent's end of the host channel: a virtio-serial port found by its name.

The host speaks first (hello). While no host is connected the port reports POLLHUP and
writes would block, so frames worth keeping wait in a bounded queue until the next hello.
"""

from __future__ import annotations

import errno
import select
import time
from _operator import _compare_digest  # hmac's constant-time compare, without hmac

from . import proto
from .lean import deque, os

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .reactor import Reactor

POLL_IN = select.POLLIN
POLL_OUT = select.POLLOUT
RECHECK = 0.25  # how often to look for a host while none is connected
PENDING_LIMIT = 4 * 1024 * 1024  # bytes of frames kept while no host listens
OUT_LIMIT = 16 * 1024 * 1024  # a last resort: output is held long before (CONGESTED)
CONGESTED = 1024 * 1024  # bytes waiting for the host: stop reading the children's output
FLOWING = 256 * 1024  # ... and read it again once the host has taken this much of it
MAX_CANDIDATES = 4  # vsock connections waiting to prove themselves with the token
CANDIDATE_TIMEOUT = 5.0  # seconds a new connection has to send its hello


def say_refused() -> None:
    os.write(2, b"cove-agent: refused a host connection without this boot's token\n")


def find_port(name: str, timeout: float = 10.0) -> str:
    """The /dev node of the virtio-serial port called `name` (no udev in the guest)."""
    deadline = time.monotonic() + timeout
    base = "/sys/class/virtio-ports"
    while True:
        try:
            entries = os.listdir(base)
        except FileNotFoundError:
            entries = []
        for entry in entries:
            try:
                with open(f"{base}/{entry}/name") as handle:
                    if handle.read().strip() == name:
                        return f"/dev/{entry}"
            except OSError:
                continue
        if time.monotonic() > deadline:
            raise RuntimeError(f"no virtio-serial port named {name}")
        time.sleep(0.05)


class HostLink:
    """Framed frames over a virtio-serial port (or, in subclasses, a stream socket)."""

    def __init__(self, reactor: Reactor, path: str,
                 on_frame: Callable[[dict[str, object]], None],
                 on_hello: Callable[[dict[str, object]], None], token: str = "") -> None:
        self.reactor = reactor
        self.token = token
        self.fd = self.open(path)
        self.on_frame = on_frame
        self.on_hello = on_hello
        self.connected = False
        self.binary = False
        self.decoder = proto.Decoder()
        self.out = bytearray()
        self.pending: deque[bytes] = deque()
        self.pending_bytes = 0
        self.dropped = 0
        self.listen()

    def open(self, path: str) -> int:
        return os.open(path, os.O_RDWR | os.O_NONBLOCK | os.O_CLOEXEC)

    def listen(self) -> None:
        self.reactor.watch(self.fd, POLL_IN, self._ready)

    def _ready(self, revents: int) -> None:
        if revents & POLL_OUT:
            self.flush()
        if revents & POLL_IN:
            try:
                data = os.read(self.fd, 1 << 16)
            except BlockingIOError:
                return
            except OSError:
                data = b""
            if data:
                self._received(data)
                return
        if revents & (select.POLLHUP | select.POLLERR) or revents & POLL_IN:
            self._hangup()

    def _received(self, data: bytes) -> None:
        try:
            frames = self.decoder.feed(data)
        except proto.ProtocolError:
            self._hangup()
            return
        for frame in frames:
            if frame.get("t") == "hello":
                if not self._token_ok(frame.get("token")):
                    self._refuse()
                    return
                self._greeted(frame)
            elif self.connected:
                self.on_frame(frame)

    def _token_ok(self, offered: object) -> bool:
        """The per-boot secret the host got with this boot's initrd: without it, nobody
        (another local user on a vsock transport, say) gets a channel into the guest."""
        if not self.token:
            return True  # an agent run outside a VM by tests with no token configured
        return isinstance(offered, str) and _compare_digest(offered.encode(), self.token.encode())

    def _refuse(self) -> None:
        say_refused()
        data = proto.encode({"t": "refused", "error": "wrong or missing token"})
        try:
            os.write(self.fd, data)
        except OSError:
            pass
        self._hangup()

    def _greeted(self, frame: dict[str, object]) -> None:
        self.connected = True
        caps = frame.get("caps")
        self.binary = isinstance(caps, list) and "binary" in caps  # it reads data frames
        self.out.clear()
        self.on_hello(frame)
        while self.pending:
            self._queue(self.pending.popleft())
        self.pending_bytes = 0
        if self.dropped:
            self.send({"t": "event", "kind": "log-dropped", "frames": self.dropped})
            self.dropped = 0

    def _hangup(self) -> None:
        self.connected = False
        self.out.clear()
        self.reactor.release_output()  # no host: output is kept (bounded) or dropped
        self.decoder = proto.Decoder()
        self.reactor.unwatch(self.fd)
        self.wait_for_host()

    def wait_for_host(self) -> None:
        """A virtio port stays open: look again for a host in a moment."""
        self.reactor.later(RECHECK, lambda: self.reactor.watch(self.fd, POLL_IN, self._ready))

    def send(self, frame: dict[str, object], keep: bool = False) -> None:
        """Send now if a host listens; else keep the frame (if `keep`) for the next host."""
        data = proto.encode(frame)
        if self.connected:
            self._queue(data)
        elif keep:
            self.pending.append(data)
            self.pending_bytes += len(data)
            while self.pending_bytes > PENDING_LIMIT:
                self.pending_bytes -= len(self.pending.popleft())
                self.dropped += 1

    def send_data(self, channel: int, fd: int, data: bytes) -> None:
        """A stream's output (exec, tunnel): raw in a data frame where the host reads them."""
        if not self.connected:
            return
        if self.binary:
            self._queue(proto.encode_data("out", channel, fd, data))
        else:
            self._queue(proto.encode({"t": "out", "ch": channel, "fd": fd,
                                      "data": proto.b64(data)}))

    def _queue(self, data: bytes) -> None:
        if len(self.out) > OUT_LIMIT:
            self.dropped += 1
            return
        was_empty = not self.out
        self.out += data
        if was_empty:
            self.flush()
        if len(self.out) > CONGESTED:
            self.reactor.hold_output()

    def flush(self) -> None:
        while self.out:
            try:
                written = os.write(self.fd, self.out)
            except BlockingIOError:
                break
            except OSError as error:
                if error.errno == errno.EAGAIN:
                    break
                self._hangup()
                return
            del self.out[:written]
        if self.reactor.holding and len(self.out) < FLOWING:
            self.reactor.release_output()
        if self.fd in self.reactor.handlers:
            self.reactor.modify(self.fd, POLL_IN | (POLL_OUT if self.out else 0))

    def connection_ready(self, revents: int) -> None:
        self._ready(revents)

    def flush_blocking(self, timeout: float) -> None:
        """Push out what is queued before the VM powers off."""
        deadline = time.monotonic() + timeout
        while self.out and self.connected and time.monotonic() < deadline:
            self.flush()
            if self.out:
                time.sleep(0.01)


class SocketLink(HostLink):
    """The same frames over a listening stream socket: one host connection at a time.

    Used with AF_VSOCK (Firecracker, Cloud Hypervisor, crosvm, kvmtool); tests use it over
    any socket. `_socket` directly: the `socket` module imports enum and selectors.
    """

    def __init__(self, reactor: Reactor, listener: object,
                 on_frame: Callable[[dict[str, object]], None],
                 on_hello: Callable[[dict[str, object]], None], token: str = "") -> None:
        self.listener = listener
        self.candidates: dict[int, proto.Decoder] = {}  # connections yet to say hello
        super().__init__(reactor, "", on_frame, on_hello, token)

    def open(self, path: str) -> int:
        return -1

    def listen(self) -> None:
        self.reactor.watch(self.listener.fileno(), POLL_IN,  # type: ignore[attr-defined]
                           self._accept)

    def _accept(self, _revents: int) -> None:
        """A new connection is a candidate until its hello carries this boot's token: the
        host's authenticated connection stays until then, so a local user who can reach
        the vsock port cannot cut the host off by connecting."""
        try:
            fd, _address = self.listener._accept()  # type: ignore[attr-defined]
        except OSError:
            return
        if len(self.candidates) >= MAX_CANDIDATES:
            self._drop_candidate(next(iter(self.candidates)))
        os.set_blocking(fd, False)
        decoder = self.candidates[fd] = proto.Decoder()
        self.reactor.watch(fd, POLL_IN, lambda revents: self._candidate_ready(fd, revents))
        # (this candidate's: the fd's number may be another connection's by then)
        self.reactor.later(CANDIDATE_TIMEOUT, lambda: self._drop_candidate(fd, decoder))

    def _candidate_ready(self, fd: int, revents: int) -> None:
        decoder = self.candidates.get(fd)
        if decoder is None:
            return
        try:
            data = os.read(fd, 1 << 16)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        try:
            frames = decoder.feed(data) if data else None
        except proto.ProtocolError:
            frames = None
        if not frames:
            if not data or revents & (select.POLLHUP | select.POLLERR) or frames is None:
                self._drop_candidate(fd)
            return
        if frames[0].get("t") != "hello" or not self._token_ok(frames[0].get("token")):
            say_refused()
            try:
                os.write(fd, proto.encode({"t": "refused", "error": "wrong or missing token"}))
            except OSError:
                pass
            self._drop_candidate(fd)
            return
        self._promote(fd, decoder, frames)

    def _promote(self, fd: int, decoder: proto.Decoder, frames: list[dict[str, object]]
                 ) -> None:
        """The candidate proved itself: it replaces the old connection."""
        del self.candidates[fd]
        self.reactor.unwatch(fd)
        if self.fd >= 0:
            self.reactor.unwatch(self.fd)
            os.close(self.fd)
        self.fd, self.decoder, self.connected = fd, decoder, False
        self.reactor.watch(fd, POLL_IN, self._ready)
        self._greeted(frames[0])
        for frame in frames[1:]:
            self.on_frame(frame)

    def _drop_candidate(self, fd: int, which: proto.Decoder | None = None) -> None:
        if fd in self.candidates and which in (None, self.candidates[fd]):
            del self.candidates[fd]
            self.reactor.unwatch(fd)
            os.close(fd)

    def _ready(self, revents: int) -> None:
        if self.fd >= 0:
            super()._ready(revents)

    def wait_for_host(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1

    def flush(self) -> None:
        if self.fd >= 0:
            super().flush()


def vsock_listener(port: int) -> object:
    import _socket

    return _listen(_socket.socket(_socket.AF_VSOCK, _socket.SOCK_STREAM),
                   (_socket.VMADDR_CID_ANY, port))


def unix_listener(path: str) -> object:
    import _socket

    return _listen(_socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM), path)


def _listen(listener: object, address: object) -> object:
    listener.bind(address)  # type: ignore[attr-defined]
    listener.listen(1)  # type: ignore[attr-defined]
    listener.setblocking(False)  # type: ignore[attr-defined]
    return listener
