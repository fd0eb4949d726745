"""The six packing policies of the FGD paper: each one's score and choice pinned on small hand-built nodes."""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import pytest

from policies import REGISTRY
from policies.fill import pod_of
from scheduler import fill
from scheduler.fill import FillNode, FillPod, NodeArrays
from scheduler.fill_fgd import PodType, Workload, fgd_scores, fragmentation, typical_pods
from scheduler.model import ClusterSnapshot, GpuRequest, GpuState, Job, Node, RequestKind, Share
from scheduler.plugin import Cycle
from scheduler.profile import parse_profile
from scheduler.tomlfile import TomlDocument
from simulator.fill import _Chooser
from tests.builders import make_pool


def state(*nodes: tuple[Sequence[int], int, str]) -> NodeArrays:
    """Nodes given as (free milli per GPU, CPU left, model); 1 TiB of memory each."""
    arrays = NodeArrays([FillNode(f"n{i}", cpu, 1 << 20, len(free), model) for i, (free, cpu, model) in enumerate(nodes)])
    for index, (free, _, _) in enumerate(nodes):
        arrays.free[index, : len(free)] = free
        arrays.free_total[index] = sum(free)
    return arrays


ALL = np.arange(3)


def share(milli: int, cpu: int = 1000) -> FillPod:
    return FillPod("p", cpu, 0, 1, milli)


def whole(gpus: int, cpu: int = 1000) -> FillPod:
    return FillPod("p", cpu, 0, gpus, 1000)


def test_gpu_packing_matches_the_authors_unit_test_values() -> None:
    # gpu_packing_score_test.go: [200,1000,1000,500] with 2 x 1000 -> 48; idle 4 GPUs -> 29, idle 8 -> 25;
    # [200,1000,1000,500] with 2 x 200 -> 93.
    nodes = state(([200, 1000, 1000, 500], 64000, "G"), ([1000] * 4, 64000, "G"), ([1000] * 8, 64000, "G"))
    assert list(fill.gpu_packing_scores(nodes, whole(2), ALL)) == [48, 29, 25]
    assert fill.gpu_packing_scores(nodes, FillPod("p", 1000, 0, 2, 200), np.array([0]))[0] == 93


def test_gpu_packing_prefers_a_shared_gpu_then_a_used_node_then_an_idle_one() -> None:
    nodes = state(([1000, 300], 64000, "G"), ([1000, 600], 64000, "G"), ([1000, 1000], 64000, "G"))
    # a 250m share: tightest fitting GPUs 300 (score 100 - 30//10 = 97) and 600 (94); idle node 31
    assert list(fill.gpu_packing_scores(nodes, share(250), ALL)) == [97, 94, 31]
    assert list(fill.gpu_packing_scores(nodes, FillPod("cpu", 1000, 0), ALL)) == [0, 0, 0]


def test_best_fit_takes_the_node_left_emptiest_in_cpu_and_gpu_and_normalises() -> None:
    nodes = state(([1000, 1000], 64000, "G"), ([1000, 0], 64000, "G"), ([1000, 0], 8000, "G"))
    raw = fill.best_fit_raw(nodes, whole(1), ALL)
    # 100 * (1 - (0.5 * 63000/128000 + 0.5 * 1000/8000)) = 69.14 -> 69; no GPU left: 75.39 -> 75;
    # no GPU and 7000m CPU left: 97.27 -> 97. Normalised: (raw - 69) * 100 // 28.
    assert list(raw) == [69, 75, 97]
    assert list(fill.best_fit_scores(nodes, whole(1), ALL)) == [0, 21, 100]


def test_dot_product_prefers_the_node_whose_free_resources_align_least() -> None:
    nodes = state(([1000] * 8, 128000, "G"), ([1000, 0], 16000, "G"), ([1000, 1000], 64000, "G"))
    scores = fill.dot_product_scores(nodes, whole(1, cpu=16000), ALL)
    # d = 1 * 0.125 + 1 * 0.125 = 0.25 -> 87; d = 0.125 * 0.125 + 0.125 * 0.125 -> 98; 0.5*0.125+0.25*0.125 -> 95
    assert list(scores) == [87, 98, 95]


def test_gpu_clustering_gathers_pods_of_one_kind() -> None:
    nodes = state(([1000] * 8, 64000, "G"), ([1000] * 8, 64000, "G"), ([1000] * 8, 64000, "G"))
    nodes.place(0, whole(2), [0, 1])  # a 2-GPU pod only
    nodes.place(1, whole(2), [0, 1])
    nodes.place(1, share(500), [2])  # 2-GPU and share pods
    scores = fill.gpu_clustering_scores(nodes, whole(2), ALL)
    # bonus 25 * 2000 // 8000 = 6 on node 0, 25 * 2500 // 8000 = 7 on node 1, 0 on the idle node
    assert list(scores) == [6 + 75, 7 + 50, 0 + 25]
    assert list(fill.gpu_clustering_scores(nodes, whole(1), ALL)) == [6, 7, 25]
    assert list(fill.gpu_clustering_scores(nodes, FillPod("cpu", 1000, 0), ALL)) == [0, 0, 0]


