"""The bundled three-team sample: what its README and governance file say of it, and the guardrails' claim on it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from scheduler.cluster import load_cluster
from scheduler.governance import period_bounds
from scheduler.governance_file import load_governance
from traces.canonical import read_jobs

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces" / "samples"
TRACE, CLUSTER, RULES = (SAMPLES / name for name in
                         ("three-teams.jsonl", "three-teams-cluster.toml", "three-teams-governance.toml"))


def test_three_teams_fill_october_on_a_cluster_smaller_than_their_peak() -> None:
    jobs = list(read_jobs(TRACE))
    rules = load_governance(RULES)
    cluster = load_cluster(CLUSTER)
    assert len(jobs) == 1084 and TRACE.stat().st_size < 300_000
    assert {job.labels.team for job in jobs} == {"7f04ca", "2869ce", "103959"} == set(rules.teams())
    months = {period_bounds(rules.budgets[0].period, rules.epoch_s + job.submit_s)[2] for job in jobs}
    assert months == {"2026-10"} and min(job.submit_s for job in jobs) == 0
    assert max(job.submit_s for job in jobs) > 30 * 86400  # October 31
    moments = sorted([(job.submit_s, job.request.gpus * job.replicas) for job in jobs]
                     + [(job.submit_s + job.duration_s, -job.request.gpus * job.replicas) for job in jobs])
    running = peak = 0
    for _, gpus in moments:
        running += gpus
        peak = max(peak, running)
    gpus = sum(pool.nodes * pool.gpus_per_node for pool in cluster.pools.values())
    assert (peak, gpus) == (374, 256) and 0.6 <= gpus / peak <= 0.8
    # Every pool counts in the file's flavour, so the queues' quotas apply to it.
    assert {rules.flavor_of(pool) for pool in cluster.pools.values()} == {"a100"}


def test_the_budget_holds_the_biggest_spender_and_no_other_team_waits_longer() -> None:
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks/bench_governance.py"), "--json"],
                          capture_output=True, text=True, check=False, cwd=ROOT, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(done.stdout)
    october = {row["team"]: row for row in report["rows"] if row["period"] == "2026-10"}
    before = {team: row["spend_usd"][0] for team, row in october.items()}
    assert max(before, key=before.__getitem__) == "7f04ca"
    # The budget is half the ungoverned spend, rounded down to a thousand dollars.
    assert october["7f04ca"]["budget_usd"] == 1000 * (before["7f04ca"] / 2 // 1000)
    assert october["7f04ca"]["spend_usd"][1] < 0.51 * before["7f04ca"]
    assert [check["period"] for check in report["budget_checks"]] == ["2026-10", "2026-11", "2026-12"]
    assert all(check["ok"] for check in report["budget_checks"])
    assert [(check["team"], check["ok"]) for check in report["queue_checks"]] == [("103959", True), ("2869ce", True)]
