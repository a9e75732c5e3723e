"""Operations on one VM and on one snapshot, ten at a time, end in one clear outcome each:
one VM per name, no orphan hypervisor, no half-removed snapshot (the daemon serialises the
operations of one VM and of one snapshot)."""

from __future__ import annotations

import subprocess
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.vm.conftest import HELLO, cove, cove_argv, ls, qemu_pids_for, write_spec

pytestmark = pytest.mark.vm

SPEC = HELLO.read_text().split("[[ports]]")[0].replace('memory = "256M"', 'memory = "128M"')


def at_once(*argvs: list[str]) -> list[subprocess.CompletedProcess[str]]:
    with ThreadPoolExecutor(len(argvs)) as pool:
        return list(pool.map(lambda argv: subprocess.run(
            cove_argv(*argv), capture_output=True, text=True, timeout=300, check=False),
            argvs))


def no_traceback(results: list[subprocess.CompletedProcess[str]]) -> None:
    for result in results:
        assert "Traceback" not in result.stderr and "internal error" not in result.stderr, \
            result.stderr


def test_ten_ups_of_one_name_give_one_vm(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "hello", SPEC)
    results = at_once(*[["up", str(spec), "--name", "same", "-d"] for _ in range(10)])
    no_traceback(results)
    try:
        assert sum(r.returncode == 0 for r in results) == 1, [r.stderr for r in results]
        assert all("already exists" in r.stderr for r in results if r.returncode)
        assert [name for name in ls(home) if name == "same"] == ["same"]
        downs = at_once(*[["down", "same"] for _ in range(10)])
        no_traceback(downs)
        assert any(r.returncode == 0 for r in downs)
        assert all(r.returncode == 0 or "no vm named 'same'" in r.stderr.lower()
                   for r in downs), [r.stderr for r in downs]
        assert "same" not in ls(home)
        assert not [p for p in qemu_pids_for(home) if b"vms/same/" in
                    Path(f"/proc/{p}/cmdline").read_bytes()]
    finally:
        cove("down", "same", check=False)


def test_a_down_during_the_boot_leaves_no_vm_behind(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "hello", SPEC)
    up, down = at_once(["up", str(spec), "--name", "racing", "-d"], ["down", "racing"])
    no_traceback([up, down])
    cove("down", "racing", check=False)  # (if the down came before the VM existed)
    assert "racing" not in ls(home)
    assert not [p for p in qemu_pids_for(home) if b"vms/racing/" in
                Path(f"/proc/{p}/cmdline").read_bytes()]


def test_ten_clones_and_a_snapshot_rm_at_once(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "hello", SPEC)
    cove("up", str(spec), "--name", "origin", "-d")
    try:
        clones = at_once(*[["clone", "origin", "--prefix", f"c{i}-"] for i in range(5)])
        no_traceback(clones)
        assert all(r.returncode == 0 for r in clones), [r.stderr for r in clones]
        names = {name for name in ls(home) if name.startswith("c")}
        assert names == {f"c{i}-1" for i in range(5)}
        snapshot = cove("snapshot", "save", "origin").stdout.split()[0]
        results = at_once(*[["snapshot", "clone", snapshot, "--prefix", f"s{i}-"]
                            for i in range(4)], ["snapshot", "rm", snapshot])
        no_traceback(results)
        removed = results[-1]
        started = [r for r in results[:-1] if r.returncode == 0]
        # the rm came first (then the clones say the snapshot is gone), or after them
        assert removed.returncode == 0 or "is needed by" in removed.stderr, removed.stderr
        if removed.returncode != 0:
            assert len(started) == 4
        for result in results[:-1]:
            assert result.returncode == 0 or "no snapshot" in result.stderr, result.stderr
    finally:
        for name in list(ls(home)):
            if name == "origin" or (name[:1] in ("c", "s") and name[1:2].isdigit()):
                cove("down", name, check=False)
