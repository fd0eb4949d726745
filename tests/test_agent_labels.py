"""Teams from a pod label: the agent reads each device-holding pod's labels from the API server once
(extender.kubeapi.Rest against a small HTTP server standing in for it), survives the API server
going away, and the command line picks the rule from --team-label or a governance file."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from extender.agent.kubelet import PodResourcesClient, TeamMap
from extender.agent.labels import PodLabels
from extender.agent.main import AgentSettings, api_server, run_agent
from extender.agent.nvml import NvmlCollector
from extender.agent.state import Agent, AgentOptions, sample_map
from extender.kubeapi import Rest
from extender.translate import TeamRule
from scheduler.errors import InputError
from tests.fake_kubelet import FakeKubelet
from tests.fake_nvml import FakeGpu, FakeNvml
from tests.loopback_http import LoopbackHttp
from tests.test_agent import H100, RULE, one, scrape

OTHER = "GPU-99999999-8888-7777-6666-555555555555"
LABEL = "fleetsched.io/team"


class FakeApiServer(LoopbackHttp):
    """GET /api/v1/namespaces/NS/pods/NAME from `pods`; 404 for any other; counts the requests."""

    def __init__(self, pods: dict[tuple[str, str], dict[str, str]]) -> None:
        self.pods = pods
        super().__init__(self._pod)

    @property
    def requests(self) -> list[str]:
        return self.paths

    def _pod(self, path: str) -> tuple[int, bytes]:
        parts = path.split("/")
        key = (parts[4], parts[6]) if len(parts) == 7 and parts[:4] == ["", "api", "v1", "namespaces"] else None
        if key not in self.pods:
            return 404, b""
        return 200, json.dumps({"kind": "Pod", "metadata": {"namespace": key[0], "name": key[1],
                                                            "labels": self.pods[key]}}).encode()


@pytest.fixture
def api() -> Iterator[FakeApiServer]:
    server = FakeApiServer({("ml", "train-0"): {LABEL: "vision", "app": "x"}, ("ml", "nb-1"): {"app": "y"}})
    yield server
    server.stop()


@pytest.fixture
def kubelet(tmp_path: Path) -> Iterator[FakeKubelet]:
    with FakeKubelet(tmp_path / "kubelet.sock", {
        ("ml", "train-0", "main"): [("nvidia.com/gpu", [H100])],
        ("ml", "nb-1", "jupyter"): [("nvidia.com/gpu", [OTHER])],
    }) as server:  # fmt: skip
        yield server


def labelled_agent(kubelet: FakeKubelet, api: FakeApiServer, namespaces: dict[str, str] | None = None) -> Agent:
    nvml = FakeNvml([FakeGpu(H100), FakeGpu(OTHER, minor=1)])
    teams = TeamMap(TeamRule("label", LABEL), namespaces or {})
    labels = PodLabels(Rest(api.url), timeout_s=2.0)
    return Agent(NvmlCollector(nvml), PodResourcesClient(str(kubelet.socket_path)),
                 AgentOptions("node-a", RULE, teams), labels)  # fmt: skip


def teams(agent: Agent, t: float) -> dict[str, str]:
    metrics = sample_map(agent.tick(t))
    return {dict(labels)["pod"]: dict(labels)["team"] for labels in metrics["DCGM_FI_DEV_FB_USED"]}


def test_the_team_is_the_pod_label_read_once_per_pod(kubelet: FakeKubelet, api: FakeApiServer) -> None:
    agent = labelled_agent(kubelet, api)
    assert teams(agent, 0.0) == {"train-0": "vision", "nb-1": ""}  # nb-1 has no team label
    assert teams(agent, 60.0) == {"train-0": "vision", "nb-1": ""}
    assert sorted(api.requests) == ["/api/v1/namespaces/ml/pods/nb-1", "/api/v1/namespaces/ml/pods/train-0"]
    assert sample_map(agent.families)["fleetsched_agent_source_up"][(("source", "apiserver"),)] == 1.0


def test_a_namespace_named_on_the_command_line_wins_over_the_label(kubelet: FakeKubelet, api: FakeApiServer) -> None:
    assert teams(labelled_agent(kubelet, api, {"ml": "platform"}), 0.0) == {"train-0": "platform", "nb-1": "platform"}


def test_a_pod_the_api_server_no_longer_has_has_no_team(kubelet: FakeKubelet, api: FakeApiServer) -> None:
    del api.pods[("ml", "train-0")]
    agent = labelled_agent(kubelet, api)
    assert teams(agent, 0.0) == {"train-0": "", "nb-1": ""}
    assert "fleetsched_agent_errors_total" not in {k for k, v in sample_map(agent.families).items() if v}


def test_an_api_server_that_goes_away_leaves_teams_unknown_until_it_is_back(
    kubelet: FakeKubelet, api: FakeApiServer, caplog: pytest.LogCaptureFixture
) -> None:
    agent = labelled_agent(kubelet, api)
    api.stop()
    assert teams(agent, 0.0) == {"train-0": "", "nb-1": ""}
    assert teams(agent, 60.0) == {"train-0": "", "nb-1": ""}
    metrics = sample_map(agent.families)
    assert metrics["fleetsched_agent_source_up"][(("source", "apiserver"),)] == 0.0
    ((labels, count),) = [(k, v) for k, v in metrics["fleetsched_agent_errors_total"].items() if k[0][1] == "apiserver"]
    assert count == 2.0 and labels[1][1] == "NewConnectionError"
    assert len([r for r in caplog.records if "does not answer for the pods' labels" in r.getMessage()]) == 1
    back = FakeApiServer(api.pods)
    try:
        agent.labels = PodLabels(Rest(back.url))  # the same address is gone with the old server: a new one
        assert teams(agent, 120.0) == {"train-0": "vision", "nb-1": ""}
    finally:
        back.stop()


def test_the_agent_runs_with_label_teams_end_to_end(tmp_path: Path, kubelet: FakeKubelet, api: FakeApiServer) -> None:
    settings = AgentSettings(node="node-a", address="127.0.0.1", port=0, socket_path=str(kubelet.socket_path),
                             period_s=0.05, teams=TeamMap(TeamRule("label", LABEL)))  # fmt: skip
    stop, ports = threading.Event(), []
    nvml = FakeNvml([FakeGpu(H100)])
    thread = threading.Thread(target=run_agent, args=(settings, stop),
                              kwargs={"nvml": nvml, "ready": ports.append, "api": Rest(api.url)})  # fmt: skip
    thread.start()
    try:
        for _ in range(200):
            if ports and api.requests:
                break
            threading.Event().wait(0.01)
        threading.Event().wait(0.1)
        metrics = scrape(ports[0])
    finally:
        stop.set()
        thread.join(timeout=10)
    assert one(metrics["DCGM_FI_DEV_GPU_UTIL"], pod="train-0") == 0.0
    assert dict(next(iter(metrics["DCGM_FI_DEV_GPU_UTIL"])))["team"] == "vision"


def test_credentials_that_do_not_load_are_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "kubeconfig"
    with pytest.raises(InputError) as caught:
        api_server(str(missing))
    assert str(caught.value).startswith(f"{missing}: cannot load the API server's credentials")


def test_outside_a_cluster_without_a_kubeconfig_the_option_is_named(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    with pytest.raises(InputError) as caught:
        api_server("")
    assert str(caught.value).startswith("--kubeconfig: cannot load the API server's credentials")


def test_team_label_against_a_namespace_governance_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from fleetsched.cli import main

    rules = tmp_path / "governance.toml"
    rules.write_text('team_from = "namespace"\n')
    assert main(["agent", "--check", "--governance", str(rules), "--team-label", LABEL]) == 2
    assert capsys.readouterr().err.strip() == (
        f"fleetsched: --team-label: {rules} takes teams from namespaces; give one or the other")


def test_the_api_server_is_not_asked_when_teams_come_from_namespaces(
    kubelet: FakeKubelet, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    agent = Agent(NvmlCollector(FakeNvml([FakeGpu(H100)])), PodResourcesClient(str(kubelet.socket_path)),
                  AgentOptions("node-a", RULE))  # fmt: skip
    metrics = sample_map(agent.tick(0.0))
    assert (("source", "apiserver"),) not in metrics["fleetsched_agent_source_up"]
    assert [dict(k)["team"] for k in metrics["DCGM_FI_DEV_GPU_UTIL"]] == ["ml"]
