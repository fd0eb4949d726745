"""Jobs a cluster can never run: the survey before a replay, its CLI lines, and the reasons after.

Every expected reason below is worked out by hand from the filters' words (policies/fit.py,
policies/spot.py) and the cluster: a new node of each pool at its largest, max_nodes of them.
"""

from __future__ import annotations

import csv
import json
import time
import tracemalloc
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import pytest

import fleetsched
import policies
from fleetsched.cli import main
from policies.ordering import PriorityThenAge
from scheduler.cluster import Cluster
from scheduler.decision import OK, Grant, Status
from scheduler.errors import InputError
from scheduler.feasibility import MAX_EXAMPLES, RUNNING, count_by_reason, survey, unfinished_reasons
from scheduler.framework import Framework
from scheduler.model import Capacity, Job, MigMode, Node, Placement, Pool, ReplicaPlacement
from scheduler.plugin import Cycle, Plugin
from scheduler.profile import Profile
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole

DEFAULT = policies.profile("default")


def cluster(*pools: Pool) -> Cluster:
    return Cluster("c.toml", MappingProxyType({pool.name: pool for pool in pools}))


def reasons(jobs: list[Job], where: Cluster) -> dict[str, list[str]]:
    """reason -> the ids the survey lists for it."""
    found = survey(iter(jobs), where, DEFAULT)
    assert found.jobs == len(jobs)
    return {group.reason: list(group.examples) for group in found.groups}


V100 = make_pool("v100", gpu="V100-16GB", nodes=1, max_nodes=2)
P100 = make_pool("p100", gpu="P100-16GB", nodes=1)


SPOT = replace(make_pool("spot", gpu="H100-80GB", nodes=1, capacity=Capacity.SPOT), interruptions_per_node_hour=1.0)


def test_a_long_job_without_checkpoints_that_only_spot_pools_take_may_never_finish() -> None:
    """e^(1 take-back per hour x 5 hours) = 148 attempts: past MANY_ATTEMPTS (100); 4 hours is 55."""
    jobs = [make_job("long", whole(1), preemptible=True, duration_s=5 * 3600.0),
            make_job("short", whole(1), preemptible=True, duration_s=4 * 3600.0),
            replace(make_job("saved", whole(1), preemptible=True, duration_s=50 * 3600.0), checkpoint_interval_s=600.0),
            make_job("gang", whole(8), replicas=2, preemptible=True, duration_s=3 * 3600.0)]  # 2 nodes: 2 per hour
    found = survey(iter(jobs), cluster(replace(SPOT, max_nodes=2)), DEFAULT)
    assert found.groups == ()  # all can run: --strict lets them through
    (group,) = found.risky
    assert group.examples == ("long", "gang") and group.count == 2
    assert group.reason == ("keeps no checkpoint and only spot pools take it (pool spot: takes nodes back 1 times per "
                            "node-hour): each take-back restarts it from the start, and a job this long needs 100 "
                            "attempts or more on average")
    # a pool that never takes nodes back takes it too: nothing to warn of
    on_demand = make_pool("od", gpu="H100-80GB", nodes=1)
    assert survey(iter(jobs), cluster(SPOT, on_demand), DEFAULT).risky == ()


def test_a_share_on_pools_without_sharing_can_never_run() -> None:
    jobs = [make_job("s1", share(300)), make_job("s2", share(300)), make_job("whole", whole(1))]
    assert reasons(jobs, cluster(V100, P100)) == {
        "no pool takes a replica (pool v100: GpuShareFit: pool v100 does not share GPUs; "
        "pool p100: GpuShareFit: pool p100 does not share GPUs)": ["s1", "s2"],
    }
    assert reasons(jobs, cluster(V100, make_pool("t4", gpu="T4", gpus_per_node=1, sharing=True))) == {}


def test_a_mig_profile_the_catalog_knows_but_no_pool_offers_can_never_run() -> None:
    mig = make_pool("a100", gpu="A100-80GB", mig_mode=MigMode.DYNAMIC)
    jobs = [make_job("a30-profile", mig_request("1g.6gb")), make_job("a100-profile", mig_request("1g.10gb"))]
    assert reasons(jobs, cluster(V100, mig)) == {
        "no pool takes a replica (pool v100: MigFit: GPUs are not in MIG mode; 1g.6gb is not offered; "
        "pool a100: MigFit: A100-80GB has no MIG profile 1g.6gb)": ["a30-profile"],
    }


def test_more_gpus_than_a_node_has_can_never_run_and_pools_saying_the_same_are_merged() -> None:
    jobs = [make_job("nine", whole(9)), make_job("eight", whole(8))]
    assert reasons(jobs, cluster(V100, P100)) == {
        "no pool takes a replica (pools v100, p100: WholeGpuFit: replica needs 9 GPUs; node has 8)": ["nine"],
    }


