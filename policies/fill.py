"""The FGD paper's six packing policies as score plugins (Weng et al., "Beware of Fragmentation", USENIX ATC'23).

Each plugin asks `scheduler.fill` (or `scheduler.fill_fgd`) for its score of one node, the same
function `fleetsched fill` calls for all nodes at once, so each policy is defined once. Scores
are the authors' integers (0..100, higher is better). Sources: hkust-adsl/kubernetes-scheduler-
simulator, `pkg/simulator/plugin/*_score.go`, as `../shared/research/fgd-experiment.md` section 5
reads them.

Departures in `simulate` (not in `fill`): fleetsched's nodes carry no CPU or host memory, so the
CPU terms see an idle 128-core node and a pod asking no CPU; ties go to the Framework's order,
not to a seeded node rank; the Framework scores one node per class of equal GPU state, so
GpuClustering cannot tell whole-GPU pods apart by size (every held GPU counts as one pod of the
asking job's size) and Random draws one number per class rather than per node.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar

from scheduler import fill
from scheduler.fill import FillNode, FillPod, Ints, NodeArrays
from scheduler.fill_fgd import PodType, Workload, fgd_scores, fragmentation
from scheduler.model import FULL_GPU_MILLI, Job, Node, RequestKind
from scheduler.plugin import Cycle, Plugin

ScoreFunction = Callable[[NodeArrays, FillPod, Ints], Ints]


def pod_of(job: Job) -> FillPod:
    """One replica of `job` as a fill pod (no CPU or memory: fleetsched does not model them)."""
    request = job.request
    if request.kind is RequestKind.SHARE:
        return FillPod(job.id, 0, 0, 1, request.milli, tuple(sorted(job.gpu_models)))
    if request.kind is RequestKind.WHOLE:
        return FillPod(job.id, 0, 0, request.gpus, FULL_GPU_MILLI, tuple(sorted(job.gpu_models)))
    return FillPod(job.id, 0, 0)  # MIG: no GPU-milli view; scored as a CPU-only pod


def state_of(cycle: Cycle, node: Node, job: Job) -> NodeArrays:
    """A one-node fill state from a fleetsched node: each GPU's free milli, and its pods' tags."""
    model = cycle.pool_of(node).gpu.name
    state = NodeArrays([FillNode(node.name, fill.MAX_SPEC_CPU_MILLI, 0, len(node.gpus), model)])
    held = Counter[int]()
    for index, gpu in enumerate(node.gpus):
        state.free[0, index] = 0 if gpu.owner is not None or gpu.mig else FULL_GPU_MILLI - gpu.used_milli
        held[fill.SHARE_TAG] += len(gpu.shares)
        if gpu.owner is not None:
            held[max(1, pod_of(job).gpus) if job.request.kind is RequestKind.WHOLE else 1] += 1
    state.free_total[0] = int(state.free[0, : len(node.gpus)].sum())
    for tag, count in held.items():
        state.tags[0, tag] = count
    return state


SCORES: dict[str, ScoreFunction] = {
    "DotProd": fill.dot_product_scores,
    "GpuClustering": fill.gpu_clustering_scores,
    "GpuPacking": fill.gpu_packing_scores,
    "BestFit": fill.best_fit_raw,
}


class _FillScore(Plugin):
    """A fill policy's score of one node, in the authors' integer points."""

    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float] | None] = (0.0, 100.0)

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        state = state_of(cycle, node, job)
        return float(SCORES[self.name](state, pod_of(job), fill.only_node())[0])


class DotProd(_FillScore):
    """DotProd (Tetris-style alignment, a baseline of Weng et al., ATC'23; `dot_product_score.go`).

    100 * (1 - d/2) with d the dot product of the pod's request and the node's free (CPU / 128 cores,
    GPU-milli / 8000): the node whose free resources align least with the request, i.e. the fullest.
    As the authors' runs do (dimext merge), the GPU is summed over the node, and a share then takes
    the tightest GPU that fits. Departs only in `simulate` (no CPU; see the module).
    """

    name = "DotProd"


class GpuClustering(_FillScore):
    """GpuClustering (a baseline of Weng et al., ATC'23; `gpu_clustering_score.go`): pods of one kind together.

    25 * (8000 - free GPU-milli) div 8000, plus 75 when the node holds only pods of the job's kind
    (share, or k whole GPUs), 50 when also others, 25 when no GPU pod, 0 when only other kinds;
    CPU-only pods score 0 everywhere. Departs only in `simulate`: held GPUs are not told apart by
    their pod's size there (see the module).
    """

    name = "GpuClustering"


class GpuPacking(_FillScore):
    """GpuPacking (a baseline of Weng et al., ATC'23; `gpu_packing_score.go`): shared GPUs, used nodes, idle.

    Shares: 100 - (room left on the tightest GPU that fits)/100, floored at 50; opening idle GPUs on
    a used node: 50 - GPUs opened, floored at 33; an idle node: 33 - its GPU count. Same as the
    authors' code; departs only in `simulate` (ties; see the module).
    """

    name = "GpuPacking"


class BestFit(_FillScore):
    """BestFit (a baseline of Weng et al., ATC'23; `best_fit_score.go`): the node left with the least CPU and GPU.

    trunc(100 * (1 - (0.5 CPU left / 128 cores + 0.5 GPU-milli left / 8000))). The authors then
    min-max normalise over the feasible nodes; that keeps the order (`fill` does it), and here each
    node is scored alone, so the raw integer is returned (a departure that changes no choice).
    """

    name = "BestFit"


class Random(Plugin):
    """Random (a baseline of Weng et al., ATC'23; `random_score.go`): any feasible node, uniformly.

    The authors mark one feasible node at random; here each node class draws a number from the
    cycle's seeded generator (simulate only; `fill` picks a node uniformly).
    """

    name = "Random"
    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float] | None] = (0.0, 1.0)

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        return cycle.rng.random()


@dataclass(frozen=True, slots=True)
class FgdArgs:
    """The target workload as parallel lists: per-GPU milli, GPUs and weight of each pod type.

    Empty: the target is the asking job's own shape (fragmentation as that job sees it).
    """

    gpu_milli: list[int] = field(default_factory=list)
    gpus: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)


class FGD(Plugin):
    """FGD, fragmentation gradient descent (Weng et al., ATC'23, section 4; `fgd_score.go`, `frag.go`).

    trunc(100 * sigmoid((F(n) - F(n')) / 1000)): the node whose expected fragmentation against the
    target workload grows least (`scheduler.fill_fgd`). The authors take the target from the
    trace's most common pod types; `fill` does the same. Departs (simulate only): the target comes
    from the profile's `[args.FGD]` lists or, when they are empty, the asking job; CPU is not modelled.
    """

    name = "FGD"
    Args = FgdArgs
    job_fields = frozenset[str]()
    higher_is_better: ClassVar[bool] = True
    score_range: ClassVar[tuple[float, float] | None] = (0.0, 100.0)

    def score(self, cycle: Cycle, job: Job, node: Node) -> float:
        args = self.args if isinstance(self.args, FgdArgs) else FgdArgs()
        pod = pod_of(job)
        if args.weights:
            total = sum(args.weights)
            types = [PodType(0, milli, gpus if milli else 0, (), weight / total)
                     for milli, gpus, weight in zip(args.gpu_milli, args.gpus, args.weights, strict=False)]
        else:
            types = [PodType(0, pod.gpu_milli, pod.gpus, (), 1.0)]
        state = state_of(cycle, node, job)
        workload = Workload(types, state.models)
        before = fragmentation(workload, state.cpu_left, state.free, state.model)
        scores, _ = fgd_scores(workload, state, pod, fill.only_node(), before)
        return float(scores[0])
