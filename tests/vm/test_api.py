"""The Python API (`import cove`, `cove.aio`), `cove cp` and `cove mcp`, through real guests."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import cove
import cove.aio
from tests.vm.conftest import cove as cove_cli

pytestmark = pytest.mark.vm

SPEC = {"name": "sbx", "packages": ["python3", "curl"], "memory": "256M"}


@pytest.fixture(scope="module")
def vm(home: Path) -> Iterator[cove.VM]:
    with cove.sandbox(SPEC) as sandbox:
        yield sandbox


def test_exec_codes_output_stdin_env_user_cwd(vm: cove.VM) -> None:
    vm.put_file("/sandbox/main.py", b"print(6*7)")
    result = vm.exec(["python3", "/sandbox/main.py"], timeout=60)
    assert result.returncode == 0 and result.stdout == b"42\n"
    mixed = vm.exec(["sh", "-c", "echo out; echo err >&2; exit 3"])
    assert (mixed.returncode, mixed.stdout, mixed.stderr) == (3, b"out\n", b"err\n")
    with pytest.raises(cove.ExecFailed, match="exited 3"):
        vm.exec(["sh", "-c", "exit 3"], check=True)
    assert vm.exec(["cat"], stdin=b"from stdin").stdout == b"from stdin"
    who = vm.exec(["sh", "-c", 'echo "$K"; pwd; id -un'], env={"K": "V"}, cwd="/tmp",
                  user="nobody")
    assert who.stdout == b"V\n/tmp\nnobody\n"
    assert b"Debian" in vm.get_file("/etc/os-release")
    with pytest.raises(cove.CoveError, match="No such file"):
        vm.get_file("/nonexistent")


def test_timeout_kills_the_process_group(vm: cove.VM) -> None:
    script = "sleep 300 & echo $! > /tmp/bg; echo $$ > /tmp/fg; sleep 300"
    started = time.monotonic()
    with pytest.raises(cove.ExecTimeout):
        vm.exec(["sh", "-c", script], timeout=3)
    assert time.monotonic() - started < 30
    check = 'for i in $(seq 50); do kill -0 $(cat /tmp/bg) 2>/dev/null || ' \
            'kill -0 $(cat /tmp/fg) 2>/dev/null || exit 0; sleep 0.1; done; exit 1'
    assert vm.exec(["sh", "-c", check]).returncode == 0  # both gone, not only the shell


def test_an_idle_guest_is_tickless_on_a_stable_clock(vm: cove.VM) -> None:
    """Under TCG the guest keeps the TSC clocksource and stops its tick when idle (else an
    idle VM costs ~6% of a host core): its timer interrupts over 3 s stay far below 250/s."""
    script = ("cat /sys/devices/system/clocksource/clocksource0/current_clocksource; "
              "grep LOC /proc/interrupts; sleep 3; grep LOC /proc/interrupts")
    lines = vm.exec(["sh", "-c", script], timeout=60).stdout.decode().split("\n")
    assert lines[0] == "tsc"
    before, after = (int(line.split()[1]) for line in lines[1:3])
    assert after - before < 3 * 100, (before, after)


def test_a_held_status_request_answers_once_the_vm_has_settled(vm: cove.VM) -> None:
    """What `cove up` waits with: a settled VM is answered at once, and a bad wait is a
    clear 400 naming the parameter."""
    from cove.client.http import Client
    from cove.errors import CoveError

    client = Client()
    started = time.monotonic()
    status = client.get(vm.name, settled=30)
    assert time.monotonic() - started < 5 and status["state"] == "running"
    for bad in ("-1", "61", "nan", "soon"):
        with pytest.raises(CoveError, match=f"settled={bad!r} is not a number of seconds"):
            client.request("GET", f"/v1/vms/{vm.name}?settled={bad}")


def test_exec_stream_gives_chunks_as_they_come(vm: cove.VM) -> None:
    stream = vm.exec_stream(["sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.5; done; "
                                         "echo done >&2; exit 4"])
    chunks = list(stream)
    assert b"".join(c.data for c in chunks if c.stream == "stdout") == b"1\n2\n3\n"
    assert b"".join(c.data for c in chunks if c.stream == "stderr") == b"done\n"
    assert len([c for c in chunks if c.fd == 1]) >= 2  # not one lump at the end
    assert stream.returncode == 4


def test_big_file_in_and_out_byte_identical(vm: cove.VM, tmp_path: Path) -> None:
    data = os.urandom(50 * 2**20)
    source = tmp_path / "big.bin"
    source.write_bytes(data)
    vm.copy_in(source, "/tmp/")
    digest = vm.exec(["sha256sum", "/tmp/big.bin"]).stdout.split()[0].decode()
    assert digest == hashlib.sha256(data).hexdigest()
    back = vm.copy_out("/tmp/big.bin", tmp_path / "back.bin")
    assert back == tmp_path / "back.bin" and back.read_bytes() == data


def make_tree(root: Path) -> Path:
    tree = root / "app"
    (tree / "bin").mkdir(parents=True)
    (tree / "bin" / "run").write_text("#!/bin/sh\necho run\n")
    (tree / "bin" / "run").chmod(0o750)
    (tree / "secret").write_text("s3cret")
    (tree / "secret").chmod(0o600)
    (tree / "bin").chmod(0o710)
    (tree / "link").symlink_to("bin/run")
    return tree


def modes_of(tree: Path) -> dict[str, int]:
    return {str(p.relative_to(tree)): p.lstat().st_mode for p in sorted(tree.rglob("*"))}


def test_tree_with_modes_both_ways_by_cli(vm: cove.VM, tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "src")
    missing = cove_cli("cp", str(tree), f"{vm.name}:/srv/", check=False)
    assert missing.returncode == 1 and "/srv/: no such directory" in missing.stderr
    vm.exec(["mkdir", "/srv"], check=True)
    cove_cli("cp", str(tree), f"{vm.name}:/srv/")
    listing = vm.exec(["sh", "-c", "cd /srv/app && stat -c '%n %a %u' bin bin/run secret "
                                   "&& readlink link && ./bin/run"]).stdout.decode()
    uid = os.getuid()  # owners travel as numbers; the guest extracts as root, keeping them
    assert listing.split("\n") == [f"bin 710 {uid}", f"bin/run 750 {uid}", f"secret 600 {uid}",
                                    "bin/run", "run", ""]
    out = tmp_path / "out"
    out.mkdir()
    cove_cli("cp", f"{vm.name}:/srv/app", str(out))
    assert modes_of(out / "app") == modes_of(tree)
    assert (out / "app" / "secret").read_text() == "s3cret"
    refused = cove_cli("cp", "./a", "b", check=False)
    assert refused.returncode == 1 and "exactly one side must be VM:PATH" in refused.stderr


EVIL_TAR = """
import io, sys, tarfile
with tarfile.open("/tmp/evil.tar", "w") as t:
    link = tarfile.TarInfo("esc"); link.type = tarfile.SYMTYPE; link.linkname = sys.argv[1]
    t.addfile(link)
    data = b"pwned"; member = tarfile.TarInfo("esc/f"); member.size = len(data)
    t.addfile(member, io.BytesIO(data))
