"""tools/build_book.py's generated parts: the landing table with the verdicts, the chapter
headers with measured times, the footer with version and commit, the "How to cite" BibTeX,
the run records a notebook leaves, the committed notebook times, and the staging of all of
it (tested on a tiny book, without running jupyter-book: the browser test checks the HTML).
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import nbformat
import pytest
import yaml
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from pixelweight.book import record_verdicts
from pixelweight.results import RunRecord, git_commit, save_record

import bookbuild as bb

ROOT = Path(__file__).resolve().parents[1]


RELEASE = bb.Release("https://github.com/o/r", "v1.0.0")
CHAPTERS = [
    bb.Chapter("00_base", "The base", (), "all pixels"),
    bb.Chapter("01_a", "Paper A", ("keyA",), "pixels A"),
    bb.Chapter("02_b", "Paper B", ("keyB", "keyC"), "pixels B"),
    bb.Chapter("03_c", "Paper C", ("keyC",), "pixels C"),
]


def _execution(**notebooks) -> dict:
    return {
        "profile": "ci", "device": "auto", "device_description": "cpu (x86_64, 2 threads)",
        "pixelweight": "1.0.0", "git_commit": "0123456789abcdef", "git_dirty": False,
        "created_utc": "2026-11-21T12:00:00+00:00", "notebooks": notebooks,
    }


def _run(seconds=100.0, records=0, verdicts=()):
    return {"status": "ok", "seconds": seconds, "records": records, "verdicts": list(verdicts)}


def _v(verdict, claim="c"):
    return {"chapter": "x", "claim": claim, "verdict": verdict}


# ----------------------------------------------------------------------------- small pieces
@pytest.mark.parametrize(("seconds", "text"), [(0.4, "0 s"), (42.4, "42 s"), (89.4, "89 s"), (90, "1.5 min"),
                                              (169, "2.8 min"), (5399, "90.0 min"), (5400, "1.5 h")])
def test_format_seconds(seconds, text):
    assert bb.format_seconds(seconds) == text


def test_chapter_of():
    assert bb.chapter_of("notebooks/02_recall/01_recall") == "02_recall"
    with pytest.raises(bb.BuildError, match="lives in notebooks/<chapter>/, got 'notebooks/x'"):
        bb.chapter_of("notebooks/x")


def test_verdict_summary_counts_in_the_order_of_the_verdicts():
    found = [_v("contradicted"), _v("supported"), _v("supported"), _v("not testable at this scale")]
    assert bb.verdict_summary(found) == "2 supported, 1 contradicted, 1 not testable at this scale (4 claims)"
    assert bb.verdict_summary([_v("inconclusive")]) == "1 inconclusive (1 claim)"


def test_verdict_summary_counts_the_primary_claims_first():
    found = [{**_v("supported"), "role": "primary"}, {**_v("inconclusive"), "role": "primary"},
             {**_v("contradicted"), "role": "secondary"}]
    assert bb.verdict_summary(found) == "primary: 1 supported, 1 inconclusive (2 of 3 claims)"


def test_verdict_summary_says_when_a_verdict_comes_from_stale_records():
    found = [{**_v("supported"), "role": "primary", "stale": "yes"}, {**_v("inconclusive"), "role": "primary"},
             {**_v("contradicted"), "role": "secondary", "stale": "yes"}]
    assert bb.verdict_summary(found) == ("primary: 1 supported, 1 inconclusive (2 of 3 claims; "
                                         "⚠ 1 from STALE records)")
    assert bb.verdict_summary([{**_v("inconclusive"), "stale": ""}]) == "1 inconclusive (1 claim)"


def test_chapters_table_rows():
    toc = ["notebooks/00_base/01_x", "notebooks/00_base/02_y", "notebooks/01_a/01_z", "notebooks/02_b/01_w"]
    built = toc[:3]  # a partial build: 02_b left out
    verdicts = {"01_a": [_v("supported"), _v("contradicted")]}
    lines = bb.chapters_table(CHAPTERS, toc, built, verdicts).splitlines()
    assert lines[:2] == ["| Chapter | Paper | Which pixels matter | Verdicts |", "|---|---|---|---|"]
    assert lines[2:] == [
        "| {doc}`The base </notebooks/00_base/01_x>` | — | all pixels | no verdict recorded yet |",
        "| {doc}`Paper A </notebooks/01_a/01_z>` | {cite:t}`keyA` | pixels A | 1 supported, 1 contradicted (2 claims) |",
        "| Paper B | {cite:t}`keyB`; {cite:t}`keyC` | pixels B | not in this partial build |",
        "| Paper C | {cite:t}`keyC` | pixels C | planned |",
    ]


def test_edition_and_footer_name_version_and_commit():
    execution = _execution()
    edition = bb.edition_markdown(execution, RELEASE)
    assert edition.startswith("**This edition** shows `pixelweight` 1.0.0 at commit "
                              "[`0123456789`](https://github.com/o/r/commit/0123456789abcdef):")
    assert "`ci` profile on cpu (x86_64, 2 threads)" in edition and "release `v1.0.0`" in edition
    footer = bb.footer_html(execution, RELEASE)
    assert 'data-pixelweight="1.0.0" data-git-commit="0123456789abcdef"' in footer
    assert '<a href="https://github.com/o/r/commit/0123456789abcdef"><code>0123456789</code></a>' in footer
    dirty = bb.footer_html(execution | {"git_dirty": True, "device_description": "cuda:0 (A<B)"}, RELEASE)
    assert "(with uncommitted changes)" in dirty and "cuda:0 (A&lt;B)" in dirty
    unknown = bb.edition_markdown(execution | {"git_commit": "unknown"}, RELEASE)
    assert "at commit `unknown`" in unknown


def test_notebook_header_times():
    entry = "notebooks/01_a/01_z"
    execution = _execution(**{entry: _run(169.0, records=3)})
    committed = {(entry, "full"): {"seconds": "1500.0", "device": "cuda:0 (NVIDIA H100)", "pixelweight": "0.9.0",
                                   "git_commit": "fedcba9876543210", "created_utc": "2026-10-01T00:00:00+00:00"}}
    header = bb.notebook_header(entry, execution, committed, RELEASE, ">=3.10", 3)
    lines = header.splitlines()
    assert lines[:2] == [":::{admonition} Needs, run time and rerun", ":class: note"] and lines[-1] == ":::"
    assert "Python ≥ 3.10, PyTorch and `pixelweight` 1.0.0" in header
    assert ("- **Time, `ci` profile** (sized for a CPU): 2.8 min on cpu (x86_64, 2 threads), measured by the "
            "build of this page.") in lines
    assert ("- **Time, `full` profile** (sized for a GPU): 25.0 min on cuda:0 (NVIDIA H100), recorded 2026-10-01 "
            "with pixelweight 0.9.0 at commit `fedcba9876`.") in lines
    assert "at release `v1.0.0`" in header and "BOOK_ARGS=\"--only '01_z'\"" in header
    assert "{download}`3 JSON records <01_z.records.json>`" in header

    bare = bb.notebook_header(entry, execution, {}, RELEASE, "", 0)
    assert "no GPU run recorded yet" in bare and "Run records" not in bare
    full = bb.notebook_header(entry, execution | {"profile": "full"}, {}, RELEASE, "", 0)
    assert "`ci` profile** (sized for a CPU): not measured yet" in full
    assert "`full` profile** (sized for a GPU): 2.8 min on cpu" in full


def test_add_header_appends_to_the_first_markdown_cell():
    nb = new_notebook(cells=[new_code_cell("setup"), new_markdown_cell("# Title\n\ntext\n"), new_markdown_cell("b")])
    bb.add_header(nb, "HEADER")
    assert nb.cells[1].source == "# Title\n\ntext\n\nHEADER" and nb.cells[2].source == "b"
    bare = new_notebook(cells=[new_code_cell("x")])
    bb.add_header(bare, "HEADER")
    assert [c.cell_type for c in bare.cells] == ["code", "markdown"]


def test_fill_generated_refuses_an_unknown_block():
    with pytest.raises(bb.BuildError, match=r"unknown generated block <!-- generated: nope --> \(known: edition,"):
        bb.fill_generated("a\n<!-- generated: nope -->\n", {})


def test_cite_papers_markdown():
    bib = {"keyA": "@misc{keyA, title={A}}", "keyB": "@misc{keyB, title={B}}", "keyC": "@misc{keyC, title={C}}"}
    text = bb.cite_papers_markdown(CHAPTERS, bib, ["notebooks/01_a/01_z"])
    assert text.split("\n\n")[0] == "**{doc}`Paper A </notebooks/01_a/01_z>`**"
    assert "**Paper B (chapter planned)**\n\n```bibtex\n@misc{keyB, title={B}}\n\n@misc{keyC, title={C}}\n```" in text
    assert "The base" not in text  # reproduces no paper


# ----------------------------------------------------------------------------- book/chapters.yml
def _chapters_file(tmp_path, data) -> Path:
    (tmp_path / "book").mkdir(exist_ok=True)
    (tmp_path / "book" / "chapters.yml").write_text(yaml.safe_dump(data))
    return tmp_path


GOOD_CHAPTER = {"folder": "01_a", "title": "T", "papers": ["k"], "idea": "i"}


@pytest.mark.parametrize(("data", "match"), [
    ({"chapters": []}, "non-empty list 'chapters'"),
    ([GOOD_CHAPTER], "non-empty list 'chapters'"),
    ({"chapters": [{**GOOD_CHAPTER, "extra": 1}]}, "chapter 1: needs exactly the keys folder, title, papers, idea"),
    ({"chapters": [{**GOOD_CHAPTER, "folder": "a/b"}]}, "folder must be a folder name under notebooks/, got 'a/b'"),
    ({"chapters": [{**GOOD_CHAPTER, "title": " "}]}, "title and idea must be non-empty strings"),
    ({"chapters": [{**GOOD_CHAPTER, "papers": "k"}]}, "papers must be a list of BibTeX keys, got 'k'"),
    ({"chapters": [GOOD_CHAPTER, GOOD_CHAPTER]}, "chapter 2: the folder '01_a' is listed twice"),
])
def test_read_chapters_errors(tmp_path, data, match):
    with pytest.raises(bb.BuildError, match=match):
        bb.read_chapters(_chapters_file(tmp_path, data))


def test_read_and_check_chapters(tmp_path):
    root = _chapters_file(tmp_path, {"chapters": [GOOD_CHAPTER]})
    chapters = bb.read_chapters(root)
    assert chapters == [bb.Chapter("01_a", "T", ("k",), "i")]
    bb.check_chapters(chapters, ["notebooks/01_a/x"], {"k"})
    with pytest.raises(bb.BuildError, match=r"lists notebooks/02_b/x, but its folder '02_b' is not a chapter"):
        bb.check_chapters(chapters, ["notebooks/02_b/x"], {"k"})
    with pytest.raises(bb.BuildError, match=r"chapter 01_a names papers not in book/references.bib: \['k'\]"):
        bb.check_chapters(chapters, [], set())


# ----------------------------------------------------------------------------- run records and verdicts
def _record(tmp_path, **provenance):
    record = RunRecord("ch-x", {"lr": 1}, {"miou": 0.5}, seed=0, wall_time_s=1.0, device="cpu")
    record.provenance.update(provenance)
    return save_record(record, tmp_path)


def test_collect_run_outputs(tmp_path):
    import pixelweight

    commit = git_commit()["commit"]
    _record(tmp_path)
    (tmp_path / "summary.json").write_text('{"not": "a record"}')  # the notebook's own file
    record_verdicts(tmp_path, "01_a", {"claim": "supported"})
    records, verdicts = bb.collect_run_outputs(tmp_path, "notebooks/01_a/01_z", commit, pixelweight.__version__)
    assert [r["name"] for r in records] == ["ch-x"]
    assert [(v["claim"], v["verdict"]) for v in verdicts] == [("claim", "supported")]
    with pytest.raises(ValueError, match=r"recorded verdicts for chapter '01_a', but it lives in notebooks/02_b/"):
        bb.collect_run_outputs(tmp_path, "notebooks/02_b/01_z", commit, pixelweight.__version__)
    with pytest.raises(ValueError, match="was made by pixelweight .* at commit .*, but the book is built from "
                                         "pixelweight 9.9 at commit abc: the kernel does not run this source tree"):
        bb.collect_run_outputs(tmp_path, "notebooks/01_a/01_z", "abc", "9.9")


def test_save_and_read_notebook_times(tmp_path, capsys):
    build = tmp_path / "_build"
    build.mkdir()
    execution = _execution(**{"notebooks/a/one": _run(12.34), "notebooks/a/bad": {**_run(), "status": "failed"}})
    (build / "execution.json").write_text(json.dumps(execution | {"profile": "full", "device_description": "cuda:0"}))
    assert bb.save_notebook_times(tmp_path) == 0
    assert "saved the times of 1 notebook(s) (full profile, cuda:0) to results/notebook_times.csv" in capsys.readouterr().out
    times = bb.read_notebook_times(tmp_path)
    assert list(times) == [("notebooks/a/one", "full")]
    assert times[("notebooks/a/one", "full")]["seconds"] == "12.3"
    # a ci run adds its rows; a newer full run replaces the older one
    (build / "execution.json").write_text(json.dumps(execution))
    assert bb.save_notebook_times(tmp_path) == 0
    assert sorted(bb.read_notebook_times(tmp_path)) == [("notebooks/a/one", "ci"), ("notebooks/a/one", "full")]
    with (tmp_path / "results" / "notebook_times.csv").open() as handle:
        assert next(csv.reader(handle)) == list(bb.NOTEBOOK_TIMES_COLUMNS)


def test_notebook_times_errors(tmp_path, capsys):
    assert bb.save_notebook_times(tmp_path) == 2
    assert "execution.json is missing (run `make book` first)" in capsys.readouterr().out
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "notebook_times.csv").write_text("notebook,seconds\n")
    with pytest.raises(bb.BuildError, match="the columns must be notebook, profile, seconds"):
        bb.read_notebook_times(tmp_path)


# ----------------------------------------------------------------------------- staging a tiny book
def _tiny_book(root: Path) -> dict:
    (root / "book").mkdir()
    (root / "book" / "intro.md").write_text("# Intro\n\n<!-- generated: edition -->\n\n<!-- generated: chapters-table -->\n")
    (root / "book" / "cite.md").write_text("# Cite\n\n<!-- generated: cite-book -->\n\n<!-- generated: cite-papers -->\n")
    (root / "book" / "references.bib").write_text("@misc{keyA,\n  title = {A},\n}\n")
    (root / "book" / "chapters.yml").write_text(yaml.safe_dump({"chapters": [
        {"folder": "01_a", "title": "Paper A", "papers": ["keyA"], "idea": "pixels A"},
        {"folder": "02_b", "title": "Paper B", "papers": [], "idea": "pixels B"}]}))
    (root / "_config.yml").write_text(yaml.safe_dump({
        "title": "tiny", "copyright": "2031", "repository": {"url": RELEASE.url, "branch": RELEASE.tag},
        "html": {"extra_footer": ""}}))
    (root / "CITATION.cff").write_text(yaml.safe_dump({
        "cff-version": "1.2.0", "title": "Tiny", "version": "1.0.0", "authors": [{"name": "Us"}]}))
    (root / "pyproject.toml").write_text('[project]\nname = "t"\nversion = "1.0.0"\nrequires-python = ">=3.10"\n')
    toc = {"format": "jb-book", "root": "book/intro",
           "chapters": [{"file": "notebooks/01_a/01_z"}, {"file": "book/cite"}]}
    (root / "_toc.yml").write_text(yaml.safe_dump(toc))
    (root / "notebooks" / "01_a").mkdir(parents=True)
    (root / "notebooks" / "01_a" / "01_z.py").write_text("# %%\nx = 1\n")
    (root / "notebooks" / "01_a" / "figure.svg").write_text("<svg/>")
    executed = root / "_build" / "executed" / "notebooks" / "01_a" / "01_z.ipynb"
    executed.parent.mkdir(parents=True)
    injected = new_code_cell('results_dir = "/build/machine/path"', metadata={"tags": ["injected-parameters"]})
    nbformat.write(new_notebook(cells=[new_code_cell("setup"), new_markdown_cell("# Z"), injected]), executed)
    bb.records_file(executed).write_text('{"records": []}')
    return toc


def test_stage_generated(tmp_path):
    toc = _tiny_book(tmp_path)
    staging = tmp_path / "_build" / "staging"
    pages, notebooks = ["book/intro", "book/cite"], ["notebooks/01_a/01_z"]
    bb.stage_sources(tmp_path, staging, toc, pages, notebooks)
    execution = _execution(**{notebooks[0]: _run(50.0, records=2, verdicts=[_v("supported")])})
    bb.stage_generated(tmp_path, staging, pages=pages, notebooks=notebooks, toc_notebooks=notebooks,
                       executed_dir=tmp_path / "_build" / "executed", execution=execution,
                       config=bb.read_config(tmp_path), release=RELEASE,
                       chapters=bb.read_chapters(tmp_path), bib=bb.read_bib(tmp_path))

    config = yaml.safe_load((staging / "_config.yml").read_text())
    assert config["html"]["extra_footer"] == bb.footer_html(execution, RELEASE)
    assert config["repository"] == {"url": RELEASE.url, "branch": RELEASE.tag}
    intro = (staging / "book" / "intro.md").read_text()
    assert "<!-- generated" not in intro and bb.edition_markdown(execution, RELEASE) in intro
    assert "| {doc}`Paper A </notebooks/01_a/01_z>` | {cite:t}`keyA` | pixels A | 1 supported (1 claim) |" in intro
    assert "| Paper B | — | pixels B | planned |" in intro
    cite = (staging / "book" / "cite.md").read_text()
    assert "```bibtex\n@software{whichpixelsmatter2031," in cite  # year from the copyright
    assert "```bibtex\n@misc{keyA,\n  title = {A},\n}\n```" in cite
    nb = nbformat.read(staging / "notebooks" / "01_a" / "01_z.ipynb", as_version=4)
    assert nb.cells[1].source.startswith("# Z\n\n:::{admonition} Needs, run time and rerun")
    assert "{download}`2 JSON records <01_z.records.json>`" in nb.cells[1].source
    assert nb.cells[2].metadata["tags"] == ["injected-parameters", "remove-cell"]
    assert (staging / "notebooks" / "01_a" / "01_z.records.json").read_text() == '{"records": []}'
    assert (staging / "notebooks" / "01_a" / "figure.svg").is_file()
    # the repository's own files are untouched
    assert "<!-- generated: edition -->" in (tmp_path / "book" / "intro.md").read_text()


def test_main_html_only_needs_an_execution(tmp_path, capsys):
    _tiny_book(tmp_path)
    assert bb.main(["--root", str(tmp_path), "--html-only"]) == 2
    assert "execution.json is missing (run `make book` first)" in capsys.readouterr().out
    (tmp_path / "_build" / "execution.json").write_text(json.dumps(_execution()))
    assert bb.main(["--root", str(tmp_path), "--html-only"]) == 2
    assert "--html-only: the last run did not execute notebooks/01_a/01_z" in capsys.readouterr().out


def test_main_refuses_a_notebook_folder_missing_from_chapters(tmp_path, capsys):
    toc = _tiny_book(tmp_path)
    toc["chapters"].append({"file": "notebooks/09_new/01_n"})
    (tmp_path / "_toc.yml").write_text(yaml.safe_dump(toc))
    (tmp_path / "notebooks" / "09_new").mkdir()
    (tmp_path / "notebooks" / "09_new" / "01_n.py").write_text("# %%\n")
    assert bb.main(["--root", str(tmp_path), "--no-html"]) == 2
    assert "its folder '09_new' is not a chapter of book/chapters.yml" in capsys.readouterr().out


def test_parse_args_excludes_html_only_with_no_html(capsys):
    with pytest.raises(SystemExit):
        bb.parse_args(["--html-only", "--no-html"])
    assert "--html-only and --no-html exclude each other" in capsys.readouterr().err


def test_a_partial_book_fails_on_every_warning_but_its_links_to_the_notebooks_left_out():
    left_out = ["notebooks/02_recall/02_experiments"]
    warnings = [
        "/src/recall.py:docstring of recall_loss:60: WARNING: unknown document: '/notebooks/02_recall/02_experiments'",
        "/src/weak.py:docstring of WeakDigitScenes:38: WARNING: unknown document: '/notebooks/05_spectral/03_weak'",
        "docstring of Setup.BUDGET_DERIVED:2: WARNING: py:mod reference target not found: pixelweight.chapters._trace",
        "/src/zoom.py:docstring of pixelweight.chapters.zoom:5: ERROR: Unexpected indentation.",
    ]
    assert bb.render.unexpected_warnings(warnings, left_out) == warnings[1:]
    assert bb.render.unexpected_warnings(warnings[:1], left_out) == []


def test_run_jupyter_book_echoes_the_output_and_collects_the_warnings(tmp_path, capsys):
    lines = ["building",
             "\x1b[91m/a.py:docstring of f:2: WARNING: unknown document: '/x'\x1b[39;49;00m",
             "WARNING:root:a library's log line, not Sphinx's",
             'b.md:3: ERROR: Unknown directive type "foo".']
    script = f"import sys; [print(line, file=sys.stderr) for line in {lines!r}]; sys.exit(3)"
    status, warnings = bb.render.run_jupyter_book([sys.executable, "-c", script], tmp_path)
    assert status == 3
    assert warnings == ["/a.py:docstring of f:2: WARNING: unknown document: '/x'",
                        'b.md:3: ERROR: Unknown directive type "foo".']
    assert "building" in capsys.readouterr().out
