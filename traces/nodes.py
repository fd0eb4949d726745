"""Trace node lists as cluster files: the openb (2023) and spot (2026) Alibaba node lists to TOML pools.

Two layouts, told apart by their header:
- openb `openb_node_list_*.csv`: `sn, cpu_milli, memory_mib, gpu, model`. Rows with `gpu` 0 are
  CPU-only nodes: fleetsched schedules GPUs, so they are left out (and counted in a comment).
  openb pods ask for GPU shares, so openb pools share their GPUs (`sharing = true`).
- spot `node_info_df.csv`: `gpu_model, gpu_capacity_num, cpu_num, node_name`.

Nodes are grouped into one on-demand pool per (GPU model, GPUs per node), named like `t4-x2`.
Each pool's price is, in this order: the catalog's cheapest on-demand quote for that model
with the same GPUs per node (`price = "cloud:instance:on-demand"`); else the cheapest per-GPU
on-demand quote for the model (`usd_per_gpu_hour`, with a comment naming the quote, its source
and date); else a stated placeholder from PLACEHOLDER_USD_PER_GPU_HOUR, or FLAT_USD_PER_GPU_HOUR
for models with no priced relative (undisclosed models, V100, P100), commented as such.
CPU and memory sizes are not modelled and are ignored.
"""

from __future__ import annotations

import csv
import json
import os
import re
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from scheduler.catalog import Catalog, PriceQuote, default_catalog
from scheduler.errors import InputError
from traces.base import csv_rows, first_line

OPENB_COLUMNS = ("sn", "gpu", "model")
SPOT_COLUMNS = ("gpu_model", "gpu_capacity_num")
FLAT_USD_PER_GPU_HOUR = 2.0
# Unpriced models with a priced sibling: (USD per GPU-hour, the quote it is taken from and why).
# tests/test_nodes.py checks each figure against the catalog quote it names.
PLACEHOLDER_USD_PER_GPU_HOUR: dict[str, tuple[float, str]] = {
    "A10-24GB": (1.006, "A10G's (aws:g5.xlarge:on-demand, 1 GPU), the cloud variant of the same 24 GB part"),
    "A800-80GB": (3.431, "A100-80GB's (aws:p4de.24xlarge:on-demand / 8 GPUs), as A800 is its export variant"),
    "H800-80GB": (6.88, "H100-80GB's (aws:p5.48xlarge:on-demand / 8 GPUs), as H800 is its export variant"),
}


@dataclass(frozen=True, slots=True)
class NodeGroup:
    """Nodes of one GPU model (catalog key) with the same GPUs per node."""

    model: str
    label: str
    gpus_per_node: int
    nodes: int

    @property
    def name(self) -> str:
        return f"{re.sub(r'[^a-z0-9]+', '-', self.label.lower()).strip('-')}-x{self.gpus_per_node}"


def _layout(path: Path) -> tuple[str, tuple[str, ...], str]:
    """(layout name, required columns, GPU-count column) from the header; InputError when neither."""
    if not path.is_file():
        raise InputError("no such file", source=str(path))
    header = {name.strip() for name in next(csv.reader([first_line(path)]), [])}
    if header & {"gpu_model", "gpu_capacity_num", "node_name"}:
        return "spot", SPOT_COLUMNS, "gpu_capacity_num"
    if header & {"sn", "model", "cpu_milli"}:
        return "openb", OPENB_COLUMNS, "gpu"
    message = "not a node list: expected an openb (sn, cpu_milli, memory_mib, gpu, model) or spot (gpu_model, "
    raise InputError(message + "gpu_capacity_num, cpu_num, node_name) header", source=str(path), line=1)


def _nodes(path: Path, catalog: Catalog) -> tuple[str, list[NodeGroup], int]:
    """(layout, GPU node groups sorted by name, CPU-only nodes left out)."""
    layout, columns, gpu_column = _layout(path)
    model_column = "model" if layout == "openb" else "gpu_model"
    counts: Counter[tuple[str, int]] = Counter()
    labels: dict[str, str] = {}
    cpu_only = 0
    for fields in csv_rows(path, columns):
        gpus = fields.integer(gpu_column)
        if gpus == 0:
            cpu_only += 1
            continue
        label = fields.text(model_column)
        key = catalog.key_of(label)
        if key is None:
            raise fields.fail(model_column, f"unknown GPU model {label!r}")
        labels.setdefault(key, label)
        counts[key, gpus] += 1
    if not counts:
        raise InputError("no GPU nodes in the node list", source=str(path))
    groups = [NodeGroup(key, labels[key], gpus, nodes) for (key, gpus), nodes in counts.items()]
    return layout, sorted(groups, key=lambda group: (group.name, group.gpus_per_node)), cpu_only


