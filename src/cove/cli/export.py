"""`cove export oci` and `cove export k8s`: a spec or stack for engines beyond one host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from cove.errors import die

RUNTIME_CLASS_CHOICES = ["kata", "kata-qemu", "kata-clh", "kata-fc"]


@click.group()
def export() -> None:
    """Export a spec or stack: an OCI image archive, Kubernetes manifests (docs/kubernetes.md)."""


@export.command(name="oci")
@click.argument("spec", type=click.Path(path_type=Path), default=Path("."))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="The archive to write, e.g. hello.oci.tar.")
@click.option("--tag", default="latest", show_default=True, help="The image's ref name.")
def export_oci_command(spec: Path, output: Path, tag: str) -> None:
    """Write SPEC's root image as an OCI image archive (same inputs, same digest)."""
    import re

    from cove.export.oci import export_oci
    from cove.image.build import build_root, default_cache
    from cove.spec.load import load_spec

    if not re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}", tag):
        die(f"--tag {tag!r} is not a valid OCI tag", "letters, digits, '_', '.', '-' (128)")
    loaded = load_spec(spec)
    root = build_root(loaded, default_cache())
    digest = export_oci(loaded, root.path, output, tag)
    click.echo(f"{output}: {loaded.name}:{tag} {digest}")
    click.echo(f"  load it: skopeo copy oci-archive:{output}:{tag} docker://REGISTRY/"
               f"{loaded.name}:{tag}   (or: podman load -i {output})")


@export.command(name="k8s")
@click.argument("target", type=click.Path(path_type=Path), default=Path("."))
@click.option("-o", "--output", type=click.Path(path_type=Path), required=True,
              help="Directory for the manifests and a README.")
@click.option("--runtime-class", type=click.Choice(RUNTIME_CLASS_CHOICES), default="kata",
              show_default=True, help="Kata's RuntimeClass: which hypervisor runs the pods.")
@click.option("--registry", default="localhost/cove", show_default=True,
              help="Where the images are pushed: image = REGISTRY/NAME:latest.")
@click.option("--host-path", is_flag=True,
              help="Mount shares as hostPath volumes (the node's directory of the same path).")
@click.option("--explain", is_flag=True, help="Also list every key mapped and how.")
def export_k8s_command(target: Path, output: Path, runtime_class: str, registry: str,
                       host_path: bool, explain: bool) -> None:
    """Write Kubernetes manifests for a spec or a stack (pods run in Kata VMs)."""
    from cove.export.k8s import export_k8s
    from cove.export.readme import readme
    from cove.spec.stack import stack_file_of

    works = stack_works(target, registry) if stack_file_of(target) else \
        spec_works(target, registry)
    result = export_k8s(works, runtime_class, host_path)
    if result.refused:
        die("cannot export to Kubernetes:\n  " + "\n  ".join(result.refused),
            "--explain lists what maps and how; docs/kubernetes.md has the table")
    write_manifests(output, result.manifests, readme(works, runtime_class, registry))
    for name in [*result.manifests, "README.md"]:
        click.echo(f"wrote {output / name}")
    if explain:
        click.echo("mapped:\n  " + "\n  ".join(result.explained))


def image_for(registry: str, name: str) -> str:
    from cove.export.k8s import k8s_name

    if not registry or any(c.isspace() for c in registry):
        die(f"--registry {registry!r}: not a registry prefix", "e.g. registry.example:5000/me")
    return f"{registry.rstrip('/')}/{k8s_name(name)}:latest"


def spec_works(path: Path, registry: str) -> list[Any]:
    from cove.export.k8s import Workload
    from cove.spec.load import load_spec

    spec = load_spec(path)
    return [Workload(spec, spec.name, image_for(registry, spec.name))]


def stack_works(path: Path, registry: str) -> list[Any]:
    from cove.export.k8s import Workload
    from cove.spec.stack import load_stack

    stack = load_stack(path)
    return [Workload(m.spec, m.key, image_for(registry, m.spec.name), stack.name)
            for m in stack.members]


def write_manifests(directory: Path, manifests: dict[str, list[dict[str, Any]]],
                    readme_text: str) -> None:
    import yaml

    class Plain(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True  # no &id001 anchors: each manifest reads on its own

    if directory.exists() and not directory.is_dir():
        die(f"-o {directory}: exists and is not a directory", "choose another path")
    directory.mkdir(parents=True, exist_ok=True)
    for name, objects in manifests.items():
        (directory / name).write_text(yaml.dump_all(objects, Dumper=Plain, sort_keys=False))
    (directory / "README.md").write_text(readme_text)
