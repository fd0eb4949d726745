"""The FGD packing experiment (Weng et al., ATC'23): pods arrive one by one onto a fixed cluster, none leaves.

`../shared/research/fgd-experiment.md` specifies the run, read from the authors' simulator: the pod
list sorted by name and shuffled with the seed, grown by resampling (or pruned) to `tune` times the
cluster's GPU-milli, nodes ranked by a seeded permutation; each pod goes to the feasible node with
the policy's highest score, ties to the lowest rank, or is dropped when none fits (it still counts
as arrived); the allocated GPU-milli is logged after every pod against the arrived GPU-milli.

The seed drives a port of Go's math/rand (`simulator.gorand`) drawn in the authors' order, so
a seed gives the authors' pod order, tune-up sample and node ranks, and the deterministic
policies their per-seed curves. Departure: Random's node and GPU draws come from a Python
`random.Random`; the authors' own Random is not reproducible per seed (its feasible list is
filled by parallel goroutines).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from scheduler import fill
from scheduler.catalog import default_catalog
from scheduler.errors import InputError
from scheduler.fill import FillNode, FillPod, Ints, NodeArrays
from scheduler.fill_fgd import FgdScorer, Workload, typical_pods
from simulator.gorand import GoRand
from traces.base import csv_rows

POLICIES = ("Random", "DotProd", "GpuClustering", "GpuPacking", "BestFit", "FGD")
OPENB_MODELS = ("A10", "G2", "G3", "P100", "T4", "V100M16", "V100M32")
NODE_COLUMNS = ("sn", "cpu_milli", "memory_mib", "gpu", "model")
POD_COLUMNS = ("name", "cpu_milli", "memory_mib", "num_gpu", "gpu_milli")
LAST_PERCENT = 130  # the authors' discrete curve runs 0..130 % arrived
INFORMER_DRAWS = 10  # the scheduler's informers draw this often before the node permutation (spec section 3.1)

ScoreFunction = Callable[[NodeArrays, FillPod, Ints], Ints]
SCORES: Mapping[str, ScoreFunction] = {
    "DotProd": fill.dot_product_scores,
    "GpuClustering": fill.gpu_clustering_scores,
    "GpuPacking": fill.gpu_packing_scores,
    "BestFit": fill.best_fit_scores,
}


def read_nodes(path: Path) -> list[FillNode]:
    """An openb node list (sn, cpu_milli, memory_mib, gpu, model).

    Node names are unique (the authors' simulator makes one Kubernetes node of each name) and a
    GPU node's model is one the GPU catalog knows (openb's A10, G2, G3, P100, T4, V100M16 and
    V100M32 all are); the model stays the label pods' gpu_spec is matched against, as theirs does.
    """
    nodes = []
    lines: dict[str, int] = {}  # node name: the line it is first on
    catalog = default_catalog()
    for fields in csv_rows(path, NODE_COLUMNS):
        gpus = fields.integer("gpu")
        if gpus > fill.MAX_GPUS:
            raise fields.fail("gpu", f"at most {fill.MAX_GPUS} GPUs per node, got {gpus}")
        model = fields.text("model", "" if gpus == 0 else None)
        if gpus and catalog.key_of(model) is None:
            raise fields.fail("model", f"unknown GPU model {model!r}: not in the GPU catalog (openb's node lists "
                                       f"use {', '.join(OPENB_MODELS)})")
        name = fields.text("sn")
        if name in lines:
            raise fields.fail("sn", f"node {name!r} is named twice (first on line {lines[name]})")
        lines[name] = fields.line
        cpu_milli, memory_mib = fields.integer("cpu_milli"), fields.integer("memory_mib")
        nodes.append(FillNode(name, cpu_milli, memory_mib, gpus, model))
    if not nodes:
        raise InputError("no nodes", source=str(path))
    if sum(node.gpus for node in nodes) == 0:
        raise InputError("no GPUs on any node", source=str(path), field="gpu")
    return nodes


def read_pods(path: Path) -> list[FillPod]:
    """An openb pod list; gpu_milli is clamped to 0..1000 as the authors' converter does."""
    pods = []
    for fields in csv_rows(path, POD_COLUMNS):
        gpus = fields.integer("num_gpu")
        if gpus > fill.MAX_GPUS:
            raise fields.fail("num_gpu", f"at most {fill.MAX_GPUS} GPUs per pod, got {gpus}")
        milli = fields.integer("gpu_milli", 0) if gpus else 0
        milli = min(milli, fill.MILLI)
        models = tuple(filter(None, (part.strip() for part in fields.values.get("gpu_spec", "").split("|"))))
        pods.append(
            FillPod(fields.text("name"), fields.integer("cpu_milli"), fields.integer("memory_mib"),
                    gpus if milli else 0, milli, models if milli else ())
        )
    if not pods:
        raise InputError("no pods", source=str(path))
    return pods


