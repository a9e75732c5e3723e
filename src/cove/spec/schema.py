"""JSON schema of cove.toml, generated from the settings table."""

from __future__ import annotations

from typing import Any

from cove.spec.settings import ENV_KEY_PATTERN, TOP_SETTINGS, Kind, Setting


def setting_schema(setting: Setting) -> dict[str, Any]:
    schema: dict[str, Any] = {"description": setting.help}
    match setting.kind:
        case Kind.STR | Kind.PATH:
            schema["type"] = "string"
            if setting.pattern:
                schema["pattern"] = setting.pattern
        case Kind.ADDRESS:
            schema["type"] = "string"
            schema["format"] = "ipv4"
        case Kind.BOOL:
            schema["type"] = "boolean"
        case Kind.INT:
            schema["type"] = "integer"
            if setting.minimum is not None:
                schema["minimum"] = setting.minimum
            if setting.maximum is not None:
                schema["maximum"] = setting.maximum
        case Kind.SIZE:
            schema["type"] = ["string", "integer"]
            schema["pattern"] = r"^\s*\d+(\.\d+)?\s*[KMGTkmgt]?(i?B)?\s*$"
        case Kind.DURATION:
            schema["type"] = ["string", "number"]
            schema["pattern"] = r"^\s*\d+(\.\d+)?\s*(ms|s|m|h)?\s*$"
        case Kind.ENUM:
            schema["enum"] = list(setting.choices)
        case Kind.STR_LIST:
            schema["type"] = "array"
            schema["items"] = {"type": "string", **_pattern(setting)}
        case Kind.ENV:
            schema["type"] = "object"
            schema["propertyNames"] = {"pattern": ENV_KEY_PATTERN}
            schema["additionalProperties"] = {"type": ["string", "integer", "number"]}
        case Kind.TABLE:
            schema.update(table_schema(setting.fields))
        case Kind.TABLE_MAP:
            schema["type"] = "object"
            schema["propertyNames"] = _pattern(setting)
            schema["additionalProperties"] = table_schema(setting.fields)
        case Kind.TABLE_LIST:
            schema["type"] = "array"
            schema["items"] = table_schema(setting.fields)
        case Kind.DEPENDS:
            schema["anyOf"] = [{"type": "array", "items": {"type": "string"}},
                               {"type": "object",
                                "additionalProperties": {"enum": list(setting.choices)}}]
    if setting.default not in (None, {}, []):
        schema["default"] = setting.default
    return schema


def _pattern(setting: Setting) -> dict[str, str]:
    return {"pattern": setting.pattern} if setting.pattern else {}


def table_schema(settings: tuple[Setting, ...]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {s.key: setting_schema(s) for s in settings},
        "required": [s.key for s in settings if s.required],
        "additionalProperties": False,
    }


def spec_schema() -> dict[str, Any]:
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "https://cove.invalid/schema/cove.toml.json",
        "title": "cove.toml",
        **table_schema(TOP_SETTINGS),
    }
