"""The Python API's pure parts: spec checking from dicts, `cove cp` locations, the refusal
of hostile archives, and that the CLI does not pay for the API's imports."""

from __future__ import annotations

import contextlib
import io
import os
import stat
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import cove
from cove.errors import CoveError
from cove.sdk.transfer import copy_plan, extract_from, split_location


def test_from_dict_lists_every_problem_like_check() -> None:
    with pytest.raises(cove.SpecError) as raised:
        cove.Spec.from_dict({"name": "Bad Name", "memory": "lots", "vcpus": 2})
    text = str(raised.value)
    assert "name" in text and "memory" in text and "vcpus" in text
    assert len(raised.value.problems) == 3


def test_from_dict_accepts_what_a_file_would() -> None:
    spec = cove.Spec.from_dict({"name": "sbx", "packages": ["python3"], "memory": "512M"})
    assert spec.name == "sbx" and spec.model.memory_mib == 512
    with pytest.raises(cove.SpecError, match="not a dict"):
        cove.Spec.from_dict(["name"])  # type: ignore[arg-type]


def test_spec_load_gives_the_file_errors(tmp_path: Path) -> None:
    (tmp_path / "cove.toml").write_text('name = "ok"\nvcpu = "two"\n')
    with pytest.raises(cove.SpecError, match="vcpu"):
        cove.Spec.load(tmp_path)


@pytest.mark.parametrize(("text", "expected"), [
    ("web:/tmp/x", ("web", "/tmp/x")), ("./web:x", (None, "./web:x")),
    ("/a:b", (None, "/a:b")), ("plain.txt", (None, "plain.txt")),
    ("Web:/x", (None, "Web:/x")), ("web:", ("web", "")),
])
def test_split_location(text: str, expected: tuple[str | None, str]) -> None:
    assert split_location(text) == expected


def test_copy_plan_refuses_two_locals_two_remotes_and_relative_guest_paths() -> None:
    assert copy_plan("./a", "web:/tmp/") == ("in", "web", "/tmp/", "./a")
    assert copy_plan("web:/etc/x", ".") == ("out", "web", "/etc/x", ".")
    for source, dest in (("a", "b"), ("web:/a", "db:/b")):
        with pytest.raises(CoveError, match="exactly one side"):
            copy_plan(source, dest)
    with pytest.raises(CoveError, match="must be absolute"):
        copy_plan("a", "web:tmp")


def archive(*members: tuple[tarfile.TarInfo, bytes]) -> io.BytesIO:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        for info, data in members:
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    buffer.seek(0)
    return buffer


def member(name: str, kind: bytes = tarfile.REGTYPE, link: str = "",
           mode: int = 0o644) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname, info.mode = kind, link, mode
    return info


@pytest.mark.parametrize(("members", "why"), [
    ([member("/etc/evil")], "outside the destination"),
    ([member("../evil")], "outside the destination"),
    ([member("a/../../evil")], "outside the destination"),
    ([member("dev", tarfile.CHRTYPE)], "device or FIFO"),
    ([member("fifo", tarfile.FIFOTYPE)], "device or FIFO"),
    ([member("esc", tarfile.SYMTYPE, "/"), member("esc/evil")], "points outside"),
    ([member("hard", tarfile.LNKTYPE, "never-sent")], "did not send before"),
    ([member("hard", tarfile.LNKTYPE, "../../etc/passwd")], "hard link"),
])
def test_hostile_archives_are_refused(tmp_path: Path, members: list[tarfile.TarInfo],
                                      why: str) -> None:
    land = tmp_path / "land"
    land.mkdir()
    with pytest.raises(CoveError, match=why):
        extract_from(archive(*[(m, b"x" if m.isreg() else b"") for m in members]), land)
    assert not (tmp_path / "evil").exists()


