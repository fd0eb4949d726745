"""EASY backfilling: the shadow time, what may backfill, gangs no longer starved, and nodes kept for them."""

from __future__ import annotations

import math
from dataclasses import replace
from types import MappingProxyType
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from policies.backfill import EasyBackfill
from policies.ordering import PriorityThenAge
from scheduler.backfill import expected_ends
from scheduler.cluster import Cluster
from scheduler.decision import Code, Decision, Reservation, validate
from scheduler.framework import Framework
from scheduler.model import ClusterSnapshot, Grant, Job, JobKind, Placement, Pool, ReplicaPlacement
from scheduler.plugin import Cycle
from scheduler.world import Observation, Scheduler
from simulator.engine import SimOptions, SimResult, simulate
from tests.builders import make_job, make_pool, make_snapshot, random_jobs, share, whole

GANG_FAIR = policies.profile("gang-fair")
POOL = make_pool("p", gpus_per_node=8, nodes=2)


class ChangingOrder(PriorityThenAge):
    """The same order, declared as one that may change while a job waits: the whole queue is shown."""

    name = "ChangingOrder"
    static = False

    def sort_key(self, cycle: Cycle, job: Job) -> tuple[Any, ...]:
        return super().sort_key(cycle, job)


def running(snapshot: ClusterSnapshot, job: Job, node: str, gpus: range, start_s: float = 0.0) -> ClusterSnapshot:
    """`snapshot` with `job` (one replica) running on `gpus` of `node` since `start_s`."""
    return snapshot.assume(Placement(job, (ReplicaPlacement(node, tuple(map(Grant, gpus))),)), start_s)


def busy_cluster() -> ClusterSnapshot:
    """Two 8-GPU nodes. p-0: a 4-GPU job ending at 100 s, another at 300 s; p-1: an 8-GPU job ending at 200 s."""
    snapshot = make_snapshot(POOL)
    snapshot = running(snapshot, make_job("a", whole(4), duration_s=100.0), "p-0", range(4))
    snapshot = running(snapshot, make_job("b", whole(4), duration_s=300.0), "p-0", range(4, 8))
    return running(snapshot, make_job("c", whole(8), duration_s=200.0), "p-1", range(8))


def schedule(snapshot: ClusterSnapshot, jobs: list[Job], now_s: float = 50.0) -> Decision:
    decision = Scheduler(GANG_FAIR).schedule(snapshot, jobs, now_s=now_s)
    validate(snapshot, decision)
    return decision


def every_gpu(*nodes: str) -> frozenset[tuple[str, int]]:
    return frozenset((node, gpu) for node in nodes for gpu in range(8))


# The shadow time against hand-computed numbers -----------------------------------------------------


def test_the_shadow_time_is_the_first_expected_end_after_which_the_job_fits() -> None:
    # Ends: a at 100 (4 GPUs of p-0), c at 200 (all of p-1), b at 300 (the rest of p-0).
    framework = Framework(GANG_FAIR)
    state = framework.state(busy_cluster(), now_s=50.0)
    assert expected_ends(framework, state) == [(100.0, "a"), (200.0, "c"), (300.0, "b")]
    # A gang of two whole nodes needs p-0 and p-1 empty: at 300 s, when b ends; on all 16 GPUs.
    gang = schedule(busy_cluster(), [make_job("gang", whole(8), replicas=2)])
    assert gang.reservation == Reservation("gang", 300.0, every_gpu("p-0", "p-1"))
    # One whole node: p-1 at 200 s. Four GPUs: p-0's first four at 100 s.
    assert schedule(busy_cluster(), [make_job("node", whole(8))]).reservation == Reservation("node", 200.0, every_gpu("p-1"))
    quarter = schedule(busy_cluster(), [make_job("four", whole(4))]).reservation
    assert quarter == Reservation("four", 100.0, frozenset(("p-0", gpu) for gpu in range(4)))


def test_a_job_past_its_expected_end_is_expected_to_end_now() -> None:
    gang = schedule(busy_cluster(), [make_job("gang", whole(8), replicas=2)], now_s=400.0)
    assert gang.reservation == Reservation("gang", 400.0, every_gpu("p-0", "p-1"))


