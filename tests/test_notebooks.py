"""The book's notebooks, and the pure parts of the pipeline that builds it.

Part 1 walks ``_toc.yml``: every notebook it lists has a jupytext ``py:percent`` source and a
paired ``.ipynb`` beside it with the same cells, committed without outputs, and a
``parameters`` cell assigning exactly ``profile``, ``device``, ``results_dir`` and ``chapter``; no notebook
under ``notebooks/`` is missing from the toc.

Part 2 tests ``tools/build_book.py``: toc parsing and filtering, the parameters check, the
timing table, failure reports, ``make sync``'s output clearing, and one real papermill run of
a tiny book whose second notebook raises (the build must name it, show the traceback, run
the others and exit non-zero).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path

import jupytext
import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

import bookbuild as bb

ROOT = Path(__file__).resolve().parents[1]


TOC_ENTRIES = bb.read_toc(ROOT / "_toc.yml")
TOC_NOTEBOOKS = [entry for entry in TOC_ENTRIES if bb.is_notebook(entry)]


def _cells(nb) -> list[tuple[str, str, list[str]]]:
    """What pairing must preserve: each cell's type, source and tags."""
    return [(c.cell_type, c.source, list(c.get("metadata", {}).get("tags", []))) for c in nb.cells]


def _pairing(nb) -> list[dict[str, str]]:
    formats = nb.metadata.get("jupytext", {}).get("formats", "")
    return sorted(jupytext.formats.long_form_multiple_formats(formats), key=lambda f: f["extension"])


# ======================================================================================
# Part 1: the notebooks of _toc.yml
# ======================================================================================
def test_toc_lists_the_testbed():
    assert TOC_ENTRIES[0] == "book/intro"
    assert TOC_NOTEBOOKS[:2] == ["notebooks/00_testbed/01_testbed", "notebooks/00_testbed/02_ce_baseline"]


@pytest.mark.parametrize("entry", TOC_ENTRIES)
def test_toc_entry_has_its_source(entry):
    source = bb.page_source(ROOT, entry)  # raises BuildError naming what is missing
    assert source.is_file()


@pytest.mark.parametrize("entry", TOC_NOTEBOOKS)
def test_notebook_pair_in_sync(entry):
    py, ipynb = ROOT / f"{entry}.py", ROOT / f"{entry}.ipynb"
    assert py.is_file(), f"{entry}.py, the notebook's jupytext source, is missing"
    assert ipynb.is_file(), f"{entry}.ipynb is missing: run `make sync`"
    assert _cells(jupytext.read(ipynb)) == _cells(jupytext.read(py)), (
        f"{entry}.py and {entry}.ipynb differ: run `make sync`"
    )


@pytest.mark.parametrize("entry", TOC_NOTEBOOKS)
def test_notebook_pairing_metadata(entry):
    expected = [{"extension": ".ipynb"}, {"extension": ".py", "format_name": "percent"}]
    for path in (ROOT / f"{entry}.py", ROOT / f"{entry}.ipynb"):
        assert _pairing(jupytext.read(path)) == expected, (
            f"{path.name} is not paired as {bb.PAIRING}: run `make sync`"
        )


@pytest.mark.parametrize("entry", TOC_NOTEBOOKS)
def test_notebook_title_has_no_math(entry):
    # The title is the page's name in every page's navigation, and Sphinx loads MathJax only
    # on pages with math of their own: a formula in a title stays raw TeX on the others.
    titles = [line for c in jupytext.read(ROOT / f"{entry}.py").cells if c.cell_type == "markdown"
              for line in c.source.splitlines() if line.startswith("# ")]
    assert titles, f"{entry} has no '# ' title"
    assert "$" not in titles[0] and "\\(" not in titles[0], (
        f"{entry}: the title {titles[0]!r} has math; write it in plain text (Unicode is fine)"
    )


@pytest.mark.parametrize("entry", TOC_NOTEBOOKS)
def test_notebook_committed_without_outputs(entry):
    nb = nbformat.read(ROOT / f"{entry}.ipynb", as_version=4)
    dirty = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and (c.outputs or c.execution_count is not None)]
    assert not dirty, f"{entry}.ipynb has outputs or execution counts in cells {dirty}: run `make sync`"


