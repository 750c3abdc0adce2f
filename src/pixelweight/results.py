"""Result records: every run writes one JSON file that says what ran, where and what it gave.

A record holds the run's configuration, its metrics and training history, the seed, the
wall time, the device, the library version and the git commit of the source tree. The
``full`` profile's records are committed under ``results/`` and shown by the chapters
beside the ``ci`` run; :func:`config_differences` flags a committed record whose
configuration no longer matches what the notebook would run today.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import math
import os
import platform
import re
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple, Union

import torch

SCHEMA_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


def _git(args: List[str], cwd: Path) -> Optional[str]:
    try:
        out = subprocess.run(
            ["git", *args], cwd=cwd, capture_output=True, text=True, timeout=10, check=True
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def git_commit(path: Union[str, Path, None] = None) -> Dict[str, Any]:
    """The git commit of the source tree at ``path`` (default: this package's folder).

    Returns ``{"commit": sha or "unknown", "dirty": bool or None}``. ``dirty`` is true
    when tracked files differ from the commit, so a record made from uncommitted code
    says so. The environment variable ``PIXELWEIGHT_GIT_COMMIT`` overrides the lookup
    (for installs without a ``.git`` folder, e.g. a wheel built in CI).
    """
    env = os.environ.get("PIXELWEIGHT_GIT_COMMIT")
    if env:
        return {"commit": env, "dirty": None}
    cwd = Path(path) if path is not None else Path(__file__).resolve().parent
    sha = _git(["rev-parse", "HEAD"], cwd)
    if not sha:
        return {"commit": "unknown", "dirty": None}
    status = _git(["status", "--porcelain", "--untracked-files=no"], cwd)
    return {"commit": sha, "dirty": bool(status) if status is not None else None}


def device_description(device: Union[str, torch.device]) -> str:
    """A human-readable name of ``device`` (the GPU model on CUDA)."""
    device = torch.device(device)
    if device.type == "cuda" and torch.cuda.is_available():
        index = device.index if device.index is not None else torch.cuda.current_device()
        return f"cuda:{index} ({torch.cuda.get_device_name(index)})"
    if device.type == "cpu":
        return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"
    return str(device)


#: The packages whose versions shape a run's numbers; every record stores them
#: (``provenance()["packages"]``) and :func:`package_differences` compares them.
NUMERIC_PACKAGES = ("torch", "numpy", "scipy", "scikit-learn", "scikit-image")


def package_versions(names=NUMERIC_PACKAGES) -> Dict[str, Optional[str]]:
    """The installed version of each package in ``names`` (``None`` when not installed)."""
    from importlib.metadata import PackageNotFoundError, version

    out: Dict[str, Optional[str]] = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def package_differences(recorded: Mapping[str, Any], current: Optional[Mapping[str, Any]] = None
                        ) -> Dict[str, Tuple[Any, Any]]:
    """``{package: (recorded version, installed version)}`` for each package of a record's
    ``provenance["packages"]`` whose installed version differs (empty when all match)."""
    current = package_versions(tuple(recorded)) if current is None else current
    return {k: (v, current.get(k)) for k, v in recorded.items() if current.get(k) != v}


def provenance(device: Union[str, torch.device, None] = None) -> Dict[str, Any]:
    """Where and with what a result was computed: versions (of pixelweight and of every
    package of :data:`NUMERIC_PACKAGES`), commit, machine, time (UTC)."""
    from . import __version__

    info = {
        "pixelweight": __version__,
        "torch": torch.__version__,
        "packages": package_versions(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "created_utc": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        **{f"git_{k}": v for k, v in git_commit().items()},
    }
    if device is not None:
        info["device"] = device_description(device)
    return info


def _jsonable(value: Any) -> Any:
    """Convert tensors, numpy values, dataclasses and non-finite floats into strict JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return _jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, torch.Tensor):
        return _jsonable(value.detach().cpu().tolist())
    if hasattr(value, "tolist") and not isinstance(value, (str, bytes)):  # numpy arrays and scalars
        return _jsonable(value.tolist())
    if isinstance(value, float):
        return value if math.isfinite(value) else None  # strict JSON has no NaN/inf
    if isinstance(value, (str, int, bool)) or value is None:
        return value
    if isinstance(value, (Path, torch.device, torch.dtype)):
        return str(value)
    raise TypeError(f"cannot store a value of type {type(value).__name__} in a result record")


