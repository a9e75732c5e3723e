"""The values the Python API hands out: a checked spec, a VM's state, a command's result."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.errors import CoveError
from cove.spec import model
from cove.spec.load import load_spec, load_spec_dict
from cove.start.prepare import DictSource


class Spec:
    """A VM description, checked by the same table and rules as `cove check`.

    Make one with `Spec.load(path)` (a cove.toml or the directory holding it) or
    `Spec.from_dict({...})`; every problem is raised at once as `cove.SpecError`.
    """

    def __init__(self, checked: model.Spec, source: Path | DictSource) -> None:
        self.model = checked
        self.source = source

    @classmethod
    def load(cls, path: str | Path) -> Spec:
        checked = load_spec(path)
        return cls(checked, Path(path))

    @classmethod
    def from_dict(cls, values: dict[str, Any], base: str | Path | None = None) -> Spec:
        """`values` holds cove.toml's keys; relative paths in it are relative to `base`
        (the current directory unless given)."""
        base_dir = Path(base or Path.cwd()).resolve()
        checked = load_spec_dict(values, base_dir)  # a non-dict is refused there, clearly
        return cls(checked, DictSource(dict(values), base_dir))

    @property
    def name(self) -> str:
        return self.model.name

    def __repr__(self) -> str:
        where = self.source if isinstance(self.source, Path) else "dict"
        return f"<cove.Spec {self.name!r} from {where}>"


@dataclass(frozen=True)
class ExecResult:
    """What a finished command left: its exit code and everything it printed."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes

    def check_returncode(self) -> ExecResult:
        """Raise `cove.ExecFailed` unless the command exited 0."""
        if self.returncode != 0:
            raise ExecFailed(self)
        return self


class ExecFailed(CoveError):
    """A command exited non-zero where the caller asked for success (`check=True`)."""

    def __init__(self, result: ExecResult) -> None:
        tail = result.stderr.decode(errors="replace").strip()[-2000:]
        super().__init__(f"{result.argv[0]} exited {result.returncode}"
                         + (f":\n{tail}" if tail else ""))
        self.result = result


@dataclass(frozen=True)
class Chunk:
    """Output of a running command, as it came: `fd` 1 is stdout, 2 stderr."""

    fd: int
    data: bytes

    @property
    def stream(self) -> str:
        return "stderr" if self.fd == 2 else "stdout"


@dataclass(frozen=True)
class LogLine:
    service: str
    text: str
    fd: int
    timestamp: float | None


@dataclass(frozen=True)
class VMInfo:
    """A VM as the daemon saw it when asked."""

    name: str
    state: str
    health: str
    ports: tuple[str, ...]
    uptime: float | None
    warm_from: str | None
    services: dict[str, Any]
    error: str | None
    raw: dict[str, Any] = dataclasses.field(repr=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VMInfo:
        return cls(name=data["name"], state=data["state"], health=data["health"],
                   ports=tuple(data.get("ports", ())), uptime=data.get("uptime"),
                   warm_from=data.get("warm"), services=data.get("services", {}),
                   error=data.get("error"), raw=data)


@dataclass(frozen=True)
class SnapshotInfo:
    """A saved VM state (`vm.snapshot()`): start new VMs from it with `cove.from_snapshot`."""

    id: str
    kind: str  # "saved" for yours; "template", "suspend", "clone" for cove's own
    vm: str  # the VM it was saved from
    size: int  # bytes on disk
    created: float

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SnapshotInfo:
        return cls(str(data["id"]), str(data["kind"]), str(data["vm"]), int(data["size"]),
                   float(data["created"]))


def log_line(entry: dict[str, Any]) -> LogLine:
    return LogLine(str(entry.get("svc")), str(entry.get("text")), int(entry.get("fd", 1)),
                   entry.get("ts"))
