"""FGD, fragmentation gradient descent (Weng et al., USENIX ATC'23): the target workload, node fragmentation, scores.

A node's fragmentation F(n) is the GPU-milli that the target workload's pod types, weighted by their
share of the workload, could not use there (`../shared/research/fgd-experiment.md` section 5.6, from
the authors' `pkg/utils/frag.go`): a type whose GPUs and CPU fit counts only the GPUs too small for
it; any other type (CPU-only types included, as the authors' code does) counts all the node's free
GPU-milli. FGD places a pod where F grows least, scored as the authors do,
trunc(100 * sigmoid((F(n) - F(n')) / 1000)), and a share goes to the first GPU with the best score.

F is summed as the authors' code sums it (per class, type by type). Departure: numpy's exp may
differ from Go's math.Exp in the last bit, so a score could differ by one at an exact truncation
boundary.
"""

from __future__ import annotations

from bisect import bisect_left
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import cast

import numpy as np
from numpy.typing import NDArray

from scheduler.fill import MAX_GPUS, MILLI, FillPod, Ints, NodeArrays

Floats = NDArray[np.float64]
POPULARITY = 0.95  # the authors' podPopularityThreshold: the most common types covering 95 % of pods


@dataclass(frozen=True, slots=True)
class PodType:
    """A target workload's pod type and its probability."""

    cpu_milli: int
    gpu_milli: int
    gpus: int
    models: tuple[str, ...]
    probability: float


def typical_pods(pods: Sequence[FillPod]) -> tuple[PodType, ...]:
    """The most common pod types covering >= 95 % of `pods` (ties: larger key first), renormalised.

    The key is (CPU, per-GPU milli, GPUs, model list): memory is not part of it.
    """
    counts = Counter(pod.kind for pod in pods)
    ordered = sorted(counts.items(), key=lambda item: (item[1], item[0]), reverse=True)
    kept: list[tuple[tuple[int, int, int, str], int]] = []
    covered = 0
    for key, count in ordered:
        if covered * 100 >= POPULARITY * 100 * len(pods):
            break
        kept.append((key, count))
        covered += count
    return tuple(
        PodType(cpu, milli, gpus, tuple(filter(None, spec.split("|"))), (count / len(pods)) / (covered / len(pods)))
        for (cpu, milli, gpus, spec), count in kept
    )


class Workload:
    """The typical pod types as arrays over the node list's GPU models."""

    def __init__(self, types: Sequence[PodType], models: Sequence[str]) -> None:
        self.types = tuple(types)
        self.cpu: Ints = np.array([t.cpu_milli for t in types], dtype=np.int64)
        self.milli: Ints = np.array([t.gpu_milli for t in types], dtype=np.int64)
        self.gpus: Ints = np.array([t.gpus for t in types], dtype=np.int64)
        self.probability: Floats = np.array([t.probability for t in types], dtype=np.float64)
        self.allowed = np.array(
            [[not t.models or model in t.models for model in models] for t in types], dtype=np.bool_
        ).reshape(len(types), len(models))
        self._rows: dict[int, list[tuple[float, int, int, int, bool]]] = {}

    def rows(self, model: int) -> list[tuple[float, int, int, int, bool]]:
        """Each type as (probability, CPU milli, GPU milli, GPUs, allowed on `model`), in type order."""
        if model not in self._rows:
            self._rows[model] = [(t.probability, t.cpu_milli, t.gpu_milli, t.gpus, bool(self.allowed[index, model]))
                                 for index, t in enumerate(self.types)]  # fmt: skip
        return self._rows[model]


