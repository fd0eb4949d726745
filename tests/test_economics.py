"""Unit economics and idle cost by cause, checked by hand (`simulator.economics`).

The idle oracle: one elastic on-demand pool of 2-GPU nodes at $7.20/node-hour ($0.001 per
GPU-second), one node at first, min 0, max 2, 100 s to boot, released after 50 s idle; the
default profile.
- t=0: J1 (1 GPU, 200 s) runs on node 0, whose other GPU is free (nothing waits: no demand, 1 s).
- t=1: J2 (2 GPUs, 100 s) fits nowhere: node 1 is asked for and boots 1..101 (booting, 200 GPU-s)
  while node 0's free GPU stands with J2 waiting (fragmentation, 100 GPU-s).
- t=101: J2 runs on node 1 to 201; node 0's free GPU, nothing waiting: no demand, 99 GPU-s.
- t=200: node 0 is empty, 201 node 1: both wait for their release (50 s each: 200 GPU-s),
  gone at 250 and 251.
- t=1000: S3 (a service of 1 GPU until t=1200) asks for node 2, booting 1000..1100 (200 GPU-s);
  it runs 1100..1200, the node's other GPU idle with nothing waiting (no demand, 100 GPU-s).
Bill 500 + 500 + 400 GPU-s = $1.40; jobs 200 + 200 + 100 = $0.50; idle $0.90 = booting $0.40 +
fragmentation $0.10 + waiting for release $0.20 + no demand $0.20.
"""

from __future__ import annotations

import json
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from types import MappingProxyType

import policies
from scheduler.catalog import default_catalog
from scheduler.cluster import Cluster
from scheduler.model import Capacity, Job, JobKind, Labels
from scheduler.world import Scheduler
from simulator.economics import idle_by_cause, on_demand_price, spot_counterfactual
from simulator.economics_idle import CAUSES, history_of, idle_part_ms
from simulator.engine import SimOptions, simulate
from simulator.ledger import PARTS, Ledger
from simulator.metrics import summary
from simulator.outputs import run_into, write_run
from tests.builders import make_pool, whole
from tests.test_sim_ledger import JOBS as LEDGER_JOBS
from tests.test_sim_ledger import PROFILE as LEDGER_PROFILE
from tests.test_sim_ledger import cluster as ledger_cluster

GPU_S = PARTS * 1000  # part-ms in one GPU-second


def elastic_cluster() -> Cluster:
    pool = replace(make_pool("od", gpus_per_node=2, usd_per_node_hour=7.2, nodes=1, max_nodes=2), min_nodes=0,
                   provision_delay_s=100.0, idle_release_s=50.0)  # fmt: skip
    return Cluster("oracle.toml", MappingProxyType({"od": pool}))


JOBS = [
    Job(id="J1", request=whole(1), duration_s=200.0, labels=Labels(team="a", model="m1")),
    Job(id="J2", request=whole(2), duration_s=100.0, submit_s=1.0, labels=Labels(team="b", model="m2")),
    Job(id="S3", request=whole(1), duration_s=200.0, submit_s=1000.0, kind=JobKind.SERVICE, labels=Labels(team="a")),
]


def test_idle_by_cause_matches_the_hand_computation() -> None:
    result = simulate(JOBS, elastic_cluster(), Scheduler(policies.profile("default")), SimOptions(check=True))
    assert result.end_ms == 1_200_000
    history = history_of(result.world.sink)
    assert history is not None
    causes = idle_part_ms(history, result.world.snapshot.pools, result.end_ms, result.world.ledger.idle)
    assert causes == {"od": {"booting": 400 * GPU_S, "reserved_unused": 0, "waiting_for_release": 200 * GPU_S,
                             "fragmentation": 100 * GPU_S, "no_demand": 200 * GPU_S}}  # fmt: skip
    economics = summary(result)["economics"]
    assert economics["idle_by_cause_usd"] == {"booting": 0.4, "reserved_unused": 0.0, "waiting_for_release": 0.2,
                                              "fragmentation": 0.1, "no_demand": 0.2}  # fmt: skip
    in_cents = [round(usd * 100) for usd in economics["idle_by_cause_usd"].values()]
    assert sum(in_cents) == round(summary(result)["cost_usd"]["idle"] * 100) == 90


