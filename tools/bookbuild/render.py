"""The HTML: the staging tree Jupyter Book builds from, its command line, and
``_build/build_info.json`` (what the last HTML build holds)."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from .common import BUILD_INFO_FILE, BuildError, strip_ansi
from .config import Release
from .toc import page_source


_IGNORE = shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__", ".DS_Store")


def stage_sources(root: Path, staging: Path, toc: dict, pages: list[str], notebooks: list[str]) -> None:
    """Wipe ``staging`` and copy the configuration, the toc, ``book/``, the prose pages and
    the assets beside the notebooks (everything but ``.py`` / ``.ipynb``)."""
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir(parents=True)
    shutil.copy2(root / "_config.yml", staging / "_config.yml")
    with (staging / "_toc.yml").open("w", encoding="utf-8") as handle:
        yaml.safe_dump(toc, handle, sort_keys=False)
    if (root / "book").is_dir():
        shutil.copytree(root / "book", staging / "book", ignore=_IGNORE)
    for entry in pages:
        source = page_source(root, entry)
        target = staging / source.relative_to(root)
        if not target.exists():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    for folder in sorted({(root / entry).parent for entry in notebooks}):
        for asset in folder.iterdir():
            if asset.suffix in (".py", ".ipynb") or asset.name in (".ipynb_checkpoints", "__pycache__"):
                continue
            target = staging / asset.relative_to(root)
            target.parent.mkdir(parents=True, exist_ok=True)
            if asset.is_dir():
                shutil.copytree(asset, target, ignore=_IGNORE, dirs_exist_ok=True)
            else:
                shutil.copy2(asset, target)


def jupyter_book_command(staging: Path, root: Path, *, strict: bool = True) -> list[str]:
    """``jupyter-book build`` of ``staging`` with the HTML in ``root/_build/html``.

    ``strict`` (the default, and always for a complete book) makes every Sphinx warning an
    error (``-W -n --keep-going``: all warnings are shown, then the build fails). A partial
    book (``--only``) is built with ``-n`` alone: its links to the notebooks left out would
    otherwise fail it; the warnings are still printed, and any other warning fails the build
    after it (:func:`unexpected_warnings`).
    """
    script = Path(sys.executable).with_name("jupyter-book")
    exe = str(script) if script.is_file() else shutil.which("jupyter-book")
    if exe is None:
        raise BuildError("jupyter-book is not installed in this environment (pip install -e '.[book]')")
    flags = ["-W", "-n", "--keep-going"] if strict else ["-n"]
    return [exe, "build", str(staging), "--path-output", str(root), *flags, "--all"]


#: What Sphinx's warning handler passes to ``-W``: its warnings and docutils' errors.
_SPHINX_PROBLEM = re.compile(r"(^|: )(WARNING|ERROR|CRITICAL|SEVERE): ")
_UNKNOWN_DOCUMENT = re.compile(r"WARNING: unknown document: '/?(?P<doc>[^']+)'")


def run_jupyter_book(command: list[str], cwd: Path) -> tuple[int, list[str]]:
    """Run ``command`` (:func:`jupyter_book_command`), echo its output as it comes, and return
    its exit status and its Sphinx warnings and errors (the first line of each, colours
    stripped): what ``-W`` turns into a failure."""
    warnings = []
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}  # the echo keeps pace, warnings stay in place
    with subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT) as proc:
        assert proc.stdout is not None
        output = io.TextIOWrapper(proc.stdout, encoding="utf-8", errors="replace", newline="")
        for line in output:  # newline="": Sphinx's \r progress lines are echoed as they are
            sys.stdout.write(line)
            plain = strip_ansi(line).strip()
            if _SPHINX_PROBLEM.search(plain):
                warnings.append(plain)
        sys.stdout.flush()
        status = proc.wait()
    return status, warnings


def unexpected_warnings(warnings: list[str], left_out: list[str]) -> list[str]:
    """The warnings a partial book (``--only``) must not have either: all but the links to the
    notebooks it left out (``unknown document: '/notebooks/...'`` of an entry of ``left_out``).
    A broken cross-reference in a docstring or a prose page fails a partial build as it fails
    the complete one."""
    skipped = {e.strip("/") for e in left_out}
    unexpected = []
    for warning in warnings:
        match = _UNKNOWN_DOCUMENT.search(warning)
        if match is None or match.group("doc").strip("/") not in skipped:
            unexpected.append(warning)
    return unexpected


def write_build_info(build_dir: Path, *, entries: list[str], notebooks: list[str], partial: bool,
                     execution: dict, release: Release, config: dict) -> None:
    """``_build/build_info.json``: what the HTML in ``_build/html`` holds, for the browser test
    (``tests/test_book_browser.py``) and for people: its pages, whether it is partial, and the
    library version, commit, profile and device its notebooks ran with."""
    import datetime as dt

    info = {
        "partial": partial,
        "pages": {entry: f"{entry}.html" for entry in entries},
        "notebooks": notebooks,
        "repository": release.url,
        "release": release.tag,
        "colab_url": (config.get("launch_buttons") or {}).get("colab_url", ""),
        "built_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        **{key: execution[key] for key in ("pixelweight", "git_commit", "git_dirty", "profile",
                                           "device_description", "created_utc")},
        "verdicts": {e: execution["notebooks"][e]["verdicts"] for e in notebooks},
    }
    (build_dir / BUILD_INFO_FILE).write_text(json.dumps(info, indent=1), encoding="utf-8")