@pytest.mark.parametrize("entry", TOC_NOTEBOOKS)
def test_notebook_parameters_cell(entry):
    nb = jupytext.read(ROOT / f"{entry}.py")
    assert sorted(bb.notebook_parameters(nb)) == sorted(bb.PARAMETERS)
    bb.check_parameters(nb)  # and the defaults profile="ci", device="auto"


def test_every_notebook_is_in_the_toc():
    on_disk = {str(p.relative_to(ROOT).with_suffix("").as_posix()) for p in bb.notebook_files(ROOT)}
    assert on_disk - set(TOC_NOTEBOOKS) == set(), "notebooks not listed in _toc.yml"


# ======================================================================================
# Part 2: tools/build_book.py
# ======================================================================================
TOC = {
    "format": "jb-book",
    "root": "book/intro.md",
    "parts": [
        {"caption": "A", "chapters": [
            {"file": "notebooks/a/one", "sections": [{"file": "book/aside"}]},
            {"url": "https://example.org", "title": "elsewhere"},
            {"file": "notebooks/a/two.ipynb"},
        ]},
        {"caption": "B", "chapters": [{"file": "notebooks/b/three"}, {"file": "notebooks/a/one"}]},
    ],
}


def test_toc_entries_in_reading_order():
    assert bb.toc_entries(TOC) == [
        "book/intro", "notebooks/a/one", "book/aside", "notebooks/a/two", "notebooks/b/three",
    ]


@pytest.mark.parametrize(("toc", "match"), [
    ({"parts": []}, "'root' entry"),
    (["book/intro"], "'root' entry"),
    ({"root": "intro", "chapters": [{"glob": "notebooks/*"}]}, r"'glob: notebooks/\*' is not supported"),
    ({"root": "intro", "chapters": ["notebooks/a"]}, "unexpected entry 'notebooks/a'"),
])
def test_toc_entries_errors(toc, match):
    with pytest.raises(bb.BuildError, match=match):
        bb.toc_entries(toc)


def test_read_toc_missing_file(tmp_path):
    with pytest.raises(bb.BuildError, match="no table of contents at"):
        bb.read_toc(tmp_path / "_toc.yml")


def test_filter_toc_keeps_prose_and_drops_empty_parts():
    kept = bb.filter_toc(TOC, lambda e: e in ("book/intro", "book/aside", "notebooks/a/two"))
    assert kept == {
        "format": "jb-book",
        "root": "book/intro.md",
        "parts": [{"caption": "A", "chapters": [
            {"url": "https://example.org", "title": "elsewhere"},
            {"file": "notebooks/a/two.ipynb"},
        ]}],
    }
    assert bb.toc_entries(TOC)[1] == "notebooks/a/one"  # the original is untouched


def test_is_notebook_and_matches():
    assert bb.is_notebook("notebooks/a/one") and not bb.is_notebook("book/notebooks")
    assert bb.matches("notebooks/a/one", ["notebooks/a/*"])
    assert bb.matches("notebooks/a/one", ["o*"])  # the file name alone
    assert not bb.matches("notebooks/a/one", ["two", "notebooks/b/*"])


def test_page_source(tmp_path):
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text("# Intro\n")
    (tmp_path / "notebooks" / "a").mkdir(parents=True)
    (tmp_path / "notebooks" / "a" / "one.ipynb").write_text("{}")
    assert bb.page_source(tmp_path, "book/intro") == tmp_path / "book" / "intro.md"
    with pytest.raises(bb.BuildError, match=r"notebook 'notebooks/a/one' but its jupytext source "
                                            r"notebooks/a/one\.py does not exist"):
        bb.page_source(tmp_path, "notebooks/a/one")
    with pytest.raises(bb.BuildError, match=r"lists 'book/missing' but no \.md/\.ipynb/\.rst file"):
        bb.page_source(tmp_path, "book/missing")


def _nb(*cells):
    return new_notebook(cells=list(cells))


def _params(source, cell=new_code_cell):
    return cell(source, metadata={"tags": ["parameters"]})


GOOD = 'profile = "ci"\ndevice = "auto"\nresults_dir: str = None\nchapter = None\n'


