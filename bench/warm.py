"""Warm-start benchmark on the hello example, side by side in one run: bare QEMU cold boot to
a Python marker; `cove up -d` cold and warm to healthy; pause->resume and suspend->resume
to the first HTTP answer; 10 clones to all answering; snapshot size against guest memory;
host memory of 10 idle clones against one VM (private pages, and a shared clone image
counted once). Ratios are to the bare boot.

Run: .venv/bin/python -m bench.warm [-n 3]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.boot import answers, time_bare
from bench.common import (
    bench_home,
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
CLONES = 10
SETTLE_ANSWERS = 5  # before the pause: see settle()


def cove(*args: str, env: dict[str, str]) -> str:
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", *args], env=env,
                            capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise SystemExit(f"cove {' '.join(args)} failed:\n{result.stderr}")
    return result.stdout


def until_answering(ports: list[int], started: float, limit: float = 60.0) -> float:
    """Until every port has answered, each asked on its own (as many clients would): asked
    one after another, a slow first answer would hold up every port behind it."""
    def answered(port: int) -> None:
        while not answers(port, timeout=5.0):
            if time.monotonic() - started > limit:
                raise SystemExit(f"port {port} did not answer within {limit:.0f} s")

    with ThreadPoolExecutor(len(ports)) as pool:
        list(pool.map(answered, ports))
    return time.monotonic() - started


def settle(port: int) -> None:
    """A VM in use, as people pause it: right after a restore the guest's first answers
    still pay for TCG translating the code they run (a restored QEMU starts with an empty
    translation cache), so a few answers come before the pause."""
    until_answering([port], time.monotonic())
    for _ in range(SETTLE_ANSWERS):
        answers(port, timeout=5.0)
    time.sleep(0.5)


def timed(env: dict[str, str], *args: str) -> float:
    started = time.monotonic()
    cove(*args, env=env)
    return time.monotonic() - started


def events(env: dict[str, str], kind: str) -> list[dict[str, object]]:
    return [e for e in map(json.loads, cove("events", "-n", "1000", env=env).splitlines())
            if e["kind"] == kind]


def bare_boot() -> float:
    spec = load_spec(HELLO)
    artifacts = build_artifacts(spec)
    plan = make_plan(spec, HostFacts(decide_accel(spec.accel), host_tsc_khz()),
                     artifacts.kernel, with_services=False)
    plan = Plan(**{**plan.__dict__, "ports": ()})
    with tempfile.TemporaryDirectory(prefix="cove-bench-bare-") as tmp:
        return time_bare(artifacts, plan, Path(tmp))


def private_bytes(pid: int) -> int:
    """What this process alone holds (its RSS less pages it shares with others)."""
    fields = {}
    for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines()[1:]:
        key, value = line.split(":", 1)
        fields[key] = int(value.split()[0]) * 1024
    return fields["Private_Clean"] + fields["Private_Dirty"]


def shared_images(pid: int) -> dict[tuple[int, int], int]:
    """The clone memory images this process maps: (device, inode) -> bytes allocated."""
    images = {}
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            if "memfd:cove-" not in str(fd.readlink()):
                continue
            info = fd.stat()
        except OSError:
            continue
        images[(info.st_dev, info.st_ino)] = info.st_blocks * 512
    return images


def host_mib(env: dict[str, str], names: list[str]) -> float:
    """Host memory of these VMs' hypervisors: each one's private pages, plus each shared
    clone image once (RSS would count an image once per clone that maps it)."""
    vms = {vm["name"]: vm for vm in json.loads(cove("ls", "--json", env=env))}
    pids = [int(vms[n]["pid"]) for n in names]
    images: dict[tuple[int, int], int] = {}
    for pid in pids:
        images.update(shared_images(pid))
    return (sum(private_bytes(pid) for pid in pids) + sum(images.values())) / 2**20


def one_round(env: dict[str, str], spec: Path) -> dict[str, float]:
    port = free_port()
    cold = timed(env, "up", str(spec), "-d", "--cold", "-p", f"{port}:8080")
    deadline = time.monotonic() + 60
    while not events(env, "template-saved") and time.monotonic() < deadline:
        time.sleep(0.2)  # the first round's cold boot saves the template
    cove("down", "hello", env=env)
    warm = timed(env, "up", str(spec), "-d", "-p", f"{port}:8080")
    # the state changes through the daemon's API (what cove pause/resume call, minus the
    # CLI's own start-up), timed from the resume request to the first HTTP answer
    client = Client(Path(env["COVE_HOME"]))
    settle(port)
    client.state_change("hello", "pause")
    started = time.monotonic()
    client.state_change("hello", "resume")
    pause = until_answering([port], started)
    until_answering([port], time.monotonic())
    client.state_change("hello", "suspend")
    started = time.monotonic()
    client.state_change("hello", "resume")
    suspend = until_answering([port], started)
    cove("down", "hello", env=env)
    return {"cold_up_s": cold, "warm_up_s": warm, "pause_resume_s": pause,
            "suspend_resume_s": suspend}


def clones_round(env: dict[str, str], spec: Path) -> dict[str, float]:
    cove("up", str(spec), "-d", "--name", "origin", env=env)
    one = host_mib(env, ["origin"])
    base = free_port() + 100
    started = time.monotonic()
    cove("clone", "origin", "--count", str(CLONES), "-p", f"{base}:8080", env=env)
    seconds = until_answering([base + i for i in range(CLONES)], started)
    time.sleep(5)  # idle
    names = [f"origin-{i}" for i in range(1, CLONES + 1)]
    ten = host_mib(env, names)
    snapshots = json.loads(cove("snapshot", "ls", "--json", env=env))
    size = max(s["size"] for s in snapshots if s["kind"] == "template")
    cove("down", "--all", env=env)
    return {"clones_s": seconds, "rss_one_mib": one, "rss_clones_mib": ten,
            "snapshot_bytes": size}


def report(n: int, bare: list[float], rounds: list[dict[str, float]],
           clones: dict[str, float]) -> None:
    a = median(bare)

    def m(key: str) -> float:
        return median([r[key] for r in rounds])

    warm = m("warm_up_s")
    memory = 256 * 2**20
    rows = [
        ("bare QEMU cold boot to Python marker", f"{a:.2f} s"),
        ("cove up -d cold, to healthy", f"{m('cold_up_s'):.2f} s  ({m('cold_up_s') / a:.2f}x)"),
        ("cove up -d warm, to healthy", f"{warm:.2f} s  ({warm / a:.2f}x, goal <= 0.30x)"),
        ("pause -> resume, to first HTTP answer",
         f"{m('pause_resume_s') * 1000:.0f} ms  (goal <= 50 ms)"),
        ("suspend -> resume, to first HTTP answer",
         f"{m('suspend_resume_s'):.2f} s  ({m('suspend_resume_s') / a:.2f}x, goal <= 0.35x)"),
        (f"{CLONES} clones, to all answering",
         f"{clones['clones_s']:.2f} s  ({clones['clones_s'] / warm:.2f}x one warm start, "
         "goal <= 3x)"),
        ("snapshot / guest memory", f"{clones['snapshot_bytes'] / 2**20:.0f} MiB / 256 MiB = "
         f"{clones['snapshot_bytes'] / memory:.2f}  (goal <= 0.5)"),
        (f"host memory, {CLONES} idle clones vs one VM",
         f"{clones['rss_clones_mib']:.0f} MiB vs {clones['rss_one_mib']:.0f} MiB = "
         f"{clones['rss_clones_mib'] / max(clones['rss_one_mib'], 1):.1f}x  (stretch <= 4x)"),
    ]
    print_table(f"warm-start benchmark (hello, TCG, medians of {n})", rows)
    path = write_json("warm", {"n": n, "bare_s": bare, "rounds": rounds, "clones": clones,
                               "ratio": {"warm_over_bare": warm / a,
                                         "suspend_resume_over_bare":
                                             m("suspend_resume_s") / a,
                                         "clones_over_warm": clones["clones_s"] / warm,
                                         "snapshot_over_memory":
                                             clones["snapshot_bytes"] / memory}})
    print(f"\nwrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3, help="rounds (each: cold, warm, pause, "
                        "suspend)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cove-bench-") as tmp:
        env, _ = bench_home(Path(tmp), "", "unused")
        spec = HELLO
        try:
            bare, rounds = [], []
            for _ in range(args.n):  # interleaved, so the machine's drift hits all alike
                bare.append(bare_boot())
                rounds.append(one_round(env, spec))
            clones = clones_round(env, spec)
        finally:
            stop_home(Path(tmp) / "home")
        report(args.n, bare, rounds, clones)


if __name__ == "__main__":
    main()
