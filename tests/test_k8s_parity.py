"""Parity: one situation as Kubernetes objects and as a simulator snapshot gives the same placements."""

from __future__ import annotations

import policies
from extender.state import ClusterView
from scheduler.catalog import default_catalog
from scheduler.model import Capacity, Grant, Placement, ReplicaPlacement, empty_node
from scheduler.world import Scheduler
from tests.builders import make_job, make_pool, make_snapshot, whole
from tests.test_k8s_extender import ON_DEMAND, SPOT, node, pod


def placements_by_pool(decision_placements: tuple[Placement, ...], pools_of: dict[str, str]) -> list[tuple[str, str, int]]:
    return sorted((p.job.id, pools_of[r.node], len(r.grants)) for p in decision_placements for r in p.replicas)


def test_the_same_cluster_in_both_worlds_is_placed_the_same() -> None:
    catalog = default_catalog()
    # Kubernetes: two spot and two on-demand H100 nodes, one busy on-demand node, pending pods.
    view = ClusterView((), catalog, "fleetsched")
    view.replace("node", [node("spot-1", labels=SPOT), node("spot-2", labels=SPOT),
                          node("od-1", labels=ON_DEMAND), node("od-2", labels=ON_DEMAND)])
    view.replace("pod", [
        pod("busy", 6, node_name="od-1", annotations={"fleetsched.io/gpus": "0,1,2,3,4,5"}),
        pod("a", 2), pod("b", 4, labels={"fleetsched.io/preemptible": "true"}), pod("c", 8), pod("d", 1),
    ])
    seen = view.view()
    k8s = Scheduler(policies.profile("cost-greedy")).schedule(seen.snapshot, seen.pending)
    k8s_pools = {name: n.pool for name, n in seen.snapshot.nodes.items()}
    # The simulator's world: the same pools and prices, built from a cluster file's terms.
    spot_price = catalog.prices["aws:p5.48xlarge:spot"].usd_per_hour
    od_price = catalog.prices["aws:p5.48xlarge:on-demand"].usd_per_hour
    spot = make_pool(seen.snapshot.nodes["spot-1"].pool, capacity=Capacity.SPOT, usd_per_node_hour=spot_price, nodes=0)
    od = make_pool(seen.snapshot.nodes["od-1"].pool, usd_per_node_hour=od_price, nodes=0)
    nodes = [empty_node(spot, "spot-1"), empty_node(spot, "spot-2"), empty_node(od, "od-1"), empty_node(od, "od-2")]
    snapshot = make_snapshot(spot, od, nodes=nodes)
    busy = make_job("ml/busy", whole(6))
    snapshot = snapshot.assume(Placement(busy, (ReplicaPlacement("od-1", tuple(Grant(i) for i in range(6))),)))
    jobs = [make_job("ml/a", whole(2), submit_s=seen.pending[0].submit_s),
            make_job("ml/b", whole(4), preemptible=True, submit_s=seen.pending[0].submit_s),
            make_job("ml/c", whole(8), submit_s=seen.pending[0].submit_s),
            make_job("ml/d", whole(1), submit_s=seen.pending[0].submit_s)]
    sim = Scheduler(policies.profile("cost-greedy")).schedule(snapshot, jobs)
    sim_pools = {name: n.pool for name, n in snapshot.nodes.items()}
    assert placements_by_pool(k8s.placements, k8s_pools) == placements_by_pool(sim.placements, sim_pools)
    assert sorted((p.job.id, p.replicas) for p in k8s.placements) == sorted((p.job.id, p.replicas) for p in sim.placements)
    assert len(k8s.placements) == 3 and set(k8s.pending) == set(sim.pending)
