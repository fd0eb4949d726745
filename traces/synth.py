"""Seeded synthetic workloads: jobs drawn from a spec, and Gavel's generated job stream.

Both generators are pure functions of their arguments: every draw comes from one
`random.Random(seed)`, in a fixed order, so the same spec and seed give identical jobs.

`generate(spec, seed)` draws `spec.jobs` jobs. Arrivals are a Poisson process at
`jobs_per_hour`, or, for "diurnal", a non-homogeneous one whose rate follows a 24-hour cosine
peaking at `peak_hour` with `peak_to_trough` between its highest and lowest rate and the same
daily mean; it is sampled by thinning (Lewis and Shedler). Each job is then a GPU share
(`share_fraction`, milli drawn uniformly from `share_milli`), one MIG instance (`mig_fraction`,
profile from `mig_mix`) or whole GPUs from `gpu_mix`; an 8-GPU job is a gang of
`gang_replicas` (drawn uniformly) with probability `gang_probability`. Durations are lognormal
with median `median_duration_s` and shape `duration_sigma`.

`gavel_jobs(...)` re-implements Gavel's `generate_job` (scheduler/utils.py, stanford-futuredata/gavel):
Poisson arrivals, job type uniform over the table's job types, duration on the V100 60 x 10^U(1.5,3) s
with probability 0.8 else 60 x 10^U(3,4) s, and with multi_gpu a scale factor of 1/2/4/8 GPUs with
probability 0.7/0.1/0.15/0.05 (the job type redrawn until that scale factor has a throughput).
Gavel's optional priority weights and SLOs are not drawn.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from types import MappingProxyType
from typing import TypeVar

from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from scheduler.model import FULL_GPU_MILLI, GpuRequest, Job, Labels, RequestKind
from traces.gavel import GavelThroughputs, shipped_throughputs
from traces.philly import gang

ARRIVALS = ("poisson", "diurnal")
DAY_S = 24 * 3600.0
TOLERANCE = 1e-9
GAVEL_SCALE_FACTORS: Mapping[int, float] = MappingProxyType({1: 0.7, 2: 0.1, 4: 0.15, 8: 0.05})
T = TypeVar("T")


def _frozen(items: Mapping[T, float]) -> Mapping[T, float]:
    return MappingProxyType(dict(items))


@dataclass(frozen=True, slots=True, kw_only=True)
class SynthSpec:
    """What a synthetic workload looks like; checked when made (InputError naming the field).

    Mixes map a value to its probability (adding up to 1 within 1e-9); `teams` maps a team to a
    relative weight. `share_fraction` and `mig_fraction` are the shares of jobs asking for a GPU
    share or one MIG instance; the rest ask for whole GPUs from `gpu_mix`. `peak_to_trough`,
    `peak_hour` (0..24, from the trace start) apply to "diurnal" arrivals only.
    """

    jobs: int = 1000
    arrival: str = "poisson"
    jobs_per_hour: float = 60.0
    peak_to_trough: float = 3.0
    peak_hour: float = 14.0
    gpu_mix: Mapping[int, float] = field(default_factory=lambda: _frozen({1: 0.6, 2: 0.15, 4: 0.15, 8: 0.1}))
    share_fraction: float = 0.0
    share_milli: tuple[int, ...] = (250, 500)
    mig_fraction: float = 0.0
    mig_mix: Mapping[str, float] = field(default_factory=lambda: _frozen({"1g.10gb": 0.5, "3g.40gb": 0.5}))
    gang_probability: float = 0.0
    gang_replicas: tuple[int, ...] = (2, 4)
    median_duration_s: float = 3600.0
    duration_sigma: float = 1.0
    teams: Mapping[str, float] = field(default_factory=lambda: _frozen({"team-a": 1.0}))
    preemptible_share: float = 0.0
    checkpointable_share: float = 0.0
    checkpoint_interval_s: float = 1800.0
    checkpoint_overhead_s: float = 30.0
    restore_s: float = 60.0
    priority_mix: Mapping[int, float] = field(default_factory=lambda: _frozen({0: 1.0}))

    def __post_init__(self) -> None:
        for name in ("gpu_mix", "mig_mix", "teams", "priority_mix"):
            object.__setattr__(self, name, _frozen(getattr(self, name)))
        self._check_arrivals()
        self._check_request_mix()
        self._check_shares()
        self._check_mig_mix()
        if not self.gang_replicas:
            raise InputError("needs at least one gang size", field="gang_replicas")
        for replicas in self.gang_replicas:
            _whole("gang_replicas", replicas, least=2)
        _number("median_duration_s", self.median_duration_s, above=0.0)
        _number("duration_sigma", self.duration_sigma, least=0.0)
        self._check_teams()
        _number("checkpoint_interval_s", self.checkpoint_interval_s, above=0.0)
        _number("checkpoint_overhead_s", self.checkpoint_overhead_s, least=0.0)
        _number("restore_s", self.restore_s, least=0.0)
        _distribution("priority_mix", self.priority_mix)
        for priority in self.priority_mix:
            _whole("priority_mix", priority, least=-(1 << 31))

    def _check_arrivals(self) -> None:
        """The job count and arrival process checked."""
        _whole("jobs", self.jobs, least=0)
        if self.arrival not in ARRIVALS:
            raise InputError(f"must be one of {', '.join(ARRIVALS)}, got {self.arrival!r}", field="arrival")
        _number("jobs_per_hour", self.jobs_per_hour, above=0.0)
        _number("peak_to_trough", self.peak_to_trough, least=1.0)
        _number("peak_hour", self.peak_hour, least=0.0)
        if self.peak_hour >= 24:
            raise InputError(f"must be an hour of the day, 0 <= hour < 24, got {self.peak_hour!r}", field="peak_hour")

    def _check_request_mix(self) -> None:
        """The whole-GPU mix and the probabilities of each kind of job checked."""
        _distribution("gpu_mix", self.gpu_mix)
        for gpus in self.gpu_mix:
            _whole("gpu_mix", gpus, least=1)
        for name in ("share_fraction", "mig_fraction", "gang_probability", "preemptible_share", "checkpointable_share"):
            _probability(name, getattr(self, name))
        if self.share_fraction + self.mig_fraction > 1 + TOLERANCE:
            raise InputError("share_fraction + mig_fraction must be at most 1", field="mig_fraction")

    def _check_shares(self) -> None:
        """The share sizes checked: at least one, each a part of a GPU."""
        if not self.share_milli:
            raise InputError("needs at least one share size", field="share_milli")
        for milli in self.share_milli:
            _whole("share_milli", milli, least=1)
            if milli >= FULL_GPU_MILLI:
                raise InputError(f"a share is 1..{FULL_GPU_MILLI - 1} milli, got {milli}", field="share_milli")

    def _check_mig_mix(self) -> None:
        """The MIG profile mix checked: a distribution over profiles the catalog knows."""
        _distribution("mig_mix", self.mig_mix)
        for profile in self.mig_mix:
            if profile not in _mig_profiles():
                raise InputError(f"unknown MIG profile {profile!r}", field="mig_mix")

    def _check_teams(self) -> None:
        """The team weights checked: named teams, weights >= 0 adding up to more than 0."""
        if not self.teams or any(not team for team in self.teams):
            raise InputError("needs at least one team, each with a name", field="teams")
        for weight in self.teams.values():
            _number("teams", weight, least=0.0)
        if sum(self.teams.values()) <= 0:
            raise InputError("the team weights add up to 0", field="teams")


@cache
def _mig_profiles() -> frozenset[str]:
    catalog = default_catalog()
    return frozenset(name for model in catalog.models.values() if model.mig for name in model.mig.profiles)


def _number(name: str, value: float, *, least: float | None = None, above: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InputError(f"must be a finite number, got {value!r}", field=name)
    if least is not None and value < least:
        raise InputError(f"must be >= {least:g}, got {value!r}", field=name)
    if above is not None and value <= above:
        raise InputError(f"must be > {above:g}, got {value!r}", field=name)


def _whole(name: str, value: object, *, least: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise InputError(f"must be a whole number >= {least}, got {value!r}", field=name)


def _probability(name: str, value: float) -> None:
    _number(name, value, least=0.0)
    if value > 1:
        raise InputError(f"must be a probability, 0..1, got {value!r}", field=name)


def _distribution(name: str, mix: Mapping[T, float]) -> None:
    if not mix:
        raise InputError("needs at least one entry", field=name)
    for value in mix.values():
        _probability(name, value)
    if abs(sum(mix.values()) - 1.0) > TOLERANCE:
        raise InputError(f"probabilities must add up to 1, got {sum(mix.values())!r}", field=name)


def _pick(rng: random.Random, mix: Mapping[T, float]) -> T:
    """One key of `mix`, drawn with its weight (one uniform draw)."""
    keys: Sequence[T] = list(mix)
    return rng.choices(keys, weights=[mix[key] for key in keys])[0]


def rate_per_hour(spec: SynthSpec, time_s: float) -> float:
    """The arrival rate (jobs/h) of `spec` at `time_s` seconds from the start."""
    if spec.arrival != "diurnal":
        return spec.jobs_per_hour
    swing = (spec.peak_to_trough - 1) / (spec.peak_to_trough + 1)
    return spec.jobs_per_hour * (1 + swing * math.cos(2 * math.pi * (time_s - spec.peak_hour * 3600.0) / DAY_S))


def _arrivals(spec: SynthSpec, rng: random.Random) -> Iterator[float]:
    """Arrival times (s): Poisson, or diurnal by thinning a Poisson process at the peak rate."""
    peak_per_hour = 2 * spec.jobs_per_hour * spec.peak_to_trough / (spec.peak_to_trough + 1)
    if spec.arrival != "diurnal":
        peak_per_hour = spec.jobs_per_hour
    now_s = 0.0
    while True:
        now_s += rng.expovariate(peak_per_hour / 3600.0)
        if spec.arrival != "diurnal" or rng.random() * peak_per_hour <= rate_per_hour(spec, now_s):
            yield now_s


def _request(spec: SynthSpec, rng: random.Random) -> tuple[GpuRequest, int]:
    kind = rng.random()
    if kind < spec.share_fraction:
        return GpuRequest(kind=RequestKind.SHARE, milli=rng.choice(spec.share_milli)), 1
    if kind < spec.share_fraction + spec.mig_fraction:
        return GpuRequest(kind=RequestKind.MIG, mig_profile=_pick(rng, spec.mig_mix)), 1
    gpus = _pick(rng, spec.gpu_mix)
    if gpus == 8 and rng.random() < spec.gang_probability:
        return GpuRequest(gpus=gpus), rng.choice(spec.gang_replicas)
    return GpuRequest(gpus=gpus), 1


def generate(spec: SynthSpec, seed: int) -> Iterator[Job]:
    """`spec.jobs` jobs drawn from `spec` with `seed`; the same arguments give the same jobs."""
    rng = random.Random(seed)
    arrivals = _arrivals(spec, rng)
    for index in range(spec.jobs):
        submit_s = next(arrivals)
        request, replicas = _request(spec, rng)
        duration_s = rng.lognormvariate(math.log(spec.median_duration_s), spec.duration_sigma)
        team = _pick(rng, spec.teams)
        priority = _pick(rng, spec.priority_mix)
        preemptible = rng.random() < spec.preemptible_share
        checkpointable = rng.random() < spec.checkpointable_share
        yield Job(
            id=f"synth-{index}",
            request=request,
            submit_s=submit_s,
            duration_s=duration_s,
            replicas=replicas,
            priority=priority,
            preemptible=preemptible,
            checkpoint_interval_s=spec.checkpoint_interval_s if checkpointable else 0.0,
            checkpoint_overhead_s=spec.checkpoint_overhead_s if checkpointable else 0.0,
            restore_s=spec.restore_s if checkpointable else 0.0,
            labels=Labels(team=team),
        )


def gavel_duration_s(rng: random.Random) -> float:
    """Gavel's "Philly" job length on the V100: 60 x 10^U(1.5,3) s (p = 0.8), else 60 x 10^U(3,4) s."""
    if rng.random() >= 0.8:
        return 60 * 10 ** rng.uniform(3, 4)
    return 60 * 10 ** rng.uniform(1.5, 3)


