"""The raw material of every synthetic data set: scikit-learn's bundled digits.

:func:`sklearn.datasets.load_digits` ships 1797 handwritten digits as 8x8 images with
integer intensities 0..16 (no download). Here they become *ink* in [0, 1]
(``ink = value / 16``), are split once into train / val / test, rescaled with bilinear
interpolation to the sizes a scene asks for, and a rescaled digit's *strokes* are its
pixels with ``ink >= STROKE_THRESHOLD``.

The split is fixed: it never depends on a data set's ``seed``. For each class ``c`` the
indices of the digits of class ``c`` are shuffled with one permutation drawn from
``numpy.random.default_rng(SPLIT_SEED)`` (classes in order 0..9); the first
``round(0.6 n_c)`` go to ``"train"``, the next ``round(0.2 n_c)`` to ``"val"``, the rest
to ``"test"``. The split is therefore stratified by class, about 60/20/20, and disjoint.
"""

from __future__ import annotations

import functools
from typing import List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .._validation import check_choice, check_float, check_int, check_int_range  # noqa: F401 (re-exported)

#: The three splits, in the order their source digits are assigned.
SPLITS = ("train", "val", "test")
#: Fractions of each class that go to train and val (test takes the rest).
SPLIT_FRACTIONS = (0.6, 0.2, 0.2)
#: Seed of the one fixed permutation of the source digits. Never change it: every split
#: (and every cached data set) depends on it.
SPLIT_SEED = 1797
#: A rescaled digit's strokes: pixels whose ink is at least this value.
STROKE_THRESHOLD = 0.5
#: Side of the source digits in pixels; a rendered digit is never smaller.
SOURCE_SIZE = 8
#: Number of digit classes.
NUM_DIGITS = 10
#: Bundled scikit-image textures usable as backgrounds (512x512 uint8, no download).
BACKGROUNDS = ("brick", "grass", "gravel")
#: A texture background is scaled to [0, TEXTURE_CONTRAST] so that strokes stay visible.
TEXTURE_CONTRAST = 0.5
#: Random positions tried before a digit is allowed to overlap earlier strokes.
PLACEMENT_TRIES = 20
#: Columns of the ``placements`` array every synthetic data set exposes.
PLACEMENT_COLUMNS = ("image", "source_index", "digit", "y", "x", "size", "role")
#: ``role`` values in ``placements``: the digit that defines the target (every digit in
#: DigitScenes, the salient one in SalientDigits, the one to classify in ClutteredDigits),
#: a distractor digit, a clutter fragment.
ROLE_DIGIT, ROLE_DISTRACTOR, ROLE_CLUTTER = 0, 1, 2