def test_notebook_parameters_values():
    nb = _nb(new_markdown_cell("# T"), _params(GOOD + "# a comment\n"), new_code_cell("x = 1"))
    assert bb.notebook_parameters(nb) == {"profile": "ci", "device": "auto", "results_dir": None, "chapter": None}
    assert bb.notebook_parameters(_nb(_params("a = b = Path('x')"))) == {"a": "Path('x')", "b": "Path('x')"}
    bb.check_parameters(nb)


@pytest.mark.parametrize(("nb", "match"), [
    (_nb(new_code_cell(GOOD)), "exactly one cell tagged 'parameters', found 0"),
    (_nb(_params(GOOD), _params(GOOD)), "exactly one cell tagged 'parameters', found 2"),
    (_nb(_params(GOOD, new_markdown_cell)), "is a markdown cell, not a code cell"),
    (_nb(_params("profile = ")), "not valid Python"),
    (_nb(_params(GOOD + "import os\n")), "may only assign names, found: 'import os'"),
    (_nb(_params(GOOD + "cfg.x = 1\n")), "assigns 'cfg.x', not a name"),
    (_nb(_params(GOOD + "seed = 0\n")),
     "must assign exactly profile, device, results_dir, chapter; "
     "it assigns profile, device, results_dir, chapter, seed"),
    (_nb(_params('profile = "ci"\n')), "it assigns profile$"),
    (_nb(_params(GOOD.replace('"ci"', '"full"'))), "sets profile = 'full', expected 'ci'"),
    (_nb(_params(GOOD.replace('"auto"', '"cuda"'))), "sets device = 'cuda', expected 'auto'"),
    (_nb(_params(GOOD.replace("chapter = None", 'chapter = "02_recall"'))),
     "sets chapter = '02_recall', expected None"),
])
def test_check_parameters_errors(nb, match):
    with pytest.raises(ValueError, match=match):
        bb.check_parameters(nb)


def test_results_dir_for(tmp_path):
    assert bb.results_dir_for(tmp_path, "notebooks/00_testbed/01_testbed") == (
        tmp_path.resolve() / "_build" / "results" / "00_testbed" / "01_testbed"
    )


RESULTS = [bb.NotebookRun("notebooks/a/one", "ok", 1.25), bb.NotebookRun("notebooks/long_name/two", "failed", 10.0)]


def test_timing_table():
    assert bb.timing_table(RESULTS) == (
        "| notebook                | status   | seconds |\n"
        "|-------------------------|----------|--------:|\n"
        "| notebooks/a/one         | ok       |     1.2 |\n"
        "| notebooks/long_name/two | failed   |    10.0 |\n"
        "| total                   | 1 failed |    11.2 |\n"
    )
    assert bb.timing_rows(RESULTS[:1])[-1] == ("total", "ok", "1.2")
    assert bb.timing_rows([]) == [("total", "ok", "0.0")]


def test_write_timings(tmp_path):
    bb.write_timings(RESULTS, tmp_path / "_build")
    with (tmp_path / "_build" / "timings.csv").open() as handle:
        assert list(csv.reader(handle)) == [
            ["notebook", "status", "seconds"],
            ["notebooks/a/one", "ok", "1.2"],
            ["notebooks/long_name/two", "failed", "10.0"],
            ["total", "1 failed", "11.2"],
        ]
    assert (tmp_path / "_build" / "timings.md").read_text() == bb.timing_table(RESULTS)


def test_format_failure():
    from papermill.exceptions import PapermillExecutionError

    exc = PapermillExecutionError(
        cell_index=3, exec_count=2, source="1/0", ename="ZeroDivisionError", evalue="division by zero",
        traceback=["\x1b[0;31m---------\x1b[0m", "\x1b[0;31mZeroDivisionError\x1b[0m: division by zero"],
    )
    report = bb.format_failure("notebooks/a/one", exc, Path("/b/one.ipynb"))
    lines = report.splitlines()
    assert lines[1] == "FAILED: notebooks/a/one (cell In [2])"
    assert lines[3:5] == ["---------", "ZeroDivisionError: division by zero"]
    assert lines[-2] == "executed notebook (with the error): /b/one.ipynb"
    assert "\x1b" not in report
    no_tb = PapermillExecutionError(0, 1, "", "KeyError", "'x'", [])
    assert "KeyError: 'x'" in bb.format_failure("nb", no_tb).splitlines()
    other = bb.format_failure("nb", TimeoutError("cell timed out"))
    assert other.splitlines()[1:4] == ["FAILED: nb (before or outside a cell)", "-" * 78, "TimeoutError: cell timed out"]


