"""cove networks, inside a network namespace this test makes (the machine's own interfaces
are never touched): two VMs on one network reach each other by name."""

from __future__ import annotations

import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import kill_home_processes, write_spec

pytestmark = [pytest.mark.vm, pytest.mark.needs_root]  # bridges and taps need root
DB = '''name = "db"
packages = ["python3", "curl"]
network = "lab"
[services.db]
pre_start = "mkdir -p /tmp/www && echo db-says-hi > /tmp/www/index.html"
command = "python3 -m http.server 8080 --directory /tmp/www"
[services.db.health]
command = "curl -sf http://127.0.0.1:8080/"
start_period = "30s"
'''


@pytest.fixture
def netns(cove_home: Path, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    name = f"cove-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    subprocess.run(["ip", "netns", "exec", name, "ip", "link", "set", "lo", "up"], check=True)
    home = tmp_path / "home"
    home.mkdir()
    (home / "cache").symlink_to(cove_home / "cache")
    try:
        yield name, home
    finally:
        in_netns((name, home), "down", "--all", check=False)
        kill_home_processes(home)
        subprocess.run(["ip", "netns", "del", name], check=False)


def in_netns(ns: tuple[str, Path], *args: str, check: bool = True
             ) -> subprocess.CompletedProcess[str]:
    name, home = ns
    result = subprocess.run(["ip", "netns", "exec", name, "env", f"COVE_HOME={home}",
                             sys.executable, "-m", "cove.cli.main", *args],
                            capture_output=True, text=True, timeout=180, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"cove {' '.join(args)}: {result.stderr}")
    return result


def test_vms_on_a_network_reach_each_other_by_name(netns: tuple[str, Path],
                                                   tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "db", DB)
    assert ip_forward(netns) == "0"  # a new namespace does not route
    in_netns(netns, "network", "create", "lab", "--subnet", "10.77.0.0/24")
    assert ip_forward(netns) == "1"
    in_netns(netns, "up", str(spec), "-d")
    in_netns(netns, "up", str(spec), "--name", "web", "-d")
    from cove.net.networks import hosts_file

    hosts = dict(line.split("\t")[::-1] for line in
                 hosts_file(netns[1] / "networks" / "lab").read_text().splitlines())
    assert hosts["db"].startswith("10.77.0.") and hosts["db"] != hosts["web"]
    result = in_netns(netns, "exec", "web", "--", "sh", "-c",
                      f"curl -sS -m 10 http://db:8080/; curl -sS -m 10 http://{hosts['db']}:8080/;"
                      " ip -4 -o addr show eth0")
    lines = result.stdout.splitlines()
    assert lines[:2] == ["db-says-hi", "db-says-hi"], result.stderr
    assert f"inet {hosts['web']}/24" in lines[2]
    assert "VMs: db, web" in in_netns(netns, "network", "ls").stdout
    busy = in_netns(netns, "network", "rm", "lab", check=False)
    assert busy.returncode == 1 and "still has VMs: db, web" in busy.stderr
    in_netns(netns, "down", "--all")
    in_netns(netns, "network", "rm", "lab")
    links = subprocess.run(["ip", "netns", "exec", netns[0], "ip", "-o", "link"],
                           capture_output=True, text=True, check=True).stdout
    assert "cb-lab" not in links and " ct" not in links  # bridge and taps are gone
    assert ip_forward(netns) == "0"  # the last network gone: the host routes as before


def ip_forward(ns: tuple[str, Path]) -> str:
    """ip_forward is per network namespace: this reads the test namespace's own."""
    return subprocess.run(["ip", "netns", "exec", ns[0], "cat", "/proc/sys/net/ipv4/ip_forward"],
                          capture_output=True, text=True, check=True).stdout.strip()


def test_bad_network_requests(netns: tuple[str, Path], tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "db", DB)
    result = in_netns(netns, "up", str(spec), "-d", check=False)
    assert result.returncode == 1 and "no network named 'lab'" in result.stderr
    assert "cove network create lab" in result.stderr
    bad = in_netns(netns, "network", "create", "lab", "--subnet", "10.77.0.1/24", check=False)
    assert bad.returncode == 1 and "has host bits set" in bad.stderr