def test_a_job_that_fits_nowhere_ever_gets_no_reservation_and_the_next_blocked_job_does() -> None:
    too_big = make_job("too-big", whole(8), replicas=3, submit_s=0.0)  # three nodes; the cluster has two
    gang = make_job("gang", whole(8), replicas=2, submit_s=1.0)
    decision = schedule(busy_cluster(), [too_big, gang])
    assert set(decision.pending) == {"too-big", "gang"}
    assert decision.reservation == Reservation("gang", 300.0, every_gpu("p-0", "p-1"))


# Running jobs and waiting jobs without an estimate --------------------------------------------------


def test_a_running_job_without_an_estimate_never_makes_room() -> None:
    snapshot = running(make_snapshot(POOL), make_job("forever", whole(8), duration_s=0.0), "p-1", range(8))
    snapshot = running(snapshot, make_job("a", whole(4), duration_s=100.0), "p-0", range(4))
    # The gang needs p-1, which never frees: no reservation. One node fits on p-0 at 100 s.
    assert schedule(snapshot, [make_job("gang", whole(8), replicas=2)]).reservation is None
    assert schedule(snapshot, [make_job("node", whole(8))]).reservation == Reservation("node", 100.0, every_gpu("p-0"))


def test_a_waiting_job_without_an_estimate_never_backfills_onto_reserved_gpus() -> None:
    snapshot = running(make_snapshot(POOL), make_job("a", whole(4), duration_s=100.0), "p-0", range(4))
    gang = make_job("gang", whole(8), replicas=2, submit_s=0.0)
    unknown = make_job("unknown", whole(1), duration_s=0.0, submit_s=1.0)  # no duration, no limit: may run forever
    limited = replace(unknown, id="limited", runtime_limit_s=30.0, submit_s=2.0)  # declared: ends by 80 s
    decision = schedule(snapshot, [gang, unknown, limited])
    assert decision.reservation == Reservation("gang", 100.0, every_gpu("p-0", "p-1"))
    assert [p.job.id for p in decision.placements] == ["limited"]
    held = decision.pending["unknown"]
    assert held.status.code is Code.WAIT and held.status.plugin == "Reservation" and held.fits_nowhere
    assert "would delay gang" in str(held.status)


# What may backfill ---------------------------------------------------------------------------------


def test_a_job_that_ends_by_the_shadow_time_backfills_and_one_that_would_delay_it_waits() -> None:
    gang = make_job("gang", whole(8), replicas=2, submit_s=0.0)
    short = make_job("short", whole(2), duration_s=150.0, submit_s=1.0)  # 50 + 150 = 200 <= 300
    long = make_job("long", whole(2), duration_s=300.0, submit_s=2.0)  # 50 + 300 = 350 > 300
    snapshot = running(make_snapshot(POOL), make_job("b", whole(4), duration_s=300.0), "p-0", range(4, 8))
    decision = schedule(snapshot, [gang, short, long])
    assert decision.reservation == Reservation("gang", 300.0, every_gpu("p-0", "p-1"))
    assert [p.job.id for p in decision.placements] == ["short"]
    assert decision.pending["long"].status.code is Code.WAIT
    # Without the reservation the long job starts now, on GPUs the gang needs.
    plain = Scheduler(policies.profile("default")).schedule(snapshot, [gang, short, long], now_s=50.0)
    assert sorted(p.job.id for p in plain.placements) == ["long", "short"]


def test_a_long_job_runs_now_on_capacity_the_reservation_does_not_need() -> None:
    pool = make_pool("p", gpus_per_node=8, nodes=3)
    snapshot = make_snapshot(pool)
    for name, end_s in (("p-0", 100.0), ("p-1", 100.0), ("p-2", 1000.0)):  # one GPU busy per node
        snapshot = running(snapshot, make_job(f"on-{name}", whole(1), duration_s=end_s), name, range(1))
    gang = make_job("gang", whole(8), replicas=2, submit_s=0.0)
    long = make_job("long", whole(4), duration_s=5000.0, submit_s=1.0)
    decision = schedule(snapshot, [gang, long])
    assert decision.reservation == Reservation("gang", 100.0, every_gpu("p-0", "p-1"))
    (placed,) = decision.placements
    assert placed.job.id == "long" and [r.node for r in placed.replicas] == ["p-2"]


