"""The streaming replay: jobs read as the clock reaches them, forgotten once they end, and the
same files and summary as a replay that keeps everything."""

from __future__ import annotations

import json
import statistics
from collections.abc import Iterator
from pathlib import Path
from types import MappingProxyType
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import fleetsched
import policies
from scheduler.cluster import Cluster
from scheduler.errors import InputError
from scheduler.model import Job
from scheduler.world import Scheduler
from simulator.engine import SimOptions, simulate
from simulator.metrics import summary
from simulator.outputs import write_run
from simulator.quantiles import Stream
from simulator.recording import Memory
from simulator.world import SimWorld
from tests.builders import make_job, make_pool, whole

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = ROOT / "traces/samples"
CLUSTER = Cluster("c.toml", MappingProxyType({"od": make_pool("od", nodes=2)}))


def spaced_jobs(count: int) -> list[Job]:
    """A job every hour, each ten minutes long: never more than one alive at a time."""
    return [make_job(f"j{n:05d}", whole(2), submit_s=3600.0 * n, duration_s=600.0) for n in range(count)]


class Watching(Memory):
    """Keeps the history and notes the most jobs the world held at once."""

    def __init__(self) -> None:
        super().__init__()
        self.world: SimWorld | None = None
        self.most_runs = 0

    def event(self, event: tuple[int, str, dict[str, Any]]) -> None:
        super().event(event)
        if self.world is not None:
            self.most_runs = max(self.most_runs, len(self.world.runs))


def test_a_streamed_replay_forgets_jobs_as_they_end_and_reports_the_same(monkeypatch: pytest.MonkeyPatch) -> None:
    jobs = spaced_jobs(2000)
    kept = simulate(jobs, CLUSTER, Scheduler(policies.profile("default")))
    assert len(kept.world.runs) == 2000
    sink = Watching()
    original = SimWorld.__post_init__

    def watched(world: SimWorld) -> None:
        original(world)
        if world.sink is sink:
            sink.world = world

    monkeypatch.setattr(SimWorld, "__post_init__", watched)
    streamed = simulate(iter(jobs), CLUSTER, Scheduler(policies.profile("default")), sink=sink)
    assert sink.world is streamed.world and 1 <= sink.most_runs <= 2, "one job alive at a time, not the trace"
    assert streamed.world.runs == {} and streamed.world.ledger.jobs == {}
    assert summary(streamed) == summary(kept)
    assert sink.rows == kept.world.memory.rows and sink.log == kept.world.log  # type: ignore[union-attr]
    with pytest.raises(RuntimeError, match="did not keep"):
        _ = streamed.world.log


def test_an_iterator_must_come_in_submit_order_and_an_instant_is_taken_in_id_order() -> None:
    late, early = make_job("late", whole(1), submit_s=50.0), make_job("early", whole(1), submit_s=10.0)
    with pytest.raises(InputError, match=r"not in submit order: early is submitted at 10\.0 s"):
        simulate(iter([late, early]), CLUSTER, Scheduler(policies.profile("default")))
    together = [make_job(name, whole(8), submit_s=5.0, duration_s=60.0) for name in ("c", "b", "a")]
    streamed = simulate(iter(together), CLUSTER, Scheduler(policies.profile("default")))
    listed = simulate(list(reversed(together)), CLUSTER, Scheduler(policies.profile("default")))
    order = [data["job"] for _, name, data in listed.world.log if name == "start"]
    assert order == ["a", "b", "c"]
    assert [data["job"] for _, name, data in streamed.world.log if name == "start"] == order


