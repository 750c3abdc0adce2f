"""Cross-entropy with soft targets: class indices (= cross_entropy), class probabilities
(= F.cross_entropy with a probability target), pixels that do not count, validation, dtypes,
the registry and block fractions.

The properties every loss shares (module == functional, gradcheck, dtypes, all-ignored batch,
reductions, memory layouts, state_dict, NaN, validation, torch.compile) are in test_contract.py,
on class indices (spec ``soft-ce``) and on their one-hot probabilities (``soft-ce-probs``)."""

import math

import pytest
import torch
import torch.nn.functional as F

from losses.loss_cases import DEVICES, REDUCTIONS, multiclass_inputs
from pixelweight.losses import (
    LossContext,
    SoftCrossEntropyLoss,
    build_loss,
    cross_entropy,
    loss_names,
    loss_spec,
    soft_cross_entropy,
)
from pixelweight.spectral import block_fractions

IGNORE = 255


def _soft_inputs(n=2, c=4, h=5, w=6, dtype=torch.float64, seed=0, zero_rows=True, requires_grad=False):
    """Random logits and class probabilities (a softmax of random scores, some sharp, some flat);
    with ``zero_rows``, about a quarter of the pixels have all-zero probabilities (do not count)."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, h, w, generator=g, dtype=torch.float64)
    probs = torch.softmax(3 * torch.randn(n, c, h, w, generator=g, dtype=torch.float64), dim=1)
    valid = torch.ones(n, h, w, dtype=torch.bool)
    if zero_rows:
        valid = torch.rand(n, h, w, generator=g) >= 0.25
        valid[0, 0, 0] = True  # at least one pixel counts
        probs = probs * valid.unsqueeze(1)
    return logits.to(dtype).requires_grad_(requires_grad), probs.to(dtype), valid


def _one_hot(target, c, ignore_index=IGNORE, dtype=torch.float64):
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    onehot = F.one_hot(torch.where(valid, target, 0), c).permute(0, 3, 1, 2).to(dtype)
    return onehot * valid.unsqueeze(1)


def _grad(out, x):
    (g,) = torch.autograd.grad(out.sum(), x)
    return g


# ------------------------------------------------------------------------------------------
# known values
# ------------------------------------------------------------------------------------------
def test_known_value():
    # logits (0, ln 3): p = (1/4, 3/4); q = (1/2, 1/2): CE = -(1/2) ln(1/4) - (1/2) ln(3/4) = ln 4 - ln(3)/2
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).view(1, 2, 1, 1)
    q = torch.tensor([0.5, 0.5], dtype=torch.float64).view(1, 2, 1, 1)
    assert soft_cross_entropy(logits, q).item() == pytest.approx(math.log(4.0) - math.log(3.0) / 2, abs=1e-12)
    # a second pixel that does not count leaves the mean unchanged and adds 0 to the sum
    logits2 = torch.cat([logits, torch.zeros_like(logits)], dim=3)
    q2 = torch.cat([q, torch.zeros_like(q)], dim=3)
    assert soft_cross_entropy(logits2, q2).item() == pytest.approx(math.log(4.0) - math.log(3.0) / 2, abs=1e-12)
    torch.testing.assert_close(soft_cross_entropy(logits2, q2, reduction="none"),
                               torch.tensor([[[math.log(4.0) - math.log(3.0) / 2, 0.0]]], dtype=torch.float64))


def test_cross_entropy_is_entropy_plus_kl_and_the_gradient_is_p_minus_q():
    """CE(q, p) = H(q) + KL(q || p) >= H(q), equal at p = q, where the gradient p - q vanishes."""
    x, q, valid = _soft_inputs(zero_rows=False, requires_grad=True)
    ce = soft_cross_entropy(x, q, reduction="none")
    p = torch.softmax(x.detach(), dim=1)
    entropy = -(q * q.log()).sum(1)
    kl = (q * (q.log() - p.log())).sum(1)
    torch.testing.assert_close(ce.detach(), entropy + kl)
    torch.testing.assert_close(_grad(ce, x), p - q)
    at_q = q.log().requires_grad_()
    torch.testing.assert_close(soft_cross_entropy(at_q, q, reduction="none"), entropy)
    assert _grad(soft_cross_entropy(at_q, q, reduction="sum"), at_q).abs().max() < 1e-12


# ------------------------------------------------------------------------------------------
# class indices: the library's cross-entropy, exactly
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [None, IGNORE, -1, 0])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_class_indices_equal_cross_entropy(device, reduction, ignore_index, dtype):
    x, t = multiclass_inputs(dtype=dtype, device=device, ignore_index=ignore_index, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    out = soft_cross_entropy(x, t, ignore_index=ignore_index, reduction=reduction)
    ref = cross_entropy(y, t, ignore_index=ignore_index, reduction=reduction)
    assert out.dtype == ref.dtype and out.shape == ref.shape
    assert torch.equal(out, ref)
    assert torch.equal(_grad(out, x), _grad(ref, y))
    module = SoftCrossEntropyLoss(ignore_index=ignore_index, reduction=reduction)
    assert torch.equal(module(x, t), ref)


def test_class_indices_are_validated_as_cross_entropy_does():
    x, t = multiclass_inputs(ignore_index=IGNORE)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\]"):
        soft_cross_entropy(x, t)  # 255 is a label without ignore_index
    with pytest.raises(ValueError, match="integer"):
        soft_cross_entropy(x, t.double())  # a 3-D float target is neither indices nor probabilities


# ------------------------------------------------------------------------------------------
# class probabilities: PyTorch's F.cross_entropy with a probability target
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_probabilities_equal_torch_cross_entropy(device, dtype):
    x, q, valid = _soft_inputs(dtype=dtype)
    x, q, valid = x.to(device), q.to(device), valid.to(device)
    x.requires_grad_()
    y = x.detach().clone().requires_grad_()
    ref_none = F.cross_entropy(y, q, reduction="none")
    tol = dict(rtol=1e-6, atol=1e-6) if dtype == torch.float32 else dict(rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(soft_cross_entropy(x, q, reduction="none"), ref_none, **tol)
    torch.testing.assert_close(soft_cross_entropy(x, q, reduction="sum"), ref_none.sum(), **tol)
    out = soft_cross_entropy(x, q)  # "mean": over the pixels that count
    ref = ref_none.sum() / valid.sum()
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(_grad(out, x), _grad(ref, y), **tol)
    # with every pixel counting, PyTorch's own mean (over all pixels) is the same
    x_all, q_all, _ = _soft_inputs(dtype=dtype, zero_rows=False)
    torch.testing.assert_close(soft_cross_entropy(x_all.to(device), q_all.to(device)),
                               F.cross_entropy(x_all.to(device), q_all.to(device)), **tol)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("ignore_index", [None, IGNORE])
def test_one_hot_probabilities_equal_class_indices(reduction, ignore_index):
    x, t = multiclass_inputs(ignore_index=ignore_index, seed=3, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    onehot = _one_hot(t, x.shape[1], ignore_index)
    out = soft_cross_entropy(x, onehot, ignore_index=ignore_index, reduction=reduction)
    ref = soft_cross_entropy(y, t, ignore_index=ignore_index, reduction=reduction)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grad(out, x), _grad(ref, y), rtol=1e-12, atol=1e-12)


def test_ignore_index_does_not_apply_to_probabilities():
    x, q, _ = _soft_inputs()
    for r in REDUCTIONS:
        assert torch.equal(soft_cross_entropy(x, q, ignore_index=IGNORE, reduction=r),
                           soft_cross_entropy(x, q, reduction=r))


# ------------------------------------------------------------------------------------------
# pixels whose probabilities are all 0
# ------------------------------------------------------------------------------------------
def test_zero_rows_do_not_count():
    x, q, valid = _soft_inputs(seed=1, requires_grad=True)
    assert (~valid).any() and valid.any()
    none = soft_cross_entropy(x, q, reduction="none")
    assert torch.all(none[~valid] == 0) and torch.all(none[valid] > 0)
    mean = soft_cross_entropy(x, q)
    torch.testing.assert_close(mean, none.sum() / valid.sum())
    g = _grad(mean, x)
    assert torch.all(g.permute(0, 2, 3, 1)[~valid] == 0)  # no gradient at a pixel that does not count
    # any logits there give the same loss
    noise = 10 * torch.randn(x.shape, dtype=x.dtype, generator=torch.Generator().manual_seed(2))
    y = torch.where(valid.unsqueeze(1), x.detach(), noise)
    for r in REDUCTIONS:
        torch.testing.assert_close(soft_cross_entropy(y, q, reduction=r), soft_cross_entropy(x, q, reduction=r))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.float16, torch.bfloat16])
def test_all_zero_batch_is_a_zero_with_a_graph(dtype):
    x = torch.randn(2, 3, 4, 5, dtype=dtype, requires_grad=True)
    q = torch.zeros(2, 3, 4, 5, dtype=dtype)
    for r in REDUCTIONS:
        out = soft_cross_entropy(x, q, reduction=r)
        assert out.dtype == dtype
        assert torch.all(out == 0) and not torch.isnan(out).any()
        assert out.requires_grad
        assert torch.all(_grad(out, x) == 0)


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_gradcheck_probabilities(reduction):
    x, q, _ = _soft_inputs(n=2, c=3, h=2, w=3, seed=4, requires_grad=True)
    assert torch.autograd.gradcheck(lambda z: soft_cross_entropy(z, q, reduction=reduction), (x,))
    assert torch.autograd.gradgradcheck(lambda z: soft_cross_entropy(z, q, reduction=reduction), (x,))


def test_no_gradient_flows_to_the_target():
    """The target is data: a target that requires grad is allowed, and gets the gradient -log p
    (as F.cross_entropy gives it), i.e. the loss is differentiable in q too."""
    x, q, _ = _soft_inputs(zero_rows=False)
    q = q.clone().requires_grad_()
    out = soft_cross_entropy(x, q, reduction="sum")
    torch.testing.assert_close(_grad(out, q), -torch.log_softmax(x, dim=1))


# ------------------------------------------------------------------------------------------
# NaN
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_nan_logit_gives_nan(reduction):
    x, q, valid = _soft_inputs(seed=5)
    x = x.clone()
    x[0, 1, 0, 0] = float("nan")  # pixel (0, 0, 0) counts
    out = soft_cross_entropy(x, q, reduction=reduction)
    if reduction == "none":
        assert torch.isnan(out[0, 0, 0]) and torch.isfinite(out.flatten()[1:]).all()
    else:
        assert torch.isnan(out)


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
def _bad_pixel(q, values):
    q = q.clone()
    q[0, :, 0, 0] = torch.tensor(values, dtype=q.dtype)
    return q


def test_invalid_probability_targets_raise():
    x, q, _ = _soft_inputs(c=2)
    cases = [
        (q[..., :5], r"logits' shape \(N, C, H, W\) = \(2, 2, 5, 6\), got \(2, 2, 5, 5\)"),  # wrong H, W
        (torch.cat([q, torch.zeros_like(q[:, :1])], 1), r"got \(2, 3, 5, 6\)"),  # wrong C
        (q[:1], r"got \(1, 2, 5, 6\)"),  # wrong N
        (q.long(), "must be floating"),  # integer probabilities
        (_bad_pixel(q, [1.5, -0.5]), r"non-negative, found the value -0.5"),  # sums to 1, one negative
        (_bad_pixel(q, [0.5, 0.2]), r"sum to 1 \(within 0.001\).*found a sum of 0.7 \(1 such pixels\)"),
        (_bad_pixel(q, [0.6, 0.6]), "found a sum of 1.2"),
        (q * 2, r"sum to 1"),
        (_bad_pixel(q, [float("nan"), 1.0]), "finite"),
        (_bad_pixel(q, [float("inf"), 0.0]), "finite"),
        (_bad_pixel(q, [1.0, 0.0]).unsqueeze(0), r"\(N, H, W\) class indices or \(N, C, H, W\) class probabilities"),
    ]
    for target, match in cases:
        with pytest.raises(ValueError, match=match):
            soft_cross_entropy(x, target)
        with pytest.raises(ValueError, match=match):
            SoftCrossEntropyLoss()(x, target)


def test_sum_tolerance():
    x, q, _ = _soft_inputs(c=2, zero_rows=False)
    soft_cross_entropy(x, _bad_pixel(q, [0.5, 0.5009]))  # within 1e-3
    with pytest.raises(ValueError, match="sum to 1"):
        soft_cross_entropy(x, _bad_pixel(q, [0.5, 0.502]))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_probabilities_pass_the_sum_check(dtype):
    """Probabilities rounded to float16 (bfloat16) sum to 1 within 2^-11 (2^-8): the check's
    tolerance, max(1e-3, eps), admits them; it still refuses a sum off by a few eps."""
    g = torch.Generator().manual_seed(6)
    x = torch.randn(2, 19, 16, 16, generator=g)
    q = torch.softmax(2 * torch.randn(2, 19, 16, 16, generator=g, dtype=torch.float64), dim=1).to(dtype)
    assert ((q.double().sum(1) - 1).abs().max() > 2.0**-12)  # the rounding is visible
    out = soft_cross_entropy(x.to(dtype), q)
    assert out.dtype == dtype and torch.isfinite(out)
    eps = torch.finfo(dtype).eps
    with pytest.raises(ValueError, match="sum to 1"):
        soft_cross_entropy(x.to(dtype), q * (1 + 4 * eps))


def test_invalid_logits_raise():
    x, q, _ = _soft_inputs()
    with pytest.raises(ValueError, match=r"multiclass logits .* got binary logits \(2, 1, 5, 6\)"):
        soft_cross_entropy(x[:, :1], q[:, :1])  # binary: refused (documented)
    with pytest.raises(ValueError, match="multiclass logits"):
        soft_cross_entropy(x[:, :1], torch.zeros(2, 5, 6, dtype=torch.long))  # also with indices
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C, H, W\)"):
        soft_cross_entropy(x[0], q[0])
    with pytest.raises(ValueError, match="floating"):
        soft_cross_entropy(x.long(), q)
    with pytest.raises(TypeError, match="logits"):
        soft_cross_entropy(x.numpy(), q)
    with pytest.raises(TypeError, match="target"):
        soft_cross_entropy(x, q.numpy())
    with pytest.raises(ValueError, match="reduction"):
        soft_cross_entropy(x, q, reduction="avg")
    with pytest.raises(ValueError, match="reduction"):
        SoftCrossEntropyLoss(reduction="avg")
    with pytest.raises(TypeError, match="ignore_index"):
        SoftCrossEntropyLoss(ignore_index=2.5)


# ------------------------------------------------------------------------------------------
# dtypes and memory layouts
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("target_dtype", ["same", torch.float32, torch.float64])
def test_dtypes(dtype, target_dtype):
    """The result has the logits' dtype (a target of another dtype is cast to it) and is close to
    float64 on the same rounded logits and probabilities; the mean accumulates in float32."""
    x64, q64, _ = _soft_inputs(n=2, c=5, h=16, w=16, seed=7)
    x = x64.to(dtype).requires_grad_()
    q = q64.to(dtype if target_dtype == "same" else target_dtype)
    ref_x = x.detach().double().requires_grad_()
    ref_q = q.to(dtype).double()  # what the loss computes with (its rounding error is the low dtype's:
    # soft_cross_entropy itself would refuse it as a float64 target, so the reference is the formula)
    per_pixel = -(ref_q * torch.log_softmax(ref_x, dim=1)).sum(1)
    refs = {"none": per_pixel, "sum": per_pixel.sum(), "mean": per_pixel.sum() / (ref_q.sum(1) > 0).sum()}
    rtol = {torch.float16: 4 * 2.0**-10, torch.bfloat16: 4 * 2.0**-7, torch.float32: 1e-5}[dtype]
    for r in REDUCTIONS:
        out, ref = soft_cross_entropy(x, q, reduction=r), refs[r]
        assert out.dtype == dtype
        scale = float(ref.detach().abs().max())
        torch.testing.assert_close(out.double(), ref.detach(), rtol=rtol, atol=rtol * scale)
        if r == "mean":
            g, g_ref = _grad(out, x), _grad(ref, ref_x)
            assert g.dtype == dtype
            torch.testing.assert_close(g.double(), g_ref, rtol=rtol, atol=rtol * float(g_ref.abs().max()))


def test_float16_mean_over_many_pixels_is_finite():
    """More pixels count than float16 can count (65,504): the mean is summed in float32."""
    g = torch.Generator().manual_seed(8)
    x = torch.randn(1, 3, 512, 512, generator=g)
    q = torch.softmax(torch.randn(1, 3, 512, 512, generator=g), dim=1)
    out = soft_cross_entropy(x.half(), q.half())
    ref = soft_cross_entropy(x.half().double(), q.half().double())
    assert out.dtype == torch.float16 and torch.isfinite(out)
    torch.testing.assert_close(out.double(), ref, rtol=4 * 2.0**-10, atol=0)


def test_memory_layouts_of_the_target():
    x, q, _ = _soft_inputs(seed=9, requires_grad=True)
    channels_last = dict(memory_format=torch.channels_last)
    for y, u in [(x.detach().contiguous(**channels_last), q.contiguous(**channels_last)),  # both channels_last
                 (x.detach(), q.transpose(2, 3).contiguous().transpose(2, 3))]:  # a non-contiguous target
        assert not u.is_contiguous()
        y = y.clone().requires_grad_()  # (clone keeps the memory format)
        for r in REDUCTIONS:
            torch.testing.assert_close(soft_cross_entropy(y, u, reduction=r), soft_cross_entropy(x, q, reduction=r))
            torch.testing.assert_close(_grad(soft_cross_entropy(y, u, reduction=r), y),
                                       _grad(soft_cross_entropy(x, q, reduction=r), x))


# ------------------------------------------------------------------------------------------
# module, registry
# ------------------------------------------------------------------------------------------
def test_module():
    loss = SoftCrossEntropyLoss(ignore_index=IGNORE, reduction="sum")
    assert repr(loss) == "SoftCrossEntropyLoss(ignore_index=255, reduction='sum')"
    assert loss.state_dict() == {}
    x, q, _ = _soft_inputs()
    assert torch.equal(loss(x, q), soft_cross_entropy(x, q, reduction="sum"))


def test_registered_as_soft_ce():
    assert "soft-ce" in loss_names()
    spec = loss_spec("soft-ce")
    assert spec.options == () and "probabilities" in spec.help
    built = build_loss("soft-ce", LossContext(num_classes=3, ignore_index=IGNORE))
    assert type(built) is SoftCrossEntropyLoss and built.ignore_index == IGNORE and built.reduction == "mean"
    x, t = multiclass_inputs(c=3, ignore_index=IGNORE)
    assert torch.equal(built(x, t), cross_entropy(x, t, ignore_index=IGNORE))
    x, q, _ = _soft_inputs(c=3)
    assert torch.equal(built(x, q), soft_cross_entropy(x, q))
    with pytest.raises(ValueError, match=r"'soft-ce' takes multiclass logits"):
        build_loss("soft-ce", LossContext(num_classes=1))


# ------------------------------------------------------------------------------------------
# block fractions (pixelweight.spectral) as targets
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("reduction", REDUCTIONS)
def test_block_fractions_at_block_1_give_cross_entropy_of_the_dense_labels(reduction):
    x, t = multiclass_inputs(n=2, c=4, h=8, w=12, ignore_index=IGNORE, seed=10, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    soft = block_fractions(t, 1, num_classes=4, ignore_index=IGNORE, dtype=torch.float64)
    assert soft.shape == x.shape
    out = soft_cross_entropy(x, soft, reduction=reduction)
    ref = cross_entropy(y, t, ignore_index=IGNORE, reduction=reduction)
    torch.testing.assert_close(out, ref, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(_grad(out, x), _grad(ref, y), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("block", [2, 4])
def test_block_fractions_are_valid_targets(block):
    """float32 fractions of b x b blocks (restored to full size) with whole blocks ignored: the
    mean runs over the pixels of blocks that hold a valid pixel, with -sum_c q_ic log p_ic."""
    x, t = multiclass_inputs(n=2, c=4, h=8, w=12, ignore_index=IGNORE, seed=11)
    x = x.float()
    t[0, :4, :4] = IGNORE  # a whole block without a valid pixel (for b = 2 and b = 4)
    soft = block_fractions(t, block, num_classes=4, ignore_index=IGNORE, restore=True)
    assert soft.dtype == torch.float32 and soft.shape == x.shape
    counted = soft.sum(1) > 0
    assert not counted[0, :4, :4].any()
    per_pixel = -(soft.double() * torch.log_softmax(x.double(), dim=1)).sum(1)
    torch.testing.assert_close(soft_cross_entropy(x, soft).double(), per_pixel.sum() / counted.sum(),
                               rtol=1e-6, atol=1e-6)
    # at the blocks' resolution (the network's coarse output) too
    coarse = block_fractions(t, block, num_classes=4, ignore_index=IGNORE)
    xc = x[..., ::block, ::block]
    ref = -(coarse.double() * torch.log_softmax(xc.double(), dim=1)).sum(1)
    torch.testing.assert_close(soft_cross_entropy(xc, coarse, reduction="sum").double(), ref.sum(),
                               rtol=1e-6, atol=1e-6)
