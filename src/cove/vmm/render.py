"""What a backend would be given for a plan: argv, config files, API calls.

Read from the launcher itself, so `cove plan` cannot show something other than what runs.
"""

from __future__ import annotations

from typing import Any

from cove.plan.vmplan import Plan
from cove.vmm.launch import launcher_for
from cove.vmm.layout import BootFiles, RunPaths


def render(plan: Plan, files: BootFiles, paths: RunPaths) -> dict[str, Any]:
    launcher = launcher_for(plan, files, paths)
    rendered: dict[str, Any] = {"argv": launcher.argv()}
    if configs := launcher.config_files():
        rendered["config"] = {str(paths.run / name): body for name, body in configs.items()}
    if calls := launcher.boot_calls():
        rendered["api"] = calls
    return rendered
