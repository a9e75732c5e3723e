"""Cloud Hypervisor: its argv and the REST vm.create/vm.boot calls for a plan.

Bodies follow the upstream OpenAPI (checked in tests against cloud-hypervisor-v53.0.yaml).
"""

from __future__ import annotations

from typing import Any

from cove.plan.vmplan import Plan
from cove.vmm.common import cmdline, disks, guest_mac, plain, tap_name
from cove.vmm.layout import BootFiles, RunPaths

BINARY = "cloud-hypervisor"
FS_QUEUE_SIZE = 512


def uses_virtiofs(plan: Plan) -> bool:
    return any(share.proto == "virtiofs" for share in plan.shares)


def vm_config(plan: Plan, files: BootFiles, paths: RunPaths) -> dict[str, Any]:
    """The VmConfig body of PUT /api/v1/vm.create."""
    config: dict[str, Any] = {
        "payload": {"kernel": str(files.vmlinux), "initramfs": str(files.initrd),
                    "cmdline": cmdline(plan)},
        "cpus": {"boot_vcpus": plan.vcpu, "max_vcpus": plan.vcpu},
        # virtiofsd maps guest memory: it must be shared
        "memory": {"size": plan.memory_mib * 2**20, "shared": uses_virtiofs(plan)},
        "disks": [{"id": d.id, "path": d.path, "readonly": d.readonly, "serial": d.serial}
                  for d in disks(plan, files, paths)],
        "rng": {"src": "/dev/urandom"},
        "serial": {"mode": "File", "file": str(paths.console_log)},
        "console": {"mode": "Off"},
        "vsock": {"cid": plan.vsock_cid, "socket": str(paths.vsock)},
    }
    fs = [{"tag": s.tag, "socket": str(paths.virtiofs(s.tag)), "num_queues": 1,
           "queue_size": FS_QUEUE_SIZE} for s in plan.shares]
    if fs:
        config["fs"] = fs
    if plan.network not in ("none", "user"):
        config["net"] = [{"tap": tap_name(plan.name), "mac": guest_mac(plan.name)}]
    return config


def argv(paths: RunPaths) -> list[str]:
    """cove starts Cloud Hypervisor with its API socket only, then creates and boots the VM
    through it (`api_calls`): one way in, whose bodies are checked against the OpenAPI."""
    return [BINARY, "--api-socket", f"path={plain(paths.api, ',', 'API socket path')}"]


def api_calls(plan: Plan, files: BootFiles, paths: RunPaths) -> list[tuple[str, str, Any]]:
    return [("PUT", "/api/v1/vm.create", vm_config(plan, files, paths)),
            ("PUT", "/api/v1/vm.boot", None)]


SHUTDOWN_CALLS = [("PUT", "/api/v1/vm.power-button", None)]
