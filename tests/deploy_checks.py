"""What tests/test_deploy.py checks in deploy/: probes against listeners, Pod Security, RBAC, config shapes.

Each check returns the problems it finds as one line each (an empty list when there are none),
so that a test can show both that the shipped files pass and that a broken file is caught.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from extender.config import ExtenderConfig

TOKEN_PATH = "/var/run/secrets/kubernetes.io/serviceaccount"
WILDCARD = {"0.0.0.0", "::", ""}  # the kubelet probes the pod IP: only these reach it
HEALTH_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})


# -- reading the Deployment --------------------------------------------------------------------


def deployment(docs: Iterable[dict[str, Any]]) -> dict[str, Any]:
    (found,) = [doc for doc in docs if doc["kind"] == "Deployment"]
    return found


def container(docs: Iterable[dict[str, Any]], name: str) -> dict[str, Any]:
    """The container itself (not a copy): tests change it to show a check catches a breach."""
    (found,) = [c for c in deployment(docs)["spec"]["template"]["spec"]["containers"] if c["name"] == name]
    assert isinstance(found, dict)
    return found


def flag(arguments: list[str], name: str, default: str) -> str:
    """The value of `--name=value` or `--name value` in a command line."""
    for index, argument in enumerate(arguments):
        if argument.startswith(name + "="):
            return argument.split("=", 1)[1]
        if argument == name and index + 1 < len(arguments):
            return arguments[index + 1]
    return default


def mounted_file(docs: list[dict[str, Any]], name: str, option: str) -> str:
    """The text of the file a container's `option` names, read from the ConfigMap mounted there."""
    found = container(docs, name)
    path = flag(found.get("command", []) + found.get("args", []), option, "")
    spec = deployment(docs)["spec"]["template"]["spec"]
    for mount in found["volumeMounts"]:
        if path.startswith(mount["mountPath"].rstrip("/") + "/"):
            (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
            (config_map,) = [d for d in docs if d["kind"] == "ConfigMap" and d["metadata"]["name"] == volume["configMap"]["name"]]
            return str(config_map["data"][path[len(mount["mountPath"].rstrip("/")) + 1:]])
    raise AssertionError(f"{name}: no ConfigMap is mounted where {option} {path!r} points")


def scheduler_configs(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Each KubeSchedulerConfiguration of the ConfigMap by API version, in the ConfigMap's order."""
    (config_map,) = [d for d in docs if d["kind"] == "ConfigMap"]
    found = {}
    for key, text in config_map["data"].items():
        if match := re.fullmatch(r"scheduler-(v\w+)\.yaml", key):
            found[match.group(1)] = yaml.safe_load(text)
    return found


# -- probes against listeners ------------------------------------------------------------------


@dataclass(frozen=True)
class Listener:
    container: str
    address: str
    port: int
    scheme: str
    paths: frozenset[str]


def listeners(docs: list[dict[str, Any]], config: ExtenderConfig) -> list[Listener]:
    """Where each container's server listens, from its configuration and command line."""
    scheme = "HTTPS" if config.tls_cert else "HTTP"
    verbs = frozenset(f"{config.prefix}/{verb}" for verb in ("filter", "prioritize", "preempt", "bind")) | HEALTH_PATHS
    found = [Listener("extender", config.address, config.port, scheme, verbs)]
    if config.health_port:
        found.append(Listener("extender", config.health_address, config.health_port, scheme, HEALTH_PATHS))
    scheduler = container(docs, "kube-scheduler")
    arguments = scheduler.get("command", []) + scheduler.get("args", [])
    port = int(flag(arguments, "--secure-port", "10259"))
    if port:  # kube-scheduler's secure port; /healthz is always allowed without credentials
        found.append(Listener("kube-scheduler", flag(arguments, "--bind-address", "0.0.0.0"), port, "HTTPS",
                              frozenset({"/healthz"})))
    return found


def probes(docs: list[dict[str, Any]]) -> list[tuple[str, str, dict[str, Any]]]:
    """(container, probe kind, probe), with a named port replaced by the container's number for it."""
    found = []
    for each in deployment(docs)["spec"]["template"]["spec"]["containers"]:
        numbers = {port["name"]: port["containerPort"] for port in each.get("ports", []) if "name" in port}
        for kind in ("startupProbe", "livenessProbe", "readinessProbe"):
            if kind in each:
                probe = dict(each[kind])
                if isinstance(probe.get("httpGet", {}).get("port"), str):
                    probe["httpGet"] = {**probe["httpGet"], "port": numbers.get(probe["httpGet"]["port"], -1)}
                found.append((each["name"], kind, probe))
    return found


def probe_problems(found: list[tuple[str, str, dict[str, Any]]], servers: list[Listener]) -> list[str]:
    """A line for each probe that no listener of its own container answers from the pod IP."""
    problems = []
    for name, kind, probe in found:
        get = probe.get("httpGet")
        if get is None or "host" in get:
            problems.append(f"{name} {kind}: must be an httpGet on the pod IP")
            continue
        port, scheme = get["port"], get.get("scheme", "HTTP")
        if not any(s.container == name and s.address in WILDCARD and s.port == port and s.scheme == scheme
                   and get["path"] in s.paths for s in servers):
            problems.append(f"{name} {kind}: nothing listens on the pod IP at {scheme} port {port} serving {get['path']}")
    return problems


# -- Pod Security "restricted" -----------------------------------------------------------------

ALLOWED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected",
                   "secret"}  # fmt: skip


def restricted_problems(spec: Mapping[str, Any]) -> list[str]:
    """Pod Security "restricted" (and a read-only root with a writable /tmp), one line per breach."""
    problems = [f"pod: {key} must be unset or false" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key)]
    volumes = {volume["name"]: volume for volume in spec.get("volumes", [])}
    for name, volume in volumes.items():
        kinds = set(volume) - {"name"}
        if not kinds <= ALLOWED_VOLUMES:
            problems.append(f"pod: volume {name} of type {', '.join(sorted(kinds))} is not allowed")
    pod = spec.get("securityContext", {})
    for each in spec["containers"]:
        problems += [f"{each['name']}: {problem}" for problem in _container_problems(each, pod, volumes)]
    return problems


