"""`cove mcp`: a Model Context Protocol server over stdio, so agent frameworks can drive
sandboxes. Every tool is a thin call into `cove.aio`; a CoveError becomes the tool's error
text (what is wrong and how to fix it), never a traceback."""

from __future__ import annotations

import base64
import functools
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError

from cove.errors import CoveError
from cove.sdk import aio
from cove.sdk.transfer import copy_plan

OUTPUT_LIMIT = 1 << 20  # per stream in one exec result: an agent's context is not a disk
MCP_FILE_READ = 16 << 20  # one get_file: it travels as one MCP message

server = MCPServer("cove", instructions=(
    "Run code in throwaway microVMs. `up` a spec (a cove.toml path, or spec keys such as "
    '{"name": "sbx", "packages": ["python3"]}), then `exec` commands, move files with '
    "`put_file`/`get_file`/`cp`, read `logs`, and `down` the VM when done."))


P = ParamSpec("P")
R = TypeVar("R")


def cove_tool(function: Callable[P, Awaitable[R]]) -> Callable[P, Awaitable[R]]:
    """A CoveError is the tool's answer (message and hint), not an 'unexpected error'."""
    @functools.wraps(function)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return await function(*args, **kwargs)
        except CoveError as error:
            raise ToolError(str(error)) from None
    return wrapper


def text_or_base64(data: bytes) -> dict[str, str]:
    try:
        return {"text": data.decode()}
    except UnicodeDecodeError:
        return {"base64": base64.b64encode(data).decode()}


def clipped(data: bytes) -> str:
    text = data[:OUTPUT_LIMIT].decode(errors="replace")
    return text + ("\n[cove: output clipped]" if len(data) > OUTPUT_LIMIT else "")


@server.tool()
@cove_tool
async def up(spec: str | dict[str, Any], name: str | None = None,
             ports: list[str] | None = None, env: dict[str, str] | None = None,
             ephemeral: bool = True) -> dict[str, Any]:
    """Start a VM from a cove.toml path or a dict of spec keys and wait until it is healthy.
    Returns its name, state and ports."""
    vm = await aio.up(spec, name=name, ports=ports or (), env=env, ephemeral=ephemeral)
    info = await vm.info()
    return {"name": info.name, "state": info.state, "health": info.health,
            "ports": list(info.ports), "warm_from": info.warm_from}


@server.tool(name="exec")
@cove_tool
async def exec_tool(name: str, argv: list[str], stdin: str | None = None,
                    env: dict[str, str] | None = None, cwd: str | None = None,
                    user: str | None = None, timeout: float = 60.0) -> dict[str, Any]:
    """Run argv in the VM and wait (a timeout kills the command's process group).
    Returns the exit code, stdout and stderr."""
    result = await aio.VM(name).exec(argv, stdin=stdin.encode() if stdin is not None else None,
                                     env=env, cwd=cwd, user=user, timeout=timeout)
    return {"returncode": result.returncode, "stdout": clipped(result.stdout),
            "stderr": clipped(result.stderr)}


@server.tool()
@cove_tool
async def put_file(name: str, path: str, content: str, mode: int = 0o644,
                   content_is_base64: bool = False) -> dict[str, Any]:
    """Write a file in the VM (parents created)."""
    data = base64.b64decode(content) if content_is_base64 else content.encode()
    await aio.VM(name).put_file(path, data, mode)
    return {"path": path, "bytes": len(data)}


@server.tool()
@cove_tool
async def get_file(name: str, path: str) -> dict[str, str]:
    """Read a file from the VM: text, or base64 when it is not UTF-8."""
    return text_or_base64(await aio.VM(name).get_file(path, MCP_FILE_READ))


@server.tool()
@cove_tool
async def cp(source: str, dest: str) -> dict[str, str]:
    """Copy between this host and a VM like `cove cp`: one side is VM:/path."""
    direction, vm_name, guest_path, host_path = copy_plan(source, dest)
    vm = aio.VM(vm_name)
    if direction == "in":
        await vm.copy_in(Path(host_path), guest_path)
        return {"copied": f"{host_path} -> {vm_name}:{guest_path}"}
    landed = await vm.copy_out(guest_path, Path(host_path))
    return {"copied": f"{vm_name}:{guest_path} -> {landed}"}


@server.tool()
@cove_tool
async def logs(name: str, count: int = 100, service: str | None = None) -> dict[str, Any]:
    """The VM's last service log lines."""
    lines = [f"{line.service} | {line.text}"
             async for line in aio.VM(name).logs(False, count, service)]
    return {"lines": lines}


@server.tool()
@cove_tool
async def ls() -> dict[str, Any]:
    """The VMs cove runs, with state and health."""
    return {"vms": [{"name": vm.name, "state": vm.state, "health": vm.health,
                     "ports": list(vm.ports)} for vm in await aio.ls()]}


@server.tool()
@cove_tool
async def down(name: str) -> dict[str, str]:
    """Stop a VM and forget it (its logs and named volumes stay)."""
    await aio.VM(name).down()
    return {"stopped": name}


def serve() -> None:
    server.run("stdio")
