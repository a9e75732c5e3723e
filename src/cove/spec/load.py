"""cove.toml -> Spec. All validation of user input happens here."""

from __future__ import annotations

import os
import re
import stat
import tomllib
from pathlib import Path
from typing import Any

from cove.errors import SpecError, die
from cove.spec.model import (
    Accel,
    Filesystem,
    Health,
    Hypervisor,
    Kernel,
    Port,
    Proto,
    Restart,
    Service,
    Share,
    ShareProto,
    Source,
    Spec,
    StoreMode,
    VmRestart,
    Volume,
)
from cove.spec.settings import TOP_SETTINGS, valid_name
from cove.spec.validate import Checker, Problem

SPEC_FILENAME = "cove.toml"
# Host stores a guest may read but never write (seen through any share that holds them)
HOST_STORES = (Path("/nix/store"), Path("/usr"))


def touches_host_store(path: Path) -> Path | None:
    """The host store that `path` is, lies inside, or contains."""
    for store in HOST_STORES:
        if path == store or store in path.parents or path in store.parents:
            return store
    return None


def is_named_volume(source: str) -> bool:
    return "/" not in source and not source.startswith(".")


def resolve_spec_path(target: str | Path) -> Path:
    """Accept a directory holding cove.toml, or the file itself."""
    path = Path(target)
    if path.is_dir():
        path = path / SPEC_FILENAME
    if not path.is_file():
        die(f"{target}: no {SPEC_FILENAME} here",
            f"pass a directory that holds {SPEC_FILENAME}, or the file itself")
    return path


def read_toml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_bytes().decode()
    except UnicodeDecodeError:
        raise SpecError(str(path), [Problem("", "is not UTF-8 text")]) from None
    except OSError as error:
        die(f"{path}: cannot read: {error.strerror}")
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        message = str(error)
        if "line" not in message:  # "(at end of document)": say which line that is
            message = f"{message} (line {text.count(chr(10)) + 1}, the last)"
        raise SpecError(str(path), [Problem("", f"invalid TOML: {message}",
                                            "see https://toml.io for the syntax")]) from None


