"""Packing a root tree: its .pyc files are re-stamped to the image's fixed time."""

from __future__ import annotations

import os
import py_compile
from pathlib import Path

from cove.image.pack import FIXED_TIME, PYC_HEADER, settle_bytecode


def compiled_tree(tmp_path: Path, mode: py_compile.PycInvalidationMode) -> tuple[Path, Path]:
    source = tmp_path / "lib" / "mod.py"
    source.parent.mkdir(parents=True)
    source.write_text("VALUE = 1\n")
    os.utime(source, (1_700_000_000, 1_700_000_000))
    written = py_compile.compile(str(source), invalidation_mode=mode, doraise=True)
    assert written is not None
    compiled = Path(written)
    compiled.chmod(0o644)
    return source, compiled


def header(compiled: Path) -> tuple[bytes, int, int, int]:
    magic, flags, mtime, size = PYC_HEADER.unpack_from(compiled.read_bytes())
    return magic, flags, mtime, size


def test_a_matching_timestamp_pyc_gets_the_fixed_time(tmp_path: Path) -> None:
    _source, compiled = compiled_tree(tmp_path, py_compile.PycInvalidationMode.TIMESTAMP)
    body = compiled.read_bytes()[PYC_HEADER.size:]
    linked = tmp_path / "host-copy.pyc"
    os.link(compiled, linked)  # as a hard link into the host's files would be
    assert settle_bytecode(tmp_path) == 1
    _magic, flags, mtime, size = header(compiled)
    assert (flags, mtime, size) == (0, FIXED_TIME, len("VALUE = 1\n"))
    assert compiled.read_bytes()[PYC_HEADER.size:] == body
    assert compiled.stat().st_mode & 0o777 == 0o644
    assert header(linked)[2] == 1_700_000_000  # the other link is untouched
    assert not list(compiled.parent.glob("*.settling"))


def test_a_stale_or_hash_based_pyc_is_left_alone(tmp_path: Path) -> None:
    source, compiled = compiled_tree(tmp_path, py_compile.PycInvalidationMode.TIMESTAMP)
    source.write_text("VALUE = 22\n")  # changed after compiling: stale, and it stays so
    before = compiled.read_bytes()
    assert settle_bytecode(tmp_path) == 0
    assert compiled.read_bytes() == before
    hashed = tmp_path / "other"
    _source, checked = compiled_tree(hashed, py_compile.PycInvalidationMode.CHECKED_HASH)
    before = checked.read_bytes()
    assert settle_bytecode(hashed) == 0
    assert checked.read_bytes() == before
