"""The one client of the daemon: HTTP calls (`http`), exec and console WebSockets (`exec`),
and reaching or starting the daemon (`connect`). The CLI, the MCP server and the Python API
all use it."""

from __future__ import annotations

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

# `cove.client` was one module until the layout of 2026-12: its names stay importable from
# here for one release, with a warning that says where they went.
_MOVED = {"Client": "cove.client.http", "UnixHTTPConnection": "cove.client.http",
          "clone_body": "cove.client.http", "vm_settled": "cove.daemon.status",
          "SETTLED_WAIT_MAX": "cove.daemon.status"}


def __getattr__(name: str) -> Any:
    module = _MOVED.get(name)
    if module is None:
        raise AttributeError(f"module 'cove.client' has no attribute {name!r}")
    import importlib
    import warnings

    warnings.warn(f"cove.client.{name} is deprecated; import it from {module}",
                  DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), name)
