"""Boot benchmark, same kernel and root image throughout: (a) bare QEMU to a Python marker,
(b) `cove run -- true`, (c) `cove run` to agent ping; (d) bare QEMU whose init runs hello's
service command directly, to its first HTTP answer, and (e) `cove up -d` of hello to
healthy (e/d is the fair ratio for "healthy"). `cove build` no-op and cold.

Run: .venv/bin/python -m bench.boot [-n 5]
"""

from __future__ import annotations

import argparse
import asyncio
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
    home_sharing_cache,
    median,
    print_table,
    stop_home,
    write_json,
)
from cove.host.home import Home
from cove.image.build import Artifacts, build_artifacts
from cove.image.cpio import CpioWriter
from cove.image.initramfs import busybox_path, module_paths
from cove.image.pack import ROOT_FS
from cove.plan.accel import decide_accel, host_tsc_khz
from cove.plan.vmplan import HostFacts, Plan, boot_modules, make_plan
from cove.spec import load_spec
from cove.spec.overrides import apply_overrides
from cove.vm.machine import Machine
from cove.vm.vmdir import VmDir
from cove.vmm.layout import BootFiles, RunPaths
from cove.vmm.qemu import qemu_argv

ROOT = Path(__file__).resolve().parents[1]
HELLO = ROOT / "examples" / "hello"
MARKER = b"cove-bench-python-marker"
# Every bare init: busybox, the same modules, the root image mounted (ROOTFS: its type).
INIT_HEAD = """#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t devtmpfs dev /dev
mount -t proc proc /proc
mount -t sysfs sys /sys
while read -r m; do insmod /lib/modules/$m; done < /modules
mkdir /root
for b in /sys/block/vd*; do dev=/dev/${b##*/}; done
mount -t ROOTFS -o ro $dev /root
mount -t devtmpfs dev /root/dev
"""
BARE_INIT = INIT_HEAD + f"""chroot /root /usr/bin/python3 -S -c 'print("{MARKER.decode()}")'
poweroff -f
"""


SERVICE_INIT = INIT_HEAD + """mount -t proc proc /root/proc
mount -t tmpfs tmp /root/tmp
ip link set lo up; ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
mkdir -p /root/tmp/www; echo '<h1>Hello from cove!</h1>' > /root/tmp/www/index.html
exec chroot /root /usr/bin/python3 -m http.server 8080 --directory /tmp/www
"""


def bare_initramfs(artifacts: Artifacts, plan: Plan, out: Path, init: str = BARE_INIT) -> None:
    """Busybox, the modules cove's /init loads before the root (those it leaves to later,
    such as the power button's, a bare boot skips), and an init that only runs Python (or
    the service)."""
    paths = module_paths(artifacts.kernel, list(boot_modules(plan.modules)[0]))
    modules_dir = artifacts.kernel.modules
    assert modules_dir is not None
    with out.open("wb") as handle:
        writer = CpioWriter(handle)
        for directory in ("bin", "dev", "proc", "sys", "lib", "lib/modules"):
            writer.directory(directory)
        writer.file("bin/busybox", busybox_path().read_bytes(), 0o755)
        writer.file("init", init.replace("ROOTFS", ROOT_FS).encode(), 0o755)
        names = [Path(p).name for p in paths]
        for relative, name in zip(paths, names, strict=True):
            writer.file(f"lib/modules/{name}", (modules_dir / relative).read_bytes())
        writer.file("modules", "".join(f"{n}\n" for n in names).encode())
        writer.close()


def time_bare(artifacts: Artifacts, plan: Plan, workdir: Path) -> float:
    initrd = workdir / "bare.cpio"
    if not initrd.exists():
        bare_initramfs(artifacts, plan, initrd)
    sockets = RunPaths(workdir, workdir / "console.log", console_socket=False)
    argv = qemu_argv(plan, BootFiles(artifacts.kernel.vmlinux, initrd, artifacts.root.path),
                     sockets)
    argv = ["stdio" if a == "chardev:console" else a for a in argv]  # marker on our stdout
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    seen = b""
    while MARKER not in seen:
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError("bare boot ended without the marker")
        seen += chunk
    elapsed = time.monotonic() - start
    process.wait(timeout=30)
    return elapsed


def answers(port: int, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=timeout) as response:
            return bool(response.status == 200)
    except OSError:
        return False


def time_bare_service(artifacts: Artifacts, plan: Plan, workdir: Path, port: int) -> float:
    """(d): the same boot, but init starts hello's service itself; to its first answer."""
    initrd = workdir / "service.cpio"
    if not initrd.exists():
        bare_initramfs(artifacts, plan, initrd, SERVICE_INIT)
    sockets = RunPaths(workdir, workdir / "console.log", console_socket=False)
    argv = qemu_argv(plan, BootFiles(artifacts.kernel.vmlinux, initrd, artifacts.root.path),
                     sockets)
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        while not answers(port):
            if process.poll() is not None:
                raise RuntimeError("the bare service boot ended before it answered")
            time.sleep(0.05)
        return time.monotonic() - start
    finally:
        process.kill()
        process.wait()


