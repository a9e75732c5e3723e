"""The no-op build stamp: answered from the stamp only while every input is unchanged."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cove.image.stamp import may_skip, quick_build, record


@pytest.fixture
def built(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path, dict[str, object]]:
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    monkeypatch.setenv("COVE_HOME", str(home))
    artifacts = tmp_path / "artifacts"
    artifacts.mkdir()
    for name in ("vmlinux", "initramfs.cpio", "root.erofs"):
        (artifacts / name).write_bytes(b"x")
    spec = tmp_path / "spec" / "cove.toml"
    spec.parent.mkdir()
    spec.write_text('name = "hello"\npackages = ["python3"]\n')
    result: dict[str, object] = {
        "name": "hello", "kernel": {"version": "6.1", "path": str(artifacts / "vmlinux")},
        "initramfs": str(artifacts / "initramfs.cpio"),
        "root": {"path": str(artifacts / "root.erofs"), "size": 2**20, "packages": 3},
        "nix_outputs": [], "seconds": 4.2}
    record(home / "cache", spec, result)
    return spec, artifacts, result


def test_an_unchanged_build_is_answered_from_its_stamp(
        built: tuple[Path, Path, dict[str, object]], capsys: pytest.CaptureFixture[str]) -> None:
    spec, _artifacts, _result = built
    assert quick_build(["build", str(spec.parent)])
    out = capsys.readouterr().out
    assert "root.erofs  (1.0 MiB, 3 packages)" in out and "built in 0.00 s" in out
    assert quick_build(["build", str(spec), "--json"])
    assert '"name": "hello"' in capsys.readouterr().out


def test_a_changed_spec_or_a_collected_artifact_builds_again(
        built: tuple[Path, Path, dict[str, object]]) -> None:
    spec, artifacts, _result = built
    (artifacts / "root.erofs").unlink()  # `cove gc --apply` took it
    assert not quick_build(["build", str(spec)])
    (artifacts / "root.erofs").write_bytes(b"x")
    assert quick_build(["build", str(spec)])
    spec.write_text('name = "hello"\npackages = ["python3", "curl"]\n')
    assert not quick_build(["build", str(spec)])


def test_flags_other_sources_and_unsafe_homes_take_the_full_path(
        built: tuple[Path, Path, dict[str, object]]) -> None:
    spec, _artifacts, _result = built
    assert not quick_build(["build", "--flake", ".#x"])
    assert not quick_build(["build", str(spec), "extra", "args"])
    assert not may_skip('source = "debian"') and not may_skip("[kernel]\npath = 'x'")
    assert may_skip('name = "a"\npackages = ["curl"]')
    home = Path(os.environ["COVE_HOME"])
    home.chmod(0o777)  # the full path refuses such a home with its reason
    assert not quick_build(["build", str(spec)])
