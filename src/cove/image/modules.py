"""Which kernel modules a guest needs, and their dependency closure from modules.dep."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Feature:
    """A kernel capability the guest needs: the Kconfig symbol and the module providing it."""

    name: str
    symbol: str
    module: str


FEATURES = {
    f.name: f
    for f in (
        # libcrc32c (erofs, ext4) wants crc32c by a soft dependency modules.dep omits
        Feature("crc32c", "CONFIG_CRYPTO_CRC32C", "crc32c_generic"),
        Feature("virtio-mmio", "CONFIG_VIRTIO_MMIO", "virtio_mmio"),
        Feature("virtio-pci", "CONFIG_VIRTIO_PCI", "virtio_pci"),
        Feature("virtio-blk", "CONFIG_VIRTIO_BLK", "virtio_blk"),
        Feature("virtio-console", "CONFIG_VIRTIO_CONSOLE", "virtio_console"),
        Feature("virtio-rng", "CONFIG_HW_RANDOM_VIRTIO", "virtio_rng"),
        Feature("virtio-net", "CONFIG_VIRTIO_NET", "virtio_net"),
        Feature("erofs", "CONFIG_EROFS_FS", "erofs"),
        Feature("squashfs", "CONFIG_SQUASHFS", "squashfs"),
        Feature("overlay", "CONFIG_OVERLAY_FS", "overlay"),
        Feature("ext4", "CONFIG_EXT4_FS", "ext4"),
        Feature("acpi-button", "CONFIG_ACPI_BUTTON", "button"),
        Feature("evdev", "CONFIG_INPUT_EVDEV", "evdev"),
        Feature("virtiofs", "CONFIG_VIRTIO_FS", "virtiofs"),
        Feature("9p", "CONFIG_9P_FS", "9p"),
        Feature("9p-virtio", "CONFIG_NET_9P_VIRTIO", "9pnet_virtio"),
        Feature("vsock", "CONFIG_VIRTIO_VSOCKETS", "vmw_vsock_virtio_transport"),
        Feature("virtio-balloon", "CONFIG_VIRTIO_BALLOON", "virtio_balloon"),
    )
}


def normalize(name: str) -> str:
    """Module names treat '-' and '_' alike; file names may carry .ko.xz/.ko.zst."""
    base = name.rsplit("/", 1)[-1]
    for suffix in (".ko.xz", ".ko.zst", ".ko.gz", ".ko"):
        base = base.removesuffix(suffix)
    return base.replace("-", "_")


def parse_modules_dep(text: str) -> dict[str, tuple[str, tuple[str, ...]]]:
    """modules.dep -> {module name: (relative path, dependency paths)}."""
    table: dict[str, tuple[str, tuple[str, ...]]] = {}
    for line in text.splitlines():
        path, sep, deps = line.partition(":")
        if sep:
            table[normalize(path)] = (path.strip(), tuple(deps.split()))
    return table


def module_closure(wanted: list[str], dep_table: dict[str, tuple[str, tuple[str, ...]]]
                   ) -> list[str]:
    """Relative paths of `wanted` modules and everything they need, dependencies first."""
    ordered: list[str] = []
    seen: set[str] = set()

    def visit(path: str) -> None:
        if path in seen:
            return
        seen.add(path)
        for dep in dep_table[normalize(path)][1]:
            visit(dep)
        ordered.append(path)

    for name in wanted:
        key = normalize(name)
        if key not in dep_table:
            raise KeyError(name)
        visit(dep_table[key][0])
    return ordered


def modules_to_load(features: list[str], config: dict[str, str]) -> tuple[list[str], list[str]]:
    """Split needed features into (modules to load, features the kernel lacks).

    Built-in features need no module. Without a kernel config (a user's kernel) every
    feature is assumed built in unless modules are found for it later.
    """
    modules, missing = [], []
    for name in features:
        feature = FEATURES[name]
        state = config.get(feature.symbol) if config else "m?"
        if state == "y":
            continue
        if state in ("m", "m?"):
            modules.append(feature.module)
        else:
            missing.append(f"{name} ({feature.symbol})")
    return modules, missing


def read_builtin(modules_dir: Path) -> set[str]:
    """Modules compiled into the kernel (modules.builtin): present, nothing to load."""
    path = modules_dir / "modules.builtin"
    return {normalize(line) for line in path.read_text().split()} if path.exists() else set()


def read_dep_table(modules_dir: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    """modules.dep, parsed once per version of the file in a process (a daemon asks at every
    boot: the plan, then the boot's and the background half's load orders). Shared: read
    it, never change it."""
    dep_file = modules_dir / "modules.dep"
    try:
        stat = dep_file.stat()
    except FileNotFoundError:
        return {}
    return _parsed_dep_table(str(dep_file), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _parsed_dep_table(path: str, _mtime_ns: int, _size: int
                      ) -> dict[str, tuple[str, tuple[str, ...]]]:
    return parse_modules_dep(Path(path).read_text())
