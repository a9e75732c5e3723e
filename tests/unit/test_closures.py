"""Module closure from modules.dep and package closure from the dpkg database."""

from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.image.modules import module_closure, modules_to_load, normalize, parse_modules_dep
from cove.image.sources.dpkg import (
    closure,
    installed_packages,
    parse_installed,
    parse_relations,
)

MODULES_DEP = """\
kernel/drivers/virtio/virtio.ko:
kernel/drivers/virtio/virtio_ring.ko:
kernel/drivers/virtio/virtio_mmio.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
kernel/fs/erofs/erofs.ko.xz: kernel/lib/libcrc32c.ko
kernel/lib/libcrc32c.ko:
kernel/drivers/char/hw_random/virtio-rng.ko: kernel/drivers/virtio/virtio.ko kernel/drivers/virtio/virtio_ring.ko
"""


def test_module_closure_orders_dependencies_first() -> None:
    table = parse_modules_dep(MODULES_DEP)
    order = module_closure(["virtio_mmio", "virtio_rng", "erofs"], table)
    assert order == [
        "kernel/drivers/virtio/virtio.ko",
        "kernel/drivers/virtio/virtio_ring.ko",
        "kernel/drivers/virtio/virtio_mmio.ko",
        "kernel/drivers/char/hw_random/virtio-rng.ko",
        "kernel/lib/libcrc32c.ko",
        "kernel/fs/erofs/erofs.ko.xz",
    ]
    with pytest.raises(KeyError):
        module_closure(["nonexistent"], table)


def test_normalize_module_names() -> None:
    assert normalize("kernel/a/virtio-rng.ko.zst") == "virtio_rng"


def test_builtin_features_need_no_module() -> None:
    config = {"CONFIG_VIRTIO_MMIO": "m", "CONFIG_EXT4_FS": "y"}
    assert modules_to_load(["virtio-mmio", "ext4", "erofs"], config) == (
        ["virtio_mmio"], ["erofs (CONFIG_EROFS_FS)"])


def test_parse_relations() -> None:
    assert parse_relations("a (>= 1) | b, c:any, d [amd64]") == (("a", "b"), ("c",), ("d",))


STATUS = "\n".join([
    "app\tinstalled\t1\tamd64\tlib-a (>= 2) | lib-b, virtual-x\t\t",
    "lib-b\tinstalled\t1\tamd64\t\tlibc\t",
    "libc\tinstalled\t2\tamd64\t\t\t",
    "provider\tinstalled\t1\tamd64\t\t\tvirtual-x",
    "gone\tconfig-files\t1\tamd64\t\t\t",
])


def test_closure_follows_alternatives_virtuals_and_pre_depends() -> None:
    packages = parse_installed(STATUS)
    assert "gone" not in packages
    names = [p.name for p in closure(["app"], packages)]
    assert names == ["app", "lib-b", "libc", "provider"]


def test_missing_package_names_apt_command() -> None:
    with pytest.raises(CoveError, match="apt-get install nosuchpkg"):
        closure(["nosuchpkg"], parse_installed(STATUS))


def test_real_host_closure_of_python3() -> None:
    names = {p.name for p in closure(["python3"], installed_packages())}
    assert {"python3", "python3.11", "libc6", "libpython3.11-stdlib"} <= names


def test_networks_need_root(monkeypatch: pytest.MonkeyPatch) -> None:
    from cove.net import networks as network

    monkeypatch.setattr("os.geteuid", lambda: 1000)
    with pytest.raises(CoveError, match="cove networks need root"):
        network.create_network("lab", "10.77.0.0/24")


def test_doctor_flags_a_vm_that_could_write_a_host_store(tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    from cove.cli.doctor import store_share_findings

    for name, readonly in (("safe", True), ("risky", False)):
        (tmp_path / "vms" / name).mkdir(parents=True)
        (tmp_path / "vms" / name / "vm.json").write_text(json.dumps({"plan": {"shares": [
            {"tag": "share0", "source": "/nix/store", "target": "/nix/store",
             "readonly": readonly, "proto": "virtiofs"}]}}))
    findings = {f.what: f for f in store_share_findings(tmp_path)}
    assert findings["store safety of VM safe"].ok
    assert not findings["store safety of VM risky"].ok
    assert "WRITABLE host store: /nix/store" in findings["store safety of VM risky"].detail
