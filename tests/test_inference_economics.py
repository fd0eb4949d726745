"""Cost per million tokens and per thousand requests, checked by hand on a small replay.

Two fixed pools of one 4-GPU node: `a` (A100-80GB, $8/node-hour = $2/GPU-hour) and `h`
(H100-80GB, $16/node-hour = $4/GPU-hour). Replicas of service `chat`, 2 GPUs each:
- A on A100 for 3,600 s: 1,000 requests, 3M input and 1M output tokens; 2 x 1 h x $2 = $4;
- B on H100 for 1,800 s: 500 requests, 1M input and 1M output tokens; 2 x 0.5 h x $4 = $4;
- D asks 8 GPUs of A100 (no node has them): never runs, costs nothing, its 7 requests unserved;
and C, a 2-GPU batch job on A100 for 3,600 s ($4), which is no service's.

chat: $8 for 1,500 requests and 6M tokens (2M output): $1.3333 per million tokens, $4 per
million output tokens, $5.3333 per thousand requests. A100: $4 / 4M tokens = $1, $4 per M
output, $4 per k requests; H100: $4 / 2M = $2, $4, $8. The cluster's bill (an hour of both
nodes) is $24: $4 per million tokens served.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType

import policies
from fleetsched import api
from scheduler.cluster import Cluster
from scheduler.model import Job, JobKind
from scheduler.observed import Served
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from tests.builders import make_pool, whole

SAMPLES = Path(__file__).resolve().parent.parent / "traces" / "samples"


def cluster() -> Cluster:
    pools = {"a": make_pool("a", gpu="A100-80GB", gpus_per_node=4, usd_per_node_hour=8.0),
             "h": make_pool("h", gpu="H100-80GB", gpus_per_node=4, usd_per_node_hour=16.0)}  # fmt: skip
    return Cluster("hand.toml", MappingProxyType(pools))


def service(job_id: str, model: str, duration_s: float, served: tuple[int, int, int], gpus: int = 2) -> Job:
    requests, input_tokens, output_tokens = served
    return Job(id=job_id, request=whole(gpus), duration_s=duration_s, gpu_models=frozenset({model}),
               kind=JobKind.SERVICE, served=Served(service="chat", requests=requests, input_tokens=input_tokens,
                                                   output_tokens=output_tokens))  # fmt: skip


JOBS = [
    service("A", "A100-80GB", 3600.0, (1000, 3_000_000, 1_000_000)),
    service("B", "H100-80GB", 1800.0, (500, 1_000_000, 1_000_000)),
    Job(id="C", request=whole(2), duration_s=3600.0, gpu_models=frozenset({"A100-80GB"})),
    service("D", "A100-80GB", 3600.0, (7, 70, 7), gpus=8),
]


def replay(jobs: list[Job]) -> dict[str, object]:
    result = simulate(jobs, cluster(), Scheduler(policies.profile("default")), SimOptions(check=True))
    return summary(result)


def test_cost_per_token_and_request_match_the_hand_computation() -> None:
    document = replay(JOBS)
    inference = document["inference"]
    assert isinstance(inference, dict)
    assert inference["by_service"] == {"chat": {
        "replicas": 3, "requests": 1500, "requests_unserved": 7, "input_tokens": 4_000_000,
        "output_tokens": 2_000_000, "cost_usd": 8.0, "usd_per_million_tokens": 1.3333,
        "usd_per_million_output_tokens": 4.0, "usd_per_thousand_requests": 5.3333,
    }}  # fmt: skip
    by_model = inference["by_gpu_model"]
    assert by_model["A100-80GB"] == {
        "replicas": 1, "requests": 1000, "requests_unserved": 0, "input_tokens": 3_000_000,
        "output_tokens": 1_000_000, "cost_usd": 4.0, "usd_per_million_tokens": 1.0,
        "usd_per_million_output_tokens": 4.0, "usd_per_thousand_requests": 4.0,
    }  # fmt: skip
    assert (by_model["H100-80GB"]["cost_usd"], by_model["H100-80GB"]["usd_per_million_tokens"],
            by_model["H100-80GB"]["usd_per_thousand_requests"]) == (4.0, 2.0, 8.0)  # fmt: skip
    assert by_model["(not run)"] == {
        "replicas": 1, "requests": 0, "requests_unserved": 7, "input_tokens": 0, "output_tokens": 0,
        "cost_usd": 0.0, "usd_per_million_tokens": None, "usd_per_million_output_tokens": None,
        "usd_per_thousand_requests": None,
    }  # fmt: skip
    assert set(inference["by_service_and_gpu_model"]) == {"chat on A100-80GB", "chat on H100-80GB", "chat on (not run)"}
    assert inference["total"] == inference["by_service"]["chat"]
    assert inference["cluster_usd_per_million_tokens"] == 4.0
    economics = document["economics"]
    assert isinstance(economics, dict)
    assert economics["inference"] == {**inference["total"], "cluster_usd_per_million_tokens": 4.0}
    cost = document["cost_usd"]
    assert isinstance(cost, dict) and cost["total"] == 24.0 and cost["attributed"] == 12.0  # C's $4 is no service's


def test_a_replay_without_services_has_no_inference_key() -> None:
    document = replay([replace(job, served=None) for job in JOBS])
    assert "inference" not in document and document["jobs"] == replay(JOBS)["jobs"]
    economics = document["economics"]
    assert isinstance(economics, dict) and economics["inference"] is None


def test_the_run_directory_counts_the_services_of_jobs_it_forgot(tmp_path: Path) -> None:
    # Written as it goes, the replay forgets each replica when it ends: the tally still has it.
    runs = []
    for name in ("one", "two"):
        api.simulate(SAMPLES / "azure-llm-conv.csv", SAMPLES / "azure-llm-a100-cluster.toml", out=tmp_path / name)
        runs.append((tmp_path / name / "summary.json").read_bytes())
    assert runs[0] == runs[1]
    document = json.loads(runs[0])
    total = document["inference"]["total"]
    assert total["requests"] == 2932 and total["requests_unserved"] == 0
    assert total["cost_usd"] == document["cost_usd"]["by_project"]["conv"] == document["cost_usd"]["attributed"]
    tokens = total["input_tokens"] + total["output_tokens"]
    # cost_usd is rounded to the cent, the unit cost is not: they agree to the cent over the tokens.
    assert abs(total["usd_per_million_tokens"] - total["cost_usd"] / tokens * 1e6) < 0.005 / tokens * 1e6 + 1e-4
