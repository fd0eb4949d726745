"""deploy/manifests/agent.yaml: a DaemonSet on GPU nodes whose command line `fleetsched agent` accepts,
whose probe and Service reach the port it listens on, which reads the kubelet's socket where the
agent looks for it, takes no GPU, and departs from Pod Security "restricted" only where it must."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from fleetsched.agent_verbs import agent_settings
from fleetsched.cli import _parser
from tests import deploy_checks as checks

ROOT = Path(__file__).resolve().parent.parent
MANIFEST = ROOT / "deploy/manifests/agent.yaml"


def documents() -> dict[str, dict[str, Any]]:
    docs = [doc for doc in yaml.safe_load_all(MANIFEST.read_text(encoding="utf-8")) if doc]
    assert len({doc["kind"] for doc in docs}) == len(docs)
    return {doc["kind"]: doc for doc in docs}


def pod_spec() -> dict[str, Any]:
    spec = documents()["DaemonSet"]["spec"]["template"]["spec"]
    assert isinstance(spec, dict)
    return spec


def agent_container() -> dict[str, Any]:
    (container,) = pod_spec()["containers"]
    assert isinstance(container, dict)
    return container


def test_the_manifest_holds_an_account_a_daemonset_and_a_headless_service() -> None:
    docs = documents()
    assert set(docs) == {"ServiceAccount", "DaemonSet", "Service"}
    assert {doc["metadata"]["namespace"] for doc in docs.values()} == {"kube-system"}
    assert docs["DaemonSet"]["spec"]["template"]["spec"]["serviceAccountName"] == docs["ServiceAccount"]["metadata"]["name"]
    assert docs["Service"]["spec"]["clusterIP"] == "None"
    selector = docs["DaemonSet"]["spec"]["selector"]["matchLabels"]
    assert docs["Service"]["spec"]["selector"] == selector == docs["DaemonSet"]["spec"]["template"]["metadata"]["labels"]


def test_its_command_line_is_one_fleetsched_agent_accepts() -> None:
    container = agent_container()
    assert container["command"] == ["fleetsched", "agent"]
    args = _parser().parse_args(["agent", *container["args"]])
    settings = agent_settings(args)  # raises InputError on an option the agent refuses
    assert (settings.address, settings.port, settings.period_s) == ("0.0.0.0", 9402, 15.0)
    assert (settings.rule.threshold_percent, settings.rule.window_s) == (5.0, 1800.0)
    env = {each["name"]: each for each in container["env"]}
    assert env["NODE_NAME"]["valueFrom"] == {"fieldRef": {"fieldPath": "spec.nodeName"}}


def test_the_probe_and_the_service_reach_the_port_the_agent_listens_on() -> None:
    container = agent_container()
    settings = agent_settings(_parser().parse_args(["agent", *container["args"]]))
    ports = {port["name"]: port["containerPort"] for port in container["ports"]}
    assert ports == {"metrics": settings.port} and settings.address in checks.WILDCARD
    assert container["livenessProbe"]["httpGet"] == {"path": "/metrics", "port": settings.port}
    (service_port,) = documents()["Service"]["spec"]["ports"]
    assert ports[service_port["targetPort"]] == settings.port


def test_the_kubelet_socket_is_mounted_where_the_agent_looks_for_it() -> None:
    container, spec = agent_container(), pod_spec()
    socket = agent_settings(_parser().parse_args(["agent", *container["args"]])).socket_path
    (mount,) = [m for m in container["volumeMounts"] if socket.startswith(m["mountPath"].rstrip("/") + "/")]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    assert volume["hostPath"]["path"] == mount["mountPath"] == str(Path(socket).parent)
    assert mount["readOnly"] is True


def test_it_runs_on_gpu_nodes_and_takes_no_gpu() -> None:
    spec, container = pod_spec(), agent_container()
    assert spec["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in spec["tolerations"]
    resources = container["resources"]
    assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}
    assert {each["name"]: each.get("value") for each in container["env"]}["NVIDIA_VISIBLE_DEVICES"] == "all"


def test_it_departs_from_restricted_only_for_the_kubelet_socket() -> None:
    # The socket needs a hostPath and root (the kubelet makes it root's); nothing else is given up.
    assert checks.restricted_problems(pod_spec()) == [
        "pod: volume pod-resources of type hostPath is not allowed", "agent: runAsNonRoot must be true",
        "agent: must not run as user 0"]  # fmt: skip


def test_the_restricted_check_still_catches_a_privileged_agent() -> None:
    spec = pod_spec()
    spec["containers"][0]["securityContext"]["privileged"] = True
    assert "agent: must not be privileged" in checks.restricted_problems(spec)
