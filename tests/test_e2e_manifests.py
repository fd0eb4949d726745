"""End to end: deploy/manifests created on a real kube-apiserver, and kube-scheduler started on their config.

The API server authorizes with RBAC. Every object of deploy/manifests/*.yaml is created,
namespaces first (server-side dry run is not in every release), and read back: the API server
validated it and kept every field sent (1.20 silently drops fields it does not know, so
"created" alone would prove little). A pod from the Deployment's template goes through
admission too. Then kube-scheduler 1.20 runs the ConfigMap's v1beta1 configuration as the
Deployment's command does, and the extender the ConfigMap's extender.toml, each with a token of
its own service account: kube-scheduler wins its Lease and answers its liveness probe's HTTPS
/healthz, and the two bind a GPU pod with no request refused. The v1beta2 configuration, which
1.20 does not know, is refused, which shows that a start means acceptance. (v1beta2, v1beta3
and v1 need newer binaries than this machine has; tests/test_deploy.py checks them by shape.)
"""

from __future__ import annotations

import http.client
import json
import os
import re
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.kubeapi import ApiError, Rest, wait_until
from tests import deploy_checks as checks
from tests.e2e.controlplane import ControlPlane, add_node, add_pod, control_plane, free_port, node_of

H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "node.kubernetes.io/instance-type": "p5.48xlarge",
        "karpenter.sh/capacity-type": "on-demand"}

ROOT = Path(__file__).resolve().parent.parent


def documents() -> list[dict[str, Any]]:
    paths = sorted((ROOT / "deploy/manifests").glob("*.yaml"))
    return [doc for path in paths for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def collection(doc: Mapping[str, Any]) -> str:
    """The API path of a manifest object's collection (every kind in deploy/ pluralises with an s)."""
    version = doc["apiVersion"]
    base = "/api/v1" if version == "v1" else f"/apis/{version}"
    namespace = doc["metadata"].get("namespace")
    where = f"/namespaces/{namespace}" if namespace else ""
    return f"{base}{where}/{doc['kind'].lower()}s"


def dropped(sent: Any, stored: Any, where: str = "") -> list[str]:
    """The paths of what was sent but is not in the stored object (the server may add defaults)."""
    if isinstance(sent, Mapping):
        if not isinstance(stored, Mapping):
            return [f"{where or '.'}: sent {sent!r}, stored {stored!r}"]
        return [path for key, value in sent.items() for path in dropped(value, stored.get(key), f"{where}.{key}")]
    if isinstance(sent, list):
        if not isinstance(stored, list) or len(stored) != len(sent):
            return [where]
        return [path for index, value in enumerate(sent) for path in dropped(value, stored[index], f"{where}[{index}]")]
    return [] if sent == stored else [f"{where}: sent {sent!r}, stored {stored!r}"]


@pytest.fixture(scope="module")
def plane() -> Iterator[ControlPlane]:
    with control_plane("RBAC") as running:
        yield running


@pytest.fixture(scope="module")
def created(plane: ControlPlane) -> list[dict[str, Any]]:
    docs = documents()
    ordered = [doc for doc in docs if doc["kind"] == "Namespace"] + [doc for doc in docs if doc["kind"] != "Namespace"]
    for doc in ordered:
        try:
            plane.rest.request("POST", collection(doc), doc)
        except ApiError as error:
            raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {error}") from None
    return ordered


def test_every_object_of_the_manifests_is_accepted_whole(plane: ControlPlane, created: list[dict[str, Any]]) -> None:
    assert [doc["kind"] for doc in created][:1] == ["Namespace"]
    assert {doc["kind"] for doc in created} >= {"ServiceAccount", "Secret", "ClusterRole", "ClusterRoleBinding", "Role",
                                                "RoleBinding", "ConfigMap", "Deployment"}
    for doc in created:
        stored = plane.rest.request("GET", f"{collection(doc)}/{doc['metadata']['name']}")
        assert dropped(doc, stored) == [], f"{doc['kind']} {doc['metadata']['name']}"


def test_a_field_the_server_does_not_know_is_seen_as_dropped(plane: ControlPlane, created: list[dict[str, Any]]) -> None:
    # 1.20 stores an object with an unknown field without a word: only reading it back tells.
    sent = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "unknown-field", "namespace": "fleetsched"},
            "data": {"a": "b"}, "spec": {"replicas": 2}}
    stored = plane.rest.request("POST", collection(sent), sent)
    assert dropped(sent, stored) == [".spec: sent {'replicas': 2}, stored None"]


