"""Is KVM usable? Decided by evidence, cheapest first, and never allowed to hang.

/dev/kvm opening is not enough: on hosts that emulate KVM (kvm_pvm) stock guests run about
100 times slower than under TCG. See docs/architecture.md.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

from cove.host.fsutil import write_json
from cove.spec.model import Accel

PROBE_DEADLINE = 3.0  # seconds for the whole probe child
PROBE_FAST_ENOUGH = 0.05  # the probe loop takes ~1 ms on real KVM, ~1 s on kvm_pvm


@dataclass(frozen=True)
class AccelDecision:
    accel: str  # "kvm" or "tcg"
    reason: str


@dataclass(frozen=True)
class KvmEvidence:
    """What the host shows, gathered by `gather_evidence` (or given by tests)."""

    dev_kvm_usable: bool
    pvm_module: bool
    cpu_virt_flags: bool
    probe_seconds: float | None = None  # None: not run, or failed / timed out
    probe_error: str = ""
    dev_kvm_exists: bool = False
    dev_kvm_group: str = ""  # the group that may open /dev/kvm (usually "kvm")
    user: str = ""


def kvm_verdict(evidence: KvmEvidence) -> AccelDecision:
    """What the evidence decides; what no permission can change is said first."""
    if evidence.pvm_module:
        return AccelDecision("tcg", "the host runs kvm_pvm (no hardware virtualization); stock "
                                    "guests would run ~100x slower than under TCG")
    if not evidence.cpu_virt_flags:
        return AccelDecision("tcg", "the CPU shows neither vmx nor svm")
    if not evidence.dev_kvm_usable and evidence.dev_kvm_exists:
        group = evidence.dev_kvm_group or "kvm"
        if group == "root":
            group = "kvm"
        return AccelDecision("tcg", f"you may not open /dev/kvm: join the {group} group "
                                    f"(sudo usermod -aG {group} {evidence.user or '$USER'}, "
                                    "then log in again); until then guests run under TCG, "
                                    "software emulation, many times slower")
    if not evidence.dev_kvm_usable:
        return AccelDecision("tcg", "/dev/kvm is missing, so guests run under TCG (software "
                                    "emulation); load the kvm module if the CPU has vmx/svm")
    if evidence.probe_seconds is None:
        return AccelDecision("tcg", f"the KVM speed probe failed: {evidence.probe_error}")
    if evidence.probe_seconds > PROBE_FAST_ENOUGH:
        return AccelDecision("tcg", f"KVM is slow here (probe loop took "
                                    f"{evidence.probe_seconds * 1000:.0f} ms, real KVM ~1 ms)")
    return AccelDecision("kvm", f"KVM probe loop ran in {evidence.probe_seconds * 1000:.1f} ms")


def decide_accel(requested: Accel, cache_dir: Path | None = None) -> AccelDecision:
    if requested is Accel.KVM:
        return AccelDecision("kvm", "requested (accel = kvm)")
    if requested is Accel.TCG:
        return AccelDecision("tcg", "requested (accel = tcg)")
    return cached_auto_decision(cache_dir) if cache_dir else kvm_verdict(gather_evidence())


def cached_auto_decision(cache_dir: Path) -> AccelDecision:
    """The probe costs up to a second: remember its answer until the host reboots."""
    memo = cache_dir / "accel.json"
    boot_id = _read("/proc/sys/kernel/random/boot_id").strip()
    try:
        saved = json.loads(memo.read_text())
        if saved.get("boot_id") == boot_id:
            return AccelDecision(saved["accel"], saved["reason"])
    except (OSError, ValueError, KeyError):
        pass
    decision = kvm_verdict(gather_evidence())
    memo.parent.mkdir(parents=True, exist_ok=True)
    write_json(memo, {"boot_id": boot_id, "accel": decision.accel, "reason": decision.reason})
    return decision


def kvm_device_group() -> tuple[bool, str]:
    """Whether /dev/kvm exists, and the name of its group."""
    try:
        info = os.stat("/dev/kvm")
    except OSError:
        return False, ""
    import grp

    try:
        return True, grp.getgrgid(info.st_gid).gr_name
    except KeyError:
        return True, str(info.st_gid)


def gather_evidence() -> KvmEvidence:
    import getpass

    usable = os.access("/dev/kvm", os.R_OK | os.W_OK)
    exists, group = kvm_device_group()
    pvm = Path("/sys/module/kvm_pvm").exists()
    flags = set()
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("flags"):
            flags = set(line.partition(":")[2].split())
            break
    virt = bool(flags & {"vmx", "svm"})
    if not (usable and not pvm and virt):
        return KvmEvidence(usable, pvm, virt, dev_kvm_exists=exists, dev_kvm_group=group,
                           user=getpass.getuser())
    seconds, error = run_probe()
    return KvmEvidence(usable, pvm, virt, seconds, error, exists, group)


def run_probe() -> tuple[float | None, str]:
    try:
        result = subprocess.run([sys.executable, "-m", "cove.plan.kvmprobe"], capture_output=True,
                                text=True, timeout=PROBE_DEADLINE, check=False)
    except subprocess.TimeoutExpired:
        return None, f"no answer within {PROBE_DEADLINE:.0f} s"
    if result.returncode != 0:
        return None, result.stderr.strip() or f"exit {result.returncode}"
    return float(result.stdout), ""


def host_tsc_khz() -> int | None:
    """The host TSC rate in kHz (cpu MHz x 1000), given to TCG guests as tsc_early_khz.

    Without it the guest's clock calibration under TCG fails in about one boot of three.
    """
    for line in _read("/proc/cpuinfo").splitlines():
        if line.startswith("cpu MHz"):
            return int(float(line.partition(":")[2]) * 1000)
    return None


def _read(path: str) -> str:
    try:
        return Path(path).read_text()
    except OSError:
        return ""
