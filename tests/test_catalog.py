"""The GPU catalog: name resolution, MIG tables and cloud prices.

Expected values come from the research notes (`shared/research/finops-data.md` section 1 for the
MIG tables, section 2 for the prices) and from `scheduler/data/gpu_catalog.json`, which must stay
an unchanged copy of `shared/data/gpu_catalog.json` so that every figure keeps its source.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from scheduler.catalog import (
    CAPACITY_TYPES,
    Catalog,
    GpuModelSpec,
    MigGeometry,
    default_catalog,
    load_catalog,
)
from scheduler.errors import InputError, UnknownGpuModelError

SHIPPED_CATALOG = Path(__file__).resolve().parents[1] / "scheduler" / "data" / "gpu_catalog.json"
SHARED_CATALOG = Path(__file__).resolve().parents[2] / "shared" / "data" / "gpu_catalog.json"

MIG_MODELS = (
    "A100-SXM4-40GB",
    "A100-80GB",
    "H100-80GB",
    "H100-NVL-94GB",
    "H200-141GB",
    "B200-180GB",
    "GB200-186GB",
    "A30-24GB",
    "H800-80GB",
    "A800-80GB",
)


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return default_catalog()


def _geometry(catalog: Catalog, key: str) -> MigGeometry:
    geometry = catalog.models[key].mig
    assert geometry is not None, f"{key} should have a MIG table"
    return geometry


# --- name resolution ---------------------------------------------------------------------------

NAMES = [
    # catalog keys
    ("A100-SXM4-40GB", "A100-SXM4-40GB"),
    ("H100-80GB", "H100-80GB"),
    ("A30-24GB", "A30-24GB"),
    ("K80-12GB", "K80-12GB"),
    # short forms (including the Alibaba openb model codes)
    ("A100-40GB", "A100-SXM4-40GB"),
    ("A100-80GB", "A100-80GB"),
    ("H100", "H100-80GB"),
    ("H200", "H200-141GB"),
    ("T4", "T4-16GB"),
    ("A10G", "A10G-24GB"),
    ("A10", "A10-24GB"),
    ("L4", "L4-24GB"),
    ("V100", "V100-16GB"),
    ("V100M16", "V100-16GB"),
    ("V100M32", "V100-32GB"),
    ("P100", "P100-16GB"),
    ("K80", "K80-12GB"),
    # GPU Feature Discovery nvidia.com/gpu.product values
    ("NVIDIA-H100-80GB-HBM3", "H100-80GB"),
    ("NVIDIA-A100-SXM4-40GB", "A100-SXM4-40GB"),
    ("A100-SXM4-40GB", "A100-SXM4-40GB"),
    ("NVIDIA-A100-SXM4-80GB", "A100-80GB"),
    ("NVIDIA-A100-80GB-PCIe", "A100-80GB"),
    ("NVIDIA-H100-NVL", "H100-NVL-94GB"),
    ("NVIDIA-A10G", "A10G-24GB"),
    ("NVIDIA-L4", "L4-24GB"),
    ("Tesla-T4", "T4-16GB"),
    ("Tesla-V100-SXM2-32GB", "V100-32GB"),
    ("Tesla-P100-PCIE-16GB", "P100-16GB"),
    # GFD suffixes: -MIG-<profile> (single strategy) and -SHARED (time-slicing/MPS) are stripped
    ("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb", "A100-SXM4-40GB"),
    ("NVIDIA-A100-SXM4-40GB-MIG-3g.20gb", "A100-SXM4-40GB"),
    ("NVIDIA-H100-80GB-HBM3-MIG-1g.10gb+me", "H100-80GB"),
    ("A30-MIG-2g.12gb", "A30-24GB"),
    ("NVIDIA-L4-SHARED", "L4-24GB"),
    ("Tesla-T4-SHARED", "T4-16GB"),
    ("NVIDIA-H100-80GB-HBM3-SHARED", "H100-80GB"),
    # the vendor prefix is optional
    ("NVIDIA-T4", "T4-16GB"),
    ("TESLA-K80", "K80-12GB"),
    # GKE cloud.google.com/gke-accelerator values
    ("nvidia-tesla-t4", "T4-16GB"),
    ("nvidia-l4", "L4-24GB"),
    ("nvidia-a100-80gb", "A100-80GB"),
    ("nvidia-h100-80gb", "H100-80GB"),
    ("nvidia-tesla-a100", "A100-SXM4-40GB"),
    ("nvidia-tesla-p100", "P100-16GB"),
    # case and surrounding whitespace do not matter
    ("h100-80gb", "H100-80GB"),
    ("a100-40gb", "A100-SXM4-40GB"),
    ("t4", "T4-16GB"),
    ("Nvidia-H100-80gb-Hbm3", "H100-80GB"),
    ("NVIDIA-TESLA-T4", "T4-16GB"),
    ("nvidia-a100-sxm4-40gb-mig-1G.5GB", "A100-SXM4-40GB"),
    ("nvidia-l4-shared", "L4-24GB"),
    ("  T4\n", "T4-16GB"),
]


@pytest.mark.parametrize(("name", "key"), NAMES)
def test_resolve_names(catalog: Catalog, name: str, key: str) -> None:
    spec = catalog.resolve(name)
    assert spec.name == key
    assert spec is catalog.models[key]
    assert catalog.key_of(name) == key


@pytest.mark.parametrize("key", sorted(default_catalog().models))
def test_every_key_and_alias_resolves_to_its_model(catalog: Catalog, key: str) -> None:
    model = catalog.models[key]
    assert model.name == key
    for name in (key, *model.aliases):
        assert catalog.resolve(name).name == key, name
        assert catalog.resolve(name.lower()).name == key, name


@pytest.mark.parametrize(
    "name",
    ["", "X100", "H100-80", "A100-SXM4-40GB-EXTRA", "MIG-1g.5gb", "nvidia-tesla-h100", "GTX-1080", "T4 T4"],
)
def test_unknown_names_raise_listing_known_models(catalog: Catalog, name: str) -> None:
    assert catalog.key_of(name) is None
    with pytest.raises(UnknownGpuModelError) as raised:
        catalog.resolve(name)
    assert isinstance(raised.value, InputError)
    message = str(raised.value)
    assert repr(name) in message
    for key in catalog.models:
        assert key in message


# --- MIG tables ----------------------------------------------------------------------------------


def test_mig_capable_models_are_exactly_the_expected_ones(catalog: Catalog) -> None:
    assert {key for key, model in catalog.models.items() if model.mig is not None} == set(MIG_MODELS)


@pytest.mark.parametrize("key", MIG_MODELS)
def test_mig_geometry_profiles_are_complete(catalog: Catalog, key: str) -> None:
    model = catalog.models[key]
    geometry = _geometry(catalog, key)
    expected = (4, 4) if key == "A30-24GB" else (7, 8)
    assert (geometry.compute_slices, geometry.memory_slices) == expected
    assert geometry.sources, "the MIG table must carry its sources"
    assert len(geometry.profiles) >= 5
    for name, profile in geometry.profiles.items():
        assert profile.name == name
        assert geometry.profile(name) is profile
        match = re.fullmatch(r"(\d+)g\.(\d+)gb(\+me)?", name)
        assert match, name
        # the profile name states its compute slices and its (nominal) memory
        assert profile.compute_slices == int(match.group(1)), name
        assert profile.memory_gb == float(match.group(2)), name
        assert profile.media_extensions == bool(match.group(3))
        assert 1 <= profile.compute_slices <= geometry.compute_slices
        assert 1 <= profile.memory_slices <= geometry.memory_slices
        # nominal memory is the GPU's memory times the memory-slice fraction, rounded
        assert abs(profile.memory_gb - model.memory_gb * profile.memory_slices / geometry.memory_slices) <= 1, name
        assert profile.max_count >= 1
        assert profile.starts, name
        assert list(profile.starts) == sorted(set(profile.starts))
    # the whole-GPU profile exists and covers everything
    whole = [p for p in geometry.profiles.values() if p.memory_slices == geometry.memory_slices]
    assert len(whole) == 1
    assert whole[0].compute_slices == geometry.compute_slices
    assert whole[0].starts == (0,)
    assert whole[0].memory_gb == model.memory_gb


@pytest.mark.parametrize("key", MIG_MODELS)
def test_mig_starts_fit_the_gpu_and_max_count_is_what_fits_side_by_side(catalog: Catalog, key: str) -> None:
    geometry = _geometry(catalog, key)
    for name, profile in geometry.profiles.items():
        for start in profile.starts:
            assert start >= 0
            assert start + profile.memory_slices <= geometry.memory_slices, (name, start)
            assert start % profile.memory_slices == 0, (name, start)
        # greedy by start is optimal for equal-length intervals
        side_by_side, end = 0, 0
        for start in profile.starts:
            if start >= end:
                side_by_side += 1
                end = start + profile.memory_slices
        fits = min(side_by_side, geometry.compute_slices // profile.compute_slices)
        if profile.media_extensions:
            assert profile.max_count == 1, name
        else:
            assert profile.max_count == fits, name


def test_a100_40gb_table_matches_nvidia(catalog: Catalog) -> None:
    geometry = catalog.resolve("A100-40GB").mig
    assert geometry is not None
    table = {
        name: (p.compute_slices, p.memory_slices, p.memory_gb, p.max_count, p.starts)
        for name, p in geometry.profiles.items()
    }
    assert table == {
        "1g.5gb": (1, 1, 5.0, 7, (0, 1, 2, 3, 4, 5, 6)),
        "1g.5gb+me": (1, 1, 5.0, 1, (0, 1, 2, 3, 4, 5, 6)),
        "1g.10gb": (1, 2, 10.0, 4, (0, 2, 4, 6)),
        "2g.10gb": (2, 2, 10.0, 3, (0, 2, 4)),
        "3g.20gb": (3, 4, 20.0, 2, (0, 4)),
        "4g.20gb": (4, 4, 20.0, 1, (0,)),
        "7g.40gb": (7, 8, 40.0, 1, (0,)),
    }


def test_unknown_mig_profile_names_the_legal_ones(catalog: Catalog) -> None:
    geometry = _geometry(catalog, "H100-80GB")
    with pytest.raises(InputError, match=r"unknown MIG profile '1g\.5gb'.*1g\.10gb.*7g\.80gb"):
        geometry.profile("1g.5gb")


@pytest.mark.parametrize(
    ("name", "memory_gb"),
    [("L4", 24), ("L40S", 48), ("T4", 16), ("A10G", 24), ("A10", 24), ("V100", 16), ("V100M32", 32), ("P100", 16),
     ("K80", 12)],
)
def test_non_mig_models(catalog: Catalog, name: str, memory_gb: float) -> None:
    model = catalog.resolve(name)
    assert model.mig is None
    assert model.memory_gb == memory_gb
    assert model.memory_mib == memory_gb * 1024
    assert model.source.startswith("NVIDIA product datasheets")


@pytest.mark.parametrize(
    ("key", "memory_gb"),
    [("A100-SXM4-40GB", 40), ("A100-80GB", 80), ("H100-80GB", 80), ("H100-NVL-94GB", 94), ("H200-141GB", 141),
     ("B200-180GB", 180), ("GB200-186GB", 186), ("A30-24GB", 24)],
)
def test_mig_model_memory(catalog: Catalog, key: str, memory_gb: float) -> None:
    model = catalog.models[key]
    assert model.memory_gb == memory_gb
    assert model.memory_mib == memory_gb * 1024
    assert "gpu_catalog.json" in model.source


def test_memory_mib_rounds() -> None:
    assert GpuModelSpec(name="x", memory_gb=0.5).memory_mib == 512
    assert GpuModelSpec(name="x", memory_gb=23.9999).memory_mib == 24576


# --- prices --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("aws:p5.48xlarge:spot", ("aws", "p5.48xlarge", "spot", "H100-80GB", 8, 20.9934)),
        # the JSON has an undated pre-2025-06 row ($98.32) and a 2026-11-09 row: the dated one wins
        ("aws:p5.48xlarge:on-demand", ("aws", "p5.48xlarge", "on-demand", "H100-80GB", 8, 55.04)),
        # "p5.48xlarge (Capacity Block)" is the reservation price of p5.48xlarge
        ("aws:p5.48xlarge:reserved", ("aws", "p5.48xlarge", "reserved", "H100-80GB", 8, 39.33)),
        ("aws:p4d.24xlarge:on-demand", ("aws", "p4d.24xlarge", "on-demand", "A100-SXM4-40GB", 8, 21.957642)),
        ("aws:p4de.24xlarge:spot", ("aws", "p4de.24xlarge", "spot", "A100-80GB", 8, 5.8394)),
        ("aws:p5en.48xlarge:on-demand", ("aws", "p5en.48xlarge", "on-demand", "H200-141GB", 8, 63.296)),
        ("aws:p5en.48xlarge:spot", ("aws", "p5en.48xlarge", "spot", "H200-141GB", 8, 27.1988)),
        ("aws:g4dn.xlarge:spot", ("aws", "g4dn.xlarge", "spot", "T4-16GB", 1, 0.1845)),
        ("gcp:a2-highgpu-1g:on-demand", ("gcp", "a2-highgpu-1g", "on-demand", "A100-SXM4-40GB", 1, 3.673385)),
        ("gcp:a3-highgpu-8g:spot", ("gcp", "a3-highgpu-8g", "spot", "H100-80GB", 8, 35.3957497)),
        ("gcp:g2-standard-8:spot", ("gcp", "g2-standard-8", "spot", "L4-24GB", 1, 0.336764)),
        ("azure:standard_nd96isr_h100_v5:on-demand", ("azure", "standard_nd96isr_h100_v5", "on-demand",
         "H100-80GB", 8, 98.32)),
        ("azure:standard_nc40ads_h100_v5:on-demand", ("azure", "standard_nc40ads_h100_v5", "on-demand",
         "H100-NVL-94GB", 1, 6.98)),
        ("azure:standard_nc24ads_a100_v4:spot", ("azure", "standard_nc24ads_a100_v4", "spot", "A100-80GB", 1,
         0.444433)),
    ],
)
def test_price_quotes(catalog: Catalog, key: str, expected: tuple[str, str, str, str, int, float]) -> None:
    cloud, instance, capacity, gpu, gpus, usd = expected
    quote = catalog.price(key)
    assert quote.key == key
    assert (quote.cloud, quote.instance, quote.capacity, quote.gpu_model, quote.gpus) == (
        cloud, instance, capacity, gpu, gpus,
    )
    assert quote.usd_per_hour == pytest.approx(usd)
    assert quote.usd_per_gpu_hour == pytest.approx(usd / gpus)


def test_newest_dated_row_wins_in_shipped_data(catalog: Catalog) -> None:
    on_demand = catalog.price("aws:p5.48xlarge:on-demand")
    assert on_demand.usd_per_hour == 55.04
    assert on_demand.usd_per_gpu_hour == pytest.approx(6.88)
    assert on_demand.as_of.startswith("2026-11-09")
    assert "datareceipts" in on_demand.source
    assert on_demand.region == "us-east-1"
    # the newer row has no spot price, so spot comes from the older snapshot, with its own provenance
    spot = catalog.price("aws:p5.48xlarge:spot")
    assert spot.as_of.startswith("undated catalog snapshot")
    assert "skypilot-catalog" in spot.source
    # both p5en rows have spot prices; the 2026-08-06 one wins over the undated one
    assert catalog.price("aws:p5en.48xlarge:spot").as_of == "2026-08-06"
    assert "dstack" in catalog.price("aws:p5en.48xlarge:spot").source


def test_reserved_row_carries_its_source(catalog: Catalog) -> None:
    quote = catalog.price("aws:p5.48xlarge:reserved")
    assert quote.usd_per_gpu_hour == pytest.approx(4.91625)
    assert "capacityblocks" in quote.source
    assert "2025-01-01" in quote.as_of


def test_price_keys_ignore_case_and_whitespace(catalog: Catalog) -> None:
    assert catalog.price("  AWS:P5.48xlarge:SPOT ") is catalog.price("aws:p5.48xlarge:spot")
    assert catalog.price("azure:Standard_ND96isr_H100_v5:on-demand").usd_per_hour == 98.32


def test_every_quote_is_consistent(catalog: Catalog) -> None:
    assert len(catalog.prices) >= 40
    for key, quote in catalog.prices.items():
        assert key == quote.key == f"{quote.cloud}:{quote.instance}:{quote.capacity}".lower()
        assert quote.cloud in {"aws", "gcp", "azure"}
        assert quote.capacity in CAPACITY_TYPES
        assert quote.gpu_model in catalog.models, f"{key}: {quote.gpu_model} is not a catalog key"
        assert quote.gpus >= 1
        assert quote.usd_per_hour > 0
        assert quote.source, key
        assert quote.as_of, key
        assert quote.region, key
    for cloud in ("aws", "gcp", "azure"):
        for capacity in ("on-demand", "spot"):
            assert any(q.cloud == cloud and q.capacity == capacity for q in catalog.prices.values())


def test_spot_is_cheaper_than_on_demand(catalog: Catalog) -> None:
    for key, quote in catalog.prices.items():
        if quote.capacity == "spot":
            on_demand = catalog.prices.get(key.removesuffix(":spot") + ":on-demand")
            assert on_demand is not None, key
            assert quote.usd_per_hour < on_demand.usd_per_hour, key


def test_unknown_price_key_names_near_keys(catalog: Catalog) -> None:
    with pytest.raises(InputError) as raised:
        catalog.price("aws:p9.48xlarge:spot")
    message = str(raised.value)
    assert "aws:p9.48xlarge:spot" in message
    assert "aws:p5.48xlarge:spot" in message
    assert "aws:p5.48xlarge:reserved" in message
    assert "gcp:" not in message and "azure:" not in message


def test_unknown_cloud_lists_every_key(catalog: Catalog) -> None:
    with pytest.raises(InputError) as raised:
        catalog.price("oracle:bm.gpu.h100.8:on-demand")
    message = str(raised.value)
    for key in catalog.prices:
        assert key in message


@pytest.mark.parametrize("key", ["aws:p5.48xlarge", "aws:p5.48xlarge:preemptible", "gcp:a2-highgpu-1g:reserved", ""])
def test_incomplete_or_absent_price_keys_raise(catalog: Catalog, key: str) -> None:
    with pytest.raises(InputError, match="no price for"):
        catalog.price(key)


def test_spot_notices(catalog: Catalog) -> None:
    assert dict(catalog.spot_notice_s) == {"aws": 120.0, "gcp": 30.0, "azure": 30.0}


# --- load_catalog on small documents (row order and dates) --------------------------------------

_MODELS_JSON = json.dumps({
    "sources": {"s": "test source"},
    "models": {"H100-80GB": {"memory_gb": 80, "source": "s", "aliases": ["H100"]}},
})


def _row(usd: float, as_of: str, *, spot: float | None = None, instance: str = "p5.48xlarge") -> dict[str, object]:
    return {"cloud": "aws", "instance": instance, "gpu": "H100", "gpus": 8, "on_demand_usd_hr": usd,
            "spot_usd_hr": spot, "region": "r", "source": f"src {usd}", "as_of": as_of}


def _load(*rows: dict[str, object]) -> Catalog:
    return load_catalog(json.dumps({"gpus": {}, "prices": list(rows)}), _MODELS_JSON)


@pytest.mark.parametrize(
    ("rows", "winner"),
    [
        ([_row(1, "2025-01-01"), _row(2, "2026-01-01")], 2),
        ([_row(2, "2026-01-01"), _row(1, "2025-01-01")], 2),
        ([_row(1, "undated"), _row(2, "retrieved 2026-01-01")], 2),
        ([_row(2, "retrieved 2026-01-01"), _row(1, "undated")], 2),
        ([_row(1, "undated"), _row(2, "also undated")], 1),
        ([_row(1, ""), _row(2, "")], 1),
        ([_row(1, "2025-06-30"), _row(2, "2025-06-30")], 1),
        # the latest date mentioned in a row counts
        ([_row(1, "snapshot 2024-01-01; confirmed 2026-05-05"), _row(2, "2026-01-01")], 1),
    ],
)
def test_newest_dated_row_wins(rows: list[dict[str, object]], winner: float) -> None:
    quote = _load(*rows).price("aws:p5.48xlarge:on-demand")
    assert quote.usd_per_hour == winner
    assert quote.source == f"src {winner}"


def test_loaded_quote_fields() -> None:
    catalog = _load(_row(8, "2026-01-01", spot=4), _row(6, "2026-02-02", instance="p5.48xlarge (Capacity Block)"))
    assert set(catalog.prices) == {"aws:p5.48xlarge:on-demand", "aws:p5.48xlarge:spot", "aws:p5.48xlarge:reserved"}
    spot = catalog.price("aws:p5.48xlarge:spot")
    assert (spot.gpu_model, spot.usd_per_hour, spot.usd_per_gpu_hour, spot.as_of) == ("H100-80GB", 4, 0.5, "2026-01-01")
    reserved = catalog.price("aws:p5.48xlarge:reserved")
    assert (reserved.instance, reserved.usd_per_hour, reserved.as_of) == ("p5.48xlarge", 6, "2026-02-02")
    assert catalog.models["H100-80GB"].mig is None
    assert catalog.resolve("nvidia-h100-shared").name == "H100-80GB"
    assert dict(catalog.spot_notice_s) == {}


# --- provenance ----------------------------------------------------------------------------------


@pytest.mark.skipif(not SHARED_CATALOG.parent.parent.exists(), reason="../shared is not checked out here")
def test_shipped_catalog_is_an_unchanged_copy_of_shared_data() -> None:
    assert SHARED_CATALOG.exists(), f"{SHARED_CATALOG} is missing"
    assert SHIPPED_CATALOG.read_bytes() == SHARED_CATALOG.read_bytes()


def test_shipped_catalog_keeps_sources_with_the_data() -> None:
    facts = json.loads(SHIPPED_CATALOG.read_text(encoding="utf-8"))
    for key, gpu in facts["gpus"].items():
        assert gpu["mig"]["sources"], key
        for source in gpu["mig"]["sources"]:
            assert source.startswith("https://") or "index id" in source, (key, source)
    for row in facts["prices"]:
        assert row["source"], row
        assert "as_of" in row, row
    for cloud, entry in facts["spot_notice_s"].items():
        assert entry["source"].startswith("https://"), cloud


def test_export_variants_share_their_parents_mig_tables(catalog: Catalog) -> None:
    assert catalog.resolve("H800").mig == catalog.resolve("H100-80GB").mig
    assert catalog.resolve("A800-SXM4-80GB").mig == catalog.resolve("A100-80GB").mig
    assert catalog.resolve("H800").name == "H800-80GB" != catalog.resolve("H100").name


@pytest.mark.parametrize("code", ["G1", "G2", "G3", "GPU-series-1", "GPU-series-2"])
def test_undisclosed_trace_models_are_placeholders_without_a_memory_limit(catalog: Catalog, code: str) -> None:
    model = catalog.resolve(code)
    assert model.memory_gb is None and model.mig is None
    assert model.memory_mib >= 1 << 30
    assert "undisclosed" in model.source


@pytest.mark.parametrize(
    ("nvml_name", "key"),
    [("NVIDIA A100-SXM4-80GB", "A100-80GB"), ("NVIDIA A100 80GB PCIe", "A100-80GB"),
     ("NVIDIA H100 80GB HBM3", "H100-80GB"), ("Tesla T4", "T4-16GB"), ("Tesla V100-SXM2-32GB", "V100-32GB"),
     ("NVIDIA L40S", "L40S-48GB")],
)
def test_the_names_nvml_and_dcgm_report_with_spaces_resolve(nvml_name: str, key: str) -> None:
    # DCGM's modelName label and NVML's device name have spaces where node labels have hyphens
    assert default_catalog().resolve(nvml_name).name == key