def test_a_gang_larger_than_the_cluster_at_max_nodes_can_never_run_one_that_fits_when_grown_can() -> None:
    elastic = make_pool("h100", nodes=1, max_nodes=3)  # 1 node now, 3 at most
    jobs = [
        make_job("grown-3", whole(8), replicas=3),  # fits only once the pool has grown to 3 nodes
        make_job("grown-6", whole(4), replicas=6),  # 2 replicas per node x 3 nodes
        make_job("gang-4", whole(8), replicas=4),
        make_job("gang-7", whole(4), replicas=7),
    ]
    assert reasons(jobs, cluster(elastic)) == {
        "gang of 4 x 8 GPUs; the cluster at max_nodes holds 3 (pool h100: 1 per node x 3 nodes)": ["gang-4"],
        "gang of 7 x 4 GPUs; the cluster at max_nodes holds 6 (pool h100: 2 per node x 3 nodes)": ["gang-7"],
    }


def test_a_gang_counts_the_replica_slots_of_every_pool_that_takes_it_and_only_those() -> None:
    spot = make_pool("spot", capacity=Capacity.SPOT, nodes=0, max_nodes=4)
    on_demand = make_pool("od", nodes=1, max_nodes=2)
    jobs = [
        make_job("preemptible-6", whole(8), replicas=6, preemptible=True),  # 2 on-demand + 4 spot
        make_job("steady-2", whole(8), replicas=2),
        make_job("steady-3", whole(8), replicas=3),  # spot will not take it
    ]
    assert reasons(jobs, cluster(on_demand, spot)) == {
        "gang of 3 x 8 GPUs; the cluster at max_nodes holds 2 (pool od: 1 per node x 2 nodes; "
        "pool spot: SpotTolerance: spot node; job is not preemptible)": ["steady-3"],
    }


def test_a_pool_that_takes_the_job_but_has_no_node_to_grow_holds_nothing() -> None:
    empty = make_pool("empty", nodes=0, max_nodes=0)
    assert reasons([make_job("one", whole(1))], cluster(empty)) == {
        "gang of 1 x 1 GPU; the cluster at max_nodes holds 0 (pool empty: 1 per node x 0 nodes)": ["one"],
    }


def test_groups_count_every_job_keep_a_few_ids_and_put_the_largest_first() -> None:
    jobs = [make_job(f"nine-{n}", whole(9)) for n in range(8)] + [make_job("share", share(300))]
    found = survey(iter(jobs), cluster(V100), DEFAULT)
    assert (found.jobs, found.unplaceable) == (9, 9)
    assert [(group.count, group.examples) for group in found.groups] == [
        (8, tuple(f"nine-{n}" for n in range(MAX_EXAMPLES))), (1, ("share",)),
    ]


class NoTeamX(Plugin):
    """A filter reading a field it does not declare: every job is its own shape."""

    name = "NoTeamX"

    def filter(self, cycle: Cycle, job: Job, node: Node) -> Status:
        return Status.unresolvable("team x has no GPUs") if job.labels.team == "x" else OK


def test_a_filter_reading_any_field_is_asked_about_every_job() -> None:
    profile = Profile(name="nosy", sort=PriorityThenAge(), filter=(NoTeamX(),))
    jobs = [make_job("x-1", team="x"), make_job("y-1", team="y"), make_job("x-2", team="x")]
    found = survey(iter(jobs), cluster(V100), profile)
    assert [(group.reason, group.examples) for group in found.groups] == [
        ("no pool takes a replica (pool v100: NoTeamX: team x has no GPUs)", ("x-1", "x-2")),
    ]


def _stream(count: int) -> Iterator[Job]:
    for n in range(count):
        yield make_job(f"job-{n}", whole(9) if n % 4 == 0 else whole(1 + n % 3))


def test_the_survey_streams_a_one_shot_iterator_once_per_shape(monkeypatch: pytest.MonkeyPatch) -> None:
    asked: list[str] = []
    evaluate = Framework.evaluate

    def counting(self: Framework, cycle: object, job: Job, node: object) -> object:
        asked.append(job.id)
        return evaluate(self, cycle, job, node)  # type: ignore[arg-type]

    monkeypatch.setattr(Framework, "evaluate", counting)
    jobs = _stream(10_000)
    started = time.perf_counter()
    found = survey(jobs, cluster(V100), DEFAULT)
    assert time.perf_counter() - started < 5.0
    assert next(jobs, None) is None, "read to the end"
    assert (found.jobs, found.unplaceable) == (10_000, 2_500)
    assert found.groups[0].examples == ("job-0", "job-4", "job-8", "job-12", "job-16")
    # Four shapes (9, 1, 2, 3 GPUs), one pool: one new-node question each.
    assert sorted(asked) == ["job-0", "job-1", "job-2", "job-3"]


