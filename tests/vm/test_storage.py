"""Shares, volumes, config and secrets in real guests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
from pathlib import Path

import pytest

from tests.vm.conftest import cove_argv, qemu_pids_for, run_until_up, wait_for, write_spec

pytestmark = pytest.mark.vm
SPEC = 'name = "{name}"\npackages = ["python3", "curl"]\nnetwork = "none"\n'


def run_in(spec: Path, script: str, *flags: str, check: bool = True
           ) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(cove_argv("run", str(spec), *flags, "--", "sh", "-c", script),
                            capture_output=True, text=True, timeout=180, check=False)
    if check and result.returncode != 0:
        raise AssertionError(f"exit {result.returncode}: {result.stderr}")
    return result


@pytest.mark.per_user
def test_read_only_share_refuses_even_root_and_rw_share_writes_to_host(
        cove_home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", SPEC.format(name="sharer"))
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "file").write_text("from host\n")
    (tmp_path / "rw").mkdir()
    result = run_in(spec, "cat /ro/file; touch /ro/new; mount -o remount,rw /ro; "
                          "echo again > /ro/file; echo from guest > /rw/out; true",
                    "--share", f"{tmp_path / 'ro'}:/ro", "--share", f"{tmp_path / 'rw'}:/rw:rw")
    assert result.stdout.startswith("from host\n")
    assert result.stderr.count("Read-only file system") == 2
    assert (tmp_path / "ro" / "file").read_text() == "from host\n"
    assert not (tmp_path / "ro" / "new").exists()
    assert (tmp_path / "rw" / "out").read_text() == "from guest\n"
    # what guest root writes belongs to whoever runs cove (root or not), not to a mapped uid
    assert (tmp_path / "rw" / "out").stat().st_uid == os.geteuid()


@pytest.mark.per_user
def test_host_store_is_never_shared_writable(cove_home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", SPEC.format(name="store"))
    result = run_in(spec, "true", "--share", "/usr:/host-usr:rw", check=False)
    assert result.returncode == 2
    assert "holds the host store /usr, which a guest may never write" in result.stderr
    assert "shares[0].readonly (from the command line)" in result.stderr


@pytest.mark.per_user
def test_config_and_secrets(cove_home: Path, tmp_path: Path) -> None:
    secret = "s3cret-" + os.urandom(6).hex()
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "app.ini").write_text("level=debug\n")
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "token").write_text(secret)
    spec = write_spec(tmp_path / "spec", SPEC.format(name="secretive") + (
        f'config = "{tmp_path / "config"}"\nsecrets = "{tmp_path / "secrets"}"\n'
        '[services.app]\nuser = "nobody"\ncommand = "sleep 1000"\n'))
    script = ("cat /config/app.ini; touch /config/x 2>/dev/null || echo config-ro; "
              "stat -c '%a %U' /run/secrets/token; "
              "su -s /bin/sh nobody -c 'cat /run/secrets/token'; echo; "
              "grep -rl \"$(cat /run/secrets/token)\" /cove /etc /tmp 2>/dev/null"
              " || echo nowhere-else")
    result = run_in(spec, script)
    lines = result.stdout.splitlines()
    assert lines[:4] == ["level=debug", "config-ro", "400 nobody", secret]
    assert lines[4] == "nowhere-else"
    # a changed secret needs no image rebuild, and nothing of it lands in the cache
    entries = sorted(p.name for p in (cove_home / "cache").glob("*/*"))
    (tmp_path / "secrets" / "token").write_text(secret + "-2")
    assert run_in(spec, "cat /run/secrets/token").stdout == secret + "-2"
    assert sorted(p.name for p in (cove_home / "cache").glob("*/*")) == entries
    found = subprocess.run(["grep", "-rl", secret, str(cove_home)], capture_output=True,
                           text=True, check=False).stdout.split()
    # not in the cache, logs or events (the initrd is gone with the run); only a template
    # snapshot holds it, in guest memory (docs/snapshots.md: 0600, in the home only)
    assert all(f.startswith(str(cove_home / "snapshots")) for f in found), found


@pytest.mark.per_user
def test_volume_survives_restart_and_kill(cove_home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", SPEC.format(name="keeper") +
                      '[services.idle]\ncommand = "sleep 1000"\n')
    volume = "--volume=keepvol:/data:64"
    run_in(spec, "echo one >> /data/log; sync", volume)
    assert run_in(spec, "cat /data/log", volume).stdout == "one\n"
    process = run_until_up(spec, volume)
    exec_in = subprocess.run(
        cove_argv("run", str(spec), "--name", "writer", "--", "true"), capture_output=True,
        text=True, check=False)
    assert exec_in.returncode == 0  # a second VM without the volume is fine
    clash = run_in(spec, "true", "--name", "clash", volume, check=False)
    assert clash.returncode == 1
    assert "in use by another VM" in clash.stderr  # QEMU's image lock, said plainly
    for pid in qemu_pids_for(cove_home):
        os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)
    wait_for(lambda: not qemu_pids_for(cove_home), 10, "QEMU gone")
    image = cove_home / "volumes" / "keepvol.ext4"
    assert subprocess.run(["e2fsck", "-fn", str(image)], capture_output=True,
                          check=False).returncode == 0
    assert run_in(spec, "echo two >> /data/log; sync; cat /data/log", volume).stdout == \
        "one\ntwo\n"


def test_ephemeral_volume_writes_vanish(cove_home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", SPEC.format(name="scratch"))
    volume = "--volume=basevol:/data:64"
    run_in(spec, "echo base > /data/file; sync", volume)
    assert run_in(spec, "echo scratch >> /data/file; sync; cat /data/file", volume,
                  "--ephemeral").stdout == "base\nscratch\n"
    assert run_in(spec, "cat /data/file", volume).stdout == "base\n"
    first = subprocess.Popen(cove_argv("run", str(spec), "--name", "one", volume,
                                       "--ephemeral", "--", "sleep", "6"),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # many ephemeral VMs on one base image at once
        assert run_in(spec, "cat /data/file", "--name", "two", volume,
                      "--ephemeral").stdout == "base\n"
    finally:
        assert first.wait(timeout=60) == 0


def test_volume_ls_grow_rm(cove_home: Path, tmp_path: Path) -> None:
    spec = write_spec(tmp_path / "spec", SPEC.format(name="grower") +
                      '[services.idle]\ncommand = "sleep 1000"\n')
    volume = "--volume=growvol:/data:32"
    run_in(spec, "echo kept > /data/file; sync", volume)

    def cove_volume(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cove_argv("volume", *args), capture_output=True, text=True,
                              check=False)

    listing = cove_volume("ls", "--json")
    assert {"name": "growvol", "size_mib": 32, "in_use": False}.items() <= \
        next(v for v in json.loads(listing.stdout) if v["name"] == "growvol").items()
    assert cove_volume("grow", "growvol", "16M").returncode == 1  # volumes only grow
    assert cove_volume("grow", "growvol", "96M").stdout == "growvol is now 96 MiB\n"
    size_kib = run_in(spec, "cat /data/file; df -k /data | tail -1", volume).stdout.split()
    assert size_kib[0] == "kept"
    assert int(size_kib[2]) > 80 * 1024  # the filesystem grew with the image
    process = run_until_up(spec, volume)
    try:
        busy = cove_volume("rm", "growvol")
        assert busy.returncode == 1 and "in use by a running VM" in busy.stderr
    finally:
        process.send_signal(signal.SIGINT)
        process.wait(timeout=60)
    assert cove_volume("rm", "growvol").returncode == 0
    assert not (cove_home / "volumes" / "growvol.ext4").exists()


@pytest.mark.per_user
def test_9p_share_with_a_kernel_that_has_it(cove_home: Path, tmp_path: Path) -> None:
    """Debian's cloud kernel has no 9p (cove says so); its generic kernel has."""
    (tmp_path / "share").mkdir()
    (tmp_path / "share" / "file").write_text("via 9p\n")
    share = f'[[shares]]\nsource = "{tmp_path / "share"}"\ntarget = "/share"\nproto = "9p"\n'
    cloud = write_spec(tmp_path / "cloud", SPEC.format(name="ninep") + share)
    refused = run_in(cloud, "true", check=False)
    assert refused.returncode == 1 and "9p (CONFIG_9P_FS)" in refused.stderr
    generic = write_spec(tmp_path / "generic", SPEC.format(name="ninep") + share +
                         '[kernel]\npackage = "linux-image-amd64"\n')
    result = run_in(generic, "cat /share/file; mount -o remount,rw /share; touch /share/new",
                    check=False)
    assert result.stdout == "via 9p\n"
    assert "Read-only file system" in result.stderr
    assert not (tmp_path / "share" / "new").exists()
