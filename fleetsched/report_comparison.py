"""The comparison half of the HTML report: profiles side by side, and paired differences over seeds.

Each profile ran the same trace and cluster with the same seeds, so seed N of one profile and
seed N of another saw the same random draws (spot take-backs, tie breaks): their difference
is a paired sample. `paired_differences` gives, for every pair of profiles and each headline
metric, the mean difference over the seeds both ran and its 95 % confidence interval from
Student's t with n - 1 degrees of freedom (none with a single seed). The rest is each
profile's mean and spread over its seeds, its economics, showback and charts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from itertools import combinations

import pandas as pd

from fleetsched import report_svg
from fleetsched.frames import Comparison
from fleetsched.report_html import IDLE_CAUSES, count, jct_points, money, note, number, page, percent, section, table

Show = Callable[[float | None], str]
#: The metrics compared, their comparison.csv column and how they are shown.
METRICS: tuple[tuple[str, str, Show], ...] = (
    ("cost", "cost_usd", money), ("idle cost", "idle_usd", money), ("lost work", "lost_work_usd", money),
    ("p95 queue (s)", "queue_p95_s", number), ("mean JCT (s)", "jct_mean_s", number),
    ("utilisation", "utilisation", percent), ("unfinished jobs", "unfinished", number),
)  # fmt: skip
CONFIDENCE = 0.95


@dataclass(frozen=True, slots=True)
class PairedDifference:
    """`profile` minus `baseline` on one metric, over the `seeds` both ran."""

    baseline: str
    profile: str
    metric: str
    seeds: int
    mean: float
    low: float | None  # the confidence interval's ends; None with a single seed
    high: float | None


def paired_differences(frame: pd.DataFrame, column: str) -> list[PairedDifference]:
    """For each pair of profiles (in the order they first appear), `column` of the later minus the
    earlier, per seed both ran; mean and t-interval over those seeds."""
    profiles = list(dict.fromkeys(frame["profile"]))
    by_seed = {profile: dict(zip(rows["seed"], rows[column].astype(float), strict=True))
               for profile, rows in frame.groupby("profile", sort=False)}  # fmt: skip
    differences = []
    for baseline, profile in combinations(profiles, 2):
        seeds = sorted(set(by_seed[baseline]) & set(by_seed[profile]))
        values = [by_seed[profile][seed] - by_seed[baseline][seed] for seed in seeds]
        if not values:
            continue
        mean = sum(values) / len(values)
        low = high = None
        if len(values) > 1:
            from scipy import stats  # type: ignore[import-untyped]  # no stubs; a second to import, so only here

            spread = math.sqrt(sum((value - mean) ** 2 for value in values) / (len(values) - 1))
            half = float(stats.t.ppf((1 + CONFIDENCE) / 2, len(values) - 1)) * spread / math.sqrt(len(values))
            low, high = mean - half, mean + half
        differences.append(PairedDifference(baseline, profile, column, len(values), mean, low, high))
    return differences


def _signed(value: float, show: Show) -> str:
    """`value` formatted by `show`, with its minus sign (the formats show magnitudes)."""
    text = show(abs(value))
    return f"-{text}" if value < 0 and text != show(0.0) else text


def _verdict(difference: PairedDifference) -> str:
    if difference.low is None or difference.high is None:
        return "—"
    if difference.low == difference.high == 0:
        return "no difference"
    return "differs" if difference.low > 0 or difference.high < 0 else "not distinguishable"


def differences_section(frame: pd.DataFrame) -> str:
    rows = []
    for label, column, show in METRICS:
        for difference in paired_differences(frame, column):
            interval = "—" if difference.low is None or difference.high is None else \
                f"[{_signed(difference.low, show)}, {_signed(difference.high, show)}]"
            verdict = _verdict(difference)
            rows.append((f"{difference.profile} − {difference.baseline}", label, count(difference.seeds),
                         _signed(difference.mean, show), interval, verdict))  # fmt: skip
    return section("Paired differences between profiles", note(
        "Seed N of each profile replays the same trace with the same random draws, so the difference per seed is a "
        f"paired sample; the interval is the {CONFIDENCE:.0%} confidence interval of its mean (Student's t, n - 1 "
        "degrees of freedom). 'differs' when the interval excludes zero."),
        table(["profiles", "metric", "seeds", "mean difference", f"{CONFIDENCE:.0%} interval", "verdict"], rows))


def profiles_section(frame: pd.DataFrame) -> str:
    rows = []
    for profile, runs in frame.groupby("profile", sort=False):
        cells: list[str] = [str(profile), count(len(runs))]
        for _, column, show in METRICS:
            values = runs[column].astype(float)
            spread = f" ± {show(values.std(ddof=1))}" if len(values) > 1 else ""
            cells.append(f"{show(values.mean())}{spread}")
        rows.append(cells)
    return section("Profiles", note("Mean over seeds ± sample standard deviation (comparison.csv)."),
                   table(["profile", "runs", *(label for label, _, _ in METRICS)], rows))


def _mean_by_profile(summary: pd.DataFrame, prefix: str) -> pd.DataFrame:
    """The mean over seeds of every summary column under `prefix`, one row per profile, keyed by the rest."""
    numeric = summary.select_dtypes(include="number").columns
    columns = [column for column in numeric if column.startswith(prefix)]
    means = summary.groupby("profile", sort=False)[columns].mean()
    return means.rename(columns=lambda column: column[len(prefix):])


def economics_section(summary: pd.DataFrame) -> str:
    if not any(column.startswith("economics.") for column in summary.columns):
        return section("Economics", note("These runs' summaries have no economics section."))
    unit = _mean_by_profile(summary, "economics.unit.")
    spot = _mean_by_profile(summary, "economics.spot.")
    unit_rows = [(profile, money(row.get("usd_per_completed_job")), money(row.get("usd_per_gpu_hour_billed")),
                  money(row.get("usd_per_gpu_hour_delivered")), money(spot.loc[profile].get("saving_usd")),
                  money(spot.loc[profile].get("net_saving_usd"))) for profile, row in unit.iterrows()]  # fmt: skip
    idle = _mean_by_profile(summary, "economics.idle_by_cause_usd.")
    idle_rows = [(profile, *(money(row.get(cause)) for cause in IDLE_CAUSES),
                  money(sum(row.get(cause, 0.0) for cause in IDLE_CAUSES))) for profile, row in idle.iterrows()]
    return section(
        "Economics", note("Means over seeds of each run's economics section."),
        table(["profile", "per completed job", "per GPU-hour billed", "per GPU-hour delivered", "spot saving",
               "spot saving net of lost work"], unit_rows),
        "<h3>Idle cost by cause</h3>", table(["profile", *IDLE_CAUSES.values(), "all idle"], idle_rows))  # fmt: skip


def showback_section(summary: pd.DataFrame) -> str:
    parts = [note("Mean cost over seeds per label value (columns: profiles).")]
    for title, prefix in (("team", "cost_usd.by_team."), ("project", "cost_usd.by_project."),
                          ("model", "cost_usd.by_model."), ("day", "economics.showback.day.")):  # fmt: skip
        means = _mean_by_profile(summary, prefix)
        if title == "day":
            means = means[[column for column in means.columns if column.endswith(".total")]]
            means = means.rename(columns=lambda column: column.removesuffix(".total"))
            means = means[sorted(means.columns, key=lambda day: int(day.removeprefix("day-")))]  # not as text
        if means.empty:
            continue
        rows = [(key, *(money(means.loc[profile, key]) for profile in means.index)) for key in means.columns]
        parts += [f"<h3>By {title}</h3>", table([title, *map(str, means.index)], rows)]
    return section("Showback", *parts)


def _busy_gpus(timeline: pd.DataFrame) -> list[tuple[float, float]]:
    """GPUs busy over all pools, hour by hour of the clock, from one run's timeline."""
    wide = timeline.pivot_table(index="t_s", columns="pool", values="gpus_busy", aggfunc="last").ffill().fillna(0.0)
    return report_svg.thin(list(zip((wide.index / 3600.0).tolist(), wide.sum(axis=1).tolist(), strict=True)))


