"""ClutteredDigits: classify a small digit lost on a large, cluttered canvas.

The testbed of the saliency sampler (Recasens et al., ECCV 2018): the evidence occupies
a small part of a high-resolution image, so a network that must look at a uniformly
downsampled copy loses it, while one that zooms on the right place keeps it. As in
cluttered MNIST (Mnih et al., 2014) the canvas also holds fragments of other digits, so
that "where is the ink" is not enough to find the digit. The ``digit_size`` knob sets
how small the evidence is.
"""

from __future__ import annotations

from typing import Dict, Tuple, Union

import numpy as np
import torch

from .._validation import check_int
from ._base import SyntheticDigits
from ._cache import CacheDir
from ._digits import (
    NUM_DIGITS,
    PLACEMENT_COLUMNS,
    ROLE_CLUTTER,
    ROLE_DIGIT,
    SOURCE_SIZE,
    check_fits,
    check_int_range,
    compose,
    draw_sources,
    finish_images,
)

IntRange = Union[int, Tuple[int, int]]


class ClutteredDigits(SyntheticDigits):
    r"""One small digit on a large canvas with clutter; the target is its class.

    For each image:

    1. the digit: uniform class, a source digit from the split (see
       :func:`digit_split`), rescaled (bilinear) to a side uniform in ``digit_size``, at a
       uniform position fully inside the ``size`` x ``size`` canvas;
    2. ``clutter`` fragments: each a random square window, of side half the rescaled
       size, of another source digit rescaled like the first (same size range), at full
       contrast, placed away from the strokes already drawn when one of 20 random
       positions allows it (so that fragments rarely touch the digit).

    Ink is combined by maximum; ``noise`` and ``background`` as in :class:`DigitScenes`.

    Parameters
    ----------
    split : {"train", "val", "test"}
    num_samples : int, default 1000
    size : int, default 128
        Side of the canvas.
    digit_size : int or (int, int), default 16
        Side (range) of the digit, 8 <= side <= size.
    clutter : int, default 8
        Number of fragments per image.
    noise, background, seed, cache_dir
        As in :class:`DigitScenes`.

    Attributes
    ----------
    images : numpy.ndarray
        (N, 1, H, W) float32 in [0, 1].
    labels : numpy.ndarray
        (N,) int64 digit classes 0..9 (``__getitem__`` returns a long scalar tensor).
    boxes : numpy.ndarray
        (N, 4) int64 ``(y0, x0, y1, x1)`` of each digit's square, end-exclusive.
    placements : numpy.ndarray
        (M, 7) int64 rows image, source_index, digit, y, x, size, role with role 0 = the
        digit, 2 = clutter fragment.
    """

    num_classes = NUM_DIGITS
    class_names = tuple(str(k) for k in range(NUM_DIGITS))

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 1000,
        size: int = 128,
        digit_size: IntRange = 16,
        clutter: int = 8,
        noise: float = 0.0,
        background=None,
        seed: int = 0,
        cache_dir: CacheDir = None,
    ) -> None:
        config = self._common_config(split, num_samples, noise, background, seed)
        size = check_int(size, "size", minimum=SOURCE_SIZE)
        ds = check_int_range(digit_size, "digit_size", minimum=SOURCE_SIZE)
        check_fits(ds, "digit_size", size)
        config.update(size=size, digit_size=list(ds), clutter=check_int(clutter, "clutter", minimum=0))
        self._build(config, cache_dir)
        rows = self.placements[self.placements[:, PLACEMENT_COLUMNS.index("role")] == ROLE_DIGIT]
        y, x, s = (rows[:, PLACEMENT_COLUMNS.index(name)] for name in ("y", "x", "size"))
        self.boxes = np.stack([y, x, y + s, x + s], axis=1)

    def _array_spec(self):
        n, size = self.config["num_samples"], self.config["size"]
        return {**super()._array_spec(), "labels": ((n,), np.int64)}

    def _generate(self, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        c = self.config
        n, size, k = c["num_samples"], c["size"], c["clutter"]
        per_image = 1 + k
        total = n * per_image
        image_of = np.repeat(np.arange(n), per_image)
        role = np.tile(np.r_[ROLE_DIGIT, np.full(k, ROLE_CLUTTER)], n)
        src, digit = draw_sources(rng, self.split, total)
        sizes = rng.integers(c["digit_size"][0], c["digit_size"][1] + 1, size=total)
        ink, _, placements = compose(
            rng,
            n,
            size,
            src,
            digit,
            sizes,
            image_of,
            role,
            scale=np.ones(total),
            label_value=np.zeros(total, np.int64),
            avoid=role == ROLE_CLUTTER,
        )
        images = finish_images(ink, rng, c["background"], c["noise"])
        return {"images": images, "labels": digit[role == ROLE_DIGIT], "placements": placements}

    def _target(self, index: int) -> torch.Tensor:
        return torch.tensor(int(self.labels[index]), dtype=torch.long)
