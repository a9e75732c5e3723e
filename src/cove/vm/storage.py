"""Host-side storage of a VM: volume images, ephemeral overlays, virtiofsd per share."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import sys
from pathlib import Path

from cove.errors import die
from cove.host.proc import require_tool, run
from cove.host.process import VM_PROCESS_GROUP
from cove.host.userns import rootless_share_problem, unshare_prefix
from cove.image.initramfs import AGENT_LIB, ROOT_UPPER
from cove.plan.vmplan import Drive, Plan, PlannedShare
from cove.vmm.common import plain
from cove.vmm.layout import RunPaths

VIRTIOFSD = "/usr/lib/qemu/virtiofsd"
DELIVERY_LIMIT = 16 * 2**20  # config and secrets ride in the initrd: keep them small
SOCKET_WAIT = 10.0


def read_tree(root: Path, prefix: str) -> dict[str, bytes]:
    files = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            files[f"{prefix}/{path.relative_to(root)}"] = path.read_bytes()
    return files


AGENT_C_MODULES = ("_json",)  # the agent's only import from the image's lib-dynload


def delivered_files(plan: Plan) -> dict[str, bytes]:
    """The config and secrets directories, as they are now, for the per-boot archive; and a
    Nix guest's closure registration (loaded at boot when the guest has Nix). Keyed by
    their path in that archive: what is under upper/ is in the root (ROOT_UPPER)."""
    files: dict[str, bytes] = {}
    if plan.nix_closure:
        from cove.image.sources.nix import dump_db

        files[f"{ROOT_UPPER}/cove/nix-db"] = dump_db(Path(plan.nix_root), plan.nix_closure)
    for key in ("config", "secrets"):
        source = plan.delivery.get(key)
        if source:
            if not Path(source).is_dir():
                die(f"{key} directory {source} is gone", f"create it, or remove `{key}`")
            files.update(read_tree(Path(source), key))
    total = sum(len(data) for data in files.values())
    if total > DELIVERY_LIMIT:
        die(f"config and secrets hold {total / 2**20:.1f} MiB; at most "
            f"{DELIVERY_LIMIT // 2**20} MiB travel with the VM",
            "share big files with [[shares]] or keep them on a volume")
    if plan.host_python:
        files.update(agent_c_modules())
    return files


def agent_c_modules(python: Path = Path("/usr/bin/python3")) -> dict[str, bytes]:
    """The shared objects the agent imports at start (`_json`), from the host's python3,
    which a host-source root's Python is: in the per-boot archive they are read from RAM at
    boot instead of out of a compressed block of the root image (~15 ms of a cold start
    under TCG). /init puts /cove/lib on the agent's path; none found, none sent."""
    version = python.resolve().name  # python3.11
    tag = version.removeprefix("python").replace(".", "")
    return {f"{AGENT_LIB}/{path.name}": path.read_bytes()
            for name in AGENT_C_MODULES
            for path in sorted(Path("/usr/lib", version, "lib-dynload").glob(
                f"{name}.cpython-{tag}-*.so"))}


