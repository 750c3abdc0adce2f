"""Executing the notebooks: the kernel of this interpreter, papermill with the build's
parameters, up to ``--jobs`` notebooks at once, and what each run leaves (run records,
verdicts) gathered into the summary ``_build/execution.json``.

The typed state: :class:`BuildPaths` (where the build writes), :class:`Execution` (how the
notebooks run: profile, device, limits, jobs, and the parameters each notebook gets),
:class:`NotebookTask` (what a worker needs to run one notebook) and :class:`NotebookRun`
(how one run went).
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path, PurePosixPath

from .common import (EXECUTION_FILE, KERNEL_NAME, MPLBACKEND, NOTEBOOKS_DIR, PROGRESS_ENV, BuildError, say,
                     short_sha, strip_ansi)
from .config import Release
from .jobs import schedule, thread_environment, threads_per_job
from .notebooks import check_parameters, check_setup_cell
from .toc import chapter_of


def results_dir_for(root: Path, entry: str) -> Path:
    """``<root>/_build/results/<chapter>/<notebook>``: where a notebook's run writes."""
    relative = PurePosixPath(entry).relative_to(NOTEBOOKS_DIR)
    return (root / "_build" / "results" / relative).resolve()


@dataclass(frozen=True)
class BuildPaths:
    """Where a build of the book at ``root`` reads and writes (everything under ``_build/``)."""

    root: Path

    @property
    def build_dir(self) -> Path:
        return self.root / "_build"

    @property
    def staging(self) -> Path:
        """The tree Jupyter Book builds from: sources, executed notebooks, generated parts."""
        return self.build_dir / "staging"

    @property
    def executed(self) -> Path:
        """The executed notebooks, at their toc paths."""
        return self.build_dir / "executed"

    @property
    def html(self) -> Path:
        return self.build_dir / "html"

    def source(self, entry: str) -> Path:
        """A notebook's jupytext source."""
        return self.root / f"{entry}.py"

    def executed_notebook(self, entry: str) -> Path:
        return self.executed / f"{entry}.ipynb"

    def results_dir(self, entry: str) -> Path:
        """:func:`results_dir_for`."""
        return results_dir_for(self.root, entry)

    def cwd(self, entry: str) -> Path:
        """A notebook's working directory: its own folder in the repository."""
        return (self.root / entry).parent


@dataclass(frozen=True)
class Execution:
    """How the notebooks are executed: the run's profile and device, the limits, how many
    run at once, and where (:class:`BuildPaths`)."""

    paths: BuildPaths
    profile: str = "ci"
    device: str = "auto"
    timeout: float | None = None
    log_output: bool = False
    jobs: int = 1

    def parameters(self, entry: str) -> dict[str, object]:
        """What papermill injects into the notebook ``entry``: ``profile``, ``device``, its
        ``results_dir`` (absolute) and ``chapter``, its folder under ``notebooks/``."""
        chapter = chapter_of(entry)  # a BuildError for an entry outside notebooks/<chapter>/
        return {"profile": self.profile, "device": self.device,
                "results_dir": str(self.paths.results_dir(entry)), "chapter": chapter}

    @property
    def threads(self) -> int | None:
        """The threads each kernel may use when several run at once (``None`` for one job:
        the libraries' defaults)."""
        return threads_per_job(self.jobs) if self.jobs > 1 else None

    def task(self, entry: str, kernel_name: str, release: Release | None) -> NotebookTask:
        return NotebookTask(
            name=entry, source=self.paths.source(entry), output=self.paths.executed_notebook(entry),
            parameters=self.parameters(entry), kernel_name=kernel_name, cwd=self.paths.cwd(entry),
            timeout=self.timeout, log_output=self.log_output, release=release,
            progress_bar=self.jobs <= 1 and sys.stderr.isatty(),
        )


@dataclass(frozen=True)
class NotebookTask:
    """Everything :func:`execute_notebook` needs to run one notebook (picklable: it travels
    to a worker process with ``--jobs``)."""

    name: str
    source: Path
    output: Path
    parameters: dict[str, object]
    kernel_name: str
    cwd: Path
    timeout: float | None = None
    log_output: bool = False
    release: Release | None = None
    progress_bar: bool = False


