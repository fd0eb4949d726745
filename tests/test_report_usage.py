"""The report's measured-use and inference sections hold the figures of the run's summary.json."""

from __future__ import annotations

import json
from pathlib import Path

from fleetsched.cli import main
from fleetsched.report_html import money, number

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces" / "samples"


def replay_and_report(tmp_path: Path, *arguments: str) -> tuple[dict[str, object], str]:
    assert main(["simulate", *arguments, "--out", str(tmp_path / "run")]) == 0
    assert main(["report", str(tmp_path / "run"), "--out", str(tmp_path / "report.html")]) == 0
    return json.loads((tmp_path / "run" / "summary.json").read_text()), (tmp_path / "report.html").read_text()


def test_a_replay_of_measured_pods_shows_their_idle_hours_and_dollars_by_team_and_job(tmp_path: Path) -> None:
    summary, html = replay_and_report(tmp_path, "--trace", str(SAMPLES / "gentd26" / "pod_gpu_duty_cycle_anon.csv"),
                                      "--cluster", str(SAMPLES / "gentd26-cluster.toml"))
    measured = summary["measured"]
    assert isinstance(measured, dict)
    part = html.split("<h2>Measured GPU use</h2>")[1].split("<h2>")[0]
    assert f"{money(measured['usd']['idle'])} of {money(measured['usd']['allocated'])}" in part
    for team, row in measured["by_team"].items():
        assert f"<td>{team}</td>" in part and number(row["gpu_hours"]["idle"], 2) in part
    worst = max(measured["by_job"].items(), key=lambda item: item[1]["usd"]["idle"])
    assert part.index(f">{worst[0]}</td>") < min(part.index(f">{job}</td>") for job in measured["by_job"]
                                                    if job != worst[0])  # fmt: skip


def test_a_replay_of_inference_services_shows_cost_per_token_and_request(tmp_path: Path) -> None:
    summary, html = replay_and_report(tmp_path, "--trace", str(SAMPLES / "azure-llm-conv.csv"),
                                      "--cluster", str(SAMPLES / "azure-llm-a100-cluster.toml"))
    inference = summary["inference"]
    assert isinstance(inference, dict)
    part = html.split("<h2>Inference services</h2>")[1].split("<h2>")[0]
    total = inference["total"]
    assert f"${total['usd_per_million_tokens']:,.4f}" in part and f"${total['usd_per_thousand_requests']:,.4f}" in part
    assert all(f"<td>{name}</td>" in part for name in inference["by_service_and_gpu_model"])
    assert "<h2>Measured GPU use</h2>" not in html  # nothing measured in this trace


def test_figures_are_right_aligned_and_ids_that_start_with_a_digit_are_not() -> None:
    from fleetsched.report_html import table

    html = table(["a"], [["$1,234.56"], ["-$3.20"], ["57.8%"], ["8,481.9 ± 120.0"], ["[-$1.00, $2.00]"],
                         ["9032a0105d8d"], ["0ec705c2"], ["—"]])  # fmt: skip
    numeric = [cell for cell in html.split("<td")[1:] if cell.startswith(' class="number"')]
    assert len(numeric) == 5 and '<td>9032a0105d8d</td>' in html and '<td>0ec705c2</td>' in html
