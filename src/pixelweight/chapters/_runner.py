r"""Run a chapter's runs outside the book, and rerun a record to verify it.

``python -m pixelweight.results run 02_recall --profile full --jobs 2`` trains every run of a
chapter's stages at a profile — ``jobs`` worker processes, ``cores // jobs`` threads each — and
writes the records under ``results/<chapter>/<stage>/``: the committed converged records the
book takes its verdicts from. ``python -m pixelweight.results verify PATH`` rebuilds the run a
record describes from the record alone (data, model, loss, budget, seed) and reports the
difference of every metric: exact on the same CPU and package versions; otherwise within a
stated tolerance, naming the packages whose versions differ.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import subprocess
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["RunJob", "chapter_jobs", "run_chapter", "Verification", "verify_record", "stale_paths",
           "CODE_PATHS", "DirtyTree", "record_code_paths", "traced_code_files"]


class DirtyTree(RuntimeError):
    """The working tree has uncommitted changes: records would not name the code that made them."""

#: The library folders (and the shared input checks, whose values runs use) whose code shapes a
#: run's numbers: a committed record made before a change to any of them is stale
#: (:func:`stale_paths`; per file for a record that lists the files its run executed). A change of a stage's specs (budget,
#: data, model) shows differently: its records no longer match the stage
#: (:meth:`~pixelweight.chapters.Setup.committed_runs` leaves them out); the drivers between
#: specs and harness are covered by ``verify``, which CI runs on the cheapest record.
#: A chapter whose runs also use another part of the library names it in its own
#: ``Chapter.code_paths`` (the zoom chapter: ``pixelweight.sampling``), so that a change there
#: stales that chapter's records and no other's.
CODE_PATHS = ("src/pixelweight/losses", "src/pixelweight/models", "src/pixelweight/data",
              "src/pixelweight/train", "src/pixelweight/metrics", "src/pixelweight/_validation.py")


@dataclasses.dataclass(frozen=True)
class RunJob:
    """One training run of a chapter: a stage, a variant of its data, an arm and a seed."""

    chapter: str
    stage: str
    variant: str
    arm: str
    seed: int
    name: str


def chapter_jobs(folder: str, profile: str = "full", stages: Optional[Sequence[str]] = None,
                 arms: Optional[Sequence[str]] = None) -> List[RunJob]:
    """Every run of the chapter ``folder`` at ``profile``, in a stable order (only the
    ``stages`` and the arms labelled ``arms`` when given; not the data variants a stage shares
    with another at that profile, ``Scale.shared_variants``)."""
    from . import get_chapter

    module = get_chapter(folder)
    chosen = list(module.STAGES) if stages is None else list(stages)
    jobs = []
    for stage_name in chosen:
        stage = module.CHAPTER.stage(stage_name)
        for variant in (stage.variants or {"": {}}):
            setup = module.setup(stage_name, profile).variant(variant)
            shared = stage.scale(profile).shared_variants.get(variant)
            if shared is not None:  # another stage's runs (Scale.shared_variants): not trained twice
                if profile == "full":
                    setup.shared_arms(shared)  # raises where they are not the same runs
                continue
            if arms is not None:
                unknown = sorted(set(arms) - {a.label for a in stage.arms})
                if unknown:
                    raise ValueError(f"stage {stage_name!r} has no arm {unknown}; its arms: {[a.label for a in stage.arms]}")
            for arm in stage.arms:
                if arms is not None and arm.label not in arms:
                    continue
                for seed in setup.profile.seeds:
                    jobs.append(RunJob(folder, stage_name, variant, arm.label, int(seed), setup.run_name(arm)))
    if not jobs:
        raise ValueError(f"chapter {folder!r} has no run at profile {profile!r} (stages {chosen})")
    return jobs


def _run_job(job: RunJob, profile: str, out: str, device: str, threads: int,
             commit: Optional[Dict[str, Any]] = None) -> Tuple[str, float]:
    import time

    import torch

    from ..results import git_commit
    from . import get_chapter

    if commit is not None and git_commit() != commit:  # the records must name the code that ran
        raise RuntimeError(f"the working tree changed during the run (was {commit}, now {git_commit()}): "
                           "the runs that remain would record another commit than the code they run; "
                           "restart the command (finished runs are kept)")

    torch.set_num_threads(threads)
    os.environ["PIXELWEIGHT_PROGRESS"] = "0"
    module = get_chapter(job.chapter)
    setup = module.setup(job.stage, profile, device=device, results_dir=str(Path(out) / job.stage))
    setup = setup.variant(job.variant)
    start = time.perf_counter()
    (result,) = setup.run_arm(setup.arm(job.arm), seeds=[job.seed])
    return result.record_path, time.perf_counter() - start


def run_chapter(folder: str, profile: str = "full", *, jobs: int = 1, out: Union[str, Path, None] = None,
                device: str = "auto", stages: Optional[Sequence[str]] = None, arms: Optional[Sequence[str]] = None,
                allow_dirty: bool = False, skip_existing: bool = True, check_tree: bool = True,
                trace: bool = True) -> List[str]:
    """Train every run of a chapter (:func:`chapter_jobs`) in ``jobs`` processes and write the
    records to ``out`` (default ``results/<chapter>``). Refuses a working tree with uncommitted
    changes (the records' commit would not name the code that made them) unless
    ``allow_dirty``. With ``skip_existing`` a run whose record exists is not rerun (a run
    interrupted half-way resumes). With several ``jobs`` the runs start longest first, as the
    records already under ``out`` time them. With ``trace`` (``full`` profile) the stages' records
    then get the library files their runs execute (:mod:`pixelweight.chapters._trace`: a
    short traced rerun per arm, at each record's own commit), which makes their staleness
    per file. Returns the records'
    paths."""
    import concurrent.futures as cf
    import multiprocessing

    from ..results import find_results_root, git_commit

    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        raise ValueError(f"jobs must be a positive int, got {jobs!r}")
    commit = git_commit()
    if commit.get("dirty") and not allow_dirty:
        raise DirtyTree("the working tree has uncommitted changes: commit them first, so that the "
                           "records name the code that made them (or pass allow_dirty)")
    root = find_results_root() or Path("results")
    out = Path(out) if out is not None else root / folder
    todo = chapter_jobs(folder, profile, stages, arms)
    if skip_existing:
        todo = [j for j in todo if not _current(out / j.stage / f"{j.name}--seed{j.seed}.json", j, profile)]
    threads = max(1, (os.cpu_count() or 1) // jobs)
    if jobs > 1:
        todo = _longest_first(todo, out)
    paths: List[str] = []
    print(f"{folder}: {len(todo)} runs at profile {profile!r}, {jobs} at a time, {threads} thread(s) each -> {out}",
          flush=True)
    if jobs == 1:
        for i, job in enumerate(todo, 1):
            path, seconds = _run_job(job, profile, str(out), device, threads, commit if check_tree else None)
            paths.append(path)
            print(f"[{i}/{len(todo)}] {job.name} seed {job.seed}: {seconds:.0f} s", flush=True)
        _trace_written(out, sorted({j.stage for j in chapter_jobs(folder, profile, stages, arms)}), profile, trace)
        return paths
    context = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = {pool.submit(_run_job, job, profile, str(out), device, threads, commit if check_tree else None): job
                   for job in todo}
        for i, future in enumerate(cf.as_completed(futures), 1):
            job = futures[future]
            path, seconds = future.result()
            paths.append(path)
            print(f"[{i}/{len(todo)}] {job.name} seed {job.seed}: {seconds:.0f} s", flush=True)
    _trace_written(out, sorted({j.stage for j in chapter_jobs(folder, profile, stages, arms)}), profile, trace)
    return sorted(paths)


def _longest_first(todo: Sequence[RunJob], out: Path) -> List[RunJob]:
    """``todo`` with the longest runs first, so that parallel workers finish together instead
    of one running the last long run alone: each run's expected time is the median wall time of
    the records of its name under ``out`` (any seed: the records a rerun replaces, or an earlier
    run's); a run without one goes first (it may be long). Stable among equals."""
    import json
    import statistics

    expected: Dict[Tuple[str, str], float] = {}
    for stage, name in {(j.stage, j.name) for j in todo}:
        times = []
        for path in (out / stage).glob(f"{name}--seed*.json"):
            try:
                record = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            seconds = record.get("wall_time_s") if isinstance(record, dict) else None
            if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds):
                times.append(float(seconds))
        expected[stage, name] = statistics.median(times) if times else math.inf
    return sorted(todo, key=lambda j: -expected[j.stage, j.name])


def _trace_written(out: Path, stages: Sequence[str], profile: str, trace: bool) -> None:
    """Trace every record of ``stages`` under ``out`` made at this commit that lacks its
    files (this run's, and those an interrupted run left); a failure leaves them untraced and
    says so (``python -m pixelweight.results trace`` traces records of other commits)."""
    if not (trace and profile == "full"):
        return
    from ._trace import trace_records

    from ..results import git_commit, load_record

    commit = git_commit().get("commit")
    paths = []
    for stage in stages:  # this commit's records only: rewriting older committed ones would dirty the tree
        for path in sorted((out / stage).glob("*.json")):
            try:
                if not path.name.startswith(".") and load_record(path).provenance.get("git_commit") == commit:
                    paths.append(path)
            except ValueError:
                continue
    if not paths:
        return
    try:
        outcome = trace_records(paths)
    except Exception as err:  # the records are written; tracing can be redone
        print(f"tracing failed ({err}); the records stay untraced: python -m pixelweight.results trace {out}",
              flush=True)
        return
    done = sum(v == "traced" for v in outcome.values())
    print(f"traced the code of {done} of {len(paths)} record(s)", flush=True)


def _current(path: Path, job: RunJob, profile: str) -> bool:
    """Whether the record at ``path`` exists and was made with the job's configuration as the
    chapter declares it today (a resumed run skips it; an outdated one is trained again)."""
    from ..results import load_record
    from . import get_chapter
    from ._base import _plain

    if not path.is_file():
        return False
    setup = get_chapter(job.chapter).setup(job.stage, profile).variant(job.variant)
    wanted = setup.full_config(setup.arm(job.arm)) if profile == "full" else {}
    config = load_record(path).config
    return all(_plain(config.get(k)) == v for k, v in wanted.items())


@dataclasses.dataclass
class Verification:
    """What :func:`verify_record` found: the metrics that differ, the largest difference,
    and the packages whose installed versions differ from the record's."""

    path: str
    name: str
    seed: int
    compared: int
    differences: Dict[str, Tuple[Any, Any]]
    max_abs_difference: float
    packages: Dict[str, Tuple[Any, Any]]
    tolerance: float

    @property
    def passed(self) -> bool:
        return self.max_abs_difference <= self.tolerance

    def report(self) -> str:
        lines = [f"{self.path}: {self.name} seed {self.seed}: {self.compared} metrics compared, "
                 f"largest difference {self.max_abs_difference:.3g} (tolerance {self.tolerance:g}): "
                 + ("OK" if self.passed else "DIFFERS")]
        for key, (old, new) in sorted(self.differences.items()):
            lines.append(f"  {key}: recorded {old!r}, now {new!r}")
        for pkg, (old, new) in sorted(self.packages.items()):
            lines.append(f"  package {pkg}: recorded {old}, installed {new}")
        return "\n".join(lines)


def _tuples(value: Any) -> Any:
    if isinstance(value, list):
        return tuple(_tuples(v) for v in value)
    if isinstance(value, Mapping):
        return {k: _tuples(v) for k, v in value.items()}
    return value


def _numbers(value: Any) -> List[float]:
    """The numbers in ``value``; records store NaN as ``null`` (strict JSON), read back as NaN."""
    if value is None:
        return [math.nan]
    if isinstance(value, (list, tuple)):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return []
    return [float(value)]


def verify_record(path: Union[str, Path], *, device: str = "cpu", tolerance: float = 0.0) -> Verification:
    """Retrain the run that the record at ``path`` describes, from its config alone, and
    compare every final metric (numbers and per-class lists; times left out)."""
    from ..profiles import Profile
    from ..results import load_record
    from ._base import Arm, DataSpec, ModelSpec

    record = load_record(path)
    config = record.config
    missing = [k for k in ("data_spec", "model", "loss", "profile", "train", "num_classes") if k not in config]
    if missing:
        raise ValueError(f"{path}: the record lacks {missing}; it was not written by a chapter setup "
                         "(pixelweight.chapters), so it cannot be rebuilt")
    stage = _record_stage(config)  # the chapter stage that made it: its task and its data wrapper
    described = config.get("task") or {}
    kind = described.get("type", "SegmentationTask")
    if stage is not None and stage.task is not None and _tuples(_jsonable_task(stage.task)) == _tuples(described):
        task = stage.task  # the stage's own task (e.g. auxiliary targets served with the batch)
    elif kind in _VERIFIABLE_TASKS:
        from .. import train as train_module

        task = getattr(train_module, kind)()
    else:
        raise ValueError(f"{path}: only segmentation and classification runs, or runs of a chapter stage that "
                         f"declares the record's task, can be verified; got task {config.get('task')!r}")
    data = config["data_spec"]
    spec = DataSpec(data["dataset"], size=data["size"], options=_tuples(data["options"]))
    model_cfg = dict(config["model"])
    model = ModelSpec(**{k: model_cfg.pop(k) for k in ("name", "in_channels", "width", "depth")}, options=model_cfg)
    loss = config["loss"]
    arm = Arm(loss["label"], loss["name"], loss.get("options", {}))
    profile = Profile(**{**config["profile"], "seeds": tuple(config["profile"]["seeds"])})
    num_classes = int(config["num_classes"])
    splits = spec.splits(profile)
    if config.get("data") is not None and _tuples(config["data"]) != _tuples(splits.config):
        raise ValueError(f"{path}: the data generated today differ from the record's (generator version?)")
    wrap = stage.dataset_wrapper if stage is not None else None
    if wrap is not None:
        from ._base import Splits

        splits = Splits(train=wrap(splits.train), val=wrap(splits.val), test=wrap(splits.test), config=splits.config)
    # CPU kernels sum in another order with another number of threads: retrain with the record's
    import re

    import torch

    from ..train import resolve_device

    threads = re.search(r"(\d+) threads?\)", record.device or "")
    previous = torch.get_num_threads()
    if threads and resolve_device(device).type == "cpu":
        torch.set_num_threads(int(threads.group(1)))
    try:
        return _retrain_and_compare(path, record, spec, model, arm, num_classes, splits, profile, device, tolerance,
                                    task=task, metrics=_stage_metrics(config, device))
    finally:
        torch.set_num_threads(previous)


#: The task types a record can be verified for without a chapter stage that declares it, with
#: the metrics that evaluate them (a binary segmentation, ``num_classes == 1``, is scored by
#: :class:`~pixelweight.metrics.ForegroundMetrics`).
_VERIFIABLE_TASKS = {"SegmentationTask": "SegmentationMetrics", "ClassificationTask": "ClassificationMetrics"}


def _record_stage(config: Mapping[str, Any]):
    """The :class:`~pixelweight.chapters.Stage` a record names (``chapter``, ``stage``), or
    ``None`` when it names none that exists today."""
    from . import CHAPTERS, get_chapter

    chapter, stage = config.get("chapter"), config.get("stage")
    if chapter not in CHAPTERS or not isinstance(stage, str):
        return None
    return get_chapter(chapter).CHAPTER.stages.get(stage)


def _stage_metrics(config: Mapping[str, Any], device: str):
    """The evaluation accumulator factory of the chapter setup that made a record, where that
    setup has its own (e.g. the zoom chapter's segmentation metrics with boundary accuracy);
    ``None`` where the record names no chapter stage or its setup keeps the default metrics."""
    from . import get_chapter
    from ._base import Setup

    stage = _record_stage(config)
    if stage is None:
        return None
    module = get_chapter(config["chapter"])
    make = getattr(module, "setup", None) or module.CHAPTER.setup
    name = (config.get("profile") or {}).get("name")
    try:  # the metrics do not depend on the profile: any scale of the stage will do
        setup = make(config["stage"], name if name in stage.scales else next(iter(stage.scales)), device=device)
        if config.get("variant"):
            setup = setup.variant(config["variant"])
    except (KeyError, ValueError, StopIteration):
        return None  # the default metrics, and verify reports what differs
    if type(setup).metrics is Setup.metrics or setup.num_classes != int(config["num_classes"]):
        return None
    return setup.metrics


def _jsonable_task(task) -> Dict[str, Any]:
    import json

    return json.loads(json.dumps(task.describe()))


def _retrain_and_compare(path, record, spec, model, arm, num_classes, splits, profile, device,
                         tolerance, task=None, metrics=None) -> "Verification":
    """Retrain through the chapters' own driver (:func:`run_seeds`), so that a change of the
    seeding or of the factories between the specs and the harness shows too. ``task``: the
    harness task the record ran (its type picks the metrics: :data:`_VERIFIABLE_TASKS`);
    ``metrics``: the chapter setup's own accumulator factory, where it has one."""
    from .. import metrics as metrics_module
    from ..results import _jsonable, package_differences
    from ._base import run_seeds

    kind = type(task).__name__ if task is not None else "SegmentationTask"
    names = list(getattr(spec.dataset_class, "class_names", [str(c) for c in range(num_classes)]))
    if metrics is None and kind == "ClassificationTask":
        def metrics():
            return metrics_module.ClassificationMetrics(num_classes, class_names=names)
    elif metrics is None and num_classes == 1:
        metrics = metrics_module.ForegroundMetrics
    elif metrics is None:
        def metrics():
            return metrics_module.SegmentationMetrics(num_classes, class_names=names)
    counts = getattr(splits.train, "pixel_counts", None)

    def class_counts():
        import torch

        return torch.as_tensor(counts).sum(dim=0)

    overrides = {k: v for k, v in record.config["train"].items()
                 if k not in ("steps", "batch_size", "lr", "eval_every", "seed", "device", "progress")}
    (result,) = run_seeds(
        record.name, lambda: model.build(num_classes),
        lambda: arm.build_loss(num_classes, class_counts=class_counts if counts is not None else None),
        splits, profile, metrics, device=device, train_overrides={**overrides, "progress": False},
        seeds=[record.seed], task=task)
    fresh = _jsonable(result.metrics)  # as a record stores it (non-finite numbers as null)
    differences, worst, compared = {}, 0.0, 0
    for key, old in record.metrics.items():
        # times differ by nature; confusion matrices are raw pixel counts (one pixel is 1),
        # the metrics derived from them are compared
        if key.endswith(("time_s", "class_names", "confusion_matrix")):
            continue
        new = fresh.get(key)
        a, b = _numbers(old), _numbers(new)
        if len(a) != len(b):
            differences[key] = (old, new)
            worst = math.inf
            continue
        compared += 1
        # NaN on both sides is equal (an undefined metric stays undefined); NaN on one side is not
        gaps = [0.0 if (math.isnan(x) and math.isnan(y)) else math.inf if (math.isnan(x) or math.isnan(y))
                else abs(x - y) for x, y in zip(a, b)]
        gap = max(gaps, default=0.0)
        if gap > 0:
            differences[key] = (old, new)
            worst = max(worst, gap)
    packages = package_differences(record.provenance.get("packages", {}))
    return Verification(str(path), record.name, record.seed, compared, differences, worst, packages,
                        float(tolerance))


def record_code_paths(record) -> Tuple[str, ...]:
    """The library folders whose code shapes ``record``'s numbers: :data:`CODE_PATHS` and the
    ``code_paths`` of the chapter the record names (when it is a chapter of the book)."""
    from . import CHAPTERS, get_chapter

    chapter = (getattr(record, "config", None) or {}).get("chapter")
    extra = tuple(get_chapter(chapter).CHAPTER.code_paths) if chapter in CHAPTERS else ()
    return CODE_PATHS + tuple(p for p in extra if p not in CODE_PATHS)


def stale_paths(record, repo: Union[str, Path, None] = None) -> Optional[List[str]]:
    """The files of :func:`record_code_paths` (:data:`CODE_PATHS` and the record's chapter's
    own) whose code changed since the commit that made
    ``record`` (a :class:`~pixelweight.results.RunRecord`): empty when the record is current,
    ``None`` when it cannot be told (no git, or the commit is not in this clone). A Python
    file counts as changed when its code changed (:func:`code_changed`): a reworded docstring
    or comment, or a new loss added beside the old ones, changes no number of an existing
    record; nor does a new file of definitions only. Renames count as a removal and an
    addition. A record made from a tree with uncommitted changes is stale by its own account.

    A record whose provenance lists the files its run executed (``code_files``, written after
    a ``full`` run by :func:`run_chapter` or by ``python -m pixelweight.results trace``:
    :mod:`pixelweight.chapters._trace`; traced at the record's own commit) is judged
    per file: a file it executed counts whole; a file it never executed counts only when
    something outside its function bodies changed (:func:`code_changed` with
    ``function_bodies=False``), so that speeding up one loss does not stale the records of
    losses that never call it."""
    commit = record.provenance.get("git_commit")
    if not commit or commit == "unknown":
        return None
    repo = Path(repo) if repo is not None else Path(__file__).resolve().parents[3]
    head = _git(str(repo), "rev-parse", "HEAD")
    changed = _changed_code(str(repo), commit, head.strip(), record_code_paths(record)) if head else None
    if changed is None:
        return None
    changed = list(changed)
    executed = traced_code_files(record)
    if executed is not None:  # a file the run never executed counts only if more than its function bodies changed
        changed = [name for name in changed
                   if name in executed or _changed_outside_functions(str(repo), commit, head.strip(), name)]
    if record.provenance.get("git_dirty"):
        changed.append("(uncommitted changes when the record was made)")
    return changed


def _git(repo: str, *args: str) -> Optional[str]:
    try:
        out = subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, errors="surrogateescape",
                             timeout=30)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout if out.returncode == 0 else None


@functools.lru_cache(maxsize=64)
def _changed_code(repo: str, commit: str, head: str, paths: Tuple[str, ...] = CODE_PATHS
                  ) -> Optional[Tuple[str, ...]]:
    """The files under ``paths`` whose code differs between ``commit`` and ``head``
    (cached: the records of a chapter share a few commits)."""
    names = _git(repo, "diff", "--name-only", "--no-renames", commit, head, "--", *paths)
    if names is None:
        return None
    changed = []
    for name in (line.strip() for line in names.splitlines()):
        if not name:
            continue
        before, after = _git(repo, "show", f"{commit}:{name}"), _git(repo, "show", f"{head}:{name}")
        if before is None and after is not None and _inert(
                after, name, source=lambda path: _git(repo, "show", f"{head}:{path}")):
            continue  # a new file of definitions only: it changes nothing until old code uses it
        if before is None or after is None or code_changed(before, after, name):
            changed.append(name)  # removed, or changed code
    return tuple(changed)


def traced_code_files(record) -> Optional[frozenset]:
    """The library files ``record``'s run executed (``provenance["code_files"]``), or ``None``
    when the record does not say (an older record, or one trained with data-loader workers,
    whose calls a trace cannot see)."""
    files = (getattr(record, "provenance", None) or {}).get("code_files")
    train = ((getattr(record, "config", None) or {}).get("train") or {})
    if not isinstance(files, list) or not all(isinstance(f, str) for f in files) or train.get("num_workers", 0):
        return None
    if not any(f.endswith("train/loop.py") for f in files):  # not a trace of a training run: say nothing
        return None
    trace = record.provenance.get("code_trace") or {}
    if trace.get("commit") != record.provenance.get("git_commit"):  # traced at another commit's code
        return None
    return frozenset(files)


@functools.lru_cache(maxsize=256)
def _changed_outside_functions(repo: str, commit: str, head: str, name: str) -> bool:
    """Whether ``name`` changed between ``commit`` and ``head`` anywhere but in the bodies of
    its functions and methods (a file added or removed counts as changed)."""
    before, after = _git(repo, "show", f"{commit}:{name}"), _git(repo, "show", f"{head}:{name}")
    if before is None or after is None:
        return True
    return code_changed(before, after, name, function_bodies=False)


def code_changed(before: str, after: str, name: str = "file.py", *, function_bodies: bool = True) -> bool:
    """Whether two versions of a file differ in what they compute for code that existed before.

    For Python, their syntax trees are compared with every docstring and the ``__all__``
    lists removed (comments and formatting are not in the tree; ``from m import a, b`` is
    read as one import per name). A change that only *adds* to a module is no change: new
    imports (not ``*``), functions and classes (undecorated, or decorated by
    ``functools.lru_cache`` / ``functools.cache`` only) and constants (a literal, or
    arithmetic on literals) under names the module did not bind before and that are not
    builtins, and new ``register_loss(...)`` calls without ``replace`` (a chapter adding a
    loss registers it; the losses a record ran are untouched). Any other difference counts. Any other file, or
    Python that does not parse, is compared by its text. What this rule cannot see (code a
    new import runs) is what ``verify``, which retrains a record, is for.

    With ``function_bodies=False`` the bodies of functions and methods are left out of the
    comparison (their signatures, defaults and decorators stay in): what changes when a
    module is imported, not what its functions do when called."""
    import ast

    if not name.endswith(".py"):
        return before != after
    try:
        old, new = (_without_docstrings(ast.parse(text)).body for text in (before, after))
    except SyntaxError:
        return before != after
    if not function_bodies:
        old, new = _without_function_bodies(old), _without_function_bodies(new)
    old, new = ([one for st in body if not _is_all(st) for one in _one_import_per_name(st)] for body in (old, new))
    old_dumps, new_dumps = [ast.dump(st) for st in old], [ast.dump(st) for st in new]
    if old_dumps == new_dumps:
        return False
    bound = _module_bound(old)
    aliases = _import_aliases(new)
    kept = iter(old_dumps)
    pending = next(kept, None)
    for st, dump in zip(new, new_dumps):
        if dump == pending:
            pending = next(kept, None)
        elif not _is_addition(st, bound, aliases=aliases):
            return True
    return pending is not None  # a statement of the old module is gone


def _inert(text: str, name: str, source: Optional[Callable[[str], Optional[str]]] = None) -> bool:
    """Whether a new file only defines things (:func:`code_changed`'s additions; decorators of
    :data:`_NEW_FILE_DECORATORS` too): importing it changes nothing that existed. Its
    constants may call :data:`_PURE_CALLS`, ``math`` and pure functions of the library
    (:func:`_pure_function`, read through ``source(path)``: a file's text, ``None`` when
    absent; without it, none), e.g. a kernel built once at import, and ``register_loss``
    without ``replace``; nothing else."""
    import ast

    if not name.endswith(".py"):
        return False
    try:
        body = _without_docstrings(ast.parse(text)).body
    except SyntaxError:
        return False
    bound: set = set()
    aliases = _import_aliases(body)
    relative = {}
    for st in body:
        if isinstance(st, ast.ImportFrom) and st.level > 0:
            for alias in st.names:
                relative[alias.asname or alias.name] = (_relative_module_paths(name, st, alias.name), alias.name)

    def pure(called: str) -> bool:
        if called not in relative or source is None:
            return False
        paths, real = relative[called]
        return real == "register_loss" or any(_pure_function(p, real, source) for p in paths)

    for st in body:
        if isinstance(st, ast.ImportFrom) and st.module == "__future__":
            continue  # it changes how this new file reads, nothing else
        if isinstance(st, (ast.Assign, ast.AnnAssign)) and st.value is not None and all(
                isinstance(t, ast.Name) for t in (st.targets if isinstance(st, ast.Assign) else [st.target])):
            if not (_calls_only(st.value, pure, aliases)
                    and (not isinstance(st, ast.AnnAssign) or _calls_nothing(st.annotation))):
                return False
        elif not (_is_all(st) or _is_addition(st, bound, decorators=_NEW_FILE_DECORATORS, aliases=aliases)):
            return False
        bound |= set(_bound_names(st))
    return True


def _relative_module_paths(name: str, statement, imported: str) -> List[str]:
    """The files a relative ``from <dots><module> import <imported>`` in the file ``name`` can
    read ``imported`` from: the module's file (or package ``__init__``)."""
    base = Path(name).parent
    for _ in range(statement.level - 1):
        base = base.parent
    module = base.joinpath(*statement.module.split(".")) if statement.module else base
    return [module.with_suffix(".py").as_posix(), (module / "__init__.py").as_posix()]


#: Callables a new file's constants may call at import: they build values and change nothing.
_PURE_CALLS = frozenset({"float", "int", "str", "bool", "tuple", "list", "dict", "set", "frozenset", "range",
                         "len", "min", "max", "abs", "round", "torch.compiler.disable"})
#: Builtins a pure library function may call (with keyword values that hand over no callable).
_PURE_BUILTINS = frozenset({"float", "int", "str", "bool", "tuple", "list", "dict", "set", "frozenset", "range",
                            "len", "min", "max", "abs", "round", "sum", "any", "all", "zip", "enumerate",
                            "reversed", "isinstance", "divmod", "pow", "ValueError", "TypeError"})


def _pure_function(path: str, func: str, source: Callable[[str], Optional[str]], depth: int = 0) -> bool:
    """Whether the top-level, undecorated function ``func`` of the file ``path`` changes
    nothing outside itself when called: no ``global``, no store into anything but its own
    locals, and calls only to :data:`_PURE_BUILTINS`, ``math``, methods of its own locals and
    (three levels deep) other such functions of the library."""
    import ast

    text = source(path) if depth <= 3 else None
    if text is None:
        return False
    try:
        tree = ast.parse(text)
    except SyntaxError:
        return False
    defs = {st.name: st for st in tree.body if isinstance(st, ast.FunctionDef)}
    node = defs.get(func)
    if node is None or node.decorator_list:
        return False
    aliases = _import_aliases(tree.body)
    relative = {(a.asname or a.name): (_relative_module_paths(path, st, a.name), a.name)
                for st in tree.body if isinstance(st, ast.ImportFrom) and st.level > 0 for a in st.names}
    module_bound = _module_bound(tree.body)
    a = node.args
    local = {p.arg for p in a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p]}
    local |= {n.id for n in ast.walk(node) if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Store)}

    def root(expr):
        while isinstance(expr, (ast.Attribute, ast.Subscript, ast.Call)):
            expr = expr.func if isinstance(expr, ast.Call) else expr.value
        return expr.id if isinstance(expr, ast.Name) else None

    for n in ast.walk(node):
        if isinstance(n, (ast.Global, ast.Nonlocal, ast.Await, ast.Yield, ast.YieldFrom)):
            return False
        if isinstance(n, (ast.Attribute, ast.Subscript)) and isinstance(n.ctx, (ast.Store, ast.Del)) \
                and root(n) not in local:
            return False
        if not isinstance(n, ast.Call):
            continue
        f = n.func
        if isinstance(f, ast.Name):
            if f.id in local:
                continue
            if f.id in _PURE_BUILTINS and f.id not in module_bound:
                if any(isinstance(k.value, ast.Attribute) or (isinstance(k.value, ast.Name) and k.value.id not in local
                                                               and k.value.id not in _PURE_BUILTINS)
                       for k in n.keywords):
                    return False
                continue
            if f.id in defs and f.id != func:
                if _pure_function(path, f.id, source, depth + 1):
                    continue
                return False
            if f.id in relative:
                paths, real = relative[f.id]
                if any(_pure_function(p, real, source, depth + 1) for p in paths):
                    continue
            return False
        if isinstance(f, ast.Attribute):
            base = root(f)
            if base in local:
                continue  # a method of its own value (a list's append)
            if base is not None and aliases.get(base, base) == "math" and base not in local:
                continue
        return False
    return True


