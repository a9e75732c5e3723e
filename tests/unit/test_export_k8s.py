"""`cove export k8s`: every manifest deserializes strictly into the official kubernetes
client's models (no unknown field at any depth, every required field present), and the
mapping of a spec's keys is what docs/kubernetes.md says."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes.client
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
KINDS = {("apps/v1", "Deployment"): "V1Deployment", ("apps/v1", "StatefulSet"): "V1StatefulSet",
         ("v1", "Service"): "V1Service", ("v1", "ConfigMap"): "V1ConfigMap",
         ("v1", "Secret"): "V1Secret", ("node.k8s.io/v1", "RuntimeClass"): "V1RuntimeClass"}
PRIMITIVES: dict[str, type | tuple[type, ...]] = {
    "str": str, "int": int, "bool": bool, "float": (int, float), "object": object,
    "bytes": str}  # Secret data: base64 text in a manifest


def strict(data: Any, type_name: str, where: str) -> Any:
    """`data` as the model `type_name`, refusing any key the model does not have."""
    if match := re.fullmatch(r"List\[(.+)\]", type_name):
        assert isinstance(data, list), f"{where}: not a list"
        return [strict(item, match[1], f"{where}[{i}]") for i, item in enumerate(data)]
    if match := re.fullmatch(r"Dict\[str, (.+)\]", type_name):
        assert isinstance(data, dict), f"{where}: not a map"
        return {key: strict(value, match[1], f"{where}.{key}") for key, value in data.items()}
    if type_name in PRIMITIVES:
        assert isinstance(data, PRIMITIVES[type_name]), f"{where}: not {type_name}: {data!r}"
        assert not (type_name == "int" and isinstance(data, bool)), where
        return data
    model = getattr(kubernetes.client, type_name)
    assert isinstance(data, dict), f"{where}: not an object"
    attribute = {json_key: attr for attr, json_key in model.attribute_map.items()}
    unknown = set(data) - set(attribute)
    assert not unknown, f"{where}: unknown fields {sorted(unknown)} for {type_name}"
    values = {attribute[key]: strict(value, model.openapi_types[attribute[key]],
                                     f"{where}.{key}") for key, value in data.items()}
    return model(**values)  # the client's own validation: required fields must be present


def export(target: Path, out: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cove.cli.main", "export", "k8s", str(target),
                           "-o", str(out), *flags], capture_output=True, text=True, check=False)


def objects(out: Path) -> dict[tuple[str, str], dict[str, Any]]:
    found = {}
    for path in sorted(out.glob("*.yaml")):
        for item in yaml.safe_load_all(path.read_text()):
            kind = KINDS[(item["apiVersion"], item["kind"])]
            strict(item, kind, f"{path.name}:{item['kind']}")
            found[(item["kind"], item["metadata"]["name"])] = item
    return found


def test_the_validator_refuses_unknown_and_missing_fields() -> None:
    with pytest.raises(AssertionError, match="unknown fields"):
        strict({"apiVersion": "v1", "kind": "Service", "spec": {"selectr": {}}}, "V1Service", "s")
    with pytest.raises(ValueError, match="Field required"):  # pydantic says what is missing
        strict({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {}}},
               "V1Deployment", "d")


def test_hello_maps_to_a_deployment_a_service_and_a_runtime_class(tmp_path: Path) -> None:
    result = export(ROOT / "examples" / "hello", tmp_path / "out", "--runtime-class", "kata-fc",
                    "--explain")
    assert result.returncode == 0, result.stderr
    found = objects(tmp_path / "out")
    deployment = found[("Deployment", "hello")]
    pod = deployment["spec"]["template"]
    assert pod["spec"]["runtimeClassName"] == "kata-fc"
    assert pod["metadata"]["annotations"] == {
        "io.katacontainers.config.hypervisor.default_vcpus": "1",
        "io.katacontainers.config.hypervisor.default_memory": "256"}
    hello = pod["spec"]["containers"][0]
    assert hello["command"][:2] == ["/bin/sh", "-c"]
    assert hello["command"][2].startswith("set -e\nmkdir -p /tmp/www\n")  # pre_start first
    assert hello["command"][2].endswith("exec python3 -m http.server 8080 --directory /tmp/www")
    assert hello["readinessProbe"]["periodSeconds"] == 5
    assert hello["readinessProbe"]["timeoutSeconds"] == 2
    assert hello["readinessProbe"]["failureThreshold"] == 3
    assert hello["startupProbe"]["failureThreshold"] == 12  # 60 s start period / 5 s
    assert hello["resources"] == {"requests": {"cpu": "1", "memory": "256Mi"},
                                  "limits": {"cpu": "1", "memory": "256Mi"}}
    assert hello["ports"] == [{"containerPort": 8080, "protocol": "TCP"}]
    service = found[("Service", "hello")]["spec"]
    assert service["ports"] == [{"name": "tcp-8080", "port": 8080, "targetPort": 8080,
                                 "protocol": "TCP"}]
    runtime = found[("RuntimeClass", "kata-fc")]
    assert runtime["handler"] == "kata-fc" and runtime["overhead"]["podFixed"]["memory"]
    assert "services.*.health: readinessProbe" in result.stdout
    readme = (tmp_path / "out" / "README.md").read_text()
    assert "kubectl apply -f ." in readme and "Kata's" in readme


DATA_SPEC = '''name = "pg_1"
packages = ["python3"]
config = "config"
secrets = "secrets"
[services.db]
command = "sleep 1000"
user = "999"
[[volumes]]
source = "pgdata"
target = "/var/lib/pg"
size = "2G"
'''


def test_volumes_config_and_secrets(tmp_path: Path) -> None:
    spec = tmp_path / "pg"
    (spec / "config" / "conf.d").mkdir(parents=True)
    (spec / "config" / "conf.d" / "main.conf").write_text("port = 5432\n")
    (spec / "secrets").mkdir()
    (spec / "secrets" / "password").write_text("s3cret")
    (spec / "cove.toml").write_text(DATA_SPEC)
    result = export(spec, tmp_path / "out")
    assert result.returncode == 0, result.stderr
    found = objects(tmp_path / "out")
    state = found[("StatefulSet", "pg-1")]["spec"]
    assert state["serviceName"] == "pg-1" and ("Service", "pg-1") in found
    claim = state["volumeClaimTemplates"][0]
    assert claim["spec"]["resources"]["requests"]["storage"] == "2048Mi"
    pod = state["template"]["spec"]
    mounts = {m["mountPath"]: m for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["/config"]["readOnly"] and mounts["/run/secrets"]["readOnly"]
    assert "/var/lib/pg" in mounts
    assert pod["containers"][0]["securityContext"] == {"runAsUser": 999}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["secret-pg-1"]["secret"]["defaultMode"] == 0o400
    assert volumes["configmap-pg-1"]["configMap"]["items"] == [
        {"key": "conf.d__main.conf", "path": "conf.d/main.conf"}]
    assert found[("ConfigMap", "pg-1-config")]["data"] == {"conf.d__main.conf": "port = 5432\n"}
    assert found[("Secret", "pg-1-secrets")]["data"] == {"password": "czNjcmV0"}


def test_a_stack_gives_one_headless_service_per_vm(tmp_path: Path) -> None:
    result = export(ROOT / "examples" / "stack", tmp_path / "out")
    assert result.returncode == 0, result.stderr
    found = objects(tmp_path / "out")
    for member in ("db", "web"):
        service = found[("Service", member)]
        assert service["spec"]["clusterIP"] == "None"  # the name resolves to the pod
        assert service["metadata"]["labels"]["app.kubernetes.io/part-of"] == "demo"
    web = found[("Deployment", "demo-web")]["spec"]["template"]["spec"]["containers"][0]
    assert {"name": "GREETING", "value": "hello from the stack"} in web["env"]
    assert "kubectl port-forward svc/web 8090:8080" in (tmp_path / "out" / "README.md").read_text()


@pytest.mark.parametrize(("extra", "message"), [
    ('[[shares]]\nsource = "."\ntarget = "/src"\n', "does not travel to a cluster's nodes"),
    ("[idle]\nsuspend_after = \"10m\"\n", "Kubernetes does not suspend idle pods"),
    ('auto_forward = true\n', "a pod's ports are declared"),
])
def test_what_has_no_kubernetes_meaning_is_refused(tmp_path: Path, extra: str,
                                                   message: str) -> None:
    spec = tmp_path / "s"
    spec.mkdir()
    (spec / "cove.toml").write_text('name = "s"\n' + extra.replace("[", "\n[", 1)
                                    + '\n[services.a]\ncommand = "true"\nrestart = "never"\n'
                                    'user = "www-data"\n')
    result = export(spec, tmp_path / "out")
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert message in result.stderr
    assert 'restart = "never": a Deployment\'s pods always restart' in result.stderr
    assert 'user = "www-data": Kubernetes runs containers by uid' in result.stderr
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_host_path_mounts_a_share_when_asked(tmp_path: Path) -> None:
    spec = tmp_path / "s"
    (spec / "src").mkdir(parents=True)
    (spec / "cove.toml").write_text('name = "dev"\n[[shares]]\nsource = "src"\ntarget = "/src"\n'
                                    '[services.a]\ncommand = "sleep 1000"\n')
    result = export(spec, tmp_path / "out", "--host-path")
    assert result.returncode == 0, result.stderr
    pod = objects(tmp_path / "out")[("Deployment", "dev")]["spec"]["template"]["spec"]
    assert pod["volumes"] == [{"name": "share-0", "hostPath": {"path": str(spec / "src"),
                                                               "type": "Directory"}}]