def check_record_name(name) -> str:
    """Return ``name`` if it can name a record file: letters, digits and ``._=+-``,
    starting with a letter or digit (no path separator, so a record stays in its folder)."""
    if not isinstance(name, str) or not _NAME_RE.match(name):
        raise ValueError(
            f"record name must be a non-empty string of letters, digits and ._=+- (starting with a "
            f"letter or digit, no path separator), got {name!r}"
        )
    return name


def check_results_dir(results_dir: Union[str, "os.PathLike[str]"]) -> Path:
    """Create ``results_dir`` if needed and check that a file can be written there.

    Called before a run starts (by :func:`pixelweight.train.train`) so that an unusable
    folder fails at once rather than after the last step. Returns the folder as a path;
    raises :class:`ValueError` naming the folder and the reason otherwise.
    """
    if not isinstance(results_dir, (str, os.PathLike)):
        raise TypeError(f"results_dir must be a str or path, got {type(results_dir).__name__}")
    folder = Path(results_dir)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, probe = tempfile.mkstemp(dir=folder, prefix=".write-test-", suffix=".tmp")
        os.close(fd)
        os.remove(probe)
    except OSError as err:
        raise ValueError(f"cannot write results to {folder}: {err}") from None
    return folder


@dataclasses.dataclass
class RunRecord:
    """One run's result: what ran (``config``), what it gave (``metrics``, ``history``) and,
    when the run measured it, whether training reached a plateau (``plateau``)."""

    name: str
    config: Dict[str, Any]
    metrics: Dict[str, Any]
    seed: int
    wall_time_s: float
    device: str
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)
    provenance: Dict[str, Any] = dataclasses.field(default_factory=provenance)
    schema_version: int = SCHEMA_VERSION
    #: Whether the run reached a plateau of its validation metric (the harness's rule,
    #: :func:`pixelweight.train.measure_plateau`); ``None`` when no rule was asked for
    #: (and in records written before the rule existed).
    plateau: Optional[Dict[str, Any]] = None

    def __post_init__(self):
        check_record_name(self.name)
        if not isinstance(self.config, Mapping) or not isinstance(self.metrics, Mapping):
            raise ValueError("config and metrics must be mappings")
        if not isinstance(self.provenance, Mapping):
            raise ValueError(f"provenance must be a mapping, got {type(self.provenance).__name__} ({self.provenance!r})")
        if not isinstance(self.history, list) or not all(isinstance(h, Mapping) for h in self.history):
            raise ValueError("history must be a list of mappings (one per log step)")
        if not isinstance(self.device, str):
            raise ValueError(f"device must be a string, got {self.device!r}")
        if isinstance(self.schema_version, bool) or not isinstance(self.schema_version, int):
            raise ValueError(f"schema_version must be an int, got {self.schema_version!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"seed must be an int, got {self.seed!r}")
        if self.plateau is not None and not isinstance(self.plateau, Mapping):
            raise ValueError(f"plateau must be a mapping or None, got {type(self.plateau).__name__} ({self.plateau!r})")
        if not (isinstance(self.wall_time_s, (int, float)) and self.wall_time_s >= 0):
            raise ValueError(f"wall_time_s must be a non-negative number, got {self.wall_time_s!r}")

    @property
    def filename(self) -> str:
        return f"{self.name}--seed{self.seed}.json"

    def to_dict(self) -> Dict[str, Any]:
        return _jsonable(dataclasses.asdict(self))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "RunRecord":
        missing = {"name", "config", "metrics", "seed", "wall_time_s", "device"} - set(data)
        if missing:
            raise ValueError(f"result record lacks the fields {sorted(missing)}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if isinstance(version, bool) or not isinstance(version, int):
            raise ValueError(f"schema_version must be an int, got {version!r}")
        if version > SCHEMA_VERSION:
            raise ValueError(
                f"record schema_version {data['schema_version']} is newer than this library's "
                f"{SCHEMA_VERSION}: upgrade pixelweight"
            )
        fields = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in fields})