def _calls_only(node, pure, aliases) -> bool:
    """Whether every call in ``node`` is to :data:`_PURE_CALLS` / ``math`` (without keywords,
    which could hand a callable over to be called), to a name ``pure(name)`` accepts (a pure
    library function), or ``register_loss`` as :func:`_is_addition` allows it."""
    import ast

    for n in ast.walk(node):
        if isinstance(n, (ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr, ast.Lambda)):
            return False
        if not isinstance(n, ast.Call):
            continue
        dotted = ast.unparse(n.func)
        head, _, rest = dotted.partition(".")
        if not rest and pure(head):
            if aliases.get(head, "").endswith("register_loss") or head == "register_loss":
                if not _is_addition(ast.Expr(value=n), set()):
                    return False
            continue
        resolved = aliases.get(head, head) + ("." + rest if rest else "")
        if (resolved not in _PURE_CALLS and not resolved.startswith("math.")) or n.keywords:
            return False
    return True


def _is_all(statement) -> bool:
    import ast

    targets = statement.targets if isinstance(statement, ast.Assign) else \
        [statement.target] if isinstance(statement, (ast.AugAssign, ast.AnnAssign)) else []
    return any(isinstance(t, ast.Name) and t.id == "__all__" for t in targets)


def _bound_names(statement) -> List[str]:
    """The module-level names ``statement`` binds, through ``if`` / ``try`` / ``for`` /
    ``while`` / ``with`` blocks and ``global`` declarations too."""
    import ast

    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return [statement.name]
    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        return [(a.asname or a.name).split(".")[0] for a in statement.names]
    names = []
    todo = [statement]
    while todo:
        node = todo.pop()
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.append(node.name)  # a definition inside a block: its name, not its body
            continue
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            names += [(a.asname or a.name).split(".")[0] for a in node.names]
        elif isinstance(node, ast.Name) and isinstance(node.ctx, (ast.Store, ast.Del)):
            names.append(node.id)
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            names += list(node.names)
        elif isinstance(node, ast.Lambda):
            continue
        todo.extend(ast.iter_child_nodes(node))
    return names


