r"""Which library files a run executes: what makes the staleness rule per record.

A record is stale when code it depends on changed after its commit
(:func:`~pixelweight.chapters._runner.stale_paths`). Without more knowledge that is every file
under the library folders that shape numbers (losses, models, data, train, metrics): a change to
one loss would stale the records of every chapter, even those that never call it. This module
finds, for a record, the files whose *functions* its run executes, and stores them in the
record's provenance (``code_files``, with ``code_trace`` saying how they were found). A change
confined to the bodies of functions in a file that the run never executed cannot change its
numbers; any other change still stales it.

How the files are found. A fresh Python process installs a trace hook (:func:`sys.settrace`)
*before* it imports the library, imports every module of the library (so that every function
that runs at import time is seen), and then reruns the record's configuration exactly
(chapter, stage, data variant, arm, seed, data sizes, model, loss, training settings) for
:data:`TRACE_STEPS` steps, evaluating every :data:`TRACE_EVAL_EVERY` steps and logging every
step (so that evaluation, plateau bookkeeping, the stage's logging hooks and the final test
evaluation all run). A file enters the set when any function, method, lambda or comprehension
defined in it runs (module and class bodies do not count: their code is compared whole).

Why this is sound. A record is traced only while it is current under the whole-folder rule (no
code of those folders changed since its commit, the tree is clean), so the code traced is the
code that made it. Later, a file the run executed counts whole; a file it did not execute
counts when anything outside its function bodies changed (imports, constants, decorators,
defaults, class attributes, calls at import time). For a function body of an unexecuted file to
matter, some executed code would have to start calling it, and that code changed, so it counts.
What the short run cannot see is a file *all* of whose functions run only late in a long run or
on rare events; none of the library's files is like that today (the loop, the plateau and the
guards run from the first steps). ``verify``, which retrains a record, remains the final check.
A record trained with data-loader worker processes (``num_workers > 0``) is not traced: their
calls would not be seen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

__all__ = ["TRACE_STEPS", "TRACE_EVAL_EVERY", "trace_records", "traced_files"]

#: Training steps of a traced rerun (evaluation every :data:`TRACE_EVAL_EVERY` steps).
TRACE_STEPS = 4
TRACE_EVAL_EVERY = 2

# The child process: the hook goes in before anything of the library is imported. A code object
# with CO_OPTIMIZED (flag 1) is a function's (def, lambda, comprehension); module and class bodies
# lack it. The hook returns None: no line events, only one call per function call.
_BOOT = r"""
import sys, threading
_files = set()
_add = _files.add
def _hook(frame, event, arg):
    code = frame.f_code
    if code.co_flags & 1:
        _add(code.co_filename)
    return None
sys.settrace(_hook)
threading.settrace(_hook)
from pixelweight.chapters._trace import _child
_child(sys.argv[1], sys.argv[2], _files)
"""


def _package_root() -> Path:
    return Path(__file__).resolve().parents[1]  # .../src/pixelweight


def _relative(files, repo_prefix: str = "src/pixelweight") -> List[str]:
    """The library's files among ``files`` (absolute paths), as ``src/pixelweight/...``."""
    root = _package_root()
    out = set()
    for name in files:
        try:
            rel = Path(name).resolve().relative_to(root)
        except (ValueError, OSError):
            continue
        out.add(f"{repo_prefix}/{rel.as_posix()}")
    return sorted(out)


def _import_everything() -> None:
    """Import every module of the library, so that whatever runs at import time is traced."""
    import importlib
    import pkgutil

    import pixelweight

    for info in pkgutil.walk_packages(pixelweight.__path__, "pixelweight."):
        if info.name.endswith("__main__"):
            continue
        importlib.import_module(info.name)


def _job_of(config: Mapping[str, Any]) -> Tuple[str, str, str, str]:
    for key in ("chapter", "stage", "variant"):
        if not isinstance(config.get(key, "" if key == "variant" else None), str):
            raise ValueError(f"the record's config lacks {key!r}: it was not written by a chapter setup")
    return config["chapter"], config["stage"], config.get("variant", ""), config["loss"]["label"]


def _short_setup(chapter: str, stage: str, variant: str):
    """The stage's ``full`` setup with the budget cut to :data:`TRACE_STEPS` steps (data,
    model, loss and training settings unchanged), writing no record."""
    import dataclasses

    from . import get_chapter

    setup = get_chapter(chapter).setup(stage, "full", device="cpu", results_dir=None).variant(variant)
    profile = dataclasses.replace(setup.scale.profile, steps=TRACE_STEPS, eval_every=TRACE_EVAL_EVERY)
    setup.scale = dataclasses.replace(setup.scale, profile=profile)
    return setup


