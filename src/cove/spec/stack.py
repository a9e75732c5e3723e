"""cove-stack.toml -> Stack: several VMs, started in dependency order, that reach each other
by name on a private segment cove hands out addresses for.

Each member is a path to a cove.toml (`spec`) with keys beside it that override the file's,
or, without `spec`, a cove.toml written inline. One settings table drives the checks, the
schema (`cove schema --stack`) and docs/stacks.md.
"""

from __future__ import annotations

import dataclasses
import enum
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.errors import SpecError, die
from cove.spec.load import SPEC_FILENAME, checked_spec, read_toml, resolve_spec_path
from cove.spec.model import Segment, Spec
from cove.spec.settings import TOP_SETTINGS, Kind, Setting
from cove.spec.validate import Checker

STACK_FILENAME = "cove-stack.toml"
STACK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,30}$"  # the VM names are STACK-MEMBER (<= 63)
MEMBER_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,30}$"  # also a host name on the segment
SEGMENT_NET = "10.89.0"  # every stack has its own segment: the same range never meets itself
FIRST_HOST = 10


class Condition(enum.StrEnum):
    STARTED = "started"
    HEALTHY = "healthy"


MEMBER_SETTINGS = (
    Setting("spec", Kind.PATH, "A directory holding cove.toml, or a cove.toml (relative to "
            "the stack file). Without it, write the VM's cove.toml keys here inline; with it, "
            "keys here override the file's (env is merged, a port or volume replaces the "
            "file's one for the same guest port or target).", example="./db"),
    Setting("depends_on", Kind.DEPENDS, "VMs to start first, each with the condition to wait "
            "for: \"started\" (booted) or \"healthy\" (every health check passed). A list of "
            "names means \"started\".", default={},
            choices=tuple(c.value for c in Condition), example='{ db = "healthy" }'),
)
MEMBER_SPEC_SETTINGS = tuple(
    dataclasses.replace(s, required=False, help=s.help + " Default: STACK-MEMBER.")
    if s.key == "name" else s for s in TOP_SETTINGS)
STACK_SETTINGS = (
    Setting("name", Kind.STR, "Name of the stack (default: its directory's name); its VMs "
            "are named STACK-MEMBER.", pattern=STACK_NAME_PATTERN, example="blog"),
    Setting("env", Kind.ENV, "Environment variables for every service of every VM (a VM's "
            "own env wins).", default={}),
    Setting("vms", Kind.TABLE_MAP, "The stack's VMs by member name: `[vms.db]`.",
            required=True, fields=MEMBER_SETTINGS + MEMBER_SPEC_SETTINGS,
            pattern=MEMBER_PATTERN),
)


@dataclass(frozen=True)
class Member:
    key: str  # the name other members use for it
    spec: Spec
    depends_on: tuple[tuple[str, Condition], ...] = ()
    origin: str = "inline"  # the cove.toml it came from


@dataclass(frozen=True)
class Stack:
    name: str
    file: Path
    members: tuple[Member, ...]  # in start order: every member after what it depends on

    def member(self, key: str) -> Member:
        for member in self.members:
            if member.key == key:
                return member
        die(f"stack {self.name} has no VM {key!r}",
            f"its VMs: {', '.join(m.key for m in self.members)}")


def stack_file_of(target: Path) -> Path | None:
    """The stack file `target` names (the file, or a directory holding one only), else None."""
    if target.is_file():
        return target if target.name == STACK_FILENAME else None
    if not (target / STACK_FILENAME).is_file():
        return None
    if (target / SPEC_FILENAME).is_file():
        die(f"{target} holds both {SPEC_FILENAME} and {STACK_FILENAME}",
            "pass the file you mean")
    return target / STACK_FILENAME