@dataclass
class NotebookRun:
    """One notebook's execution: ``status`` is ``"ok"`` or ``"failed"``, ``seconds`` its own
    wall time, ``error`` the report of a failure; ``output`` is the executed notebook, and
    ``records`` and ``verdicts`` are what the run left in its results folder."""

    notebook: str
    status: str
    seconds: float
    error: str | None = None
    output: Path | None = None
    records: list[dict] = field(default_factory=list)
    verdicts: list[dict] = field(default_factory=list)

    @property
    def chapter(self) -> str | None:
        """The notebook's chapter folder (``None`` for a notebook outside ``notebooks/``)."""
        try:
            return chapter_of(self.notebook)
        except BuildError:
            return None

    def summary(self) -> dict:
        """Its entry of ``execution.json``'s ``notebooks``."""
        return {"status": self.status, "seconds": round(self.seconds, 1),
                "records": len(self.records), "verdicts": self.verdicts}


def format_failure(notebook: str, exc: BaseException, executed: Path | None = None) -> str:
    """A readable report of a failed notebook: its name, the cell and the traceback."""
    from papermill.exceptions import PapermillExecutionError

    rule = "=" * 78
    if isinstance(exc, PapermillExecutionError):
        where = f"cell In [{exc.exec_count}]"
        body = strip_ansi("\n".join(exc.traceback)).strip("\n")
        if not body:  # a kernel that sends no traceback
            body = f"{exc.ename}: {exc.evalue}"
    else:
        where = "before or outside a cell"
        body = f"{type(exc).__name__}: {strip_ansi(str(exc)).strip()}"
    lines = [rule, f"FAILED: {notebook} ({where})", "-" * 78, body]
    if executed is not None:
        lines += ["-" * 78, f"executed notebook (with the error): {executed}"]
    lines.append(rule)
    return "\n".join(lines)


@contextlib.contextmanager
def kernel_environment(build_dir: Path) -> Iterator[str]:
    """Make a kernelspec that runs this interpreter visible, with :data:`MPLBACKEND` set.

    Writes ``<build_dir>/jupyter/kernels/<KERNEL_NAME>/kernel.json`` whose command is
    ``sys.executable -m ipykernel_launcher``, puts that folder first on ``JUPYTER_PATH``
    (searched before the user's and the system's kernelspecs) and restores the environment
    on exit. Yields the kernel name.
    """
    spec_dir = build_dir / "jupyter" / "kernels" / KERNEL_NAME
    spec_dir.mkdir(parents=True, exist_ok=True)
    spec = {
        # log_level=ERROR: the kernel's own log (not the notebook's output) would print a
        # "running over TCP without encryption" warning per notebook; the build is local.
        "argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}",
                 "--IPKernelApp.log_level=ERROR"],
        "display_name": "Python 3 (pixelweight build)",
        "language": "python",
        "metadata": {"debugger": False},
    }
    (spec_dir / "kernel.json").write_text(json.dumps(spec, indent=1), encoding="utf-8")
    saved = {key: os.environ.get(key) for key in ("JUPYTER_PATH", "MPLBACKEND", PROGRESS_ENV)}
    jupyter_path = [str(build_dir / "jupyter")]
    if saved["JUPYTER_PATH"]:
        jupyter_path.append(saved["JUPYTER_PATH"])
    os.environ["JUPYTER_PATH"] = os.pathsep.join(jupyter_path)
    os.environ["MPLBACKEND"] = MPLBACKEND
    # Progress bars are for people running a notebook; in the built book they would be
    # hundreds of stderr lines (and the book treats stderr as a warning).
    os.environ[PROGRESS_ENV] = "0"
    try:
        yield KERNEL_NAME
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def check_kernel(kernel_name: str, timeout: float = 60.0) -> str:
    """Start the kernel once and make sure it runs this interpreter's environment.

    Returns the kernel's ``sys.executable``; raises :class:`BuildError` when its
    ``sys.prefix`` differs from ours (the notebooks would not see this venv's packages).
    """
    from jupyter_client.manager import start_new_kernel

    try:
        km, kc = start_new_kernel(kernel_name=kernel_name, startup_timeout=timeout)
    except Exception as exc:  # noqa: BLE001 - NoSuchKernel, a kernel that dies at start, ...
        raise BuildError(f"cannot start the kernel {kernel_name!r} ({type(exc).__name__}: {exc}); "
                         "is ipykernel installed in this environment?") from exc
    out = io.StringIO()

    def hook(msg: dict) -> None:
        if msg["msg_type"] == "stream":
            out.write(msg["content"]["text"])

    try:
        kc.execute_interactive(
            "import sys; print(sys.prefix); print(sys.executable)", output_hook=hook, timeout=timeout
        )
    finally:
        kc.stop_channels()
        km.shutdown_kernel(now=True)
    lines = out.getvalue().split()
    if len(lines) != 2 or Path(lines[0]).resolve() != Path(sys.prefix).resolve():
        raise BuildError(
            f"kernel {kernel_name!r} does not run this environment: its sys.prefix is "
            f"{lines[0] if lines else '(no answer)'}, expected {sys.prefix}"
        )
    return lines[1]


