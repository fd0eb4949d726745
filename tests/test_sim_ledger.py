"""The cost ledger checked by hand: two pools, three jobs, one spot interruption, one preemption.

Timeline (2-GPU nodes; on-demand $10/node-hour = $5/GPU-hour, spot $4/node-hour = $2/GPU-hour):
- t=0: J1 (2 GPUs, preemptible, checkpoint every 1,200 s, free checkpoints) goes to the cheaper
  spot node; J2 (2 GPUs, not preemptible) to the on-demand node.
- t=1,800: the spot node gets its 120 s notice; J1 checkpoints 1,800 s of work and stops.
  t=1,920: the node is gone (billed 1,920 s, all of it held by J1).
- t=3,600: J2 ends; J1 restarts on the on-demand node with 1,800 s to go.
- t=4,000: J3 (2 GPUs, priority 10) arrives and evicts J1, which loses the 400 s since its
  restart (no checkpoint yet). J3 runs to 4,600; J1 restarts and ends at 6,400.

Bill: on-demand 6,400 s x $10/h = $17.78 (exactly 160/9); spot 1,920 s x $4/h = $2.13 (32/15).
J1: spot 1,920 s x 2 GPUs x $2 = 32/15, on-demand 400 s + 1,800 s x 2 x $5 = 10/9 + 5 -> $8.24;
J2: 3,600 s x 2 x $5 = $10.00; J3: 600 s x 2 x $5 = $1.67. Idle: none. Lost: 400 s x 2 GPUs =
0.22 GPU-hours, $1.11. Total $19.91 = 896/45 exactly.
"""

from __future__ import annotations

from dataclasses import replace
from fractions import Fraction
from types import MappingProxyType

from policies.cost import CheapestPool
from policies.fit import WholeGpuFit
from policies.ordering import PriorityThenAge
from policies.preemption import PriorityPreemption
from policies.spot import SpotTolerance
from scheduler.cluster import Cluster
from scheduler.model import Capacity, Job
from scheduler.profile import Profile
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from tests.builders import make_pool, whole

PROFILE = Profile(
    name="hand", sort=PriorityThenAge(), filter=(WholeGpuFit(), SpotTolerance()), postfilter=(PriorityPreemption(),),
    score=((CheapestPool(), 1),),
)


def cluster() -> Cluster:
    od = make_pool("od", gpus_per_node=2, usd_per_node_hour=10.0)
    spot = make_pool("spot", gpus_per_node=2, usd_per_node_hour=4.0, capacity=Capacity.SPOT)
    spot = replace(spot, notice_s=120.0)
    return Cluster("hand.toml", MappingProxyType({"od": od, "spot": spot}))


JOBS = [
    Job(id="J1", request=whole(2), duration_s=3600.0, preemptible=True, checkpoint_interval_s=1200.0),
    Job(id="J2", request=whole(2), duration_s=3600.0),
    Job(id="J3", request=whole(2), duration_s=600.0, submit_s=4000.0, priority=10),
]


def test_the_ledger_matches_the_hand_computation_to_the_cent() -> None:
    result = simulate(JOBS, cluster(), Scheduler(PROFILE), SimOptions(reclaims={"spot-000": 1800.0}, check=True))
    ledger = result.world.ledger
    runs = result.world.runs
    assert result.end_ms == 6_400_000
    assert (runs["J1"].end_ms, runs["J3"].first_start_ms, runs["J3"].end_ms) == (6_400_000, 4_000_000, 4_600_000)
    assert (runs["J1"].preemptions, runs["J1"].interruptions) == (1, 1)

    assert ledger.usd("od", ledger.bill["od"]) == Fraction(160, 9)
    assert ledger.usd("spot", ledger.bill["spot"]) == Fraction(32, 15)
    assert ledger.usd_of(ledger.jobs["J1"]) == Fraction(32, 15) + Fraction(10, 9) + 5
    assert ledger.usd_of(ledger.jobs["J2"]) == 10
    assert ledger.usd_of(ledger.jobs["J3"]) == Fraction(5, 3)
    assert sum(ledger.idle.values()) == 0
    assert ledger.usd_of(ledger.lost["J1"]) == Fraction(10, 9)
    ledger.check()

    document = summary(result)
    assert document["cost_usd"]["total"] == 19.91
    assert document["cost_usd"]["idle"] == 0.0
    assert document["cost_usd"]["lost_work"] == 1.11
    assert document["cost_usd"]["by_pool"] == {"od": {"idle": 0.0, "total": 17.78}, "spot": {"idle": 0.0, "total": 2.13}}
    assert document["gpu_hours"] == {"busy": round(16640 / 3600, 3), "idle": 0.0, "lost": round(800 / 3600, 3)}
    assert (document["preemptions"], document["job_interruptions"], document["nodes"]["spot_interruptions"]) == (1, 1, 1)
    assert document["jobs"]["completed"] == 3


def test_shares_and_mig_instances_are_attributed_by_their_fraction() -> None:
    from scheduler.model import MigMode
    from tests.builders import mig_request, share

    mig_pool = make_pool("mig", gpu="A100-40GB", gpus_per_node=1, usd_per_node_hour=7.0, mig_mode=MigMode.DYNAMIC)
    shared = make_pool("t4", gpu="T4", gpus_per_node=1, usd_per_node_hour=1.0, sharing=True)
    cluster = Cluster("c.toml", MappingProxyType({"mig": mig_pool, "t4": shared}))
    jobs = [Job(id="m", request=mig_request("3g.20gb"), duration_s=3600.0),
            Job(id="s", request=share(250, 2), duration_s=3600.0)]
    profile = Profile(name="any", sort=PriorityThenAge())
    result = simulate(jobs, cluster, Scheduler(profile), SimOptions(check=True))
    ledger = result.world.ledger
    assert ledger.usd_of(ledger.jobs["m"]) == Fraction(3)  # 3 of 7 compute slices of a $7/h GPU for an hour
    assert ledger.usd_of(ledger.jobs["s"]) == Fraction(1, 4)
    assert ledger.usd("mig", ledger.idle["mig"]) == 4 and ledger.usd("t4", ledger.idle["t4"]) == Fraction(3, 4)
    ledger.check()