def _container_problems(each: Mapping[str, Any], pod: Mapping[str, Any], volumes: Mapping[str, Any]) -> list[str]:
    context = {**{k: pod[k] for k in ("runAsNonRoot", "runAsUser", "seccompProfile") if k in pod},
               **each.get("securityContext", {})}
    problems = []
    if context.get("privileged"):
        problems.append("must not be privileged")
    if context.get("allowPrivilegeEscalation") is not False:
        problems.append("allowPrivilegeEscalation must be false")
    capabilities = context.get("capabilities", {})
    if "ALL" not in capabilities.get("drop", []) or set(capabilities.get("add", [])) - {"NET_BIND_SERVICE"}:
        problems.append("capabilities must drop ALL")
    if context.get("runAsNonRoot") is not True:
        problems.append("runAsNonRoot must be true")
    if context.get("runAsUser") == 0:
        problems.append("must not run as user 0")
    if context.get("seccompProfile", {}).get("type") not in ("RuntimeDefault", "Localhost"):
        problems.append("seccompProfile must be RuntimeDefault or Localhost")
    if context.get("readOnlyRootFilesystem") is not True:
        problems.append("readOnlyRootFilesystem must be true")
    tmp = [m for m in each.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
    if len(tmp) != 1 or "emptyDir" not in volumes.get(tmp[0]["name"], {}):
        problems.append("/tmp must be an emptyDir (the root filesystem is read-only)")
    if any("hostPort" in port for port in each.get("ports", [])):
        problems.append("must not use a hostPort")
    return problems


# -- RBAC --------------------------------------------------------------------------------------


def granted(docs: list[dict[str, Any]], namespace: str, account: str) -> tuple[set[tuple[str, ...]], set[str]]:
    """(scope, group, resource, verb, resource name or "") a service account may do through roles in
    the manifests, and the names of the built-in roles it is bound to (scope "*" is cluster-wide)."""
    rights: set[tuple[str, ...]] = set()
    built_in: set[str] = set()
    for binding in (d for d in docs if d["kind"] in ("ClusterRoleBinding", "RoleBinding")):
        subjects = binding.get("subjects", [])
        if not any(s["kind"] == "ServiceAccount" and s["name"] == account and s["namespace"] == namespace
                   for s in subjects):
            continue
        where = binding["metadata"].get("namespace", "*")
        ref = binding["roleRef"]
        roles = [d for d in docs if d["kind"] == ref["kind"] and d["metadata"]["name"] == ref["name"]
                 and d["metadata"].get("namespace", "*") == (where if ref["kind"] == "Role" else "*")]
        if not roles:
            built_in.add(ref["name"] if ref["kind"] == "ClusterRole" else f"{where}/{ref['name']}")
            continue
        for rule in roles[0]["rules"]:
            rights |= {(where, group, resource, verb, name) for group in rule["apiGroups"]
                       for resource in rule["resources"] for verb in rule["verbs"]
                       for name in rule.get("resourceNames", [""])}
    return rights, built_in


def token_source(docs: list[dict[str, Any]], name: str) -> tuple[str, str]:
    """Where a container's API token comes from: ("secret", NAME) or ("projected", "serviceAccountToken")."""
    spec = deployment(docs)["spec"]["template"]["spec"]
    assert spec["automountServiceAccountToken"] is False, "each container mounts its own token"
    (mount,) = [m for m in container(docs, name)["volumeMounts"] if m["mountPath"] == TOKEN_PATH]
    (volume,) = [v for v in spec["volumes"] if v["name"] == mount["name"]]
    if "secret" in volume:
        return "secret", str(volume["secret"]["secretName"])
    assert any("serviceAccountToken" in source for source in volume["projected"]["sources"]), name
    return "projected", "serviceAccountToken"


def api_requests_in(paths: Iterable[Path]) -> set[tuple[str, str, str]]:
    found: set[tuple[str, str, str]] = set()
    for path in paths:
        found |= api_requests_in_source(path.read_text(encoding="utf-8"))
    return found


VERB_OF = {("GET", True): "get", ("GET", False): "list", ("POST", False): "create", ("POST", True): "create",
           ("PATCH", True): "patch", ("PUT", True): "update", ("DELETE", True): "delete"}  # fmt: skip


def api_requests_in_source(source: str) -> set[tuple[str, str, str]]:
    """(group, resource, verb) of every API path written in the source: the verb from a
    `.request("METHOD", path)` call, "watch" from `.stream(path)`, "" where only the path is written."""
    found: set[tuple[str, str, str]] = set()
    tree = ast.parse(source)
    # The pieces of an f-string are constants of their own: only the whole string is a path.
    seen = {id(part) for node in ast.walk(tree) if isinstance(node, ast.JoinedStr) for part in node.values}
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.args:
            method = node.args[0].value if isinstance(node.args[0], ast.Constant) else None
            if node.func.attr == "request" and isinstance(method, str) and len(node.args) > 1:
                path = _literal(node.args[1])
                if path is not None and (parsed := _resource(path)):
                    seen.add(id(node.args[1]))
                    found.add((parsed[0], parsed[1], VERB_OF.get((method, parsed[2]), method.lower())))
            elif node.func.attr == "stream" and (path := _literal(node.args[0])) and (parsed := _resource(path)):
                seen.add(id(node.args[0]))
                found.add((parsed[0], parsed[1], "watch"))
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant | ast.JoinedStr) and id(node) not in seen:
            path = _literal(node)
            if path is not None and (parsed := _resource(path)):
                found.add((parsed[0], parsed[1], ""))
    return found