def _child(tasks_path: str, out_path: str, files: set) -> None:
    """Runs in the traced process: import everything, then rerun each task briefly."""
    import torch

    os.environ["PIXELWEIGHT_PROGRESS"] = "0"
    torch.set_num_threads(1)
    _import_everything()
    at_import = set(files)
    tasks = json.loads(Path(tasks_path).read_text())
    out: Dict[str, List[str]] = {}
    for key, task in tasks.items():
        files.clear()
        files.update(at_import)
        setup = _short_setup(task["chapter"], task["stage"], task["variant"])
        setup.run_arm(setup.arm(task["arm"]), seeds=[int(task["seed"])], log_every=1)
        out[key] = _relative(files)
    Path(out_path).write_text(json.dumps(out))


def traced_files(tasks: Mapping[str, Mapping[str, Any]], *, python: Optional[str] = None,
                 timeout: float = 3600.0) -> Dict[str, List[str]]:
    """Trace each task (``{key: {"chapter", "stage", "variant", "arm", "seed"}}``) in one fresh
    process: ``{key: sorted library files whose functions ran}`` (``src/pixelweight/...``)."""
    if not tasks:
        return {}
    with tempfile.TemporaryDirectory() as tmp:
        task_file, out_file = Path(tmp) / "tasks.json", Path(tmp) / "files.json"
        task_file.write_text(json.dumps(tasks))
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(
            [str(_package_root().parent)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        done = subprocess.run([python or sys.executable, "-c", _BOOT, str(task_file), str(out_file)], env=env,
                              capture_output=True, text=True, timeout=timeout)
        if done.returncode != 0:
            raise RuntimeError(f"tracing failed (exit {done.returncode}):\n{done.stderr[-4000:]}")
        return json.loads(out_file.read_text())


def trace_records(paths: Sequence[Union[str, Path]], *, force: bool = False,
                  log=print) -> Dict[str, str]:
    """Add ``code_files`` (and ``code_trace``) to the provenance of each record at ``paths``
    that is current (its commit's code is the code here, the tree is clean, the record
    matches its stage's ``full`` configuration) and lacks them (or all with ``force``).

    Records of one chapter, stage, variant and arm share one trace, run at their lowest seed
    (the seed changes the numbers, not which code runs). Returns
    ``{path: outcome}``, the outcome being ``"traced"`` or why not."""
    from ..results import git_commit, load_record, save_record
    from . import CHAPTERS
    from ._runner import RunJob, _current, stale_paths

    head = git_commit()
    if head.get("dirty") or head.get("commit") in (None, "unknown"):
        raise RuntimeError("tracing needs a clean git checkout: the traced code must be a commit's")
    outcome: Dict[str, str] = {}
    groups: Dict[str, Dict[str, Any]] = {}
    members: Dict[str, List[Path]] = {}
    for item in paths:
        path = Path(item)
        record = load_record(path)
        config = record.config
        prov = record.provenance
        if prov.get("code_files") is not None and not force:
            outcome[str(path)] = "already traced"
            continue
        if config.get("chapter") not in CHAPTERS or "loss" not in config:
            outcome[str(path)] = "not a chapter's record"
            continue
        if (config.get("train") or {}).get("num_workers", 0):
            outcome[str(path)] = "trained with data-loader workers: not traceable"
            continue
        stale = stale_paths(record)
        if stale is None or stale:
            outcome[str(path)] = f"not current ({stale if stale else 'commit unknown here'})"
            continue
        chapter, stage, variant, arm = _job_of(config)
        job = RunJob(chapter, stage, variant, arm, int(record.seed), record.name)
        if not _current(path, job, "full"):
            outcome[str(path)] = "does not match its stage's full configuration"
            continue
        key = "/".join((chapter, stage, variant, arm))
        groups.setdefault(key, {"chapter": chapter, "stage": stage, "variant": variant, "arm": arm,
                                "seed": int(record.seed)})
        groups[key]["seed"] = min(groups[key]["seed"], int(record.seed))
        members.setdefault(key, []).append(path)
    if not groups:
        return outcome
    log(f"tracing {len(groups)} configuration(s) of {sum(map(len, members.values()))} record(s) "
        f"at {head['commit'][:10]}", flush=True)
    files = traced_files(groups)
    trace = {"commit": head["commit"], "steps": TRACE_STEPS, "eval_every": TRACE_EVAL_EVERY}
    for key, group_paths in members.items():
        for path in group_paths:
            record = load_record(path)
            record.provenance["code_files"] = files[key]
            record.provenance["code_trace"] = {**trace, "seed": groups[key]["seed"]}
            save_record(record, path.parent)
            outcome[str(path)] = "traced"
    return outcome
