"""Cluster files: the bundled demo, pricing alternatives, and one-line errors for bad files."""

from __future__ import annotations

from pathlib import Path

import pytest

from scheduler.catalog import default_catalog
from scheduler.cluster import DEFAULT_NOTICE_S, Cluster, load_cluster, parse_cluster
from scheduler.errors import InputError
from scheduler.mig import MigInstance
from scheduler.model import Capacity, MigMode
from scheduler.tomlfile import TomlDocument

DEMO = Path(__file__).resolve().parents[1] / "traces" / "samples" / "demo-cluster.toml"

# A valid pool on lines 1-5 (line 6 blank). Cases below add a second pool whose `[[pool]]`
# header is line 7, so the lines they pass to `second_pool` are lines 8, 9, 10, ...
FIRST_POOL = """\
[[pool]]
name = "h100-od"
gpu = "H100-80GB"
gpus_per_node = 8
usd_per_node_hour = 40.0

"""


def second_pool(*lines: str) -> str:
    return FIRST_POOL + "[[pool]]\n" + "".join(line + "\n" for line in lines)


def pool_file(*lines: str) -> str:
    """A file with one pool whose keys are `lines` (the header is line 1, keys from line 2)."""
    return "[[pool]]\n" + "".join(line + "\n" for line in lines)


def parse(text: str) -> Cluster:
    return parse_cluster(TomlDocument.parse(text, "inline.toml"), default_catalog())


def load_text(tmp_path: Path, text: str) -> Cluster:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    return load_cluster(path)


# -- the bundled demo cluster -------------------------------------------------------------------


@pytest.fixture(scope="module")
def demo() -> Cluster:
    return load_cluster(DEMO)


def test_demo_pools_in_file_order(demo: Cluster) -> None:
    assert demo.source == str(DEMO)
    assert list(demo.pools) == ["h100-od", "h100-spot", "a100-mig", "a10g-od", "t4-shared"]
    assert {name: pool.gpu.name for name, pool in demo.pools.items()} == {
        "h100-od": "H100-80GB",
        "h100-spot": "H100-80GB",
        "a100-mig": "A100-SXM4-40GB",
        "a10g-od": "A10G-24GB",
        "t4-shared": "T4-16GB",
    }


def test_demo_capacity_comes_from_the_price_or_the_file(demo: Cluster) -> None:
    assert demo.pools["h100-od"].capacity is Capacity.ON_DEMAND  # no capacity key: the price's
    assert demo.pools["h100-spot"].capacity is Capacity.SPOT


def test_demo_prices_resolved_from_the_catalog(demo: Cluster) -> None:
    catalog = default_catalog()
    for pool_name, key in [
        ("h100-od", "aws:p5.48xlarge:on-demand"),
        ("h100-spot", "aws:p5.48xlarge:spot"),
        ("a100-mig", "aws:p4d.24xlarge:on-demand"),
        ("a10g-od", "aws:g5.12xlarge:on-demand"),
        ("t4-shared", "aws:g4dn.xlarge:on-demand"),
    ]:
        quote = catalog.prices[key]
        pool = demo.pools[pool_name]
        assert pool.usd_per_node_hour == quote.usd_per_hour
        assert pool.price_source == f"{quote.source} ({quote.as_of})"
    spot = demo.pools["h100-spot"]
    assert spot.price_source.startswith("https://")
    assert spot.usd_per_gpu_hour == pytest.approx(catalog.prices["aws:p5.48xlarge:spot"].usd_per_hour / 8)


def test_demo_spot_settings_and_aws_notice_default(demo: Cluster) -> None:
    spot = demo.pools["h100-spot"]
    assert spot.interruptions_per_node_hour == 0.05
    assert spot.notice_s == 120.0
    # h100-od sets no notice_s: the aws default from the catalog applies.
    assert default_catalog().spot_notice_s["aws"] == 120.0
    assert demo.pools["h100-od"].notice_s == 120.0
    assert demo.pools["h100-od"].interruptions_per_node_hour == 0.0


