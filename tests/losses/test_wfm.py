"""The Weighted F-measure loss: the exact metric made a loss.

What is particular to it (the contract suite, ``tests/losses/test_contract.py``, runs the
rest): it equals 1 - the library's exact metric (which ``tests/metrics/test_foreground.py``
holds to PySODMetrics) on any prediction, and 1 - PySODMetrics on binary predictions; its
hand-written backward pass is the metric's gradient; cached ground-truth terms are used, not
recomputed; the importance term B pushes a distant false positive harder; the smooth minimum
is the formula it claims; ignored pixels are outside the image; inputs are validated.
"""

import math

import numpy as np
import py_sod_metrics as psm
import pytest
import torch
from scipy.ndimage import convolve, distance_transform_edt, gaussian_filter

from pixelweight.losses import WeightedFMeasureLoss, weighted_fmeasure_loss
from pixelweight.losses import wfm as wfm_module
from pixelweight.metrics import weighted_fmeasure, wfm_gt_terms

ALPHA = math.log(0.5) / 5
EPS = float(np.spacing(1))


def blobs(rng, n, h, w, fraction=0.3):
    """Smooth random foreground shapes covering about ``fraction`` of each image."""
    smooth = gaussian_filter(rng.random((n, h, w)), sigma=(0, 2, 2))
    cut = np.quantile(smooth.reshape(n, -1), 1 - fraction, axis=1)
    return smooth > cut[:, None, None]


def _targets():
    rng = np.random.default_rng(0)
    cases = {f"blobs_{h}x{w}": blobs(rng, 3, h, w) for h, w in [(16, 16), (23, 31), (40, 17)]}
    cases["noise"] = rng.random((2, 12, 15)) < 0.4
    border = np.zeros((3, 10, 13), dtype=bool)
    border[0, :, 0] = True
    border[1, 0, :] = True
    border[2, 6:, 8:] = True
    cases["border"] = border
    thin = np.zeros((2, 14, 12), dtype=bool)
    thin[0, 7, 2:10] = True
    thin[1, np.arange(12), np.arange(12)] = True
    cases["thin"] = thin
    single = np.zeros((2, 9, 11), dtype=bool)
    single[0, 4, 5] = single[1, 0, 10] = True
    cases["single_pixel"] = single
    cases["full_and_empty"] = np.stack([np.ones((8, 9), bool), np.zeros((8, 9), bool)])
    cases["tiny"] = np.array([[[True]], [[False]]])
    cases["one_row"] = np.array([[[0, 0, 1, 1, 0, 0, 0, 0, 1]], [[1] * 9]], dtype=bool)
    return cases


TARGETS = _targets()


def _logits(shape, seed, scale=3.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(shape[0], 1, *shape[1:], generator=g, dtype=torch.float64))


# ------------------------------------------------------------------------ the exact metric