def fragmentation(workload: Workload, cpu_left: Ints, free: Ints, model: Ints) -> Floats:
    """F for each state: `cpu_left` (...), `free` (..., MAX_GPUS) with absent GPUs < 0, `model` (...)."""
    room = np.maximum(free, 0)
    total = room.sum(axis=-1)[..., None]  # (..., 1)
    milli = workload.milli
    below = free[..., None, :] < milli[:, None]  # (..., T, GPUs): the GPU has less free than the type asks
    fits_gpu = free.shape[-1] - below.sum(axis=-1) >= workload.gpus  # (..., T)
    # The free milli of the GPUs too small for each type, as one matrix product (whole numbers
    # far below 2**53, so exact in float64).
    too_small = np.matmul(below.astype(np.float64), room[..., :, None].astype(np.float64))[..., 0]  # (..., T)
    cpu_ok = cpu_left[..., None] >= workload.cpu
    allowed = np.moveaxis(workload.allowed[:, model], 0, -1)  # (..., T)
    gpu_type = milli > 0
    usable = gpu_type & allowed & fits_gpu & cpu_ok  # Q3: only the too-small GPUs are fragment
    weighted = np.where(usable, workload.probability * too_small, workload.probability * total)
    # The authors add each type's term into its class's sum in type order, then the sums in the
    # order Q1, Q2 (which holds Q3's fragment), Q4, XL, XR, NA. cumsum adds left to right as they
    # do (a plain numpy sum would pair terms up and could round differently).
    gpu_ok = gpu_type & allowed
    classes = (
        gpu_ok & ~fits_gpu & ~cpu_ok,
        gpu_ok & cpu_ok,
        gpu_ok & fits_gpu & ~cpu_ok,
        ~gpu_type & cpu_ok,
        ~gpu_type & ~cpu_ok,
        gpu_type & ~allowed,
    )
    sums = np.cumsum(np.where(np.stack(classes), weighted, 0.0), axis=-1)[..., -1]  # (6, ...): one sum per class
    result: Floats = np.zeros(weighted.shape[:-1], dtype=np.float64)
    for class_sum in sums:
        result = result + class_sum
    return result


def node_fragmentation(workload: Workload, cpu_left: int, free: Sequence[int], model: int) -> float:
    """F of one node, summed one type at a time into the authors' class sums (cheaper than numpy for one node).

    The GPUs are taken in order of free milli once, so each type's count of GPUs that fit and
    the milli of those too small for it are a bisection and a prefix sum (whole numbers: the
    order they are added in does not matter; the float sums keep the authors' order)."""
    ordered = sorted(free)
    prefix = [0]
    for milli in ordered:
        prefix.append(prefix[-1] + max(milli, 0))
    total, gpus = prefix[-1], len(ordered)
    sums = [0.0] * 6  # Q1, Q2 (with Q3's fragment), Q4, XL, XR, NA: the order the authors add them
    for probability, cpu_milli, gpu_milli, wanted, allowed in workload.rows(model):
        cpu_ok = cpu_left >= cpu_milli
        if gpu_milli == 0:
            sums[3 if cpu_ok else 4] += probability * total
        elif not allowed:
            sums[5] += probability * total
        else:
            below = bisect_left(ordered, gpu_milli)  # GPUs with less free than the type asks
            if gpus - below >= wanted:
                if cpu_ok:
                    sums[1] += probability * prefix[below]
                else:
                    sums[2] += probability * total
            else:
                sums[1 if cpu_ok else 0] += probability * total
    return sums[0] + sums[1] + sums[2] + sums[3] + sums[4] + sums[5]


def _score(before: Floats, after: Floats) -> Ints:
    """trunc(100 * sigmoid((before - after) / 1000)): 50 when F does not change, more when it falls."""
    return np.trunc(100 * (1 / (1 + np.exp(-(before - after) / MILLI)))).astype(np.int64)


def fgd_scores(workload: Workload, state: NodeArrays, pod: FillPod, nodes: Ints, before: Floats) -> tuple[Ints, Ints]:
    """FGD's score of each node in `nodes` for `pod`, and the GPU a share would take there (-1 otherwise).

    `before` is F of those nodes now. A share tries each GPU that fits and keeps the first best;
    any other pod takes, in F's view, the first `gpus` GPUs that fit in ascending order of room.
    """
    free = state.free[nodes]
    cpu_after = state.cpu_left[nodes] - pod.cpu_milli
    model = state.model[nodes]
    if pod.is_share:
        trial = np.repeat(free[:, None, :], MAX_GPUS, axis=1)
        fits = free >= pod.gpu_milli
        trial[:, np.arange(MAX_GPUS), np.arange(MAX_GPUS)] -= pod.gpu_milli
        widen = np.repeat(cpu_after[:, None], MAX_GPUS, axis=1), np.repeat(model[:, None], MAX_GPUS, axis=1)
        after = fragmentation(workload, widen[0], trial, widen[1])
        scores = np.where(fits, _score(before[:, None], after), -1)
        return scores.max(axis=1), scores.argmax(axis=1)
    ascending = np.sort(free, axis=1)
    fitting = ascending >= pod.gpu_milli if pod.gpus else np.zeros_like(ascending, dtype=np.bool_)
    taken = fitting & (np.cumsum(fitting, axis=1) <= pod.gpus)
    after = fragmentation(workload, cpu_after, ascending - pod.gpu_milli * taken, model)
    return _score(before, after), np.full(len(nodes), -1, dtype=np.int64)


