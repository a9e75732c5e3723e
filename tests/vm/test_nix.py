"""Guests from a Nix flake (no inputs, built offline into a chroot store per test): the
closure as an image or the store shared read-only, and GC roots while a VM runs."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
from pathlib import Path

import pytest

from tests.vm.conftest import cove_argv, run_until_up, write_spec

pytestmark = pytest.mark.vm


@pytest.fixture(autouse=True)
def nix_is_installed() -> None:
    """Never a skip: without nix-bin these tests fail, saying what to install."""
    if shutil.which("nix") is None:
        pytest.fail("nix is missing: scripts/install brings it (apt-get install nix-bin)")


FLAKE = r'''{
  outputs = { self }: {
    packages.x86_64-linux.hello = derivation {
      name = "hello-cove"; system = "x86_64-linux"; builder = "/bin/sh";
      args = [ "-c" ("mkdir -p $out/bin; printf '#!/bin/sh\\necho hello from nix\\n' > "
                     + "$out/bin/hello; chmod +x $out/bin/hello") ];
    };
  };
}
'''


def flake_spec(tmp_path: Path, store: str, extra: str = "") -> Path:
    spec = write_spec(tmp_path / "flake", f'''name = "nixguest"
source = "nix"
flake = ".#hello"
store = "{store}"
nix_root = "{tmp_path / 'root'}"
network = "none"
{extra}''')
    (spec / "flake.nix").write_text(FLAKE)
    return spec


def store_names(tmp_path: Path) -> set[str]:
    return {p.name for p in (tmp_path / "root" / "nix" / "store").iterdir()}


@pytest.mark.parametrize("store", ["image",
                                   pytest.param("share", marks=pytest.mark.per_user)])
def test_flake_guest_sees_its_closure_and_cannot_write_the_hosts(cove_home: Path,
                                                                 tmp_path: Path,
                                                                 store: str) -> None:
    spec = flake_spec(tmp_path, store)
    result = subprocess.run(cove_argv("run", str(spec), "--", "sh", "-c",
                                      "hello; touch /nix/.ro-store/x; mount -o remount,rw "
                                      "/nix/.ro-store; touch /nix/.ro-store/y; "
                                      "rm -rf /nix/store/*; ls /nix/store | wc -l"),
                            capture_output=True, text=True, timeout=180, check=False)
    lines = result.stdout.splitlines()
    assert lines[0] == "hello from nix", result.stderr
    assert lines[-1].strip() == "0"  # the guest may wreck its own view (a tmpfs overlay) ...
    assert result.stderr.count("Read-only file system") == 2  # ... but not the store below
    names = store_names(tmp_path)  # the host's store is untouched
    assert any(name.endswith("-hello-cove") for name in names)
    assert not {"x", "y"} & names


@pytest.mark.per_user
def test_guest_nix_knows_its_closure(cove_home: Path, tmp_path: Path) -> None:
    spec = flake_spec(tmp_path, "image", 'packages = ["nix-bin"]\n')
    script = ("out=$(dirname $(dirname $(which hello))); "  # ready means Nix knows it
              "nix-store --verify --check-contents 2>/dev/null; echo verify=$?; "
              "nix-store -qR $out 2>/dev/null")
    result = subprocess.run(cove_argv("run", str(spec), "--", "sh", "-c", script),
                            capture_output=True, text=True, timeout=180, check=False)
    lines = result.stdout.splitlines()
    assert lines[0] == "verify=0", result.stderr
    assert lines[1].endswith("-hello-cove")


@pytest.mark.per_user
def test_gc_roots_keep_what_a_running_vm_uses(cove_home: Path, tmp_path: Path) -> None:
    spec = flake_spec(tmp_path, "share", '[services.idle]\ncommand = "sleep 1000"\n')
    gc = ["nix-store", "--store", str(tmp_path / "root"), "--gc"]
    env = {**os.environ, "NIX_CONFIG": "build-users-group =\n"}
    process = run_until_up(spec)
    try:
        base = tmp_path / "root" / "nix" / "var" / "nix" / "gcroots" / "cove"
        roots = [r for r in base.rglob("*") if r.is_symlink()]
        assert [r.relative_to(base).parts[1:] for r in roots] == [("nixguest", "0")]
        subprocess.run(gc, env=env, capture_output=True, check=True)
        assert any(name.endswith("-hello-cove") for name in store_names(tmp_path))
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert not list((tmp_path / "root" / "nix" / "var" / "nix" / "gcroots" / "cove").iterdir())
    subprocess.run(gc, env=env, capture_output=True, check=True)
    assert not any(name.endswith("-hello-cove") for name in store_names(tmp_path))
