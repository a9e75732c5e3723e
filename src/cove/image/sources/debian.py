"""Root images from Debian's archive: mmdebstrap into cove's cache, packed read-only.

Cached by suite, mirror, package set and date: the same day the same spec reuses its image;
the next day brings the archive's updates.
"""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
import time
from pathlib import Path

from cove.errors import die
from cove.host.fsutil import remove_tree
from cove.host.proc import require_tool
from cove.image.cache import Cache, content_key

FORMAT_VERSION = 1
# The agent's Python, and busybox: the agent powers off with it and users get its applets.
BASE_PACKAGES = ("python3", "busybox-static")
EXCLUDES = ("/usr/share/doc/*", "/usr/share/man/*", "/usr/share/info/*",
            "/usr/share/locale/*", "/usr/share/lintian/*")


def mmdebstrap_argv(suite: str, mirror: str, packages: list[str], target: Path,
                    rootless: bool = False) -> list[str]:
    """As root: a plain chroot into the tree. Otherwise mmdebstrap works in a user namespace
    with the user's subordinate ids and writes a tarball, which cove unpacks as the user
    (the image is --all-root anyway)."""
    return [
        "mmdebstrap",
        "--variant=essential",
        *(["--mode=unshare", "--format=tar"] if rootless else ["--mode=root"]),
        f"--include={','.join(packages)}",
        *(f"--dpkgopt=path-exclude={pattern}" for pattern in EXCLUDES),
        suite,
        str(target),
        mirror,
    ]


def unpack_as_user(archive: Path, tree: Path) -> None:
    """The tarball's files, owned by whoever unpacks them; device nodes are left out (the
    guest's /dev is a devtmpfs)."""
    tree.mkdir()
    with tarfile.open(archive) as tar:
        members = [m for m in tar.getmembers()
                   if not m.isdev() and not m.name.startswith(("/", "../"))
                   and "/../" not in f"/{m.name}/"]
        tar.extractall(tree, members=members)  # (not root: tarfile leaves ownership alone)
    archive.unlink()


def unknown_packages(stderr: str) -> list[str]:
    return re.findall(r"Unable to locate package (\S+)", stderr)


def bootstrap(suite: str, mirror: str, packages: list[str], tree: Path) -> None:
    require_tool("mmdebstrap")
    rootless = os.geteuid() != 0
    target = tree.with_name("tree.tar") if rootless else tree
    result = subprocess.run(mmdebstrap_argv(suite, mirror, packages, target, rootless),
                            capture_output=True, text=True, check=False)
    if result.returncode == 0:
        if rootless:
            unpack_as_user(target, tree)
        return
    missing = unknown_packages(result.stderr)
    if missing:
        die(f"Debian {suite} has no package {', '.join(missing)}",
            "check the names in `packages` (apt-cache search NAME finds them)")
    tail = "\n  ".join(result.stderr.strip().splitlines()[-5:])
    die(f"mmdebstrap failed (exit {result.returncode}):\n  {tail}",
        f"is {mirror} reachable? source = \"host\" works offline")


def build_debian_root(suite: str, mirror: str, requested: tuple[str, ...],
                      cache: Cache, keep: tuple[str, ...] = ()) -> tuple[Path, tuple[str, ...]]:
    from cove.image import trim
    from cove.image.pack import PACK_FORMAT, ROOT_FILE, pack_root
    from cove.image.rootfs import add_busybox_applets

    packages = sorted({*BASE_PACKAGES, *requested})
    day = time.strftime("%Y-%m-%d", time.gmtime())
    key = content_key(["debian", FORMAT_VERSION, suite, mirror, packages, day, trim.VERSION,
                       list(keep), PACK_FORMAT])

    def build(out: Path) -> None:
        tree = out / "tree"
        bootstrap(suite, mirror, packages, tree)
        trim.trim_tree(tree, keep)
        add_busybox_applets(tree)
        for name in ("cove", "run", "tmp"):
            (tree / name).mkdir(exist_ok=True)
        hosts = tree / "etc" / "hosts"
        if not hosts.exists():
            hosts.write_text("127.0.0.1\tlocalhost\n::1\tlocalhost\n")
        pack_root(tree, out / ROOT_FILE)
        remove_tree(tree)
        (out / "packages.txt").write_text("".join(f"{p}\n" for p in packages))

    entry = cache.get_or_build("root-debian", key, build)
    return entry / ROOT_FILE, tuple(packages)