def merge_command_line(raw: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    """Command line additions: list entries are appended, other keys replaced."""
    merged = dict(raw)
    for key, value in extra.items():
        if isinstance(value, list):
            merged[key] = [*(raw.get(key) or []), *value]
        else:
            merged[key] = value
    return merged


def mark_command_line(problem: Problem, from_file: dict[str, Any],
                      extra: dict[str, Any]) -> Problem:
    """Say so when a problem is in what the command line added, not in the file."""
    key = problem.where.split("[")[0].split(".")[0]
    if key not in extra:
        return problem
    if isinstance(extra[key], list):
        index = problem.where[len(key):].removeprefix("[").split("]")[0]
        if not index.isdigit() or int(index) < len(from_file.get(key) or []):
            return problem
    return Problem(f"{problem.where} (from the command line)", problem.message, problem.hint)


def flake_name(flake: str) -> str:
    """A VM name from a flake attribute: '.#hello' -> 'hello'."""
    attr = flake.partition("#")[2].rsplit(".", 1)[-1] or "default"
    return re.sub(r"[^a-z0-9_.-]", "-", attr.lower())[:63].strip("-._") or "nix"


def load_spec(target: str | Path, extra: dict[str, Any] | None = None) -> Spec:
    """Load and check a spec; `extra` holds command line additions (absolute paths), checked
    by the same rules as the file."""
    extra = extra or {}
    if extra.get("flake") and not (Path(target) / SPEC_FILENAME).exists() \
            and not Path(target).is_file():
        path = Path(target).resolve() / SPEC_FILENAME  # no file: the flag is the spec
        from_file = {"name": flake_name(str(extra["flake"])), "source": "nix"}
    else:
        path = resolve_spec_path(target)
        from_file = read_toml(path)
    return checked_spec(path, str(path), from_file, extra)


def load_spec_dict(raw: dict[str, Any], base: Path, extra: dict[str, Any] | None = None
                   ) -> Spec:
    """A spec given as a dict (a program's, not a file's): the same rules, the same errors;
    relative paths are relative to `base`."""
    if not isinstance(raw, dict):
        raise SpecError(DICT_LABEL, [Problem("", f"is a {type(raw).__name__}, not a dict of "
                                                 "spec keys", 'e.g. {"name": "sbx"}')])
    return checked_spec(base.resolve() / DICT_LABEL, DICT_LABEL, raw, extra or {})


DICT_LABEL = "<dict>"


def checked_spec(path: Path, label: str, from_file: dict[str, Any],
                 extra: dict[str, Any]) -> Spec:
    raw = merge_command_line(from_file, extra)
    checker = Checker(path.parent.resolve())
    values = checker.table(raw, TOP_SETTINGS, "")
    check_cross_field(values, checker)
    if checker.problems:
        raise SpecError(label, [mark_command_line(p, from_file, extra)
                                for p in checker.problems])
    return build_spec(path.resolve(), values)


def check_cross_field(values: dict[str, Any], checker: Checker) -> None:
    """Rules that involve more than one key."""
    seen: dict[tuple[str, int, str], int] = {}
    for index, port in enumerate(values.get("ports") or []):
        if "host" not in port:
            continue
        key = (port["bind"], port["host"], port["proto"])
        if key in seen:
            checker.problem(f"ports[{index}].host",
                            f"host port {port['host']}/{port['proto']} is already used by "
                            f"ports[{seen[key]}]", "each host port can be forwarded once")
        seen[key] = index
    check_mounts(values, checker)
    check_store_guards(values, checker)
    if values.get("source") == "nix" and not values.get("flake"):
        checker.problem("flake", 'is required with source = "nix"',
                        'name the flake output to boot, e.g. flake = ".#hello"')
    kernel = values.get("kernel") or {}
    if kernel.get("modules") and not kernel.get("path"):
        checker.problem("kernel.modules", "only makes sense with kernel.path",
                        "set kernel.path to your own kernel, or remove kernel.modules")


STORE_WRITERS = ("nix-collect-garbage", "nix-store --gc", "nix store gc", "--optimise",
                 "nix store optimise", "auto-optimise-store")


def check_store_guards(values: dict[str, Any], checker: Checker) -> None:
    """A guest that sees the host's store must not collect or optimise it: that is how a
    guest once deleted paths the host still used. (The share is read-only as well.)"""
    if values.get("source") != "nix" or values.get("store") != "share":
        return
    for name, service in (values.get("services") or {}).items():
        for key in ("command", "pre_start"):
            text = service.get(key) or ""
            found = next((w for w in STORE_WRITERS if w in text), None)
            if found:
                checker.problem(f"services.{name}.{key}", f"runs `{found}` in a guest that "
                                "shares the host's Nix store", "garbage collection or "
                                "optimisation there would delete or rewrite paths the host "
                                'still uses; use store = "image", or run it on the host')


def check_mounts(values: dict[str, Any], checker: Checker) -> None:
    """Shares and volumes: directories, no two on one target, host stores read-only."""
    targets: dict[str, str] = {}
    fixed = {"/config": "config", "/run/secrets": "secrets"}
    for kind in ("shares", "volumes"):
        for index, entry in enumerate(values.get(kind) or []):
            where = f"{kind}[{index}]"
            target = entry.get("target")
            if target in targets or target in fixed:
                checker.problem(f"{where}.target", f"{target} is already used by "
                                f"{targets.get(target) or fixed[target]}",
                                "give each share and volume its own target")
            if target:
                targets[target] = where
            if kind == "shares":
                check_share(entry, where, checker)
            else:
                check_volume(entry, where, checker)


def check_share(entry: dict[str, Any], where: str, checker: Checker) -> None:
    source = entry.get("source")
    if source is None:
        return
    if not source.is_dir():
        checker.problem(f"{where}.source", f"{source} is not a directory",
                        "share a directory; for a disk image use [[volumes]]")
    if "," in str(source):  # virtiofsd reads its source from a comma-separated -o list
        checker.problem(f"{where}.source", f"{source} has a comma, which virtiofsd would take "
                        "for the end of its source option", "share it through a symbolic "
                        "link whose path has no comma (ln -s ... /tmp/share)")
    store = touches_host_store(source)
    if store is not None and not entry.get("readonly", True):
        checker.problem(f"{where}.readonly", f"{source} holds the host store {store}, which a "
                        "guest may never write", "remove `readonly = false`; guest writes go "
                        "to a tmpfs overlay instead")


def check_volume(entry: dict[str, Any], where: str, checker: Checker) -> None:
    source = entry.get("source")
    if not source:
        return
    if is_named_volume(source):
        if not valid_name(source):
            checker.problem(f"{where}.source", f'"{source}" is not a valid volume name',
                            "use lower-case letters, digits, '.', '_', '-', or a path "
                            "like ./data.ext4")
        return
    try:
        path = (checker.base_dir / source).resolve()
        if path.is_dir():
            checker.problem(f"{where}.source", f"{source} is a directory; a volume is an "
                            "image file", f"name a file, e.g. {source.rstrip('/')}.ext4, or "
                            "use [[shares]]")
            return
    except (OSError, RuntimeError) as error:
        checker.problem(f"{where}.source", f"{source!r} cannot be looked at: {error}")
        return
    refusal = volume_path_refusal(path, bool(entry.get("allow_any_path")))
    if refusal:
        checker.problem(f"{where}.source", f"{source}: {refusal}",
                        "a guest writes its volumes; name an image file of your own, or set "
                        "`allow_any_path = true` on this volume if you really mean it")
    elif path.is_file() and not is_ext4_image(path):
        checker.problem(f"{where}.source", f"{source} is not an ext4 image, and a volume is "
                        "one (cove makes it where no file is yet)", "to give the guest host "
                        "files, share their directory ([[shares]], or -v ./dir:/path); to "
                        "use this path as a volume, move the file away")


EXT4_MAGIC_AT = 1080  # the superblock starts at 1024; its magic is 0xEF53, little-endian


def is_ext4_image(path: Path) -> bool:
    """Whether `path` holds an ext2/3/4 file system (what the guest mounts a volume as)."""
    try:
        with path.open("rb") as handle:
            handle.seek(EXT4_MAGIC_AT)
            return handle.read(2) == b"\x53\xef"
    except OSError:
        return False


def volume_path_refusal(path: Path, allow_any: bool) -> str | None:
    """Why a volume image path is refused, or None: a typo must not hand a host disk or
    another user's file to a guest read-write."""
    try:
        info = path.stat()
    except FileNotFoundError:
        if not path.parent.is_dir():
            return f"its directory {path.parent} does not exist"
        if not os.access(path.parent, os.W_OK):
            return f"you cannot create files in {path.parent}"
        return None
    except OSError as error:
        return f"cannot be read ({error.strerror})"
    if stat.S_ISBLK(info.st_mode) or stat.S_ISCHR(info.st_mode):
        return None if allow_any else f"{path} is a device"
    if not stat.S_ISREG(info.st_mode):
        return f"{path} is not a regular file"
    if info.st_uid != os.geteuid() and not allow_any:
        return f"{path} belongs to uid {info.st_uid}, not to you"
    return None


def build_spec(path: Path, values: dict[str, Any]) -> Spec:
    services = tuple(
        Service(name=name, command=body["command"], pre_start=body["pre_start"],
                env=dict(body["env"]), restart=Restart(body["restart"]),
                stop_timeout=body["stop_timeout"],
                health=Health(**body["health"]) if body.get("health") else None,
                user=body["user"])
        for name, body in values["services"].items()
    )
    restart = values["restart"] or {}
    ports = tuple(Port(host=p["host"], guest=p["guest"], proto=Proto(p["proto"]), bind=p["bind"])
                  for p in values["ports"])
    kernel = values["kernel"] or {}
    return Spec(
        file=path,
        name=values["name"],
        vcpu=values["vcpu"],
        memory_mib=values["memory"],
        packages=tuple(values["packages"]),
        keep=tuple(values["keep"]),
        services=services,
        ports=ports,
        env=dict(values["env"]),
        kernel=Kernel(package=kernel.get("package", "linux-image-cloud-amd64"),
                      path=kernel.get("path"), modules=kernel.get("modules"),
                      cmdline=kernel.get("cmdline", "")),
        source=Source(values["source"]),
        flake=values["flake"],
        store=StoreMode(values["store"]),
        nix_root=(path.parent / values["nix_root"]).resolve(),
        suite=values["suite"],
        mirror=values["mirror"],
        hypervisor=Hypervisor(values["hypervisor"]),
        accel=Accel(values["accel"]),
        restart=VmRestart(policy=Restart(restart.get("policy", "on-failure")),
                          max=restart.get("max", 5)),
        shares=tuple(Share(s["source"], s["target"], s["readonly"], ShareProto(s["proto"]))
                     for s in values["shares"]),
        volumes=tuple(Volume(v["source"] if is_named_volume(v["source"])
                             else str((path.parent / v["source"]).resolve()),
                             v["target"], v["size"], Filesystem(v["fs"]))
                      for v in values["volumes"]),
        network=values["network"],
        auto_forward=values["auto_forward"],
        config=values.get("config"),
        secrets=values.get("secrets"),
        ephemeral=values["ephemeral"],
        idle_suspend_after=float((values["idle"] or {}).get("suspend_after", 0.0)),
        template=bool((values["warm"] or {}).get("template", True)),
        balloon=values["balloon"],
    )
