"""The host's dpkg database: installed packages and their Depends closure."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from cove.errors import die
from cove.host.proc import run

DPKG_INFO = Path("/var/lib/dpkg/info")
QUERY_FORMAT = ("${Package}\t${db:Status-Status}\t${Version}\t${Architecture}\t"
                "${Depends}\t${Pre-Depends}\t${Provides}\n")


@dataclass(frozen=True)
class Package:
    name: str
    version: str
    arch: str
    depends: tuple[tuple[str, ...], ...]  # clauses of alternatives
    provides: tuple[str, ...]


def parse_relations(text: str) -> tuple[tuple[str, ...], ...]:
    """'a (>= 1) | b, c:any' -> (('a', 'b'), ('c',)); versions and arch qualifiers dropped."""
    clauses = []
    for clause in text.split(","):
        names = tuple(
            re.split(r"[\s(:\[]", alternative.strip(), maxsplit=1)[0]
            for alternative in clause.split("|") if alternative.strip()
        )
        if names:
            clauses.append(names)
    return tuple(clauses)


def parse_installed(text: str) -> dict[str, Package]:
    packages = {}
    for line in text.splitlines():
        fields = line.split("\t")
        if len(fields) != 7 or fields[1] != "installed":
            continue
        name, _, version, arch, depends, pre_depends, provides = fields
        packages[name] = Package(
            name, version, arch,
            parse_relations(", ".join(x for x in (pre_depends, depends) if x)),
            tuple(clause[0] for clause in parse_relations(provides)),
        )
    return packages


def installed_packages() -> dict[str, Package]:
    return parse_installed(run(["dpkg-query", "-W", "-f", QUERY_FORMAT], what="dpkg-query"))


def _provider(name: str, packages: dict[str, Package],
              providers: dict[str, list[str]]) -> str | None:
    if name in packages:
        return name
    candidates = providers.get(name, [])
    return sorted(candidates)[0] if candidates else None


def closure(wanted: list[str], packages: dict[str, Package]) -> list[Package]:
    """Installed packages needed by `wanted`, following Depends and Pre-Depends."""
    providers: dict[str, list[str]] = {}
    for package in packages.values():
        for virtual in package.provides:
            providers.setdefault(virtual, []).append(package.name)
    missing = [n for n in wanted if _provider(n, packages, providers) is None]
    if missing:
        die(f"not installed on this host: {', '.join(missing)} (source = \"host\" copies the "
            "files of installed Debian packages)",
            f"install them with: apt-get install {' '.join(missing)}")
    found: dict[str, Package] = {}
    queue = list(wanted)
    while queue:
        name = _provider(queue.pop(), packages, providers)
        if name is None or name in found:
            continue
        found[name] = packages[name]
        for clause in packages[name].depends:
            chosen = next((p for alt in clause
                           if (p := _provider(alt, packages, providers)) is not None), None)
            if chosen is not None:
                queue.append(chosen)
    return sorted(found.values(), key=lambda p: p.name)


def package_files(package: Package) -> list[str]:
    for candidate in (f"{package.name}:{package.arch}.list", f"{package.name}.list"):
        path = DPKG_INFO / candidate
        if path.exists():
            return [line for line in path.read_text().splitlines() if line not in ("", "/.")]
    return []
