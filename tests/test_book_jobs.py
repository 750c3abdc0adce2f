"""The build's execution step (``tools/bookbuild/execution.py``, ``jobs.py``): the parameters
each notebook gets, and ``--jobs N``, which executes up to N independent notebooks at once
with ``cpu_count // N`` threads per kernel and must give the same summary as a serial run."""

from __future__ import annotations

import csv
import json
import os
import shutil
from pathlib import Path

import pytest

import bookbuild as bb
from helpers.fake_jobs import sleep_and_report

TINY_RELEASE = bb.Release("https://github.com/o/r", "v1.0.0")


# ----------------------------------------------------------------------------- parameters
def test_execution_passes_profile_device_results_dir_and_chapter(tmp_path):
    execution = bb.Execution(bb.BuildPaths(tmp_path), profile="full", device="cpu", timeout=9.0)
    entry = "notebooks/02_recall/01_derivation"
    assert execution.parameters(entry) == {
        "profile": "full", "device": "cpu", "chapter": "02_recall",
        "results_dir": str(tmp_path.resolve() / "_build" / "results" / "02_recall" / "01_derivation"),
    }
    assert sorted(execution.parameters(entry)) == sorted(bb.PARAMETERS)  # what every notebook assigns
    task = execution.task(entry, "kernel", TINY_RELEASE)
    assert task.parameters == execution.parameters(entry)
    assert (task.source, task.output, task.cwd) == (
        tmp_path / f"{entry}.py", tmp_path / "_build" / "executed" / f"{entry}.ipynb", tmp_path / "notebooks" / "02_recall")
    assert (task.timeout, task.release, task.kernel_name) == (9.0, TINY_RELEASE, "kernel")
    with pytest.raises(bb.BuildError, match="a notebook lives in notebooks/<chapter>/"):
        execution.parameters("book/intro")


def test_notebook_run_knows_its_chapter():
    run = bb.NotebookRun("notebooks/04_lmp/03_grid", "ok", 2.04, verdicts=[{"claim": "x"}])
    assert run.chapter == "04_lmp" and bb.NotebookRun("n", "ok", 1.0).chapter is None
    assert run.summary() == {"status": "ok", "seconds": 2.0, "records": 0, "verdicts": [{"claim": "x"}]}


# ----------------------------------------------------------------------------- threads
def test_thread_environment():
    assert bb.thread_environment(1) == {}  # one job: the libraries' own defaults, as before --jobs
    assert bb.thread_environment(2, cpus=5) == {name: "2" for name in bb.THREAD_ENV_VARS}
    assert bb.thread_environment(8, cpus=2) == {name: "1" for name in bb.THREAD_ENV_VARS}
    assert "OMP_NUM_THREADS" in bb.THREAD_ENV_VARS and "MKL_NUM_THREADS" in bb.THREAD_ENV_VARS
    assert bb.threads_per_job(3, cpus=16) == 5 and bb.cpu_count() >= 1
    assert bb.Execution(bb.BuildPaths(Path(".")), jobs=1).threads is None


def test_parse_args_jobs(capsys):
    assert bb.parse_args([]).jobs == 1
    assert bb.parse_args(["--jobs", "3"]).jobs == 3 and bb.parse_args(["-j", "2"]).jobs == 2
    with pytest.raises(SystemExit):
        bb.parse_args(["--jobs", "0"])
    assert "--jobs must be at least 1, got 0" in capsys.readouterr().err


# ----------------------------------------------------------------------------- the scheduler
def test_schedule_serial_runs_in_order_in_this_process():
    events = []
    results = bb.schedule([("a", 0), ("b", 0)], sleep_and_report, jobs=1,
                          on_start=lambda i, t: events.append(("start", i)),
                          on_done=lambda i, r: events.append(("done", i)))
    assert [r["name"] for r in results] == ["a", "b"] and {r["pid"] for r in results} == {os.getpid()}
    assert events == [("start", 0), ("done", 0), ("start", 1), ("done", 1)]


def test_schedule_parallel_returns_results_in_task_order():
    tasks = [("slow", 1.5), ("fast", 0.0), ("raise-me", 0.0), ("last", 0.0)]
    started, done, errors = [], [], []

    def on_error(index, task, exc):
        errors.append((index, task[0], str(exc)))
        return {"name": task[0], "failed": True}

    results = bb.schedule(tasks, sleep_and_report, jobs=2, env={"OMP_NUM_THREADS": "7"},
                          on_start=lambda i, t: started.append(i), on_done=lambda i, r: done.append(i),
                          on_error=on_error)
    assert [r["name"] for r in results] == ["slow", "fast", "raise-me", "last"]  # task order
    assert started == [0, 1, 2, 3] and sorted(done) == [0, 1, 2, 3]
    assert done[-1] == 0  # the slow one finished last: the others ran beside it
    assert errors == [(2, "raise-me", "raise-me failed on purpose")] and results[2]["failed"]
    ran = [r for r in results if "pid" in r]
    assert {r["omp"] for r in ran} == {"7"} and os.getpid() not in {r["pid"] for r in ran}
    assert len({r["pid"] for r in ran}) == 2  # two workers
    with pytest.raises(RuntimeError, match="raise-me failed on purpose"):  # no on_error: raised
        bb.schedule([("raise-me", 0.0), ("b", 0.0)], sleep_and_report, jobs=2)


