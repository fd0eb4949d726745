"""The GPU agent against a faithful fake NVML and a real gRPC PodResources server: /metrics over HTTP
matches the script, MIG instances are read, the idle detector flags exactly the scripted windows,
and the record file is what `fleetsched usage` reads."""

from __future__ import annotations

import json
import re
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from extender.agent.exporter import Recorder, serve
from extender.agent.kubelet import PodResourcesClient, TeamMap
from extender.agent.nvml import NvmlCollector
from extender.agent.state import Agent, AgentOptions, sample_map
from scheduler.idleness import IdleRule, idle_spans
from tests.fake_kubelet import FakeKubelet
from tests.fake_nvml import FakeGpu, FakeMig, FakeNvml

H100 = "GPU-11111111-2222-3333-4444-555555555555"
A100 = "GPU-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee"
MIG_A = "MIG-0a0a0a0a-0000-5000-8000-000000000001"
MIG_B = "MIG-0b0b0b0b-0000-5000-8000-000000000002"
CONTRACT_LABELS = ["gpu", "UUID", "device", "modelName", "Hostname", "GPU_I_ID", "GPU_I_PROFILE", "namespace", "pod",
                   "container", "team", "fleetsched_job"]  # fmt: skip
RULE = IdleRule(threshold_percent=5.0, window_s=300.0, period_s=60.0, max_gap_s=180.0)


def two_gpus() -> list[FakeGpu]:
    """An H100 used by a pod and an A100 in MIG mode with two instances (slots 0 and 2)."""
    return [
        FakeGpu(H100, minor=0, utilisation=((0.0, 37, 12),), memory_used_mib=20480),
        FakeGpu(A100, name="NVIDIA A100-SXM4-40GB", minor=1, memory_total_mib=40960, power_mw=61_250,
                mig=(FakeMig(0, MIG_A, gpu_instance_id=7, profile="1g.5gb", profile_id=0, memory_total_mib=4864,
                             memory_used_mib=1000),
                     FakeMig(2, MIG_B, gpu_instance_id=1, profile="3g.20gb", profile_id=2, memory_total_mib=19968,
                             memory_used_mib=5000))),
    ]  # fmt: skip


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    server = FakeKubelet(tmp_path / "kubelet.sock", {
        ("ml", "train-0", "main"): [("nvidia.com/gpu", [H100]), ("example.com/nic", ["eth1"])],
        ("research", "nb-1", "jupyter"): [("nvidia.com/mig-3g.20gb", [MIG_B])],
    })  # fmt: skip
    with server:
        yield server


def agent_on(nvml: FakeNvml, kubelet: FakeKubelet | None, rule: IdleRule = RULE) -> Agent:
    pods = PodResourcesClient(str(kubelet.socket_path), timeout_s=2.0) if kubelet is not None else None
    teams = TeamMap(namespaces={"research": "vision"})
    return Agent(NvmlCollector(nvml), pods, AgentOptions(node="node-a", rule=rule, teams=teams))


