"""CpSatPlacer: optimal on small instances (brute force), never worse than greedy, always valid."""

from __future__ import annotations

import itertools
import os
import random
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

import policies
from scheduler import capacity, mig
from scheduler.batch.placer import BatchPlacer
from scheduler.batch.solve import CpSatPlacer
from scheduler.decision import Code, Decision, SolverReport, validate
from scheduler.model import (
    Capacity,
    ClusterSnapshot,
    Grant,
    Job,
    MigMode,
    Node,
    Placement,
    ReplicaPlacement,
    RequestKind,
)
from scheduler.placers import GreedyPlacer
from scheduler.plugin import Cycle
from scheduler.profile import SolverOptions
from scheduler.world import Scheduler
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole
from tests.objective_oracle import objective_usd_per_hour

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
import bench_packer

OPTIONS = SolverOptions(deterministic_time=5.0, workers=1, fragmentation_weight=0.1, spot_risk_weight=1.0, idle_weight=0.5)
PROFILE = policies.profile("cost-cpsat")
GREEDY = policies.profile("cost-greedy")


def objective(snapshot: ClusterSnapshot, placements: Sequence[Placement]) -> float:
    return objective_usd_per_hour(
        snapshot.pools, snapshot.nodes, placements,
        fragmentation_weight=OPTIONS.fragmentation_weight, spot_risk_weight=OPTIONS.spot_risk_weight,
        idle_weight=OPTIONS.idle_weight,
    )


def tiers(jobs: Sequence[Job], placements: Sequence[Placement]) -> tuple[int, ...]:
    """Jobs placed per priority, highest first."""
    placed = {p.job.id for p in placements}
    return tuple(sum(j.id in placed for j in jobs if j.priority == p) for p in sorted({j.priority for j in jobs}, reverse=True))


def solve(snapshot: ClusterSnapshot, jobs: Sequence[Job], options: SolverOptions = OPTIONS) -> Decision:
    decision = Scheduler(PROFILE, CpSatPlacer(options)).schedule(snapshot, jobs)
    validate(snapshot, decision)
    return decision


# Brute force -------------------------------------------------------------------------------


def replica_options(snapshot: ClusterSnapshot, nodes: dict[str, Node], job: Job) -> Iterator[tuple[str, tuple[Grant, ...]]]:
    """Every distinct way one replica can land, as the cluster stands (whole GPUs are alike)."""
    cycle = Cycle(0.0, snapshot)
    for name in sorted(nodes):
        node = nodes[name]
        pool = snapshot.pools[node.pool]
        request = job.request
        if any(f.filter(cycle, job, node).code is Code.UNRESOLVABLE for f in PROFILE.filter):
            continue
        if request.kind is RequestKind.WHOLE:
            grants = capacity.find_grants(pool, node, request)
            if grants is not None:
                yield name, grants
        elif request.kind is RequestKind.SHARE:
            for index in range(len(node.gpus)):
                try:
                    node.grant(pool, job, (Grant(index),))
                except ValueError:
                    continue
                yield name, (Grant(index),)
        elif pool.mig_mode is not MigMode.OFF and pool.gpu.mig is not None:
            for index, gpu in enumerate(node.gpus):
                starts = mig.free_starts(pool.gpu.mig, gpu.layout, request.mig_profile) if pool.mig_mode is MigMode.DYNAMIC else (
                    tuple(s.instance.start for s in gpu.mig if s.job is None and s.instance.profile == request.mig_profile))
                for start in starts:
                    yield name, (Grant(index, start),)


def brute_force(snapshot: ClusterSnapshot, jobs: Sequence[Job]) -> tuple[tuple[int, ...], float]:
    """The best (tiers placed, -cost) over every way to place or skip each job."""
    best: tuple[tuple[int, ...], float] = ((), float("-inf"))

    def visit(index: int, nodes: dict[str, Node], chosen: list[Placement]) -> None:
        nonlocal best
        if index == len(jobs):
            key = (tiers(jobs, chosen), -objective(snapshot, chosen))
            best = max(best, key)
            return
        visit(index + 1, nodes, chosen)
        job = jobs[index]

        def replicas(done: list[ReplicaPlacement], state: dict[str, Node]) -> None:
            if len(done) == job.replicas:
                visit(index + 1, state, [*chosen, Placement(job, tuple(done))])
                return
            for name, grants in replica_options(snapshot, state, job):
                node = state[name]
                after = {**state, name: node.grant(snapshot.pools[node.pool], job, grants)}
                replicas([*done, ReplicaPlacement(name, grants)], after)

        replicas([], nodes)

    visit(0, dict(snapshot.nodes), [])
    return best


