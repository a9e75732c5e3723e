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


def test_artifacts_come_from_the_stamp_until_an_input_changes(tmp_path: Path) -> None:
    """What `up` and `run` use: the last build's artifacts, while the spec and every host
    input are unchanged and the artifacts are all still in the cache."""
    from cove.image.stamp import record_artifacts, recorded_artifacts

    cache = tmp_path / "cache"
    kernel = tmp_path / "kernel"
    kernel.mkdir()
    for path in (kernel / "vmlinux", kernel / "info.json", tmp_path / "initramfs.cpio",
                 tmp_path / "root.squashfs"):
        path.write_bytes(b"x")
    spec = tmp_path / "cove.toml"
    spec.write_text('name = "hello"\npackages = ["python3"]\n')
    data = {"kernel": str(kernel), "initramfs": str(tmp_path / "initramfs.cpio"),
            "root": str(tmp_path / "root.squashfs"), "root_size": 1, "packages": ["python3"]}
    record_artifacts(cache, spec, data)
    assert recorded_artifacts(cache, spec) == data
    (kernel / "vmlinux").unlink()  # collected: build again
    assert recorded_artifacts(cache, spec) is None
    (kernel / "vmlinux").write_bytes(b"x")
    spec.write_text('name = "hello"\npackages = ["python3", "curl"]\n')
    assert recorded_artifacts(cache, spec) is None  # another spec: never the old answer
    nix = tmp_path / "nix" / "cove.toml"
    nix.parent.mkdir()
    nix.write_text('name = "n"\nsource = "nix"\nflake = ".#x"\n')
    record_artifacts(cache, nix, data)  # a Nix build has inputs the stamp cannot see
    assert recorded_artifacts(cache, nix) is None