def _module_bound(body) -> set:
    return {n for st in body for n in _bound_names(st)}


def _one_import_per_name(statement) -> list:
    """``from m import a, b`` as ``from m import a`` and ``from m import b`` (the same
    bindings), so that importing one more name from a module reads as an addition."""
    import ast

    if isinstance(statement, ast.ImportFrom) and len(statement.names) > 1:
        return [ast.ImportFrom(module=statement.module, names=[alias], level=statement.level)
                for alias in statement.names]
    if isinstance(statement, ast.Import) and len(statement.names) > 1:
        return [ast.Import(names=[alias]) for alias in statement.names]
    return [statement]


#: Decorators that only wrap a new function (nothing else happens at import): a new
#: definition under them is still an addition (with literal arguments only).
_PURE_DECORATORS = frozenset({"functools.lru_cache", "functools.cache"})
#: In a new file, also the decorators that build a class or a method and touch nothing else.
_NEW_FILE_DECORATORS = _PURE_DECORATORS | {"dataclasses.dataclass", "staticmethod", "classmethod", "property",
                                           "typing.overload", "torch.no_grad"}


def _pure_decorator(node, allowed, aliases) -> bool:
    """Whether ``node`` is one of ``allowed`` (dotted names, resolved through the module's
    imports ``aliases``: ``{bound name: dotted name}``), called with literal arguments only."""
    import ast

    if isinstance(node, ast.Call):  # lru_cache(maxsize=None)
        args = list(node.args) + [k.value for k in node.keywords]
        return _pure_decorator(node.func, allowed, aliases) and all(_is_literal(a) for a in args)
    dotted = ast.unparse(node)
    head, _, rest = dotted.partition(".")
    resolved = aliases.get(head, head if head in {"staticmethod", "classmethod", "property"} else None)
    return resolved is not None and (resolved + ("." + rest if rest else "")) in allowed


