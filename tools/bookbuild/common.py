"""What every step of the build shares: file names, the parameters, :class:`BuildError`."""

from __future__ import annotations

import re
from pathlib import Path

#: The repository: ``tools/bookbuild/`` is two levels below it.
ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS_DIR = "notebooks"
CONFIG_FILE = "_config.yml"
CHAPTERS_FILE = "book/chapters.yml"
BIB_FILE = "book/references.bib"
CITATION_FILE = "CITATION.cff"
#: Committed notebook times (``--save-times``), for the ``full`` times of the chapter headers.
NOTEBOOK_TIMES_FILE = "results/notebook_times.csv"
NOTEBOOK_TIMES_COLUMNS = ("notebook", "profile", "seconds", "device", "pixelweight", "git_commit", "created_utc")
#: In ``_build/``: the summary of the last execution, and what the last HTML build holds.
EXECUTION_FILE = "execution.json"
BUILD_INFO_FILE = "build_info.json"
#: The names a notebook's ``parameters`` cell must assign, exactly, and their defaults
#: where the design fixes one (``results_dir`` is machine dependent; ``chapter``, the
#: notebook's folder under ``notebooks/``, is set by the build and ``None`` elsewhere).
PARAMETERS = ("profile", "device", "results_dir", "chapter")
PARAMETER_DEFAULTS = {"profile": "ci", "device": "auto", "chapter": None}
PROFILES = ("ci", "full")
#: How every notebook is paired: the ``.ipynb`` beside its ``py:percent`` source.
PAIRING = "ipynb,py:percent"
#: The kernelspec written for the build; it runs exactly ``sys.executable``.
KERNEL_NAME = "pixelweight-build"
#: matplotlib backend of the kernels: headless (it renders with Agg, never opens a window)
#: and, unlike plain ``Agg``, it puts every figure into the notebook's outputs as PNG, so
#: figures reach the book. With ``MPLBACKEND=Agg`` a kernel shows no figure at all.
MPLBACKEND = "module://matplotlib_inline.backend_inline"
#: pixelweight.train reads it: "0" turns the tqdm progress bars off during the build.
PROGRESS_ENV = "PIXELWEIGHT_PROGRESS"
#: Suffixes a toc entry may carry or resolve to.
PAGE_SUFFIXES = (".md", ".ipynb", ".rst")
_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


class BuildError(Exception):
    """The book's sources are inconsistent; the message says what to fix."""


def strip_ansi(text: str) -> str:
    """Remove the terminal colour codes IPython puts in tracebacks and Sphinx in its log."""
    return _ANSI.sub("", text)


def relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def short_sha(sha: str) -> str:
    return sha[:10] if sha and sha != "unknown" else "unknown"


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)

