#!/usr/bin/env python3
"""Build the book *Which Pixels Matter?*: papermill runs the notebooks, Jupyter Book renders them.

Run it with the virtual environment's interpreter (``make book`` does)::

    .venv/bin/python tools/build_book.py [--profile {ci,full}] [--device auto] [--only GLOB]
                                         [--no-html | --html-only] [--timeout SECONDS]
    .venv/bin/python tools/build_book.py --sync [--only GLOB]     # make sync
    .venv/bin/python tools/build_book.py --save-times             # after a full run on a GPU

The steps, in order:

1. Read ``_toc.yml`` and collect every page it lists. A page under ``notebooks/`` is a
   notebook whose source of truth is its jupytext ``py:percent`` file: the ``.py`` must exist.
   Read ``_config.yml`` (the repository and the release tag, :class:`Release`),
   ``book/chapters.yml`` (every notebook's folder must be a chapter there) and
   ``book/references.bib``.
2. Wipe and re-create the staging tree ``_build/staging/``: copy ``_config.yml``,
   ``_toc.yml``, ``book/`` and the assets beside the notebooks.
3. Convert every notebook's ``.py`` with jupytext and execute it with papermill into
   ``_build/executed/`` at the same relative path. Before it runs, its ``parameters`` cell and
   its first cell (the setup cell of the release, :func:`setup_cell_source`) are checked. The
   kernel runs this very interpreter (a kernelspec written to ``_build/jupyter/`` points at
   ``sys.executable``, and a pre-flight check compares the kernel's ``sys.prefix`` with
   ours), its working directory is the notebook's own folder in the repository, matplotlib is
   headless (see :data:`MPLBACKEND`), and papermill injects the parameters ``profile``,
   ``device`` and ``results_dir`` (an absolute path ``_build/results/<chapter>/<notebook>``,
   emptied before the run). After the run, the JSON run records the notebook left there must
   come from this source tree (same library version and git commit as the build), and its
   verdicts (``pixelweight.book.record_verdicts``) must be for its own chapter.
4. A failing cell fails the build: the notebook's name and the cell's traceback are printed,
   the remaining notebooks still run, and the script exits non-zero at the end (the HTML is
   then not built). Nothing is run with ``allow_errors``. The run's summary (library version,
   commit, profile, device, and per notebook: time, number of records, verdicts) is saved as
   ``_build/execution.json``, the timings as ``_build/timings.csv`` and ``timings.md``.
5. Generate the book's computed parts into the staging tree (:func:`stage_generated`): the
   footer of every page (library version, commit, profile, device), the landing page's edition
   line and chapter table with the recorded verdicts, the BibTeX of the "How to cite" page
   (from ``CITATION.cff`` and ``book/references.bib``), and each notebook's header (what it
   needs, its ``ci`` time measured by this build, its ``full`` time where
   ``results/notebook_times.csv`` has one, how to rerun it, and a link to its run records).
6. Build the HTML with ``jupyter-book build _build/staging --path-output . -W -n
   --keep-going --all`` (from the repository root) (execution is off in ``_config.yml``:
   papermill already ran), so the book lands in ``_build/html/`` and any Sphinx warning fails
   the build. On success ``_build/build_info.json`` lists the pages built, for the browser
   test (``tests/test_book_browser.py``).
7. Print where the book is and the per-notebook timing table.

``--only GLOB`` (repeatable) executes only the notebooks whose toc path
(``notebooks/00_testbed/01_testbed``) or file name matches one of the globs; the book is then
built from those notebooks plus every prose page, the other notebooks are left out of the
staged ``_toc.yml``, and Sphinx warnings are printed but not errors (links to the pages left
out cannot resolve): a partial book is for previewing a chapter, not for publishing.
``--html-only`` skips step 3 and rebuilds the HTML from the notebooks the last run executed.

Exit status: 0 on success, 1 when a notebook or the HTML build failed, 2 when the book's
sources are inconsistent (a toc entry without its source, a notebook folder missing from
``book/chapters.yml``, a bad ``_config.yml``, a kernel that is not this interpreter).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import csv
import fnmatch
import html
import io
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import yaml

ROOT = Path(__file__).resolve().parents[1]
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
#: where the design fixes one (``results_dir`` is machine dependent).
PARAMETERS = ("profile", "device", "results_dir")
PARAMETER_DEFAULTS = {"profile": "ci", "device": "auto"}
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


# --------------------------------------------------------------------------------------
# The table of contents
# --------------------------------------------------------------------------------------
def _strip_suffix(entry: str) -> str:
    path = PurePosixPath(entry)
    return str(path.with_suffix("")) if path.suffix in PAGE_SUFFIXES + (".py",) else entry


def toc_entries(toc: dict) -> list[str]:
    """Every file the toc lists, in reading order, without suffix (``root`` first).

    Handles the ``sphinx-external-toc`` layout: ``root``, then nested ``parts`` /
    ``chapters`` / ``sections`` lists of ``file:`` entries; ``url:`` entries are skipped.
    A ``glob:`` entry is refused: the pipeline must know every page it builds.
    """
    if not isinstance(toc, dict) or "root" not in toc:
        raise BuildError("_toc.yml must be a mapping with a 'root' entry")
    entries: list[str] = []

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
            return
        if not isinstance(node, dict):
            raise BuildError(f"_toc.yml: unexpected entry {node!r}")
        if "glob" in node:
            raise BuildError(f"_toc.yml: 'glob: {node['glob']}' is not supported, list each file")
        for key in ("root", "file"):
            if key in node:
                entry = _strip_suffix(str(node[key]))
                if entry not in entries:
                    entries.append(entry)
        for key in ("parts", "chapters", "sections", "subtrees", "entries"):
            if key in node:
                walk(node[key])

    walk(toc)
    return entries


def read_toc(path: Path) -> list[str]:
    """:func:`toc_entries` of the YAML file at ``path``."""
    if not path.is_file():
        raise BuildError(f"no table of contents at {path}")
    with path.open(encoding="utf-8") as handle:
        return toc_entries(yaml.safe_load(handle))


def filter_toc(toc: dict, keep: Callable[[str], bool]) -> dict:
    """A copy of ``toc`` without the ``file:`` entries for which ``keep`` is false.

    An entry that is dropped takes its sub-sections with it; a part or chapter list left
    empty is removed. ``root`` is always kept.
    """

    def prune(node: object) -> object:
        if isinstance(node, list):
            kept = [prune(item) for item in node]
            return [item for item in kept if item is not None]
        if not isinstance(node, dict):
            return node
        if "file" in node and not keep(_strip_suffix(str(node["file"]))):
            return None
        out = {}
        for key, value in node.items():
            if key in ("parts", "chapters", "sections", "subtrees", "entries"):
                value = prune(value)
                if not value:
                    continue
            out[key] = value
        # a part (caption only) whose chapters are all gone is dropped
        if "file" not in node and "root" not in node and not set(out) & {
            "parts", "chapters", "sections", "subtrees", "entries", "url"
        }:
            return None
        return out

    return prune(copy.deepcopy(toc))


def is_notebook(entry: str) -> bool:
    """True for toc entries under ``notebooks/``."""
    return PurePosixPath(entry).parts[:1] == (NOTEBOOKS_DIR,)


def page_source(root: Path, entry: str) -> Path:
    """The file a toc entry stands for: the jupytext ``.py`` for a notebook, else the page."""
    if is_notebook(entry):
        source = root / f"{entry}.py"
        if not source.is_file():
            raise BuildError(
                f"_toc.yml lists the notebook {entry!r} but its jupytext source {entry}.py "
                "does not exist (notebooks are built from their py:percent file)"
            )
        return source
    for suffix in PAGE_SUFFIXES:
        if (root / f"{entry}{suffix}").is_file():
            return root / f"{entry}{suffix}"
    raise BuildError(f"_toc.yml lists {entry!r} but no {'/'.join(PAGE_SUFFIXES)} file exists for it")


def matches(entry: str, globs: list[str]) -> bool:
    """Does a toc entry match one of the ``--only`` globs (on its path or its file name)?"""
    name = PurePosixPath(entry).name
    return any(fnmatch.fnmatch(entry, g) or fnmatch.fnmatch(name, g) for g in globs)


# --------------------------------------------------------------------------------------
# The configuration: the repository, the release and every notebook's setup cell
# --------------------------------------------------------------------------------------
_GITHUB_RE = re.compile(r"^https://github\.com/(?P<org>[A-Za-z0-9_.-]+)/(?P<repo>[A-Za-z0-9_.-]+)$")
_TAG_RE = re.compile(r"^v\d+(\.\d+)*([.+-]?[A-Za-z0-9]+)*$")


@dataclass(frozen=True)
class Release:
    """The repository and the release tag, as ``_config.yml``'s ``repository`` section gives them.

    ``url`` is ``repository.url`` (a GitHub repository: Colab opens notebooks from GitHub) and
    ``tag`` is ``repository.branch``, the release tag the book is published from.
    """

    url: str
    tag: str

    @property
    def org_repo(self) -> tuple[str, str]:
        match = _GITHUB_RE.match(self.url)
        if match is None:
            raise BuildError(f"not a GitHub repository URL: {self.url!r}")
        return match["org"], match["repo"]

    @property
    def requirement(self) -> str:
        """The pip requirement of exactly this release of the library."""
        return f"pixelweight @ git+{self.url}@{self.tag}"

    def colab_url(self, colab: str, path: str) -> str:
        """The address a Colab launch button opens for the repository file ``path``
        (what sphinx-book-theme writes for ``launch_buttons.colab_url``)."""
        org, repo = self.org_repo
        return f"{colab.strip('/')}/github/{org}/{repo}/blob/{self.tag}/{path}"

    def commit_url(self, sha: str) -> str:
        return f"{self.url}/commit/{sha}"


def read_config(root: Path) -> dict:
    """``_config.yml`` as a dict."""
    path = root / CONFIG_FILE
    if not path.is_file():
        raise BuildError(f"no book configuration at {path}")
    with path.open(encoding="utf-8") as handle:
        config = yaml.safe_load(handle)
    if not isinstance(config, dict):
        raise BuildError(f"{path} must be a YAML mapping")
    return config


def release_of(config: dict) -> Release:
    """The :class:`Release` of a configuration; :class:`BuildError` says what is wrong with it."""
    repository = config.get("repository")
    if not isinstance(repository, dict):
        raise BuildError("_config.yml has no 'repository' section (url and branch, the release tag)")
    url = repository.get("url")
    if not isinstance(url, str) or not _GITHUB_RE.match(url):
        raise BuildError(
            "_config.yml: repository.url must be a GitHub repository, https://github.com/<org>/<repo> "
            f"without a trailing slash (Colab opens the notebooks from GitHub), got {url!r}"
        )
    tag = repository.get("branch")
    if not isinstance(tag, str) or not _TAG_RE.match(tag):
        raise BuildError(
            "_config.yml: repository.branch must be the release tag, 'v' + the version in "
            f"pyproject.toml (e.g. v0.1.0), got {tag!r}"
        )
    return Release(url, tag)


def project_metadata(root: Path) -> dict[str, str]:
    """``version`` and ``requires-python`` of ``[project]`` in ``pyproject.toml``."""
    path = root / "pyproject.toml"
    if not path.is_file():
        raise BuildError(f"no pyproject.toml at {path}")
    text = path.read_text(encoding="utf-8")
    try:
        import tomllib
    except ImportError:  # Python 3.10: the two plain string keys of [project]
        section = re.search(r"(?ms)^\[project\]\s*$(.*?)(?=^\[|\Z)", text)
        body = section.group(1) if section else ""
        project = {k: m.group(1) for k in ("version", "requires-python")
                   if (m := re.search(rf'(?m)^{re.escape(k)}\s*=\s*"([^"]*)"', body))}
    else:
        project = tomllib.loads(text).get("project", {})
    if not isinstance(project.get("version"), str):
        raise BuildError("pyproject.toml: [project] has no version")
    return {"version": project["version"], "requires-python": str(project.get("requires-python", ""))}


#: The tags of a notebook's first cell, the setup cell: ``setup`` marks it, ``remove-cell``
#: keeps it off the HTML page (the chapter header says how to run the notebook instead).
SETUP_TAGS = ["setup", "remove-cell"]
_SETUP_TEMPLATE = '''\
# Setup, generated from _config.yml by `make sync` (edit it there, not here). Where pixelweight
# is missing (on Colab), install the book's release {tag} of it and keep the machine's PyTorch;
# device = "auto" (next cell) then trains on the GPU when there is one.
import importlib
import importlib.util
import subprocess
import sys

RELEASE = "{requirement}"

if importlib.util.find_spec("pixelweight") is None:
    from importlib.metadata import PackageNotFoundError, version

    try:  # ask for the installed torch itself, so that pip keeps it (e.g. Colab's CUDA build)
        keep_torch = [f"torch=={{version('torch')}}"]
    except PackageNotFoundError:
        keep_torch = []
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *keep_torch, RELEASE], check=True)
    importlib.invalidate_caches()

import pixelweight
from pixelweight.train import resolve_device

auto_device = resolve_device("auto")
print(f"pixelweight {{pixelweight.__version__}}; device 'auto' is {{auto_device}}"
      + (" (no GPU: on Colab, Runtime > Change runtime type)" if auto_device.type == "cpu" else ""))'''


def setup_cell_source(release: Release) -> str:
    """The source of every notebook's first cell, for ``release``."""
    return _SETUP_TEMPLATE.format(tag=release.tag, requirement=release.requirement)


