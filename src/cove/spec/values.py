"""Small pure parsers for the value syntaxes of cove.toml and the CLI."""

from __future__ import annotations

import re

_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*$", re.IGNORECASE)
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)?\s*$")
_SIZE_FACTORS_MIB = {"": 1.0, "K": 1 / 1024, "M": 1.0, "G": 1024.0, "T": 1024.0 * 1024}
_DURATION_FACTORS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0}


def parse_size_mib(text: str | int) -> int:
    """'256M' -> 256, '1G' -> 1024, 512 -> 512 (a bare number is MiB)."""
    if isinstance(text, int):
        return text
    match = _SIZE.fullmatch(text)
    if not match:
        raise ValueError(f'"{text}" is not a size; write it like "256M" or "2G"')
    number, unit = match.groups()
    return int(float(number) * _SIZE_FACTORS_MIB[unit.upper()])


def parse_duration(text: str | int | float) -> float:
    """'5s' -> 5.0, '100ms' -> 0.1, '2m' -> 120.0, 3 -> 3.0."""
    if isinstance(text, int | float):
        return float(text)
    match = _DURATION.fullmatch(text)
    if not match:
        raise ValueError(f'"{text}" is not a duration; write it like "5s", "500ms" or "2m"')
    number, unit = match.groups()
    return float(number) * _DURATION_FACTORS[unit or "s"]
