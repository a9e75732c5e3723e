"""Printing what a running VM says: service output with a prefix, events as sentences."""

from __future__ import annotations

import base64
import sys
from datetime import datetime
from typing import Any, TextIO

from cove.cli.table import printable
from cove.host.lines import LineSplitter


def progress(text: str) -> None:
    print(f"cove: {text}", file=sys.stderr, flush=True)


def describe_event(event: dict[str, Any]) -> str | None:
    kind, svc = event.get("kind"), event.get("svc")
    match kind:
        case "started":
            return f"service {svc} started (pid {event.get('pid')})"
        case "exited":
            return f"service {svc} exited with code {event.get('code')}"
        case "failed":
            return (f"service {svc}: {event.get('phase')} failed with code {event.get('code')}"
                    " (its output is above)")
        case "restarting":
            return (f"service {svc} restarts in {event.get('delay')} s "
                    f"(restart #{event.get('restarts')})")
        case "stopped":
            return f"service {svc} stopped"
        case "log-dropped":
            return f"{event.get('frames')} log chunks were dropped while no host listened"
        case _:
            return None


class ServicePrinter:
    """Prefixes each line of service output with its service name, like compose."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self.out = out
        self.lines = LineSplitter()
        self.escape = out.isatty()

    def log(self, svc: str, fd: int, data: bytes) -> None:
        for line in self.lines.feed(svc, fd, data.decode(errors="replace")):
            text = f"{svc} | {line}"
            self.out.write(f"{printable(text) if self.escape else text}\n")
        self.out.flush()

    def frame(self, frame: dict[str, Any]) -> None:
        if frame.get("t") == "log":
            self.log(str(frame.get("svc")), int(frame.get("fd", 1)),
                     base64.b64decode(frame.get("data", "")))
        elif frame.get("t") == "broken":
            progress(f"the guest broke the agent protocol: {printable(str(frame.get('error')))}")
        elif frame.get("t") == "event":
            sentence = describe_event(frame)
            if sentence:
                progress(printable(sentence) if sys.stderr.isatty() else sentence)


def write_stream(fd: int, data: bytes) -> None:
    stream = sys.stderr if fd == 2 else sys.stdout
    stream.buffer.write(data)
    stream.flush()


def explain(error: BaseException) -> tuple[str, str | None]:
    """One line (and a hint) for a failure that is not a CoveError: no traceback reaches a
    user, whatever went wrong."""
    if isinstance(error, PermissionError):
        return (f"permission denied: {error.filename or error}",
                "run cove as the user that owns that file, or check its mode")
    if isinstance(error, FileNotFoundError):
        return (f"no such file: {error.filename or error}", None)
    if isinstance(error, TimeoutError):
        return ("timed out waiting for the cove daemon or a VM",
                "see `cove events` and coved.log in the cove home")
    if isinstance(error, ConnectionError):
        return (f"lost the connection to the cove daemon: {error}",
                "it may have stopped; any cove command starts it again (see coved.log)")
    if isinstance(error, OSError):
        return (f"{error.strerror or error}" + (f": {error.filename}" if error.filename else ""),
                None)
    return (f"internal error: {type(error).__name__}: {error}",
            "this is a cove bug; please report it with the command you ran")


def format_log(entry: dict[str, Any], timestamps: bool,
               escape: bool | None = None) -> str:
    """One log line as `cove logs` prints it; control characters written out when stdout
    is a terminal (`escape` None), or as told."""
    prefix = f"{log_time(entry.get('ts'))} " if timestamps else ""
    line = f"{prefix}{entry.get('svc')} | {entry.get('text')}"
    return printable(line) if (sys.stdout.isatty() if escape is None else escape) else line


def log_time(ts: object) -> str:
    """A log entry's time; a missing or impossible one (an old or damaged log file) as ?."""
    try:
        return datetime.fromtimestamp(float(ts)).isoformat(timespec="milliseconds")  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError, OSError):
        return "?"