def setup_cell_problem(nb, release: Release) -> str | None:
    """What is wrong with the notebook's setup cell, or ``None`` when it is the current one."""
    tagged = [i for i, c in enumerate(nb.cells) if SETUP_TAGS[0] in c.get("metadata", {}).get("tags", [])]
    if not tagged:
        return "has no setup cell (a first code cell tagged 'setup')"
    if len(tagged) > 1:
        return f"has {len(tagged)} cells tagged 'setup', expected one"
    if tagged[0] != 0:
        return f"has its setup cell at position {tagged[0] + 1}, not first"
    cell = nb.cells[0]
    if cell.cell_type != "code":
        return f"has a {cell.cell_type} cell tagged 'setup', not a code cell"
    tags = list(cell.metadata.get("tags", []))
    if tags != SETUP_TAGS:
        return f"has a setup cell tagged {tags}, expected {SETUP_TAGS}"
    if cell.source != setup_cell_source(release):
        return f"has a setup cell that is not the one _config.yml gives (release {release.tag} of {release.url})"
    return None


def check_setup_cell(nb, release: Release) -> None:
    """Raise ``ValueError`` unless the notebook's first cell is the current setup cell."""
    problem = setup_cell_problem(nb, release)
    if problem:
        raise ValueError(f"the notebook {problem}: run `make sync`")


def refresh_setup_cell(nb, release: Release) -> bool:
    """Make the notebook's first cell the current setup cell (inserted, moved or rewritten;
    any other cell tagged ``setup`` is removed). Returns whether the notebook changed."""
    from nbformat.v4 import new_code_cell

    if setup_cell_problem(nb, release) is None:
        return False
    nb.cells = [c for c in nb.cells if SETUP_TAGS[0] not in c.get("metadata", {}).get("tags", [])]
    nb.cells.insert(0, new_code_cell(setup_cell_source(release), metadata={"tags": list(SETUP_TAGS)}))
    # jupytext pairs a .py without cell metadata with the filter "-all", which would drop the
    # tags from the .py: let the filter keep them.
    jupytext_metadata = nb.metadata.get("jupytext", {})
    kept = jupytext_metadata.get("cell_metadata_filter")
    if kept is not None and "tags" not in kept.split(","):
        jupytext_metadata["cell_metadata_filter"] = ",".join(
            ["tags", *(f for f in kept.split(",") if f and f != "-tags")])
    return True


# --------------------------------------------------------------------------------------
# Notebooks
# --------------------------------------------------------------------------------------
def notebook_parameters(nb) -> dict[str, object]:
    """The names assigned in the notebook's single ``parameters``-tagged code cell.

    Returns ``{name: default}``, the default evaluated with :func:`ast.literal_eval` where it
    is a literal (else the source text of the expression). Raises ``ValueError`` when there is
    no such cell, more than one, or it is not valid Python.
    """
    cells = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"expected exactly one cell tagged 'parameters', found {len(cells)}")
    cell = cells[0]
    if cell.cell_type != "code":
        raise ValueError(f"the 'parameters' cell is a {cell.cell_type} cell, not a code cell")
    try:
        tree = ast.parse(cell.source)
    except SyntaxError as exc:
        raise ValueError(f"the 'parameters' cell is not valid Python: {exc}") from exc
    names: dict[str, object] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign):
            targets, value = stmt.targets, stmt.value
        elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
            targets, value = [stmt.target], stmt.value
        else:
            raise ValueError(
                "the 'parameters' cell may only assign names, found: "
                f"{ast.get_source_segment(cell.source, stmt)!r}"
            )
        for target in targets:
            if not isinstance(target, ast.Name):
                raise ValueError(f"the 'parameters' cell assigns {ast.unparse(target)!r}, not a name")
            try:
                names[target.id] = ast.literal_eval(value)
            except ValueError:
                names[target.id] = ast.unparse(value)
    return names


