"""Build (or reuse) every artifact a spec needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cove.home import cove_home
from cove.image.cache import Cache
from cove.image.initramfs import build_initramfs
from cove.image.kernel import KernelArtifact, get_kernel
from cove.image.modules import FEATURES, modules_to_load, normalize, read_dep_table
from cove.image.rootfs import RootImage, build_host_root
from cove.image.sources.debian import build_debian_root
from cove.image.sources.nix import closure_image, nix_build
from cove.spec.model import Source, Spec, StoreMode


@dataclass(frozen=True)
class Artifacts:
    kernel: KernelArtifact
    initramfs: Path
    root: RootImage
    nix_outputs: tuple[str, ...] = ()  # source = "nix": what the flake built
    nix_store_image: Path | None = None  # store = "image": its closure as erofs
    nix_closure: tuple[str, ...] = ()


def default_cache() -> Cache:
    return Cache(cove_home() / "cache")


def build_artifacts(spec: Spec, cache: Cache | None = None) -> Artifacts:
    cache = cache or default_cache()
    cache.hold()  # until the VM boots: no `gc --apply` in between
    kernel = get_kernel(spec.kernel, cache)
    # every module a plan may ask for that this kernel has: one initramfs serves all plans
    # of this kernel (a plan that needs a module the kernel lacks is refused by make_plan)
    available = read_dep_table(kernel.modules) if kernel.modules else {}
    wanted, _missing = modules_to_load(list(FEATURES), kernel.config)
    modules = [m for m in wanted if normalize(m) in available]
    initramfs = build_initramfs(kernel, modules, cache)
    root = build_root(spec, cache)
    if spec.source is not Source.NIX:
        return Artifacts(kernel, initramfs, root)
    built = nix_build(spec.flake, spec.directory, spec.nix_root)
    image = closure_image(built, cache) if spec.store is StoreMode.IMAGE else None
    return Artifacts(kernel, initramfs, root, built.outputs, image, built.closure)


def build_root(spec: Spec, cache: Cache) -> RootImage:
    if spec.source is Source.DEBIAN:
        path, packages = build_debian_root(spec.suite, spec.mirror, spec.packages, cache,
                                           spec.keep)
        return RootImage(path, packages, path.stat().st_size)
    return build_host_root(spec.packages, cache, spec.keep)
