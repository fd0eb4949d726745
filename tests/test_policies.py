"""The bundled plugins, table-driven (kube's plugin tests), and the registry's contract."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import policies
from policies.cost import CheapestPool
from policies.fit import GpuModelFit, GpuShareFit, MigFit, WholeGpuFit
from policies.ordering import Fifo, PriorityThenAge
from policies.packing import LeastAllocated, MostAllocated
from policies.spot import SpotTolerance
from scheduler.decision import Code
from scheduler.model import Capacity, Grant, Job, JobKind, Labels, MigMode, Node, Pool, empty_node
from scheduler.plugin import HOOKS, REQUEST_FIELDS, Cycle, FilterPlugin, Plugin, ScorePlugin
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole

H100 = make_pool("h100", usd_per_node_hour=80.0)
SPOT = make_pool("spot", capacity=Capacity.SPOT, usd_per_node_hour=20.0)
A10G = make_pool("a10g", gpu="A10G", gpus_per_node=4, usd_per_node_hour=5.6, sharing=True)
A100 = make_pool("a100", gpu="A100-40GB", mig_mode=MigMode.DYNAMIC, usd_per_node_hour=22.0)
FIXED = make_pool("fixed", gpu="H100-80GB", gpus_per_node=1, mig_layout="3g.40gb@0,3g.40gb@4")
POOLS = (H100, SPOT, A10G, A100, FIXED)


def node(pool: Pool, *held: tuple[Job, tuple[Grant, ...]]) -> Node:
    made = empty_node(pool, f"{pool.name}-0")
    for job, grants in held:
        made = made.grant(pool, job, grants)
    return made


def cycle() -> Cycle:
    return Cycle(now_s=0.0, snapshot=make_snapshot(*POOLS))


BUSY_H100 = node(H100, (make_job("b", whole(6)), tuple(map(Grant, range(6)))))
FULL_A10G = node(A10G, *((make_job(f"s{i}", share(900, 1)), (Grant(i),)) for i in range(4)))
FULL_A100 = node(A100, (make_job("m", mig_request("7g.40gb", 8)), tuple(Grant(i, 0) for i in range(8))))

FILTER_CASES = [
    ("model-mismatch", GpuModelFit(), make_job(models={"A100-SXM4-40GB"}), node(H100), Code.UNRESOLVABLE),
    ("model-any", GpuModelFit(), make_job(), node(H100), Code.SUCCESS),
    ("model-match", GpuModelFit(), make_job(models={"H100-80GB", "T4-16GB"}), node(H100), Code.SUCCESS),
    ("whole-fits", WholeGpuFit(), make_job(request=whole(2)), BUSY_H100, Code.SUCCESS),
    ("whole-busy", WholeGpuFit(), make_job(request=whole(4)), BUSY_H100, Code.UNSCHEDULABLE),
    ("whole-too-big", WholeGpuFit(), make_job(request=whole(16)), node(H100), Code.UNRESOLVABLE),
    ("whole-on-mig", WholeGpuFit(), make_job(request=whole(1)), node(A100), Code.UNRESOLVABLE),
    ("whole-ignores-share", WholeGpuFit(), make_job(request=share(100)), BUSY_H100, Code.SUCCESS),
    ("share-fits", GpuShareFit(), make_job(request=share(500, 8)), node(A10G), Code.SUCCESS),
    ("share-full", GpuShareFit(), make_job(request=share(200, 1)), FULL_A10G, Code.UNSCHEDULABLE),
    ("share-no-sharing", GpuShareFit(), make_job(request=share(200)), node(H100), Code.UNRESOLVABLE),
    ("share-on-mig", GpuShareFit(), make_job(request=share(200)), node(A100), Code.UNRESOLVABLE),
    ("share-too-much-memory", GpuShareFit(), make_job(request=share(200, 30)), node(A10G), Code.UNRESOLVABLE),
    ("share-ignores-whole", GpuShareFit(), make_job(request=whole(8)), node(H100), Code.SUCCESS),
    ("mig-fits", MigFit(), make_job(request=mig_request("3g.20gb", 2)), node(A100), Code.SUCCESS),
    ("mig-full", MigFit(), make_job(request=mig_request("1g.5gb")), FULL_A100, Code.UNSCHEDULABLE),
    ("mig-off", MigFit(), make_job(request=mig_request("1g.10gb")), node(H100), Code.UNRESOLVABLE),
    ("mig-wrong-profile", MigFit(), make_job(request=mig_request("1g.20gb")), node(A100), Code.UNRESOLVABLE),
    ("mig-fixed-lacks", MigFit(), make_job(request=mig_request("1g.10gb")), node(FIXED), Code.UNRESOLVABLE),
    ("mig-fixed-too-many", MigFit(), make_job(request=mig_request("3g.40gb", 3)), node(FIXED), Code.UNRESOLVABLE),
    ("mig-fixed-fits", MigFit(), make_job(request=mig_request("3g.40gb", 2)), node(FIXED), Code.SUCCESS),
    ("mig-too-many", MigFit(), make_job(request=mig_request("7g.40gb", 9)), node(A100), Code.UNRESOLVABLE),
    ("mig-ignores-whole", MigFit(), make_job(request=whole(1)), node(H100), Code.SUCCESS),
    ("spot-not-preemptible", SpotTolerance(), make_job(), node(SPOT), Code.UNRESOLVABLE),
    ("spot-preemptible", SpotTolerance(), make_job(preemptible=True), node(SPOT), Code.SUCCESS),
    ("on-demand-anyone", SpotTolerance(), make_job(), node(H100), Code.SUCCESS),
]


@pytest.mark.parametrize(("plugin", "job", "target", "want"), [c[1:] for c in FILTER_CASES],
                         ids=[c[0] for c in FILTER_CASES])
def test_filter(plugin: FilterPlugin, job: Job, target: Node, want: Code) -> None:
    status = plugin.filter(cycle(), job, target)
    assert status.code is want, status
    assert bool(status.reasons) == (want is not Code.SUCCESS)


def test_share_and_mig_reasons_say_what_is_missing() -> None:
    status = GpuShareFit().filter(cycle(), make_job(request=share(200, 1)), FULL_A10G)
    assert status.reasons == ("no GPU has 200m and 1024 MiB free (best: 100m, 23552 MiB)",)
    status = MigFit().filter(cycle(), make_job(request=mig_request("1g.20gb")), node(A100))
    assert status.reasons == ("A100-SXM4-40GB has no MIG profile 1g.20gb",)


def test_packing_scores_follow_the_worked_example() -> None:
    pool = make_pool("mixed", sharing=True)
    mixed = node(pool, (make_job("w", whole(3)), (Grant(0), Grant(1), Grant(2))),
                 (make_job("s", share(500)), (Grant(3),)))
    snapshot_cycle = Cycle(now_s=0.0, snapshot=make_snapshot(pool))
    job = make_job(request=whole(2))
    assert MostAllocated().score(snapshot_cycle, job, mixed) == pytest.approx(0.6875)
    assert LeastAllocated().score(snapshot_cycle, job, mixed) == pytest.approx(0.6875)
    assert MostAllocated().score(cycle(), make_job(request=mig_request("3g.20gb")), node(A100)) == pytest.approx(3 / 56)
    assert MostAllocated().score(cycle(), make_job(request=share(250)), node(A10G)) == pytest.approx(0.0625)


def test_cheapest_pool_scores_price_per_gpu_hour() -> None:
    assert CheapestPool().score(cycle(), make_job(), node(H100)) == 10.0
    assert CheapestPool().score(cycle(), make_job(), node(A10G)) == pytest.approx(1.4)


def test_queue_orders() -> None:
    early_low = make_job("a", priority=0, submit_s=1)
    late_high = make_job("b", priority=5, submit_s=9)
    ordered = sorted([early_low, late_high], key=lambda j: PriorityThenAge().sort_key(cycle(), j))
    assert [j.id for j in ordered] == ["b", "a"]
    ordered = sorted([late_high, early_low], key=lambda j: Fifo().sort_key(cycle(), j))
    assert [j.id for j in ordered] == ["a", "b"]


def test_registry_contract() -> None:
    assert len(policies.REGISTRY) == len(set(policies.REGISTRY))
    for name, cls in policies.REGISTRY.items():
        assert name == cls.name == cls.__name__
        assert issubclass(cls, Plugin)
        hooks = [hook for hook, protocol in HOOKS.items() if isinstance(cls(), protocol)]
        assert hooks, f"{name} implements no hook"
        if "filter" in hooks or "score" in hooks:
            assert cls.job_fields is not None, f"{name} should declare the job fields it reads"
        if "score" in hooks:
            assert isinstance(cls.higher_is_better, bool)  # type: ignore[attr-defined]


def test_bundled_profiles_load() -> None:
    assert {"default", "binpack", "cost-greedy"} <= set(policies.bundled_profiles())
    for name in policies.bundled_profiles():
        profile = policies.profile(name)
        assert profile.name == name and profile.description


_ANY_JOB = st.builds(
    Job,
    id=st.sampled_from(["x", "y"]),
    submit_s=st.floats(0, 1e6),
    duration_s=st.floats(0, 1e6),
    priority=st.integers(-5, 5),
    preemptible=st.booleans(),
    checkpoint_interval_s=st.floats(0, 1e4),
    kind=st.sampled_from(list(JobKind)),
    labels=st.builds(Labels, team=st.text(max_size=3)),
)


@settings(max_examples=60)
@given(_ANY_JOB, _ANY_JOB, st.sampled_from([whole(1), whole(4), share(300, 2), mig_request("1g.5gb")]))
def test_plugins_read_only_the_job_fields_they_declare(first: Job, second: Job, request: object) -> None:
    """The Framework memoises verdicts by declared fields; a plugin reading more would be wrong."""
    for cls in policies.REGISTRY.values():
        plugin = cls()
        if not isinstance(plugin, FilterPlugin | ScorePlugin):
            continue
        declared = (REQUEST_FIELDS | (cls.job_fields or frozenset())) - {"request"}
        twin = dataclasses.replace(second, **{name: getattr(first, name) for name in declared}, request=request)
        original = dataclasses.replace(first, request=request)
        for target in (node(H100), node(SPOT), node(A10G), node(A100), BUSY_H100):
            if isinstance(plugin, FilterPlugin):
                assert plugin.filter(cycle(), original, target) == plugin.filter(cycle(), twin, target)
            if isinstance(plugin, ScorePlugin):
                assert plugin.score(cycle(), original, target) == plugin.score(cycle(), twin, target)


@settings(max_examples=60)
@given(_ANY_JOB, st.sampled_from([whole(1), whole(8), whole(16), share(300, 2), share(300, 40), mig_request("1g.5gb"),
                                  mig_request("3g.40gb", 3)]))
def test_unresolvable_answers_hold_for_the_whole_pool(job: Job, request: object) -> None:
    """The Framework skips a pool after one UNRESOLVABLE answer: no busy node may answer otherwise."""
    job = dataclasses.replace(job, request=request)
    pairs = [(node(H100), BUSY_H100), (node(A10G), FULL_A10G), (node(A100), FULL_A100)]
    for cls in policies.REGISTRY.values():
        plugin = cls()
        if not isinstance(plugin, FilterPlugin):
            continue
        for empty, busy in pairs:
            codes = {plugin.filter(cycle(), job, empty).code, plugin.filter(cycle(), job, busy).code}
            assert (Code.UNRESOLVABLE in codes) == (codes == {Code.UNRESOLVABLE}), (cls.name, codes)
