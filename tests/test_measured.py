"""Measured utilisation in the canonical record and in a replay: allocated-but-idle time and dollars by hand.

Oracle (one node of 2 GPUs at $10 a node-hour: $5 a GPU-hour; idle rule: under 5 % for 30 min):
- A (team t1, 1 GPU, 3,600 s): 40 minutes at 0 %, then 20 at 50 %: idle 2,400 s = 0.666667
  GPU-hours, $3.33 of its $5.00.
- B (team t2, 1 GPU, 3,600 s): 20 min quiet (under the window: not idle), 10 busy, 30 quiet
  to its end (exactly the window: idle): 1,800 s = 0.5 GPU-hours, $2.50.
- C (team t1, 1 GPU, 1,800 s, submitted at 0): waits for a GPU until 3,600 s; its 30 quiet
  samples cover its *allocation*, not the trace's first 30 minutes: idle 1,800 s, $2.50.
Teams: t1 1.166667 GPU-hours idle, $5.83 (35/6); t2 0.5, $2.50; total $8.33 of $12.50 allocated.
"""

from __future__ import annotations

import json
from types import MappingProxyType

import pytest

import policies
from scheduler.cluster import Cluster
from scheduler.errors import InputError
from scheduler.idleness import IdleRule
from scheduler.model import Job, Labels
from scheduler.observed import MeasuredUtilisation
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.measured import covered_s, idle_time, rule_for
from simulator.metrics import summary
from simulator.outputs import render_summary
from tests.builders import make_pool, share, whole
from traces.canonical import to_job, to_record


def series(*runs: tuple[int, float | None]) -> MeasuredUtilisation:
    """Per-minute samples: (count, percent) runs."""
    return MeasuredUtilisation(samples_percent=tuple(value for count, value in runs for _ in range(count)))


JOBS = [
    Job(id="A", request=whole(1), duration_s=3600.0, labels=Labels(team="t1"), measured=series((40, 0.0), (20, 50.0))),
    Job(id="B", request=whole(1), duration_s=3600.0, labels=Labels(team="t2"),
        measured=series((20, 1.0), (10, 80.0), (30, 4.9))),
    Job(id="C", request=whole(1), duration_s=1800.0, submit_s=0.001, labels=Labels(team="t1"), measured=series((30, 0.0))),
]  # fmt: skip


def replay(jobs: list[Job], cluster: Cluster) -> dict:  # type: ignore[type-arg]
    result = simulate(jobs, cluster, Scheduler(policies.profile("default")), SimOptions(check=True))
    return summary(result)


def two_gpus() -> Cluster:
    return Cluster("hand.toml", MappingProxyType({"od": make_pool("od", gpus_per_node=2, usd_per_node_hour=10.0)}))


def test_a_replay_prices_idle_allocation_by_job_and_team_as_computed_by_hand() -> None:
    measured = replay(JOBS, two_gpus())["measured"]
    by_job = measured["by_job"]
    assert by_job["A"]["gpu_hours"] == {"allocated": 1.0, "measured": 1.0, "idle": 0.666667}
    assert by_job["A"]["usd"] == {"allocated": 5.0, "idle": 3.33}
    assert by_job["B"]["gpu_hours"]["idle"] == 0.5 and by_job["B"]["usd"]["idle"] == 2.5
    assert by_job["C"]["gpu_hours"] == {"allocated": 0.5, "measured": 0.5, "idle": 0.5}
    assert by_job["C"]["usd"] == {"allocated": 2.5, "idle": 2.5}
    assert by_job["B"]["mean_percent"] == round((20 * 1.0 + 10 * 80.0 + 30 * 4.9) / 60, 4)
    assert measured["by_team"]["t1"]["gpu_hours"]["idle"] == 1.166667
    assert measured["by_team"]["t1"]["usd"] == {"allocated": 7.5, "idle": 5.83}
    assert measured["by_team"]["t2"]["usd"] == {"allocated": 5.0, "idle": 2.5}
    assert measured["usd"] == {"allocated": 12.5, "idle": 8.33}
    assert measured["jobs"] == 3


def test_a_share_is_priced_at_its_fraction_of_the_gpu() -> None:
    pool = make_pool("shared", gpus_per_node=1, usd_per_node_hour=8.0, sharing=True)
    job = Job(id="S", request=share(500), duration_s=3600.0, measured=series((60, 0.0)))
    measured = replay([job], Cluster("share.toml", MappingProxyType({"shared": pool})))["measured"]
    assert measured["by_job"]["S"]["gpu_hours"] == {"allocated": 0.5, "measured": 0.5, "idle": 0.5}
    assert measured["by_job"]["S"]["usd"] == {"allocated": 4.0, "idle": 4.0}
    assert measured["by_team"]["(none)"]["jobs"] == 1


