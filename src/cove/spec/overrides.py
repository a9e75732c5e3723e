"""Docker-style command line overrides (-p, -e, --name) applied to a loaded Spec."""

from __future__ import annotations

import dataclasses
import ipaddress
import re
from pathlib import Path

from cove.errors import die
from cove.spec.model import Port, Proto, Spec
from cove.spec.settings import ENV_KEY_PATTERN, valid_name

_PORT = re.compile(r"(?:(?P<bind>[0-9.]+):)?(?P<host>[0-9]+):(?P<guest>[0-9]+)"
                   r"(?:/(?P<proto>tcp|udp))?")


def parse_port(text: str) -> Port:
    """'8080:80', '127.0.0.1:5353:53/udp' -> Port."""
    match = _PORT.fullmatch(text)
    if not match:
        die(f"-p {text}: not a port mapping",
            "write HOST:GUEST, BIND:HOST:GUEST, with /udp for UDP (e.g. -p 8080:80)")
    bind = match["bind"] or "127.0.0.1"
    try:
        bind = str(ipaddress.IPv4Address(bind))
    except ValueError:
        die(f"-p {text}: {bind} is not an IPv4 address",
            "write the address like 127.0.0.1 (loopback) or 0.0.0.0 (every address)")
    host, guest = int(match["host"]), int(match["guest"])
    for value in (host, guest):
        if not 1 <= value <= 65535:
            die(f"-p {text}: port {value} is outside 1-65535")
    return Port(host=host, guest=guest, proto=Proto(match["proto"] or "tcp"), bind=bind)


def parse_env(text: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not re.fullmatch(ENV_KEY_PATTERN, key):
        die(f"-e {text}: not an environment assignment", "write -e KEY=VALUE")
    return key, value


def absolute(text: str) -> str:
    """Command line paths are relative to where cove runs, not to the spec."""
    return str(Path(text).expanduser().resolve())


def parse_share(text: str) -> dict[str, object]:
    """--share SRC:DST[:ro|:rw] (read-only unless :rw)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or (len(parts) == 3 and parts[2] not in ("ro", "rw")):
        die(f"--share {text}: not a share", "write HOSTDIR:GUESTDIR, with :rw to let the "
            "guest write (e.g. --share ./src:/src:rw)")
    return {"source": absolute(parts[0]), "target": parts[1],
            "readonly": len(parts) == 2 or parts[2] == "ro"}


def parse_volume(text: str) -> tuple[str, dict[str, object]]:
    """-v like Docker: NAME:DST[:SIZE] or ./IMAGE:DST:SIZE is a volume; DIR:DST[:ro] shares
    a host directory (read-write unless :ro, as with Docker's bind mounts)."""
    parts = text.split(":")
    if len(parts) not in (2, 3) or not parts[0] or not parts[1]:
        die(f"-v {text}: not a volume", "write NAME:/guest/path[:SIZE], ./image:/path:SIZE, "
            "or ./dir:/path[:ro]")
    source, target = parts[0], parts[1]
    option = parts[2] if len(parts) == 3 else None
    if Path(source).expanduser().is_dir() and ("/" in source or source.startswith(".")):
        if option not in (None, "ro", "rw"):
            die(f"-v {text}: {source} is a directory, so this shares it; a size makes no "
                "sense here", "for a volume name an image file, e.g. ./data.ext4")
        return "shares", {"source": absolute(source), "target": target,
                          "readonly": option == "ro"}
    volume: dict[str, object] = {"source": source if "/" not in source and
                                 not source.startswith(".") else absolute(source),
                                 "target": target}
    if option is not None:
        volume["size"] = option if not option.isdigit() else int(option)
    return "volumes", volume


def command_line_spec(shares: tuple[str, ...] = (), volumes: tuple[str, ...] = (),
                      network: str | None = None, ephemeral: bool = False,
                      config: str | None = None, secrets: str | None = None
                      ) -> dict[str, object]:
    """The raw additions the command line makes, for load_spec to check with the file."""
    extra: dict[str, list[object]] = {"shares": [parse_share(s) for s in shares], "volumes": []}
    for text in volumes:
        key, entry = parse_volume(text)
        extra[key].append(entry)
    result: dict[str, object] = {k: v for k, v in extra.items() if v}
    if network is not None:
        result["network"] = network
    if ephemeral:
        result["ephemeral"] = True
    for key, value in (("config", config), ("secrets", secrets)):
        if value is not None:
            result[key] = absolute(value)
    return result


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
        if not valid_name(name):
            die(f"--name {name}: not a valid name",
                "use lower-case letters, digits, '.', '_' and '-' (at most 63)")
        changes["name"] = name
    return dataclasses.replace(spec, **changes) if changes else spec  # type: ignore[arg-type]
