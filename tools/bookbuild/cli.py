"""The command line: ``tools/build_book.py`` calls :func:`main`."""

from __future__ import annotations

import argparse
import json
import shutil
import time
from pathlib import Path

import yaml

from .checks import check_pages
from .common import BUILD_INFO_FILE, EXECUTION_FILE, NOTEBOOK_TIMES_FILE, PROFILES, ROOT, BuildError, relative, say, short_sha
from .config import Book
from .execution import BuildPaths, Execution, NotebookRun, execution_summary, load_execution, run_notebooks
from .generated import stage_generated
from .notebooks import sync_notebooks
from .render import jupyter_book_command, run_jupyter_book, stage_sources, unexpected_warnings, write_build_info
from .timings import save_notebook_times, timing_table, write_timings


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Execute the book's notebooks with papermill and build the HTML with Jupyter Book.",
    )
    parser.add_argument("--profile", choices=PROFILES, default="ci",
                        help="run profile passed to every notebook (default: ci)")
    parser.add_argument("--device", default="auto",
                        help="torch device passed to every notebook, e.g. cpu, cuda:0 (default: auto)")
    parser.add_argument("--only", action="append", default=[], metavar="GLOB",
                        help="execute only the notebooks whose toc path or file name matches GLOB "
                             "(repeatable); the book then holds those notebooks and the prose pages")
    parser.add_argument("--no-html", action="store_true", help="execute the notebooks, skip the HTML build")
    parser.add_argument("--html-only", action="store_true",
                        help="do not execute: rebuild the HTML from the notebooks the last run executed "
                             "(_build/executed/), e.g. after editing a prose page")
    parser.add_argument("--timeout", type=float, default=None, metavar="SECONDS",
                        help="limit per notebook cell (default: none)")
    parser.add_argument("--jobs", "-j", type=int, default=1, metavar="N",
                        help="execute up to N notebooks at once, each kernel with cpu_count // N "
                             "threads (default: 1, one after the other)")
    parser.add_argument("--log-output", action="store_true", help="stream the notebooks' cell outputs")
    parser.add_argument("--sync", action="store_true",
                        help="only pair and jupytext --sync the notebooks, write their setup cell from "
                             "_config.yml and clear the .ipynb outputs (make sync; --only limits it)")
    parser.add_argument("--save-times", action="store_true",
                        help=f"only copy the last run's notebook times into {NOTEBOOK_TIMES_FILE} "
                             "(commit it after a full run on a GPU: the chapter headers show it)")
    parser.add_argument("--root", type=Path, default=ROOT, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.timeout is not None and args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")
    if args.jobs < 1:
        parser.error(f"--jobs must be at least 1, got {args.jobs}")
    if args.html_only and args.no_html:
        parser.error("--html-only and --no-html exclude each other")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    paths = BuildPaths(args.root.resolve())
    root, build_dir = paths.root, paths.build_dir
    if args.sync:
        return sync_notebooks(root, args.only)
    if args.save_times:
        return save_notebook_times(root)
    if args.log_output:
        import logging

        logging.basicConfig(level=logging.INFO, format="%(message)s")
    execution = Execution(paths, profile=args.profile, device=args.device, timeout=args.timeout,
                          log_output=args.log_output, jobs=args.jobs)
    try:
        book = Book.load(root, args.only)
        if book.skipped:
            say(f"--only: leaving out {', '.join(book.skipped)}")
        notebooks = book.notebooks
        if args.html_only:
            summary = load_execution(build_dir)
            missing = [e for e in notebooks if summary["notebooks"].get(e, {}).get("status") != "ok"
                       or not paths.executed_notebook(e).is_file()]
            if missing:
                raise BuildError(f"--html-only: the last run did not execute {', '.join(missing)}: "
                                 "run the build without --html-only")
        else:
            summary = execution_summary(execution, book.toc_notebooks)
        stage_sources(root, paths.staging, book.toc, book.pages, notebooks)
    except (BuildError, OSError, yaml.YAMLError) as exc:
        say(f"error: {exc}")
        return 2

    if args.html_only:
        runs = [NotebookRun(e, "ok", summary["notebooks"][e]["seconds"]) for e in notebooks]
        say(f"--html-only: the notebooks as executed on {summary['created_utc']} at commit "
            f"{short_sha(summary['git_commit'])} ({summary['profile']} profile)")
    else:
        if not args.only:  # no executed notebook of an earlier run survives a complete run
            shutil.rmtree(paths.executed, ignore_errors=True)
        try:
            runs = run_notebooks(execution, notebooks, summary, book.release)
        except BuildError as exc:
            say(f"error: {exc}")
            return 2
        (build_dir / EXECUTION_FILE).write_text(json.dumps(summary, indent=1), encoding="utf-8")
        write_timings(runs, build_dir)

    failed = [r.notebook for r in runs if r.status != "ok"]
    html_status = 0
    html_seconds = 0.0
    partial = book.partial
    (build_dir / BUILD_INFO_FILE).unlink(missing_ok=True)
    if failed:
        say("", f"not building the HTML: {len(failed)} notebook(s) failed")
    elif not args.no_html:
        try:
            stage_generated(root, paths.staging, pages=book.pages, notebooks=notebooks,
                            toc_notebooks=book.toc_notebooks, executed_dir=paths.executed, execution=summary,
                            config=book.config, release=book.release, chapters=book.chapters, bib=book.bib)
            command = jupyter_book_command(paths.staging, root, strict=not partial)
        except (BuildError, OSError, yaml.YAMLError) as exc:
            say(f"error: {exc}")
            return 2
        for stale in ("html", ".doctrees", "jupyter_execute"):  # no page of an earlier build survives
            shutil.rmtree(build_dir / stale, ignore_errors=True)
        say("", "$ " + " ".join(command))
        start = time.perf_counter()
        html_status, warnings = run_jupyter_book(command, root)
        html_seconds = time.perf_counter() - start
        unexpected = unexpected_warnings(warnings, book.skipped) if partial else []
        if html_status == 0 and unexpected:
            say("", f"the partial book has {len(unexpected)} Sphinx warning(s) besides its links to the "
                    "notebooks left out (the complete build fails on them):", *(f"  {w}" for w in unexpected))
            html_status = 4
        if html_status == 0:
            bad_pages = check_pages(paths.html)
            if bad_pages:
                say("", f"the built pages show what a reader must not see ({len(bad_pages)} page(s)):")
                for name, problems in bad_pages.items():
                    say(f"  {name}:", *(f"    {p}" for p in problems[:10]))
                    if len(problems) > 10:
                        say(f"    ... and {len(problems) - 10} more")
                html_status = 3
        if html_status == 0:
            write_build_info(build_dir, entries=book.built_entries, notebooks=notebooks, partial=partial,
                             execution=summary, release=book.release, config=book.config)

    say("", timing_table(runs))
    if not args.html_only:
        say(f"{len(runs)} notebook(s) executed in {summary['elapsed_seconds']:.1f} s of wall clock, "
            f"{execution.jobs} at a time")
        say(f"timings saved to {relative(build_dir / 'timings.csv', root)} and timings.md")
    if failed:
        say("FAILED notebooks: " + ", ".join(failed))
        return 1
    if args.no_html:
        say(f"executed notebooks are in {relative(paths.executed, root)}/ (HTML not built: --no-html)")
        return 0
    if html_status == 3:
        say("FAILED: the HTML was built, but its pages show raw Markdown, raw TeX, unresolved roles "
            "or broken images (listed above)")
        return 1
    if html_status == 4:
        say("FAILED: Sphinx warnings other than the links to the notebooks left out (listed above)")
        return 1
    if html_status != 0:
        say(f"FAILED: jupyter-book build exited with {html_status} after {html_seconds:.1f} s "
            "(every Sphinx warning is an error; see the log above)")
        return 1
    say(f"HTML built in {html_seconds:.1f} s: the book is at {paths.html / 'index.html'}")
    if partial:
        say("partial book (--only): its links to the notebooks left out were not errors; "
            "run the full build before committing")
    return 0