def test_the_survey_keeps_no_job_it_has_seen() -> None:
    """Memory stays flat: 20,000 jobs held would take megabytes; the survey keeps counts."""
    survey(_stream(100), cluster(V100), DEFAULT)  # warm the imports and caches of the first call
    tracemalloc.start()
    try:
        found = survey(_stream(20_000), cluster(V100), DEFAULT)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert found.unplaceable == 5_000
    assert peak < 500_000, f"peak {peak:,} bytes"


def test_unknown_mig_profile_is_a_trace_error_with_file_line_and_field(tmp_path: Path) -> None:
    trace = tmp_path / "t.jsonl"
    trace.write_text('{"id": "a", "duration_s": 1, "mig_profile": "1g.10gb"}\n'
                     '{"id": "b", "duration_s": 1, "mig_profile": "9g.99gb"}\n')
    with pytest.raises(InputError) as raised:
        fleetsched.survey(trace, cluster(V100))
    assert str(raised.value).startswith(f"{trace}:2: mig_profile: no GPU in the catalog has MIG profile '9g.99gb'; known: ")


# After a run ------------------------------------------------------------------------------------

CLUSTER_TOML = """
[[pool]]
name = "h100"
gpu = "H100-80GB"
gpus_per_node = 8
usd_per_node_hour = 10.0
nodes = 1

[[pool]]
name = "a100"
gpu = "A100-80GB"
gpus_per_node = 8
usd_per_node_hour = 10.0
nodes = 0
max_nodes = 1
"""
# The default profile's filters and scores, without provisioning: the a100 pool never grows.
NO_SCALING = """
placer = "greedy"
sort = "PriorityThenAge"
filter = ["GpuModelFit", "WholeGpuFit", "GpuShareFit", "MigFit", "SpotTolerance"]
score = [{ name = "LeastAllocated", weight = 1 }]
"""
TRACE = [
    {"id": "fits", "submit_s": 0, "duration_s": 60},
    {"id": "share-1", "submit_s": 1, "duration_s": 60, "gpu_milli": 500},
    {"id": "share-2", "submit_s": 2, "duration_s": 60, "gpu_milli": 500},
    {"id": "nine", "submit_s": 3, "duration_s": 60, "gpus": 9},
    {"id": "wants-a100", "submit_s": 4, "duration_s": 60, "gpu_models": ["A100-80GB"]},
    {"id": "gang-2", "submit_s": 5, "duration_s": 60, "gpus": 8, "replicas": 2},
]
SHARE = ("no pool takes a replica (pool h100: GpuShareFit: pool h100 does not share GPUs; "
         "pool a100: GpuShareFit: pool a100 does not share GPUs)")
NINE = "no pool takes a replica (pools h100, a100: WholeGpuFit: replica needs 9 GPUs; node has 8)"
# Both would run once the a100 pool had its node; without provisioning they wait on the h100 node.
WANTS_A100 = ("waiting when the replay ended: no node fits (pool h100: GpuModelFit: node has H100-80GB; "
              "job accepts A100-80GB; pool a100: no nodes)")
GANG = "waiting when the replay ended: Gang: gang of 2 replicas; 1 fit at once (1 node fits one) (pool a100: no nodes)"


@pytest.fixture
def inputs(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "cluster.toml").write_text(CLUSTER_TOML)
    (tmp_path / "noscale.toml").write_text(NO_SCALING)
    (tmp_path / "trace.jsonl").write_text("".join(json.dumps(record) + "\n" for record in TRACE))
    return {"--trace": str(tmp_path / "trace.jsonl"), "--cluster": str(tmp_path / "cluster.toml"),
            "--profile": str(tmp_path / "noscale.toml")}


def argv(verb: str, inputs: dict[str, str], out: Path, *extra: str) -> list[str]:
    return [verb, *[item for pair in inputs.items() for item in pair], "--out", str(out), *extra]