def test_shares_backfill_only_when_they_leave_a_reserved_gpu_in_time() -> None:
    """A reserved GPU that is partly used cannot be held whole while a later job is placed: a
    share that would outlast the shadow time on it is refused after placing, one that ends in
    time stays."""
    pool = make_pool("s", gpus_per_node=1, nodes=1, sharing=True)
    snapshot = running(make_snapshot(pool), make_job("a", share(500), duration_s=100.0), "s-0", range(1))
    snapshot = running(snapshot, make_job("b", share(300), duration_s=1000.0), "s-0", range(1))
    head = make_job("head", share(600), submit_s=0.0)  # 200m free now; 700m once a ends at 100 s
    long = make_job("long", share(100), duration_s=5000.0, submit_s=1.0)
    short = make_job("short", share(100), duration_s=50.0, submit_s=2.0)
    decision = schedule(snapshot, [head, long, short])
    assert decision.reservation == Reservation("head", 100.0, frozenset({("s-0", 0)}))
    assert [p.job.id for p in decision.placements] == ["short"]
    assert decision.pending["long"].status.code is Code.WAIT


# The plugin and the profile -------------------------------------------------------------------------


def test_run_time_estimates() -> None:
    cycle = Cycle(0.0, make_snapshot(POOL))
    plugin = EasyBackfill()
    assert plugin.runtime_s(cycle, make_job(duration_s=600.0)) == 600.0
    assert plugin.runtime_s(cycle, replace(make_job(duration_s=600.0), speedups=(("K80", 0.25), ("A100", 2.0)))) == 2400.0
    assert plugin.runtime_s(cycle, replace(make_job(duration_s=600.0), runtime_limit_s=60.0)) == 60.0
    assert plugin.runtime_s(cycle, replace(make_job(duration_s=600.0), kind=JobKind.SERVICE, restore_s=9.0)) == 600.0
    checkpointed = replace(make_job(duration_s=600.0), checkpoint_interval_s=250.0, checkpoint_overhead_s=10.0,
                           restore_s=5.0)  # fmt: skip
    assert plugin.runtime_s(cycle, checkpointed) == 600.0 + 5.0 + 3 * 10.0
    assert plugin.runtime_s(cycle, make_job(duration_s=0.0)) == math.inf


def test_the_plugin_and_the_reservation_are_pure_functions_of_the_snapshot() -> None:
    jobs = [make_job("gang", whole(8), replicas=2), make_job("short", whole(1), duration_s=10.0, submit_s=1.0)]
    scheduler = Scheduler(GANG_FAIR)
    first = scheduler.schedule(busy_cluster(), jobs, now_s=50.0)
    again = scheduler.schedule(busy_cluster(), jobs, now_s=50.0)  # with the caches the first call left
    fresh = Scheduler(policies.profile("gang-fair")).schedule(busy_cluster(), jobs, now_s=50.0)
    assert first == again == fresh and first.reservation is not None
    cycle = Cycle(50.0, busy_cluster())
    assert EasyBackfill().runtime_s(cycle, jobs[0]) == EasyBackfill().runtime_s(Cycle(9.0, make_snapshot(POOL)), jobs[0])


def test_gang_fair_loads_by_name_with_the_greedy_placer() -> None:
    assert "gang-fair" in policies.bundled_profiles()
    profile = policies.profile("gang-fair")
    assert profile.name == "gang-fair" and profile.placer == "greedy"
    assert isinstance(profile.reserve, EasyBackfill)
    assert policies.profile("default").reserve is None


# Replays: a held-back gang -------------------------------------------------------------------------


def replay(jobs: list[Job], cluster: Cluster, scheduler: Scheduler) -> SimResult:
    return simulate(jobs, cluster, scheduler, SimOptions(check=True))


def starved_gang() -> tuple[Cluster, list[Job]]:
    """16 GPUs; a 16-GPU gang at 50 s among 1-GPU jobs of 1,000 s arriving every 100 s, and a short one."""
    cluster = Cluster("c.toml", MappingProxyType({"p": POOL}))
    stream = [make_job(f"s{n:02d}", whole(1), duration_s=1000.0, submit_s=100.0 * n) for n in range(30)]
    short = make_job("short", whole(1), duration_s=100.0, submit_s=350.0)
    return cluster, [*stream, short, make_job("gang", whole(8), replicas=2, duration_s=500.0, submit_s=50.0)]


