"""The agent survives what a GPU node does to it: no NVML library, a GPU lost mid-run, NotSupported
fields, Xid errors, the kubelet's socket missing or restarting, a clock that goes back, a scrape
that fails. Each is a metric and one log line per change of state, never a crash."""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import pynvml
import pytest

from extender.agent.exporter import Recorder, run
from extender.agent.kubelet import PodResourcesClient
from extender.agent.nvml import NvmlCollector
from extender.agent.state import Agent, AgentOptions, sample_map
from tests.fake_kubelet import FakeKubelet
from tests.fake_nvml import FakeGpu, FakeNvml
from tests.test_agent import A100, H100, RULE, one, two_gpus

OTHER = "GPU-99999999-8888-7777-6666-555555555555"
PODS = {("ml", "train-0", "main"): [("nvidia.com/gpu", [H100])]}


def agent_on(nvml: FakeNvml, socket: Path | None) -> Agent:
    pods = PodResourcesClient(str(socket), timeout_s=2.0) if socket is not None else None
    return Agent(NvmlCollector(nvml), pods, AgentOptions(node="node-a", rule=RULE))


def warnings_about(caplog: pytest.LogCaptureFixture, word: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if word in r.getMessage() and r.levelno >= logging.WARNING]


def keyed(series: dict[tuple[tuple[str, str], ...], float]) -> dict[frozenset[tuple[str, str]], float]:
    return {frozenset(labels): value for labels, value in series.items()}