def test_a_trace_without_measurements_leaves_the_summary_as_it_was() -> None:
    plain = [Job(id=job.id, request=job.request, duration_s=job.duration_s, labels=job.labels) for job in JOBS]
    assert "measured" not in replay(plain, two_gpus())


def test_a_mean_alone_counts_as_measured_but_cannot_be_judged_idle() -> None:
    job = Job(id="M", request=whole(1), duration_s=3600.0, measured=MeasuredUtilisation(mean_percent=3.0))
    measured = replay([job], two_gpus())["measured"]
    assert measured["jobs_without_series"] == 1
    assert measured["by_job"]["M"]["mean_percent"] == 3.0
    assert measured["by_job"]["M"]["gpu_hours"] == {"allocated": 1.0, "measured": 0.0, "idle": 0.0}


def test_the_same_replay_gives_the_same_section() -> None:
    assert json.dumps(replay(JOBS, two_gpus())["measured"]) == json.dumps(replay(JOBS, two_gpus())["measured"])


def test_a_missing_sample_inside_the_gap_keeps_a_quiet_run_going() -> None:
    samples = [(i * 60.0, 0.0) for i in range(41) if i != 20]  # one scrape missed: 120 s <= the 180 s gap
    time = idle_time(samples, rule_for(60.0), 2460.0)
    assert (time.allocated_ms, time.measured_ms, time.idle_ms) == (2_460_000, 2_460_000, 2_460_000)


def test_a_longer_hole_ends_the_quiet_run_and_is_not_measured() -> None:
    samples = [(i * 60.0, 0.0) for i in [*range(20), *range(25, 45)]]  # 360 s without data: a gap
    time = idle_time(samples, rule_for(60.0), 2700.0)
    assert (time.measured_ms, time.idle_ms) == (2_400_000, 0)  # two 20-minute runs, each under the window


def test_samples_past_the_allocation_are_not_its_own() -> None:
    samples = [(i * 60.0, 0.0) for i in range(60)]
    time = idle_time(samples, rule_for(60.0), 1800.0)
    assert (time.allocated_ms, time.measured_ms, time.idle_ms) == (1_800_000, 1_800_000, 1_800_000)
    assert covered_s(samples[:10], rule_for(60.0), 1800.0) == 600.0


def test_the_rule_follows_the_series_period() -> None:
    assert rule_for(57.0) == IdleRule(period_s=57.0, max_gap_s=171.0)


def test_the_canonical_record_carries_a_series_and_a_mean_both_ways() -> None:
    record = {"id": "x", "duration_s": 180, "gpu_util_mean_percent": 12.5, "gpu_util_percent": [0, None, 37.5],
              "gpu_util_period_s": 57}  # fmt: skip
    job = to_job(record)
    assert job.measured == MeasuredUtilisation(mean_percent=12.5, samples_percent=(0.0, None, 37.5), period_s=57.0)
    assert to_job(to_record(job)) == job
    csv_job = to_job({"id": "x", "duration_s": "180", "gpu_util_percent": "0||37.5", "gpu_util_period_s": "57"})
    assert csv_job.measured == MeasuredUtilisation(samples_percent=(0.0, None, 37.5), period_s=57.0)
    assert to_job({"id": "x", "duration_s": 1}).measured is None
    assert "gpu_util_percent" not in to_record(to_job({"id": "x", "duration_s": 1}))


def refused(record: dict) -> InputError:  # type: ignore[type-arg]
    with pytest.raises(InputError) as caught:
        to_job({"id": "x", "duration_s": 60, **record}, source="jobs.jsonl", line=4)
    assert caught.value.line == 4
    return caught.value


def test_a_series_value_over_100_is_refused() -> None:
    assert refused({"gpu_util_percent": [0, 150]}).field == "gpu_util_percent"


def test_a_series_that_is_not_a_list_is_refused() -> None:
    assert refused({"gpu_util_percent": 5}).field == "gpu_util_percent"


def test_a_mean_below_zero_is_refused() -> None:
    assert refused({"gpu_util_mean_percent": -1}).field == "gpu_util_mean_percent"


def test_a_zero_period_is_refused() -> None:
    assert refused({"gpu_util_percent": [1], "gpu_util_period_s": 0}).field == "gpu_util_period_s"


def test_a_period_without_a_series_is_refused() -> None:
    assert refused({"gpu_util_mean_percent": 3, "gpu_util_period_s": 30}).field == "gpu_util_period_s"


def test_the_terminal_summary_says_the_idle_share_only_when_measured() -> None:
    measured = render_summary(replay(JOBS, two_gpus()))
    assert (
        "  measured    3 jobs: 1.7 of 2.5 allocated GPU-hours idle (under 5 % for 1800 s), $8.33 of $12.50" in measured
    )
    plain = [Job(id=job.id, request=job.request, duration_s=job.duration_s) for job in JOBS]
    assert "measured" not in render_summary(replay(plain, two_gpus()))
