"""The table of contents, ``_toc.yml``: its pages in reading order, ``--only`` filtering."""

from __future__ import annotations

import copy
import fnmatch
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import yaml

from .common import NOTEBOOKS_DIR, PAGE_SUFFIXES, BuildError


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


def chapter_of(entry: str) -> str:
    """The chapter folder of a notebook's toc entry: ``notebooks/02_recall/01_x`` -> ``02_recall``."""
    parts = PurePosixPath(entry).parts
    if len(parts) < 3 or parts[0] != NOTEBOOKS_DIR:
        raise BuildError(f"a notebook lives in notebooks/<chapter>/, got {entry!r}")
    return parts[1]
