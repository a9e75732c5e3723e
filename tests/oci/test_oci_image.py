"""`cove export oci` really gives a working image: the archive passes skopeo and umoci, and
run by a real OCI runtime (Debian's runc) the hello service answers and its health check
passes. The container gets a network namespace of its own; the test reaches it there."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HELLO = ROOT / "examples" / "hello"
pytestmark = pytest.mark.needs_root  # runc runs rootful containers; the CI runs as root


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=300,
                          env=env)


@pytest.fixture(scope="module")
def archive(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("oci")
    env = {**os.environ, "COVE_HOME": str(directory / "home")}
    digests = []
    for name in ("a.oci.tar", "b.oci.tar"):  # the second from the cache: the same bytes
        out = run(sys.executable, "-m", "cove.cli.main", "export", "oci", str(HELLO), "-o",
                  str(directory / name), env=env).stdout
        digests.append(out.split()[2])
    assert digests[0] == digests[1] and digests[0].startswith("sha256:")
    assert (directory / "a.oci.tar").read_bytes() == (directory / "b.oci.tar").read_bytes()
    return directory / "a.oci.tar"


def test_skopeo_and_umoci_accept_the_archive(archive: Path, tmp_path: Path) -> None:
    info = json.loads(run("skopeo", "inspect", f"oci-archive:{archive}:latest").stdout)
    assert "PORT=8080" in info["Env"] and info["Os"] == "linux" and len(info["Layers"]) == 1
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "layout", filter="data")
    stat = run("umoci", "stat", "--image", f"{tmp_path / 'layout'}:latest").stdout
    assert "cove export oci (hello)" in stat


@pytest.fixture
def container(archive: Path, tmp_path: Path) -> Iterator[tuple[str, int]]:
    with tarfile.open(archive) as tar:
        tar.extractall(tmp_path / "layout", filter="data")
    bundle = tmp_path / "bundle"
    run("umoci", "unpack", "--image", f"{tmp_path / 'layout'}:latest", str(bundle))
    config = json.loads((bundle / "config.json").read_text())
    config["process"]["terminal"] = False  # detached, with no console socket
    (bundle / "config.json").write_text(json.dumps(config))
    name = f"cove-{uuid.uuid4().hex[:8]}"
    # the container inherits runc's stdio: no pipes, or reading them would never end
    subprocess.run(["runc", "run", "--detach", "--bundle", str(bundle), name], check=True,
                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                   stderr=subprocess.DEVNULL, timeout=60)
    try:
        pid = json.loads(run("runc", "state", name).stdout)["pid"]
        run("nsenter", f"--net=/proc/{pid}/ns/net", "ip", "link", "set", "lo", "up")
        yield name, pid
    finally:
        subprocess.run(["runc", "delete", "--force", name], capture_output=True, check=False)


def test_runc_runs_the_service_and_its_health_check_passes(container: tuple[str, int]) -> None:
    name, pid = container
    deadline, page = time.monotonic() + 30, ""
    while time.monotonic() < deadline and "Hello from cove" not in page:
        page = subprocess.run(["nsenter", f"--net=/proc/{pid}/ns/net", "curl", "-s", "-m", "2",
                               "http://127.0.0.1:8080/"], capture_output=True, text=True,
                              check=False).stdout
        time.sleep(0.2)
    assert page == "<h1>Hello from cove!</h1>\n"
    health = subprocess.run(["runc", "exec", name, "/bin/sh", "-c",
                             "curl -sf http://localhost:8080/"], capture_output=True,
                            text=True, check=False)
    assert health.returncode == 0, health.stderr