def test_a_pod_of_the_template_passes_admission(plane: ControlPlane, created: list[dict[str, Any]]) -> None:
    template = checks.deployment(created)["spec"]["template"]
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {**template["metadata"], "name": "fleetsched-template",
                                                             "namespace": "fleetsched"}, "spec": template["spec"]}
    stored = plane.rest.request("POST", "/api/v1/namespaces/fleetsched/pods", pod)
    assert dropped(template["spec"], stored["spec"]) == []
    # No token was added to a container: each mounts its own (kube-scheduler's projected, the extender's Secret).
    mounts = {c["name"]: [m["name"] for m in c["volumeMounts"]] for c in stored["spec"]["containers"]}
    assert mounts == {"kube-scheduler": ["config", "scheduler-token", "scheduler-tmp"],
                      "extender": ["config", "extender-token", "extender-tmp"]}


def account_kubeconfig(plane: ControlPlane, account: str) -> Path:
    """A kubeconfig holding a token of `account` (TokenRequest: there is no token controller here)."""
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {"expirationSeconds": 3600}}
    token = plane.rest.request("POST", f"/api/v1/namespaces/fleetsched/serviceaccounts/{account}/token", request)
    config = json.loads(plane.kubeconfig.read_text(encoding="utf-8"))
    config["users"][0]["user"]["token"] = token["status"]["token"]
    path = plane.folder / f"{account}.kubeconfig"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def scheduler_command(plane: ControlPlane, created: list[dict[str, Any]], version: str,
                      extender_port: int = 8888) -> tuple[list[str], int]:
    """The Deployment's kube-scheduler command on the ConfigMap's `version` configuration, outside a pod:
    its account's kubeconfig instead of the in-cluster one, and free ports (this machine is shared)."""
    config = checks.scheduler_configs(created)[version]
    kubeconfig = account_kubeconfig(plane, "fleetsched-scheduler")
    config["clientConnection"] = {"kubeconfig": str(kubeconfig)}
    for field in checks.INSECURE & set(config):  # 1.20's plain-HTTP port stays on loopback
        host, _, _ = config[field].rpartition(":")
        assert host == "127.0.0.1", field
        config[field] = f"{host}:{free_port()}"
    (extender,) = config["extenders"]
    assert extender["urlPrefix"].startswith("http://127.0.0.1:8888/")
    extender["urlPrefix"] = extender["urlPrefix"].replace(":8888/", f":{extender_port}/")
    path = plane.folder / f"scheduler-{version}.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    command = checks.container(created, "kube-scheduler")["command"]
    assert command[0] == "kube-scheduler"
    port = free_port()
    arguments = [argument for argument in command[1:] if not argument.startswith("--config")]
    return [str(plane.folder / "bin" / "kube-scheduler"), f"--config={path}", *arguments, f"--secure-port={port}",
            f"--authentication-kubeconfig={kubeconfig}", f"--authorization-kubeconfig={kubeconfig}"], port


@contextmanager
def extender_as_its_account(plane: ControlPlane, created: list[dict[str, Any]]) -> Iterator[tuple[int, int]]:
    """`fleetsched extender` on the ConfigMap's extender.toml with its account's token, as the pod
    runs it; free ports instead of 8888 and 8889. Yields the verbs' and health ports once it
    serves (it answers /readyz only once it leads: once kube-scheduler on this host, as in its
    pod, holds kube-scheduler's Lease, which it follows). POD_NAME is the host name, as in a pod."""
    text = checks.mounted_file(created, "extender", "--config")
    port, health_port = free_port(), free_port()
    kubeconfig = account_kubeconfig(plane, "fleetsched-extender")
    for key, value in (("port", str(port)), ("health_port", str(health_port)), ("kubeconfig", f'"{kubeconfig}"')):
        text, count = re.subn(rf"(?m)^{key} = \S+", f"{key} = {value}", text)
        assert count == 1, key
    path = plane.folder / "extender.toml"
    path.write_text(text, encoding="utf-8")
    env = {**os.environ, "POD_NAME": socket.gethostname(), "POD_NAMESPACE": "fleetsched"}
    log = (plane.folder / "extender-as-account.log").open("wb")
    process = subprocess.Popen([sys.executable, "-m", "fleetsched", "extender", "--config", str(path)],
                               stdout=log, stderr=subprocess.STDOUT, env=env)
    plane.processes["extender-as-account"] = process

    def serving() -> bool:
        assert process.poll() is None, plane.logs("extender-as-account")
        return get("127.0.0.1", health_port, "/healthz") == 200

    try:
        assert wait_until(serving, 60, 0.3), plane.logs("extender-as-account")
        yield port, health_port
    finally:
        process.terminate()
        process.wait(timeout=10)


def get(host: str, port: int, path: str) -> int:
    connection = http.client.HTTPConnection(host, port, timeout=2)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    except OSError:
        return 0
    finally:
        connection.close()


