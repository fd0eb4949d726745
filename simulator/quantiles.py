"""Exact mean and quantiles of a stream of numbers too long to hold, in bounded memory.

A replay of ten million jobs has ten million queue times; holding them as Python floats
would cost more than the rest of the replay. `Stream` keeps up to `memory_values` in an
array and spills the rest to a temporary file of raw doubles. The answers are exactly those
of `statistics.fmean`, `statistics.median` and `statistics.quantiles(method="inclusive")`
over all the values: the order statistics they need are found by selection over the file
(a few passes, each narrowing by the values' bit patterns), and the mean by `math.fsum`,
which is exact however the values are split.
"""

from __future__ import annotations

import math
import tempfile
from array import array
from collections.abc import Iterator, Sequence
from typing import IO

import numpy as np

CHUNK_VALUES = 1 << 16
BUCKET_BITS = 16


class Stream:
    """Numbers added one at a time; exact mean and quantiles when asked."""

    def __init__(self, memory_values: int = 1 << 18) -> None:
        self._memory_values = memory_values
        self._held = array("d")
        self._file: IO[bytes] | None = None
        self._spilled = 0

    def __len__(self) -> int:
        return self._spilled + len(self._held)

    def add(self, value: float) -> None:
        self._held.append(value)
        if len(self._held) >= self._memory_values:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="fleetsched-values-")  # noqa: SIM115 - lives as long as the stream
        self._file.seek(0, 2)
        self._held.tofile(self._file)
        self._spilled += len(self._held)
        self._held = array("d")

    def chunks(self) -> Iterator[np.ndarray]:
        """The values in the order added, a chunk at a time."""
        if self._file is not None:
            self._file.seek(0)
            left = self._spilled
            while left:
                count = min(left, CHUNK_VALUES)
                yield np.frombuffer(self._file.read(count * 8), dtype=np.float64)
                left -= count
        if self._held:
            yield np.frombuffer(self._held, dtype=np.float64)

    def __iter__(self) -> Iterator[float]:
        for chunk in self.chunks():
            yield from chunk.tolist()

    def sample(self, most: int = 100_000) -> list[float]:
        """Every value, sorted, when there are at most `most`; else every k-th value added (k the
        smallest that keeps it to `most`), sorted: enough to draw a distribution, in bounded memory."""
        step = max(1, -(-len(self) // most))
        taken: list[float] = []
        offset = 0
        for chunk in self.chunks():
            first = (-offset) % step
            taken += chunk[first::step].tolist()
            offset += len(chunk)
        taken.sort()
        return taken

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    # Answers ---------------------------------------------------------------------------------

    def mean(self) -> float:
        """`statistics.fmean` of the values (0.0 when there are none)."""
        count = len(self)
        return math.fsum(self) / count if count else 0.0

    def order_statistics(self, ranks: Sequence[int]) -> dict[int, float]:
        """The values at 0-based positions `ranks` of the sorted values."""
        if not self._spilled:
            ordered = sorted(self._held)
            return {rank: ordered[rank] for rank in ranks}
        return {rank: self._select(rank) for rank in sorted(set(ranks))}

    def _select(self, rank: int) -> float:
        """The value at `rank` in sorted order, by narrowing the range of its bit pattern.

        Doubles map to unsigned integers in the same order (`_ordered_bits`); each pass counts
        the values in 2**16 buckets of the current range and keeps the bucket holding `rank`,
        until the range holds few enough values to sort.
        """
        low, high = 0, (1 << 64) - 1  # the range of ordered bit patterns, inclusive
        while True:
            shift = max(0, (high - low + 1).bit_length() - BUCKET_BITS)
            counts = np.zeros(((high - low) >> shift) + 1, dtype=np.int64)
            inside = 0
            for chunk in self.chunks():
                keys = _ordered_bits(chunk)
                keys = keys[(keys >= np.uint64(low)) & (keys <= np.uint64(high))]
                inside += len(keys)
                buckets = ((keys - np.uint64(low)) >> np.uint64(shift)).astype(np.int64)
                counts += np.bincount(buckets, minlength=len(counts))
            if inside <= CHUNK_VALUES * 4 or shift == 0:
                found: list[float] = []
                for chunk in self.chunks():
                    keys = _ordered_bits(chunk)
                    found += chunk[(keys >= np.uint64(low)) & (keys <= np.uint64(high))].tolist()
                found.sort()
                return found[rank]
            before = np.cumsum(counts)
            bucket = int(np.searchsorted(before, rank, side="right"))
            rank -= int(before[bucket - 1]) if bucket else 0
            low, high = low + (bucket << shift), min(high, low + ((bucket + 1) << shift) - 1)

    def summary(self, names: Sequence[str]) -> dict[str, float | None]:
        """mean, p50, p95, p99 (those named), rounded to milliseconds (None when empty: no job
        started, or none ended, and 0 s would read as no wait at all)."""
        count = len(self)
        if not count:
            return dict.fromkeys(names, None)
        middle = count // 2
        cuts = {94: 95, 98: 99}  # statistics.quantiles(n=100) index -> percent
        ranks = [middle, middle - 1] if count % 2 == 0 else [middle]
        wanted: dict[int, tuple[int, int]] = {}
        for index, percent in cuts.items():
            j, delta = divmod(percent * (count - 1), 100)
            wanted[index] = (j, delta)
            ranks += [j, min(j + 1, count - 1)]
        values = self.order_statistics(ranks)
        known = {"mean": self.mean()}
        known["p50"] = values[middle] if count % 2 else (values[middle - 1] + values[middle]) / 2
        for index, (j, delta) in wanted.items():
            if count == 1:
                known[f"p{cuts[index]}"] = values[0]
            else:
                known[f"p{cuts[index]}"] = (values[j] * (100 - delta) + values[min(j + 1, count - 1)] * delta) / 100
        return {name: round(known[name], 3) for name in names}


def _ordered_bits(values: np.ndarray) -> np.ndarray:
    """Unsigned integers in the same order as the doubles: a negative one's bits all flipped,
    a positive one's sign bit set."""
    bits = values.view(np.uint64)
    sign = np.uint64(1 << 63)
    return np.where(bits & sign, ~bits, bits | sign)