def test_clear_outputs_keeps_ids(tmp_path):
    path = tmp_path / "n.ipynb"
    cell = new_code_cell("print(1)", execution_count=3, outputs=[new_output("stream", text="1\n")])
    nbformat.write(_nb(new_markdown_cell("# T"), cell), path)
    ids = [c.id for c in nbformat.read(path, as_version=4).cells]
    assert bb.clear_outputs(path) is True
    nb = nbformat.read(path, as_version=4)
    assert [c.id for c in nb.cells] == ids
    assert (nb.cells[1].outputs, nb.cells[1].execution_count, nb.cells[1].source) == ([], None, "print(1)")
    assert bb.clear_outputs(path) is False


TINY_RELEASE = bb.Release("https://github.com/o/r", "v1.0.0")


def _write_config(root: Path, release=TINY_RELEASE) -> None:
    (root / "_config.yml").write_text(f"title: tiny\nrepository:\n  url: {release.url}\n  branch: {release.tag}\n")


def test_sync_pairs_and_cleans(tmp_path, capsys):
    _write_config(tmp_path)
    folder = tmp_path / "notebooks" / "a"
    folder.mkdir(parents=True)
    (folder / "one.py").write_text('# %% tags=["parameters"]\nprofile = "ci"\n\n# %%\nx = 1\n')
    assert bb.sync_notebooks(tmp_path) == 0  # pairs the new .py: writes one.ipynb, with the setup cell
    assert "wrote the setup cell (v1.0.0) into notebooks/a/one.py" in capsys.readouterr().out
    nb = nbformat.read(folder / "one.ipynb", as_version=4)
    assert bb.setup_cell_problem(nb, TINY_RELEASE) is None
    assert bb.setup_cell_problem(jupytext.read(folder / "one.py"), TINY_RELEASE) is None
    nb.cells[2].outputs, nb.cells[2].execution_count = [new_output("stream", text="1\n")], 1
    nbformat.write(nb, folder / "one.ipynb")
    assert bb.sync_notebooks(tmp_path) == 0
    assert "wrote the setup cell" not in capsys.readouterr().out  # already current
    synced = nbformat.read(folder / "one.ipynb", as_version=4)
    assert _cells(synced) == _cells(jupytext.read(folder / "one.py"))
    assert [c[0] for c in _cells(synced)] == ["code", "code", "code"]
    assert synced.cells[2].outputs == [] and synced.cells[2].execution_count is None
    assert _pairing(jupytext.read(folder / "one.py")) == _pairing(synced) != []


def test_sync_refreshes_the_setup_cell_after_a_release(tmp_path, capsys):
    _write_config(tmp_path)
    for name in ("a/one", "b/two"):
        (tmp_path / "notebooks" / name).parent.mkdir(parents=True)
        (tmp_path / "notebooks" / f"{name}.py").write_text("# %% [markdown]\n# # T\n\n# %%\nx = 1\n")
    assert bb.sync_notebooks(tmp_path) == 0
    newer = bb.Release(TINY_RELEASE.url, "v1.1.0")
    _write_config(tmp_path, newer)
    assert bb.sync_notebooks(tmp_path, ["notebooks/a/*"]) == 0  # --only: b/two keeps the old release
    for name, release in (("a/one", newer), ("b/two", TINY_RELEASE)):
        for suffix in (".py", ".ipynb"):
            nb = jupytext.read(tmp_path / "notebooks" / f"{name}{suffix}")
            assert bb.setup_cell_problem(nb, release) is None, (name, suffix)
            assert _cells(nb)[1:] == [("markdown", "# T", []), ("code", "x = 1", [])]
    assert bb.sync_notebooks(tmp_path, ["nothing*"]) == 0
    assert "matches nothing*" in capsys.readouterr().out
    (tmp_path / "_config.yml").write_text("title: no repository\n")
    assert bb.sync_notebooks(tmp_path) == 2
    assert "error: _config.yml has no 'repository' section" in capsys.readouterr().out


