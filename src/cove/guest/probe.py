"""Health checks that are one plain curl of a local HTTP URL, made by the agent itself.

`curl -sf http://localhost:8080/` is the most common health check there is, and under TCG
each run costs the guest 0.35 s of vCPU (1.4 s for the first, while its libraries are still
cold) — taken from the service that is starting, and every interval after that. The agent
makes the same request with a non-blocking socket instead: same URL, same verdict (with
`-f`, a status of 400 or more fails with curl's exit code 22), same exit codes for the
failures curl would report. Any option beyond -s/-S/-f (and `-o /dev/null`), shell syntax,
a proxy in the environment, https, or another host, and the command runs as written.
"""

from __future__ import annotations

import errno

from .listening import local_url

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Callable

    from .reactor import Reactor

POLL_IN = 1
POLL_OUT = 4
SHORT_FLAGS = set("sSf")
LONG_FLAGS = {"--silent", "--show-error", "--fail"}
# curl's exit codes for what can go wrong here
COULD_NOT_CONNECT = 7
WEIRD_REPLY = 8
HTTP_ERROR = 22
EMPTY_REPLY = 52
RECV_ERROR = 56
READ_LIMIT = 65536  # what a verdict and the check's shown output need at most


class HttpRequest:
    """What a qualifying curl command asks for."""

    __slots__ = ("addresses", "fail", "host", "keep_body", "path", "port")

    def __init__(self, host: str, port: int, path: str, fail: bool, keep_body: bool) -> None:
        self.host = host
        self.port = port
        self.path = path
        self.fail = fail
        self.keep_body = keep_body
        # "localhost" as curl resolves it in a guest: IPv4 first, then IPv6
        self.addresses = {"localhost": ["127.0.0.1", "::1"], "[::1]": ["::1"]}.get(
            host, ["127.0.0.1"])

    def head(self) -> bytes:
        host = self.host if self.port == 80 else f"{self.host}:{self.port}"
        return (f"GET {self.path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: curl\r\n"
                "Accept: */*\r\nConnection: close\r\n\r\n").encode()


def parse_curl_check(command: str, env: dict[str, str]) -> HttpRequest | None:
    """The request a lone `curl [-sSf] [-o /dev/null] http://localhost[:port]/path` makes,
    or None when the command should run as written."""
    url = local_url(command, env)
    words = command.split()
    if url is None or url[0] != "http" or words[0].rsplit("/", 1)[-1] != "curl":
        return None
    fail = False
    keep_body = True
    rest = iter(words[1:])
    for word in rest:
        if "://" in word:
            continue  # the URL: local_url has it
        if word == "-o" and next(rest, "") == "/dev/null":
            keep_body = False
        elif word in LONG_FLAGS or (word[:1] == "-" and word[1:2] != "-" and len(word) > 1
                                    and set(word[1:]) <= SHORT_FLAGS):
            fail = fail or word == "--fail" or (word[1] != "-" and "f" in word)
        else:
            return None
    _scheme, host, port, tail = url
    path = tail.split("#", 1)[0]
    if not path.startswith("/"):
        path = "/" + path  # "?q" or "" (curl asks for "/")
    return HttpRequest(host, port, path, fail, keep_body)


def verdict(request: HttpRequest, reply: bytes) -> tuple[int, str]:
    """curl's exit code and output for this reply (everything read, or READ_LIMIT of it)."""
    if not reply:
        return EMPTY_REPLY, "curl: (52) Empty reply from server"
    head, _, body = reply.partition(b"\r\n\r\n")
    status_line = head.split(b"\r\n", 1)[0].split()
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") \
            or not status_line[1].isdigit():
        return WEIRD_REPLY, "curl: (8) Weird server reply"
    status = int(status_line[1])
    if request.fail and status >= 400:
        return HTTP_ERROR, f"curl: (22) The requested URL returned error: {status}"
    if b"transfer-encoding: chunked" in head.lower():
        body = dechunk(body)
    return 0, body.decode(errors="replace") if request.keep_body else ""


