"""The upstream API specs vendored in tests/data/schemas, as strict JSON-schema validators.

Strict: an object with declared properties accepts no others, so a body with a misspelt
or invented field fails, as the real hypervisor would refuse it.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

SCHEMAS = Path(__file__).resolve().parents[1] / "data" / "schemas"
FIRECRACKER = SCHEMAS / "firecracker-v1.16.1.yaml"
CLOUD_HYPERVISOR = SCHEMAS / "cloud-hypervisor-v53.0.yaml"


class Yaml12Loader(yaml.SafeLoader):
    """YAML 1.2 booleans: only true/false (PyYAML's 1.1 reads Firecracker's `Off` as False)."""


Yaml12Loader.yaml_implicit_resolvers = {
    key: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for key, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|false)$"), list("tf"))


def load(path: Path) -> dict[str, Any]:
    if not path.exists():  # never a skip: the upstream specs are part of the checkout
        pytest.fail(f"{path} is missing: the upstream-spec tests cannot run without it")
    document: dict[str, Any] = yaml.load(path.read_text(), Loader=Yaml12Loader)
    return document


def strict(schema: Any) -> Any:
    if isinstance(schema, dict):
        out = {key: strict(value) for key, value in schema.items()}
        if "properties" in out and "additionalProperties" not in out:
            out["additionalProperties"] = False
        if out.get("nullable") and "type" in out:  # OpenAPI 3.0 nullable
            out["type"] = [out["type"], "null"]
        return out
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    return schema


def firecracker_validator(definition: str) -> jsonschema.Draft4Validator:
    document = load(FIRECRACKER)
    return jsonschema.Draft4Validator({"$ref": f"#/definitions/{definition}",
                                       "definitions": strict(document["definitions"])})


def cloud_hypervisor_validator(name: str) -> jsonschema.Draft4Validator:
    document = load(CLOUD_HYPERVISOR)
    return jsonschema.Draft4Validator({
        "$ref": f"#/components/schemas/{name}",
        "components": {"schemas": strict(document["components"]["schemas"])}})


def problems(validator: jsonschema.Draft4Validator, body: Any) -> list[str]:
    return [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}"
            for e in validator.iter_errors(body)]
