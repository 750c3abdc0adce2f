"""Build the book *Which Pixels Matter?*: papermill runs the notebooks, Jupyter Book renders them.

Run it with the virtual environment's interpreter (``make book`` does)::

    .venv/bin/python tools/build_book.py [--profile {ci,full}] [--device auto] [--only GLOB]
                                         [--no-html | --html-only] [--timeout SECONDS] [--jobs N]
    .venv/bin/python tools/build_book.py --sync [--only GLOB]     # make sync
    .venv/bin/python tools/build_book.py --save-times             # after a full run on a GPU

The steps, in order:

1. Read ``_toc.yml`` and collect every page it lists. A page under ``notebooks/`` is a
   notebook whose source of truth is its jupytext ``py:percent`` file: the ``.py`` must exist.
   Read ``_config.yml`` (the repository and the release tag, :class:`Release`),
   ``book/chapters.yml`` (every notebook's folder must be a chapter there) and
   ``book/references.bib``.
2. Wipe and re-create the staging tree ``_build/staging/``: copy ``_config.yml``,
   ``_toc.yml``, ``book/`` and the assets beside the notebooks.
3. Convert every notebook's ``.py`` with jupytext and execute it with papermill into
   ``_build/executed/`` at the same relative path. Before it runs, its ``parameters`` cell and
   its first cell (the setup cell of the release, :func:`setup_cell_source`) are checked. The
   kernel runs this very interpreter (a kernelspec written to ``_build/jupyter/`` points at
   ``sys.executable``, and a pre-flight check compares the kernel's ``sys.prefix`` with
   ours), its working directory is the notebook's own folder in the repository, matplotlib is
   headless (see :data:`MPLBACKEND`), and papermill injects the parameters ``profile``,
   ``device``, ``results_dir`` (an absolute path ``_build/results/<chapter>/<notebook>``,
   emptied before the run) and ``chapter`` (the notebook's folder under ``notebooks/``,
   :meth:`Execution.parameters`). ``--jobs N`` executes up to N notebooks at once, each in a
   worker process whose kernels get ``cpu_count // N`` threads (:mod:`bookbuild.jobs`); the
   notebooks are independent (each writes its own results folder; the data cache is written
   atomically), and the summary lists them in toc order whatever order they finished in. After the run, the JSON run records the notebook left there must
   come from this source tree (same library version and git commit as the build), and its
   verdicts (``pixelweight.book.record_verdicts``) must be for its own chapter.
4. A failing cell fails the build: the notebook's name and the cell's traceback are printed,
   the remaining notebooks still run, and the script exits non-zero at the end (the HTML is
   then not built). Nothing is run with ``allow_errors``. The run's summary (library version,
   commit, profile, device, and per notebook: time, number of records, verdicts) is saved as
   ``_build/execution.json``, the timings as ``_build/timings.csv`` and ``timings.md``.
5. Generate the book's computed parts into the staging tree (:func:`stage_generated`): the
   footer of every page (library version, commit, profile, device), the landing page's edition
   line and chapter table with the recorded verdicts, the BibTeX of the "How to cite" page
   (from ``CITATION.cff`` and ``book/references.bib``), and each notebook's header (what it
   needs, its ``ci`` time measured by this build, its ``full`` time where
   ``results/notebook_times.csv`` has one, how to rerun it, and a link to its run records).
6. Build the HTML with ``jupyter-book build _build/staging --path-output . -W -n
   --keep-going --all`` (from the repository root) (execution is off in ``_config.yml``:
   papermill already ran), so the book lands in ``_build/html/`` and any Sphinx warning fails
   the build. On success ``_build/build_info.json`` lists the pages built, for the browser
   test (``tests/test_book_browser.py``).
7. Print where the book is and the per-notebook timing table.

``--only GLOB`` (repeatable) executes only the notebooks whose toc path
(``notebooks/00_testbed/01_testbed``) or file name matches one of the globs; the book is then
built from those notebooks plus every prose page, the other notebooks are left out of the
staged ``_toc.yml``, and Sphinx warnings are printed but not errors (links to the pages left
out cannot resolve): a partial book is for previewing a chapter, not for publishing.
``--html-only`` skips step 3 and rebuilds the HTML from the notebooks the last run executed.

Exit status: 0 on success, 1 when a notebook or the HTML build failed, 2 when the book's
sources are inconsistent (a toc entry without its source, a notebook folder missing from
``book/chapters.yml``, a bad ``_config.yml``, a kernel that is not this interpreter).

The package, one module per step (``tools/build_book.py`` is its command line)::

    common      file names, the notebooks' parameters, BuildError, say
    toc         _toc.yml: its pages in reading order, --only filtering, chapter_of
    config      _config.yml (Release), pyproject.toml, book/chapters.yml (Chapter), the
                bibliography, CITATION.cff, and Book: all of them read and checked together
    notebooks   the setup cell, the parameters cell, make sync
    jobs        the scheduler of --jobs: up to N tasks at once in worker processes
    execution   BuildPaths, Execution, NotebookTask, NotebookRun: the kernel, papermill,
                run records and verdicts, the summary _build/execution.json
    timings     the timing table, results/notebook_times.csv (--save-times)
    generated   the computed parts: footer, edition line, chapter table, scorecard,
                how to cite, each notebook's header
    render      the staging tree, the jupyter-book command and its warnings, _build/build_info.json
    checks      the built pages as a reader sees them
    cli         parse_args and main

Every public name of the modules is importable from the package itself (``import bookbuild``).
"""

from .common import (
    ROOT, NOTEBOOKS_DIR, CONFIG_FILE, CHAPTERS_FILE, BIB_FILE, CITATION_FILE,
    NOTEBOOK_TIMES_FILE, NOTEBOOK_TIMES_COLUMNS, EXECUTION_FILE, BUILD_INFO_FILE, PARAMETERS,
    PARAMETER_DEFAULTS, PROFILES, PAIRING, KERNEL_NAME, MPLBACKEND, PROGRESS_ENV, PAGE_SUFFIXES,
    BuildError, strip_ansi, relative, short_sha, say
)
from .toc import toc_entries, read_toc, filter_toc, is_notebook, page_source, matches, chapter_of
from .config import (
    Release, read_config, release_of, project_metadata, Chapter, read_chapters, check_chapters,
    bib_entries, read_bib, read_citation, Book
)
from .notebooks import (
    SETUP_TAGS, setup_cell_source, setup_cell_problem, check_setup_cell, refresh_setup_cell,
    notebook_parameters, check_parameters, notebook_files, clear_outputs, sync_notebooks
)
from .jobs import THREAD_ENV_VARS, cpu_count, threads_per_job, thread_environment, schedule
from .execution import (
    results_dir_for, BuildPaths, Execution, NotebookTask, NotebookRun, format_failure,
    kernel_environment, check_kernel, execute_notebook, run_task, collect_run_outputs,
    records_file, load_execution, execution_summary, finish_run, run_notebooks
)
from .timings import (
    timing_rows, timing_table, write_timings, read_notebook_times, save_notebook_times,
    format_seconds
)
from .generated import (
    book_bibtex, verdict_summary, chapters_table, scorecard_table, edition_markdown,
    footer_html, notebook_header, add_header, generated_text, cite_papers_markdown,
    fill_generated, stage_generated
)
from .render import stage_sources, jupyter_book_command, run_jupyter_book, unexpected_warnings, write_build_info
from .checks import RAW_TABLE_RE, RAW_TEX_RE, RAW_ROLE_RE, page_problems, check_pages
from .cli import parse_args, main
