"""SalientDigits and the sloppy-annotator degradations."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import ndimage

from pixelweight.data import DEGRADATIONS, PLACEMENT_COLUMNS, STROKE_THRESHOLD, SalientDigits, degrade_mask
from pixelweight.data._digits import render_digits

COL = {name: k for k, name in enumerate(PLACEMENT_COLUMNS)}


@pytest.fixture(scope="module")
def salient():
    return SalientDigits(num_samples=40, size=64, contrast=0.4, seed=3, cache_dir=False)


@pytest.fixture(scope="module")
def masks(salient):
    return salient.labels.astype(bool)


def disk(r: float) -> np.ndarray:
    k = int(np.floor(r))
    yy, xx = np.mgrid[-k : k + 1, -k : k + 1]
    return yy**2 + xx**2 <= r**2


def iou(a, b) -> float:
    return (a & b).sum() / (a | b).sum()


# --------------------------------------------------------------------------- the data set


def test_target_is_the_salient_digit_strokes(salient):
    # contrast < 0.5: only the salient digit reaches the stroke threshold
    np.testing.assert_array_equal(salient.labels == 1, salient.images[:, 0] >= STROKE_THRESHOLD)
    assert set(np.unique(salient.labels)) == {0, 1}
    roles = salient.placements[:, COL["role"]]
    sal = salient.placements[roles == 0]
    assert len(sal) == 40 and np.array_equal(sal[:, COL["image"]], np.arange(40))
    np.testing.assert_array_equal(salient.digit_classes, sal[:, COL["digit"]])
    patches = render_digits(sal[:, COL["source_index"]], sal[:, COL["size"]])
    for row, patch in zip(sal, patches):
        i, y, x, s = row[COL["image"]], row[COL["y"]], row[COL["x"]], row[COL["size"]]
        expected = np.zeros((64, 64), np.uint8)
        expected[y : y + s, x : x + s] = patch >= STROKE_THRESHOLD
        np.testing.assert_array_equal(salient.labels[i], expected)


def test_salient_digit_is_larger_and_brighter_than_the_rest(salient):
    roles = salient.placements[:, COL["role"]]
    sizes = salient.placements[:, COL["size"]]
    assert sizes[roles == 0].min() >= 28 and sizes[roles == 0].max() <= 40
    assert sizes[roles == 1].min() >= 10 and sizes[roles == 1].max() <= 18
    assert sizes[roles == 2].max() <= 9  # fragments: half a distractor-sized digit
    per_image = np.bincount(salient.placements[:, COL["image"]], minlength=40)
    n_distractors = np.bincount(salient.placements[roles == 1, COL["image"]], minlength=40)
    assert n_distractors.min() >= 1 and n_distractors.max() <= 3
    np.testing.assert_array_equal(per_image, 1 + n_distractors + 4)
    # outside the salient digit's window nothing is brighter than the contrast (0.4, 8 bits)
    outside = np.ones((40, 64, 64), bool)
    for row in salient.placements[roles == 0]:
        i, y, x, s = row[COL["image"]], row[COL["y"]], row[COL["x"]], row[COL["size"]]
        outside[i, y : y + s, x : x + s] = False
    rest = salient.images[:, 0][outside]
    assert rest.max() <= np.rint(0.4 * 255) / 255 + 1e-6
    assert rest.max() > 0.3  # distractors are there


def test_default_contrast_makes_distractors_bright():
    ds = SalientDigits(num_samples=20, seed=1, cache_dir=False)  # contrast 0.6
    off_target = ds.images[:, 0][ds.labels == 0]
    assert (off_target >= STROKE_THRESHOLD).any()  # a threshold alone cannot find the target


def test_no_distractors_no_clutter_is_just_the_digit():
    ds = SalientDigits(num_samples=10, num_distractors=0, clutter=0, seed=2, cache_dir=False)
    assert (ds.placements[:, COL["role"]] == 0).all()
    np.testing.assert_array_equal(ds.labels == 1, ds.images[:, 0] >= STROKE_THRESHOLD)
    for row in ds.placements:
        i, y, x, s = row[COL["image"]], row[COL["y"]], row[COL["x"]], row[COL["size"]]
        outside = np.ones((64, 64), bool)
        outside[y : y + s, x : x + s] = False
        assert (ds.images[i, 0][outside] == 0).all()


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(salient_size=(28, 70)), ValueError, "size=64 is too small for salient_size up to 70 pixels"),
        (dict(distractor_size=(10, 65)), ValueError, "size=64 is too small for distractor_size up to 65 pixels"),
        (dict(distractor_size=6), ValueError, "distractor_size must be >= 8, got 6"),
        (dict(contrast=0.0), ValueError, "contrast must be > 0.0, got 0.0"),
        (dict(contrast=1.5), ValueError, "contrast must be <= 1.0, got 1.5"),
        (dict(clutter=-1), ValueError, "clutter must be >= 0, got -1"),
        (dict(clutter=2.5), TypeError, "clutter must be an int, got float"),
        (dict(num_distractors=(-1, 2)), ValueError, r"num_distractors\[0\] must be >= 0, got -1"),
    ],
)
def test_salient_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SalientDigits(num_samples=2, cache_dir=False, **kwargs)


# --------------------------------------------------------------------------- degradations


@pytest.mark.parametrize("r", [1, 1.5, 2, 3.2])
def test_dilate_and_erode_match_scipy_morphology_with_a_disk(masks, r):
    for m in masks[:10]:
        dil = degrade_mask(m, "dilate", r).astype(bool)
        ero = degrade_mask(m, "erode", r).astype(bool)
        np.testing.assert_array_equal(dil, ndimage.binary_dilation(m, structure=disk(r)))
        np.testing.assert_array_equal(ero, ndimage.binary_erosion(m, structure=disk(r), border_value=1))
        assert (dil >= m).all() and dil.sum() > m.sum()  # dilate ⊇ gt, strictly
        assert (ero <= m).all() and ero.sum() < m.sum()  # erode ⊆ gt, strictly


@pytest.mark.parametrize("kind", ["dilate", "erode", "jitter", "polygon"])
@pytest.mark.parametrize("r", [1, 2, 3.5])
def test_full_mask_and_masks_touching_the_border_match_morphology_at_the_border(kind, r):
    """Outside the image is neither foreground nor background: a full mask stays full for
    every kind (erode used to cut off a corner), and erosion of a mask touching the
    border equals scipy's with border_value=1."""
    full = np.ones((8, 8))
    np.testing.assert_array_equal(degrade_mask(full, kind, r, rng=0), np.ones((8, 8), np.uint8))
    half = np.zeros((8, 8), bool)
    half[:, :5] = True  # touches three borders
    np.testing.assert_array_equal(
        degrade_mask(half, "erode", r).astype(bool),
        ndimage.binary_erosion(half, structure=disk(r), border_value=1),
    )


