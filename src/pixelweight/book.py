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
    """A pandas DataFrame as a Markdown table string (numbers formatted with ``floatfmt``)."""
    columns = ([frame.index.name or ""] if index else []) + [str(c) for c in frame.columns]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for key, row in frame.iterrows():
        cells = [str(key)] if index else []
        for value in row:
            if isinstance(value, float):
                cells.append(format(value, floatfmt))
            else:
                cells.append(str(value))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def format_p(p: float) -> str:
    """A p-value for prose: ``p = 0.034``, or ``p < 0.001`` below a thousandth."""
    if not (0.0 <= p <= 1.0):
        raise ValueError(f"a p-value lies in [0, 1], got {p}")
    return "p < 0.001" if p < 0.001 else f"p = {p:.3f}"
