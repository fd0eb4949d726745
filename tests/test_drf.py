"""Dominant resource fairness across teams: the paper's example, running allocations, progressive filling
in one cycle, and what each kind of request counts."""

from __future__ import annotations

from fractions import Fraction

import policies
from policies.literature import DrfOrder, dominant_share, gpu_capacity, replica_usage, team_usage
from scheduler.model import ClusterSnapshot, Grant, Job, MigMode, Placement, ReplicaPlacement
from scheduler.plugin import Cycle
from scheduler.world import Scheduler
from tests.builders import make_job, make_pool, make_snapshot, mig_request, share, whole

# The paper's example (Ghodsi et al., NSDI'11, DRF's worked example): 9 CPUs and 18 GB; user A's tasks need
# <1 CPU, 4 GB>, user B's <3 CPU, 1 GB>. Here on one shared A10G (1,000 milli, 24,576 MiB): a CPU
# is 111 milli and a GB 1,365 MiB, so A's tasks are <111 m, 5,461 MiB> (memory dominant, 2/9) and
# B's <333 m, 1,365 MiB> (compute dominant, 1/3).
A_TASK, B_TASK = share(111, 5461 / 1024), share(333, 1365 / 1024)


def one_shared_gpu() -> ClusterSnapshot:
    return make_snapshot(make_pool("a10g", gpu="A10G", gpus_per_node=1, sharing=True))


def tasks(team: str, request: object, count: int) -> list[Job]:
    return [make_job(f"{team}{n}", request, team=team) for n in range(1, count + 1)]  # type: ignore[arg-type]


def placed(profile: str, snapshot: ClusterSnapshot, pending: list[Job]) -> list[str]:
    decision = Scheduler(policies.profile(profile)).schedule(snapshot, pending)
    return [placement.job.id for placement in decision.placements]


def test_the_papers_example_gives_a_three_tasks_and_b_two() -> None:
    pending = tasks("a", A_TASK, 4) + tasks("b", B_TASK, 3)
    # DRF's progressive filling: A and B alternate while their dominant shares allow; then A's
    # third task (4/9 < B's 2/3 next); then neither fits. A holds 3 x <1, 4>, B 2 x <3, 1>: 2/3 each.
    assert placed("drf", one_shared_gpu(), pending) == ["a1", "b1", "a2", "b2", "a3"]
    # Within a team, the jobs take the keys in the order the queue shows them (here reversed):
    # the same three and two tasks, other tasks of each team.
    assert placed("drf", one_shared_gpu(), list(reversed(pending))) == ["a4", "b3", "a3", "b2", "a2"]
    # Arrival order alone (all at 0, then by id) gives A four tasks and B one.
    assert placed("default", one_shared_gpu(), pending) == ["a1", "a2", "a3", "a4", "b1"]


def test_a_team_already_holding_more_goes_after_one_holding_nothing() -> None:
    # 8 GPUs; team x runs a 6-GPU job. x1 came first, but x is at 6/8 and y at 0: y's two jobs
    # (keys 0 and 1/8) take the two free GPUs; FIFO would have started x1.
    snapshot = make_snapshot(make_pool("h100")).assume(
        Placement(make_job("x0", whole(6), team="x"), (ReplicaPlacement("h100-0", tuple(map(Grant, range(6)))),)))
    pending = [make_job("x1", team="x", submit_s=0.0), make_job("y1", team="y", submit_s=10.0),
               make_job("y2", team="y", submit_s=20.0)]  # fmt: skip
    assert placed("drf", snapshot, pending) == ["y1", "y2"]
    assert placed("default", snapshot, pending) == ["x1", "y1"]


def test_keys_fill_progressively_and_each_job_is_counted_once() -> None:
    snapshot = make_snapshot(make_pool("h100", nodes=2))  # 16 GPUs
    cycle = Cycle(0.0, snapshot)
    plugin = DrfOrder()
    first, second = make_job("p1", team="p"), make_job("p2", team="p")
    assert plugin.sort_key(cycle, first) == (Fraction(0),)
    assert plugin.sort_key(cycle, second) == (Fraction(1, 16),)
    assert plugin.sort_key(cycle, first) == (Fraction(0),)  # asked again: the same key, not counted twice
    assert plugin.sort_key(cycle, make_job("p3", team="p")) == (Fraction(2, 16),)
    assert plugin.sort_key(cycle, make_job("q1", team="q")) == (Fraction(0),)
    assert plugin.sort_key(Cycle(0.0, snapshot), second) == (Fraction(0),)  # a new cycle starts over


def test_what_each_kind_of_request_holds() -> None:
    a100 = make_pool("a100", gpu="A100-40GB", gpus_per_node=1, mig_mode=MigMode.DYNAMIC)
    h100 = make_pool("h100", gpu="H100-80GB", gpus_per_node=1)
    snapshot = make_snapshot(a100, h100)
    capacity = gpu_capacity(snapshot)
    assert capacity == (Fraction(2000), Fraction(40960 + 81920))
    mean = capacity[1] / 2
    # a waiting whole GPU holds the mean memory; a running one its own GPU's
    assert replica_usage(make_job("w"), 1, None, snapshot.pools, mean) == (Fraction(1000), Fraction(61440))
    assert replica_usage(make_job("w"), 1, h100, snapshot.pools, mean) == (Fraction(1000), Fraction(81920))
    # a share holds what it asks
    assert replica_usage(make_job("s", share(250, 6)), 1, None, snapshot.pools, mean) == (Fraction(250), Fraction(6144))
    # a MIG instance: its compute slices of 7 and memory slices of 8 (A100-40GB's 3g.20gb: 3 and 4)
    assert replica_usage(make_job("m", mig_request("3g.20gb", 2)), 2, None, snapshot.pools, mean) == (
        2 * Fraction(3000, 7), 2 * Fraction(40960 * 4, 8))
    assert dominant_share((Fraction(500), Fraction(61440)), capacity) == Fraction(1, 2)
    assert dominant_share((Fraction(0), Fraction(0)), (Fraction(0), Fraction(0))) == 0


def test_running_jobs_count_for_their_team_on_their_own_gpus() -> None:
    snapshot = make_snapshot(make_pool("h100", gpus_per_node=4), make_pool("a10g", gpu="A10G", gpus_per_node=4, sharing=True))
    snapshot = snapshot.assume(Placement(make_job("t1", team="t"), (ReplicaPlacement("h100-0", (Grant(0), Grant(1))),)))
    snapshot = snapshot.assume(Placement(make_job("u1", share(400, 4), team="u"), (ReplicaPlacement("a10g-0", (Grant(0),)),)))
    assert team_usage(snapshot) == {"t": (Fraction(2000), Fraction(2 * 81920)), "u": (Fraction(400), Fraction(4096))}


def test_jobs_without_a_team_share_one_and_a_mig_request_no_pool_offers_counts_as_whole_gpus() -> None:
    snapshot = make_snapshot(make_pool("h100", nodes=2))  # 16 H100s, MIG off
    cycle = Cycle(0.0, snapshot)
    plugin = DrfOrder()
    assert [plugin.sort_key(cycle, make_job(f"n{n}"))[0] for n in range(3)] == [0, Fraction(1, 16), Fraction(2, 16)]
    mig = make_job("m", mig_request("3g.20gb", 2))  # A100 profile, no A100 here
    assert replica_usage(mig, 2, None, snapshot.pools, Fraction(81920)) == (Fraction(2000), Fraction(2 * 81920))