def charts_section(comparison: Comparison) -> str:
    frame = comparison.comparison
    profiles = list(dict.fromkeys(frame["profile"]))
    points = [report_svg.Series(profile, list(zip(rows["queue_p95_s"].astype(float), rows["cost_usd"].astype(float),
                                                  strict=True)))
              for profile, rows in frame.groupby("profile", sort=False)]  # fmt: skip
    means = {profile: (float(rows["queue_p95_s"].mean()), float(rows["cost_usd"].mean()))
             for profile, rows in frame.groupby("profile", sort=False)}  # fmt: skip
    jobs = comparison.jobs
    cdfs = [report_svg.Series(profile, jct_points(jobs.loc[jobs["profile"] == profile, "jct_s"].tolist()))
            for profile in profiles]  # fmt: skip
    first_runs: dict[str, str] = {}
    for name in comparison.runs:
        first_runs.setdefault(name.rpartition("-seed")[0], name)
    timeline = comparison.timeline
    busy = [report_svg.Series(profile, _busy_gpus(timeline[timeline["run"] == run]), step=True)
            for profile, run in first_runs.items()]  # fmt: skip
    charts = [
        report_svg.scatter("Cost against p95 queue time", points, "p95 queue time (s)", "cost (USD)", means),
        report_svg.lines("JCT CDF (all seeds)", cdfs, "job completion time (s)", "fraction of jobs"),
        report_svg.lines("GPUs busy (first seed of each profile)", busy, "hours", "GPUs busy"),
    ]
    return section("Plots", note("Cost against p95 queue: one dot per seed, a ring at each profile's mean."),
                   f'<div class="charts">{"".join(charts)}</div>')


def runs_section(comparison: Comparison) -> str:
    rows = []
    for name, run in comparison.runs.items():
        document = run.document
        rows.append((name, str(document["run"].get("profile")), count(document["run"].get("seed")),
                     count(document["jobs"]["completed"]), money(document["cost_usd"]["total"]),
                     money(document["cost_usd"]["idle"]), money(document["cost_usd"]["lost_work"]),
                     number(document["queue_s"]["p95"]), number(document["jct_s"]["mean"]),
                     percent(document["utilisation"])))  # fmt: skip
    return section("Runs", note("Each run's summary.json."), table(
        ["run", "profile", "seed", "completed", "cost", "idle", "lost work", "p95 queue (s)", "mean JCT (s)",
         "utilisation"], rows))


def comparison_page(comparison: Comparison) -> str:
    """The whole report of a comparison directory."""
    first = next(iter(comparison.runs.values()), None)
    info = first.document["run"] if first is not None else {}
    inputs = table(["input", "value"], [
        ("trace", str(info.get("trace", "—"))), ("cluster", str(info.get("cluster", "—"))),
        ("profiles", ", ".join(dict.fromkeys(comparison.comparison["profile"]))), ("runs", count(len(comparison.runs))),
    ])  # fmt: skip
    body = [section("Comparison", inputs), profiles_section(comparison.comparison),
            differences_section(comparison.comparison), charts_section(comparison),
            economics_section(comparison.summary), showback_section(comparison.summary), runs_section(comparison)]
    return page(f"fleetsched report: comparison {comparison.path.name}", body)


__all__ = ["PairedDifference", "comparison_page", "paired_differences"]
