"""`fleetsched agent`: its options (each mistake one line naming the option, exit 2), `--check`, and the
whole agent run end to end on a fake NVML and a real gRPC kubelet: /metrics over HTTP, the record."""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest

from extender.agent.main import AgentSettings, run_agent
from fleetsched.agent_verbs import agent_settings
from fleetsched.cli import _parser, main
from scheduler.idleness import IdleRule
from tests.fake_kubelet import FakeKubelet
from tests.fake_nvml import FakeGpu, FakeNvml
from tests.test_agent import H100, one, scrape


def check(capsys: pytest.CaptureFixture[str], *options: str) -> tuple[int, str, str]:
    code = main(["agent", "--check", *options])
    captured = capsys.readouterr()
    return code, captured.out.strip(), captured.err.strip()


def test_check_prints_the_settings_the_options_give(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    record = tmp_path / "agent.jsonl"  # --check finds that its folder can be written
    code, out, err = check(capsys, "--node-name", "gpu-7", "--port", "9500", "--period-s", "30", "--idle-window-s",
                           "600", "--team", "research=vision", "--team", "ml=platform", "--record", str(record))
    assert (code, err) == (0, "")
    assert out == ("agent on node gpu-7: /metrics on 0.0.0.0:9500, kubelet /var/lib/kubelet/pod-resources/kubelet.sock,"
                   " every 30 s; idle under 5 % for 600 s (gap 90 s); teams from namespace, namespace teams: "
                   f"ml=platform, research=vision; record: {record}")


def test_the_node_name_defaults_to_the_downward_api_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("NODE_NAME", "from-env")
    assert agent_settings(_parser().parse_args(["agent"])).node == "from-env"


@pytest.mark.parametrize(("options", "line"), [
    (["--team", "research"], "fleetsched: --team: must be NAMESPACE=TEAM, got 'research'"),
    (["--team", "a=x", "--team", "a=y"], "fleetsched: --team: namespace 'a' is given twice"),
    (["--period-s", "0"], "fleetsched: --period-s: must be more than 0, got 0.0"),
    (["--idle-window-s", "-5"], "fleetsched: --idle-window-s: must be a finite number of at least 0, got -5.0"),
    (["--idle-threshold-percent", "nan"],
     "fleetsched: --idle-threshold-percent: must be a finite number of at least 0, got nan"),
    (["--period-s", "60", "--max-gap-s", "30"],
     "fleetsched: --max-gap-s: must be a finite number of at least the period (60.0 s), got 30.0"),
    (["--port", "70000"], "fleetsched: --port: must be a port number from 1 to 65535, got 70000"),
    (["--kubelet-timeout-s", "0"], "fleetsched: --kubelet-timeout-s: must be more than 0, got 0.0"),
])  # fmt: skip
def test_a_bad_option_is_one_line_naming_it(capsys: pytest.CaptureFixture[str], options: list[str], line: str) -> None:
    assert check(capsys, *options) == (2, "", line)


def test_a_missing_governance_file_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, out, err = check(capsys, "--governance", str(tmp_path / "none.toml"))
    assert (code, out) == (2, "") and err.startswith(f"fleetsched: {tmp_path / 'none.toml'}") and "\n" not in err


def test_a_governance_file_gives_the_extenders_team_rule(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    rules, kubeconfig = tmp_path / "governance.toml", tmp_path / "kube.conf"
    rules.write_text('team_from = "label"\nteam_label = "example.com/team"\n')
    kubeconfig.write_text("apiVersion: v1\n")  # --check reads that it is there, not what it says
    code, out, _ = check(capsys, "--governance", str(rules), "--kubeconfig", str(kubeconfig))
    assert code == 0 and f"teams from label example.com/team (API server: {kubeconfig})" in out
    code, out, _ = check(capsys, "--team-label", "fleetsched.io/team")
    assert code == 0 and "teams from label fleetsched.io/team (API server: in-cluster)" in out


def test_the_agent_runs_end_to_end_until_stopped(tmp_path: Path) -> None:
    socket, record = tmp_path / "kubelet.sock", tmp_path / "agent.jsonl"
    nvml = FakeNvml([FakeGpu(H100, utilisation=((0.0, 42, 7),))])
    settings = AgentSettings(node="node-a", address="127.0.0.1", port=0, socket_path=str(socket), period_s=0.05,
                             rule=IdleRule(period_s=0.05, max_gap_s=0.15), record=str(record))  # fmt: skip
    stop, ports, scraped = threading.Event(), [], {}
    ticks = iter(range(10_000))

    def clock() -> float:
        return 1_700_000_000.0 + next(ticks)

    with FakeKubelet(socket, {("ml", "train-0", "main"): [("nvidia.com/gpu", [H100])]}):
        thread = threading.Thread(target=lambda: scraped.setdefault("ticks", run_agent(
            settings, stop, nvml=nvml, clock=clock, ready=ports.append)))
        thread.start()
        try:
            for _ in range(200):
                if ports and record.exists() and record.stat().st_size:
                    break
                threading.Event().wait(0.01)
            metrics = scrape(ports[0])
        finally:
            stop.set()
            thread.join(timeout=10)
    assert not thread.is_alive() and scraped["ticks"] >= 1
    assert one(metrics["DCGM_FI_DEV_GPU_UTIL"], pod="train-0", fleetsched_job="ml/train-0", Hostname="node-a") == 42.0
    lines = [json.loads(line) for line in record.read_text().splitlines()]
    assert {line["metric"]["__name__"] for line in lines} >= {"DCGM_FI_DEV_GPU_UTIL", "fleetsched_agent_source_up"}
    assert nvml.initialised is False  # NVML shut down on the way out


def test_the_docs_usage_lists_every_option_of_the_parser() -> None:
    text = (Path(__file__).resolve().parent.parent / "docs/agent.md").read_text(encoding="utf-8")
    usage = text.split("fleetsched agent [", 1)[1].split("```", 1)[0]
    documented = set(re.findall(r"--[a-z-]+", usage))
    verbs = next(action for action in _parser()._actions if action.dest == "verb")
    parser = verbs.choices["agent"]  # type: ignore[union-attr]
    options = {option for action in parser._actions for option in action.option_strings} - {"-h", "--help"}
    assert documented == options
