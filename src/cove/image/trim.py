"""What a root image leaves out of its packages' files: one table, stated in docs/images.md,
overridable per spec with `keep = [PATTERN, ...]`.

Patterns are shell globs over guest paths (`*` also crosses `/`). Nothing here is needed to
run a program: documentation, translations, test suites, and encodings that Python and
glibc only load when asked for by name.
"""

from __future__ import annotations

import fnmatch
import os
from pathlib import Path

VERSION = 1  # bump when the table changes: it is part of every root image's cache key

TRIM_RULES: tuple[tuple[str, str], ...] = (
    ("/usr/share/doc/*", "documentation"),
    ("/usr/share/man/*", "manual pages"),
    ("/usr/share/info/*", "info manuals"),
    ("/usr/share/doc-base/*", "documentation index"),
    ("/usr/share/common-licenses/*", "license texts (in the package's copyright file too)"),
    ("/usr/share/locale/*", "translations of messages"),
    ("/usr/share/lintian/*", "packaging checks"),
    ("/usr/share/bug/*", "bug-report templates"),
    ("/usr/share/menu/*", "desktop menus"),
    ("/usr/share/zsh/*", "shell completions"),
    ("/usr/share/bash-completion/*", "shell completions"),
    ("/usr/lib/x86_64-linux-gnu/gconv/*", "glibc iconv encodings (Python has its own codecs)"),
    ("/usr/lib/python3*/test/*", "CPython's test suite"),
    ("/usr/lib/python3*/*/test/*", "test suites of stdlib packages"),
    ("/usr/lib/python3*/*/tests/*", "test suites of stdlib packages"),
    ("/usr/lib/python3*/lib-dynload/_test*", "CPython's test extensions"),
    ("/usr/lib/python3*/lib-dynload/_ctypes_test*", "CPython's test extensions"),
    ("/usr/lib/python3*/lib-dynload/_xxtestfuzz*", "CPython's test extensions"),
    ("/usr/lib/python3*/lib-dynload/xxlimited*", "CPython's example extensions"),
    ("/usr/lib/python3*/idlelib/*", "the IDLE editor (needs a display)"),
    ("/usr/lib/python3*/tkinter/*", "Tk bindings (need a display)"),
    ("/usr/lib/python3*/turtledemo/*", "turtle graphics demos"),
    ("/usr/lib/python3*/pydoc_data/*", "help() topic texts"),
    ("/usr/lib/python3*/lib-dynload/_codecs_*", "CJK codecs (encodings by name only)"),
    ("/usr/lib/python3*/lib-dynload/_multibytecodec*", "CJK codecs (encodings by name only)"),
    *((f"/usr/lib/python3*/encodings/*{name}*", "CJK codecs (encodings by name only)")
      for name in ("big5", "cp932", "cp949", "cp950", "euc_j", "euc_kr", "gb18030", "gb2312",
                   "gbk", "hz.", "iso2022_", "johab", "shift_jis")),
)


def trimmed(path: str, keep: tuple[str, ...] = ()) -> bool:
    """Whether a guest path is left out (a `keep` pattern wins over every rule)."""
    if any(fnmatch.fnmatchcase(path, pattern) for pattern in keep):
        return False
    return any(fnmatch.fnmatchcase(path, pattern) for pattern, _why in TRIM_RULES)


def trim_tree(tree: Path, keep: tuple[str, ...] = ()) -> int:
    """Remove trimmed files from a finished tree (Debian-source roots); returns bytes freed."""
    freed = 0
    for directory, _dirs, files in os.walk(tree):
        for name in files:
            path = os.path.join(directory, name)
            if trimmed("/" + os.path.relpath(path, tree), keep):
                freed += os.lstat(path).st_size
                os.unlink(path)
    return freed
