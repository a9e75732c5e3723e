"""A no-op `cove build` without the build: a stamp of its inputs, checked by stat alone.

The stamp covers the spec file's bytes and the size and mtime of every host file a host-
source build reads: dpkg's database, apt's package lists, busybox, and cove's own code (the
initramfs carries the agent). When all match and the artifacts are still in the cache, the
last result is the answer. Standard library only and imported before click, so the check
costs a few milliseconds; anything it cannot vouch for (Debian or Nix sources, a kernel
by path, flags) takes the full build, which writes a new stamp.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from pathlib import Path

TYPE_CHECKING = False  # typing costs milliseconds on every CLI call
if TYPE_CHECKING:
    from typing import Any

HOST_INPUTS = ("/var/lib/dpkg/status", "/var/lib/apt/lists", "/usr/bin/busybox",
               "/bin/busybox")
FORMAT = 1


def code_stamp() -> list[tuple[str, int, int]]:
    """Size and mtime of each file of cove itself (its code becomes the agent and init)."""
    root = Path(__file__).resolve().parents[1]
    found = []
    for directory, directories, files in os.walk(root):
        directories[:] = [d for d in directories if d != "__pycache__"]
        for name in files:
            if name.endswith((".py", ".sh")):
                info = os.stat(os.path.join(directory, name))
                found.append((os.path.join(directory, name), info.st_size, info.st_mtime_ns))
    return sorted(found)


def file_stamp(path: str) -> tuple[str, int, int] | None:
    try:
        info = os.stat(path)
    except OSError:
        return None
    return path, info.st_size, info.st_mtime_ns


def stamp_key(spec_file: Path, spec_bytes: bytes) -> str:
    inputs = [FORMAT, str(spec_file), hashlib.sha256(spec_bytes).hexdigest(),
              [file_stamp(path) for path in HOST_INPUTS], code_stamp(),
              os.environ.get("COVE_HOME", ""), os.geteuid()]
    return hashlib.sha256(json.dumps(inputs).encode()).hexdigest()[:32]


def stamp_path(cache: Path, key: str, kind: str = "build") -> Path:
    return cache / "build-stamps" / (f"{key}.json" if kind == "build" else f"{key}.{kind}.json")


def may_skip(spec_text: str) -> bool:
    """Only a host-source spec with a package kernel has all its inputs in the stamp."""
    return "source" not in spec_text and "[kernel]" not in spec_text \
        and "kernel." not in spec_text and "flake" not in spec_text


def read_stamped(cache: Path, spec_file: Path, kind: str) -> dict[str, Any] | None:
    try:
        spec_bytes = spec_file.read_bytes()
        if not may_skip(spec_bytes.decode()):
            return None
        data = json.loads(stamp_path(cache, stamp_key(spec_file, spec_bytes), kind).read_bytes())
    except (OSError, ValueError):
        return None  # (a spec given as a dict has no file: never stamped)
    return data if isinstance(data, dict) else None


def write_stamped(cache: Path, spec_file: Path, kind: str, data: dict[str, Any]) -> None:
    try:
        spec_bytes = spec_file.read_bytes()
        if not may_skip(spec_bytes.decode()):
            return
        path = stamp_path(cache, stamp_key(spec_file, spec_bytes), kind)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(f".{os.getpid()}.tmp")
        temporary.write_text(json.dumps(data))
        os.replace(temporary, path)
    except (OSError, UnicodeDecodeError):
        pass


def recorded_result(cache: Path, spec_file: Path) -> dict[str, Any] | None:
    """The last `cove build`'s result if every input is unchanged and its artifacts exist."""
    result = read_stamped(cache, spec_file, "build")
    if result is None:
        return None
    paths = [result["kernel"]["path"], result["initramfs"], result["root"]["path"]]
    return result if all(os.path.exists(path) for path in paths) else None


def record(cache: Path, spec_file: Path, result: dict[str, Any]) -> None:
    """Remember a host-source build's result for the next no-op (best effort)."""
    write_stamped(cache, spec_file, "build", result)


def recorded_artifacts(cache: Path, spec_file: Path) -> dict[str, Any] | None:
    """The artifacts (as image.build.artifacts_to_json wrote them) of the last build of
    this spec, if every input is unchanged and they are all still in the cache."""
    data = read_stamped(cache, spec_file, "artifacts")
    if data is None:
        return None
    paths = [f"{data['kernel']}/vmlinux", f"{data['kernel']}/info.json", data["initramfs"],
             data["root"]]
    return data if all(os.path.exists(path) for path in paths) else None


def record_artifacts(cache: Path, spec_file: Path, data: dict[str, Any]) -> None:
    write_stamped(cache, spec_file, "artifacts", data)


def format_result(result: dict[str, Any], as_json: bool) -> str:
    if as_json:
        return json.dumps(result, indent=2)
    root = result["root"]
    lines = [f"kernel     {result['kernel']['version']}  {result['kernel']['path']}",
             f"initramfs  {result['initramfs']}",
             f"root       {root['path']}  ({root['size'] / 2**20:.1f} MiB, "
             f"{root['packages']} packages)"]
    lines += [f"nix        {output}" for output in result.get("nix_outputs", [])]
    lines.append(f"built in {result['seconds']:.2f} s")
    return "\n".join(lines)


def quick_build(argv: list[str]) -> bool:
    """`cove build [SPEC] [--json]` answered from its stamp; False: do the real thing."""
    if not argv or argv[0] != "build" or len(argv) > 3:
        return False
    rest = argv[1:]
    as_json = "--json" in rest
    targets = [a for a in rest if a != "--json"]
    if len(targets) > 1 or any(t.startswith("-") for t in targets):
        return False
    spec_file = Path(targets[0] if targets else ".")
    if spec_file.is_dir():
        spec_file = spec_file / "cove.toml"
    cache = home_cache()
    if cache is None:
        return False
    result = recorded_result(cache, spec_file.resolve())
    if result is None:
        return False
    result["seconds"] = 0.0
    sys.stdout.write(format_result(result, as_json) + "\n")
    return True


def home_cache() -> Path | None:
    """The cache of a home that exists and is safe (else the full path decides and says)."""
    from cove.host.home import Home, cove_home, home_refusal

    home = cove_home()
    try:
        info = home.stat()
    except OSError:
        return None
    if home_refusal(info, os.geteuid()) or info.st_mode & 0o044:
        return None
    cache = home / "cache"
    if cache.is_symlink() and not cache.exists():
        return None  # a dangling link: the full path says what is wrong (Home.cache)
    return Home(home).cache
