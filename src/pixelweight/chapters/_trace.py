r"""Which library files a run executes: what makes the staleness rule per record.

A record is stale when code it depends on changed after its commit
(:func:`~pixelweight.chapters._runner.stale_paths`). Without more knowledge that is every file
under the library folders that shape numbers (losses, models, data, train, metrics and the
shared input checks): a change to one loss would stale the records of every chapter, even those
that never call it. This module finds, for a record, the files whose *functions* its run
executes, and stores them in the record's provenance (``code_files``, with ``code_trace``
saying how they were found). A change confined to the bodies of functions in a file that the
run never executed cannot change its numbers; any other change still stales it.

How the files are found. For each record's commit, a clean checkout of that commit (a
temporary ``git worktree``) is made; the record's own code, not today's, is traced. For each
chapter, stage, data variant and arm, a fresh Python process with an empty data cache installs
a trace hook (:func:`sys.settrace`) *before* it imports the library, imports every module of
the library (so that every function that runs at import time is seen) and reruns the
stage's ``full`` configuration at that commit (data sizes, model, loss, training settings,
seed) for :data:`TRACE_STEPS` steps, evaluating every
:data:`TRACE_EVAL_EVERY` steps and logging every step (so that data generation, evaluation,
plateau bookkeeping, the stage's logging hooks and the final test evaluation all run). Only the
budget changes, and what the setup derives from it (its ``BUDGET_DERIVED`` config keys: the
zoom chapter's blur warm-up); a
learning-rate warm-up as long as the traced run is shortened to fit it (the same code runs)
and compared at the stage's length. The
traced run writes its own record, whose configuration must equal the record's but for the
budget (and the device, the record having been trained on a CPU): otherwise nothing is
traced. A file enters the set when any function, method, lambda or comprehension defined in
it runs (module and class bodies do not count: their code is compared whole).

What the rule then assumes. A file the run executed counts whole; a file it did not execute
counts when anything outside its function bodies changed (imports, constants, decorators,
defaults, class attributes, calls at import time). For a function body of an unexecuted file
to matter, code that runs would have to start calling it. When that code is the library's
(losses, models, data, train, metrics, the input checks) it changed, so it counts; when it
is a chapter's driver (``pixelweight.chapters``), which the rule does not judge, a record
whose stage specs changed no longer matches its stage and is left out, and ``verify`` covers
the rest. What the short run cannot see is a file *all* of whose functions run only late in a
long run or on rare events; none of the library's files is like that today (the loop, its
plateau, guards and schedule run from the first steps). Records trained with data-loader worker
processes, on a GPU or on several processes are not traced: the trace runs on one CPU process.
``verify``, which retrains a record, remains the final check.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

__all__ = ["TRACE_STEPS", "TRACE_EVAL_EVERY", "trace_records", "traced_files"]

#: Training steps of a traced rerun (evaluation every :data:`TRACE_EVAL_EVERY` steps).
TRACE_STEPS = 4
TRACE_EVAL_EVERY = 2

# The child process, written against the chapter API every traced commit has (get_chapter,
# Setup.variant / arm / run_arm / scale). The hook goes in before anything of the library is
# imported. A code object with CO_OPTIMIZED (flag 1) is a function's (def, lambda,
# comprehension); module and class bodies lack it. The hook returns None: no line events.
_BOOT = r"""
import sys, threading
sys.path[:] = [p for p in sys.path if p not in ("", ".")]  # the library from PYTHONPATH only (-P, before 3.11)
_files = set()
_add = _files.add
def _hook(frame, event, arg):
    code = frame.f_code
    if code.co_flags & 1:
        _add(code.co_filename)
    return None
sys.settrace(_hook)
threading.settrace(_hook)
import dataclasses, importlib, json, os, pkgutil
task = json.loads(open(sys.argv[1]).read())
import pixelweight
root = os.path.dirname(os.path.realpath(pixelweight.__file__))
if root != os.path.realpath(task["package"]):
    raise SystemExit(f"imported pixelweight from {root}, not from {task['package']}")