def test_larger_strength_degrades_more(masks):
    m = masks[0]
    for kind in ("dilate", "erode", "polygon"):
        ious = [iou(degrade_mask(m, kind, r).astype(bool), m) for r in (0.5, 1.5, 3.0)]
        assert ious[0] > ious[1] > ious[2], (kind, ious)


def test_jitter_moves_only_the_boundary_by_at_most_strength(masks):
    rng = np.random.default_rng(0)
    changed = 0
    for m in masks[:10]:
        r = 2.5
        out = degrade_mask(m, "jitter", r, rng).astype(bool)
        # |d| <= r, plus half a diagonal pixel of nearest-neighbour rounding
        reach = r + np.sqrt(2) / 2
        assert (out <= (ndimage.distance_transform_edt(~m) <= reach)).all()
        assert (out >= (ndimage.distance_transform_edt(m) > reach)).all()
        changed += (out != m).sum()
        assert 0.5 < iou(out, m) < 1.0
    assert changed > 0


def test_jitter_is_deterministic_by_rng(masks):
    m = masks[1]
    a = degrade_mask(m, "jitter", 2.0, 7)
    assert np.array_equal(a, degrade_mask(m, "jitter", 2.0, np.random.default_rng(7)))
    assert not np.array_equal(a, degrade_mask(m, "jitter", 2.0, 8))


