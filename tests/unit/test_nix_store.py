"""The incident, reproduced on a real Nix store (Debian's nix-bin, a chroot store per test):
paths deleted behind Nix's back are reported, a dry run changes nothing, the repair leaves a
database `nix-store --verify --check-contents` accepts, and its backup restores the old one."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.nix.repair import apply_repair, plan_repair, restore
from cove.nix.store import Store, find_store, input_drvs, verify


@pytest.fixture(autouse=True)
def nix_is_installed() -> None:
    """Never a skip: without nix-bin these tests fail, saying what to install."""
    if shutil.which("nix-build") is None:
        pytest.fail("nix-build is missing: scripts/install brings it (apt-get install nix-bin)")


NIX_ENV = {**os.environ, "NIX_CONFIG": "build-users-group =\nsandbox = false\nsubstituters =\n"
           "extra-sandbox-paths = /bin/sh=/usr/bin/busybox\n"}
EXPRESSION = """
let
  mk = name: script: derivation { inherit name; system = "x86_64-linux"; builder = "/bin/sh";
                                  args = [ "-c" script ]; };
  dep = mk "dep" "echo dependency > $out";
in {
  inherit dep;
  app = mk "app" "echo uses ${dep} > $out";
  solo = mk "solo" "echo alone > $out";
}
"""


def build(root: Path, attribute: str) -> str:
    (root.parent / "default.nix").write_text(EXPRESSION)
    return subprocess.run(["nix-build", "--store", str(root), str(root.parent / "default.nix"),
                           "-A", attribute, "--no-out-link"], env=NIX_ENV, check=True,
                          capture_output=True, text=True).stdout.strip()


def dump(store: Store) -> list[str]:
    with sqlite3.connect(store.db) as db:
        return list(db.iterdump())


def on_disk(store: Store, suffix: str) -> Path:
    return next(p for p in (store.root / "store").iterdir() if p.name.endswith(suffix))


def nix_verify(root: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["nix-store", "--store", str(root), "--verify", "--check-contents"],
                          env=NIX_ENV, capture_output=True, text=True, check=False)


@pytest.fixture
def damaged(tmp_path: Path) -> tuple[Store, list[str]]:
    root = tmp_path / "root"
    build(root, "app")
    build(root, "solo")
    store = find_store(root)
    before = dump(store)
    for suffix in ("-dep", "-dep.drv", "-solo.drv"):  # what the guest's GC deleted
        path = on_disk(store, suffix)
        path.chmod(0o644)
        path.unlink()
    return store, before


def test_verify_reports_each_kind_of_damage(damaged: tuple[Store, list[str]]) -> None:
    store, _ = damaged
    report = verify(store)
    assert sorted(p.rsplit("-", 1)[1] for p in report.missing_paths.values()) == [
        "dep", "dep.drv", "solo.drv"]
    assert {(a.rsplit("-", 1)[1], b.rsplit("-", 1)[1]) for a, b in report.dangling_refs} == {
        ("app", "dep"), ("app.drv", "dep.drv")}
    assert sorted(d.rsplit("-", 1)[1] for d, _, _ in report.dangling_outputs) == [
        "dep.drv", "solo.drv"]
    assert [(p.rsplit("-", 1)[1], d.rsplit("-", 1)[1]) for p, d in report.missing_derivers] \
        == [("solo", "solo.drv")]
    assert [d.rsplit("-", 1)[1] for d in report.stale_drvs] == ["app.drv"]
    assert not report.clean


def test_dry_run_changes_nothing(damaged: tuple[Store, list[str]]) -> None:
    store, _ = damaged
    before = dump(store)
    steps, files = plan_repair(verify(store), remove_stale_drvs=True)
    assert steps and files
    assert dump(store) == before


def test_repair_then_nix_accepts_and_backup_restores(damaged: tuple[Store, list[str]]) -> None:
    store, _ = damaged
    damaged_dump = dump(store)
    saved, _steps, after = apply_repair(store, remove_stale_drvs=True)
    assert after.clean, after.lines()
    result = nix_verify(store.root.parent)
    assert result.returncode == 0, result.stderr
    assert "error" not in result.stderr.lower()
    assert on_disk(store, "-app").exists()  # a path that exists and is valid stays
    assert on_disk(store, "-solo").exists()
    with sqlite3.connect(store.db) as db:
        paths = {p: d for p, d in db.execute("select path, deriver from ValidPaths")}
    assert any(p.endswith("-app") for p in paths)
    assert [d for p, d in paths.items() if p.endswith("-solo")] == [None]
    repaired = dump(store)
    assert repaired != damaged_dump
    restore(store, saved)
    assert dump(store) == damaged_dump


def test_contents_that_changed_are_reported(tmp_path: Path) -> None:
    root = tmp_path / "root"
    output = build(root, "dep")
    store = find_store(root)
    path = store.on_disk(output)
    path.chmod(0o644)
    path.write_text("tampered\n")
    report = verify(store)
    assert [p for p, _, _ in report.wrong_hashes] == [output]


def test_refuses_while_nix_holds_the_store(damaged: tuple[Store, list[str]]) -> None:
    store, _ = damaged
    before = dump(store)
    lock = store.db.parent / "big-lock"
    holder = subprocess.Popen(  # another process holding the lock, as a running Nix would
        ["python3", "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a'); "
         "fcntl.flock(f, fcntl.LOCK_SH); print('held', flush=True); time.sleep(60)",
         str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "held\n"
        with pytest.raises(CoveError, match="holds the store's big-lock"):
            apply_repair(store, remove_stale_drvs=False)
    finally:
        holder.kill()
        holder.wait()
    assert dump(store) == before


def test_input_drvs_parse() -> None:
    text = ('Derive([("out","/nix/store/a-x","","")],[("/nix/store/b-y.drv",["out"]),'
            '("/nix/store/c-z.drv",["dev","out"])],[],"x86_64-linux","/bin/sh",["-c","("],[])')
    assert input_drvs(text) == ["/nix/store/b-y.drv", "/nix/store/c-z.drv"]
