"""A tty exec's window size, run on the host with the agent's own reactor: the pty has its
size before the command starts, so a program that asks at once sees it (a resize frame
sent after the spawn lost that race to a quick `stty size`)."""

from __future__ import annotations

import subprocess
import sys

SCRIPT = """
import os, sys, time
from cove.guest.reactor import Reactor

reactor = Reactor()
output, codes = [], []
reactor.spawn(["stty", "size"], dict(os.environ), lambda _fd, data: output.append(data),
              codes.append, tty=(31, 101))
started = time.monotonic()
while not codes and time.monotonic() - started < 30:
    reactor.run_once()
print(repr(b"".join(output).decode().strip()), codes)
"""


def test_a_tty_exec_has_its_size_before_it_starts() -> None:
    for _ in range(5):  # the child may run before its parent goes on, or after
        result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True,
                                text=True, check=True, timeout=60)
        assert result.stdout.strip() == "'31 101' [0]", result.stderr
