"""`cove gc`: remove cached artifacts that no declared or running VM uses (dry run first)."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

from cove.errors import die
from cove.host.home import Home
from cove.host.proc import running_hypervisor
from cove.image.cache import TMP_PREFIX, Cache

BOOT_RECORD = "boot.json"  # in a VM's run dir: the artifacts this boot uses


@dataclass(frozen=True)
class Entry:
    path: Path
    size: int


def tree_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def entries(cache: Path) -> list[Path]:
    """Cache entries: cache/<kind>/<key> directories (not half-built ones)."""
    return sorted(p for kind in cache.iterdir() if kind.is_dir()
                  for p in kind.iterdir() if p.is_dir() and not p.name.startswith(TMP_PREFIX))


def artifact_paths(record: dict[str, object]) -> set[str]:
    artifacts = record.get("artifacts", record)
    assert isinstance(artifacts, dict)
    return {str(v) for k, v in artifacts.items() if k in (
        "kernel", "initramfs", "root", "nix_store_image") and v}


def used_paths(home: Path) -> set[str]:
    """Artifacts named by VM records (declared VMs) and by running VMs' boot records."""
    used: set[str] = set()
    for vm in sorted(Home(home).vms.glob("*")):
        record = vm / "vm.json"
        if record.exists():
            used |= artifact_paths(json.loads(record.read_text()))
        boot = vm / "run" / BOOT_RECORD
        if boot.exists() and running_hypervisor(vm / "run" / "qemu.pid", vm / "run"):
            used |= artifact_paths(json.loads(boot.read_text()))
    return used


def unused_entries(home: Path) -> list[Entry]:
    cache = Home(home).cache
    if not cache.is_dir():
        return []
    used = used_paths(home)

    def in_use(entry: Path) -> bool:
        return any(path == str(entry) or path.startswith(f"{entry}/") for path in used)

    return [Entry(e, tree_size(e)) for e in entries(cache) if not in_use(e)]


def collect(home: Path, apply: bool) -> list[Entry]:
    unused = unused_entries(home)
    if apply:
        with Cache(Home(home).cache).exclusive() as alone:
            if not alone:
                die("a build or a VM's boot is under way and may use these artifacts",
                    "run `cove gc --apply` again when it is done")
            remove_unused(home, unused)
    return unused


def remove_unused(home: Path, unused: list[Entry]) -> None:
    if unused:
        used = used_paths(home)  # look again right before removing: a VM may have started
        for entry in unused:
            if not any(p.startswith(f"{entry.path}/") or p == str(entry.path) for p in used):
                shutil.rmtree(entry.path, ignore_errors=True)
