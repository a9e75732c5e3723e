"""`cove doctor`: what this host can do for cove, and whether any VM could write a host store."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from cove.host.home import Home, cove_home
from cove.host.proc import TOOL_PACKAGES
from cove.host.userns import rootless_share_problem, user_name
from cove.plan.accel import decide_accel
from cove.plan.choose import BINARIES, INSTALL_HINTS
from cove.spec.load import touches_host_store
from cove.spec.model import Accel, Hypervisor
from cove.vm.storage import VIRTIOFSD

REQUIRED_TOOLS = ("qemu-system-x86_64", "qemu-img", "busybox", "mkfs.erofs", "mksquashfs",
                  "mkfs.ext4", "depmod", "lz4", "apt-get", "dpkg-query")
OPTIONAL_TOOLS = {"nix-store": "cove store verify/repair", "dnsmasq": "cove networks",
                  "nft": "cove networks"}


@dataclass(frozen=True)
class Finding:
    ok: bool
    what: str
    detail: str = ""
    required: bool = True


def tool_findings() -> list[Finding]:
    findings = []
    for tool in REQUIRED_TOOLS:
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        findings.append(Finding(path is not None, tool, path or
                                f"missing: apt-get install {TOOL_PACKAGES.get(tool, tool)}"))
    findings.append(Finding(Path(VIRTIOFSD).exists(), "virtiofsd",
                            VIRTIOFSD if Path(VIRTIOFSD).exists() else
                            "missing (shares): apt-get install qemu-system-common"))
    for tool, purpose in OPTIONAL_TOOLS.items():
        path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin")
        findings.append(Finding(path is not None, tool, path or f"missing; needed for {purpose}",
                                required=False))
    return findings


# How each hypervisor says its version; all but QEMU need KVM (see docs/hypervisors.md).
VERSION_ARGS = {
    Hypervisor.QEMU: ["--version"], Hypervisor.FIRECRACKER: ["--version"],
    Hypervisor.CLOUD_HYPERVISOR: ["--version"], Hypervisor.CROSVM: ["--version"],
    Hypervisor.KVMTOOL: ["version"],
}


def hypervisor_findings(accel: str) -> list[Finding]:
    """Each hypervisor with its version, or "not installed"; only QEMU is required."""
    findings = []
    for hypervisor, binary in BINARIES.items():
        required = hypervisor is Hypervisor.QEMU
        path = shutil.which(binary)
        if path is None:
            detail = "not installed: " + INSTALL_HINTS[binary]
            findings.append(Finding(False, hypervisor.value, detail, required))
            continue
        version = first_line([path, *VERSION_ARGS[hypervisor]])
        usable = "" if required or accel == "kvm" else " (installed, but needs KVM, which " \
            "this host cannot use: auto will not choose it)"
        findings.append(Finding(True, hypervisor.value, f"{version}{usable}", required))
    return findings


def first_line(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, check=False, timeout=5)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"installed, but `{' '.join(argv)}` failed: {error}"
    lines = (done.stdout or done.stderr).splitlines()
    return lines[0].strip() if lines else "unknown version"


def store_share_findings(home: Path) -> list[Finding]:
    """Every VM cove knows: no share of a host store may be writable."""
    import json

    findings = []
    for record in sorted(Home(home).vms.glob("*/vm.json")):
        try:
            shares = json.loads(record.read_text())["plan"].get("shares", [])
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
            findings.append(Finding(False, f"record of VM {record.parent.name}",
                                    f"cannot be read ({error}); `cove down "
                                    f"{record.parent.name}` forgets it"))
            continue
        bad = [s["source"] for s in shares
               if not s["readonly"] and touches_host_store(Path(s["source"]))]
        findings.append(Finding(not bad, f"store safety of VM {record.parent.name}",
                                f"WRITABLE host store: {', '.join(bad)}" if bad else
                                "no host store is shared writable"))
    return findings


def privilege_findings() -> list[Finding]:
    """What this user can do: everything but bridge networks needs no root."""
    if os.geteuid() == 0:
        return [Finding(True, "user", "root: everything, bridge networks included")]
    problem = rootless_share_problem()
    return [
        Finding(True, "user", f"{user_name(os.geteuid())} (not root): everything works but "
                "bridge networks (`cove network`), which need root", required=False),
        Finding(problem is None, "virtiofs shares without root",
                "virtiofsd runs in a user namespace of yours" if problem is None else problem,
                required=False),
    ]


def diagnose() -> list[Finding]:
    home = cove_home()
    accel = decide_accel(Accel.AUTO, Home(home).host_facts)
    return [
        Finding(True, "accelerator", f"{accel.accel}: {accel.reason}"),
        *hypervisor_findings(accel.accel),
        *tool_findings(),
        *privilege_findings(),
        Finding(True, "cove home", f"{home} (private: 0700, files 0600)"),
        *store_share_findings(home),
    ]