@functools.lru_cache(maxsize=1)
def _source_digits() -> Tuple[np.ndarray, np.ndarray]:
    """``(ink, digit)``: (1797, 8, 8) float32 ink in [0, 1] and (1797,) int64 classes."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    ink = (bunch.images / 16.0).astype(np.float32)  # ink = value / 16
    digit = bunch.target.astype(np.int64)
    ink.setflags(write=False)
    digit.setflags(write=False)
    return ink, digit


def check_split(split) -> str:
    return check_choice(split, "split", SPLITS)


@functools.lru_cache(maxsize=None)
def _split_indices(split: str) -> np.ndarray:
    _, digit = _source_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    parts = {name: [] for name in SPLITS}
    for c in range(NUM_DIGITS):
        members = rng.permutation(np.flatnonzero(digit == c))
        n = len(members)
        n_train = int(round(SPLIT_FRACTIONS[0] * n))
        n_val = int(round(SPLIT_FRACTIONS[1] * n))
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train : n_train + n_val])
        parts["test"].append(members[n_train + n_val :])
    out = np.sort(np.concatenate(parts[split]))
    out.setflags(write=False)
    return out


def digit_split(split: str) -> np.ndarray:
    """Indices into :func:`sklearn.datasets.load_digits` of the source digits of ``split``.

    Fixed for all data sets and seeds (see the module docstring): stratified by class,
    about 60 % / 20 % / 20 % of each class for ``"train"`` / ``"val"`` / ``"test"``,
    pairwise disjoint and together covering all 1797 digits.

    Parameters
    ----------
    split : {"train", "val", "test"}

    Returns
    -------
    numpy.ndarray
        Sorted int64 indices (a fresh copy).
    """
    return _split_indices(check_split(split)).copy()


def check_fits(digit_range: Tuple[int, int], name: str, size: int) -> None:
    """A digit of the largest requested size must fit on the canvas."""
    if digit_range[1] > size:
        raise ValueError(
            f"size={size} is too small for {name} up to {digit_range[1]} pixels; "
            f"use size >= {digit_range[1]} or smaller digits"
        )


def check_background(background) -> Optional[str]:
    if background is None:
        return None
    if not isinstance(background, str):
        raise TypeError(f"background must be None or a str, got {type(background).__name__} ({background!r})")
    if background not in BACKGROUNDS:
        raise ValueError(f"background must be None or one of {BACKGROUNDS}, got {background!r}")
    return background


def check_noise(noise) -> float:
    return check_float(noise, "noise", minimum=0.0)


def zipf_probabilities(s: float, n: int = NUM_DIGITS) -> np.ndarray:
    """Long-tailed class law over ranks 1..n: ``p_k ∝ 1 / k^s`` (``s = 0``: uniform)."""
    ranks = np.arange(1, n + 1, dtype=np.float64)
    weights = ranks ** (-s)  # 1 / rank^s
    return weights / weights.sum()


def render_digits(source_index: np.ndarray, sizes: np.ndarray) -> List[np.ndarray]:
    """Rescale source digits to square ``sizes`` (bilinear, ``align_corners=False``).

    Digits of equal size are resized in one batched :func:`torch.nn.functional.interpolate`
    call. Returns one float32 (s, s) ink array per digit, in input order.
    """
    ink, _ = _source_digits()
    source_index = np.asarray(source_index, dtype=np.int64)
    sizes = np.asarray(sizes, dtype=np.int64)
    out: List[Optional[np.ndarray]] = [None] * len(source_index)
    for s in np.unique(sizes):
        members = np.flatnonzero(sizes == s)
        batch = torch.from_numpy(ink[source_index[members]]).unsqueeze(1)
        resized = F.interpolate(batch, size=(int(s), int(s)), mode="bilinear", align_corners=False)
        resized = resized.squeeze(1).clamp_(0.0, 1.0).numpy()
        for j, i in enumerate(members):
            out[i] = resized[j]
    return out  # type: ignore[return-value]


def sample_position(
    rng: np.random.Generator,
    size: int,
    patch: np.ndarray,
    occupied: Optional[np.ndarray] = None,
) -> Tuple[int, int]:
    """Top-left corner ``(y, x)`` for ``patch`` fully inside a ``size`` x ``size`` canvas.

    Uniform over the valid corners. With an ``occupied`` boolean canvas, up to
    :data:`PLACEMENT_TRIES` corners are tried until the patch's strokes avoid every
    occupied pixel; if none does, the last one is kept (the patch then overlaps).
    """
    h, w = patch.shape
    strokes = patch >= STROKE_THRESHOLD
    tries = 1 if occupied is None else PLACEMENT_TRIES
    for _ in range(tries):
        y = int(rng.integers(0, size - h + 1))
        x = int(rng.integers(0, size - w + 1))
        if occupied is None or not occupied[y : y + h, x : x + w][strokes].any():
            break
    return y, x


def compose(
    rng: np.random.Generator,
    num_images: int,
    size: int,
    source_index: np.ndarray,
    digit: np.ndarray,
    sizes: np.ndarray,
    image_of: np.ndarray,
    role: np.ndarray,
    scale: np.ndarray,
    label_value: np.ndarray,
    avoid: np.ndarray,
) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Render source digits at ``sizes`` and draw them onto ``num_images`` canvases, in order.

    Item ``j`` (source digit ``source_index[j]`` of class ``digit[j]``) goes to image
    ``image_of[j]`` (items of one image must be consecutive).
    A :data:`ROLE_CLUTTER` item is first cut down to a random square window of half its
    side. The item is placed by :func:`sample_position` (avoiding the strokes drawn so far
    in its image when ``avoid[j]``), its ink is drawn as
    ``ink = max(ink, scale[j] * patch)`` and, when ``label_value[j] > 0``, its strokes
    (``patch >= STROKE_THRESHOLD``, before scaling) are labelled ``label_value[j]``
    (later items overwrite earlier ones).

    Returns ``(ink, labels, placements)``: (N, size, size) float32 ink, uint8 labels and
    the (M, 7) int64 placements (columns :data:`PLACEMENT_COLUMNS`; ``y``, ``x``,
    ``size``: the drawn window, after cropping).
    """
    patches = render_digits(source_index, sizes)
    total = len(patches)
    ink = np.zeros((num_images, size, size), dtype=np.float32)
    labels = np.zeros((num_images, size, size), dtype=np.uint8)
    occupied = np.zeros((size, size), dtype=bool)
    ys = np.empty(total, dtype=np.int64)
    xs = np.empty(total, dtype=np.int64)
    sides = np.empty(total, dtype=np.int64)
    current = -1
    for j, patch in enumerate(patches):
        i = int(image_of[j])
        if i != current:  # a new image starts with nothing drawn
            occupied[:] = False
            current = i
        if role[j] == ROLE_CLUTTER:
            side = max(patch.shape[0] // 2, 1)
            oy, ox = rng.integers(0, patch.shape[0] - side + 1, size=2)
            patch = patch[oy : oy + side, ox : ox + side]
        y, x = sample_position(rng, size, patch, occupied=occupied if avoid[j] else None)
        h, w = patch.shape
        strokes = patch >= STROKE_THRESHOLD
        window = ink[i, y : y + h, x : x + w]
        np.maximum(window, scale[j] * patch, out=window)  # ink = max(ink, scale * patch)
        if label_value[j] > 0:
            labels[i, y : y + h, x : x + w][strokes] = label_value[j]
        occupied[y : y + h, x : x + w] |= strokes
        ys[j], xs[j], sides[j] = y, x, h
    placements = np.stack([image_of, source_index, digit, ys, xs, sides, role], axis=1).astype(np.int64)
    return ink, labels, placements


@functools.lru_cache(maxsize=None)
def _texture(name: str) -> np.ndarray:
    import skimage.data

    tex = getattr(skimage.data, name)().astype(np.float32) / 255.0
    tex.setflags(write=False)
    return tex


def _texture_crops(name: str, n: int, size: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` random ``size`` x ``size`` crops of a bundled texture, scaled to [0, TEXTURE_CONTRAST].

    A canvas larger than the 512x512 texture reads a mirror-tiled texture.
    """
    tex = _texture(name)
    if size > min(tex.shape):
        reps = -(-size // min(tex.shape))
        tex = np.pad(tex, [(0, (reps - 1) * tex.shape[0]), (0, (reps - 1) * tex.shape[1])], mode="symmetric")
    ys = rng.integers(0, tex.shape[0] - size + 1, size=n)
    xs = rng.integers(0, tex.shape[1] - size + 1, size=n)
    crops = np.stack([tex[y : y + size, x : x + size] for y, x in zip(ys, xs)])
    return TEXTURE_CONTRAST * crops


def finish_images(ink: np.ndarray, rng: np.random.Generator, background: Optional[str], noise: float) -> np.ndarray:
    """Turn (N, H, W) ink into uint8 images.

    With a texture background ``b`` in [0, TEXTURE_CONTRAST], ink is laid over it like
    paint: ``image = ink + (1 - ink) * b`` (full ink hides the texture, no ink shows it).
    Gaussian noise of standard deviation ``noise`` is added, the result clipped to
    [0, 1] and quantised to 8 bits, ``round(255 * image)``, so that a split read back
    from the cache is bit-identical to a freshly generated one.
    """
    image = ink.astype(np.float32, copy=True)
    if background is not None:
        b = _texture_crops(background, image.shape[0], image.shape[-1], rng)
        image = image + (1.0 - image) * b  # image = ink + (1 - ink) b
    if noise > 0:
        image = image + rng.normal(0.0, noise, size=image.shape).astype(np.float32)
    return np.rint(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def source_sampler(split: str):
    """``(digits_of_class, all_digits)``: the split's source indices grouped by class."""
    indices = _split_indices(split)
    _, digit = _source_digits()
    by_class = [indices[digit[indices] == c] for c in range(NUM_DIGITS)]
    return by_class, indices


def draw_sources(
    rng: np.random.Generator, split: str, n: int, classes: Optional[Sequence[int]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Draw ``n`` source digits of ``split``: uniformly among all of them, or, given
    ``classes`` (length ``n``), uniformly among those of each requested class.
    Returns ``(source_index, digit)``."""
    by_class, indices = source_sampler(split)
    _, digit = _source_digits()
    if classes is None:
        src = indices[rng.integers(0, len(indices), size=n)]
    else:
        classes = np.asarray(classes, dtype=np.int64)
        src = np.empty(n, dtype=np.int64)
        for c in range(NUM_DIGITS):
            members = np.flatnonzero(classes == c)
            if len(members):
                src[members] = by_class[c][rng.integers(0, len(by_class[c]), size=len(members))]
    return src, digit[src].copy()