@dataclass(frozen=True, slots=True)
class Arrivals:
    """One seed's workload: pods in arrival order and each node's tie-break rank."""

    pods: tuple[FillPod, ...]
    rank: tuple[int, ...]  # per node in the given order; lower wins ties
    clones: int
    removed: int


def arrivals(pods: Sequence[FillPod], nodes: Sequence[FillNode], seed: int, tune: float) -> Arrivals:
    """Name-sorted pods shuffled (Fisher-Yates from the end), tuned to `tune` x GPU-milli, and node ranks."""
    rng = GoRand(seed)
    rng.int63()  # the authors' driver draws once (a debug log argument) before anything else
    originals = sorted(pods, key=lambda pod: pod.name.encode())
    order = list(originals)
    rng.shuffle(order)
    target = tune * sum(node.gpus for node in nodes) * fill.MILLI
    total = sum(pod.total_gpu_milli for pod in order)
    clones = removed = 0
    if total > target:
        while total > target:
            pod = order.pop(rng.intn(len(order)))
            total -= pod.total_gpu_milli
            removed += 1
    elif total < target and any(pod.gpu_milli for pod in originals):  # CPU-only clones alone never stop
        while True:  # the authors test the per-GPU milli, add the total, and stop at the first miss
            pod = originals[rng.intn(len(originals))]
            if total + pod.gpu_milli > target:
                break
            order.append(FillPod(f"{pod.name}-tuned-{clones}", pod.cpu_milli, pod.memory_mib, pod.gpus,
                                 pod.gpu_milli, pod.models))
            total += pod.total_gpu_milli
            clones += 1
    for _ in range(INFORMER_DRAWS):
        rng.int63()
    by_name = sorted(range(len(nodes)), key=lambda index: nodes[index].name.encode())
    permutation = rng.perm(len(nodes))
    rank = [0] * len(nodes)
    for position, node in enumerate(by_name):
        rank[node] = permutation[position]
    return Arrivals(tuple(order), tuple(rank), clones, removed)


@dataclass(frozen=True, slots=True)
class FillRun:
    """What one policy and seed did: arrived and allocated GPU-milli after each pod, and the drops."""

    policy: str
    seed: int
    cluster_gpus: int
    arrived_milli: tuple[int, ...]
    allocated_milli: tuple[int, ...]
    failed: int
    clones: int


class _Chooser:
    """The policy's node and GPU choice for each pod, against the live node state."""

    def __init__(self, policy: str, state: NodeArrays, rank: Ints, workload: Workload | None, rng: random.Random):
        self.policy, self.state, self.rank, self.rng = policy, state, rank, rng
        self.fgd = FgdScorer(workload, state) if workload is not None else None

    def node(self, pod: FillPod, nodes: Ints) -> tuple[int, int]:
        """The chosen node, and for FGD the share's GPU there (-1: choose by the GPU rule)."""
        if len(nodes) == 1:
            return int(nodes[0]), -1
        if self.policy == "Random":
            return int(nodes[self.rng.randrange(len(nodes))]), -1
        if self.fgd is not None:
            scores, gpus = self.fgd.scores(pod, nodes)
        else:
            scores, gpus = SCORES[self.policy](self.state, pod, nodes), np.full(len(nodes), -1)
        best = np.flatnonzero(scores == scores.max())
        winner = best[int(self.rank[nodes[best]].argmin())]
        return int(nodes[winner]), int(gpus[winner])

    def gpus(self, pod: FillPod, node: int, hint: int) -> list[int]:
        free = self.state.free[node]
        if pod.gpus == 0:
            return []
        if not pod.is_share:
            return fill.whole_gpus(free, pod.gpus)
        if self.policy == "Random":
            return [int(self.rng.choice(np.flatnonzero(free >= pod.gpu_milli)))]
        if self.fgd is not None:
            if hint < 0:  # the only feasible node was placed unscored
                _, chosen = self.fgd.scores(pod, np.array([node]))
                hint = int(chosen[0])
            return [hint]
        return [fill.best_gpu(free, pod.gpu_milli)]