def small_instance(seed: int) -> tuple[ClusterSnapshot, list[Job]]:
    rng = random.Random(seed)
    pools = [
        make_pool("od", gpus_per_node=4, usd_per_node_hour=40.0, nodes=rng.choice((1, 2))),
        make_pool("spot", gpus_per_node=4, capacity=Capacity.SPOT, usd_per_node_hour=14.0, nodes=1),
        make_pool("cheap", gpu="A10G", gpus_per_node=2, usd_per_node_hour=6.0, sharing=True, nodes=1),
        make_pool("mig", gpu="A100-40GB", gpus_per_node=1, usd_per_node_hour=4.0, mig_mode=MigMode.DYNAMIC, nodes=1),
    ]
    spot = pools[1]
    pools[1] = type(spot)(**{**{f: getattr(spot, f) for f in spot.__dataclass_fields__},
                              "interruptions_per_node_hour": 0.2, "notice_s": 60.0})
    snapshot = make_snapshot(*pools)
    busy = make_job("busy", whole(rng.choice((1, 2))))
    snapshot = snapshot.assume(Placement(busy, (ReplicaPlacement("od-0", tuple(Grant(i) for i in range(busy.request.gpus))),)))
    jobs = []
    for number in range(rng.choice((3, 4))):
        kind = rng.random()
        if kind < 0.5:
            request = whole(rng.choice((1, 2, 4)))
        elif kind < 0.75:
            request = share(rng.choice((250, 500, 750)), rng.choice((2, 8)))
        else:
            request = mig_request(rng.choice(("1g.5gb", "3g.20gb", "4g.20gb")))
        jobs.append(make_job(
            f"j{number}", request, replicas=rng.choice((1, 1, 2)) if request.kind is RequestKind.WHOLE else 1,
            priority=rng.choice((0, 0, 5)), preemptible=rng.random() < 0.5, submit_s=float(number),
            duration_s=rng.choice((600.0, 7200.0)),
        ))
    return snapshot, jobs


@pytest.mark.parametrize("seed", range(30))
def test_optimum_equals_brute_force_on_small_instances(seed: int) -> None:
    snapshot, jobs = small_instance(seed)
    decision = solve(snapshot, jobs)
    assert decision.solver is not None and decision.solver.status == "OPTIMAL"
    best_tiers, best_value = brute_force(snapshot, jobs)
    assert tiers(jobs, decision.placements) == best_tiers
    # Costs are integers of 1/1000 $/h in the model: rounding can move the optimum a little.
    assert objective(snapshot, decision.placements) == pytest.approx(-best_value, abs=0.01)


def test_reported_cost_is_the_objective_of_the_placements() -> None:
    snapshot, jobs = small_instance(3)
    decision = solve(snapshot, jobs)
    assert decision.solver is not None
    assert decision.solver.cost_usd_per_hour == pytest.approx(objective(snapshot, decision.placements), abs=0.01)
    assert decision.solver.gap == 0.0 and decision.solver.bound == decision.solver.objective


@pytest.mark.parametrize("seed", range(6))
def test_never_worse_than_greedy_and_always_valid(seed: int) -> None:
    snapshot = bench_packer.cluster(60, seed)
    jobs = bench_packer.pending(40, seed)
    cpsat = solve(snapshot, jobs, SolverOptions(deterministic_time=2.0, workers=2, seed=seed))
    greedy = Scheduler(GREEDY).schedule(snapshot, jobs)
    validate(snapshot, greedy)
    mine = (tiers(jobs, cpsat.placements), -objective(snapshot, cpsat.placements))
    theirs = (tiers(jobs, greedy.placements), -objective(snapshot, greedy.placements))
    assert mine[0] > theirs[0] or (mine[0] == theirs[0] and mine[1] >= theirs[1] - 0.01)


def test_beats_greedy_where_job_by_job_packing_strands_capacity() -> None:
    """cost-greedy puts the whole-GPU job on the cheap shared node's free GPU; the 600m share
    after it then fits nowhere (its other GPU has 500m taken). CP-SAT places both."""
    shared = make_pool("shared", gpu="A10G", gpus_per_node=2, sharing=True, usd_per_node_hour=4.0)
    plain = make_pool("plain", gpus_per_node=1, usd_per_node_hour=10.0)
    snapshot = make_snapshot(shared, plain)
    snapshot = snapshot.assume(Placement(make_job("busy", share(500, 2)), (ReplicaPlacement("shared-0", (Grant(0),)),)))
    jobs = [make_job("whole", whole(1), submit_s=0), make_job("share", share(600, 2), submit_s=1)]
    greedy = Scheduler(GREEDY).schedule(snapshot, jobs)
    assert [p.job.id for p in greedy.placements] == ["whole"]
    decision = solve(snapshot, jobs)
    where = {p.job.id: p.replicas[0].node for p in decision.placements}
    assert where == {"whole": "plain-0", "share": "shared-0"}
    assert decision.solver is not None and decision.solver.used == "cpsat"


