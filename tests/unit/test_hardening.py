"""The defects a security and reliability review found; each test failed before its fix."""

from __future__ import annotations

import asyncio
import json
import os
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cove.errors import CoveError, SpecError
from cove.host.fsutil import read_json, write_atomic
from cove.host.home import prepare_home
from cove.image.sources.nix import add_gc_roots, remove_gc_roots
from cove.net.networks import read_leases
from cove.plan.vmplan import Plan, make_plan
from cove.spec.load import load_spec
from cove.spec.model import Hypervisor
from cove.spec.overrides import command_line_spec, parse_port
from cove.spec.settings import TOP_SETTINGS, Setting
from cove.vm.vmdir import VmDir
from cove.vm.volumes import remove_volume
from tests.unit.test_backends import FILES, HOST, KERNEL, PATHS, plan_for

ROOT = Path(__file__).resolve().parents[2]

# Every setting with a pattern, as TOML that puts VALUE there (the test below makes sure no
# patterned setting is missing from this table).
PATTERNED = {
    "name": 'name = "VALUE"\n',
    "services": 'name = "a"\n[services."VALUE"]\ncommand = "x"\n',
    "user": 'name = "a"\n[services.s]\ncommand = "x"\nuser = "VALUE"\n',
    "packages": 'name = "a"\npackages = ["VALUE"]\n',
    "package": 'name = "a"\n[kernel]\npackage = "VALUE"\n',
    "network": 'name = "a"\nnetwork = "VALUE"\n',
    "suite": 'name = "a"\nsuite = "VALUE"\n',
    "mirror": 'name = "a"\nmirror = "VALUE"\n',
    "target": 'name = "a"\n[[volumes]]\nsource = "v"\ntarget = "VALUE"\n',
    "keep": 'name = "a"\nkeep = ["VALUE"]\n',
}
VALID = {"name": "web", "services": "web", "user": "nobody", "packages": "curl",
         "package": "linux-image-cloud-amd64", "network": "lab", "suite": "bookworm",
         "mirror": "http://deb.debian.org/debian", "target": "/data",
         "keep": "/usr/share/doc/*"}


def patterned_settings(settings: tuple[Setting, ...]) -> Iterator[Setting]:
    for setting in settings:
        if setting.pattern:
            yield setting
        yield from patterned_settings(setting.fields)


def write(tmp_path: Path, text: str) -> Path:
    (tmp_path / "cove.toml").write_text(text)
    return tmp_path


def test_every_pattern_is_covered() -> None:
    assert {s.key for s in patterned_settings(TOP_SETTINGS)} <= set(PATTERNED)


@pytest.mark.parametrize("key", sorted(PATTERNED))
def test_trailing_newline_never_passes(tmp_path: Path, key: str) -> None:
    value = VALID[key]
    load_spec(write(tmp_path, PATTERNED[key].replace("VALUE", value)))  # the value is fine
    bad = PATTERNED[key].replace("VALUE", value + "\\n")
    with pytest.raises(SpecError, match="not a valid"):
        load_spec(write(tmp_path, bad))


def test_volume_name_and_env_key_with_newline(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="not a valid volume name"):
        load_spec(write(tmp_path, 'name = "a"\n[[volumes]]\nsource = "data\\n"\ntarget = "/d"\n'))
    with pytest.raises(SpecError, match="not a valid environment variable name"):
        load_spec(write(tmp_path, 'name = "a"\nenv = { "K\\n" = "v" }\n'))


def test_port_bind_is_an_address_not_an_option_string(tmp_path: Path) -> None:
    hostile = "127.0.0.1:1-:1,guestfwd=tcp:10.0.2.100:1-cmd:sh"
    text = f'name = "a"\n[[ports]]\nhost = 80\nguest = 80\nbind = "{hostile}"\n'
    with pytest.raises(SpecError, match="is not an IPv4 address"):
        load_spec(write(tmp_path, text))
    for flag in (f"{hostile}:8080:80", "1.2.3.4.5:8080:80", "8080:80\n"):
        with pytest.raises(CoveError):
            parse_port(flag)
    assert parse_port("0.0.0.0:8080:80").bind == "0.0.0.0"


def test_home_is_private_and_unsafe_homes_are_refused(tmp_path: Path) -> None:
    home = prepare_home(tmp_path / "home")
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    (home / "state").write_text("x")  # prepare_home set the umask for all that follows
    assert stat.S_IMODE((home / "state").stat().st_mode) == 0o600
    home.chmod(0o755)  # an older cove's home: tightened
    prepare_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o711  # nothing readable by others
    home.chmod(0o777)
    with pytest.raises(CoveError, match="other users can write it"):
        prepare_home(home)
    if os.geteuid() == 0:
        home.chmod(0o700)
        os.chown(home, 65534, 65534)
        foreign = home
    else:
        foreign = Path("/usr")  # root's
    with pytest.raises(CoveError, match="belongs to uid"):
        prepare_home(foreign)


