"""The `fleetsched` command: mig layouts, mig check, plan; one-line errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from fleetsched.cli import main

ROOT = Path(__file__).resolve().parent.parent
DEMO = ["--cluster", str(ROOT / "traces/samples/demo-cluster.toml"), "--jobs", str(ROOT / "traces/samples/demo-jobs.jsonl")]
A100_PROFILES = "1g.5gb,2g.10gb,3g.20gb,4g.20gb,7g.40gb"


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_mig_layouts_counts_nvidias_19_a100_configurations(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "mig", "layouts", "--gpu", "A100-40GB", "--profiles", A100_PROFILES)
    assert code == 0
    assert out.splitlines()[0] == f"A100-SXM4-40GB: 19 maximal layouts of {A100_PROFILES.replace(',', ', ')}"
    assert "4g.20gb@0,3g.20gb@4" in out and "compute 7/7" in out
    code, out, _ = run(capsys, "mig", "layouts", "--gpu", "NVIDIA-A100-SXM4-40GB", "--profiles", A100_PROFILES, "--json")
    data = json.loads(out)
    assert len(data["layouts"]) == 19 and ["7g.40gb@0"] in data["layouts"]
    code, out, _ = run(capsys, "mig", "layouts", "--gpu", "A30", "--json")
    assert code == 0 and json.loads(out)["gpu"] == "A30-24GB"


def test_mig_check_exit_codes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "mig", "check", "--gpu", "A100-40GB", "--layout", "4g.20gb@0,3g.20gb@4")
    assert (code, out.strip()) == (0, "legal on A100-SXM4-40GB: 4g.20gb@0,3g.20gb@4")
    code, out, _ = run(capsys, "mig", "check", "--gpu", "A100-40GB", "--layout", "4g.20gb@0,3g.20gb@2")
    assert code == 1 and "3g.20gb@2: illegal start 2; 3g.20gb may start at 0, 4" in out
    code, out, _ = run(capsys, "mig", "check", "--gpu", "A100-40GB", "--layout", "3g.20gb@0,3g.20gb@0", "--json")
    data = json.loads(out)
    assert code == 1 and not data["legal"] and any("overlaps" in p for p in data["problems"])


def test_mig_check_tells_every_reason_an_instance_at_an_illegal_start_also_breaks(
    capsys: pytest.CaptureFixture[str],
) -> None:
    code, out, _ = run(capsys, "mig", "check", "--gpu", "A100-40GB", "--layout", "4g.20gb@0,4g.20gb@4")
    assert code == 1
    assert out.strip() == ("illegal on A100-SXM4-40GB: 4g.20gb@4: illegal start 4; 4g.20gb may start at 0; "
                           "uses 8 compute slices; the GPU has 7; has 2 x 4g.20gb; at most 1")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["mig", "layouts", "--gpu", "Z9000"], "fleetsched: --gpu: unknown GPU model 'Z9000'"),
        (["mig", "check", "--gpu", "H999", "--layout", "1g.5gb@0"], "fleetsched: --gpu: unknown GPU model 'H999'"),
        (["mig", "check", "--gpu", "A100-40GB", "--layout", ""], "fleetsched: --layout: names no instance"),
        (["mig", "check", "--gpu", "A100-40GB", "--layout", ","], "fleetsched: --layout: names no instance"),
        (["mig", "check", "--gpu", "A100-40GB", "--layout", "9g.99gb@0"],
         "fleetsched: --layout: A100-SXM4-40GB has no MIG profile 9g.99gb; its profiles: 1g.5gb,"),
        (["mig", "layouts", "--gpu", "A100-40GB", "--profiles", ""], "fleetsched: --profiles: '' has an empty name"),
        (["mig", "layouts", "--gpu", "A100-40GB", "--profiles", "1g.5gb,1g.5gb"],
         "fleetsched: --profiles: names 1g.5gb more than once"),
        (["mig", "layouts", "--gpu", "T4"], "fleetsched: --gpu: T4-16GB does not support MIG"),
        (["mig", "layouts", "--gpu", "H100-80GB", "--profiles", "1g.5gb"], "fleetsched: --profiles: unknown MIG profile"),
        (["mig", "check", "--gpu", "T4", "--layout", "1g.5gb@0"], "fleetsched: --gpu: T4-16GB does not support MIG"),
        (["mig", "check", "--gpu", "A100-40GB", "--layout", "3g"], "fleetsched: --layout: '3g' is not profile@start"),
        (["plan", *DEMO, "--profile", "nope"], "fleetsched: no bundled profile 'nope'"),
    ],
    ids=["unknown-gpu", "check-unknown-gpu", "empty-layout", "comma-layout", "unknown-mig-profile", "empty-profiles",
         "repeated-profile", "no-mig", "bad-profile-name", "check-no-mig", "bad-layout", "unknown-profile"],
)
def test_user_mistakes_are_one_line_and_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == ""
    assert err.startswith(message) and err.count("\n") == 1


def test_plan_prints_placements_and_explains_pending_jobs(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", *DEMO, "--profile", "cost-greedy")
    assert code == 0
    lines = out.splitlines()
    assert lines[0] == "profile cost-greedy: 17 jobs, 10 nodes in 5 pools"
    assert any(line.startswith("llm-sweep-1") and "[h100-spot]" in line for line in lines)
    assert any(line.startswith("infer-medium") and "3g.20gb@" in line for line in lines)
    assert any(line.startswith("notebook-1") and "share 300m" in line for line in lines)
    assert any(line.startswith("vision-gang") and "PENDING" in line for line in lines)
    assert "SpotTolerance: spot node; job is not preemptible [UNRESOLVABLE]" in out
    assert lines[-1].startswith("placed ")


def test_plan_json_accounts_for_every_job(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "plan", *DEMO, "--json")
    data = json.loads(out)
    jobs = [json.loads(line)["id"] for line in (ROOT / "traces/samples/demo-jobs.jsonl").read_text().splitlines()]
    placed = [p["job"] for p in data["placements"]]
    pending = [p["job"] for p in data["pending"]]
    assert sorted(placed + pending) == sorted(jobs) and data["profile"] == "default"
    assert all(p["classes"] or p["code"] == "WAIT" for p in data["pending"])
    again_code, again, _ = run(capsys, "plan", *DEMO, "--json")
    assert (code, again_code) == (0, 0) and again == out


def test_plan_with_bad_files_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cluster = tmp_path / "c.toml"
    cluster.write_text('[[pool]]\nname = "a"\ngpu = "H100"\ngpus_per_node = -8\nusd_per_node_hour = 1.0\n')
    code, _, err = run(capsys, "plan", "--cluster", str(cluster), "--jobs", DEMO[3])
    assert code == 2 and err == f"fleetsched: {cluster}:4: pool[0] (a).gpus_per_node: must be a whole number >= 1, got -8\n"
    jobs = tmp_path / "j.jsonl"
    jobs.write_text('{"id": "a", "duration_s": 5}\n{"id": "b", "duration_s": -5}\n')
    code, _, err = run(capsys, "plan", "--cluster", DEMO[1], "--jobs", str(jobs))
    assert code == 2 and err.startswith(f"fleetsched: {jobs}:2: duration_s: must be a finite number >= 0")


def test_every_verb_has_help() -> None:
    for argv in (["--help"], ["mig", "--help"], ["mig", "layouts", "--help"], ["mig", "check", "--help"],
                 ["plan", "--help"]):
        with pytest.raises(SystemExit) as caught:
            main(argv)
        assert caught.value.code == 0


def test_the_installed_command_runs_as_a_process(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, "-m", "fleetsched.cli", "mig", "check", "--gpu", "H100-80GB",
                           "--layout", "7g.80gb@0,1g.10gb@0"], capture_output=True, text=True, check=False)
    assert done.returncode == 1 and "overlaps" in done.stdout and done.stderr == ""


def test_plan_counts_in_words_that_agree(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    jobs = tmp_path / "one.jsonl"
    jobs.write_text('{"id": "a", "gpus": 1, "duration_s": 10}\n', encoding="utf-8")
    one_pool = tmp_path / "one-pool.toml"
    one_pool.write_text('[[pool]]\nname = "a100"\ngpu = "A100-80GB"\ngpus_per_node = 8\nnodes = 1\n'
                        "usd_per_node_hour = 10.0\n", encoding="utf-8")  # fmt: skip
    code, out, _ = run(capsys, "plan", "--cluster", str(one_pool), "--jobs", str(jobs))
    assert code == 0 and out.splitlines()[0] == "profile default: 1 job, 1 node in 1 pool"
    code, out, _ = run(capsys, "plan", *DEMO)
    assert code == 0 and out.splitlines()[0] == "profile default: 17 jobs, 10 nodes in 5 pools"


def test_plan_says_how_many_replicas_of_a_gang_fit_at_once(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    """One node of two A100 GPUs in a fixed layout holds two 4g.20gb instances: two replicas of three."""
    cluster = tmp_path / "fixed.toml"
    cluster.write_text('[[pool]]\nname = "a100-fixed"\ngpu = "A100-SXM4-40GB"\ngpus_per_node = 2\nnodes = 1\n'
                       'usd_per_node_hour = 4.0\nmig = "4g.20gb@0,2g.10gb@4,1g.5gb@6"\n', encoding="utf-8")  # fmt: skip
    jobs = tmp_path / "gang.jsonl"
    jobs.write_text('{"id": "m2", "duration_s": 60, "mig_profile": "4g.20gb", "replicas": 3}\n', encoding="utf-8")
    code, out, _ = run(capsys, "plan", "--cluster", str(cluster), "--jobs", str(jobs))
    assert code == 0 and "PENDING Gang: gang of 3 replicas; 2 fit at once (1 node fits one)" in out