class FgdScorer:
    """FGD's scores with memory: a node's scores for a pod type hold until the node changes, and
    nodes in the same state (CPU left, GPU model, each GPU's free milli, in GPU order) share
    them: a score is a function of that state alone, so it is computed once per state and pod
    type, however many nodes are in it and however often one returns to it."""

    #: States remembered per pod type before the memory starts afresh (about 100 bytes each).
    MAX_STATES = 200_000

    def __init__(self, workload: Workload, state: NodeArrays) -> None:
        self.workload = workload
        self.state = state
        self.before = fragmentation(workload, state.cpu_left, state.free, state.model)
        self._kinds: dict[tuple[int, int, int, str], int] = {}
        # One row per pod type seen: each node's score (-1: stale) and a share's GPU there.
        self._scores: Ints = np.full((8, len(state.gpus)), -1, dtype=np.int64)
        self._gpus: Ints = np.full((8, len(state.gpus)), -1, dtype=np.int64)
        self._by_state: list[dict[bytes, tuple[int, int]]] = []
        self._fragmentation: dict[tuple[int, ...], float] = {}  # F by node state, as scores

    def scores(self, pod: FillPod, nodes: Ints) -> tuple[Ints, Ints]:
        """Scores and share GPU choices of `nodes` for `pod`, computing only the stale ones."""
        kind = self._kinds.setdefault(pod.kind, len(self._kinds))
        if kind == len(self._scores):  # room for more pod types: double the rows
            self._scores = np.vstack([self._scores, np.full_like(self._scores, -1)])
            self._gpus = np.vstack([self._gpus, np.full_like(self._gpus, -1)])
        if kind == len(self._by_state):
            self._by_state.append({})
        scores, gpus = self._scores[kind], self._gpus[kind]
        stale = nodes[scores[nodes] < 0]
        if len(stale):
            scores[stale], gpus[stale] = self._by_state_scores(pod, self._by_state[kind], stale)
        return scores[nodes], gpus[nodes]

    def _by_state_scores(self, pod: FillPod, known: dict[bytes, tuple[int, int]], stale: Ints) -> tuple[Ints, Ints]:
        """The scores of the `stale` nodes, computed for the states not met before, one node each."""
        state = self.state
        rows = np.ascontiguousarray(np.column_stack([state.cpu_left[stale], state.model[stale], state.free[stale]]))
        # Each row's bytes as one value (a C loop), then the distinct ones in order of first sight.
        row_bytes = cast(list[bytes], rows.view(np.dtype((np.void, rows.shape[1] * rows.itemsize))).ravel().tolist())
        slot: dict[bytes, int] = {}
        inverse = np.array([slot.setdefault(key, len(slot)) for key in row_bytes], dtype=np.int64)
        keys = list(slot)
        first = np.zeros(len(keys), dtype=np.int64)
        first[inverse] = np.arange(len(inverse))  # a node in each state (any one: they score alike)
        new = [index for index, key in enumerate(keys) if key not in known]
        if new:
            if len(known) + len(new) > self.MAX_STATES:
                known.clear()
                new = list(range(len(keys)))
            picked = stale[first[new]]
            computed = fgd_scores(self.workload, state, pod, picked, self.before[picked])
            for index, score, gpu in zip(new, computed[0].tolist(), computed[1].tolist(), strict=True):
                known[keys[index]] = (score, gpu)
        found = np.array([known[key] for key in keys], dtype=np.int64).reshape(len(keys), 2)
        spread = found[inverse]
        return spread[:, 0], spread[:, 1]

    def changed(self, node: int) -> None:
        """Forgets what held for `node` before a pod was placed on it."""
        state = self.state
        free = [int(milli) for milli in state.free[node]]
        key = (int(state.cpu_left[node]), int(state.model[node]), *free)
        if key not in self._fragmentation:
            if len(self._fragmentation) > self.MAX_STATES:
                self._fragmentation.clear()
            self._fragmentation[key] = node_fragmentation(self.workload, key[0], free, key[1])
        self.before[node] = self._fragmentation[key]
        self._scores[:, node] = -1


def total_fragmentation(workload: Workload, state: NodeArrays) -> float:
    """The cluster's fragmentation, sum of F over all nodes (GPU-milli)."""
    return float(fragmentation(workload, state.cpu_left, state.free, state.model).sum())


__all__ = ["MILLI", "FgdScorer", "PodType", "Workload", "fgd_scores", "fragmentation", "typical_pods"]
