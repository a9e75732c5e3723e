"""Stacks on real guests: members start in dependency order and reach each other by name on
the stack's segment, with no root (the non-root run) and, as root, inside a network
namespace of the test's own (so nothing of the host's network is involved)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.vm.conftest import ROOT, free_port, kill_home_processes, wait_for

pytestmark = pytest.mark.vm
EXAMPLES = ROOT / "examples" / "stack"
Cove = Callable[..., subprocess.CompletedProcess[str]]
STACK = '''name = "demo"
env = {{ GREETING = "hi from the test" }}
[vms.db]
spec = "{examples}/db"
{db_extra}
[vms.web]
spec = "{examples}/web"
depends_on = {{ db = "healthy" }}
ports = [{{ host = {port}, guest = 8080 }}]
{extra}'''
BAD = '''[vms.bad]
depends_on = ["db"]
packages = ["python3"]
[vms.bad.services.bad]
command = "sleep 100000"
[vms.bad.services.bad.health]
command = "echo no such thing; false"
interval = "1s"
retries = 1
'''


class Runner:
    """cove and curl for this test: as root inside a new network namespace, else plain."""

    def __init__(self, home: Path, netns: str | None) -> None:
        self.home, self.netns = home, netns

    def prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.netns] if self.netns else []

    def cove(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        result = subprocess.run([*self.prefix(), "env", f"COVE_HOME={self.home}",
                                 sys.executable, "-m", "cove.cli.entry", *args],
                                capture_output=True, text=True, timeout=300, check=False)
        if check and result.returncode != 0:
            raise AssertionError(f"cove {' '.join(args)}:\n{result.stderr}")
        return result

    def fetch(self, port: int) -> str:
        return subprocess.run([*self.prefix(), "curl", "-s", "-m", "5",
                               f"http://127.0.0.1:{port}/"],
                              capture_output=True, text=True, check=False).stdout

    def ls(self) -> dict[str, dict[str, object]]:
        return {vm["name"]: vm for vm in json.loads(self.cove("ls", "--json").stdout)}


@pytest.fixture(scope="module")
def runner(cove_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Runner]:
    home = tmp_path_factory.mktemp("stack") / "home"
    home.mkdir(mode=0o700)
    (home / "cache").symlink_to(cove_home / "cache")
    netns = f"cove-{uuid.uuid4().hex[:8]}" if os.geteuid() == 0 else None
    if netns:
        subprocess.run(["ip", "netns", "add", netns], check=True)
        subprocess.run(["ip", "netns", "exec", netns, "ip", "link", "set", "lo", "up"],
                       check=True)
    run = Runner(home, netns)
    try:
        yield run
    finally:
        run.cove("down", "--all", "--timeout", "5", check=False)
        kill_home_processes(home)
        if netns:
            subprocess.run(["ip", "netns", "del", netns], check=False)


def write_stack(directory: Path, port: int, extra: str = "", db_extra: str = "") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cove-stack.toml").write_text(STACK.format(examples=EXAMPLES, port=port,
                                                            extra=extra, db_extra=db_extra))
    return directory


@pytest.mark.per_user
def test_members_start_in_order_and_reach_each_other_by_name(runner: Runner,
                                                            tmp_path: Path) -> None:
    port = free_port()
    # as root (in the test's own netns), db is also on a cove bridge network
    bridged = runner.netns is not None
    if bridged:
        runner.cove("network", "create", "lab", "--subnet", "10.77.0.0/24")
    stack = write_stack(tmp_path / "demo", port, db_extra='network = "lab"' if bridged else "")
    checked = runner.cove("check", str(stack))
    assert "start order db -> web" in checked.stdout
    up = runner.cove("up", str(stack), "-d")
    lines = up.stderr.splitlines()
    assert lines.index("cove: demo-db is healthy") < next(
        i for i, line in enumerate(lines) if line.startswith("cove: demo-web started"))
    assert runner.fetch(port) == "web got: db says: hi from the test\n"
    vms = runner.ls()
    assert (vms["demo-db"]["stack"], vms["demo-db"]["member"]) == ("demo", "db")
    assert runner.cove("ls").stdout.splitlines()[0].split()[0] == "STACK"
    found = runner.cove("exec", "demo/web", "--", "python3", "-c",
                        "import socket; print(socket.gethostbyname('db'), "
                        "socket.gethostbyname('demo-db'))")
    assert found.stdout.split() == ["10.89.0.10", "10.89.0.10"]
    if bridged:
        eth0 = runner.cove("exec", "demo/db", "--", "ip", "-4", "-o", "addr", "show", "eth0")
        assert " 10.77.0." in eth0.stdout, eth0.stdout
    logs = runner.cove("logs", "demo", "--no-timestamps").stdout.splitlines()
    assert any(line.startswith("db  | db | db listening") for line in logs), logs
    assert any(line.startswith("web | web | web listening") for line in logs), logs
    runner.cove("restart", "demo/db")
    wait_for(lambda: runner.fetch(port).startswith("web got: db says"), 90, "db back")
    down = runner.cove("down", "demo")
    assert down.stdout.splitlines() == ["demo-web stopped", "demo-db stopped"]
    assert runner.ls() == {}
    if bridged:
        runner.cove("network", "rm", "lab")


def test_a_failing_member_stops_the_bring_up_with_a_report(runner: Runner,
                                                          tmp_path: Path) -> None:
    stack = write_stack(tmp_path / "demo", free_port(), BAD)
    text = (stack / "cove-stack.toml").read_text()
    (stack / "cove-stack.toml").write_text(text.replace('depends_on = { db = "healthy" }',
                                                        'depends_on = { bad = "healthy" }'))
    failed = runner.cove("up", str(stack), "-d", check=False)
    assert failed.returncode == 1, failed.stderr
    assert "Traceback" not in failed.stderr
    assert "failed:      demo-bad: demo-bad is running but unhealthy" in failed.stderr
    assert "started:     demo-db" in failed.stderr
    assert "not started: demo-web" in failed.stderr
    assert runner.ls()["demo-db"]["state"] == "running"  # what started is left running
    runner.cove("down", "demo")
    aborted = runner.cove("up", str(stack), "-d", "--abort-on-failure", check=False)
    assert aborted.returncode == 1
    assert "stopped:     demo-bad, demo-db" in aborted.stderr
    assert runner.ls() == {}


def test_stack_file_errors_name_the_key_and_the_fix(runner: Runner, tmp_path: Path) -> None:
    stack = write_stack(tmp_path / "bad", 8080, '[vms.cache]\ndepends_on = ["web"]\n'
                        'ports = [{ host = 8080, guest = 6379 }]\n')
    text = (stack / "cove-stack.toml").read_text().replace(
        '[vms.db]\n', '[vms.db]\ndepends_on = ["cache"]\n')
    (stack / "cove-stack.toml").write_text(text)
    result = runner.cove("check", str(stack), check=False)
    assert result.returncode == 2
    assert "vms.cache.ports: host port 8080/tcp is also forwarded by vms.web" in result.stderr
    assert "dependency cycle: db -> cache -> web -> db" in result.stderr
    assert "Traceback" not in result.stderr