def test_a_held_back_gang_starts_strictly_earlier_with_a_reservation_and_no_later_than_shown_the_whole_queue() -> None:
    cluster, jobs = starved_gang()
    default = replay(jobs, cluster, Scheduler(policies.profile("default"))).world.runs
    fair = replay(jobs, cluster, Scheduler(GANG_FAIR)).world.runs
    whole_queue = replay(jobs, cluster, Scheduler(replace(GANG_FAIR, sort=ChangingOrder()))).world.runs
    # Without a reservation the stream keeps some of the 16 GPUs busy until it dries up.
    assert default["gang"].first_start_ms == 3_900_000
    # With one, s00 (running since 0) ends at 1,000 s and the gang starts then.
    assert fair["gang"].first_start_ms == 1_000_000 == whole_queue["gang"].first_start_ms
    # The short job ends before the gang's shadow time: it backfills at once; the long ones wait.
    assert fair["short"].first_start_ms == 350_000
    assert all(fair[f"s{n:02d}"].first_start_ms >= 1_500_000 for n in range(1, 30))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_jobs(horizon_s=2000, max_replicas=3, max_size=30, min_size=2, checkpoints=False), st.integers(1, 20))
def test_the_bounded_queue_gives_the_reservation_the_whole_queue_gives(jobs: list[Job], started: int) -> None:
    """The queue shows a reserving profile one job more per shape than could fit: the first job
    that cannot start is shown, and gets the reservation it gets when the whole queue is shown."""
    od = make_pool("od", nodes=2, sharing=True)
    snapshot = make_snapshot(od)
    warm = Scheduler(GANG_FAIR).schedule(snapshot, jobs[:started], now_s=0.0)
    snapshot = _applied(snapshot, warm)
    rest = [job for job in jobs if job.id not in {p.job.id for p in warm.placements}]
    bounded, whole_queue = Scheduler(GANG_FAIR), Scheduler(replace(GANG_FAIR, sort=ChangingOrder()))
    shown = bounded.decide(Observation(100.0, snapshot, bounded.queue(rest)))
    everything = whole_queue.decide(Observation(100.0, snapshot, whole_queue.queue(rest)))
    assert shown.reservation == everything.reservation
    validate(snapshot, shown)
    reservation = shown.reservation
    cycle = Cycle(100.0, snapshot)
    reserved = next((job for job in rest if reservation is not None and job.id == reservation.job), None)
    for placement in shown.placements if reserved is not None and reservation is not None else ():
        # EASY's rule binds the jobs after the reserved one in queue order; those before it start
        # freely, and the reservation is worked out on the cluster they leave.
        if bounded.framework.queue_key(cycle, placement.job) < bounded.framework.queue_key(cycle, reserved):
            continue
        touched = {(r.node, g.gpu) for r in placement.replicas for g in r.grants}
        ends_s = 100.0 + EasyBackfill().runtime_s(cycle, placement.job)
        assert ends_s <= reservation.start_s or not touched & reservation.gpus


def _applied(snapshot: ClusterSnapshot, decision: Decision) -> ClusterSnapshot:
    for placement in decision.placements:
        snapshot = snapshot.assume(placement, 0.0)
    return snapshot


# Scale-down keeps what a waiting gang was promised ------------------------------------------------


def elastic(nodes: int, max_nodes: int) -> Cluster:
    pool: Pool = replace(make_pool("od", gpus_per_node=8, nodes=nodes, max_nodes=max_nodes), min_nodes=0,
                         provision_delay_s=600.0, idle_release_s=300.0)  # fmt: skip
    return Cluster("c.toml", MappingProxyType({"od": pool}))


def provisioned_and_released_unused(result: SimResult) -> list[str]:
    """Nodes added during the replay and released without running anything."""
    added, used, wasted = set(), set(), []
    for _, event, data in result.world.log:
        if event == "node-add":
            added.add(data["node"])
        elif event == "start":
            used.update(data["nodes"])
        elif event == "node-remove" and data["node"] in added and data["node"] not in used:
            wasted.append(data["node"])
    return wasted


def removals(result: SimResult) -> list[tuple[int, str]]:
    return [(t, data["node"]) for t, event, data in result.world.log if event == "node-remove"]