def check_parameters(nb) -> None:
    """Raise ``ValueError`` unless the ``parameters`` cell assigns exactly :data:`PARAMETERS`
    with the defaults of :data:`PARAMETER_DEFAULTS`."""
    names = notebook_parameters(nb)
    if sorted(names) != sorted(PARAMETERS):
        raise ValueError(
            f"the 'parameters' cell must assign exactly {', '.join(PARAMETERS)}; "
            f"it assigns {', '.join(names) or 'nothing'}"
        )
    for name, default in PARAMETER_DEFAULTS.items():
        if names[name] != default:
            raise ValueError(f"the 'parameters' cell sets {name} = {names[name]!r}, expected {default!r}")


def notebook_files(root: Path) -> list[Path]:
    """Every ``.py`` and ``.ipynb`` file under ``notebooks/`` (checkpoints and caches excluded)."""
    folder = root / NOTEBOOKS_DIR
    if not folder.is_dir():
        return []
    return sorted(
        path for path in folder.rglob("*")
        if path.suffix in (".py", ".ipynb") and path.is_file()
        and not {".ipynb_checkpoints", "__pycache__"} & set(path.relative_to(folder).parts)
    )


def clear_outputs(path: Path) -> bool:
    """Remove the outputs and execution counts of the ``.ipynb`` at ``path`` (ids and
    metadata untouched); returns whether the file changed."""
    import jupytext

    nb = jupytext.read(path)
    changed = False
    for cell in nb.cells:
        if cell.cell_type == "code" and (cell.outputs or cell.execution_count is not None):
            cell.outputs, cell.execution_count, changed = [], None, True
    if changed:
        jupytext.write(nb, path, fmt="ipynb")
    return changed


def sync_notebooks(root: Path, only: list[str] | None = None) -> int:
    """``make sync``: pair and ``jupytext --sync`` every notebook under ``notebooks/``, make its
    first cell the setup cell of ``_config.yml``'s release, and clear the outputs of the
    ``.ipynb`` files (they are committed without outputs).

    A ``.py`` not yet paired is paired first (``--set-formats ipynb,py:percent``), which writes
    its ``.ipynb``. The pair is synced before the setup cell is written into the ``.py`` (so an
    edit made in the ``.ipynb`` is not lost) and again after. ``only`` (globs, as ``--only``)
    limits all this to the matching notebooks. Returns the exit status.
    """
    import jupytext
    from jupytext.cli import jupytext as jupytext_cli

    try:
        release = release_of(read_config(root))
    except (BuildError, OSError, yaml.YAMLError) as exc:
        say(f"error: {exc}")
        return 2
    sources = [p for p in notebook_files(root) if p.suffix == ".py"]
    if only:
        sources = [p for p in sources if matches(p.relative_to(root).with_suffix("").as_posix(), only)]
    if not sources:
        say(f"no notebook under {root / NOTEBOOKS_DIR}" + (f" matches {' '.join(only)}" if only else ""))
        return 0
    try:
        for source in sources:
            if not jupytext.read(source).metadata.get("jupytext", {}).get("formats"):
                jupytext_cli(["--set-formats", PAIRING, str(source)])
        jupytext_cli(["--sync", *map(str, sources)])
        refreshed = []
        for source in sources:
            nb = jupytext.read(source)
            if refresh_setup_cell(nb, release):
                jupytext.write(nb, source, fmt="py:percent")
                refreshed.append(source)
                say(f"wrote the setup cell ({release.tag}) into {source.relative_to(root)}")
        if refreshed:
            jupytext_cli(["--sync", *map(str, refreshed)])
    except (ValueError, OSError) as exc:  # jupytext reports unpaired files this way
        say(f"error: {exc}")
        return 1
    for path in (source.with_suffix(".ipynb") for source in sources):
        if path.is_file() and clear_outputs(path):
            say(f"cleared the outputs of {path.relative_to(root)}")
    return 0


def results_dir_for(root: Path, entry: str) -> Path:
    """``<root>/_build/results/<chapter>/<notebook>``: where a notebook's run writes."""
    relative = PurePosixPath(entry).relative_to(NOTEBOOKS_DIR)
    return (root / "_build" / "results" / relative).resolve()


@dataclass
class RunResult:
    """One notebook's execution: ``status`` is ``"ok"`` or ``"failed"``."""

    notebook: str
    status: str
    seconds: float
    error: str | None = None


def strip_ansi(text: str) -> str:
    """Remove the terminal colour codes IPython puts in tracebacks."""
    return _ANSI.sub("", text)


def format_failure(notebook: str, exc: BaseException, executed: Path | None = None) -> str:
    """A readable report of a failed notebook: its name, the cell and the traceback."""
    from papermill.exceptions import PapermillExecutionError

    rule = "=" * 78
    if isinstance(exc, PapermillExecutionError):
        where = f"cell In [{exc.exec_count}]"
        body = strip_ansi("\n".join(exc.traceback)).strip("\n")
        if not body:  # a kernel that sends no traceback
            body = f"{exc.ename}: {exc.evalue}"
    else:
        where = "before or outside a cell"
        body = f"{type(exc).__name__}: {strip_ansi(str(exc)).strip()}"
    lines = [rule, f"FAILED: {notebook} ({where})", "-" * 78, body]
    if executed is not None:
        lines += ["-" * 78, f"executed notebook (with the error): {executed}"]
    lines.append(rule)
    return "\n".join(lines)