def test_demo_mig_sharing_and_elastic_sizes(demo: Cluster) -> None:
    mig_pool = demo.pools["a100-mig"]
    assert (mig_pool.mig_mode, mig_pool.mig_layout, mig_pool.sharing) == (MigMode.DYNAMIC, (), False)
    shared = demo.pools["t4-shared"]
    assert (shared.mig_mode, shared.sharing) == (MigMode.OFF, True)
    sizes = {name: (p.nodes, p.min_nodes, p.max_nodes, p.elastic) for name, p in demo.pools.items()}
    assert sizes == {
        "h100-od": (2, 2, 8, True),
        "h100-spot": (2, 2, 8, True),
        "a100-mig": (1, 1, 1, False),
        "a10g-od": (2, 2, 2, False),
        "t4-shared": (3, 3, 3, False),
    }


def test_demo_snapshot_builds_initial_nodes(demo: Cluster) -> None:
    snapshot = demo.snapshot()
    assert list(snapshot.nodes) == [
        "h100-od-000", "h100-od-001",
        "h100-spot-000", "h100-spot-001",
        "a100-mig-000",
        "a10g-od-000", "a10g-od-001",
        "t4-shared-000", "t4-shared-001", "t4-shared-002",
    ]
    for node in snapshot.nodes.values():
        pool = snapshot.pool_of(node)
        assert node.name.startswith(pool.name + "-")
        assert len(node.gpus) == pool.gpus_per_node
        assert all(gpu.free for gpu in node.gpus)
        assert node.ready
    assert dict(snapshot.running) == {}


# -- pools written by hand ----------------------------------------------------------------------


def test_fixed_mig_layout_parsed_and_snapshot_starts_with_free_slots(tmp_path: Path) -> None:
    cluster = load_text(tmp_path, pool_file(
        'name = "a100-fixed"',
        'gpu = "A100-40GB"',
        "gpus_per_node = 2",
        "usd_per_node_hour = 8.0",
        'mig = "3g.20gb@4, 4g.20gb@0"',
    ))
    pool = cluster.pools["a100-fixed"]
    assert pool.mig_mode is MigMode.FIXED
    assert pool.mig_layout == (MigInstance(0, "4g.20gb"), MigInstance(4, "3g.20gb"))
    (node,) = cluster.snapshot().nodes.values()
    assert node.name == "a100-fixed-000"
    assert len(node.gpus) == 2
    for gpu in node.gpus:
        assert gpu.layout == pool.mig_layout
        assert [slot.job for slot in gpu.mig] == [None, None]
        assert not gpu.free  # split into instances, though none is held


def test_usd_per_node_hour(tmp_path: Path) -> None:
    cluster = load_text(tmp_path, pool_file(
        'name = "own"', 'gpu = "L4"', "gpus_per_node = 4", "usd_per_node_hour = 6.0", 'capacity = "reserved"',
    ))
    pool = cluster.pools["own"]
    assert (pool.usd_per_node_hour, pool.usd_per_gpu_hour) == (6.0, 1.5)
    assert pool.price_source == "cluster file"
    assert pool.capacity is Capacity.RESERVED
    assert pool.gpu.name == "L4-24GB"


def test_usd_per_gpu_hour_is_multiplied_by_gpus_per_node(tmp_path: Path) -> None:
    cluster = load_text(tmp_path, pool_file(
        'name = "own"', 'gpu = "H100"', "gpus_per_node = 8", "usd_per_gpu_hour = 3.0",
    ))
    pool = cluster.pools["own"]
    assert (pool.usd_per_node_hour, pool.usd_per_gpu_hour) == (24.0, 3.0)
    assert pool.price_source == "cluster file"
    assert pool.capacity is Capacity.ON_DEMAND  # the default without a catalog price


