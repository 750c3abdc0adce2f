"""SalientDigits: binary foreground maps, and sloppy versions of their ground truth.

Salient-object detection asks for the one object that stands out. Here it is a large,
full-contrast digit among smaller, dimmer distractor digits and clutter fragments; the
ground truth is the mask of its strokes. Margolin et al. (CVPR 2014) argue that a good
foreground-map measure should rank predictions stably when the ground truth is drawn
carelessly; :func:`degrade_mask` produces such careless annotations: grown, shrunk,
wobbly or coarsely polygonal masks.
"""

from __future__ import annotations

from typing import Dict, Tuple, Union

import numpy as np
import torch
from scipy import ndimage

from .._validation import check_float, check_int
from ._base import SyntheticDigits
from ._cache import CacheDir
from ._digits import (
    ROLE_CLUTTER,
    ROLE_DIGIT,
    ROLE_DISTRACTOR,
    SOURCE_SIZE,
    check_fits,
    check_int_range,
    compose,
    draw_sources,
    finish_images,
)

IntRange = Union[int, Tuple[int, int]]

#: The kinds of sloppy annotation :func:`degrade_mask` knows.
DEGRADATIONS = ("dilate", "erode", "jitter", "polygon")
#: Smoothness (Gaussian sigma, pixels) of the random displacement field of ``"jitter"``.
JITTER_SIGMA = 3.0


def _check_mask(mask) -> np.ndarray:
    if isinstance(mask, torch.Tensor):
        mask = mask.detach().cpu().numpy()
    if not isinstance(mask, np.ndarray):
        raise TypeError(f"mask must be a numpy array or torch tensor, got {type(mask).__name__}")
    if mask.ndim != 2:
        raise ValueError(f"mask must be a 2-D (H, W) array, got shape {mask.shape}")
    if mask.dtype != np.bool_:
        if not (np.issubdtype(mask.dtype, np.integer) or np.issubdtype(mask.dtype, np.floating)):
            raise ValueError(f"mask must be bool, integer or floating, got dtype {mask.dtype}")
        if not np.isin(mask, (0, 1)).all():
            bad = np.unique(mask[~np.isin(mask, (0, 1))])[:5]
            raise ValueError(f"mask must hold only 0 and 1, found values such as {bad.tolist()}")
    return mask.astype(bool)


def _polygon(mask: np.ndarray, tolerance: float) -> np.ndarray:
    """Rasterise Douglas-Peucker simplifications of the mask's boundary contours.

    Contours are traced at level 0.5 on the zero-padded mask (so that they close), each
    simplified with ``tolerance`` and filled; outer boundaries and hole boundaries are
    combined by the even-odd rule (XOR), so holes stay holes. With ``tolerance = 0`` this
    gives back the mask exactly.
    """
    from skimage.draw import polygon
    from skimage.measure import approximate_polygon, find_contours

    out = np.zeros(mask.shape, dtype=bool)
    for contour in find_contours(np.pad(mask, 1).astype(np.float32), 0.5):
        coarse = approximate_polygon(contour, tolerance=tolerance) - 1.0  # undo the padding
        rr, cc = polygon(coarse[:, 0], coarse[:, 1], shape=mask.shape)
        filled = np.zeros(mask.shape, dtype=bool)
        filled[rr, cc] = True
        out ^= filled
    return out