def save_record(record: RunRecord, results_dir: Union[str, Path], *, filename: Optional[str] = None) -> Path:
    """Write ``record`` as strict JSON into ``results_dir`` (created if needed), atomically.

    Returns the path ``results_dir / f"{name}--seed{seed}.json"`` (or ``results_dir /
    filename``: a record rewritten where it lies).
    """
    if not isinstance(record, RunRecord):
        raise TypeError(f"record must be a RunRecord, got {type(record).__name__}")
    if filename is not None and (not isinstance(filename, str) or not filename.endswith(".json")
                                 or Path(filename).name != filename):
        raise ValueError(f"filename must be a plain file name ending in .json, got {filename!r}")
    results_dir = Path(results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / (filename or record.filename)
    text = json.dumps(record.to_dict(), indent=1, sort_keys=True, allow_nan=False)
    fd, tmp = tempfile.mkstemp(dir=results_dir, prefix=".tmp-", suffix=".json")
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_record(path: Union[str, Path]) -> RunRecord:
    """Read one JSON record written by :func:`save_record`.

    Raises :class:`FileNotFoundError` when there is no file and :class:`ValueError`
    naming ``path`` when it is not a valid record (not UTF-8 JSON, not an object, a
    missing or ill-typed field such as ``"provenance": null``).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no result record at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError(f"{path} does not hold a JSON object")
    try:
        return RunRecord.from_dict(data)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{path} is not a valid result record: {err}") from None


def load_records(results_dir: Union[str, Path], name: Optional[str] = None, *,
                 skip_invalid: bool = False) -> List[RunRecord]:
    """All records in ``results_dir`` (recursively), optionally only those named ``name``.

    A missing folder gives an empty list: a chapter without committed ``full`` records
    simply shows none. A file that is not a valid record raises :class:`ValueError`
    naming it; with ``skip_invalid=True`` it is skipped with a :class:`UserWarning`
    (naming it and the reason) and the other records are returned.
    """
    if not isinstance(skip_invalid, bool):
        raise TypeError(f"skip_invalid must be a bool, got {type(skip_invalid).__name__}")
    results_dir = Path(results_dir)
    if not results_dir.exists():
        return []
    if not results_dir.is_dir():
        raise ValueError(f"{results_dir} is not a folder")
    records = []
    for p in sorted(results_dir.rglob("*.json")):
        if p.name.startswith("."):
            continue
        try:
            records.append(load_record(p))
        except ValueError as err:
            if not skip_invalid:
                raise
            warnings.warn(f"skipping an invalid result record: {err}", stacklevel=2)
    return [r for r in records if name is None or r.name == name]


def records_frame(records: Iterable[RunRecord]):
    """A pandas DataFrame, one row per record: name, seed, wall time, device, commit and
    every scalar metric as a column."""
    import pandas as pd

    rows = []
    for rec in records:
        row = {
            "name": rec.name,
            "seed": rec.seed,
            "wall_time_s": rec.wall_time_s,
            "device": rec.device,
            "commit": str(rec.provenance.get("git_commit", "unknown"))[:10],
        }
        row.update(
            {k: v for k, v in rec.metrics.items() if isinstance(v, (int, float)) or v is None}
        )
        rows.append(row)
    return pd.DataFrame(rows)


def config_differences(
    recorded: Mapping[str, Any], current: Mapping[str, Any], ignore: Iterable[str] = ("device",)
) -> Dict[str, Any]:
    """Keys whose values differ between a recorded config and the current one.

    Returns ``{key: (recorded_value, current_value)}`` over the union of keys (``ignore``
    left out), comparing after JSON normalisation so tuples equal lists. An empty dict
    means the record still describes what the notebook would run.
    """
    a, b = _jsonable(dict(recorded)), _jsonable(dict(current))
    skip = set(ignore)
    diffs = {}
    for key in sorted(set(a) | set(b)):
        if key in skip:
            continue
        if a.get(key, "<missing>") != b.get(key, "<missing>"):
            diffs[key] = (a.get(key, "<missing>"), b.get(key, "<missing>"))
    return diffs


RESULTS_ENV_VAR = "PIXELWEIGHT_RESULTS"


def find_results_root(start: Union[str, Path, None] = None) -> Optional[Path]:
    """The book's committed ``results/`` folder.

    ``$PIXELWEIGHT_RESULTS`` if set; otherwise the first ``results/`` folder found beside
    a ``_toc.yml`` while walking up from ``start`` (default: the working directory, which
    is the notebook's folder when the book is built). ``None`` when there is none (e.g.
    a notebook opened alone on Colab).
    """
    env = os.environ.get(RESULTS_ENV_VAR)
    if env:
        return Path(env)
    here = Path(start) if start is not None else Path.cwd()
    for folder in [here.resolve(), *here.resolve().parents]:
        if (folder / "_toc.yml").is_file() and (folder / "results").is_dir():
            return folder / "results"
    return None


def committed_records(chapter: str, name: Optional[str] = None,
                      start: Union[str, Path, None] = None) -> List[RunRecord]:
    """The committed records of ``chapter`` (a folder under ``results/``), e.g. the
    ``full``-profile runs made on a GPU; an empty list when there are none."""
    if not isinstance(chapter, str) or not chapter or "/" in chapter or chapter.startswith("."):
        raise ValueError(f"chapter must be a folder name under results/, got {chapter!r}")
    root = find_results_root(start)
    return [] if root is None else load_records(root / chapter, name=name)


def committed_frame(chapter: str, expected_profile: Mapping[str, Any], names: Iterable[str],
                    columns: Iterable[str] = ("seed", "test_miou", "device", "commit"),
                    start: Union[str, Path, None] = None, profiles: Optional[Mapping[str, Mapping[str, Any]]] = None):
    """The committed records of ``chapter`` named in ``names``, as a table for a notebook.

    One row per record: ``name``, then ``columns`` (those a record lacks are NaN), then
    ``config matches``: whether the recorded profile still equals ``expected_profile`` (the
    ``full`` profile the notebook would run today, e.g. ``get_profile("full").to_dict()``;
    see :func:`config_differences`); a run named in ``profiles`` is compared with its own
    expected profile there (an arm with its own steps). An empty frame with those columns when
    none is committed.
    """
    import pandas as pd

    if isinstance(names, str):
        raise TypeError("names must be a collection of run names, not one string")
    if not isinstance(expected_profile, Mapping):
        raise TypeError(f"expected_profile must be a mapping (Profile.to_dict()), got {type(expected_profile).__name__}")
    profiles = {} if profiles is None else profiles
    if not isinstance(profiles, Mapping) or not all(isinstance(p, Mapping) for p in profiles.values()):
        raise TypeError("profiles must map run names to profiles (Profile.to_dict())")
    names, columns = list(names), [c for c in columns if c != "name"]
    records = [r for r in committed_records(chapter, start=start) if r.name in names]
    header = ["name", *columns, "config matches"]
    if not records:
        return pd.DataFrame(columns=header)
    frame = records_frame(records).reindex(columns=["name", *columns])
    frame["config matches"] = [
        not config_differences(r.config.get("profile", {}), profiles.get(r.name, expected_profile)) for r in records]
    return frame.reset_index(drop=True)


# --------------------------------------------------------------------------------------
# python -m pixelweight.results run CHAPTER | verify PATH...
# --------------------------------------------------------------------------------------
def _record_paths(items, parser) -> List[Path]:
    paths: List[Path] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            parser.error(f"no such record or folder: {path}")
        paths += sorted(p for p in path.rglob("*.json") if not p.name.startswith(".")) if path.is_dir() else [path]
    return paths


def main(argv: Optional[List[str]] = None) -> int:
    """The command line: ``run`` a chapter's runs outside the book (the committed ``full``
    records), ``verify`` records by retraining them (exit status 1 when one differs), or ``trace``
    the library files their runs execute."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m pixelweight.results",
                                     description="Run a chapter's runs, or verify committed run records.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="train every run of a chapter and write the records")
    run.add_argument("chapter", help="the chapter's folder under notebooks/, e.g. 02_recall")
    run.add_argument("--profile", default="full", help="the profile to run (default: full)")
    run.add_argument("--jobs", type=int, default=1, help="runs at a time, one process each (default: 1)")
    run.add_argument("--stage", action="append", help="only this stage (repeatable)")
    run.add_argument("--arm", action="append", help="only the arm with this label (repeatable)")
    run.add_argument("--out", help="folder of the records (default: results/<chapter>)")
    run.add_argument("--device", default="auto")
    run.add_argument("--allow-dirty", action="store_true", help="run from uncommitted code (records say so)")
    run.add_argument("--list", action="store_true", help="list the runs and exit")
    verify = sub.add_parser("verify", help="retrain the run each record describes and compare its metrics")
    verify.add_argument("paths", nargs="+", help="record files (or folders of them)")
    verify.add_argument("--device", default="cpu")
    verify.add_argument("--tolerance", type=float, default=0.0,
                        help="largest absolute metric difference that passes (default 0: exact, same CPU)")
    verify.add_argument("--cheapest", action="store_true",
                        help="verify only the record with the shortest training (what CI does)")
    trace = sub.add_parser("trace", help="record which library files each record's run executes "
                                         "(a short traced rerun per arm), so that its staleness is per file")
    trace.add_argument("paths", nargs="+", help="record files (or folders of them)")
    trace.add_argument("--force", action="store_true", help="trace records that already list their files again")
    args = parser.parse_args(argv)

    from .chapters import _runner

    if args.command == "run":
        try:  # the arguments, checked before any training (a training error keeps its traceback)
            jobs = _runner.chapter_jobs(args.chapter, args.profile, args.stage, args.arm)
        except ValueError as err:
            parser.error(str(err))
        if args.list:
            for job in jobs:
                print(f"{job.stage}/{job.name} seed {job.seed}")
            return 0
        try:
            _runner.run_chapter(args.chapter, args.profile, jobs=args.jobs, out=args.out, device=args.device,
                                stages=args.stage, arms=args.arm, allow_dirty=args.allow_dirty,
                                check_tree=True)
        except _runner.DirtyTree as err:
            parser.error(str(err))
        return 0
    if args.command == "trace":
        from .chapters._trace import trace_records

        found = _record_paths(args.paths, parser)
        try:
            outcome = trace_records(found, force=args.force)
        except RuntimeError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
        for path, what in sorted(outcome.items()):
            print(f"{path}: {what}")
        return 0
    if not (args.tolerance >= 0 and math.isfinite(args.tolerance)):
        parser.error(f"--tolerance must be a finite number >= 0, got {args.tolerance}")
    paths = _record_paths(args.paths, parser)
    if args.cheapest:
        # a stale record is shown as stale in the book, not retrained as if current
        current = [p for p in paths if _runner.stale_paths(load_record(p)) in ([], None)]
        for p in sorted(set(paths) - set(current)):
            print(f"{p}: stale (the library changed since its commit): not verified", flush=True)
        paths = [min(current, key=lambda p: (load_record(p).wall_time_s, str(p)))] if current else []
    if not paths:
        print("no current record to verify")
        return 0 if args.cheapest else 1
    failed = 0
    for path in paths:
        try:
            outcome = _runner.verify_record(path, device=args.device, tolerance=args.tolerance)
        except ValueError as err:
            print(f"{path}: cannot verify: {err}", flush=True)
            failed += 1
            continue
        print(outcome.report(), flush=True)
        failed += not outcome.passed
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover - the command line
    raise SystemExit(main())
