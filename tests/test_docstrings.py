"""The library's docstrings as documentation: runnable examples, links into the book, API pages.

1. Every public loss, metric, sampling and spectral function (each function or class of
   ``pixelweight.losses.__all__``, ``pixelweight.metrics.__all__``, ``pixelweight.sampling.__all__``
   and ``pixelweight.spectral.__all__``) has a numpydoc ``Examples`` section with ``>>>`` lines.
2. The doctests of the modules that define them run here (``doctest.DocTestFinder`` /
   ``DocTestRunner``, ``NORMALIZE_WHITESPACE | ELLIPSIS``, fresh globals: every example
   imports what it uses, as a reader of ``help()`` would); a failure shows the example, what
   it expected and what it got. The runner itself is checked on a wrong expected output.
3. Every loss links to the book chapter that derives or trains it, with a ``:doc:`` reference
   whose target is a page of ``_toc.yml``.
4. The API reference (``book/api/``) has one page per public module, listed in ``_toc.yml``,
   and each page documents every public name of its module.
"""

from __future__ import annotations

import doctest
import importlib
import inspect
import pkgutil
import re
import types
from pathlib import Path

import pytest
import torch

import pixelweight
import pixelweight.losses
import pixelweight.metrics
import pixelweight.sampling
import pixelweight.spectral
import bookbuild

ROOT = Path(__file__).resolve().parents[1]
TOC_ENTRIES = bookbuild.read_toc(ROOT / "_toc.yml")
API_DIR = ROOT / "book" / "api"

#: The public modules of pixelweight in the order of the API reference, one page each
#: (book/api/<name>.md). A test checks that it is every public module of the package but
#: ``cli`` (the ``pixelweight-train`` command, documented by its ``--help``).
PUBLIC_MODULES = ["losses", "metrics", "data", "models", "sampling", "spectral", "train", "profiles", "chapters",
                  "stats", "claims", "results", "benchmark", "book", "plotting"]
NOT_DOCUMENTED = {"cli"}


def _public(module) -> dict:
    """The functions and classes of a module's ``__all__``."""
    return {name: getattr(module, name) for name in module.__all__
            if inspect.isfunction(getattr(module, name)) or inspect.isclass(getattr(module, name))}


LOSSES = _public(pixelweight.losses)
METRICS = _public(pixelweight.metrics)
SAMPLING = _public(pixelweight.sampling)
SPECTRAL = _public(pixelweight.spectral)
DOCUMENTED = {**{f"losses.{k}": v for k, v in LOSSES.items()}, **{f"metrics.{k}": v for k, v in METRICS.items()},
              **{f"sampling.{k}": v for k, v in SAMPLING.items()},
              **{f"spectral.{k}": v for k, v in SPECTRAL.items()}}
# the modules that define them (their doctests run), and the packages themselves
DOCTEST_MODULES = sorted({inspect.getmodule(obj).__name__ for obj in DOCUMENTED.values()}
                         | {"pixelweight.losses", "pixelweight.metrics", "pixelweight.sampling",
                            "pixelweight.spectral"})

FLAGS = doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS


def run_doctests(module) -> tuple[int, int, str]:
    """Run every docstring example of ``module`` (fresh globals per docstring).

    Returns ``(failed, attempted, report)``; the report holds each failing example's text,
    what it expected and what it got.
    """
    finder = doctest.DocTestFinder()
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    report: list[str] = []
    for test in finder.find(module, module.__name__, globs={}):
        if test.examples:
            runner.run(test, out=report.append)
    return runner.failures, runner.tries, "".join(report)


def _examples_section(doc: str) -> str | None:
    """The text of the numpydoc ``Examples`` section of a (cleaned) docstring, or None."""
    match = re.search(r"^Examples\n-{8,}\n(.*?)(?=^\S[^\n]*\n-{3,}\n|\Z)", doc, re.M | re.S)
    return match.group(1) if match else None


# ------------------------------------------------------------------------------ 1. Examples
@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_public_loss_metric_and_sampler_has_a_runnable_example(name):
    doc = inspect.getdoc(DOCUMENTED[name]) or ""
    section = _examples_section(doc)
    assert section is not None, f"pixelweight.{name} has no numpydoc 'Examples' section"
    assert re.search(r"^>>> ", section, re.M), f"the Examples of pixelweight.{name} have no >>> line"
    assert "doctest: +SKIP" not in section, f"an example of pixelweight.{name} is skipped"


def test_examples_section_parser():
    doc = "Summary.\n\nExamples\n--------\n>>> 1 + 1\n2\n"
    assert _examples_section(doc).startswith(">>> 1 + 1")
    assert _examples_section("Summary.\n\nNotes\n-----\n>>> 1\n1\n") is None
    doc = "Summary.\n\nExamples\n--------\nText only.\n\nNotes\n-----\n>>> 1\n1\n"
    assert ">>>" not in _examples_section(doc)  # a later section's >>> does not count


# ------------------------------------------------------------------------------ 2. doctests
@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_doctests(module_name):
    failed, attempted, report = run_doctests(importlib.import_module(module_name))
    if failed:
        pytest.fail(f"{failed} of {attempted} docstring examples of {module_name} failed:\n{report}",
                    pytrace=False)


def test_every_public_object_example_is_run():
    """The examples of section 1 are in the modules whose doctests run (none is missed)."""
    finder = doctest.DocTestFinder()
    found = {test.name for name in DOCTEST_MODULES
             for test in finder.find(importlib.import_module(name), name, globs={}) if test.examples}
    for name, obj in DOCUMENTED.items():
        qualified = f"{obj.__module__}.{obj.__qualname__}"
        assert qualified in found, f"the examples of pixelweight.{name} ({qualified}) are not run"