def execute_notebook(
    source: Path,
    output: Path,
    *,
    name: str,
    parameters: dict[str, object],
    kernel_name: str,
    cwd: Path,
    timeout: float | None = None,
    log_output: bool = False,
    release: Release | None = None,
    progress_bar: bool | None = None,
) -> NotebookRun:
    """Convert ``source`` (py:percent) with jupytext and execute it with papermill into ``output``.

    Never raises for a notebook's own failure: the result carries ``status="failed"`` and the
    readable report of :func:`format_failure`. The kernel must already be set up
    (:func:`kernel_environment`). With ``release``, the notebook's first cell must be that
    release's setup cell (:func:`check_setup_cell`). ``progress_bar`` defaults to whether
    stderr is a terminal.
    """
    import jupytext
    import papermill

    start = time.perf_counter()
    try:
        nb = jupytext.read(source)
        check_parameters(nb)
        if release is not None:
            check_setup_cell(nb, release)
        output.parent.mkdir(parents=True, exist_ok=True)
        jupytext.write(nb, output, fmt="ipynb")
        papermill.execute_notebook(
            str(output),
            str(output),
            parameters=parameters,
            kernel_name=kernel_name,
            language="python",
            cwd=str(cwd),
            execution_timeout=timeout,
            progress_bar=sys.stderr.isatty() if progress_bar is None else progress_bar,
            log_output=log_output,
        )
    except Exception as exc:  # noqa: BLE001 - every failure is reported, none is fatal
        error = format_failure(name, exc, output if output.is_file() else None)
        return NotebookRun(name, "failed", time.perf_counter() - start, error, output=output)
    return NotebookRun(name, "ok", time.perf_counter() - start, output=output)


def run_task(task: NotebookTask) -> NotebookRun:
    """:func:`execute_notebook` of a :class:`NotebookTask` (the worker of :func:`run_notebooks`)."""
    return execute_notebook(
        task.source, task.output, name=task.name, parameters=task.parameters,
        kernel_name=task.kernel_name, cwd=task.cwd, timeout=task.timeout,
        log_output=task.log_output, release=task.release, progress_bar=task.progress_bar,
    )


def collect_run_outputs(results_dir: Path, entry: str, commit: str, version: str) -> tuple[list[dict], list[dict]]:
    """The run records and verdicts a notebook left in ``results_dir``.

    A record is every JSON file :func:`pixelweight.results.load_record` accepts (other JSON
    files are the notebook's own business). Raises ``ValueError`` when a record was not made
    by this source tree (its library version or git commit differ from the build's: the
    figures would not be traceable to the commit the book shows) or when the notebook recorded
    verdicts for another chapter than its folder.
    """
    from pixelweight.book import read_verdicts
    from pixelweight.results import load_record

    records = []
    for path in sorted(results_dir.rglob("*.json")):
        if path.name.startswith("."):
            continue
        try:
            record = load_record(path)
        except ValueError:
            continue
        made = (record.provenance.get("pixelweight"), record.provenance.get("git_commit"))
        if made != (version, commit):
            raise ValueError(
                f"the run record {path.name} was made by pixelweight {made[0]} at commit {made[1]}, "
                f"but the book is built from pixelweight {version} at commit {commit}: the kernel does "
                "not run this source tree (install it with `pip install -e .`, as make does)"
            )
        records.append(record.to_dict())
    verdicts = read_verdicts(results_dir)
    chapter = chapter_of(entry)
    for line in verdicts:
        if line["chapter"] != chapter:
            raise ValueError(
                f"the notebook recorded verdicts for chapter {line['chapter']!r}, but it lives in "
                f"notebooks/{chapter}/: call record_verdicts(results_dir, {chapter!r}, ...)"
            )
    return records, verdicts


def records_file(executed: Path) -> Path:
    """Where a notebook's run records are gathered: ``<notebook>.records.json`` beside it."""
    return executed.with_name(executed.stem + ".records.json")


def load_execution(build_dir: Path) -> dict:
    """The summary of the last execution, ``_build/execution.json``."""
    path = build_dir / EXECUTION_FILE
    if not path.is_file():
        raise BuildError(f"no executed notebooks: {path} is missing (run `make book` first)")
    return json.loads(path.read_text(encoding="utf-8"))


