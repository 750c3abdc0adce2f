"""ClutteredDigits: a small digit on a large cluttered canvas."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits

from pixelweight.data import PLACEMENT_COLUMNS, STROKE_THRESHOLD, ClutteredDigits
from pixelweight.data._digits import render_digits

COL = {name: k for k, name in enumerate(PLACEMENT_COLUMNS)}


@pytest.fixture(scope="module")
def cluttered():
    return ClutteredDigits(num_samples=40, size=96, digit_size=(12, 20), clutter=6, seed=4, cache_dir=False)


def test_label_is_the_class_of_the_source_digit(cluttered):
    digits = load_digits().target
    main = cluttered.placements[cluttered.placements[:, COL["role"]] == 0]
    assert np.array_equal(main[:, COL["image"]], np.arange(40))
    np.testing.assert_array_equal(cluttered.labels, digits[main[:, COL["source_index"]]])
    assert cluttered.labels.dtype == np.int64
    image, target = cluttered[3]
    assert target.shape == () and target.dtype == torch.long and int(target) == cluttered.labels[3]
    assert cluttered.num_classes == 10 and cluttered.class_names[7] == "7"


def test_box_holds_the_digit(cluttered):
    main = cluttered.placements[cluttered.placements[:, COL["role"]] == 0]
    patches = render_digits(main[:, COL["source_index"]], main[:, COL["size"]])
    for i, (box, patch) in enumerate(zip(cluttered.boxes, patches)):
        y0, x0, y1, x1 = box
        assert y1 - y0 == x1 - x0 == patch.shape[0]
        assert 0 <= y0 and 0 <= x0 and y1 <= 96 and x1 <= 96
        window = cluttered.images[i, 0, y0:y1, x0:x1]
        # ink is combined by maximum: the window shows at least the digit (8-bit rounding)
        assert (window >= patch - 0.5 / 255 - 1e-6).all()
        strokes = patch >= STROKE_THRESHOLD
        assert strokes.any() and (window[strokes] >= STROKE_THRESHOLD).all()


def test_clutter_fragments(cluttered):
    roles = cluttered.placements[:, COL["role"]]
    assert set(roles) == {0, 2}
    assert np.array_equal(np.bincount(cluttered.placements[roles == 2, COL["image"]]), np.full(40, 6))
    frag = cluttered.placements[roles == 2]
    main = cluttered.placements[roles == 0]
    # a fragment is half of a digit drawn from the same size range
    assert frag[:, COL["size"]].min() >= 6 and frag[:, COL["size"]].max() <= 10
    # there is ink outside the digit's box (the clutter) ...
    outside = np.ones((40, 96, 96), bool)
    for i, (y0, x0, y1, x1) in enumerate(cluttered.boxes):
        outside[i, y0:y1, x0:x1] = False
    assert (cluttered.images[:, 0][outside] >= STROKE_THRESHOLD).sum() > 40 * 6 * 5
    # ... and with clutter=0 there is none
    clean = ClutteredDigits(num_samples=10, size=96, digit_size=(12, 20), clutter=0, seed=4, cache_dir=False)
    outside = np.ones((10, 96, 96), bool)
    for i, (y0, x0, y1, x1) in enumerate(clean.boxes):
        outside[i, y0:y1, x0:x1] = False
    assert (clean.images[:, 0][outside] == 0).all()
    assert len(main) == 40


def test_digit_size_knob():
    for s in (8, 24, 40):
        ds = ClutteredDigits(num_samples=5, digit_size=s, clutter=2, cache_dir=False)
        assert (ds.boxes[:, 2] - ds.boxes[:, 0] == s).all()
        assert ds.config["digit_size"] == [s, s]
        assert ds.images.shape == (5, 1, 128, 128)


def test_default_size_generates_quickly():
    start = time.perf_counter()
    ds = ClutteredDigits(num_samples=1000, seed=1, cache_dir=False)
    assert ds.images.shape == (1000, 1, 128, 128)
    assert time.perf_counter() - start < 15.0


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(size=64, digit_size=80), ValueError, "size=64 is too small for digit_size up to 80 pixels"),
        (dict(digit_size=4), ValueError, "digit_size must be >= 8, got 4"),
        (dict(clutter=-3), ValueError, "clutter must be >= 0, got -3"),
        (dict(size=100.0), TypeError, "size must be an int, got float"),
    ],
)
def test_cluttered_argument_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        ClutteredDigits(num_samples=2, cache_dir=False, **kwargs)