def gavel_jobs(
    count: int, seed: int, jobs_per_hour: float, multi_gpu: bool, throughputs: GavelThroughputs | None = None
) -> Iterator[Job]:
    """`count` jobs as Gavel's simulator generates them, timed by `throughputs` (default: the shipped table)."""
    _whole("count", count, least=0)
    _number("jobs_per_hour", jobs_per_hour, above=0.0)
    table = throughputs or shipped_throughputs()
    job_types = table.job_types()
    for scale_factor in GAVEL_SCALE_FACTORS if multi_gpu else (1,):
        if not table.job_types(scale_factor):
            raise InputError(f"no job type has a V100 throughput at scale factor {scale_factor}", source=table.source)
    rng = random.Random(seed)
    submit_s = 0.0
    for index in range(count):
        submit_s += rng.expovariate(jobs_per_hour / 3600.0)
        scale_factor = _pick(rng, GAVEL_SCALE_FACTORS) if multi_gpu else 1
        duration_s = gavel_duration_s(rng)
        timing = None
        while timing is None:  # Gavel redraws the job type until it runs at this scale factor
            job_type = rng.choice(job_types)
            timing = table.timing(job_type, scale_factor)
        replicas, per_replica = gang(scale_factor)
        request = GpuRequest(gpus=per_replica)
        yield Job(
            id=f"gavel-{index}",
            request=request,
            submit_s=submit_s,
            duration_s=duration_s,
            replicas=replicas,
            gpu_models=timing.gpu_models,
            labels=Labels(model=job_type),
            speedups=timing.speedups,
        )
