"""Shared machinery of the synthetic digit data sets: seeding, caching, item access."""

from __future__ import annotations

import operator
import zlib
from typing import Any, Dict, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .._validation import check_int
from ._cache import ArraySpec, CacheDir, cache_meta, cache_path, check_arrays, load_or_generate, resolve_cache_dir
from ._digits import PLACEMENT_COLUMNS, SPLITS, check_background, check_noise, check_split


class SyntheticDigits(Dataset):
    """Base class: a split generated from the bundled digits, deterministic by seed, cached.

    Subclasses validate their own arguments, then call :meth:`_build` with the
    JSON-serialisable ``config`` and implement :meth:`_generate` (arrays from a
    generator) and :meth:`_target` (the target of item ``i``).

    Every subclass exposes ``images`` ((N, 1, H, W) float32 in [0, 1]), ``labels``,
    ``placements`` (one row per drawn digit or fragment, columns
    :data:`PLACEMENT_COLUMNS`), ``config``, ``num_classes``, ``class_names``,
    ``split`` and ``cache_path`` (``None`` without cache).
    """

    num_classes: int
    class_names: Tuple[str, ...]

    def _common_config(self, split, num_samples, noise, background, seed) -> Dict[str, Any]:
        return {
            "split": check_split(split),
            "num_samples": check_int(num_samples, "num_samples", minimum=1),
            "noise": check_noise(noise),
            "background": check_background(background),
            "seed": check_int(seed, "seed", minimum=0),
        }

    def _rng(self) -> np.random.Generator:
        """A generator seeded by ``(seed, data set, split)``: independent streams per split."""
        name_id = zlib.crc32(type(self).__name__.encode("utf-8"))
        return np.random.default_rng([self.config["seed"], name_id, SPLITS.index(self.split)])

    def _build(self, config: Dict[str, Any], cache_dir: CacheDir) -> None:
        self.config = config
        self.split = config["split"]
        folder = resolve_cache_dir(cache_dir)
        meta = cache_meta(type(self).__name__, config)
        self.cache_path = cache_path(folder, type(self).__name__, self.split, meta)
        arrays = load_or_generate(self.cache_path, meta, lambda: self._generate(self._rng()),
                                  check=lambda found: check_arrays(found, self._array_spec()))
        # images are stored as 8-bit; image = uint8 / 255 (exact and identical on every load)
        self.images = arrays.pop("images")[:, None].astype(np.float32) / np.float32(255.0)
        self.placements = arrays.pop("placements").astype(np.int64)
        for name, value in arrays.items():
            setattr(self, name, value)

    def _array_spec(self) -> ArraySpec:
        """The arrays :meth:`_generate` returns, ``{name: (shape, dtype)}`` (``None``: any
        length), from the configuration alone; a cache file must match it exactly.
        Subclasses add their ``labels`` and any other array."""
        n, size = self.config["num_samples"], self.config["size"]
        return {
            "images": ((n, size, size), np.uint8),  # 8-bit ink, image = uint8 / 255
            "placements": ((None, len(PLACEMENT_COLUMNS)), np.int64),
        }

    def _generate(self, rng: np.random.Generator) -> Dict[str, np.ndarray]:  # pragma: no cover
        raise NotImplementedError

    def _target(self, index: int) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    @property
    def source_indices(self) -> np.ndarray:
        """Sorted unique indices into ``load_digits()`` of every source digit drawn."""
        return np.unique(self.placements[:, PLACEMENT_COLUMNS.index("source_index")])

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index) -> Tuple[torch.Tensor, torch.Tensor]:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a data set of {n} items")
        i %= n
        return torch.from_numpy(self.images[i].copy()), self._target(i)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config.items())
        return f"{type(self).__name__}({args})"
