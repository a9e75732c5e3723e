"""Where cove keeps its state: $COVE_HOME, else /var/lib/cove for root, else XDG state."""

from __future__ import annotations

import os
from pathlib import Path


def cove_home() -> Path:
    explicit = os.environ.get("COVE_HOME")
    if explicit:
        return Path(explicit)
    if os.geteuid() == 0:
        return Path("/var/lib/cove")
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(state) / "cove"
