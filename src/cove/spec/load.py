"""cove.toml -> Spec. All validation of user input happens here."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from cove.errors import CoveError, die
from cove.spec.model import (
    Accel,
    Health,
    Hypervisor,
    Kernel,
    Port,
    Proto,
    Restart,
    Service,
    Source,
    Spec,
    VmRestart,
)
from cove.spec.settings import TOP_SETTINGS
from cove.spec.validate import Checker, Problem

SPEC_FILENAME = "cove.toml"


class SpecError(CoveError):
    """One or more problems in a spec file, each with its key path and a fix."""

    def __init__(self, file: str, problems: list[Problem]) -> None:
        self.file = file
        self.problems = problems
        super().__init__("\n".join(p.render(file) for p in problems))


def resolve_spec_path(target: str | Path) -> Path:
    """Accept a directory holding cove.toml, or the file itself."""
    path = Path(target)
    if path.is_dir():
        path = path / SPEC_FILENAME
    if not path.is_file():
        die(f"{target}: no {SPEC_FILENAME} here",
            f"pass a directory that holds {SPEC_FILENAME}, or the file itself")
    return path


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as handle:
            return tomllib.load(handle)
    except tomllib.TOMLDecodeError as error:
        raise SpecError(str(path), [Problem("", f"invalid TOML: {error}",
                                            "see https://toml.io for the syntax")]) from None
    except UnicodeDecodeError:
        raise SpecError(str(path), [Problem("", "is not UTF-8 text")]) from None
    except OSError as error:
        die(f"{path}: cannot read: {error.strerror}")


def load_spec(target: str | Path) -> Spec:
    path = resolve_spec_path(target)
    raw = read_toml(path)
    checker = Checker(path.parent.resolve())
    values = checker.table(raw, TOP_SETTINGS, "")
    check_cross_field(values, checker)
    if checker.problems:
        raise SpecError(str(path), checker.problems)
    return build_spec(path.resolve(), values)


def check_cross_field(values: dict[str, Any], checker: Checker) -> None:
    """Rules that involve more than one key."""
    seen: dict[tuple[str, int, str], int] = {}
    for index, port in enumerate(values.get("ports") or []):
        if "host" not in port:
            continue
        key = (port["bind"], port["host"], port["proto"])
        if key in seen:
            checker.problem(f"ports[{index}].host",
                            f"host port {port['host']}/{port['proto']} is already used by "
                            f"ports[{seen[key]}]", "each host port can be forwarded once")
        seen[key] = index
    kernel = values.get("kernel") or {}
    if kernel.get("modules") and not kernel.get("path"):
        checker.problem("kernel.modules", "only makes sense with kernel.path",
                        "set kernel.path to your own kernel, or remove kernel.modules")


def build_spec(path: Path, values: dict[str, Any]) -> Spec:
    services = tuple(
        Service(name=name, command=body["command"], pre_start=body["pre_start"],
                env=dict(body["env"]), restart=Restart(body["restart"]),
                stop_timeout=body["stop_timeout"],
                health=Health(**body["health"]) if body.get("health") else None)
        for name, body in values["services"].items()
    )
    restart = values["restart"] or {}
    ports = tuple(Port(host=p["host"], guest=p["guest"], proto=Proto(p["proto"]), bind=p["bind"])
                  for p in values["ports"])
    kernel = values["kernel"] or {}
    return Spec(
        file=path,
        name=values["name"],
        vcpu=values["vcpu"],
        memory_mib=values["memory"],
        packages=tuple(values["packages"]),
        services=services,
        ports=ports,
        env=dict(values["env"]),
        kernel=Kernel(package=kernel.get("package", "linux-image-cloud-amd64"),
                      path=kernel.get("path"), modules=kernel.get("modules"),
                      cmdline=kernel.get("cmdline", "")),
        source=Source(values["source"]),
        hypervisor=Hypervisor(values["hypervisor"]),
        accel=Accel(values["accel"]),
        restart=VmRestart(policy=Restart(restart.get("policy", "on-failure")),
                          max=restart.get("max", 5)),
    )
