"""The salient-object-detection losses against transcriptions of their authors' code.

Each reference below is written from the public code, in plain torch, independently of
:mod:`pixelweight.losses.sod`: FLoss (``zeakey/iccv2019-fmeasure``, ``pytorch/floss.py``),
F3Net's ``structure_loss`` (``weijun88/F3Net``, ``src/train.py``, run here line for line,
deprecated ``reduce='none'`` included) and BASNet's ``bce_ssim_loss`` (``xuebinqin/BASNet``:
``nn.BCELoss``, ``pytorch_ssim`` with its ``conv2d`` window, ``pytorch_iou``'s loop). The
contract suite (``tests/losses/test_contract.py``) runs the rest.
"""

import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from pixelweight.losses import (
    HybridLoss,
    SoftFMeasureLoss,
    StructureLoss,
    hybrid_loss,
    soft_fmeasure_loss,
    structure_loss,
)


# ------------------------------------------------------------------------- the references


def floss_reference(prediction, target, beta=0.3):
    """``FLoss.forward`` of floss.py (``beta`` is beta^2), per image; prediction = sigmoid(logits)."""
    EPS = 1e-10
    N = prediction.size(0)
    TP = (prediction * target).view(N, -1).sum(dim=1)
    H = beta * target.view(N, -1).sum(dim=1) + prediction.view(N, -1).sum(dim=1)
    fmeasure = (1 + beta) * TP / (H + EPS)
    return 1 - fmeasure


