"""On-disk cache of generated splits.

A generated split is a handful of numpy arrays. It is saved once as an uncompressed
``.npz`` file whose name is a hash of everything that determines its content,

    key = sha256( json({"dataset": class name, "version": GENERATOR_VERSION, "config": config}) ),

and loaded on every later construction with the same configuration. Several
``DistributedDataParallel`` ranks may build the same split at the same time: each writes
its own temporary file in the cache folder and moves it into place with
:func:`os.replace`, which is atomic on POSIX and Windows, so a reader never sees a
half-written file and the last writer wins with identical content.

A cache file is trusted only if it is an ``.npz`` archive whose metadata equal the
configuration's *and* whose arrays are exactly the expected ones, with the expected
shapes and dtypes (the data set describes them, see ``check`` in
:func:`load_or_generate`). Anything else — an unreadable or truncated file, a ``.npy``
or pickle at the cache path, a missing or extra array, a wrong shape or dtype, too few
samples — is regenerated and rewritten, with a :class:`UserWarning` saying why. The cache
is only a speed-up (the data are a deterministic function of the configuration), so a
cache folder that cannot be reached (a parent folder that cannot be traversed) or
written costs a warning and the split is generated in memory: never an error.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

#: Bump whenever a generator changes what it draws: old cache files then stop matching.
GENERATOR_VERSION = 1

#: Environment variable naming the default cache folder.
CACHE_ENV_VAR = "PIXELWEIGHT_CACHE"

_META_KEY = "__meta__"

CacheDir = Union[None, bool, str, "os.PathLike[str]"]


def default_cache_dir() -> Path:
    """The default cache folder: ``$PIXELWEIGHT_CACHE`` if set, else ``~/.cache/pixelweight``."""
    env = os.environ.get(CACHE_ENV_VAR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "pixelweight"


def resolve_cache_dir(cache_dir: CacheDir) -> Optional[Path]:
    """Map the ``cache_dir`` argument to a folder, or ``None`` when caching is off.

    ``None`` means :func:`default_cache_dir`, ``False`` disables caching, a string or
    path-like names the folder (created on first write).
    """
    if cache_dir is None:
        return default_cache_dir()
    if cache_dir is False:
        return None
    if isinstance(cache_dir, bool) or not isinstance(cache_dir, (str, os.PathLike)):
        raise TypeError(
            "cache_dir must be None (default folder), False (no cache) or a path, "
            f"got {type(cache_dir).__name__} ({cache_dir!r})"
        )
    return Path(cache_dir).expanduser()


def cache_meta(dataset: str, config: Mapping) -> str:
    """Canonical JSON of what determines a split's content (sorted keys, no spaces)."""
    return json.dumps(
        {"dataset": dataset, "version": GENERATOR_VERSION, "config": dict(config)},
        sort_keys=True,
        separators=(",", ":"),
    )


def cache_path(folder: Optional[Path], dataset: str, split: str, meta: str) -> Optional[Path]:
    """``<folder>/<dataset>-<split>-<first 20 hex digits of sha256(meta)>.npz``."""
    if folder is None:
        return None
    digest = hashlib.sha256(meta.encode("utf-8")).hexdigest()[:20]
    return folder / f"{dataset.lower()}-{split}-{digest}.npz"


#: ``{array name: (shape, dtype)}``; ``None`` in a shape matches any length on that axis.
ArraySpec = Mapping[str, Tuple[Sequence[Optional[int]], "np.dtype | type"]]


def check_arrays(arrays: Mapping[str, np.ndarray], spec: ArraySpec) -> Optional[str]:
    """Why ``arrays`` do not match ``spec`` (exactly its names, shapes and dtypes), or
    ``None`` when they do."""
    if set(arrays) != set(spec):
        missing, extra = sorted(set(spec) - set(arrays)), sorted(set(arrays) - set(spec))
        return f"arrays {sorted(arrays)} instead of {sorted(spec)} (missing {missing}, unexpected {extra})"
    for name, (shape, dtype) in spec.items():
        a = arrays[name]
        if a.dtype != np.dtype(dtype):
            return f"array {name!r} has dtype {a.dtype}, expected {np.dtype(dtype)}"
        if a.ndim != len(shape) or any(s is not None and s != n for s, n in zip(shape, a.shape)):
            want = tuple("any" if s is None else s for s in shape)
            return f"array {name!r} has shape {a.shape}, expected {want}"
    return None


def _load(path: Path, meta: str, check: Optional[Callable[[Dict[str, np.ndarray]], Optional[str]]]
          ) -> Optional[Dict[str, np.ndarray]]:
    """Read a cache file; ``None`` (with a warning) if it is unreadable, not an ``.npz``
    archive, for another config, or holds other arrays than ``check`` expects."""
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):  # a .npy file gives a bare array
            warnings.warn(f"ignoring cache file {path}: it holds a single {data.dtype} array of shape "
                          f"{data.shape} (an .npy file), not an .npz archive; regenerating", stacklevel=5)
            return None
        with data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"ignoring unreadable cache file {path} ({err}); regenerating", stacklevel=5)
        return None
    stored = arrays.pop(_META_KEY, None)
    if stored is None or stored.shape != () or str(stored) != meta:
        warnings.warn(f"cache file {path} holds another configuration; regenerating", stacklevel=5)
        return None
    reason = check(arrays) if check is not None else None
    if reason is not None:
        warnings.warn(f"ignoring cache file {path}: {reason}; regenerating", stacklevel=5)
        return None
    return arrays


def _save(path: Path, arrays: Mapping[str, np.ndarray], meta: str) -> None:
    """Write ``arrays`` to ``path`` atomically: a temporary file in the same folder, then
    :func:`os.replace`. A cache that cannot be written only costs a warning."""
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.stem + ".", suffix=".tmp")
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays, **{_META_KEY: np.array(meta)})
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        warnings.warn(f"could not write cache file {path} ({err}); continuing without cache", stacklevel=5)
    finally:
        if tmp is not None and os.path.exists(tmp):
            os.remove(tmp)


def load_or_generate(
    path: Optional[Path],
    meta: str,
    generate: Callable[[], Dict[str, np.ndarray]],
    check: Optional[Callable[[Dict[str, np.ndarray]], Optional[str]]] = None,
) -> Dict[str, np.ndarray]:
    """Return the cached arrays at ``path`` if they match ``meta`` (and pass ``check``),
    else ``generate()`` them and save them there (``path=None``: always generate, never save).

    ``check(arrays)`` returns ``None`` for arrays of the expected names, shapes and dtypes
    and otherwise the reason they are not (see :func:`check_arrays`). A path whose folder
    cannot be reached is a warning: the arrays are generated and not saved.
    """
    if path is not None:
        try:
            present = path.is_file()
        except OSError as err:  # e.g. a parent folder that cannot be traversed
            warnings.warn(f"cannot use the cache folder {path.parent} ({err}); continuing without cache",
                          stacklevel=4)
            return generate()
        if present:
            arrays = _load(path, meta, check)
            if arrays is not None:
                return arrays
    arrays = generate()
    if path is not None:
        _save(path, arrays, meta)
    return arrays
