"""Helpers that put numbers computed by a notebook into the book's prose.

The book never types a number by hand: a notebook computes it and :func:`glue` stores it
under a name that the Markdown cites with ``{glue:text}`name```; :func:`markdown`
renders generated prose (tables, verdicts). Outside Jupyter Book (e.g. on Colab, where
``myst_nb`` may be missing) both simply display their value.
"""

from __future__ import annotations

import re
from typing import Any

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def glue(name: str, value: Any, display: bool = False) -> None:
    """Store ``value`` under ``name`` for ``{glue:text}`` / ``{glue:figure}`` roles.

    Returns ``None``, so that a ``glue`` call ending a cell displays nothing.
    """
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(f"glue names must be Python-identifier-like strings, got {name!r}")
    try:
        from myst_nb import glue as _glue
    except ImportError:  # pragma: no cover - outside the book build
        if display:
            from IPython.display import display as _display

            _display(value)
        return None
    _glue(name, value, display=display)
    return None


def markdown(text: str) -> None:
    """Display generated Markdown (a table, a verdict) as part of the page."""
    if not isinstance(text, str):
        raise TypeError(f"text must be a str, got {type(text).__name__}")
    from IPython.display import Markdown, display

    display(Markdown(text))


def table(frame, floatfmt: str = ".3f", index: bool = False) -> str:
    """A pandas DataFrame as a Markdown table string (numbers formatted with ``floatfmt``).

    A ``|`` inside a cell is escaped so that it cannot split the row. The book renders
    notebook Markdown outputs as MyST (``nb_render_markdown_format``), so the table is an
    HTML table on the page.
    """
    columns = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for key, row in frame.iterrows():
        cells = [str(key)] if index else []
        for value in row:
            if isinstance(value, float):
                cells.append(format(value, floatfmt))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def format_p(p: float) -> str:
    """A p-value for prose: ``p = 0.034``, or ``p < 0.001`` below a thousandth."""
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"a p-value lies in [0, 1], got {p}")
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"


# --------------------------------------------------------------------------------------
# Verdicts for the book's landing page
# --------------------------------------------------------------------------------------
import json  # noqa: E402
from pathlib import Path  # noqa: E402

#: The file a notebook's verdicts go to, in its ``results_dir``. JSON Lines, not ``.json``:
#: :func:`pixelweight.results.load_records` reads every ``*.json`` of a folder as a run record.
VERDICTS_FILE = "verdicts.jsonl"
#: Optional fields of a recorded verdict, written by :meth:`pixelweight.claims.ClaimsTable.record`
#: for the book's scorecard: the claim's source tag, what was run, the effect as printed, the
#: budget it was tested at, the scale (testbed and model), whether it was judged on stale
#: records ("yes" or empty), the anchor of the page section that shows it, its label, its role
#: ("primary": the paper's headline, counted by the landing page; or "secondary") and the
#: design beside the verdict (seeds in the claimed direction, smallest detectable effect).
DETAIL_FIELDS = ("source", "ran", "effect", "budget", "scale", "stale", "section", "label", "role", "design")
_FOLDER_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


def _check_verdict_line(data: Any, where: str) -> dict:
    from .stats import VERDICTS

    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a JSON object, got {type(data).__name__}")
    missing = {"chapter", "claim", "verdict"} - set(data)
    if missing:
        raise ValueError(f"{where}: lacks the fields {sorted(missing)}")
    for key in ("chapter", "claim", "verdict"):
        if not isinstance(data[key], str):
            raise ValueError(f"{where}: {key} must be a string, got {data[key]!r}")
    if not _FOLDER_RE.match(data["chapter"]):
        raise ValueError(f"{where}: chapter must be a folder name under notebooks/, got {data['chapter']!r}")
    if not data["claim"].strip() or "\n" in data["claim"]:
        raise ValueError(f"{where}: a claim is one non-empty line, got {data['claim']!r}")
    if data["verdict"] not in VERDICTS:
        raise ValueError(f"{where}: verdict {data['verdict']!r} is not one of {', '.join(VERDICTS)}")
    for key in DETAIL_FIELDS:
        if key in data and (not isinstance(data[key], str) or "\n" in data[key]):
            raise ValueError(f"{where}: {key} must be one line of text, got {data[key]!r}")
    return data


