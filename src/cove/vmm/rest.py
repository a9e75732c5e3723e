"""JSON over HTTP on a hypervisor's unix socket (Firecracker's and Cloud Hypervisor's API)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from cove.errors import CoveError
from cove.host.local_http import aiohttp


class ApiError(CoveError):
    pass


class RestClient:
    def __init__(self, socket: Path, name: str) -> None:
        self.socket = socket
        self.name = name

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        connector = aiohttp.UnixConnector(path=str(self.socket))
        async with aiohttp.ClientSession(connector=connector) as session, \
                session.request(method, f"http://localhost{path}",
                                json=body if body is not None else None) as response:
            text = await response.text()
            if response.status >= 400:
                raise ApiError(f"{self.name} refused {method} {path}: {fault(text)}")
            return json.loads(text) if text else None

    async def run(self, calls: Iterable[tuple[str, str, Any]]) -> None:
        """Make the calls in order; the first refusal stops the sequence."""
        for method, path, body in calls:
            await self.call(method, path, body)


def fault(text: str) -> str:
    """Firecracker says {"fault_message": ...}; others plain text or {"error": ...}."""
    try:
        data = json.loads(text)
    except ValueError:
        return text.strip() or "(no reason given)"
    if isinstance(data, dict):
        return str(data.get("fault_message") or data.get("error") or data)
    return str(data)
