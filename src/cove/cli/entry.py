"""The `cove` command's entry: a no-op `cove build` is answered from its stamp before click
and the build code are imported (tens of milliseconds instead of hundreds)."""

from __future__ import annotations

import sys


def main() -> None:
    if sys.argv[1:2] == ["build"]:
        from cove.image.stamp import quick_build

        if quick_build(sys.argv[1:]):
            return
    from cove.cli.main import main as full

    full()


if __name__ == "__main__":
    main()