def execution_summary(execution: Execution, toc_notebooks: list[str]) -> dict:
    """The summary of this execution before any notebook ran (``execution.json``): library,
    commit, profile, device. With several jobs the device is described with the threads each
    kernel gets."""
    import datetime as dt

    import torch

    from pixelweight import __version__
    from pixelweight.results import device_description, git_commit
    from pixelweight.train import resolve_device

    saved = torch.get_num_threads()
    try:
        if execution.threads is not None:
            torch.set_num_threads(execution.threads)
        device = device_description(resolve_device(execution.device))
    except Exception as exc:  # noqa: BLE001 - an unknown or absent device
        raise BuildError(f"--device {execution.device}: {exc}") from exc
    finally:
        torch.set_num_threads(saved)
    commit = git_commit(execution.paths.root)
    return {
        "schema_version": 1,
        "profile": execution.profile, "device": execution.device, "device_description": device,
        "pixelweight": __version__, "git_commit": commit["commit"], "git_dirty": commit["dirty"],
        "created_utc": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "toc_notebooks": toc_notebooks, "notebooks": {},
    }


def finish_run(run: NotebookRun, execution: Execution, summary: dict) -> NotebookRun:
    """A finished run with the records and verdicts its notebook left (a run whose records
    or verdicts are not this build's becomes a failure), the records gathered beside the
    executed notebook (:func:`records_file`)."""
    if run.status != "ok":
        return run
    entry = run.notebook
    try:
        records, verdicts = collect_run_outputs(
            execution.paths.results_dir(entry), entry, summary["git_commit"], summary["pixelweight"])
    except ValueError as exc:
        return replace(run, status="failed", error=format_failure(entry, exc))
    if records:
        records_file(execution.paths.executed_notebook(entry)).write_text(json.dumps(
            {"notebook": entry, "profile": execution.profile, "pixelweight": summary["pixelweight"],
             "git_commit": summary["git_commit"], "records": records},
            indent=1, sort_keys=True), encoding="utf-8")
    return replace(run, records=records, verdicts=verdicts)


def run_notebooks(execution: Execution, notebooks: list[str], summary: dict,
                  release: Release | None) -> list[NotebookRun]:
    """Execute ``notebooks``, up to ``execution.jobs`` at once, each into its place under
    ``_build/executed/`` with its results folder emptied first.

    Prints a line as each notebook starts and one (with the failure report, if any) as it
    ends; returns the runs in the order of ``notebooks`` and fills ``summary["notebooks"]``
    in that order, so that the summary is the same whatever order they finished in. Adds
    ``summary["jobs"]`` and ``summary["elapsed_seconds"]``, the wall time of them all.
    """
    paths = execution.paths
    runs: list[NotebookRun] = []
    with kernel_environment(paths.build_dir) as kernel_name:
        executable = check_kernel(kernel_name)
        at_once = (f"; {execution.jobs} notebooks at once, {execution.threads} thread(s) each"
                   if execution.jobs > 1 else "")
        say(f"kernel {kernel_name}: {executable}; profile={execution.profile} device={execution.device} "
            f"({summary['device_description']}); pixelweight {summary['pixelweight']} at commit "
            f"{short_sha(summary['git_commit'])}{' (dirty)' if summary['git_dirty'] else ''}{at_once}")
        tasks = []
        for entry in notebooks:
            results_dir = paths.results_dir(entry)
            shutil.rmtree(results_dir, ignore_errors=True)
            results_dir.mkdir(parents=True)
            records_file(paths.executed_notebook(entry)).unlink(missing_ok=True)
            tasks.append(execution.task(entry, kernel_name, release))
        count = len(tasks)
        finished: dict[int, NotebookRun] = {}

        def started(index: int, task: NotebookTask) -> None:
            say(f"[{index + 1}/{count}] executing {task.name} ...")

        def done(index: int, run: NotebookRun) -> None:
            run = finished[index] = finish_run(run, execution, summary)
            say(f"[{index + 1}/{count}] {run.notebook}: {run.status} in {run.seconds:.1f} s"
                + (f", {len(run.records)} run record(s), {len(run.verdicts)} verdict(s)"
                   if run.status == "ok" else ""))
            if run.error:
                say(run.error)

        def crashed(index: int, task: NotebookTask, exc: BaseException) -> NotebookRun:
            # the worker process itself failed (it died, or could not be started)
            return NotebookRun(task.name, "failed", 0.0, format_failure(task.name, exc), output=task.output)

        start = time.perf_counter()
        schedule(tasks, run_task, jobs=execution.jobs, env=thread_environment(execution.jobs),
                 on_start=started, on_done=done, on_error=crashed,
                 log_level=logging.INFO if execution.log_output else None)
        elapsed = time.perf_counter() - start
    runs = [finished[index] for index in range(count)]
    for run in runs:
        summary["notebooks"][run.notebook] = run.summary()
    summary["jobs"] = execution.jobs
    summary["elapsed_seconds"] = round(elapsed, 1)
    return runs
