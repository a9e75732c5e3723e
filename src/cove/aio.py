"""The asyncio twin of `cove`: the same names, with coroutines and async iterators.

    async with cove.aio.sandbox({"name": "sbx", "packages": ["python3"]}) as vm:
        result = await vm.exec(["python3", "-c", "print(6*7)"])
"""

from cove.errors import CoveError, ExecTimeout, SpecError, VMNotFound
from cove.sdk.aio import VM, ExecStream, ls, sandbox, up
from cove.sdk.types import Chunk, ExecFailed, ExecResult, LogLine, Spec, VMInfo

__all__ = ["VM", "Chunk", "CoveError", "ExecFailed", "ExecResult", "ExecStream", "ExecTimeout",
           "LogLine", "Spec", "SpecError", "VMInfo", "VMNotFound", "ls", "sandbox", "up"]
