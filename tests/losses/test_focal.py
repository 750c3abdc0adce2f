"""Focal loss: known values, gamma = 0 is CE, the textbook formula, kornia as reference, stability, errors.

The properties every loss shares (module == functional, gradcheck, dtypes, all-ignored batch,
reductions, memory layouts, state_dict, NaN, validation, torch.compile) are in test_contract.py."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from losses.loss_cases import DEVICES, REDUCTIONS, binary_inputs, multiclass_inputs, perfect_logits
from pixelweight.losses import FocalLoss, cross_entropy, focal_loss


def test_known_values_binary():
    # z = 0: p = 1/2 for either label, (1 - p_t)^2 = 1/4, -log p_t = ln 2
    logits = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    target = torch.tensor([[[1, 0]]])
    ln2 = math.log(2.0)
    torch.testing.assert_close(focal_loss(logits, target, reduction="none"),
                               torch.full((1, 1, 1, 2), 0.25 * ln2, dtype=torch.float64))
    # alpha = 0.25: foreground weighted 0.25, background 0.75
    torch.testing.assert_close(focal_loss(logits, target, alpha=0.25, reduction="none"),
                               torch.tensor([0.25, 0.75], dtype=torch.float64).view(1, 1, 1, 2) * 0.25 * ln2)
    # z = ln 3, label 1: p_t = 3/4, (1/4)^2 ln(4/3)
    z = torch.full((1, 1, 1, 1), math.log(3.0), dtype=torch.float64)
    assert focal_loss(z, torch.ones(1, 1, 1, dtype=torch.long)).item() == pytest.approx(math.log(4 / 3) / 16)


def test_known_values_multiclass():
    # three equal logits: p_t = 1/3, FL = (2/3)^gamma ln 3
    logits = torch.zeros(1, 3, 1, 1, dtype=torch.float64)
    target = torch.zeros(1, 1, 1, dtype=torch.long)
    assert focal_loss(logits, target).item() == pytest.approx((2 / 3) ** 2 * math.log(3.0))
    assert focal_loss(logits, target, gamma=1.5).item() == pytest.approx((2 / 3) ** 1.5 * math.log(3.0))
    assert focal_loss(logits, target, alpha=[4.0, 1.0, 1.0]).item() == pytest.approx(4 * (2 / 3) ** 2 * math.log(3.0))


def _textbook_sigmoid_focal(logits, target, gamma, alpha):
    """The formula as torchvision.ops.sigmoid_focal_loss writes it (p, p_t, alpha_t), per pixel."""
    t = target.unsqueeze(1).to(logits.dtype)
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    loss = ce * (1 - p_t) ** gamma
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def _textbook_softmax_focal(logits, target, gamma, alpha):
    """Multiclass focal loss from explicit softmax probabilities, per pixel."""
    p = torch.softmax(logits, dim=1).gather(1, target.unsqueeze(1)).squeeze(1)
    a = 1.0 if alpha is None else alpha.to(logits.dtype)[target]
    return -a * (1 - p) ** gamma * torch.log(p)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("gamma", [0.5, 2.0, 3.0])
def test_matches_textbook_formula(device, gamma):
    dtype, tol = torch.float64, {}  # other dtypes: test_contract.py, against this float64 result
    logits, target = binary_inputs(dtype=dtype, device=device)
    for alpha in (None, 0.25):
        torch.testing.assert_close(focal_loss(logits, target, gamma, alpha, reduction="none"),
                                   _textbook_sigmoid_focal(logits, target, gamma, alpha), **tol)
    logits, target = multiclass_inputs(dtype=dtype, device=device)
    alpha = torch.tensor([0.5, 2.0, 1.0, 3.0], device=device)
    for a in (None, alpha):
        ref = _textbook_softmax_focal(logits, target, gamma, a)
        torch.testing.assert_close(focal_loss(logits, target, gamma, a, reduction="none"), ref, **tol)
        torch.testing.assert_close(focal_loss(logits, target, gamma, a), ref.mean(), **tol)
        torch.testing.assert_close(focal_loss(logits, target, gamma, a, reduction="sum"), ref.sum(), **tol)


# ---------------------------------------------------------------------------------------
# kornia as reference (a test extra): the same per-pixel loss, other conventions
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_matches_kornia_focal_loss(gamma, ignore_index):
    kornia_losses = pytest.importorskip("kornia.losses")
    logits, target = multiclass_inputs(ignore_index=ignore_index)
    ii = -100 if ignore_index is None else ignore_index  # kornia's default ignore_index
    c, pixels, valid = logits.shape[1], target.numel(), int((target != ii).sum())
    for a in (None, 0.25):
        kw = dict(alpha=a, gamma=gamma, ignore_index=ii)
        alpha = None if a is None else [1 - a] + [a] * (c - 1)  # kornia: 1 - a for class 0, a for the others
        ours = functools.partial(focal_loss, logits, target, gamma, alpha, ignore_index)
        # kornia's map is (N, C, H, W), 0 off the target class: its sum over C is our per-pixel map
        torch.testing.assert_close(ours("none"), kornia_losses.focal_loss(logits, target, reduction="none", **kw).sum(1))
        torch.testing.assert_close(ours("sum"), kornia_losses.focal_loss(logits, target, reduction="sum", **kw))
        # kornia's mean divides by N C H W (the class axis and the ignored pixels included), ours by |V|
        kornia_mean = kornia_losses.focal_loss(logits, target, reduction="mean", **kw)
        torch.testing.assert_close(ours("mean"), kornia_mean * c * pixels / valid)


@pytest.mark.parametrize("gamma", [0.5, 2.0])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_binary_matches_kornia_binary_focal_loss(gamma, ignore_index):
    kornia_losses = pytest.importorskip("kornia.losses")
    logits, target = binary_inputs(ignore_index=ignore_index)
    ii = -100 if ignore_index is None else ignore_index
    t = target.unsqueeze(1).to(logits.dtype)  # kornia: a target of the logits' shape
    for alpha in (None, 0.25):  # the same convention: alpha on the foreground, 1 - alpha on the background
        ref = kornia_losses.binary_focal_loss_with_logits(logits, t, alpha=alpha, gamma=gamma, reduction="none",
                                                          ignore_index=ii)
        torch.testing.assert_close(focal_loss(logits, target, gamma, alpha, ignore_index, "none"), ref)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("binary", [False, True])
def test_gamma_zero_is_cross_entropy(reduction, binary):
    logits, target = (binary_inputs if binary else multiclass_inputs)(ignore_index=255)
    torch.testing.assert_close(focal_loss(logits, target, 0.0, None, 255, reduction),
                               cross_entropy(logits, target, None, 255, reduction))
    w = [0.5, 2.0] if binary else [0.5, 2.0, 1.0, 3.0]
    torch.testing.assert_close(focal_loss(logits, target, 0.0, w, 255, reduction),
                               cross_entropy(logits, target, w, 255, reduction))
    if not binary:
        ii = 255
        torch.testing.assert_close(focal_loss(logits, target, 0, None, ii, reduction),
                                   F.cross_entropy(logits, target, ignore_index=ii, reduction=reduction))


def test_scalar_alpha_equals_vector_alpha_binary():
    logits, target = binary_inputs(ignore_index=255)
    torch.testing.assert_close(focal_loss(logits, target, alpha=0.3, ignore_index=255),
                               focal_loss(logits, target, alpha=[0.7, 0.3], ignore_index=255))


def test_focusing_down_weights_easy_pixels():
    # an easy pixel (p_t = 0.9) loses much more of its loss than a hard one (p_t = 0.1)
    logits = torch.tensor([math.log(9.0), -math.log(9.0)], dtype=torch.float64).view(1, 1, 1, 2)
    target = torch.ones(1, 1, 2, dtype=torch.long)
    ratio = focal_loss(logits, target, reduction="none") / cross_entropy(logits, target, reduction="none")
    torch.testing.assert_close(ratio.flatten(), torch.tensor([0.1**2, 0.9**2], dtype=torch.float64))


@pytest.mark.parametrize("gamma", [0.5, 2.0])
def test_stable_for_extreme_logits(gamma):
    # p_t rounds to exactly 1 (z = 1000) and to exactly 0 (z = -1000)
    logits = torch.tensor([1000.0, -1000.0, 1000.0], dtype=torch.float64).view(1, 1, 1, 3).requires_grad_()
    target = torch.tensor([[[1, 1, 0]]])
    loss = focal_loss(logits, target, gamma, reduction="none")
    torch.testing.assert_close(loss.detach().flatten(), torch.tensor([0.0, 1000.0, 1000.0], dtype=torch.float64))
    loss.sum().backward()
    assert torch.isfinite(logits.grad).all()
    torch.testing.assert_close(logits.grad.flatten(), torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64))
    mc = torch.tensor([[500.0, -500.0], [-500.0, 500.0]], dtype=torch.float64).view(1, 2, 1, 2).requires_grad_()
    out = focal_loss(mc, torch.tensor([[[0, 0]]]), gamma, reduction="none")
    torch.testing.assert_close(out.detach().flatten(), torch.tensor([0.0, 1000.0], dtype=torch.float64))
    out.sum().backward()
    assert torch.isfinite(mc.grad).all()


@pytest.mark.parametrize("binary", [False, True])
def test_limit_cases(binary):
    make = binary_inputs if binary else multiclass_inputs
    _, target = make()
    assert 0 <= focal_loss(perfect_logits(target, 1 if binary else 4), target).item() < 1e-12
    logits, target = make(requires_grad=True)
    loss = focal_loss(logits, torch.ones_like(target))  # a single class
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_module_stores_alpha_and_repr():
    # a vector alpha is a buffer (it follows .to() and the state_dict), a scalar an attribute
    module = FocalLoss(1.5, torch.tensor([0.5, 2.0, 1.0, 3.0]), 255)
    assert "alpha" in dict(module.named_buffers())
    module = FocalLoss(alpha=0.25, ignore_index=255)
    assert module.alpha == 0.25 and "alpha" not in dict(module.named_buffers())
    assert "gamma=2.0" in repr(module) and "alpha=tensor" in repr(FocalLoss(alpha=[1.0, 2.0]))


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(gamma=-1.0), ValueError, "gamma must be >= 0"),
        (dict(gamma="2"), TypeError, "gamma must be a real number"),
        (dict(gamma=float("nan")), ValueError, "gamma must not be NaN"),
        (dict(alpha=1.5), ValueError, "alpha must be <= 1"),
        (dict(alpha=-0.1), ValueError, "alpha must be >= 0"),
        (dict(alpha=True), TypeError, "alpha must be a 1-D torch.Tensor"),
        (dict(alpha=[1.0, 2.0, 3.0]), ValueError, "alpha must have C = 4 values"),
        (dict(alpha=[1.0, -2.0, 3.0, 1.0]), ValueError, "alpha must be non-negative"),
        (dict(alpha=0.25), ValueError, "scalar alpha=0.25 is defined for binary"),
    ],
)
def test_errors(kwargs, exc, match):
    logits, target = multiclass_inputs()
    with pytest.raises(exc, match=match):
        focal_loss(logits, target, **kwargs)


def test_errors_module_and_binary():
    with pytest.raises(ValueError, match="gamma must be >= 0"):
        FocalLoss(gamma=-0.5)
    with pytest.raises(ValueError, match="alpha must be <= 1"):
        FocalLoss(alpha=2.0)
    logits, target = binary_inputs()
    with pytest.raises(ValueError, match=r"alpha must have 2 values \(background, foreground\)"):
        focal_loss(logits, target, alpha=[1.0, 2.0, 3.0])
