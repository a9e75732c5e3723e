"""Root image formats side by side for hello's packages (python3, curl): size, and a bare
QEMU boot (same kernel, busybox init) to a Python marker and to `import http.server`
(what hello's service loads), for erofs lz4hc (with and without the trim rules) and
squashfs zstd (128 KiB and 1 MiB blocks) and xz. Goal: root <= 20 MiB; the format is picked
by these numbers.

Run: .venv/bin/python -m bench.image [-n 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

from bench.boot import HELLO, INIT_HEAD, MARKER, bare_initramfs
from bench.common import bench_home, median, print_table, write_json
from cove.image.build import Artifacts, build_artifacts
from cove.image.rootfs import populate_tree, resolve_packages
from cove.plan.accel import decide_accel, host_tsc_khz
from cove.plan.vmplan import HostFacts, Plan, make_plan
from cove.spec import load_spec
from cove.vmm.layout import BootFiles, RunPaths
from cove.vmm.qemu import qemu_argv

INIT = INIT_HEAD + """chroot /root /usr/bin/python3 -S -c 'print("MARKER")'
chroot /root /usr/bin/python3 -c 'import http.server; print("MARKER-2")'
poweroff -f
"""


def initramfs(artifacts: Artifacts, plan: Plan, fstype: str, out: Path) -> None:
    with_module = Plan(**{**plan.__dict__, "modules": tuple(dict.fromkeys([*plan.modules,
                                                                             fstype]))})
    init = INIT.replace("ROOTFS", fstype).replace("MARKER", MARKER.decode())
    bare_initramfs(artifacts, with_module, out, init)


def boot(plan: Plan, kernel: Path, initrd: Path, root: Path, work: Path) -> tuple[float, float]:
    """Seconds to the Python marker, and to http.server imported."""
    argv = qemu_argv(plan, BootFiles(kernel, initrd, root), RunPaths(work, work / "c.log",
                                                                     console_socket=False))
    argv = ["stdio" if a == "chardev:console" else a for a in argv]
    start = time.monotonic()
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    assert process.stdout is not None
    seen, first = b"", 0.0
    while b"MARKER-2".replace(b"MARKER", MARKER) not in seen:
        chunk = os.read(process.stdout.fileno(), 4096)
        if not chunk:
            raise RuntimeError(f"the boot of {root.name} ended early:\n{seen[-2000:]!r}")
        seen += chunk
        if not first and MARKER in seen:
            first = time.monotonic() - start
    second = time.monotonic() - start
    process.wait(timeout=30)
    return first, second


def pack(tree: Path, fmt: str, out: Path) -> None:
    if fmt == "erofs-lz4hc":
        argv = ["mkfs.erofs", "-zlz4hc", "--all-root", "-T0", "--quiet", str(out), str(tree)]
    else:
        argv = ["mksquashfs", str(tree), str(out), "-comp", fmt.split("-")[1], "-all-root",
                "-noappend", "-quiet", "-no-progress"]
        if fmt.startswith("squashfs-zstd"):
            argv += ["-Xcompression-level", "19"]
        if fmt.endswith("-1m"):
            argv += ["-b", "1M"]
    subprocess.run(argv, check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("-n", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cove-bench-image-") as tmp:
        measure(Path(tmp), args.n)


def measure(work: Path, n: int) -> None:
    from cove.host.home import Home

    bench_home(work, "")
    spec = load_spec(HELLO)
    artifacts = build_artifacts(spec)
    home = Home()
    facts = HostFacts(decide_accel(spec.accel, home.host_facts), host_tsc_khz(), frozenset(),
                      home.root)
    plan = make_plan(spec, facts, artifacts.kernel)
    results: dict[str, dict[str, float]] = {}
    packages = resolve_packages(spec.packages)
    populate_tree(work / "whole", packages, keep=("*",))  # what roots were before
    populate_tree(work / "tree", packages)
    images = {"erofs-lz4hc, no trim rules": work / "root.whole"}
    pack(work / "whole", "erofs-lz4hc", images["erofs-lz4hc, no trim rules"])
    for fmt in ("erofs-lz4hc", "squashfs-zstd", "squashfs-zstd-1m", "squashfs-xz"):
        images[fmt] = work / f"root.{fmt}"
        pack(work / "tree", fmt, images[fmt])
    for label, image in images.items():
        fstype = "squashfs" if "squashfs" in label else "erofs"
        initrd = work / f"{fstype}.cpio"
        if not initrd.exists():
            initramfs(artifacts, plan, fstype, initrd)
        runs = [boot(plan, artifacts.kernel.vmlinux, initrd, image, work)
                for _ in range(n)]
        results[label] = {"mib": round(image.stat().st_size / 2**20, 1),
                          "python_s": round(median([r[0] for r in runs]), 2),
                          "http_server_s": round(median([r[1] for r in runs]), 2)}
    base = results["erofs-lz4hc"]
    print_table(f"Root image formats (python3 + curl, N={n}, TCG; goal <= 20 MiB)", [
        (label, f"{r['mib']:5.1f} MiB ({r['mib'] / base['mib']:.2f}x)  python {r['python_s']:.2f}"
                f" s ({r['python_s'] / base['python_s']:.2f}x)  http.server "
                f"{r['http_server_s']:.2f} s ({r['http_server_s'] / base['http_server_s']:.2f}x)")
        for label, r in results.items()])
    print(f"\nwritten to {write_json('image', results)}")


if __name__ == "__main__":
    main()
