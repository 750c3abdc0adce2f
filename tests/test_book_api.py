"""The API reference in the built book, and the links between it and the chapters.

Part 1 (unit, no book needed) checks ``book/_ext/api_links.py``, the extension that links a
chapter's inline code literals (``RecallLoss``, ``recall_loss(logits, target)``) to their API
entries. Part 2 reads the HTML that ``make book`` built (like ``tests/test_book_browser.py``
it is marked ``browser`` and FAILS without a complete build; it needs no Chromium):

- every API page renders its docstrings: no raw reST role (``:func:``, ``:math:``, ``:doc:``)
  is left in the text, and the math is in MathJax's delimiters;
- every public loss and metric has its entry (anchor ``pixelweight.<module>.<name>``) with a
  rendered example, and every loss's entry links to a chapter page of the build;
- on every chapter page, each name a code cell imports from ``pixelweight`` links to its
  API entry (sphinx-codeautolink), and every link into ``book/api/`` lands on an anchor
  that exists.
"""

from __future__ import annotations

import html
import importlib.util
import inspect
import re
from collections import namedtuple
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import torch

import pixelweight.losses
import pixelweight.metrics
import bookbuild
from helpers.build_book import complete_build_info

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "_build"
HTML = BUILD / "html"
TOC_ENTRIES = bookbuild.read_toc(ROOT / "_toc.yml")
TOC_NOTEBOOKS = [e for e in TOC_ENTRIES if e.startswith("notebooks/")]


def _public(module) -> list[str]:
    return [n for n in module.__all__
            if inspect.isfunction(getattr(module, n)) or inspect.isclass(getattr(module, n))]


LOSSES = _public(pixelweight.losses)
# the losses proper (nn.Module classes and functions of (logits, target, ...)): each links to a chapter
LOSS_NAMES = [n for n in LOSSES if (issubclass(getattr(pixelweight.losses, n), torch.nn.Module)
                                    if inspect.isclass(getattr(pixelweight.losses, n))
                                    else list(inspect.signature(getattr(pixelweight.losses, n)).parameters)[:2]
                                    == ["logits", "target"])]
METRICS = _public(pixelweight.metrics)