def test_parse_args_errors(capsys):
    assert bb.parse_args([]).profile == "ci"
    with pytest.raises(SystemExit):
        bb.parse_args(["--profile", "huge"])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        bb.parse_args(["--timeout", "0"])
    assert "--timeout must be positive, got 0.0" in capsys.readouterr().err


def test_kernel_errors(tmp_path, monkeypatch):
    with bb.kernel_environment(tmp_path) as kernel_name:
        spec = json.loads((tmp_path / "jupyter" / "kernels" / kernel_name / "kernel.json").read_text())
        assert spec["argv"][:3] == [sys.executable, "-m", "ipykernel_launcher"]
        with pytest.raises(bb.BuildError, match="cannot start the kernel 'no-such-kernel'"):
            bb.check_kernel("no-such-kernel")
        ours = sys.prefix
        monkeypatch.setattr(sys, "prefix", "/not/this/venv")  # as if the kernel ran another Python
        with pytest.raises(bb.BuildError, match=re.escape(
            f"does not run this environment: its sys.prefix is {ours}, expected /not/this/venv"
        )):
            bb.check_kernel(kernel_name)


# -------------------------------------------------------------- a real run with papermill
OK_NOTEBOOK = """\
# %% [markdown]
# # One

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = None
chapter = None

# %%
import json, os, sys
from pathlib import Path
seen = {"profile": profile, "device": device, "results_dir": results_dir, "chapter": chapter, "cwd": os.getcwd(),
        "prefix": sys.prefix, "mpl": os.environ.get("MPLBACKEND")}
Path(results_dir, "seen.json").write_text(json.dumps(seen))
"""

BAD_NOTEBOOK = """\
# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = None
chapter = None

# %%
def inner():
    raise ValueError("boom from the bad notebook")

inner()

# %%
open("never_reached", "w")
"""


def _setup_cell(release=TINY_RELEASE) -> str:
    return '# %% tags=["setup", "remove-cell"]\n' + bb.setup_cell_source(release) + "\n\n"


def _tiny_book(root: Path) -> None:
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n")
    (root / "book" / "references.bib").write_text("")
    (root / "book" / "chapters.yml").write_text(
        "chapters:\n  - {folder: a, title: A, papers: [], idea: a}\n  - {folder: b, title: B, papers: [], idea: b}\n")
    _write_config(root)
    (root / "_toc.yml").write_text(
        "format: jb-book\nroot: book/intro\nchapters:\n"
        "  - file: notebooks/a/one\n  - file: notebooks/a/bad\n  - file: notebooks/b/three\n"
    )
    for name, text in (("a/one", OK_NOTEBOOK), ("a/bad", BAD_NOTEBOOK), ("b/three", OK_NOTEBOOK)):
        (root / "notebooks" / name).parent.mkdir(parents=True, exist_ok=True)
        (root / "notebooks" / f"{name}.py").write_text(_setup_cell() + text)
    (root / "notebooks" / "a" / "figure.svg").write_text("<svg/>")


