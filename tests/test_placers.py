"""GreedyPlacer through the bundled profiles: gangs, spot, GPU models, shares, MIG, explanations."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from scheduler.decision import Code, Decision, apply, validate
from scheduler.model import Capacity, ClusterSnapshot, Job, MigMode
from scheduler.world import Scheduler
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole

OD = make_pool("od", usd_per_node_hour=80.0, nodes=2)
SPOT = make_pool("spot", capacity=Capacity.SPOT, usd_per_node_hour=20.0, nodes=2)
A10G = make_pool("a10g", gpu="A10G", gpus_per_node=4, usd_per_node_hour=5.6, sharing=True, nodes=2)
A100 = make_pool("a100", gpu="A100-40GB", mig_mode=MigMode.DYNAMIC, usd_per_node_hour=22.0, nodes=1)
FIXED = make_pool("fixed", gpu="H100-80GB", gpus_per_node=2, mig_layout="3g.40gb@0,3g.40gb@4", nodes=1)
CLUSTER = make_snapshot(OD, SPOT, A10G, A100, FIXED)


def plan(jobs: list[Job], profile: str = "cost-greedy", snapshot: ClusterSnapshot = CLUSTER) -> Decision:
    decision = Scheduler(policies.profile(profile)).schedule(snapshot, jobs)
    validate(snapshot, decision)
    assert {p.job.id for p in decision.placements} | set(decision.pending) == {job.id for job in jobs}
    return decision


def where(decision: Decision) -> dict[str, list[str]]:
    return {p.job.id: [r.node for r in p.replicas] for p in decision.placements}


def test_gangs_are_all_or_nothing_and_a_failed_gang_leaves_the_nodes_free() -> None:
    jobs = [make_job("gang3", whole(8), replicas=3, models={"H100-80GB"}, priority=5),
            make_job("gang2", whole(8), replicas=2, models={"H100-80GB"}, priority=1),
            make_job("after", whole(8), models={"H100-80GB"})]
    decision = plan(jobs)
    assert where(decision) == {"gang2": ["od-0", "od-1"]}
    gang3 = decision.pending["gang3"]
    assert gang3.status.plugin == "Gang" and gang3.status.code is Code.UNSCHEDULABLE
    assert "gang of 3 replicas" in gang3.status.reasons[0]
    assert decision.pending["after"].status.code is Code.UNSCHEDULABLE


def test_spot_only_for_preemptible_jobs_and_cheapest_first() -> None:
    jobs = [make_job("batch", whole(8), preemptible=True, models={"H100-80GB"}),
            make_job("prod", whole(8), models={"H100-80GB"})]
    decision = plan(jobs)
    assert where(decision) == {"batch": ["spot-0"], "prod": ["od-0"]}
    only_spot = make_snapshot(SPOT)
    decision = plan([make_job("prod", whole(1))], snapshot=only_spot)
    (verdict,) = decision.pending["prod"].verdicts
    assert (verdict.pool, verdict.nodes, verdict.status.plugin) == ("spot", 2, "SpotTolerance")
    assert verdict.status.code is Code.UNRESOLVABLE


def test_gpu_model_constraints() -> None:
    decision = plan([make_job("a10", whole(2), models={"A10G-24GB"}), make_job("h100", whole(2), models={"H100-80GB"}),
                     make_job("t4", whole(1), models={"T4-16GB"})])
    assert where(decision) == {"a10": ["a10g-0"], "h100": ["od-0"]}
    assert {v.status.plugin for v in decision.pending["t4"].verdicts} == {"GpuModelFit"}


def test_shares_pack_onto_one_gpu_under_binpack_and_spread_under_default() -> None:
    jobs = [make_job(f"s{n}", share(250, 2)) for n in range(4)]
    packed = plan(jobs, "binpack")
    grants = {(r.node, r.grants[0].gpu) for p in packed.placements for r in p.replicas}
    assert len(grants) == 1
    spread = plan(jobs, "default")
    assert len({r.node for p in spread.placements for r in p.replicas}) == 2


def test_mig_instances_are_created_at_legal_starts_and_fixed_layouts_are_used() -> None:
    jobs = [make_job("big", mig_request("4g.20gb")), make_job("mid", mig_request("3g.20gb")),
            make_job("h", mig_request("3g.40gb", 2)), make_job("nowhere", mig_request("1g.24gb"))]
    decision = plan(jobs)
    placed = {p.job.id: p for p in decision.placements}
    assert [(g.gpu, g.mig_start) for g in placed["big"].replicas[0].grants] == [(0, 0)]
    assert [(g.gpu, g.mig_start) for g in placed["mid"].replicas[0].grants] == [(0, 4)]
    assert placed["h"].replicas[0].node == "fixed-0"
    assert {g.mig_start for g in placed["h"].replicas[0].grants} <= {0, 4}
    assert {v.status.code for v in decision.pending["nowhere"].verdicts} == {Code.UNRESOLVABLE}


def test_default_spreads_and_binpack_packs_whole_gpus() -> None:
    jobs = [make_job(f"j{n}", whole(1), models={"H100-80GB"}) for n in range(2)]
    assert sorted(n for nodes in where(plan(jobs, "default")).values() for n in nodes) == ["od-0", "od-1"]
    assert sorted(n for nodes in where(plan(jobs, "binpack")).values() for n in nodes) == ["od-0", "od-0"]


def test_priority_decides_who_gets_the_last_gpus() -> None:
    jobs = [make_job("low", whole(8), models={"H100-80GB"}, submit_s=0),
            make_job("high", whole(8), models={"H100-80GB"}, submit_s=9, priority=3),
            make_job("mid", whole(8), models={"H100-80GB"}, submit_s=5, priority=1)]
    decision = plan(jobs)
    assert set(where(decision)) == {"high", "mid"} and "low" in decision.pending


_REQUESTS = st.one_of(
    st.builds(whole, st.integers(1, 9)),
    st.builds(share, st.sampled_from([100, 250, 500, 900]), st.sampled_from([0, 2, 8, 30])),
    st.builds(mig_request, st.sampled_from(["1g.5gb", "2g.10gb", "3g.20gb", "3g.40gb", "7g.40gb"]), st.integers(1, 3)),
)
_JOBS = st.lists(
    st.builds(make_job, st.uuids().map(str), _REQUESTS, replicas=st.integers(1, 3), priority=st.integers(0, 2),
              preemptible=st.booleans(), models=st.sampled_from([(), ("H100-80GB",), ("A10G-24GB", "A100-40GB")])),
    max_size=30,
    unique_by=lambda job: job.id,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JOBS, st.sampled_from(policies.bundled_profiles()))
def test_every_decision_is_valid_deterministic_and_explains_every_pending_job(jobs: list[Job], profile: str) -> None:
    decision = plan(jobs, profile)
    assert plan(list(jobs), profile) == decision
    for pending in decision.pending.values():
        assert pending.status.code is not Code.SUCCESS and pending.status.reasons
        assert pending.verdicts, "a job that reached the filters names a verdict per node class"
        assert sum(v.nodes for v in pending.verdicts) == len(CLUSTER.nodes)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(_JOBS, min_size=2, max_size=4), st.sampled_from(policies.bundled_profiles()), st.randoms(use_true_random=False))
def test_a_reused_scheduler_decides_as_a_fresh_one(batches: list[list[Job]], profile: str, rng: object) -> None:
    """The index and verdicts a Scheduler keeps between cycles are a memo: they change nothing."""
    reused = Scheduler(policies.profile(profile))
    snapshot = CLUSTER
    seen: set[str] = set()
    for batch in batches:
        jobs = [job for job in batch if job.id not in seen]
        seen.update(job.id for job in jobs)
        fresh = Scheduler(policies.profile(profile)).schedule(snapshot, jobs)
        assert reused.schedule(snapshot, jobs) == fresh
        snapshot = apply(snapshot, fresh)
        running = sorted(snapshot.running)
        for job_id in running[: len(running) // 2]:
            if rng.random() < 0.5:  # type: ignore[attr-defined]
                snapshot = snapshot.release(job_id)
