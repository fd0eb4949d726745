"""Duplicate job ids found in constant memory, for traces of tens of millions of rows.

A set of ten million id strings takes most of a gigabyte. `UniqueIds` keeps each id's 64-bit
BLAKE2b hash and its line in a temporary file instead, and `first_duplicate` reads the file
back a slice of the hash range at a time (each slice fits in a few MiB), sorting each slice
to find equal hashes. Two different ids share a 64-bit hash with a probability of about
n² / 2⁶⁵ (three in a million for ten million ids); the reader names both lines, so such a
collision would be plain to see.
"""

from __future__ import annotations

import hashlib
import tempfile
from array import array
from typing import IO

import numpy as np

PAIRS_IN_MEMORY = 1 << 16
SLICE_PAIRS = 1 << 18  # pairs read into memory at once, about: the hash range is cut to fit


class UniqueIds:
    """Ids added with their lines; `first_duplicate` says where the first repeated one is."""

    def __init__(self) -> None:
        self._pairs = array("Q")  # hash, line, hash, line, ...
        self._file: IO[bytes] | None = None
        self._count = 0

    def add(self, job_id: str, line: int) -> None:
        self._pairs.append(int.from_bytes(hashlib.blake2b(job_id.encode(), digest_size=8).digest(), "little"))
        self._pairs.append(line)
        self._count += 1
        if len(self._pairs) >= 2 * PAIRS_IN_MEMORY:
            self._spill()

    def _spill(self) -> None:
        if self._file is None:
            self._file = tempfile.TemporaryFile(prefix="fleetsched-ids-")  # noqa: SIM115 - lives as long as the check
        self._file.seek(0, 2)
        self._pairs.tofile(self._file)
        self._pairs = array("Q")

    def first_duplicate(self) -> tuple[int, int] | None:
        """(line of the first, line of the repeat) for the repeated id whose repeat comes first;
        None when every id is distinct. Removes the temporary file."""
        self._spill()
        assert self._file is not None
        slices = max(1, -(-self._count // SLICE_PAIRS))
        width = -(-(1 << 64) // slices)
        best: tuple[int, int] | None = None
        try:
            for number in range(slices):
                low, high = number * width, min((number + 1) * width, 1 << 64)
                found = self._duplicate_in(np.uint64(low), high)
                if found is not None and (best is None or found[1] < best[1]):
                    best = found
        finally:
            self._file.close()
            self._file = None
        return best

    def _duplicate_in(self, low: np.uint64, high: int) -> tuple[int, int] | None:
        """The first repeat among the ids whose hashes are in [low, high)."""
        assert self._file is not None
        self._file.seek(0)
        hashes: list[np.ndarray] = []
        lines: list[np.ndarray] = []
        while block := self._file.read(16 * PAIRS_IN_MEMORY):
            pairs = np.frombuffer(block, dtype=np.uint64).reshape(-1, 2)
            keep = pairs[:, 0] >= low
            if high < 1 << 64:
                keep &= pairs[:, 0] < np.uint64(high)
            hashes.append(pairs[keep, 0])
            lines.append(pairs[keep, 1])
        if not hashes:
            return None
        key, line = np.concatenate(hashes), np.concatenate(lines)
        order = np.lexsort((line, key))
        key, line = key[order], line[order]
        repeated = np.flatnonzero(key[1:] == key[:-1])
        if not len(repeated):
            return None
        at = int(repeated[np.argmin(line[repeated + 1])])
        first = int(line[np.flatnonzero(key == key[at])[0]])
        return first, int(line[at + 1])
