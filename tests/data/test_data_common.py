"""The source-digit split, rendering, and what the three synthetic data sets share:
determinism, item access, config, argument validation."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from skimage.transform import resize
from sklearn.datasets import load_digits

from pixelweight.data import (
    PLACEMENT_COLUMNS,
    SPLITS,
    ClutteredDigits,
    DigitScenes,
    SalientDigits,
    digit_split,
)
from pixelweight.data._digits import SPLIT_SEED, render_digits, zipf_probabilities

# small, fast configurations of the three generators
SMALL = {
    DigitScenes: dict(num_samples=12, size=40, digit_size=(10, 20)),
    SalientDigits: dict(num_samples=12, size=48),
    ClutteredDigits: dict(num_samples=12, size=64, digit_size=(10, 14), clutter=4),
}
GENERATORS = list(SMALL)


def build(cls, **kwargs):
    return cls(**{**SMALL[cls], "cache_dir": False, **kwargs})


# --------------------------------------------------------------------------- the split


def test_split_is_disjoint_and_covers_every_digit():
    parts = {s: digit_split(s) for s in SPLITS}
    for a in SPLITS:
        for b in SPLITS:
            if a < b:
                assert np.intersect1d(parts[a], parts[b]).size == 0, (a, b)
    assert np.array_equal(np.sort(np.concatenate(list(parts.values()))), np.arange(1797))


def test_split_is_stratified_60_20_20():
    target = load_digits().target
    for c in range(10):
        n_c = int((target == c).sum())
        counts = [int((target[digit_split(s)] == c).sum()) for s in SPLITS]
        assert counts[0] == round(0.6 * n_c)
        assert counts[1] == round(0.2 * n_c)
        assert sum(counts) == n_c


def test_split_is_fixed_and_independent_of_the_scene_seed():
    # recompute the documented recipe independently
    target = load_digits().target
    rng = np.random.default_rng(SPLIT_SEED)
    expected_val = []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(target == c))
        n_train, n_val = round(0.6 * len(members)), round(0.2 * len(members))
        expected_val.append(members[n_train : n_train + n_val])
    assert np.array_equal(digit_split("val"), np.sort(np.concatenate(expected_val)))
    # the returned array is a copy: mutating it does not change the split
    train = digit_split("train")
    train[:] = 0
    assert digit_split("train").max() > 0


@pytest.mark.parametrize("cls", GENERATORS)
def test_every_source_digit_comes_from_its_split(cls):
    used = {s: build(cls, split=s, seed=3).source_indices for s in SPLITS}
    for s in SPLITS:
        assert np.isin(used[s], digit_split(s)).all()
    assert np.intersect1d(used["train"], used["test"]).size == 0
    assert np.intersect1d(used["train"], used["val"]).size == 0


def test_digit_split_errors():
    with pytest.raises(ValueError, match="split must be one of"):
        digit_split("validation")
    with pytest.raises(TypeError, match="split must be a str"):
        digit_split(0)


# --------------------------------------------------------------------------- rendering and the class law


def test_render_matches_skimage_bilinear_resize():
    ink = load_digits().images / 16.0
    src = np.array([5, 17, 5, 999])
    sizes = np.array([8, 13, 24, 24])
    for patch, i, s in zip(render_digits(src, sizes), src, sizes):
        ref = resize(ink[i], (s, s), order=1, mode="edge", anti_aliasing=False)
        assert patch.shape == (s, s) and patch.dtype == np.float32
        np.testing.assert_allclose(patch, ref, atol=1e-5)


def test_zipf_probabilities():
    np.testing.assert_allclose(zipf_probabilities(0.0), np.full(10, 0.1))
    p = zipf_probabilities(1.0)
    harmonic = sum(1.0 / k for k in range(1, 11))
    np.testing.assert_allclose(p, [1.0 / (k * harmonic) for k in range(1, 11)])
    np.testing.assert_allclose(zipf_probabilities(2.0)[0] / zipf_probabilities(2.0)[9], 100.0)


# --------------------------------------------------------------------------- determinism


@pytest.mark.parametrize("cls", GENERATORS)
def test_same_seed_same_arrays_bit_for_bit(cls):
    a, b = build(cls, seed=7), build(cls, seed=7)
    assert np.array_equal(a.images, b.images)
    assert np.array_equal(a.labels, b.labels)
    assert np.array_equal(a.placements, b.placements)


@pytest.mark.parametrize("cls", GENERATORS)
def test_other_seed_or_split_gives_other_arrays(cls):
    a = build(cls, seed=7)
    assert not np.array_equal(a.images, build(cls, seed=8).images)
    assert not np.array_equal(a.images, build(cls, seed=7, split="val").images)


@pytest.mark.parametrize("cls", GENERATORS)
def test_noise_and_background_change_only_the_image(cls):
    plain = build(cls, seed=1)
    for kwargs in (dict(noise=0.1), dict(background="gravel")):
        other = build(cls, seed=1, **kwargs)
        assert np.array_equal(plain.placements, other.placements)
        assert np.array_equal(plain.labels, other.labels)
        assert not np.array_equal(plain.images, other.images)
    # a texture shows where there is no ink, and never darkens ink
    textured = build(cls, seed=1, background="brick")
    blank = plain.images == 0
    assert textured.images[blank].mean() > 0.1
    assert (textured.images >= plain.images - 1e-6).all()
    assert textured.images.max() <= 1.0


@pytest.mark.parametrize("background", ["brick", "grass", "gravel"])
def test_texture_on_a_canvas_larger_than_the_texture(background):
    ds = ClutteredDigits(num_samples=1, size=600, digit_size=16, clutter=0, background=background, cache_dir=False)
    assert ds.images.shape == (1, 1, 600, 600)
    image = ds.images[0, 0]
    assert image.max() <= 1.0
    assert image[512:, 512:].mean() > 0.05  # the mirror-tiled texture reaches past 512
    assert (image == 0).mean() < 0.01


# --------------------------------------------------------------------------- item access and attributes


@pytest.mark.parametrize("cls", GENERATORS)
def test_items_have_the_contract_types(cls):
    ds = build(cls)
    image, target = ds[0]
    n, size = SMALL[cls]["num_samples"], SMALL[cls]["size"]
    assert len(ds) == n
    assert ds.images.shape == (n, 1, size, size) and ds.images.dtype == np.float32
    assert image.shape == (1, size, size) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert target.dtype == torch.long
    assert target.shape == (() if cls is ClutteredDigits else (size, size))
    # 8-bit quantisation: every value is a multiple of 1/255
    np.testing.assert_array_equal(np.rint(ds.images * 255) / np.float32(255), ds.images)
    # negative indices, and items are copies (editing one does not edit the data set)
    assert torch.equal(ds[-1][0], torch.from_numpy(ds.images[n - 1]))
    image.fill_(0.5)
    assert not torch.equal(ds[0][0], image)
    assert len(ds.class_names) == ds.num_classes
    assert ds.placements.shape[1] == len(PLACEMENT_COLUMNS)


@pytest.mark.parametrize("cls", GENERATORS)
def test_config_is_json_and_rebuilds_the_split(cls):
    ds = build(cls, seed=4, num_samples=5)
    config = json.loads(json.dumps(ds.config))
    assert config == ds.config and "cache_dir" not in config
    again = cls(**config, cache_dir=False)
    assert np.array_equal(again.images, ds.images)
    assert repr(ds).startswith(f"{cls.__name__}(split='train'")


def test_int_and_pair_ranges_are_the_same_config():
    a = DigitScenes(num_samples=3, digit_size=20, num_digits=(2, 2), cache_dir=False)
    b = DigitScenes(num_samples=3, digit_size=[20, 20], num_digits=2, cache_dir=False)
    assert a.config == b.config and a.config["digit_size"] == [20, 20]
    assert np.array_equal(a.images, b.images)
    assert set(a.placements[:, PLACEMENT_COLUMNS.index("size")]) == {20}


@pytest.mark.parametrize("cls", GENERATORS)
def test_index_errors(cls):
    ds = build(cls, num_samples=3)
    with pytest.raises(IndexError, match="index 3 is out of range for a data set of 3 items"):
        ds[3]
    with pytest.raises(IndexError, match="index -4 is out of range"):
        ds[-4]
    with pytest.raises(TypeError, match="index must be an int, got slice"):
        ds[0:2]
    assert ds[np.int64(1)][0].shape[0] == 1


# --------------------------------------------------------------------------- shared argument errors


@pytest.mark.parametrize("cls", GENERATORS)
@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(split="training"), ValueError, r"split must be one of \('train', 'val', 'test'\), got 'training'"),
        (dict(split=None), TypeError, "split must be a str, got NoneType"),
        (dict(num_samples=0), ValueError, "num_samples must be >= 1, got 0"),
        (dict(num_samples=2.0), TypeError, "num_samples must be an int, got float"),
        (dict(noise=-0.1), ValueError, r"noise must be >= 0.0, got -0.1"),
        (dict(noise=float("nan")), ValueError, "noise must not be NaN"),
        (dict(noise="low"), TypeError, "noise must be a real number, got str"),
        (dict(background="wood"), ValueError, r"background must be None or one of \('brick', 'grass', 'gravel'\)"),
        (dict(background=1), TypeError, "background must be None or a str, got int"),
        (dict(seed=-1), ValueError, "seed must be >= 0, got -1"),
        (dict(seed=True), TypeError, "seed must be an int, got bool"),
        (dict(size=7), ValueError, "size must be >= 8, got 7"),
        (dict(cache_dir=1), TypeError, r"cache_dir must be None \(default folder\), False \(no cache\) or a path"),
        (dict(cache_dir=True), TypeError, "cache_dir must be None"),
    ],
)
def test_shared_argument_errors(cls, kwargs, error, match):
    with pytest.raises(error, match=match):
        cls(**{**SMALL[cls], "cache_dir": False, **kwargs})


@pytest.mark.parametrize(
    "value, error, match",
    [
        ((10, 9), ValueError, r"digit_size must satisfy min <= max, got \(10, 9\)"),
        ((8, 9, 10), ValueError, "digit_size must be an int or a \\(min, max\\) pair"),
        (7, ValueError, "digit_size must be >= 8, got 7"),
        ((7, 12), ValueError, r"digit_size\[0\] must be >= 8, got 7"),
        ((8, 12.5), TypeError, r"digit_size\[1\] must be an int, got float"),
        (12.0, TypeError, "digit_size must be an int or a \\(min, max\\) pair of ints, got float"),
        ((10, 41), ValueError, "size=40 is too small for digit_size up to 41 pixels"),
    ],
)
def test_range_errors(value, error, match):
    with pytest.raises(error, match=match):
        DigitScenes(num_samples=2, size=40, digit_size=value, cache_dir=False)