def test_build_reports_a_failing_notebook_and_goes_on(tmp_path, capsys):
    _tiny_book(tmp_path)
    environ = dict(os.environ)
    status = bb.main(["--root", str(tmp_path), "--no-html", "--only", "notebooks/a/*", "--timeout", "60"])
    out = capsys.readouterr().out
    assert status == 1
    assert dict(os.environ) == environ  # the kernel environment is restored

    # the failing notebook is named, with its traceback; the other one still ran
    assert "FAILED: notebooks/a/bad (cell In [4])" in out  # after the setup cell
    assert "ValueError: boom from the bad notebook" in out and "----> 2     raise ValueError" in out
    assert "FAILED notebooks: notebooks/a/bad" in out and "not building the HTML" in out
    assert not (tmp_path / "notebooks" / "a" / "never_reached").exists()
    build = tmp_path.resolve() / "_build"
    executed = nbformat.read(build / "executed" / "notebooks" / "a" / "bad.ipynb", as_version=4)
    assert any(o.output_type == "error" for c in executed.cells if c.cell_type == "code" for o in c.outputs)
    assert f"executed notebook (with the error): {build / 'executed' / 'notebooks' / 'a' / 'bad.ipynb'}" in out

    # the summary of the run: library, commit, device, and per notebook
    execution = json.loads((build / "execution.json").read_text())
    assert execution["profile"] == "ci" and execution["pixelweight"] and execution["git_commit"]
    assert execution["toc_notebooks"] == ["notebooks/a/one", "notebooks/a/bad", "notebooks/b/three"]
    assert {k: v["status"] for k, v in execution["notebooks"].items()} == {
        "notebooks/a/one": "ok", "notebooks/a/bad": "failed"}
    assert execution["notebooks"]["notebooks/a/one"]["records"] == 0  # seen.json is not a run record
    assert not (build / "build_info.json").exists()

    # parameters, working directory, interpreter and matplotlib backend of the kernel
    seen = json.loads((build / "results" / "a" / "one" / "seen.json").read_text())
    assert seen == {
        "profile": "ci", "device": "auto", "results_dir": str(build / "results" / "a" / "one"), "chapter": "a",
        "cwd": str(tmp_path.resolve() / "notebooks" / "a"), "prefix": sys.prefix, "mpl": bb.MPLBACKEND,
    }

    # --only: notebooks/b/three is neither run nor in the staged toc; assets are staged
    assert "--only: leaving out notebooks/b/three" in out
    assert not (build / "results" / "b").exists()
    assert bb.read_toc(build / "staging" / "_toc.yml") == ["book/intro", "notebooks/a/one", "notebooks/a/bad"]
    assert (build / "staging" / "notebooks" / "a" / "figure.svg").is_file()
    assert (build / "staging" / "book" / "intro.md").is_file()

    with (build / "timings.csv").open() as handle:
        rows = list(csv.reader(handle))
    assert [row[:2] for row in rows] == [
        ["notebook", "status"], ["notebooks/a/one", "ok"], ["notebooks/a/bad", "failed"], ["total", "1 failed"],
    ]
    assert float(rows[-1][2]) == pytest.approx(float(rows[1][2]) + float(rows[2][2]), abs=0.11)


def test_build_refuses_inconsistent_sources(tmp_path, capsys):
    _tiny_book(tmp_path)
    assert bb.main(["--root", str(tmp_path), "--only", "nothing*"]) == 2
    assert "error: --only nothing* matches none of: notebooks/a/one" in capsys.readouterr().out
    (tmp_path / "notebooks" / "b" / "three.py").unlink()
    assert bb.main(["--root", str(tmp_path), "--no-html"]) == 2
    assert "error: _toc.yml lists the notebook 'notebooks/b/three' but its jupytext source" in capsys.readouterr().out
    assert not (tmp_path / "_build" / "staging").exists()  # refused before anything ran


def test_build_fails_a_notebook_without_its_setup_cell_before_running_it(tmp_path):
    source = tmp_path / "n.py"
    source.write_text(OK_NOTEBOOK + 'open("ran", "w")\n')
    result = bb.execute_notebook(source, tmp_path / "out" / "n.ipynb", name="n", parameters={},
                                 kernel_name="unused", cwd=tmp_path, release=TINY_RELEASE)
    assert (result.notebook, result.status) == ("n", "failed")
    assert "ValueError: the notebook has no setup cell (a first code cell tagged 'setup'): run `make sync`" in result.error
    assert not (tmp_path / "ran").exists()


def test_build_fails_a_notebook_without_parameters_before_running_it(tmp_path):
    source = tmp_path / "n.py"
    source.write_text('# %%\nopen("ran", "w")\n')
    result = bb.execute_notebook(source, tmp_path / "out" / "n.ipynb", name="n", parameters={},
                                 kernel_name="unused", cwd=tmp_path)
    assert (result.notebook, result.status) == ("n", "failed")
    assert "ValueError: expected exactly one cell tagged 'parameters', found 0" in result.error
    assert not (tmp_path / "ran").exists()
