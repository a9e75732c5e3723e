"""`cove export k8s`: a spec or a stack as plain Kubernetes manifests for Kata Containers
(each pod its own lightweight VM). Pure: specs in, manifest dicts and an explanation out.

What cove means and Kubernetes has is mapped (docs/kubernetes.md has the table); what it
has no meaning for is refused with the reason, never silently dropped; what Kata decides
itself (kernel, hypervisor, agent) is said in --explain.
"""

from __future__ import annotations

import base64
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cove.export.oci import shell_command
from cove.spec.model import Health, Proto, Restart, Service, Source, Spec

RUNTIME_CLASSES = {  # handler and pod overhead, as kata-deploy installs them
    "kata": ("kata", "160Mi", "250m"),
    "kata-qemu": ("kata-qemu", "160Mi", "250m"),
    "kata-clh": ("kata-clh", "130Mi", "250m"),
    "kata-fc": ("kata-fc", "130Mi", "250m"),
}
KATA_VCPUS = "io.katacontainers.config.hypervisor.default_vcpus"
KATA_MEMORY = "io.katacontainers.config.hypervisor.default_memory"


@dataclass
class Export:
    manifests: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # file -> objects
    explained: list[str] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    def say(self, key: str, how: str) -> None:
        if (line := f"{key}: {how}") not in self.explained:
            self.explained.append(line)


@dataclass(frozen=True)
class Workload:
    spec: Spec
    dns_name: str  # what other workloads call it: the member's name in a stack
    image: str
    stack: str = ""


def k8s_name(text: str) -> str:
    """A DNS-1035 label from a cove name (letters, digits, '-'; a letter first)."""
    name = re.sub(r"[^a-z0-9-]", "-", text.lower()).strip("-")[:63]
    return name if name[:1].isalpha() else f"vm-{name}"[:63]


def seconds(value: float) -> int:
    return max(1, math.ceil(value))


def probes(health: Health) -> dict[str, Any]:
    check = {"exec": {"command": ["/bin/sh", "-c", health.command]},
             "periodSeconds": seconds(health.interval), "timeoutSeconds": seconds(health.timeout)}
    found: dict[str, Any] = {"readinessProbe": {**check, "failureThreshold": health.retries}}
    if health.start_period > 0:
        found["startupProbe"] = {**check, "failureThreshold": max(
            1, math.ceil(health.start_period / health.interval))}
    return found


def container(work: Workload, service: Service, first: bool, mounts: list[dict[str, Any]],
              out: Export) -> dict[str, Any]:
    spec = work.spec
    env = {**spec.env, **service.env}
    body: dict[str, Any] = {"name": k8s_name(service.name), "image": work.image,
                            "command": shell_command(service),
                            "env": [{"name": k, "value": v} for k, v in env.items()]}
    if service.user == "root" or service.user.isdigit():
        body["securityContext"] = {"runAsUser": 0 if service.user == "root" else
                                   int(service.user)}
    else:
        out.refused.append(f"{spec.file}: services.{service.name}.user = \"{service.user}\": "
                           "Kubernetes runs containers by uid; give the uid instead")
    if service.restart is Restart.NEVER:
        out.refused.append(f"{spec.file}: services.{service.name}.restart = \"never\": a "
                           "Deployment's pods always restart; use \"on-failure\" or \"always\"")
    if service.health:
        body.update(probes(service.health))
    if first:
        size = {"cpu": str(spec.vcpu), "memory": f"{spec.memory_mib}Mi"}
        body["resources"] = {"requests": size, "limits": size}
        if spec.ports:
            body["ports"] = [{"containerPort": p.guest, "protocol": p.proto.value.upper()}
                             for p in spec.ports]
    if mounts:
        body["volumeMounts"] = mounts
    return body


Items = tuple[dict[str, str], dict[str, str], list[dict[str, str]]]


def config_map_items(directory: Path) -> Items:
    """A directory as ConfigMap or Secret data: keys cannot hold '/', so nested files get a
    flat key and an `items` path that puts them back in place."""
    text: dict[str, str] = {}
    binary: dict[str, str] = {}
    items = []
    for path in sorted(p for p in directory.rglob("*") if p.is_file()):
        relative = path.relative_to(directory).as_posix()
        key = re.sub(r"[^A-Za-z0-9._-]", "_", relative.replace("/", "__"))
        data = path.read_bytes()
        try:
            text[key] = data.decode()
        except UnicodeDecodeError:
            binary[key] = base64.b64encode(data).decode()
        items.append({"key": key, "path": relative})
    return text, binary, items