def _literal(node: ast.expr) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(str(part.value) if isinstance(part, ast.Constant) else "{}" for part in node.values)
    return None


def _resource(path: str) -> tuple[str, str, bool] | None:
    """(group, resource[/subresource], names one object) of an API path, or None for other strings."""
    segments = path.split("?", maxsplit=1)[0].strip("/").split("/")
    if segments[0] == "api" and len(segments) >= 3 and path.startswith("/"):
        group, rest = "", segments[2:]
    elif segments[0] == "apis" and len(segments) >= 4 and path.startswith("/"):
        group, rest = segments[1], segments[3:]
    else:
        return None
    if rest[0] == "namespaces" and len(rest) >= 3:
        rest = rest[2:]
    resource = rest[0] + (f"/{rest[2]}" if len(rest) >= 3 else "")
    return group, resource, len(rest) >= 2


# -- scheduler configuration shapes ------------------------------------------------------------

COMMON = {"apiVersion", "kind", "parallelism", "leaderElection", "clientConnection", "enableProfiling",
          "enableContentionProfiling", "percentageOfNodesToScore", "podInitialBackoffSeconds", "podMaxBackoffSeconds",
          "profiles", "extenders"}  # fmt: skip
INSECURE = {"healthzBindAddress", "metricsBindAddress"}  # plain-HTTP serving: gone from v1beta3 on
FIELDS = {"v1beta1": COMMON | INSECURE, "v1beta2": COMMON | INSECURE, "v1beta3": COMMON, "v1": COMMON}
ONLY_IN = {"v1beta1": {"apiVersion"} | INSECURE, "v1beta2": {"apiVersion"}, "v1beta3": {"apiVersion"}, "v1": {"apiVersion"}}
ELECTION = {"leaderElect", "leaseDuration", "renewDeadline", "retryPeriod", "resourceLock", "resourceName",
            "resourceNamespace"}  # fmt: skip
