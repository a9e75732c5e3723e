"""Spec validation: every mistake names the file, the key path and a fix."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest

from cove.errors import CoveError, SpecError
from cove.spec import load_spec
from cove.spec.schema import spec_schema
from cove.spec.values import parse_duration, parse_size_mib

ROOT = Path(__file__).resolve().parents[2]
GOOD = '''
name = "web"
[services.web]
command = "true"
'''

# (TOML text, key path expected in the message, words expected in the message)
MISTAKES = [
    ('name = "hello"\n[services.hello]\ncommand = "x"\nrestart = "sometimes"\n',
     "services.hello.restart", '"sometimes" is not one of always, on-failure, never'),
    ('nmae = "x"\n', "nmae", 'did you mean "name"'),
    ('vcpu = 2\n', "name", "is required"),
    ('name = "Hello World"\n', "name", "is not a valid name"),
    ('name = "a"\nvcpu = "two"\n', "vcpu", "must be integer, not a string"),
    ('name = "a"\nvcpu = 0\n', "vcpu", "below the minimum 1"),
    ('name = "a"\nmemory = "lots"\n', "memory", "is not a size"),
    ('name = "a"\nmemory = "16M"\n', "memory", "below the minimum 64 MiB"),
    ('name = "a"\npackages = "curl"\n', "packages", "must be list of strings"),
    ('name = "a"\npackages = ["Curl!"]\n', "packages[0]", "not a valid packages"),
    ('name = "a"\n[services.web]\npre_start = "x"\n', "services.web.command", "is required"),
    ('name = "a"\n[services.web]\ncommand = "x"\nenv = { "1X" = "y" }\n',
     "services.web.env.1X", "not a valid environment variable name"),
    ('name = "a"\n[services.web]\ncommand = "x"\nenv = { X = true }\n',
     "services.web.env.X", "must be a string"),
    ('name = "a"\n[services.web]\ncommand = "x"\nstop_timeout = "soon"\n',
     "services.web.stop_timeout", "is not a duration"),
    ('name = "a"\n[services.web]\ncommand = "x"\ncomand = "y"\n',
     "services.web.comand", 'did you mean "command"'),
    ('name = "a"\n[[ports]]\nhost = 8080\n', "ports[0].guest", "is required"),
    ('name = "a"\n[[ports]]\nhost = 70000\nguest = 80\n', "ports[0].host",
     "above the maximum 65535"),
    ('name = "a"\n[[ports]]\nhost = 80\nguest = 80\nproto = "sctp"\n', "ports[0].proto",
     "not one of tcp, udp"),
    ('name = "a"\n[[ports]]\nhost = 80\nguest = 80\n[[ports]]\nhost = 80\nguest = 81\n',
     "ports[1].host", "already used by ports[0]"),
    ('name = "a"\nports = [8080]\n', "ports[0]", "must be a table"),
    ('name = "a"\n[kernel]\npath = "nope/vmlinux"\n', "kernel.path", "does not exist"),
    ('name = "a"\nhypervisor = "qemuu"\n', "hypervisor", 'did you mean "qemu"'),
    ('name = "a"\nservices = 3\n', "services", "must be table of tables"),
    ('name = "a"\n[services]\nweb = "python3 -m http.server"\n', "services.web",
     "must be a table"),
    ('name = "a"\nsource = "nix"\nflake = ".#x"\nstore = "share"\n[services.gc]\n'
     'command = "nix-collect-garbage -d"\n', "services.gc.command",
     "runs `nix-collect-garbage` in a guest that shares the host's Nix store"),
    ('name = "a"\nsource = "nix"\n', "flake", 'is required with source = "nix"'),
]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "cove.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "where", "words"), MISTAKES)
def test_mistake_is_reported_with_key_and_fix(tmp_path: Path, text: str, where: str,
                                              words: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    message = str(caught.value)
    assert f"{path}: {where}: " in message
    assert words in message


def test_all_problems_reported_at_once(tmp_path: Path) -> None:
    path = write(tmp_path, 'vcpu = 0\nmemory = "x"\n')
    with pytest.raises(SpecError) as caught:
        load_spec(path)
    assert {p.where for p in caught.value.problems} == {"name", "vcpu", "memory"}


def test_invalid_toml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, 'name = "a"\nvcpu = \n')
    with pytest.raises(SpecError, match=r"invalid TOML: .*line 2"):
        load_spec(path)


def test_missing_spec_file(tmp_path: Path) -> None:
    with pytest.raises(CoveError, match=r"no cove\.toml here"):
        load_spec(tmp_path)


def test_hello_example_loads() -> None:
    spec = load_spec(ROOT / "examples" / "hello")
    assert spec.name == "hello"
    assert spec.memory_mib == 256
    assert spec.services[0].env == {"PORT": "8080"}
    assert spec.ports[0].host == 8080


def test_schema_accepts_example_and_rejects_unknown_keys() -> None:
    import tomllib

    schema = spec_schema()
    example = tomllib.loads((ROOT / "examples" / "hello" / "cove.toml").read_text())
    jsonschema.validate(example, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "a", "nmae": "b"}, schema)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"name": "a", "services": {"w": {"command": "x",
                                                             "restart": "sometimes"}}}, schema)


def test_sizes_and_durations() -> None:
    assert parse_size_mib("256M") == 256
    assert parse_size_mib("1G") == 1024
    assert parse_size_mib("1GiB") == 1024
    assert parse_size_mib(512) == 512
    assert parse_duration("100ms") == pytest.approx(0.1)
    assert parse_duration("2m") == 120
    assert parse_duration(3) == 3.0


def test_cli_reports_spec_errors_without_traceback(tmp_path: Path) -> None:
    write(tmp_path, 'name = "hello"\n[services.hello]\ncommand = "x"\nrestart = "sometimes"\n')
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", "check", str(tmp_path)],
                            capture_output=True, text=True, check=False)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert 'services.hello.restart: "sometimes" is not one of always, on-failure, never' \
        in result.stderr


def test_cli_schema_is_json() -> None:
    result = subprocess.run([sys.executable, "-m", "cove.cli.main", "schema"],
                            capture_output=True, text=True, check=True)
    assert json.loads(result.stdout)["required"] == ["name"]


def test_a_flake_flag_is_a_whole_spec(tmp_path: Path) -> None:
    from cove.spec.model import Source, StoreMode

    spec = load_spec(tmp_path, {"flake": ".#Web-App", "source": "nix"})
    assert (spec.name, spec.source, spec.flake, spec.store) == (
        "web-app", Source.NIX, ".#Web-App", StoreMode.IMAGE)
