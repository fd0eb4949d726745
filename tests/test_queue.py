"""The waiting queue's bound: a cycle is shown only what could fit, and decides as if shown it all."""

from __future__ import annotations

from dataclasses import replace
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from policies.ordering import PriorityThenAge
from scheduler.cluster import Cluster
from scheduler.decision import Code
from scheduler.model import Capacity, Job
from scheduler.plugin import Cycle
from scheduler.world import Observation, Scheduler
from simulator.engine import SimOptions, simulate
from tests.builders import make_job, make_pool, make_snapshot, random_jobs, whole


class ChangingOrder(PriorityThenAge):
    """The same order, declared as one that may change while a job waits: nothing is held back."""

    name = "ChangingOrder"
    static = False

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        return super().sort_key(cycle, job)


def test_a_cycle_is_shown_only_what_could_fit_and_the_rest_is_explained_when_asked() -> None:
    scheduler = Scheduler(policies.profile("binpack"))
    snapshot = make_snapshot(make_pool(nodes=2))
    jobs = [make_job(f"big{n}", whole(8), submit_s=n) for n in range(5)] + [make_job("small", whole(1), submit_s=9)]
    queue = scheduler.queue(jobs)
    decision = scheduler.decide(Observation(0.0, snapshot, queue))
    assert sorted(p.job.id for p in decision.placements) == ["big0", "big1"]
    # Two 8-GPU jobs could fit, so only two were shown; small was shown and waits.
    assert set(decision.pending) == {"small"} and decision.pending["small"].status.code is Code.UNSCHEDULABLE
    assert len(queue) == 4, "what was not placed waits in the queue"
    after = decision_applied(snapshot, decision)
    held = scheduler.explain(after, jobs[4])
    assert held.fits_nowhere and [(v.pool, v.nodes, v.status.plugin) for v in held.verdicts] == [("pool", 2, "WholeGpuFit")]
    again = scheduler.decide(Observation(1.0, after, queue))
    assert again.placements == () and again.pending == {}, "nothing freed: nothing is shown again"
    assert len(queue) == 4


def decision_applied(snapshot: Any, decision: Any) -> Any:
    from scheduler.decision import apply

    return apply(snapshot, decision)


def test_an_empty_queue_gives_an_empty_decision() -> None:
    scheduler = Scheduler(policies.profile("default"))
    queue = scheduler.queue()
    decision = scheduler.decide(Observation(0.0, make_snapshot(make_pool()), queue))
    assert decision.placements == () and decision.pending == {} and queue.last is None


def test_a_changing_queue_order_holds_nothing_back() -> None:
    profile = replace(policies.profile("binpack"), sort=ChangingOrder())
    scheduler = Scheduler(profile)
    assert not scheduler.shapes_are_interchangeable
    queue = scheduler.queue([make_job(f"big{n}", whole(8), submit_s=n) for n in range(4)])
    decision = scheduler.decide(Observation(0.0, make_snapshot(make_pool(nodes=1)), queue))
    assert len(decision.placements) == 1 and len(decision.pending) == 3 and len(queue) == 3


REPLAY_JOBS = random_jobs(horizon_s=3000, max_replicas=3, max_size=40, min_size=1, checkpoints=False)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(REPLAY_JOBS, st.sampled_from(["default", "binpack", "cost-greedy", "cost-cpsat", "priority"]))
def test_holding_back_what_cannot_fit_changes_no_decision(jobs: list[Job], name: str) -> None:
    """On a cluster that cannot grow (where held-back jobs could not ask for nodes either), a
    replay whose cycles are shown only what could fit starts and ends every job exactly when one
    shown the whole queue does."""
    od = make_pool("od", nodes=2, sharing=True)
    spot = make_pool("spot", nodes=1, capacity=Capacity.SPOT, usd_per_node_hour=30.0)
    cluster = Cluster("c.toml", MappingProxyType({"od": od, "spot": spot}))
    profile = policies.profile(name)
    held = simulate(jobs, cluster, Scheduler(profile, explain=False), SimOptions(seed=1, check=True))
    whole_queue = Scheduler(replace(profile, sort=ChangingOrder()), explain=False)
    shown = simulate(jobs, cluster, whole_queue, SimOptions(seed=1, check=True))
    times = {i: (r.first_start_ms, r.end_ms) for i, r in held.world.runs.items()}
    assert times == {i: (r.first_start_ms, r.end_ms) for i, r in shown.world.runs.items()}


def test_free_capacity_a_shape_may_not_use_shows_none_of_its_jobs() -> None:
    """Jobs that are not preemptible never go to spot: free spot GPUs make no room for them, so a
    long queue of them costs a cycle nothing, and a preemptible job is still shown there."""
    od, spot = make_pool("od", nodes=1), make_pool("spot", nodes=3, capacity=Capacity.SPOT)
    scheduler = Scheduler(policies.profile("default"))
    empty = make_snapshot(od, spot)
    filled = scheduler.decide(Observation(0.0, empty, scheduler.queue([make_job("fill", whole(8))])))
    snapshot = decision_applied(empty, filled)
    assert [p.job.id for p in filled.placements] == ["fill"] and snapshot.nodes["od-0"].gpus[7].owner == "fill"
    waiting = [make_job(f"w{n:05d}", whole(1), submit_s=1.0 + n) for n in range(10_000)]
    queue = scheduler.queue([*waiting, make_job("spot-ok", whole(1), preemptible=True, submit_s=2.0)])
    decision = scheduler.decide(Observation(1.0, snapshot, queue))
    assert [p.job.id for p in decision.placements] == ["spot-ok"], "24 free spot GPUs show the preemptible job"
    assert decision.pending == {} and len(queue) == 10_000, "and none of the 10,000 that may not use them"
