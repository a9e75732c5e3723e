"""The asyncio twin of `cove`: the same names, with coroutines and async iterators.

    async with cove.aio.sandbox({"name": "sbx", "packages": ["python3"]}) as vm:
        result = await vm.exec(["python3", "-c", "print(6*7)"])
"""

from cove.errors import CoveError, ExecTimeout, SpecError, VMNotFound
from cove.sdk.aio import VM, ExecStream, from_snapshot, ls, sandbox, up
from cove.sdk.types import Chunk, ExecFailed, ExecResult, LogLine, SnapshotInfo, Spec, VMInfo

__all__ = ["VM", "Chunk", "CoveError", "ExecFailed", "ExecResult", "ExecStream", "ExecTimeout",
           "LogLine", "SnapshotInfo", "Spec", "SpecError", "VMInfo", "VMNotFound",
           "from_snapshot", "ls", "sandbox", "up"]
