"""The agent's health check, run on the host with the agent's own reactor: a port that
starts listening brings the first check forward (see health.LISTEN_WATCH)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

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

