"""The README `cove export k8s` writes beside the manifests: how to apply them, and what
differs from running the same spec under cove."""

from __future__ import annotations

from typing import Any

from cove.export.k8s import k8s_name

NAMES_STACK = ("each VM of the stack is reached by its member name (a headless Service), "
               "as on the stack's segment")
NAMES_ALONE = "the Service carries the VM's name"


def readme(works: list[Any], runtime_class: str, registry: str) -> str:
    names = [w.spec.name for w in works]
    images = "\n".join(
        f"cove export oci {w.spec.file.parent} -o {k8s_name(w.spec.name)}.oci.tar\n"
        f"skopeo copy oci-archive:{k8s_name(w.spec.name)}.oci.tar docker://{w.image}"
        for w in works)
    forwards = "\n".join(f"kubectl port-forward svc/{k8s_name(w.dns_name)} {p.host}:{p.guest}"
                         for w in works for p in w.spec.ports)
    stack = works[0].stack if works and works[0].stack else ""
    return f"""# {stack or names[0]} on Kubernetes with Kata Containers

Written by `cove export k8s` from {"the stack " + stack if stack else works[0].spec.file}.
Each pod runs in its own lightweight VM: `runtimeClassName: {runtime_class}`.

## Apply

1. Kata Containers on the cluster (kata-deploy installs it and its RuntimeClasses); this
   directory's `runtimeclass.yaml` declares `{runtime_class}` with its pod overhead, for a
   cluster that lacks it.
2. The images, from the same package closure the VMs boot (one per VM):

```sh
{images}
```

3. The manifests:

```sh
kubectl apply -f .
kubectl get pods -l app.kubernetes.io/managed-by=cove
```

Published ports (cove's `ports`; under Kubernetes reach them through the Service):

```sh
{forwards or "# (no ports declared)"}
```

## What differs from cove

- The guest kernel, init and agent are Kata's, not cove's: `kernel`, `hypervisor`,
  `balloon` and `accel` do not apply; the RuntimeClass picks the hypervisor, and the
  `io.katacontainers.config.hypervisor.default_vcpus` / `default_memory` annotations size
  the VM as `vcpu` and `memory` did.
- Each service is a container in the VM's pod; `pre_start` runs before the command in the
  same shell. Pods restart as Kubernetes restarts them (`restartPolicy: Always`).
- Health checks are readiness probes (a startup probe covers `start_period`): an unhealthy
  pod leaves the Service, as an unhealthy VM fails `cove up`.
- Volumes are PersistentVolumeClaims of the declared size (a StatefulSet); their data does
  not come from cove's volume images: copy it in if you need it.
- Config is a ConfigMap at /config, secrets a Secret at /run/secrets (files 0400). They are
  in these manifests as plain data: keep this directory as private as the secrets.
- Names: {NAMES_STACK if stack else NAMES_ALONE}.
"""
