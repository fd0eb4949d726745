"""Keyword builders for tests: each test states only what matters (kube's st.MakePod analogue)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from types import MappingProxyType

from hypothesis import strategies as st

from scheduler import mig
from scheduler.catalog import default_catalog
from scheduler.model import (
    Capacity,
    ClusterSnapshot,
    GpuRequest,
    Job,
    Labels,
    MigMode,
    Node,
    Pool,
    RequestKind,
    empty_node,
)


def make_pool(
    name: str = "pool",
    *,
    gpu: str = "H100-80GB",
    gpus_per_node: int = 8,
    capacity: Capacity = Capacity.ON_DEMAND,
    usd_per_node_hour: float = 80.0,
    mig_mode: MigMode = MigMode.OFF,
    mig_layout: str = "",
    sharing: bool = False,
    nodes: int = 1,
    max_nodes: int | None = None,
) -> Pool:
    return Pool(
        name=name,
        gpu=default_catalog().resolve(gpu),
        gpus_per_node=gpus_per_node,
        capacity=capacity,
        usd_per_node_hour=usd_per_node_hour,
        mig_mode=MigMode.FIXED if mig_layout else mig_mode,
        mig_layout=mig.parse_layout(mig_layout),
        sharing=sharing,
        nodes=nodes,
        min_nodes=nodes,
        max_nodes=nodes if max_nodes is None else max_nodes,
    )


def whole(gpus: int = 1) -> GpuRequest:
    return GpuRequest(kind=RequestKind.WHOLE, gpus=gpus)


def share(milli: int, memory_gb: float = 0) -> GpuRequest:
    return GpuRequest(kind=RequestKind.SHARE, milli=milli, memory_mib=round(memory_gb * 1024))


def mig_request(profile: str, count: int = 1) -> GpuRequest:
    return GpuRequest(kind=RequestKind.MIG, gpus=count, mig_profile=profile)


def make_job(
    job_id: str = "job",
    request: GpuRequest | None = None,
    *,
    replicas: int = 1,
    models: Iterable[str] = (),
    priority: int = 0,
    preemptible: bool = False,
    submit_s: float = 0.0,
    duration_s: float = 3600.0,
    team: str = "",
) -> Job:
    return Job(
        id=job_id,
        request=request or whole(1),
        replicas=replicas,
        gpu_models=frozenset(models),
        priority=priority,
        preemptible=preemptible,
        submit_s=submit_s,
        duration_s=duration_s,
        labels=Labels(team=team),
    )


def make_snapshot(*pools: Pool, nodes: Sequence[Node] = ()) -> ClusterSnapshot:
    """A snapshot of `pools`, each with `pool.nodes` empty nodes named `<pool>-<n>`, plus `nodes`."""
    made = {node.name: node for pool in pools for node in (empty_node(pool, f"{pool.name}-{n}") for n in range(pool.nodes))}
    made.update({node.name: node for node in nodes})
    return ClusterSnapshot(MappingProxyType({pool.name: pool for pool in pools}), MappingProxyType(made))


def random_jobs(
    *, horizon_s: float, max_replicas: int, max_size: int, min_size: int = 0, checkpoints: bool = True
) -> st.SearchStrategy[list[Job]]:
    """Lists of jobs with distinct ids: 1 to 8 whole GPUs or a 250m/500m share, gangs of up to
    `max_replicas`, submitted and lasting up to `horizon_s`, three priorities or four."""
    fields: dict[str, st.SearchStrategy[object]] = {
        "id": st.uuids().map(str),
        "request": st.one_of(st.builds(whole, st.integers(1, 8)), st.builds(share, st.sampled_from([250, 500]))),
        "duration_s": st.floats(1, horizon_s),
        "submit_s": st.floats(0, horizon_s),
        "replicas": st.integers(1, max_replicas),
        "preemptible": st.booleans(),
        "priority": st.integers(0, 3 if checkpoints else 2),
    }
    if checkpoints:
        fields["checkpoint_interval_s"] = st.sampled_from([0.0, 300.0])
        fields["checkpoint_overhead_s"] = st.sampled_from([0.0, 20.0])
    return st.lists(st.builds(Job, **fields), min_size=min_size, max_size=max_size, unique_by=lambda job: job.id)