def _on_demand(catalog: Catalog, model: str) -> list[PriceQuote]:
    quotes = [quote for quote in catalog.prices.values() if quote.gpu_model == model and quote.capacity == "on-demand"]
    return sorted(quotes, key=lambda quote: (quote.usd_per_gpu_hour, quote.key))


def _price_lines(group: NodeGroup, catalog: Catalog) -> list[str]:
    quotes = _on_demand(catalog, group.model)
    same_size = [quote for quote in quotes if quote.gpus == group.gpus_per_node]
    if same_size:
        return [f"price = {json.dumps(same_size[0].key)}"]
    if quotes:
        quote = quotes[0]
        return [
            f"# per-GPU price of {quote.key} (${quote.usd_per_hour:g}/h for {quote.gpus} GPU"
            f"{'s' if quote.gpus > 1 else ''}); {quote.source} ({quote.as_of})",
            f"usd_per_gpu_hour = {round(quote.usd_per_gpu_hour, 6)!r}",
        ]
    usd, derived = PLACEHOLDER_USD_PER_GPU_HOUR.get(group.model, (FLAT_USD_PER_GPU_HOUR, ""))
    if derived:
        reason = f"taken from {derived}"
    elif catalog.models[group.model].memory_gb is None:
        reason = f"an undisclosed model, so nothing to derive from: a flat {usd:g} USD/GPU-h, not a market price"
    else:
        reason = f"no priced model of its generation to derive from: a flat {usd:g} USD/GPU-h, not a market price"
    return [f"# placeholder price: no {group.model} quote in the catalog; {reason}", f"usd_per_gpu_hour = {usd!r}"]


def _attribution(path: Path) -> list[str]:
    """The title and origin, commit and licence bullets of the README.md next to the file, or a generic line."""
    try:
        text = (path.parent / "README.md").read_text(encoding="utf-8")
    except OSError:
        text = ""
    bullets: list[str] = []
    title = ""
    for line in text.splitlines():
        if line.startswith("# ") and not title:
            title = "Trace: " + line[2:].strip()
        elif line.startswith("- "):
            bullets.append(line[2:].strip())
        elif line[:1].isspace() and line.strip() and bullets:
            bullets[-1] += " " + line.strip()
        elif not line.strip():
            bullets.append("")
    kept = [bullet for bullet in bullets if bullet.lower().startswith(("origin", "commit", "licence", "license"))]
    if not kept:
        return ["origin and licence unknown (no README.md next to the node list): check its terms before use"]
    return [title, *kept] if title else kept


def cluster_from_nodes(path: str | Path, catalog: Catalog | None = None) -> str:
    """The cluster TOML text for an openb or spot node list; InputError naming file, line, field."""
    path = Path(path)
    catalog = catalog or default_catalog()
    layout, groups, cpu_only = _nodes(path, catalog)
    nodes = sum(group.nodes for group in groups)
    gpus = sum(group.nodes * group.gpus_per_node for group in groups)
    lines = [f"# Cluster from the {layout} node list {path.name} ({nodes} GPU nodes, {gpus} GPUs)."]
    lines += [f"# {line}" for line in _attribution(path)]
    if cpu_only:
        lines.append(f"# {cpu_only} CPU-only nodes (no GPU) are left out: fleetsched schedules GPUs.")
    lines.append("# One on-demand pool per (GPU model, GPUs per node); CPU and memory sizes are not modelled.")
    for group in groups:
        lines += [
            "",
            "[[pool]]",
            f"name = {json.dumps(group.name)}",
            f"gpu = {json.dumps(group.model)}",
            f"gpus_per_node = {group.gpus_per_node}",
            f"nodes = {group.nodes}",
            'capacity = "on-demand"',
            *_price_lines(group, catalog),
        ]
        if layout == "openb":
            lines.append("sharing = true  # openb pods ask for GPU shares (gpu_milli < 1000)")
    return "\n".join(lines) + "\n"


def write_cluster(text: str, out: str | Path) -> None:
    """Writes `text` to `out` atomically (a temporary file, then a rename); nothing is left on error."""
    out = Path(out)
    try:
        descriptor, name = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".tmp")
    except OSError as error:
        raise InputError(error.strerror or str(error), source=str(out)) from None
    temporary = Path(name)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        temporary.replace(out)
    except BaseException as error:
        temporary.unlink(missing_ok=True)
        if isinstance(error, OSError):
            raise InputError(error.strerror or str(error), source=str(out)) from None
        raise
