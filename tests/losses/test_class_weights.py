"""Class counts and weights: numpy / scikit-learn references, absent classes, errors."""

import numpy as np
import pytest
import torch
from sklearn.utils.class_weight import compute_class_weight

from losses.loss_cases import DEVICES, multiclass_inputs
from pixelweight.losses import class_counts, class_weights, cross_entropy


def _labels(seed=0, num_classes=5, absent=(), ignore=False):
    g = torch.Generator().manual_seed(seed)
    # skewed frequencies: class c drawn with probability ~ 2^-c
    probs = torch.tensor([2.0 ** -c for c in range(num_classes)])
    probs[list(absent)] = 0
    y = torch.multinomial(probs / probs.sum(), 4 * 16 * 16, replacement=True, generator=g).view(4, 16, 16)
    if ignore:
        y[:, :3] = 255
    return y


@pytest.mark.parametrize("device", DEVICES)
def test_class_counts_matches_numpy(device):
    y = _labels(ignore=True).to(device)
    counts = class_counts(y, 6, ignore_index=255)
    yy = y.cpu().numpy().ravel()
    assert counts.dtype == torch.long and counts.device.type == device
    np.testing.assert_array_equal(counts.cpu().numpy(), np.bincount(yy[yy != 255], minlength=6))
    assert class_counts(torch.tensor([True, False, True]), 2).tolist() == [1, 2]
    assert class_counts(torch.full((3,), 7), 2, ignore_index=7).tolist() == [0, 0]  # all ignored: zeros


def test_inverse_matches_sklearn_balanced():
    y = _labels(ignore=True)
    yy = y.numpy().ravel()
    yy = yy[yy != 255]
    ref = compute_class_weight("balanced", classes=np.arange(5), y=yy)
    w = class_weights(y, 5, "inverse", ignore_index=255)
    np.testing.assert_allclose(w.numpy(), ref, rtol=1e-6)
    f = np.bincount(yy, minlength=5) / yy.size
    assert float((f * w.numpy()).sum()) == pytest.approx(1.0, abs=1e-6)  # sum_c f_c w_c = 1


@pytest.mark.parametrize("absent", [(), (3,)])  # 5 present (odd) and 4 present (even: mean of middle two)
def test_median_frequency_matches_numpy(absent):
    y = _labels(absent=absent)
    n = np.bincount(y.numpy().ravel(), minlength=5).astype(float)
    f = n / n.sum()
    med = np.median(f[n > 0])
    expected = np.where(n > 0, med / np.where(n > 0, f, 1), 0.0)
    w = class_weights(y, 5, "median")
    np.testing.assert_allclose(w.numpy(), expected, rtol=1e-6)
    if not absent:
        assert sorted(w.tolist())[2] == pytest.approx(1.0)  # the median class gets weight 1


def test_hand_computed_and_absent_class():
    counts = torch.tensor([60, 30, 0, 10])  # N = 100, |P| = 3, f = (.6, .3, 0, .1)
    torch.testing.assert_close(class_weights(counts=counts),
                               torch.tensor([100 / 180, 100 / 90, 0.0, 100 / 30]))
    torch.testing.assert_close(class_weights(counts=counts, method="median"),
                               torch.tensor([0.5, 1.0, 0.0, 3.0]))  # median(.6, .3, .1) = .3
    for method in ("inverse", "median"):
        assert torch.isfinite(class_weights(counts=[0.0, 5.0], method=method)).all()


def test_labels_and_counts_paths_agree():
    y = _labels(ignore=True)
    counts = class_counts(y, 5, ignore_index=255)
    for method in ("inverse", "median"):
        from_labels = class_weights(y, 5, method, 255)
        torch.testing.assert_close(class_weights(counts=counts, method=method), from_labels)
        torch.testing.assert_close(class_weights(counts=counts.tolist(), num_classes=5, method=method), from_labels)
        torch.testing.assert_close(class_weights(counts=counts.double(), method=method), from_labels)
    assert class_weights(y, 5, ignore_index=255).dtype == torch.get_default_dtype()


def test_weights_plug_into_cross_entropy():
    logits, target = multiclass_inputs(c=4, dtype=torch.float64)
    w = class_weights(target, 4)  # float32 weights, float64 logits
    loss = cross_entropy(logits, target, w)
    assert loss.dtype == torch.float64 and torch.isfinite(loss)
    # inverse weights average to 1 per pixel: the weighted mean is the mean of per-class mean CEs
    ce = cross_entropy(logits, target, reduction="none")
    per_class = torch.stack([ce[target == c].mean() for c in range(4)])
    torch.testing.assert_close(loss, per_class.mean())


@pytest.mark.parametrize(
    "args, kwargs, exc, match",
    [
        ((), dict(), ValueError, "exactly one of labels and counts"),
        ((torch.zeros(3, dtype=torch.long), 2), dict(counts=[1, 2]), ValueError, "exactly one of labels and counts"),
        ((torch.zeros(3, dtype=torch.long),), dict(), ValueError, "num_classes is required"),
        ((), dict(counts=[1, 2], ignore_index=255), ValueError, "ignore_index applies to labels only"),
        ((), dict(counts=[1, 2], num_classes=3), ValueError, "does not match counts of length 2"),
        ((), dict(counts=[1, 2], num_classes=2.0), TypeError, "num_classes must be an int"),
        ((), dict(counts=[1, -2]), ValueError, "finite and non-negative"),
        ((), dict(counts=[1, float("inf")]), ValueError, "finite and non-negative"),
        ((), dict(counts=[0, 0]), ValueError, "counts are all zero"),
        ((), dict(counts=torch.ones(2, 2)), ValueError, "non-empty 1-D vector"),
        ((), dict(counts=[]), ValueError, "non-empty 1-D vector"),
        ((), dict(counts=torch.ones(2, dtype=torch.bool)), ValueError, "real tensor"),
        ((), dict(counts=["a", "b"]), TypeError, "counts must be a 1-D tensor or a list"),
        ((), dict(counts=np.ones(3)), TypeError, "counts must be a 1-D torch.Tensor"),
        ((), dict(counts=[1, 2], method="sqrt"), ValueError, "method must be one of"),
        ((torch.full((4,), 255), 3), dict(ignore_index=255), ValueError, "no valid pixel"),
        ((torch.tensor([0, 3]), 3), dict(), ValueError, r"labels values must lie in \[0, 2\], found values in \[0, 3\]"),
        ((torch.zeros(4), 3), dict(), ValueError, "labels must be an integer tensor"),
        (([0, 1], 3), dict(), TypeError, "labels must be a torch.Tensor"),
        ((torch.zeros(4, dtype=torch.long), 0), dict(), ValueError, "num_classes must be >= 1"),
    ],
)
def test_errors(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        class_weights(*args, **kwargs)


def test_class_counts_errors():
    with pytest.raises(ValueError, match=r"or equal ignore_index=255, found values in \[-1, 1\]"):
        class_counts(torch.tensor([-1, 1, 255]), 2, ignore_index=255)
    with pytest.raises(TypeError, match="ignore_index must be an int"):
        class_counts(torch.tensor([0, 1]), 2, ignore_index=0.5)
