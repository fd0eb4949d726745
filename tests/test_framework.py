"""The Framework: hook order, node equivalence classes, verdict memo, score normalisation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import ClassVar

import pytest

import policies
from policies.fit import GpuModelFit, WholeGpuFit
from policies.ordering import PriorityThenAge
from policies.packing import MostAllocated
from scheduler.classes import NodeClasses
from scheduler.decision import OK, Code, Decision, Preemption, Status, validate
from scheduler.framework import Framework
from scheduler.model import ClusterSnapshot, Grant, Job, Node, Placement, ReplicaPlacement, empty_node
from scheduler.plugin import Cycle, Plugin
from scheduler.profile import Profile
from scheduler.queue import WaitingQueue
from scheduler.world import Observation, Scheduler, run_cycle
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole


class Counted(Plugin):
    """A filter that counts its calls and declares it reads no job field beyond the request."""

    name = "Counted"
    job_fields = frozenset[str]()

    def __init__(self, args: object = None) -> None:
        super().__init__(args)
        self.calls = 0

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        self.calls += 1
        return OK


class Nosy(Counted):
    """The same filter declaring nothing: it may read any field, so nothing can be shared."""

    name = "Nosy"
    job_fields = None


class Raw(Plugin):
    name = "Raw"
    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float] | None] = None

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        return 0.0


class Reverse(Raw):
    name = "Reverse"
    higher_is_better: ClassVar[bool] = False


class Fixed(Raw):
    name = "Fixed"
    score_range: ClassVar[tuple[float, float] | None] = (0.0, 10.0)


class TeamGate(Plugin):
    name = "TeamGate"

    def admit(self, cycle: Cycle, job: Job) -> Status:
        return OK if job.labels.team != "blocked" else Status.wait("team over quota")


class GrowCheapest(Plugin):
    """Asks for one node per job in the first pool a new node would fit it in."""

    name = "GrowCheapest"

    def provision(self, cycle: Cycle, jobs: Sequence[Job], fits: Mapping[str, Sequence[str]]) -> Mapping[str, int]:
        wanted: dict[str, int] = {}
        for job in jobs:
            for pool in fits[job.id][:1]:
                wanted[pool] = wanted.get(pool, 0) + 1
        return wanted


class GrowOne(GrowCheapest):
    name = "GrowOne"

    def provision(self, cycle: Cycle, jobs: Sequence[Job], fits: Mapping[str, Sequence[str]]) -> Mapping[str, int]:
        return {"pool": 1, "other": 1}


class EvictLowerPriority(Plugin):
    """Proposes every lower-priority job on a node that rejected the job as UNSCHEDULABLE."""

    name = "EvictLowerPriority"

    def postfilter(self, cycle: Cycle, job: Job, rejected: Mapping[str, Status]) -> Sequence[Preemption]:
        return [
            Preemption(job_id, "priority", job.id)
            for job_id, running in sorted(cycle.snapshot.running.items())
            if running.placement.job.priority < job.priority
            and any(rejected[r.node].code is Code.UNSCHEDULABLE for r in running.placement.replicas)
        ]


def profile(**hooks: object) -> Profile:
    return Profile(name="test", sort=PriorityThenAge(), **hooks)  # type: ignore[arg-type]


def test_node_classes_group_equal_nodes_and_follow_updates() -> None:
    pool = make_pool(nodes=3)
    snapshot = make_snapshot(pool)
    classes = NodeClasses(snapshot.nodes.values())
    assert [group.members for group in classes.classes] == [["pool-0", "pool-1", "pool-2"]]
    (first_id,) = [group.id for group in classes.classes]
    busy = snapshot.nodes["pool-1"].grant(pool, make_job("a"), (Grant(0),))
    classes.update(busy)
    assert sorted(group.members for group in classes.classes) == [["pool-0", "pool-2"], ["pool-1"]]
    classes.update(snapshot.nodes["pool-1"])
    assert [(group.id, group.members) for group in classes.classes] == [(first_id, ["pool-0", "pool-1", "pool-2"])]


def test_filters_run_once_per_class_and_job_shape() -> None:
    counted = Counted()
    pool = make_pool(nodes=50)
    snapshot = make_snapshot(pool)
    jobs = [make_job(f"j{n}", whole(1), submit_s=n, duration_s=n) for n in range(20)]
    Scheduler(profile(filter=(counted,))).schedule(snapshot, jobs)
    # One class at first; each placement splits off a class with one more busy GPU.
    assert counted.calls <= 2 * len(jobs)
    nosy = Nosy()
    Scheduler(profile(filter=(nosy,))).schedule(snapshot, jobs)
    assert nosy.calls > counted.calls


@pytest.mark.parametrize(
    ("plugin", "raw", "want"),
    [
        (Raw(), [1.0, 2.0, 3.0, 4.0], [0, 33, 67, 100]),
        (Reverse(), [1.0, 2.0, 3.0, 4.0], [100, 67, 33, 0]),
        (Raw(), [5.0, 5.0], [0, 0]),
        (Fixed(), [0.0, 5.0, 10.0, 12.0], [0, 50, 100, 100]),
    ],
    ids=["min-max", "reverse", "all-equal", "fixed-range-clamped"],
)
def test_scores_normalise_to_0_100(plugin: Plugin, raw: list[float], want: list[int]) -> None:
    framework = Framework(profile(score=((plugin, 1),)))
    assert framework.combine([(value,) for value in raw]) == want


def test_weights_multiply_normalised_scores() -> None:
    framework = Framework(profile(score=((Raw(), 3), (Reverse(), 1))))
    assert framework.combine([(0.0, 0.0), (1.0, 1.0)]) == [100, 300]


def test_admit_order_prefilter_and_provision() -> None:
    pool = make_pool(nodes=1, max_nodes=4)
    snapshot = make_snapshot(pool)
    framework = Framework(profile(admit=(TeamGate(),), provision=(GrowCheapest(), GrowOne())))
    state = framework.state(snapshot)
    cycle = state.cycle
    jobs = [make_job("b", submit_s=1), make_job("a", submit_s=1), make_job("x", team="blocked"),
            make_job("vip", priority=9, submit_s=5)]
    admitted, waiting = framework.admit(cycle, jobs)
    assert waiting == {"x": Status.wait("team over quota").by("TeamGate")}
    assert [job.id for job in framework.order(cycle, admitted)] == ["vip", "a", "b"]
    assert framework.prefilter(cycle, jobs[0]) is OK
    too_big = make_job("huge", whole(16))
    assert framework.provision(state, [*jobs, too_big]) == {"pool": 4, "other": 1}


def test_scheduler_reports_waiting_jobs_and_asks_provision_for_jobs_that_fit_nowhere() -> None:
    pool = make_pool(nodes=1, max_nodes=3)
    scheduler = Scheduler(profile(admit=(TeamGate(),), filter=(WholeGpuFit(),), provision=(GrowCheapest(),)))
    decision = scheduler.schedule(make_snapshot(pool), [make_job("big", whole(8)), make_job("more", whole(8)),
                                                        make_job("x", team="blocked")])
    assert [p.job.id for p in decision.placements] == ["big"]
    assert decision.pending["x"].status.code is Code.WAIT and not decision.pending["x"].verdicts
    assert decision.pending["more"].verdicts[0].status.plugin == "WholeGpuFit"
    assert decision.provision == {"pool": 1}
    huge = scheduler.schedule(make_snapshot(pool), [make_job("huge", whole(16))])
    assert huge.provision == {}, "no new node of any pool could take a 16-GPU replica"
    full = make_pool(nodes=1)
    assert scheduler.schedule(make_snapshot(full), [make_job("big", whole(8)), make_job("more", whole(8))]).provision == {}


def running_snapshot(*held: tuple[Job, int]) -> ClusterSnapshot:
    """One 8-GPU node with `held` jobs (job, GPUs) running on consecutive GPUs."""
    pool = make_pool(nodes=1)
    snapshot = make_snapshot(pool)
    first = 0
    for job, gpus in held:
        grants = tuple(Grant(gpu) for gpu in range(first, first + gpus))
        snapshot = snapshot.assume(Placement(job, (ReplicaPlacement("pool-0", grants),)))
        first += gpus
    return snapshot


def test_postfilter_victims_are_accepted_only_when_the_job_then_fits() -> None:
    scheduler = Scheduler(profile(filter=(WholeGpuFit(),), postfilter=(EvictLowerPriority(),),
                                  score=((MostAllocated(), 1),)))
    low = make_job("low", whole(8), priority=0)
    snapshot = running_snapshot((low, 8))
    decision = scheduler.schedule(snapshot, [make_job("vip", whole(4), priority=5)])
    assert decision.preemptions == (Preemption("low", "priority", "vip"),)
    assert [p.job.id for p in decision.placements] == ["vip"]
    validate(snapshot, decision)

    # Evicting the low-priority 2-GPU job cannot make room for 8 GPUs: nothing is evicted,
    # and the next job in the queue still sees the node as it was.
    mixed = running_snapshot((make_job("high", whole(6), priority=9), 6), (make_job("small", whole(2)), 2))
    decision = scheduler.schedule(mixed, [make_job("vip", whole(8), priority=5), make_job("tiny", whole(1))])
    assert decision.preemptions == ()
    assert "vip" in decision.pending and "tiny" in decision.pending
    validate(mixed, decision)


def test_no_postfilter_victims_for_unresolvable_misfits() -> None:
    scheduler = Scheduler(profile(filter=(GpuModelFit(),), postfilter=(EvictLowerPriority(),)))
    snapshot = running_snapshot((make_job("low", whole(8)), 8))
    decision = scheduler.schedule(snapshot, [make_job("vip", whole(1), priority=5, models={"T4-16GB"})])
    assert decision.preemptions == () and decision.pending["vip"].status.code is Code.UNRESOLVABLE


class FakeWorld:
    """A world that shows one snapshot and its queue, and records what it is told to do."""

    def __init__(self, snapshot: ClusterSnapshot, queue: WaitingQueue) -> None:
        self.observation = Observation(now_s=42.0, snapshot=snapshot, queue=queue)
        self.enacted: list[Decision] = []

    def observe(self) -> Observation:
        return self.observation

    def enact(self, decision: Decision) -> None:
        validate(self.observation.snapshot, decision)
        self.enacted.append(decision)


def test_run_cycle_observes_decides_and_enacts() -> None:
    scheduler = Scheduler(policies.profile("default"))
    world = FakeWorld(make_snapshot(make_pool(nodes=1)), scheduler.queue([make_job("a", whole(2))]))
    decision = run_cycle(world, scheduler)
    assert world.enacted == [decision] and [p.job.id for p in decision.placements] == ["a"]


def test_an_empty_cluster_explains_itself() -> None:
    pool = make_pool(nodes=0)
    decision = Scheduler(policies.profile("default")).schedule(make_snapshot(pool), [make_job("a")])
    assert decision.pending["a"].status.reasons == ("the cluster has no nodes",)
    assert empty_node(pool, "n").ready


class RejectHuge(Plugin):
    name = "RejectHuge"

    def prefilter(self, cycle: Cycle, job: Job) -> Status:
        return Status.unresolvable("larger than any node") if job.request.gpus > 8 else OK


def test_without_fit_filters_the_framework_still_refuses_what_does_not_fit() -> None:
    """NodeCapacity is the mechanism's own check: no profile can place beyond free capacity."""
    snapshot = make_snapshot(make_pool("plain", nodes=1), make_pool("mig", gpu="A100-40GB", nodes=1,
                                                                   mig_layout="7g.40gb@0"))
    scheduler = Scheduler(profile(prefilter=(RejectHuge(),)))
    jobs = [make_job("share", share(100), submit_s=1), make_job("whole", whole(8)),
            make_job("more", whole(1), submit_s=1), make_job("slice", mig_request("1g.5gb"), submit_s=1),
            make_job("huge", whole(9))]
    decision = scheduler.schedule(snapshot, jobs)
    validate(snapshot, decision)
    assert [p.job.id for p in decision.placements] == ["whole"]
    for job_id in ("share", "more", "slice"):
        assert {v.status.plugin for v in decision.pending[job_id].verdicts} == {"NodeCapacity"}
    assert decision.pending["huge"].status == Status.unresolvable("larger than any node").by("RejectHuge")