def test_doctest_runner_reports_the_failing_example():
    module = types.ModuleType("fake_docs2")
    module.__doc__ = """Examples
    --------
    >>> import math
    >>> round(math.sqrt(2), 4)
    1.4142
    >>> round(math.pi, 4)
    3.1416
    >>> sum([1, 2, 3])
    7
    """
    failed, attempted, report = run_doctests(module)
    assert (failed, attempted) == (1, 4)
    assert "sum([1, 2, 3])" in report and "Expected:\n    7\nGot:\n    6" in report
    assert "math.pi" not in report  # only the failing example is reported
    module.__doc__ = module.__doc__.replace("    7\n", "    6\n")
    assert run_doctests(module)[:2] == (0, 4)


# ------------------------------------------------------------------------ 3. chapter links
DOC_LINK = re.compile(r":doc:`[^`<]*<(/[^>`]+)>`")


def _is_loss(obj) -> bool:
    """A loss: an ``nn.Module`` class, or a function of ``(logits, target, ...)``."""
    if inspect.isclass(obj):
        return issubclass(obj, torch.nn.Module)
    return list(inspect.signature(obj).parameters)[:2] == ["logits", "target"]


LOSS_NAMES = sorted(name for name, obj in LOSSES.items() if _is_loss(obj))


def test_the_losses_are_found():
    assert {"cross_entropy", "CrossEntropyLoss", "focal_loss", "FocalLoss", "soft_dice_loss", "SoftDiceLoss",
            "recall_loss", "RecallLoss", "loss_max_pooling", "LossMaxPooling"} <= set(LOSS_NAMES)
    assert "class_weights" not in LOSS_NAMES and "lmp_weights" not in LOSS_NAMES


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_every_loss_links_to_its_chapter(name):
    doc = inspect.getdoc(LOSSES[name]) or ""
    targets = DOC_LINK.findall(doc)
    assert targets, (f"pixelweight.losses.{name} has no 'In the book: :doc:`title </notebooks/...>`' "
                     "link to the chapter that derives it")
    assert "In the book:" in doc
    for target in targets:
        assert target.lstrip("/") in TOC_ENTRIES, (
            f"pixelweight.losses.{name} links to {target}, which is not a page of _toc.yml")
        assert target.startswith("/notebooks/"), f"pixelweight.losses.{name} links to {target}, not a chapter"


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_every_chapter_link_resolves(name):
    """Helpers (class weights, LMP weights, ...) link to chapters too: each target is a page."""
    for target in DOC_LINK.findall(inspect.getdoc(DOCUMENTED[name]) or ""):
        assert target.lstrip("/") in TOC_ENTRIES, f"pixelweight.{name} links to {target}, not a page of _toc.yml"


def test_doc_link_pattern():
    assert DOC_LINK.findall("In the book: :doc:`Recall loss: the derivation </notebooks/02_recall/01_derivation>`.") \
        == ["/notebooks/02_recall/01_derivation"]
    assert DOC_LINK.findall("In the book: the recall chapter.") == []


# ------------------------------------------------------------------------------ 4. API pages
def _module_public_names(module) -> set[str]:
    """``__all__`` where a module has one; else its own public functions and classes."""
    if hasattr(module, "__all__"):
        return set(module.__all__)
    return {name for name, obj in vars(module).items()
            if not name.startswith("_") and (inspect.isfunction(obj) or inspect.isclass(obj))
            and obj.__module__ == module.__name__}


def test_every_public_module_has_a_page():
    found = {m.name for m in pkgutil.iter_modules(pixelweight.__path__) if not m.name.startswith("_")}
    assert found - NOT_DOCUMENTED == set(PUBLIC_MODULES), (
        "the public modules of pixelweight and the pages of the API reference differ: add a page "
        "book/api/<module>.md, list it in _toc.yml and in PUBLIC_MODULES")


def test_api_reference_is_in_the_toc():
    assert "book/api/index" in TOC_ENTRIES
    pages = [f"book/api/{name}" for name in PUBLIC_MODULES]
    assert [e for e in TOC_ENTRIES if e.startswith("book/api/") and e != "book/api/index"] == pages
    assert TOC_ENTRIES.index("book/api/index") < TOC_ENTRIES.index("book/how_to_cite")
    on_disk = {p.stem for p in API_DIR.glob("*.md")} - {"index"}
    assert on_disk == set(PUBLIC_MODULES), "every page of book/api/ is a public module listed here"


@pytest.mark.parametrize("name", PUBLIC_MODULES)
def test_api_page_documents_every_public_name(name):
    module = importlib.import_module(f"pixelweight.{name}")
    text = (API_DIR / f"{name}.md").read_text(encoding="utf-8")
    assert re.search(rf"^\.\. automodule:: pixelweight\.{name}$", text, re.M), f"book/api/{name}.md"
    if re.search(rf"^\.\. automodule:: pixelweight\.{name}\n   :members:$", text, re.M):
        return  # automodule :members: documents __all__ (or the module's own public names)
    documented = set(re.findall(r"^\.\. auto(?:function|class|data|exception):: (?:pixelweight\.\w+\.)?(\w+)",
                                text, re.M))
    missing = _module_public_names(module) - documented
    assert not missing, f"book/api/{name}.md does not document pixelweight.{name}.{sorted(missing)}"
    extra = documented - _module_public_names(module)
    assert not extra, f"book/api/{name}.md documents names that are not public: {sorted(extra)}"
