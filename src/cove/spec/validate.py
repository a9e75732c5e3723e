"""Check raw TOML data against the settings table; collect every problem at once."""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.spec.settings import ENV_KEY_PATTERN, Kind, Setting
from cove.spec.values import parse_duration, parse_size_mib


@dataclass(frozen=True)
class Problem:
    where: str  # dotted key path, e.g. services.hello.restart
    message: str
    hint: str | None = None

    def render(self, file: str) -> str:
        text = f"{file}: {self.where}: {self.message}" if self.where else f"{file}: {self.message}"
        return f"{text}\n  hint: {self.hint}" if self.hint else text


def _type_name(value: object) -> str:
    names = {str: "a string", int: "an integer", float: "a number", bool: "a boolean",
             list: "an array", dict: "a table"}
    return names.get(type(value), type(value).__name__)


class Checker:
    """Walks a raw table by the settings table, returning converted values."""

    def __init__(self, base_dir: Path) -> None:
        self.base_dir = base_dir
        self.problems: list[Problem] = []

    def problem(self, where: str, message: str, hint: str | None = None) -> None:
        self.problems.append(Problem(where, message, hint))

    def table(self, raw: dict[str, Any], settings: tuple[Setting, ...], where: str
              ) -> dict[str, Any]:
        known = {s.key: s for s in settings}
        for key in raw:
            if key not in known:
                self.unknown_key(key, list(known), _join(where, key))
        out: dict[str, Any] = {}
        for setting in settings:
            path = _join(where, setting.key)
            if setting.key in raw:
                out[setting.key] = self.value(raw[setting.key], setting, path)
            elif setting.required:
                example = f" = {_example(setting)}" if setting.example else ""
                self.problem(path, "is required but missing",
                             f"add `{setting.key}{example}` ({setting.help})")
            else:
                out[setting.key] = setting.default
        return out

    def unknown_key(self, key: str, known: list[str], where: str) -> None:
        close = difflib.get_close_matches(key, known, n=1)
        hint = f'did you mean "{close[0]}"?' if close else f"known keys: {', '.join(known)}"
        self.problem(where, "unknown key", hint)

    def value(self, raw: object, setting: Setting, where: str) -> Any:
        handler: Callable[[object, Setting, str], Any] = _HANDLERS[setting.kind].__get__(self)
        return handler(raw, setting, where)

    def expect(self, raw: object, types: tuple[type, ...], setting: Setting, where: str) -> bool:
        # TOML booleans are Python ints: never accept one where a number is asked for
        ok = isinstance(raw, types) and not (isinstance(raw, bool) and bool not in types)
        if not ok:
            self.problem(where, f"must be {setting.kind.value}, not {_type_name(raw)}",
                         setting.help)
        return ok

    def no_nul(self, raw: str, where: str) -> bool:
        """No string of a spec may hold NUL: none can pass through argv, paths or /init."""
        if "\0" in raw:
            self.problem(where, "contains a NUL character", "remove the \\u0000")
            return False
        return True

    def check_str(self, raw: object, setting: Setting, where: str) -> str | None:
        if not self.expect(raw, (str,), setting, where):
            return None
        assert isinstance(raw, str)
        if not self.no_nul(raw, where):
            return None
        if setting.pattern and not re.fullmatch(setting.pattern, raw):
            self.problem(where, f'"{raw}" is not a valid {setting.key}', setting.help)
        return raw

    def check_address(self, raw: object, setting: Setting, where: str) -> str | None:
        """An IPv4 address, written plainly: it becomes part of hypervisor option strings."""
        if not self.expect(raw, (str,), setting, where):
            return None
        assert isinstance(raw, str)
        try:
            return str(ipaddress.IPv4Address(raw))
        except ValueError:
            self.problem(where, f'"{raw}" is not an IPv4 address',
                         'write it like "127.0.0.1" (loopback) or "0.0.0.0" (every address)')
            return None

    def check_bool(self, raw: object, setting: Setting, where: str) -> bool | None:
        if not self.expect(raw, (bool,), setting, where):
            return None
        return bool(raw)

    def check_int(self, raw: object, setting: Setting, where: str) -> int | None:
        if not self.expect(raw, (int,), setting, where):
            return None
        assert isinstance(raw, int)
        return self.in_range(raw, setting, where, "")

    def in_range(self, value: int, setting: Setting, where: str, unit: str) -> int | None:
        if setting.minimum is not None and value < setting.minimum:
            self.problem(where, f"{value}{unit} is below the minimum {setting.minimum}{unit}")
            return None
        if setting.maximum is not None and value > setting.maximum:
            self.problem(where, f"{value}{unit} is above the maximum {setting.maximum}{unit}")
            return None
        return value

    def check_size(self, raw: object, setting: Setting, where: str) -> int | None:
        if not self.expect(raw, (str, int), setting, where):
            return None
        try:
            mib = parse_size_mib(raw)  # type: ignore[arg-type]
        except ValueError as error:
            self.problem(where, str(error))
            return None
        return self.in_range(mib, setting, where, " MiB")

    def check_duration(self, raw: object, setting: Setting, where: str) -> float | None:
        if not self.expect(raw, (str, int, float), setting, where):
            return None
        try:
            return parse_duration(raw)  # type: ignore[arg-type]
        except ValueError as error:
            self.problem(where, str(error))
            return None

    def check_enum(self, raw: object, setting: Setting, where: str) -> str | None:
        if not self.expect(raw, (str,), setting, where):
            return None
        if raw not in setting.choices:
            close = difflib.get_close_matches(str(raw), setting.choices, n=1)
            self.problem(where, f'"{raw}" is not one of {", ".join(setting.choices)}',
                         f'did you mean "{close[0]}"?' if close else None)
            return None
        return str(raw)

    def check_path(self, raw: object, setting: Setting, where: str) -> Path | None:
        if not self.expect(raw, (str,), setting, where) or not self.no_nul(str(raw), where):
            return None
        try:
            path = (self.base_dir / str(raw)).resolve()
            exists = path.exists()
        except (OSError, RuntimeError) as error:  # a name too long, a symlink loop
            self.problem(where, f'"{raw}" cannot be looked at: {error}',
                         "paths are relative to the directory of cove.toml")
            return None
        if not exists:
            self.problem(where, f'"{raw}" does not exist (looked at {path})',
                         "paths are relative to the directory of cove.toml")
            return None
        return path

    def check_str_list(self, raw: object, setting: Setting, where: str) -> list[str]:
        if not self.expect(raw, (list,), setting, where):
            return []
        assert isinstance(raw, list)
        item = Setting(setting.key, Kind.STR, setting.help, pattern=setting.pattern)
        values = [self.check_str(v, item, f"{where}[{i}]") for i, v in enumerate(raw)]
        return [v for v in values if v is not None]

    def check_env(self, raw: object, setting: Setting, where: str) -> dict[str, str]:
        if not self.expect(raw, (dict,), setting, where):
            return {}
        assert isinstance(raw, dict)
        env: dict[str, str] = {}
        for key, value in raw.items():
            path = _join(where, key)
            if isinstance(value, str) and not self.no_nul(value, path):
                continue
            if not re.fullmatch(ENV_KEY_PATTERN, key):
                self.problem(path, f'"{key}" is not a valid environment variable name',
                             "use letters, digits and '_', not starting with a digit")
            elif isinstance(value, bool) or not isinstance(value, str | int | float):
                self.problem(path, f"must be a string, not {_type_name(value)}",
                             f'quote it: {key} = "{value}"')
            else:
                env[key] = str(value)
        return env

    def check_table(self, raw: object, setting: Setting, where: str) -> dict[str, Any]:
        if not self.expect(raw, (dict,), setting, where):
            return {}
        assert isinstance(raw, dict)
        return self.table(raw, setting.fields, where)

    def check_table_map(self, raw: object, setting: Setting, where: str) -> dict[str, Any]:
        if not self.expect(raw, (dict,), setting, where):
            return {}
        assert isinstance(raw, dict)
        out: dict[str, Any] = {}
        for name, body in raw.items():
            path = _join(where, name)
            if setting.pattern and not re.fullmatch(setting.pattern, name):
                self.problem(path, f'"{name}" is not a valid name',
                             "use lower-case letters, digits, '.', '_' and '-'")
            if not isinstance(body, dict):
                self.problem(path, f"must be a table, not {_type_name(body)}",
                             f"write it as [{path}] with keys below it")
                continue
            out[name] = self.table(body, setting.fields, path)
        return out

    def check_table_list(self, raw: object, setting: Setting, where: str) -> list[dict[str, Any]]:
        if not self.expect(raw, (list,), setting, where):
            return []
        assert isinstance(raw, list)
        out = []
        for index, body in enumerate(raw):
            path = f"{where}[{index}]"
            if not isinstance(body, dict):
                self.problem(path, f"must be a table, not {_type_name(body)}",
                             f"write each entry as [[{where}]] with keys below it")
                continue
            out.append(self.table(body, setting.fields, path))
        return out

    def check_depends(self, raw: object, setting: Setting, where: str) -> dict[str, str]:
        """`depends_on`: ["db"] (started) or {db = "healthy"}, like compose's two forms."""
        if isinstance(raw, list):
            raw = {name: setting.choices[0] for name in raw if isinstance(name, str)} \
                if all(isinstance(name, str) for name in raw) else raw
        if not self.expect(raw, (dict,), setting, where):
            return {}
        assert isinstance(raw, dict)
        out: dict[str, str] = {}
        condition = Setting(setting.key, Kind.ENUM, setting.help, choices=setting.choices)
        for name, value in raw.items():
            if (checked := self.check_enum(value, condition, _join(where, name))) is not None:
                out[name] = checked
        return out


_HANDLERS: dict[Kind, Any] = {
    Kind.STR: Checker.check_str,
    Kind.INT: Checker.check_int,
    Kind.BOOL: Checker.check_bool,
    Kind.SIZE: Checker.check_size,
    Kind.DURATION: Checker.check_duration,
    Kind.ENUM: Checker.check_enum,
    Kind.PATH: Checker.check_path,
    Kind.ADDRESS: Checker.check_address,
    Kind.STR_LIST: Checker.check_str_list,
    Kind.ENV: Checker.check_env,
    Kind.TABLE: Checker.check_table,
    Kind.TABLE_MAP: Checker.check_table_map,
    Kind.TABLE_LIST: Checker.check_table_list,
    Kind.DEPENDS: Checker.check_depends,
}


def _join(where: str, key: str) -> str:
    """A key path as TOML writes it: keys that are not bare words are quoted, so even an
    empty or odd key is named in the problem."""
    shown = key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)
    return f"{where}.{shown}" if where else shown


def _example(setting: Setting) -> str:
    return f'"{setting.example}"' if setting.kind is Kind.STR else setting.example
