"""Tests that need root by design (bridge networks, switching users) are deselected, not
skipped, when the suite runs as another user: scripts/test runs the VM tests as both."""

from __future__ import annotations

import os

import pytest


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    keep = [item for item in items if item.get_closest_marker("needs_root") is None]
    dropped = [item for item in items if item.get_closest_marker("needs_root") is not None]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = keep
