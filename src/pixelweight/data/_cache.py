"""On-disk cache of generated splits.

A generated split is a handful of numpy arrays. It is saved once as an uncompressed
``.npz`` file whose name is a hash of everything that determines its content,

    key = sha256( json({"dataset": class name, "version": GENERATOR_VERSION, "config": config}) ),

and loaded on every later construction with the same configuration. Several
``DistributedDataParallel`` ranks may build the same split at the same time: each writes
its own temporary file in the cache folder and moves it into place with
:func:`os.replace`, which is atomic on POSIX and Windows, so a reader never sees a
half-written file and the last writer wins with identical content.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import warnings
import zipfile
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Union

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


def _load(path: Path, meta: str) -> Optional[Dict[str, np.ndarray]]:
    """Read a cache file; ``None`` (with a warning) if it is unreadable or for another config."""
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        warnings.warn(f"ignoring unreadable cache file {path} ({err}); regenerating", stacklevel=5)
        return None
    stored = arrays.pop(_META_KEY, None)
    if stored is None or str(stored) != meta:
        warnings.warn(f"cache file {path} holds another configuration; regenerating", stacklevel=5)
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
    path: Optional[Path], meta: str, generate: Callable[[], Dict[str, np.ndarray]]
) -> Dict[str, np.ndarray]:
    """Return the cached arrays at ``path`` if they match ``meta``, else ``generate()``
    them and save them there (``path=None``: always generate, never save)."""
    if path is not None and path.is_file():
        arrays = _load(path, meta)
        if arrays is not None:
            return arrays
    arrays = generate()
    if path is not None:
        _save(path, arrays, meta)
    return arrays
