"""A real etcd, kube-apiserver and kube-scheduler on loopback, for the end-to-end tests.

The binaries come from tests/e2e/get-kube.sh (environment variables, or built once per machine
from Debian's sources). Everything runs in a temporary folder on free loopback ports and is
stopped, with its logs kept for a failing test, when the context ends. Nodes are plain API
objects with a status patched in (no kubelet): kube-scheduler binds pods to them, and they
stay Pending, which is all a scheduler test needs.
"""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from extender.config import ExtenderConfig
from extender.kubeapi import ApiError, Rest, wait_until

HERE = Path(__file__).resolve().parent
TOKEN = "fleetsched-e2e-admin-token"


def binaries() -> Path:
    done = subprocess.run(["bash", str(HERE / "get-kube.sh")], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"tests/e2e/get-kube.sh failed:\n{done.stderr[-3000:]}")
    return Path(done.stdout.strip().splitlines()[-1])


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass
class ControlPlane:
    folder: Path
    api_port: int
    processes: dict[str, subprocess.Popen[bytes]]
    commands: dict[str, tuple[list[str], dict[str, str] | None]] = field(default_factory=dict)

    @property
    def rest(self) -> Rest:
        return Rest(f"https://127.0.0.1:{self.api_port}", token=TOKEN, verify=False)

    @property
    def kubeconfig(self) -> Path:
        return self.folder / "kubeconfig"

    def logs(self, name: str) -> str:
        path = self.folder / f"{name}.log"
        return path.read_text(encoding="utf-8", errors="replace")[-4000:] if path.exists() else ""

    def start_scheduler(self, extender_url: str | None, scheduler_name: str = "fleetsched", instance: str = "") -> None:
        """A kube-scheduler for pods naming `scheduler_name`, calling the extender when a URL is given
        (`instance` names a second one for the same pods: replicas, each with its own extender)."""
        config = self.folder / f"scheduler-{scheduler_name}{instance}.yaml"
        text = (
            "apiVersion: kubescheduler.config.k8s.io/v1beta1\n"
            "kind: KubeSchedulerConfiguration\n"
            f"clientConnection:\n  kubeconfig: {self.kubeconfig}\n  qps: 500\n  burst: 1000\n"
            "leaderElection:\n  leaderElect: false\n"
            "percentageOfNodesToScore: 100\n"
            # With --config, 1.20 ignores --port: each scheduler gets its own loopback ports.
            f"healthzBindAddress: 127.0.0.1:{free_port()}\nmetricsBindAddress: 127.0.0.1:{free_port()}\n"
            f"profiles:\n- schedulerName: {scheduler_name}\n"
        )
        if extender_url is None:
            config.write_text(text, encoding="utf-8")
        else:
            config.write_text(text + self._extender(extender_url), encoding="utf-8")
        self._spawn(f"kube-scheduler-{scheduler_name}{instance}",
                    [str(self.folder / "bin" / "kube-scheduler"), "--config", str(config),
                     "--secure-port", "0", "--port", "0", "-v", "1"])

    @staticmethod
    def _extender(extender_url: str) -> str:
        return (
            "extenders:\n"
            f"- urlPrefix: {extender_url}\n"
            "  filterVerb: filter\n  prioritizeVerb: prioritize\n  preemptVerb: preempt\n  bindVerb: bind\n"
            "  weight: 10\n  enableHTTPS: false\n  httpTimeout: 5s\n  nodeCacheCapable: true\n  ignorable: false\n"
            "  managedResources:\n  - name: nvidia.com/gpu\n    ignoredByScheduler: false\n"
            "  - name: nvidia.com/mig-1g.5gb\n    ignoredByScheduler: false\n"
            "  - name: nvidia.com/mig-3g.20gb\n    ignoredByScheduler: false\n"
        )

    def _spawn(self, name: str, command: list[str], env: Mapping[str, str] | None = None) -> None:
        log = (self.folder / f"{name}.log").open("ab")  # a restarted process's log goes on after the first's
        environment = {**os.environ, **env} if env is not None else None
        self.processes[name] = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=environment)
        self.commands[name] = (command, dict(env) if env is not None else None)

    def kill(self, name: str, *, graceful: bool = True) -> None:
        """Stops one process (SIGTERM, or SIGKILL when not `graceful`) and waits for it."""
        process = self.processes[name]
        if graceful:
            process.terminate()
        else:
            process.kill()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def restart(self, name: str) -> None:
        """Starts a stopped process again with its first command line (the API server: its port,
        certificates and etcd as before)."""
        command, env = self.commands[name]
        self._spawn(name, command, env)

    def serving(self) -> bool:
        """Whether the API server answers."""
        try:
            return self.rest.request("GET", "/api/v1/namespaces/default", timeout_s=2) is not None
        except Exception:
            return False

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            process.terminate()
        for process in self.processes.values():
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


