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


UNHEARD = """
import os, sys
from cove.guest.health import HealthCheck
from cove.guest.reactor import Reactor

reactor = Reactor()
events = []
check = HealthCheck(reactor, "web", {"command": f"curl -sf http://127.0.0.1:{sys.argv[1]}/",
                                     "retries": 1, "interval": 1}, {"PATH": "/nonexistent"},
                    events.append)
check.start()
while not events:
    reactor.run_once()
print(events[0]["kind"], events[0]["output"])
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