def run_fill(nodes: Sequence[FillNode], pods: Sequence[FillPod], policy: str, seed: int, tune: float) -> FillRun:
    """One replay of `pods` (the original list) onto `nodes` with `policy` and `seed`."""
    if policy not in POLICIES:
        raise InputError(f"unknown policy {policy!r}; one of {', '.join(POLICIES)}", field="--policy")
    workload = arrivals(pods, nodes, seed, tune)
    state = NodeArrays(nodes)
    rank = np.array(workload.rank, dtype=np.int64)
    target = Workload(typical_pods(pods), state.models) if policy == "FGD" else None
    rng = random.Random(f"{seed}:{policy}")
    chooser = _Chooser(policy, state, rank, target, rng)
    masks: dict[tuple[str, ...], np.ndarray] = {}
    arrived = allocated = failed = 0
    arrived_log, allocated_log = [], []
    for pod in workload.pods:
        arrived += pod.total_gpu_milli
        models_ok = masks.get(pod.models)
        if models_ok is None:
            models_ok = masks[pod.models] = fill.model_mask(state, pod.models)
        candidates = fill.feasible(state, pod, models_ok)
        if len(candidates) == 0:
            failed += 1
        else:
            node, hint = chooser.node(pod, candidates)
            state.place(node, pod, chooser.gpus(pod, node, hint))
            allocated += pod.total_gpu_milli
            if chooser.fgd is not None:
                chooser.fgd.changed(node)
        arrived_log.append(arrived)
        allocated_log.append(allocated)
    gpus = sum(node.gpus for node in nodes)
    return FillRun(policy, seed, gpus, tuple(arrived_log), tuple(allocated_log), failed, workload.clones)


def discrete_curve(
    arrived_milli: Sequence[int], allocated_milli: Sequence[int], cluster_gpus: int
) -> list[float | None]:
    """Allocated GPU % per arrived % 0..130, as the authors' analysis_allo_discrete.csv cells.

    Each event's arrived % is rounded to a whole number and its allocated % to 2 decimals
    (Python's round); a cell is the numpy mean over the events of its bin, rounded to 2 decimals;
    an empty bin takes the events within one point, and stays None when there are none.
    """
    arrived = np.array([round(value / cluster_gpus / 10, 0) for value in arrived_milli])
    allocated = np.array([round(value / cluster_gpus / 10, 2) for value in allocated_milli])
    cells: list[float | None] = []
    for percent in range(LAST_PERCENT + 1):
        chosen = allocated[arrived == percent]
        if len(chosen) == 0:
            chosen = allocated[(arrived >= percent - 1) & (arrived <= percent + 1)]
        cells.append(round(float(np.mean(chosen)), 2) if len(chosen) else None)
    return cells


def unallocated_at(curve: Sequence[float | None], percent: int = 100) -> float | None:
    """Unallocated GPU % at `percent` arrived: 100 minus the curve's cell."""
    cell = curve[percent]
    return None if cell is None else round(100 - cell, 2)


def blank_reason(arrived_milli: Sequence[int], cluster_gpus: int, percent: int = 100) -> str | None:
    """Why the discrete curve's cell at `percent` arrived is blank, in one line; None when it is not.

    The authors leave a cell blank when no event's arrived % rounds to within one point of it
    (`../shared/research/fgd-experiment.md` section 6.2): on a small cluster one pod can carry
    the arrivals past the whole window, and below `--tune` 1 they never reach it.
    """
    arrived = [round(value / cluster_gpus / 10, 0) for value in arrived_milli]
    if any(percent - 1 <= value <= percent + 1 for value in arrived):
        return None
    exact = [value / cluster_gpus / 10 for value in arrived_milli]
    gpus = f"the cluster's {cluster_gpus} GPU{'s' if cluster_gpus != 1 else ''}"
    if not arrived or arrived[-1] < percent - 1:
        return f"arrivals reach only {exact[-1] if exact else 0.0:.1f} % of {gpus}"
    after = next(index for index, value in enumerate(arrived) if value > percent + 1)
    before = exact[after - 1] if after else 0.0
    return (f"no pod arrival lands within {percent - 1}-{percent + 1} % of {gpus}: one pod takes the arrivals "
            f"from {before:.1f} % to {exact[after]:.1f} %")
