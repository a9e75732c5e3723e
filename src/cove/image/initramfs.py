"""The initramfs: busybox, the modules the plan needs, /init and the guest agent.

The base archive is cached per kernel and module set; each boot appends a small archive
with that VM's own config (the kernel unpacks concatenated newc archives in order).
"""

from __future__ import annotations
import __future__

import importlib.util
import io
import json
import lzma
import marshal
import os
import sys
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from cove.errors import die
from cove.host.proc import require_tool
from cove.image.cache import Cache, content_key, file_digest
from cove.image.cpio import CpioWriter
from cove.image.elf import elf_needs
from cove.image.kernel import KernelArtifact
from cove.image.modules import module_closure, read_dep_table

# The guest needs `cove` only as the package around cove.guest: the host's __init__ (the
# Python API's lazy names) would be imported by every boot for nothing.
GUEST_PACKAGE_INIT = b'"""cove, as the guest has it: only its agent (cove.guest)."""\n'
FUTURE_ANNOTATIONS = b"from __future__ import annotations\n"
# /init's one mount for these (busybox mount -a; "move" takes what /init mounted itself)
FSTAB = b"""/dev /newroot/dev none move 0 0
/proc /newroot/proc none move 0 0
/sys /newroot/sys none move 0 0
tmp /newroot/tmp tmpfs mode=1777 0 0
run /newroot/run tmpfs mode=0755 0 0
devpts /newroot/dev/pts devpts defaults 0 0
shm /newroot/dev/shm tmpfs mode=1777 0 0
"""
# The root's overlay takes this directory of the initramfs as its upper layer (init.sh):
# what is under it appears in the root, the agent's package under /cove/lib.
ROOT_UPPER = "upper"
AGENT_LIB = f"{ROOT_UPPER}/cove/lib"
UPPER_DIRS = ("etc", "cove", "proc", "sys", "dev", "tmp", "run")


def agent_sources() -> dict[str, bytes]:
    """The cove.guest package (and an empty `cove` around it), as the guest imports them."""
    package = resources.files("cove.guest")
    sources = {f"cove/guest/{entry.name}": entry.read_bytes()
               for entry in sorted(package.iterdir(), key=lambda e: e.name)
               if entry.name.endswith(".py")}
    sources["cove/__init__.py"] = GUEST_PACKAGE_INIT
    return sources


def bytecode(name: str, source: bytes) -> tuple[str, bytes]:
    """(path of its .pyc in __pycache__, as this Python names it; the .pyc) for a module,
    so the guest never compiles the agent at boot.

    Unchecked-hash pycs need no matching mtime. A guest Python of another version looks for
    its own tag's file, finds none, and compiles the source beside it instead.

    `from __future__ import annotations` becomes the compiler flag it stands for: the
    statement also imports the __future__ module at run time, which at boot reads it from
    the root image (about 19 ms of a cold guest's start under TCG). The line stays, blank,
    so line numbers do not move.
    """
    lines = source.splitlines(keepends=True)
    flags = __future__.annotations.compiler_flag if FUTURE_ANNOTATIONS in lines else 0
    lines = [b"\n" if line == FUTURE_ANNOTATIONS else line for line in lines]
    code = compile(b"".join(lines), f"/cove/lib/{name}", "exec", flags=flags,
                   dont_inherit=True)
    data = importlib.util.MAGIC_NUMBER + (0b01).to_bytes(4, "little")  # hash-based, unchecked
    data += importlib.util.source_hash(source) + marshal.dumps(code)
    return importlib.util.cache_from_source(name), data


def agent_files(sources: dict[str, bytes]) -> dict[str, bytes]:
    """The agent's package as plain files, sources and bytecode, by their path under
    /cove/lib. They arrive in the overlay's upper layer with the initramfs, so nothing is
    copied at boot, and the guest imports them with the path finder: a zip cost the agent
    ~10 ms of a cold start under TCG reading its directory in pure Python."""
    files = {}
    for name, data in sorted(sources.items()):
        files[name] = data
        path, code = bytecode(name, data)
        files[path] = code
    return files


def init_script() -> bytes:
    return resources.files("cove.image").joinpath("init.sh").read_bytes()


def busybox_path() -> Path:
    path = Path(require_tool("busybox")).resolve()
    needed, interpreter = elf_needs(path)
    if needed or interpreter:
        die(f"{path} is not statically linked; the initramfs has no libraries for it",
            "install the static build with: apt-get install busybox-static")
    return path


def module_paths(kernel: KernelArtifact, modules: list[str]) -> list[str]:
    if not modules:
        return []
    if kernel.modules is None:
        die(f"kernel {kernel.version} needs modules {', '.join(modules)} but none were found",
            "set kernel.modules to the directory holding lib/modules/<version>, or use a "
            "kernel with these built in")
    table = read_dep_table(kernel.modules)
    try:
        return module_closure(modules, table)
    except KeyError as error:
        die(f"kernel {kernel.version} has no module {error.args[0]}",
            "use a kernel that provides it, e.g. Debian's linux-image-cloud-amd64")


