from __future__ import annotations

from pathlib import Path

import pytest

from cove.errors import CoveError
from cove.spec import load_spec
from cove.spec.model import Proto
from cove.spec.overrides import apply_overrides, parse_port

ROOT = Path(__file__).resolve().parents[2]


def test_parse_port_forms() -> None:
    assert parse_port("8080:80").host == 8080
    port = parse_port("0.0.0.0:5353:53/udp")
    assert (port.bind, port.host, port.guest, port.proto) == ("0.0.0.0", 5353, 53, Proto.UDP)


@pytest.mark.parametrize("text", ["8080", "a:b", "8080:80/sctp", "0:80", "80:99999"])
def test_bad_ports(text: str) -> None:
    with pytest.raises(CoveError, match=f"-p {text}"):
        parse_port(text)


def test_overrides_replace_same_host_port_and_merge_env() -> None:
    spec = load_spec(ROOT / "examples" / "hello")
    changed = apply_overrides(spec, ("8080:9090", "8081:8080"), ("GREETING=hi",), "hello2")
    assert [(p.host, p.guest) for p in changed.ports] == [(8080, 9090), (8081, 8080)]
    assert changed.env == {"GREETING": "hi"}
    assert changed.name == "hello2"
    with pytest.raises(CoveError, match="--name"):
        apply_overrides(spec, name="Bad Name")
    with pytest.raises(CoveError, match="-e NOPE"):
        apply_overrides(spec, env=("NOPE",))
