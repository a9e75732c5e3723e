"""Background VMs through the daemon: up -d, ls, logs -f, exec, health, restarts, reattach."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.vm.conftest import (
    HELLO,
    cove,
    cove_argv,
    daemon_pid,
    fetch,
    free_port,
    ls,
    qemu_pids_for,
    wait_for,
    write_spec,
)

pytestmark = [pytest.mark.vm, pytest.mark.per_user]


@pytest.fixture(scope="module")
def two_vms(home: Path) -> tuple[int, int]:
    first, second = free_port(), free_port()
    cove("up", str(HELLO), "-d", "-p", f"{first}:8080")
    cove("up", str(HELLO), "--name", "hello2", "-d", "-p", f"{second}:8080", "-e", "GREETING=hi")
    return first, second


def test_two_vms_up_healthy_and_answering(home: Path, two_vms: tuple[int, int]) -> None:
    first, second = two_vms
    assert fetch(first) == "<h1>Hello from cove!</h1>\n"
    assert fetch(second) == "<h1>Hello from cove!</h1>\n"
    vms = ls(home)
    assert set(vms) == {"hello", "hello2"}
    for name, port in (("hello", first), ("hello2", second)):
        assert vms[name]["state"] == "running"
        assert vms[name]["health"] == "healthy"
        assert vms[name]["ports"] == [f"127.0.0.1:{port}->8080/tcp"]
        assert vms[name]["rss_bytes"] > 50 * 2**20
    table = cove("ls").stdout.splitlines()
    assert table[0].split() == ["NAME", "STATE", "HEALTH", "PORTS", "UPTIME", "CPU", "MEM"]


def test_vms_share_the_daemons_session_in_groups_of_their_own(
        home: Path, two_vms: tuple[int, int]) -> None:
    """One session, so autogroup scheduling weighs all VMs together as one against the
    host's other sessions; a group each, so no terminal's Ctrl-C reaches them."""
    daemon = daemon_pid(home)
    assert daemon is not None
    pids = [vm["pid"] for vm in ls(home).values()]
    assert len(pids) == 2
    for pid in pids:
        assert os.getsid(pid) == os.getsid(daemon) == daemon
        assert os.getpgid(pid) == pid
    assert os.getsid(daemon) != os.getsid(0)


def test_same_name_twice_is_refused(home: Path, two_vms: tuple[int, int]) -> None:
    result = cove("up", str(HELLO), "-d", "-p", f"{free_port()}:8080", check=False)
    assert result.returncode == 1
    assert "a VM named 'hello' already exists" in result.stderr


def test_port_in_use_is_refused_before_boot(home: Path, two_vms: tuple[int, int]) -> None:
    result = cove("up", str(HELLO), "--name", "clash", "-d", "-p", f"{two_vms[0]}:8080",
                  check=False)
    assert result.returncode == 1
    assert f"host port 127.0.0.1:{two_vms[0]}/tcp is already in use" in result.stderr
    assert "clash" not in ls(home)


def test_logs_follow_sees_new_lines(home: Path, two_vms: tuple[int, int]) -> None:
    follower = subprocess.Popen(cove_argv("logs", "hello", "-f", "-n", "0"),
                                stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(1.0)
        assert fetch(two_vms[0]) is not None
        assert follower.stdout is not None
        line = follower.stdout.readline()
        assert "hello | " in line and '"GET / HTTP/1.1" 200' in line
        assert line[:4].isdigit()  # a timestamp leads
    finally:
        follower.kill()
        follower.wait()


def test_exec_codes_stdin_env_user_cwd(home: Path, two_vms: tuple[int, int]) -> None:
    assert cove("exec", "hello", "--", "sh", "-c", "exit 5", check=False).returncode == 5
    assert cove("exec", "-i", "hello", "--", "cat", input="piped\ndata").stdout == "piped\ndata"
    assert cove("exec", "hello2", "--", "sh", "-c", "echo $GREETING").stdout == "hi\n"
    assert cove("exec", "-u", "nobody", "-w", "/tmp", "hello", "--", "sh", "-c",
                "id -u; pwd").stdout == "65534\n/tmp\n"
    assert "bookworm" in cove("exec", "hello", "--", "cat", "/etc/os-release").stdout
    missing = cove("exec", "hello", "--", "no-such-command", check=False)
    assert missing.returncode == 127
    assert "no-such-command" in missing.stderr
    assert "no VM named 'nope'" in cove("exec", "nope", "--", "true", check=False).stderr


def test_exec_tty(home: Path, two_vms: tuple[int, int]) -> None:
    result = cove("exec", "-t", "hello", "--", "sh", "-c", "tty; stty size",
                  stdin=subprocess.DEVNULL)
    lines = result.stdout.replace("\r", "").split("\n")
    assert lines[0].startswith("/dev/pts/")
    assert lines[1] == "24 80"


def test_unhealthy_service_is_reported(home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "sick", (
        'name = "sick"\npackages = ["python3", "curl"]\n'
        '[services.db]\ncommand = "sleep 1000"\n'
        '[services.db.health]\ncommand = "echo db is not ready; exit 1"\n'
        'interval = "1s"\nretries = 2\n'))
    result = cove("up", str(spec), "-d", check=False)
    try:
        assert result.returncode == 1
        assert "sick is running but unhealthy" in result.stderr
        assert "service db is unhealthy; its health check said:" in result.stderr
        assert "db is not ready" in result.stderr
        kinds = [json.loads(line)["kind"] for line in
                 cove("events", "--vm", "sick").stdout.splitlines()]
        assert "unhealthy" in kinds
    finally:
        cove("down", "sick", check=False)


def test_qemu_killed_vm_restarts_per_policy(home: Path, two_vms: tuple[int, int]) -> None:
    pid = ls(home)["hello2"]["pid"]
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: ls(home)["hello2"]["state"] != "running" or ls(home)["hello2"]["pid"] != pid,
             20, "the VM to notice")
    # an exec while it restarts waits for it (it answered `internal error:
    # WSServerHandshakeError: 400`), then runs; and `ls` never shows a negative CPU %
    result = cove("exec", "hello2", "--", "echo", "after the restart")
    assert result.stdout == "after the restart\n" and "internal error" not in result.stderr
    assert all((vm["cpu_percent"] or 0) >= 0 for vm in ls(home).values())

    def restarted() -> bool:
        vm = ls(home)["hello2"]
        return bool(vm["state"] == "running" and vm["pid"] != pid and vm["health"] == "healthy")

    wait_for(restarted, 90, "hello2 to come back")
    events = [json.loads(line) for line in cove("events", "--vm", "hello2").stdout.splitlines()]
    kinds = [e["kind"] for e in events]
    assert {"exited", "restarting", "restarted"} <= set(kinds)
    assert ls(home)["hello2"]["restarts"] == 1
    assert fetch(two_vms[1]) is not None


def test_daemon_killed_vms_keep_serving_and_reattach(home: Path,
                                                     two_vms: tuple[int, int]) -> None:
    daemon = daemon_pid(home)
    assert daemon is not None
    os.kill(daemon, signal.SIGKILL)
    wait_for(lambda: daemon_pid(home) is None, 10, "the daemon to die")
    assert fetch(two_vms[0]) == "<h1>Hello from cove!</h1>\n"  # served while no daemon runs
    vms = ls(home)  # starts a new daemon, which adopts the VMs
    assert daemon_pid(home) not in (None, daemon)
    assert vms["hello"]["state"] == "running"
    assert vms["hello"]["health"] == "healthy"
    # the request served while no daemon ran reached the logs through the agent's buffer
    wait_for(lambda: len([line for line in cove("logs", "hello").stdout.splitlines()
                          if "GET /" in line]) >= 2, 10, "buffered log lines")
    assert cove("exec", "hello", "--", "true").returncode == 0


@pytest.mark.needs_root  # switches to another user
def test_other_users_are_refused(home: Path, two_vms: tuple[int, int]) -> None:
    socket_path = home / "coved.sock"
    assert socket_path.stat().st_mode & 0o777 == 0o600
    probe = ("import socket, sys\n"
             "s = socket.socket(socket.AF_UNIX)\n"
             "try:\n    s.connect(sys.argv[1])\nexcept PermissionError:\n"
             "    print('EACCES'); sys.exit()\n"
             "s.sendall(b'GET /v1/vms HTTP/1.0\\r\\n\\r\\n')\n"
             "print(s.recv(200).decode().split()[1])\n")
    nobody = ["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", probe, str(socket_path)]
    assert subprocess.run(nobody, capture_output=True, text=True,
                          check=True).stdout.strip() == "EACCES"
    socket_path.chmod(0o666)  # past the file mode, SO_PEERCRED still refuses
    try:
        assert subprocess.run(nobody, capture_output=True, text=True,
                              check=True).stdout.strip() == "403"
    finally:
        socket_path.chmod(0o600)
    assert "refused GET /v1/vms from pid" in (home / "coved.log").read_text()
    # nor can they see anything of the VMs: records, logs, events, consoles, sockets
    paths = [home / "vms", home / "vms" / "hello" / "logs" / "services.log", home / "coved.log",
             home / "events.jsonl", home / "vms" / "hello" / "console.log",
             home / "vms" / "hello" / "vm.json", home / "vms" / "hello" / "run" / "agent.token"]
    looker = ("import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'rb').read(1)"
              "\n        print('READ', p)\n    except IsADirectoryError:\n        import os; "
              "os.listdir(p); print('LISTED', p)\n    except PermissionError:\n        pass\n")
    seen = subprocess.run(["runuser", "-u", "nobody", "--", "/usr/bin/python3", "-c", looker,
                           *map(str, paths)], capture_output=True, text=True, check=False)
    assert seen.stdout == "" and seen.returncode == 0, seen.stdout + seen.stderr
    for path in paths[1:]:
        assert path.stat().st_mode & 0o077 == 0, path  # 0600 state


def test_down_leaves_nothing_behind(home: Path, two_vms: tuple[int, int]) -> None:
    cove("down", "hello", "hello2")
    assert ls(home) == {}
    assert qemu_pids_for(home) == []
    for name in ("hello", "hello2"):
        assert not (home / "vms" / name / "run").exists()
        assert not (home / "vms" / name / "vm.json").exists()
    assert "GET /" in cove("logs", "hello").stdout  # logs outlive the VM


def test_console_gives_a_shell(home: Path, tmp_path: Path) -> None:
    import asyncio

    import aiohttp

    cove("up", str(HELLO), "--name", "shell", "-d", "-p", f"{free_port()}:8080")

    async def talk() -> bytes:
        connector = aiohttp.UnixConnector(path=str(home / "coved.sock"))
        async with aiohttp.ClientSession(connector=connector) as http, \
                http.ws_connect("http://cove/v1/vms/shell/console") as ws:
            await ws.send_bytes(b"echo cove-$((6 * 7))\n")
            seen = b""
            async with asyncio.timeout(30):
                while b"cove-42" not in seen:
                    seen += (await ws.receive_bytes())
            return seen

    try:
        assert b"cove-42" in asyncio.run(talk())
        console_log = cove("logs", "shell", "--console").stdout
        assert "cove-42" in console_log  # the console is also kept in a file
    finally:
        cove("down", "shell")
