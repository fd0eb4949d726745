"""The idle rule: hand-worked series, and the streaming detector against a second-by-second count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from scheduler.idleness import IdleDetector, IdleRule, IdleSpan, idle_spans

RULE = IdleRule(threshold_percent=5.0, window_s=300.0, period_s=60.0, max_gap_s=180.0)


def minutes(*percent: float, start_s: float = 0.0) -> list[tuple[float, float]]:
    return [(start_s + 60.0 * index, value) for index, value in enumerate(percent)]


def test_a_quiet_run_as_long_as_the_window_is_idle_from_its_first_sample() -> None:
    # Busy, then five quiet minutes (exactly the window), then busy.
    assert idle_spans(minutes(50, 0, 1, 4, 0, 0, 80), RULE) == [IdleSpan(60.0, 360.0)]


def test_a_quiet_run_shorter_than_the_window_is_not_idle() -> None:
    assert idle_spans(minutes(50, 0, 1, 4, 0, 80, 0), RULE) == []


def test_the_threshold_is_strict() -> None:
    assert idle_spans(minutes(5, 5, 5, 5, 5, 5), RULE) == []
    assert idle_spans(minutes(4.99, 4.99, 4.99, 4.99, 4.99), RULE) == [IdleSpan(0.0, 300.0)]


def test_the_last_sample_speaks_for_one_period_or_until_the_allocation_ends() -> None:
    assert idle_spans(minutes(0, 0, 0, 0, 0, 0), RULE) == [IdleSpan(0.0, 360.0)]
    assert idle_spans(minutes(0, 0, 0, 0, 0, 0), RULE, end_s=330.0) == [IdleSpan(0.0, 330.0)]
    assert idle_spans(minutes(0, 0, 0, 0, 0), RULE, end_s=250.0) == []  # cut below the window


def test_a_gap_ends_a_quiet_run_and_the_silence_is_not_counted() -> None:
    samples = [*minutes(0, 0, 0, 0, 0), *minutes(0, 0, 0, 0, 0, start_s=600.0)]
    # 240 s to the sample at 600 s is longer than max_gap_s: two runs of 300 s each.
    assert idle_spans(samples, RULE) == [IdleSpan(0.0, 300.0), IdleSpan(600.0, 900.0)]
    # A late scrape inside max_gap_s is not a gap: the sample before it speaks until it.
    late = [(0.0, 0.0), (60.0, 0.0), (200.0, 0.0), (260.0, 0.0)]
    assert idle_spans(late, RULE) == [IdleSpan(0.0, 320.0)]


def test_the_detector_says_idle_now_once_the_run_reaches_the_window() -> None:
    detector = IdleDetector(RULE)
    flags = [detector.observe(t_s, value) for t_s, value in minutes(0, 0, 0, 0, 0, 0, 90, 0)]
    assert flags == [False, False, False, False, True, True, False, False]
    assert detector.idle_s == 360.0 and detector.finish() == [IdleSpan(0.0, 360.0)]


def test_samples_out_of_order_and_bad_rules_are_refused() -> None:
    detector = IdleDetector(RULE)
    detector.observe(60.0, 0.0)
    with pytest.raises(ValueError, match="not after"):
        detector.observe(60.0, 0.0)
    with pytest.raises(ValueError, match="window_s"):
        IdleRule(window_s=float("nan"))
    with pytest.raises(ValueError, match="max_gap_s"):
        IdleRule(period_s=60.0, max_gap_s=30.0)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.tuples(st.integers(1, 200), st.sampled_from([0.0, 3.0, 5.0, 40.0])), min_size=1, max_size=40),
    st.integers(60, 600),
)
def test_idle_seconds_equal_a_second_by_second_count(steps: list[tuple[int, float]], window_s: int) -> None:
    """Brute force: mark every second by the sample that speaks for it, then keep quiet runs of
    at least the window (runs broken by unmarked seconds)."""
    rule = IdleRule(threshold_percent=5.0, window_s=float(window_s), period_s=60.0, max_gap_s=120.0)
    samples, t_s = [], 0
    for step_s, value in steps:
        samples.append((float(t_s), value))
        t_s += step_s
    marks: dict[int, bool] = {}
    for index, (start, value) in enumerate(samples):
        following = samples[index + 1][0] if index + 1 < len(samples) else None
        stop = following if following is not None and following - start <= 120 else start + 60
        for second in range(int(start), int(stop)):
            marks[second] = rule.quiet(value)
    expected, run = 0, 0
    for second in range(int(samples[-1][0]) + 61):
        if marks.get(second, False):
            run += 1
        else:
            expected += run if run >= window_s else 0
            run = 0
    expected += run if run >= window_s else 0
    assert sum(span.duration_s for span in idle_spans(samples, rule)) == expected