def degrade_mask(mask, kind: str, strength: float, rng=None) -> np.ndarray:
    r"""A sloppy annotator's version of a binary mask.

    All distances are Euclidean, in pixels, computed with
    :func:`scipy.ndimage.distance_transform_edt`; outside the image counts as neither
    foreground nor background (an object touching the border is not eroded there).

    - ``"dilate"``: grow by ``r = strength``: keep :math:`p` if
      :math:`\min_{q \in G} \lVert p - q \rVert \le r` (a superset of the mask).
    - ``"erode"``: shrink by ``r``: keep :math:`p \in G` if
      :math:`\min_{q \notin G} \lVert p - q \rVert > r` (a subset; thin strokes of width
      at most :math:`2r` vanish).
    - ``"jitter"``: move the boundary with a smooth random displacement field
      :math:`d = r \, \tilde d / \max_p \lVert \tilde d(p) \rVert`, with
      :math:`\tilde d` white noise blurred by a Gaussian of sigma 3 px; the new mask reads
      :math:`G(p + d(p))` at the nearest pixel. Only pixels within :math:`r + 1` of the
      boundary can change.
    - ``"polygon"``: redraw every boundary as a Douglas-Peucker polygon with tolerance
      ``strength`` (holes kept by the even-odd rule), like a click-by-click annotator.

    ``strength = 0`` returns the mask unchanged for every kind.

    Parameters
    ----------
    mask : numpy.ndarray or torch.Tensor
        (H, W) bool or 0/1 integer/float mask.
    kind : {"dilate", "erode", "jitter", "polygon"}
    strength : float
        Radius, maximum displacement or polygon tolerance in pixels, ``>= 0``.
    rng : None, int or numpy.random.Generator
        Randomness of ``"jitter"`` (passed to :func:`numpy.random.default_rng`; ``None``
        is unseeded). Ignored by the other kinds.

    Returns
    -------
    numpy.ndarray
        (H, W) uint8 mask with values 0 and 1.

    Notes
    -----
    In the book: :doc:`The Weighted F-measure: ranking under sloppy ground truth </notebooks/01_wfm/03_ranking>`
    ranks fixed predictions against such masks.
    """
    mask = _check_mask(mask)
    if not isinstance(kind, str):
        raise TypeError(f"kind must be a str, got {type(kind).__name__} ({kind!r})")
    if kind not in DEGRADATIONS:
        raise ValueError(f"kind must be one of {DEGRADATIONS}, got {kind!r}")
    r = check_float(strength, "strength", minimum=0.0)
    if not np.isfinite(r):
        raise ValueError(f"strength must be finite, got {r}")
    if not (rng is None or isinstance(rng, (int, np.integer, np.random.Generator))) or isinstance(rng, bool):
        raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")
    rng = np.random.default_rng(rng)
    if r == 0 or not mask.any():
        return mask.astype(np.uint8)
    if kind == "dilate":
        out = ndimage.distance_transform_edt(~mask) <= r  # distance to the nearest foreground pixel
    elif kind == "erode":
        if mask.all():  # no background pixel at all: nothing is within r of one (scipy's
            return mask.astype(np.uint8)  # transform would measure to a pixel off the corner)
        out = ndimage.distance_transform_edt(mask) > r  # distance to the nearest background pixel
    elif kind == "jitter":
        d = ndimage.gaussian_filter(rng.standard_normal((2,) + mask.shape), sigma=(0, JITTER_SIGMA, JITTER_SIGMA))
        d *= r / max(float(np.sqrt((d**2).sum(axis=0)).max()), 1e-12)  # max |d| = r
        coords = np.indices(mask.shape, dtype=np.float64) + d  # read G at p + d(p)
        out = ndimage.map_coordinates(mask.astype(np.float32), coords, order=0, mode="nearest") > 0.5
    else:
        out = _polygon(mask, r)
    return out.astype(np.uint8)


