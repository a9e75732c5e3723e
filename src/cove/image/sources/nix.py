"""Guests from Nix flakes: `nix build` offline, the output's closure, and an erofs image of
that closure for `store = "image"` (for `store = "share"` the host store is shared instead).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cove.errors import die
from cove.host.fsutil import remove_tree
from cove.host.proc import require_tool, run
from cove.image.cache import Cache, content_key

NIX_OPTIONS = ("--option", "substituters", "", "--option", "build-users-group", "",
               "--option", "sandbox", "false")


@dataclass(frozen=True)
class NixBuild:
    outputs: tuple[str, ...]
    closure: tuple[str, ...]
    root: Path  # "/" for the host's /nix, else a chroot store's root

    @property
    def store_dir(self) -> Path:
        return self.root / "nix" / "store"


def flake_ref(flake: str, spec_dir: Path) -> str:
    """'.#hello' (relative to the spec) -> 'path:/abs/dir#hello'; other refs pass through."""
    ref, _, attr = flake.partition("#")
    if ref.startswith((".", "/")):
        ref = f"path:{(spec_dir / ref).resolve()}"
    return f"{ref}#{attr or 'default'}"


def store_args(root: Path) -> list[str]:
    if root == Path("/"):
        return []
    # a chroot store builds inside its root: give raw derivations a /bin/sh there
    return ["--store", str(root), "--option", "extra-sandbox-paths",
            f"/bin/sh={shutil.which('busybox') or '/bin/sh'}"]


def nix_build(flake: str, spec_dir: Path, root: Path) -> NixBuild:
    require_tool("nix")
    argv = ["nix", "build", "--extra-experimental-features", "nix-command flakes", "--offline",
            "--json", "--no-link", *NIX_OPTIONS, *store_args(root), flake_ref(flake, spec_dir)]
    result = subprocess.run(argv, capture_output=True, text=True, check=False,
                            env={**os.environ, "NIX_CONFIG": ""})
    if result.returncode != 0:
        lines = [line for line in result.stderr.strip().splitlines()
                 if not line.startswith("warning:")]
        tail = "\n  ".join(lines[-6:])
        die(f"nix build of {flake} failed:\n  {tail}",
            "cove builds flakes offline: inputs must already be in the store")
    outputs = tuple(path for entry in json.loads(result.stdout)
                    for path in entry["outputs"].values())
    closure = run(["nix-store", *store_args(root)[:2], "-qR", *outputs],
                  what="nix-store -qR").split()
    return NixBuild(outputs, tuple(sorted(closure)), root)


def closure_image(build: NixBuild, cache: Cache) -> Path:
    """The closure as an erofs image, mounted read-only at /nix/store in the guest."""
    key = content_key(["nix-closure", list(build.closure)])

    def make(out: Path) -> None:
        tree = out / "tree"
        tree.mkdir()
        for path in build.closure:
            name = Path(path).name
            shutil.copytree(build.store_dir / name, tree / name, symlinks=True) \
                if (build.store_dir / name).is_dir() else shutil.copy2(build.store_dir / name,
                                                                       tree / name)
        run(["mkfs.erofs", "-zlz4hc", "--all-root", "-T0", "--quiet", str(out / "store.erofs"),
             str(tree)], what="mkfs.erofs")
        remove_tree(tree)  # store paths are read-only: plain rmtree fails for non-root

    return cache.get_or_build("nix-store", key, make) / "store.erofs"


def dump_db(root: Path, paths: tuple[str, ...]) -> bytes:
    """The store database rows of exactly these paths, for a guest's own Nix to load."""
    argv = ["nix-store", *store_args(root)[:2], "--dump-db", *paths]
    return subprocess.run(argv, capture_output=True, check=True).stdout


def gc_root_dir(root: Path, home: Path, vm: str) -> Path:
    """One directory per cove home and VM, so roots are found by exact names: stopping
    `web` never touches `web-app`'s roots, nor another home's `web`."""
    scope = hashlib.sha256(str(home.resolve()).encode()).hexdigest()[:16]
    return root / "nix" / "var" / "nix" / "gcroots" / "cove" / scope / vm


def add_gc_roots(root: Path, home: Path, vm: str, outputs: tuple[str, ...]) -> None:
    """While a VM uses them, a host `nix-collect-garbage` must not delete its paths."""
    directory = gc_root_dir(root, home, vm)
    shutil.rmtree(directory, ignore_errors=True)
    directory.mkdir(parents=True)
    for index, output in enumerate(outputs):
        (directory / str(index)).symlink_to(output)


def remove_gc_roots(root: Path, home: Path, vm: str) -> None:
    directory = gc_root_dir(root, home, vm)
    shutil.rmtree(directory, ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.parent.rmdir()  # the home's scope, once its last VM is gone
