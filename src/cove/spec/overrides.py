"""Docker-style command line overrides (-p, -e, --name) applied to a loaded Spec."""

from __future__ import annotations

import dataclasses
import re

from cove.errors import die
from cove.spec.model import Port, Proto, Spec
from cove.spec.settings import ENV_KEY_PATTERN, NAME_PATTERN

_PORT = re.compile(r"^(?:(?P<bind>[0-9.]+):)?(?P<host>\d+):(?P<guest>\d+)(?:/(?P<proto>tcp|udp))?$")


def parse_port(text: str) -> Port:
    """'8080:80', '127.0.0.1:5353:53/udp' -> Port."""
    match = _PORT.match(text)
    if not match:
        die(f"-p {text}: not a port mapping",
            "write HOST:GUEST, BIND:HOST:GUEST, with /udp for UDP (e.g. -p 8080:80)")
    host, guest = int(match["host"]), int(match["guest"])
    for value in (host, guest):
        if not 1 <= value <= 65535:
            die(f"-p {text}: port {value} is outside 1-65535")
    return Port(host=host, guest=guest, proto=Proto(match["proto"] or "tcp"),
                bind=match["bind"] or "127.0.0.1")


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.match(ENV_KEY_PATTERN, key):
        die(f"-e {text}: not an environment assignment", "write -e KEY=VALUE")
    return key, value


def apply_overrides(spec: Spec, ports: tuple[str, ...] = (), env: tuple[str, ...] = (),
                    name: str | None = None) -> Spec:
    changes: dict[str, object] = {}
    if ports:
        # -p for a guest port the spec already forwards moves that forward (a second
        # instance of a spec needs other host ports); other -p add forwards
        extra = [parse_port(p) for p in ports]
        moved = {(p.guest, p.proto) for p in extra} | {(p.bind, p.host, p.proto) for p in extra}
        kept = tuple(p for p in spec.ports
                     if (p.guest, p.proto) not in moved and (p.bind, p.host, p.proto) not in moved)
        changes["ports"] = kept + tuple(extra)
    if env:
        changes["env"] = {**spec.env, **dict(parse_env(e) for e in env)}
    if name is not None:
        if not re.match(NAME_PATTERN, name):
            die(f"--name {name}: not a valid name",
                "use lower-case letters, digits, '.', '_' and '-' (at most 63)")
        changes["name"] = name
    return dataclasses.replace(spec, **changes) if changes else spec  # type: ignore[arg-type]
