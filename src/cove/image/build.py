"""Build (or reuse) every artifact a spec needs."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cove.home import cove_home
from cove.image.cache import Cache
from cove.image.initramfs import build_initramfs
from cove.image.kernel import KernelArtifact, get_kernel
from cove.image.modules import FEATURES, modules_to_load
from cove.image.rootfs import RootImage, build_host_root
from cove.spec.model import Spec


@dataclass(frozen=True)
class Artifacts:
    kernel: KernelArtifact
    initramfs: Path
    root: RootImage


def default_cache() -> Cache:
    return Cache(cove_home() / "cache")


def build_artifacts(spec: Spec, cache: Cache | None = None) -> Artifacts:
    cache = cache or default_cache()
    kernel = get_kernel(spec.kernel, cache)
    # every module a plan may ask for: one initramfs serves all plans of this kernel
    modules, _missing = modules_to_load(list(FEATURES), kernel.config)
    initramfs = build_initramfs(kernel, modules, cache)
    root = build_host_root(spec.packages, cache)
    return Artifacts(kernel, initramfs, root)