def labels(work: Workload) -> dict[str, str]:
    found = {"app.kubernetes.io/name": k8s_name(work.spec.name),
             "app.kubernetes.io/managed-by": "cove"}
    if work.stack:
        found["app.kubernetes.io/part-of"] = k8s_name(work.stack)
    return found


def meta(name: str, work: Workload) -> dict[str, Any]:
    return {"name": name, "labels": labels(work)}


def storage(work: Workload, host_path: bool, out: Export
            ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]],
                       list[dict[str, Any]]]:
    """(pod volumes, mounts, claim templates, ConfigMaps/Secrets) for a workload."""
    spec, name = work.spec, k8s_name(work.spec.name)
    volumes: list[dict[str, Any]] = []
    mounts: list[dict[str, Any]] = []
    claims: list[dict[str, Any]] = []
    objects: list[dict[str, Any]] = []
    for kind, directory, target in (("ConfigMap", spec.config, "/config"),
                                    ("Secret", spec.secrets, "/run/secrets")):
        if directory is None:
            continue
        text, binary, items = config_map_items(directory)
        volume = f"{kind.lower()}-{name}"[:63]
        if kind == "ConfigMap":
            objects.append({"apiVersion": "v1", "kind": kind, "metadata": meta(f"{name}-config",
                            work), "data": text, **({"binaryData": binary} if binary else {})})
            volumes.append({"name": volume, "configMap": {"name": f"{name}-config",
                                                          "items": items}})
            out.say("config", "a ConfigMap, mounted read-only at /config")
        else:
            data = {**{k: base64.b64encode(v.encode()).decode() for k, v in text.items()},
                    **binary}
            objects.append({"apiVersion": "v1", "kind": kind, "type": "Opaque",
                            "metadata": meta(f"{name}-secrets", work), "data": data})
            volumes.append({"name": volume, "secret": {"secretName": f"{name}-secrets",
                                                       "defaultMode": 0o400, "items": items}})
            out.say("secrets", "a Secret at /run/secrets, files 0400 (defaultMode: 256)")
        mounts.append({"name": volume, "mountPath": target, "readOnly": True})
    for index, share in enumerate(spec.shares):
        if not host_path:
            out.refused.append(f"{spec.file}: shares[{index}] ({share.source}): a host "
                               "directory does not travel to a cluster's nodes; use a volume, "
                               "or pass --host-path to mount the same path of the node")
            continue
        volumes.append({"name": f"share-{index}", "hostPath": {"path": str(share.source),
                                                               "type": "Directory"}})
        mounts.append({"name": f"share-{index}", "mountPath": share.target,
                       "readOnly": share.readonly})
        out.say("shares", "hostPath volumes (--host-path): the node's directory of that path")
    for disk in spec.volumes:
        claim = k8s_name(disk.source.rsplit("/", 1)[-1].removesuffix(".ext4"))
        mounts.append({"name": claim, "mountPath": disk.target})
        if spec.ephemeral:
            volumes.append({"name": claim, "emptyDir": {"sizeLimit": f"{disk.size_mib}Mi"}})
            out.say("ephemeral", "volumes become emptyDir: thrown away with the pod")
            continue
        claims.append({"metadata": {"name": claim}, "spec": {
            "accessModes": ["ReadWriteOnce"],
            "resources": {"requests": {"storage": f"{disk.size_mib}Mi"}}}})
        out.say("volumes", "a StatefulSet's volumeClaimTemplates: a PVC of the declared size "
                           "per pod")
    return volumes, mounts, claims, objects


def refuse_meaningless(spec: Spec, out: Export) -> None:
    if spec.source is Source.NIX:
        out.refused.append(f"{spec.file}: source = \"nix\": cove exports no image of a flake; "
                           "build one with nixpkgs' dockerTools and deploy that")
    if spec.idle_suspend_after:
        out.refused.append(f"{spec.file}: idle.suspend_after: Kubernetes does not suspend "
                           "idle pods; remove [idle] (scale to zero with KEDA or Knative)")
    if spec.auto_forward:
        out.refused.append(f"{spec.file}: auto_forward: a pod's ports are declared; list them "
                           "as [[ports]] instead")
    if not spec.services:
        out.refused.append(f"{spec.file}: no [services]: a pod needs a container to run")


