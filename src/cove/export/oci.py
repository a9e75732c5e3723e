"""`cove export oci`: the spec's root image (the very image its VMs boot) as an OCI image
archive, one layer, byte-for-byte the same for the same inputs.

Determinism: entries sorted, every mtime 0, owners numeric without names, gzip without a
timestamp, JSON with sorted keys. The config's command is the spec's first service (pre_start
first, in the same shell), so `podman run` or a Kata pod runs what the VM ran.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import stat
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cove.errors import die
from cove.host.proc import run
from cove.spec.model import Service, Source, Spec

MEDIA = "application/vnd.oci.image"
EPOCH = "1970-01-01T00:00:00Z"
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True)
class Blob:
    media_type: str
    data: bytes

    @property
    def digest(self) -> str:
        return "sha256:" + hashlib.sha256(self.data).hexdigest()

    def descriptor(self, **extra: Any) -> dict[str, Any]:
        return {"mediaType": self.media_type, "digest": self.digest, "size": len(self.data),
                **extra}


def canonical_json(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def shell_command(service: Service) -> list[str]:
    """The service as one container command: pre_start, then the command in its place."""
    script = service.command if not service.pre_start.strip() else \
        f"set -e\n{service.pre_start.strip()}\nexec {service.command}"
    return ["/bin/sh", "-c", script]


def image_config(spec: Spec, diff_id: str) -> dict[str, Any]:
    service = spec.services[0] if spec.services else None
    env = {"PATH": DEFAULT_PATH, **spec.env, **(service.env if service else {})}
    config: dict[str, Any] = {
        "Env": [f"{key}={value}" for key, value in env.items()],
        "WorkingDir": "/",
        "Labels": {"org.opencontainers.image.title": spec.name,
                   "dev.cove.spec": spec.name},
    }
    if service is not None:
        config["Cmd"] = shell_command(service)
        config["User"] = "0" if service.user == "root" else service.user
    if spec.ports:
        config["ExposedPorts"] = {f"{p.guest}/{p.proto}": {} for p in spec.ports}
    return {"created": EPOCH, "architecture": "amd64", "os": "linux", "config": config,
            "rootfs": {"type": "layers", "diff_ids": [diff_id]},
            "history": [{"created": EPOCH, "created_by": f"cove export oci ({spec.name})"}]}


def layer_tar(tree: Path) -> bytes:
    """The tree as a tar stream with stable order, times and owners."""
    as_root = os.geteuid() == 0  # otherwise unsquashfs gave every file to us: root owns all
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as archive:
        for path in sorted(walk(tree), key=lambda p: p.relative_to(tree).as_posix()):
            info = archive.gettarinfo(str(path), arcname=path.relative_to(tree).as_posix())
            info.mtime, info.uname, info.gname = 0, "", ""
            if not as_root:
                info.uid = info.gid = 0
            info.pax_headers = {}
            if info.isreg():
                with path.open("rb") as handle:
                    archive.addfile(info, handle)
            else:
                archive.addfile(info)
    return buffer.getvalue()


def walk(tree: Path) -> list[Path]:
    """Every entry below `tree`; a symlink to a directory is an entry, not descended."""
    found = []
    for directory, dirs, files in os.walk(tree, followlinks=False):
        found += [Path(directory) / name for name in dirs + files]
    return found


def extract_root(image: Path, into: Path) -> Path:
    tree = into / "tree"
    run(["unsquashfs", "-no-progress", "-quiet", "-no-xattrs", "-d", str(tree), str(image)],
        what="unsquashfs of the root image")
    return tree


def oci_blobs(spec: Spec, tree: Path) -> tuple[Blob, Blob, Blob]:
    raw = layer_tar(tree)
    layer = Blob(f"{MEDIA}.layer.v1.tar+gzip", gzip.compress(raw, 6, mtime=0))
    diff_id = "sha256:" + hashlib.sha256(raw).hexdigest()
    config = Blob(f"{MEDIA}.config.v1+json", canonical_json(image_config(spec, diff_id)))
    manifest = Blob(f"{MEDIA}.manifest.v1+json", canonical_json({
        "schemaVersion": 2, "mediaType": f"{MEDIA}.manifest.v1+json",
        "config": config.descriptor(), "layers": [layer.descriptor()]}))
    return layer, config, manifest


def write_archive(out: Path, tag: str, blobs: tuple[Blob, Blob, Blob]) -> None:
    """An OCI image layout as a tar (what `skopeo copy oci-archive:...` reads)."""
    manifest = blobs[2]
    index = {"schemaVersion": 2, "manifests": [manifest.descriptor(
        annotations={"org.opencontainers.image.ref.name": tag})]}
    files = [("oci-layout", canonical_json({"imageLayoutVersion": "1.0.0"})),
             ("index.json", canonical_json(index)),
             *((f"blobs/sha256/{b.digest.split(':')[1]}", b.data) for b in blobs)]
    tmp = out.with_name(f".{out.name}.tmp")
    with tarfile.open(tmp, "w", format=tarfile.PAX_FORMAT) as archive:
        for directory in ("blobs", "blobs/sha256"):
            info = tarfile.TarInfo(directory)
            info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 0
            archive.addfile(info)
        for name, data in files:
            info = tarfile.TarInfo(name)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            archive.addfile(info, io.BytesIO(data))
    tmp.replace(out)


def export_oci(spec: Spec, root_image: Path, out: Path, tag: str = "latest") -> str:
    """Write the archive; returns the manifest's digest."""
    if spec.source is Source.NIX:
        die(f"{spec.file}: cove export oci takes source = \"host\" or \"debian\" specs",
            "a Nix flake builds OCI images itself: nixpkgs' dockerTools.buildLayeredImage")
    if not out.parent.is_dir():
        die(f"-o {out}: no directory {out.parent}", "create it, or write elsewhere")
    with tempfile.TemporaryDirectory(prefix="cove-oci-") as scratch:
        tree = extract_root(root_image, Path(scratch))
        blobs = oci_blobs(spec, tree)
        for path in [tree, *walk(tree)]:  # read-only directories: writable, to remove them
            if path.is_dir() and not path.is_symlink():
                path.chmod(stat.S_IMODE(path.stat().st_mode) | 0o700)
    write_archive(out, tag, blobs)
    return blobs[2].digest