def test_polygon_is_coarse_but_close(masks):
    for m in masks[:10]:
        # tolerance 0 keeps every contour vertex: the mask comes back exactly
        np.testing.assert_array_equal(degrade_mask(m, "polygon", 1e-9), m)
        out = degrade_mask(m, "polygon", 2.0).astype(bool)
        assert 0.5 < iou(out, m) < 1.0


def test_polygon_keeps_holes():
    ring = np.zeros((30, 30), bool)
    yy, xx = np.mgrid[0:30, 0:30]
    dist = np.hypot(yy - 14.5, xx - 14.5)
    ring[(dist >= 6) & (dist <= 11)] = True
    out = degrade_mask(ring, "polygon", 1.0).astype(bool)
    assert not out[14:16, 14:16].any()  # the hole stays empty
    assert iou(out, ring) > 0.8


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_limit_cases(kind, masks):
    m = masks[2]
    np.testing.assert_array_equal(degrade_mask(m, kind, 0), m)  # strength 0: unchanged
    empty = np.zeros((16, 16), bool)
    assert not degrade_mask(empty, kind, 3.0, 0).any()  # empty stays empty
    out = degrade_mask(torch.from_numpy(m.astype(np.int64)), kind, 1.0, 0)
    assert out.dtype == np.uint8 and out.shape == m.shape
    np.testing.assert_array_equal(out, degrade_mask(m, kind, 1.0, 0))
    np.testing.assert_array_equal(degrade_mask(m.astype(np.float32), kind, 1.0, 0), out)


def test_sloppy_masks(salient, masks):
    dil = salient.sloppy_masks("dilate", 1.0)
    assert dil.shape == masks.shape and dil.dtype == np.uint8
    assert (dil.astype(bool) >= masks).all()
    np.testing.assert_array_equal(dil[5], degrade_mask(masks[5], "dilate", 1.0))
    jit = salient.sloppy_masks("jitter", 2.0, seed=4)
    np.testing.assert_array_equal(jit, salient.sloppy_masks("jitter", 2.0, seed=4))
    assert not np.array_equal(jit, salient.sloppy_masks("jitter", 2.0, seed=5))
    with pytest.raises(ValueError, match="seed must be >= 0, got -2"):
        salient.sloppy_masks("jitter", 2.0, seed=-2)


@pytest.mark.parametrize(
    "args, error, match",
    [
        ((np.zeros((2, 4, 4)), "dilate", 1), ValueError, r"mask must be a 2-D \(H, W\) array, got shape \(2, 4, 4\)"),
        ((np.full((4, 4), 2), "dilate", 1), ValueError, r"mask must hold only 0 and 1, found values such as \[2\]"),
        (
            (np.zeros((4, 4), complex), "dilate", 1),
            ValueError,
            "mask must be bool, integer or floating, got dtype complex128",
        ),
        (([[0, 1], [1, 0]], "dilate", 1), TypeError, "mask must be a numpy array or torch tensor, got list"),
        (
            (np.zeros((4, 4)), "blur", 1),
            ValueError,
            r"kind must be one of \('dilate', 'erode', 'jitter', 'polygon'\), got 'blur'",
        ),
        ((np.zeros((4, 4)), None, 1), TypeError, "kind must be a str, got NoneType"),
        ((np.zeros((4, 4)), "erode", -1), ValueError, "strength must be >= 0.0, got -1.0"),
        ((np.zeros((4, 4)), "erode", float("inf")), ValueError, "strength must be finite, got inf"),
        ((np.zeros((4, 4)), "erode", "1"), TypeError, "strength must be a real number, got str"),
        (
            (np.zeros((4, 4)), "jitter", 1, "seed"),
            TypeError,
            "rng must be None, an int seed or a numpy Generator, got str",
        ),
        (
            (np.zeros((4, 4)), "jitter", 1, True),
            TypeError,
            "rng must be None, an int seed or a numpy Generator, got bool",
        ),
    ],
)
def test_degrade_mask_errors(args, error, match):
    with pytest.raises(error, match=match):
        degrade_mask(*args)
