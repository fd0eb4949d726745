"""The simulator: determinism, job life (checkpoints, failures, services), spot, autoscaling, invariants."""

from __future__ import annotations

import filecmp
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import policies
from scheduler.cluster import Cluster, load_cluster
from scheduler.model import Capacity, Job, JobKind
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from simulator.outputs import write_run
from tests.builders import make_pool, random_jobs, whole
from traces.canonical import read_jobs

ROOT = Path(__file__).resolve().parent.parent
TRACE = ROOT / "traces/samples/synth-2days.jsonl"
CLUSTER = ROOT / "traces/samples/elastic-spot-cluster.toml"


def run(jobs: list[Job], cluster: Cluster, profile: str = "cost-greedy", **options: object) -> object:
    return simulate(jobs, cluster, Scheduler(policies.profile(profile)), SimOptions(check=True, **options))  # type: ignore[arg-type]


def one_pool(**overrides: object) -> Cluster:
    pool = make_pool("p", gpus_per_node=8, usd_per_node_hour=8.0, **overrides)  # type: ignore[arg-type]
    return Cluster("c.toml", MappingProxyType({"p": pool}))


def test_same_inputs_and_seed_write_byte_identical_runs_and_seeds_matter(tmp_path: Path) -> None:
    jobs = list(read_jobs(TRACE))
    cluster = load_cluster(CLUSTER)
    for name in ("a", "b"):
        write_run(run(jobs, cluster, "priority", seed=5), tmp_path / name)  # type: ignore[arg-type]
    write_run(run(jobs, cluster, "priority", seed=6), tmp_path / "c")  # type: ignore[arg-type]
    files = ["summary.json", "jobs.csv", "events.jsonl", "timeline.csv"]
    match, mismatch, errors = filecmp.cmpfiles(tmp_path / "a", tmp_path / "b", files, shallow=False)
    assert match == files and not mismatch and not errors
    assert (tmp_path / "a" / "events.jsonl").read_bytes() != (tmp_path / "c" / "events.jsonl").read_bytes()


def test_cost_greedy_spends_less_than_default_on_an_elastic_spot_cluster() -> None:
    jobs = list(read_jobs(TRACE))
    cluster = load_cluster(CLUSTER)
    default = summary(run(jobs, cluster, "default"))  # type: ignore[arg-type]
    greedy = summary(run(jobs, cluster, "cost-greedy"))  # type: ignore[arg-type]
    assert greedy["cost_usd"]["total"] < 0.8 * default["cost_usd"]["total"]
    assert greedy["jobs"]["completed"] == default["jobs"]["completed"] == len(jobs)
    assert greedy["queue_s"]["p95"] <= 1.1 * default["queue_s"]["p95"] + 1
    spot = greedy["cost_usd"]["by_pool"]["h100-spot"]["total"] / greedy["cost_usd"]["total"]
    assert spot > default["cost_usd"]["by_pool"]["h100-spot"]["total"] / default["cost_usd"]["total"]


def test_checkpoints_cost_time_and_jobs_run_at_their_gpu_models_speed() -> None:
    job = Job(id="ck", request=whole(8), duration_s=3000.0, checkpoint_interval_s=1000.0, checkpoint_overhead_s=10.0,
              speedups=(("H100-80GB", 2.0),))
    result = run([job], one_pool())
    # 3,000 reference seconds at 2x: 1,000 s of compute (2,000 s of work), a 10 s checkpoint,
    # then 500 s for the last 1,000 s of work.
    assert result.world.runs["ck"].end_ms == 1_510_000
    events = [name for _, name, data in result.world.log if data.get("job") == "ck"]
    assert events.count("checkpoint") == 1


def test_failed_and_killed_jobs_end_when_the_trace_says_and_services_run_to_their_end() -> None:
    jobs = [
        Job(id="f", request=whole(1), duration_s=100.0, status="failed"),
        Job(id="k", request=whole(1), duration_s=50.0, status="killed"),
        Job(id="s", request=whole(1), duration_s=1000.0, submit_s=10.0, kind=JobKind.SERVICE),
    ]
    result = run(jobs, one_pool())
    runs = result.world.runs
    assert [(runs[i].outcome, runs[i].end_ms) for i in ("f", "k", "s")] == [
        ("failed", 100_000), ("killed", 50_000), ("completed", 1_010_000)]


