"""Python API benchmark, side by side on one running VM: an agent round trip through the
daemon (`vm.ping()`, the floor), `vm.exec(["true"])`, and `cove exec NAME -- true` (a new
CLI process each time); p50 and p99 over N calls. Goal: API exec p50 <= 2x agent ping.
Also: a 50 MiB `put` and `get` through the agent.

Run: .venv/bin/python -m bench.api [-n 200]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from bench.common import bench_home, print_table, stop_home, write_json

SPEC = 'name = "bench"\npackages = ["python3", "curl"]\nmemory = "256M"\n'
# What no exec can beat: the guest itself starting and reaping `true` (posix_spawn, as the
# agent does), timed inside the guest
SPAWN_FLOOR = ("import os, time\nstarted = time.perf_counter()\nfor _ in range(50):\n"
               "    os.waitpid(os.posix_spawn('/usr/bin/true', ['true'], {}), 0)\n"
               "print((time.perf_counter() - started) / 50)")


def percentiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    p99 = ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]
    return statistics.median(ordered), p99


def timed(call: Callable[[], object], count: int) -> list[float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        call()
        samples.append(time.perf_counter() - started)
    return samples


def cli_exec(name: str, env: dict[str, str]) -> None:
    subprocess.run([sys.executable, "-m", "cove.cli.main", "exec", name, "--", "true"],
                   env=env, check=True, capture_output=True)


def measure(count: int, env: dict[str, str], spec: Path) -> dict[str, float]:
    import cove

    os.environ.update(env)
    with cove.sandbox(cove.Spec.load(spec)) as vm:
        vm.exec(["true"])  # the first exec pays for the agent's first fork
        ping = timed(vm.ping, count)
        api = timed(lambda: vm.exec(["true"]), count)
        cli = timed(lambda: cli_exec(vm.name, env), max(10, count // 10))
        spawn = float(vm.exec(["python3", "-c", SPAWN_FLOOR], check=True).stdout)
        data = os.urandom(50 * 2**20)
        started = time.perf_counter()
        vm.put_file("/tmp/blob", data)
        put = time.perf_counter() - started
        started = time.perf_counter()
        back = vm.get_file("/tmp/blob")
        get = time.perf_counter() - started
        assert back == data
    results = {}
    for label, samples in (("ping", ping), ("api_exec", api), ("cli_exec", cli)):
        results[f"{label}_p50_ms"], results[f"{label}_p99_ms"] = (
            round(v * 1000, 2) for v in percentiles(samples))
    results["guest_spawn_ms"] = round(spawn * 1000, 2)
    results["put_50mib_mib_s"] = round(50 / put, 1)
    results["get_50mib_mib_s"] = round(50 / get, 1)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=200, help="calls per measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cove-bench-api-") as tmp:
        env, spec = bench_home(Path(tmp), SPEC)
        try:
            results = measure(args.n, env, spec)
        finally:
            stop_home(Path(tmp) / "home")
    ratio = results["api_exec_p50_ms"] / results["ping_p50_ms"]
    results["api_exec_over_ping"] = round(ratio, 2)
    floor = results["guest_spawn_ms"] / results["ping_p50_ms"]
    print_table(f"Python API exec (N={args.n}, TCG)", [
        ("agent ping via daemon p50 / p99", f"{results['ping_p50_ms']} / "
                                            f"{results['ping_p99_ms']} ms"),
        ("vm.exec(['true']) p50 / p99", f"{results['api_exec_p50_ms']} / "
                                        f"{results['api_exec_p99_ms']} ms"),
        ("cove exec -- true p50 / p99", f"{results['cli_exec_p50_ms']} / "
                                        f"{results['cli_exec_p99_ms']} ms"),
        ("API exec / ping (goal <= 2.0)", f"{ratio:.2f} {'ok' if ratio <= 2.0 else 'MISSED'}"),
        ("guest's own spawn+reap of true", f"{results['guest_spawn_ms']} ms (in every exec: "
                                           f"{floor:.1f}x ping alone)"),
        ("put_file 50 MiB", f"{results['put_50mib_mib_s']} MiB/s"),
        ("get_file 50 MiB", f"{results['get_50mib_mib_s']} MiB/s"),
    ])
    print(f"\nwritten to {write_json('api', results)}")


if __name__ == "__main__":
    main()
