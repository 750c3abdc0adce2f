"""The book's configuration: ``_config.yml`` (the repository and the release),
``pyproject.toml``, ``book/chapters.yml``, ``book/references.bib``, ``CITATION.cff``, and
:class:`Book`, all of them read and checked together."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import yaml

from .common import BIB_FILE, CHAPTERS_FILE, CITATION_FILE, CONFIG_FILE, BuildError
from .toc import chapter_of


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


def _read_yaml_mapping(path: Path, missing: str, what: str) -> dict:
    """The YAML mapping in ``path``; :class:`BuildError` (``missing`` / "``what`` must be a
    YAML mapping") when it is absent or something else."""
    if not path.is_file():
        raise BuildError(missing)
    with path.open(encoding="utf-8") as handle:
        data = yaml.safe_load(handle)
    if not isinstance(data, dict):
        raise BuildError(f"{what} must be a YAML mapping")
    return data


def read_config(root: Path) -> dict:
    """``_config.yml`` as a dict."""
    path = root / CONFIG_FILE
    return _read_yaml_mapping(path, f"no book configuration at {path}", str(path))


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
    return _read_yaml_mapping(path, f"no {CITATION_FILE} at {path}", CITATION_FILE)


@dataclass
class Book:
    """The book as its sources describe it, read and checked (:meth:`load`).

    ``toc`` is ``_toc.yml`` as a mapping (filtered for ``--only``: the staged toc),
    ``entries`` every page of the complete toc in reading order, ``notebooks`` the notebooks
    this build executes and renders (all of the toc's, or the ``--only`` selection).
    """

    root: Path
    toc: dict
    entries: list[str]
    notebooks: list[str]
    config: dict
    release: Release
    chapters: list[Chapter]
    bib: dict[str, str]

    @property
    def toc_notebooks(self) -> list[str]:
        """Every notebook of ``_toc.yml``, in reading order."""
        from .toc import is_notebook

        return [e for e in self.entries if is_notebook(e)]

    @property
    def pages(self) -> list[str]:
        """The prose pages (every toc entry outside ``notebooks/``)."""
        from .toc import is_notebook

        return [e for e in self.entries if not is_notebook(e)]

    @property
    def skipped(self) -> list[str]:
        """The notebooks of the toc that ``--only`` leaves out."""
        return [e for e in self.toc_notebooks if e not in self.notebooks]

    @property
    def partial(self) -> bool:
        """True when ``--only`` left notebooks out (Sphinx warnings are then not errors)."""
        return self.notebooks != self.toc_notebooks

    @property
    def built_entries(self) -> list[str]:
        """The pages of this build, in reading order: the prose pages and :attr:`notebooks`."""
        return [e for e in self.entries if e in self.pages or e in self.notebooks]

    @classmethod
    def load(cls, root: Path, only: list[str] | None = None) -> Book:
        """Read ``_toc.yml`` (every entry must have its source), ``_config.yml``,
        ``book/chapters.yml`` (every notebook's folder must be a chapter) and
        ``book/references.bib``; ``only`` (the ``--only`` globs) selects the notebooks.
        Raises :class:`BuildError` (or ``OSError``, ``yaml.YAMLError``) saying what to fix."""
        from .toc import filter_toc, is_notebook, matches, page_source, toc_entries

        with (root / "_toc.yml").open(encoding="utf-8") as handle:
            toc = yaml.safe_load(handle)
        entries = toc_entries(toc)
        for entry in entries:
            page_source(root, entry)  # every entry must have its source
        config = read_config(root)
        release = release_of(config)
        chapters = read_chapters(root)
        bib = read_bib(root)
        notebooks = [e for e in entries if is_notebook(e)]
        check_chapters(chapters, notebooks, set(bib))
        if only:
            selected = [e for e in notebooks if matches(e, only)]
            if not selected:
                raise BuildError(f"--only {' '.join(only)} matches none of: {', '.join(notebooks)}")
            toc = filter_toc(toc, lambda e: not is_notebook(e) or e in selected)
            notebooks = selected
        return cls(root, toc, entries, notebooks, config, release, chapters, bib)
