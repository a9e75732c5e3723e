"""The root image's trim rules: what they leave out, `keep`, and docs/images.md."""

from __future__ import annotations

from pathlib import Path

from cove.image.trim import TRIM_RULES, trimmed

DOCS = Path(__file__).resolve().parents[2] / "docs" / "images.md"


def test_rules_leave_out_docs_tests_and_unused_encodings() -> None:
    for path in ("/usr/share/doc/curl/copyright", "/usr/share/man/man1/curl.1.gz",
                 "/usr/lib/x86_64-linux-gnu/gconv/IBM1047.so",
                 "/usr/lib/python3.11/test/test_os.py",
                 "/usr/lib/python3.11/unittest/test/test_case.py",
                 "/usr/lib/python3.11/encodings/__pycache__/big5.cpython-311.pyc",
                 "/usr/lib/python3.11/lib-dynload/_codecs_jp.cpython-311-x86_64-linux-gnu.so",
                 "/usr/lib/python3.11/pydoc_data/topics.py"):
        assert trimmed(path), path
    for path in ("/usr/bin/python3.11", "/usr/lib/python3.11/encodings/utf_8.py",
                 "/usr/lib/python3.11/encodings/aliases.py", "/usr/lib/python3.11/unittest/case.py",
                 "/usr/lib/python3.11/http/server.py", "/usr/share/zoneinfo/UTC",
                 "/usr/lib/x86_64-linux-gnu/libc.so.6"):
        assert not trimmed(path), path


def test_keep_wins_over_every_rule() -> None:
    assert not trimmed("/usr/share/doc/curl/copyright", ("/usr/share/doc/*",))
    assert trimmed("/usr/share/man/man1/curl.1.gz", ("/usr/share/doc/*",))


def test_the_docs_state_exactly_these_rules() -> None:
    text = DOCS.read_text()
    table = text.split("<!-- generated from TRIM_RULES -->")[1].split("<!-- end generated -->")[0]
    rows = [line for line in table.splitlines() if line.startswith("| `")]
    assert rows == [f"| `{pattern}` | {why} |" for pattern, why in TRIM_RULES]