def load_stack(target: Path) -> Stack:
    path = stack_file_of(target)
    if path is None:
        die(f"{target}: no {STACK_FILENAME} here",
            f"pass a directory that holds {STACK_FILENAME}, or the file itself")
    path = path.resolve()
    raw = read_toml(path)
    checker = Checker(path.parent)
    head = checker.table({k: v for k, v in raw.items() if k != "vms"},
                         STACK_SETTINGS[:2], "")
    if "vms" not in raw:
        checker.problem("vms", "is required but missing",
                        'add one table per VM: [vms.db] with spec = "./db"')
    name = head.get("name") or re.sub(r"[^a-z0-9_-]", "-", path.parent.name.lower())[:31]
    members = load_members(raw.get("vms"), path, name, head.get("env") or {}, checker)
    check_links(members, checker)
    if checker.problems:
        raise SpecError(str(path), checker.problems)
    return Stack(name, path, tuple(with_segment(start_order(members), name)))


def load_members(raw: object, path: Path, stack: str, env: dict[str, str],
                 checker: Checker) -> list[Member]:
    if raw is None:
        return []
    if not isinstance(raw, dict) or not raw:
        checker.problem("vms", "must be a table of VMs", "write [vms.db] with spec = \"./db\"")
        return []
    members = []
    for key, body in raw.items():
        where = f"vms.{key}"
        if not re.fullmatch(MEMBER_PATTERN, key):
            checker.problem(where, f'"{key}" is not a valid member name',
                            "use lower-case letters, digits, '_' and '-' (at most 31)")
            continue
        if not isinstance(body, dict):
            checker.problem(where, "must be a table", f"write [{where}] with keys below it")
            continue
        if (member := load_member(key, body, path, stack, env, checker)) is not None:
            members.append(member)
    return members


def load_member(key: str, body: dict[str, Any], path: Path, stack: str,
                env: dict[str, str], checker: Checker) -> Member | None:
    where = f"vms.{key}"
    own = {k: v for k, v in body.items() if k in ("spec", "depends_on")}
    keys = {k: v for k, v in body.items() if k not in own}
    links = checker.table(own, MEMBER_SETTINGS, where)
    if "spec" in own and links.get("spec") is None:
        return None  # its path was refused above
    spec_path, base = path, {}
    if links.get("spec") is not None:
        spec_path = resolve_spec_path(links["spec"]).resolve()
        base = read_toml(spec_path)
    raw = merge_member(base, keys)
    raw["name"] = keys.get("name", f"{stack}-{key}")  # the file's own name is for `cove up` of it
    raw["env"] = {**env, **(raw.get("env") or {})}
    try:
        spec = checked_spec(spec_path, str(spec_path), raw, {})
    except SpecError as error:
        for problem in error.problems:
            top = problem.where.split("[")[0].split(".")[0]
            if spec_path == path or top in keys or not problem.where:
                inner = f"{where}.{problem.where}".rstrip(".")
                checker.problems.append(dataclasses.replace(problem, where=inner))
            else:
                checker.problems.append(dataclasses.replace(
                    problem, where=f"{where} ({spec_path}): {problem.where}"))
        return None
    depends = tuple((name, Condition(c)) for name, c in (links.get("depends_on") or {}).items())
    return Member(key, spec, depends, str(spec_path) if spec_path != path else "inline")


def merge_member(base: dict[str, Any], keys: dict[str, Any]) -> dict[str, Any]:
    """A member's keys over its cove.toml: env merged; a port or volume replaces the file's
    entry for the same guest port or target (`[]` clears them); anything else replaced."""
    merged = dict(base)
    for key, value in keys.items():
        old = base.get(key)
        if key == "env" and isinstance(old, dict) and isinstance(value, dict):
            merged[key] = {**old, **value}
        elif key in ("ports", "volumes") and isinstance(old, list) and isinstance(value, list) \
                and value:  # (an empty list clears the file's)
            field = "guest" if key == "ports" else "target"
            moved = {entry.get(field) for entry in value if isinstance(entry, dict)}
            merged[key] = [entry for entry in old
                           if not (isinstance(entry, dict) and entry.get(field) in moved)]
            merged[key] += value
        else:
            merged[key] = value
    return merged


