"""Stack files (loading, merging, order, errors, schema), the segment in QEMU's argv,
autostart entries, and the systemd units cove writes, checked by systemd-analyze."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import pytest

from cove.daemon.autostart import Entry, disable, enable, load_entries
from cove.daemon.units import quote
from cove.errors import CoveError, SpecError
from cove.spec.stack import load_stack, stack_schema

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "stack"


def write(directory: Path, text: str, spec: str | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "cove-stack.toml").write_text(text)
    if spec is not None:
        (directory / "db").mkdir(exist_ok=True)
        (directory / "db" / "cove.toml").write_text(spec)
    return directory


DB = '''name = "postgres"
env = { A = "file", B = "file" }
[[ports]]
host = 5432
guest = 5432
[[ports]]
host = 9187
guest = 9187
'''


def test_the_example_loads_in_dependency_order() -> None:
    stack = load_stack(EXAMPLE)
    assert stack.name == "demo"
    assert [(m.key, m.spec.name) for m in stack.members] == [("db", "demo-db"),
                                                             ("web", "demo-web")]
    web = stack.member("web")
    assert web.spec.env["GREETING"] == "hello from the stack"
    assert web.spec.segment is not None and web.spec.segment.address == "10.89.0.11/24"
    assert ("db", "10.89.0.10") in web.spec.segment.peers
    assert ("demo-db", "10.89.0.10") in web.spec.segment.peers
    with pytest.raises(CoveError, match="stack demo has no VM 'cache'"):
        stack.member("cache")


def test_member_keys_override_the_file(tmp_path: Path) -> None:
    stack = load_stack(write(tmp_path / "s", '''env = { A = "stack", C = "stack" }
[vms.db]
spec = "db"
env = { B = "member" }
ports = [{ host = 15432, guest = 5432 }]
memory = "512M"
''', DB))
    db = stack.member("db").spec
    assert db.name == "s-db"  # the file's own name is for `cove up` of the file alone
    assert dict(db.env) == {"A": "file", "B": "member", "C": "stack"}
    assert sorted((p.host, p.guest) for p in db.ports) == [(9187, 9187), (15432, 5432)]
    assert db.memory_mib == 512
    cleared = load_stack(write(tmp_path / "t", '[vms.db]\nspec = "db"\nports = []\n', DB))
    assert cleared.member("db").spec.ports == ()


def test_order_follows_dependencies_then_the_file(tmp_path: Path) -> None:
    stack = load_stack(write(tmp_path / "s", '''
[vms.web]
depends_on = { api = "healthy" }
[vms.api]
depends_on = ["db", "cache"]
[vms.cache]
[vms.db]
'''))
    assert [m.key for m in stack.members] == ["cache", "db", "api", "web"]
    assert [c.value for _, c in stack.member("api").depends_on] == ["started", "started"]


@pytest.mark.parametrize(("text", "expected"), [
    ('[vms.a]\ndepends_on = ["b"]\n[vms.b]\ndepends_on = { a = "healthy" }\n',
     "vms.a.depends_on: dependency cycle: a -> b -> a"),
    ('[vms.a]\ndepends_on = ["a"]\n', "vms.a.depends_on.a: a VM cannot depend on itself"),
    ('[vms.a]\ndepends_on = ["nope"]\n', "vms.a.depends_on.nope: no such VM in this stack"),
    ('[vms.a]\ndepends_on = { b = "ready" }\n[vms.b]\n',
     'vms.a.depends_on.b: "ready" is not one of started, healthy'),
    ('[vms.a]\nports = [{ host = 80, guest = 80 }]\n[vms.b]\nports = [{ host = 80, guest = 8 }]\n',
     "vms.b.ports: host port 80/tcp is also forwarded by vms.a"),
    ('[vms.a]\nname = "x"\n[vms.b]\nname = "x"\n', 'vms.b.name: "x" is also the name of vms.a'),
    ('[vms.a]\nmemroy = "1G"\n', 'vms.a.memroy: unknown key\n  hint: did you mean "memory"?'),
    ('[vms.a]\nspec = "missing"\n', 'vms.a.spec: "missing" does not exist'),
    ('[vms.A]\n', 'vms.A: "A" is not a valid member name'),
    ('colour = "red"\n[vms.a]\n', "colour: unknown key"),
    ('name = "x"\n', "vms: is required but missing"),
])
def test_stack_errors_say_where_and_how_to_fix(tmp_path: Path, text: str, expected: str) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(write(tmp_path / "s", text))
    assert expected in str(caught.value)
    assert str(caught.value).startswith(str(tmp_path / "s" / "cove-stack.toml"))


def test_a_problem_in_the_members_file_names_that_file(tmp_path: Path) -> None:
    with pytest.raises(SpecError) as caught:
        load_stack(write(tmp_path / "s", '[vms.db]\nspec = "db"\n', 'vcpu = "many"\n'))
    assert f"vms.db ({tmp_path / 's' / 'db' / 'cove.toml'}): vcpu: must be integer" \
        in str(caught.value)


def test_a_directory_with_both_files_is_refused(tmp_path: Path) -> None:
    directory = write(tmp_path / "s", "[vms.a]\n")
    (directory / "cove.toml").write_text('name = "a"\n')
    with pytest.raises(CoveError, match=r"holds both cove\.toml and cove-stack\.toml"):
        load_stack(directory)


def test_the_schema_accepts_the_example_and_refuses_a_typo() -> None:
    schema = stack_schema()
    jsonschema.validate(tomllib.loads((EXAMPLE / "cove-stack.toml").read_text()), schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"vms": {"db": {"dependson": ["x"]}}}, schema)
    printed = subprocess.run([sys.executable, "-m", "cove.cli.main", "schema", "--stack"],
                             capture_output=True, text=True, check=True).stdout
    assert '"title": "cove-stack.toml"' in printed


def test_a_member_gets_a_segment_nic_in_qemu_only(tmp_path: Path) -> None:
    from cove.plan.vmplan import make_plan, segment_mac
    from cove.spec.model import Hypervisor
    from cove.vmm.qemu import qemu_argv
    from tests.unit.test_backends import FILES, HOST, KERNEL

    spec = load_stack(write(tmp_path / "s", "[vms.db]\n[vms.web]\n")).member("web").spec
    plan = make_plan(spec, HOST, KERNEL, hypervisor=Hypervisor.QEMU)
    assert (plan.stack, plan.member) == ("s", "web")
    assert plan.init_env["COVE_SEG_HOSTS"] == "db=10.89.0.10 s-db=10.89.0.10 " \
                                              "web=10.89.0.11 s-web=10.89.0.11"
    from cove.vmm.layout import RunPaths

    paths = RunPaths(Path("/h/vms/s-web/run"), Path("/h/vms/s-web/console.log"),
                     stacks=Path("/h/stacks"))
    argv = qemu_argv(plan, FILES, paths)
    assert ("dgram,id=seg0,local.type=unix,local.path=/h/vms/s-web/run/segment.sock,"
            "remote.type=unix,remote.path=/h/stacks/s/hub.sock") in argv
    assert f"virtio-net-device,netdev=seg0,mac={segment_mac('s-web')}" in argv
    with pytest.raises(CoveError, match=r"stack segment .*: not wired for firecracker"):
        make_plan(spec, HOST, KERNEL, hypervisor=Hypervisor.FIRECRACKER)


def test_autostart_entries_keep_their_order_and_mode(tmp_path: Path) -> None:
    first, second = Entry("stack", "/s/cove-stack.toml", "blog"), Entry("vm", "db", "db")
    assert enable(tmp_path, first) and enable(tmp_path, second)
    assert not enable(tmp_path, first)  # once only
    assert load_entries(tmp_path) == [first, second]
    assert stat.S_IMODE((tmp_path / "autostart.json").stat().st_mode) == 0o600
    assert disable(tmp_path, "blog") == [first]
    assert disable(tmp_path, "/nothing") == []
    assert load_entries(tmp_path) == [second]
    (tmp_path / "autostart.json").write_text('[{"kind": "vm"}, 3]')
    assert load_entries(tmp_path) == []  # a broken entry is skipped, not fatal


def test_unit_words_are_quoted_for_systemd() -> None:
    assert quote("/usr/bin/cove") == "/usr/bin/cove"
    assert quote("/opt/my tools/cove", exec_word=True) == '"/opt/my tools/cove"'
    assert quote("100%", exec_word=True) == '"100%%"'
    assert quote("$HOME", exec_word=True) == '"$$HOME"'
    assert quote('COVE_HOME=/a "b"') == '"COVE_HOME=/a \\"b\\""'
    with pytest.raises(ValueError, match="newline"):
        quote("a\nb")


def verify(*args: str, env: dict[str, str] | None = None) -> None:
    """systemd-analyze verify must pass with nothing to say (a warning is a failure)."""
    assert shutil.which("systemd-analyze"), "Debian's systemd package provides it"
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", *args],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, **(env or {})})
    assert result.returncode == 0 and not result.stderr.strip(), result.stderr


def test_installed_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    out = tmp_path / "units"
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", "systemd", "install",
                             "--dir", str(out), "--vm", str(EXAMPLE)],
                            capture_output=True, text=True, check=False,
                            env={**os.environ, "COVE_HOME": str(tmp_path / "home")})
    assert result.returncode == 0, result.stderr
    assert "systemctl enable --now coved" in result.stdout
    unit = (out / "coved.service").read_text()
    assert "KillMode=process" in unit and f"ExecStart={sys.executable} -m cove daemon" in unit
    assert "EXAMPLE" not in unit and str(EXAMPLE) in (
        out / "cove@demo.service.d" / "cove.conf").read_text()
    verify(str(out / "coved.service"))
    verify(str(out / "cove@.service"))
    verify("cove@demo.service", env={"SYSTEMD_UNIT_PATH": f"{out}:"})


def test_user_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    out = tmp_path / "user"
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", "systemd", "install",
                             "--user", "--dir", str(out)], capture_output=True, text=True,
                            check=False, env={**os.environ, "COVE_HOME": str(tmp_path / "h")})
    assert result.returncode == 0, result.stderr
    assert "loginctl enable-linger" in result.stdout
    assert "WantedBy=default.target" in (out / "coved.service").read_text()
    runtime = tmp_path / "xdg"
    runtime.mkdir(mode=0o700)
    verify("--user", str(out / "coved.service"), env={"XDG_RUNTIME_DIR": str(runtime)})


def test_the_docs_key_table_is_current() -> None:
    from cove.spec.stack import keys_markdown

    page = (ROOT / "docs" / "stacks.md").read_text()
    generated = page.split("<!-- generated from the stack settings table -->\n")[1]
    assert generated.split("<!-- end generated -->")[0] == keys_markdown()