def healthz(port: int) -> tuple[int, str]:
    """kube-scheduler's liveness probe as the kubelet sends it: HTTPS, no credentials, no verification."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    connection = http.client.HTTPSConnection("127.0.0.1", port, timeout=2, context=context)
    try:
        connection.request("GET", "/healthz")
        response = connection.getresponse()
        return response.status, response.read().decode()
    finally:
        connection.close()


def lease_holder(rest: Rest, name: str = "fleetsched-scheduler") -> str:
    try:
        lease = rest.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/fleetsched/leases/{name}")
    except ApiError:
        return ""
    return str((lease.get("spec") or {}).get("holderIdentity") or "")


def test_kube_scheduler_1_20_on_the_v1beta1_config_and_the_extender_each_as_its_own_account_bind_a_gpu_pod(
    plane: ControlPlane, created: list[dict[str, Any]]
) -> None:
    with extender_as_its_account(plane, created) as (extender_port, health_port):
        assert get("127.0.0.1", health_port, "/readyz") == 503  # no kube-scheduler leads: it does not campaign
        command, port = scheduler_command(plane, created, "v1beta1", extender_port)
        plane._spawn("kube-scheduler-manifests", command)
        process = plane.processes["kube-scheduler-manifests"]
        try:
            assert wait_until(lambda: process.poll() is not None or lease_holder(plane.rest) != "", 60, 0.5)
            assert process.poll() is None, plane.logs("kube-scheduler-manifests")

            def answered() -> bool:
                try:
                    return healthz(port) == (200, "ok")
                except OSError:
                    return False

            assert wait_until(answered, 30, 0.5), plane.logs("kube-scheduler-manifests")
            # kube-scheduler of this "pod" leads: the extender beside it takes the lead too.
            assert lease_holder(plane.rest).startswith(f"{socket.gethostname()}_")
            assert wait_until(lambda: get("127.0.0.1", health_port, "/readyz") == 200, 30, 0.3), (
                plane.logs("extender-as-account"))
            assert lease_holder(plane.rest, "fleetsched-extender") == socket.gethostname()
            add_node(plane.rest, "gpu-node-1", H100, {"nvidia.com/gpu": "8"})
            add_pod(plane.rest, "gpu-pod-1", {"nvidia.com/gpu": "2"})
            assert wait_until(lambda: node_of(plane.rest, "gpu-pod-1") == "gpu-node-1", 60, 0.5), (
                plane.logs("kube-scheduler-manifests") + plane.logs("extender-as-account"))
        finally:
            process.terminate()
            process.wait(timeout=10)
    pod = plane.rest.request("GET", "/api/v1/namespaces/ml/pods/gpu-pod-1")
    assert pod["metadata"]["annotations"]["fleetsched.io/gpus"]  # the extender bound it, as its own account
    log = (plane.folder / "kube-scheduler-manifests.log").read_text(encoding="utf-8", errors="replace")
    assert "successfully acquired lease fleetsched/fleetsched-scheduler" in log
    # The secure port on every address (the kubelet probes the pod IP), plain HTTP on loopback only.
    assert f"Serving securely on [::]:{port}" in log
    insecure = [line for line in log.splitlines() if "insecurely on" in line]
    assert len(insecure) == 2 and all("insecurely on 127.0.0.1:" in line for line in insecure), insecure
    for name in ("kube-scheduler-manifests.log", "extender-as-account.log"):
        text = (plane.folder / name).read_text(encoding="utf-8", errors="replace")
        assert "forbidden" not in text.lower(), name


def test_the_extenders_account_may_not_delete_pods_or_read_secrets(plane: ControlPlane,
                                                                  created: list[dict[str, Any]]) -> None:
    config = json.loads(account_kubeconfig(plane, "fleetsched-extender").read_text(encoding="utf-8"))
    rest = Rest(plane.rest.host, token=config["users"][0]["user"]["token"], verify=False)
    assert rest.request("GET", "/api/v1/nodes")["items"] is not None  # what it may do, it can
    add_pod(plane.rest, "not-to-delete", {"cpu": "1"}, scheduler="nobody")
    for method, path in (("DELETE", "/api/v1/namespaces/ml/pods/not-to-delete"),
                         ("GET", "/api/v1/namespaces/fleetsched/secrets"),
                         ("PUT", "/apis/coordination.k8s.io/v1/namespaces/fleetsched/leases/fleetsched-scheduler")):
        with pytest.raises(ApiError) as refused:
            rest.request(method, path, {} if method == "PUT" else None)
        assert refused.value.status == 403, (method, path)


def test_kube_scheduler_1_20_refuses_the_v1beta2_config_it_does_not_know(
    plane: ControlPlane, created: list[dict[str, Any]]
) -> None:
    command, _ = scheduler_command(plane, created, "v1beta2")
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode != 0
    assert "v1beta2" in done.stderr
