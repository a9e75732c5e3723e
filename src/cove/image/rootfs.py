"""Root image from host packages: files of installed Debian packages, packed read-only."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from cove.host.proc import run
from cove.image import trim
from cove.image.cache import Cache, content_key
from cove.image.elf import library_closure
from cove.image.pack import PACK_FORMAT, ROOT_FILE, pack_root
from cove.image.sources.dpkg import Package, closure, installed_packages, package_files

FORMAT_VERSION = 6  # bump when the layout of built images changes
# What every guest needs, whatever the spec asks for: the agent's Python, a shell and
# userland (busybox), and /etc/os-release and friends.
BASE_PACKAGES = ("python3", "busybox-static", "base-files")
MERGED_USR = {"bin": "usr/bin", "sbin": "usr/sbin", "lib": "usr/lib", "lib64": "usr/lib64"}
ETC_FILES = {
    "etc/passwd": "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:"
                  "/usr/sbin/nologin\n",
    "etc/group": "root:x:0:\nnogroup:x:65534:\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nhosts: files dns\n",
}
EMPTY_DIRS = ("root", "tmp", "proc", "sys", "dev", "run", "var/tmp", "mnt", "cove")


@dataclass(frozen=True)
class RootImage:
    path: Path
    packages: tuple[str, ...]
    size: int


def resolve_packages(requested: tuple[str, ...]) -> list[Package]:
    return closure([*BASE_PACKAGES, *requested], installed_packages())


def host_root_key(packages: list[Package], keep: tuple[str, ...] = ()) -> str:
    return content_key(["host-root", FORMAT_VERSION, PACK_FORMAT, trim.VERSION, list(keep),
                        [(p.name, p.version, p.arch) for p in packages]])


def build_host_root(requested: tuple[str, ...], cache: Cache,
                    keep: tuple[str, ...] = ()) -> RootImage:
    packages = resolve_packages(requested)
    key = host_root_key(packages, keep)

    def build(out: Path) -> None:
        tree = out / "tree"
        populate_tree(tree, packages, keep)
        pack_root(tree, out / ROOT_FILE)
        shutil.rmtree(tree)
        (out / "packages.txt").write_text(
            "".join(f"{p.name}\t{p.version}\n" for p in packages))

    entry = cache.get_or_build("root", key, build)
    image = entry / ROOT_FILE
    return RootImage(image, tuple(p.name for p in packages), image.stat().st_size)


def canonical(path: str) -> str:
    """Host path with its parent directories resolved (merged /usr), the leaf kept."""
    parent, _, leaf = path.rpartition("/")
    return os.path.join(os.path.realpath(parent or "/"), leaf)


def populate_tree(tree: Path, packages: list[Package], keep: tuple[str, ...] = ()) -> None:
    tree.mkdir()
    for top, target in MERGED_USR.items():
        (tree / target).mkdir(parents=True, exist_ok=True)
        (tree / top).symlink_to(target)
    copied: list[Path] = []
    for package in packages:
        for path in package_files(package):
            if not trim.trimmed(canonical(path), keep):
                copy_entry(canonical(path), tree, copied)
    libraries, _missing = library_closure(copied)
    for library in sorted(libraries):
        copy_entry(canonical(str(library)), tree, [])
    add_busybox_applets(tree)
    for name, text in ETC_FILES.items():
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text(text)
    for name in EMPTY_DIRS:
        (tree / name).mkdir(parents=True, exist_ok=True)
    (tree / "tmp").chmod(0o1777)


def copy_entry(source: str, tree: Path, copied: list[Path]) -> None:
    """Copy one host file, symlink or directory (not its contents) into the tree."""
    destination = tree / source.lstrip("/")
    if destination.is_symlink() or destination.exists():
        return
    host = Path(source)
    if host.is_symlink():
        destination.parent.mkdir(parents=True, exist_ok=True)
        target = os.readlink(host)
        destination.symlink_to(target)
        resolved = Path(canonical(str(host.parent / target)))
        if resolved.is_file():
            copy_entry(str(resolved), tree, copied)
    elif host.is_dir():
        destination.mkdir(parents=True, exist_ok=True)
    elif host.is_file():
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(host, destination)
        copied.append(host)
        if source.endswith(".py"):
            copy_bytecode(host, tree)


def copy_bytecode(source: Path, tree: Path) -> None:
    """Debian compiles .pyc at install time, outside the package lists: keep them."""
    cache_dir = source.parent / "__pycache__"
    compiled = cache_dir / f"{source.stem}.cpython-311.pyc"
    if compiled.is_file():
        destination = tree / str(compiled).lstrip("/")
        destination.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(compiled, destination)


def add_busybox_applets(tree: Path) -> None:
    """Link every busybox applet that no package provides (sh, mkdir, ps, ...)."""
    applets = run(["busybox", "--list-full"], what="busybox --list-full").split()
    for applet in applets:
        destination = tree / canonical("/" + applet).lstrip("/")
        if not destination.exists() and not destination.is_symlink():
            destination.parent.mkdir(parents=True, exist_ok=True)
            destination.symlink_to("/bin/busybox")
