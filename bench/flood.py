"""Flood benchmark (the hostile-guest issue): a guest writing service output at full speed
next to an idle VM on one daemon. Side by side in one run: the p50/p99 of `cove ls` and of
an API exec against the idle VM, without the flood and during it, and the daemon's peak
RSS. Goal: each p99 during the flood <= 2x without it.

Run: .venv/bin/python -m bench.flood [-n 60]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from bench.api import percentiles, timed
from bench.common import bench_home, daemon_pid, print_table, stop_home, write_json

IDLE = 'name = "idle"\npackages = ["python3", "curl"]\nmemory = "256M"\n' \
       '[services.idle]\ncommand = "sleep 100000"\n'
FLOOD = """name = "flood"
packages = ["python3", "curl"]
memory = "256M"
[services.flood]
command = '''python3 -c "import sys
line = 'flood ' * 200 + chr(10)
while True: sys.stdout.write(line)"'''
"""
COVE = str(Path(sys.executable).parent / "cove")


def cove(env: dict[str, str], *args: str) -> None:
    subprocess.run([COVE, *args], env=env, check=True, capture_output=True)


class RssWatch:
    """The daemon's peak RSS while the block runs, sampled every 50 ms."""

    def __init__(self, home: Path) -> None:
        self.pid = daemon_pid(home)
        self.peak = 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.sample, daemon=True)

    def sample(self) -> None:
        while not self.done.wait(0.05):
            for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak = max(self.peak, int(line.split()[1]) / 1024)

    def __enter__(self) -> RssWatch:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.done.set()
        self.thread.join()


def measure(tmp: Path, count: int) -> dict[str, float]:
    import cove as api

    env, idle_spec = bench_home(tmp, IDLE, "idle")
    flood_spec = tmp / "flood"
    flood_spec.mkdir()
    (flood_spec / "cove.toml").write_text(FLOOD)
    cove(env, "build", str(flood_spec))
    cove(env, "up", str(idle_spec), "-d")
    vm = api.VM.get("idle")
    vm.exec(["true"])
    results: dict[str, float] = {}
    home = Path(env["COVE_HOME"])
    for phase in ("quiet", "flood"):
        if phase == "flood":
            cove(env, "up", str(flood_spec), "-d")
            time.sleep(3)  # the flood at full speed
        with RssWatch(home) as watch:
            ls = timed(lambda: cove(env, "ls"), count)
            execs = timed(lambda: vm.exec(["true"]), count)
        for label, samples in (("ls", ls), ("exec", execs)):
            p50, p99 = percentiles(samples)
            results[f"{phase}_{label}_p50_ms"] = round(p50 * 1000, 1)
            results[f"{phase}_{label}_p99_ms"] = round(p99 * 1000, 1)
        results[f"{phase}_daemon_peak_rss_mib"] = round(watch.peak, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=60, help="calls per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cove-bench-flood-") as tmp:
        try:
            results = measure(Path(tmp), args.n)
        finally:
            stop_home(Path(tmp) / "home")
    rows = []
    for label in ("ls", "exec"):
        quiet, flood = results[f"quiet_{label}_p99_ms"], results[f"flood_{label}_p99_ms"]
        ratio = flood / quiet
        results[f"{label}_p99_ratio"] = round(ratio, 2)
        rows += [(f"{label} p50 quiet / flood", f"{results[f'quiet_{label}_p50_ms']} / "
                                                f"{results[f'flood_{label}_p50_ms']} ms"),
                 (f"{label} p99 quiet / flood (goal <= 2x)",
                  f"{quiet} / {flood} ms ({ratio:.2f}x {'ok' if ratio <= 2 else 'MISSED'})")]
    rows.append(("daemon peak RSS quiet / flood", f"{results['quiet_daemon_peak_rss_mib']} / "
                                                  f"{results['flood_daemon_peak_rss_mib']} MiB"))
    print_table(f"A flooding guest beside an idle VM (N={args.n}, TCG)", rows)
    print(f"\nwritten to {write_json('flood', results)}")
    os.environ.pop("COVE_HOME", None)


if __name__ == "__main__":
    main()
