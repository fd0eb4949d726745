"""End to end under faults: the API server or the extender gone mid-burst, and a leader handing over.

A real etcd, kube-apiserver and kube-scheduler (tests/e2e/controlplane.py) and `fleetsched
extender` processes, as an operator runs them. Each test sends a burst of one-GPU pods at
H100 nodes and breaks something in the middle of it; in the end every pod must be bound, each
to GPUs no other pod holds (the `fleetsched.io/gpus` annotations of all pods on a node never
overlap). Each test has a control plane of its own: a fault never leaks into the next test.
"""

from __future__ import annotations

import http.client
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

from extender.kubeapi import wait_until
from extender.state import GPUS, parse_grants
from tests.e2e.controlplane import ControlPlane, add_node, add_pod, control_plane, free_port

log = logging.getLogger(__name__)

H100 = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "node.kubernetes.io/instance-type": "p5.48xlarge",
        "karpenter.sh/capacity-type": "on-demand"}
NODES = 28  # 224 GPUs for bursts of 200 one-GPU pods
BURST = 200
OUTAGE_S = 20.0
LEASE = {"lease_duration_s": 4.0, "renew_deadline_s": 3.0, "retry_period_s": 0.5}


@dataclass
class Extender:
    """One `fleetsched extender` process on the control plane, started again with the same
    configuration, port and identity after it is killed."""

    plane: ControlPlane
    name: str
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/extender"

    def readyz(self) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
        try:
            connection.request("GET", "/readyz")
            response = connection.getresponse()
            return response.status, response.read().decode()
        except OSError:
            return 0, ""
        finally:
            connection.close()

    def wait_serving(self, timeout_s: float = 60.0) -> None:
        """Until /readyz answers at all (a follower answers 503)."""
        process = self.plane.processes[self.name]

        def answers() -> bool:
            if process.poll() is not None:
                raise RuntimeError(f"{self.name} exited:\n" + self.plane.logs(self.name))
            return self.readyz()[0] != 0

        assert wait_until(answers, timeout_s, 0.1), f"{self.name} never served:\n" + self.plane.logs(self.name)

    def ready(self) -> bool:
        return self.readyz()[0] == 200


def start_extender(plane: ControlPlane, name: str, settings: Mapping[str, object] = LEASE) -> Extender:
    port = free_port()
    lines = ['address = "127.0.0.1"', f"port = {port}", "health_port = 0", f'kubeconfig = "{plane.kubeconfig}"',
             'profile = "cost-greedy"', "planner_interval_s = 0.5", *(f"{key} = {value}" for key, value in settings.items())]
    config = plane.folder / f"{name}.toml"
    config.write_text("\n".join(lines) + "\n", encoding="utf-8")
    plane._spawn(name, [sys.executable, "-m", "fleetsched", "extender", "--config", str(config)], env={"POD_NAME": name})
    extender = Extender(plane, name, port)
    extender.wait_serving()
    return extender


@contextmanager
def gpu_cluster() -> Iterator[ControlPlane]:
    with control_plane() as plane:
        for index in range(NODES):
            add_node(plane.rest, f"h100-{index:02d}", H100, {"nvidia.com/gpu": "8"})
        yield plane


def create_pods(plane: ControlPlane, names: range) -> None:
    """Creates one-GPU pods, retrying each while the API server is away."""
    rest = plane.rest
    for index in names:
        while True:
            try:
                add_pod(rest, f"burst-{index:03d}", {"nvidia.com/gpu": "1"})
                break
            except Exception as error:
                if "AlreadyExists" in str(error):  # created before a connection broke
                    break
                time.sleep(0.2)


def bound_pods(plane: ControlPlane) -> dict[str, tuple[str, str]]:
    """Pod name -> (node, its GPUs annotation) of every bound pod."""
    listed = plane.rest.request("GET", "/api/v1/namespaces/ml/pods")
    return {pod["metadata"]["name"]: (pod["spec"]["nodeName"], (pod["metadata"].get("annotations") or {}).get(GPUS, ""))
            for pod in listed["items"] if (pod.get("spec") or {}).get("nodeName")}


def all_bound(plane: ControlPlane, count: int, timeout_s: float) -> dict[str, tuple[str, str]]:
    found: dict[str, tuple[str, str]] = {}

    def done() -> bool:
        nonlocal found
        try:
            found = bound_pods(plane)
        except Exception:
            return False
        return len(found) == count

    wait_until(done, timeout_s, 0.5)
    return found


