"""`cove run` against real guests under QEMU."""

from __future__ import annotations

import os
import signal
import subprocess
from pathlib import Path

import pytest

from cove.image.pack import ROOT_FILE
from cove.vm.storage import agent_c_modules
from tests.vm.conftest import (
    HELLO,
    cove_argv,
    fetch,
    free_port,
    qemu_pids_for,
    run_until_up,
    wait_for,
    write_spec,
)

pytestmark = pytest.mark.vm

SPEC_HEAD = 'name = "{name}"\nmemory = "256M"\npackages = ["python3", "curl"]\n'


def hello_copy(tmp_path: Path, port: int) -> Path:
    text = HELLO.read_text().replace("host = 8080", f"host = {port}")
    return write_spec(tmp_path / "hello", text)


@pytest.mark.per_user
def test_hello_answers_and_ctrl_c_leaves_nothing(cove_home: Path, tmp_path: Path) -> None:
    port = free_port()
    spec = hello_copy(tmp_path, port)
    # a job of its own, as a shell starts it; Ctrl-C then reaches its whole process group
    process = subprocess.Popen(cove_argv("run", str(spec)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        wait_for(lambda: fetch(port) is not None or process.poll() is not None, 90,
                 "the hello page")
        assert fetch(port) == "<h1>Hello from cove!</h1>\n"
    finally:
        os.killpg(process.pid, signal.SIGINT)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    # QEMU, in a group of its own, was stopped by cove through the guest, not by the signal
    assert "terminating on signal" not in (cove_home / "vms" / "hello" / "qemu.log").read_text()
    assert "hello is up" in err
    assert "service hello started" in err
    assert "GET / HTTP/1.1" in out  # the service's own output, prefixed
    assert qemu_pids_for(cove_home) == []
    run_dir = cove_home / "vms" / "hello" / "run"
    assert not run_dir.exists()
    assert "Traceback" not in err


@pytest.mark.per_user
def test_command_exit_code_and_output_relayed(plain_spec: Path) -> None:
    result = subprocess.run(
        cove_argv("run", str(plain_spec), "--", "sh", "-c", "echo out; echo err >&2; exit 7"),
        capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 7, result.stderr
    assert result.stdout == "out\n"
    assert "err\n" in result.stderr


def test_command_sees_guest_not_host(plain_spec: Path) -> None:
    result = subprocess.run(cove_argv("run", str(plain_spec), "-e", "GREETING=hi", "--", "sh", "-c",
                                      "uname -r; hostname; echo $GREETING; id -u"),
                            capture_output=True, text=True, timeout=120, check=True)
    kernel, hostname, greeting, uid = result.stdout.split()
    assert kernel.endswith("cloud-amd64")
    assert hostname == "hello"
    assert greeting == "hi"
    assert uid == "0"


def test_the_guest_root_as_init_leaves_it(plain_spec: Path) -> None:
    """/etc/hosts is cove's (no copy-up of the image's), the network is up without `ip`
    (the agent's ioctls: loopback, address, default route), the agent runs from /cove/lib,
    nothing of the delivery is left in /cove, the root's busybox is the initramfs's, and
    the agent's `_json` is the one delivered beside it."""
    script = ("cat /etc/hosts; echo ---; cat /proc/net/route; echo ---; ls /cove; echo ---; "
              "grep -c ' /usr/bin/busybox ' /proc/mounts; echo ---; "
              "cat /sys/class/net/lo/flags /sys/class/net/eth0/flags; echo ---; "
              "grep -o '/[^ ]*_json[^ ]*' /proc/1/maps | sort -u")
    result = subprocess.run(cove_argv("run", str(plain_spec), "--", "sh", "-c", script),
                            capture_output=True, text=True, timeout=120, check=True)
    hosts, routes, cove_dir, busybox, links, json_module = result.stdout.split("---\n")
    assert hosts.splitlines() == ["127.0.0.1\tlocalhost", "::1\tlocalhost", "127.0.1.1\thello"]
    default = [line.split() for line in routes.splitlines()[1:] if line.split()[1] == "00000000"]
    assert default and default[0][0] == "eth0" and default[0][2] == "0202000A"  # via 10.0.2.2
    assert cove_dir.split() == ["config.json", "lib"]
    # the agent's C module came in the per-boot archive (the root's Python is the host's)
    assert json_module.split() == [f"/cove/lib/{name}" for name in agent_c_modules_names()]
    assert busybox.strip() == "1"
    # IFF_UP on both (operstate follows the carrier a moment later, by the kernel's linkwatch)
    assert all(int(flags, 16) & 0x1 for flags in links.split()), links


def agent_c_modules_names() -> list[str]:
    return [Path(name).name for name in agent_c_modules()]


def test_a_root_argument_moves_the_upper_layer_to_a_tmpfs(cove_home: Path,
                                                          tmp_path: Path) -> None:
    """With root= on the command line (kvmtool adds one) the kernel makes the initramfs a
    ramfs, which overlayfs cannot take as its upper layer: /init mounts a tmpfs for it, and
    the root behaves as ever (a file of the image removed stays removed)."""
    spec = write_spec(tmp_path / "rootarg", SPEC_HEAD.format(name="rootarg")
                      + '[kernel]\ncmdline = "root=/dev/vda"\n')
    script = ("grep ' / overlay ' /proc/mounts; rm /etc/os-release; mkdir -p /etc/x; "
              "echo hi > /etc/x/y; cat /etc/x/y; ls /etc/os-release 2>&1; ls /cove")
    result = subprocess.run(cove_argv("run", str(spec), "--", "sh", "-c", script),
                            capture_output=True, text=True, timeout=120, check=True)
    lines = result.stdout.splitlines()
    assert "upperdir=/rw/upper,workdir=/rw/work" in lines[0]
    assert lines[1] == "hi"
    assert "No such file" in lines[2]
    assert lines[3:] == ["config.json", "lib"]


def test_guest_python_uses_the_images_bytecode(plain_spec: Path) -> None:
    """Every file in the image has one fixed mtime: its .pyc files must match it, or each
    boot compiles the stdlib a service imports again."""
    result = subprocess.run(
        cove_argv("run", str(plain_spec), "--", "python3", "-B", "-v", "-c", "import http.server"),
        capture_output=True, text=True, timeout=120, check=True)
    assert "code object from '/usr/lib/python3.11/http/__pycache__/server" in result.stderr
    assert "bytecode is stale" not in result.stderr, [
        line for line in result.stderr.splitlines() if "stale" in line]


def test_pre_start_failure_is_reported(cove_home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "bad", SPEC_HEAD.format(name="prefail") + (
        '[services.web]\npre_start = "echo preparing; exit 4"\ncommand = "sleep 100"\n'
        'restart = "never"\n'))
    process = subprocess.Popen(cove_argv("run", str(spec)), stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    assert process.stderr is not None
    try:
        for line in process.stderr:
            lines.append(line)
            if "pre_start failed" in line:
                break
    finally:
        process.send_signal(signal.SIGINT)
        out, _ = process.communicate(timeout=60)
    assert "cove: service web: pre_start failed with code 4 (its output is above)\n" in lines
    assert "web | preparing" in out
    assert process.returncode == 0


def idle_spec(tmp_path: Path, name: str) -> Path:
    return write_spec(tmp_path / name, SPEC_HEAD.format(name=name) +
                      '[services.idle]\ncommand = "sleep 1000"\n')


def test_sigkill_of_cove_leaves_no_qemu(cove_home: Path, tmp_path: Path) -> None:
    process = run_until_up(idle_spec(tmp_path, "killme"))
    assert qemu_pids_for(cove_home)
    process.kill()
    process.wait()
    wait_for(lambda: not qemu_pids_for(cove_home), 10, "QEMU to die with its owner")


def test_guest_that_cannot_boot_gives_clear_error(cove_home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "noinit", SPEC_HEAD.format(name="noinit") +
                      '[kernel]\ncmdline = "rdinit=/nonexistent"\n')
    result = subprocess.run(cove_argv("run", str(spec), "--", "true"), capture_output=True,
                            text=True, timeout=120, check=False)
    assert result.returncode == 1
    assert "the guest stopped while booting" in result.stderr
    assert "Kernel panic" in result.stderr  # the console tail shows why
    assert "Traceback" not in result.stderr


def test_name_is_taken_while_running(cove_home: Path, tmp_path: Path) -> None:
    spec = idle_spec(tmp_path, "twice")
    first = run_until_up(spec)
    try:
        second = subprocess.run(cove_argv("run", str(spec), "--", "true"), capture_output=True,
                                text=True, timeout=60, check=False)
        assert second.returncode == 1
        assert "a VM named 'twice' is already running" in second.stderr
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=60)
    assert first.returncode == 0


def test_own_kernel_boots(cove_home: Path, tmp_path: Path) -> None:
    """kernel.path: a vmlinux the user brings, with its modules directory."""
    cached = next((cove_home / "cache" / "kernel").glob("*/vmlinux")).parent
    own = tmp_path / "own"
    (own / "lib").mkdir(parents=True)
    os.symlink(cached / "lib" / "modules", own / "lib" / "modules")
    spec = write_spec(tmp_path / "ownkernel", SPEC_HEAD.format(name="ownkernel") + (
        f'network = "none"\n[kernel]\npath = "{cached / "vmlinux"}"\nmodules = "{own}"\n'))
    result = subprocess.run(cove_argv("run", str(spec), "--", "uname", "-r"),
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == next((cached / "lib" / "modules").iterdir()).name


def test_gc_keeps_what_a_running_vm_boots_from(cove_home: Path, tmp_path: Path) -> None:
    home = tmp_path / "home"  # its own cache: gc must not touch the session's
    env = {**os.environ, "COVE_HOME": str(home)}
    spec = idle_spec(tmp_path, "gcvictim")
    process = subprocess.Popen(cove_argv("run", str(spec)), stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, env=env)
    assert process.stderr is not None
    for line in process.stderr:
        if "is up" in line:
            break
    stale = home / "cache" / "root" / "0123456789abcdef0000"
    stale.mkdir(parents=True)
    (stale / ROOT_FILE).write_bytes(b"x" * 4096)
    try:
        dry = subprocess.run(cove_argv("gc"), env=env, capture_output=True, text=True,
                             check=True)
        assert str(stale) in dry.stdout and stale.exists()  # a dry run removes nothing
        subprocess.run(cove_argv("gc", "--apply"), env=env, capture_output=True, check=True)
        assert not stale.exists()
        kept = {p.parent.name for p in (home / "cache").glob("*/*")}
        assert {"kernel", "initramfs", "root"} <= kept
        roots = list((home / "cache" / "root").glob(f"*/{ROOT_FILE}"))
        assert len(roots) == 1  # the running VM's root image stays
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert process.returncode == 0
    subprocess.run(cove_argv("gc", "--apply"), env=env, capture_output=True, check=True)
    assert not list((home / "cache" / "root").glob(f"*/{ROOT_FILE}"))  # unused once it stopped


@pytest.mark.per_user
def test_a_noop_build_is_answered_from_its_stamp(cove_home: Path) -> None:
    """The real build recorded its stamp; `cove` (its entry point) answers from it with the
    same artifacts, and a changed spec builds for real again."""
    import json
    import sys

    full = json.loads(subprocess.run(cove_argv("build", str(HELLO), "--json"), check=True,
                                     capture_output=True, text=True).stdout)
    quick = json.loads(subprocess.run([sys.executable, "-m", "cove", "build", str(HELLO),
                                       "--json"], check=True, capture_output=True,
                                      text=True).stdout)
    assert quick["seconds"] == 0.0
    assert {k: v for k, v in quick.items() if k != "seconds"} == \
        {k: v for k, v in full.items() if k != "seconds"}