def time_up_healthy(env: dict[str, str], port: int) -> float:
    """(e): `cove up -d` of hello, which returns once its health check passes."""
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "cove.cli.main", "up", str(HELLO), "-d", "--cold",
                    "-p", f"{port}:8080"], check=True, env=env, capture_output=True)
    elapsed = time.monotonic() - start
    subprocess.run([sys.executable, "-m", "cove.cli.main", "down", "hello"], check=True,
                   env=env, capture_output=True)
    return elapsed


def time_cli_true(env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "cove.cli.main", "run", str(HELLO), "--cold", "--",
                    "true"], check=True, env=env, capture_output=True)  # cold: like (a)
    return time.monotonic() - start


async def time_ping(plan: Plan, artifacts: Artifacts) -> float:
    start = time.monotonic()
    async with Machine(plan, artifacts, VmDir.for_name(plan.name), lambda _f: None) as machine:
        await machine.start(cold=True)  # a boot, as (a) is; warm starts are bench/warm.py's
        assert machine.agent is not None
        await machine.agent.request("ping")
        return time.monotonic() - start


def time_build(env: dict[str, str]) -> float:
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "cove", "build", str(HELLO)], check=True,
                   env=env, capture_output=True)
    return time.monotonic() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=5, help="boots per variant (>= 5)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold build")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cove-bench-") as tmp:
        run(Path(tmp), max(args.n, 5), args.skip_cold)


def run(tmp: Path, n: int, skip_cold: bool) -> None:
    env, _ = bench_home(tmp, "")
    cold = None
    if not skip_cold:
        cold_env = {**env, "COVE_HOME": str(tmp / "cold-home")}
        cold = time_build(cold_env)
        shutil.rmtree(tmp / "cold-home")
    noop = median([time_build(env) for _ in range(3)])
    spec = load_spec(HELLO)
    artifacts = build_artifacts(spec)
    plan = make_plan(spec, HostFacts(decide_accel(spec.accel), host_tsc_khz()),
                     artifacts.kernel, with_services=False)
    port = free_port()
    served = make_plan(apply_overrides(spec, (f"{port}:8080",)),
                       HostFacts(decide_accel(spec.accel), host_tsc_khz()), artifacts.kernel)
    plan = Plan(**{**plan.__dict__, "ports": ()})
    up_env = home_sharing_cache(tmp, "up-home", Home().cache)
    bare, cli, ping, service, healthy = [], [], [], [], []
    try:
        for _ in range(n):  # interleaved, so drift in the machine's load hits all alike
            bare.append(time_bare(artifacts, plan, tmp))
            cli.append(time_cli_true(env))
            ping.append(asyncio.run(time_ping(plan, artifacts)))
            service.append(time_bare_service(artifacts, served, tmp, port))
            healthy.append(time_up_healthy(up_env, port))
    finally:
        stop_home(tmp / "up-home")
        stop_home(tmp / "home")
    report(n, (bare, cli, ping, service, healthy), noop, cold, artifacts.root.size)


def report(n: int, series: tuple[list[float], ...], noop: float, cold: float | None,
           size: int) -> None:
    bare, cli, ping, service, healthy = series
    a, b, c, d, e = (median(values) for values in series)
    # each round's own ratio, then their median: the rounds run back to back, so this one
    # is less swayed by the host's speed drifting between rounds than a ratio of medians
    c_a, e_d = paired(ping, bare), paired(healthy, service)
    rows = [
        ("(a) bare QEMU to Python marker", f"{a:.2f} s  (median of {n})"),
        ("(b) cove run -- true, to exit", f"{b:.2f} s  (b/a = {b / a:.2f})"),
        ("(c) cove run until agent ping",
         f"{c:.2f} s  (c/a = {c / a:.2f}, paired {c_a:.2f}; goal <= 1.10)"),
        ("(d) bare QEMU, init runs the service, to HTTP", f"{d:.2f} s"),
        ("(e) cove up -d (cold) to healthy",
         f"{e:.2f} s  (e/d = {e / d:.2f}, paired {e_d:.2f}; goal <= 1.15)"),
        ("cove build, no-op", f"{noop * 1000:.0f} ms"),
        ("cove build, cold (kernel fetch included)",
         f"{cold:.1f} s" if cold is not None else "skipped"),
        (f"root image ({ROOT_FS})", f"{size / 2**20:.1f} MiB"),
    ]
    print_table("boot benchmark (hello, TCG)", rows)
    path = write_json("boot", {
        "n": n, "bare_s": bare, "cli_true_s": cli, "agent_ping_s": ping,
        "bare_service_s": service, "up_healthy_s": healthy,
        "median": {"bare": a, "cli_true": b, "agent_ping": c, "bare_service": d,
                   "up_healthy": e},
        "ratio": {"b_over_a": b / a, "c_over_a": c / a, "e_over_d": e / d},
        "paired_ratio": {"c_over_a": c_a, "e_over_d": e_d},
        "build_noop_s": noop, "build_cold_s": cold, "root_image_bytes": size,
    })
    print(f"\nwrote {path}")


def paired(numerators: list[float], denominators: list[float]) -> float:
    return median([x / y for x, y in zip(numerators, denominators, strict=True)])


if __name__ == "__main__":
    main()
