"""`python -m cove.runtime.robind DIR -- ARGV...`: in a private mount namespace (made by
`unshare --mount`), make DIR a read-only bind mount of itself, then exec ARGV.

Used to run virtiofsd for read-only shares: it has no read-only switch of its own.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main(args: list[str]) -> None:
    if len(args) < 3 or args[1] != "--":
        sys.exit("usage: python -m cove.runtime.robind DIR -- ARGV...")
    directory, argv = args[0], args[2:]
    subprocess.run(["mount", "--bind", directory, directory], check=True)
    subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