@pytest.mark.parametrize(
    ("lines", "notice_s"),
    [
        pytest.param(['gpu = "H100"', "gpus_per_node = 8", 'price = "aws:p5.48xlarge:spot"'], 120.0, id="aws-default"),
        pytest.param(['gpu = "H100"', "gpus_per_node = 8", 'price = "gcp:a3-highgpu-8g:spot"'], 30.0, id="gcp-default"),
        pytest.param(
            ['gpu = "H100"', "gpus_per_node = 8", 'price = "gcp:a3-highgpu-8g:spot"', "notice_s = 45"], 45.0,
            id="given",
        ),
        pytest.param(
            ['gpu = "H100"', "gpus_per_node = 8", "usd_per_node_hour = 20", 'capacity = "spot"'], DEFAULT_NOTICE_S,
            id="no-cloud",
        ),
    ],
)
def test_spot_notice(lines: list[str], notice_s: float) -> None:
    pool = parse(pool_file('name = "spot"', *lines)).pools["spot"]
    assert pool.capacity is Capacity.SPOT
    assert pool.notice_s == notice_s


def test_gcp_notice_default_comes_from_the_catalog() -> None:
    assert default_catalog().spot_notice_s["gcp"] == 30.0


def test_elastic_pool_from_min_and_max_only_and_name_width() -> None:
    cluster = parse(pool_file(
        'name = "el"', 'gpu = "T4"', "gpus_per_node = 1", "usd_per_node_hour = 0.5",
        "min_nodes = 2", "max_nodes = 1000", "provision_delay_s = 90", "idle_release_s = 300",
    ))
    pool = cluster.pools["el"]
    assert (pool.nodes, pool.min_nodes, pool.max_nodes, pool.elastic) == (2, 2, 1000, True)
    assert (pool.provision_delay_s, pool.idle_release_s) == (90.0, 300.0)
    assert list(cluster.snapshot().nodes) == ["el-0000", "el-0001"]


def test_defaults_of_a_minimal_pool() -> None:
    pool = parse(pool_file('name = "m"', 'gpu = "T4"', "gpus_per_node = 1", "usd_per_node_hour = 0.5")).pools["m"]
    assert (pool.nodes, pool.min_nodes, pool.max_nodes, pool.elastic) == (1, 1, 1, False)
    assert (pool.provision_delay_s, pool.idle_release_s, pool.interruptions_per_node_hour) == (0.0, 600.0, 0.0)
    assert (pool.mig_mode, pool.mig_layout, pool.sharing) == (MigMode.OFF, (), False)


# -- bad files: one line naming file, line, field and problem -----------------------------------

