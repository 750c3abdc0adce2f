"""Rerunnable on Colab: every notebook page's launch button opens a committed ``.ipynb``
whose first cell installs exactly the release of ``_config.yml``.

Walks ``_toc.yml``: for every notebook, the Colab button's target (the ``.ipynb`` at the same
path in the repository, at the release tag) exists, matches its jupytext source, carries no
outputs, and starts with the setup cell that ``make sync`` generates from ``_config.yml``.
The setup cell itself is run here in both of its cases: the library present (nothing is
installed) and missing (pip is asked for the release, keeping the installed torch).
"""

from __future__ import annotations

import ast
import importlib.util
import io
import subprocess
import sys
from contextlib import redirect_stdout
from importlib.metadata import version
from pathlib import Path

import jupytext
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

import bookbuild as bb

ROOT = Path(__file__).resolve().parents[1]


CONFIG = bb.read_config(ROOT)
RELEASE = bb.release_of(CONFIG)
TOC_NOTEBOOKS = [e for e in bb.read_toc(ROOT / "_toc.yml") if bb.is_notebook(e)]
SYNC = "run `make sync`"


def _cells(nb):
    return [(c.cell_type, c.source, list(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


# ----------------------------------------------------------------------------- configuration
def test_config_names_the_repository_and_release_once():
    text = (ROOT / "_config.yml").read_text(encoding="utf-8")
    assert text.count(RELEASE.url) == 1 and text.count(RELEASE.tag) == 1
    assert CONFIG["launch_buttons"]["colab_url"] == "https://colab.research.google.com"
    assert CONFIG["repository"]["path_to_book"] == ""  # the book root is the repository root
    assert RELEASE.requirement == f"pixelweight @ git+{RELEASE.url}@{RELEASE.tag}"


def test_release_tag_is_the_package_version():
    assert RELEASE.tag == f"v{bb.project_metadata(ROOT)['version']}", "set repository.branch and run `make sync`"


# ----------------------------------------------------------------------------- every notebook of the toc
@pytest.mark.parametrize("entry", TOC_NOTEBOOKS)
def test_colab_target_exists_and_is_in_sync(entry):
    url = RELEASE.colab_url(CONFIG["launch_buttons"]["colab_url"], f"{entry}.ipynb")
    org, repo = RELEASE.org_repo
    prefix = f"https://colab.research.google.com/github/{org}/{repo}/blob/{RELEASE.tag}/"
    assert url.startswith(prefix)
    target = ROOT / url[len(prefix):]
    assert target.is_file(), f"the Colab button of {entry} opens {target.relative_to(ROOT)}, which is missing: {SYNC}"
    source = jupytext.read(ROOT / f"{entry}.py")
    committed = jupytext.read(target)
    assert _cells(committed) == _cells(source), f"{entry}.ipynb differs from {entry}.py: {SYNC}"
    dirty = [i for i, c in enumerate(committed.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{entry}.ipynb has outputs in cells {dirty}: {SYNC}"


@pytest.mark.parametrize("entry", TOC_NOTEBOOKS)
@pytest.mark.parametrize("suffix", [".py", ".ipynb"])
def test_first_cell_installs_the_release(entry, suffix):
    nb = jupytext.read(ROOT / f"{entry}{suffix}")
    problem = bb.setup_cell_problem(nb, RELEASE)
    assert problem is None, f"{entry}{suffix} {problem}: {SYNC}"
    tree = ast.parse(nb.cells[0].source)
    assigned = {node.targets[0].id: node.value.value for node in tree.body
                if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)}
    assert assigned["RELEASE"] == f"pixelweight @ git+{RELEASE.url}@{RELEASE.tag}"


# ----------------------------------------------------------------------------- the setup cell runs
def _run_setup(monkeypatch, *, present: bool) -> tuple[list, str]:
    calls = []

    def fake_run(args, check=False, **kwargs):
        calls.append((list(args), check))
        return subprocess.CompletedProcess(args, 0)

    real_find_spec = importlib.util.find_spec
    if not present:
        monkeypatch.setattr(importlib.util, "find_spec",
                            lambda name, *a: None if name == "pixelweight" else real_find_spec(name, *a))
    monkeypatch.setattr(subprocess, "run", fake_run)
    out = io.StringIO()
    with redirect_stdout(out):
        exec(compile(bb.setup_cell_source(RELEASE), "<setup cell>", "exec"), {})
    return calls, out.getvalue()


def test_setup_cell_with_the_library_installed_installs_nothing(monkeypatch):
    calls, out = _run_setup(monkeypatch, present=True)
    assert calls == []
    import pixelweight

    assert out.startswith(f"pixelweight {pixelweight.__version__}; device 'auto' is ")


def test_setup_cell_on_colab_installs_the_release_and_keeps_torch(monkeypatch):
    calls, out = _run_setup(monkeypatch, present=False)
    assert calls == [([sys.executable, "-m", "pip", "install", "--quiet", f"torch=={version('torch')}",
                       RELEASE.requirement], True)]
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    assert f"device 'auto' is {device}" in out
    assert ("Runtime > Change runtime type" in out) == (device == "cpu")


# ----------------------------------------------------------------------------- the setup-cell tools
def _nb(*cells):
    return new_notebook(cells=list(cells))


def _setup(source=None, tags=("setup", "remove-cell")):
    return new_code_cell(bb.setup_cell_source(RELEASE) if source is None else source, metadata={"tags": list(tags)})


@pytest.mark.parametrize(("nb", "match"), [
    (_nb(new_markdown_cell("# T")), "has no setup cell"),
    (_nb(_setup(), _setup()), "has 2 cells tagged 'setup', expected one"),
    (_nb(new_markdown_cell("# T"), _setup()), "has its setup cell at position 2, not first"),
    (_nb(new_markdown_cell("x", metadata={"tags": ["setup"]})), "has a markdown cell tagged 'setup'"),
    (_nb(_setup(tags=["setup"])), r"has a setup cell tagged \['setup'\], expected \['setup', 'remove-cell'\]"),
    (_nb(_setup(source="import pixelweight")), "not the one _config.yml gives"),
])
def test_check_setup_cell_errors(nb, match):
    with pytest.raises(ValueError, match=match + ".*run `make sync`"):
        bb.check_setup_cell(nb, RELEASE)


def test_check_setup_cell_names_the_release():
    older = bb.Release(RELEASE.url, "v0.0.1")
    nb = _nb(_setup())
    with pytest.raises(ValueError, match=f"release v0.0.1 of {RELEASE.url}"):
        bb.check_setup_cell(nb, older)


@pytest.mark.parametrize("cells", [
    [new_markdown_cell("# T"), new_code_cell("x = 1")],                       # inserted
    [new_markdown_cell("# T"), _setup(), new_code_cell("x = 1")],             # moved first
    [_setup(source="old"), new_markdown_cell("# T"), _setup(), new_code_cell("x = 1")],  # deduplicated
])
def test_refresh_setup_cell(cells):
    nb = _nb(*cells)
    assert bb.refresh_setup_cell(nb, RELEASE) is True
    assert bb.setup_cell_problem(nb, RELEASE) is None
    assert _cells(nb)[1:] == [("markdown", "# T", []), ("code", "x = 1", [])]
    assert bb.refresh_setup_cell(nb, RELEASE) is False  # already current: untouched


@pytest.mark.parametrize(("repository", "match"), [
    (None, "has no 'repository' section"),
    ({"url": "https://gitlab.com/a/b", "branch": "v1.0.0"}, "must be a GitHub repository"),
    ({"url": "https://github.com/a/b/", "branch": "v1.0.0"}, "without a trailing slash"),
    ({"branch": "v1.0.0"}, "got None"),
    ({"url": "https://github.com/a/b"}, "repository.branch must be the release tag"),
    ({"url": "https://github.com/a/b", "branch": "main"}, "got 'main'"),
])
def test_release_of_errors(repository, match):
    config = {} if repository is None else {"repository": repository}
    with pytest.raises(bb.BuildError, match=match):
        bb.release_of(config)


def test_release_urls():
    release = bb.release_of({"repository": {"url": "https://github.com/o/r", "branch": "v1.2.0rc1"}})
    assert release.org_repo == ("o", "r")
    assert release.colab_url("https://colab.research.google.com/", "notebooks/a/b.ipynb") == (
        "https://colab.research.google.com/github/o/r/blob/v1.2.0rc1/notebooks/a/b.ipynb")
    assert release.commit_url("abc") == "https://github.com/o/r/commit/abc"


def test_project_metadata_without_tomllib(tmp_path, monkeypatch):
    (tmp_path / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["x"]\n\n[project]\nname = "p"\nversion = "2.3.4"\n'
        'requires-python = ">=3.10"\n\n[tool.x]\nversion = "9"\n')
    expected = {"version": "2.3.4", "requires-python": ">=3.10"}
    assert bb.project_metadata(tmp_path) == expected
    monkeypatch.setitem(sys.modules, "tomllib", None)  # as on Python 3.10
    assert bb.project_metadata(tmp_path) == expected
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "p"\n')
    with pytest.raises(bb.BuildError, match=r"\[project\] has no version"):
        bb.project_metadata(tmp_path)
