#!/usr/bin/env python3
"""Build the book *Which Pixels Matter?*: papermill runs the notebooks, Jupyter Book renders them.

Run it with the virtual environment's interpreter (``make book`` does)::

    .venv/bin/python tools/build_book.py [--profile {ci,full}] [--device auto] [--only GLOB]
                                         [--no-html] [--timeout SECONDS]

The steps, in order:

1. Read ``_toc.yml`` and collect every page it lists. A page under ``notebooks/`` is a
   notebook whose source of truth is its jupytext ``py:percent`` file: the ``.py`` must exist.
2. Wipe and re-create the staging tree ``_build/staging/``: copy ``_config.yml``,
   ``_toc.yml`` and ``book/``; convert every notebook's ``.py`` with jupytext and execute it
   with papermill into the staging tree at the same relative path. The kernel runs this very
   interpreter (a kernelspec written to ``_build/jupyter/`` points at ``sys.executable``, and
   a pre-flight check compares the kernel's ``sys.prefix`` with ours), its working directory
   is the notebook's own folder in the repository, matplotlib is headless (see
   :data:`MPLBACKEND`), and papermill injects
   the parameters ``profile``, ``device`` and ``results_dir`` (an absolute path
   ``_build/results/<chapter>/<notebook>``, emptied before the run).
3. A failing cell fails the build: the notebook's name and the cell's traceback are printed,
   the remaining notebooks still run, and the script exits non-zero at the end (the HTML is
   then not built). Nothing is run with ``allow_errors``.
4. Build the HTML with ``jupyter-book build _build/staging --path-output . -W -n
   --keep-going --all`` (from the repository root) (execution is off in ``_config.yml``: papermill already ran), so the
   book lands in ``_build/html/`` and any Sphinx warning fails the build.
5. Print where the book is and a per-notebook timing table, also saved as
   ``_build/timings.csv`` and ``_build/timings.md``.

``--only GLOB`` (repeatable) executes only the notebooks whose toc path
(``notebooks/00_testbed/01_testbed``) or file name matches one of the globs; the book is then
built from those notebooks plus every prose page, the other notebooks are left out of the
staged ``_toc.yml``, and Sphinx warnings are printed but not errors (links to the pages left
out cannot resolve): a partial book is for previewing a chapter, not for publishing.

Exit status: 0 on success, 1 when a notebook or the HTML build failed, 2 when the book's
sources are inconsistent (a toc entry without its source, a notebook without a valid
``parameters`` cell, a kernel that is not this interpreter).
"""

from __future__ import annotations

import argparse
import ast
import contextlib
import copy
import csv
import fnmatch
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


