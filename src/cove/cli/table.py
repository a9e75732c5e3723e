"""Plain text tables for `ls`-style commands. Standard library only and free of click, so the
quick `cove ls` (see entry.py) can print one without importing the full command line."""

from __future__ import annotations

TYPE_CHECKING = False  # typing costs milliseconds on every CLI call
if TYPE_CHECKING:
    from typing import Any


# C0 controls but tab, DEL and the C1 controls: what a terminal may take for a command
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x00, 0x09), *range(0x0a, 0x20), 0x7f,
                                        *range(0x80, 0xa0))}


def printable(text: str) -> str:
    """`text` with the characters a terminal would act on written out (`\\x1b`), so what a
    guest sends (service output, names, errors) cannot move the cursor, retitle the
    window or answer for the user. Only for a terminal: piped output stays as it came."""
    return text.translate(_CONTROLS)


def plain_table(headers: list[str], rows: list[list[str]]) -> str:
    """Left-aligned columns two spaces apart under a header row, no trailing blanks."""
    widths = [max(len(cell) for cell in column) for column in zip(headers, *rows, strict=True)]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
                     .rstrip() for row in [headers, *rows])


def human_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    if whole < 86400:
        return f"{whole // 3600}h{whole % 3600 // 60:02d}m"
    return f"{whole // 86400}d{whole % 86400 // 3600}h"


def human_bytes(count: int | None) -> str:
    return "-" if count is None else f"{count / 2**20:.0f}MiB"


LS_HEADERS = ["NAME", "STATE", "HEALTH", "PORTS", "UPTIME", "CPU", "MEM"]


def ls_rows(vms: list[dict[str, Any]]) -> list[list[str]]:
    return [[vm["name"], vm["state"], vm["health"], ", ".join(vm["ports"]) or "-",
             human_duration(vm["uptime"]),
             "-" if vm["cpu_percent"] is None else f"{vm['cpu_percent']:.1f}%",
             human_bytes(vm["rss_bytes"])] for vm in vms]


def ls_table(vms: list[dict[str, Any]]) -> str:
    """`cove ls`, and below it why each broken or failed VM is so."""
    table = grouped_table(vms)
    why = [f"{vm['name']}: {printable(str(vm['error']))}" for vm in vms
           if vm.get("error") and vm["state"] in ("broken", "failed")]
    return "\n".join([table, *why])


def grouped_table(vms: list[dict[str, Any]]) -> str:
    """With a STACK column, the stacks' VMs together, when any VM has one."""
    if not any(vm.get("stack") for vm in vms):
        return plain_table(LS_HEADERS, ls_rows(vms))
    from cove.start.stacks import stack_members

    alone = [vm for vm in vms if not vm.get("stack")]
    stacks = sorted({vm["stack"] for vm in vms if vm.get("stack")})
    vms = alone + [vm for stack in stacks for vm in stack_members(vms, stack)]
    rows = [[vm.get("stack") or "-", *row] for vm, row in zip(vms, ls_rows(vms), strict=True)]
    return plain_table(["STACK", *LS_HEADERS], rows)
