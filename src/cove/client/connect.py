"""Reaching the home's daemon: started on first use, as every cove command does, and one bare
GET for the quick `cove ls` (cli/entry.py). Standard library only and light, so that path
needs neither http.client nor the rest of the client."""

from __future__ import annotations

import os
import socket
import sys
import time

from cove.errors import CoveError
from cove.host.home import Home

TYPE_CHECKING = False  # typing costs milliseconds on every CLI call
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

DAEMON_START_TIMEOUT = 20.0  # adopting running VMs comes first


def start_daemon(home: Path) -> None:
    """Spawn `coved` for `home` (a second one exits at once: the home's lock) and wait until
    its socket answers."""
    import subprocess  # (here: `cove ls` imports this module on every call, and seldom starts)

    home.mkdir(parents=True, exist_ok=True)
    paths = Home(home)
    with paths.daemon_log.open("ab") as log:
        subprocess.Popen([sys.executable, "-m", "cove.daemon.server"], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True,
                         env={**os.environ, "COVE_HOME": str(home)})
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(paths.socket))
            return
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.02)
    raise CoveError("the cove daemon did not start", f"see {paths.daemon_log}")


def bare_get(path: str) -> Any:
    """One GET to the daemon (started if it is not running), as JSON; None on any failure.
    A bare HTTP/1.0 request on the socket, because http.client's import alone (email, ssl)
    costs more than all of `cove ls` should; the daemon answers the whole body and closes."""
    import json
    import socket

    from cove.host.home import prepare_home

    try:
        home = prepare_home()  # as every command: refuse an unsafe home, umask 077
    except Exception:
        return None
    for attempt in range(2):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(30)
                connection.connect(str(Home(home).socket))
                connection.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                answer = b"".join(iter(lambda: connection.recv(1 << 16), b""))
            head, _, body = answer.partition(b"\r\n\r\n")
            return json.loads(body) if head.split(b" ", 2)[1:2] == [b"200"] else None
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt:
                return None
        except Exception:
            return None
        try:
            start_daemon(home)  # no daemon yet: start it, as every command does, and ask again
        except Exception:
            return None
    return None
