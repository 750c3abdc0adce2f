"""Per-notebook wall times: the table printed and saved in ``_build/``, and the committed
times of ``results/notebook_times.csv`` (``--save-times``)."""

from __future__ import annotations

import csv
from pathlib import Path

from .common import NOTEBOOK_TIMES_COLUMNS, NOTEBOOK_TIMES_FILE, BuildError, relative, say
from .execution import NotebookRun, load_execution


def timing_rows(results: list[NotebookRun]) -> list[tuple[str, str, str]]:
    """``(notebook, status, seconds)`` rows, seconds with one decimal, plus a total row."""
    rows = [(r.notebook, r.status, f"{r.seconds:.1f}") for r in results]
    failed = sum(r.status != "ok" for r in results)
    total_status = "ok" if not failed else f"{failed} failed"
    rows.append(("total", total_status, f"{sum(r.seconds for r in results):.1f}"))
    return rows


def timing_table(results: list[NotebookRun]) -> str:
    """The timing table as aligned Markdown (printed and saved as ``timings.md``)."""
    header = ("notebook", "status", "seconds")
    rows = timing_rows(results)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

    def line(row: tuple[str, str, str]) -> str:
        return f"| {row[0]:<{widths[0]}} | {row[1]:<{widths[1]}} | {row[2]:>{widths[2]}} |"

    rule = f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|{'-' * (widths[2] + 1)}:|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)]) + "\n"


def write_timings(results: list[NotebookRun], build_dir: Path) -> None:
    """Save the table as ``timings.csv`` and ``timings.md`` in ``build_dir``."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / "timings.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["notebook", "status", "seconds"])
        writer.writerows(timing_rows(results))
    (build_dir / "timings.md").write_text(timing_table(results), encoding="utf-8")


def read_notebook_times(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """The committed notebook times, ``results/notebook_times.csv``: ``{(notebook, profile): row}``."""
    path = root / NOTEBOOK_TIMES_FILE
    if not path.is_file():
        return {}
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if tuple(reader.fieldnames or ()) != NOTEBOOK_TIMES_COLUMNS:
            raise BuildError(f"{path}: the columns must be {', '.join(NOTEBOOK_TIMES_COLUMNS)}")
        return {(row["notebook"], row["profile"]): row for row in reader}


def save_notebook_times(root: Path) -> int:
    """``--save-times``: put the last execution's notebook times, with their device, library
    version and commit, into ``results/notebook_times.csv`` (one row per notebook and profile;
    a newer run replaces the older row). Commit that file after a ``full`` run on a GPU: the
    chapter headers show it. Returns the exit status."""
    try:
        execution = load_execution(root / "_build")
        rows = read_notebook_times(root)
    except BuildError as exc:
        say(f"error: {exc}")
        return 2
    saved = 0
    for notebook, run in execution["notebooks"].items():
        if run["status"] != "ok":
            continue
        rows[(notebook, execution["profile"])] = {
            "notebook": notebook, "profile": execution["profile"], "seconds": f"{run['seconds']:.1f}",
            "device": execution["device_description"], "pixelweight": execution["pixelweight"],
            "git_commit": execution["git_commit"], "created_utc": execution["created_utc"],
        }
        saved += 1
    path = root / NOTEBOOK_TIMES_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=NOTEBOOK_TIMES_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows[key] for key in sorted(rows))
    if execution.get("jobs", 1) > 1:
        say(f"note: the last run executed {execution['jobs']} notebooks at once; their times are "
            "each notebook's own wall time while sharing the machine")
    say(f"saved the times of {saved} notebook(s) ({execution['profile']} profile, "
        f"{execution['device_description']}) to {relative(path, root)}")
    return 0


def format_seconds(seconds: float) -> str:
    """``42 s``, ``2.8 min`` or ``1.6 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"
