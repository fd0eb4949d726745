"""End to end: the guardrails against a real kube-apiserver and kube-scheduler 1.20.

`fleetsched extender` runs as an operator runs it, with a governance file (team from a pod
label; team vision has a $10 monthly budget; a job of more than 4 GPUs needs approval) and the
Approval CustomResourceDefinition of deploy/manifests/governance.yaml. One on-demand H100 node
costs $6.88 per GPU-hour; each of vision's pods declares an hour. The first binds; the second
would pass the budget and stays Pending with the reason as an Event; a 5-GPU pod waits for
approval until `fleetsched approve` writes one, then binds; the extender stopped and started
again reads its spend back from the API server, and the second pod is still held.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from extender.governance_api import SPEND_CONFIGMAP, read_spend_state
from extender.kubeapi import ApiError, Rest, wait_until
from scheduler.catalog import default_catalog
from scheduler.spend import SpendBook
from tests.e2e.controlplane import (
    ControlPlane,
    add_node,
    add_pod,
    control_plane,
    extender_process,
    extender_ready,
    node_of,
)

ROOT = Path(__file__).resolve().parent.parent
ON_DEMAND = {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3", "node.kubernetes.io/instance-type": "p5.48xlarge",
             "karpenter.sh/capacity-type": "on-demand"}
GPU_HOUR_USD = default_catalog().prices["aws:p5.48xlarge:on-demand"].usd_per_hour / 8
GOVERNANCE = """
team_from = "label"
team_label = "fleetsched.io/team"
[[queue]]
name = "vision"
[[queue]]
name = "nlp"
[[budget]]
name = "vision-month"
team = "vision"
period = "month"
usd = 10
action = "hold"
[[approval]]
name = "big"
above_gpus = 4
"""
HOUR = {"fleetsched.io/runtime-limit-s": "3600"}


def events(rest: Rest, pod: str) -> list[dict[str, Any]]:
    listed = rest.request("GET", f"/api/v1/namespaces/ml/events?fieldSelector=involvedObject.name%3D{pod}")
    return [event for event in listed.get("items") or [] if event.get("source", {}).get("component")
            == "fleetsched-extender"]  # fmt: skip


def reasons(rest: Rest, pod: str) -> list[str]:
    return [str(event["reason"]) for event in events(rest, pod)]


@pytest.fixture(scope="module")
def plane() -> Iterator[tuple[ControlPlane, int]]:
    with control_plane() as running:
        rest = running.rest
        rest.request("POST", "/api/v1/namespaces", {"metadata": {"name": "fleetsched"}})
        docs = yaml.safe_load_all((ROOT / "deploy/manifests/governance.yaml").read_text(encoding="utf-8"))
        (crd,) = [doc for doc in docs if doc and doc["kind"] == "CustomResourceDefinition"]
        rest.request("POST", "/apis/apiextensions.k8s.io/v1/customresourcedefinitions", crd)
        approvals = "/apis/fleetsched.io/v1alpha1/namespaces/fleetsched/approvals"
        assert wait_until(lambda: _answers(rest, approvals), 30, 0.2), "the Approval resource was never served"
        add_node(rest, "h100-od-1", ON_DEMAND, {"nvidia.com/gpu": "8"})
        (running.folder / "gov.toml").write_text(GOVERNANCE, encoding="utf-8")
        more = 'governance = "gov.toml"\nlease_namespace = "fleetsched"\n'
        with extender_process(running, profile="governed", interval_s=0.5, more=more) as url:
            running.start_scheduler(url)
            yield running, int(url.split(":")[2].split("/")[0])


def _answers(rest: Rest, path: str) -> bool:
    try:
        rest.request("GET", path)
    except ApiError:
        return False
    return True


def test_a_pod_over_budget_stays_pending_with_the_reason_as_an_event(plane: tuple[ControlPlane, int]) -> None:
    control, _ = plane
    rest = control.rest
    add_pod(rest, "v1", {"nvidia.com/gpu": "1"}, labels={"fleetsched.io/team": "vision"}, annotations=HOUR)
    assert wait_until(lambda: node_of(rest, "v1") == "h100-od-1", 30), control.logs("fleetsched-extender")
    add_pod(rest, "v2", {"nvidia.com/gpu": "1"}, labels={"fleetsched.io/team": "vision"}, annotations=HOUR)
    assert wait_until(lambda: "BudgetGuard" in reasons(rest, "v2"), 30), control.logs("fleetsched-extender")
    (event,) = [e for e in events(rest, "v2") if e["reason"] == "BudgetGuard"]
    assert event["type"] == "Warning" and event["involvedObject"]["kind"] == "Pod"
    assert event["message"].startswith(f"fleetsched holds the pod: BudgetGuard: budget vision-month: "
                                       f"${GPU_HOUR_USD:,.2f} of $10.00 committed")  # fmt: skip
    assert node_of(rest, "v2") == ""


def test_fleetsched_approve_lets_a_pod_needing_approval_bind(plane: tuple[ControlPlane, int]) -> None:
    control, _ = plane
    rest = control.rest
    add_pod(rest, "big", {"nvidia.com/gpu": "5"}, labels={"fleetsched.io/team": "nlp"})
    assert wait_until(lambda: "ApprovalGate" in reasons(rest, "big"), 30), control.logs("fleetsched-extender")
    assert node_of(rest, "big") == ""
    done = subprocess.run([sys.executable, "-m", "fleetsched", "approve", "big", "--namespace", "ml", "--kubeconfig",
                           str(control.kubeconfig), "--reason", "e2e", "--approver", "alice"],
                          capture_output=True, text=True, cwd=ROOT, check=False, timeout=60)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "approved pod ml/big (approval fleetsched/pod.ml.big)"
    assert wait_until(lambda: node_of(rest, "big") == "h100-od-1", 20), control.logs("fleetsched-extender")
    again = subprocess.run([sys.executable, "-m", "fleetsched", "approve", "big", "--namespace", "ml", "--reject",
                            "--kubeconfig", str(control.kubeconfig)],
                           capture_output=True, text=True, cwd=ROOT, check=False, timeout=60)  # fmt: skip
    assert again.returncode == 2 and again.stderr.count("\n") == 1
    assert "exists already (approved by alice)" in again.stderr


def test_a_restarted_extender_keeps_the_spend_and_the_second_pod_stays_held(plane: tuple[ControlPlane, int]) -> None:
    control, port = plane
    rest = control.rest
    assert wait_until(lambda: "BudgetGuard" in reasons(rest, "v2"), 30)
    control.kill("fleetsched-extender")  # SIGTERM: the leader writes the book as it stops
    stored = rest.request("GET", f"/api/v1/namespaces/fleetsched/configmaps/{SPEND_CONFIGMAP}")
    book_json, started = read_spend_state(stored["data"]["state"])
    assert sorted(key.partition("@")[0] for key in started) == ["ml/big", "ml/v1"]
    assert SpendBook.from_json(book_json).committed("vision-month", _month()) == pytest.approx(GPU_HOUR_USD)
    held_before = len(events(rest, "v2"))
    control.restart("fleetsched-extender")
    assert wait_until(lambda: extender_ready(port), 60, 0.2), control.logs("fleetsched-extender")
    # The new leader asks kube-scheduler for every unbound pod again: v2 is judged anew, and held.
    assert wait_until(lambda: len(events(rest, "v2")) > held_before, 30), control.logs("fleetsched-extender")
    newest = max(events(rest, "v2"), key=lambda e: (e["lastTimestamp"], e["metadata"]["name"]))
    assert newest["reason"] == "BudgetGuard" and f"${GPU_HOUR_USD:,.2f} of $10.00 committed" in newest["message"]
    assert node_of(rest, "v2") == ""


def _month() -> str:
    return time.strftime("%Y-%m", time.gmtime())
