"""The notebooks' sources: the setup cell of the release, the ``parameters`` cell, and
``make sync`` (jupytext pairing, setup cell, outputs cleared)."""

from __future__ import annotations

import ast
from pathlib import Path

import yaml

from .common import NOTEBOOKS_DIR, PAIRING, PARAMETER_DEFAULTS, PARAMETERS, BuildError, say
from .config import Release, read_config, release_of
from .toc import matches


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