def test_names_never_leave_their_directory(tmp_path: Path) -> None:
    for name in ("../../x", "..", "a/b", "x\n"):
        with pytest.raises(CoveError, match="not a volume name"):
            remove_volume(name, tmp_path)
        with pytest.raises(CoveError, match="not a valid VM name"):
            VmDir.for_name(name, tmp_path)


def test_devices_and_foreign_files_are_refused_as_volumes(tmp_path: Path) -> None:
    volume = 'name = "a"\n[[volumes]]\nsource = "{source}"\ntarget = "/d"\n{extra}'
    with pytest.raises(SpecError, match="/dev/null is a device"):
        load_spec(write(tmp_path, volume.format(source="/dev/null", extra="")))
    load_spec(write(tmp_path, volume.format(source="/dev/null", extra="allow_any_path = true\n")))
    foreign = tmp_path / "theirs.ext4"
    foreign.write_bytes(b"")
    if os.geteuid() == 0:
        os.chown(foreign, 65534, 65534)
    else:
        foreign = Path("/etc/passwd")
    with pytest.raises(SpecError, match="belongs to uid"):
        load_spec(write(tmp_path, volume.format(source=foreign, extra="")))
    with pytest.raises(SpecError, match="does not exist"):
        load_spec(write(tmp_path, volume.format(source=tmp_path / "no" / "x.ext4", extra="")))
    load_spec(write(tmp_path, volume.format(source="./mine.ext4", extra="")))


def test_a_file_that_is_no_ext4_image_is_refused_as_a_volume(tmp_path: Path) -> None:
    """Docker's `-v ./file:/path` binds a file; cove's would hand the guest a disk it
    cannot mount, so the spec is refused on the host instead."""
    script = tmp_path / "job.sh"
    script.write_text("echo hi\n" * 200)
    spec = tmp_path / "cove.toml"
    spec.write_text('name = "a"\n')
    with pytest.raises(SpecError, match=r"job.sh is not an ext4 image") as refused:
        load_spec(spec, command_line_spec(volumes=(f"{script}:/job.sh",)))
    assert "share their directory" in str(refused.value)
    image = tmp_path / "data.ext4"
    with image.open("wb") as handle:
        handle.truncate(4 * 2**20)
    subprocess.run(["mkfs.ext4", "-q", "-F", str(image)], check=True)
    loaded = load_spec(spec, command_line_spec(volumes=(f"{image}:/data",)))
    assert [v.target for v in loaded.volumes] == ["/data"]


def test_gc_roots_are_exact_and_per_home(tmp_path: Path) -> None:
    root = tmp_path / "store"
    one, two = tmp_path / "home1", tmp_path / "home2"
    add_gc_roots(root, one, "web", ("/nix/store/a",))
    add_gc_roots(root, one, "web-app", ("/nix/store/b",))
    add_gc_roots(root, two, "web", ("/nix/store/c",))
    remove_gc_roots(root, one, "web")
    left = sorted(os.readlink(p) for p in (root / "nix").rglob("*") if p.is_symlink())
    assert left == ["/nix/store/b", "/nix/store/c"]


