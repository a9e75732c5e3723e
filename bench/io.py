"""I/O benchmark: port-forward throughput and latency (QEMU user-net forward vs the agent
tunnel vs inside the guest), virtiofs share reads, and volume writes.

Run: .venv/bin/python -m bench.io   (needs root for virtiofsd)
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.common import (
    bench_home,
    free_port,
    median,
    print_table,
    stop_home,
    write_json,
)

BIG_MIB = 32
SPEC = f'''name = "iobench"
memory = "512M"
packages = ["python3", "curl"]
[services.web]
pre_start = """mkdir -p /tmp/www && echo hi > /tmp/www/small
head -c {BIG_MIB * 2**20} /dev/zero > /tmp/www/big"""
command = "python3 -m http.server 8080 --directory /tmp/www"
[services.web.health]
command = "curl -sf http://127.0.0.1:8080/small"
start_period = "60s"
'''


def cove(*args: str, env: dict[str, str]) -> str:
    return subprocess.run([sys.executable, "-m", "cove.cli.main", *args], env=env, check=True,
                          capture_output=True, text=True).stdout


def download_mbps(port: int, runs: int = 3) -> float:
    rates = []
    for _ in range(runs):
        start = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/big", timeout=120) as response:
            size = len(response.read())
        rates.append(size / 2**20 / (time.monotonic() - start))
    return median(rates)


def first_byte_ms(port: int, runs: int = 20) -> float:
    times = []
    for _ in range(runs):
        start = time.monotonic()
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/small", timeout=30) as response:
            response.read()
        times.append((time.monotonic() - start) * 1000)
    return median(times)


def in_guest(script: str, env: dict[str, str]) -> str:
    return cove("exec", "iobench", "--", "sh", "-c", script, env=env)


def guest_baseline(env: dict[str, str]) -> tuple[float, float]:
    speed = in_guest("curl -s -o /dev/null -w '%{speed_download}' "
                     "http://127.0.0.1:8080/big", env)
    first = [float(in_guest("curl -s -o /dev/null -w '%{time_starttransfer}' "
                            "http://127.0.0.1:8080/small", env)) * 1000 for _ in range(5)]
    return float(speed) / 2**20, median(first)


def dd_mbps(command: str, mib: int, env: dict[str, str]) -> float:
    """MiB/s of a command moving `mib` MiB in the guest, timed by the guest's clock."""
    out = in_guest(f"read a _ < /proc/uptime; {command} 2>/dev/null; read b _ < /proc/uptime; "
                   'echo "$a $b"', env)
    start, end = map(float, out.split())
    return mib / max(end - start, 0.01)


def ninep_read_mbps(tmp: Path, share: Path, env: dict[str, str]) -> float:
    """The same read over 9p, in a guest on Debian's generic kernel (the cloud one lacks 9p)."""
    spec = tmp / "ninep"
    spec.mkdir()
    (spec / "cove.toml").write_text(
        'name = "ninep"\npackages = ["python3"]\nnetwork = "none"\n'
        '[kernel]\npackage = "linux-image-amd64"\n'
        f'[[shares]]\nsource = "{share}"\ntarget = "/share"\nproto = "9p"\n')
    out = cove("run", str(spec), "--", "sh", "-c",
               "read a _ < /proc/uptime; dd if=/share/big of=/dev/null bs=1M 2>/dev/null; "
               'read b _ < /proc/uptime; echo "$a $b"', env=env)
    start, end = map(float, out.split())
    return BIG_MIB / max(end - start, 0.01)


def run(tmp: Path) -> dict[str, object]:
    env, spec = bench_home(tmp, SPEC)
    share = tmp / "share"
    share.mkdir()
    (share / "big").write_bytes(os.urandom(BIG_MIB * 2**20))
    user_port, tunnel_port = free_port(), free_port()
    cove("up", str(spec), "-d", "--timeout", "120", "-p", f"{user_port}:8080",
         "--share", f"{share}:/share", "--volume", f"iobench:/data:{BIG_MIB * 4}", env=env)
    cove("forward", "iobench", "-p", f"{tunnel_port}:8080", "--tunnel", env=env)
    try:
        guest_rate, guest_first = guest_baseline(env)
        return {
            "forward_mbps": {"user-net": download_mbps(user_port),
                             "agent-tunnel": download_mbps(tunnel_port),
                             "in-guest": guest_rate},
            "first_byte_ms_p50": {"user-net": first_byte_ms(user_port),
                                  "agent-tunnel": first_byte_ms(tunnel_port),
                                  "in-guest": guest_first},
            "virtiofs_read_mbps": dd_mbps("dd if=/share/big of=/dev/null bs=1M", BIG_MIB, env),
            "9p_read_mbps": ninep_read_mbps(tmp, share, env),
            "volume_write_mbps": dd_mbps(
                f"dd if=/dev/zero of=/data/f bs=1M count={BIG_MIB} conv=fsync", BIG_MIB, env),
        }
    finally:
        cove("down", "iobench", env=env)


def report(results: dict[str, object]) -> None:
    rates: dict[str, float] = results["forward_mbps"]  # type: ignore[assignment]
    first: dict[str, float] = results["first_byte_ms_p50"]  # type: ignore[assignment]
    rows = [(f"forward throughput, {k}", f"{v:.1f} MiB/s") for k, v in rates.items()]
    ratio = rates["agent-tunnel"] / rates["user-net"]
    rows.append(("agent-tunnel / user-net (goal >= 0.8)",
                 f"{ratio:.2f} {'ok' if ratio >= 0.8 else 'MISSED'}"))
    rows += [(f"first byte p50, {k}", f"{v:.1f} ms") for k, v in first.items()]
    rows += [
        ("virtiofs share read", f"{results['virtiofs_read_mbps']:.1f} MiB/s"),
        ("9p share read (generic kernel)", f"{results['9p_read_mbps']:.1f} MiB/s"),
        ("volume write (fsync)", f"{results['volume_write_mbps']:.1f} MiB/s"),
    ]
    print_table(f"I/O benchmark ({BIG_MIB} MiB transfers, TCG)", rows)
    print(f"\nwrote {write_json('io', results)}")


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="cove-bench-"))
    try:
        results = run(tmp)
    finally:
        stop_home(tmp / "home")
        shutil.rmtree(tmp, ignore_errors=True)
    report(results)
    print(json.dumps(results) if "--json" in sys.argv else "", end="")


if __name__ == "__main__":
    main()
