"""Gavel's cost-aware round policy: LP shares against hand-computed ones, prices from pools, the tie-break,
and the profile's choice on a hand-built snapshot."""

from __future__ import annotations

import dataclasses
from types import MappingProxyType

import pytest

import policies
from policies.literature import RoundsCost
from scheduler.model import Job
from scheduler.plugin import Cycle
from scheduler.rounds import JobRounds, RoundsView
from scheduler.rounds_cost import cost_shares, usd_per_gpu_hour_by_model
from scheduler.world import Scheduler
from tests.builders import make_job, make_pool, make_snapshot

V100, K80 = "V100-16GB", "K80-12GB"
GCP = {V100: 0.74, K80: 0.135}  # Gavel's GCP prices per GPU-hour (scheduler/utils.py)


def sped(job_id: str, k80: float, submit_s: float = 0.0) -> Job:
    """A one-GPU job at 1.0 on V100 and `k80` on K80 (relative throughputs, as Gavel's traces give them)."""
    return dataclasses.replace(make_job(job_id, submit_s=submit_s), speedups=((K80, k80), (V100, 1.0)))


def test_the_cheaper_model_per_unit_of_throughput_wins() -> None:
    # Throughput per dollar: "cheap-fast" on K80 0.4 / 0.135 = 2.96 against 1 / 0.74 = 1.35 on a
    # V100; "k80-slow" on K80 0.05 / 0.135 = 0.37 < 1.35. One GPU of each: each takes its winner.
    shares = cost_shares([sped("k80-slow", 0.05), sped("cheap-fast", 0.4)], {K80: 1, V100: 1}, GCP)
    assert shares["cheap-fast"] == pytest.approx({K80: 1.0, V100: 0.0}, abs=1e-6)
    assert shares["k80-slow"] == pytest.approx({K80: 0.0, V100: 1.0}, abs=1e-6)


def test_unpriced_models_all_cost_one_and_the_fastest_wins() -> None:
    # Without prices the objective is Gavel's plain throughput sum: a lone job runs on the V100.
    alone = [sped("a", 0.4)]
    assert cost_shares(alone, {K80: 1, V100: 1}, {V100: 0.0, K80: 0.0})["a"] == pytest.approx({K80: 0.0, V100: 1.0})
    assert cost_shares(alone, {K80: 1, V100: 1}, {V100: 0.74})["a"] == pytest.approx({K80: 0.0, V100: 1.0})
    assert cost_shares(alone, {K80: 1, V100: 1}, GCP)["a"] == pytest.approx({K80: 1.0, V100: 0.0})


def test_ties_go_to_the_earlier_job_whatever_the_input_order() -> None:
    # "first" and "third" are alike and both want the one K80 (2.96 a dollar); the V100 is worth
    # 1.35 to every job. Every answer giving the K80 to one of them and the V100 to anyone else is
    # optimal: the earliest job gets the K80 and the next one by arrival the V100.
    jobs = [sped("third", 0.4, 2.0), sped("second", 0.05, 1.0), sped("first", 0.4, 0.0)]
    for order in (jobs, list(reversed(jobs))):
        shares = cost_shares(order, {K80: 1, V100: 1}, GCP)
        assert shares["first"] == pytest.approx({K80: 1.0, V100: 0.0}, abs=1e-6)
        assert shares["second"] == pytest.approx({K80: 0.0, V100: 1.0}, abs=1e-6)
        assert shares["third"] == pytest.approx({K80: 0.0, V100: 0.0}, abs=1e-6)