for info in pkgutil.walk_packages(pixelweight.__path__, "pixelweight."):
    if not info.name.endswith("__main__"):
        importlib.import_module(info.name)
import torch
torch.set_num_threads(1)
from pixelweight.chapters import get_chapter
setup = get_chapter(task["chapter"]).setup(task["stage"], "full", device="cpu", results_dir=None)
if task["variant"]:
    setup = setup.variant(task["variant"])
arm = setup.arm(task["arm"])
profile = dataclasses.replace(setup.scale.profile, steps=task["steps"], eval_every=task["eval_every"])
# every arm traces at this budget, one with its own steps too (Scale.arm_budgets, where the commit has them)
own = {"arm_budgets": {}} if any(f.name == "arm_budgets" for f in dataclasses.fields(setup.scale)) else {}
setup.scale = dataclasses.replace(setup.scale, profile=profile, **own)
# a learning-rate warm-up as long as the traced run or longer is shortened to fit it (the same code runs)
warmup = setup.scale.train.get("warmup_steps", 0)
shortened = warmup >= task["steps"]
if shortened:
    setup.scale = dataclasses.replace(setup.scale, train={**setup.scale.train, "warmup_steps": task["steps"] - 1})
setup.results_dir = task["records"]
budget = setup.scale.profile_of(arm) if hasattr(setup.scale, "profile_of") else setup.scale.profile
if (budget.steps, budget.eval_every) != (task["steps"], task["eval_every"]):
    raise SystemExit(f"the traced run would train {budget.steps} steps, not the trace's {task['steps']}")
setup.run_arm(arm, seeds=[task["seed"]], log_every=1)
if sys.gettrace() is not _hook:
    raise SystemExit("the trace hook was replaced during the run")
sys.settrace(None)
# the traced run's own record must describe the record's run, but for the budget
(made,) = [os.path.join(task["records"], f) for f in os.listdir(task["records"]) if f.endswith(".json")]
ours = json.loads(open(made).read())["config"]
if shortened:  # compared as the stage has it, where the traced run used the shortened warm-up
    for key in ("train", "train_overrides"):
        if isinstance(ours.get(key), dict) and ours[key].get("warmup_steps") == task["steps"] - 1:
            ours[key]["warmup_steps"] = warmup
# what the setup derives from the budget ("section.key"); a commit older than Setup.BUDGET_DERIVED
# derived one key, in the zoom chapter only: its blur warm-up (a fraction of the steps)
derived = getattr(type(setup), "BUDGET_DERIVED", ("model.blur_warmup_steps",))
def _strip(config):
    config = json.loads(json.dumps(config))
    drops = [("profile", "steps"), ("profile", "eval_every"), ("train_overrides", "log_every")]
    drops += [("train", k) for k in ("steps", "eval_every", "log_every", "seed", "device")]
    drops += [tuple(name.split(".", 1)) for name in derived]
    for key, k in drops:
        (config.get(key) or {}).pop(k, None)
    return config
a, b = _strip(ours), _strip(task["config"])
differ = []
for k in sorted(set(a) | set(b)):
    if a.get(k) != b.get(k):
        if isinstance(a.get(k), dict) and isinstance(b.get(k), dict):
            differ += [f"{k}.{j}" for j in sorted(set(a[k]) | set(b[k])) if a[k].get(j) != b[k].get(j)]
        else:
            differ.append(k)
if differ:
    raise SystemExit(f"the record's config differs from its stage's at its commit in {differ}")
with open(sys.argv[2], "w") as out:
    json.dump({"files": sorted(_files), "config_checked": True}, out)