def test_unit_economics_showback_and_the_training_inference_split() -> None:
    result = simulate(JOBS, elastic_cluster(), Scheduler(policies.profile("default")), SimOptions(check=True))
    economics = summary(result)["economics"]
    # $1.40 over 3 completed jobs; 500 GPU-s delivered (nothing lost), 1,400 GPU-s billed.
    assert economics["unit"] == {"usd_per_completed_job": 0.47, "usd_per_gpu_hour_billed": 3.6,
                                 "usd_per_gpu_hour_delivered": round(1.4 / (500 / 3600), 4),
                                 "gpu_hours_delivered": round(500 / 3600, 3)}  # fmt: skip
    assert economics["kinds"]["training"] == {"jobs": 2, "completed": 2, "usd": 0.4, "usd_per_completed_job": 0.2}
    assert economics["kinds"]["inference"] == {"jobs": 1, "completed": 1, "usd": 0.1, "usd_per_completed_job": 0.1}
    assert set(economics["training_by_model"]) == {"m1", "m2"}
    assert economics["training_by_model"]["m1"]["usd"] == 0.2
    assert economics["showback"]["team"]["a"] == {"jobs": 2, "completed": 2, "usd": 0.3, "usd_per_completed_job": 0.15}
    assert economics["showback"]["team"]["b"]["usd"] == 0.2
    assert economics["showback"]["day"] == {"day-0": {"total": 1.4, "attributed": 0.5, "idle": 0.9}}
    assert economics["inference"] is None  # no service here serves tokens


def test_reserved_capacity_left_free_is_reserved_and_unused() -> None:
    pool = replace(make_pool("res", gpus_per_node=2, usd_per_node_hour=7.2), capacity=Capacity.RESERVED)
    cluster = Cluster("reserved.toml", MappingProxyType({"res": pool}))
    jobs = [Job(id="A", request=whole(1), duration_s=100.0), Job(id="B", request=whole(2), duration_s=100.0, submit_s=10.0)]
    result = simulate(jobs, cluster, Scheduler(policies.profile("default")), SimOptions(check=True))
    economics = summary(result)["economics"]
    # 0..100: one GPU free (B waits from 10, but reserved capacity is reserved first); 100..200: none.
    assert economics["idle_by_cause_usd"] == {"booting": 0.0, "reserved_unused": 0.1, "waiting_for_release": 0.0,
                                              "fragmentation": 0.0, "no_demand": 0.0}  # fmt: skip


def test_the_run_directory_and_the_kept_history_give_the_same_economics(tmp_path: Path) -> None:
    scheduler = Scheduler(policies.profile("default"))
    kept = simulate(JOBS, elastic_cluster(), scheduler, SimOptions(check=True))
    write_run(kept, tmp_path / "kept")
    run_into(lambda sink: simulate(JOBS, elastic_cluster(), scheduler, SimOptions(), sink), tmp_path / "streamed",
             elastic_cluster().pools)  # fmt: skip
    documents = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("kept", "streamed")]
    assert documents[0]["economics"] == documents[1]["economics"]
    assert documents[0]["economics"]["idle_by_cause_usd"]["booting"] == 0.4


def test_spot_placements_repriced_on_demand_match_the_ledger_oracle() -> None:
    """tests/test_sim_ledger.py's run: the spot node billed 1,920 s x 2 GPUs at $2/GPU-hour ($32/15);
    on the on-demand pool's $5/GPU-hour it would have cost $16/3; saving $3.20; J1 lost nothing on spot
    (it checkpointed at the notice), so the net saving is the same."""
    result = simulate(LEDGER_JOBS, ledger_cluster(), Scheduler(LEDGER_PROFILE), SimOptions(reclaims={"spot-000": 1800.0}))
    spot = summary(result)["economics"]["spot"]
    assert spot["pools"]["spot"] == {"on_demand_usd_per_gpu_hour": 5.0, "on_demand_price": "pool od", "spot_usd": 2.13,
                                     "on_demand_usd": 5.33, "saving_usd": 3.2, "lost_work_usd": 0.0,
                                     "net_saving_usd": 3.2}  # fmt: skip


def test_lost_work_on_spot_is_priced_on_demand_and_taken_off_the_saving() -> None:
    od = make_pool("od", gpus_per_node=2, usd_per_node_hour=12.0)  # $6/GPU-hour
    spot = make_pool("spot", gpus_per_node=2, usd_per_node_hour=4.0, capacity=Capacity.SPOT)  # $2/GPU-hour
    ledger = Ledger({"od": od, "spot": spot})
    ledger.bill["spot"] = 10 * PARTS * 3_600_000  # 10 GPU-hours
    ledger.lost_by_pool["spot"] = 1 * PARTS * 3_600_000
    result = spot_counterfactual(ledger, {"od": od, "spot": spot})
    assert {key: result[key] for key in ("spot_usd", "on_demand_usd", "saving_usd", "lost_work_usd", "net_saving_usd")} \
        == {"spot_usd": 20.0, "on_demand_usd": 60.0, "saving_usd": 40.0, "lost_work_usd": 6.0, "net_saving_usd": 34.0}