def check_links(members: list[Member], checker: Checker) -> None:
    """Dependencies that exist and form no cycle; names and host ports used once."""
    keys = {m.key for m in members}
    for member in members:
        for name, _ in member.depends_on:
            if name == member.key:
                checker.problem(f"vms.{member.key}.depends_on.{name}", "a VM cannot depend on "
                                "itself", "remove it")
            elif name not in keys:
                checker.problem(f"vms.{member.key}.depends_on.{name}", "no such VM in this stack",
                                f"the stack's VMs: {', '.join(sorted(keys))}")
    if cycle := find_cycle(members):
        checker.problem(f"vms.{cycle[0]}.depends_on", "dependency cycle: " + " -> ".join(cycle),
                        "remove one of these dependencies")
    check_clashes(members, checker)


def check_clashes(members: list[Member], checker: Checker) -> None:
    names: dict[str, str] = {}
    ports: dict[tuple[int, str], tuple[str, str]] = {}
    for member in members:
        if member.spec.name in names:
            checker.problem(f"vms.{member.key}.name", f'"{member.spec.name}" is also the name of '
                            f"vms.{names[member.spec.name]}", "give one of them another name")
        names[member.spec.name] = member.key
        for port in member.spec.ports:
            other = ports.get((port.host, port.proto.value))
            if other and (other[1] == port.bind or "0.0.0.0" in (other[1], port.bind)):
                checker.problem(f"vms.{member.key}.ports", f"host port {port.host}/{port.proto} "
                                f"is also forwarded by vms.{other[0]}",
                                "give one of them another host port")
            ports[(port.host, port.proto.value)] = (member.key, port.bind)


def find_cycle(members: list[Member]) -> list[str]:
    """One dependency cycle as a path (its first name repeated at the end), or []."""
    graph = {m.key: [n for n, _ in m.depends_on if n != m.key] for m in members}
    done: set[str] = set()

    def visit(key: str, path: list[str]) -> list[str]:
        if key in path:
            return [*path[path.index(key):], key]
        if key in done or key not in graph:
            return []
        for name in graph[key]:
            if found := visit(name, [*path, key]):
                return found
        done.add(key)
        return []

    for key in graph:
        if found := visit(key, []):
            return found
    return []


def start_order(members: list[Member]) -> list[Member]:
    """Dependencies first; otherwise the file's order (a stable topological sort)."""
    done: list[Member] = []
    left = list(members)
    while left:
        ready = next(m for m in left
                     if all(name in {d.key for d in done} for name, _ in m.depends_on))
        done.append(ready)
        left.remove(ready)
    return done


def with_segment(members: list[Member], stack: str) -> list[Member]:
    """Each member's address on the stack's segment, and every member's name and address."""
    addresses = {m.key: f"{SEGMENT_NET}.{FIRST_HOST + i}" for i, m in enumerate(members)}
    peers = tuple(dict.fromkeys(pair for m in members for pair in (
        (m.key, addresses[m.key]), (m.spec.name, addresses[m.key]))))
    return [dataclasses.replace(m, spec=dataclasses.replace(
        m.spec, segment=Segment(stack, m.key, f"{addresses[m.key]}/24", peers))) for m in members]


def stack_schema() -> dict[str, Any]:
    from cove.spec.schema import table_schema

    return {"$schema": "https://json-schema.org/draft/2020-12/schema",
            "$id": "https://cove.invalid/schema/cove-stack.toml.json",
            "title": STACK_FILENAME, **table_schema(STACK_SETTINGS)}


def keys_markdown() -> str:
    """The key table of docs/stacks.md (tests/unit/test_stacks.py keeps the page current)."""
    rows = ["| key | type | default | what it does |", "|---|---|---|---|"]
    for prefix, settings in (("", STACK_SETTINGS), ("vms.NAME.", MEMBER_SETTINGS)):
        for setting in settings:
            default = "" if setting.default in (None, {}, []) else f"`{setting.default}`"
            rows.append(f"| `{prefix}{setting.key}` | {setting.kind.value} | {default} | "
                        f"{setting.help} |")
    rows.append("| `vms.NAME.<any cove.toml key>` | | | The VM's own keys, inline or over its "
                "`spec` file (`cove schema` lists them). |")
    return "\n".join(rows) + "\n"
