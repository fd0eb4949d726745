"""`fleetsched usage report`: `--price` settles pools that price one GPU model differently (under the
catalog's key or any name the catalog resolves), and a disagreement about a model the metrics do
not name does not stop the report."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from fleetsched.cli import main
from tests.test_usage import P1, element, refused, write_record

POOL = '[[pool]]\nname = "{}"\ngpu = "{}"\ngpus_per_node = 8\nusd_per_node_hour = {}\nnodes = 1\n'


def disagreeing_cluster(path: Path, gpu: str = "H100-80GB") -> Path:
    """On-demand and spot pools of one model at different prices, and an A100 pool."""
    path.write_text(POOL.format("od", gpu, 80) + POOL.format("spot", gpu, 30) + POOL.format("a100", "A100-80GB", 24),
                    encoding="utf-8")  # fmt: skip
    return path


def priced(capsys: pytest.CaptureFixture[str], *argv: str) -> dict[str, Any]:
    assert main(["usage", "report", *argv, "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    return document


def test_a_price_under_a_catalog_alias_settles_pools_that_disagree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = disagreeing_cluster(tmp_path / "cluster.toml")
    record = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    document = priced(capsys, str(record), "--cluster", str(cluster), "--price", "H100=4", "--price", "A100-80GB=3")
    assert document["usd_per_gpu_hour"] == {"A100-80GB": 3.0, "H100-80GB": 4.0}
    assert document["usd"]["allocated"] == 4.0  # one H100-hour at the price given


def test_a_price_under_the_catalog_key_settles_pools_that_disagree(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = disagreeing_cluster(tmp_path / "cluster.toml")
    record = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1)])
    document = priced(capsys, str(record), "--cluster", str(cluster), "--price", "H100-80GB=4")
    assert document["usd_per_gpu_hour"] == {"A100-80GB": 3.0, "H100-80GB": 4.0}  # the A100 from its pool: 24 / 8


def test_pools_disagreeing_on_a_model_the_metrics_do_not_name_do_not_block(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = disagreeing_cluster(tmp_path / "cluster.toml")
    record = write_record(tmp_path / "r.jsonl", [element("p1", "a", P1, modelName="NVIDIA A100-80GB")])
    document = priced(capsys, str(record), "--cluster", str(cluster))
    assert document["usd_per_gpu_hour"] == {"A100-80GB": 3.0} and document["usd"]["allocated"] == 3.0


def test_the_disagreement_names_the_key_to_price_and_where_the_metrics_need_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cluster = disagreeing_cluster(tmp_path / "cluster.toml")
    record = write_record(tmp_path / "r.jsonl", [element("p0", "a", P1, modelName="NVIDIA A100-80GB"),
                                                 element("p1", "a", P1)])  # fmt: skip
    message = refused(capsys, [str(record), "--cluster", str(cluster)])
    assert message == (f"fleetsched: --cluster: pools od and spot price H100-80GB differently ($10.0000 and $3.7500 a "
                       f"GPU-hour); give --price H100-80GB=USD_PER_GPU_HOUR (the metrics name it: {record}:2)\n")
