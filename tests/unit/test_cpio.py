"""The cpio writer, checked by reading its output back with GNU cpio."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from cove.image.cpio import CpioWriter
from cove.image.initramfs import BootConfig, config_archive, render_env
from cove.vm.storage import agent_c_modules


def test_gnu_cpio_reads_what_we_write(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    writer = CpioWriter(buffer)
    writer.parents("a/b/file")
    writer.file("a/b/file", b"hello\n", 0o640)
    writer.file("a/odd", b"x" * 5)
    writer.symlink("a/link", "b/file")
    writer.char_device("a/null", 1, 3)
    writer.close()
    data = buffer.getvalue()
    assert len(data) % 512 == 0
    listing = subprocess.run(["cpio", "-tv", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode()
    null = next(line.split() for line in listing.splitlines() if line.endswith("a/null"))
    assert null[0] == "crw-rw-rw-" and null[4:6] == ["1,", "3"], null
    out = tmp_path / "out"
    out.mkdir()
    subprocess.run(["cpio", "-idm", "--quiet"], input=data, cwd=out, check=True)
    assert (out / "a" / "b" / "file").read_bytes() == b"hello\n"
    assert (out / "a" / "b" / "file").stat().st_mode & 0o777 == 0o640
    assert (out / "a" / "odd").read_bytes() == b"xxxxx"
    assert (out / "a" / "link").readlink() == Path("b/file")


def test_config_archive_concatenates(tmp_path: Path) -> None:
    first = io.BytesIO()
    writer = CpioWriter(first)
    writer.file("base", b"1")
    writer.close()
    boot = BootConfig({"name": "x"}, {"COVE_IP": "10.0.2.15/24"}, load=("virtio.ko",),
                      later=("evdev.ko",), mounts=("disk cove-vol0 /data ext4",),
                      files={"secrets/token": b"s3cret", "upper/cove/nix-db": b"db"})
    data = first.getvalue() + config_archive(boot)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing[0] == "base"
    # GNU cpio stops at the first trailer; the kernel reads on, so check the second part too
    second = subprocess.run(["cpio", "-t", "--quiet"], input=data[len(first.getvalue()):],
                            capture_output=True, check=True).stdout.decode().split()
    # secrets never under upper/, the root's upper layer: /init mounts them in a tmpfs
    assert second == ["upper/cove/config.json", "cove/init.env", "cove/load", "cove/later",
                      "cove/go", "cove/mounts", "secrets", "secrets/token", "upper", "upper/cove",
                      "upper/cove/nix-db"]


def test_env_file_quotes_for_sh() -> None:
    text = render_env({"A": "it's", "B": "x y"})
    result = subprocess.run(["sh", "-c", text + 'printf "%s|%s" "$A" "$B"'],
                            capture_output=True, text=True, check=True)
    assert result.stdout == "it's|x y"


def test_guest_bytecode_has_the_future_flag_without_importing_future() -> None:
    """The agent's modules keep postponed annotations, but their bytecode no longer imports
    the __future__ module at boot; line numbers stay as in the source."""
    import marshal
    from typing import Any

    from cove.image.initramfs import GUEST_PACKAGE_INIT, agent_sources, bytecode

    source = (b'"""doc"""\nfrom __future__ import annotations\n\n'
              b"def f(x: Undefined) -> None:\n    raise ValueError(x)\n")
    path, data = bytecode("cove/guest/m.py", source)
    assert path == f"cove/guest/__pycache__/m.{sys.implementation.cache_tag}.pyc"
    code = marshal.loads(data[16:])
    assert "__future__" not in code.co_names and "annotations" not in code.co_names
    space: dict[str, Any] = {}
    exec(code, space)  # an unresolvable annotation is fine: it stays a string
    function = space["f"]
    assert function.__annotations__ == {"x": "Undefined", "return": "None"}
    assert function.__code__.co_firstlineno == 4
    sources = agent_sources()
    assert sources["cove/__init__.py"] == GUEST_PACKAGE_INIT
    for name, text in sources.items():  # every shipped module compiles this way
        bytecode(name, text)


def test_the_agent_imports_bytecode_and_falls_back_to_source(tmp_path: Path) -> None:
    """The guest imports its agent from /cove/lib: bytecode under the same Python; a guest
    Python of another version finds no bytecode of its own tag and compiles the source."""
    from cove.image.initramfs import agent_files, agent_sources

    def imported(files: dict[str, bytes], lib: Path) -> str:
        for relative, data in files.items():
            (lib / relative).parent.mkdir(parents=True, exist_ok=True)
            (lib / relative).write_bytes(data)
        program = "import sys; sys.path[0] = sys.argv[1]; from cove.guest import agent, proto"
        return subprocess.run([sys.executable, "-S", "-B", "-v", "-c", program, str(lib)],
                              capture_output=True, text=True, check=True).stderr

    files = agent_files(agent_sources())
    tag = sys.implementation.cache_tag
    same = imported(files, tmp_path / "same")
    assert f"code object from '{tmp_path}/same/cove/guest/__pycache__/proto.{tag}.pyc'" in same
    other = imported({name.replace(tag, "cpython-399"): data for name, data in files.items()},
                     tmp_path / "other")
    assert f"code object from '{tmp_path}/other/cove/guest/__pycache__" not in other
    assert f"code object from {tmp_path}/other/cove/guest/proto.py" in other  # (compiled)


def test_fstab_is_what_busybox_mount_reads() -> None:
    """/init's one `mount -a -T /fstab`: six fields a line, the moves first (the mounts
    under /newroot/dev need the moved /dev)."""
    from cove.image.initramfs import FSTAB

    lines = [line.split() for line in FSTAB.decode().splitlines()]
    assert all(len(fields) == 6 for fields in lines)
    targets = [fields[1] for fields in lines]
    assert targets.index("/newroot/dev") < targets.index("/newroot/dev/pts")
    assert [f[0] for f in lines if f[3] == "move"] == ["/dev", "/proc", "/sys"]


def test_the_agents_c_modules_come_from_the_hosts_python3() -> None:
    """What a host-source root's agent gets beside its zip: the host python3's own `_json`
    (Debian's, not the interpreter cove runs under)."""
    modules = agent_c_modules()
    version = Path("/usr/bin/python3").resolve().name
    assert [Path(name).name for name in modules] == [
        p.name for p in Path("/usr/lib", version, "lib-dynload").glob("_json.*.so")]
    assert all(name.startswith("upper/cove/lib/") for name in modules)
    assert all(data.startswith(b"\x7fELF") for data in modules.values())
    assert agent_c_modules(Path("/nonexistent/python3.99")) == {}