def test_a_higher_priority_job_beats_any_number_of_cheaper_ones() -> None:
    pool = make_pool("od", gpus_per_node=8, usd_per_node_hour=100.0, nodes=1)
    snapshot = make_snapshot(pool)
    jobs = [make_job(f"low{n}", whole(1), submit_s=n) for n in range(8)] + [make_job("high", whole(8), priority=9, submit_s=99)]
    decision = solve(snapshot, jobs)
    assert [p.job.id for p in decision.placements] == ["high"]


def test_gangs_run_whole_or_not_at_all() -> None:
    pool = make_pool("od", gpus_per_node=4, nodes=3)
    snapshot = make_snapshot(pool)
    jobs = [make_job("gang", whole(4), replicas=4), make_job("pair", whole(4), replicas=2, submit_s=1)]
    decision = solve(snapshot, jobs)
    assert [p.job.id for p in decision.placements] == ["pair"]
    assert len({r.node for r in decision.placements[0].replicas}) == 2
    assert "gang" in decision.pending


def test_spot_only_for_preemptible_jobs_and_the_risk_steers_long_jobs_away() -> None:
    od = make_pool("od", gpus_per_node=8, usd_per_node_hour=80.0, nodes=1)
    spot = make_pool("spot", gpus_per_node=8, capacity=Capacity.SPOT, usd_per_node_hour=30.0, nodes=1)
    spot = type(spot)(**{**{f: getattr(spot, f) for f in spot.__dataclass_fields__}, "interruptions_per_node_hour": 0.5})
    snapshot = make_snapshot(od, spot)
    # Both nodes already run something, so the choice is between price shares, not openings.
    for name in ("od-0", "spot-0"):
        job = make_job(f"busy-{name}", whole(1), preemptible=True)
        snapshot = snapshot.assume(Placement(job, (ReplicaPlacement(name, (Grant(7),)),)))
    jobs = [
        make_job("firm", whole(2)),
        make_job("short", whole(2), preemptible=True, duration_s=600),
        make_job("long", whole(2), preemptible=True, duration_s=400 * 3600),  # loses ~200 h per take-back
    ]
    decision = solve(snapshot, jobs)
    where = {p.job.id: p.replicas[0].node for p in decision.placements}
    assert where == {"firm": "od-0", "short": "spot-0", "long": "od-0"}


def test_mig_instances_land_at_legal_starts_and_shares_fit_their_gpu() -> None:
    pools = [
        make_pool("mig", gpu="A100-40GB", gpus_per_node=2, mig_mode=MigMode.DYNAMIC, usd_per_node_hour=8.0),
        make_pool("shared", gpu="A10G", gpus_per_node=2, sharing=True, usd_per_node_hour=4.0),
    ]
    snapshot = make_snapshot(*pools)
    jobs = [make_job(f"m{n}", mig_request(p)) for n, p in enumerate(("4g.20gb", "3g.20gb", "3g.20gb", "1g.5gb", "2g.10gb"))]
    jobs += [make_job(f"s{n}", share(m, 4)) for n, m in enumerate((750, 250, 500, 500))]
    decision = solve(snapshot, jobs)
    assert {p.job.id for p in decision.placements} == {j.id for j in jobs}  # validate() checked the geometry
    gpus_split = {(r.node, g.gpu) for p in decision.placements if p.job.id.startswith("m") for r in p.replicas for g in r.grants}
    assert len(gpus_split) == 2  # 4g+3g on one GPU, 3g+1g+2g on the other: no third GPU needed


def test_fixed_mig_layouts_take_free_instances_by_profile() -> None:
    pool = make_pool("fixed", gpu="A100-40GB", gpus_per_node=1, mig_layout="3g.20gb@4,2g.10gb@0,1g.5gb@2,1g.5gb@3")
    snapshot = make_snapshot(pool)
    jobs = [make_job("a", mig_request("1g.5gb")), make_job("b", mig_request("1g.5gb")), make_job("c", mig_request("1g.5gb"))]
    decision = solve(snapshot, jobs)
    assert sorted(p.job.id for p in decision.placements) == ["a", "b"]
    assert sorted(p.replicas[0].grants[0].mig_start for p in decision.placements) == [2, 3]


def test_jobs_the_model_leaves_out_go_to_the_greedy_pass() -> None:
    pool = make_pool("mig", gpu="A100-40GB", gpus_per_node=1, mig_mode=MigMode.DYNAMIC)
    snapshot = make_snapshot(pool)
    jobs = [make_job("two-instances", mig_request("1g.5gb", 2)), make_job("one", mig_request("2g.10gb"))]
    decision = solve(snapshot, jobs)
    assert sorted(p.job.id for p in decision.placements) == ["one", "two-instances"]