def test_gangs_count_their_gpus_against_a_model() -> None:
    # Two 2-GPU jobs, two K80s and two V100s: one gang at a time fits on each pair
    # (sum_j scale_j X[j][m] <= 2), so every optimal answer fills both pairs and runs both gangs
    # all the time; which gang runs where costs the same, and the earlier one gets the faster pair.
    jobs = [dataclasses.replace(sped(f"g{n}", 0.4, float(n)), replicas=2) for n in range(2)]
    shares = cost_shares(jobs, {K80: 2, V100: 2}, GCP)
    assert sum(2 * shares[job.id][K80] for job in jobs) == pytest.approx(2.0)
    assert all(sum(shares[job.id].values()) == pytest.approx(1.0) for job in jobs)
    assert shares == {"g0": {K80: 0.0, V100: pytest.approx(1.0)}, "g1": {K80: pytest.approx(1.0), V100: 0.0}}


def test_a_models_price_is_the_gpu_weighted_mean_over_ready_nodes() -> None:
    on_demand = make_pool("od", gpu=V100, gpus_per_node=4, usd_per_node_hour=4 * 2.48)
    spot = make_pool("spot", gpu=V100, gpus_per_node=4, usd_per_node_hour=4 * 0.74, nodes=2)
    k80 = make_pool("k80", gpu=K80, gpus_per_node=2, usd_per_node_hour=2 * 0.135, nodes=2)
    snapshot = make_snapshot(on_demand, spot, k80)
    assert usd_per_gpu_hour_by_model(snapshot) == pytest.approx({K80: 0.135, V100: (4 * 2.48 + 8 * 0.74) / 12})
    booting = dataclasses.replace(snapshot.nodes["spot-0"], ready=False)
    assert usd_per_gpu_hour_by_model(snapshot.with_node(booting)) == pytest.approx({K80: 0.135, V100: (2.48 + 0.74) / 2})
    assert list(usd_per_gpu_hour_by_model(snapshot)) == [K80, V100]


def test_the_profile_sends_a_job_to_the_cheaper_model_with_a_faster_one_free() -> None:
    def where(usd_v100: float, usd_k80: float, jobs: list[Job]) -> dict[str, str]:
        snapshot = make_snapshot(make_pool("v100", gpu=V100, gpus_per_node=1, usd_per_node_hour=usd_v100),
                                 make_pool("k80", gpu=K80, gpus_per_node=1, usd_per_node_hour=usd_k80))  # fmt: skip
        view = RoundsView(3, MappingProxyType({job.id: JobRounds(job, (), 0.0) for job in jobs}))
        decision = Scheduler(policies.profile("gavel-cost")).schedule(dataclasses.replace(snapshot, rounds=view), jobs)
        return {placement.job.id: placement.replicas[0].node for placement in decision.placements}

    jobs = [sped("cheap-fast", 0.4), sped("k80-slow", 0.05, 1.0)]
    assert where(0.74, 0.135, jobs) == {"cheap-fast": "k80-0", "k80-slow": "v100-0"}
    assert where(0.74, 0.135, jobs[:1]) == {"cheap-fast": "k80-0"}
    assert where(0.0, 0.0, jobs[:1]) == {"cheap-fast": "v100-0"}  # unpriced: speed alone


def test_a_job_no_model_can_run_gets_nothing() -> None:
    stuck = dataclasses.replace(make_job("stuck"), gpu_models=frozenset({"H100-80GB"}))
    shares = cost_shares([stuck, sped("a", 0.4)], {K80: 1, V100: 1}, GCP)
    assert shares["stuck"] == pytest.approx({K80: 0.0, V100: 0.0}, abs=1e-6)
    assert shares["a"][K80] == pytest.approx(1.0)


def test_nothing_to_share_gives_empty_rows_and_no_view_orders_by_arrival() -> None:
    assert cost_shares([sped("a", 0.4)], {K80: 0, V100: 0}, GCP) == {"a": {}}
    assert cost_shares([], {K80: 1}, GCP) == {}
    plugin = RoundsCost()
    cycle = Cycle(0.0, make_snapshot(make_pool("v100", gpu=V100)))  # no round view: a plain replay
    assert plugin.sort_key(cycle, make_job("late", submit_s=9.0)) == (0.0, 9.0, "late")