def _import_aliases(body) -> Dict[str, str]:
    """``{name: what it names}`` for the module's top-level imports (``lru_cache`` ->
    ``functools.lru_cache``, ``F`` -> ``torch.nn.functional``)."""
    import ast

    aliases = {}
    for st in body:
        if isinstance(st, ast.Import):
            for a in st.names:
                aliases[a.asname or a.name.split(".")[0]] = a.name if a.asname else a.name.split(".")[0]
        elif isinstance(st, ast.ImportFrom) and st.level == 0 and st.module:
            for a in st.names:
                aliases[a.asname or a.name] = f"{st.module}.{a.name}"
    return aliases


def _is_literal(node) -> bool:
    """A literal, a dotted name (``torch.float32``: an attribute of a module), or arithmetic and
    containers of these: evaluating it calls nothing."""
    import ast

    if isinstance(node, ast.Constant):
        return True
    if isinstance(node, ast.Attribute):
        while isinstance(node, ast.Attribute):
            node = node.value
        return isinstance(node, ast.Name)
    if isinstance(node, ast.UnaryOp):
        return _is_literal(node.operand)
    if isinstance(node, ast.BinOp):
        return _is_literal(node.left) and _is_literal(node.right)
    if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
        return all(_is_literal(e) for e in node.elts)
    if isinstance(node, ast.Dict):
        return all(k is not None and _is_literal(k) for k in node.keys) and all(_is_literal(v) for v in node.values)
    return False


