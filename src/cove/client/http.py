"""Talking to the cove daemon: the CLI's and Python programs' way to run VMs.

Plain http.client over the daemon's unix socket; the daemon is started on demand.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

from cove.client.connect import start_daemon
from cove.daemon.status import AUTOSTART_ENV, AUTOSTART_HEADER, SETTLED_WAIT_MAX
from cove.errors import CoveError, VMNotFound
from cove.host.home import Home, cove_home


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: Path, timeout: float | None = None) -> None:
        super().__init__("localhost", timeout=timeout)
        self.path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(str(self.path))
        except BaseException:
            sock.close()
            raise
        self.sock = sock


class Client:
    def __init__(self, home: Path | None = None, autostart: bool = True) -> None:
        self.home = home or cove_home()
        self.socket = Home(self.home).socket
        # the daemon's own `cove up` children never start a daemon: theirs is stopping
        self.autostart = autostart and not os.environ.get(AUTOSTART_ENV)

    # -- plumbing ------------------------------------------------------------------------
    def _open(self, method: str, path: str, body: Any = None,
              timeout: float | None = 300.0) -> http.client.HTTPResponse:
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if os.environ.get(AUTOSTART_ENV):  # the daemon's own start of enabled VMs
            headers[AUTOSTART_HEADER] = "1"
        for attempt in range(2):
            connection = UnixHTTPConnection(self.socket, timeout)
            try:
                connection.request(method, path, body=data, headers=headers)
                return connection.getresponse()
            except (FileNotFoundError, ConnectionRefusedError):
                connection.close()
                if attempt or not self.autostart:
                    raise CoveError(f"the cove daemon is not running ({self.socket})",
                                    "any cove command starts it; see coved.log") from None
                self.start_daemon()
            except PermissionError:
                raise CoveError(f"permission denied on {self.socket}",
                                "the daemon serves only its own user; run cove as that "
                                "user or set COVE_HOME to your own directory") from None
        raise AssertionError("unreachable")

    def request(self, method: str, path: str, body: Any = None,
                timeout: float | None = 300.0) -> Any:
        response = self._open(method, path, body, timeout)
        payload = response.read()
        try:
            data = json.loads(payload) if payload else None
        except ValueError:
            data = {"error": payload.decode(errors="replace")}
        if response.status >= 400:
            error = data if isinstance(data, dict) else {}
            if error.get("code") == VMNotFound.code:
                raise VMNotFound(error["error"], error.get("hint"))
            raise CoveError(error.get("error") or f"daemon answered {response.status}",
                            error.get("hint"))
        return data

    def stream(self, path: str) -> Iterator[dict[str, Any]]:
        """JSON lines from a streaming endpoint, as they come."""
        response = self._open("GET", path, timeout=None)
        if response.status >= 400:
            error = json.loads(response.read() or b"{}")
            raise CoveError(error.get("error", f"daemon answered {response.status}"),
                            error.get("hint"))
        while line := response.readline():
            yield json.loads(line)

    def start_daemon(self) -> None:
        start_daemon(self.home)

    # -- the API -------------------------------------------------------------------------
    def list_vms(self, after_autostart: bool = False) -> list[dict[str, Any]]:
        """Every VM; `after_autostart`: once a starting daemon has started the enabled ones
        (so `down --all` misses none of them)."""
        path = "/v1/vms?autostarted=1" if after_autostart else "/v1/vms"
        result: list[dict[str, Any]] = self.request("GET", path)
        return result

    def create(self, record: dict[str, Any], cold: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", "/v1/vms", {"record": record,
                                                                  "cold": cold})
        return result

    def state_change(self, name: str, change: str) -> dict[str, Any]:
        """pause, resume or suspend."""
        result: dict[str, Any] = self.request("POST", f"/v1/vms/{quote(name)}/{change}", {})
        return result

    def clone(self, name: str, count: int, prefix: str | None = None,
              ports: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "POST", f"/v1/vms/{quote(name)}/clone", clone_body(count, prefix, ports))
        return result

    def save_snapshot(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/vms/{quote(name)}/snapshot", {})
        return result

    def clone_snapshot(self, ident: str, count: int, prefix: str | None = None,
                       ports: tuple[str, ...] = ()) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request(
            "POST", f"/v1/snapshots/{quote(ident)}/clone", clone_body(count, prefix, ports))
        return result

    def snapshots(self) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", "/v1/snapshots")
        return result

    def remove_snapshot(self, ident: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE", f"/v1/snapshots/{quote(ident)}")
        return result

    def get(self, name: str, settled: float | None = None) -> dict[str, Any]:
        """A VM's status; with `settled`, once it has settled (`vm_settled`) or after that
        many seconds, whichever comes first."""
        path = f"/v1/vms/{quote(name)}"
        if settled is not None:
            path += f"?settled={min(max(settled, 0.0), SETTLED_WAIT_MAX):.3f}"
        result: dict[str, Any] = self.request("GET", path)
        return result

    def ping(self, name: str) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/vms/{quote(name)}/ping", {})
        return result

    def down(self, name: str, timeout: float = 20.0) -> None:
        self.request("POST", f"/v1/vms/{quote(name)}/down", {"timeout": timeout})

    def restart(self, name: str, timeout: float = 20.0) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/vms/{quote(name)}/restart",
                                              {"timeout": timeout})
        return result

    def forwards(self, name: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/v1/vms/{quote(name)}/forwards")
        return result

    def add_forward(self, name: str, port: str, tunnel: bool = False) -> dict[str, Any]:
        result: dict[str, Any] = self.request("POST", f"/v1/vms/{quote(name)}/forwards",
                                              {"port": port, "tunnel": tunnel})
        return result

    def remove_forward(self, name: str, host: int) -> dict[str, Any]:
        result: dict[str, Any] = self.request("DELETE",
                                              f"/v1/vms/{quote(name)}/forwards/{host}")
        return result

    def logs(self, name: str, count: int | None = None, follow: bool = False,
             service: str | None = None) -> Iterator[dict[str, Any]]:
        query = {k: v for k, v in (("n", count), ("follow", int(follow)),
                                    ("service", service)) if v is not None}
        return self.stream(f"/v1/vms/{quote(name)}/logs?{urlencode(query)}")

    def console_log(self, name: str, count: int = 100) -> str:
        response = self._open("GET", f"/v1/vms/{quote(name)}/console-log?n={count}")
        text = response.read().decode(errors="replace")
        if response.status >= 400:
            raise CoveError(json.loads(text).get("error", text))
        return text

    def events(self, follow: bool = False, count: int = 100,
               vm: str | None = None) -> Iterator[dict[str, Any]]:
        query = {k: v for k, v in (("n", count), ("follow", int(follow)), ("vm", vm))
                 if v is not None}
        return self.stream(f"/v1/events?{urlencode(query)}")


def clone_body(count: int, prefix: str | None, ports: tuple[str, ...]) -> dict[str, Any]:
    body: dict[str, Any] = {"count": count, "ports": list(ports)}
    if prefix is not None:
        body["prefix"] = prefix
    return body
