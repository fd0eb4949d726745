"""The Go math/rand port gives Go's stream (values printed by Go 1.19's math/rand for seed 42)."""

from __future__ import annotations

import numpy as np

from simulator.gorand import GoRand
from simulator.gorand_cooked import COOKED, LENGTH, _start, _steps


def test_the_stream_equals_go_for_seed_42() -> None:
    # r := rand.New(rand.NewSource(42)); r.Int63(), r.Int63(), r.Intn(1000), r.Intn(1024), r.Intn(7);
    # r.Perm(10); r.Shuffle(10, ...) on 0..9, as Go 1.19 printed them.
    rng = GoRand(42)
    assert [rng.int63(), rng.int63()] == [3440579354231278675, 608747136543856411]
    assert [rng.intn(1000), rng.intn(1024), rng.intn(7)] == [668, 574, 5]
    assert rng.perm(10) == [3, 5, 9, 6, 8, 1, 4, 7, 0, 2]
    items = list(range(10))
    rng.shuffle(items)
    assert items == [3, 2, 9, 1, 0, 7, 8, 5, 6, 4]


def test_the_seeding_table_is_the_generator_after_its_steps() -> None:
    # The full jump-ahead takes a minute; the same matrix stepping, checked on a short run against
    # plain stepping, and the table's first word against Go's (-4181792142133755926 as int64).
    assert len(COOKED) == LENGTH and COOKED[0] - (1 << 64) == -4181792142133755926
    start = _start()
    words, tap, feed = list(start), 0, LENGTH - 273
    for _ in range(1000):
        tap, feed = (tap - 1) % LENGTH, (feed - 1) % LENGTH
        words[feed] = (words[feed] + words[tap]) % (1 << 64)
    matrix = _steps(1000 - LENGTH) @ _steps(LENGTH)  # after 607 steps the pointers are back at the start
    assert [int(w) for w in matrix @ np.array(start, dtype=np.uint64)] == words