def test_fragmentation_counts_only_the_gpus_too_small_for_a_type_that_fits() -> None:
    # The authors' frag_test case 4x1080_used_lack_CPU: one type (6000m CPU, 465m) with weight 9.33 %,
    # L = [200, 1000, 1000, 500], 1000m CPU left: CPU lacking, so all 2700m count: 0.0933 * 2700 = 251.91.
    nodes = state(([200, 1000, 1000, 500], 1000, "1080"), ([200, 1000, 1000, 500], 64000, "1080"))
    workload = Workload([PodType(6000, 465, 1, (), 0.0933)], nodes.models)
    found = fragmentation(workload, nodes.cpu_left, nodes.free, nodes.model)
    assert found[0] == pytest.approx(251.91, abs=0.01)
    assert found[1] == pytest.approx(0.0933 * 200, abs=1e-9)  # with CPU: only the 200m GPU is too small
    gpu_only = Workload([PodType(6000, 465, 1, ("T4",), 1.0), PodType(1000, 0, 0, (), 1.0)], nodes.models)
    assert fragmentation(gpu_only, nodes.cpu_left, nodes.free, nodes.model)[1] == 2700 + 2700  # model excluded; CPU


def test_fgd_keeps_room_for_the_target_workload_where_best_fit_fills_the_tightest_gpu() -> None:
    # Target: 500m shares only. On L = [1000, 600] a 500m share on the 600m GPU leaves 100m that no
    # target pod can use (F: 0 -> 100, score trunc(100 * sigmoid(-0.1)) = 47); on the idle GPU F stays 0 (50).
    nodes = state(([1000, 600], 64000, "G"))
    workload = Workload([PodType(1000, 500, 1, (), 1.0)], nodes.models)
    before = fragmentation(workload, nodes.cpu_left, nodes.free, nodes.model)
    scores, gpus = fgd_scores(workload, nodes, share(500), np.array([0]), before)
    assert (scores[0], gpus[0]) == (50, 0)
    assert fill.best_gpu(nodes.free[0], 500) == 1


def test_fgd_prefers_the_node_where_fragmentation_falls() -> None:
    # Target: whole GPUs. A 400m share on the node whose only partly used GPU has 500m left turns
    # unusable room into used room (F falls by 400: score 59); on an idle node it breaks a whole GPU (F +600: 35).
    nodes = state(([500, 1000], 64000, "G"), ([1000, 1000], 64000, "G"))
    workload = Workload([PodType(1000, 1000, 1, (), 1.0)], nodes.models)
    before = fragmentation(workload, nodes.cpu_left, nodes.free, nodes.model)
    scores, gpus = fgd_scores(workload, nodes, share(400), np.arange(2), before)
    assert list(scores) == [59, 35] and list(gpus) == [0, 0]


def test_ties_go_to_the_lowest_rank_and_random_picks_uniformly() -> None:
    nodes = state(([1000] * 8, 64000, "G"), ([1000] * 8, 64000, "G"), ([1000] * 8, 64000, "G"))
    ranks = np.array([2, 0, 1])
    chooser = _Chooser("GpuPacking", nodes, ranks, None, random.Random(1))
    assert chooser.node(whole(1), ALL) == (1, -1)
    picks = {_Chooser("Random", nodes, ranks, None, random.Random(seed)).node(whole(1), ALL)[0] for seed in range(40)}
    assert picks == {0, 1, 2}


def test_typical_pods_keep_the_most_common_types_covering_95_percent() -> None:
    pods = [share(500)] * 60 + [whole(1)] * 30 + [whole(2)] * 6 + [FillPod("c", 2000, 0)] * 4
    types = typical_pods(pods)
    # 60 + 30 = 90 < 95, + 6 = 96 >= 95: three types, renormalised over 96
    assert [(t.gpu_milli, t.gpus) for t in types] == [(500, 1), (1000, 1), (1000, 2)]
    assert [t.probability for t in types] == [60 / 96, 30 / 96, 6 / 96]
    tied = typical_pods([share(300)] * 5 + [share(700)] * 5)
    assert [t.gpu_milli for t in tied] == [700, 300]  # equal counts: larger key first


def _framework_node(pool_name: str, gpus: Sequence[GpuState]) -> Node:
    return Node(name="n0", pool=pool_name, gpus=tuple(gpus))


