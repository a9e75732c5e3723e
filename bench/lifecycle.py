"""Lifecycle benchmark: `cove ls` latency with 1/10/20/50 idle VMs and while 3 VMs boot,
`up -d` to healthy vs a bare boot, daemon memory per VM, host memory (QEMU RSS) per idle
VM, and the time from a killed daemon to a reattached `ls`. `cove` is the installed
command, as a user runs it.

Run: .venv/bin/python -m bench.lifecycle [--vms 50]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.boot import time_bare
from bench.common import (
    bench_home,
    daemon_pid,
    free_port,
    median,
    print_table,
    stop_home,
    write_json,
)
from cove.client.http import Client
from cove.image.build import build_artifacts
from cove.plan.accel import decide_accel, host_tsc_khz
from cove.plan.vmplan import HostFacts, Plan, make_plan
from cove.spec import load_spec

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello"
IDLE_SPEC = 'name = "idle"\nmemory = "128M"\npackages = ["python3", "curl"]\n' \
            '[services.idle]\ncommand = "sleep 100000"\n'


COVE = str(Path(sys.executable).parent / "cove")


def cove(*args: str, env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run([COVE, *args], env=env, check=True, capture_output=True)
    return time.monotonic() - start


def daemon_answer(env: dict[str, str], runs: int = 7) -> float:
    """The daemon's own part of `ls` (an in-process client: no interpreter start, no
    imports), which shows whether its event loop is blocked, apart from CPU contention."""
    client = Client(Path(env["COVE_HOME"]))
    times = []
    for _ in range(runs):
        start = time.monotonic()
        client.list_vms()
        times.append(time.monotonic() - start)
    return median(times)


def ls_while_booting(spec_dir: Path, env: dict[str, str], count: int = 3) -> tuple[float, float]:
    """`cove ls`, and the daemon's answer, while `count` more VMs start (the daemon must not
    block)."""
    # cold: a warm start from the template would be over before the first `ls`
    starting = [subprocess.Popen([COVE, "up", str(spec_dir), "--name", f"boot{i}", "-d",
                                  "--cold"],
                                 env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                for i in range(count)]
    time.sleep(1.0)  # they are past the build, in the daemon: records, initrds, QEMU
    answers, latencies = [], []
    for _ in range(7):
        answers.append(daemon_answer(env, runs=1))
        latencies.append(cove("ls", env=env))
    for process in starting:
        process.wait()
    for i in range(count):
        cove("down", f"boot{i}", env=env)
    return median(latencies), median(answers)


def ls_while_busy(env: dict[str, str], count: int = 3) -> float:
    """`cove ls` while `count` busy loops take the CPUs and cove does nothing else: the
    slowdown CPU sharing alone gives, beside which the booting figure shows what is cove's
    own. The loops share one session of their own, as the daemon's VMs do."""
    spawn = ("import subprocess, sys\n"
             f"for _ in range({count - 1}):\n"
             "    subprocess.Popen([sys.executable, '-c', 'while True: pass'])\n"
             "while True: pass\n")
    leader = subprocess.Popen([sys.executable, "-c", spawn], start_new_session=True)
    try:
        time.sleep(0.5)
        return median([cove("ls", env=env) for _ in range(7)])
    finally:
        os.killpg(leader.pid, signal.SIGKILL)
        leader.wait()


def qemu_rss_per_vm(env: dict[str, str]) -> float:
    listing = subprocess.run([COVE, "ls", "--json"], env=env, capture_output=True, text=True,
                             check=True).stdout
    sizes = [vm["rss_bytes"] for vm in json.loads(listing) if vm.get("rss_bytes")]
    return float(sum(sizes)) / len(sizes) / 2**20


def daemon_rss_mib(home: Path) -> float:
    pid = daemon_pid(home)
    if pid is None:
        return float("nan")
    status = Path(f"/proc/{pid}/status").read_text()
    rss = next(line for line in status.splitlines() if line.startswith("VmRSS"))
    return int(rss.split()[1]) / 1024


def ls_latency(env: dict[str, str], runs: int = 7) -> float:
    cove("ls", env=env)  # warm
    return median([cove("ls", env=env) for _ in range(runs)])


def up_idle(spec_dir: Path, index: int, env: dict[str, str]) -> None:
    cove("up", str(spec_dir), "--name", f"idle{index}", "-d", env=env)


def bare_median(tmp: Path, n: int) -> float:
    spec = load_spec(HELLO)
    artifacts = build_artifacts(spec)
    plan = make_plan(spec, HostFacts(decide_accel(spec.accel), host_tsc_khz()),
                     artifacts.kernel, with_services=False)
    plan = Plan(**{**plan.__dict__, "ports": ()})
    return median([time_bare(artifacts, plan, tmp) for _ in range(n)])


def kill_daemon(home: Path) -> None:
    pid = daemon_pid(home)
    if pid is not None:
        os.kill(pid, signal.SIGKILL)
        while daemon_pid(home) == pid:
            time.sleep(0.05)


