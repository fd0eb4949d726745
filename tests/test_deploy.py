"""deploy/ as an operator applies it: probes reach listeners, Pod Security "restricted", least privilege.

Pure checks on the files (the end-to-end test, tests/test_e2e_manifests.py, creates the same
objects on a real API server and starts kube-scheduler 1.20 with the v1beta1 configuration).
kube-scheduler 1.20 is the only release on this machine, so the v1beta2, v1beta3 and v1
configurations are checked here by shape: the fields each version has, the values its
validation accepts, and that they say the same as the v1beta1 one that really ran.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.config import ExtenderConfig, load_config
from extender.governance_api import GROUP, SPEND_CONFIGMAP, VERSION
from extender.modes import resource_of
from extender.translate import managed_resources
from scheduler.catalog import default_catalog
from tests import deploy_checks as checks

ROOT = Path(__file__).resolve().parent.parent
MANIFESTS = sorted((ROOT / "deploy/manifests").glob("*.yaml"))
CATALOG = default_catalog()


def documents() -> list[dict[str, Any]]:
    return [doc for path in MANIFESTS for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]


def the(kind: str, docs: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    (found,) = [doc for doc in (docs if docs is not None else documents()) if doc["kind"] == kind]
    return found


def extender_config(docs: list[dict[str, Any]], tmp_path: Path) -> ExtenderConfig:
    path = tmp_path / "extender.toml"
    path.write_text(checks.mounted_file(docs, "extender", "--config"), encoding="utf-8")
    return load_config(path, CATALOG)


# -- probes ------------------------------------------------------------------------------------


def test_every_probe_calls_a_port_the_configured_server_listens_on_from_the_pod_ip(tmp_path: Path) -> None:
    docs = documents()
    config = extender_config(docs, tmp_path)
    assert config.address == "127.0.0.1" and config.health_address == "0.0.0.0" and config.health_port == 8889
    listeners = checks.listeners(docs, config)
    probes = checks.probes(docs)
    assert {(container, kind) for container, kind, _ in probes} == {
        ("kube-scheduler", "startupProbe"), ("kube-scheduler", "livenessProbe"),
        ("extender", "startupProbe"), ("extender", "livenessProbe"), ("extender", "readinessProbe")}
    assert checks.probe_problems(probes, listeners) == []


def test_a_probe_on_the_loopback_verb_port_is_caught(tmp_path: Path) -> None:
    # The shape issue 14 found: address = "127.0.0.1" and the kubelet probing the pod IP on 8888.
    docs = documents()
    container = checks.container(docs, "extender")
    container["livenessProbe"]["httpGet"]["port"] = 8888
    problems = checks.probe_problems(checks.probes(docs), checks.listeners(docs, extender_config(docs, tmp_path)))
    assert problems == ["extender livenessProbe: nothing listens on the pod IP at HTTP port 8888 serving /healthz"]


def test_a_probe_of_a_path_the_listener_does_not_serve_is_caught(tmp_path: Path) -> None:
    docs = documents()
    checks.container(docs, "kube-scheduler")["livenessProbe"]["httpGet"]["scheme"] = "HTTP"
    problems = checks.probe_problems(checks.probes(docs), checks.listeners(docs, extender_config(docs, tmp_path)))
    assert problems == ["kube-scheduler livenessProbe: nothing listens on the pod IP at HTTP port 10259 serving /healthz"]


def test_kube_scheduler_calls_the_extender_where_it_listens_in_every_config_version(tmp_path: Path) -> None:
    docs = documents()
    config = extender_config(docs, tmp_path)
    for version, scheduler in checks.scheduler_configs(docs).items():
        (extender,) = scheduler["extenders"]
        assert extender["urlPrefix"] == f"http://{config.address}:{config.port}{config.prefix}", version
        assert extender["nodeCacheCapable"] is True and extender["ignorable"] is False, version
        assert [extender[f"{verb}Verb"] for verb in ("filter", "prioritize", "preempt", "bind")] == [
            "filter", "prioritize", "preempt", "bind"], version


# -- Pod Security "restricted" -----------------------------------------------------------------


def test_both_containers_meet_pod_security_restricted_with_a_read_only_root() -> None:
    docs = documents()
    spec = the("Deployment", docs)["spec"]["template"]["spec"]
    assert [c["name"] for c in spec["containers"]] == ["kube-scheduler", "extender"]
    assert checks.restricted_problems(spec) == []
    labels = the("Namespace", docs)["metadata"]["labels"]
    assert labels["pod-security.kubernetes.io/enforce"] == "restricted"


@pytest.mark.parametrize(("path", "value", "problem"), [
    (("containers", 1, "securityContext", "capabilities"), {"drop": ["NET_RAW"]}, "extender: capabilities must drop ALL"),
    (("containers", 0, "securityContext", "allowPrivilegeEscalation"), True,
     "kube-scheduler: allowPrivilegeEscalation must be false"),
    (("containers", 0, "securityContext", "seccompProfile"), {"type": "Unconfined"},
     "kube-scheduler: seccompProfile must be RuntimeDefault or Localhost"),
    (("containers", 1, "securityContext", "readOnlyRootFilesystem"), False, "extender: readOnlyRootFilesystem must be true"),
    (("containers", 1, "securityContext", "runAsUser"), 0, "extender: must not run as user 0"),
    (("hostNetwork",), True, "pod: hostNetwork must be unset or false"),
], ids=["capabilities", "escalation", "seccomp", "read-only", "root", "host-network"])
def test_each_breach_of_restricted_is_caught(path: tuple[Any, ...], value: Any, problem: str) -> None:
    spec = the("Deployment")["spec"]["template"]["spec"]
    target = spec
    for step in path[:-1]:
        target = target[step]
    target[path[-1]] = value
    assert checks.restricted_problems(spec) == [problem]


def test_a_read_only_root_without_a_writable_tmp_is_caught() -> None:
    spec = the("Deployment")["spec"]["template"]["spec"]
    spec["containers"][1]["volumeMounts"] = [m for m in spec["containers"][1]["volumeMounts"] if m["mountPath"] != "/tmp"]
    assert checks.restricted_problems(spec) == ["extender: /tmp must be an emptyDir (the root filesystem is read-only)"]


# -- who may do what ---------------------------------------------------------------------------

#: Every request the extender makes, and where extender/ makes it.
EXTENDER_RIGHTS = {
    ("*", "", "nodes", "list", ""), ("*", "", "nodes", "watch", ""),  # kubeapi.Mirror: list, then watch
    ("*", "", "nodes", "get", ""), ("*", "", "nodes", "patch", ""),  # hami.bind_pod: HAMi's node lock
    ("*", "", "pods", "list", ""), ("*", "", "pods", "watch", ""),  # kubeapi.Mirror
    ("*", "", "pods", "get", ""),  # kubeapi.RestApi.bind_pod: who holds the pod after a 409
    ("*", "", "pods", "patch", ""),  # annotations on a pod (HAMi's device annotations)
    ("*", "", "pods/binding", "create", ""),  # kubeapi.RestApi.bind_pod
    ("*", "", "events", "create", ""),  # an Event on a pod with unknown fleetsched.io/ annotations
    # leader election (lease_name fleetsched-extender, in the pod's namespace)
    ("fleetsched", "coordination.k8s.io", "leases", "create", ""),
    ("fleetsched", "coordination.k8s.io", "leases", "get", "fleetsched-extender"),
    ("fleetsched", "coordination.k8s.io", "leases", "update", "fleetsched-extender"),
    ("fleetsched", "coordination.k8s.io", "leases", "get", "fleetsched-scheduler"),  # follow_lease
    # guardrails (extender.governance_api): the spend book's ConfigMap, and the approvals people gave
    ("fleetsched", "", "configmaps", "create", ""),
    ("fleetsched", "", "configmaps", "get", "fleetsched-spend"),
    ("fleetsched", "", "configmaps", "update", "fleetsched-spend"),
    ("fleetsched", "fleetsched.io", "approvals", "list", ""),
}


def test_the_extender_has_its_own_account_with_exactly_the_rights_it_uses(tmp_path: Path) -> None:
    docs = documents()
    rights, built_in = checks.granted(docs, "fleetsched", "fleetsched-extender")
    assert rights == EXTENDER_RIGHTS and built_in == set()
    config = extender_config(docs, tmp_path)
    assert {name for *_, name in rights if name} == {config.lease_name, config.follow_lease, SPEND_CONFIGMAP}
    secret = the("Secret", docs)
    assert secret["type"] == "kubernetes.io/service-account-token"
    assert secret["metadata"]["annotations"]["kubernetes.io/service-account.name"] == "fleetsched-extender"
    assert checks.token_source(docs, "extender") == ("secret", secret["metadata"]["name"])


def test_every_api_request_in_the_extenders_code_is_granted() -> None:
    requests = checks.api_requests_in(sorted((ROOT / "extender").glob("*.py")))
    # The scan must see the requests it is there to see, or it would pass on nothing.
    assert {("", "nodes", ""), ("", "pods", ""), ("", "pods/binding", "create"), ("", "pods", "get"),
            ("", "configmaps", "create"), ("fleetsched.io", "approvals", "list")} <= requests
    granted = {(group, resource, verb) for _, group, resource, verb, _ in EXTENDER_RIGHTS}
    for group, resource, verb in requests:
        assert any(g == group and r == resource and verb in ("", v) for g, r, v in granted), (group, resource, verb)


def test_the_api_scan_reads_paths_and_methods() -> None:
    source = (
        'rest.request("PATCH", f"/api/v1/namespaces/{ns}/pods/{name}", body)\n'
        'rest.request("POST", f"/apis/coordination.k8s.io/v1/namespaces/{ns}/leases", body)\n'
        'rest.stream("/api/v1/nodes?watch=1")\n'
        'PATHS = {"event": "/apis/events.k8s.io/v1/events"}\n'
    )
    assert checks.api_requests_in_source(source) == {
        ("", "pods", "patch"), ("coordination.k8s.io", "leases", "create"), ("", "nodes", "watch"),
        ("events.k8s.io", "events", "")}


def test_approvers_may_only_create_and_read_approvals_in_the_extenders_namespace() -> None:
    docs = documents()
    (role,) = [d for d in docs if d["kind"] == "Role" and d["metadata"]["name"] == "fleetsched-approver"]
    assert role["metadata"]["namespace"] == "fleetsched"
    assert role["rules"] == [{"apiGroups": [GROUP], "resources": ["approvals"], "verbs": ["create", "get", "list"]}]
    assert not [d for d in docs if d["kind"] == "ClusterRole" and d["metadata"]["name"] == "fleetsched-approver"]
    # The extender only reads them: it cannot approve what it schedules.
    rights, _ = checks.granted(docs, "fleetsched", "fleetsched-extender")
    assert {verb for _, group, resource, verb, _ in rights if resource == "approvals"} == {"list"}


def test_the_approval_resource_is_namespaced_in_the_group_and_version_the_extender_reads() -> None:
    crd = the("CustomResourceDefinition")
    spec = crd["spec"]
    assert crd["metadata"]["name"] == f"approvals.{GROUP}" and spec["group"] == GROUP
    assert spec["scope"] == "Namespaced" and spec["names"]["kind"] == "Approval"
    (version,) = spec["versions"]
    assert version["name"] == VERSION and version["served"] and version["storage"]
    fields = version["schema"]["openAPIV3Schema"]["properties"]["spec"]
    assert set(fields["properties"]) == {"pod", "gang", "decision", "reason", "approver"}
    assert fields["properties"]["decision"]["enum"] == ["approve", "reject"]


def test_kube_scheduler_keeps_its_built_in_roles_and_a_lease_of_its_own() -> None:
    docs = documents()
    rights, built_in = checks.granted(docs, "fleetsched", "fleetsched-scheduler")
    assert built_in == {"system:kube-scheduler", "system:volume-scheduler",
                        "kube-system/extension-apiserver-authentication-reader"}
    assert rights == {("fleetsched", "coordination.k8s.io", "leases", "create", ""),
                      ("fleetsched", "coordination.k8s.io", "leases", "get", "fleetsched-scheduler"),
                      ("fleetsched", "coordination.k8s.io", "leases", "update", "fleetsched-scheduler")}
    assert the("Deployment", docs)["spec"]["template"]["spec"]["serviceAccountName"] == "fleetsched-scheduler"
    assert checks.token_source(docs, "kube-scheduler") == ("projected", "serviceAccountToken")


# -- leader election, replicas, resources ------------------------------------------------------


def test_two_replicas_and_both_processes_elect_a_leader(tmp_path: Path) -> None:
    docs = documents()
    deployment = the("Deployment", docs)
    assert deployment["spec"]["replicas"] == 2
    config = extender_config(docs, tmp_path)
    assert config.leader_elect and config.lease_name == "fleetsched-extender" and config.lease_namespace == ""
    env = {e["name"]: e["valueFrom"]["fieldRef"]["fieldPath"] for e in checks.container(docs, "extender")["env"]}
    assert env == {"POD_NAME": "metadata.name", "POD_NAMESPACE": "metadata.namespace"}
    for version, scheduler in checks.scheduler_configs(docs).items():
        election = scheduler["leaderElection"]
        assert election["leaderElect"] is True and election["resourceLock"] == "leases", version
        assert (election["resourceNamespace"], election["resourceName"]) == ("fleetsched", "fleetsched-scheduler")
        assert checks.seconds(election["leaseDuration"]) > checks.seconds(election["renewDeadline"]), version
        # kube-scheduler's validation: renewDeadline above retryPeriod times the jitter factor 1.2
        assert checks.seconds(election["renewDeadline"]) > 1.2 * checks.seconds(election["retryPeriod"]), version


def test_every_container_has_requests_and_limits() -> None:
    for container in the("Deployment")["spec"]["template"]["spec"]["containers"]:
        resources = container["resources"]
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}, container["name"]


# -- scheduler configurations ------------------------------------------------------------------


def test_managed_resources_are_every_mig_profile_of_the_catalog() -> None:
    raw = json.loads((ROOT / "scheduler/data/gpu_catalog.json").read_text(encoding="utf-8"))
    profiles = {p for gpu in raw["gpus"].values() if gpu.get("mig") for p in gpu["mig"]["profiles"]}
    expected = {"nvidia.com/gpu", "nvidia.com/gpu.shared"} | {"nvidia.com/mig-" + p.replace("+", ".") for p in profiles}
    assert set(managed_resources(CATALOG)) == expected and len(expected) == 46
    assert resource_of("1g.10gb+me") == "nvidia.com/mig-1g.10gb.me"
    for version, scheduler in checks.scheduler_configs(documents()).items():
        (extender,) = scheduler["extenders"]
        listed = [(r["name"], r["ignoredByScheduler"]) for r in extender["managedResources"]]
        assert listed == [(name, False) for name in managed_resources(CATALOG)], version


def test_the_printing_script_prints_the_managed_resources() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "deploy/managed_resources.py")], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, check=True)
    listed = yaml.safe_load(done.stdout)["managedResources"]
    assert [r["name"] for r in listed] == list(managed_resources(CATALOG))


def test_one_scheduler_config_per_api_version_each_in_the_shape_its_releases_accept() -> None:
    configs = checks.scheduler_configs(documents())
    assert list(configs) == ["v1", "v1beta3", "v1beta2", "v1beta1"]
    for version, scheduler in configs.items():
        assert checks.shape_problems(version, scheduler) == [], version
    # Past the version-specific fields they say the same: v1beta1 ran on a real kube-scheduler.
    common = {version: checks.without(scheduler, checks.ONLY_IN[version]) for version, scheduler in configs.items()}
    assert common["v1"] == common["v1beta3"] == common["v1beta2"] == common["v1beta1"]


def test_the_deployment_runs_a_config_the_config_map_holds() -> None:
    command = checks.container(documents(), "kube-scheduler")["command"]
    assert command[0] == "kube-scheduler" and "--config=/etc/fleetsched/scheduler-v1.yaml" in command
    assert yaml.safe_load(checks.mounted_file(documents(), "kube-scheduler", "--config"))["apiVersion"].endswith("/v1")


@pytest.mark.parametrize(("version", "change", "problem"), [
    ("v1beta3", {"healthzBindAddress": "0.0.0.0:10251"}, "healthzBindAddress: not a field of v1beta3"),
    ("v1beta2", {"metricsBindAddress": "0.0.0.0:10251"}, "metricsBindAddress: 1.23+ accept only an empty address or port 0"),
    ("v1", {"percentageOfNodesToScore": 120}, "percentageOfNodesToScore: must be 0..100"),
    ("v1beta1", {"extenders": [{"urlPrefix": "http://x", "prioritizeVerb": "p", "weight": 0}]},
     "extenders[0].weight: must be above 0"),
    ("v1", {"extenders": [{"urlPrefix": "http://x", "weight": 1, "managedResources": [{"name": "nvidia.com/mig-1g.10gb+me"}]}]},
     "extenders[0].managedResources: nvidia.com/mig-1g.10gb+me is not an extended resource name"),
    ("v1beta1", {"healthzBindAddress": "127.0.0.1:0"}, "healthzBindAddress: must be on loopback (1.20 always serves plain HTTP)"),
    ("v1beta1", {"metricsBindAddress": "0.0.0.0:10251"}, "metricsBindAddress: must be on loopback (1.20 always serves plain HTTP)"),
], ids=["removed-field", "insecure-port", "percentage", "weight", "resource-name", "port-0", "pod-ip"])
def test_each_shape_check_catches_its_case(version: str, change: dict[str, Any], problem: str) -> None:
    scheduler = {**checks.scheduler_configs(documents())[version], **change}
    assert problem in checks.shape_problems(version, scheduler)


# -- the image ---------------------------------------------------------------------------------


def test_the_image_base_is_pinned_and_runs_as_the_manifests_user() -> None:
    lines = (ROOT / "deploy/Dockerfile").read_text(encoding="utf-8").splitlines()
    bases = [line.split()[1] for line in lines if line.startswith("FROM ")]
    assert bases and all(checks.pinned(base) for base in bases), bases
    assert not checks.pinned("python:3.11-slim") and checks.pinned("python@sha256:" + "0" * 64)
    (user,) = [line.split()[1] for line in lines if line.startswith("USER ")]
    pod = the("Deployment")["spec"]["template"]["spec"]["securityContext"]
    assert user == f"{pod['runAsUser']}:{pod['runAsGroup']}"
    assert "8889" in [word for line in lines if line.startswith("EXPOSE ") for word in line.split()[1:]]


# -- the command under a read-only root --------------------------------------------------------

IMPORTED = re.compile(r"^import time:\s+\d+ \|\s+\d+ \|\s*([\w.]+)$", re.MULTILINE)


def imported_by(arguments: list[str], home: Path) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Runs `python -X importtime ARGUMENTS` with HOME read-only and matplotlib's own folders unset."""
    env = {key: value for key, value in os.environ.items()
           if key not in ("MPLCONFIGDIR", "XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    env.update(HOME=str(home), PYTHONPATH=str(ROOT))
    done = subprocess.run([sys.executable, "-X", "importtime", *arguments], capture_output=True, text=True,
                          cwd=ROOT, env=env, check=False, timeout=120)
    return done, {name.split(".")[0] for name in IMPORTED.findall(done.stderr)}


@pytest.fixture
def read_only_home(tmp_path: Path) -> Any:
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o555)
    yield home
    home.chmod(0o755)


@pytest.mark.parametrize(("arguments", "seen", "output"), [
    (["extender", "--help"], "fleetsched", "usage: fleetsched extender"),
    (["extender", "--config", "deploy/extender.toml", "--check"], "extender", "deploy/extender.toml: ok"),
], ids=["help", "check"])
def test_the_extender_command_imports_no_matplotlib(read_only_home: Path, arguments: list[str], seen: str,
                                                    output: str) -> None:
    done, modules = imported_by(["-m", "fleetsched", *arguments], read_only_home)
    assert done.returncode == 0, done.stderr[-2000:]
    assert output in done.stdout
    assert seen in modules  # the scan sees what the command imported
    assert "matplotlib" not in modules


def test_the_import_scan_sees_matplotlib_where_it_is_imported(read_only_home: Path) -> None:
    done, modules = imported_by(["-c", "import simulator.plots"], read_only_home)
    assert done.returncode == 0 and "matplotlib" in modules, done.stderr[-2000:]
