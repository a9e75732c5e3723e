"""A guest built by mmdebstrap from Debian's archive boots and runs its service.

Needs the Debian mirror: skip it offline with `-m "not network"`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.conftest import cove, write_spec

pytestmark = [pytest.mark.vm, pytest.mark.network]
SPEC = '''name = "redis"
source = "debian"
suite = "bookworm"
packages = ["redis-server"]
network = "none"
[services.redis]
command = "redis-server --port 6379 --save '' --protected-mode no"
[services.redis.health]
command = "redis-cli ping | grep -q PONG"
start_period = "30s"
'''


@pytest.mark.per_user
def test_debian_guest_runs_its_service(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "redis", SPEC)
    cove("up", str(spec), "-d")
    try:
        assert cove("exec", "redis", "--", "sh", "-c",
                    "redis-cli set cove works >/dev/null; redis-cli get cove").stdout == "works\n"
        assert cove("exec", "redis", "--", "cat", "/etc/debian_version").stdout.startswith("12.")
    finally:
        cove("down", "redis")


def test_unknown_debian_package_is_named(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "typo", SPEC.replace('"redis-server"', '"redis-sever"'))
    result = cove("build", str(spec), check=False)
    assert result.returncode == 1
    assert "Debian bookworm has no package redis-sever" in result.stderr
    assert "Traceback" not in result.stderr