EXTENDER = {"urlPrefix", "filterVerb", "preemptVerb", "prioritizeVerb", "bindVerb", "weight", "enableHTTPS",
            "tlsConfig", "httpTimeout", "nodeCacheCapable", "managedResources", "ignorable"}  # fmt: skip
QUALIFIED = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?")


def shape_problems(version: str, config: Mapping[str, Any]) -> list[str]:
    """The fields `version` has and the values kube-scheduler's validation accepts, one line per breach."""
    problems = [f"{field}: not a field of {version}" for field in sorted(set(config) - FIELDS[version])]
    if config.get("apiVersion") != f"kubescheduler.config.k8s.io/{version}" or config.get("kind") != "KubeSchedulerConfiguration":
        problems.append(f"apiVersion/kind: must be kubescheduler.config.k8s.io/{version} KubeSchedulerConfiguration")
    for field in sorted(INSECURE & set(config)):
        address = str(config[field])
        if version == "v1beta2" and address and not address.endswith(":0"):
            problems.append(f"{field}: 1.23+ accept only an empty address or port 0")  # kubernetes#106866
        elif version == "v1beta1" and not re.fullmatch(r"127\.0\.0\.1:[1-9]\d*", address):
            # 1.20 refuses port 0 and reads an empty address as 0.0.0.0:10251: loopback is all it allows
            problems.append(f"{field}: must be on loopback (1.20 always serves plain HTTP)")
    if not 0 <= config.get("percentageOfNodesToScore", 0) <= 100:
        problems.append("percentageOfNodesToScore: must be 0..100")
    election = config.get("leaderElection", {})
    problems += [f"leaderElection.{field}: not a field" for field in sorted(set(election) - ELECTION)]
    if election.get("resourceLock", "leases") != "leases":
        problems.append("leaderElection.resourceLock: use leases (the lock every release from 1.20 accepts)")
    if not all(isinstance(p, Mapping) and p.get("schedulerName") for p in config.get("profiles", [{}])):
        problems.append("profiles: each names its schedulerName")
    for index, extender in enumerate(config.get("extenders", [])):
        problems += [f"extenders[{index}].{problem}" for problem in _extender_problems(extender)]
    return problems


def _extender_problems(extender: Mapping[str, Any]) -> list[str]:
    problems = [f"{field}: not a field" for field in sorted(set(extender) - EXTENDER)]
    if extender.get("prioritizeVerb") and not extender.get("weight", 0) > 0:
        problems.append("weight: must be above 0")
    if "httpTimeout" in extender and seconds(str(extender["httpTimeout"])) <= 0:
        problems.append("httpTimeout: must be a duration above 0")
    for resource in extender.get("managedResources", []):
        name = resource.get("name", "")
        if not QUALIFIED.fullmatch(name) or name.split("/")[0].endswith("kubernetes.io"):
            problems.append(f"managedResources: {name} is not an extended resource name")
    return problems


def without(config: Mapping[str, Any], fields: set[str]) -> dict[str, Any]:
    return {key: value for key, value in config.items() if key not in fields}


def seconds(duration: str) -> float:
    """A Go duration of one unit ("15s", "500ms", "2m") in seconds."""
    match = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    if match is None:
        return 0.0
    return float(match.group(1)) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def pinned(image: str) -> bool:
    """An image by digest, or by a tag that names an exact release (`3.11.11-slim-bookworm`, `v1.30.0`)."""
    if re.search(r"@sha256:[0-9a-f]{64}$", image):
        return True
    tag = image.rsplit("/", 1)[-1].partition(":")[2]
    return re.match(r"v?\d+\.\d+\.\d+", tag) is not None
