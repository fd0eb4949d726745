"""Tiresias' discretised 2D-LAS in rounds: queues by GPU-seconds, demotion and the preemption it brings,
FIFO inside a queue, the starvation knob, and bad arguments."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest

import policies
from policies.literature import RoundsShuffle, Tiresias, TiresiasArgs, tiresias_priorities, tiresias_queue
from scheduler.errors import InputError
from scheduler.model import ClusterSnapshot, Grant, Job, Placement, ReplicaPlacement
from scheduler.plugin import Cycle
from scheduler.rounds import JobRounds, RoundsView
from scheduler.world import Scheduler
from tests.builders import make_job, make_pool, make_snapshot, whole

ROOT_PROFILES = Path(__file__).resolve().parent.parent / "policies" / "profiles"

V100, K80 = "V100-16GB", "K80-12GB"


def ran(job: Job, seconds: float, active_s: float | None = None) -> JobRounds:
    """`job` as the round view shows it after `seconds` of running on a V100, `active_s` after arriving."""
    return JobRounds(job, ((V100, seconds),) if seconds else (), seconds if active_s is None else active_s)


def view_of(*entries: JobRounds) -> RoundsView:
    return RoundsView(4, MappingProxyType({entry.job.id: entry for entry in entries}))


def test_queues_count_gpus_times_seconds_not_seconds_alone() -> None:
    # The two dimensions: "wide" ran 1,000 s on 4 GPUs (4,000 GPU-s, past 3,250: queue 1);
    # "narrow" ran 3,000 s on 1 GPU (3,000 GPU-s: still queue 0) though it ran three times longer.
    wide, narrow = ran(make_job("wide", whole(4), submit_s=0.0), 1000.0), ran(make_job("narrow", submit_s=10.0), 3000.0)
    fresh, old = ran(make_job("fresh", submit_s=20.0), 0.0), ran(make_job("old", submit_s=5.0), 8000.0)
    args = TiresiasArgs()
    assert [tiresias_queue(e, args) for e in (narrow, fresh, wide, old)] == [0, 0, 1, 2]
    table = tiresias_priorities(view_of(wide, narrow, fresh, old), [K80, V100], args)
    # queue 0 by arrival (narrow before fresh), then queue 1, then queue 2: the first highest
    assert table == {"narrow": {K80: 4.0, V100: 4.0}, "fresh": {K80: 3.0, V100: 3.0},
                     "wide": {K80: 2.0, V100: 2.0}, "old": {K80: 1.0, V100: 1.0}}  # fmt: skip


def test_a_threshold_is_reached_at_equality_and_thresholds_are_configurable() -> None:
    entry = ran(make_job("j"), 3250.0)
    assert tiresias_queue(entry, TiresiasArgs()) == 1  # the authors demote at j_gt >= queue_limit
    assert tiresias_queue(entry, TiresiasArgs(thresholds_gpu_s=[3600.0])) == 0
    assert tiresias_queue(ran(make_job("j"), 4000.0), TiresiasArgs(thresholds_gpu_s=[3600.0])) == 1


def one_v100() -> ClusterSnapshot:
    return make_snapshot(make_pool("v100", gpu=V100, gpus_per_node=1))


def running(snapshot: ClusterSnapshot, job: Job) -> ClusterSnapshot:
    return snapshot.assume(Placement(job, (ReplicaPlacement("v100-0", (Grant(0),)),)))


@pytest.mark.parametrize(("ran_s", "evicted"), [(3000.0, False), (3300.0, True)], ids=["queue-0", "demoted"])
def test_demotion_lets_a_newcomer_preempt_at_the_round_boundary(ran_s: float, evicted: bool) -> None:
    # One GPU. "old" arrived first and runs; "new" arrives later. While "old" is in queue 0, FIFO
    # keeps it ahead of "new"; once its 1 GPU x ran_s passes 3,250 GPU-s it is demoted to queue 1
    # and "new" (queue 0) takes the GPU at the next round.
    old, new = make_job("old", submit_s=0.0), make_job("new", submit_s=100.0)
    snapshot = dataclasses.replace(running(one_v100(), old), rounds=view_of(ran(old, ran_s, ran_s + 100), ran(new, 0.0, ran_s)))
    decision = Scheduler(policies.profile("tiresias")).schedule(snapshot, [new])
    assert [p.job for p in decision.preemptions] == (["old"] if evicted else [])
    assert [p.job.id for p in decision.placements] == (["new"] if evicted else [])


def test_fifo_inside_a_queue_orders_waiting_jobs_by_arrival() -> None:
    first, second = make_job("first", submit_s=50.0), make_job("second", submit_s=60.0)
    fresh = ran(make_job("fresh", submit_s=90.0), 0.0)
    snapshot = dataclasses.replace(one_v100(), rounds=view_of(ran(second, 0.0), ran(first, 0.0), fresh))
    decision = Scheduler(policies.profile("tiresias")).schedule(snapshot, [fresh.job, second, first])
    assert [p.job.id for p in decision.placements] == ["first"]


def test_the_starvation_knob_promotes_a_job_that_waited_long_enough() -> None:
    # "starved" ran 4,000 s (queue 1) and waited 32,000 s since it arrived: with the knob at 8
    # (wait >= 8 x run) it goes back to queue 0 and, arriving first, preempts the queue-0 "young".
    starved, young = make_job("starved", submit_s=0.0), make_job("young", submit_s=30000.0)
    snapshot = running(one_v100(), young)
    snapshot = dataclasses.replace(snapshot, rounds=view_of(ran(starved, 4000.0, 36000.0), ran(young, 600.0, 6000.0)))
    assert tiresias_queue(ran(starved, 4000.0, 36000.0), TiresiasArgs(starve_limit=8.0)) == 0
    assert tiresias_queue(ran(starved, 4000.0, 35999.0), TiresiasArgs(starve_limit=8.0)) == 1
    profile = policies.profile("tiresias")
    knob = Scheduler(dataclasses.replace(profile, sort=Tiresias(TiresiasArgs(starve_limit=8.0))))
    assert [p.job for p in knob.schedule(snapshot, [starved]).preemptions] == ["young"]
    default = Scheduler(profile).schedule(snapshot, [starved])
    assert not default.preemptions and not default.placements


@pytest.mark.parametrize(
    ("args", "field", "problem"),
    [
        ({"thresholds_gpu_s": [7200, 3250]}, "args.Tiresias.thresholds_gpu_s", "must ascend strictly"),
        ({"thresholds_gpu_s": [0, 3250]}, "args.Tiresias.thresholds_gpu_s", "positive numbers"),
        ({"thresholds_gpu_s": ["soon"]}, "args.Tiresias.thresholds_gpu_s", "positive numbers"),
        ({"starve_limit": -1.0}, "args.Tiresias.starve_limit", "0 (off) or more"),
    ],
    ids=["descending", "zero", "text", "negative-knob"],
)
def test_bad_arguments_name_the_field(args: dict[str, Any], field: str, problem: str) -> None:
    with pytest.raises(InputError) as caught:
        TiresiasArgs(**args)
    assert caught.value.field == field and problem in caught.value.problem


def test_the_agnostic_model_order_is_drawn_afresh_each_round_and_the_same_in_every_replay() -> None:
    snapshot = make_snapshot(*(make_pool(name, gpu=gpu, gpus_per_node=1) for name, gpu in
                               (("k80", K80), ("p100", "P100-16GB"), ("v100", V100))))  # fmt: skip
    job, shuffle = make_job("j"), RoundsShuffle()

    def first_model(round_id: int) -> str:
        cycle = Cycle(0.0, dataclasses.replace(snapshot, rounds=RoundsView(round_id, MappingProxyType({}))))
        scores = {node.name: shuffle.score(cycle, job, node) for node in snapshot.nodes.values()}
        assert len(set(scores.values())) == 3 and all(0 <= score < 1 for score in scores.values())
        return max(scores, key=lambda name: scores[name])

    firsts = [first_model(round_id) for round_id in range(1, 31)]
    assert firsts == [first_model(round_id) for round_id in range(1, 31)]
    assert set(firsts) == {"k80-0", "p100-0", "v100-0"}  # no model is favoured round after round
    assert {shuffle.score(Cycle(0.0, snapshot), job, node) for node in snapshot.nodes.values()} == {0.0}


def test_a_profile_file_sets_the_thresholds(tmp_path: Path) -> None:
    text = (ROOT_PROFILES / "tiresias.toml").read_text().replace("[3250.0, 7200.0]", "[100.0, 200.0, 400.0]")
    path = tmp_path / "my-tiresias.toml"
    path.write_text(text)
    sort = policies.profile(str(path)).sort
    assert isinstance(sort, Tiresias) and sort.args.thresholds_gpu_s == [100.0, 200.0, 400.0]
    bundled = policies.profile("tiresias").sort
    assert isinstance(bundled, Tiresias) and bundled.args == TiresiasArgs()


def test_a_bad_threshold_in_a_profile_file_names_its_file_and_line(tmp_path: Path) -> None:
    text = (ROOT_PROFILES / "tiresias.toml").read_text().replace("[3250.0, 7200.0]", "[7200.0, 3250.0]")
    path = tmp_path / "bad-tiresias.toml"
    path.write_text(text)
    line = text.splitlines().index("thresholds_gpu_s = [7200.0, 3250.0]") + 1
    with pytest.raises(InputError) as caught:
        policies.profile(str(path))
    assert (caught.value.source, caught.value.line, caught.value.field) == (str(path), line,
                                                                            "args.Tiresias.thresholds_gpu_s")
    assert "must ascend strictly" in caught.value.problem
