"""Round-based policies after Gavel: LP shares against hand-computed ones, priorities, the plugins'
choices on hand-built snapshots, a small replay, and bad input."""

from __future__ import annotations

import dataclasses
import math
import subprocess
import sys
from pathlib import Path
from types import MappingProxyType

import pytest

import policies
from scheduler.cluster import load_cluster
from scheduler.errors import InputError
from scheduler.model import ClusterSnapshot, Grant, Job, Placement, ReplicaPlacement
from scheduler.rounds import JobRounds, RoundsView, max_min_shares, ordered_shares, priorities
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from tests.builders import make_job, make_pool, make_snapshot
from traces.synth import gavel_jobs

ROOT = Path(__file__).resolve().parent.parent
V100, K80 = "V100-16GB", "K80-12GB"


def sped(job_id: str, k80: float, **changes: object) -> Job:
    """A one-GPU job running at 1.0 on V100 and `k80` on K80 (Gavel's throughputs, relative)."""
    job = make_job(job_id, **changes)  # type: ignore[arg-type]
    return dataclasses.replace(job, speedups=((K80, k80), (V100, 1.0)))


def test_aware_lp_matches_the_hand_computed_allocation() -> None:
    # Two jobs of type A (K80 at 0.2 of V100) and two of type B (K80 at 0.5), one V100 and one K80.
    # Agnostic: every job 1/4 of each GPU, so A's throughput is 0.3 and B's 0.375 (the normalisers).
    # By hand: B's relative K80 speed is higher, so B takes the K80 (1/2 each) and A and B split
    # the V100 until (1/2 - b)/0.3 = (b + 1/4)/0.375: b = 1/6, every job at 10/9 of its share.
    jobs = [sped("a1", 0.2), sped("a2", 0.2), sped("b1", 0.5), sped("b2", 0.5)]
    shares = max_min_shares(jobs, {K80: 1, V100: 1}, aware=True)
    for job_id in ("a1", "a2"):
        assert shares[job_id][V100] == pytest.approx(1 / 3, abs=1e-6)
        assert shares[job_id][K80] == pytest.approx(0.0, abs=1e-6)
    # The B jobs run alike, so how they split their 1/3 of the V100 and the K80 is not unique;
    # together they hold exactly that, and each is at 10/9.
    assert shares["b1"][V100] + shares["b2"][V100] == pytest.approx(1 / 3, abs=1e-6)
    assert shares["b1"][K80] + shares["b2"][K80] == pytest.approx(1.0, abs=1e-6)
    for job_id, k80, agnostic in (("a1", 0.2, 0.3), ("a2", 0.2, 0.3), ("b1", 0.5, 0.375), ("b2", 0.5, 0.375)):
        normalised = (shares[job_id][V100] + k80 * shares[job_id][K80]) / agnostic
        assert normalised == pytest.approx(10 / 9, abs=1e-5)


def test_agnostic_lp_spreads_equal_time_over_models_by_their_gpus() -> None:
    jobs = [sped("a1", 0.2), sped("b1", 0.5), sped("c1", 0.9)]
    shares = max_min_shares(jobs, {K80: 2, V100: 1}, aware=False)
    for job in jobs:  # 3 GPUs, 3 jobs: each runs all the time, 2/3 of it on K80s
        assert shares[job.id] == pytest.approx({K80: 2 / 3, V100: 1 / 3})


def test_priorities_are_share_over_fraction_received() -> None:
    view = RoundsView(1, MappingProxyType({
        "ran": JobRounds(make_job("ran"), ((V100, 100.0),), 400.0),
        "new": JobRounds(make_job("new"), (), 400.0),
    }))  # fmt: skip
    table = priorities(view, {"ran": {V100: 0.5, K80: 0.0}, "new": {V100: 0.5}})
    assert table["ran"][V100] == pytest.approx(2.0)  # 0.5 / (100 / 400)
    assert table["ran"][K80] == 0.0
    assert table["new"][V100] == math.inf


def test_fifo_and_srtf_shares_take_the_fastest_model_with_room_in_their_order() -> None:
    jobs = [sped("first", 0.5, submit_s=0.0), sped("second", 0.5, submit_s=1.0), sped("third", 0.5, submit_s=2.0)]
    fifo = ordered_shares(jobs, {K80: 1, V100: 1}, lambda job: (job.submit_s,))
    assert fifo == {"first": {V100: 1.0}, "second": {K80: 1.0}, "third": {}}
    left = {"first": 30.0, "second": 10.0, "third": 20.0}
    srtf = ordered_shares(jobs, {K80: 1, V100: 1}, lambda job: (left[job.id],))
    assert srtf == {"second": {V100: 1.0}, "third": {K80: 1.0}, "first": {}}


def two_models() -> ClusterSnapshot:
    return make_snapshot(make_pool("v100", gpu=V100, gpus_per_node=1), make_pool("k80", gpu=K80, gpus_per_node=1))


