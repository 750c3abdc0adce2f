"""DigitScenes: label semantics, the imbalance knob, pixel counts, errors, speed."""

from __future__ import annotations

import time

import numpy as np
import pytest
from skimage.transform import resize
from sklearn.datasets import load_digits

from pixelweight.data import PLACEMENT_COLUMNS, STROKE_THRESHOLD, DigitScenes
from pixelweight.data._digits import render_digits

COL = {name: k for k, name in enumerate(PLACEMENT_COLUMNS)}
DIGITS = load_digits()


@pytest.fixture(scope="module")
def scenes():
    return DigitScenes(num_samples=60, size=48, digit_size=(10, 22), seed=5, cache_dir=False)


def test_single_digit_scene_is_the_rescaled_source_digit():
    """One digit per image: the image is the bilinear rescale of the source digit (an
    independent skimage resize) in its window and 0 elsewhere; the label is digit + 1
    exactly on its strokes."""
    ds = DigitScenes(num_samples=20, size=40, num_digits=1, digit_size=(8, 30), seed=1, cache_dir=False)
    for row in ds.placements:
        i, src, digit, y, x, s = (row[COL[k]] for k in ("image", "source_index", "digit", "y", "x", "size"))
        assert digit == DIGITS.target[src]
        ref = resize(DIGITS.images[src] / 16.0, (s, s), order=1, mode="edge", anti_aliasing=False)
        window = (slice(y, y + s), slice(x, x + s))
        np.testing.assert_allclose(ds.images[i, 0][window], ref, atol=0.5 / 255 + 1e-6)
        outside = np.ones((40, 40), bool)
        outside[window] = False
        assert (ds.images[i, 0][outside] == 0).all() and (ds.labels[i][outside] == 0).all()
        # classes 1..10 <-> digits 0..9, on the strokes only (away from the threshold's edge)
        label = ds.labels[i][window]
        sure = np.abs(ref - STROKE_THRESHOLD) > 1e-3
        np.testing.assert_array_equal(label[sure], np.where(ref[sure] >= STROKE_THRESHOLD, digit + 1, 0))


def test_labels_are_exactly_the_strokes(scenes):
    # without background and noise, label > 0  <=>  image >= 0.5
    np.testing.assert_array_equal(scenes.labels > 0, scenes.images[:, 0] >= STROKE_THRESHOLD)
    assert scenes.labels.dtype == np.uint8 and scenes.labels.max() <= 10
    # every labelled pixel lies in the window of a digit of that class
    for i in range(0, 60, 7):
        rows = scenes.placements[scenes.placements[:, COL["image"]] == i]
        allowed = np.zeros((11, 48, 48), bool)
        allowed[0] = True
        for row in rows:
            y, x, s = row[COL["y"]], row[COL["x"]], row[COL["size"]]
            allowed[row[COL["digit"]] + 1, y : y + s, x : x + s] = True
        lab = scenes.labels[i]
        assert allowed[lab, np.arange(48)[:, None], np.arange(48)[None, :]].all()


def test_number_and_size_of_digits_follow_the_ranges(scenes):
    per_image = np.bincount(scenes.placements[:, COL["image"]], minlength=60)
    assert per_image.min() >= 2 and per_image.max() <= 5 and len(set(per_image)) > 1
    sizes = scenes.placements[:, COL["size"]]
    assert sizes.min() >= 10 and sizes.max() <= 22
    y, x = scenes.placements[:, COL["y"]], scenes.placements[:, COL["x"]]
    assert (y >= 0).all() and (x >= 0).all() and (y + sizes <= 48).all() and (x + sizes <= 48).all()
    assert (scenes.placements[:, COL["role"]] == 0).all()


def test_pixel_counts_and_frequencies(scenes):
    expected = np.stack([np.bincount(lab.ravel(), minlength=11) for lab in scenes.labels])
    np.testing.assert_array_equal(scenes.pixel_counts, expected)
    f = scenes.class_pixel_frequencies()
    assert f.shape == (11,)
    np.testing.assert_allclose(f, expected.sum(0) / scenes.labels.size)
    assert f.sum() == pytest.approx(1.0)


def test_imbalance_zero_is_about_uniform():
    ds = DigitScenes(num_samples=400, imbalance=0.0, seed=0, cache_dir=False)
    digit_freq = ds.class_pixel_frequencies()[1:]
    assert digit_freq.max() / digit_freq.min() < 1.6
    np.testing.assert_allclose(ds.class_probabilities, np.full(10, 0.1))
    counts = np.bincount(ds.placements[:, COL["digit"]], minlength=10)
    assert counts.min() > 0.6 * counts.mean()


@pytest.mark.parametrize("s, min_ratio", [(1.0, 5.0), (2.0, 40.0)])
def test_imbalance_makes_a_long_tail_in_pixels(s, min_ratio):
    ds = DigitScenes(num_samples=400, imbalance=s, seed=0, cache_dir=False)
    digit_freq = ds.class_pixel_frequencies()[1:]
    # digit 0 (rank 1) is the most frequent, digit 9 (rank 10) is about 10^s times rarer
    assert digit_freq.argmax() == 0
    assert digit_freq[0] / digit_freq[9] > min_ratio
    assert digit_freq[0] / digit_freq.min() > min_ratio
    # the drawn classes follow the documented law
    counts = np.bincount(ds.placements[:, COL["digit"]], minlength=10)
    expected = ds.class_probabilities * counts.sum()
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 30.0  # chi-square with 9 degrees of freedom: p < 0.001 above 27.9


def test_strokes_do_not_overlap_when_there_is_room():
    # three small digits on a large canvas: 20 tries always find a free place
    ds = DigitScenes(num_samples=30, size=64, num_digits=3, digit_size=12, seed=2, cache_dir=False)
    patches = render_digits(ds.placements[:, COL["source_index"]], ds.placements[:, COL["size"]])
    coverage = np.zeros((30, 64, 64), np.int64)
    for row, patch in zip(ds.placements, patches):
        i, y, x = row[COL["image"]], row[COL["y"]], row[COL["x"]]
        coverage[i, y : y + 12, x : x + 12] += patch >= STROKE_THRESHOLD
        # each digit is fully visible: its label covers all of its strokes
        window = ds.labels[i, y : y + 12, x : x + 12]
        assert (window[patch >= STROKE_THRESHOLD] == row[COL["digit"]] + 1).all()
    assert coverage.max() == 1


def test_generates_2000_scenes_in_a_few_seconds():
    start = time.perf_counter()
    ds = DigitScenes(num_samples=2000, size=64, seed=11, cache_dir=False)
    elapsed = time.perf_counter() - start
    assert len(ds) == 2000
    assert elapsed < 15.0, f"2000 scenes took {elapsed:.1f} s"


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(imbalance=-0.5), ValueError, "imbalance must be >= 0.0, got -0.5"),
        (dict(imbalance="zipf"), TypeError, "imbalance must be a real number, got str"),
        (dict(imbalance=float("nan")), ValueError, "imbalance must not be NaN"),
        (dict(num_digits=0), ValueError, "num_digits must be >= 1, got 0"),
        (dict(num_digits=(0, 3)), ValueError, r"num_digits\[0\] must be >= 1, got 0"),
        (dict(num_digits=(4, 2)), ValueError, r"num_digits must satisfy min <= max"),
        (dict(size=20, digit_size=(14, 30)), ValueError, "size=20 is too small for digit_size up to 30 pixels"),
    ],
)
def test_scene_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        DigitScenes(num_samples=2, cache_dir=False, **kwargs)