def assert_each_gpu_granted_once(bound: Mapping[str, tuple[str, str]]) -> None:
    held = Counter((node, grant.gpu) for node, text in bound.values() for grant in parse_grants(text))
    twice = {gpu: n for gpu, n in held.items() if n > 1}
    assert not twice, f"GPUs granted twice: {twice}"
    assert sum(held.values()) == len(bound)  # one GPU each: none without its annotation


def test_the_api_server_stopped_mid_burst_loses_and_doubles_nothing() -> None:
    with gpu_cluster() as plane:
        extender = start_extender(plane, "fleetsched-extender")
        assert wait_until(extender.ready, 30, 0.2)
        plane.start_scheduler(extender.url)
        create_pods(plane, range(BURST // 2))
        assert wait_until(lambda: len(bound_pods(plane)) >= 10, 60, 0.2), plane.logs("fleetsched-extender")
        plane.kill("kube-apiserver")  # in the middle of the burst: pods pending, being filtered and bound
        time.sleep(OUTAGE_S)
        restarted = time.monotonic()
        plane.restart("kube-apiserver")
        assert wait_until(plane.serving, 30, 0.2), plane.logs("kube-apiserver")
        create_pods(plane, range(BURST // 2, BURST))
        bound = all_bound(plane, BURST, 60 - (time.monotonic() - restarted))
        assert len(bound) == BURST, (f"{len(bound)} of {BURST} bound 60 s after the restart\n"
                                     + plane.logs("fleetsched-extender") + plane.logs("kube-scheduler-fleetsched"))
        assert_each_gpu_granted_once(bound)
        assert extender.ready()
        log.info("API server outage: all %d pods bound %.1f s after the restart", BURST, time.monotonic() - restarted)


def test_the_extender_killed_mid_burst_and_started_again_loses_and_doubles_nothing() -> None:
    with gpu_cluster() as plane:
        extender = start_extender(plane, "fleetsched-extender")
        assert wait_until(extender.ready, 30, 0.2)
        plane.start_scheduler(extender.url)
        rest_of_burst = threading.Thread(target=create_pods, args=(plane, range(BURST)))
        rest_of_burst.start()
        assert wait_until(lambda: len(bound_pods(plane)) >= BURST // 4, 60, 0.2), plane.logs("fleetsched-extender")
        plane.kill("fleetsched-extender", graceful=False)  # no goodbye: the lease is not released
        plane.restart("fleetsched-extender")
        restarted = time.monotonic()
        extender.wait_serving()
        rest_of_burst.join()
        bound = all_bound(plane, BURST, 60 - (time.monotonic() - restarted))
        assert len(bound) == BURST, (f"{len(bound)} of {BURST} bound 60 s after the restart\n"
                                     + plane.logs("fleetsched-extender") + plane.logs("kube-scheduler-fleetsched"))
        assert_each_gpu_granted_once(bound)
        log.info("extender killed: all %d pods bound %.1f s after the restart", BURST, time.monotonic() - restarted)


def test_of_two_replicas_only_the_leader_binds_and_a_killed_leader_hands_over_within_the_lease() -> None:
    with gpu_cluster() as plane:
        first = start_extender(plane, "extender-a")
        assert wait_until(first.ready, 30, 0.1)
        second = start_extender(plane, "extender-b")
        assert wait_until(lambda: second.readyz() == (503, "follower (leader: extender-a)\n"), 10, 0.1)
        # Each replica has a kube-scheduler of its own beside it (as in a pod): both schedule every pod.
        plane.start_scheduler(first.url, instance="-a")
        plane.start_scheduler(second.url, instance="-b")
        create_pods(plane, range(BURST // 2))
        bound = all_bound(plane, BURST // 2, 60)
        assert len(bound) == BURST // 2, plane.logs("extender-a") + plane.logs("kube-scheduler-fleetsched-a")
        assert_each_gpu_granted_once(bound)
        assert "follower (leader: extender-a)" in plane.logs("kube-scheduler-fleetsched-b")  # asked, and refused
        assert second.readyz()[0] == 503
        plane.kill("extender-a", graceful=False)
        killed = time.monotonic()
        assert wait_until(second.ready, LEASE["lease_duration_s"] + 3.0, 0.1), plane.logs("extender-b")
        handed_over_s = time.monotonic() - killed
        assert handed_over_s <= LEASE["lease_duration_s"] + LEASE["retry_period_s"] + 1.0, handed_over_s
        log.info("leader killed: the follower led %.1f s later", handed_over_s)
        create_pods(plane, range(BURST // 2, BURST))
        bound = all_bound(plane, BURST, 60)
        assert len(bound) == BURST, plane.logs("extender-b") + plane.logs("kube-scheduler-fleetsched-b")
        assert_each_gpu_granted_once(bound)