def test_without_an_on_demand_pool_the_catalog_prices_the_same_instance() -> None:
    spot = make_pool("spot", gpus_per_node=8, usd_per_node_hour=0.0, capacity=Capacity.SPOT)
    quotes = [quote for quote in default_catalog().prices.values()
              if quote.capacity == "spot" and quote.gpu_model == "H100-80GB" and quote.gpus == 8]
    quote = quotes[0]
    spot = replace(spot, usd_per_node_hour=quote.usd_per_hour)
    price = on_demand_price(spot, {"spot": spot})
    assert price is not None
    usd, source = price
    twin = f"{quote.cloud}:{quote.instance}:on-demand".lower()
    assert source.startswith(f"catalog {twin} ")
    on_demand = default_catalog().prices[twin]
    assert usd == Fraction(round(on_demand.usd_per_hour * 10**6), 8 * 10**6)


def test_a_gpu_model_nobody_sells_on_demand_has_no_counterfactual() -> None:
    spot = replace(make_pool("spot", gpus_per_node=8, capacity=Capacity.SPOT), gpu=replace(
        make_pool().gpu, name="NOT-SOLD"))  # fmt: skip
    assert on_demand_price(spot, {"spot": spot}) is None


def test_the_totals_say_which_spot_pools_they_leave_out() -> None:
    """A spot pool without an on-demand price has no saving; the totals are over the others and name it."""
    od = make_pool("od", gpus_per_node=2, usd_per_node_hour=12.0)
    priced = make_pool("spot", gpus_per_node=2, usd_per_node_hour=4.0, capacity=Capacity.SPOT)
    unpriced = replace(make_pool("rare", gpus_per_node=8, usd_per_node_hour=8.0, capacity=Capacity.SPOT),
                       gpu=replace(make_pool().gpu, name="NOT-SOLD"))  # fmt: skip
    pools = {"od": od, "rare": unpriced, "spot": priced}
    ledger = Ledger(pools)
    ledger.bill["spot"] = ledger.bill["rare"] = 10 * PARTS * 3_600_000
    result = spot_counterfactual(ledger, pools)
    assert result["pools"]["rare"] == {"spot_usd": 10.0, "on_demand_price": None}  # 10 GPU-hours at $1
    assert result["spot_usd"] == 20.0 and result["left_out"] == ["rare"]
    assert "left_out" not in spot_counterfactual(ledger, {"od": od, "spot": priced})


def test_idle_cents_add_up_to_the_rounded_total() -> None:
    """Three causes of a third of a cent each: rounded alone they make 0, together 1 cent."""
    pool = make_pool("p", gpus_per_node=1, usd_per_node_hour=36.0)  # $0.01 per GPU-second
    ledger = Ledger({"p": pool})
    third = PARTS * 1000 // 3  # a third of a GPU-second: a third of a cent
    causes = {"p": {**dict.fromkeys(CAUSES, 0), "booting": third, "fragmentation": third, "no_demand": third + 1}}
    cents = idle_by_cause(causes, ledger)
    assert sum(round(usd * 100) for usd in cents.values()) == 1
    assert cents["no_demand"] == 0.01  # the largest remainder gets the cent


def test_mig_slices_and_shares_read_back_from_the_files_exactly(tmp_path: Path) -> None:
    """The timeline writes busy GPUs rounded to 4 decimals; a MIG slice is 1/7 GPU. Read back, the
    parts are exact again: the streamed run's economics equal the kept run's."""
    from scheduler.model import MigMode
    from tests.builders import mig_request, share

    mig_pool = make_pool("mig", gpu="A100-40GB", gpus_per_node=1, usd_per_node_hour=7.0, mig_mode=MigMode.DYNAMIC)
    shared = make_pool("t4", gpu="T4", gpus_per_node=1, usd_per_node_hour=1.0, sharing=True)
    cluster = Cluster("c.toml", MappingProxyType({"mig": mig_pool, "t4": shared}))
    jobs = [Job(id=f"m{index}", request=mig_request("1g.5gb"), duration_s=600.0 + 7 * index, submit_s=float(index))
            for index in range(5)]
    jobs += [Job(id=f"s{index}", request=share(130 + index, 1), duration_s=900.0, submit_s=float(index)) for index in range(3)]
    scheduler = Scheduler(policies.profile("default"))
    kept = simulate(jobs, cluster, scheduler, SimOptions(check=True))
    write_run(kept, tmp_path / "kept")
    run_into(lambda sink: simulate(jobs, cluster, scheduler, SimOptions(), sink), tmp_path / "streamed", cluster.pools)
    documents = [json.loads((tmp_path / name / "summary.json").read_text()) for name in ("kept", "streamed")]
    assert documents[0]["economics"] == documents[1]["economics"]
    idle = documents[0]["economics"]["idle_by_cause_usd"]
    assert sum(round(usd * 100) for usd in idle.values()) == round(documents[0]["cost_usd"]["idle"] * 100) > 0
