"""The guest kernel: a Debian kernel package fetched and unpacked by version, or the user's."""

from __future__ import annotations

import json
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from cove.errors import die
from cove.host.fsutil import read_json_or, write_json
from cove.host.proc import run
from cove.image.cache import Cache, content_key, file_digest
from cove.image.vmlinux import bzimage_version, extract_vmlinux, is_elf
from cove.spec.model import Kernel

APT_LISTS = Path("/var/lib/apt/lists")


@dataclass(frozen=True)
class KernelArtifact:
    version: str
    vmlinux: Path
    config: dict[str, str] = field(repr=False)  # CONFIG_X -> "y" | "m" | value; {} if unknown
    modules: Path | None  # the lib/modules/<version> directory

    def option(self, symbol: str) -> str | None:
        return self.config.get(symbol)


def parse_kconfig(text: str) -> dict[str, str]:
    config = {}
    for line in text.splitlines():
        match = re.fullmatch(r"(CONFIG_\w+)=(.*)", line)
        if match:
            config[match[1]] = match[2].strip('"')
    return config


def apt_show(package: str) -> dict[str, str]:
    text = run(["apt-cache", "show", "--no-all-versions", package], what="apt-cache show")
    fields = {}
    for line in text.splitlines():
        key, sep, value = line.partition(": ")
        if sep and not line.startswith(" "):
            fields[key] = value
    if not fields:
        die(f"Debian knows no package {package!r}",
            "run `apt-get update`, or check kernel.package in cove.toml")
    return fields


def resolve_package(package: str, cache: Cache) -> tuple[str, str]:
    """Metapackage -> (concrete linux-image package, version), remembered per apt lists state."""
    memo = cache.root / "kernel" / "resolved.json"
    stamp = str(APT_LISTS.stat().st_mtime_ns) if APT_LISTS.exists() else "none"
    known = read_json_or(memo, {})  # a memo: a corrupt one is simply made again
    if not isinstance(known, dict):
        known = {}
    if known.get("stamp") == stamp and package in known.get("packages", {}):
        name, version = known["packages"][package]
        return str(name), str(version)
    fields = apt_show(package)
    name, version = package, fields.get("Version", "")
    for dep in fields.get("Depends", "").split(","):
        dep_name = dep.strip().split(" ")[0]
        if dep_name.startswith("linux-image-") and dep_name != package:
            name, version = dep_name, apt_show(dep_name).get("Version", version)
            break
    packages = known.get("packages", {}) if known.get("stamp") == stamp else {}
    packages[package] = [name, version]
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo, {"stamp": stamp, "packages": packages})
    return name, version


def fetch_package_kernel(package: str, cache: Cache) -> KernelArtifact:
    name, version = resolve_package(package, cache)

    def build(out: Path) -> None:
        download = out / "download"
        download.mkdir()
        download.chmod(0o755)  # apt drops to _apt for downloads when it can
        run(["apt-get", "download", f"{name}={version}"], cwd=download, what="apt-get download")
        debs = list(download.glob("*.deb"))
        unpacked = out / "unpacked"
        run(["dpkg", "-x", str(debs[0]), str(unpacked)], what="dpkg -x")
        shutil.rmtree(download)
        install_unpacked(unpacked, out)

    entry = cache.get_or_build("kernel", content_key(["deb", name, version]), build)
    return load_artifact(entry)


def install_unpacked(unpacked: Path, out: Path) -> None:
    """Lay out vmlinux, config and modules (with a fresh modules.dep) from a kernel .deb."""
    vmlinuz = next(iter(sorted((unpacked / "boot").glob("vmlinuz-*"))), None)
    if vmlinuz is None:
        die(f"{unpacked}: the kernel package holds no boot/vmlinuz-*")
    version = vmlinuz.name.removeprefix("vmlinuz-")
    extract_vmlinux(vmlinuz, out / "vmlinux")
    config = unpacked / "boot" / f"config-{version}"
    if config.exists():
        shutil.copy(config, out / "config")
    modules_root = unpacked / "lib" / "modules" / version
    if not modules_root.is_dir():
        modules_root = unpacked / "usr" / "lib" / "modules" / version
    if modules_root.is_dir():
        (out / "lib" / "modules").mkdir(parents=True)
        modules_root.rename(out / "lib" / "modules" / version)
        run(["depmod", "-b", str(out), version], what="depmod")
    shutil.rmtree(unpacked)
    (out / "info.json").write_text(json.dumps({"version": version}))


def load_artifact(entry: Path) -> KernelArtifact:
    version = json.loads((entry / "info.json").read_text())["version"]
    config_file = entry / "config"
    modules = entry / "lib" / "modules" / version
    return KernelArtifact(
        version=version,
        vmlinux=entry / "vmlinux",
        config=parse_kconfig(config_file.read_text()) if config_file.exists() else {},
        modules=modules if modules.is_dir() else None,
    )


def user_kernel(spec: Kernel, cache: Cache) -> KernelArtifact:
    """A kernel the user brings: an ELF vmlinux or a bzImage, optionally with modules."""
    assert spec.path is not None
    path = spec.path
    stat = path.stat()
    key = content_key(["path", str(path), stat.st_size, stat.st_mtime_ns, str(spec.modules)])

    def build(out: Path) -> None:
        if is_elf(path):
            shutil.copy(path, out / "vmlinux")
            version = _version_from_modules(spec.modules) or f"custom-{file_digest(path)[:12]}"
        else:
            extract_vmlinux(path, out / "vmlinux")
            version = bzimage_version(path.read_bytes()) or f"custom-{file_digest(path)[:12]}"
        if spec.modules is not None:
            source = spec.modules / "lib" / "modules" / version
            if not source.is_dir():
                die(f"{spec.modules}: no lib/modules/{version} inside",
                    "kernel.modules must be a directory holding lib/modules/<version>")
            shutil.copytree(source, out / "lib" / "modules" / version, symlinks=True)
            for config in (source / "build" / ".config", spec.modules / "boot" /
                           f"config-{version}", path.parent / f"config-{version}"):
                if config.is_file():
                    shutil.copy(config, out / "config")
                    break
        (out / "info.json").write_text(json.dumps({"version": version}))

    return load_artifact(cache.get_or_build("kernel", key, build))


def _version_from_modules(modules: Path | None) -> str | None:
    if modules is None:
        return None
    versions = sorted(p.name for p in (modules / "lib" / "modules").glob("*") if p.is_dir())
    return versions[-1] if versions else None


def get_kernel(spec: Kernel, cache: Cache) -> KernelArtifact:
    if spec.path is not None:
        return user_kernel(spec, cache)
    return fetch_package_kernel(spec.package, cache)
