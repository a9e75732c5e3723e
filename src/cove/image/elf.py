"""Shared-library closure of ELF files, read with pyelftools (imported on first use: the
daemon loads this module with the build code, and a reattach should not pay for it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

LIBRARY_DIRS = (
    "/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib", "/lib",
    "/usr/lib64", "/lib64",
)


def elf_needs(path: Path) -> tuple[list[str], str | None]:
    """(DT_NEEDED names, program interpreter) of an ELF file; ([], None) if not ELF."""
    from elftools.common.exceptions import ELFError
    from elftools.elf.dynamic import DynamicSection
    from elftools.elf.elffile import ELFFile
    from elftools.elf.segments import InterpSegment

    try:
        with path.open("rb") as handle:
            if handle.read(4) != b"\x7fELF":
                return [], None
            handle.seek(0)
            elf = ELFFile(handle)
            needed: list[str] = []
            interpreter = None
            for segment in elf.iter_segments():
                if isinstance(segment, InterpSegment):
                    interpreter = segment.get_interp_name()
            for section in elf.iter_sections():
                if isinstance(section, DynamicSection):
                    tags: list[Any] = list(section.iter_tags())
                    needed += [tag.needed for tag in tags if tag.entry.d_tag == "DT_NEEDED"]
            return needed, interpreter
    except (ELFError, OSError, ValueError):
        return [], None


def find_library(name: str, search: tuple[str, ...] = LIBRARY_DIRS) -> Path | None:
    for directory in search:
        candidate = Path(directory) / name
        if candidate.exists():
            return candidate
    return None


def library_closure(files: list[Path]) -> tuple[set[Path], set[str]]:
    """Libraries (as paths) every ELF in `files` needs, transitively; and names not found."""
    found: set[Path] = set()
    missing: set[str] = set()
    queue = list(files)
    seen: set[Path] = set()
    while queue:
        path = queue.pop()
        if path in seen:
            continue
        seen.add(path)
        needed, interpreter = elf_needs(path)
        if interpreter:
            found.add(Path(interpreter))
        for name in needed:
            library = find_library(name)
            if library is None:
                missing.add(name)
                continue
            found.add(library)
            queue.append(library.resolve())
    return found, missing