def test_without_the_nvml_library_the_agent_serves_that_nvml_is_down(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml([FakeGpu(H100)], library=False)
    agent = agent_on(nvml, None)
    for t in (0.0, 60.0, 120.0):
        metrics = sample_map(agent.tick(t))
    assert metrics["fleetsched_agent_source_up"][(("source", "nvml"),)] == 0.0
    assert metrics["DCGM_FI_DEV_GPU_UTIL"] == {} and metrics["fleetsched_gpu_lost"] == {}
    assert metrics["fleetsched_agent_errors_total"][(("source", "nvml"), ("error", "NVMLError_LibraryNotFound"))] == 3
    assert len(warnings_about(caplog, "NVML is down")) == 1  # one line, not one per scrape
    assert nvml.calls.count("nvmlInit") == 3  # tried again each scrape: a driver loaded later is picked up
    nvml.library = True
    metrics = sample_map(agent.tick(180.0))
    assert metrics["fleetsched_agent_source_up"][(("source", "nvml"),)] == 1.0
    assert len(metrics["DCGM_FI_DEV_GPU_UTIL"]) == 1


def test_a_gpu_lost_mid_run_is_reported_and_the_others_still_read(caplog: pytest.LogCaptureFixture) -> None:
    nvml = FakeNvml([FakeGpu(H100, utilisation=((0.0, 10, 1), (120.0, 60, 6))),
                     FakeGpu(OTHER, minor=1, lost_at_s=100.0)])  # fmt: skip
    agent = agent_on(nvml, None)
    before = sample_map(agent.tick(0.0))
    assert keyed(before["fleetsched_gpu_lost"]) == {
        frozenset({("gpu", "0"), ("UUID", H100), ("device", "nvidia0"), ("modelName", "NVIDIA H100 80GB HBM3"),
                   ("Hostname", "node-a")}): 0.0,
        frozenset({("gpu", "1"), ("UUID", OTHER), ("device", "nvidia1"), ("modelName", "NVIDIA H100 80GB HBM3"),
                   ("Hostname", "node-a")}): 0.0,
    }  # fmt: skip
    for t in (120.0, 180.0):
        nvml.now_s = t
        after = sample_map(agent.tick(t))
    lost = keyed(after["fleetsched_gpu_lost"])
    assert one(lost, gpu="1", UUID=OTHER) == 1.0 and one(lost, gpu="0") == 0.0  # identity kept from before
    assert [dict(labels)["gpu"] for labels in after["DCGM_FI_DEV_GPU_UTIL"]] == ["0"]
    assert one(keyed(after["DCGM_FI_DEV_GPU_UTIL"]), gpu="0") == 60.0  # the other GPU goes on being read
    assert all(dict(labels)["UUID"] == H100 for labels in after["fleetsched_gpu_field_supported"])
    assert len(warnings_about(caplog, "is lost")) == 1


def test_a_gpu_lost_before_the_first_scrape_is_reported_by_its_index() -> None:
    agent = agent_on(FakeNvml([FakeGpu(H100, lost_at_s=0.0)]), None)
    lost = sample_map(agent.tick(0.0))["fleetsched_gpu_lost"]
    assert keyed(lost) == {frozenset({("gpu", "0"), ("UUID", ""), ("device", "nvidia0"), ("modelName", ""),
                                      ("Hostname", "node-a")}): 1.0}  # fmt: skip


def test_not_supported_fields_are_said_and_left_out_without_errors() -> None:
    unsupported = frozenset({"nvmlDeviceGetPowerUsage", "nvmlDeviceGetTotalEccErrors", "nvmlDeviceRegisterEvents"})
    agent = agent_on(FakeNvml([FakeGpu(H100, not_supported=unsupported)]), None)
    metrics = sample_map(agent.tick(0.0))
    supported = {dict(labels)["field"]: value for labels, value in metrics["fleetsched_gpu_field_supported"].items()}
    assert supported == {
        "DCGM_FI_DEV_GPU_UTIL": 1.0, "DCGM_FI_DEV_MEM_COPY_UTIL": 1.0, "DCGM_FI_DEV_FB_USED": 1.0,
        "DCGM_FI_DEV_FB_FREE": 1.0, "DCGM_FI_DEV_POWER_USAGE": 0.0, "DCGM_FI_DEV_SM_CLOCK": 1.0,
        "DCGM_FI_DEV_CLOCK_THROTTLE_REASONS": 1.0, "DCGM_FI_DEV_XID_ERRORS": 0.0,
        "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL": 0.0, "DCGM_FI_DEV_ECC_SBE_VOL_TOTAL": 0.0,
    }  # fmt: skip
    for name in ("DCGM_FI_DEV_POWER_USAGE", "DCGM_FI_DEV_ECC_DBE_VOL_TOTAL", "DCGM_FI_DEV_XID_ERRORS"):
        assert metrics[name] == {}, name
    assert len(metrics["DCGM_FI_DEV_SM_CLOCK"]) == 1
    assert metrics["fleetsched_agent_errors_total"] == {}  # NotSupported is a fact about the device, not an error


def test_xid_errors_are_polled_without_blocking_and_the_last_one_kept() -> None:
    nvml = FakeNvml([FakeGpu(H100, xids=((50.0, 13), (70.0, 31)))])
    agent = agent_on(nvml, None)
    values = []
    for t in (0.0, 60.0, 120.0):
        nvml.now_s = t
        (value,) = sample_map(agent.tick(t))["DCGM_FI_DEV_XID_ERRORS"].values()
        values.append(value)
    assert values == [0.0, 13.0, 31.0]


def test_other_nvml_errors_are_counted_by_class_and_the_field_left_out() -> None:
    nvml = FakeNvml([FakeGpu(H100)])
    agent = agent_on(nvml, None)
    agent.tick(0.0)
    nvml.gpus[0].failing = {"nvmlDeviceGetClockInfo": pynvml.NVML_ERROR_NO_PERMISSION}
    metrics = sample_map(agent.tick(60.0))
    assert metrics["DCGM_FI_DEV_SM_CLOCK"] == {} and len(metrics["DCGM_FI_DEV_POWER_USAGE"]) == 1
    assert metrics["fleetsched_agent_errors_total"] == {(("source", "nvml"), ("error", "NVMLError_NoPermission")): 1.0}
    assert one(keyed(metrics["fleetsched_gpu_field_supported"]), field="DCGM_FI_DEV_SM_CLOCK") == 1.0


def test_a_mig_instance_nvml_will_not_name_is_left_out_and_its_gpu_still_read() -> None:
    gpus = two_gpus()
    gpus[1].failing = {"nvmlDeviceGetGpuInstanceId": pynvml.NVML_ERROR_UNKNOWN}
    metrics = sample_map(agent_on(FakeNvml(gpus), None).tick(0.0))
    used = keyed(metrics["DCGM_FI_DEV_FB_USED"])
    assert sorted(dict(labels)["UUID"] for labels in used) == [H100, A100]  # both GPUs, no instance
    assert metrics["fleetsched_agent_errors_total"] == {(("source", "nvml"), ("error", "NVMLError_Unknown")): 2.0}


def test_a_gpu_whose_mig_mode_cannot_be_read_is_read_as_a_whole() -> None:
    gpus = two_gpus()
    gpus[1].failing = {"nvmlDeviceGetMaxMigDeviceCount": pynvml.NVML_ERROR_UNKNOWN}
    metrics = sample_map(agent_on(FakeNvml(gpus), None).tick(0.0))
    assert one(keyed(metrics["DCGM_FI_DEV_POWER_USAGE"]), UUID=A100) == 61.25
    assert all(dict(labels)["GPU_I_ID"] == "" for labels in metrics["DCGM_FI_DEV_FB_USED"])
    assert metrics["fleetsched_agent_errors_total"] == {(("source", "nvml"), ("error", "NVMLError_Unknown")): 1.0}


def test_a_gpu_nvml_cannot_name_is_counted_and_the_others_read() -> None:
    gpus = [FakeGpu(H100, failing={"nvmlDeviceGetUUID": pynvml.NVML_ERROR_UNKNOWN}), FakeGpu(OTHER, minor=1)]
    metrics = sample_map(agent_on(FakeNvml(gpus), None).tick(0.0))
    assert [dict(labels)["UUID"] for labels in metrics["DCGM_FI_DEV_FB_USED"]] == [OTHER]
    assert metrics["fleetsched_agent_errors_total"] == {(("source", "nvml"), ("error", "NVMLError_Unknown")): 1.0}


def test_the_kubelet_missing_then_restarting_is_survived_and_reconnected(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    socket = tmp_path / "kubelet.sock"
    nvml = FakeNvml([FakeGpu(H100)])
    agent = agent_on(nvml, socket)

    def state(t: float) -> tuple[float, str]:
        metrics = sample_map(agent.tick(t))
        (labels,) = metrics["DCGM_FI_DEV_GPU_UTIL"]
        return metrics["fleetsched_agent_source_up"][(("source", "podresources"),)], dict(labels)["pod"]

    assert state(0.0) == (0.0, "")  # no socket yet: devices exported without pods
    assert state(60.0) == (0.0, "")
    kubelet = FakeKubelet(socket, PODS).start()
    try:
        assert state(120.0) == (1.0, "train-0")
        kubelet.stop()  # the kubelet restarts: its socket goes, then a stale one nobody listens on
        assert state(180.0) == (0.0, "")
        socket.touch()
        assert state(200.0) == (0.0, "")
        socket.unlink()
        kubelet.start()
        assert state(240.0) == (1.0, "train-0")
    finally:
        kubelet.stop()
    errors = sample_map(agent.families)["fleetsched_agent_errors_total"]
    assert errors[(("source", "podresources"), ("error", "SocketMissing"))] == 3.0
    assert errors[(("source", "podresources"), ("error", "UNAVAILABLE"))] == 1.0
    assert len(warnings_about(caplog, "PodResources API is away")) == 2  # down twice: two lines, not three


def test_idle_detection_keeps_its_run_while_the_kubelet_is_away(tmp_path: Path) -> None:
    socket = tmp_path / "kubelet.sock"
    nvml = FakeNvml([FakeGpu(H100, utilisation=((0.0, 0, 0),))])
    agent = agent_on(nvml, socket)
    with FakeKubelet(socket, PODS) as kubelet:
        for t in range(0, 240, 60):
            agent.tick(float(t))
        kubelet.stop()
        agent.tick(240.0)  # away one scrape: this sample is lost, within the gap the rule forgives
        kubelet.start()
        idle = [sample_map(agent.tick(float(t)))["fleetsched_gpu_allocated_idle"] for t in (300, 360)]
    assert [list(series.values()) for series in idle] == [[1.0], [1.0]]


def test_a_clock_that_goes_back_skips_idle_detection_but_not_the_scrape(caplog: pytest.LogCaptureFixture) -> None:
    agent = agent_on(FakeNvml([FakeGpu(H100)]), None)
    agent.tick(100.0)
    metrics = sample_map(agent.tick(40.0))
    assert len(metrics["DCGM_FI_DEV_GPU_UTIL"]) == 1
    assert len(warnings_about(caplog, "clock went back")) == 1


def test_the_loop_survives_a_failing_scrape_and_an_unwritable_record(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    nvml = FakeNvml([FakeGpu(H100)])
    agent = agent_on(nvml, None)
    stop, times = threading.Event(), iter([0.0, 0.0, 60.0, 60.0, 120.0, 120.0])
    original = agent.nvml.scrape
    calls = []

    def flaky() -> object:
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("a bug in a scrape")
        if len(calls) == 3:
            stop.set()
        return original()

    def clock() -> float:
        return next(times)

    agent.nvml.scrape = flaky  # type: ignore[method-assign]
    recorder = Recorder(tmp_path / "no-such-dir" / "agent.jsonl")
    assert run(agent, 0.0, stop, recorder, clock) == 3
    assert agent.errors[("agent", "ScrapeFailed")] == 1 and agent.errors[("record", "WriteFailed")] == 3
    assert len([r for r in caplog.records if "cannot write the record" in r.getMessage()]) == 1
