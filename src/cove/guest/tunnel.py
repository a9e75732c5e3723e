"""A TCP connection the agent makes inside the guest for the host (port tunnels).

Bytes from the host arrive as `in` frames; bytes from the guest service leave as `out`
frames (data frames where the host reads them); the end is an `exit` frame. `_socket`
directly: `socket` imports enum.
"""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .reactor import Reactor

CHUNK = 65536


class Tunnel:
    def __init__(self, reactor: Reactor, channel: int, port: int,
                 send: Callable[[dict[str, object]], None],
                 send_data: Callable[[int, int, bytes], None],
                 closed: Callable[[int], None]) -> None:
        import _socket

        self.reactor = reactor
        self.channel = channel
        self.send = send
        self.send_data = send_data
        self.closed = closed
        self.pending = bytearray()
        self.eof = False
        self.sock = _socket.socket(_socket.AF_INET, _socket.SOCK_STREAM)
        self.sock.settimeout(2.0)
        try:
            self.sock.connect(("127.0.0.1", port))
        except OSError as error:
            self.sock.close()
            raise ValueError(f"nothing accepts connections on guest port {port} "
                             f"({error.strerror or error})") from None
        self.sock.setblocking(False)
        reactor.watch(self.sock.fileno(), 1, self._readable)

    def _readable(self, _revents: int) -> None:
        try:
            data = self.sock.recv(CHUNK)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        if data:
            self.send_data(self.channel, 1, data)
        else:
            self.close()

    def write(self, data: bytes, eof: bool) -> None:
        self.pending += data
        self.eof = self.eof or eof
        self.flush()

    def flush(self) -> None:
        try:
            sent = self.sock.send(self.pending) if self.pending else 0
        except BlockingIOError:
            sent = 0
        except OSError:
            self.close()
            return
        del self.pending[:sent]
        if self.pending:
            self.reactor.later(0.02, self.flush)
        elif self.eof:
            import _socket

            try:
                self.sock.shutdown(_socket.SHUT_WR)
            except OSError:
                pass

    def close(self) -> None:
        if self.sock.fileno() < 0:
            return
        self.reactor.unwatch(self.sock.fileno())
        self.sock.close()
        self.send({"t": "exit", "ch": self.channel, "code": 0})
        self.closed(self.channel)