@contextmanager
def control_plane(authorization_mode: str = "AlwaysAllow") -> Iterator[ControlPlane]:
    """The control plane; "RBAC" makes every request but the admin's pass the roles (deploy's test)."""
    found = binaries()
    with tempfile.TemporaryDirectory(prefix="fleetsched-e2e-") as raw:
        folder = Path(raw)
        (folder / "bin").symlink_to(found)
        subprocess.run(["openssl", "genrsa", "-out", str(folder / "sa.key"), "2048"], check=True, capture_output=True)
        subprocess.run(["openssl", "rsa", "-in", str(folder / "sa.key"), "-pubout", "-out", str(folder / "sa.pub")],
                       check=True, capture_output=True)
        (folder / "tokens.csv").write_text(f"{TOKEN},admin,admin,system:masters\n", encoding="utf-8")
        etcd_port, peer_port, api_port = free_port(), free_port(), free_port()
        plane = ControlPlane(folder, api_port, {})
        (folder / "kubeconfig").write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "e2e",
            "clusters": [{"name": "e2e", "cluster": {"server": f"https://127.0.0.1:{api_port}",
                                                     "insecure-skip-tls-verify": True}}],
            "users": [{"name": "admin", "user": {"token": TOKEN}}],
            "contexts": [{"name": "e2e", "context": {"cluster": "e2e", "user": "admin"}}],
        }), encoding="utf-8")
        try:
            plane._spawn("etcd", [str(folder / "bin" / "etcd"), "--data-dir", str(folder / "etcd"),
                                  "--listen-client-urls", f"http://127.0.0.1:{etcd_port}",
                                  "--advertise-client-urls", f"http://127.0.0.1:{etcd_port}",
                                  "--listen-peer-urls", f"http://127.0.0.1:{peer_port}"])
            plane._spawn("kube-apiserver", [
                str(folder / "bin" / "kube-apiserver"), "--etcd-servers", f"http://127.0.0.1:{etcd_port}",
                "--secure-port", str(api_port), "--bind-address", "127.0.0.1", "--cert-dir", str(folder / "certs"),
                "--token-auth-file", str(folder / "tokens.csv"), "--authorization-mode", authorization_mode,
                "--service-account-issuer", "https://kubernetes.default.svc",
                "--service-account-key-file", str(folder / "sa.pub"),
                "--service-account-signing-key-file", str(folder / "sa.key"),
                "--service-cluster-ip-range", "10.0.0.0/24", "--insecure-port", "0",
            ])
            rest = plane.rest
            if not wait_until(plane.serving, 90, 0.5):
                raise RuntimeError("kube-apiserver did not start:\n" + plane.logs("kube-apiserver"))
            for namespace in ("default", "ml"):
                if namespace != "default":
                    rest.request("POST", "/api/v1/namespaces", {"metadata": {"name": namespace}})
                _create_service_account(rest, namespace)
            yield plane
        finally:
            plane.stop()


def _create_service_account(rest: Rest, namespace: str) -> None:
    # There is no controller-manager to make it; pods are refused without one.
    try:
        rest.request("POST", f"/api/v1/namespaces/{namespace}/serviceaccounts", {"metadata": {"name": "default"}})
    except ApiError as error:
        if error.status != 409:
            raise


