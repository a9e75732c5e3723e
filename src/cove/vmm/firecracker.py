"""Firecracker: its argv and --config-file JSON (the API bodies, checked in tests against
firecracker-v1.16.1.yaml), and the API call that stops it.

No virtiofs/9p and no user networking: features.py refuses those before we get here.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cove.plan.vmplan import Plan
from cove.vmm.common import REBOOT_ARGS, cmdline, disks, guest_mac, tap_name
from cove.vmm.layout import BootFiles, RunPaths

BINARY = "firecracker"
CONFIG_FILE = "firecracker.json"  # in the run dir
# Firecracker's rule for --id (validate_instance_id): 1 to 64 ASCII letters, digits, '-'
ID_LENGTH = 64
ApiCall = tuple[str, str, dict[str, Any]]


def boot_source(plan: Plan, files: BootFiles) -> dict[str, Any]:
    return {"kernel_image_path": str(files.vmlinux), "initrd_path": str(files.initrd),
            "boot_args": cmdline(plan, REBOOT_ARGS)}


def machine_config(plan: Plan) -> dict[str, Any]:
    return {"vcpu_count": plan.vcpu, "mem_size_mib": plan.memory_mib, "smt": False}


def drives(plan: Plan, files: BootFiles, paths: RunPaths) -> list[dict[str, Any]]:
    # Firecracker answers the guest's GET_ID with the drive_id: it is the disk's serial
    return [{"drive_id": d.serial, "path_on_host": d.path, "is_root_device": False,
             "is_read_only": d.readonly, "cache_type": "Writeback"}
            for d in disks(plan, files, paths)]


def network_interfaces(plan: Plan) -> list[dict[str, Any]]:
    if plan.network in ("none", "user"):
        return []
    return [{"iface_id": "eth0", "host_dev_name": tap_name(plan.name),
             "guest_mac": guest_mac(plan.name)}]


def vsock(plan: Plan, paths: RunPaths) -> dict[str, Any]:
    return {"guest_cid": plan.vsock_cid, "uds_path": str(paths.vsock)}


def logger(paths: RunPaths) -> dict[str, Any]:
    return {"log_path": str(paths.run / "firecracker.log"), "level": "Warning",
            "show_level": True, "show_log_origin": False}


def metrics(paths: RunPaths) -> dict[str, Any]:
    return {"metrics_path": str(paths.run / "firecracker-metrics.json")}


def config_file(plan: Plan, files: BootFiles, paths: RunPaths) -> dict[str, Any]:
    """The JSON for `firecracker --config-file`: kebab-case keys, API bodies as values."""
    config: dict[str, Any] = {
        "boot-source": boot_source(plan, files),
        "drives": drives(plan, files, paths),
        "machine-config": machine_config(plan),
        "network-interfaces": network_interfaces(plan),
        "vsock": vsock(plan, paths),
        "logger": logger(paths),
        "metrics": metrics(paths),
    }
    return config


SHUTDOWN_CALL: ApiCall = ("PUT", "/actions", {"action_type": "SendCtrlAltDel"})


def instance_id(name: str) -> str:
    """A valid Firecracker --id for a cove name: the name itself where Firecracker allows
    it; else its letters, digits and '-' with a short hash, so distinct names stay apart."""
    if name and len(name) <= ID_LENGTH and all(c.isascii() and (c.isalnum() or c == "-")
                                                for c in name):
        return name
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    kept = "".join(c if c.isascii() and c.isalnum() else "-" for c in name)
    return f"{kept[:ID_LENGTH - 9]}-{digest}"


def argv(plan: Plan, paths: RunPaths) -> list[str]:
    return [
        BINARY,
        "--id", instance_id(plan.name),
        "--api-sock", str(paths.api),
        "--config-file", str(paths.run / CONFIG_FILE),
    ]
