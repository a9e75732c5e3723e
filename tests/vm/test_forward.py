"""Port forwards: added and removed at run time, through the agent tunnel with guest
networking off, and picked up automatically (auto_forward)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vm.conftest import HELLO, cove, fetch, free_port, wait_for, write_spec

pytestmark = pytest.mark.vm
PAGE = "<h1>Hello from cove!</h1>\n"


def test_runtime_forward_added_and_removed(home: Path) -> None:
    static, extra, tunnel = free_port(), free_port(), free_port()
    cove("up", str(HELLO), "--name", "fwd", "-d", "-p", f"{static}:8080")
    try:
        assert fetch(extra) is None
        assert "via user-net" in cove("forward", "fwd", "-p", f"{extra}:8080").stdout
        assert "via agent" in cove("forward", "fwd", "-p", f"{tunnel}:8080", "--tunnel").stdout
        assert fetch(extra) == PAGE
        assert fetch(tunnel) == PAGE
        listing = cove("forward", "fwd", "--list").stdout
        assert f"127.0.0.1:{extra}->8080/tcp  via user-net" in listing
        taken = cove("forward", "fwd", "-p", f"{static}:8080", check=False)
        assert taken.returncode == 1 and "already forwarded" in taken.stderr
        cove("forward", "fwd", "--remove", str(extra), "--remove", str(tunnel))
        assert fetch(extra) is None
        assert fetch(tunnel) is None
        assert fetch(static) == PAGE
        missing = cove("forward", "fwd", "--remove", str(extra), check=False)
        assert missing.returncode == 1 and "is not forwarded" in missing.stderr
    finally:
        cove("down", "fwd")


@pytest.mark.per_user
def test_tunnel_without_guest_network_and_auto_forward(home: Path, tmp_path: Path) -> None:
    static, later = free_port(), free_port()
    spec = write_spec(tmp_path / "nonet", f'''name = "nonet"
packages = ["python3", "curl"]
network = "none"
auto_forward = true
[services.web]
pre_start = "mkdir -p /tmp/www && echo static > /tmp/www/index.html"
command = "python3 -m http.server 8080 --directory /tmp/www"
[services.web.health]
command = "curl -sf http://127.0.0.1:8080/"
start_period = "30s"
[[ports]]
host = {static}
guest = 8080
''')
    cove("up", str(spec), "-d")
    try:
        assert cove("exec", "nonet", "--", "sh", "-c", "ls /sys/class/net").stdout == "lo\n"
        assert fetch(static) == "static\n"  # through the agent: the guest has no network
        cove("exec", "nonet", "--", "sh", "-c",
             f"mkdir -p /tmp/late && echo late > /tmp/late/index.html && "
             f"(python3 -m http.server {later} --directory /tmp/late >/dev/null 2>&1 &)")
        wait_for(lambda: fetch(later) == "late\n", 30, "the auto-forwarded port")
        assert f"127.0.0.1:{later}->{later}/tcp  via agent  (auto)" in \
            cove("forward", "nonet", "--list").stdout
    finally:
        cove("down", "nonet")