def scrape(port: int) -> dict[str, dict[frozenset[tuple[str, str]], float]]:
    """GET /metrics; name -> labels -> value, as a Prometheus server would read it."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        text = answer.read().decode()
    found: dict[str, dict[frozenset[tuple[str, str]], float]] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found.setdefault(sample.name, {})[frozenset(sample.labels.items())] = sample.value
    return found


def one(series: Mapping[frozenset[tuple[str, str]], float], **labels: str) -> float:
    """The value of the one series whose labels include `labels`."""
    matching = [value for key, value in series.items() if set(labels.items()) <= key]
    assert len(matching) == 1, (labels, series)
    return matching[0]


def test_metrics_scraped_over_http_match_the_script(kubelet: FakeKubelet) -> None:
    nvml = FakeNvml(two_gpus())
    agent = agent_on(nvml, kubelet)
    agent.tick(1_000.0)
    server, thread = serve(agent, "127.0.0.1", 0)
    try:
        metrics = scrape(server.server_address[1])
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)
    used = metrics["DCGM_FI_DEV_FB_USED"]
    h100 = {"gpu": "0", "UUID": H100, "GPU_I_ID": ""}
    assert one(metrics["DCGM_FI_DEV_GPU_UTIL"], **h100) == 37.0
    assert one(metrics["DCGM_FI_DEV_MEM_COPY_UTIL"], **h100) == 12.0
    assert one(used, **h100) == 20480.0 and one(metrics["DCGM_FI_DEV_FB_FREE"], **h100) == 81559.0 - 20480.0
    assert one(metrics["DCGM_FI_DEV_POWER_USAGE"], **h100) == 120.5
    assert one(metrics["DCGM_FI_DEV_SM_CLOCK"], **h100) == 1980.0
    assert one(metrics["DCGM_FI_DEV_CLOCK_THROTTLE_REASONS"], **h100) == 1.0  # GpuIdle
    assert one(metrics["DCGM_FI_DEV_ECC_SBE_VOL_TOTAL"], **h100) == 3.0
    assert one(metrics["DCGM_FI_DEV_ECC_DBE_VOL_TOTAL"], **h100) == 0.0
    assert one(metrics["DCGM_FI_DEV_XID_ERRORS"], **h100) == 0.0
    held = next(iter(key for key in metrics["DCGM_FI_DEV_GPU_UTIL"]))
    assert dict(held) == {"gpu": "0", "UUID": H100, "device": "nvidia0", "modelName": "NVIDIA H100 80GB HBM3",
                          "Hostname": "node-a", "GPU_I_ID": "", "GPU_I_PROFILE": "", "namespace": "ml",
                          "pod": "train-0", "container": "main", "team": "ml", "fleetsched_job": "ml/train-0"}
    assert sorted(dict(held)) == sorted(CONTRACT_LABELS)
    # The MIG instances: their memory, their GPU instance and profile, the pod of the one held.
    assert one(used, UUID=A100, GPU_I_ID="7") == 1000.0
    assert one(used, UUID=A100, GPU_I_ID="7", GPU_I_PROFILE="1g.5gb", pod="", team="") == 1000.0
    assert one(used, UUID=A100, GPU_I_ID="1", GPU_I_PROFILE="3g.20gb", namespace="research", pod="nb-1",
               container="jupyter", team="vision", fleetsched_job="research/nb-1", device="nvidia1") == 5000.0
    assert one(metrics["DCGM_FI_DEV_POWER_USAGE"], UUID=A100, GPU_I_ID="") == 61.25
    # NVML gives neither a GPU in MIG mode nor its instances a utilisation: said, not guessed.
    assert all(dict(key)["UUID"] == H100 for key in metrics["DCGM_FI_DEV_GPU_UTIL"])
    supported = metrics["fleetsched_gpu_field_supported"]
    assert one(supported, UUID=A100, GPU_I_ID="1", field="DCGM_FI_DEV_GPU_UTIL") == 0.0
    assert one(supported, UUID=A100, GPU_I_ID="1", field="DCGM_FI_DEV_FB_USED") == 1.0
    assert one(supported, UUID=H100, GPU_I_ID="", field="DCGM_FI_DEV_GPU_UTIL") == 1.0
    assert len([key for key in supported if dict(key)["GPU_I_ID"] == "1"]) == 4  # what NVML offers an instance
    assert metrics["fleetsched_agent_source_up"] == {frozenset({("source", "nvml")}): 1.0,
                                                     frozenset({("source", "podresources")}): 1.0}
    assert set(metrics["fleetsched_gpu_lost"].values()) == {0.0} and len(metrics["fleetsched_gpu_lost"]) == 2
    assert "fleetsched_agent_errors_total" not in metrics  # nothing went wrong
    assert len(used) == 4  # two GPUs, two instances: the empty MIG slots are not devices


def test_mig_profile_comes_from_the_instance_name_when_nvml_refuses_the_gpu_instance() -> None:
    gpus = two_gpus()
    gpus[1].profile_query_denied = True  # nvmlDeviceGetGpuInstanceById: NoPermission (not root)
    agent = agent_on(FakeNvml(gpus), None)
    used = sample_map(agent.tick(0.0))["DCGM_FI_DEV_FB_USED"]
    profiles = {dict(labels)["GPU_I_ID"]: dict(labels)["GPU_I_PROFILE"] for labels in used}
    assert profiles == {"": "", "7": "1g.5gb", "1": "3g.20gb"}


def idle_script() -> tuple[tuple[float, int, int], ...]:
    """Busy, then 10 quiet minutes (idle), busy, 3 quiet minutes (under the window), busy."""
    return ((0.0, 50, 10), (600.0, 0, 0), (1200.0, 80, 30), (1380.0, 1, 0), (1560.0, 90, 40))


def test_idle_detector_flags_exactly_the_scripted_idle_window(kubelet: FakeKubelet) -> None:
    nvml = FakeNvml([FakeGpu(H100, utilisation=idle_script())])
    agent = agent_on(nvml, kubelet)
    idle_at, seconds = [], []
    for t in range(0, 1860, 60):
        nvml.now_s = float(t)
        metrics = sample_map(agent.tick(float(t)))
        (labels, idle), = metrics["fleetsched_gpu_allocated_idle"].items()
        assert dict(labels)["pod"] == "train-0"
        if idle:
            idle_at.append(t)
        seconds.append(metrics["fleetsched_gpu_allocated_idle_seconds_total"][labels])
    # Quiet from 600 s: idle once the run, this sample's minute included, lasts 300 s (840 s on),
    # up to the last quiet sample (1140 s); the 3-minute lull at 1380 s never is.
    assert idle_at == list(range(840, 1200, 60))
    assert seconds[:20] == [0.0] * 20 and seconds[20:] == [600.0] * 11  # the span [600, 1200) closes at 1200 s
    samples = [(float(t), float(next(u for s, u, _ in reversed(idle_script()) if s <= t))) for t in range(0, 1860, 60)]
    assert [(s.start_s, s.end_s) for s in idle_spans(samples, RULE)] == [(600.0, 1200.0)]  # the same module agrees


def test_a_device_that_changes_pod_starts_its_idle_count_afresh(kubelet: FakeKubelet) -> None:
    nvml = FakeNvml([FakeGpu(H100, utilisation=((0.0, 0, 0),))])
    agent = agent_on(nvml, kubelet)
    for t in range(0, 660, 60):
        nvml.now_s = float(t)
        agent.tick(float(t))
    (labels, idle), = sample_map(agent.families)["fleetsched_gpu_allocated_idle"].items()
    assert idle == 1.0 and dict(labels)["pod"] == "train-0"
    kubelet.pods = {("ml", "train-1", "main"): [("nvidia.com/gpu", [H100])]}
    nvml.now_s = 660.0
    metrics = sample_map(agent.tick(660.0))
    (labels, idle), = metrics["fleetsched_gpu_allocated_idle"].items()
    assert dict(labels)["pod"] == "train-1" and idle == 0.0  # a new pod: its quiet run starts now
    assert list(metrics["fleetsched_gpu_allocated_idle_seconds_total"].values()) == [0.0]


def test_time_sliced_replicas_give_one_series_per_pod(kubelet: FakeKubelet) -> None:
    kubelet.pods = {("a", "p", "c"): [("nvidia.com/gpu", [f"{H100}::0"])],
                    ("b", "q", "c"): [("nvidia.com/gpu", [f"{H100}::1"])],
                    ("b", "q", "d"): [("nvidia.com/gpu", [f"{H100}::2"])]}  # fmt: skip
    nvml = FakeNvml([FakeGpu(H100)])
    agent = agent_on(nvml, kubelet)
    for t in range(0, 660, 60):
        nvml.now_s = float(t)
        metrics = sample_map(agent.tick(float(t)))
    holders = sorted((dict(labels)["fleetsched_job"], dict(labels)["container"]) for labels in metrics[
        "DCGM_FI_DEV_GPU_UTIL"])
    assert holders == [("a/p", "c"), ("b/q", "c,d")]  # two containers of one pod: one series, measured once
    assert list(metrics["fleetsched_gpu_allocated_idle"].values()) == [1.0, 1.0]


def test_the_record_file_holds_each_tick_as_query_range_elements(tmp_path: Path, kubelet: FakeKubelet) -> None:
    nvml = FakeNvml([FakeGpu(H100, utilisation=((0.0, 20, 5), (60.0, 0, 0)))])
    agent, recorder = agent_on(nvml, kubelet), Recorder(tmp_path / "agent.jsonl")
    for t in (1_700_000_000.0, 1_700_000_060.0):
        nvml.now_s = t - 1_700_000_000.0
        assert recorder.write(t, agent.tick(t))
    recorder.close()
    lines = [json.loads(line) for line in (tmp_path / "agent.jsonl").read_text().splitlines()]
    util = [line for line in lines if line["metric"]["__name__"] == "DCGM_FI_DEV_GPU_UTIL"]
    assert [line["values"] for line in util] == [[[1_700_000_000.0, "20"]], [[1_700_000_060.0, "0"]]]
    assert util[0]["metric"] == {"__name__": "DCGM_FI_DEV_GPU_UTIL", "gpu": "0", "UUID": H100, "device": "nvidia0",
                                 "modelName": "NVIDIA H100 80GB HBM3", "Hostname": "node-a", "GPU_I_ID": "",
                                 "GPU_I_PROFILE": "", "namespace": "ml", "pod": "train-0", "container": "main",
                                 "team": "ml", "fleetsched_job": "ml/train-0"}
    power = [line["values"][0][1] for line in lines if line["metric"]["__name__"] == "DCGM_FI_DEV_POWER_USAGE"]
    assert power == ["120.5", "120.5"]
    assert {line["metric"]["__name__"] for line in lines} >= {"fleetsched_gpu_allocated_idle_seconds_total",
                                                              "fleetsched_agent_source_up"}


def test_the_docs_table_names_exactly_the_metrics_the_agent_exports(kubelet: FakeKubelet) -> None:
    text = (Path(__file__).resolve().parent.parent / "docs/agent.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(\w+)` \| (?:gauge|counter) \|", text, re.MULTILINE))
    exported = {family.name for family in agent_on(FakeNvml(two_gpus()), kubelet).tick(0.0)}
    assert documented == exported


def test_a_device_gone_since_the_last_scrape_is_gone_from_the_metrics(kubelet: FakeKubelet) -> None:
    nvml = FakeNvml(two_gpus())
    agent = agent_on(nvml, kubelet)
    before = sample_map(agent.tick(0.0))["DCGM_FI_DEV_FB_USED"]
    nvml.gpus[1].mig = nvml.gpus[1].mig[:1]  # MIG instance 1 (3g.20gb, held by nb-1) destroyed
    after = sample_map(agent.tick(60.0))
    instances = sorted(dict(labels)["GPU_I_ID"] for labels in after["DCGM_FI_DEV_FB_USED"])
    assert len(before) == 4 and instances == ["", "", "7"]
    assert all(dict(labels)["pod"] != "nb-1" for labels in after["fleetsched_gpu_allocated_idle"])
    assert all(dict(labels)["GPU_I_ID"] != "1" for labels in after["fleetsched_gpu_field_supported"])


def test_the_protocol_and_the_fake_call_pynvml_by_its_real_names_and_arities() -> None:
    import inspect

    import pynvml

    from extender.agent.nvml_api import Nvml

    names = [name for name in vars(Nvml) if name.startswith("nvml")]
    assert len(names) == 24
    for name in names:
        real = inspect.signature(getattr(pynvml, name)).parameters.values()
        required = len([p for p in real if p.default is inspect.Parameter.empty])
        ours = len(inspect.signature(getattr(Nvml, name)).parameters) - 1  # self
        fake = len(inspect.signature(getattr(FakeNvml, name)).parameters) - 1
        assert required <= ours <= len(real) and fake == ours, name