def test_spot_interruptions_lose_unsaved_work_and_the_autoscaler_replaces_nodes() -> None:
    spot = make_pool("spot", gpus_per_node=8, usd_per_node_hour=4.0, capacity=Capacity.SPOT, nodes=1, max_nodes=2)
    spot = replace(spot, min_nodes=0, notice_s=30.0,
                         provision_delay_s=60.0)
    cluster = Cluster("c.toml", MappingProxyType({"spot": spot}))
    job = Job(id="j", request=whole(8), duration_s=3600.0, preemptible=True)
    result = run([job], cluster, reclaims={"spot-000": 1000.0})
    state = result.world.runs["j"]
    # No checkpoints: the 1,000 s done are lost; a new node arrives 60 s after the loss is known.
    assert state.interruptions == 1 and state.lost_gpu_ms == 8 * 1_000_000
    assert state.end_ms == 1_090_000 + 3_600_000
    names = [data.get("node") for _, name, data in result.world.log if name == "node-add"]
    assert names == ["spot-001"]


def elastic_cluster_and_five_full_node_jobs() -> tuple[Cluster, list[Job]]:
    """One node, up to three, 120 s to boot, 300 s idle release; five jobs of a whole node each."""
    pool = make_pool("od", gpus_per_node=8, usd_per_node_hour=8.0, nodes=1, max_nodes=3)
    pool = replace(pool, min_nodes=1, provision_delay_s=120.0, idle_release_s=300.0)
    jobs = [Job(id=f"j{i}", request=whole(8), duration_s=1000.0) for i in range(5)]
    return Cluster("c.toml", MappingProxyType({"od": pool})), jobs


def test_elastic_pools_grow_to_max_and_release_idle_nodes() -> None:
    cluster, jobs = elastic_cluster_and_five_full_node_jobs()
    result = run(jobs, cluster)
    log = result.world.log
    assert sum(1 for _, name, _ in log if name == "node-add") == 2, "grows to max_nodes, no further"
    # j1, j2 end at 1,120 s; one node is left idle and goes 300 s later. The replay ends with the
    # last job at 2,120 s, before the other nodes' idle delay runs out.
    removed = [(t, data["reason"]) for t, name, data in log if name == "node-remove"]
    assert removed == [(1_420_000, "idle")]
    starts = sorted(t for t, name, _ in log if name == "start")
    assert starts[:3] == [0, 120_000, 120_000]


def test_reserved_pools_are_paid_whether_used_or_not_and_never_released() -> None:
    reserved = make_pool("r", gpus_per_node=8, usd_per_node_hour=3.6, capacity=Capacity.RESERVED, nodes=2)
    result = run([Job(id="j", request=whole(1), duration_s=3600.0)], Cluster("c.toml", MappingProxyType({"r": reserved})))
    document = summary(result)  # type: ignore[arg-type]
    assert document["cost_usd"]["total"] == 7.2 and document["cost_usd"]["idle"] == pytest.approx(7.2 - 0.45)
    assert not [1 for _, name, _ in result.world.log if name == "node-remove"]


def test_round_mode_schedules_on_a_clock() -> None:
    jobs = [Job(id="a", request=whole(1), duration_s=100.0, submit_s=5.0)]
    result = run(jobs, one_pool(), round_s=60.0)
    assert result.world.runs["a"].first_start_ms == 60_000


def test_jobs_that_can_never_fit_end_the_run_unfinished() -> None:
    jobs = [Job(id="big", request=whole(16), duration_s=10.0), Job(id="ok", request=whole(1), duration_s=10.0)]
    document = summary(run(jobs, one_pool()))  # type: ignore[arg-type]
    assert document["jobs"]["unfinished"] == 1 and document["jobs"]["completed"] == 1
    reason = "no pool takes a replica (pool p: WholeGpuFit: replica needs 16 GPUs; node has 8)"
    assert document["jobs"]["unfinished_by_reason"] == {reason: 1}


_JOBS = random_jobs(horizon_s=5000, max_replicas=2, max_size=25)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_JOBS, st.sampled_from(policies.bundled_profiles()), st.integers(0, 3))
def test_invariants_hold_after_every_decision(jobs: list[Job], profile: str, seed: int) -> None:
    """check=True validates each decision and proves the ledger's holders are the GPUs held."""
    od = make_pool("od", gpus_per_node=8, usd_per_node_hour=8.0, nodes=1, max_nodes=3, sharing=True)
    spot = make_pool("spot", gpus_per_node=8, usd_per_node_hour=3.0, capacity=Capacity.SPOT, nodes=1, max_nodes=2)
    spot = replace(spot, interruptions_per_node_hour=1.0,
                         min_nodes=0)
    result = run(jobs, Cluster("c.toml", MappingProxyType({"od": od, "spot": spot})), profile, seed=seed)
    runs = result.world.runs
    assert all(state.outcome == "completed" for state in runs.values())
    result.world.ledger.check()


