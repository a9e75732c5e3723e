"""Memory that flows back, side by side with `balloon = true` and `false`: a 768 MiB guest
idles, allocates and frees 400 MiB, and the host RSS of its QEMU process is sampled for 10 s.
Goal: with the balloon, back within 64 MiB of idle within 10 s.

Run: .venv/bin/python -m bench.memory
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import bench_home, print_table, stop_home, write_json

SPEC = 'name = "mem"\npackages = ["python3", "curl"]\nmemory = "768M"\nballoon = {balloon}\n'
ALLOCATE = "x = bytearray(400 * 2**20)\nfor i in range(0, len(x), 4096): x[i] = 1\n"
SETTLE = 10.0


def cove(env: dict[str, str], *args: str) -> str:
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", *args], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"cove {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def qemu_rss(env: dict[str, str]) -> float:
    """The hypervisor process's RSS as `cove ls` reports it (MiB)."""
    import json

    return float(json.loads(cove(env, "ls", "--json"))[0]["rss_bytes"]) / 2**20


def measure(balloon: bool, tmp: Path) -> dict[str, float]:
    env, spec = bench_home(tmp, SPEC.format(balloon=str(balloon).lower()), f"b{balloon}")
    cove(env, "up", str(spec), "-d", "--cold")
    try:
        time.sleep(3)
        idle = qemu_rss(env)
        cove(env, "exec", "mem", "--", "python3", "-c", ALLOCATE)
        peak = qemu_rss(env)
        started, back_after = time.monotonic(), None
        samples = []
        while time.monotonic() - started < SETTLE:
            samples.append(qemu_rss(env))
            if back_after is None and samples[-1] <= idle + 64:
                back_after = time.monotonic() - started
            time.sleep(0.5)
        return {"idle_mib": round(idle, 1), "peak_mib": round(peak, 1),
                "after_10s_mib": round(samples[-1], 1),
                "back_within_64_s": round(back_after, 1) if back_after is not None else -1.0}
    finally:
        stop_home(tmp / "home")


def main() -> None:
    results = {}
    with tempfile.TemporaryDirectory(prefix="cove-bench-mem-") as tmp:
        for balloon in (True, False):
            where = Path(tmp) / f"balloon-{str(balloon).lower()}"
            where.mkdir()
            results[f"balloon={str(balloon).lower()}"] = measure(balloon, where)
    rows = []
    for label, r in results.items():
        back = f"{r['back_within_64_s']:.1f} s" if r["back_within_64_s"] >= 0 else "never"
        rows.append((label, f"idle {r['idle_mib']:.0f} MiB, after 400 MiB peak "
                            f"{r['peak_mib']:.0f}, after 10 s {r['after_10s_mib']:.0f} "
                            f"(+{r['after_10s_mib'] - r['idle_mib']:.0f}); within 64 MiB: {back}"))
    print_table("Guest memory back to the host (QEMU RSS; goal: balloon back within 64 MiB "
                "in 10 s)", rows)
    print(f"\nwritten to {write_json('memory', results)}")


if __name__ == "__main__":
    main()
