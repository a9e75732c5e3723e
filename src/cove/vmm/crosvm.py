"""crosvm: the `crosvm run` argv for a plan, and its control commands."""

from __future__ import annotations

from cove.plan.vmplan import Plan
from cove.vmm.common import cmdline, disks, plain, tap_name
from cove.vmm.layout import BootFiles, RunPaths

BINARY = "crosvm"


def argv(plan: Plan, files: BootFiles, paths: RunPaths) -> list[str]:
    args = [
        BINARY, "run",
        "--cpus", str(plan.vcpu),
        "--mem", str(plan.memory_mib),
        "--initrd", str(files.initrd),
        "--params", cmdline(plan),
        "--socket", str(paths.api),
        "--serial", f"type=file,path={plain(paths.console_log, ',=', 'console log')},num=1,"
                    "console=true",
        "--vsock", f"cid={plan.vsock_cid}",  # (a virtio-rng device is there by default)
    ]
    for disk in disks(plan, files, paths):
        # crosvm's block id is the serial the guest reads
        args += ["--block", ",".join([f"path={plain(disk.path, ',=', 'disk image')}",
                                      f"id={disk.serial}",
                                      *(["ro=true"] if disk.readonly else [])])]
    for share in plan.shares:
        kind = "fs" if share.proto == "virtiofs" else "p9"
        source = plain(share.source, ":,=", "shared directory")
        args += ["--shared-dir", f"{source}:{share.tag}:type={kind}"]
    if plan.network not in ("none", "user"):
        args += ["--net", f"tap-name={tap_name(plan.name)}"]
    return [*args, str(files.vmlinux)]


def powerbtn_argv(paths: RunPaths) -> list[str]:
    return [BINARY, "powerbtn", str(paths.api)]


def stop_argv(paths: RunPaths) -> list[str]:
    return [BINARY, "stop", str(paths.api)]