def explain_defaults(spec: Spec, runtime_class: str, out: Export) -> None:
    out.say("services.*", "one container each in the VM's pod, image from `cove export oci`; "
                          "pre_start runs first in the same shell (/bin/sh -c)")
    out.say("services.*.health", "readinessProbe (interval -> periodSeconds, timeout -> "
                                 "timeoutSeconds, retries -> failureThreshold); start_period "
                                 "-> a startupProbe of ceil(start_period/interval) tries")
    out.say("services.*.restart", "a Deployment's pods always restart (\"never\" is refused)")
    out.say("vcpu, memory", f"requests = limits on the first container, and Kata's "
                            f"{KATA_VCPUS} / {KATA_MEMORY} annotations")
    out.say("ports", "containerPorts, and a Service (port = host, targetPort = guest)")
    out.say("env", "container env (the VM's env under each service's own)")
    out.say("hypervisor, kernel, accel, balloon", f"Kata's to decide: runtimeClassName "
                                                  f"{runtime_class} picks its hypervisor")
    out.say("restart", "pods restart by Kubernetes; restart.max has no counterpart")
    if spec.network not in ("user", "none"):
        out.say("network", "the pod network; names resolve through Services")


def workload_objects(work: Workload, runtime_class: str, host_path: bool,
                     out: Export) -> list[dict[str, Any]]:
    spec, name = work.spec, k8s_name(work.spec.name)
    refuse_meaningless(spec, out)
    explain_defaults(spec, runtime_class, out)
    volumes, mounts, claims, objects = storage(work, host_path, out)
    pod: dict[str, Any] = {"runtimeClassName": runtime_class, "containers": [
        container(work, s, i == 0, mounts, out) for i, s in enumerate(spec.services)]}
    if volumes:
        pod["volumes"] = volumes
    template = {"metadata": {"labels": labels(work), "annotations": {
        KATA_VCPUS: str(spec.vcpu), KATA_MEMORY: str(spec.memory_mib)}}, "spec": pod}
    body: dict[str, Any] = {"replicas": 1, "selector": {"matchLabels": labels(work)},
                            "template": template}
    kind = "StatefulSet" if claims else "Deployment"
    if claims:
        body["serviceName"] = k8s_name(work.dns_name)
        body["volumeClaimTemplates"] = claims
    objects.append({"apiVersion": "apps/v1", "kind": kind, "metadata": meta(name, work),
                    "spec": body})
    if service := service_object(work, bool(claims)):
        objects.append(service)
    return objects


def service_object(work: Workload, governing: bool) -> dict[str, Any] | None:
    """In a stack: a headless Service by the member's name, so it resolves to the pod and
    every port answers, as on the stack's segment. Alone: a Service of the declared ports."""
    spec = work.spec
    ports = [{"name": f"{p.proto.value}-{p.host}", "port": p.guest if work.stack else p.host,
              "targetPort": p.guest, "protocol": p.proto.value.upper()} for p in spec.ports]
    if not (ports or work.stack or governing):
        return None
    body: dict[str, Any] = {"selector": labels(work)}
    if work.stack or not ports:
        body["clusterIP"] = "None"
    if ports:
        body["ports"] = ports
    return {"apiVersion": "v1", "kind": "Service", "metadata": meta(k8s_name(work.dns_name),
                                                                     work), "spec": body}


def runtime_class_object(name: str) -> dict[str, Any]:
    handler, memory, cpu = RUNTIME_CLASSES[name]
    return {"apiVersion": "node.k8s.io/v1", "kind": "RuntimeClass",
            "metadata": {"name": name, "labels": {"app.kubernetes.io/managed-by": "cove"}},
            "handler": handler, "overhead": {"podFixed": {"memory": memory, "cpu": cpu}}}


def export_k8s(works: list[Workload], runtime_class: str, host_path: bool) -> Export:
    out = Export()
    out.manifests["runtimeclass.yaml"] = [runtime_class_object(runtime_class)]
    for work in works:
        out.manifests[f"{k8s_name(work.spec.name)}.yaml"] = workload_objects(
            work, runtime_class, host_path, out)
    if any(w.stack for w in works):
        out.say("a stack", "one headless Service per VM, named as in the stack; depends_on "
                           "has no counterpart: pods start together, readiness gates traffic")
    if any(p.proto is Proto.UDP for w in works for p in w.spec.ports):
        out.say("ports (udp)", "UDP containerPorts and Service ports")
    return out
