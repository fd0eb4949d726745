"""`simulate` and `compare` are safe to point at real work: `--out` never removes a user's files,
every bad path or argument is one line and exit 2 before the run, and profiles that share a
name stay apart in a comparison."""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import pytest

from fleetsched import api, simulate_verbs
from fleetsched.cli import main
from scheduler.errors import InputError
from simulator import outputs
from simulator.compare import run_names
from simulator.rundir import MARKER, fleetsched_version

ROOT = Path(__file__).resolve().parent.parent
CLUSTER = str(ROOT / "traces/samples/demo-cluster.toml")
JOBS = [
    {"id": "a", "submit_s": 0, "duration_s": 600, "gpus": 1},
    {"id": "b", "submit_s": 30, "duration_s": 900, "gpus": 2},
    {"id": "c", "submit_s": 60, "duration_s": 300, "gpus": 8},
    {"id": "d", "submit_s": 90, "duration_s": 1200, "gpus": 1, "preemptible": True},
]


@pytest.fixture
def trace(tmp_path: Path) -> str:
    path = tmp_path / "inputs" / "tiny.jsonl"
    path.parent.mkdir()
    path.write_text("".join(json.dumps(job) + "\n" for job in JOBS), encoding="utf-8")
    return str(path)


@pytest.fixture
def no_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fails the test if a replay starts: refusals must come before the run."""

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the replay started before the bad argument was found")

    monkeypatch.setattr(api, "replay", refuse)


def tree(root: Path) -> dict[str, bytes | None]:
    """Every path under `root` with its bytes (None for directories), to prove nothing changed."""
    return {str(p.relative_to(root)): None if p.is_dir() else p.read_bytes() for p in sorted(root.rglob("*"))}


def simulate(trace: str, out: str | Path, *more: str) -> int:
    return main(["simulate", "--trace", trace, "--cluster", CLUSTER, "--out", str(out), *more])


def one_line(capsys: pytest.CaptureFixture[str], *expected: str) -> str:
    err = capsys.readouterr().err
    assert err.startswith("fleetsched: ") and err.count("\n") == 1, err
    for text in expected:
        assert text in err, err
    return err


# -- --out: a user's files are never removed -------------------------------------------------


@pytest.mark.parametrize("force", [False, True], ids=["plain", "force"])
def test_a_directory_with_a_users_file_is_refused_and_the_file_survives(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], no_run: None, force: bool
) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "thesis.tex").write_text("years of work", encoding="utf-8")
    before = tree(tmp_path)
    assert simulate(trace, tmp_path / "work", *(["--force"] if force else [])) == 2
    one_line(capsys, "--out: ", "holds files that are not a fleetsched run (such as thesis.tex)", "--force")
    assert tree(tmp_path) == before


def test_compare_refuses_a_directory_with_a_users_file(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / "notes.txt").write_text("mine", encoding="utf-8")
    before = tree(tmp_path)
    assert main(["compare", "--trace", trace, "--cluster", CLUSTER, "--profiles", "default",
                 "--out", str(tmp_path / "work"), "--force"]) == 2
    one_line(capsys, "not a fleetsched run")
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("out", "expected"),
    [
        (".", "is the current directory or one above it"),
        ("..", "is the current directory or one above it"),
        ("../..", "is the current directory or one above it"),
        ("/", "is the root directory"),
    ],
    ids=["dot", "dotdot", "grandparent", "root"],
)
def test_the_current_directory_and_those_above_it_are_refused(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_run: None,
    out: str, expected: str,
) -> None:
    here = tmp_path / "a" / "b"
    here.mkdir(parents=True)
    (here / "data.csv").write_text("1,2\n", encoding="utf-8")
    monkeypatch.chdir(here)
    before = tree(tmp_path)
    assert simulate(trace, out) == 2
    one_line(capsys, f"--out: {out} {expected}")
    assert tree(tmp_path) == before


def test_the_home_directory_is_refused_even_when_empty(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, no_run: None
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    assert simulate(trace, home) == 2
    one_line(capsys, "is your home directory")
    assert list(home.iterdir()) == []


def test_a_file_is_refused(tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], no_run: None) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    before = tree(tmp_path)
    assert simulate(trace, tmp_path / "report.pdf") == 2
    one_line(capsys, "report.pdf is a file, not a directory")
    assert tree(tmp_path) == before


def test_a_path_below_a_file_is_refused(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    (tmp_path / "report.pdf").write_bytes(b"%PDF")
    before = tree(tmp_path)
    assert simulate(trace, tmp_path / "report.pdf" / "deeper" / "run") == 2
    one_line(capsys, "cannot write", "report.pdf is not a directory")
    assert tree(tmp_path) == before


def test_an_unwritable_parent_is_found_before_the_run(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], no_run: None
) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        # Root writes through permissions; a path below a file fails for anyone.
        out = locked / "run" if not os.access(locked, os.W_OK) else tmp_path / "inputs" / "tiny.jsonl" / "run"
        before = tree(tmp_path)
        assert simulate(trace, out) == 2
        one_line(capsys, "--out: cannot write")
        assert tree(tmp_path) == before
    finally:
        locked.chmod(0o700)


# -- a previous run: replaced with --force only, and kept when a run fails --------------------


def test_a_previous_run_is_replaced_with_force_and_refused_without(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "run"
    assert simulate(trace, out, "--seed", "1") == 0
    marker = json.loads((out / MARKER).read_text(encoding="utf-8"))
    assert marker == {"tool": "fleetsched", "version": fleetsched_version()}
    (out / "stale.txt").write_text("from the old run", encoding="utf-8")
    capsys.readouterr()
    before = tree(tmp_path)
    assert simulate(trace, out, "--seed", "2") == 2
    one_line(capsys, "is a previous fleetsched run; pass --force (force=True in Python) to replace it")
    assert tree(tmp_path) == before
    assert simulate(trace, out, "--seed", "2", "--force") == 0
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["run"]["seed"] == 2
    assert not (out / "stale.txt").exists(), "the old run is replaced whole, not merged"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["inputs", "run"], "no temporary folder left"


def test_a_failed_run_leaves_the_previous_run_intact_and_no_partial_folder(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    out = tmp_path / "run"
    assert simulate(trace, out) == 0
    before = tree(tmp_path)

    def broken(*args: object) -> None:  # fails after the other files were written, before summary.json
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(outputs, "_write_summary", broken)
    with pytest.raises(OSError, match="No space left"):
        simulate(trace, out, "--force", "--seed", "3")
    assert tree(tmp_path) == before


def test_a_failed_run_into_new_folders_leaves_nothing(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "bad.jsonl").write_text('{"id": "a", "duration_s": 5}\n{"id": "b", "duration_s": -1}\n')
    before = tree(tmp_path)
    assert simulate(str(tmp_path / "bad.jsonl"), tmp_path / "new" / "deeper" / "run") == 2
    one_line(capsys, "bad.jsonl:2: duration_s")
    assert tree(tmp_path) == before, "the folders made for --out go again"


def test_compare_replaces_a_previous_comparison_only_with_force(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compare", "--trace", trace, "--cluster", CLUSTER, "--profiles", "default", "--workers", "1",
            "--out", str(tmp_path / "cmp")]
    assert main(argv) == 0
    assert (tmp_path / "cmp" / MARKER).is_file() and (tmp_path / "cmp" / "runs" / "default-seed0" / MARKER).is_file()
    capsys.readouterr()
    assert main(argv) == 2
    one_line(capsys, "is a previous fleetsched run; pass --force")
    assert main([*argv, "--profiles", "binpack", "--force"]) == 0
    assert sorted(p.name for p in (tmp_path / "cmp" / "runs").iterdir()) == ["binpack-seed0"]


# -- compare: profiles that share a name --------------------------------------------------------


def test_two_profiles_of_one_name_get_two_rows_and_two_run_directories(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "default.toml").write_text((ROOT / "policies/profiles/binpack.toml").read_text())
    assert main(["compare", "--trace", trace, "--cluster", CLUSTER, "--profiles", "default,mine/default.toml",
                 "--workers", "1", "--out", "cmp"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in table[1:3]] == [["default", "1"], ["mine-default", "1"]]
    rows = list(csv.DictReader((tmp_path / "cmp" / "comparison.csv").open(encoding="utf-8")))
    assert [(row["profile"], row["seed"]) for row in rows] == [("default", "0"), ("mine-default", "0")]
    assert sorted(p.name for p in (tmp_path / "cmp" / "runs").iterdir()) == ["default-seed0", "mine-default-seed0"]


def test_run_names_go_as_deep_as_the_paths_differ_and_refuse_what_cannot_be_told_apart(tmp_path: Path) -> None:
    one, two = tmp_path / "a" / "x" / "default.toml", tmp_path / "b" / "x" / "default.toml"
    assert run_names([str(one), str(two), "default"]) == ["a-x-default", "b-x-default", "default"]
    assert run_names(["binpack", str(one)]) == ["binpack", "default"]
    with pytest.raises(InputError, match="is named twice"):
        run_names(["default", "default"])
    with pytest.raises(InputError, match="is named twice"):
        run_names([str(one), str(tmp_path / "a" / "." / "x" / "default.toml")])
    with pytest.raises(InputError, match=r"'default' and '/default\.toml' would both run as 'default'"):
        run_names(["default", "/default.toml"])


# -- one line and exit 2 instead of a traceback ---------------------------------------------------


def _bad_utf8_case(tmp_path: Path, trace: str, what: str) -> tuple[list[str], str]:
    bad = tmp_path / f"bad-{what}"
    if what == "trace":
        bad.write_bytes(b'{"id": "a", "duration_s": 5}\n{"id": "caf\xe9", "duration_s": 5}\n')
        return ["simulate", "--trace", str(bad), "--format", "jsonl", "--cluster", CLUSTER], f"{bad}:2:"
    if what == "csv-trace":
        bad.write_bytes(b"id,duration_s\na,5\nb,5\n" + b"x" * 70_000 + b"\xff,5\n")
        return ["simulate", "--trace", str(bad), "--format", "csv", "--cluster", CLUSTER], f"{bad}:4:"
    if what == "cluster":
        good = Path(CLUSTER).read_bytes()
        bad.write_bytes(good + b"# \xc3\n")
        line = len(good.splitlines()) + 1
        return ["simulate", "--trace", trace, "--cluster", str(bad)], f"{bad}:{line}:"
    if what == "profile":
        bad = bad.with_suffix(".toml")
        bad.write_bytes(b"# r\xe9sum\xe9\n" + (ROOT / "policies/profiles/default.toml").read_bytes())
        return ["simulate", "--trace", trace, "--cluster", CLUSTER, "--profile", str(bad)], f"{bad}:1:"
    bad.write_bytes(b'{"id": "a", "duration_s": 5, "team": "\x80"}\n')  # a plan's job file
    return ["plan", "--cluster", CLUSTER, "--jobs", str(bad)], f"{bad}:1:"


@pytest.mark.parametrize("what", ["trace", "csv-trace", "cluster", "profile", "jobs"])
def test_a_file_that_is_not_utf8_is_one_line(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], what: str
) -> None:
    argv, where = _bad_utf8_case(tmp_path, trace, what)
    if argv[0] == "simulate":
        argv += ["--out", str(tmp_path / "out")]
    assert main(argv) == 2
    err = one_line(capsys, where, "not UTF-8 text (byte 0x")
    assert not (tmp_path / "out").exists()
    data = Path(err.split(":")[1].strip()).read_bytes()
    offset = int(err.split("at offset ")[1].split(")")[0])
    assert f"byte 0x{data[offset]:02x}" in err, "the offset points at the byte named"


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--workers", "0"], "--workers: must be a whole number, at least 1"),
        (["--workers", "-3"], "--workers: must be a whole number, at least 1"),
        (["--round-s", "nan"], "--round-s: must be a number of seconds from 0"),
        (["--round-s", "inf"], "--round-s: must be a number of seconds from 0"),
        (["--round-s", "-1"], "--round-s: must be a number of seconds from 0"),
        (["--round-s", "0.0004"], "--round-s: must be 0 (a cycle on every change) or at least 0.001 s"),
        (["--round-s", "1e-9"], "--round-s: must be 0 (a cycle on every change) or at least 0.001 s"),
        (["--seeds", "100000000"], "--seeds: must be a whole number from 1 to 1000, got 100000000"),
        (["--seeds", "0"], "--seeds: must be a whole number from 1 to 1000, got 0"),
        (["--profiles", "default,default"], "--profiles: 'default' is named twice"),
    ],
    ids=["workers-0", "workers-negative", "round-nan", "round-inf", "round-negative", "round-under-1ms",
         "round-tiny", "seeds-huge", "seeds-0", "same-profile-twice"],
)
def test_compare_arguments_out_of_range_are_one_line_and_leave_no_folder(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], no_run: None, arguments: list[str], expected: str
) -> None:
    before = tree(tmp_path)
    assert main(["compare", "--trace", trace, "--cluster", CLUSTER, "--out", str(tmp_path / "cmp"), *arguments]) == 2
    one_line(capsys, expected)
    assert tree(tmp_path) == before


@pytest.mark.parametrize(
    ("arguments", "expected"),
    [
        (["--round-s", "nan"], "--round-s: must be a number of seconds from 0"),
        (["--round-s", "0.0004"], "--round-s: must be 0 (a cycle on every change) or at least 0.001 s"),
        (["--seed", "-1"], "--seed: must be a whole number from 0 to 4294967295"),
        (["--seed", str(2**64)], "--seed: must be a whole number from 0 to 4294967295"),
    ],
    ids=["round-nan", "round-under-1ms", "seed-negative", "seed-huge"],
)
def test_simulate_arguments_out_of_range_are_one_line(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str], no_run: None, arguments: list[str], expected: str
) -> None:
    assert simulate(trace, tmp_path / "out", *arguments) == 2
    one_line(capsys, expected)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("nan.jsonl", '{"id": "a", "duration_s": NaN}\n', ":1: duration_s: must be a finite number >= 0, got nan"),
        ("inf.jsonl", '{"id": "a", "duration_s": Infinity}\n', ":1: duration_s: must be a finite number >= 0"),
        ("submit.jsonl", '{"id": "a", "duration_s": 5}\n{"id": "b", "duration_s": 5, "submit_s": -Infinity}\n',
         ":2: submit_s: must be a finite number >= 0"),
        ("nan.csv", "id,duration_s\na,5\nb,nan\n", ":3: duration_s: must be a finite number >= 0, got 'nan'"),
        ("huge.jsonl", '{"id": "a", "duration_s": 1e306}\n', ":1: duration_s: must be at most 3.1536e+09"),
    ],
    ids=["nan-duration", "infinite-duration", "infinite-submit", "csv-nan", "huge-duration"],
)
def test_a_non_finite_time_in_a_trace_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, text: str, where: str
) -> None:
    (tmp_path / name).write_text(text, encoding="utf-8")
    assert simulate(str(tmp_path / name), tmp_path / "out") == 2
    one_line(capsys, f"{tmp_path / name}{where}")
    assert not (tmp_path / "out").exists()


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as stopped:
        main(["--version"])
    assert stopped.value.code == 0
    version = capsys.readouterr().out.strip()
    assert version == f"fleetsched {fleetsched_version()}" and fleetsched_version()[0].isdigit()


# -- progress ---------------------------------------------------------------------------------------


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_compare_progress_shows_runs_done_on_a_terminal_only() -> None:
    assert simulate_verbs.compare_progress(io.StringIO()) is None
    screen = Terminal()
    show = simulate_verbs.compare_progress(screen)
    assert show is not None
    for done in (1, 2, 3):
        show(done, 3)
    assert screen.getvalue() == "\rran 1/3 runs\rran 2/3 runs\rran 3/3 runs\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_compare_calls_progress_after_each_run(tmp_path: Path, trace: str, workers: int) -> None:
    calls: list[tuple[int, int]] = []

    def record(done: int, total: int) -> None:
        calls.append((done, total))

    api.compare(trace, CLUSTER, ["default", "binpack"], 2, tmp_path / "cmp", workers=workers, progress=record)
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


def test_compare_writes_no_progress_when_stderr_is_not_a_terminal(
    tmp_path: Path, trace: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["compare", "--trace", trace, "--cluster", CLUSTER, "--profiles", "default", "--workers", "1",
                 "--out", str(tmp_path / "cmp")]) == 0
    assert capsys.readouterr().err == ""
