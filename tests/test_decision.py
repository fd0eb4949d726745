"""validate(snapshot, decision): the one checker every placer and world relies on."""

from __future__ import annotations

import pytest

from scheduler.decision import (
    Code,
    Decision,
    Grant,
    InvalidDecisionError,
    Placement,
    Preemption,
    ReplicaPlacement,
    Status,
    problems,
    validate,
)
from scheduler.model import MigMode
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole

H100 = make_pool("h100", nodes=2)
T4 = make_pool("t4", gpu="T4", gpus_per_node=1, sharing=True)
A100 = make_pool("a100", gpu="A100-40GB", mig_mode=MigMode.DYNAMIC)
SNAPSHOT = make_snapshot(H100, T4, A100)


def replica(node: str, *gpus: int, start: int | None = None) -> ReplicaPlacement:
    return ReplicaPlacement(node, tuple(Grant(gpu, start) for gpu in gpus))


GOOD = Placement(make_job("good", whole(2)), (replica("h100-0", 0, 1),))
CASES = {
    "over-allocation": (
        Decision(placements=(GOOD, Placement(make_job("late", whole(1)), (replica("h100-0", 1),)))),
        "job late: GPU already in use by good",
    ),
    "share-over-allocation": (
        Decision(placements=(Placement(make_job("s1", share(700)), (replica("t4-0", 0),)),
                             Placement(make_job("s2", share(400)), (replica("t4-0", 0),)))),
        "compute over-allocated: 700+400 > 1000",
    ),
    "broken-mig-geometry": (
        Decision(placements=(Placement(make_job("m1", mig_request("4g.20gb")), (replica("a100-0", 0, start=0),)),
                             Placement(make_job("m2", mig_request("3g.20gb")), (replica("a100-0", 0, start=2),)))),
        "illegal start 2",
    ),
    "partial-gang": (
        Decision(placements=(Placement(make_job("gang", whole(8), replicas=2), (replica("h100-0", *range(8)),)),)),
        "gang of 2 placed with 1 replicas",
    ),
    "placed-twice": (Decision(placements=(GOOD, GOOD)), "job good placed twice"),
    "wrong-grant-count": (
        Decision(placements=(Placement(make_job("two", whole(2)), (replica("h100-0", 0),)),)),
        "1 grants for a request of 2 GPUs",
    ),
    "same-gpu-twice": (
        Decision(placements=(Placement(make_job("dup", whole(2)), (replica("h100-0", 3, 3),)),)),
        "the same GPU granted twice",
    ),
    "mig-without-start": (
        Decision(placements=(Placement(make_job("m", mig_request("1g.5gb")), (replica("a100-0", 0),)),)),
        "a MIG grant without a start",
    ),
    "victim-not-running": (Decision(preemptions=(Preemption("ghost", "priority"),)), "preempts ghost"),
    "unknown-node": (
        Decision(placements=(Placement(make_job("lost"), (replica("nowhere", 0),)),)),
        "no node nowhere",
    ),
}


@pytest.mark.parametrize(("decision", "expected"), list(CASES.values()), ids=list(CASES))
def test_validate_rejects(decision: Decision, expected: str) -> None:
    with pytest.raises(InvalidDecisionError, match="invalid decision") as caught:
        validate(SNAPSHOT, decision)
    assert any(expected in problem for problem in caught.value.problems), caught.value.problems


def test_validate_accepts_a_mixed_valid_decision_and_preemption_frees_room() -> None:
    decision = Decision(placements=(
        GOOD,
        Placement(make_job("gang", whole(8), replicas=1), (replica("h100-1", *range(8)),)),
        Placement(make_job("s1", share(500, 4)), (replica("t4-0", 0),)),
        Placement(make_job("s2", share(500, 4)), (replica("t4-0", 0),)),
        Placement(make_job("m1", mig_request("3g.20gb", 2)), (replica("a100-0", 0, 1, start=4),)),
    ))
    assert problems(SNAPSHOT, decision) == []
    validate(SNAPSHOT, decision)
    running = SNAPSHOT.assume(GOOD)
    evict = Decision(preemptions=(Preemption("good", "priority", "vip"),),
                     placements=(Placement(make_job("vip", whole(8)), (replica("h100-0", *range(8)),)),))
    validate(running, evict)
    assert problems(running, Decision(placements=evict.placements))


def test_status_helpers() -> None:
    assert Status().ok and str(Status()) == "success"
    status = Status.unschedulable("full").by("WholeGpuFit")
    assert status.code is Code.UNSCHEDULABLE and str(status) == "WholeGpuFit: full"
    assert Status.unresolvable("x").code is Code.UNRESOLVABLE
    assert Status.wait("quota").code is Code.WAIT and not Status.wait().ok