def test_simulate_lists_the_jobs_that_can_never_run_then_runs(
    tmp_path: Path, inputs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv("simulate", inputs, tmp_path / "run")) == 0
    assert capsys.readouterr().err.splitlines() == [
        f"fleetsched: 2 jobs can never run: {SHARE}: share-1, share-2",
        f"fleetsched: 1 job can never run: {NINE}: nine",
        "fleetsched: 3 of 6 jobs can never run on cluster.toml; they will end unfinished "
        "(--strict makes this an error)",
    ]
    rows = {row["id"]: row for row in csv.DictReader((tmp_path / "run" / "jobs.csv").open())}
    assert {job: row["reason"] for job, row in rows.items()} == {
        "fits": "", "share-1": SHARE, "share-2": SHARE, "nine": NINE, "wants-a100": WANTS_A100, "gang-2": GANG,
    }
    assert rows["fits"]["outcome"] == "completed" and rows["gang-2"]["outcome"] == "unfinished"
    document = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert document["jobs"]["unfinished"] == 5
    assert list(document["jobs"]["unfinished_by_reason"].items()) == [
        (SHARE, 2), (NINE, 1), (GANG, 1), (WANTS_A100, 1),  # sorted: "pool h100" before "pools h100"
    ]


def test_strict_refuses_with_one_line_and_writes_nothing(
    tmp_path: Path, inputs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv("simulate", inputs, tmp_path / "run", "--strict")) == 2
    error = capsys.readouterr().err
    assert error == (f"fleetsched: {inputs['--trace']}: 3 of 6 jobs can never run on cluster.toml (--strict); "
                     f"2 jobs: {SHARE}: share-1, share-2; and 1 other reason\n")
    assert not (tmp_path / "run").exists() and not list(tmp_path.glob(".run*"))
    compare = {key: value for key, value in inputs.items() if key != "--profile"}
    assert main(argv("compare", compare, tmp_path / "cmp", "--profiles", inputs["--profile"], "--strict")) == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "cmp").exists()


def test_strict_passes_a_trace_every_job_of_which_can_run(
    tmp_path: Path, inputs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    Path(inputs["--trace"]).write_text(json.dumps(TRACE[0]) + "\n")
    assert main(argv("simulate", inputs, tmp_path / "run", "--strict")) == 0
    assert capsys.readouterr().err == ""
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["jobs"]["unfinished_by_reason"] == {}


def test_compare_lists_once_what_every_profile_finds_and_apart_what_differs(
    tmp_path: Path, inputs: dict[str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    compare = {key: value for key, value in inputs.items() if key != "--profile"}
    assert main(argv("compare", compare, tmp_path / "same", "--profiles", f"default,{inputs['--profile']}",
                     "--workers", "1")) == 0
    err = capsys.readouterr().err.splitlines()
    assert err[-1].startswith("fleetsched: 3 of 6 jobs can never run on cluster.toml;") and len(err) == 3
    # A profile without the share filter lets capacity speak for shares instead.
    (tmp_path / "noshare.toml").write_text(NO_SCALING.replace('"GpuShareFit", ', ""))
    assert main(argv("compare", compare, tmp_path / "apart", "--profiles", f"default,{tmp_path / 'noshare.toml'}",
                     "--workers", "1")) == 0
    err = capsys.readouterr().err.splitlines()
    assert f"fleetsched: under default: 2 jobs can never run: {SHARE}: share-1, share-2" in err
    assert ("fleetsched: under " + str(tmp_path / "noshare.toml") + ": 2 jobs can never run: no pool takes a replica "
            "(pools h100, a100: NodeCapacity: no free capacity for 500m+0MiB): share-1, share-2") in err


def test_unfinished_reasons_name_a_job_still_running() -> None:
    pool = make_pool("p")
    job = make_job("busy", whole(8))
    snapshot = make_snapshot(pool).assume(Placement(job, (ReplicaPlacement("p-0", tuple(map(Grant, range(8)))),)))
    waiting = make_job("waits", whole(1))
    found = unfinished_reasons(DEFAULT, snapshot, [job, waiting])
    assert found == {
        "busy": RUNNING,
        "waits": "waiting when the replay ended: no node fits (pool p: WholeGpuFit: 0 of 1 GPUs free)",
    }
    assert count_by_reason(found) == {RUNNING: 1, found["waits"]: 1}


def test_simulate_says_which_jobs_may_never_finish_and_still_runs_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    trace = tmp_path / "spot.jsonl"
    trace.write_text('{"id": "long", "duration_s": 18000, "gpus": 1, "preemptible": true}\n', encoding="utf-8")
    spot = tmp_path / "spot.toml"
    spot.write_text('[[pool]]\nname = "spot"\ngpu = "H100-80GB"\ngpus_per_node = 8\nnodes = 1\ncapacity = "spot"\n'
                    "usd_per_node_hour = 30.0\ninterruptions_per_node_hour = 1.0\n", encoding="utf-8")  # fmt: skip
    assert main(["simulate", "--trace", str(trace), "--cluster", str(spot), "--strict", "--out", str(tmp_path / "run")]) == 0
    err = capsys.readouterr().err
    assert err.startswith("fleetsched: 1 job may never finish: keeps no checkpoint and only spot pools take it")
    assert err.rstrip().endswith(": long")