@contextlib.contextmanager
def kernel_environment(build_dir: Path) -> Iterator[str]:
    """Make a kernelspec that runs this interpreter visible, with :data:`MPLBACKEND` set.

    Writes ``<build_dir>/jupyter/kernels/<KERNEL_NAME>/kernel.json`` whose command is
    ``sys.executable -m ipykernel_launcher``, puts that folder first on ``JUPYTER_PATH``
    (searched before the user's and the system's kernelspecs) and restores the environment
    on exit. Yields the kernel name.
    """
    spec_dir = build_dir / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        # log_level=ERROR: the kernel's own log (not the notebook's output) would print a
        # "running over TCP without encryption" warning per notebook; the build is local.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": "Python 3 (pixelweight build)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    saved = {key: os.environ.get(key) for key in ("JUPYTER_PATH", "MPLBACKEND", PROGRESS_ENV)}
    jupyter_path = [str(build_dir / "jupyter")]
    if saved["JUPYTER_PATH"]:
        jupyter_path.append(saved["JUPYTER_PATH"])
    os.environ["JUPYTER_PATH"] = os.pathsep.join(jupyter_path)
    os.environ["MPLBACKEND"] = MPLBACKEND
    # Progress bars are for people running a notebook; in the built book they would be
    # hundreds of stderr lines (and the book treats stderr as a warning).
    os.environ[PROGRESS_ENV] = "0"
    try:
        yield KERNEL_NAME
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_kernel(kernel_name: str, timeout: float = 60.0) -> str:
    """Start the kernel once and make sure it runs this interpreter's environment.

    Returns the kernel's ``sys.executable``; raises :class:`BuildError` when its
    ``sys.prefix`` differs from ours (the notebooks would not see this venv's packages).
    """
    from jupyter_client.manager import start_new_kernel

    try:
        km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - NoSuchKernel, a kernel that dies at start, ...
        raise BuildError(f"cannot start the kernel {kernel_name!r} ({type(exc).__name__}: {exc}); "
                         "is ipykernel installed in this environment?") from exc
    out = io.StringIO()

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.write(msg["content"]["text"])

    try:
        kc.execute_interactive(
            "import sys; print(sys.prefix); print(sys.executable)", output_hook=hook, timeout=timeout
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    lines = out.getvalue().split()
    if len(lines) != 2 or Path(lines[0]).resolve() != Path(sys.prefix).resolve():
        raise BuildError(
            f"kernel {kernel_name!r} does not run this environment: its sys.prefix is "
            f"{lines[0] if lines else '(no answer)'}, expected {sys.prefix}"
        )
    return lines[1]


def execute_notebook(
    source: Path,
    output: Path,
    *,
    name: str,
    parameters: dict[str, object],
    kernel_name: str,
    cwd: Path,
    timeout: float | None = None,
    log_output: bool = False,
    release: Release | None = None,
) -> RunResult:
    """Convert ``source`` (py:percent) with jupytext and execute it with papermill into ``output``.

    Never raises for a notebook's own failure: the result carries ``status="failed"`` and the
    readable report of :func:`format_failure`. The kernel must already be set up
    (:func:`kernel_environment`). With ``release``, the notebook's first cell must be that
    release's setup cell (:func:`check_setup_cell`).
    """
    import jupytext
    import papermill

    start = time.perf_counter()
    try:
        nb = jupytext.read(source)
        check_parameters(nb)
        if release is not None:
            check_setup_cell(nb, release)
        output.parent.mkdir(parents=True, exist_ok=True)
        jupytext.write(nb, output, fmt="ipynb")
        papermill.execute_notebook(
            str(output),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name,
            language="python",
            cwd=str(cwd),
            execution_timeout=timeout,
            progress_bar=sys.stderr.isatty(),
            log_output=log_output,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal
        error = format_failure(name, exc, output if output.is_file() else None)
        return RunResult(name, "failed", time.perf_counter() - start, error)
    return RunResult(name, "ok", time.perf_counter() - start)


# --------------------------------------------------------------------------------------
# Timings
# --------------------------------------------------------------------------------------
def timing_rows(results: list[RunResult]) -> list[tuple[str, str, str]]:
    """``(notebook, status, seconds)`` rows, seconds with one decimal, plus a total row."""
    rows = [(r.notebook, r.status, f"{r.seconds:.1f}") for r in results]
    failed = sum(r.status != "ok" for r in results)
    total_status = "ok" if not failed else f"{failed} failed"
    rows.append(("total", total_status, f"{sum(r.seconds for r in results):.1f}"))
    return rows


def timing_table(results: list[RunResult]) -> str:
    """The timing table as aligned Markdown (printed and saved as ``timings.md``)."""
    header = ("notebook", "status", "seconds")
    rows = timing_rows(results)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(3)]

    def line(row: tuple[str, str, str]) -> str:
        return f"| {row[0]:<{widths[0]}} | {row[1]:<{widths[1]}} | {row[2]:>{widths[2]}} |"

    rule = f"|{'-' * (widths[0] + 2)}|{'-' * (widths[1] + 2)}|{'-' * (widths[2] + 1)}:|"
    return "\n".join([line(header), rule, *(line(row) for row in rows)]) + "\n"


def write_timings(results: list[RunResult], build_dir: Path) -> None:
    """Save the table as ``timings.csv`` and ``timings.md`` in ``build_dir``."""
    build_dir.mkdir(parents=True, exist_ok=True)
    with (build_dir / "timings.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["notebook", "status", "seconds"])
        writer.writerows(timing_rows(results))
    (build_dir / "timings.md").write_text(timing_table(results), encoding="utf-8")


# --------------------------------------------------------------------------------------
# Staging and HTML
# --------------------------------------------------------------------------------------
_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", ".DS_Store")


def stage_sources(root: Path, staging: Path, toc: dict, pages: list[str], notebooks: list[str]) -> None:
    """Wipe ``staging`` and copy the configuration, the toc, ``book/``, the prose pages and
    the assets beside the notebooks (everything but ``.py`` / ``.ipynb``)."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copy2(root / "_config.yml", staging / "_config.yml")
    with (staging / "_toc.yml").open("w", encoding="utf-8") as handle:
        yaml.safe_dump(toc, handle, sort_keys=False)
    if (root / "book").is_dir():
        shutil.copytree(root / "book", staging / "book", ignore=_IGNORE)
    for entry in pages:
        source = page_source(root, entry)
        target = staging / source.relative_to(root)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for folder in sorted({(root / entry).parent for entry in notebooks}):
        for asset in folder.iterdir():
            if asset.suffix in (".py", ".ipynb") or asset.name in (".ipynb_checkpoints", "__pycache__"):
                continue
            target = staging / asset.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            if asset.is_dir():
                shutil.copytree(asset, target, ignore=_IGNORE, dirs_exist_ok=True)
            else:
                shutil.copy2(asset, target)


def jupyter_book_command(staging: Path, root: Path, *, strict: bool = True) -> list[str]:
    """``jupyter-book build`` of ``staging`` with the HTML in ``root/_build/html``.

    ``strict`` (the default, and always for a complete book) makes every Sphinx warning an
    error (``-W -n --keep-going``: all warnings are shown, then the build fails). A partial
    book (``--only``) is built with ``-n`` alone: its links to the notebooks left out would
    otherwise fail it; the warnings are still printed.
    """
    script = Path(sys.executable).with_name("jupyter-book")
    exe = str(script) if script.is_file() else shutil.which("jupyter-book")
    if exe is None:
        raise BuildError("jupyter-book is not installed in this environment (pip install -e '.[book]')")
    flags = ["-W", "-n", "--keep-going"] if strict else ["-n"]
    return [exe, "build", str(staging), "--path-output", str(root), *flags, "--all"]


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


def stage_generated(root: Path, staging: Path, *, pages: list[str], notebooks: list[str],
                    toc_notebooks: list[str], executed_dir: Path, execution: dict, config: dict,
                    release: Release, chapters: list[Chapter], bib: dict[str, str]) -> None:
    """Write the generated parts into the staged tree (after :func:`stage_sources`).

    - ``_config.yml``: the footer of every page names the library version, the commit, the
      profile and the device of the execution (:func:`footer_html`);
    - prose pages: each ``<!-- generated: name -->`` line is filled (:func:`fill_generated`):
      the landing page's edition line and chapter table, the BibTeX of "How to cite";
    - notebooks: the executed notebook, with the chapter header (:func:`notebook_header`)
      appended to its first Markdown cell, papermill's injected-parameters cell (absolute
      paths of the build machine) hidden from the page, and its run records beside it.
    """
    import nbformat

    staged_config = copy.deepcopy(config)
    staged_config.setdefault("html", {})["extra_footer"] = footer_html(execution, release)
    with (staging / CONFIG_FILE).open("w", encoding="utf-8") as handle:
        yaml.safe_dump(staged_config, handle, sort_keys=False, allow_unicode=True)

    citation = read_citation(root)
    released = citation.get("date-released")
    year = str(released)[:4] if released else str(config.get("copyright", ""))[:4]
    if not re.match(r"^\d{4}$", year):
        raise BuildError(f"no year for the book's citation: set date-released in {CITATION_FILE} "
                         "or a year as copyright in _config.yml")
    verdicts: dict[str, list[dict]] = {}
    for entry in notebooks:
        verdicts.setdefault(chapter_of(entry), []).extend(execution["notebooks"][entry]["verdicts"])
    context = {
        "execution": execution, "release": release, "chapters": chapters, "bib": bib,
        "toc_notebooks": toc_notebooks, "built": notebooks, "verdicts": verdicts,
        "citation": citation, "year": year,
    }
    for entry in pages:
        staged = staging / page_source(root, entry).relative_to(root)
        if staged.suffix == ".md":
            staged.write_text(fill_generated(staged.read_text(encoding="utf-8"), context), encoding="utf-8")

    committed = read_notebook_times(root)
    requires_python = project_metadata(root)["requires-python"]
    for entry in notebooks:
        executed = executed_dir / f"{entry}.ipynb"
        target = staging / f"{entry}.ipynb"
        target.parent.mkdir(parents=True, exist_ok=True)
        nb = nbformat.read(executed, as_version=4)
        for cell in nb.cells:  # papermill's copy of the parameters holds this machine's paths
            tags = cell.get("metadata", {}).get("tags", [])
            if "injected-parameters" in tags and "remove-cell" not in tags:
                cell.metadata["tags"] = [*tags, "remove-cell"]
        n_records = execution["notebooks"][entry]["records"]
        add_header(nb, notebook_header(entry, execution, committed, release, requires_python, n_records))
        nbformat.write(nb, target)
        if n_records:
            shutil.copy2(records_file(executed), records_file(target))


# --------------------------------------------------------------------------------------
# What a run leaves: run records, verdicts, the execution summary, committed times
# --------------------------------------------------------------------------------------
def chapter_of(entry: str) -> str:
    """The chapter folder of a notebook's toc entry: ``notebooks/02_recall/01_x`` -> ``02_recall``."""
    parts = PurePosixPath(entry).parts
    if len(parts) < 3 or parts[0] != NOTEBOOKS_DIR:
        raise BuildError(f"a notebook lives in notebooks/<chapter>/, got {entry!r}")
    return parts[1]


def collect_run_outputs(results_dir: Path, entry: str, commit: str, version: str) -> tuple[list[dict], list[dict]]:
    """The run records and verdicts a notebook left in ``results_dir``.

    A record is every JSON file :func:`pixelweight.results.load_record` accepts (other JSON
    files are the notebook's own business). Raises ``ValueError`` when a record was not made
    by this source tree (its library version or git commit differ from the build's: the
    figures would not be traceable to the commit the book shows) or when the notebook recorded
    verdicts for another chapter than its folder.
    """
    from pixelweight.book import read_verdicts
    from pixelweight.results import load_record

    records = []
    for path in sorted(results_dir.rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = load_record(path)
        except ValueError:
            continue
        made = (record.provenance.get("pixelweight"), record.provenance.get("git_commit"))
        if made != (version, commit):
            raise ValueError(
                f"the run record {path.name} was made by pixelweight {made[0]} at commit {made[1]}, "
                f"but the book is built from pixelweight {version} at commit {commit}: the kernel does "
                "not run this source tree (install it with `pip install -e .`, as make does)"
            )
        records.append(record.to_dict())
    verdicts = read_verdicts(results_dir)
    chapter = chapter_of(entry)
    for line in verdicts:
        if line["chapter"] != chapter:
            raise ValueError(
                f"the notebook recorded verdicts for chapter {line['chapter']!r}, but it lives in "
                f"notebooks/{chapter}/: call record_verdicts(results_dir, {chapter!r}, ...)"
            )
    return records, verdicts


def records_file(executed: Path) -> Path:
    """Where a notebook's run records are gathered: ``<notebook>.records.json`` beside it."""
    return executed.with_name(executed.stem + ".records.json")


def load_execution(build_dir: Path) -> dict:
    """The summary of the last execution, ``_build/execution.json``."""
    path = build_dir / EXECUTION_FILE
    if not path.is_file():
        raise BuildError(f"no executed notebooks: {path} is missing (run `make book` first)")
    return json.loads(path.read_text(encoding="utf-8"))


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
    say(f"saved the times of {saved} notebook(s) ({execution['profile']} profile, "
        f"{execution['device_description']}) to {_relative(path, root)}")
    return 0


# --------------------------------------------------------------------------------------
# The generated parts of the book: landing table, citations, chapter headers, footer
# --------------------------------------------------------------------------------------
_MARKER_RE = re.compile(r"<!-- generated: ([a-z][a-z0-9-]*) -->")


@dataclass(frozen=True)
class Chapter:
    """One entry of ``book/chapters.yml``."""

    folder: str
    title: str
    papers: tuple[str, ...]
    idea: str


def read_chapters(root: Path) -> list[Chapter]:
    """The chapters of ``book/chapters.yml``, validated."""
    path = root / CHAPTERS_FILE
    if not path.is_file():
        raise BuildError(f"no chapter list at {path}")
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    items = data.get("chapters") if isinstance(data, dict) else None
    if not isinstance(items, list) or not items:
        raise BuildError(f"{CHAPTERS_FILE} must hold a non-empty list 'chapters'")
    chapters: list[Chapter] = []
    for number, item in enumerate(items, 1):
        where = f"{CHAPTERS_FILE}, chapter {number}"
        if not isinstance(item, dict) or set(item) != {"folder", "title", "papers", "idea"}:
            raise BuildError(f"{where}: needs exactly the keys folder, title, papers, idea, got {item!r}")
        folder, title, papers, idea = item["folder"], item["title"], item["papers"], item["idea"]
        if not isinstance(folder, str) or not re.match(r"^[A-Za-z0-9][A-Za-z0-9._-]*$", folder):
            raise BuildError(f"{where}: folder must be a folder name under notebooks/, got {folder!r}")
        if not isinstance(title, str) or not title.strip() or not isinstance(idea, str) or not idea.strip():
            raise BuildError(f"{where}: title and idea must be non-empty strings")
        if not isinstance(papers, list) or not all(isinstance(k, str) and k for k in papers):
            raise BuildError(f"{where}: papers must be a list of BibTeX keys, got {papers!r}")
        if any(c.folder == folder for c in chapters):
            raise BuildError(f"{where}: the folder {folder!r} is listed twice")
        chapters.append(Chapter(folder, title.strip(), tuple(papers), idea.strip()))
    return chapters


def check_chapters(chapters: list[Chapter], notebooks: list[str], bib_keys: set[str]) -> None:
    """Every notebook's folder is a chapter of ``book/chapters.yml``; every paper key is in
    ``book/references.bib``."""
    folders = {c.folder for c in chapters}
    for entry in notebooks:
        if chapter_of(entry) not in folders:
            raise BuildError(
                f"_toc.yml lists {entry}, but its folder {chapter_of(entry)!r} is not a chapter of "
                f"{CHAPTERS_FILE}: add it there (folder, title, papers, idea)"
            )
    for chapter in chapters:
        missing = [k for k in chapter.papers if k not in bib_keys]
        if missing:
            raise BuildError(f"{CHAPTERS_FILE}: chapter {chapter.folder} names papers not in {BIB_FILE}: {missing}")


def bib_entries(text: str) -> dict[str, str]:
    """The entries of a BibTeX file, ``{key: entry text as written}``, in file order
    (``@comment``, ``@string`` and ``@preamble`` skipped)."""
    entries: dict[str, str] = {}
    end = 0
    for match in re.finditer(r"(?m)^@(\w+)\s*\{", text):
        if match.start() < end:
            continue
        depth, i = 1, match.end()
        while depth and i < len(text):
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        line = text.count("\n", 0, match.start()) + 1
        if depth:
            raise BuildError(f"{BIB_FILE}, line {line}: unbalanced braces")
        end = i
        if match.group(1).lower() in ("comment", "string", "preamble"):
            continue
        key = text[match.end():i].split(",", 1)[0].strip()
        if not key or key in entries:
            raise BuildError(f"{BIB_FILE}, line {line}: {'duplicate key ' + key if key else 'an entry without a key'}")
        entries[key] = text[match.start():i]
    return entries


def read_bib(root: Path) -> dict[str, str]:
    path = root / BIB_FILE
    if not path.is_file():
        raise BuildError(f"no bibliography at {path}")
    return bib_entries(path.read_text(encoding="utf-8"))


def read_citation(root: Path) -> dict:
    path = root / CITATION_FILE
    if not path.is_file():
        raise BuildError(f"no {CITATION_FILE} at {path}")
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise BuildError(f"{CITATION_FILE} must be a YAML mapping")
    return data


def _cff_author(author: dict) -> str:
    if "name" in author:  # an entity: braces keep BibTeX from splitting it into names
        return "{" + str(author["name"]) + "}"
    family = " ".join(str(author[k]) for k in ("name-particle", "family-names") if author.get(k))
    given = str(author.get("given-names", ""))
    return f"{family}, {given}" if given else family


def book_bibtex(citation: dict, year: str) -> str:
    """A BibTeX ``@software`` entry of the book and its library, from ``CITATION.cff``."""
    for key in ("title", "authors", "version"):
        if not citation.get(key):
            raise BuildError(f"{CITATION_FILE} has no {key}")
    fields = [
        ("author", " and ".join(_cff_author(a) for a in citation["authors"])),
        ("title", "{" + str(citation["title"]) + "}"),
        ("year", year),
        ("version", str(citation["version"])),
    ]
    if citation.get("doi"):
        fields.append(("doi", str(citation["doi"])))
    if citation.get("repository-code") or citation.get("url"):
        fields.append(("url", str(citation.get("repository-code") or citation.get("url"))))
    if citation.get("license"):
        fields.append(("license", str(citation["license"])))
    fields.append(("note", f"Jupyter Book and Python library pixelweight, release v{citation['version']}"))
    width = max(len(name) for name, _ in fields)
    body = ",\n".join(f"  {name:<{width}} = {{{value}}}" for name, value in fields)
    return f"@software{{whichpixelsmatter{year},\n{body},\n}}"


def format_seconds(seconds: float) -> str:
    """``42 s``, ``2.8 min`` or ``1.6 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def _short(sha: str) -> str:
    return sha[:10] if sha and sha != "unknown" else "unknown"


def verdict_summary(verdicts: list[dict]) -> str:
    """``2 reproduced, 1 not reproduced (3 claims)``, counted in the order of
    :data:`pixelweight.stats.VERDICTS`."""
    from pixelweight.stats import VERDICTS

    counts = [(v, sum(e["verdict"] == v for e in verdicts)) for v in VERDICTS]
    parts = [f"{n} {v}" for v, n in counts if n]
    return f"{', '.join(parts)} ({len(verdicts)} claim{'s' if len(verdicts) != 1 else ''})"


def chapters_table(chapters: list[Chapter], toc_notebooks: list[str], built: list[str],
                   verdicts: dict[str, list[dict]]) -> str:
    """The landing page's table: one row per chapter, linked when written, with its verdicts.

    ``toc_notebooks``: every notebook of ``_toc.yml``; ``built``: those in this build (fewer
    for ``--only``); ``verdicts``: the verdicts recorded per chapter folder.
    """
    lines = ["| Chapter | Paper | Which pixels matter | Verdicts |", "|---|---|---|---|"]
    for chapter in chapters:
        in_toc = [e for e in toc_notebooks if chapter_of(e) == chapter.folder]
        in_build = [e for e in built if chapter_of(e) == chapter.folder]
        papers = "; ".join(f"{{cite:t}}`{key}`" for key in chapter.papers) or "—"
        if in_build:
            name = f"{{doc}}`{chapter.title} </{in_build[0]}>`"
            found = verdicts.get(chapter.folder, [])
            verdict = verdict_summary(found) if found else "no verdict recorded yet"
        elif in_toc:
            name, verdict = chapter.title, "not in this partial build"
        else:
            name, verdict = chapter.title, "planned"
        lines.append(f"| {name} | {papers} | {chapter.idea} | {verdict} |")
    return "\n".join(lines)


def scorecard_table(chapters: list[Chapter], built: list[str], execution: dict) -> str:
    """The scorecard page's table: every recorded claim of every chapter in this build, with
    the paper, the claim (linked to the section of the page that tests it), its source tag,
    the budget it was tested at, the effect with its interval and the verdict's label.

    The fields come from the verdicts a notebook recorded through
    :meth:`pixelweight.claims.ClaimsTable.record`; a verdict recorded without them shows "—".
    """
    from pixelweight.claims import verdict_badge

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| Paper | Claim | Source | Budget | Effect [95% CI] | Verdict |", "|---|---|---|---|---|---|"]
    for chapter in chapters:
        papers = "; ".join(f"{{cite:t}}`{key}`" for key in chapter.papers) or "testbed"
        for entry in (e for e in built if chapter_of(e) == chapter.folder):
            for line in execution["notebooks"][entry]["verdicts"]:
                title = f"{line['label']} {line['claim']}" if line.get("label") else line["claim"]
                anchor = f"#{line['section']}" if line.get("section") else ""
                claim = f"[{cell(title)}](../{entry}.ipynb{anchor})"  # from book/scorecard.md
                source = f"[{line['source']}]" if line.get("source") else "—"
                lines.append(" | ".join([
                    f"| {papers}", claim, source, cell(line.get("budget", "—")), cell(line.get("effect", "—")),
                    f"{verdict_badge(line['verdict'])} |",
                ]))
    if len(lines) == 2:
        return "No notebook of this build recorded a verdict yet."
    return "\n".join(lines)


def edition_markdown(execution: dict, release: Release) -> str:
    """The landing page's line saying which library version and commit the book shows."""
    sha = execution["git_commit"]
    commit = f"[`{_short(sha)}`]({release.commit_url(sha)})" if sha != "unknown" else "`unknown`"
    dirty = " (with uncommitted changes)" if execution.get("git_dirty") else ""
    return (
        f"**This edition** shows `pixelweight` {execution['pixelweight']} at commit {commit}{dirty}: "
        f"its notebooks were executed on {execution['created_utc'][:10]} with the "
        f"`{execution['profile']}` profile on {execution['device_description']}. The Colab buttons "
        f"open release `{release.tag}`."
    )


def footer_html(execution: dict, release: Release) -> str:
    """The footer of every page: library version, commit, profile, device (escaped HTML)."""
    sha = execution["git_commit"]
    commit = (f'<a href="{html.escape(release.commit_url(sha))}"><code>{html.escape(_short(sha))}</code></a>'
              if sha != "unknown" else "<code>unknown</code>")
    dirty = " (with uncommitted changes)" if execution.get("git_dirty") else ""
    return (
        f'<p class="pixelweight-edition" data-pixelweight="{html.escape(execution["pixelweight"])}" '
        f'data-git-commit="{html.escape(sha)}">Built with pixelweight {html.escape(execution["pixelweight"])} '
        f"at commit {commit}{dirty}; notebooks executed {html.escape(execution['created_utc'][:10])} with the "
        f"<code>{html.escape(execution['profile'])}</code> profile on "
        f"{html.escape(execution['device_description'])}.</p>"
    )


def notebook_header(entry: str, execution: dict, committed: dict, release: Release,
                    requires_python: str, n_records: int) -> str:
    """The admonition put at the end of a notebook's first Markdown cell: what it needs, how
    long it takes (``ci`` time measured by this build or committed, ``full`` time where a
    GPU run was committed), how to rerun it, and its run records."""
    run = execution["notebooks"][entry]
    lines = [
        f"- **Needs:** Python {requires_python.replace('>=', '≥ ') or '3'}, PyTorch and "
        f"`pixelweight` {execution['pixelweight']}; "
        "a CPU is enough for the `ci` profile, the `full` profile is sized for one GPU.",
    ]
    for profile, sized in (("ci", "a CPU"), ("full", "a GPU")):
        if execution["profile"] == profile:
            when = (f"{format_seconds(run['seconds'])} on {execution['device_description']}, "
                    "measured by the build of this page")
        elif (entry, profile) in committed:
            row = committed[(entry, profile)]
            when = (f"{format_seconds(float(row['seconds']))} on {row['device']}, recorded "
                    f"{row['created_utc'][:10]} with pixelweight {row['pixelweight']} at commit "
                    f"`{_short(row['git_commit'])}`")
        else:
            when = "not measured yet" if profile == "ci" else "no GPU run recorded yet"
        lines.append(f"- **Time, `{profile}` profile** (sized for {sized}): {when}.")
    name = PurePosixPath(entry).name
    lines.append(
        f"- **Rerun it:** the launch button at the top of the page (the rocket, then *Colab*) opens "
        f"this notebook at release `{release.tag}`, and its first cell installs that release. From a "
        f"clone: `make book BOOK_ARGS=\"--only '{name}'\"`."
    )
    if n_records:
        lines.append(
            f"- **Run records:** {{download}}`{n_records} JSON record{'s' if n_records != 1 else ''} "
            f"<{name}.records.json>` behind this page's numbers and figures (configuration, seed, "
            f"device, wall time, pixelweight {execution['pixelweight']}, commit `{_short(execution['git_commit'])}`)."
        )
    return ":::{admonition} Needs, run time and rerun\n:class: note\n" + "\n".join(lines) + "\n:::"


def add_header(nb, header: str) -> None:
    """Append ``header`` to the notebook's first Markdown cell (the one with its title)."""
    from nbformat.v4 import new_markdown_cell

    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = cell.source.rstrip("\n") + "\n\n" + header
            return
    nb.cells.insert(1 if nb.cells else 0, new_markdown_cell(header))


def generated_text(name: str, context: dict) -> str:
    """The Markdown that replaces ``<!-- generated: name -->`` in a prose page."""
    generators: dict[str, Callable[[], str]] = {
        "edition": lambda: edition_markdown(context["execution"], context["release"]),
        "chapters-table": lambda: chapters_table(
            context["chapters"], context["toc_notebooks"], context["built"], context["verdicts"]),
        "scorecard": lambda: scorecard_table(context["chapters"], context["built"], context["execution"]),
        "cite-book": lambda: "```bibtex\n" + book_bibtex(context["citation"], context["year"]) + "\n```",
        "cite-papers": lambda: cite_papers_markdown(context["chapters"], context["bib"], context["built"]),
    }
    if name not in generators:
        raise BuildError(f"unknown generated block <!-- generated: {name} --> (known: {', '.join(generators)})")
    return generators[name]()


def cite_papers_markdown(chapters: list[Chapter], bib: dict[str, str], built: list[str]) -> str:
    """BibTeX of each reproduced paper, chapter by chapter."""
    blocks = []
    for chapter in chapters:
        if not chapter.papers:
            continue
        first = next((e for e in built if chapter_of(e) == chapter.folder), None)
        title = f"{{doc}}`{chapter.title} </{first}>`" if first else f"{chapter.title} (chapter planned)"
        entries = "\n\n".join(bib[key] for key in chapter.papers)
        blocks.append(f"**{title}**\n\n```bibtex\n{entries}\n```")
    return "\n\n".join(blocks)


def fill_generated(text: str, context: dict) -> str:
    """Replace every ``<!-- generated: name -->`` line of a prose page."""
    return _MARKER_RE.sub(lambda m: generated_text(m.group(1), context), text)


# --------------------------------------------------------------------------------------
# The built pages, read as a reader sees them
# --------------------------------------------------------------------------------------
#: Markdown table rows printed as text: ``|---|``, or ``|—|`` once smartquotes made the dashes
#: an em dash. A generated table that Sphinx did not parse shows one of these.
RAW_TABLE_RE = re.compile(r"\|\s*(?::?-{3,}:?|—|–)\s*\|")
#: TeX that MathJax will never see: a command (``\mathrm``), a ``\(``/``\[`` delimiter, or
#: ``$...$`` that the Markdown parser did not turn into math (as MyST's dollarmath reads it: no
#: space inside the dollars, no digit after the closing one, so "$5 and $10" is prose).
RAW_TEX_RE = re.compile(r"\\(?:[()\[\]]|[A-Za-z]{2,})|\$[^$\s][^$]*[^$\s]\$(?!\d)|\$[^$\s\d]\$")
#: A MyST role printed as text (``{glue:text}`x```, ``{cite:p}``...): a glue key that did not
#: resolve, or Markdown parsed without MyST.
RAW_ROLE_RE = re.compile(r"\{(?:glue|cite|doc|ref|eq|math|numref|download|bdg)(?::[a-z-]+)?\}")
_VOID_TAGS = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source",
              "track", "wbr"}
#: Elements whose text is not prose: code, scripts, and the TeX source of typeset math.
_NOT_PROSE_TAGS = {"script", "style", "pre", "code", "textarea", "head", "svg", "math"}


def _page_parser():
    from html.parser import HTMLParser

    class PageText(HTMLParser):
        def __init__(self):
            super().__init__(convert_charrefs=True)
            self.stack: list[tuple[str, bool]] = []
            self.texts: list[str] = []
            self.images: list[str] = []

        def _skipping(self) -> bool:
            return bool(self.stack) and self.stack[-1][1]

        def handle_starttag(self, tag, attrs):
            attrs = dict(attrs)
            if tag == "img":
                self.images.append(attrs.get("src") or "")
            if tag in _VOID_TAGS:
                return
            classes = (attrs.get("class") or "").split()
            skip = self._skipping() or tag in _NOT_PROSE_TAGS or "math" in classes
            self.stack.append((tag, skip))

        def handle_startendtag(self, tag, attrs):
            if tag == "img":
                self.images.append(dict(attrs).get("src") or "")

        def handle_endtag(self, tag):
            if tag in _VOID_TAGS:
                return
            for depth in range(len(self.stack) - 1, -1, -1):
                if self.stack[depth][0] == tag:
                    del self.stack[depth:]
                    return

        def handle_data(self, data):
            if not self._skipping() and data.strip():
                self.texts.append(data)

    return PageText()


def _blank_image(path: Path) -> bool:
    """True when ``path`` is an image of one colour (a figure with nothing drawn)."""
    from PIL import Image

    with Image.open(path) as image:
        extrema = image.convert("RGB").getextrema()
    return all(low == high for low, high in extrema)


def page_problems(page: Path, html_root: Path) -> list[str]:
    """What a reader of ``page`` would see wrong: raw Markdown tables, raw TeX, MyST roles
    printed as text (an unresolved glue key among them), and missing, empty or blank images."""
    parser = _page_parser()
    parser.feed(page.read_text(encoding="utf-8"))
    problems: list[str] = []
    for text in parser.texts:
        snippet = " ".join(text.split())
        for what, pattern in (("raw Markdown table", RAW_TABLE_RE), ("raw TeX", RAW_TEX_RE),
                              ("raw MyST role", RAW_ROLE_RE)):
            match = pattern.search(snippet)
            if match:
                start = max(0, match.start() - 40)
                problems.append(f"{what}: ...{snippet[start:match.end() + 40]}...")
    for src in parser.images:
        if src.startswith("data:"):
            continue
        if not src or "://" in src:
            problems.append(f"image without a local file: {src!r}")
            continue
        target = (page.parent / src.split("#")[0].split("?")[0]).resolve()
        if not target.is_file() or target.stat().st_size == 0:
            problems.append(f"missing or empty image: {src}")
        elif target.suffix.lower() in (".png", ".jpg", ".jpeg") and _blank_image(target):
            problems.append(f"blank image (one colour): {src}")
    return problems


def check_pages(html_root: Path) -> dict[str, list[str]]:
    """:func:`page_problems` of every HTML page of the build (the theme's assets left out)."""
    found = {}
    for page in sorted(html_root.rglob("*.html")):
        relative = page.relative_to(html_root)
        if relative.parts[0] in ("_static", "_sources", "_images"):
            continue
        problems = page_problems(page, html_root)
        if problems:
            found[str(relative)] = problems
    return found


# --------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Execute the book's notebooks with papermill and build the HTML with Jupyter Book.",
    )
    parser.add_argument("--profile", choices=PROFILES, default="ci",
                        help="run profile passed to every notebook (default: ci)")
    parser.add_argument("--device", default="auto",
                        help="torch device passed to every notebook, e.g. cpu, cuda:0 (default: auto)")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="execute only the notebooks whose toc path or file name matches GLOB "
                             "(repeatable); the book then holds those notebooks and the prose pages")
    parser.add_argument("--no-html", action="store_true", help="execute the notebooks, skip the HTML build")
    parser.add_argument("--html-only", action="store_true",
                        help="do not execute: rebuild the HTML from the notebooks the last run executed "
                             "(_build/executed/), e.g. after editing a prose page")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="limit per notebook cell (default: none)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' cell outputs")
    parser.add_argument("--sync", action="store_true",
                        help="only pair and jupytext --sync the notebooks, write their setup cell from "
                             "_config.yml and clear the .ipynb outputs (make sync; --only limits it)")
    parser.add_argument("--save-times", action="store_true",
                        help=f"only copy the last run's notebook times into {NOTEBOOK_TIMES_FILE} "
                             "(commit it after a full run on a GPU: the chapter headers show it)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    if args.html_only and args.no_html:
        parser.error("--html-only and --no-html exclude each other")
    return args


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def _execution_context(root: Path, args: argparse.Namespace, toc_notebooks: list[str]) -> dict:
    """The summary of this execution before any notebook ran: library, commit, device."""
    import datetime as dt

    from pixelweight import __version__
    from pixelweight.results import device_description, git_commit
    from pixelweight.train import resolve_device

    try:
        device = device_description(resolve_device(args.device))
    except Exception as exc:  # noqa: BLE001 - an unknown or absent device
        raise BuildError(f"--device {args.device}: {exc}") from exc
    commit = git_commit(root)
    return {
        "schema_version": 1,
        "profile": args.profile, "device": args.device, "device_description": device,
        "pixelweight": __version__, "git_commit": commit["commit"], "git_dirty": commit["dirty"],
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "toc_notebooks": toc_notebooks, "notebooks": {},
    }


def run_notebooks(root: Path, args: argparse.Namespace, notebooks: list[str], executed_dir: Path,
                  execution: dict, release: Release) -> list[RunResult]:
    """Execute ``notebooks`` into ``executed_dir``; fill ``execution["notebooks"]``."""
    build_dir = root / "_build"
    results: list[RunResult] = []
    with kernel_environment(build_dir) as kernel_name:
        executable = check_kernel(kernel_name)
        say(f"kernel {kernel_name}: {executable}; profile={args.profile} device={args.device} "
            f"({execution['device_description']}); pixelweight {execution['pixelweight']} at commit "
            f"{_short(execution['git_commit'])}{' (dirty)' if execution['git_dirty'] else ''}")
        for index, entry in enumerate(notebooks, 1):
            results_dir = results_dir_for(root, entry)
            shutil.rmtree(results_dir, ignore_errors=True)
            results_dir.mkdir(parents=True)
            executed = executed_dir / f"{entry}.ipynb"
            records_file(executed).unlink(missing_ok=True)
            say(f"[{index}/{len(notebooks)}] executing {entry} ...")
            result = execute_notebook(
                root / f"{entry}.py",
                executed,
                name=entry,
                parameters={"profile": args.profile, "device": args.device, "results_dir": str(results_dir)},
                kernel_name=kernel_name,
                cwd=(root / entry).parent,
                timeout=args.timeout,
                log_output=args.log_output,
                release=release,
            )
            records: list[dict] = []
            verdicts: list[dict] = []
            if result.status == "ok":
                try:
                    records, verdicts = collect_run_outputs(
                        results_dir, entry, execution["git_commit"], execution["pixelweight"])
                except ValueError as exc:
                    result = RunResult(entry, "failed", result.seconds, format_failure(entry, exc))
            if records:
                records_file(executed).write_text(json.dumps(
                    {"notebook": entry, "profile": args.profile, "pixelweight": execution["pixelweight"],
                     "git_commit": execution["git_commit"], "records": records},
                    indent=1, sort_keys=True), encoding="utf-8")
            execution["notebooks"][entry] = {
                "status": result.status, "seconds": round(result.seconds, 1),
                "records": len(records), "verdicts": verdicts,
            }
            results.append(result)
            say(f"[{index}/{len(notebooks)}] {entry}: {result.status} in {result.seconds:.1f} s"
                + (f", {len(records)} run record(s), {len(verdicts)} verdict(s)" if result.status == "ok" else ""))
            if result.error:
                say(result.error)
    return results


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    build_dir = root / "_build"
    staging = build_dir / "staging"
    executed_dir = build_dir / "executed"
    if args.sync:
        return sync_notebooks(root, args.only)
    if args.save_times:
        return save_notebook_times(root)
    if args.log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with (root / "_toc.yml").open(encoding="utf-8") as handle:
            toc = yaml.safe_load(handle)
        entries = toc_entries(toc)
        for entry in entries:
            page_source(root, entry)  # every entry must have its source
        config = read_config(root)
        release = release_of(config)
        chapters = read_chapters(root)
        bib = read_bib(root)
        toc_notebooks = [e for e in entries if is_notebook(e)]
        check_chapters(chapters, toc_notebooks, set(bib))
        notebooks = list(toc_notebooks)
        pages = [e for e in entries if not is_notebook(e)]
        if args.only:
            selected = [e for e in notebooks if matches(e, args.only)]
            if not selected:
                raise BuildError(f"--only {' '.join(args.only)} matches none of: {', '.join(notebooks)}")
            skipped = [e for e in notebooks if e not in selected]
            toc = filter_toc(toc, lambda e: not is_notebook(e) or e in selected)
            notebooks = selected
            if skipped:
                say(f"--only: leaving out {', '.join(skipped)}")
        if args.html_only:
            execution = load_execution(build_dir)
            missing = [e for e in notebooks if execution["notebooks"].get(e, {}).get("status") != "ok"
                       or not (executed_dir / f"{e}.ipynb").is_file()]
            if missing:
                raise BuildError(f"--html-only: the last run did not execute {', '.join(missing)}: "
                                 "run the build without --html-only")
        else:
            execution = _execution_context(root, args, toc_notebooks)
        stage_sources(root, staging, toc, pages, notebooks)
    except (BuildError, OSError, yaml.YAMLError) as exc:
        say(f"error: {exc}")
        return 2

    if args.html_only:
        results = [RunResult(e, "ok", execution["notebooks"][e]["seconds"]) for e in notebooks]
        say(f"--html-only: the notebooks as executed on {execution['created_utc']} at commit "
            f"{_short(execution['git_commit'])} ({execution['profile']} profile)")
    else:
        if not args.only:  # no executed notebook of an earlier run survives a complete run
            shutil.rmtree(executed_dir, ignore_errors=True)
        try:
            results = run_notebooks(root, args, notebooks, executed_dir, execution, release)
        except BuildError as exc:
            say(f"error: {exc}")
            return 2
        (build_dir / EXECUTION_FILE).write_text(json.dumps(execution, indent=1), encoding="utf-8")
        write_timings(results, build_dir)

    failed = [r.notebook for r in results if r.status != "ok"]
    html_status = 0
    html_seconds = 0.0
    partial = notebooks != toc_notebooks
    (build_dir / BUILD_INFO_FILE).unlink(missing_ok=True)
    if failed:
        say("", f"not building the HTML: {len(failed)} notebook(s) failed")
    elif not args.no_html:
        try:
            stage_generated(root, staging, pages=pages, notebooks=notebooks, toc_notebooks=toc_notebooks,
                            executed_dir=executed_dir, execution=execution, config=config,
                            release=release, chapters=chapters, bib=bib)
            command = jupyter_book_command(staging, root, strict=not partial)
        except (BuildError, OSError, yaml.YAMLError) as exc:
            say(f"error: {exc}")
            return 2
        for stale in ("html", ".doctrees", "jupyter_execute"):  # no page of an earlier build survives
            shutil.rmtree(build_dir / stale, ignore_errors=True)
        say("", "$ " + " ".join(command))
        start = time.perf_counter()
        html_status = subprocess.call(command, cwd=root)
        html_seconds = time.perf_counter() - start
        if html_status == 0:
            bad_pages = check_pages(build_dir / "html")
            if bad_pages:
                say("", f"the built pages show what a reader must not see ({len(bad_pages)} page(s)):")
                for name, problems in bad_pages.items():
                    say(f"  {name}:", *(f"    {p}" for p in problems[:10]))
                    if len(problems) > 10:
                        say(f"    ... and {len(problems) - 10} more")
                html_status = 3
        if html_status == 0:
            write_build_info(build_dir, entries=[e for e in entries if e in pages or e in notebooks],
                             notebooks=notebooks, partial=partial, execution=execution,
                             release=release, config=config)

    say("", timing_table(results))
    if not args.html_only:
        say(f"timings saved to {_relative(build_dir / 'timings.csv', root)} and timings.md")
    if failed:
        say("FAILED notebooks: " + ", ".join(failed))
        return 1
    if args.no_html:
        say(f"executed notebooks are in {_relative(executed_dir, root)}/ (HTML not built: --no-html)")
        return 0
    if html_status == 3:
        say("FAILED: the HTML was built, but its pages show raw Markdown, raw TeX, unresolved roles "
            "or broken images (listed above)")
        return 1
    if html_status != 0:
        say(f"FAILED: jupyter-book build exited with {html_status} after {html_seconds:.1f} s "
            "(every Sphinx warning is an error; see the log above)")
        return 1
    say(f"HTML built in {html_seconds:.1f} s: the book is at {build_dir / 'html' / 'index.html'}")
    if partial:
        say("partial book (--only): Sphinx warnings were not errors; run the full build before committing")
    return 0


def write_build_info(build_dir: Path, *, entries: list[str], notebooks: list[str], partial: bool,
                     execution: dict, release: Release, config: dict) -> None:
    """``_build/build_info.json``: what the HTML in ``_build/html`` holds, for the browser test
    (``tests/test_book_browser.py``) and for people: its pages, whether it is partial, and the
    library version, commit, profile and device its notebooks ran with."""
    import datetime as dt

    info = {
        "partial": partial,
        "pages": {entry: f"{entry}.html" for entry in entries},
        "notebooks": notebooks,
        "repository": release.url,
        "release": release.tag,
        "colab_url": (config.get("launch_buttons") or {}).get("colab_url", ""),
        "built_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **{key: execution[key] for key in ("pixelweight", "git_commit", "git_dirty", "profile",
                                           "device_description", "created_utc")},
        "verdicts": {e: execution["notebooks"][e]["verdicts"] for e in notebooks},
    }
    (build_dir / BUILD_INFO_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")


if __name__ == "__main__":
    sys.exit(main())