def test_atomic_write_keeps_the_old_file_when_writing_fails(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "resolved.json"
    write_atomic(target, '{"old": 1}')

    def broken_fsync(_fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", broken_fsync)
    with pytest.raises(OSError):
        write_atomic(target, '{"new": 1}')
    assert json.loads(target.read_text()) == {"old": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["resolved.json"]


def test_corrupt_state_is_a_clear_error_with_a_way_out(tmp_path: Path) -> None:
    (tmp_path / "leases.json").write_text('{"db": "10.77')
    with pytest.raises(CoveError, match=r"is corrupt") as raised:
        read_leases(tmp_path)
    assert raised.value.hint and "delete" in raised.value.hint
    with pytest.raises(CoveError, match="is not text"):
        (tmp_path / "bin.json").write_bytes(b"\xff\xfe")
        read_json(tmp_path / "bin.json", "a file", "delete it")


def test_a_plan_from_a_newer_cove_loads_and_a_broken_one_raises(tmp_path: Path) -> None:
    plan = plan_for(tmp_path, "minimal", Hypervisor.QEMU).to_json()
    assert Plan.from_json({**plan, "a_field_from_the_future": 1}).name == "mini"
    del plan["vcpu"]
    with pytest.raises(TypeError):
        Plan.from_json(plan)


def test_broken_record_marks_one_vm_and_the_daemon_starts(tmp_path: Path) -> None:
    from cove.daemon.server import Daemon

    for name, text in (("bad", '{"plan": {"name": "bad"}}'), ("cut", '{"plan": '),
                       ("odd", "[]")):
        (tmp_path / "vms" / name).mkdir(parents=True)
        (tmp_path / "vms" / name / "vm.json").write_text(text)

    async def load() -> Daemon:
        daemon = Daemon(tmp_path)
        await daemon.adopt_all()
        return daemon

    daemon = asyncio.run(load())
    assert sorted(daemon.broken) == ["bad", "cut", "odd"] and not daemon.vms
    assert {vm["state"] for vm in daemon.broken_status()} == {"broken"}
    asyncio.run(daemon.remove("cut", 1.0))
    assert not (tmp_path / "vms" / "cut" / "vm.json").exists()


def test_missing_hypervisor_binary_names_it(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    from cove.vmm.launch import LAUNCHERS

    monkeypatch.setenv("PATH", str(tmp_path / "nothing-here"))
    for hypervisor, launcher_type in LAUNCHERS.items():
        launcher = launcher_type(plan_for(tmp_path, "minimal", hypervisor), FILES, PATHS)
        with pytest.raises(CoveError, match=f"{re.escape(launcher.binary)} is not installed"):
            launcher.require_binary()


def test_broken_pipe_and_os_errors_print_one_line(tmp_path: Path) -> None:
    writer = subprocess.Popen([sys.executable, "-m", "cove.cli.main", "schema"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert writer.stdout is not None and writer.stderr is not None
    assert writer.stdout.read(10) == b'{\n  "$sche'
    writer.stdout.close()  # the reader leaves, as `| head` does
    assert b"Traceback" not in writer.stderr.read()
    assert writer.wait() in (0, 141)
    blocked = tmp_path / "file"
    blocked.write_text("")
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", "volume", "ls"],
                            env={**os.environ, "COVE_HOME": str(blocked / "home")},
                            capture_output=True, text=True, check=False)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.startswith("cove: error: cannot use") and "hint:" in result.stderr


def test_option_strings_refuse_what_they_cannot_escape(tmp_path: Path) -> None:
    from cove.vmm.crosvm import argv as crosvm_argv
    from cove.vmm.kvmtool import argv as kvmtool_argv
    from cove.vmm.qemu import qemu_argv

    odd = tmp_path / "a,b:c"
    odd.mkdir()
    with pytest.raises(CoveError, match="has a comma, which virtiofsd would take"):
        plan_for(odd, "storage", Hypervisor.QEMU)  # a share: refused by the spec checker
    colon = tmp_path / "a:c"
    colon.mkdir()
    with pytest.raises(CoveError, match=r"shared directory .* holds ':'"):
        crosvm_argv(plan_for(colon, "storage", Hypervisor.CROSVM), FILES, PATHS)
    (odd / "cove.toml").write_text('name = "k"\nnetwork = "none"\n[[volumes]]\n'
                                   'source = "./pg.ext4"\ntarget = "/pg"\n')
    plan = make_plan(load_spec(odd), HOST, KERNEL, hypervisor=Hypervisor.KVMTOOL)
    with pytest.raises(CoveError, match=r"disk image .* holds ','"):
        kvmtool_argv(plan, FILES, PATHS)
    plan = make_plan(load_spec(odd), HOST, KERNEL, hypervisor=Hypervisor.QEMU)
    drives = [a for a in qemu_argv(plan, FILES, PATHS) if "pg.ext4" in a]
    assert drives and "a,,b:c/pg.ext4," in drives[0]  # QEMU's own escape: commas doubled


def test_a_dangling_cache_link_is_explained(tmp_path: Path) -> None:
    """A home whose `cache` links to a directory that is gone (a moved shared cache): one
    line that says so and how to fix it, not `File exists` (bench.lifecycle met it)."""
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / "cache").symlink_to(tmp_path / "gone")
    for argv in (["build", str(ROOT / "examples" / "hello")], ["gc"]):
        result = subprocess.run([sys.executable, "-m", "cove.cli.entry", *argv],
                                capture_output=True, text=True, check=False,
                                env={**os.environ, "COVE_HOME": str(home)})
        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        assert f"{home / 'cache'} is a symbolic link to {tmp_path / 'gone'}, which does not " \
               "exist" in result.stderr
        assert "mkdir -p" in result.stderr