def _calls_nothing(node) -> bool:
    """No call in ``node`` (a default value, a base class, an annotation): reading names and
    attributes and building literals only."""
    import ast

    return node is None or not any(isinstance(n, (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr))
                                   for n in ast.walk(node))


def _plain_definition(node, allowed, aliases) -> bool:
    """A function or class whose definition runs nothing but building it: decorators of
    ``allowed`` only, defaults, annotations and base classes that call nothing, no keyword
    (``metaclass=``), and, in a class body, only such definitions, literal constants,
    annotated fields and ``pass``."""
    import ast

    if not all(_pure_decorator(d, allowed, aliases) for d in node.decorator_list):
        return False
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
        a = node.args
        params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]
        parts = list(a.defaults) + [d for d in a.kw_defaults if d is not None] + \
            [p.annotation for p in params] + [node.returns]
        return all(_calls_nothing(x) for x in parts)
    if node.keywords or not all(_calls_nothing(b) for b in node.bases):
        return False
    for st in node.body:
        if isinstance(st, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            if not _plain_definition(st, allowed, aliases):
                return False
        elif isinstance(st, ast.Assign):
            if not (all(isinstance(t, ast.Name) for t in st.targets) and _is_literal(st.value)):
                return False
        elif isinstance(st, ast.AnnAssign):
            if not (isinstance(st.target, ast.Name) and _calls_nothing(st.annotation)
                    and (st.value is None or _is_literal(st.value))):
                return False
        elif not isinstance(st, ast.Pass):
            return False
    return True


def _is_addition(statement, bound, decorators=_PURE_DECORATORS, aliases=None) -> bool:
    """A top-level statement that adds to a module without touching what it had, under names
    that are neither bound already (``bound``) nor builtins: a new import (not ``*``, not
    ``__future__``); a plain new function or class (:func:`_plain_definition`, decorators of
    ``decorators`` only, resolved through ``aliases``, the module's imports); a new literal
    constant; or a ``register_loss(name, factory[, options[, help]])`` call (without
    ``replace``: a chapter adding a loss registers it, the losses a record ran are
    untouched)."""
    import ast
    import builtins

    def new_names(names) -> bool:
        return bool(names) and not (names & bound or any(hasattr(builtins, n) for n in names))

    if isinstance(statement, (ast.Import, ast.ImportFrom)):
        if isinstance(statement, ast.ImportFrom) and (statement.module == "__future__"
                                                      or any(a.name == "*" for a in statement.names)):
            return False
        return new_names(set(_bound_names(statement)))
    if isinstance(statement, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return _plain_definition(statement, decorators, aliases or {}) and new_names({statement.name})
    if isinstance(statement, (ast.Assign, ast.AnnAssign)) and statement.value is not None:
        targets = statement.targets if isinstance(statement, ast.Assign) else [statement.target]
        if all(isinstance(t, ast.Name) for t in targets) and _is_literal(statement.value):
            return new_names({t.id for t in targets})
        return False
    if isinstance(statement, ast.Expr) and isinstance(statement.value, ast.Call):
        call = statement.value
        func = call.func.id if isinstance(call.func, ast.Name) else getattr(call.func, "attr", None)
        return (func == "register_loss" and len(call.args) <= 4 and not any(isinstance(a, ast.Starred) for a in call.args)
                and all(k.arg not in ("replace", None) for k in call.keywords))
    return False


def _without_function_bodies(body):
    """``body`` (a module's statements) with every function and method reduced to what runs
    when it is defined: its decorators, default values and any annotation that calls
    something (the parameters' names and the body run only when it is called); class bodies
    are kept, with their methods reduced the same way."""
    import ast

    def calls(node) -> bool:
        return node is not None and any(isinstance(n, ast.Call) for n in ast.walk(node))

    for node in body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            a = node.args
            params = a.posonlyargs + a.args + a.kwonlyargs + [p for p in (a.vararg, a.kwarg) if p is not None]
            evaluated = list(a.defaults) + [d for d in a.kw_defaults if d is not None] + \
                [p.annotation for p in params if calls(p.annotation)] + ([node.returns] if calls(node.returns) else [])
            node.args = ast.arguments(posonlyargs=[], args=[], vararg=None, kwonlyargs=[], kw_defaults=[],
                                      kwarg=None, defaults=evaluated)
            node.returns = None
            node.body = [ast.Pass()]
        elif isinstance(node, ast.ClassDef):
            _without_function_bodies(node.body)
        else:  # functions defined under if / try / with at import time
            for field in ("body", "orelse", "finalbody"):
                if isinstance(getattr(node, field, None), list):
                    _without_function_bodies(getattr(node, field))
            for handler in getattr(node, "handlers", []) or []:
                _without_function_bodies(handler.body)
            for case in getattr(node, "cases", []) or []:
                _without_function_bodies(case.body)
    return body


def _without_docstrings(tree):
    import ast

    for node in ast.walk(tree):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
                    and isinstance(body[0].value.value, str):
                node.body = body[1:] or [ast.Pass()]
    return tree