def test_idle_release_stops_at_min_nodes() -> None:
    cluster, jobs = elastic_cluster_and_five_full_node_jobs()
    jobs.append(Job(id="late", request=whole(1), duration_s=10.0, submit_s=10_000.0))
    result = run(jobs, cluster)
    log = result.world.log
    removed = [t for t, name, data in log if name == "node-remove"]
    assert removed == [1_420_000, 2_300_000], "idle nodes go after 300 s, but never below min_nodes"
    assert result.world.runs["late"].first_start_ms == 10_000_000


def test_a_gang_loses_every_replica_when_one_of_its_spot_nodes_is_taken_back() -> None:
    spot = make_pool("spot", gpus_per_node=8, usd_per_node_hour=4.0, capacity=Capacity.SPOT, nodes=2, max_nodes=2)
    spot = replace(spot, notice_s=60.0)
    cluster = Cluster("c.toml", MappingProxyType({"spot": spot}))
    gang = Job(id="g", request=whole(8), replicas=2, duration_s=3600.0, preemptible=True,
               checkpoint_interval_s=600.0, checkpoint_overhead_s=30.0)
    profile = replace(policies.profile("binpack"), provision=())
    result = simulate([gang], cluster, Scheduler(profile), SimOptions(check=True, reclaims={"spot-000": 1000.0}))
    state = result.world.runs["g"]
    # Checkpointed at 630 s of wall time (600 s of work); at the 1,000 s notice a 30 s checkpoint
    # fits in the 60 s notice, so 970 s of work are kept. The node is gone at 1,060 s; the other
    # node alone cannot hold the gang, so it never restarts.
    assert state.interruptions == 1 and state.saved_ms == 970_000
    assert state.outcome == "" and state.lost_gpu_ms == 0
    stopped_nodes = [data.get("node") for _, name, data in result.world.log if name == "node-remove"]
    assert stopped_nodes == ["spot-000"]
    assert all(not gpu.busy for node in result.world.snapshot.nodes.values() for gpu in node.gpus)


def test_a_preempted_service_loses_no_work_and_still_ends_on_time() -> None:
    from policies.ordering import PriorityThenAge
    from policies.preemption import PriorityPreemption
    from scheduler.profile import Profile

    profile = Profile(name="p", sort=PriorityThenAge(), postfilter=(PriorityPreemption(),))
    service = Job(id="svc", request=whole(8), duration_s=5000.0, preemptible=True, kind=JobKind.SERVICE)
    urgent = Job(id="urgent", request=whole(8), duration_s=1000.0, submit_s=1000.0, priority=9)
    result = simulate([service, urgent], one_pool(), Scheduler(profile), SimOptions(check=True))
    runs = result.world.runs
    assert runs["svc"].preemptions == 1 and runs["svc"].lost_gpu_ms == 0
    assert (runs["urgent"].first_start_ms, runs["urgent"].end_ms) == (1_000_000, 2_000_000)
    assert runs["svc"].end_ms == 5_000_000, "a service runs until its end time, whenever it restarts"


def test_pools_that_start_empty_grow_for_the_first_jobs() -> None:
    pool = replace(make_pool("od", gpus_per_node=8, usd_per_node_hour=8.0, nodes=0, max_nodes=2),
                   provision_delay_s=60.0)
    result = run([Job(id="a", request=whole(8), duration_s=100.0)], Cluster("c.toml", MappingProxyType({"od": pool})))
    assert result.world.runs["a"].end_ms == 160_000


def test_idle_nodes_are_kept_while_a_gang_waits_for_the_pool_to_grow() -> None:
    """With idle release faster than booting, releasing the idle nodes would make a 3-node gang
    wait forever: it would never see three nodes at once."""
    pool = replace(make_pool("od", gpus_per_node=8, usd_per_node_hour=8.0, nodes=2, max_nodes=4),
                   min_nodes=1, provision_delay_s=300.0, idle_release_s=60.0)
    gang = Job(id="g", request=whole(8), replicas=3, duration_s=1000.0)
    result = run([gang], Cluster("c.toml", MappingProxyType({"od": pool})))
    assert result.world.runs["g"].end_ms == 1_300_000
    assert sum(1 for _, name, _ in result.world.log if name == "node-add") == 1, "two idle nodes count against the ask"


def test_a_gang_stopped_on_two_spot_nodes_is_interrupted_once() -> None:
    spot = replace(make_pool("s", gpus_per_node=8, usd_per_node_hour=4.0, capacity=Capacity.SPOT, nodes=2), notice_s=30.0)
    gang = Job(id="g", request=whole(8), replicas=2, duration_s=3600.0, preemptible=True)
    result = run([gang], Cluster("c.toml", MappingProxyType({"s": spot})), "binpack",
                 reclaims={"s-000": 1000.0, "s-001": 1000.0})
    assert result.world.runs["g"].interruptions == 1