# ----------------------------------------------------------------------------- a real build
#: Each notebook leaves a mark in $TINY_MARKERS and waits (up to $TINY_WAIT seconds) for the
#: other's: with --jobs 2 they meet, which proves that they ran at the same time.
NOTEBOOK = """\
# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = None
chapter = None

# %%
import json, os, time
from pathlib import Path
markers = Path(os.environ["TINY_MARKERS"])
(markers / "{me}").touch()
deadline = time.time() + float(os.environ["TINY_WAIT"])
while not (markers / "{other}").exists() and time.time() < deadline:
    time.sleep(0.05)
Path(results_dir, "seen.json").write_text(json.dumps({{
    "chapter": chapter, "omp": os.environ.get("OMP_NUM_THREADS"), "met": (markers / "{other}").exists()}}))
"""

BAD = """\
# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = None
chapter = None

# %%
raise ValueError("boom from " + chapter)
"""


def _tiny_book(root: Path) -> list[str]:
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "book" / "references.bib").write_text("")
    (root / "book" / "chapters.yml").write_text(
        "chapters:\n  - {folder: a, title: A, papers: [], idea: a}\n  - {folder: b, title: B, papers: [], idea: b}\n")
    (root / "_config.yml").write_text(
        f"title: tiny\nrepository:\n  url: {TINY_RELEASE.url}\n  branch: {TINY_RELEASE.tag}\n")
    notebooks = {"a/one": NOTEBOOK.format(me="one", other="two"), "b/two": NOTEBOOK.format(me="two", other="one"),
                 "a/bad": BAD}
    (root / "_toc.yml").write_text("format: jb-book\nroot: book/intro\nchapters:\n"
                                   + "".join(f"  - file: notebooks/{name}\n" for name in notebooks))
    setup = '# %% tags=["setup", "remove-cell"]\n' + bb.setup_cell_source(TINY_RELEASE) + "\n\n"
    for name, text in notebooks.items():
        (root / "notebooks" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "notebooks" / f"{name}.py").write_text(setup + text)
    return [f"notebooks/{name}" for name in notebooks]


def _build(root: Path, capsys, monkeypatch, *args: str, wait: float) -> tuple[int, str, dict, list[list[str]]]:
    markers = root / "markers"
    shutil.rmtree(markers, ignore_errors=True)
    markers.mkdir()
    monkeypatch.setenv("TINY_MARKERS", str(markers))
    monkeypatch.setenv("TINY_WAIT", str(wait))
    status = bb.main(["--root", str(root), "--no-html", "--timeout", "120", *args])
    out = capsys.readouterr().out
    build = root.resolve() / "_build"
    with (build / "timings.csv").open() as handle:
        timings = list(csv.reader(handle))
    return status, out, json.loads((build / "execution.json").read_text()), timings


def _seen(root: Path, entries: list[str]) -> dict[str, dict]:
    results = root.resolve() / "_build" / "results"
    return {e: json.loads((results / e.split("/", 1)[1] / "seen.json").read_text()) for e in entries if "bad" not in e}


@pytest.mark.slow
def test_parallel_build_matches_the_serial_one(tmp_path, capsys, monkeypatch):
    entries = _tiny_book(tmp_path)
    serial = _build(tmp_path, capsys, monkeypatch, wait=0)
    seen_serial = _seen(tmp_path, entries)
    parallel = _build(tmp_path, capsys, monkeypatch, "--jobs", "2", wait=60)
    seen = _seen(tmp_path, entries)

    for status, out, execution, timings in (serial, parallel):
        assert status == 1  # the failing notebook fails the build, named, with its traceback
        assert "FAILED notebooks: notebooks/a/bad" in out and "ValueError: boom from a" in out
        assert list(execution["notebooks"]) == entries  # toc order, whatever order they finished in
        assert [row[0] for row in timings] == ["notebook", *entries, "total"]
        assert "notebook(s) executed in" in out

    def comparable(execution: dict) -> dict:
        return {e: {k: v for k, v in run.items() if k != "seconds"} for e, run in execution["notebooks"].items()}

    assert comparable(serial[2]) == comparable(parallel[2])
    assert (serial[2]["jobs"], parallel[2]["jobs"]) == (1, 2)

    # each kernel got its chapter, and with two jobs cpu_count // 2 threads (none is set serially)
    for runs in (seen_serial, seen):
        assert {e: s["chapter"] for e, s in runs.items()} == {"notebooks/a/one": "a", "notebooks/b/two": "b"}
    assert {s["omp"] for s in seen_serial.values()} == {os.environ.get("OMP_NUM_THREADS")}
    assert {s["omp"] for s in seen.values()} == {str(max(1, bb.cpu_count() // 2))}

    # with two jobs the two notebooks ran at the same time (serially the first one ran alone);
    # each notebook's own wall time is reported, and the elapsed time of the whole run besides
    assert [s["met"] for s in seen_serial.values()] == [False, True]
    assert [s["met"] for s in seen.values()] == [True, True]
    execution = parallel[2]
    seconds = [run["seconds"] for run in execution["notebooks"].values()]
    assert max(seconds) <= execution["elapsed_seconds"] + 0.1
    assert f"executed in {execution['elapsed_seconds']:.1f} s of wall clock, 2 at a time" in parallel[1]
    assert "2 notebooks at once" in parallel[1]
