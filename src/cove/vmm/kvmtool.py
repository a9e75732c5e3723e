"""kvmtool (lkvm): the `lkvm run` argv for a plan.

kvmtool has no graceful stop: cove asks the agent to power off, then `lkvm stop` kills.
"""

from __future__ import annotations

from cove.plan.vmplan import Plan
from cove.vmm.common import REBOOT_ARGS, cmdline, disks, plain, tap_name
from cove.vmm.layout import BootFiles, RunPaths

BINARY = "lkvm"


def network_args(plan: Plan) -> list[str]:
    if plan.network == "none":
        return ["--network", "mode=none"]
    if plan.network == "user":
        return ["--network", "mode=user"]
    return ["--network", f"mode=tap,tapif={tap_name(plan.name)}"]


def argv(plan: Plan, files: BootFiles, paths: RunPaths) -> list[str]:
    args = [
        BINARY, "run",
        "--name", plan.name,
        "--cpus", str(plan.vcpu),
        "--mem", str(plan.memory_mib),
        "--kernel", str(files.vmlinux),
        "--initrd", str(files.initrd),
        "--params", cmdline(plan, REBOOT_ARGS),
        "--console", "serial",
        "--rng",
        "--vsock", str(plan.vsock_cid),
        *network_args(plan),
    ]
    for disk in disks(plan, files, paths):
        args += ["--disk", plain(disk.path, ",", "disk image") + (",ro" if disk.readonly else "")]
    for share in plan.shares:
        args += ["--9p", f"{plain(share.source, ',', 'shared directory')},{share.tag}"]
    return args


def stop_argv(plan: Plan) -> list[str]:
    return [BINARY, "stop", "--name", plan.name]