@pytest.mark.parametrize("beta2", [1.0, 0.3])
@pytest.mark.parametrize("name", sorted(TARGETS))
def test_loss_is_one_minus_the_exact_metric_value_and_gradient(name, beta2):
    """On any prediction: loss = 1 - weighted_fmeasure(sigmoid(z)) to rounding, and the hand-written
    backward pass equals autograd through the metric (times sigmoid')."""
    gt = torch.from_numpy(TARGETS[name])
    z = _logits(gt.shape, seed=len(name)).requires_grad_()
    loss = weighted_fmeasure_loss(z, gt.long(), beta2=beta2, reduction="none")
    p = torch.sigmoid(z.detach())[:, 0].requires_grad_()
    ref = 1 - weighted_fmeasure(p, gt, beta2=beta2)
    torch.testing.assert_close(loss, ref, rtol=0, atol=1e-12)
    cotangent = torch.rand(loss.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    (grad,) = torch.autograd.grad(loss, z, cotangent)
    (grad_p,) = torch.autograd.grad(ref, p, cotangent)
    torch.testing.assert_close(grad[:, 0], grad_p * p.detach() * (1 - p.detach()), rtol=0, atol=1e-12)


@pytest.mark.parametrize("name", ["blobs_16x16", "blobs_23x31", "border", "thin", "noise", "full_and_empty"])
def test_binary_predictions_equal_pysodmetrics(name):
    """Saturated logits give a binary map D; the loss is 1 - the metric on D and 1 - PySODMetrics'
    WeightedFmeasure (normalize=False, beta = beta^2 = 1) on it, to 1e-6 (in fact to rounding)."""
    gt = TARGETS[name]
    rng = np.random.default_rng(3)
    binary = np.where(rng.random(gt.shape) < 0.2, ~gt, gt)  # the ground truth with 20% of it flipped
    z = torch.from_numpy(np.where(binary, 60.0, -60.0)).unsqueeze(1)
    loss = weighted_fmeasure_loss(z, torch.from_numpy(gt), reduction="none")
    d = torch.from_numpy(binary.astype(np.float64))
    torch.testing.assert_close(loss, 1 - weighted_fmeasure(d, torch.from_numpy(gt)), rtol=0, atol=1e-12)
    for k in range(gt.shape[0]):
        metric = psm.WeightedFmeasure()
        metric.step(binary[k].astype(np.float64), gt[k], normalize=False)
        assert abs(loss[k].item() - (1 - metric.get_results()["wfm"])) < 1e-6


def test_a_perfect_binary_prediction_has_zero_loss_and_an_empty_target_loss_one():
    gt = torch.from_numpy(TARGETS["blobs_16x16"])
    z = torch.where(gt, 60.0, -60.0).double().unsqueeze(1)
    assert torch.all(weighted_fmeasure_loss(z, gt, reduction="none") < 1e-12)
    empty = torch.zeros_like(gt)
    z = torch.randn(z.shape, dtype=torch.float64, requires_grad=True)
    loss = weighted_fmeasure_loss(z, empty, reduction="none")
    assert torch.equal(loss.detach(), torch.ones(3, dtype=torch.float64))  # F^w = 0: the metric's convention
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.equal(grad, torch.zeros_like(grad))  # finite: zero


def test_full_target_gives_finite_values_and_gradients():
    gt = torch.ones(2, 7, 9, dtype=torch.long)
    z = torch.randn(2, 1, 7, 9, dtype=torch.float64, generator=torch.Generator().manual_seed(0)).requires_grad_()
    z.data[1] = -80.0  # everything missed (D = 0 to rounding)
    loss = weighted_fmeasure_loss(z, gt, reduction="none")
    (grad,) = torch.autograd.grad(loss.sum(), z)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()
    torch.testing.assert_close(loss, 1 - weighted_fmeasure(torch.sigmoid(z.detach()[:, 0]), gt == 1))
    # the blur's zero padding forgives part of a missed foreground within 3 pixels of the border
    # (as in the reference code): an all-missed 7x9 map does not score 0
    assert 0 < loss[1].item() < 1
    assert torch.all(grad[0] <= 0)  # raising any foreground logit lowers the loss


# -------------------------------------------------------------------------------- gradients


def _gradcheck_case():
    g = torch.Generator().manual_seed(7)
    z = 1.5 * torch.randn(2, 1, 6, 7, dtype=torch.float64, generator=g)
    gt = torch.zeros(2, 6, 7, dtype=torch.bool)
    gt[0, 1:4, 2:6] = True
    gt[1, 3:, :3] = True
    return z, gt


def test_gradcheck_case_stays_away_from_the_min_tie():
    """Recompute E and E_A with PySODMetrics' own steps: every foreground pixel is more than 1e-4
    from the tie E = E_A (gradcheck perturbs by 1e-6), and both branches of the minimum occur."""
    z, gt = _gradcheck_case()
    pred, gt = torch.sigmoid(z[:, 0]).numpy(), gt.numpy()
    lower = higher = 0
    for p, g in zip(pred, gt):
        _, idx = distance_transform_edt(~g, return_indices=True)
        e = np.abs(p - g)
        e_a = convolve(e[idx[0], idx[1]], psm.WeightedFmeasure().matlab_style_gauss2D((7, 7), 5), mode="constant", cval=0)
        gap = (e_a - e)[g]
        assert np.abs(gap).min() > 1e-4
        lower += int((gap < 0).sum())
        higher += int((gap > 0).sum())
    assert lower > 0 and higher > 0


@pytest.mark.parametrize("beta2, smoothing", [(1.0, 0.0), (0.3, 0.0), (1.0, 0.1)])
def test_gradcheck(beta2, smoothing):
    z, gt = _gradcheck_case()
    terms = wfm_gt_terms(gt)
    assert torch.autograd.gradcheck(
        lambda x: weighted_fmeasure_loss(x, gt, beta2, smoothing, reduction="none", terms=terms),
        (z.requires_grad_(),), eps=1e-6, atol=1e-8)


def test_distant_false_positive_is_pushed_down_harder():
    """A background pixel's error enters only FP^w = sum_i B_i D_i, B_i = 2 - exp(alpha Delta_i):
    with the same D, the gradient at a false positive far from the object is B_far / B_near times
    the one next to it (Delta from the pixel coordinates, not from the library)."""
    gt = torch.zeros(1, 16, 16, dtype=torch.long)
    gt[0, 2:6, 2:6] = 1
    z = torch.where(gt == 1, 2.0, -1.0).double().unsqueeze(1).requires_grad_()
    (grad,) = torch.autograd.grad(weighted_fmeasure_loss(z, gt), z)
    near, far = (7, 3), (14, 14)  # 2 rows below the object; far in the corner
    delta_near = 2.0
    delta_far = math.hypot(14 - 5, 14 - 5)  # to the object's corner (5, 5)
    b_near, b_far = 2 - math.exp(ALPHA * delta_near), 2 - math.exp(ALPHA * delta_far)
    g_near, g_far = grad[0, 0][near].item(), grad[0, 0][far].item()
    assert g_near > 0 and g_far > 0  # raising a background logit raises the loss
    assert g_far / g_near == pytest.approx(b_far / b_near, rel=1e-12)
    assert g_far > 1.3 * g_near


# ------------------------------------------------------------------------- the smooth minimum


def _wfm_numpy(pred, gt, beta2=1.0, smoothing=0.0):
    """Margolin's F^w transcribed from PySODMetrics' WeightedFmeasure.cal_wfm (numpy, scipy), with the
    minimum optionally replaced by the smooth minimum 0.5 (a + b - sqrt((a - b)^2 + s^2))."""
    if not gt.any():
        return 0.0
    e = np.abs(pred - gt)
    dst, idx = distance_transform_edt(~gt, return_indices=True)
    et = e.copy()
    et[~gt] = et[idx[0][~gt], idx[1][~gt]]
    ea = convolve(et, psm.WeightedFmeasure().matlab_style_gauss2D((7, 7), 5), mode="constant", cval=0)
    if smoothing > 0:
        emin = 0.5 * (e + ea - np.sqrt((e - ea) ** 2 + smoothing**2))
    else:
        emin = np.minimum(e, ea)
    mine = np.where(gt, emin, e)
    b = np.where(gt, 1.0, 2 - np.exp(ALPHA * dst))
    ew = mine * b
    tpw = gt.sum() - ew[gt].sum()
    fpw = ew[~gt].sum()
    r = 1 - ew[gt].mean()
    p = tpw / (tpw + fpw + EPS)
    return (1 + beta2) * r * p / (r + beta2 * p + EPS)


@pytest.mark.parametrize("smoothing", [0.0, 0.05, 0.3])
def test_smooth_minimum_against_a_transcription(smoothing):
    gt = TARGETS["blobs_23x31"]
    z = _logits(gt.shape, seed=4)
    loss = weighted_fmeasure_loss(z, torch.from_numpy(gt), beta2=0.3, smoothing=smoothing, reduction="none")
    pred = torch.sigmoid(z[:, 0]).numpy()
    ref = [1 - _wfm_numpy(pred[k], gt[k], 0.3, smoothing) for k in range(gt.shape[0])]
    np.testing.assert_allclose(loss.numpy(), ref, rtol=0, atol=1e-12)


def test_smooth_minimum_is_below_the_exact_one_and_converges():
    gt = torch.from_numpy(TARGETS["blobs_16x16"])
    z = _logits(gt.shape, seed=5)
    exact = weighted_fmeasure_loss(z, gt, reduction="none")
    previous = None
    for s in (0.5, 0.1, 0.01, 1e-6):
        smooth = weighted_fmeasure_loss(z, gt, smoothing=s, reduction="none")
        assert torch.all(smooth <= exact + 1e-15)  # E' below min(E, E_A): fewer errors, a larger F^w
        if previous is not None:
            assert torch.all((smooth - exact).abs() <= (previous - exact).abs() + 1e-15)
        previous = smooth
    torch.testing.assert_close(previous, exact, rtol=0, atol=1e-5)


# ---------------------------------------------------------------------- cached ground truth


def test_cached_terms_give_the_same_bits_and_skip_the_distance_transform(monkeypatch):
    gt = torch.from_numpy(TARGETS["blobs_40x17"]).long()
    terms = wfm_gt_terms(gt == 1, dtype=torch.float32)
    z = _logits(gt.shape, seed=6).float()
    x1, x2 = z.clone().requires_grad_(), z.clone().requires_grad_()
    a = weighted_fmeasure_loss(x1, gt, reduction="none")

    def forbidden(*args, **kwargs):
        raise AssertionError("the ground-truth terms were recomputed although they were passed")

    monkeypatch.setattr(wfm_module, "_gt_terms", forbidden)
    b = weighted_fmeasure_loss(x2, gt, reduction="none", terms=terms)
    assert torch.equal(a, b)
    a.sum().backward()
    b.sum().backward()
    assert torch.equal(x1.grad, x2.grad)
    module = WeightedFMeasureLoss(reduction="none")
    assert torch.equal(module(z, gt, terms), b.detach())  # forward(logits, target, terms)
    with pytest.raises(AssertionError, match="recomputed"):
        weighted_fmeasure_loss(z, gt)  # without terms they are computed (here: forbidden)


def test_cached_terms_float64_with_float32_logits_are_cast():
    gt = torch.from_numpy(TARGETS["blobs_16x16"])
    z = _logits(gt.shape, seed=8).float()
    a = weighted_fmeasure_loss(z, gt, terms=wfm_gt_terms(gt))
    b = weighted_fmeasure_loss(z, gt, terms=wfm_gt_terms(gt, dtype=torch.float32))
    torch.testing.assert_close(a, b)


def test_terms_of_another_target_are_rejected():
    gt = torch.from_numpy(TARGETS["blobs_16x16"]).long()
    z = _logits(gt.shape, seed=9)
    other = gt.clone()
    other[0, 0, 0] = 1 - other[0, 0, 0]
    with pytest.raises(ValueError, match="another ground truth"):
        weighted_fmeasure_loss(z, gt, terms=wfm_gt_terms(other == 1))
    with pytest.raises(ValueError, match="shape"):
        weighted_fmeasure_loss(z[:2], gt[:2], terms=wfm_gt_terms(gt == 1))
    with pytest.raises(TypeError, match="WFMTerms"):
        weighted_fmeasure_loss(z, gt, terms=(gt == 1, None))
    # with ignore_index the terms are those of target == 1 (ignored pixels are background)
    ignored = gt.clone()
    ignored[:, :3] = 255
    weighted_fmeasure_loss(z, ignored, ignore_index=255, terms=wfm_gt_terms(ignored == 1))
    with pytest.raises(ValueError, match="another ground truth"):
        weighted_fmeasure_loss(z, ignored, ignore_index=255, terms=wfm_gt_terms(gt == 1))


# --------------------------------------------------------------------------- ignored pixels


def test_a_padded_image_scores_what_the_image_scores():
    """Ignored pixels are outside the image: an image padded with an ignored frame (as a crop
    padded with ignore_index) has the loss and gradient of the image itself."""
    gt = torch.from_numpy(TARGETS["blobs_23x31"]).long()
    z = _logits(gt.shape, seed=10).requires_grad_()
    pad = (4, 2, 3, 5)  # left, right, top, bottom
    z_pad = torch.nn.functional.pad(z.detach(), pad, value=7.0).requires_grad_()
    gt_pad = torch.nn.functional.pad(gt, pad, value=255)
    loss = weighted_fmeasure_loss(z, gt, reduction="none")
    loss_pad = weighted_fmeasure_loss(z_pad, gt_pad, ignore_index=255, reduction="none")
    torch.testing.assert_close(loss_pad, loss, rtol=0, atol=1e-12)
    (g,) = torch.autograd.grad(loss.sum(), z)
    (g_pad,) = torch.autograd.grad(loss_pad.sum(), z_pad)
    torch.testing.assert_close(g_pad[..., 3:-5, 4:-2], g, rtol=0, atol=1e-12)
    assert torch.all(g_pad[..., :3, :] == 0) and torch.all(g_pad[..., :, -2:] == 0)


def test_an_image_without_labelled_pixels_is_left_out_of_the_mean():
    gt = torch.from_numpy(TARGETS["blobs_16x16"]).long()
    z = _logits(gt.shape, seed=11)
    gt[1] = 255
    none = weighted_fmeasure_loss(z, gt, ignore_index=255, reduction="none")
    assert none[1] == 0
    mean = weighted_fmeasure_loss(z, gt, ignore_index=255)
    torch.testing.assert_close(mean, (none[0] + none[2]) / 2)


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "call, error, match",
    [
        (lambda z, t: weighted_fmeasure_loss(z.expand(-1, 2, -1, -1), t), ValueError, r"\(N, 1, H, W\)"),
        (lambda z, t: weighted_fmeasure_loss(z[:, 0], t), ValueError, r"\(N, 1, H, W\)"),
        (lambda z, t: weighted_fmeasure_loss(z, t[:, :4]), ValueError, "target"),
        (lambda z, t: weighted_fmeasure_loss(z, t + 1), ValueError, "0 or 1"),
        (lambda z, t: weighted_fmeasure_loss(z, t.double() * 0.5), ValueError, "0.0 and 1.0"),
        (lambda z, t: weighted_fmeasure_loss(z, torch.where(t == 1, float("nan"), 0.0)), ValueError, "0.0 and 1.0"),
        (lambda z, t: weighted_fmeasure_loss(z.long(), t), ValueError, "floating"),
        (lambda z, t: weighted_fmeasure_loss(z.numpy(), t), TypeError, "torch.Tensor"),
        (lambda z, t: weighted_fmeasure_loss(z[:0], t[:0]), ValueError, "at least one pixel"),
        (lambda z, t: weighted_fmeasure_loss(z, t, beta2=-1.0), ValueError, "beta2"),
        (lambda z, t: weighted_fmeasure_loss(z, t, beta2=math.inf), ValueError, "beta2"),
        (lambda z, t: weighted_fmeasure_loss(z, t, beta2=math.nan), ValueError, "beta2"),
        (lambda z, t: weighted_fmeasure_loss(z, t, smoothing=-0.1), ValueError, "smoothing"),
        (lambda z, t: weighted_fmeasure_loss(z, t, reduction="avg"), ValueError, "reduction"),
        (lambda z, t: weighted_fmeasure_loss(z, t, ignore_index=2.5), TypeError, "ignore_index"),
        (lambda z, t: WeightedFMeasureLoss(smoothing=math.inf), ValueError, "smoothing"),
    ],
)
def test_invalid_inputs_raise(call, error, match):
    gt = torch.from_numpy(TARGETS["blobs_16x16"]).long()
    with pytest.raises(error, match=match):
        call(_logits(gt.shape, seed=12), gt)


