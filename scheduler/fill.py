"""The FGD packing experiment's cluster state and the five simple policies' scores, vectorised over nodes.

This is the one definition of each packing policy's score (Weng et al., "Beware of Fragmentation:
Scheduling GPU-Sharing Workloads with Fragmentation Gradient Descent", USENIX ATC'23, and the
authors' simulator hkust-adsl/kubernetes-scheduler-simulator; `../shared/research/fgd-experiment.md`
section 5 gives every formula with its source lines). `simulator.fill` calls these functions for
all feasible nodes at once; the plugins in `policies.fill` call them for one node. Scores are the
authors' integers, so ties (broken by a seeded node rank) fall where theirs do.

Units: CPU in milli-cores, memory in MiB, GPU in milli-GPU (1000 = one GPU). A node has at most
MAX_GPUS GPUs; the columns past a node's own GPUs hold ABSENT so that no request fits them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

MILLI = 1000
MAX_GPUS = 8
ABSENT = -1
MAX_SPEC_CPU_MILLI = 128_000  # the authors' normalisers (open-gpu-share utils/const.go)
MAX_SPEC_GPU_MILLI = 8_000
MAX_PODS_PER_NODE = 1001
SHARE_TAG = 0  # GpuClustering's affinity tags: share-gpu is 0, "<k>-gpu" is k

Ints = NDArray[np.int64]


@dataclass(frozen=True, slots=True)
class FillPod:
    """One pod of an openb list: CPU, memory, GPUs and per-GPU milli, the GPU models it accepts."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int = 0
    gpu_milli: int = 0  # per GPU; 0 for a CPU-only pod
    models: tuple[str, ...] = ()  # empty: any model

    @property
    def total_gpu_milli(self) -> int:
        return self.gpus * self.gpu_milli

    @property
    def is_share(self) -> bool:
        return self.gpus == 1 and 0 < self.gpu_milli < MILLI

    @property
    def kind(self) -> tuple[int, int, int, str]:
        """The FGD pod type (CPU, per-GPU milli, GPUs, spec); memory is not part of it."""
        return (self.cpu_milli, self.gpu_milli, self.gpus, "|".join(self.models))

    @property
    def tag(self) -> int:
        """GpuClustering's affinity tag: SHARE_TAG for a share, else the GPU count (-1 for CPU-only)."""
        if self.gpus == 0:
            return -1
        return SHARE_TAG if self.gpu_milli < MILLI else self.gpus


@dataclass(frozen=True, slots=True)
class FillNode:
    """One node of an openb node list."""

    name: str
    cpu_milli: int
    memory_mib: int
    gpus: int
    model: str


class NodeArrays:
    """The mutable state of every node: what is left of CPU, memory, pod slots and each GPU."""

    def __init__(self, nodes: Sequence[FillNode]) -> None:
        count = len(nodes)
        self.models = sorted({node.model for node in nodes})
        self.model: Ints = np.array([self.models.index(node.model) for node in nodes], dtype=np.int64)
        self.gpus: Ints = np.array([node.gpus for node in nodes], dtype=np.int64)
        self.cpu_left: Ints = np.array([node.cpu_milli for node in nodes], dtype=np.int64)
        self.memory_left: Ints = np.array([node.memory_mib for node in nodes], dtype=np.int64)
        self.pods: Ints = np.zeros(count, dtype=np.int64)
        self.free: Ints = np.full((count, MAX_GPUS), ABSENT, dtype=np.int64)
        for index, node in enumerate(nodes):
            self.free[index, : node.gpus] = MILLI
        self.free_total: Ints = self.gpus * MILLI
        self.tags: Ints = np.zeros((count, MAX_GPUS + 1), dtype=np.int64)  # GPU pods per tag

    def place(self, node: int, pod: FillPod, gpus: Sequence[int]) -> None:
        """Commits `pod` on `node`, taking `pod.gpu_milli` from each GPU index in `gpus`."""
        self.cpu_left[node] -= pod.cpu_milli
        self.memory_left[node] -= pod.memory_mib
        self.pods[node] += 1
        for gpu in gpus:
            self.free[node, gpu] -= pod.gpu_milli
        self.free_total[node] -= pod.gpu_milli * len(gpus)
        if pod.tag >= 0:
            self.tags[node, pod.tag] += 1


def model_mask(state: NodeArrays, models: Sequence[str]) -> NDArray[np.bool_]:
    """Nodes whose GPU model a pod accepts (every node when it names none)."""
    if not models:
        return np.ones(len(state.model), dtype=np.bool_)
    wanted = [state.models.index(name) for name in models if name in state.models]
    return np.isin(state.model, wanted)