def test_cycle_memo_computes_once_per_key() -> None:
    cycle = Cycle(0.0, make_snapshot(), seed=7)
    calls: list[int] = []
    assert cycle.memo("k", lambda: calls.append(1) or 5) == 5
    assert cycle.memo("k", lambda: calls.append(1) or 6) == 5
    assert calls == [1] and cycle.rng.random() == Cycle(0.0, make_snapshot(), seed=7).rng.random()


class WrongModel(Counted):
    """Refuses every node as UNRESOLVABLE, counting how often it is asked."""

    name = "WrongModel"

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        self.calls += 1
        return Status.unresolvable("never")


def test_an_unresolvable_pool_is_asked_once_per_job_shape() -> None:
    pool = make_pool(nodes=6)
    snapshot = make_snapshot(pool)
    busy = snapshot.nodes["pool-1"].grant(pool, make_job("x"), (Grant(0),))
    snapshot = make_snapshot(pool, nodes=[busy])
    refuse = WrongModel()
    decision = Scheduler(profile(filter=(refuse,))).schedule(snapshot, [make_job("a"), make_job("b", submit_s=1)])
    assert refuse.calls == 1
    (verdict,) = decision.pending["a"].verdicts
    assert (verdict.nodes, verdict.status.plugin) == (6, "WrongModel")