class SalientDigits(SyntheticDigits):
    r"""Salient-object scenes: one large bright digit among small dim ones; binary targets.

    Each image is built in three layers, all from the split's source digits (see
    :func:`digit_split`):

    1. the *salient* digit: uniform class, side uniform in ``salient_size``, full
       contrast (ink up to 1), uniform position;
    2. ``num_distractors`` *distractor* digits: side uniform in ``distractor_size``, ink
       scaled by ``contrast``, placed away from the strokes already drawn when one of 20
       random positions allows it;
    3. ``clutter`` *fragments*: random square crops (side uniform in
       ``distractor_size // 2``) of further rescaled digits, ink scaled by ``contrast``,
       placed the same way.

    Ink is combined by maximum. The target is 1 on the salient digit's strokes (its ink
    at least 0.5) and 0 elsewhere. With ``contrast < 0.5``, no background and no noise,
    ``target == (image >= 0.5)`` exactly; with the default ``contrast = 0.6`` the
    distractors' strokes are bright too and only size and context tell them apart.

    Parameters
    ----------
    split : {"train", "val", "test"}
    num_samples : int, default 1000
    size : int, default 64
        Side of the square canvas.
    salient_size : int or (int, int), default (28, 40)
        Side range of the salient digit (8 <= side <= size).
    num_distractors : int or (int, int), default (1, 3)
        Range of the number of distractor digits (0 allowed).
    distractor_size : int or (int, int), default (10, 18)
        Side range of the distractor digits (8 <= side <= size).
    contrast : float, default 0.6
        Peak ink of distractors and clutter relative to the salient digit, in (0, 1].
    clutter : int, default 4
        Number of clutter fragments per image.
    noise, background, seed, cache_dir
        As in :class:`DigitScenes`.

    Attributes
    ----------
    images : numpy.ndarray
        (N, 1, H, W) float32 in [0, 1].
    labels : numpy.ndarray
        (N, H, W) uint8 ground-truth masks (0/1).
    digit_classes : numpy.ndarray
        (N,) int64 class of each salient digit.
    placements : numpy.ndarray
        (M, 7) int64 rows image, source_index, digit, y, x, size, role with role 0 =
        salient, 1 = distractor, 2 = clutter fragment (y, x, size: the fragment's window).
    """

    num_classes = 2
    class_names = ("background", "salient")

    def __init__(
        self,
        split: str = "train",
        num_samples: int = 1000,
        size: int = 64,
        salient_size: IntRange = (28, 40),
        num_distractors: IntRange = (1, 3),
        distractor_size: IntRange = (10, 18),
        contrast: float = 0.6,
        clutter: int = 4,
        noise: float = 0.0,
        background=None,
        seed: int = 0,
        cache_dir: CacheDir = None,
    ) -> None:
        config = self._common_config(split, num_samples, noise, background, seed)
        size = check_int(size, "size", minimum=SOURCE_SIZE)
        sal = check_int_range(salient_size, "salient_size", minimum=SOURCE_SIZE)
        dis = check_int_range(distractor_size, "distractor_size", minimum=SOURCE_SIZE)
        check_fits(sal, "salient_size", size)
        check_fits(dis, "distractor_size", size)
        config.update(
            size=size,
            salient_size=list(sal),
            num_distractors=list(check_int_range(num_distractors, "num_distractors", minimum=0)),
            distractor_size=list(dis),
            contrast=check_float(contrast, "contrast", minimum=0.0, maximum=1.0, min_inclusive=False),
            clutter=check_int(clutter, "clutter", minimum=0),
        )
        self._build(config, cache_dir)

    def _array_spec(self):
        n, size = self.config["num_samples"], self.config["size"]
        return {**super()._array_spec(), "labels": ((n, size, size), np.uint8), "digit_classes": ((n,), np.int64)}

    def _generate(self, rng: np.random.Generator) -> Dict[str, np.ndarray]:
        c = self.config
        n, size, contrast = c["num_samples"], c["size"], c["contrast"]
        n_dis = rng.integers(c["num_distractors"][0], c["num_distractors"][1] + 1, size=n)
        per_image = 1 + n_dis + c["clutter"]
        total = int(per_image.sum())
        image_of = np.repeat(np.arange(n), per_image)
        # within an image: salient first, then distractors, then clutter fragments
        rank = np.arange(total) - np.repeat(np.cumsum(per_image) - per_image, per_image)
        role = np.where(rank == 0, ROLE_DIGIT, np.where(rank <= n_dis[image_of], ROLE_DISTRACTOR, ROLE_CLUTTER))
        src, digit = draw_sources(rng, self.split, total)
        salient = role == ROLE_DIGIT
        lo = np.where(salient, c["salient_size"][0], c["distractor_size"][0])
        hi = np.where(salient, c["salient_size"][1], c["distractor_size"][1])
        sizes = rng.integers(lo, hi + 1)
        ink, labels, placements = compose(
            rng,
            n,
            size,
            src,
            digit,
            sizes,
            image_of,
            role,
            scale=np.where(salient, 1.0, contrast),
            label_value=salient.astype(np.int64),  # target = 1 on the salient digit's strokes
            avoid=~salient,
        )
        images = finish_images(ink, rng, c["background"], c["noise"])
        return {
            "images": images,
            "labels": labels,
            "placements": placements,
            "digit_classes": digit[salient],
        }

    def _target(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.labels[index].astype(np.int64))

    def sloppy_masks(self, kind: str, strength: float, seed: int = 0) -> np.ndarray:
        """The split's ground truth as drawn by a sloppy annotator (see :func:`degrade_mask`).

        Parameters
        ----------
        kind : {"dilate", "erode", "jitter", "polygon"}
        strength : float
            Pixels, ``>= 0``.
        seed : int, default 0
            Seed of the one generator used for all masks, in order (``"jitter"`` only).

        Returns
        -------
        numpy.ndarray
            (N, H, W) uint8 masks.
        """
        rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
        return np.stack([degrade_mask(m, kind, strength, rng) for m in self.labels])