def feasible(state: NodeArrays, pod: FillPod, models_ok: NDArray[np.bool_]) -> Ints:
    """Indices of the nodes that pass the filter: CPU, memory, pod count, then GPU model and GPU room."""
    fits = (state.cpu_left >= pod.cpu_milli) & (state.memory_left >= pod.memory_mib) & (state.pods < MAX_PODS_PER_NODE)
    if pod.gpu_milli > 0:
        fits &= models_ok & ((state.free >= pod.gpu_milli).sum(axis=1) >= pod.gpus)
    return np.flatnonzero(fits)


def dot_product_scores(state: NodeArrays, pod: FillPod, nodes: Ints) -> Ints:
    """DotProd: 100 * (1 - d/2) where d is the dot product of the pod's and node's free (CPU, GPU), normalised."""
    node_cpu = state.cpu_left[nodes] / MAX_SPEC_CPU_MILLI
    node_gpu = state.free_total[nodes] / MAX_SPEC_GPU_MILLI
    product = node_cpu * (pod.cpu_milli / MAX_SPEC_CPU_MILLI) + node_gpu * (pod.total_gpu_milli / MAX_SPEC_GPU_MILLI)
    return np.trunc(100 * (1 - product / 2)).astype(np.int64)


def gpu_clustering_scores(state: NodeArrays, pod: FillPod, nodes: Ints) -> Ints:
    """GpuClustering: a bonus for a fuller node plus 75/50/25/0 for holding only/also/no/other pods of its kind."""
    if pod.gpus == 0:
        return np.zeros(len(nodes), dtype=np.int64)
    bonus = (25 * (MAX_SPEC_GPU_MILLI - state.free_total[nodes])) // MAX_SPEC_GPU_MILLI
    tags = state.tags[nodes]
    kinds = (tags > 0).sum(axis=1)
    mine = tags[:, pod.tag] > 0
    affinity = np.where(mine & (kinds == 1), 75, np.where(mine, 50, np.where(kinds == 0, 25, 0)))
    return (bonus + affinity).astype(np.int64)


def gpu_packing_scores(state: NodeArrays, pod: FillPod, nodes: Ints) -> Ints:
    """GpuPacking: 33 - G on an idle node, 50 - idle GPUs taken on a used one, 100 - room left/100 on shares."""
    if pod.gpus == 0:
        return np.zeros(len(nodes), dtype=np.int64)
    gpus = state.gpus[nodes]
    idle_node = state.free_total[nodes] == gpus * MILLI
    ascending = np.sort(state.free[nodes], axis=1)  # stable order of equal room does not change the sums
    fitting = ascending >= pod.gpu_milli
    picked = fitting & (np.cumsum(fitting, axis=1) <= pod.gpus)
    idle_taken = (picked & (ascending == MILLI)).sum(axis=1)
    room = np.where(picked, (ascending * 100) // MILLI, 0).sum(axis=1)
    opening = np.where(idle_taken > 0, np.maximum(50 - idle_taken, 33), np.maximum(100 - room // 10, 50))
    return np.where(idle_node, 33 - gpus, opening).astype(np.int64)


def best_fit_raw(state: NodeArrays, pod: FillPod, nodes: Ints) -> Ints:
    """BestFit before normalising: trunc(100 * (1 - (0.5 CPU left / 128 cores + 0.5 GPU-milli left / 8000)))."""
    cpu = 0.5 * (state.cpu_left[nodes] - pod.cpu_milli) / MAX_SPEC_CPU_MILLI
    gpu = 0.5 * (state.free_total[nodes] - pod.total_gpu_milli) / MAX_SPEC_GPU_MILLI
    return np.trunc(100 * (1 - (cpu + gpu))).astype(np.int64)


def best_fit_scores(state: NodeArrays, pod: FillPod, nodes: Ints) -> Ints:
    """BestFit: the raw score min-max normalised over `nodes` to 0..100 (integer), 0 when all are equal."""
    raw = best_fit_raw(state, pod, nodes)
    if len(raw) == 0:
        return raw
    low, high = int(raw.min()), int(raw.max())
    if high == low:
        return np.zeros(len(nodes), dtype=np.int64)
    return ((raw - low) * 100) // (high - low)


def only_node() -> Ints:
    """The index array naming the single node of a one-node state."""
    return np.zeros(1, dtype=np.int64)


def best_gpu(free: Ints, milli: int) -> int:
    """open-gpu-share's `best` choice for a share: the GPU with the least room that fits, lowest index first."""
    return int(np.where(free >= milli, free, MILLI + 1).argmin())


def whole_gpus(free: Ints, count: int) -> list[int]:
    """The `count` lowest-index idle GPUs (every policy places whole-GPU pods so)."""
    return [int(index) for index in np.flatnonzero(free == MILLI)[:count]]
