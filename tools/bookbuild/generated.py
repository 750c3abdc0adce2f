"""The book's computed parts, written into the staging tree: every page's footer, the
landing page's edition line and chapter table, the scorecard, "How to cite", and each
notebook's header (needs, run time, rerun, run records)."""

from __future__ import annotations

import copy
import html
import re
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import yaml

from .common import CITATION_FILE, CONFIG_FILE, BuildError, short_sha
from .config import Chapter, Release, project_metadata, read_citation
from .execution import records_file
from .timings import format_seconds, read_notebook_times
from .toc import chapter_of, page_source


_MARKER_RE = re.compile(r"<!-- generated: ([a-z][a-z0-9-]*) -->")


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


def verdict_summary(verdicts: list[dict]) -> str:
    """The landing page's count of a chapter's verdicts, primary claims (the paper's headline,
    recorded with ``role: primary``) first: ``primary: 1 supported, 1 inconclusive (2 of 5
    claims)``; a chapter without primary claims (the testbed) counts all of them, e.g.
    ``1 supported (1 claim)``. Counted in the order of :data:`pixelweight.stats.VERDICTS`."""
    from pixelweight.stats import VERDICTS

    def count(entries: list[dict]) -> str:
        return ", ".join(f"{n} {v}" for v, n in ((v, sum(e["verdict"] == v for e in entries)) for v in VERDICTS) if n)

    total = f"{len(verdicts)} claim{'s' if len(verdicts) != 1 else ''}"
    primary = [e for e in verdicts if e.get("role") == "primary"]
    counted = primary or verdicts
    stale = sum(bool(e.get("stale")) for e in counted)
    warning = f"; ⚠ {stale} from STALE records" if stale else ""
    if primary:
        return f"primary: {count(primary)} ({len(primary)} of {total}{warning})"
    return f"{count(verdicts)} ({total}{warning})"


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
    the budget and scale it was tested at, the effect with its interval and the verdict's label.

    The fields come from the verdicts a notebook recorded through
    :meth:`pixelweight.claims.ClaimsTable.record`; a verdict recorded without them shows "—".
    """
    from pixelweight.claims import verdict_badge

    def cell(text: str) -> str:
        return text.replace("|", "\\|")

    lines = ["| Paper | Claim | Source | Budget and scale | Effect [95% CI] | Verdict |", "|---|---|---|---|---|---|"]
    for chapter in chapters:
        papers = "; ".join(f"{{cite:t}}`{key}`" for key in chapter.papers) or "testbed"
        for entry in (e for e in built if chapter_of(e) == chapter.folder):
            for line in execution["notebooks"][entry]["verdicts"]:
                title = f"{line['label']} {line['claim']}" if line.get("label") else line["claim"]
                if line.get("role") == "primary":
                    title = f"**{title}**"  # the paper's headline claims, counted on the landing page
                anchor = f"#{line['section']}" if line.get("section") else ""
                claim = f"[{cell(title)}](../{entry}.ipynb{anchor})"  # from book/scorecard.md
                source = f"[{line['source']}]" if line.get("source") else "—"
                lines.append(" | ".join([
                    f"| {papers}", claim, source, cell("; ".join(x for x in (line.get("budget", "—"), line.get("scale")) if x)), cell(line.get("effect", "—")),
                    verdict_badge(line["verdict"]) + (f" ({cell(line['design'])})" if line.get("design") else "")
                    + (" **⚠ STALE records**" if line.get("stale") else "") + " |",
                ]))
    if len(lines) == 2:
        return "No notebook of this build recorded a verdict yet."
    return "\n".join(lines)


def edition_markdown(execution: dict, release: Release) -> str:
    """The landing page's line saying which library version and commit the book shows."""
    sha = execution["git_commit"]
    commit = f"[`{short_sha(sha)}`]({release.commit_url(sha)})" if sha != "unknown" else "`unknown`"
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
    commit = (f'<a href="{html.escape(release.commit_url(sha))}"><code>{html.escape(short_sha(sha))}</code></a>'
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
                    f"`{short_sha(row['git_commit'])}`")
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
            f"device, wall time, pixelweight {execution['pixelweight']}, commit `{short_sha(execution['git_commit'])}`)."
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
