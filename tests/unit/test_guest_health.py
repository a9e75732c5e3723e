"""The agent's health check, run on the host with the agent's own reactor: a port that
starts listening brings the first check forward (see health.LISTEN_WATCH)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from cove.guest.listening import local_check_port

SCRIPT = """
import os, socket, sys, time
from cove.guest import health
from cove.guest.reactor import Reactor

# no timer would check within the test: only a new listening port can bring a check forward
health.FIRST_CHECK_AFTER = health.STARTING_INTERVAL = 600.0
flag = sys.argv[1]
reactor = Reactor()
events = []
check = health.HealthCheck(reactor, "web", {"command": f"test -e {flag}", "interval": 600,
                                            "start_period": 600}, dict(os.environ), events.append)
check.start()
servers = []

def listen():
    open(flag, "w").close()
    servers.append(socket.create_server(("127.0.0.1", 0)))

reactor.later(0.5, listen)
started = time.monotonic()
while not events and time.monotonic() - started < 30:
    reactor.run_once()
print(events[0]["kind"] if events else "no check ran")
check.stop()
"""


def test_a_new_listening_port_triggers_the_first_check(tmp_path: Path) -> None:
    result = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "ready")],
                            capture_output=True, text=True, timeout=60, check=True)
    assert result.stdout.strip() == "healthy"



def test_local_check_port_only_for_a_lone_local_http_fetch() -> None:
    cases = {
        "curl -sf http://localhost:8080/": 8080,
        "curl -f http://127.0.0.1:9000/health?deep=1": 9000,
        "/usr/bin/wget -q -O- http://[::1]/": 80,
        "curl -sfk 'https://localhost/'": 443,
        "curl -sf http://localhost:8080/ || true": None,  # may pass with nothing listening
        "! curl http://localhost:8080/": None,
        "curl http://localhost:8080/ | cat": None,
        "curl --retry-connrefused --retry 5 http://localhost:8080/": None,
        "curl -x http://proxy:3128 http://localhost:8080/": None,
        "curl http://localhost.example.com:8080/": None,
        "curl http://db:5432/": None,
        "echo http://localhost:8080/": None,
        "curl http://localhost:8080/a http://localhost:8081/b": None,
        "curl http://localhost:99999/": None,
        "test -f /ready": None,
    }
    for command, port in cases.items():
        assert local_check_port(command, {}) == port, command
    assert local_check_port("curl http://localhost:8080/", {"HTTP_PROXY": "http://p"}) is None


CHECK_ONCE = """
import sys, time
from cove.guest.health import HealthCheck
from cove.guest.reactor import Reactor

def first_event(command, **settings):
    # PATH has no curl: a check the agent spawned would fail with sh's "not found"
    reactor = Reactor()
    events = []
    check = HealthCheck(reactor, "web", {"command": command, "retries": 1, "interval": 1,
                                         **settings}, {"PATH": "/nonexistent"}, events.append)
    check.start()
    started = time.monotonic()
    while not events and time.monotonic() - started < 20:
        reactor.run_once()
    check.stop()
    return events[0]
"""


UNHEARD = CHECK_ONCE + """
event = first_event(f"curl -sf http://127.0.0.1:{sys.argv[1]}/")
print(event["kind"], event["output"])
"""


def test_a_check_of_a_port_nobody_listens_on_fails_without_running() -> None:
    import socket

    with socket.socket() as probe:  # a port free now, and nobody listens on it
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # PATH has no curl: had the check run, its output would be sh's "not found"
    result = subprocess.run([sys.executable, "-c", UNHEARD, str(port)], capture_output=True,
                            text=True, timeout=60, check=True)
    assert result.stdout.strip() == (f"unhealthy nothing listens on port {port} "
                                     "(the check was not run)")


def test_only_a_plain_local_curl_is_made_by_the_agent() -> None:
    from cove.guest.probe import parse_curl_check

    made = {
        "curl -sf http://localhost:8080/": ("localhost", 8080, "/", True, True),
        "/usr/bin/curl -fsS http://127.0.0.1:9000/health?deep=1": (
            "127.0.0.1", 9000, "/health?deep=1", True, True),
        "curl --silent --fail -o /dev/null 'http://[::1]'": ("[::1]", 80, "/", True, False),
        "curl -s http://localhost:81?x": ("localhost", 81, "/?x", False, True),
    }
    for command, expected in made.items():
        request = parse_curl_check(command, {})
        assert request is not None, command
        assert (request.host, request.port, request.path, request.fail,
                request.keep_body) == expected, command
    for command in ("curl -sfk https://localhost/", "curl -sfL http://localhost:8080/",
                    "curl -H 'X: y' http://localhost:8080/", "curl -o out http://localhost/",
                    "wget -qO- http://localhost:8080/", "curl -sf http://localhost/ || true",
                    "curl -m 3 http://localhost:8080/"):
        assert parse_curl_check(command, {}) is None, command
    assert parse_curl_check("curl -sf http://localhost/", {"http_proxy": "http://p"}) is None


def test_the_agents_verdict_is_curls() -> None:
    from cove.guest.probe import parse_curl_check, verdict

    fail = parse_curl_check("curl -sf http://localhost:8080/", {})
    plain = parse_curl_check("curl -s http://localhost:8080/", {})
    assert fail is not None and plain is not None
    ok = b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi"
    missing = b"HTTP/1.1 404 Not Found\r\n\r\ngone"
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n"
    assert verdict(fail, ok) == (0, "hi")
    assert verdict(fail, missing) == (22, "curl: (22) The requested URL returned error: 404")
    assert verdict(plain, missing) == (0, "gone")  # without -f curl passes any status
    assert verdict(fail, chunked) == (0, "hi!")
    assert verdict(fail, b"") == (52, "curl: (52) Empty reply from server")
    assert verdict(fail, b"SSH-2.0-OpenSSH\r\n")[0] == 8


PROBE = CHECK_ONCE + """
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keeps the connection open: the length ends the reply
    def do_GET(self):
        body = b"<h1>up</h1>" if self.path == "/ok" else b"no"
        self.send_response(200 if self.path == "/ok" else 503)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
        print("served", self.path, self.headers["Host"], file=sys.stderr)
    def log_message(self, *args):
        pass

server = HTTPServer(("127.0.0.1", 0), Handler)
threading.Thread(target=server.serve_forever, daemon=True).start()
port = server.server_address[1]
for path in ("/ok", "/bad"):  # only the agent's own request can pass
    event = first_event(f"curl -sf http://localhost:{port}{path}")
    print(event["kind"], event["code"], event["output"])
"""


def test_the_agent_makes_a_plain_curl_check_itself() -> None:
    result = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.splitlines() == [
        "healthy 0 <h1>up</h1>",
        "unhealthy 22 curl: (22) The requested URL returned error: 503"]
    assert "served /ok localhost:" in result.stderr  # (curl's Host header)


SILENT = CHECK_ONCE + """
import socket

server = socket.create_server(("127.0.0.1", 0))  # accepts (the kernel's backlog), never answers
port = server.getsockname()[1]
event = first_event(f"curl -sf http://127.0.0.1:{port}/", timeout=0.5)
print(event["kind"], event["code"], event["output"])
"""


def test_a_server_that_never_answers_times_the_agents_check_out() -> None:
    result = subprocess.run([sys.executable, "-c", SILENT], capture_output=True, text=True,
                            timeout=60, check=True)
    assert result.stdout.strip() == "unhealthy 28 (health check timed out after 0.5 s)"