def with_view(snapshot: ClusterSnapshot, entries: list[JobRounds]) -> ClusterSnapshot:
    return dataclasses.replace(snapshot, rounds=RoundsView(7, MappingProxyType({e.job.id: e for e in entries})))


def test_a_job_goes_to_the_model_where_it_is_furthest_behind_its_share() -> None:
    # Two jobs, one V100 and one K80: max-min gives each half of each (2 jobs, 2 GPUs). "p" has had
    # its V100 time, "q" its K80 time: each now goes where it has received nothing (Gavel's priority).
    p, q = sped("p", 0.1), sped("q", 0.9)
    snapshot = with_view(two_models(), [JobRounds(p, ((V100, 100.0),), 400.0), JobRounds(q, ((K80, 100.0),), 400.0)])
    decision = Scheduler(policies.profile("gavel-las")).schedule(snapshot, [p, q])
    where = {placement.job.id: placement.replicas[0].node for placement in decision.placements}
    assert where == {"p": "k80-0", "q": "v100-0"}


def test_aware_las_keeps_a_job_off_a_model_it_has_no_share_of() -> None:
    # The hand-computed case above: the A jobs have no K80 share, so the second one waits rather
    # than take the K80, which goes to a B job.
    jobs = [sped("a1", 0.2), sped("a2", 0.2), sped("b1", 0.5), sped("b2", 0.5)]
    snapshot = with_view(two_models(), [JobRounds(job, (), 0.0) for job in jobs])
    decision = Scheduler(policies.profile("gavel-las")).schedule(snapshot, jobs)
    where = {placement.job.id: placement.replicas[0].node for placement in decision.placements}
    assert where["a1"] == "v100-0" and "a2" not in where
    assert [job for job, node in where.items() if node == "k80-0"] in (["b1"], ["b2"])
    agnostic = Scheduler(policies.profile("gavel-las-agnostic")).schedule(snapshot, jobs)
    assert len(agnostic.placements) == 2  # every job has a share of both models there


def test_round_preemption_evicts_the_running_job_furthest_ahead_of_its_share() -> None:
    # One V100; "ahead" has run 300 of its 400 s there, "behind" waited 400 s: LAS swaps them.
    ahead, behind = sped("ahead", 0.5), sped("behind", 0.5)
    snapshot = make_snapshot(make_pool("v100", gpu=V100, gpus_per_node=1))
    snapshot = snapshot.assume(Placement(ahead, (ReplicaPlacement("v100-0", (Grant(0),)),)))
    snapshot = with_view(snapshot, [JobRounds(ahead, ((V100, 300.0),), 400.0), JobRounds(behind, (), 400.0)])
    decision = Scheduler(policies.profile("gavel-las")).schedule(snapshot, [behind])
    assert [p.job for p in decision.preemptions] == ["ahead"]
    assert [p.job.id for p in decision.placements] == ["behind"]


def test_round_preemption_leaves_a_job_behind_its_share_running() -> None:
    # "running" has had 100 of its 400 s (priority 0.5 / 0.25 = 2), "waiting" 300 (0.5 / 0.75):
    # the waiting job is ahead of its share, so it neither evicts nor runs.
    running, waiting = sped("running", 0.5), sped("waiting", 0.5)
    snapshot = make_snapshot(make_pool("v100", gpu=V100, gpus_per_node=1))
    snapshot = snapshot.assume(Placement(running, (ReplicaPlacement("v100-0", (Grant(0),)),)))
    snapshot = with_view(snapshot, [JobRounds(running, ((V100, 100.0),), 400.0),
                                    JobRounds(waiting, ((V100, 300.0),), 400.0)])  # fmt: skip
    decision = Scheduler(policies.profile("gavel-las")).schedule(snapshot, [waiting])
    assert not decision.preemptions and not decision.placements


def test_rounds_time_slice_one_gpu_without_losing_work() -> None:
    # Two 720 s jobs on one V100 in 360 s rounds: LAS alternates them; no work is lost at a swap,
    # so both end by 1,440 s of work plus the first round's wait.
    cluster = load_cluster(ROOT / "traces" / "samples" / "gavel-cluster.toml")
    jobs = [sped("x", 0.5, duration_s=720.0, models=(V100,)), sped("y", 0.5, duration_s=720.0, models=(V100,))]
    small = dataclasses.replace(cluster, pools=MappingProxyType({"v100": dataclasses.replace(cluster.pools["v100"], nodes=1, gpus_per_node=1, min_nodes=1, max_nodes=1)}))
    result = simulate(jobs, small, Scheduler(policies.profile("gavel-las")), SimOptions(round_s=360.0))
    runs = result.world.runs
    assert sum(run.preemptions for run in runs.values()) >= 1
    assert max(run.end_ms or 0 for run in runs.values()) == 1_800_000  # first round at 360 s, 1,440 s of work
    assert all(run.lost_gpu_ms == 0 for run in runs.values())


