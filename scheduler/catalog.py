"""The GPU catalog: GPU models, their MIG profiles and legal placements, and cloud prices.

Every figure comes from `scheduler/data/gpu_catalog.json` (a copy of the project's researched
catalog, each entry with its source and date) and `scheduler/data/gpu_models.json` (names and
memory of the models, including those without MIG). Names resolve from the catalog key
(`H100-80GB`), short forms (`A100-40GB`, `T4`), GPU Feature Discovery's `nvidia.com/gpu.product`
values (`NVIDIA-H100-80GB-HBM3`, `NVIDIA-A100-SXM4-40GB-MIG-1g.5gb`) and GKE accelerator names.

Prices are looked up by `cloud:instance:capacity`, for example `aws:p5.48xlarge:spot`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from importlib import resources
from types import MappingProxyType
from typing import Any

from scheduler.errors import InputError, UnknownGpuModelError

CAPACITY_TYPES = ("on-demand", "spot", "reserved")
UNKNOWN_MEMORY_MIB = 1 << 30
_SUFFIX = re.compile(r"-(MIG-.*|SHARED)$", re.IGNORECASE)
_PREFIX = re.compile(r"^(NVIDIA|TESLA)-", re.IGNORECASE)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True, kw_only=True)
class MigProfileSpec:
    """One MIG GPU-instance profile: its slices, memory, instance limit and legal starts.

    Starts are indices on the memory-slice axis (NVML `nvmlGpuInstancePlacement_t.start`);
    an instance occupies `[start, start + memory_slices)`.
    """

    name: str
    compute_slices: int
    memory_slices: int
    memory_gb: float
    max_count: int
    starts: tuple[int, ...]

    @property
    def media_extensions(self) -> bool:
        """Whether this is a `+me` profile (at most one such instance per GPU)."""
        return "+me" in self.name


@dataclass(frozen=True, slots=True, kw_only=True, eq=False)
class MigGeometry:
    """The MIG partition table of one GPU model (compared and hashed by identity, for caches)."""

    compute_slices: int
    memory_slices: int
    profiles: Mapping[str, MigProfileSpec]
    sources: tuple[str, ...] = ()

    def profile(self, name: str) -> MigProfileSpec:
        """The profile called `name`; raises InputError naming the legal ones otherwise."""
        try:
            return self.profiles[name]
        except KeyError:
            legal = ", ".join(self.profiles)
            raise InputError(f"unknown MIG profile {name!r}; this GPU has {legal}") from None


@dataclass(frozen=True, slots=True, kw_only=True)
class GpuModelSpec:
    """A GPU model: its catalog key, memory per GPU, MIG table (None without MIG) and names."""

    name: str
    memory_gb: float | None
    mig: MigGeometry | None = None
    aliases: tuple[str, ...] = ()
    source: str = ""

    @property
    def memory_mib(self) -> int:
        """Memory per GPU in MiB, the unit GPU shares are accounted in.

        A model whose memory is undisclosed (the traces' code-named GPUs) does not limit
        shares by memory: its memory counts as UNKNOWN_MEMORY_MIB.
        """
        return UNKNOWN_MEMORY_MIB if self.memory_gb is None else round(self.memory_gb * 1024)


@dataclass(frozen=True, slots=True, kw_only=True)
class PriceQuote:
    """What one cloud instance costs per hour for one capacity type, and where that came from."""

    key: str
    cloud: str
    instance: str
    capacity: str
    gpu_model: str
    gpus: int
    usd_per_hour: float
    region: str
    source: str
    as_of: str

    @property
    def usd_per_gpu_hour(self) -> float:
        return self.usd_per_hour / self.gpus


@dataclass(frozen=True, slots=True)
class Catalog:
    """GPU models by catalog key, a name index, and price quotes by `cloud:instance:capacity`."""

    models: Mapping[str, GpuModelSpec]
    prices: Mapping[str, PriceQuote] = field(default_factory=dict)
    _names: Mapping[str, str] = field(default_factory=dict)
    spot_notice_s: Mapping[str, float] = field(default_factory=dict)

    def resolve(self, name: str) -> GpuModelSpec:
        """The model a name denotes, or UnknownGpuModelError listing the known keys.

        >>> default_catalog().resolve("NVIDIA-A100-SXM4-40GB-MIG-1g.5gb").name
        'A100-SXM4-40GB'
        """
        key = self.key_of(name)
        if key is None:
            known = ", ".join(sorted(self.models))
            raise UnknownGpuModelError(f"unknown GPU model {name!r}; known models: {known}")
        return self.models[key]

    def key_of(self, name: str) -> str | None:
        """The catalog key for a name, or None when no model has that name."""
        normal = _SUFFIX.sub("", "-".join(name.split())).upper()  # NVML's and DCGM's names have spaces, labels hyphens
        for candidate in (normal, _PREFIX.sub("", normal)):
            key = self._names.get(candidate)
            if key is not None:
                return key
        return None

    def price(self, key: str) -> PriceQuote:
        """The quote for `cloud:instance:capacity`; InputError naming close keys otherwise."""
        quote = self.prices.get(key.strip().lower())
        if quote is None:
            cloud = key.split(":", 1)[0].lower()
            near = sorted(k for k in self.prices if k.startswith(cloud + ":")) or sorted(self.prices)
            raise InputError(f"no price for {key!r}; known: {', '.join(near)}")
        return quote


def _mig_geometry(raw: Mapping[str, Any]) -> MigGeometry:
    profiles = {
        name: MigProfileSpec(
            name=name,
            compute_slices=int(spec["compute_slices"]),
            memory_slices=int(spec["memory_slices"]),
            memory_gb=float(spec["memory_gb"]),
            max_count=int(spec["max_count"]),
            starts=tuple(int(start) for start in spec["placements"]),
        )
        for name, spec in raw["profiles"].items()
    }
    return MigGeometry(
        compute_slices=int(raw["total_compute_slices"]),
        memory_slices=int(raw["total_memory_slices"]),
        profiles=MappingProxyType(profiles),
        sources=tuple(raw.get("sources", ())),
    )


def _price_quotes(rows: Sequence[Mapping[str, Any]], catalog_names: Catalog) -> dict[str, PriceQuote]:
    """Quotes keyed `cloud:instance:capacity`; the newest dated row wins where rows repeat.

    An instance name with a note in brackets, such as `p5.48xlarge (Capacity Block)`, is a
    reservation: it is keyed as the `reserved` capacity of the bare instance name.
    """
    quotes: dict[str, PriceQuote] = {}
    for row in rows:
        instance = str(row["instance"])
        reserved = "(" in instance
        instance = instance.split("(", maxsplit=1)[0].strip().lower()
        gpu = catalog_names.key_of(str(row["gpu"])) or str(row["gpu"])
        as_of = str(row.get("as_of", ""))
        offers = [("reserved", row.get("on_demand_usd_hr"))] if reserved else [
            ("on-demand", row.get("on_demand_usd_hr")),
            ("spot", row.get("spot_usd_hr")),
        ]
        for capacity, usd in offers:
            if usd is None:
                continue
            key = f"{row['cloud']}:{instance}:{capacity}".lower()
            quote = PriceQuote(
                key=key,
                cloud=str(row["cloud"]),
                instance=instance,
                capacity=capacity,
                gpu_model=gpu,
                gpus=int(row["gpus"]),
                usd_per_hour=float(usd),
                region=str(row.get("region", "")),
                source=str(row.get("source", "")),
                as_of=as_of,
            )
            if key not in quotes or _newer(as_of, quotes[key].as_of):
                quotes[key] = quote
    return quotes


def _newer(as_of: str, than: str) -> bool:
    """Whether a quote dated `as_of` should replace one dated `than` (undated rows lose)."""
    new, old = _ISO_DATE.findall(as_of), _ISO_DATE.findall(than)
    if not new:
        return False
    return not old or max(new) > max(old)


def load_catalog(catalog_json: str, models_json: str) -> Catalog:
    """Builds a Catalog from the two JSON documents (see the module docstring)."""
    facts = json.loads(catalog_json)
    names = json.loads(models_json)
    models: dict[str, GpuModelSpec] = {}
    index: dict[str, str] = {}
    geometries = {key: _mig_geometry(gpu["mig"]) for key, gpu in facts["gpus"].items() if gpu.get("mig")}
    for key, entry in names["models"].items():
        models[key] = GpuModelSpec(
            name=key,
            memory_gb=None if entry["memory_gb"] is None else float(entry["memory_gb"]),
            mig=geometries.get(entry.get("mig_from", key)),
            aliases=tuple(entry["aliases"]),
            source=str(names["sources"][entry["source"]]),
        )
        for alias in (key, *entry["aliases"]):
            index[alias.upper()] = key
    named = Catalog(MappingProxyType(models), {}, MappingProxyType(index))
    prices = _price_quotes(facts["prices"], named)
    notices = {cloud: float(entry["notice_s"]) for cloud, entry in facts.get("spot_notice_s", {}).items()}
    return Catalog(named.models, MappingProxyType(prices), named._names, MappingProxyType(notices))


@cache
def default_catalog() -> Catalog:
    """The catalog shipped in the package (read once; it is immutable)."""
    data = resources.files("scheduler") / "data"
    return load_catalog(
        (data / "gpu_catalog.json").read_text(encoding="utf-8"),
        (data / "gpu_models.json").read_text(encoding="utf-8"),
    )
