"""DigitScenes: a small multi-class segmentation testbed with a controllable long tail.

A scene is a ``size`` x ``size`` canvas with a few handwritten digits dropped at random
places and random sizes. Every stroke pixel is labelled with its digit's class plus one,
everything else is background, which gives 11 classes. Real segmentation data sets are
long-tailed (in Cityscapes a handful of classes own most pixels); the ``imbalance`` knob
reproduces that by drawing digit classes from a Zipf law, so that the methods that
re-weight pixels by class (recall loss, loss max-pooling) have something to fix.
"""

from __future__ import annotations

from typing import Dict, Tuple, Union

import numpy as np
import torch

from .._validation import check_float, check_int
from ._base import SyntheticDigits
from ._cache import CacheDir
from ._digits import (
    NUM_DIGITS,
    ROLE_DIGIT,
    SOURCE_SIZE,
    check_fits,
    check_int_range,
    compose,
    draw_sources,
    finish_images,
    zipf_probabilities,
)

IntRange = Union[int, Tuple[int, int]]


class DigitScenes(SyntheticDigits):
    r"""Multi-class segmentation scenes made of handwritten digits.

    Each image holds between ``num_digits[0]`` and ``num_digits[1]`` digits (uniform).
    For each digit:

    1. its class ``k`` is drawn from a Zipf law over the fixed class order
       0, 1, ..., 9 (digit ``k`` has rank ``k + 1``):
       :math:`p_k = (k+1)^{-s} / \sum_{j=0}^{9} (j+1)^{-s}` with ``s = imbalance``.
       ``s = 0`` is uniform; at ``s = 1`` digit 0 is ten times as frequent as digit 9,
       at ``s = 2`` a hundred times.
    2. a source digit of class ``k`` is drawn uniformly from the split's share of
       :func:`sklearn.datasets.load_digits` (see :func:`digit_split`: train, val and
       test never share a source digit);
    3. it is rescaled (bilinear) to a square of side uniform in ``digit_size`` and put at
       a uniform position fully inside the canvas, avoiding the strokes already drawn
       when one of 20 random positions allows it.

    Ink is combined by maximum, :math:`\text{ink} = \max_d \text{ink}_d`. The label of a
    pixel is ``k + 1`` where the digit's ink is at least 0.5 (its strokes), 0 elsewhere;
    where strokes of two digits overlap, the later digit's class wins. Hence, without
    background and noise, ``label > 0`` exactly where ``image >= 0.5``. Classes:
    ``0`` = background, ``k + 1`` = digit ``k``.

    Parameters
    ----------
    split : {"train", "val", "test"}
        Which share of the source digits to draw from.
    num_samples : int, default 2000
        Number of images.
    size : int, default 64
        Side of the square canvas in pixels.
    num_digits : int or (int, int), default (2, 5)
        Inclusive range of the number of digits per image (at least 1).
    digit_size : int or (int, int), default (14, 30)
        Inclusive range of the side of a rescaled digit, at least 8 (the source
        resolution) and at most ``size``.
    imbalance : float, default 0.0
        Zipf exponent ``s >= 0`` of the class law above.
    noise : float, default 0.0
        Standard deviation of additive Gaussian pixel noise (then clipped to [0, 1]).
    background : {None, "brick", "grass", "gravel"}, default None
        A random crop of a bundled scikit-image texture, scaled to [0, 0.5], under the
        ink: ``image = ink + (1 - ink) * texture``.
    seed : int, default 0
        Same seed, same arrays (bit for bit); train/val/test use independent streams.
    cache_dir : None, False or path, default None
        Cache folder (``None``: ``$PIXELWEIGHT_CACHE`` or ``~/.cache/pixelweight``;
        ``False``: no cache).

    Attributes
    ----------
    images : numpy.ndarray
        (N, 1, H, W) float32 in [0, 1], multiples of 1/255.
    labels : numpy.ndarray
        (N, H, W) uint8 class indices in [0, 10].
    pixel_counts : numpy.ndarray
        (N, 11) int64 number of pixels of each class in each image.
    class_probabilities : numpy.ndarray
        (10,) the Zipf law the digit classes were drawn from (index = digit).
    placements : numpy.ndarray
        (M, 7) int64, one row per digit: image, source_index, digit, y, x, size, role (0).
    config : dict
        The normalised constructor arguments (JSON-serialisable, ``cache_dir`` excluded);
        ``DigitScenes(**ds.config)`` rebuilds the same split.

    Examples
    --------
    >>> ds = DigitScenes(split="train", num_samples=8, imbalance=1.0, cache_dir=False)
    >>> image, target = ds[0]
    >>> image.shape, image.dtype, target.shape, target.dtype
    (torch.Size([1, 64, 64]), torch.float32, torch.Size([64, 64]), torch.int64)
    """

    num_classes = NUM_DIGITS + 1
    class_names = ("background",) + tuple(str(k) for k in range(NUM_DIGITS))

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 2000,
        size: int = 64,
        num_digits: IntRange = (2, 5),
        digit_size: IntRange = (14, 30),
        imbalance: float = 0.0,
        noise: float = 0.0,
        background=None,
        seed: int = 0,
        cache_dir: CacheDir = None,
    ) -> None:
        config = self._common_config(split, num_samples, noise, background, seed)
        size = check_int(size, "size", minimum=SOURCE_SIZE)
        nd = check_int_range(num_digits, "num_digits", minimum=1)
        ds = check_int_range(digit_size, "digit_size", minimum=SOURCE_SIZE)
        check_fits(ds, "digit_size", size)
        config.update(
            size=size,
            num_digits=list(nd),
            digit_size=list(ds),
            imbalance=check_float(imbalance, "imbalance", minimum=0.0),
        )
        self.class_probabilities = zipf_probabilities(config["imbalance"])
        self._build(config, cache_dir)
        n = len(self)
        # pixel_counts[i, c] = #{pixels of image i with label c}, one bincount for all images
        flat = self.labels.reshape(n, -1).astype(np.int64) + self.num_classes * np.arange(n)[:, None]
        self.pixel_counts = np.bincount(flat.ravel(), minlength=n * self.num_classes).reshape(n, -1)

    def _array_spec(self):
        n, size = self.config["num_samples"], self.config["size"]
        return {**super()._array_spec(), "labels": ((n, size, size), np.uint8)}

    def _generate(self, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        c = self.config
        n, size = c["num_samples"], c["size"]
        counts = rng.integers(c["num_digits"][0], c["num_digits"][1] + 1, size=n)
        total = int(counts.sum())
        image_of = np.repeat(np.arange(n), counts)
        classes = rng.choice(NUM_DIGITS, size=total, p=self.class_probabilities)
        src, digit = draw_sources(rng, self.split, total, classes)
        sizes = rng.integers(c["digit_size"][0], c["digit_size"][1] + 1, size=total)
        ones = np.ones(total)
        ink, labels, placements = compose(
            rng,
            n,
            size,
            src,
            digit,
            sizes,
            image_of,
            role=np.full(total, ROLE_DIGIT),
            scale=ones,
            label_value=digit + 1,  # label = digit class + 1 on the strokes
            avoid=ones.astype(bool),
        )
        images = finish_images(ink, rng, c["background"], c["noise"])
        return {"images": images, "labels": labels, "placements": placements}

    def _target(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.labels[index].astype(np.int64))

    def class_pixel_frequencies(self) -> np.ndarray:
        r"""Fraction of the split's pixels in each class, :math:`f_c = \sum_i n_{ic} / (N H W)`.

        Returns
        -------
        numpy.ndarray
            (11,) float64 summing to 1; index 0 is background, ``k + 1`` is digit ``k``.
        """
        totals = self.pixel_counts.sum(axis=0).astype(np.float64)
        return totals / totals.sum()
