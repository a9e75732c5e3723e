"""Shares for root and for a user who is not root, side by side: virtiofs (Debian's cloud
kernel; virtiofsd, in a user namespace for the non-root user) against QEMU's built-in 9p
(Debian's generic kernel: the cloud one has no 9p), plus the boot time of each kernel.

Run as root: .venv/bin/python -m bench.shares
The non-root half runs as the user scripts/test-unprivileged makes (cove-test), in its copy
of this tree; the bench makes both when they are missing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import median, print_table, write_json

ROOT = Path(__file__).resolve().parents[1]
USER = os.environ.get("COVE_TEST_USER", "cove-test")
READ_MIB = 128
WRITE_MIB = 64
BOOTS = 3
KERNELS = {"virtiofs": "linux-image-cloud-amd64", "9p": "linux-image-amd64"}
SPEC = '''name = "sharebench"
memory = "512M"
packages = ["python3"]
network = "none"
[kernel]
package = "{kernel}"
[[shares]]
source = "{share}"
target = "/share"
readonly = false
proto = "{proto}"
'''
TIMED = ("read a _ < /proc/uptime; {cmd} 2>/dev/null; read b _ < /proc/uptime; "
         'echo "$a $b"')


def cove(*args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", *args], check=False,
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise SystemExit(f"cove {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def seconds(out: str) -> float:
    start, end = map(float, out.split()[-2:])
    return max(end - start, 0.01)


def measure(tmp: Path) -> dict[str, dict[str, float]]:
    """This user's numbers: per share type, read and write MiB/s and boot seconds."""
    share = tmp / "share"
    share.mkdir(exist_ok=True)
    (share / "big").write_bytes(os.urandom(READ_MIB * 2**20))
    results: dict[str, dict[str, float]] = {}
    for proto, kernel in KERNELS.items():
        spec = tmp / proto
        spec.mkdir(exist_ok=True)
        (spec / "cove.toml").write_text(SPEC.format(kernel=kernel, share=share, proto=proto))
        cove("build", str(spec))
        read = seconds(cove("run", str(spec), "--", "sh", "-c", TIMED.format(
            cmd="dd if=/share/big of=/dev/null bs=1M")))
        write = seconds(cove("run", str(spec), "--", "sh", "-c", TIMED.format(
            cmd=f"dd if=/dev/zero of=/share/out bs=1M count={WRITE_MIB} conv=fsync")))
        owner = (share / "out").stat().st_uid
        boots = []
        for _ in range(BOOTS):
            started = time.monotonic()
            cove("run", str(spec), "--", "true")
            boots.append(time.monotonic() - started)
        results[proto] = {"read_mbps": READ_MIB / read, "write_mbps": WRITE_MIB / write,
                          "boot_s": median(boots), "owner_is_me": float(owner == os.geteuid())}
    return results


def as_user(user: str) -> dict[str, dict[str, float]]:
    """The same measurement as `user`, from the tree scripts/test-unprivileged gives it."""
    subprocess.run([str(ROOT / "scripts" / "test-unprivileged"), "--collect-only", "-q",
                    "tests/unit/test_helpers.py"], check=True, capture_output=True)
    home = subprocess.run(["getent", "passwd", user], capture_output=True, text=True,
                          check=True).stdout.split(":")[5]
    out = subprocess.run(["runuser", "-u", user, "--", "env", "-C", f"{home}/cove",
                          f"HOME={home}", f"{home}/cove/.venv/bin/python", "-m", "bench.shares",
                          "--worker"], capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"the non-root half failed:\n{out.stderr}")
    result: dict[str, dict[str, float]] = json.loads(out.stdout.splitlines()[-1])
    return result


def worker() -> None:
    with tempfile.TemporaryDirectory(prefix="cove-sharebench-") as tmp:
        os.environ["COVE_HOME"] = str(Path(tmp) / "home")
        print(json.dumps(measure(Path(tmp))))


def report(results: dict[str, dict[str, dict[str, float]]]) -> None:
    rows = []
    for proto in KERNELS:
        root, user = results["root"][proto], results["non-root"][proto]
        for key, unit in (("read_mbps", "MiB/s"), ("write_mbps", "MiB/s"), ("boot_s", "s")):
            label = {"read_mbps": f"read {READ_MIB} MiB", "write_mbps": f"write {WRITE_MIB} "
                     "MiB (fsync)", "boot_s": "cove run -- true"}[key]
            rows.append((f"{proto:<8} {label}", f"root {root[key]:7.2f} {unit}   non-root "
                         f"{user[key]:7.2f} {unit}   non-root/root {user[key] / root[key]:.2f}"))
        rows.append((f"{proto:<8} guest root's files owned by the host user",
                     f"root {bool(root['owner_is_me'])}   non-root {bool(user['owner_is_me'])}"))
    print_table("Shares: virtiofs (cloud kernel) vs 9p (generic kernel), root vs non-root",
                rows)
    print(f"\nwrote {write_json('shares', results)}")


def main() -> None:
    if "--worker" in sys.argv:
        worker()
        return
    if os.geteuid() != 0:
        raise SystemExit("run as root: the bench measures root and a non-root user")
    with tempfile.TemporaryDirectory(prefix="cove-sharebench-") as tmp:
        os.environ["COVE_HOME"] = str(Path(tmp) / "home")
        mine = measure(Path(tmp))
    report({"root": mine, "non-root": as_user(USER)})


if __name__ == "__main__":
    main()