def read_verdicts(results_dir) -> list:
    """The verdicts recorded in ``results_dir`` by :func:`record_verdicts`, in order.

    Returns a list of dicts with the keys ``chapter``, ``claim``, ``verdict`` (and the
    provenance ``pixelweight`` and ``git_commit``); an empty list when none were recorded.
    Raises ``ValueError`` naming the file and line of a malformed entry.
    """
    path = Path(results_dir) / VERDICTS_FILE
    if not path.is_file():
        return []
    entries = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ValueError(f"{where}: not valid JSON ({err.msg})") from None
        entries.append(_check_verdict_line(data, where))
    return entries


def record_verdicts(results_dir, chapter: str, verdicts, details=None) -> Path:
    """Record a chapter's verdicts, claim by claim, for the book's landing page.

    The one call a chapter makes, next to its claims table::

        record_verdicts(results_dir, "02_recall", {
            "higher mean class recall than CE": verdict(diff_recall, direction=+1),
            "similar mIoU": equivalence_verdict(diff_miou, tolerance=0.02),
        })

    ``chapter`` is the chapter's folder under ``notebooks/`` (the ``folder`` of its entry in
    ``book/chapters.yml``); ``verdicts`` maps each claim (one line of text) to a verdict of
    :data:`pixelweight.stats.VERDICTS`, as computed by :func:`pixelweight.stats.verdict` or
    :func:`pixelweight.stats.equivalence_verdict`. They go to ``results_dir/verdicts.jsonl``
    (one JSON object per claim, with the library version and git commit); a claim recorded
    again replaces its earlier verdict. ``make book`` collects the files of every notebook
    into the landing page's table. ``details`` optionally maps a claim to the fields of
    :data:`DETAIL_FIELDS` (strings) shown by the scorecard; a chapter's
    :class:`pixelweight.claims.ClaimsTable` passes them. Returns the file's path.
    """
    from . import __version__
    from .results import git_commit

    if not isinstance(results_dir, (str, Path)):
        raise TypeError(f"results_dir must be a str or Path, got {type(results_dir).__name__}")
    if not isinstance(chapter, str) or not _FOLDER_RE.match(chapter):
        raise ValueError(f"chapter must be the chapter's folder name under notebooks/, got {chapter!r}")
    if not hasattr(verdicts, "items"):
        raise TypeError(f"verdicts must be a mapping of claim -> verdict, got {type(verdicts).__name__}")
    if not verdicts:
        raise ValueError("verdicts is empty: record at least one claim")
    details = {} if details is None else details
    if not hasattr(details, "items"):
        raise TypeError(f"details must be a mapping of claim -> fields, got {type(details).__name__}")
    stray = sorted(set(details) - set(verdicts))
    if stray:
        raise ValueError(f"details for a claim without a verdict: {stray[0]!r}")
    for claim, fields in details.items():
        if not hasattr(fields, "items"):
            raise TypeError(f"details of claim {claim!r} must be a mapping of field -> text, got {type(fields).__name__}")
        unknown = sorted(set(fields) - set(DETAIL_FIELDS))
        if unknown:
            raise ValueError(f"details of claim {claim!r}: unknown fields {unknown} (known: {', '.join(DETAIL_FIELDS)})")
    commit = git_commit()["commit"]
    new = [
        _check_verdict_line(
            {**details.get(claim, {}), "chapter": chapter, "claim": claim, "verdict": value,
             "pixelweight": __version__, "git_commit": commit},
            f"verdict for claim {claim!r}",
        )
        for claim, value in verdicts.items()
    ]
    folder = Path(results_dir)
    old = read_verdicts(folder)
    others = sorted({e["chapter"] for e in old} - {chapter})
    if others:
        raise ValueError(
            f"{folder / VERDICTS_FILE} holds verdicts of chapter {others[0]!r}, not {chapter!r}: "
            "each notebook records its own chapter's verdicts in its own results_dir"
        )
    replace = {e["claim"]: e for e in new}
    merged = [replace.pop(e["claim"], e) for e in old]  # a claim recorded again keeps its place
    merged += [e for e in new if e["claim"] in replace]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / VERDICTS_FILE
    text = "".join(json.dumps(e, sort_keys=True, ensure_ascii=False) + "\n" for e in merged)
    tmp = path.with_name(f".{VERDICTS_FILE}.tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path