"""


def test_a_hostile_guest_cannot_write_outside_the_destination(vm: cove.VM,
                                                              tmp_path: Path) -> None:
    """A guest whose `tar` sends a symlink out and then a file through it is refused."""
    outside = tmp_path / "outside"
    outside.mkdir()
    vm.exec(["python3", "-c", EVIL_TAR, str(outside)], check=True)
    vm.put_file("/usr/local/sbin/tar", b"#!/bin/sh\ncat /tmp/evil.tar\n", 0o755)
    try:
        with pytest.raises(cove.CoveError, match=r"not under the .hostname. that was asked for"):
            vm.copy_out("/etc/hostname", tmp_path / "land")
    finally:
        vm.exec(["rm", "/usr/local/sbin/tar"], check=True)
    assert list(outside.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outside"]  # no staging left


def test_sandbox_is_removed_when_its_block_raises(home: Path) -> None:
    with pytest.raises(RuntimeError, match="boom"), cove.sandbox(SPEC) as sandbox:
        name = sandbox.name
        assert sandbox.exec(["true"]).returncode == 0
        raise RuntimeError("boom")
    with pytest.raises(cove.VMNotFound):
        cove.VM.get(name)
    assert name not in [info.name for info in cove.ls()]


def test_aio_has_the_same_names_and_works(home: Path) -> None:
    assert set(cove.__all__) - {"__version__"} == set(cove.aio.__all__)

    async def scenario() -> None:
        async with cove.aio.sandbox(SPEC) as vm:
            await vm.put_file("/w/x.txt", b"async", 0o600)
            assert await vm.get_file("/w/x.txt") == b"async"
            result = await vm.exec(["stat", "-c", "%a", "/w/x.txt"])
            assert result.stdout == b"600\n"
            stream = vm.exec_stream(["sh", "-c", "echo a; sleep 0.3; echo b"])
            assert b"".join([chunk.data async for chunk in stream]) == b"a\nb\n"
            assert stream.returncode == 0
            with pytest.raises(cove.ExecTimeout):
                await vm.exec(["sleep", "60"], timeout=2)
            assert (await vm.ping()) < 5
            assert vm.name in [info.name for info in await cove.aio.ls()]

    asyncio.run(scenario())


def test_mcp_round_trip_with_the_official_client(home: Path) -> None:
    from mcp import Client
    from mcp.client.stdio import StdioServerParameters

    params = StdioServerParameters(command=sys.executable, args=["-m", "cove.cli.main", "mcp"],
                                   env={**os.environ, "COVE_HOME": str(home)})

    async def scenario() -> None:
        async with Client(params) as client:
            tools = {tool.name for tool in (await client.list_tools()).tools}
            assert {"up", "exec", "put_file", "get_file", "cp", "logs", "ls", "down"} <= tools
            started = await client.call_tool("up", {"spec": {**SPEC, "name": "agent"}})
            assert not started.is_error, started.content
            assert started.structured_content["state"] == "running"
            await client.call_tool("put_file", {"name": "agent", "path": "/a/b.py",
                                                "content": "print(6*7)"})
            ran = await client.call_tool("exec", {"name": "agent",
                                                  "argv": ["python3", "/a/b.py"]})
            assert ran.structured_content["stdout"] == "42\n"
            got = await client.call_tool("get_file", {"name": "agent", "path": "/a/b.py"})
            assert got.structured_content == {"text": "print(6*7)"}
            missing = await client.call_tool("exec", {"name": "nosuch", "argv": ["true"]})
            assert missing.is_error and "no VM named 'nosuch'" in str(missing.content)
            await client.call_tool("down", {"name": "agent"})
            listed = await client.call_tool("ls", {})
            assert "agent" not in str(listed.structured_content)

    asyncio.run(scenario())


def test_the_sandbox_example_runs_a_snippet(home: Path) -> None:
    import subprocess

    example = Path(__file__).resolve().parents[2] / "examples" / "sandbox" / "run.py"
    result = subprocess.run([sys.executable, str(example), "import os; print(6*7, os.getuid())"],
                            capture_output=True, text=True, timeout=300, check=False)
    assert (result.returncode, result.stdout) == (0, "42 65534\n"), result.stderr