"""


def _git(repo: Path, *args: str) -> subprocess.CompletedProcess:
    try:
        return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.SubprocessError) as err:
        raise RuntimeError(f"git {' '.join(args[:2])} failed: {err}") from None


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[3]


def _relative(files, src: Path) -> List[str]:
    """The library's files among ``files`` (absolute paths under ``src/pixelweight`` of a
    checkout whose ``src`` is ``src``), as ``src/pixelweight/...``."""
    root = (src / "pixelweight").resolve()
    out = set()
    for name in files:
        try:
            rel = Path(name).resolve().relative_to(root)
        except (ValueError, OSError):
            continue
        out.add(f"src/pixelweight/{rel.as_posix()}")
    return sorted(out)


def _trace_one(src: Path, task: Mapping[str, Any], python: str, timeout: float) -> Dict[str, Any]:
    """Trace one task in a fresh process on the checkout whose ``src`` folder is ``src``."""
    with tempfile.TemporaryDirectory() as tmp:
        task_file, out_file, cache = Path(tmp) / "task.json", Path(tmp) / "files.json", Path(tmp) / "cache"
        cache.mkdir()
        records = Path(tmp) / "records"
        records.mkdir()
        task_file.write_text(json.dumps({**task, "package": str(src / "pixelweight"), "steps": TRACE_STEPS,
                                         "eval_every": TRACE_EVAL_EVERY, "records": str(records)}))
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIXELWEIGHT_GIT_COMMIT")}
        env.update({"PYTHONPATH": str(src), "OMP_NUM_THREADS": "1", "PIXELWEIGHT_CACHE": str(cache),
                    "PIXELWEIGHT_PROGRESS": "0"})
        try:
            done = subprocess.run([python, "-c", _BOOT, str(task_file), str(out_file)], env=env, cwd=tmp,
                                  capture_output=True, text=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"tracing took longer than {timeout:.0f} s") from None
        except OSError as err:
            raise RuntimeError(f"cannot start {python}: {err}") from None
        if done.returncode != 0:
            raise RuntimeError(f"tracing failed (exit {done.returncode}): {done.stderr.strip()[-2000:]}")
        result = json.loads(out_file.read_text())
    files = _relative(result["files"], src)
    if not any(f.endswith("train/loop.py") for f in files):
        raise RuntimeError(f"the trace saw no training loop ({len(files)} library files): not a trace of the run")
    return {"files": files, "config_checked": bool(result["config_checked"])}


def traced_files(tasks: Mapping[str, Mapping[str, Any]], commit: str, *, python: Optional[str] = None,
                 timeout: float = 1800.0, repo: Union[str, Path, None] = None) -> Dict[str, Any]:
    """Trace each task (``{key: {"chapter", "stage", "variant", "arm", "seed", "config"}}``,
    ``config`` the record's) at ``commit``, each in a fresh process on a clean checkout of that
    commit: ``{key: {"files": sorted library files whose functions ran
    (src/pixelweight/...), "config_checked": bool}}`` or ``{key: "error: ..."}``."""
    repo = Path(repo) if repo is not None else _repo_root()
    if not tasks:
        return {}
    out: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tree = Path(tmp) / "tree"
        _git(repo, "worktree", "prune")  # what a killed trace left behind
        added = _git(repo, "worktree", "add", "--detach", "--quiet", str(tree), commit)
        if added.returncode != 0:
            raise RuntimeError(f"cannot check out {commit}: {added.stderr.strip()}")
        try:
            for key, task in tasks.items():
                try:
                    out[key] = _trace_one(tree / "src", task, python or sys.executable, timeout)
                except RuntimeError as err:
                    out[key] = f"error: {err}"
        finally:
            _git(repo, "worktree", "remove", "--force", str(tree))
    return out


def _torch_version() -> str:
    import torch

    return str(torch.__version__)


def _untraceable(record) -> Optional[str]:
    """Why ``record`` cannot be traced, or ``None``."""
    from . import CHAPTERS

    config, prov = record.config, record.provenance
    if config.get("chapter") not in CHAPTERS or not isinstance(config.get("loss"), Mapping):
        return "not a chapter's record"
    if not isinstance(config.get("stage"), str) or not isinstance(config["loss"].get("label"), str):
        return "not a chapter's record"
    if (config.get("train") or {}).get("num_workers", 0):
        return "trained with data-loader workers: not traceable"
    if config.get("world_size", 1) not in (None, 1) or not str(record.device or "").startswith("cpu"):
        return "trained on a GPU or on several processes: not traceable on one CPU process"
    commit = prov.get("git_commit")
    if not isinstance(commit, str) or commit == "unknown" or prov.get("git_dirty") is not False:
        return "made from an unknown commit or from uncommitted code"
    return None


def trace_records(paths: Sequence[Union[str, Path]], *, force: bool = False, log=print,
                  repo: Union[str, Path, None] = None) -> Dict[str, str]:
    """Add ``code_files`` (and ``code_trace``) to the provenance of each record at ``paths``
    that lacks them (all with ``force``), traced at the record's own commit.

    Records of one commit, chapter, stage, variant and arm share one trace, run at their
    lowest seed (the seed changes the numbers, not which code runs). Each record is written
    back to its own path, unchanged but for the two provenance fields. Returns
    ``{path: outcome}``, the outcome being ``"traced"`` or why not."""
    from ..results import load_record, save_record

    repo = Path(repo) if repo is not None else _repo_root()
    outcome: Dict[str, str] = {}
    groups: Dict[tuple, Dict[str, Any]] = {}
    members: Dict[tuple, List[Path]] = {}
    for item in paths:
        path = Path(item)
        try:
            if path.suffix != ".json":
                raise ValueError("not a .json file")
            record = load_record(path)
        except (ValueError, FileNotFoundError) as err:
            outcome[str(path)] = f"not a record ({err})"
            continue
        if record.provenance.get("code_files") is not None and not force:
            outcome[str(path)] = "already traced"
            continue
        why = _untraceable(record)
        commit = record.provenance.get("git_commit")
        if why is None and _git(repo, "cat-file", "-e", f"{commit}^{{commit}}").returncode != 0:
            why = f"its commit {commit} is not in this clone"
        if why is not None:
            outcome[str(path)] = why
            continue
        config = record.config
        # one trace per configuration but the seed (a stray record of another budget is its own group)
        same = json.dumps({**config, "train": {k: v for k, v in (config.get("train") or {}).items() if k != "seed"}},
                          sort_keys=True, default=str)
        key = (commit, config["chapter"], config["stage"], config.get("variant", "") or "", config["loss"]["label"],
               same)
        task = groups.setdefault(key, {"chapter": key[1], "stage": key[2], "variant": key[3], "arm": key[4],
                                       "seed": int(record.seed), "config": config})
        if int(record.seed) < task["seed"]:
            task.update(seed=int(record.seed), config=config)
        members.setdefault(key, []).append(path)
    by_commit: Dict[str, Dict[str, Any]] = {}
    keys: Dict[str, tuple] = {}
    for i, (key, task) in enumerate(groups.items()):
        by_commit.setdefault(key[0], {})[str(i)] = task
        keys[str(i)] = key
    for commit, tasks in sorted(by_commit.items()):
        log(f"tracing {len(tasks)} configuration(s) at {commit[:10]}", flush=True)
        try:
            found = traced_files(tasks, commit, repo=repo)
        except RuntimeError as err:
            found = {k: f"error: {err}" for k in tasks}
        for index, result in found.items():
            key = keys[index]
            for path in members[key]:
                if isinstance(result, str):
                    outcome[str(path)] = result
                    stale_trace = load_record(path)
                    if stale_trace.provenance.pop("code_files", None) is not None:  # a failed retrace
                        stale_trace.provenance.pop("code_trace", None)
                        save_record(stale_trace, path.parent, filename=path.name)
                    continue
                record = load_record(path)
                record.provenance["code_files"] = result["files"]
                record.provenance["code_trace"] = {"commit": commit, "steps": TRACE_STEPS,
                                                   "eval_every": TRACE_EVAL_EVERY, "seed": groups[key]["seed"],
                                                   "config_checked": result["config_checked"],
                                                   "torch": _torch_version()}
                save_record(record, path.parent, filename=path.name)
                outcome[str(path)] = "traced"
    return outcome
