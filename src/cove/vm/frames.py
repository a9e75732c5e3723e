"""Every frame a guest sends, checked on the host before anything reads it.

The guest's root may have replaced cove's agent, so a frame is data from an attacker: each
kind has a table of its fields, their types and bounds, and which are required. A frame
that breaks it raises `GuestViolation`; the host then marks the VM broken with the reason,
fails what waits on the agent and stops reading (docs/security.md). Checked frames keep
only their known fields, so nothing a guest adds rides along into events or logs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cove.errors import CoveError

Frame = dict[str, Any]
Check = Callable[[object], bool]

MAX_TEXT = 64 * 1024  # characters of one error, output or log-data field
MAX_NAME = 128  # a service's name (the spec allows far less)
MAX_SERVICES = 256
MAX_ENTRIES = 20_000  # one `logs` answer (the agent keeps a ring per service)
MAX_CHANNEL = 2**31


class GuestViolation(CoveError):
    """The guest broke the agent protocol; the message says how (never its bytes raw)."""


def is_int(low: int, high: int) -> Check:
    return lambda v: type(v) is int and low <= v <= high


def is_text(most: int) -> Check:
    return lambda v: isinstance(v, str) and len(v) <= most


def is_number(v: object) -> bool:
    """An int or a finite float of a sane size (NaN fails the comparison)."""
    return isinstance(v, int | float) and type(v) is not bool and -1e12 < v < 1e12


def either(*checks: Check) -> Check:
    return lambda v: any(check(v) for check in checks)


def is_none(v: object) -> bool:
    return v is None


def is_bool(v: object) -> bool:
    return type(v) is bool


def is_caps(v: object) -> bool:
    return isinstance(v, list) and len(v) <= 32 and all(is_text(32)(c) for c in v)


SCALAR = either(is_none, is_bool, is_number, is_text(MAX_TEXT))


def is_service_status(v: object) -> bool:
    return isinstance(v, dict) and len(v) <= 16 and all(
        is_text(32)(k) and SCALAR(value) for k, value in v.items())


def is_services(v: object) -> bool:
    return isinstance(v, dict) and len(v) <= MAX_SERVICES and all(
        is_text(MAX_NAME)(k) and is_service_status(s) for k, s in v.items())


def is_log_entry(v: object) -> bool:
    return isinstance(v, dict) and set(v) <= {"svc", "ts", "fd", "text"} and \
        is_text(MAX_NAME)(v.get("svc")) and is_number(v.get("ts")) and \
        FD(v.get("fd")) and is_text(MAX_TEXT)(v.get("text"))


def is_entries(v: object) -> bool:
    return isinstance(v, list) and len(v) <= MAX_ENTRIES and all(map(is_log_entry, v))


def is_raw(v: object) -> bool:
    return isinstance(v, bytes)


CHANNEL = is_int(0, MAX_CHANNEL)
FD = is_int(0, 2)
PORT = is_int(1, 65535)
NAME = is_text(MAX_NAME)
TEXT = is_text(MAX_TEXT)
B64 = is_text(MAX_TEXT * 2)
COUNT = is_int(0, 2**53)

EVENT_FIELDS: dict[str, Check] = {
    "svc": NAME, "pid": is_int(0, 2**31), "code": either(is_none, is_int(-(2**31), 2**31)),
    "phase": is_text(16), "delay": is_number, "restarts": COUNT, "output": TEXT,
    "port": PORT, "frames": COUNT,
}
EVENT_KINDS = frozenset({
    "started", "exited", "failed", "restarting", "stopped", "healthy", "unhealthy",
    "listening", "closed", "log-dropped", "boot-finished", "nix-db-loaded", "shutdown",
    "poweroff",
})

# kind -> (fields and their checks, required fields)
SCHEMA: dict[str, tuple[dict[str, Check], frozenset[str]]] = {
    "hello": ({"v": COUNT, "caps": is_caps, "uptime": is_number, "services": is_services},
              frozenset({"v"})),
    "refused": ({"error": TEXT}, frozenset()),
    "res": ({"id": COUNT, "ok": is_bool, "error": TEXT, "uptime": is_number,
             "services": is_services, "entries": is_entries, "ch": CHANNEL,
             "pid": is_int(0, 2**31)}, frozenset({"id", "ok"})),
    "log": ({"svc": NAME, "fd": FD, "ts": is_number, "data": B64},
            frozenset({"svc", "fd", "data"})),
    "event": ({"kind": lambda v: isinstance(v, str) and v in EVENT_KINDS, "ts": is_number,
               **EVENT_FIELDS},
              frozenset({"kind"})),
    "out": ({"ch": CHANNEL, "fd": FD, "data": B64, "raw": is_raw}, frozenset({"ch", "fd"})),
    "exit": ({"ch": CHANNEL, "code": either(is_none, is_int(-(2**31), 2**31)),
              "error": TEXT}, frozenset({"ch"})),
    "ack": ({"ch": CHANNEL, "n": COUNT}, frozenset({"ch", "n"})),
}


def checked(frame: Frame) -> Frame:
    """`frame` with only its kind's known fields, each of the right type and size; or
    GuestViolation naming the kind and the field at fault."""
    kind = frame.get("t")
    if not isinstance(kind, str) or kind not in SCHEMA:
        raise GuestViolation(f"the guest sent a frame of unknown kind {printable(kind)}")
    fields, required = SCHEMA[kind]
    missing = required - frame.keys()
    if missing:
        raise GuestViolation(f"the guest sent a {kind} frame without "
                             f"{', '.join(sorted(missing))}")
    kept: Frame = {"t": kind}
    for key, value in frame.items():
        check = fields.get(key)
        if check is None:
            continue  # a field this host does not know: dropped, never passed on
        if not check(value):
            raise GuestViolation(f"the guest sent a {kind} frame whose {key} is "
                                 f"{describe(value)}")
        kept[key] = value
    return kept


def describe(value: object) -> str:
    """A value's type and size, never its contents (which could be anything)."""
    if isinstance(value, str | bytes | list | dict):
        return f"a {type(value).__name__} of {len(value)}"
    return f"{printable(value)} ({type(value).__name__})"


def printable(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
