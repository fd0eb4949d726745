"""Synthetic workloads: determinism, the drawn distributions (generous tolerances), spec checks, Gavel's generator."""

from __future__ import annotations

import itertools
import math
import statistics
from collections import Counter
from typing import Any

import pytest

from scheduler.errors import InputError
from scheduler.model import GpuRequest, Job, RequestKind
from traces.gavel import GavelThroughputs, shipped_throughputs
from traces.synth import SynthSpec, gavel_jobs, generate, rate_per_hour

MIXED = SynthSpec(
    jobs=4000,
    jobs_per_hour=120.0,
    gpu_mix={1: 0.5, 2: 0.2, 4: 0.2, 8: 0.1},
    share_fraction=0.2,
    share_milli=(250, 500),
    mig_fraction=0.1,
    mig_mix={"1g.10gb": 0.75, "3g.40gb": 0.25},
    gang_probability=0.5,
    gang_replicas=(2, 4),
    median_duration_s=1800.0,
    duration_sigma=1.2,
    teams={"vision": 3.0, "nlp": 1.0},
    preemptible_share=0.3,
    checkpointable_share=0.4,
    checkpoint_interval_s=600.0,
    priority_mix={0: 0.7, 5: 0.3},
)


@pytest.fixture(scope="module")
def mixed() -> list[Job]:
    return list(generate(MIXED, 7))


def share(jobs: list[Job], test: Any) -> float:
    return sum(1 for job in jobs if test(job)) / len(jobs)


# -- determinism --------------------------------------------------------------------------------


def test_same_seed_same_jobs_other_seed_other_jobs(mixed: list[Job]) -> None:
    assert list(generate(MIXED, 7)) == mixed
    assert list(generate(MIXED, 8)) != mixed
    assert list(gavel_jobs(200, 3, 30.0, True)) == list(gavel_jobs(200, 3, 30.0, True))
    assert list(gavel_jobs(200, 3, 30.0, True)) != list(gavel_jobs(200, 4, 30.0, True))


def test_jobs_are_well_formed(mixed: list[Job]) -> None:
    assert len(mixed) == 4000 and len({job.id for job in mixed}) == 4000
    assert all(a.submit_s < b.submit_s for a, b in itertools.pairwise(mixed))
    assert all(job.duration_s > 0 for job in mixed)


# -- distributions ------------------------------------------------------------------------------


def test_poisson_rate(mixed: list[Job]) -> None:
    hours = mixed[-1].submit_s / 3600
    assert len(mixed) / hours == pytest.approx(120.0, rel=0.1)
    gaps = [b.submit_s - a.submit_s for a, b in itertools.pairwise(mixed)]
    assert statistics.pstdev(gaps) / statistics.fmean(gaps) == pytest.approx(1.0, abs=0.1)  # exponential


def test_diurnal_peak_and_trough() -> None:
    spec = SynthSpec(jobs=6000, arrival="diurnal", jobs_per_hour=100.0, peak_to_trough=4.0, peak_hour=14.0)
    generated = list(generate(spec, 11))
    assert generated[-1].submit_s > 2 * 86400
    jobs = [job for job in generated if job.submit_s < 2 * 86400]  # two whole days
    hour = Counter(int(job.submit_s // 3600) % 24 for job in jobs)
    peak = sum(hour[h] for h in (12, 13, 14, 15))
    trough = sum(hour[h] for h in (0, 1, 2, 3))
    assert 2.7 < peak / trough < 5.0  # 3.7 expected for a 4:1 cosine averaged over the 4-hour windows
    assert len(jobs) / 48 == pytest.approx(100.0, rel=0.1)  # the daily mean is jobs_per_hour
    assert rate_per_hour(spec, 14 * 3600) == pytest.approx(160.0)
    assert rate_per_hour(spec, 2 * 3600) == pytest.approx(40.0)


def test_lognormal_median_and_spread(mixed: list[Job]) -> None:
    durations = [job.duration_s for job in mixed]
    assert statistics.median(durations) == pytest.approx(1800.0, rel=0.1)
    logs = [math.log(d) for d in durations]
    assert statistics.pstdev(logs) == pytest.approx(1.2, rel=0.1)


def test_size_mix(mixed: list[Job]) -> None:
    kinds = Counter(job.request.kind for job in mixed)
    assert kinds[RequestKind.SHARE] / 4000 == pytest.approx(0.2, abs=0.03)
    assert kinds[RequestKind.MIG] / 4000 == pytest.approx(0.1, abs=0.03)
    whole = [job for job in mixed if job.request.kind is RequestKind.WHOLE]
    sizes = Counter(job.request.gpus for job in whole)
    for gpus, probability in MIXED.gpu_mix.items():
        assert sizes[gpus] / len(whole) == pytest.approx(probability, abs=0.03)
    assert {job.request.milli for job in mixed if job.request.kind is RequestKind.SHARE} == {250, 500}
    migs = [job.request.mig_profile for job in mixed if job.request.kind is RequestKind.MIG]
    assert Counter(migs)["1g.10gb"] / len(migs) == pytest.approx(0.75, abs=0.08)
    eights = [job for job in whole if job.request.gpus == 8]
    assert share(eights, lambda job: job.replicas > 1) == pytest.approx(0.5, abs=0.12)
    assert {job.replicas for job in mixed if job.request.gpus != 8} == {1}
    assert {job.replicas for job in eights} == {1, 2, 4}


def test_labels_and_policies(mixed: list[Job]) -> None:
    assert share(mixed, lambda job: job.labels.team == "vision") == pytest.approx(0.75, abs=0.03)
    assert share(mixed, lambda job: job.preemptible) == pytest.approx(0.3, abs=0.03)
    assert share(mixed, lambda job: job.priority == 5) == pytest.approx(0.3, abs=0.03)
    checkpointed = [job for job in mixed if job.checkpointable]
    assert len(checkpointed) / 4000 == pytest.approx(0.4, abs=0.03)
    assert {(j.checkpoint_interval_s, j.checkpoint_overhead_s, j.restore_s) for j in checkpointed} == {(600.0, 30.0, 60.0)}
    assert {j.restore_s for j in mixed if not j.checkpointable} == {0.0}


# -- spec checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"jobs": -1}, "jobs"),
        ({"arrival": "bursty"}, "arrival"),
        ({"jobs_per_hour": 0.0}, "jobs_per_hour"),
        ({"jobs_per_hour": math.inf}, "jobs_per_hour"),
        ({"peak_to_trough": 0.5}, "peak_to_trough"),
        ({"peak_hour": 24.0}, "peak_hour"),
        ({"gpu_mix": {1: 0.5, 2: 0.4}}, "gpu_mix"),
        ({"gpu_mix": {0: 1.0}}, "gpu_mix"),
        ({"gpu_mix": {}}, "gpu_mix"),
        ({"share_fraction": 1.5}, "share_fraction"),
        ({"share_fraction": 0.6, "mig_fraction": 0.6}, "mig_fraction"),
        ({"share_milli": (1000,)}, "share_milli"),
        ({"share_milli": ()}, "share_milli"),
        ({"mig_mix": {"9g.1tb": 1.0}}, "mig_mix"),
        ({"mig_mix": {"1g.10gb": 0.5}}, "mig_mix"),
        ({"gang_replicas": (1,)}, "gang_replicas"),
        ({"median_duration_s": 0.0}, "median_duration_s"),
        ({"duration_sigma": -1.0}, "duration_sigma"),
        ({"teams": {}}, "teams"),
        ({"teams": {"a": 0.0}}, "teams"),
        ({"preemptible_share": -0.1}, "preemptible_share"),
        ({"checkpoint_interval_s": 0.0}, "checkpoint_interval_s"),
        ({"priority_mix": {0: 0.9}}, "priority_mix"),
        ({"priority_mix": {0.5: 1.0}}, "priority_mix"),
    ],
)
def test_bad_specs_name_the_field(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InputError) as caught:
        SynthSpec(**changes)
    assert caught.value.field == field