def create_volume(drive: Drive) -> None:
    """Make the ext4 image of a volume once; after that it only ever grows."""
    path = Path(drive.path)
    if path.exists():
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.truncate(drive.size_mib * 2**20)
        run(["mkfs.ext4", "-q", "-F", "-L", drive.id, "-E", "lazy_itable_init=0,"
             "lazy_journal_init=0", str(tmp)], what=f"mkfs.ext4 for {drive.path}")
        # link, not rename: when two VMs make one volume at once, the first image made
        # keeps the name and the second is dropped (a rename would replace the image
        # the first VM already writes)
        with contextlib.suppress(FileExistsError):
            os.link(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def lock_volumes(plan: Plan) -> list[int]:
    """cove's own lock on each volume image, on every hypervisor: exclusive for a VM that
    writes it, shared for ephemeral VMs (they only read it under an overlay). The fds go to
    the hypervisor process, so the lock lasts exactly as long as the VM, daemon or not."""
    fds: list[int] = []
    try:
        for drive in plan.drives:
            fd = os.open(drive.path, os.O_RDONLY | os.O_CLOEXEC)
            fds.append(fd)
            mode = fcntl.LOCK_SH if plan.ephemeral else fcntl.LOCK_EX
            try:
                fcntl.flock(fd, mode | fcntl.LOCK_NB)
            except BlockingIOError:
                die(f"volume {drive.path} is in use by another VM",
                    "give this VM its own volume, stop the other VM, or make both ephemeral "
                    "to share it read-only")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    return fds


def volume_in_use(path: Path) -> bool:
    """Whether a VM holds the volume (see lock_volumes)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)
    return False


def create_overlay(drive: Drive, paths: RunPaths, saved: str | None = None) -> None:
    """A throw-away qcow2 over the volume, or over the overlay a snapshot saved (whose own
    base is the volume), so a restored VM sees its disk as it was at the save."""
    base, form = (saved, "qcow2") if saved else (drive.path, "raw")
    run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", form, "-b", base,
         str(paths.overlay(drive.id))], what="qemu-img create")


def prepare_drives(plan: Plan, paths: RunPaths, saved: dict[str, str] | None = None) -> None:
    for drive in plan.drives:
        create_volume(drive)
        if plan.ephemeral:
            create_overlay(drive, paths, (saved or {}).get(drive.id))


def virtiofsd_argv(share: PlannedShare, paths: RunPaths, rootless: bool = False) -> list[str]:
    daemon = [VIRTIOFSD, f"--socket-path={paths.virtiofs(share.tag)}", "-o",
              f"source={plain(share.source, ',', 'share source')}", "-o", "cache=auto"]
    setup = ["--readonly", share.source] if share.readonly else []
    if rootless:
        # root in a user namespace of our own: virtiofsd needs setgroups and namespaces,
        # and guest root's files then belong to us on the host
        return [*unshare_prefix(), sys.executable, "-m", "cove.host.sharens", *setup,
                "--private-run", "--", *daemon]
    if not setup:
        return daemon
    # virtiofsd has no read-only switch: it runs in a mount namespace of its own where
    # the source is a read-only bind mount, so even a guest that remounts rw cannot write
    return ["unshare", "--mount", "--propagation", "private", "--",
            sys.executable, "-m", "cove.host.sharens", *setup, "--", *daemon]


async def start_virtiofsd(plan: Plan, paths: RunPaths, log: Path,
                          ) -> list[asyncio.subprocess.Process]:
    shares = [s for s in plan.shares if s.proto == "virtiofs"]
    if not shares:
        return []
    if not Path(VIRTIOFSD).exists():
        die("virtiofsd is not installed", "install it with: apt-get install qemu-system-common")
    require_tool("unshare")
    rootless = os.geteuid() != 0
    if rootless and (problem := rootless_share_problem()):
        die(f"virtiofs shares without root need a user namespace: {problem}",
            'or use proto = "9p" with a kernel that has 9p (kernel.package = '
            '"linux-image-amd64")')
    processes = []
    with log.open("ab") as sink:
        for share in shares:
            processes.append(await asyncio.create_subprocess_exec(
                *virtiofsd_argv(share, paths, rootless), stdin=asyncio.subprocess.DEVNULL,
                stdout=sink, stderr=sink, process_group=VM_PROCESS_GROUP))
    for share, process in zip(shares, processes, strict=True):
        await wait_for_socket(paths.virtiofs(share.tag), process, log)
    return processes


async def wait_for_socket(path: Path, process: asyncio.subprocess.Process, log: Path) -> None:
    deadline = asyncio.get_running_loop().time() + SOCKET_WAIT
    while not path.exists():
        if process.returncode is not None or asyncio.get_running_loop().time() > deadline:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            die(f"virtiofsd did not start for {path.name}: " + " / ".join(tail),
                "is the shared directory there and readable by you? (`cove doctor` checks "
                "what shares need)")
        await asyncio.sleep(0.02)
