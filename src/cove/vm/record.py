"""A VM's record on disk: everything needed to boot it again or adopt it after a restart."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove.host.fsutil import write_atomic
from cove.image.build import Artifacts, artifacts_from_json, artifacts_to_json
from cove.plan.vmplan import Plan
from cove.spec.model import Restart, VmRestart


@dataclass(frozen=True)
class VmRecord:
    plan: Plan
    artifacts: Artifacts
    restart: VmRestart = field(default_factory=VmRestart)
    spec_file: str = ""
    created: float = 0.0
    forwards: tuple[tuple[str, bool], ...] = ()  # added at run time: ("[bind:]host:guest", tunnel)
    phase: str = "booting"  # saved before the hypervisor starts; "running" once it answered;
    # "suspended" while its state is on disk
    snapshot: str = ""  # the snapshot this VM needs: its suspend image, or its clone source

    @property
    def name(self) -> str:
        return self.plan.name

    def to_json(self) -> dict[str, Any]:
        return {"plan": self.plan.to_json(), "artifacts": artifacts_to_json(self.artifacts),
                "restart": {"policy": self.restart.policy.value, "max": self.restart.max},
                "spec_file": self.spec_file, "created": self.created,
                "forwards": [list(f) for f in self.forwards], "phase": self.phase,
                "snapshot": self.snapshot}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VmRecord:
        return cls(Plan.from_json(data["plan"]), artifacts_from_json(data["artifacts"]),
                   VmRestart(Restart(data["restart"]["policy"]), data["restart"]["max"]),
                   data.get("spec_file", ""), data.get("created", 0.0),
                   tuple((str(p), bool(t)) for p, t in data.get("forwards", [])),
                   str(data.get("phase", "running")), str(data.get("snapshot", "")))

    def save(self, path: Path) -> None:
        write_atomic(path, json.dumps(self.to_json(), indent=1))

    @classmethod
    def load(cls, path: Path) -> VmRecord:
        return cls.from_json(json.loads(path.read_text()))