def test_same_input_same_decision_in_deterministic_mode() -> None:
    snapshot = bench_packer.cluster(80, 5)
    jobs = bench_packer.pending(60, 5)
    options = SolverOptions(deterministic_time=0.3, workers=2, seed=3)
    first, second = solve(snapshot, jobs, options), solve(snapshot, jobs, options)
    assert first.placements == second.placements
    assert first.solver is not None and second.solver is not None
    assert (first.solver.objective, first.solver.bound, first.solver.status) == (
        second.solver.objective, second.solver.bound, second.solver.status)


SAME_DECISION = """
import sys
sys.path.insert(0, "benchmarks")
import bench_packer, policies
from scheduler.world import Scheduler
snapshot, jobs = bench_packer.cluster(40, 4), bench_packer.pending(80, 4)
decision = Scheduler(policies.profile("cost-cpsat")).schedule(snapshot, jobs)
print(decision.placements, decision.solver.objective, decision.solver.bound, decision.solver.status)
"""


def test_same_decision_in_processes_with_different_string_hashes() -> None:
    """The node index once took nodes back in the order of a set of names, which Python orders
    by a per-process random hash: the model's classes, so the decision, changed run to run."""
    root = Path(__file__).resolve().parent.parent
    outputs = []
    for seed in ("0", "1", "2"):
        environment = {**os.environ, "PYTHONHASHSEED": seed}
        result = subprocess.run([sys.executable, "-c", SAME_DECISION], cwd=root, env=environment,
                                capture_output=True, text=True, timeout=600, check=True)  # fmt: skip
        outputs.append(result.stdout)
    assert outputs[0] == outputs[1] == outputs[2] and "Placement(" in outputs[0]


def test_without_an_answer_the_decision_is_greedys() -> None:
    snapshot = bench_packer.cluster(40, 2)
    jobs = bench_packer.pending(30, 2)
    report = SolverReport(status="UNKNOWN", objective=0, bound=0, gap=1.0, used="greedy", cost_usd_per_hour=0.0, jobs=30)
    placer = BatchPlacer(lambda problem, hint, options: (None, report))
    decision = Scheduler(PROFILE, placer).schedule(snapshot, jobs)
    greedy = Scheduler(PROFILE, GreedyPlacer()).schedule(snapshot, jobs)
    assert decision.placements == greedy.placements
    assert decision.solver is report


def test_a_tiny_budget_still_gives_a_valid_decision() -> None:
    snapshot = bench_packer.cluster(200, 4)
    jobs = bench_packer.pending(150, 4)
    decision = solve(snapshot, jobs, SolverOptions(deterministic_time=1e-4, workers=1))
    assert decision.solver is not None
    assert len(decision.placements) + len(decision.pending) == len(jobs)


def test_pending_jobs_are_explained_after_the_solve() -> None:
    pool = make_pool("od", gpus_per_node=4, nodes=1)
    snapshot = make_snapshot(pool)
    jobs = [make_job("fits", whole(4)), make_job("too-big", whole(8))]
    decision = solve(snapshot, jobs)
    assert [p.job.id for p in decision.placements] == ["fits"]
    assert decision.pending["too-big"].fits_nowhere
    assert decision.pending["too-big"].verdicts


def test_options_come_from_the_profile_solver_table() -> None:
    assert PROFILE.placer == "cpsat"
    assert PROFILE.solver.deterministic_time > 0 and PROFILE.solver.workers >= 1


@pytest.mark.parametrize("sizes", list(itertools.product((1, 2), repeat=2)))
def test_counts_add_up_for_every_small_queue(sizes: tuple[int, int]) -> None:
    pool = make_pool("od", gpus_per_node=2, nodes=1)
    snapshot = make_snapshot(pool)
    jobs = [make_job(f"j{n}", whole(g), submit_s=n) for n, g in enumerate(sizes)]
    decision = solve(snapshot, jobs, SolverOptions(deterministic_time=1.0, workers=1, idle_weight=1.0))
    # Both fit, or one fills the node: opening it for one GPU pays for the idle one too.
    assert sum(p.job.request.gpus for p in decision.placements) == 2


@pytest.mark.parametrize("seed", range(10))
def test_a_single_job_is_placed_at_its_cheapest_option_without_a_model(seed: int) -> None:
    snapshot, jobs = small_instance(seed)
    for job in jobs:
        if job.replicas > 1:
            continue
        decision = solve(snapshot, [job])
        assert decision.solver is not None and decision.solver.status in {"OPTIMAL", "INFEASIBLE"}
        best_tiers, best_value = brute_force(snapshot, [job])
        assert tiers([job], decision.placements) == best_tiers
        assert objective(snapshot, decision.placements) == pytest.approx(-best_value, abs=0.01)