def test_a_node_grown_for_a_gang_is_kept_while_the_gang_waits_for_a_second_node() -> None:
    """Two gangs ask for the pool, which grows by three nodes, one idle node counted for them; a
    1-GPU job takes that idle node. g1 takes two new nodes; the third stands idle, promised to
    g2, which waits for a second node until the 1-GPU job ends. It used to be released at once
    (the pool, at max_nodes, was asked for by no one), and g2 waited for a new node."""
    g1 = make_job("g1", whole(8), replicas=2, duration_s=3000.0, submit_s=0.0)
    g2 = replace(make_job("g2", whole(8), replicas=2, duration_s=1000.0, submit_s=5.0), gpu_models=frozenset({"H100-80GB"}))
    x = make_job("x", whole(1), duration_s=2000.0, submit_s=10.0)
    result = replay([g1, g2, x], elastic(nodes=1, max_nodes=4), Scheduler(policies.profile("default")))
    runs, log = result.world.runs, result.world.log
    assert [(t, data["node"]) for t, event, data in log if event == "node-add"] == [
        (0, "od-001"), (5_000, "od-002"), (5_000, "od-003")]
    assert (runs["x"].first_start_ms, runs["g1"].first_start_ms) == (10_000, 605_000)
    # g2 starts the moment x frees od-000, with od-003, which stood idle for it since 605 s.
    assert runs["g2"].first_start_ms == 2_010_000
    assert next(data["nodes"] for _, event, data in log if event == "start" and data["job"] == "g2") == ["od-000", "od-003"]
    assert min(t for t, _ in removals(result)) > 2_010_000, "nothing is released while g2 waits"
    assert provisioned_and_released_unused(result) == []


def test_a_reservation_keeps_the_idle_node_its_gang_will_start_on() -> None:
    """The pool is at max_nodes, so the gang asks for nothing; without a reservation the idle
    node goes, and the gang waits for a new one after the busy node frees."""
    cluster = elastic(nodes=2, max_nodes=2)
    jobs = [make_job("x", whole(8), duration_s=2000.0), make_job("gang", whole(8), replicas=2, duration_s=100.0, submit_s=10.0)]
    fair = replay(jobs, cluster, Scheduler(GANG_FAIR))
    assert fair.world.runs["gang"].first_start_ms == 2_000_000
    assert [t for t, _ in removals(fair)] == [] or min(t for t, _ in removals(fair)) >= 2_000_000
    assert provisioned_and_released_unused(fair) == []
    default = replay(jobs, cluster, Scheduler(policies.profile("default")))
    assert removals(default)[0] == (300_000, "od-001")
    assert default.world.runs["gang"].first_start_ms == 2_600_000


# Kubernetes: the run time a pod declares -------------------------------------------------------------


def test_on_kubernetes_a_pod_without_a_declared_limit_waits_behind_a_gang_and_one_that_ends_in_time_runs() -> None:
    from extender.state import GPUS
    from extender.wire import ExtenderArgs
    from tests.test_k8s_extender import ON_DEMAND, extender, node, pod

    holder = pod("holder", 4, node_name="n-1", annotations={GPUS: "0,1,2,3"})
    holder["spec"]["activeDeadlineSeconds"] = 7200  # created an hour before now: ends in an hour
    gang_labels, size = {"fleetsched.io/gang": "trainer"}, {"fleetsched.io/gang-size": "2"}
    gang = [pod(f"t-{n}", 8, labels=gang_labels, annotations=size) for n in range(2)]
    short = pod("short", 1, annotations={"fleetsched.io/runtime-limit-s": "600"})
    long = pod("long", 1)  # declares nothing: it may run forever
    ext, _, _ = extender([node("n-1", labels=ON_DEMAND), node("n-2", labels=ON_DEMAND)], [holder, *gang, short, long],
                         profile="gang-fair")  # fmt: skip
    plan = ext.planner.plan()
    assert plan.decision.reservation is not None and plan.decision.reservation.job == "ml/gang:trainer"
    assert plan.decision.reservation.nodes == {"n-1", "n-2"}
    assert ext.filter(ExtenderArgs(short, ("n-1", "n-2"))).node_names != ()
    refused = ext.filter(ExtenderArgs(long, ("n-1", "n-2")))
    assert refused.node_names == () and all("would delay ml/gang:trainer" in why for why in refused.failed.values())
