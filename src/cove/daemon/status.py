"""The daemon's rule for when a VM has settled, shared with its clients."""

from __future__ import annotations

from typing import Any

# the daemon's own `cove up` children say who they are: they go before commands that wait
# for the enabled VMs' start (daemon/server.py after_autostart)
AUTOSTART_ENV = "COVE_AUTOSTART"
AUTOSTART_HEADER = "X-Cove-Autostart"

SETTLED_WAIT_MAX = 60.0  # longest `?settled=` wait the daemon accepts, in seconds


def vm_settled(vm: dict[str, Any]) -> bool:
    """Whether a VM's status is one `up` stops waiting at: healthy (or nothing to check),
    unhealthy, asleep as `[idle]` asks, or no longer starting or running. The daemon holds
    a `GET /v1/vms/NAME?settled=SECONDS` until this holds, by the same rule."""
    if vm["state"] not in ("running", "starting"):
        return True
    return vm["health"] in ("healthy", "-", "unhealthy")
