"""Warm starts: which saved state may stand in for a cold boot. Pure functions beside the plan.

A template snapshot may be restored only into a VM shaped exactly like the one saved: the
key covers every input that shapes the VM at snapshot time (artifacts, devices and disks,
memory, vCPUs, kernel command line, env, services, config and secrets content). The VM's
name, ports and identity are not in it: a restore gets its own through `resumed`.
"""

from __future__ import annotations

import hashlib
from typing import Any

from cove.image.cache import content_key
from cove.plan.vmplan import Plan

# What a restore changes anyway, so it may differ between the saved VM and the new one.
PER_INSTANCE = ("name", "ports", "hypervisor_reason", "vsock_cid")


def snapshot_blockers(plan: Plan) -> list[str]:
    """Why this VM cannot be saved or restored (it then always boots cold)."""
    reasons = []
    if plan.hypervisor != "qemu":
        reasons.append(f"snapshots are wired for QEMU only, and this VM runs on "
                       f"{plan.hypervisor}")
    protos = sorted({share.proto for share in plan.shares})
    if protos:
        reasons.append(f"a {' and a '.join(protos)} share blocks QEMU 7.2's migration "
                       "(its state lives in virtiofsd or on the host)")
    if plan.network not in ("user", "none"):
        reasons.append(f"the bridge network {plan.network!r} gives each VM its own tap and "
                       "lease; it boots cold")
    return reasons


def shape(plan: Plan) -> dict[str, Any]:
    """The plan without what differs from one instance to the next."""
    data = plan.to_json()
    for key in PER_INSTANCE:
        data.pop(key, None)
    data["accel"] = plan.accel.accel
    data["init_env"] = {k: v for k, v in plan.init_env.items() if k != "COVE_HOSTNAME"}
    data["agent_config"] = {k: v for k, v in plan.agent_config.items() if k != "name"}
    return data


def template_key(plan: Plan, artifacts: dict[str, Any], delivered: dict[str, bytes],
                 hypervisor: str = "") -> str:
    """The key of the template a VM of this shape may be restored from. Config and secrets
    count by content (a changed secret means a cold boot; the secret is not in the key);
    `hypervisor` is the launcher's restore_shape() (its build and the CPU it presents)."""
    files = {name: hashlib.sha256(data).hexdigest() for name, data in delivered.items()}
    return content_key(["template", 1, shape(plan), artifacts, files, hypervisor])