def test_the_plugins_score_a_fleetsched_node_with_the_same_functions() -> None:
    sharing = make_pool("a100", gpus_per_node=4, sharing=True)
    node = _framework_node(sharing.name, [GpuState(shares=(Share("s", 700, 0),)), GpuState(), GpuState(), GpuState()])
    cycle = Cycle(0.0, ClusterSnapshot(pools={sharing.name: sharing}, nodes={"n0": node}))
    job = Job(id="j", request=GpuRequest(kind=RequestKind.SHARE, milli=250))
    assert pod_of(job) == FillPod("j", 0, 0, 1, 250)
    assert REGISTRY["GpuPacking"]().score(cycle, job, node) == 100 - 30 // 10  # the 300m GPU
    assert REGISTRY["GpuClustering"]().score(cycle, job, node) == 25 * (8000 - 3300) // 8000 + 75
    assert REGISTRY["DotProd"]().score(cycle, job, node) == 99  # d = 1 * 0 + (3300/8000) * (250/8000): 99.35
    assert REGISTRY["BestFit"]().score(cycle, job, node) == int(100 * (1 - (0.5 * 1.0 + 0.5 * 3050 / 8000)))
    fgd = REGISTRY["FGD"]()
    # Target = the job's own shape: on the 300m GPU it would strand 50m (score 48), on an idle GPU F stays 0.
    assert fgd.score(cycle, job, node) == 50
    assert 0 <= REGISTRY["Random"]().score(cycle, job, node) < 1


def test_a_profile_names_the_packing_policies_and_gives_fgd_its_target_workload() -> None:
    text = (
        'description = "FGD"\nplacer = "greedy"\nsort = "Fifo"\nfilter = ["GpuShareFit"]\n'
        'score = [{ name = "FGD", weight = 1 }]\n\n[args.FGD]\ngpu_milli = [1000]\ngpus = [1]\nweights = [1.0]\n'
    )
    profile = parse_profile(TomlDocument.parse(text, "fgd.toml"), REGISTRY)
    (fgd, _weight), = profile.score
    sharing = make_pool("a100", gpus_per_node=2, sharing=True)
    node = _framework_node(sharing.name, [GpuState(shares=(Share("s", 500, 0),)), GpuState()])
    cycle = Cycle(0.0, ClusterSnapshot(pools={sharing.name: sharing}, nodes={"n0": node}))
    job = Job(id="j", request=GpuRequest(kind=RequestKind.SHARE, milli=400))
    # Target: whole GPUs. 400m on the half-used GPU: F 500 -> 100 (score 59); on the idle one F 500 -> 1100.
    assert fgd.score(cycle, job, node) == 59


def test_fgd_scores_nodes_in_one_state_once_and_alike(monkeypatch: pytest.MonkeyPatch) -> None:
    """Seven nodes in three states (two share GPUs in another order: a share's GPU differs):
    the scorer computes each state once, and every node scores as a fresh computation says,
    before and after a placement moves a node into a state already known."""
    from scheduler import fill_fgd

    nodes = state(*[([1000, 500, 1000, 1000], 32000, "G")] * 3, *[([1000] * 4, 32000, "G")] * 2,
                  ([500, 1000, 1000, 1000], 32000, "G"), ([1000] * 4, 16000, "G"))  # fmt: skip
    workload = Workload([PodType(1000, 500, 1, (), 0.5), PodType(4000, 1000, 2, (), 0.5)], nodes.models)
    every = np.arange(7)
    calls: list[int] = []
    real = fill_fgd.fgd_scores

    def counting(*arguments: object) -> tuple[np.ndarray, np.ndarray]:
        calls.append(len(arguments[3]))  # type: ignore[arg-type]
        return real(*arguments)  # type: ignore[arg-type]

    monkeypatch.setattr(fill_fgd, "fgd_scores", counting)
    scorer = fill_fgd.FgdScorer(workload, nodes)
    before = fragmentation(workload, nodes.cpu_left, nodes.free, nodes.model)
    for pod in (share(500), whole(2)):
        got = scorer.scores(pod, every)
        expected = real(workload, nodes, pod, every, before)
        assert [list(part) for part in got] == [list(part) for part in expected]
    assert calls == [4, 4]  # four distinct states of seven nodes, once per pod type
    nodes.place(4, FillPod("p", 0, 0, 1, 500), [1])  # node 4 now matches nodes 0-2: nothing new to compute
    scorer.changed(4)
    after = fragmentation(workload, nodes.cpu_left, nodes.free, nodes.model)
    got = scorer.scores(share(500), every)
    assert [list(part) for part in got] == [list(part) for part in real(workload, nodes, share(500), every, after)]
    assert got[0][4] == got[0][0] and calls == [4, 4]
