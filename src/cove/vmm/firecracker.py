"""Firecracker: the --config-file JSON, the equivalent API calls, and an API client.

Bodies follow the upstream swagger (checked in tests against firecracker-v1.16.1.yaml).
No virtiofs/9p and no user networking: features.py refuses those before we get here.
"""

from __future__ import annotations

from typing import Any

from cove.plan import Plan
from cove.vmm.common import REBOOT_ARGS, cmdline, disks, guest_mac, tap_name
from cove.vmm.layout import BootFiles, RunPaths

BINARY = "firecracker"
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


def api_calls(plan: Plan, files: BootFiles, paths: RunPaths) -> list[ApiCall]:
    """The same configuration through the API, ending with InstanceStart."""
    calls: list[ApiCall] = [
        ("PUT", "/logger", logger(paths)),
        ("PUT", "/metrics", metrics(paths)),
        ("PUT", "/boot-source", boot_source(plan, files)),
        ("PUT", "/machine-config", machine_config(plan)),
    ]
    calls += [("PUT", f"/drives/{d['drive_id']}", d) for d in drives(plan, files, paths)]
    calls += [("PUT", f"/network-interfaces/{n['iface_id']}", n)
              for n in network_interfaces(plan)]
    calls.append(("PUT", "/vsock", vsock(plan, paths)))
    calls.append(("PUT", "/actions", {"action_type": "InstanceStart"}))
    return calls


SHUTDOWN_CALL: ApiCall = ("PUT", "/actions", {"action_type": "SendCtrlAltDel"})


def argv(plan: Plan, paths: RunPaths) -> list[str]:
    return [
        BINARY,
        "--id", plan.name,
        "--api-sock", str(paths.api),
        "--config-file", str(paths.run / "firecracker.json"),
    ]
