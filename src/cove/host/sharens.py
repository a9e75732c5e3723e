"""`python -m cove.host.sharens [--readonly DIR] [--private-run] -- ARGV...`: set up the
mount namespace a virtiofsd runs in (made by `unshare --mount`, for a user who is not root
also `--map-root-user --map-auto`), then exec ARGV.

- `--readonly DIR`: DIR becomes a read-only bind mount of itself, because virtiofsd has no
  read-only switch; even a guest that remounts its share rw cannot write.
- `--private-run`: a private tmpfs on /run, where virtiofsd keeps its lock files; a user who
  is not root cannot write the host's /run/virtiofsd.
"""

from __future__ import annotations

import os
import subprocess
import sys


def main(args: list[str]) -> None:
    readonly: list[str] = []
    private_run = False
    while args and args[0] != "--":
        if args[0] == "--readonly" and len(args) > 1:
            readonly.append(args[1])
            args = args[2:]
        elif args[0] == "--private-run":
            private_run = True
            args = args[1:]
        else:
            sys.exit(f"sharens: unknown argument {args[0]!r}")
    argv = args[1:]
    if not argv:
        sys.exit("usage: python -m cove.host.sharens [--readonly DIR] [--private-run] "
                 "-- ARGV...")
    if private_run:
        subprocess.run(["mount", "-t", "tmpfs", "-o", "mode=0755", "cove-run", "/run"],
                       check=True)
    for directory in readonly:
        subprocess.run(["mount", "--bind", directory, directory], check=True)
        subprocess.run(["mount", "-o", "remount,bind,ro", directory], check=True)
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main(sys.argv[1:])