def f3net_structure_loss_official(pred, mask):
    """F3Net's ``structure_loss`` as published (``reduce='none'``: PyTorch reads the deprecated
    boolean as 'reduce', so the BCE is the batch mean)."""
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # size_average and reduce args will be deprecated
        wbce = F.binary_cross_entropy_with_logits(pred, mask, reduce="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou).mean()


def f3net_structure_loss_intended(pred, mask):
    """The same with ``reduction='none'`` (PraNet's later copies): the BCE really weighted; per image."""
    weit = 1 + 5 * torch.abs(F.avg_pool2d(mask, kernel_size=31, stride=1, padding=15) - mask)
    wbce = F.binary_cross_entropy_with_logits(pred, mask, reduction="none")
    wbce = (weit * wbce).sum(dim=(2, 3)) / weit.sum(dim=(2, 3))
    pred = torch.sigmoid(pred)
    inter = ((pred * mask) * weit).sum(dim=(2, 3))
    union = ((pred + mask) * weit).sum(dim=(2, 3))
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return (wbce + wiou)[:, 0]


def _gaussian(window_size, sigma):
    gauss = torch.tensor([math.exp(-(x - window_size // 2) ** 2 / float(2 * sigma**2)) for x in range(window_size)],
                         dtype=torch.float64)
    return gauss / gauss.sum()


def basnet_ssim(img1, img2, window_size=11):
    """pytorch_ssim's ``_ssim`` (one channel, ``size_average=False``: one value per image)."""
    _1d = _gaussian(window_size, 1.5).unsqueeze(1)
    window = _1d.mm(_1d.t()).unsqueeze(0).unsqueeze(0).to(img1.dtype)
    pad = window_size // 2
    mu1 = F.conv2d(img1, window, padding=pad)
    mu2 = F.conv2d(img2, window, padding=pad)
    mu1_sq, mu2_sq, mu1_mu2 = mu1.pow(2), mu2.pow(2), mu1 * mu2
    sigma1_sq = F.conv2d(img1 * img1, window, padding=pad) - mu1_sq
    sigma2_sq = F.conv2d(img2 * img2, window, padding=pad) - mu2_sq
    sigma12 = F.conv2d(img1 * img2, window, padding=pad) - mu1_mu2
    C1, C2 = 0.01**2, 0.03**2
    ssim_map = ((2 * mu1_mu2 + C1) * (2 * sigma12 + C2)) / ((mu1_sq + mu2_sq + C1) * (sigma1_sq + sigma2_sq + C2))
    return ssim_map.mean(1).mean(1).mean(1)


def basnet_iou(pred, target):
    """pytorch_iou's ``_iou`` loop, per image."""
    out = []
    for i in range(pred.shape[0]):
        Iand1 = torch.sum(target[i, :, :, :] * pred[i, :, :, :])
        Ior1 = torch.sum(target[i, :, :, :]) + torch.sum(pred[i, :, :, :]) - Iand1
        out.append(1 - Iand1 / Ior1)
    return torch.stack(out)


def basnet_bce_ssim_loss(logits, target):
    """``bce_ssim_loss`` of basnet_train.py on sigmoid outputs, per image (nn.BCELoss per image)."""
    pred = torch.sigmoid(logits)
    bce = torch.stack([torch.nn.BCELoss()(pred[i], target[i]) for i in range(pred.shape[0])])
    return bce + (1 - basnet_ssim(pred, target)) + basnet_iou(pred, target)


# ---------------------------------------------------------------------------- hand-built maps


def _maps():
    """Ground truths (N, 1, H, W) as 0./1. and logits: blobs, a thin ring, a border object, an empty
    and a full map; the logits are a noisy version of the answer (confident and uncertain parts)."""
    rng = np.random.default_rng(0)
    h, w = 37, 44
    smooth = gaussian_filter(rng.random((3, h, w)), sigma=(0, 3, 3))
    gt = smooth > np.quantile(smooth.reshape(3, -1), 0.7, axis=1)[:, None, None]
    ring = np.zeros((h, w), bool)
    ring[8:30, 10:35] = True
    ring[10:28, 12:33] = False
    border = np.zeros((h, w), bool)
    border[:12, -15:] = True
    gt = np.concatenate([gt, ring[None], border[None], np.zeros((1, h, w), bool), np.ones((1, h, w), bool)])
    logits = 4 * (gt - 0.5) + 2.5 * rng.standard_normal(gt.shape)
    return torch.from_numpy(logits).unsqueeze(1), torch.from_numpy(gt.astype(np.float64)).unsqueeze(1)


LOGITS, GT = _maps()


def test_the_maps_are_not_trivial():
    assert GT[:, 0].flatten(1).sum(1)[-2:].tolist() == [0.0, 37 * 44]
    weit = 1 + 5 * torch.abs(F.avg_pool2d(GT, 31, 1, 15) - GT)
    assert weit.max() > 3  # the edge weights vary a lot


# ------------------------------------------------------------------------------------ FLoss


@pytest.mark.parametrize("beta2", [0.3, 1.0])
def test_floss_matches_the_official_code(beta2):
    ours = soft_fmeasure_loss(LOGITS, GT[:, 0].long(), beta2=beta2, reduction="none")
    torch.testing.assert_close(ours, floss_reference(torch.sigmoid(LOGITS), GT, beta2), rtol=0, atol=1e-12)
    mean = SoftFMeasureLoss(beta2=beta2)(LOGITS, GT)
    torch.testing.assert_close(mean, floss_reference(torch.sigmoid(LOGITS), GT, beta2).mean(), rtol=0, atol=1e-12)


def test_floss_gradient_matches_the_official_code():
    x = LOGITS.clone().requires_grad_()
    y = LOGITS.clone().requires_grad_()
    soft_fmeasure_loss(x, GT).backward()
    floss_reference(torch.sigmoid(y), GT).mean().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-14)


def test_floss_on_an_empty_target_is_one_with_zero_gradient():
    x = LOGITS[5:6].clone().requires_grad_()
    loss = soft_fmeasure_loss(x, GT[5:6])
    loss.backward()
    assert loss.item() == 1.0 and torch.equal(x.grad, torch.zeros_like(x))


# --------------------------------------------------------------------------- structure loss


def test_structure_loss_published_is_the_official_code_line_for_line():
    ours = structure_loss(LOGITS, GT[:, 0].long())  # form="published" is the default
    torch.testing.assert_close(ours, f3net_structure_loss_official(LOGITS, GT), rtol=0, atol=1e-12)
    x, y = LOGITS.clone().requires_grad_(), LOGITS.clone().requires_grad_()
    structure_loss(x, GT).backward()
    f3net_structure_loss_official(y, GT).backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-14)


def test_the_published_bce_is_unweighted():
    """The pitfall, shown on the official line: reduce='none' returns the scalar mean BCE, so the
    'weighted' BCE equals the plain mean whatever the weights."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = F.binary_cross_entropy_with_logits(LOGITS, GT, reduce="none")
    assert out.shape == ()
    torch.testing.assert_close(out, F.binary_cross_entropy_with_logits(LOGITS, GT))
    published = structure_loss(LOGITS, GT, reduction="none")
    intended = structure_loss(LOGITS, GT, form="intended", reduction="none")
    assert (published - intended).abs().max() > 1e-2  # the two forms differ where the weights vary


def test_structure_loss_intended_matches_the_weighted_copy():
    ours = structure_loss(LOGITS, GT, form="intended", reduction="none")
    torch.testing.assert_close(ours, f3net_structure_loss_intended(LOGITS, GT), rtol=0, atol=1e-12)
    module = StructureLoss(form="intended", reduction="sum")
    torch.testing.assert_close(module(LOGITS, GT[:, 0]), f3net_structure_loss_intended(LOGITS, GT).sum(),
                               rtol=0, atol=1e-12)


def test_structure_loss_per_image_is_the_official_loss_of_each_image():
    none = structure_loss(LOGITS, GT, reduction="none")
    for k in range(GT.shape[0]):
        torch.testing.assert_close(none[k], f3net_structure_loss_official(LOGITS[k:k + 1], GT[k:k + 1]),
                                   rtol=0, atol=1e-12)


# ------------------------------------------------------------------------------ hybrid loss


def test_hybrid_loss_matches_basnet():
    ours = hybrid_loss(LOGITS, GT[:, 0].long(), reduction="none")
    torch.testing.assert_close(ours, basnet_bce_ssim_loss(LOGITS, GT), rtol=0, atol=1e-12)
    torch.testing.assert_close(HybridLoss()(LOGITS, GT), basnet_bce_ssim_loss(LOGITS, GT).mean(), rtol=0, atol=1e-12)
    x, y = LOGITS.clone().requires_grad_(), LOGITS.clone().requires_grad_()
    hybrid_loss(x, GT).backward()
    basnet_bce_ssim_loss(y, GT).mean().backward()
    torch.testing.assert_close(x.grad, y.grad, rtol=0, atol=1e-13)


def test_hybrid_ssim_term_on_tiny_images_and_windows_past_the_border():
    """Images smaller than the 11x11 window (every shift reaches past the border)."""
    g = torch.Generator().manual_seed(3)
    for h, w in [(1, 1), (3, 4), (5, 12)]:
        z = 2 * torch.randn(2, 1, h, w, generator=g, dtype=torch.float64)
        t = (torch.rand(2, 1, h, w, generator=g) < 0.5).double()
        t[0, 0, 0, 0] = 1.0  # no 0/0 in the IoU
        torch.testing.assert_close(hybrid_loss(z, t, reduction="none"), basnet_bce_ssim_loss(z, t), rtol=0,
                                   atol=1e-12)


def test_hybrid_iou_zero_over_zero_is_a_perfect_overlap():
    """No foreground and a prediction of exactly 0: the reference's 0/0 is NaN, here the IoU term is 0."""
    z = torch.full((1, 1, 6, 6), -800.0, dtype=torch.float64, requires_grad=True)  # sigmoid underflows to 0
    loss = hybrid_loss(z, torch.zeros(1, 6, 6, dtype=torch.long))
    assert torch.isnan(basnet_iou(torch.sigmoid(z.detach()), torch.zeros(1, 1, 6, 6))).all()
    loss.backward()
    assert torch.isfinite(loss) and loss.item() == pytest.approx(0.0, abs=1e-12)
    assert torch.isfinite(z.grad).all()


# --------------------------------------------------------------------------- ignored pixels


@pytest.mark.parametrize("name", ["floss", "structure", "structure-intended", "hybrid"])
def test_a_padded_image_scores_what_the_image_scores(name):
    """Ignored pixels are outside the image (label 0 for the windows, like the zero padding, left
    out of every sum): an ignored frame around each image changes neither loss nor gradient."""
    loss = {"floss": soft_fmeasure_loss, "structure": structure_loss, "hybrid": hybrid_loss,
            "structure-intended": lambda *a, **k: structure_loss(*a, form="intended", **k)}[name]
    pad = (3, 5, 2, 4)
    x = LOGITS.clone().requires_grad_()
    x_pad = F.pad(LOGITS, pad, value=-9.0).requires_grad_()
    t_pad = F.pad(GT[:, 0].long(), pad, value=255)
    out, out_pad = loss(x, GT, reduction="none"), loss(x_pad, t_pad, ignore_index=255, reduction="none")
    torch.testing.assert_close(out_pad, out, rtol=0, atol=1e-12)
    (g,) = torch.autograd.grad(out.sum(), x)
    (g_pad,) = torch.autograd.grad(out_pad.sum(), x_pad)
    torch.testing.assert_close(g_pad[..., 2:-4, 3:-5], g, rtol=0, atol=1e-14)
    assert g_pad[..., :2, :].abs().max() == 0


# ------------------------------------------------------------------------------- validation


@pytest.mark.parametrize("loss", [soft_fmeasure_loss, structure_loss, hybrid_loss])
def test_invalid_inputs_raise(loss):
    t = GT[:, 0].long()
    for bad_logits, match in [(LOGITS[:, 0], r"\(N, 1, H, W\)"), (LOGITS.expand(-1, 3, -1, -1), r"\(N, 1, H, W\)"),
                              (LOGITS.long(), "floating")]:
        with pytest.raises(ValueError, match=match):
            loss(bad_logits, t)
    for bad_target, match in [(t[:, :5], "target"), (t * 2, "0 or 1"), (GT * 0.5, "0.0 and 1.0"),
                              (torch.where(GT == 1, math.nan, 0.0), "0.0 and 1.0")]:
        with pytest.raises(ValueError, match=match):
            loss(LOGITS, bad_target)
    with pytest.raises(TypeError, match="torch.Tensor"):
        loss(LOGITS.numpy(), t)
    with pytest.raises(ValueError, match="reduction"):
        loss(LOGITS, t, reduction="batch")


def test_options_are_validated():
    with pytest.raises(ValueError, match="beta2"):
        soft_fmeasure_loss(LOGITS, GT, beta2=-0.3)
    with pytest.raises(ValueError, match="beta2"):
        SoftFMeasureLoss(beta2=math.inf)
    with pytest.raises(ValueError, match=r"form must be one of \('published', 'intended'\)"):
        structure_loss(LOGITS, GT, form="weighted")
    with pytest.raises(TypeError, match="form"):
        StructureLoss(form=1)
    with pytest.raises(TypeError, match="ignore_index"):
        HybridLoss(ignore_index="255")


@pytest.mark.parametrize("loss", [soft_fmeasure_loss, structure_loss, hybrid_loss])
def test_nan_logit_gives_nan_and_the_cpu_is_deterministic(loss):
    z = LOGITS.clone()
    z[1, 0, 5, 5] = math.nan
    out = loss(z, GT, reduction="none")
    assert torch.isnan(out[1]) and torch.isfinite(out[[0, 2, 3, 4, 5, 6]]).all()
    runs = []
    for _ in range(2):
        x = LOGITS.float().clone().requires_grad_()
        value = loss(x, GT)
        value.backward()
        runs.append((value.detach(), x.grad))
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])
