"""Named volumes in the cove home: list, remove, grow. A volume a VM has open is left alone:
its hypervisor holds cove's lock on the image."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cove.errors import die
from cove.host.home import Home
from cove.host.proc import run
from cove.spec.settings import valid_name
from cove.spec.values import parse_size_mib
from cove.vm.storage import volume_in_use


@dataclass(frozen=True)
class VolumeInfo:
    name: str
    path: Path
    size_mib: int
    allocated_mib: float
    in_use: bool


def volumes_dir(home: Path | None = None) -> Path:
    return Home(home).volumes


def volume_path(name: str, home: Path | None = None) -> Path:
    if not valid_name(name):  # never a path: `cove volume rm ../../x` stays in volumes/
        die(f"{name!r} is not a volume name", "see `cove volume ls` for the names")
    path = volumes_dir(home) / f"{name}.ext4"
    if not path.exists():
        die(f"no volume named {name!r}", "see `cove volume ls`")
    return path


def in_use(path: Path) -> bool:
    """Whether a VM (of any hypervisor) holds cove's lock on the image."""
    return volume_in_use(path)


def list_volumes(home: Path | None = None) -> list[VolumeInfo]:
    infos = []
    for path in sorted(volumes_dir(home).glob("*.ext4")):
        stat = path.stat()
        infos.append(VolumeInfo(path.stem, path, stat.st_size // 2**20,
                                stat.st_blocks * 512 / 2**20, in_use(path)))
    return infos


def remove_volume(name: str, home: Path | None = None) -> None:
    path = volume_path(name, home)
    if in_use(path):
        die(f"volume {name!r} is in use by a running VM", "stop that VM first (cove down)")
    path.unlink()


def grow_volume(name: str, size: str, home: Path | None = None) -> int:
    """Grow the image and its ext4 filesystem (offline); returns the new size in MiB."""
    path = volume_path(name, home)
    try:
        new_mib = parse_size_mib(size)
    except ValueError as error:
        die(f"size {size}: {error}")
    old_mib = path.stat().st_size // 2**20
    if new_mib <= old_mib:
        die(f"volume {name!r} is {old_mib} MiB already; volumes only grow",
            f"ask for more than {old_mib}M")
    if in_use(path):
        die(f"volume {name!r} is in use by a running VM", "stop that VM first (cove down)")
    # exit 1: errors corrected (e.g. the journal of an unclean stop replayed) is fine
    run(["e2fsck", "-f", "-p", str(path)], what="e2fsck before growing", ok_codes=(0, 1))
    with path.open("r+b") as handle:
        handle.truncate(new_mib * 2**20)
    run(["resize2fs", str(path)], what="resize2fs")
    return new_mib
