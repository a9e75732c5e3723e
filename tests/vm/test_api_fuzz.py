"""Every daemon route, driven by requests generated from docs/api.yaml and by garbage: every
answer is 2xx or 4xx with a JSON error, and the daemon and its VM survive it all."""

from __future__ import annotations

import json
import os
import string
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cove.client.http import UnixHTTPConnection
from tests.vm.conftest import cove, daemon_pid, write_spec

pytestmark = pytest.mark.vm
ROOT = Path(__file__).resolve().parents[2]
API = yaml.safe_load((ROOT / "docs" / "api.yaml").read_text())
VM = "fuzzed"
SPEC = f'''name = "{VM}"
packages = ["python3", "curl"]
network = "none"
[services.idle]
command = "sleep 100000"
'''
CASES = int(os.environ.get("COVE_PROPERTY_CASES", "400"))
# stopping or restarting the one VM would end the test's point; those routes get other names
DESTRUCTIVE = {"/v1/vms/{name}/down", "/v1/vms/{name}/restart", "/v1/vms/{name}/pause",
               "/v1/vms/{name}/suspend", "/v1/vms/{name}/clone"}


def resolve(schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        node: Any = API
        for part in schema["$ref"].lstrip("#/").split("/"):
            node = node[part]
        schema = node
    return schema


def from_schema(schema: dict[str, Any], depth: int = 0) -> st.SearchStrategy[Any]:
    """Values that fit a (small) OpenAPI schema."""
    schema = resolve(schema)
    if "enum" in schema:
        return st.sampled_from(schema["enum"])
    kind = schema.get("type")
    if kind == "object" and depth < 3:
        props = {k: from_schema(v, depth + 1) for k, v in schema.get("properties", {}).items()}
        required = set(schema.get("required", []))
        return st.fixed_dictionaries({k: v for k, v in props.items() if k in required},
                                     optional={k: v for k, v in props.items()
                                               if k not in required})
    if kind == "array":
        return st.lists(from_schema(schema.get("items", {}), depth + 1), max_size=3)
    if kind == "integer":
        return st.integers(-5, 70000)
    if kind == "number":
        return st.floats(-10, 1e6, allow_nan=False)
    if kind == "boolean":
        return st.booleans()
    if kind == "string":
        return st.text(max_size=20) | st.sampled_from(["9090:8080", "1:1", "127.0.0.1:70000:1"])
    return JSON


JSON = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=10),
                    lambda inner: st.lists(inner, max_size=3)
                    | st.dictionaries(st.text(max_size=6), inner, max_size=3), max_leaves=8)
NAMES = st.sampled_from([VM, "nope", "..", "../../etc", "a" * 300, "UPPER", "x\n", "%2e%2e"]) \
    | st.text(string.ascii_lowercase + "._-/%", min_size=1, max_size=12)
OPERATIONS = [(path, method, item[method]) for path, item in API["paths"].items()
              for method in item if method != "parameters"]


def parameters(path: str) -> list[dict[str, Any]]:
    item = API["paths"][path]
    found = [resolve(p) for p in item.get("parameters", [])]
    for method in item:
        if method != "parameters":
            found += [resolve(p) for p in item[method].get("parameters", [])]
    return found


@st.composite
def requests(draw: st.DrawFn, record: dict[str, Any]) -> tuple[str, str, bytes | None]:
    path, method, operation = draw(st.sampled_from(OPERATIONS))
    url = path
    for param in parameters(path):
        if param["in"] == "path":
            value = draw(NAMES if param["name"] == "name" else
                         st.integers(-1, 70000).map(str) | st.text(max_size=6))
            if path in DESTRUCTIVE and value == VM:
                value = "other"
            url = url.replace("{" + param["name"] + "}", quote(str(value), safe=""))
    query = {}
    for param in parameters(path):
        if param["in"] == "query" and draw(st.booleans()):
            value = draw(from_schema(param["schema"]) | st.text(max_size=6))
            if param["name"] == "follow" and str(value) in ("1", "true"):
                value = "maybe"  # a followed stream never ends by itself
            query[param["name"]] = value
    if draw(st.integers(0, 9)) == 0:
        query[draw(st.text(string.ascii_lowercase, min_size=1, max_size=5))] = "x"
    if query:
        url += "?" + urlencode(query)
    body: bytes | None = None
    schema = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    choice = draw(st.integers(0, 5))
    if schema and choice < 3:
        body = json.dumps(draw(from_schema(schema["schema"]))).encode()
    elif choice == 3 and path == "/v1/vms":
        body = json.dumps({"record": draw(mutated(record))}).encode()
    elif choice == 4:
        body = draw(st.binary(max_size=40))
    elif choice == 5:
        body = json.dumps(draw(JSON)).encode()
    return method.upper(), url, body


@st.composite
def mutated(draw: st.DrawFn, record: dict[str, Any]) -> dict[str, Any]:
    """The running VM's own record with one value changed: past the parser, into checks."""
    copy: dict[str, Any] = json.loads(json.dumps(record))
    section = draw(st.sampled_from(["plan", "artifacts", "restart"]))
    keys = sorted(copy[section])
    key = draw(st.sampled_from(keys))
    copy[section][key] = draw(JSON | st.sampled_from(["/etc/passwd", -1, 10**9, "qemu"]))
    return copy


@pytest.fixture(scope="module")
def fuzzed(home: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    spec = write_spec(tmp_path_factory.mktemp("fuzz") / VM, SPEC)
    cove("up", str(spec), "-d")
    record = json.loads((home / "vms" / VM / "vm.json").read_text())
    assert isinstance(record, dict)
    return record


def send(home: Path, method: str, url: str, body: bytes | None) -> tuple[int, bytes]:
    connection = UnixHTTPConnection(home / "coved.sock", timeout=30)
    try:
        connection.request(method, url, body=body,
                           headers={"Content-Type": "application/json"} if body else {})
        response = connection.getresponse()
        return response.status, response.read()
    finally:
        connection.close()


def test_every_route_answers_garbage_with_a_json_4xx(home: Path,
                                                     fuzzed: dict[str, Any]) -> None:
    daemon = daemon_pid(home)
    seen: dict[int, int] = {}

    @settings(max_examples=CASES, deadline=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    @given(request=requests(fuzzed))
    def answer(request: tuple[str, str, bytes | None]) -> None:
        method, url, body = request
        status, payload = send(home, method, url, body)
        seen[status] = seen.get(status, 0) + 1
        assert status < 500, (method, url, body, payload)
        if status >= 400:
            error = json.loads(payload)
            assert isinstance(error, dict) and error.get("error"), (method, url, payload)

    answer()
    print(f"statuses over {CASES} requests: {dict(sorted(seen.items()))}")
    assert daemon_pid(home) == daemon, "the daemon did not survive"
    assert cove("exec", VM, "--", "true").returncode == 0, "the VM did not survive"
    assert seen.keys() & {200, 201} and seen.keys() & {400, 404}