def run(tmp: Path, vms: int, n: int) -> dict[str, object]:
    env, spec_dir = bench_home(tmp, IDLE_SPEC, "idle")
    home = tmp / "home"
    cove("build", str(spec_dir), env=env)
    cove("build", str(HELLO), env=env)
    results: dict[str, object] = {}
    up_times = []
    for _ in range(n):
        up_times.append(cove("up", str(HELLO), "-d", "--cold", "-p", f"{free_port()}:8080",
                             env=env))
        cove("down", "hello", env=env)
    results["up_healthy_s"] = median(up_times)
    results["bare_s"] = bare_median(tmp, n)
    results["rss_mib"] = {0: daemon_rss_mib(home)}
    results["ls_ms"], results["reattach_ls_s"], results["reattached_running"] = {}, {}, {}
    running = 0
    for target in sorted({1, min(10, vms), min(20, vms), vms}):
        while running < target:
            up_idle(spec_dir, running, env)
            running += 1
        results["ls_ms"][target] = round(ls_latency(env) * 1000, 1)  # type: ignore[index]
        results["rss_mib"][target] = round(daemon_rss_mib(home), 1)  # type: ignore[index]
        if target == 1:
            results["answer_ms"] = round(daemon_answer(env) * 1000, 1)
            booting, answer = ls_while_booting(spec_dir, env)
            results["ls_booting_ms"] = round(booting * 1000, 1)
            results["answer_booting_ms"] = round(answer * 1000, 1)
            results["ls_busy_ms"] = round(ls_while_busy(env) * 1000, 1)
        if target in (min(20, vms), vms):
            seconds, running_again = reattach(home, env)
            results["reattach_ls_s"][target] = seconds  # type: ignore[index]
            results["reattached_running"][target] = running_again  # type: ignore[index]
    results["qemu_rss_per_vm_mib"] = round(qemu_rss_per_vm(env), 1)
    cove("down", "--all", env=env)
    return results


def reattach(home: Path, env: dict[str, str]) -> tuple[float, int]:
    """Kill the daemon; seconds until `cove ls` answers again, and how many VMs it adopted."""
    kill_daemon(home)
    seconds = round(cove("ls", env=env), 2)
    listing = subprocess.run([COVE, "ls", "--json"], env=env, capture_output=True, text=True,
                             check=True).stdout
    vms = json.loads(listing)
    for vm in vms:  # what kept one from running is what to look into
        if vm["state"] != "running":
            print(f"after the reattach, {vm['name']} is {vm['state']}: {vm.get('error')}",
                  file=sys.stderr)
    return seconds, sum(vm["state"] == "running" for vm in vms)


def report(results: dict[str, object], vms: int) -> None:
    ls_ms: dict[int, float] = results["ls_ms"]  # type: ignore[assignment]
    rss: dict[int, float] = results["rss_mib"]  # type: ignore[assignment]
    reattach_s: dict[int, float] = results["reattach_ls_s"]  # type: ignore[assignment]
    reattached: dict[int, int] = results["reattached_running"]  # type: ignore[assignment]
    up, bare = float(results["up_healthy_s"]), float(results["bare_s"])  # type: ignore[arg-type]
    per_vm = (rss[vms] - rss[0]) / vms
    rows = [(f"cove ls with {count} VM(s)", f"{ms:.0f} ms" + ("  (goal <= 150 ms)"
                                                            if count == vms else ""))
            for count, ms in ls_ms.items()]
    idle_ms, booting_ms = ls_ms[1], float(results["ls_booting_ms"])  # type: ignore[arg-type]
    rows += [
        ("cove ls (1 VM) while 3 VMs boot", f"{booting_ms:.0f} ms  ({booting_ms / idle_ms:.2f}x "
                                            "idle, goal <= 2x)"),
        ("cove ls (1 VM) while 3 busy loops run", f"{results['ls_busy_ms']:.0f} ms  "
         f"({float(results['ls_busy_ms']) / idle_ms:.2f}x idle: CPU sharing alone)"),  # type: ignore[arg-type]
        ("daemon's answer (1 VM), idle / while 3 boot",
         f"{results['answer_ms']} ms / {results['answer_booting_ms']} ms"),
        ("host RSS per idle VM (QEMU)", f"{results['qemu_rss_per_vm_mib']} MiB"),
        ("cove up -d --cold hello to healthy", f"{up:.2f} s"),
        ("bare QEMU boot to Python marker", f"{bare:.2f} s  (up/bare = {up / bare:.2f})"),
        *((f"daemon RSS with {count} VMs", f"{mib:.1f} MiB") for count, mib in rss.items()),
        ("daemon RSS per VM", f"{per_vm:.2f} MiB  (goal <= 2 MiB)"),
        *((f"daemon SIGKILL -> reattached ls, {count} VMs",
           f"{seconds} s ({reattached[count]}/{count} running"
           + ("; goal <= 1.0 s for 20)" if count == 20 else ")"))
          for count, seconds in reattach_s.items()),
    ]
    print_table(f"lifecycle benchmark ({vms} idle VMs, TCG)", rows)
    print(f"\nwrote {write_json('lifecycle', {**results, 'rss_per_vm_mib': per_vm})}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--vms", type=int, default=50)
    parser.add_argument("-n", type=int, default=5)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="cove-bench-"))
    try:
        results = run(tmp, args.vms, args.n)
    finally:
        stop_home(tmp / "home")
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args.vms)


if __name__ == "__main__":
    signal.signal(signal.SIGINT, signal.default_int_handler)
    main()
