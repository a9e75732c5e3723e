"""A guest whose root replaced cove's agent, booted for real under QEMU, next to a normal VM
on the same daemon (docs/security.md, "The guest is the attacker").

The daemon runs from a copy of cove's tree whose guest agent is tests/vm/hostile_agent.py:
in VMs named evil* it attacks on every channel it has; elsewhere it is the real agent. For
each attack: the daemon stays up, the other VM keeps answering, the daemon's memory stays
bounded, and the attack is refused or the VM marked broken, with a clear message.
"""

from __future__ import annotations

import json
import os
import pty
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cove.host.lines import MAX_LINE
from tests.vm.conftest import ROOT, cove_argv, daemon_pid, kill_home_processes, write_spec

pytestmark = [pytest.mark.vm]

DAEMON_RSS_BOUND_MIB = 100  # the daemon's RSS, whatever the guest sends (it idles at ~45)
EVIL = '''name = "evil"
memory = "256M"
packages = ["python3", "curl"]
auto_forward = true
'''
VICTIM = '''name = "victim"
memory = "256M"
packages = ["python3", "curl"]
[services.idle]
command = "sleep 100000"
'''


@pytest.fixture(scope="module")
def evil(cove_home: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """The environment of a daemon whose guests' agent is the hostile stand-in."""
    top = tmp_path_factory.mktemp("evil")
    tree = top / "src"
    shutil.copytree(ROOT / "src", tree, ignore=shutil.ignore_patterns("__pycache__"))
    guest = tree / "cove" / "guest"
    (guest / "agent.py").rename(guest / "real_agent.py")
    shutil.copy(Path(__file__).with_name("hostile_agent.py"), guest / "agent.py")
    home = top / "home"
    home.mkdir(mode=0o700)
    (home / "cache").symlink_to(cove_home / "cache")
    env = {**os.environ, "COVE_HOME": str(home), "PYTHONPATH": str(tree)}
    for name, text in (("evil", EVIL), ("victim", VICTIM)):
        spec = write_spec(top / name, text)
        run(env, "up", str(spec), "-d", "--timeout", "150")
    yield env
    run(env, "down", "--all", "--timeout", "5", check=False)
    kill_home_processes(home)


def run(env: dict[str, str], *args: str, check: bool = True, timeout: float = 180
        ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cove_argv(*args), capture_output=True, text=True, env=env,
                            timeout=timeout, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"cove {' '.join(args)} failed:\n{result.stderr}")
    return result


def vms(env: dict[str, str]) -> dict[str, dict[str, Any]]:
    return {vm["name"]: vm for vm in json.loads(run(env, "ls", "--json").stdout)}


def daemon_rss_mib(env: dict[str, str]) -> float:
    pid = daemon_pid(Path(env["COVE_HOME"]))
    assert pid is not None, "the daemon is gone"
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS")


def victim_answers(env: dict[str, str]) -> None:
    result = run(env, "exec", "victim", "--", "echo", "still-here", timeout=30)
    assert result.stdout.strip() == "still-here"


def test_the_hostile_agent_is_what_runs(evil: dict[str, str]) -> None:
    assert "hostile stand-in" in run(evil, "logs", "evil", "--console", "-n", "400").stdout
    assert vms(evil)["victim"]["state"] == "running"


def test_lies_about_other_vms_and_ports_are_not_taken(evil: dict[str, str]) -> None:
    run(evil, "exec", "evil", "--", "lies")
    time.sleep(2)  # 10,000 events: let the daemon take them all
    victim = vms(evil)["victim"]
    assert "hijack" not in victim["services"]
    events = [json.loads(line) for line in
              run(evil, "events", "-n", "100000").stdout.splitlines()]
    assert not [e for e in events if e.get("svc") == "hijack" and e.get("vm") == "victim"]
    forwards = json.loads(subprocess.run(
        [sys.executable, "-c", "import json, cove.client.http as h; print(json.dumps("
         "h.Client().forwards('evil')))"], env=evil, capture_output=True, text=True,
        check=True).stdout)
    ports = {f["host"] for f in forwards}
    assert 22 not in ports and len(ports) <= 64, ports
    assert any(e.get("kind") == "forward-refused" and e.get("port") == 22 for e in events), (
        len(events), [e for e in events if e.get("port") == 22 or e.get("svc") == "hijack"],
        events[:3])
    assert daemon_rss_mib(evil) < DAEMON_RSS_BOUND_MIB
    victim_answers(evil)


@pytest.mark.parametrize(("case", "why"), [
    ("dotdot", "outside the destination"),
    ("absolute", "outside the destination"),
    ("through-link", "points outside"),
    ("hardlink", "hard link"),
    ("device", "device or FIFO"),
    ("wrongtop", "not under"),
    ("bomb", "more than the destination can take"),
])
def test_a_hostile_tar_lands_nothing_outside(evil: dict[str, str], tmp_path: Path,
                                             case: str, why: str) -> None:
    dest = tmp_path / "dest"
    dest.mkdir()
    result = run(evil, "cp", f"evil:/{case}", str(dest), check=False)
    assert result.returncode != 0
    assert why in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["dest"]
    assert not any(dest.iterdir())
    assert not Path("/tmp/cove-escaped").exists()


def test_a_long_line_and_escapes_reach_a_terminal_escaped(evil: dict[str, str]) -> None:
    run(evil, "exec", "evil", "--", "line")
    time.sleep(1)
    primary, secondary = pty.openpty()
    process = subprocess.Popen(cove_argv("logs", "evil", "-n", "100"), env=evil,
                               stdout=secondary, stderr=subprocess.DEVNULL)
    os.close(secondary)
    shown = bytearray()
    while True:
        try:
            chunk = os.read(primary, 1 << 16)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    process.wait(timeout=30)
    os.close(primary)
    assert b"\x1b" not in shown and b"\x07" not in shown
    assert b"\\x1b]0;pwned\\x07" in shown
    piped = run(evil, "logs", "evil", "-n", "100", "--no-timestamps").stdout
    lines = [line for line in piped.splitlines() if line.startswith("evil | ")]
    assert lines and max(len(line) for line in lines) <= MAX_LINE + len("evil | ")


def test_a_flood_leaves_the_daemon_flat_and_the_other_vm_answering(evil: dict[str, str]
                                                                   ) -> None:
    before = daemon_rss_mib(evil)
    # a follower that stops reading: its pipe fills, and the daemon must not queue for it
    stalled = subprocess.Popen(cove_argv("logs", "evil", "-f", "-n", "0"), env=evil,
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        run(evil, "exec", "evil", "--", "flood")
        peak = before
        deadline = time.monotonic() + 25
        while time.monotonic() < deadline:
            victim_answers(evil)
            run(evil, "ls")
            peak = max(peak, daemon_rss_mib(evil))
    finally:
        stalled.kill()
        stalled.wait()
    print(f"daemon RSS during the flood: {before:.0f} -> peak {peak:.0f} MiB")
    assert peak < DAEMON_RSS_BOUND_MIB, f"daemon RSS {before:.0f} -> {peak:.0f} MiB"


def test_an_oversized_frame_marks_the_vm_broken(evil: dict[str, str]) -> None:
    result = run(evil, "exec", "evil", "--", "oversized", check=False)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    deadline = time.monotonic() + 10
    while vms(evil)["evil"]["state"] != "broken" and time.monotonic() < deadline:
        time.sleep(0.2)
    evil_vm = vms(evil)["evil"]
    assert evil_vm["state"] == "broken" and "exceeds the limit" in evil_vm["error"]
    assert "evil: the guest broke the agent protocol" in run(evil, "ls").stdout
    assert "broke the agent protocol" in run(evil, "logs", "evil", "-n", "5").stdout
    started = time.monotonic()
    refused = run(evil, "exec", "evil", "--", "true", check=False)
    assert refused.returncode != 0 and "broken" in refused.stderr
    assert time.monotonic() - started < 20  # an answer, not a hang
    victim_answers(evil)
