"""`cove mcp`: the MCP server for agent frameworks (stdio)."""

from __future__ import annotations

import click


@click.command()
def mcp() -> None:
    """Serve the Model Context Protocol on stdin/stdout: tools to start VMs, run commands,
    move files, read logs and stop VMs. Point an agent framework's MCP client at
    `cove mcp`."""
    try:
        from cove.sdk.mcp import serve
    except ImportError as error:
        from cove.errors import die

        die(f"cove mcp needs the mcp package: {error}", "pip install 'cove[mcp]'")
    serve()
