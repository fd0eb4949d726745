"""Go's math/rand (before Go 1.20's random seeding) in Python: the stream the FGD authors' simulator drew from.

The source is Go's additive lagged Fibonacci generator (607 words, tap 273) seeded through a
Park-Miller sequence XORed with a fixed table (`simulator.gorand_cooked`, the generator's state
after 7.8e12 steps from seed 1, recomputed here by jump-ahead: `python -m simulator.gorand_cooked`).
`Intn`, `Shuffle` and `Perm` draw exactly as Go's do, so a seed gives the authors' pod order,
tune-up sample and node ranks (`../shared/research/fgd-experiment.md` sections 3 and 10.18).
"""

from __future__ import annotations

from collections.abc import MutableSequence
from typing import TypeVar

from simulator.gorand_cooked import COOKED, LENGTH, TAP, seed_words

MASK_64 = (1 << 64) - 1
MASK_63 = (1 << 63) - 1
INT32_MAX = (1 << 31) - 1
T = TypeVar("T")


class GoRand:
    """A seeded Go math/rand.Rand (rngSource)."""

    def __init__(self, seed: int) -> None:
        seed %= INT32_MAX
        if seed == 0:
            seed = 89482311
        self._tap, self._feed = 0, LENGTH - TAP
        self._vec = [word ^ cooked for word, cooked in zip(seed_words(seed, 40, 20), COOKED, strict=True)]

    def uint64(self) -> int:
        self._tap = (self._tap - 1) % LENGTH
        self._feed = (self._feed - 1) % LENGTH
        value = (self._vec[self._feed] + self._vec[self._tap]) & MASK_64
        self._vec[self._feed] = value
        return value

    def int63(self) -> int:
        return self.uint64() & MASK_63

    def int31(self) -> int:
        return self.int63() >> 32

    def int31n(self, n: int) -> int:
        """Go's Rand.Int31n: masking for powers of two, else rejection above the largest multiple of n."""
        if n & (n - 1) == 0:
            return self.int31() & (n - 1)
        limit = INT32_MAX - (1 << 31) % n
        value = self.int31()
        while value > limit:
            value = self.int31()
        return value % n

    def intn(self, n: int) -> int:
        if n > INT32_MAX:
            raise ValueError("Intn over 2^31 - 1 is not needed here")
        return self.int31n(n)

    def _shuffle_index(self, n: int) -> int:
        """Go's unexported int31n (Lemire's multiply-shift), which Shuffle uses."""
        product = (self.int63() >> 31) * n
        low = product & 0xFFFFFFFF
        if low < n:
            threshold = ((1 << 32) - n) % n
            while low < threshold:
                product = (self.int63() >> 31) * n
                low = product & 0xFFFFFFFF
        return product >> 32

    def shuffle(self, items: MutableSequence[T]) -> None:
        """Go's Rand.Shuffle: Fisher-Yates from the last index down."""
        for index in range(len(items) - 1, 0, -1):
            other = self._shuffle_index(index + 1)
            items[index], items[other] = items[other], items[index]

    def perm(self, n: int) -> list[int]:
        """Go's Rand.Perm: the inside-out shuffle."""
        result = [0] * n
        for index in range(n):
            other = self.intn(index + 1)
            result[index] = result[other]
            result[other] = index
        return result
