"""Loss max-pooling: the closed form against a generic solver, feasibility, the limits,
the pitfalls of the public code, gradients (Danskin), the loss API and its errors.

The properties every loss shares (module == functional, gradcheck, dtypes, all-ignored batch,
reductions, memory layouts, state_dict, NaN, validation, torch.compile) are in test_contract.py."""

import functools
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from losses.loss_cases import DEVICES, REDUCTIONS, binary_inputs, multiclass_inputs
from pixelweight.losses import (
    LossMaxPooling,
    cross_entropy,
    focal_loss,
    lmp_bounds,
    lmp_pool,
    lmp_weights,
    lmp_weights_reference,
    loss_max_pooling,
)
from pixelweight.losses.lmp import _relative_weights, _sort_ascending

F64 = dict(dtype=torch.float64)


def _losses(n, seed, zeros=0.0, shape=None):
    """Heavy-tailed non-negative losses, a share ``zeros`` of them exactly 0."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, generator=g, **F64) ** 3 * 4
    x[torch.rand(n, generator=g) < zeros] = 0.0
    return x if shape is None else x.reshape(shape)


def _top_m_mean(x, m):
    s = x.flatten().sort(descending=True).values
    k = int(math.floor(m))
    return (s[:k].sum() + (m - k) * (s[k] if k < s.numel() else 0)) / m


# ------------------------------------------------------------------------------------
# the closed form is the optimum
# ------------------------------------------------------------------------------------
CASES = [(n, p, ratio, zeros)
         for i, (n, zeros) in enumerate([(1, 0.0), (2, 0.0), (3, 0.0), (5, 0.3), (8, 0.0), (12, 0.5), (16, 0.0)])
         for p, ratio in [((1.1, 1.3, 1.7, 2.0, 3.0, 10.0)[(i + j) % 6], (0.05, 0.1, 0.3, 0.5, 0.9, 1.0)[(2 * i + j) % 6])
                          for j in range(5)]]


@pytest.mark.parametrize("n, p, ratio, zeros", CASES)
def test_matches_generic_solver(n, p, ratio, zeros):
    x = _losses(n, seed=n * 100 + int(10 * p) + int(100 * ratio), zeros=zeros)
    w = lmp_weights(x, p, ratio).numpy()
    ref = lmp_weights_reference(x.numpy(), p, ratio)
    positive = x.numpy() > 0  # a zero loss's weight does not change the objective: not unique
    np.testing.assert_allclose(w[positive], ref[positive], rtol=0, atol=1e-6)
    assert w @ x.numpy() >= ref @ x.numpy() - 1e-10  # never worse than the solver


@pytest.mark.parametrize("p", [1.0, 1.05, 1.3, 1.7, 4.0, 50.0, math.inf])
@pytest.mark.parametrize("ratio", [0.01, 0.1, 0.3, 0.77, 1.0])
@pytest.mark.parametrize("zeros", [0.0, 0.6, 0.995])
def test_feasible_and_at_least_uniform(p, ratio, zeros):
    x = _losses(400, seed=7, zeros=zeros)
    w = lmp_weights(x, p, ratio)
    gamma, tau, m = lmp_bounds(400, p, ratio)
    assert torch.all(w >= 0)
    assert w.max() <= tau * (1 + 1e-12)  # ||w||_inf <= tau
    norm = w.max() if math.isinf(p) else w.pow(p).sum() ** (1 / p)
    assert norm <= gamma * (1 + 1e-12)  # ||w||_p <= gamma
    if p > 1 and not math.isinf(p):  # the p-norm budget is spent (the objective is linear)
        assert norm == pytest.approx(gamma, rel=1e-9)
    assert (w * x).sum() >= x.mean() - 1e-12  # LMP >= the uniform weighting's mean


def test_weights_grow_with_the_loss():
    x = _losses(300, seed=3, zeros=0.2)
    for p, ratio in [(1.3, 0.1), (1.7, 0.3), (3.0, 0.6)]:
        w = lmp_weights(x, p, ratio)
        order = x.argsort()
        assert torch.all(w[order].diff() >= -1e-15)  # monotone in the loss
        gamma, tau, _ = lmp_bounds(300, p, ratio)
        assert w[x.argmax()] == pytest.approx(tau)  # the hardest pixel is capped


# ------------------------------------------------------------------------------------
# limits
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_image", [False, True])
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_ratio_one_is_cross_entropy_exactly(per_image, reduction):
    logits, target = multiclass_inputs(ignore_index=255)
    for p in (1.0, 1.3, 1.7, math.inf):
        out = loss_max_pooling(logits, target, p, 1.0, per_image, 255, reduction)
        assert torch.equal(out, cross_entropy(logits, target, ignore_index=255, reduction=reduction))
    out = loss_max_pooling(logits, target, math.inf, 0.2, per_image, 255, reduction)  # p = inf: uniform too
    assert torch.equal(out, cross_entropy(logits, target, ignore_index=255, reduction=reduction))


def test_large_p_tends_to_the_mean():
    x = _losses(500, seed=1, zeros=0.1)
    errors = [abs(lmp_pool(x, p, 0.1).item() - x.mean().item()) for p in (2.0, 10.0, 1e2, 1e4, 1e8)]
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-7 * x.mean().item()
    assert lmp_pool(x, math.inf, 0.1).item() == pytest.approx(x.mean().item(), rel=1e-15)


@pytest.mark.parametrize("ratio", [0.1, 0.3, 0.5013])
def test_p_to_one_is_the_mean_of_the_m_largest(ratio):
    x = _losses(500, seed=2, zeros=0.3)
    top = _top_m_mean(x, ratio * 500).item()
    assert lmp_pool(x, 1.0, ratio).item() == pytest.approx(top, rel=1e-14)  # p = 1 is exact
    errors = [abs(lmp_pool(x, p, ratio).item() - top) for p in (1.3, 1.1, 1.01, 1.001, 1.0001)]
    assert all(b < a for a, b in zip(errors, errors[1:]))
    assert errors[-1] < 1e-3 * top


def test_p_one_splits_ties_equally():
    x = torch.tensor([5.0, 3.0, 3.0, 3.0, 1.0, 0.0], **F64)  # m = 0.5 * 6 = 3: the 3's share 2/3
    w = lmp_weights(x, 1.0, 0.5)
    torch.testing.assert_close(w, torch.tensor([1 / 3, 2 / 9, 2 / 9, 2 / 9, 0, 0], **F64))


@pytest.mark.parametrize("p", [1.1, 1.7, 5.0])
def test_m_one_is_the_power_mean(p):
    x = _losses(50, seed=4, zeros=0.2)
    q = p / (p - 1)
    power_mean = x.pow(q).mean().pow(1 / q).item()
    for ratio in (1 / 50, 0.5 / 50, 1e-6):  # m <= 1: the infinity-norm bound is inactive
        assert lmp_pool(x, p, ratio).item() == pytest.approx(power_mean, rel=1e-12)


# ------------------------------------------------------------------------------------
# the pitfalls of the public code, as regression tests
# ------------------------------------------------------------------------------------
def test_zero_losses_stay_in_n_and_the_hardest_pixels_keep_their_weight():
    # bes-dev drops losses < FLT_EPSILON from n: here n = 3, m = int(0.9) = 0, weights all 0
    x = torch.tensor([0.0] * 7 + [5.0, 3.0, 1.0], **F64)
    w = lmp_weights(x, 1.7, 0.3)
    gamma, tau, m = lmp_bounds(10, 1.7, 0.3)  # n = 10, m = 3
    assert w[7] == pytest.approx(tau) and torch.all(w[7:] > 0)
    assert (w * x).sum() > x.mean()
    np.testing.assert_allclose(w.numpy()[7:], lmp_weights_reference(x.numpy(), 1.7, 0.3)[7:], atol=1e-6)


def test_fewer_positive_losses_than_m():
    # one positive loss, m = 3: it is capped and the zeros share the rest of the budget
    x = torch.zeros(10, **F64)
    x[4] = 2.0
    w = lmp_weights(x, 1.7, 0.3)
    gamma, tau, m = lmp_bounds(10, 1.7, 0.3)
    assert w[4] == pytest.approx(tau)
    rest = torch.cat([w[:4], w[5:]])
    torch.testing.assert_close(rest, torch.full((9,), tau * (2 / 9) ** (1 / 1.7), **F64))
    assert w.pow(1.7).sum() ** (1 / 1.7) == pytest.approx(gamma)  # the budget is spent
    assert lmp_pool(x, 1.7, 0.3).item() == pytest.approx(2.0 * tau)


@pytest.mark.parametrize("p", [1.0, 1.7])
def test_all_zero_losses_give_uniform_weights(p):
    w = lmp_weights(torch.zeros(7, **F64), p, 0.3)
    torch.testing.assert_close(w, torch.full((7,), 1 / 7, **F64))


@pytest.mark.parametrize("p", [1.0, 1.3, 1.7, 3.0])
def test_tiny_n(p):
    # n = 1: the only pixel has weight 1 (bes-dev: m = int(0.3) = 0, weight 0)
    assert lmp_weights(torch.tensor([2.5], **F64), p, 0.3).item() == pytest.approx(1.0)
    assert lmp_pool(torch.tensor([2.5], **F64), p, 0.3).item() == pytest.approx(2.5)
    for n in (2, 3, 4):  # m = 0.3 n < 2: no off-by-one at the threshold
        x = _losses(n, seed=n)
        w = lmp_weights(x, p, 0.3)
        assert torch.all(w > 0) if p > 1 else w.sum() == pytest.approx(1.0)
        if p > 1:
            np.testing.assert_allclose(w.numpy(), lmp_weights_reference(x.numpy(), p, 0.3), atol=1e-6)
        else:  # m = max(0.3 n, 1): the mean of the m largest
            m = max(0.3 * n, 1.0)
            assert w[x.argmax()] == pytest.approx(1 / m)
            assert (w * x).sum().item() == pytest.approx(_top_m_mean(x, m).item())


def test_ignored_pixels_are_left_out_of_n():
    x = _losses(40, seed=5, zeros=0.2)
    valid = torch.arange(40) % 3 != 0
    w = lmp_weights(x, 1.7, 0.3, valid=valid)
    torch.testing.assert_close(w[valid], lmp_weights(x[valid], 1.7, 0.3))
    assert torch.all(w[~valid] == 0)
    as_zeros = lmp_weights(torch.where(valid, x, 0), 1.7, 0.3)  # the pitfall: ignored = zero loss
    assert not torch.allclose(w[valid], as_zeros[valid])


def test_per_image_problems_are_separate():
    x = _losses(3 * 5 * 7, seed=6, zeros=0.2, shape=(3, 5, 7))
    valid = torch.rand(3, 5, 7, generator=torch.Generator().manual_seed(0)) > 0.3
    valid[2] = False  # an image without valid pixels
    for dtype in (torch.float64, torch.float32):
        w = lmp_weights(x.to(dtype), 1.7, 0.3, valid=valid, per_image=True)
        for i in range(2):
            torch.testing.assert_close(w[i], lmp_weights(x[i].to(dtype), 1.7, 0.3, valid=valid[i]))
        assert torch.all(w[2] == 0)
        pooled = lmp_pool(x.to(dtype), 1.7, 0.3, valid=valid, per_image=True)
        assert pooled.shape == (3,) and pooled[2] == 0
        torch.testing.assert_close(pooled[0], lmp_pool(x[0].to(dtype), 1.7, 0.3, valid=valid[0]))


@pytest.mark.parametrize("rows", [1, 3])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_sort_ascending(rows, dtype):
    x = _losses(rows * 300, seed=8, zeros=0.3, shape=(rows, 300)).to(dtype)
    x[0, :5] = torch.tensor([1e-40, 3e38, 0.5, 1e-3, 7.0], dtype=torch.float64).to(dtype)  # denormal, huge
    assert torch.equal(_sort_ascending(x), x.sort(dim=1).values)


def test_float32_matches_float64():
    x = _losses(100_000, seed=9, zeros=0.05) * 10
    for p, ratio in [(1.05, 0.05), (1.7, 0.3), (3.0, 0.9)]:
        w64 = lmp_weights(x, p, ratio)
        w32 = lmp_weights(x.float(), p, ratio)
        assert w32.dtype == torch.float32
        torch.testing.assert_close(w32.double(), w64, rtol=2e-5, atol=1e-12)


@pytest.mark.parametrize("p", [1 + 1e-12, 1 + 1e-6, 1.0001, 1e6, 1e300])
def test_no_nan_near_the_limits(p):
    x = _losses(1000, seed=10, zeros=0.3)
    x[:3] = torch.tensor([1e-300, 1e30, 1e-30], **F64)
    for dtype in (torch.float64, torch.float32):
        xx = x.to(dtype).clamp_max(1e30)
        w = lmp_weights(xx, p, 0.2)
        assert torch.isfinite(w).all() and torch.all(w >= 0)
        assert w.sum() <= 1 + 1e-5  # ||w||_1 <= n^{1/q} ||w||_p ... <= 1 for w in W


# ------------------------------------------------------------------------------------
# gradients: the weights are constants (Danskin)
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("p, ratio", [(1.2, 0.1), (1.7, 0.3), (2.5, 1 / 30)])
def test_gradcheck_pool_is_danskin(p, ratio):
    # d/dl max_w <w, l> = w*: finite differences of the max agree with the held-constant weights
    x = (_losses(30, seed=11) + 0.01).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: lmp_pool(v, p, ratio), (x,))
    lmp_pool(x, p, ratio).backward()
    torch.testing.assert_close(x.grad, lmp_weights(x.detach(), p, ratio))


def test_backward_holds_the_weights_constant():
    logits, target = multiclass_inputs(ignore_index=255, requires_grad=True)
    loss_max_pooling(logits, target, 1.7, 0.3, ignore_index=255).backward()
    grad = logits.grad.clone()
    logits.grad = None
    ce = cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = target != 255
    w = lmp_weights(ce.detach(), 1.7, 0.3, valid=valid)
    (w * ce).sum().backward()
    torch.testing.assert_close(logits.grad, grad)


# ------------------------------------------------------------------------------------
# the loss API
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_image", [False, True])
def test_mean_is_the_lmp_value(per_image):
    # (sum and mean against the "none" map: test_contract.py)
    logits, target = multiclass_inputs(ignore_index=255)
    valid = target != 255
    mean = loss_max_pooling(logits, target, 1.7, 0.3, per_image, 255, "mean")
    ce = cross_entropy(logits, target, ignore_index=255, reduction="none")
    if not per_image:  # "mean" is the LMP value of the batch
        torch.testing.assert_close(mean, lmp_pool(ce, 1.7, 0.3, valid=valid))
    else:  # images weighted by their valid pixels
        per = lmp_pool(ce, 1.7, 0.3, valid=valid, per_image=True)
        counts = valid.flatten(1).sum(1)
        torch.testing.assert_close(mean, (per * counts).sum() / counts.sum())
    assert mean > cross_entropy(logits, target, ignore_index=255)


def test_binary_logits_and_other_pixel_losses():
    logits, target = binary_inputs(ignore_index=255)
    out = loss_max_pooling(logits, target, 1.7, 0.3, ignore_index=255, reduction="none")
    bce = cross_entropy(logits, target, ignore_index=255, reduction="none")
    valid = (target != 255).unsqueeze(1)
    torch.testing.assert_close(out.sum() / valid.sum(), lmp_pool(bce, 1.7, 0.3, valid=valid))
    logits, target = multiclass_inputs(ignore_index=255)
    focal = functools.partial(focal_loss, gamma=2.0)
    torch.testing.assert_close(loss_max_pooling(logits, target, 1.7, 1.0, ignore_index=255, pixel_loss=focal),
                               focal_loss(logits, target, 2.0, ignore_index=255))
    fl = focal_loss(logits, target, 2.0, ignore_index=255, reduction="none")
    torch.testing.assert_close(loss_max_pooling(logits, target, 1.3, 0.2, ignore_index=255, pixel_loss=focal),
                               lmp_pool(fl, 1.3, 0.2, valid=target != 255))


def test_empty_losses_and_no_valid_pixel():
    # (the loss of an all-ignored batch: test_contract.py)
    assert lmp_weights(torch.zeros(0), 1.7, 0.3).shape == (0,)
    assert lmp_pool(torch.zeros(0), 1.7, 0.3).item() == 0.0
    assert lmp_pool(torch.zeros(2, 0), 1.7, 0.3, per_image=True).shape == (2,)
    w = lmp_weights(torch.ones(3, 4), 1.7, 0.3, valid=torch.zeros(3, 4, dtype=torch.bool))
    assert torch.all(w == 0)


def test_module_repr():
    module = LossMaxPooling(1.3, 0.2, True, 255)
    assert "p=1.3, ratio=0.2, per_image=True" in repr(module) and "cross_entropy" in repr(module)
    assert "focal_loss" in repr(LossMaxPooling(pixel_loss=focal_loss))


@pytest.mark.parametrize("device", DEVICES)
def test_device_and_dtype_follow_the_input(device):
    x = _losses(64, seed=12, shape=(4, 16)).to(device)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        w = lmp_weights(x.to(dtype), 1.7, 0.3, per_image=True)
        assert w.dtype == dtype and w.device == x.device
        torch.testing.assert_close(w.double(), lmp_weights(x, 1.7, 0.3, per_image=True).double(),
                                   rtol=2e-2 if dtype == torch.bfloat16 else 2e-5, atol=1e-6)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_weights_never_synchronise_with_the_host():  # pragma: no cover - CUDA only
    x = torch.rand(4, 4096, device="cuda") ** 3
    valid = torch.rand(4, 4096, device="cuda") > 0.1
    torch.cuda.set_sync_debug_mode("error")
    try:
        for p in (1.0, 1.7):
            _relative_weights(x, valid, p, 0.3)
    finally:
        torch.cuda.set_sync_debug_mode("default")


# ------------------------------------------------------------------------------------
# errors
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(p=0.5), ValueError, "p must be >= 1.0, got 0.5"),
        (dict(p=float("nan")), ValueError, "p must not be NaN"),
        (dict(p="2"), TypeError, "p must be a real number"),
        (dict(ratio=0.0), ValueError, "ratio must be > 0.0, got 0.0"),
        (dict(ratio=1.5), ValueError, "ratio must be <= 1.0, got 1.5"),
        (dict(ratio=None), TypeError, "ratio must be a real number"),
        (dict(per_image=1), TypeError, "per_image must be a bool, got int"),
        (dict(pixel_loss="ce"), TypeError, "pixel_loss must be a callable or None, got str"),
        (dict(pixel_loss=lambda z, y, **kw: z.sum()), ValueError, r"must return a per-pixel map of shape \(2, 5, 6\)"),
        (dict(pixel_loss=lambda z, y, **kw: -cross_entropy(z, y, reduction="none")), ValueError,
         "needs finite, non-negative pixel losses"),
    ],
)
def test_loss_errors(kwargs, exc, match):
    logits, target = multiclass_inputs()
    with pytest.raises(exc, match=match):
        loss_max_pooling(logits, target, **kwargs)
    if "pixel_loss" not in kwargs or kwargs["pixel_loss"] == "ce":
        with pytest.raises(exc, match=match):
            LossMaxPooling(**kwargs)


@pytest.mark.parametrize(
    "losses, kwargs, exc, match",
    [
        ([1.0, 2.0], {}, TypeError, "losses must be a torch.Tensor, got list"),
        (torch.ones(3, dtype=torch.long), {}, ValueError, "losses must be a floating tensor, got dtype torch.int64"),
        (torch.tensor(1.0), {}, ValueError, "at least one dimension"),
        (torch.ones(3), dict(per_image=True), ValueError, r"per_image=True needs losses of shape \(N, ...\)"),
        (torch.tensor([1.0, -0.5]), {}, ValueError, r"non-negative pixel losses; found 1 valid pixel\(s\).*-0.5"),
        (torch.tensor([1.0, float("nan")]), {}, ValueError, "finite, non-negative"),
        (torch.tensor([1.0, float("inf")]), {}, ValueError, "finite, non-negative"),
        (torch.ones(3), dict(valid=torch.ones(3)), ValueError, "valid must be a bool mask, got dtype torch.float32"),
        (torch.ones(3), dict(valid=torch.ones(4, dtype=torch.bool)), ValueError, r"valid must have the shape of losses \(3,\)"),
        (torch.ones(3), dict(valid=[True] * 3), TypeError, "valid must be a torch.Tensor"),
        (torch.ones(3), dict(p=0.9), ValueError, "p must be >= 1.0"),
        (torch.ones(3), dict(ratio=-1), ValueError, "ratio must be > 0.0"),
    ],
)
def test_weight_errors(losses, kwargs, exc, match):
    for fn in (lmp_weights, lmp_pool):
        with pytest.raises(exc, match=match):
            fn(losses, **kwargs)


def test_ignored_pixels_may_hold_anything():
    x = torch.tensor([1.0, -3.0, float("nan"), 2.0])
    valid = torch.tensor([True, False, False, True])
    assert lmp_pool(x, 1.7, 0.5, valid=valid).item() == pytest.approx(lmp_pool(x[valid], 1.7, 0.5).item())


def test_bounds_and_reference_errors():
    gamma, tau, m = lmp_bounds(100, 2.0, 0.25)
    assert (gamma, tau, m) == pytest.approx((0.1, 0.1 / 5, 25.0))
    assert lmp_bounds(8, math.inf, 0.5) == pytest.approx((1 / 8, 1 / 8, 4.0))
    assert lmp_bounds(8, 1.0, 0.5) == pytest.approx((1.0, 1 / 4, 4.0))
    with pytest.raises(ValueError, match="n must be >= 1, got 0"):
        lmp_bounds(0, 1.7, 0.3)
    with pytest.raises(TypeError, match="n must be an int, got bool"):
        lmp_bounds(True, 1.7, 0.3)
    with pytest.raises(ValueError, match=r"needs 1 < p < inf \(the smooth problem\), got p=1.0"):
        lmp_weights_reference([1.0, 2.0], 1.0, 0.3)
    with pytest.raises(ValueError, match="finite, non-negative numbers"):
        lmp_weights_reference([1.0, -2.0], 1.7, 0.3)
    with pytest.raises(ValueError, match="non-empty"):
        lmp_weights_reference([], 1.7, 0.3)


def test_reference_cross_entropy_is_torch():
    # the default pixel loss is CE: ratio = 1 equals PyTorch's mean CE over the valid pixels
    logits, target = multiclass_inputs(ignore_index=255)
    torch.testing.assert_close(loss_max_pooling(logits, target, 1.7, 1.0, ignore_index=255),
                               F.cross_entropy(logits, target, ignore_index=255))
