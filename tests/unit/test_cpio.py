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