def module_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if path.name.endswith(".xz"):
        return lzma.decompress(data)
    if path.name.endswith(".zst"):
        import subprocess

        return subprocess.run([require_tool("zstd"), "-dc", str(path)], capture_output=True,
                              check=True).stdout
    return data


def build_initramfs(kernel: KernelArtifact, modules: list[str], cache: Cache) -> Path:
    paths = module_paths(kernel, modules)
    busybox = busybox_path()
    sources = agent_sources()
    key = content_key(["initramfs", kernel.version, paths, file_digest(busybox),
                       sys.implementation.cache_tag,
                       {name: content_key(data.decode()) for name, data in sources.items()},
                       content_key(init_script().decode()), content_key(FSTAB.decode()),
                       ROOT_UPPER, UPPER_DIRS])

    def build(out: Path) -> None:
        with (out / "initramfs.cpio").open("wb") as handle:
            writer = CpioWriter(handle)
            for directory in ("bin", "dev", "proc", "sys", "lib", "lib/modules", "lower", "rw",
                              "newroot", "cove", "work", ROOT_UPPER):
                writer.directory(directory)
            for directory in UPPER_DIRS:
                writer.directory(f"{ROOT_UPPER}/{directory}")
            # under the devtmpfs until /init moves that into the root; then /init's
            # background half (a shell's `&` opens /dev/null) finds this one
            writer.char_device("dev/null", 1, 3)
            writer.file("bin/busybox", busybox.read_bytes(), 0o755)
            writer.file("init", init_script(), 0o755)
            writer.file("fstab", FSTAB)
            for relative in paths:
                assert kernel.modules is not None
                writer.file(f"lib/modules/{module_file(relative)}",
                            module_bytes(kernel.modules / relative))
            for relative, data in agent_files(sources).items():
                writer.parents(f"{AGENT_LIB}/{relative}")
                writer.file(f"{AGENT_LIB}/{relative}", data)
            writer.close()

    return cache.get_or_build("initramfs", key, build) / "initramfs.cpio"


def module_file(relative: str) -> str:
    """The flat name a module has in the initramfs (compressed ones are unpacked)."""
    return Path(relative).name.split(".ko")[0] + ".ko"


@dataclass(frozen=True)
class BootConfig:
    """What one boot of one VM gets on top of the shared initramfs."""

    agent: dict[str, object]
    init_env: dict[str, str]
    load: tuple[str, ...] = ()  # module files, dependencies first
    later: tuple[str, ...] = ()  # module files loaded in the background once the agent runs
    mounts: tuple[str, ...] = ()  # lines for /init: KIND SOURCE TARGET OPTIONS
    # extra files, by their path in the initramfs: upper/... is in the root (upper/cove/...
    # beside the agent); config/ and secrets/ are not (/init mounts each in its own tmpfs)
    files: dict[str, bytes] = field(default_factory=dict)


def config_archive(boot: BootConfig) -> bytes:
    """The per-VM archive appended to the base initramfs."""
    buffer = io.BytesIO()
    writer = CpioWriter(buffer)
    writer.file(f"{ROOT_UPPER}/cove/config.json", json.dumps(boot.agent).encode(), 0o600)
    writer.file("cove/init.env", render_env(boot.init_env).encode(), 0o600)
    writer.file("cove/load", "".join(f"{m}\n" for m in boot.load).encode(), 0o600)
    writer.file("cove/later", "".join(f"{m}\n" for m in boot.later).encode(), 0o600)
    writer.fifo("cove/go")  # the agent's go-ahead to the background half (init.sh)
    writer.file("cove/mounts", "".join(f"{m}\n" for m in boot.mounts).encode(), 0o600)
    for name, data in sorted(boot.files.items()):
        writer.parents(name)
        writer.file(name, data, 0o600)
    writer.close()
    return buffer.getvalue()


def load_order(kernel: KernelArtifact, modules: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(module_file(p) for p in module_paths(kernel, list(modules)))


def later_order(kernel: KernelArtifact, later: tuple[str, ...],
                loaded: tuple[str, ...]) -> tuple[str, ...]:
    """Module files for `later`, without those already `loaded` at boot (their dependencies
    such as virtio are)."""
    return tuple(name for name in load_order(kernel, later) if name not in loaded)


def shell_quote(value: str) -> str:
    return "'" + value.replace("'", "'\\''") + "'"


def render_env(values: dict[str, str]) -> str:
    return "".join(f"{key}={shell_quote(value)}\n" for key, value in sorted(values.items()))


def write_initrd(base: Path, boot: BootConfig, out: Path) -> None:
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(base.read_bytes())
        handle.write(config_archive(boot))