def test_nodes_that_are_not_ready_are_never_chosen_and_say_so() -> None:
    pool = make_pool(nodes=0)
    down = Node(name="down", pool=pool.name, gpus=empty_node(pool, "down").gpus, ready=False)
    snapshot = make_snapshot(pool, nodes=[down, empty_node(pool, "up")])
    decision = Scheduler(policies.profile("binpack")).schedule(snapshot, [make_job(f"j{n}", whole(8)) for n in range(2)])
    assert [p.replicas[0].node for p in decision.placements] == ["up"]
    statuses = {v.status.plugin: v for v in decision.pending["j1"].verdicts}
    assert statuses["NodeReady"].nodes == 1 and statuses["NodeReady"].status.code is Code.UNRESOLVABLE
    assert "not ready" in statuses["NodeReady"].free


def test_a_decision_the_world_did_not_carry_out_leaves_no_trace_in_the_next_cycle() -> None:
    pool = make_pool(nodes=2)
    snapshot = make_snapshot(pool)
    scheduler = Scheduler(policies.profile("binpack"))
    jobs = [make_job("a", whole(8)), make_job("b", whole(8), submit_s=1)]
    first = scheduler.schedule(snapshot, jobs)
    assert len(first.placements) == 2
    assert scheduler.schedule(snapshot, jobs) == first, "the index forgets the placements nobody enacted"


def test_a_full_node_of_the_wrong_kind_closes_its_pool_as_an_empty_one_would() -> None:
    """Filters all run when one refuses: the most severe answer wins, so whether a pool is closed
    to a job never depends on how full its nodes were when first asked."""
    from policies.spot import SpotTolerance
    from scheduler.model import Capacity as CapacityType

    spot = make_pool("spot", capacity=CapacityType.SPOT, nodes=1)
    snapshot = running_snapshot_on(spot, make_job("x", whole(8), preemptible=True))
    framework = Framework(profile(filter=(WholeGpuFit(), SpotTolerance())))
    cycle = Cycle(0.0, snapshot)
    status = framework._evaluate(cycle, make_job("prod", whole(1)), snapshot.nodes["spot-0"]).status
    assert (status.code, status.plugin) == (Code.UNRESOLVABLE, "SpotTolerance")


def running_snapshot_on(pool: object, job: Job) -> ClusterSnapshot:
    snapshot = make_snapshot(pool)  # type: ignore[arg-type]
    grants = tuple(Grant(gpu) for gpu in range(8))
    return snapshot.assume(Placement(job, (ReplicaPlacement(f"{pool.name}-0", grants),)))  # type: ignore[attr-defined]