def test_nan_logits_give_nan_never_a_number():
    """NaN in, NaN out (the library's convention for losses): at a foreground or a background
    pixel, and in an image without foreground, whose F^w is otherwise the constant 0."""
    gt = torch.from_numpy(TARGETS["full_and_empty"]).long()
    z = _logits(gt.shape, seed=13)
    z[0, 0, 3, 3] = z[1, 0, 2, 2] = math.nan
    loss = weighted_fmeasure_loss(z, gt, reduction="none")
    assert torch.isnan(loss).all()
    gt = torch.from_numpy(TARGETS["blobs_16x16"]).long()
    z = _logits(gt.shape, seed=13)
    fg, bg = (gt[0] == 1).nonzero()[0].tolist(), (gt[1] == 0).nonzero()[0].tolist()
    z[0, 0, fg[0], fg[1]] = z[1, 0, bg[0], bg[1]] = math.nan
    loss = weighted_fmeasure_loss(z, gt, reduction="none")
    assert torch.isnan(loss[:2]).all() and torch.isfinite(loss[2])


def test_deterministic_on_the_cpu():
    gt = torch.from_numpy(TARGETS["blobs_40x17"]).long()
    terms = wfm_gt_terms(gt == 1, dtype=torch.float32)
    results = []
    for _ in range(3):
        z = _logits(gt.shape, seed=14).float().requires_grad_()
        loss = weighted_fmeasure_loss(z, gt, terms=terms)
        loss.backward()
        results.append((loss.detach(), z.grad))
    for loss, grad in results[1:]:
        assert torch.equal(loss, results[0][0]) and torch.equal(grad, results[0][1])
