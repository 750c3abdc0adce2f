"""The book as a citable artifact: CITATION.cff (valid CFF 1.2.0), .zenodo.json, the
bibliography and the chapters' citations agree with each other and with the configuration.

A release changes the version in pyproject.toml, CITATION.cff, .zenodo.json and the tag in
_config.yml together; these tests fail until all four agree.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import pytest
import yaml

import bookbuild as bb

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = Path(__file__).resolve().parent / "schemas" / "citation-file-format-1.2.0.schema.json"


CONFIG = bb.read_config(ROOT)
RELEASE = bb.release_of(CONFIG)
VERSION = bb.project_metadata(ROOT)["version"]
CITATION = bb.read_citation(ROOT)
ZENODO = json.loads((ROOT / ".zenodo.json").read_text(encoding="utf-8"))
BIB = bb.read_bib(ROOT)
CHAPTERS = bb.read_chapters(ROOT)
TOC_ENTRIES = bb.read_toc(ROOT / "_toc.yml")
TOC_NOTEBOOKS = [e for e in TOC_ENTRIES if bb.is_notebook(e)]
_CITE = re.compile(r"\{cite(?::[a-z]+)?\}`([^`]+)`")


def _cited_keys(text: str) -> set[str]:
    return {key.strip() for group in _CITE.findall(text) for key in group.split(",")}


# ----------------------------------------------------------------------------- CITATION.cff
def test_citation_cff_is_valid_cff_1_2_0():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    assert schema["$id"] == "https://citation-file-format.github.io/1.2.0/schema.json"
    validator = jsonschema.Draft7Validator(schema, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
    errors = [f"{'/'.join(map(str, e.path)) or '(top)'}: {e.message}" for e in validator.iter_errors(CITATION)]
    assert not errors, "CITATION.cff is not valid CFF 1.2.0:\n" + "\n".join(errors)


def test_the_schema_catches_a_broken_citation():
    schema = json.loads(SCHEMA.read_text(encoding="utf-8"))
    broken = {k: v for k, v in CITATION.items() if k != "authors"} | {"version": [1]}
    messages = {e.message for e in jsonschema.Draft7Validator(schema).iter_errors(broken)}
    assert "'authors' is a required property" in messages


def test_versions_and_repository_agree():
    assert RELEASE.tag == f"v{VERSION}", (
        f"_config.yml's repository.branch is {RELEASE.tag}, the package version is {VERSION}: "
        f"set branch: v{VERSION} and run `make sync`")
    assert str(CITATION["version"]) == VERSION
    assert ZENODO["version"] == VERSION
    assert CITATION["repository-code"] == RELEASE.url
    assert RELEASE.url in {r["identifier"] for r in ZENODO["related_identifiers"]}


def test_zenodo_metadata_matches_the_citation():
    assert {"title", "upload_type", "description", "creators", "license", "version"} <= set(ZENODO)
    assert ZENODO["upload_type"] == "software"
    assert ZENODO["title"] == CITATION["title"]
    assert ZENODO["license"] == CITATION["license"]
    assert [c["name"] for c in ZENODO["creators"]] == [
        a.get("name") or f"{a['family-names']}, {a['given-names']}" for a in CITATION["authors"]]
    assert ZENODO["keywords"] == CITATION["keywords"]


def test_zenodo_references_every_reproduced_paper_on_arxiv():
    eprints = set()
    for chapter in CHAPTERS:
        for key in chapter.papers:
            match = re.search(r"eprint\s*=\s*\{([^}]+)\}", BIB[key])
            if match:
                eprints.add(f"arXiv:{match.group(1)}")
    listed = {r["identifier"] for r in ZENODO["related_identifiers"] if r["scheme"] == "arxiv"}
    assert listed == eprints
    assert all(r["relation"] == "references" for r in ZENODO["related_identifiers"] if r["scheme"] == "arxiv")


def test_book_bibtex_is_generated_from_the_citation():
    from pybtex.database import parse_string

    text = bb.book_bibtex(CITATION, "2026")
    entry = parse_string(text, "bibtex").entries["whichpixelsmatter2026"]
    assert entry.type == "software"
    assert entry.fields["version"] == VERSION
    assert entry.fields["url"] == RELEASE.url
    assert entry.fields["title"] == "{" + CITATION["title"] + "}"
    assert f"release v{VERSION}" in entry.fields["note"]


def test_book_bibtex_authors_and_doi():
    from pybtex.database import parse_string

    citation = {"title": "T", "version": "1.2.3", "doi": "10.5281/zenodo.1", "url": "https://x.org",
                "authors": [{"family-names": "Bulò", "given-names": "Samuel", "name-particle": "Rota"},
                            {"family-names": "Kira"}, {"name": "A team"}]}
    text = bb.book_bibtex(citation, "2030")
    entry = parse_string(text, "bibtex").entries["whichpixelsmatter2030"]
    assert [str(p) for p in entry.persons["author"]] == ["Rota Bulò, Samuel", "Kira", "{A team}"]
    assert (entry.fields["doi"], entry.fields["url"], entry.fields["year"]) == ("10.5281/zenodo.1", "https://x.org", "2030")
    with pytest.raises(bb.BuildError, match="CITATION.cff has no version"):
        bb.book_bibtex({"title": "T", "authors": [{"name": "a"}]}, "2030")


# ----------------------------------------------------------------------------- references.bib
def test_references_bib_parses_and_the_build_sees_every_entry():
    from pybtex.database import parse_file

    data = parse_file(str(ROOT / "book" / "references.bib"), "bibtex")
    assert list(data.entries) == list(BIB)
    for key, text in BIB.items():
        assert text.startswith("@") and text.endswith("}") and f"{{{key}," in text


def test_bib_entries_parser():
    text = ("% a comment line\n@comment{ignored, {x}}\n@string{ieee = {IEEE}}\n"
            "@article{a1,\n  title = {A {Nested} Title},\n  year = {2020},\n}\n\n"
            "@misc{b2, note = {x}}\n")
    assert bb.bib_entries(text) == {
        "a1": "@article{a1,\n  title = {A {Nested} Title},\n  year = {2020},\n}",
        "b2": "@misc{b2, note = {x}}",
    }
    with pytest.raises(bb.BuildError, match=r"line 1: unbalanced braces"):
        bb.bib_entries("@misc{a, title = {x}\n")
    with pytest.raises(bb.BuildError, match="line 2: duplicate key a"):
        bb.bib_entries("@misc{a, x = {1}}\n@misc{a, x = {2}}\n")
    with pytest.raises(bb.BuildError, match="line 1: an entry without a key"):
        bb.bib_entries("@misc{, x = {1}}\n")


# ----------------------------------------------------------------------------- chapters cite
def test_every_toc_notebook_belongs_to_a_chapter_and_every_paper_is_in_the_bib():
    bb.check_chapters(CHAPTERS, TOC_NOTEBOOKS, set(BIB))  # raises BuildError naming the problem
    assert [c.folder for c in CHAPTERS][0] == "00_testbed"
    assert sum(1 for c in CHAPTERS if c.papers) == 5, "the book reproduces five papers"


@pytest.mark.parametrize("chapter", [c for c in CHAPTERS if c.papers], ids=lambda c: c.folder)
def test_written_chapters_cite_their_papers(chapter):
    notebooks = [e for e in TOC_NOTEBOOKS if bb.chapter_of(e) == chapter.folder]
    if not notebooks:
        return  # planned: nothing to check yet
    cited = set().union(*(_cited_keys((ROOT / f"{e}.py").read_text(encoding="utf-8")) for e in notebooks))
    missing = [k for k in chapter.papers if k not in cited]
    assert not missing, (f"the chapter {chapter.folder} reproduces {missing} but its notebooks never cite "
                         "them: write {cite:t}`key` or {cite:p}`key` where the paper is introduced")


@pytest.mark.parametrize("entry", TOC_ENTRIES)
def test_every_citation_is_in_the_bib(entry):
    text = bb.page_source(ROOT, entry).read_text(encoding="utf-8")
    unknown = sorted(_cited_keys(text) - set(BIB))
    assert not unknown, f"{entry} cites keys that book/references.bib lacks: {unknown}"


def test_cite_pattern():
    assert _cited_keys("see {cite:p}`a, b` and {cite:t}`c` or {cite}`d`; not `e`") == {"a", "b", "c", "d"}


def test_prose_pages_hold_their_generated_blocks():
    intro = (ROOT / "book" / "intro.md").read_text(encoding="utf-8")
    cite = (ROOT / "book" / "how_to_cite.md").read_text(encoding="utf-8")
    for text, names in ((intro, ["edition", "chapters-table"]), (cite, ["cite-book", "cite-papers"])):
        assert [m for m in bb.generated._MARKER_RE.findall(text)] == names
    assert "book/how_to_cite" in TOC_ENTRIES and "book/references" in TOC_ENTRIES
    assert "{bibliography}" in (ROOT / "book" / "references.md").read_text(encoding="utf-8")
    assert yaml.safe_load((ROOT / "_config.yml").read_text())["bibtex_bibfiles"] == ["book/references.bib"]
