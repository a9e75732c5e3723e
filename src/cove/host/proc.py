"""Running host tools: argv lists only, failures become clear errors."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

from cove.errors import die

# Which Debian package provides each host tool cove runs, for the install hint.
TOOL_PACKAGES = {
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "qemu-io": "qemu-utils",
    "mkfs.erofs": "erofs-utils",
    "mksquashfs": "squashfs-tools",
    "unsquashfs": "squashfs-tools",
    "mkfs.ext4": "e2fsprogs",
    "e2fsck": "e2fsprogs",
    "resize2fs": "e2fsprogs",
    "depmod": "kmod",
    "lz4": "lz4",
    "zstd": "zstd",
    "apt-get": "apt",
    "apt-cache": "apt",
    "dpkg": "dpkg",
    "dpkg-query": "dpkg",
    "busybox": "busybox-static",
    "mmdebstrap": "mmdebstrap",
    "setpriv": "util-linux",
}


def require_tool(name: str) -> str:
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")
    if path is None:
        package = TOOL_PACKAGES.get(name, name)
        die(f"{name} is not installed", f"install it with: apt-get install {package}")
    return path


def run(argv: Sequence[str], *, cwd: Path | None = None, what: str = "",
        stdin: bytes | None = None, ok_codes: tuple[int, ...] = (0,)) -> str:
    """Run a tool and return its stdout; on failure die with its stderr's tail."""
    tool = require_tool(argv[0])
    result = subprocess.run([tool, *argv[1:]], cwd=cwd, input=stdin, capture_output=True,
                            check=False)
    if result.returncode not in ok_codes:
        tail = result.stderr.decode(errors="replace").strip().splitlines()[-5:]
        die(f"{what or argv[0]} failed (exit {result.returncode}): " + "\n  ".join(tail),
            f"the command was: {' '.join(argv)}")
    return result.stdout.decode(errors="replace")


# The executables of the hypervisors cove starts: how a pid file's process is recognised.
HYPERVISOR_BINARIES = frozenset({"qemu-system-x86_64", "firecracker", "cloud-hypervisor",
                                 "crosvm", "lkvm"})


def unwrapped(argv: list[bytes]) -> list[bytes]:
    """A command line without the `setpriv ... --` that ties a hypervisor to its owner (it
    shows for a moment, before setpriv execs the hypervisor)."""
    if argv and Path(argv[0].decode(errors="replace")).name == "setpriv" and b"--" in argv:
        return argv[argv.index(b"--") + 1:]
    return argv


def running_hypervisor(pidfile: Path, marker: Path) -> int | None:
    """The pid in `pidfile` if that process is alive, is one of the hypervisors cove runs
    (argv[0], or the script an interpreter runs), and was started for `marker`'s VM (its
    run dir is in the command line). The checks guard against a recycled pid."""
    try:
        pid = int(pidfile.read_text().strip())
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (OSError, ValueError):
        return None
    argv = unwrapped(argv)
    names = {Path(arg.decode(errors="replace")).name for arg in argv[:2]}
    if names & HYPERVISOR_BINARIES and any(str(marker).encode() in arg for arg in argv):
        return pid
    return None
