"""Starting the home's daemon on first use, as every cove command does. Standard library only
and light, so the quick `cove ls` (cli/entry.py) can start it without the HTTP client."""

from __future__ import annotations

import os
import socket
import sys
import time

from cove.errors import CoveError

TYPE_CHECKING = False  # typing costs milliseconds on every CLI call
if TYPE_CHECKING:
    from pathlib import Path

DAEMON_START_TIMEOUT = 20.0  # adopting running VMs comes first
SOCKET_NAME = "coved.sock"  # in the home; the daemon serves its API there


def start_daemon(home: Path) -> None:
    """Spawn `coved` for `home` (a second one exits at once: the home's lock) and wait until
    its socket answers."""
    import subprocess  # (here: `cove ls` reads SOCKET_NAME on every call, and seldom starts)

    home.mkdir(parents=True, exist_ok=True)
    with (home / "coved.log").open("ab") as log:
        subprocess.Popen([sys.executable, "-m", "cove.daemon.server"], stdin=subprocess.DEVNULL,
                         stdout=log, stderr=log, start_new_session=True,
                         env={**os.environ, "COVE_HOME": str(home)})
    deadline = time.monotonic() + DAEMON_START_TIMEOUT
    while time.monotonic() < deadline:
        try:
            with socket.socket(socket.AF_UNIX) as probe:
                probe.connect(str(home / SOCKET_NAME))
            return
        except (FileNotFoundError, ConnectionRefusedError):
            time.sleep(0.02)
    raise CoveError("the cove daemon did not start", f"see {home / 'coved.log'}")