def test_set_id_bits_are_dropped_and_modes_kept(tmp_path: Path) -> None:
    tops = extract_from(archive((member("d", tarfile.DIRTYPE, mode=0o750), b""),
                                (member("d/tool", mode=0o4755), b"#!"),
                                (member("d/own", mode=0o600), b"x")), tmp_path)
    assert tops == ["d"]
    assert (tmp_path / "d" / "tool").stat().st_mode & 0o7777 == 0o755
    assert (tmp_path / "d" / "own").stat().st_mode & 0o7777 == 0o600
    assert (tmp_path / "d").stat().st_mode & 0o7777 == 0o750


def test_the_cli_does_not_import_the_api() -> None:
    code = "import sys, cove.cli.main; print(any(m.startswith('cove.sdk') for m in sys.modules))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            check=True)
    assert result.stdout.strip() == "False"


def test_public_names_resolve() -> None:
    for name in cove.__all__:
        assert getattr(cove, name) is not None
    with pytest.raises(AttributeError):
        _ = cove.nothing_here


@pytest.mark.parametrize(("members", "why"), [
    ([member("x", tarfile.SYMTYPE, "/etc/passwd")], "points outside"),
    ([member("x/a", tarfile.SYMTYPE, "../../etc")], "points outside"),
    ([member("other")], "not under"),
    ([member("x/" + "a" * 300)], "longer than a file system takes"),
    ([member("x/" + "a/" * 2100 + "f")], "longer than a file system takes"),
])
def test_a_copy_lands_only_under_the_name_asked_for(tmp_path: Path,
                                                    members: list[tarfile.TarInfo],
                                                    why: str) -> None:
    land = tmp_path / "land"
    land.mkdir()
    with pytest.raises(CoveError, match=why):
        extract_from(archive(*[(m, b"x" if m.isreg() else b"") for m in members]), land, "x")
    assert list(tmp_path.iterdir()) == [land]
    assert not any(path.is_symlink() for path in land.rglob("*"))


def test_a_tar_bomb_stops_at_the_budget(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                        ) -> None:
    from cove.sdk import transfer

    monkeypatch.setattr(transfer, "MAX_COPY_BYTES", 10)
    monkeypatch.setattr(transfer, "MAX_COPY_MEMBERS", 3)
    with pytest.raises(CoveError, match="more than the destination can take"):
        extract_from(archive((member("x"), b"y" * 11)), tmp_path, "x")
    many = tmp_path / "many"
    many.mkdir()
    with pytest.raises(CoveError, match="more than 3 entries"):
        extract_from(archive(*[(member(f"x/{i}"), b"") for i in range(4)]), many, "x")


NAMES = st.sampled_from(["x", "x/a", "x/a/b", "x/..", "x/../..", "/x", "x/l", "x/l/f", "y",
                         "x/./c", ".."])
TARGETS = st.sampled_from(["/", "/etc", "..", "../..", "a", "l", "../x", "x/a", "../../out"])
KINDS = st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE,
                         tarfile.CHRTYPE, tarfile.FIFOTYPE])


@settings(max_examples=int(os.environ.get("COVE_TAR_EXAMPLES", "400")), deadline=None)
@given(st.lists(st.tuples(NAMES, KINDS, TARGETS), max_size=8))
def test_no_archive_writes_outside_the_destination(tmp_path_factory: pytest.TempPathFactory,
                                                   entries: list[tuple[str, bytes, str]]
                                                   ) -> None:
    top = tmp_path_factory.mktemp("copy")
    land = top / "land"
    land.mkdir()
    members = [(member(name, kind, link), b"data" if kind == tarfile.REGTYPE else b"")
               for name, kind, link in entries]
    with contextlib.suppress(CoveError):
        extract_from(archive(*members), land, "x")
    assert sorted(p.name for p in top.iterdir()) == ["land"]
    for path in land.rglob("*"):
        assert os.path.realpath(path).startswith(str(land.resolve())), path
        assert not stat.S_ISCHR(path.lstat().st_mode) and not stat.S_ISFIFO(path.lstat().st_mode)
