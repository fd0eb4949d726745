"""The canonical job record in Parquet, for traces too large to keep as JSON lines.

One column per canonical field (see traces/canonical.py), written in row groups of
`BATCH_ROWS` so that neither writing nor reading holds the whole trace in memory. Errors
name the file and the row number (counting from 1) in place of a line.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from scheduler.errors import InputError
from scheduler.model import Job
from traces.base import Fields
from traces.canonical import CanonicalJsonl, to_record

BATCH_ROWS = 50_000
SCHEMA = pa.schema([
    ("id", pa.string()), ("submit_s", pa.float64()), ("duration_s", pa.float64()), ("gpus", pa.int64()),
    ("gpu_milli", pa.int64()), ("gpu_memory_gb", pa.float64()), ("mig_profile", pa.string()),
    ("replicas", pa.int64()), ("gpu_models", pa.list_(pa.string())), ("priority", pa.int64()),
    ("preemptible", pa.bool_()), ("checkpoint_interval_s", pa.float64()), ("checkpoint_overhead_s", pa.float64()),
    ("restore_s", pa.float64()), ("kind", pa.string()), ("team", pa.string()), ("project", pa.string()),
    ("model", pa.string()), ("experiment", pa.string()), ("status", pa.string()),
    ("speedups", pa.map_(pa.string(), pa.float64())),
    ("service", pa.string()), ("requests", pa.int64()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
])


def _columns(records: list[dict[str, Any]]) -> pa.RecordBatch:
    columns = {name: [record.get(name) for record in records] for name in SCHEMA.names}
    columns["speedups"] = [list(value.items()) if value else None for value in columns["speedups"]]
    return pa.RecordBatch.from_pydict(columns, schema=SCHEMA)


def write_parquet(jobs: Iterable[Job], out: str | Path) -> int:
    """Writes canonical records to `out` atomically (temporary name, renamed when complete)."""
    target = Path(out)
    temporary = target.with_name(f".{target.name}.partial")
    count = 0
    try:
        with pq.ParquetWriter(temporary, SCHEMA) as writer:
            batch: list[dict[str, Any]] = []
            for job in jobs:
                if job.measured is not None:  # no column holds it: refuse rather than drop it
                    raise InputError("Parquet does not carry measured utilisation (gpu_util_*); write .jsonl",
                                     source=job.id, field="gpu_util_percent")  # fmt: skip
                batch.append(to_record(job))
                if len(batch) == BATCH_ROWS:
                    writer.write_batch(_columns(batch))
                    count, batch = count + len(batch), []
            if batch or not count:
                writer.write_batch(_columns(batch))
                count += len(batch)
        temporary.replace(target)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    return count


class CanonicalParquet(CanonicalJsonl):
    """Canonical records in a Parquet file written by write_parquet (or with the same columns)."""

    name = "parquet"
    description = "canonical job records in Parquet"
    suffixes = (".parquet",)

    def detect(self, path: Path, first_line: str) -> bool:
        return path.suffix == ".parquet" or first_line.startswith("PAR1")

    def raw_rows(self, path: Path) -> Iterator[Fields]:
        try:
            parquet = pq.ParquetFile(path)
        except (OSError, pa.ArrowException) as error:
            raise InputError(f"not a readable Parquet file: {error}", source=str(path)) from None
        missing = [name for name in ("id", "duration_s") if name not in parquet.schema_arrow.names]
        if missing:
            raise InputError("missing column", source=str(path), field=missing[0])
        number = 0
        for batch in parquet.iter_batches(batch_size=BATCH_ROWS):
            for values in batch.to_pylist():
                number += 1
                if values.get("speedups"):
                    values["speedups"] = dict(values["speedups"])
                yield Fields({k: v for k, v in values.items() if v is not None}, str(path), number)
