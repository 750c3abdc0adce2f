"""What the tests of the built book share: the book ``make book`` built, checked for being
complete and current (:func:`complete_build_info`).

The build itself is the package ``tools/bookbuild/``, which the tests import as
``bookbuild`` (``tools`` is on pytest's ``pythonpath``, see ``pyproject.toml``).
"""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


RUN_MAKE_BOOK = "run `make book` first (this test checks the HTML it builds and executes no notebook)"


def complete_build_info() -> dict:
    """``_build/build_info.json`` of a complete, current build, for the tests that read the
    built book; fails the calling test (with what to do) when there is none, when it is
    partial (``--only``), when its pages are not those of ``_toc.yml``, or, under CI, when it
    was built at another commit than HEAD (a stale book). A book built at HEAD from a working
    tree with uncommitted changes is accepted: CI builds a clean clone, and locally the changes
    are the ones under test."""
    import json
    import subprocess

    import pytest

    from helpers.environment import in_ci

    build_info = ROOT / "_build" / "build_info.json"
    if not build_info.is_file():
        pytest.fail(f"no built book: {build_info.relative_to(ROOT)} is missing; {RUN_MAKE_BOOK}")
    info = json.loads(build_info.read_text(encoding="utf-8"))
    if info["partial"]:
        pytest.fail(f"the last build was partial (--only): {RUN_MAKE_BOOK} without --only")
    if in_ci():
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
        if head and info["git_commit"] != head:
            pytest.fail(f"the built book is stale: it was built at commit {info['git_commit'][:10]}, "
                        f"HEAD is {head[:10]}; {RUN_MAKE_BOOK}")
    from bookbuild import read_toc

    toc = read_toc(ROOT / "_toc.yml")
    if list(info["pages"]) != toc:
        pytest.fail(f"the built book has the pages {list(info['pages'])}, _toc.yml lists {toc}: {RUN_MAKE_BOOK}")
    return info
