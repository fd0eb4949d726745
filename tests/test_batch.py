"""The batch problem, its expansion onto GPUs, and the objective's pieces, without a solver."""

from __future__ import annotations

import pytest

import policies
from scheduler import costing
from scheduler.batch import objective
from scheduler.batch import problem as batch
from scheduler.batch.expansion import InconsistentSolutionError, Solution, expand, solution_of
from scheduler.batch.problem import Config, Hint
from scheduler.framework import Framework
from scheduler.model import ClusterSnapshot, Grant, Job, Placement, ReplicaPlacement
from tests.builders import make_job, make_pool, make_snapshot, whole

PROFILE = policies.profile("cost-cpsat")


def problem_of(snapshot: ClusterSnapshot, jobs: list[Job], hint: Hint | None = None) -> batch.Problem:
    framework = Framework(PROFILE)
    state = framework.state(snapshot)
    return batch.build(framework, state, framework.order(state.cycle, jobs), hint)


def two_empty_nodes() -> tuple[ClusterSnapshot, list[Job], batch.Problem]:
    snapshot = make_snapshot(make_pool("od", gpus_per_node=4, nodes=2))
    jobs = [make_job("a", whole(2), submit_s=0), make_job("b", whole(2), submit_s=1)]
    return snapshot, jobs, problem_of(snapshot, jobs)


def both_on_one_node(problem: batch.Problem) -> Solution:
    (whole_class,) = problem.whole_classes
    config = whole_class.configs.index(Config((2, 2)))
    (group,) = problem.groups
    return Solution({group.index: 2}, {(group.index, 0): 2}, {}, {(0, config): 1}, {}, {})


def test_jobs_alike_form_one_group_and_configs_pack_a_node() -> None:
    _, _, problem = two_empty_nodes()
    assert [len(g.jobs) for g in problem.groups] == [2]
    (whole_class,) = problem.whole_classes
    assert whole_class.empty and whole_class.free == 4 and whole_class.nodes == ("od-0", "od-1")
    assert set(whole_class.configs) == {Config((2,)), Config((2, 2))}


def test_expansion_deals_a_config_to_the_first_node_oldest_jobs_first() -> None:
    _, _, problem = two_empty_nodes()
    placements, dropped = expand(problem, both_on_one_node(problem), lambda job, node: True)
    assert not dropped
    assert [(p.job.id, p.replicas[0].node, p.replicas[0].grants) for p in placements] == [
        ("a", "od-0", (Grant(0), Grant(1))), ("b", "od-0", (Grant(2), Grant(3)))]


def test_a_job_a_filter_turns_down_is_dropped_whole_and_its_grants_undone() -> None:
    snapshot = make_snapshot(make_pool("od", gpus_per_node=2, nodes=2))
    jobs = [make_job("gang", whole(2), replicas=2)]
    problem = problem_of(snapshot, jobs)
    config = problem.whole_classes[0].configs.index(Config((2,)))
    solution = Solution({0: 1}, {(0, 0): 2}, {}, {(0, config): 2}, {}, {})
    placements, dropped = expand(problem, solution, lambda job, node: node.name != "od-1")
    assert placements == [] and [job.id for job in dropped] == ["gang"]


def test_counts_that_do_not_add_up_are_a_bug_not_a_decision() -> None:
    _, _, problem = two_empty_nodes()
    good = both_on_one_node(problem)
    with pytest.raises(InconsistentSolutionError, match="replicas for 2 jobs"):
        expand(problem, Solution({0: 2}, {(0, 0): 1}, {}, good.configs, {}, {}), lambda job, node: True)
    with pytest.raises(InconsistentSolutionError, match="configs for 2 nodes"):
        expand(problem, Solution(good.jobs_placed, good.node_replicas, {}, {(0, 0): 3}, {}, {}), lambda j, n: True)
    with pytest.raises(InconsistentSolutionError, match="no replica wants"):
        config = problem.whole_classes[0].configs.index(Config((2, 2)))
        expand(problem, Solution({0: 1}, {(0, 0): 1}, {}, {(0, config): 1}, {}, {}), lambda job, node: True)


def test_a_hint_the_problem_cannot_express_gives_no_solution() -> None:
    snapshot, jobs, problem = two_empty_nodes()
    placed = Placement(jobs[0], (ReplicaPlacement("od-0", (Grant(0), Grant(1))),))
    hint = batch.hint_from(snapshot.nodes, snapshot.pools, [placed])
    assert solution_of(problem, hint) == Solution({0: 1}, {(0, 0): 1}, {}, {(0, 0): 1}, {}, {})
    odd = Hint(hint.replicas, {"od-0": Config((3,))}, {}, {})
    assert solution_of(problem, odd) is None


def test_tiers_too_many_for_one_objective_are_solved_in_blocks(monkeypatch: pytest.MonkeyPatch) -> None:
    snapshot = make_snapshot(make_pool("od", gpus_per_node=8, nodes=1))
    jobs = [make_job(f"j{p}-{n}", whole(1), priority=p, submit_s=n) for p in range(3) for n in range(3)]
    problem = problem_of(snapshot, jobs)
    weights, blocks = objective.tier_weights(problem.groups)
    assert blocks == [[2, 1, 0]] and weights == {2: 1, 1: 4, 0: 16}  # lowest tier first within a block
    monkeypatch.setattr(objective, "MAX_COEFFICIENT", 20)
    weights, blocks = objective.tier_weights(problem.groups)
    assert blocks == [[0], [2, 1]] and weights[0] == 1


def test_committed_dollars_open_empty_nodes_whole_and_share_busy_ones() -> None:
    pool = make_pool("h100", usd_per_node_hour=98.32, nodes=2)
    snapshot = make_snapshot(pool)
    snapshot = snapshot.assume(Placement(make_job("busy", whole(1)), (ReplicaPlacement("h100-0", (Grant(0),)),)))
    job = make_job("two", whole(2))
    on_busy = Placement(job, (ReplicaPlacement("h100-0", (Grant(1), Grant(2))),))
    on_empty = Placement(job, (ReplicaPlacement("h100-1", (Grant(0), Grant(1))),))
    assert costing.committed_usd_per_hour(snapshot.pools, snapshot.nodes, [on_busy]) == pytest.approx(24.58)
    assert costing.committed_usd_per_hour(snapshot.pools, snapshot.nodes, [on_empty]) == pytest.approx(98.32)
    other = Placement(make_job("more", whole(4)), (ReplicaPlacement("h100-1", tuple(Grant(i) for i in range(2, 6))),))
    assert costing.committed_usd_per_hour(snapshot.pools, snapshot.nodes, [on_empty, other]) == pytest.approx(98.32)