def sync_notebooks(root: Path) -> int:
    """``jupytext --sync`` every notebook pair under ``notebooks/``, then clear the outputs of
    the ``.ipynb`` files (they are committed without outputs). A ``.py`` not yet paired is
    paired first (``--set-formats ipynb,py:percent``), which writes its ``.ipynb``.
    Returns the exit status."""
    import jupytext
    from jupytext.cli import jupytext as jupytext_cli

    sources = [p for p in notebook_files(root) if p.suffix == ".py"]
    if not sources:
        say(f"no notebook under {root / NOTEBOOKS_DIR}")
        return 0
    try:
        for source in sources:
            if not jupytext.read(source).metadata.get("jupytext", {}).get("formats"):
                jupytext_cli(["--set-formats", PAIRING, str(source)])
        jupytext_cli(["--sync", *map(str, sources)])
    except (ValueError, OSError) as exc:  # jupytext reports unpaired files this way
        say(f"error: {exc}")
        return 1
    for path in notebook_files(root):
        if path.suffix == ".ipynb" and clear_outputs(path):
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
) -> RunResult:
    """Convert ``source`` (py:percent) with jupytext and execute it with papermill into ``output``.

    Never raises for a notebook's own failure: the result carries ``status="failed"`` and the
    readable report of :func:`format_failure`. The kernel must already be set up
    (:func:`kernel_environment`).
    """
    import jupytext
    import papermill

    start = time.perf_counter()
    try:
        nb = jupytext.read(source)
        check_parameters(nb)
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
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="limit per notebook cell (default: none)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' cell outputs")
    parser.add_argument("--sync", action="store_true",
                        help="only jupytext --sync every notebook pair and clear the .ipynb outputs (make sync)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    return args


def say(*lines: str) -> None:
    print(*lines, sep="\n", flush=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    root = args.root.resolve()
    build_dir = root / "_build"
    staging = build_dir / "staging"
    if args.sync:
        return sync_notebooks(root)
    if args.log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        with (root / "_toc.yml").open(encoding="utf-8") as handle:
            toc = yaml.safe_load(handle)
        entries = toc_entries(toc)
        for entry in entries:
            page_source(root, entry)  # every entry must have its source
        notebooks = [e for e in entries if is_notebook(e)]
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
        stage_sources(root, staging, toc, pages, notebooks)
    except (BuildError, OSError, yaml.YAMLError) as exc:
        say(f"error: {exc}")
        return 2

    results: list[RunResult] = []
    with kernel_environment(build_dir) as kernel_name:
        try:
            executable = check_kernel(kernel_name)
        except BuildError as exc:
            say(f"error: {exc}")
            return 2
        say(f"kernel {kernel_name}: {executable}; profile={args.profile} device={args.device}")
        for index, entry in enumerate(notebooks, 1):
            results_dir = results_dir_for(root, entry)
            shutil.rmtree(results_dir, ignore_errors=True)
            results_dir.mkdir(parents=True)
            say(f"[{index}/{len(notebooks)}] executing {entry} ...")
            result = execute_notebook(
                root / f"{entry}.py",
                staging / f"{entry}.ipynb",
                name=entry,
                parameters={"profile": args.profile, "device": args.device, "results_dir": str(results_dir)},
                kernel_name=kernel_name,
                cwd=(root / entry).parent,
                timeout=args.timeout,
                log_output=args.log_output,
            )
            results.append(result)
            say(f"[{index}/{len(notebooks)}] {entry}: {result.status} in {result.seconds:.1f} s")
            if result.error:
                say(result.error)

    failed = [r.notebook for r in results if r.status != "ok"]
    html_status = 0
    html_seconds = 0.0
    if failed:
        say("", f"not building the HTML: {len(failed)} notebook(s) failed")
    elif not args.no_html:
        try:
            command = jupyter_book_command(staging, root, strict=not args.only)
        except BuildError as exc:
            say(f"error: {exc}")
            return 2
        for stale in ("html", ".doctrees", "jupyter_execute"):  # no page of an earlier build survives
            shutil.rmtree(build_dir / stale, ignore_errors=True)
        say("", "$ " + " ".join(command))
        start = time.perf_counter()
        html_status = subprocess.call(command, cwd=root)
        html_seconds = time.perf_counter() - start

    write_timings(results, build_dir)
    say("", timing_table(results))
    say(f"timings saved to {_relative(build_dir / 'timings.csv', root)} and timings.md")
    if failed:
        say("FAILED notebooks: " + ", ".join(failed))
        return 1
    if args.no_html:
        say(f"executed notebooks are in {_relative(staging, root)}/ (HTML not built: --no-html)")
        return 0
    if html_status != 0:
        say(f"FAILED: jupyter-book build exited with {html_status} after {html_seconds:.1f} s "
            "(every Sphinx warning is an error; see the log above)")
        return 1
    say(f"HTML built in {html_seconds:.1f} s: the book is at {build_dir / 'html' / 'index.html'}")
    if args.only:
        say("partial book (--only): Sphinx warnings were not errors; run the full build before committing")
    return 0


if __name__ == "__main__":
    sys.exit(main())
