"""The `cove` command's entry. The two calls made most often, by people and by scripts
polling, are answered before click and the rest of the command line are imported: a no-op
`cove build` from its stamp, and `cove ls [--json]` from a running daemon (tens of
milliseconds instead of 150 or more). Anything unusual (no daemon yet, an error answer)
takes the full path, which starts the daemon or reports the failure as every command does.
"""

from __future__ import annotations

import sys


def quick_ls(argv: list[str]) -> bool:
    """`cove ls` or `cove ls --json`; False: let the full command line do (or explain) it."""
    if argv not in (["ls"], ["ls", "--json"]):
        return False
    from cove.client.connect import bare_get

    vms = bare_get("/v1/vms")
    if not isinstance(vms, list):
        return False
    if argv == ["ls"]:
        from cove.cli.table import ls_table

        text = ls_table(vms)
    else:
        import json

        text = json.dumps(vms, indent=2)
    sys.stdout.write(text + "\n")
    return True


def main() -> None:
    argv = sys.argv[1:]
    if argv[:1] == ["build"]:
        from cove.image.stamp import quick_build

        if quick_build(argv):
            return
    try:
        if quick_ls(argv):
            return
    except BrokenPipeError:  # `cove ls | head`; the full path's handling, without click
        return
    from cove.cli.main import main as full

    full()


if __name__ == "__main__":
    main()
