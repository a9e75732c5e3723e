"""The `cove` command's entry. The two calls made most often, by people and by scripts
polling, are answered before click and the rest of the command line are imported: a no-op
`cove build` from its stamp, and `cove ls [--json]` from a running daemon (tens of
milliseconds instead of 150 or more). Anything unusual (no daemon yet, an error answer)
takes the full path, which starts the daemon or reports the failure as every command does.
"""

from __future__ import annotations

import sys

TYPE_CHECKING = False  # typing costs milliseconds on every CLI call
if TYPE_CHECKING:
    from typing import Any


def daemon_get(path: str) -> Any:
    """One GET to the daemon (started if it is not running), as JSON; None on any failure.
    A bare HTTP/1.0 request on the socket, because http.client's import alone (email, ssl)
    costs more than all of `cove ls` should; the daemon answers the whole body and closes."""
    import json
    import socket

    from cove.client.start import SOCKET_NAME, start_daemon
    from cove.host.home import prepare_home

    try:
        home = prepare_home()  # as every command: refuse an unsafe home, umask 077
    except Exception:
        return None
    for attempt in range(2):
        try:
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
                connection.settimeout(30)
                connection.connect(str(home / SOCKET_NAME))
                connection.sendall(f"GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n".encode())
                answer = b"".join(iter(lambda: connection.recv(1 << 16), b""))
            head, _, body = answer.partition(b"\r\n\r\n")
            return json.loads(body) if head.split(b" ", 2)[1:2] == [b"200"] else None
        except (FileNotFoundError, ConnectionRefusedError):
            if attempt:
                return None
        except Exception:
            return None
        try:
            start_daemon(home)  # no daemon yet: start it, as every command does, and ask again
        except Exception:
            return None
    return None


def quick_ls(argv: list[str]) -> bool:
    """`cove ls` or `cove ls --json`; False: let the full command line do (or explain) it."""
    if argv not in (["ls"], ["ls", "--json"]):
        return False
    vms = daemon_get("/v1/vms")
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
