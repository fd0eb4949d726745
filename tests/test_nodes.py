"""Node lists to cluster files: the openb and spot node lists load as clusters with the right totals."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from scheduler.catalog import default_catalog
from scheduler.cluster import Cluster, load_cluster
from scheduler.errors import InputError
from scheduler.model import Capacity
from traces.nodes import FLAT_USD_PER_GPU_HOUR, PLACEHOLDER_USD_PER_GPU_HOUR, cluster_from_nodes, write_cluster

SHARED = Path(__file__).resolve().parents[2] / "shared" / "traces"
OPENB = SHARED / "alibaba-gpu-v2023"
SPOT = SHARED / "alibaba-spot-gpu-v2026" / "node_info_df.csv"
needs_shared = pytest.mark.skipif(not SHARED.exists(), reason="../shared/traces is not checked out here")
OPENB_GPUS = {
    "openb-G2": 4_392, "T4-16GB": 842, "openb-G3": 312, "P100-16GB": 265, "V100-32GB": 204, "V100-16GB": 195,
    "A10-24GB": 2,
}
SPOT_GPUS = {
    "A10-24GB": 2_494, "alibaba-GPU-series-1": 1_558, "A100-80GB": 3_456, "H800-80GB": 1_752,
    "alibaba-GPU-series-2": 976, "A800-80GB": 176,
}


def generated(tmp_path: Path, source: Path) -> tuple[str, Cluster]:
    text = cluster_from_nodes(source)
    out = tmp_path / "cluster.toml"
    write_cluster(text, out)
    return text, load_cluster(out)


def gpus_by_model(cluster: Cluster) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for pool in cluster.pools.values():
        totals[pool.gpu.name] += pool.nodes * pool.gpus_per_node
    return dict(totals)


@needs_shared
@pytest.mark.parametrize("name", ["openb_node_list_gpu_node.csv", "openb_node_list_all_node.csv"])
def test_openb_node_lists_load_with_the_published_totals(tmp_path: Path, name: str) -> None:
    text, cluster = generated(tmp_path, OPENB / name)
    assert sum(pool.nodes for pool in cluster.pools.values()) == 1_213
    assert gpus_by_model(cluster) == OPENB_GPUS
    assert sum(OPENB_GPUS.values()) == 6_212
    assert all(pool.capacity is Capacity.ON_DEMAND and pool.sharing for pool in cluster.pools.values())
    assert cluster.pools["t4-x2"].gpu.name == "T4-16GB" and cluster.pools["t4-x2"].nodes == 387
    assert ("310 CPU-only nodes" in text) == (name == "openb_node_list_all_node.csv")
    assert text.startswith(f"# Cluster from the openb node list {name}")
    assert "Origin repo: https://github.com/alibaba/clusterdata" in text and "Licence:" in text


@needs_shared
def test_spot_node_list_loads_with_the_published_totals(tmp_path: Path) -> None:
    text, cluster = generated(tmp_path, SPOT)
    assert sum(pool.nodes for pool in cluster.pools.values()) == 4_278
    assert sum(gpus_by_model(cluster).values()) == 10_412
    assert gpus_by_model(cluster) == SPOT_GPUS
    assert "cluster-trace-v2026-spot-gpu" in text and "sharing" not in text


@needs_shared
def test_prices_follow_the_catalog_then_stated_placeholders(tmp_path: Path) -> None:
    text, cluster = generated(tmp_path, SPOT)
    a100 = cluster.pools["a100-sxm4-80gb-x8"]
    assert 'price = "aws:p4de.24xlarge:on-demand"' in text
    assert a100.usd_per_node_hour == default_catalog().price("aws:p4de.24xlarge:on-demand").usd_per_hour
    assert cluster.pools["h800-x8"].usd_per_gpu_hour == pytest.approx(6.88)
    assert cluster.pools["gpu-series-2-x8"].usd_per_gpu_hour == FLAT_USD_PER_GPU_HOUR
    assert "# placeholder price: no alibaba-GPU-series-2 quote in the catalog; an undisclosed model" in text
    _, openb = generated(tmp_path, OPENB / "openb_node_list_gpu_node.csv")
    # T4 has only 1-GPU quotes: a 2-GPU pool takes the cheapest per-GPU on-demand price.
    assert openb.pools["t4-x2"].usd_per_gpu_hour == pytest.approx(0.526)
    assert openb.pools["p100-x2"].usd_per_gpu_hour == FLAT_USD_PER_GPU_HOUR


@pytest.mark.parametrize(
    ("model", "quote", "divisor"),
    [
        ("A10-24GB", "aws:g5.xlarge:on-demand", 1),
        ("A800-80GB", "aws:p4de.24xlarge:on-demand", 8),
        ("H800-80GB", "aws:p5.48xlarge:on-demand", 8),
    ],
)
def test_placeholders_match_the_quotes_they_name(model: str, quote: str, divisor: int) -> None:
    usd, reason = PLACEHOLDER_USD_PER_GPU_HOUR[model]
    assert quote in reason
    assert usd == pytest.approx(default_catalog().price(quote).usd_per_hour / divisor, abs=0.001)
    assert not any(q.gpu_model == model and q.capacity == "on-demand" for q in default_catalog().prices.values())


def write(tmp_path: Path, text: str, name: str = "nodes.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_small_openb_list_without_readme_gets_a_generic_attribution(tmp_path: Path) -> None:
    path = write(tmp_path, "sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,0,\nn1,1,1,8,G2\nn2,1,1,2,T4\nn3,1,1,2,T4\n")
    text = cluster_from_nodes(path)
    assert "origin and licence unknown" in text and "1 CPU-only nodes" in text
    out = tmp_path / "c.toml"
    write_cluster(text, out)
    pools = load_cluster(out).pools
    assert {name: (p.gpu.name, p.gpus_per_node, p.nodes) for name, p in pools.items()} == {
        "g2-x8": ("openb-G2", 8, 1), "t4-x2": ("T4-16GB", 2, 2),
    }


def test_spot_columns_in_any_order(tmp_path: Path) -> None:
    path = write(tmp_path, "node_name,cpu_num,gpu_capacity_num,gpu_model\n0,96,8,H800\n1,96,1,A10\n")
    pools = load_cluster(write(tmp_path, cluster_from_nodes(path), "c.toml")).pools
    assert sorted(pools) == ["a10-x1", "h800-x8"]


@pytest.mark.parametrize(
    ("text", "line", "field"),
    [
        ("sn,cpu_milli,memory_mib,gpu\nn0,1,1,8\n", 1, "model"),
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,8,G2\nn1,1,1,eight,G2\n", 3, "gpu"),
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,8,G2\nn1,1,1,8,Z99\n", 3, "model"),
        ("sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,8,\n", 2, "model"),
        ("gpu_model,gpu_capacity_num,cpu_num,node_name\nH800,-8,96,0\n", 2, "gpu_capacity_num"),
        ("gpu_model,cpu_num,node_name\nH800,96,0\n", 1, "gpu_capacity_num"),
        ("a,b,c\n1,2,3\n", 1, ""),
    ],
)
def test_bad_node_lists_name_file_line_and_field(tmp_path: Path, text: str, line: int, field: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(InputError) as caught:
        cluster_from_nodes(path)
    assert (caught.value.source, caught.value.line, caught.value.field) == (str(path), line, field)


def test_a_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no such file") as caught:
        cluster_from_nodes(tmp_path / "absent.csv")
    assert caught.value.source == str(tmp_path / "absent.csv")


def test_a_list_without_gpu_nodes_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no GPU nodes"):
        cluster_from_nodes(write(tmp_path, "sn,cpu_milli,memory_mib,gpu,model\nn0,1,1,0,\n"))


def test_write_cluster_replaces_atomically_and_leaves_nothing_on_error(tmp_path: Path) -> None:
    out = tmp_path / "c.toml"
    out.write_text("old\n", encoding="utf-8")
    write_cluster("new\n", out)
    assert out.read_text(encoding="utf-8") == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml"]
    with pytest.raises(InputError) as caught:
        write_cluster("x\n", tmp_path / "missing" / "c.toml")
    assert caught.value.source == str(tmp_path / "missing" / "c.toml")
    target = tmp_path / "dir.toml"
    target.mkdir()
    with pytest.raises(InputError):
        write_cluster("x\n", target)  # renaming a file over a directory fails
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "dir.toml"]
    with pytest.raises(TypeError):
        write_cluster(b"bytes", out)  # type: ignore[arg-type]
    assert out.read_text(encoding="utf-8") == "new\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.toml", "dir.toml"]