def dechunk(body: bytes) -> bytes:
    """A chunked body's data (as far as it was read)."""
    data = bytearray()
    while body:
        size_line, _, body = body.partition(b"\r\n")
        try:
            size = int(size_line.split(b";", 1)[0], 16)
        except ValueError:
            break
        if size == 0:
            break
        data += body[:size]
        body = body[size + 2:]
    return bytes(data)


def complete(reply: bytes) -> bool:
    """Whether a reply is all there before the server closes (Content-Length or chunked
    end), so a server that keeps the connection open does not hold the check up."""
    head, found, body = reply.partition(b"\r\n\r\n")
    if not found:
        return False
    for line in head.lower().split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip() == b"content-length" and value.strip().isdigit():
            return len(body) >= int(value)
        if name.strip() == b"transfer-encoding" and b"chunked" in value:
            return body.endswith(b"0\r\n\r\n")
    return False


class HttpProbe:
    """One request, made on the agent's reactor: done(code, output) is called once, unless
    cancel() came first."""

    def __init__(self, reactor: Reactor, request: HttpRequest,
                 done: Callable[[int, str], None]) -> None:
        self.reactor = reactor
        self.request = request
        self.done = done
        self.addresses = list(request.addresses)
        self.reply = bytearray()
        self.unsent = request.head()
        self.sock: object = None
        self._connect()

    def cancel(self) -> None:
        if self.sock is not None:
            self.reactor.unwatch(self.sock.fileno())  # type: ignore[attr-defined]
            self.sock.close()  # type: ignore[attr-defined]
            self.sock = None

    def _finish(self, code: int, output: str) -> None:
        self.cancel()
        self.done(code, output)

    def _connect(self) -> None:
        import _socket

        address = self.addresses.pop(0)
        family = _socket.AF_INET6 if ":" in address else _socket.AF_INET
        try:
            self.sock = sock = _socket.socket(family, _socket.SOCK_STREAM)
        except OSError:  # (a guest without IPv6)
            self._refused()
            return
        sock.setblocking(False)
        error = sock.connect_ex((address, self.request.port))
        if error not in (0, errno.EINPROGRESS):
            self._refused()
            return
        self.reactor.watch(sock.fileno(), POLL_OUT, self._writable)

    def _refused(self) -> None:
        self.cancel()
        if self.addresses:
            self._connect()
            return
        self.done(COULD_NOT_CONNECT, f"curl: (7) Failed to connect to {self.request.host} "
                                     f"port {self.request.port}")

    def _writable(self, _revents: int) -> None:
        import _socket

        sock = self.sock
        if sock.getsockopt(_socket.SOL_SOCKET, _socket.SO_ERROR):  # type: ignore[attr-defined]
            self._refused()
            return
        try:
            sent = sock.send(self.unsent)  # type: ignore[attr-defined]
        except BlockingIOError:
            return
        except OSError:
            self._refused()
            return
        self.unsent = self.unsent[sent:]
        if not self.unsent:
            self.reactor.unwatch(sock.fileno())  # type: ignore[attr-defined]
            self.reactor.watch(sock.fileno(), POLL_IN, self._readable)  # type: ignore[attr-defined]

    def _readable(self, _revents: int) -> None:
        try:
            data = self.sock.recv(READ_LIMIT)  # type: ignore[attr-defined]
        except BlockingIOError:
            return
        except OSError:
            if self.reply:
                self._finish(*verdict(self.request, bytes(self.reply)))
            else:
                self._finish(RECV_ERROR, "curl: (56) Failure when receiving data from the peer")
            return
        self.reply += data
        if not data or len(self.reply) >= READ_LIMIT or complete(bytes(self.reply)):
            self._finish(*verdict(self.request, bytes(self.reply)))