BAD_POOLS = [
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    'colour = "red"'),
        12, "pool[1] (h100-spot).colour", "unknown key; a pool has ", id="unknown-key",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H1000"', "gpus_per_node = 8", "usd_per_node_hour = 1"),
        9, "pool[1] (h100-spot).gpu", "unknown GPU model 'H1000'; known models: ", id="unknown-gpu",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = -8", "usd_per_node_hour = 1"),
        10, "pool[1] (h100-spot).gpus_per_node", "must be a whole number >= 1, got -8", id="negative-gpus",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 0", "usd_per_node_hour = 1"),
        10, "pool[1] (h100-spot).gpus_per_node", "must be a whole number >= 1, got 0", id="zero-gpus",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    "nodes = 2.5"),
        12, "pool[1] (h100-spot).nodes", "must be a whole number >= 0, got 2.5", id="non-integer-nodes",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    "min_nodes = 3", "nodes = 2"),
        13, "pool[1] (h100-spot).nodes", "need min_nodes <= nodes <= max_nodes, got 3 <= 2 <= 3",
        id="min-nodes-above-nodes",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "nodes = 4", "max_nodes = 2",
                    "usd_per_node_hour = 1"),
        11, "pool[1] (h100-spot).nodes", "need min_nodes <= nodes <= max_nodes, got 4 <= 4 <= 2",
        id="nodes-above-max",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    'capacity = "preemptible"'),
        12, "pool[1] (h100-spot).capacity", "must be one of on-demand, spot, reserved, got 'preemptible'",
        id="unknown-capacity",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", 'price = "aws:p9.48xlarge:spot"'),
        11, "pool[1] (h100-spot).price", "no price for 'aws:p9.48xlarge:spot'; known: aws:", id="unknown-price",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "A100-40GB"', "gpus_per_node = 8", 'price = "aws:p5.48xlarge:spot"'),
        11, "pool[1] (h100-spot).price", "aws:p5.48xlarge:spot is a H100-80GB price; the pool has A100-SXM4-40GB",
        id="price-for-other-gpu",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 4", 'price = "aws:p5.48xlarge:spot"'),
        11, "pool[1] (h100-spot).price", "aws:p5.48xlarge:spot has 8 GPUs per node; the pool says 4",
        id="price-with-other-gpus-per-node",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", 'price = "aws:p5.48xlarge:spot"',
                    'capacity = "on-demand"'),
        12, "pool[1] (h100-spot).capacity", "is on-demand but the price is a spot price",
        id="capacity-contradicts-price",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    'price = "aws:p5.48xlarge:spot"'),
        11, "pool[1] (h100-spot).usd_per_node_hour", "give one of price = ", id="two-prices",  # the second key
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8"),
        7, "pool[1] (h100-spot).price", "give one of price = ", id="no-price-points-at-header",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_gpu_hour = -1"),
        11, "pool[1] (h100-spot).usd_per_gpu_hour", "must be a finite number >= 0, got -1", id="negative-gpu-price",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "A100-40GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    'mig = "4g.20gb@0,3g.20gb@2"'),
        12, "pool[1] (h100-spot).mig",
        "not off, dynamic or a legal A100-SXM4-40GB layout: 3g.20gb@2: illegal start 2; 3g.20gb may start at 0, 4",
        id="illegal-fixed-layout",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "A100-40GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    'mig = "3g.20gb"'),
        12, "pool[1] (h100-spot).mig", "'3g.20gb' is not profile@start", id="layout-without-start",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "A100-40GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    'mig = ","'),
        12, "pool[1] (h100-spot).mig", "a fixed layout needs at least one instance", id="empty-layout",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "T4"', "gpus_per_node = 1", "usd_per_node_hour = 1",
                    'mig = "dynamic"'),
        12, "pool[1] (h100-spot).mig", "T4-16GB does not support MIG", id="mig-on-t4",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "A100-40GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    'mig = "dynamic"', "sharing = true"),
        13, "pool[1] (h100-spot).sharing", "GPUs in MIG mode are split into instances, not shared",
        id="sharing-on-mig",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "T4"', "gpus_per_node = 1", "usd_per_node_hour = 1",
                    'sharing = "yes"'),
        12, "pool[1] (h100-spot).sharing", "must be true or false, got 'yes'", id="sharing-not-boolean",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8",
                    'price = "aws:p5.48xlarge:on-demand"', "interruptions_per_node_hour = 0.1"),
        12, "pool[1] (h100-spot).interruptions_per_node_hour",
        "only spot pools are interrupted; this pool is on-demand", id="interruptions-on-demand",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", 'price = "aws:p5.48xlarge:spot"',
                    "notice_s = -1"),
        12, "pool[1] (h100-spot).notice_s", "must be a finite number >= 0, got -1", id="negative-notice",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    "nodes = 100001"),
        12, "pool[1] (h100-spot).nodes", "must be at most 100,000, got 100001", id="too-many-nodes",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    "max_nodes = 100000000"),
        12, "pool[1] (h100-spot).max_nodes", "must be at most 100,000, got 100000000", id="too-many-max-nodes",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    "min_nodes = -1"),
        12, "pool[1] (h100-spot).min_nodes", "must be a whole number >= 0, got -1", id="negative-min-nodes",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 4096", "usd_per_node_hour = 1"),
        10, "pool[1] (h100-spot).gpus_per_node", "must be at most 1,024, got 4096", id="too-many-gpus-per-node",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    "provision_delay_s = 1e306"),
        12, "pool[1] (h100-spot).provision_delay_s", "must be at most 1e+12, got 1e+306", id="huge-delay",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1",
                    "idle_release_s = inf"),
        12, "pool[1] (h100-spot).idle_release_s", "must be a finite number >= 0, got inf", id="infinite-release",
    ),
    pytest.param(
        second_pool('name = "h100-spot"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_gpu_hour = 1e300"),
        11, "pool[1] (h100-spot).usd_per_gpu_hour", "must be at most 1e+12, got 1e+300", id="huge-price",
    ),
    pytest.param(
        second_pool('name = "h100-od"', 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1"),
        8, "pool[1] (h100-od).name", "pool 'h100-od' is defined twice", id="duplicate-name",
    ),
    pytest.param(
        second_pool("name = 5", 'gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1"),
        8, "pool[1].name", "must be text, got 5", id="name-not-text",
    ),
    pytest.param(
        second_pool('gpu = "H100-80GB"', "gpus_per_node = 8", "usd_per_node_hour = 1"),
        7, "pool[1].name", "required text", id="name-missing",
    ),
    pytest.param(
        "# a cluster\nregion = 'us-east-1'\n\n" + FIRST_POOL,
        2, "region", "unknown top-level key; a cluster file holds [[pool]] tables", id="unknown-top-level-key",
    ),
]


@pytest.mark.parametrize(("text", "line", "field", "problem"), BAD_POOLS)
def test_bad_cluster_file(tmp_path: Path, text: str, line: int, field: str, problem: str) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    error = caught.value
    assert (error.source, error.line, error.field) == (str(path), line, field)
    assert str(error).startswith(f"{path}:{line}: {field}: ")
    assert problem in str(error)


def test_bad_toml_syntax_gives_tomllib_line(tmp_path: Path) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(FIRST_POOL + '[[pool]]\nname = "broken"\ngpu = \n', encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    assert caught.value.line == 9
    assert str(caught.value).startswith(f"{path}:9: not valid TOML: ")
    assert "(at line" not in str(caught.value)  # the position is moved to the front, not repeated


@pytest.mark.parametrize(
    "text",
    [pytest.param("", id="empty"), pytest.param("# only a comment\n", id="comment"),
     pytest.param("pool = []\n", id="empty-list")],
)
def test_no_pools(tmp_path: Path, text: str) -> None:
    path = tmp_path / "cluster.toml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    assert str(caught.value) == f"{path}: no [[pool]] tables; a cluster needs at least one pool"


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.toml"
    with pytest.raises(InputError) as caught:
        load_cluster(path)
    assert str(caught.value) == f"{path}: No such file or directory"
    assert caught.value.line is None


def test_parse_names_the_given_source() -> None:
    with pytest.raises(InputError) as caught:
        parse(pool_file('name = "p"', 'gpu = "T4"', "gpus_per_node = 0", "usd_per_node_hour = 1"))
    assert str(caught.value) == "inline.toml:4: pool[0] (p).gpus_per_node: must be a whole number >= 1, got 0"


# -- non-finite numbers and top-level tables --------------------------------------------------


@pytest.mark.parametrize(
    ("line", "key"),
    [
        pytest.param("usd_per_node_hour = nan", "usd_per_node_hour", id="nan-price"),
        pytest.param("usd_per_node_hour = inf", "usd_per_node_hour", id="inf-price"),
    ],
)
def test_non_finite_numbers_are_rejected(line: str, key: str) -> None:
    with pytest.raises(InputError) as caught:
        parse(pool_file('name = "p"', 'gpu = "T4"', "gpus_per_node = 1", line))
    assert caught.value.field == f"pool[0] (p).{key}"
    assert caught.value.line == 5


def test_unknown_top_level_table_names_its_line() -> None:
    with pytest.raises(InputError) as caught:
        parse("# a cluster\n[defaults]\nregion = 'x'\n\n" + FIRST_POOL)
    assert str(caught.value).startswith("inline.toml:2: defaults: unknown top-level key")
