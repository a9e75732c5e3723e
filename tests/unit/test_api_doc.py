"""docs/api.yaml documents every route the daemon serves, and nothing it does not."""

from __future__ import annotations

from pathlib import Path

import yaml

from cove.daemon.api import routes

ROOT = Path(__file__).resolve().parents[2]


def test_every_route_is_documented() -> None:
    document = yaml.safe_load((ROOT / "docs" / "api.yaml").read_text())
    assert document["openapi"].startswith("3.")
    documented = {(method.upper(), path) for path, item in document["paths"].items()
                  for method in item if method != "parameters"}
    served = {(route.method, route.path) for route in routes}  # type: ignore[attr-defined]
    assert served == documented