def test_a_trace_out_of_submit_order_is_sorted_in_memory_and_gives_the_same_run(tmp_path: Path) -> None:
    lines = (SAMPLES / "synth-2days.jsonl").read_text(encoding="utf-8").splitlines()
    shuffled = tmp_path / "shuffled.jsonl"
    shuffled.write_text("\n".join(reversed(lines)) + "\n", encoding="utf-8")
    ordered = tmp_path / "ordered.jsonl"
    ordered.write_text("\n".join(lines) + "\n", encoding="utf-8")
    assert fleetsched.api.trace_order(shuffled) == (400, False)
    assert fleetsched.api.trace_order(ordered) == (400, True)
    jobs, count = fleetsched.api.arrivals(ordered)
    assert count == 400 and isinstance(jobs, Iterator), "a trace in order is streamed"
    cluster = SAMPLES / "elastic-spot-cluster.toml"
    fleetsched.simulate(shuffled, cluster, "cost-greedy", out=tmp_path / "a")
    fleetsched.simulate(ordered, cluster, "cost-greedy", out=tmp_path / "b")
    for name in ("jobs.csv", "events.jsonl", "timeline.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    first, second = (json.loads((tmp_path / d / "summary.json").read_text()) for d in ("a", "b"))
    assert first["run"].pop("trace") == "shuffled.jsonl" and second["run"].pop("trace") == "ordered.jsonl"
    assert first == second


def test_write_run_of_a_kept_replay_writes_what_the_streamed_replay_wrote(tmp_path: Path) -> None:
    trace, cluster = SAMPLES / "synth-mixed.jsonl", SAMPLES / "mixed-cluster.toml"
    fleetsched.simulate(trace, cluster, "cost-cpsat", seed=1, out=tmp_path / "streamed")
    kept = fleetsched.simulate(trace, cluster, "cost-cpsat", seed=1)
    write_run(kept, tmp_path / "kept", {"trace": trace.name, "cluster": cluster.name})
    names = sorted(p.name for p in (tmp_path / "streamed").iterdir())
    assert "solver.csv" in names and names == sorted(p.name for p in (tmp_path / "kept").iterdir())
    for name in names:
        assert (tmp_path / "kept" / name).read_bytes() == (tmp_path / "streamed" / name).read_bytes(), name


def quantiles(values: list[float], names: tuple[str, ...]) -> dict[str, float | None]:
    """The oracle: what `statistics` gives over the whole list, rounded as summary.json rounds
    (none of a list that has no value)."""
    if not values:
        return dict.fromkeys(names, None)
    ordered = sorted(values)
    cuts = statistics.quantiles(ordered, n=100, method="inclusive") if len(ordered) > 1 else [ordered[0]] * 99
    known = {"mean": statistics.fmean(ordered), "p50": statistics.median(ordered), "p95": cuts[94], "p99": cuts[98]}
    return {name: round(known[name], 3) for name in names}


VALUES = st.lists(st.one_of(st.floats(-1e9, 1e9, allow_nan=False), st.sampled_from([0.0, 0.0, 1.5, -0.0])),
                  max_size=300)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(VALUES, st.integers(1, 64))
def test_stream_quantiles_are_those_of_the_whole_list_however_much_spills(values: list[float], memory: int) -> None:
    stream = Stream(memory_values=memory)
    for value in values:
        stream.add(value)
    names = ("mean", "p50", "p95", "p99")
    assert stream.summary(names) == quantiles(values, names)
    assert sorted(stream) == sorted(values) and len(stream) == len(values)
    stream.close()


def test_selection_over_a_spilled_file_finds_exact_order_statistics() -> None:
    values = [float((n * 7919) % 100_003) / 7 for n in range(300_000)] + [0.0] * 200_000
    stream = Stream(memory_values=50_000)
    for value in values:
        stream.add(value)
    ordered = sorted(values)
    ranks = [0, 199_999, 200_000, 250_000, 499_999, 475_000]
    assert stream.order_statistics(ranks) == {rank: ordered[rank] for rank in ranks}
    assert stream.summary(("mean", "p50", "p95", "p99")) == quantiles(values, ("mean", "p50", "p95", "p99"))


def test_the_command_reads_a_trace_twice_survey_and_replay(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The survey notes the trace's length and order; the replay streams it: no third pass."""
    from fleetsched.cli import main
    from traces import formats

    passes: list[str] = []
    original = formats.read_rows

    def counted(path: Any, *args: Any, **kwargs: Any) -> Any:
        passes.append(str(path))
        return original(path, *args, **kwargs)

    monkeypatch.setattr(formats, "read_rows", counted)
    trace = str(SAMPLES / "synth-2days.jsonl")
    assert main(["simulate", "--trace", trace, "--cluster", str(SAMPLES / "elastic-spot-cluster.toml"),
                 "--out", str(tmp_path / "run")]) == 0
    assert passes == [trace, trace]


@pytest.mark.parametrize(("round_s", "end_ms"), [(0.0, 0), (60.0, 780_000)])
def test_jobs_with_no_work_more_than_fit_at_once_all_run(round_s: float, end_ms: int) -> None:
    """Jobs of zero duration end inside the cycle that starts them (Alibaba's openb pod lists are
    such); the replay goes on while that frees capacity, and did not: it stopped after the first
    cluster-full, calling the rest unfinished."""
    jobs = [make_job(f"z{n:03d}", whole(4), duration_s=0.0) for n in range(50)]
    result = simulate(jobs, CLUSTER, Scheduler(policies.profile("default")), SimOptions(round_s=round_s))
    assert result.world.tally.outcomes["completed"] == 50 and result.end_ms == end_ms  # rounds: 4 jobs each


def test_a_sample_for_plots_is_every_value_or_every_kth_in_bounded_memory() -> None:
    stream = Stream(memory_values=1000)
    for value in range(10_000, 0, -1):
        stream.add(float(value))
    assert stream.sample(most=20_000) == [float(v) for v in range(1, 10_001)]
    sampled = stream.sample(most=3_000)  # every 4th value added: 10,000, 9,996, ..., 4
    assert len(sampled) == 2_500 and sampled == [float(v) for v in range(4, 10_001, 4)]
