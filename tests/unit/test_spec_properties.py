"""Property tests: whatever a cove.toml holds, `cove check` answers with problems that name
a key or a line, and never with anything but a CoveError.

Three sources of documents: random TOML built from the settings table's keys (and others),
random edits of the hello example's text, and random values put into a valid document.
"""

from __future__ import annotations

import json
import os
import tomllib
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cove.errors import CoveError, SpecError
from cove.spec.load import load_spec
from cove.spec.settings import TOP_SETTINGS, Setting

ROOT = Path(__file__).resolve().parents[2]
HELLO = (ROOT / "examples" / "hello" / "cove.toml").read_text()
CASES = settings(max_examples=int(os.environ.get("COVE_PROPERTY_CASES", "300")), deadline=None,
                 suppress_health_check=[HealthCheck.function_scoped_fixture,
                                        HealthCheck.too_slow])


def all_keys(settings_: tuple[Setting, ...]) -> list[str]:
    keys = []
    for setting in settings_:
        keys.append(setting.key)
        keys += all_keys(setting.fields)
    return keys


KEYS = st.sampled_from(sorted(set(all_keys(TOP_SETTINGS)))) | st.text(max_size=8)
SCALARS = (st.text(max_size=30) | st.integers(-2**40, 2**40) | st.booleans()
           | st.floats(allow_nan=False, allow_infinity=False)
           | st.sampled_from(["256M", "1G", "5s", "/src", "./x", "..", "/dev/null",
                              "127.0.0.1", "virtiofs", "9p", "nix", "a\n", "\0", "0.0.0.0",
                              "x" * 5000, "/proc/self/root/" * 30, "data"]))
VALUES = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4)
                      | st.dictionaries(KEYS, inner, max_size=4), max_leaves=12)
DOCUMENTS = st.dictionaries(KEYS, VALUES, max_size=8)


def plausible(setting: Setting) -> st.SearchStrategy[Any]:
    """Values near what a setting takes (so checks deep in the table are reached), mixed
    with anything at all."""
    if setting.fields:
        table = st.fixed_dictionaries({}, optional={f.key: plausible(f) for f in setting.fields})
        if setting.kind.name == "TABLE_LIST":
            return st.lists(table, max_size=3) | VALUES
        if setting.kind.name == "TABLE_MAP":
            return st.dictionaries(st.text(max_size=6) | st.just("web"), table,
                                   max_size=2) | VALUES
        return table | VALUES
    if setting.choices:
        return st.sampled_from(setting.choices) | SCALARS
    return SCALARS


SPECLIKE = st.fixed_dictionaries({}, optional={s.key: plausible(s) for s in TOP_SETTINGS})


def toml_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    """Inline TOML for a value (JSON's string escapes are TOML's basic-string escapes)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return "{" + ", ".join(f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items()) + "}"


def document_text(document: dict[str, Any]) -> str:
    return "".join(f"{toml_key(k)} = {toml_value(v)}\n" for k, v in document.items())


def check(tmp_path: Path, text: str) -> None:
    """The property: a Spec, or a SpecError/CoveError whose every problem says where."""
    (tmp_path / "cove.toml").write_text(text, errors="surrogatepass")
    try:
        load_spec(tmp_path)
    except SpecError as error:
        assert error.problems
        for problem in error.problems:
            assert problem.where or "line" in problem.message or "UTF-8" in problem.message, \
                problem
    except CoveError as error:
        assert str(error)


@CASES
@given(document=DOCUMENTS)
def test_random_documents(tmp_path: Path, document: dict[str, Any]) -> None:
    check(tmp_path, document_text(document))


@CASES
@given(document=SPECLIKE)
def test_documents_shaped_by_the_settings_table(tmp_path: Path,
                                                document: dict[str, Any]) -> None:
    check(tmp_path, document_text(document))


EDITS = st.lists(st.tuples(st.integers(0, len(HELLO)), st.integers(0, 3),
                           st.text(max_size=3)), min_size=1, max_size=6)


@CASES
@given(edits=EDITS)
def test_edits_of_a_valid_file(tmp_path: Path, edits: list[tuple[int, int, str]]) -> None:
    text = HELLO
    for at, cut, insert in edits:
        text = text[:at] + insert + text[at + cut:]
    check(tmp_path, text)


def leaf_paths(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    if isinstance(value, dict):
        return [p for k, v in value.items() for p in leaf_paths(v, (*path, k))] or [path]
    if isinstance(value, list):
        return [p for i, v in enumerate(value) for p in leaf_paths(v, (*path, i))] or [path]
    return [path]


VALID = tomllib.loads(HELLO)
LEAVES = leaf_paths(VALID)


@CASES
@given(where=st.sampled_from(LEAVES), value=VALUES)
def test_one_value_replaced(tmp_path: Path, where: tuple[Any, ...], value: Any) -> None:
    document = json.loads(json.dumps(VALID))
    target = document
    for step in where[:-1]:
        target = target[step]
    target[where[-1]] = value
    check(tmp_path, document_text(document))