# ------------------------------------------------------------------ Part 1: the extension
def _load_extension():
    spec = importlib.util.spec_from_file_location("api_links", ROOT / "book" / "_ext" / "api_links.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


Entry = namedtuple("Entry", "docname node_id objtype aliased")


class _Domain:
    objects = {
        "pixelweight.losses.RecallLoss": Entry("book/api/losses", "pixelweight.losses.RecallLoss", "class", False),
        "pixelweight.losses.recall_loss": Entry("book/api/losses", "pixelweight.losses.recall_loss", "function", False),
        "pixelweight.losses.RecallLoss.reset_weights": Entry("book/api/losses", "x", "method", False),
        "pixelweight.train.train": Entry("book/api/train", "pixelweight.train.train", "function", False),
        "pixelweight.book.table": Entry("book/api/book", "pixelweight.book.table", "function", False),
        "pixelweight.train": Entry("book/api/train", "module-pixelweight.train", "module", False),
        "pixelweight.a.twice": Entry("book/api/a", "pixelweight.a.twice", "function", False),
        "pixelweight.b.twice": Entry("book/api/b", "pixelweight.b.twice", "function", False),
        "pixelweight.losses._private": Entry("book/api/losses", "y", "function", False),
        "torch.nn.Module": Entry("elsewhere", "z", "class", False),
    }


@pytest.mark.parametrize(("text", "target"), [
    ("RecallLoss", "pixelweight.losses.RecallLoss"),                     # a class
    ("RecallLoss(num_classes, momentum=0.5)", "pixelweight.losses.RecallLoss"),
    ("recall_loss", "pixelweight.losses.recall_loss"),                   # a function with _
    ("recall_loss(logits, target)", "pixelweight.losses.recall_loss"),
    ("pixelweight.losses.recall_loss", "pixelweight.losses.recall_loss"),  # dotted
    ("train(config)", "pixelweight.train.train"),                        # a call
    ("train", None),                # a bare word: stays a word (the split, the verb)
    ("table", None),
    ("twice(x)", None),             # two objects of that name: ambiguous
    ("F.cross_entropy(weight=w)", None),                                 # someone else's
    ("splits.train", None),
    ("pixelweight.losses.nothing", None),
    ("_private", None),
    ("Module", None),
    ("reset_weights()", None),      # methods are not module-level objects
    ("full", None),
    ('"train"', None),
    ("1 - recall_c", None),
])
def test_api_links_target(text, target):
    ext = _load_extension()
    full, short = ext._index(_Domain())
    assert ext._target(text, full, short) == target


# ------------------------------------------------------------------ Part 2: the built book
@pytest.fixture(scope="module")
def book() -> dict:
    """``_build/build_info.json`` of a complete, current build (else the test fails)."""
    return complete_build_info()


def _read(page: str) -> str:
    return (HTML / f"{page}.html").read_text(encoding="utf-8")


def _anchors(text: str) -> set[str]:
    return set(re.findall(r'\sid="([^"]+)"', text))


def _entry(text: str, anchor: str) -> str:
    """The HTML of one autodoc entry: from its ``<dt id=anchor>`` to the end of its ``<dl>``."""
    start = text.index(f'id="{anchor}"')
    end = text.find('<dl class="py ', start)  # the next top-level entry (nested ones are <dl>s too)
    return text[start:end if end != -1 else len(text)]


def _main(text: str) -> str:
    """The article of a page (not the navigation, which names every page)."""
    match = re.search(r'<article class="bd-article">(.*?)</article>', text, re.S)
    assert match, "no <article> in the page"
    return match.group(1)


API_PAGES = [e for e in TOC_ENTRIES if e.startswith("book/api/")]


@pytest.mark.browser
@pytest.mark.parametrize("page", API_PAGES)
def test_api_page_is_rendered(page, book):
    article = _main(_read(page))
    text = re.sub(r"<[^>]+>", "", article)
    raw = re.findall(r":(?:func|class|meth|mod|attr|data|math|doc|obj):`", html.unescape(text))
    assert not raw, f"{page}: reST roles left as text: {raw[:5]}"
    if page != "book/api/index":
        assert 'class="py ' in article, f"{page}: no autodoc entry rendered"


@pytest.mark.browser
@pytest.mark.parametrize(("module", "names"), [("losses", LOSSES), ("metrics", METRICS)])
def test_every_loss_and_metric_has_an_entry_with_an_example(module, names, book):
    text = _read(f"book/api/{module}")
    anchors = _anchors(text)
    for name in names:
        anchor = f"pixelweight.{module}.{name}"
        assert anchor in anchors, f"book/api/{module}.html has no entry {anchor}"
        entry = _entry(text, anchor)
        assert re.search(r'<span class="gp">&gt;&gt;&gt; </span>', entry), f"{anchor}: no rendered example"


@pytest.mark.browser
@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_entry_links_to_its_chapter(name, book):
    text = _read("book/api/losses")
    entry = _entry(text, f"pixelweight.losses.{name}")
    hrefs = re.findall(r'href="((?:\.\./)+notebooks/[^"#]+\.html)[^"]*"', entry)
    assert hrefs, f"the API entry of pixelweight.losses.{name} links to no chapter"
    for href in hrefs:
        target = (HTML / "book" / "api" / href).resolve()
        assert target.is_file(), f"pixelweight.losses.{name} links to {href}, which the build lacks"


_IMPORT = re.compile(r"^from pixelweight\.(\w+) import (?:\(([^)]*)\)|(.*))$", re.M)


def _imported_names(code: str) -> list[tuple[str, str]]:
    """``(module, name)`` of every ``from pixelweight.<module> import <names>`` of a notebook's
    shown code cells (a jupytext py:percent source; cells tagged ``remove-cell`` or
    ``remove-input`` are not on the page)."""
    found = []
    for cell in re.split(r"^(?=# %%)", code, flags=re.M):
        header = cell.split("\n", 1)[0]
        if "remove-cell" in header or "remove-input" in header or "[markdown]" in header:
            continue
        for module, grouped, single in _IMPORT.findall(cell):
            for name in re.split(r"[,\s]+", re.sub(r"#.*", "", grouped or single)):
                if name:
                    found.append((module, name))
    return found


def test_imported_names_parser():
    code = ('# %% tags=["setup", "remove-cell"]\nfrom pixelweight.train import resolve_device\n\n'
            "# %%\nfrom pixelweight.losses import (\n    cross_entropy,  # CE\n    recall_loss,\n)\n"
            "from pixelweight.book import glue, table\n")
    assert _imported_names(code) == [("losses", "cross_entropy"), ("losses", "recall_loss"),
                                     ("book", "glue"), ("book", "table")]


@pytest.mark.browser
@pytest.mark.parametrize("notebook", TOC_NOTEBOOKS)
def test_chapter_code_links_to_the_api(notebook, book):
    text = _read(notebook)
    source = (ROOT / f"{notebook}.py").read_text(encoding="utf-8")
    links = re.findall(r'<a class="sphinx-codeautolink-a" href="([^"]+)"', text)
    targets = {urlsplit(h).fragment for h in links}
    for module, name in _imported_names(source):
        # an imported object links to its entry; an imported module (a chapter module) to its
        # module entry
        assert {f"pixelweight.{module}.{name}", f"module-pixelweight.{module}.{name}"} & targets, (
            f"{notebook}: {name} (imported from pixelweight.{module}) does not link to its API entry")
    # every link into the API reference lands on an anchor of the build
    api_links = [h for h in re.findall(r'href="([^"]+)"', _main(text)) if "book/api/" in h]
    assert api_links, f"{notebook}: no link into the API reference"
    for href in set(api_links):
        parts = urlsplit(href)
        page = (HTML / notebook).parent / parts.path
        assert page.resolve().is_file(), f"{notebook}: {href} is not a page of the build"
        assert parts.fragment and parts.fragment in _anchors(page.resolve().read_text(encoding="utf-8")), (
            f"{notebook}: {href} points at no entry")


PUBLIC_CLASSES = sorted({name for module in (pixelweight.losses, pixelweight.metrics)
                         for name in _public(module) if inspect.isclass(getattr(module, name))}
                        | {"DigitScenes", "SalientDigits", "ClutteredDigits", "UNet", "SmallCNN"})
_INLINE = re.compile(r'(<a [^>]*>)?<code class="docutils literal notranslate"><span class="pre">(\w+)</span></code>')


@pytest.mark.browser
@pytest.mark.parametrize("notebook", TOC_NOTEBOOKS)
def test_chapter_prose_names_link_to_the_api(notebook, book):
    """An inline ``RecallLoss`` in a chapter's prose (not in a heading) links to its entry."""
    article = re.sub(r"<h[1-6][^>]*>.*?</h[1-6]>", "", _main(_read(notebook)), flags=re.S)
    for opening, name in _INLINE.findall(article):
        if name in PUBLIC_CLASSES:
            assert "api-link" in opening, f"{notebook}: the prose's `{name}` does not link to its API entry"