def test_probabilities_add_up_within_tolerance() -> None:
    spec = SynthSpec(gpu_mix={1: 0.5, 2: 0.5 + 1e-12})
    assert sum(spec.gpu_mix.values()) != 1.0 and len(list(generate(spec, 0))) == 1000
    with pytest.raises(InputError, match="add up to 1"):
        SynthSpec(gpu_mix={1: 0.5, 2: 0.5 + 1e-6})


def test_spec_does_not_follow_later_changes_to_its_inputs() -> None:
    teams = {"a": 1.0}
    spec = SynthSpec(teams=teams)
    teams["b"] = 1.0
    assert dict(spec.teams) == {"a": 1.0}


# -- Gavel's generator --------------------------------------------------------------------------


def test_gavel_durations_arrivals_and_types() -> None:
    jobs = list(gavel_jobs(4000, 1, 60.0, False))
    durations = [job.duration_s for job in jobs]
    assert min(durations) >= 60 * 10**1.5 and max(durations) <= 60 * 10**4
    assert share(jobs, lambda job: job.duration_s < 60 * 10**3) == pytest.approx(0.8, abs=0.03)
    assert len(jobs) / (jobs[-1].submit_s / 3600) == pytest.approx(60.0, rel=0.1)
    assert {job.request for job in jobs} == {GpuRequest(gpus=1)}
    types = Counter(job.labels.model for job in jobs)
    assert set(types) == set(shipped_throughputs().job_types())
    assert max(types.values()) < 2 * min(types.values())  # uniform over 26 types, about 154 each


def test_gavel_scale_factors_and_speedups() -> None:
    table = shipped_throughputs()
    jobs = list(gavel_jobs(4000, 2, 60.0, True))
    sizes = Counter(job.request.gpus for job in jobs)
    for gpus, probability in {1: 0.7, 2: 0.1, 4: 0.15, 8: 0.05}.items():
        assert sizes[gpus] / len(jobs) == pytest.approx(probability, abs=0.03)
    for job in jobs:
        timing = table.timing(job.labels.model, job.request.gpus)
        assert timing is not None  # the job type was redrawn until it runs at its scale factor
        assert (job.speedups, job.gpu_models, job.replicas) == (timing.speedups, timing.gpu_models, 1)
    assert not any(job.labels.model == "A3C" and job.request.gpus > 1 for job in jobs)


def test_gavel_generator_checks_its_arguments() -> None:
    with pytest.raises(InputError) as caught:
        list(gavel_jobs(10, 0, 0.0, False))
    assert caught.value.field == "jobs_per_hour"
    single = GavelThroughputs.from_json({"v100": {"('A3C', 1)": {"null": 2.0}}}, "single")
    assert {job.labels.model for job in gavel_jobs(5, 0, 10.0, False, single)} == {"A3C"}
    with pytest.raises(InputError, match="scale factor 2"):
        list(gavel_jobs(5, 0, 10.0, True, single))
