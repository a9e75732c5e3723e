"""What each backend would be given for a plan: argv, config file, API calls."""

from __future__ import annotations

from typing import Any

from cove.plan import Plan
from cove.spec.model import Hypervisor
from cove.vmm import cloud_hypervisor, crosvm, firecracker, kvmtool
from cove.vmm.layout import BootFiles, RunPaths
from cove.vmm.qemu import qemu_argv


def render(plan: Plan, files: BootFiles, paths: RunPaths) -> dict[str, Any]:
    match Hypervisor(plan.hypervisor):
        case Hypervisor.FIRECRACKER:
            return {"argv": firecracker.argv(plan, paths),
                    "config": firecracker.config_file(plan, files, paths),
                    "api": firecracker.api_calls(plan, files, paths)}
        case Hypervisor.CLOUD_HYPERVISOR:
            return {"argv": cloud_hypervisor.argv(plan, files, paths),
                    "api": cloud_hypervisor.api_calls(plan, files, paths)}
        case Hypervisor.CROSVM:
            return {"argv": crosvm.argv(plan, files, paths)}
        case Hypervisor.KVMTOOL:
            return {"argv": kvmtool.argv(plan, files, paths)}
        case _:
            return {"argv": qemu_argv(plan, files, paths)}