def test_round_plugins_without_a_round_sort_are_refused() -> None:
    profile = dataclasses.replace(policies.profile("gavel-las"), sort=policies.REGISTRY["Fifo"]())
    cluster = load_cluster(ROOT / "traces" / "samples" / "gavel-cluster.toml")
    with pytest.raises(InputError, match="profile gavel-las: sort: RoundsModel, RoundsPreemption, RoundsShareFit read"):
        simulate([sped("x", 0.5)], cluster, Scheduler(profile), SimOptions(round_s=360.0))


def test_cli_round_plugins_without_a_round_sort_exit_2_with_one_line(tmp_path: Path) -> None:
    trace = tmp_path / "jobs.jsonl"
    trace.write_text('{"id": "a", "submit_s": 0, "duration_s": 60}\n', encoding="utf-8")
    profile = tmp_path / "mixed.toml"
    text = (ROOT / "policies" / "profiles" / "gavel-las.toml").read_text(encoding="utf-8")
    profile.write_text(text.replace('sort = "RoundsLas"', 'sort = "Fifo"'), encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "fleetsched", "simulate", "--trace", str(trace), "--cluster",
         str(ROOT / "traces" / "samples" / "gavel-cluster.toml"), "--profile", str(profile), "--round-s", "360",
         "--out", str(tmp_path / "o")],
        capture_output=True, text=True, cwd=ROOT, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip().count("\n") == 0 and "sort: RoundsModel" in done.stderr
    assert not (tmp_path / "o" / "summary.json").exists()


def test_a_job_no_model_can_run_gets_no_share_and_leaves_the_others_theirs() -> None:
    stuck = dataclasses.replace(make_job("stuck"), gpu_models=frozenset({"H100-80GB"}))
    shares = max_min_shares([stuck, sped("a", 0.5)], {K80: 1, V100: 1}, aware=True)
    assert shares["stuck"] == {K80: 0.0, V100: 0.0}
    assert shares["a"][V100] + 0.5 * shares["a"][K80] == pytest.approx(1.0, abs=1e-6)  # all of the V100


def test_a_round_replay_of_gavel_jobs_is_deterministic_and_aware_las_uses_the_faster_gpus_better() -> None:
    cluster = load_cluster(ROOT / "traces" / "samples" / "gavel-cluster.toml")
    jobs = list(gavel_jobs(150, 3, 30.0, multi_gpu=False))

    def ends(profile: str) -> dict[str, int | None]:
        result = simulate(jobs, cluster, Scheduler(policies.profile(profile)), SimOptions(round_s=360.0, check=True))
        return {job_id: run.end_ms for job_id, run in result.world.runs.items()}

    aware = ends("gavel-las")
    assert aware == ends("gavel-las")
    agnostic = ends("gavel-las-agnostic")
    assert all(end is not None for end in (*aware.values(), *agnostic.values()))
    jct = {name: sum((end or 0) / 1000 - job.submit_s for job, end in zip(jobs, (table[j.id] for j in jobs), strict=True))
           for name, table in (("aware", aware), ("agnostic", agnostic))}  # fmt: skip
    assert jct["aware"] < jct["agnostic"]


def test_bench_rounds_reports_each_seed_the_ratio_and_the_machine() -> None:
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "bench_rounds.py"), "--seeds", "0", "--jobs-per-hour", "30",
         "--jobs", "120", "--warmup", "20", "--window", "60"],
        capture_output=True, text=True, check=True, cwd=ROOT,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    assert lines[0].startswith('{"seed": 0, "aware_jct_h": ') and '"ratio": ' in lines[0]
    assert "agnostic / aware mean JCT over jobs 20..79 of 120" in lines[1]
    assert lines[2].startswith("machine: ")


def test_srtf_evicts_the_running_job_with_more_work_left_and_fifo_does_not() -> None:
    # One V100: "long" runs with 5,000 s of work left, "short" arrives later with 100 s left.
    long, short = sped("long", 0.5, submit_s=0.0), sped("short", 0.5, submit_s=10.0)
    snapshot = make_snapshot(make_pool("v100", gpu=V100, gpus_per_node=1))
    snapshot = snapshot.assume(Placement(long, (ReplicaPlacement("v100-0", (Grant(0),)),)))
    snapshot = with_view(snapshot, [JobRounds(long, ((V100, 360.0),), 370.0, 5000.0),
                                    JobRounds(short, (), 360.0, 100.0)])  # fmt: skip
    srtf = Scheduler(policies.profile("gavel-srtf")).schedule(snapshot, [short])
    assert [p.job for p in srtf.preemptions] == ["long"] and [p.job.id for p in srtf.placements] == ["short"]
    fifo = Scheduler(policies.profile("gavel-fifo")).schedule(snapshot, [short])
    assert not fifo.preemptions and not fifo.placements
