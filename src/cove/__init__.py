"""cove: declarative microVMs on any Linux host, from the command line or from Python.

    import cove
    with cove.sandbox({"name": "sbx", "packages": ["python3"]}) as vm:
        print(vm.exec(["python3", "-c", "print(6*7)"]).stdout)

The names load on first use, so the CLI (which imports this package) pays nothing for them.
`cove.aio` has the same names for asyncio.
"""

from __future__ import annotations

from cove.version import __version__

TYPE_CHECKING = False  # typing itself costs milliseconds on every CLI call
if TYPE_CHECKING:
    from typing import Any

    from cove.errors import CoveError, ExecTimeout, SpecError, VMNotFound
    from cove.sdk.sync import VM, ExecStream, from_snapshot, ls, sandbox, up
    from cove.sdk.types import (
        Chunk,
        ExecFailed,
        ExecResult,
        LogLine,
        SnapshotInfo,
        Spec,
        VMInfo,
    )

_WHERE = {
    "CoveError": "cove.errors", "ExecTimeout": "cove.errors", "VMNotFound": "cove.errors",
    "VM": "cove.sdk.sync", "ExecStream": "cove.sdk.sync", "ls": "cove.sdk.sync",
    "sandbox": "cove.sdk.sync", "up": "cove.sdk.sync", "from_snapshot": "cove.sdk.sync",
    "SnapshotInfo": "cove.sdk.types",
    "Chunk": "cove.sdk.types", "ExecFailed": "cove.sdk.types", "ExecResult": "cove.sdk.types",
    "LogLine": "cove.sdk.types", "Spec": "cove.sdk.types", "VMInfo": "cove.sdk.types",
    "SpecError": "cove.errors",
}

__all__ = ["VM", "Chunk", "CoveError", "ExecFailed", "ExecResult", "ExecStream", "ExecTimeout",
           "LogLine", "SnapshotInfo", "Spec", "SpecError", "VMInfo", "VMNotFound", "__version__",
           "from_snapshot", "ls", "sandbox", "up"]


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'cove' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
