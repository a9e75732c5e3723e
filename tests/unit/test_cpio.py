"""The cpio writer, checked by reading its output back with GNU cpio."""

from __future__ import annotations

import io
import subprocess
from pathlib import Path

from cove.image.cpio import CpioWriter
from cove.image.initramfs import BootConfig, config_archive, render_env


def test_gnu_cpio_reads_what_we_write(tmp_path: Path) -> None:
    buffer = io.BytesIO()
    writer = CpioWriter(buffer)
    writer.parents("a/b/file")
    writer.file("a/b/file", b"hello\n", 0o640)
    writer.file("a/odd", b"x" * 5)
    writer.symlink("a/link", "b/file")
    writer.close()
    data = buffer.getvalue()
    assert len(data) % 512 == 0
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
    boot = BootConfig({"name": "x"}, {"COVE_IP": "10.0.2.15/24"}, ("virtio.ko",),
                      ("disk cove-vol0 /data ext4",), {"secrets/token": b"s3cret"})
    data = first.getvalue() + config_archive(boot)
    listing = subprocess.run(["cpio", "-t", "--quiet"], input=data, capture_output=True,
                             check=True).stdout.decode().split()
    assert listing[0] == "base"
    # GNU cpio stops at the first trailer; the kernel reads on, so check the second part too
    second = subprocess.run(["cpio", "-t", "--quiet"], input=data[len(first.getvalue()):],
                            capture_output=True, check=True).stdout.decode().split()
    assert second == ["cove/config.json", "cove/init.env", "cove/load", "cove/mounts", "cove",
                      "cove/secrets", "cove/secrets/token"]


def test_env_file_quotes_for_sh() -> None:
    text = render_env({"A": "it's", "B": "x y"})
    result = subprocess.run(["sh", "-c", text + 'printf "%s|%s" "$A" "$B"'],
                            capture_output=True, text=True, check=True)
    assert result.stdout == "it's|x y"


def test_guest_bytecode_has_the_future_flag_without_importing_future() -> None:
    """The agent's modules keep postponed annotations, but their bytecode no longer imports
    the __future__ module at boot; line numbers stay as in the source."""
    import marshal
    import sys
    from typing import Any

    from cove.image.initramfs import GUEST_PACKAGE_INIT, agent_sources, bytecode

    source = (b'"""doc"""\nfrom __future__ import annotations\n\n'
              b"def f(x: Undefined) -> None:\n    raise ValueError(x)\n")
    path, data = bytecode("cove/guest/m.py", source)
    assert path == f"cove/cove/guest/__pycache__/m.{sys.implementation.cache_tag}.pyc"
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