def add_node(rest: Rest, name: str, labels: Mapping[str, str], allocatable: Mapping[str, str]) -> None:
    """A node object with the given labels and allocatable resources, Ready and without taints."""
    resources = {"cpu": "96", "memory": "1000Gi", "pods": "110", **allocatable}
    rest.request("POST", "/api/v1/nodes", {"metadata": {"name": name, "labels": dict(labels)}})
    now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    status = {"status": {"capacity": resources, "allocatable": resources,
                         "conditions": [{"type": "Ready", "status": "True", "reason": "E2E", "lastHeartbeatTime": now,
                                         "lastTransitionTime": now}]}}
    rest.request("PATCH", f"/api/v1/nodes/{name}/status", status, content_type="application/merge-patch+json")
    rest.request("PATCH", f"/api/v1/nodes/{name}", {"spec": {"taints": None}}, content_type="application/merge-patch+json")


def add_pod(rest: Rest, name: str, resources: Mapping[str, str], *, labels: Mapping[str, str] | None = None,
            annotations: Mapping[str, str] | None = None, scheduler: str = "fleetsched", priority: int = 0,
            priority_class: str = "") -> dict[str, Any]:
    """A pod in namespace ml; its priority comes from `priority_class` when given (the API
    server's Priority admission computes it), else from `priority`."""
    spec: dict[str, Any] = {
        "schedulerName": scheduler, "automountServiceAccountToken": False,
        "containers": [{"name": "main", "image": "example.invalid/none",
                        "resources": {"requests": dict(resources), "limits": dict(resources)}}],
    }
    if priority_class:
        spec["priorityClassName"] = priority_class
    else:
        spec["priority"] = priority
    pod = {
        "metadata": {"name": name, "namespace": "ml", "labels": dict(labels or {}), "annotations": dict(annotations or {})},
        "spec": spec,
    }
    created: dict[str, Any] = rest.request("POST", "/api/v1/namespaces/ml/pods", pod)
    return created


def add_priority_class(rest: Rest, name: str, value: int) -> None:
    rest.request("POST", "/apis/scheduling.k8s.io/v1/priorityclasses",
                 {"metadata": {"name": name}, "value": value, "preemptionPolicy": "PreemptLowerPriority"})


def node_of(rest: Rest, name: str) -> str:
    pod = rest.request("GET", f"/api/v1/namespaces/ml/pods/{name}")
    return str((pod.get("spec") or {}).get("nodeName") or "")


def local_extender(profile: str = "cost-greedy", interval_s: float = 0.5) -> ExtenderConfig:
    """The extender's configuration for a test: loopback, any free port, the given profile."""
    return ExtenderConfig(address="127.0.0.1", port=0, prefix="/extender", tls_cert="", tls_key="", kubeconfig="",
                          scheduler_name="fleetsched", profile=profile, planner_interval_s=interval_s,
                          stale_after_s=30.0, pools=(), health_port=0)


def extender_ready(port: int) -> bool:
    """Whether the extender on `port` (loopback) answers /readyz with 200."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
    try:
        connection.request("GET", "/readyz")
        return connection.getresponse().status == 200
    except OSError:
        return False
    finally:
        connection.close()


@contextmanager
def extender_process(plane: ControlPlane, profile: str = "cost-greedy", interval_s: float = 1.0,
                     more: str = "") -> Iterator[str]:
    """`fleetsched extender` in a process of its own, as an operator runs it; yields its URL.
    `more`: further lines of its configuration file."""
    port = free_port()
    config = plane.folder / "extender.toml"
    config.write_text(f'address = "127.0.0.1"\nport = {port}\nprefix = "/extender"\nkubeconfig = "{plane.kubeconfig}"\n'
                      f'profile = "{profile}"\nplanner_interval_s = {interval_s}\nhealth_port = 0\n{more}',
                      encoding="utf-8")
    plane._spawn("fleetsched-extender", [sys.executable, "-m", "fleetsched", "extender", "--config", str(config)])
    process = plane.processes["fleetsched-extender"]
    url = f"http://127.0.0.1:{port}/extender"

    def ready() -> bool:
        if process.poll() is not None:
            raise RuntimeError("fleetsched extender exited:\n" + plane.logs("fleetsched-extender"))
        return extender_ready(port)

    if not wait_until(ready, 60, 0.2):
        raise RuntimeError("fleetsched extender did not become ready:\n" + plane.logs("fleetsched-extender"))
    try:
        yield url
    finally:
        plane.kill("fleetsched-extender")
