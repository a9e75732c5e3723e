"""The artifact cache: same inputs never rebuild; a failed build leaves nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cove.image.cache import Cache, content_key


def test_key_is_stable_and_order_independent() -> None:
    assert content_key({"a": 1, "b": [2]}) == content_key({"b": [2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_build_once_then_reuse(tmp_path: Path) -> None:
    cache = Cache(tmp_path)
    calls = []

    def build(out: Path) -> None:
        calls.append(out)
        (out / "file").write_text("x")

    first = cache.get_or_build("kind", "k1", build)
    second = cache.get_or_build("kind", "k1", build)
    assert first == second
    assert len(calls) == 1
    assert (first / "file").read_text() == "x"


def test_failed_build_leaves_no_entry(tmp_path: Path) -> None:
    cache = Cache(tmp_path)

    def build(out: Path) -> None:
        (out / "half").write_text("x")
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cache.get_or_build("kind", "k2", build)
    assert os.listdir(tmp_path / "kind") == []


def test_leftover_of_dead_build_is_swept(tmp_path: Path) -> None:
    (tmp_path / "kind").mkdir()
    leftover = tmp_path / "kind" / ".tmp-k3-999999999"
    leftover.mkdir()
    Cache(tmp_path).get_or_build("kind", "k3", lambda out: None)
    assert not leftover.exists()
