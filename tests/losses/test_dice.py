"""Soft Dice: known values, a loop reference, MONAI as reference, ignored pixels, absent classes, errors.

The properties every loss shares (module == functional, gradcheck, dtypes, all-ignored batch,
reductions, memory layouts, state_dict, NaN, validation, torch.compile) are in test_contract.py."""

import math

import numpy as np
import pytest
import torch

from losses.loss_cases import DEVICES, REDUCTIONS, binary_inputs, multiclass_inputs, perfect_logits
from pixelweight.losses import SoftDiceLoss, soft_dice_loss


def _loop_reference(logits, target, smooth, ignore_index=None):
    """Per image and class Dice loss with explicit loops in numpy (float64)."""
    x = logits.detach().cpu().double().numpy()
    y = target.cpu().numpy()
    if x.shape[1] == 1:
        probs = 1 / (1 + np.exp(-x))
        y = y.reshape(x.shape[0], *x.shape[2:])
        onehot = (y == 1)[:, None].astype(float)
    else:
        e = np.exp(x - x.max(axis=1, keepdims=True))
        probs = e / e.sum(axis=1, keepdims=True)
        onehot = np.stack([(y == c) for c in range(x.shape[1])], axis=1).astype(float)
    valid = np.ones_like(y, dtype=bool) if ignore_index is None else (y != ignore_index)
    out = np.zeros((x.shape[0], probs.shape[1]))
    for n in range(x.shape[0]):
        for c in range(probs.shape[1]):
            p, g = probs[n, c][valid[n]], onehot[n, c][valid[n]]
            den = p.sum() + g.sum() + smooth
            out[n, c] = 1 - ((2 * (p * g).sum() + smooth) / den if den > 0 else 1.0)
    return torch.from_numpy(out)


def test_known_value_binary():
    logits = torch.zeros(1, 1, 1, 2, dtype=torch.float64)  # p = (1/2, 1/2)
    target = torch.tensor([[[1, 0]]])  # g = (1, 0)
    # s = 1: (2 * 1/2 + 1) / (1 + 1 + 1) = 2/3 -> loss 1/3; s = 0: 1 / 2 -> loss 1/2
    assert soft_dice_loss(logits, target).item() == pytest.approx(1 / 3)
    assert soft_dice_loss(logits, target, smooth=0.0).item() == pytest.approx(0.5)


def test_known_value_multiclass():
    # one image, 2 pixels, 2 classes; pixel 0: p = (3/4, 1/4) label 0; pixel 1: p = (1/2, 1/2) label 1
    logits = torch.tensor([[[[math.log(3.0), 0.0]], [[0.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 1]]])
    # class 0: sum p = 5/4, sum g = 1, sum pg = 3/4 -> D = (3/2 + 1) / (9/4 + 1) = 10/13
    # class 1: sum p = 3/4, sum g = 1, sum pg = 1/2 -> D = (1 + 1) / (7/4 + 1) = 8/11
    expected = torch.tensor([[1 - 10 / 13, 1 - 8 / 11]], dtype=torch.float64)
    torch.testing.assert_close(soft_dice_loss(logits, target, reduction="none"), expected)
    assert soft_dice_loss(logits, target).item() == pytest.approx(expected.mean().item())
    assert soft_dice_loss(logits, target, reduction="sum").item() == pytest.approx(expected.sum().item())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("smooth", [0.0, 1.0, 1e-3])
@pytest.mark.parametrize("binary", [False, True])
def test_matches_loop_reference(device, smooth, binary):
    dtype = torch.float64  # other dtypes: test_contract.py, against this float64 result
    logits, target = (binary_inputs if binary else multiclass_inputs)(dtype=dtype, device=device, ignore_index=255)
    ours = soft_dice_loss(logits, target, smooth, 255, "none")
    assert ours.shape == (2, 1 if binary else 4) and ours.dtype == dtype and ours.device.type == device
    tol = {}
    ref = _loop_reference(logits, target, smooth, 255).to(dtype)
    torch.testing.assert_close(ours.cpu(), ref, **tol)
    torch.testing.assert_close(soft_dice_loss(logits, target, smooth, 255).cpu(), ref.mean(), **tol)


# ---------------------------------------------------------------------------------------
# MONAI as reference (a test extra)
# ---------------------------------------------------------------------------------------
def _monai_dice(logits, target, smooth, ignore_index, per_image, reduction="none"):
    """MONAI's ``DiceLoss`` with the options that give this library's definition: softmax (sigmoid
    for one channel), one-hot labels, ``smooth_nr = smooth_dr = s``, background included, neither
    squared nor Jaccard, ``batch = not per_image``."""
    from monai.losses import DiceLoss

    binary = logits.shape[1] == 1
    loss = DiceLoss(include_background=True, to_onehot_y=not binary, sigmoid=binary, softmax=not binary,
                    squared_pred=False, jaccard=False, smooth_nr=smooth, smooth_dr=smooth,
                    batch=not per_image, ignore_index=ignore_index, reduction=reduction)
    return loss(logits, target.unsqueeze(1).to(logits.dtype) if binary else target.unsqueeze(1))


@pytest.mark.parametrize("per_image", [True, False])
@pytest.mark.parametrize("smooth", [1.0, 1e-3])
@pytest.mark.parametrize("binary", [False, True])
def test_matches_monai_dice_loss(per_image, smooth, binary):
    pytest.importorskip("monai")
    logits, target = (binary_inputs if binary else multiclass_inputs)(ignore_index=255)
    ours = soft_dice_loss(logits, target, smooth, 255, "none", per_image)
    torch.testing.assert_close(ours, _monai_dice(logits, target, smooth, 255, per_image).reshape(ours.shape))
    for reduction in ("mean", "sum"):  # the same while every image has a valid pixel
        torch.testing.assert_close(soft_dice_loss(logits, target, smooth, 255, reduction, per_image),
                                   _monai_dice(logits, target, smooth, 255, per_image, reduction))


def test_documented_differences_from_monai():
    pytest.importorskip("monai")
    logits, target = multiclass_inputs(n=3, ignore_index=255)
    target[2] = 255  # an image without a valid pixel
    # its entries are 0 in both, but MONAI's mean counts them and ours leaves the image out
    torch.testing.assert_close(soft_dice_loss(logits, target, 1.0, 255),
                               _monai_dice(logits, target, 1.0, 255, True, "mean") * 3 / 2)
    # with s = 0 its Dice is 0/0: NaN in MONAI, D = 1 (loss 0) here
    assert torch.isnan(_monai_dice(logits, target, 0.0, 255, True)[2]).all()
    assert torch.all(soft_dice_loss(logits, target, 0.0, 255, "none")[2] == 0)


def test_ignored_pixels_leave_every_sum():
    # ignoring a whole column equals cutting that column out of the image
    logits, target = multiclass_inputs(ignore_index=None)
    cut = target.clone()
    cut[:, :, 2] = 255
    kept = [0, 1, 3, 4, 5]
    torch.testing.assert_close(soft_dice_loss(logits, cut, ignore_index=255, reduction="none"),
                               soft_dice_loss(logits[..., kept], target[..., kept], reduction="none"))


def test_batch_dice_equals_dice_of_the_batch_as_one_image():
    logits, target = multiclass_inputs(ignore_index=255)
    side_by_side = torch.cat(list(logits), dim=-1).unsqueeze(0)  # (1, C, H, N*W)
    target_side = torch.cat(list(target), dim=-1).unsqueeze(0)
    torch.testing.assert_close(soft_dice_loss(logits, target, ignore_index=255, reduction="none", per_image=False),
                               soft_dice_loss(side_by_side, target_side, ignore_index=255, reduction="none")[0])
    torch.testing.assert_close(soft_dice_loss(logits, target, ignore_index=255, per_image=False),
                               soft_dice_loss(side_by_side, target_side, ignore_index=255))


def test_absent_class():
    # class 2 is absent: D = s / (sum_i p_i2 + s); with s = 0 its loss is 1 and carries no gradient
    logits, _ = multiclass_inputs(c=3, requires_grad=True)
    target = torch.randint(0, 2, (2, 5, 6), generator=torch.Generator().manual_seed(1))
    p2 = torch.softmax(logits.detach(), 1)[:, 2].sum(dim=(1, 2))
    torch.testing.assert_close(soft_dice_loss(logits, target, smooth=1.0, reduction="none")[:, 2].detach(),
                               1 - 1 / (p2 + 1))
    none = soft_dice_loss(logits, target, smooth=0.0, reduction="none")
    assert torch.all(none[:, 2] == 1.0)
    (grad,) = torch.autograd.grad(none[:, 2].sum(), logits)
    assert torch.all(grad == 0)
    # a perfect prediction of an absent class (nothing there, nothing predicted) costs ~0 with s > 0
    assert soft_dice_loss(perfect_logits(target, 3), target, reduction="none")[:, 2].max().item() < 1e-12


@pytest.mark.parametrize("binary", [False, True])
def test_all_ignored_per_image_without_smoothing_is_zero(binary):
    # the 0/0 of every image and class is D = 1 (the contract checks s = 1 per image and s = 0 per batch)
    per_image, smooth = True, 0.0
    logits, target = (binary_inputs if binary else multiclass_inputs)(requires_grad=True)
    target = torch.full_like(target, 255)
    for reduction in REDUCTIONS:
        loss = soft_dice_loss(logits, target, smooth, 255, reduction, per_image)
        assert torch.all(loss == 0) and loss.requires_grad
    loss = soft_dice_loss(logits, target, smooth, 255, "mean", per_image)
    loss.backward()
    assert torch.all(logits.grad == 0)


@pytest.mark.parametrize("binary", [False, True])
def test_perfect_logits_and_empty_ground_truth(binary):
    make = binary_inputs if binary else multiclass_inputs
    _, target = make()
    k = 1 if binary else 4
    assert 0 <= soft_dice_loss(perfect_logits(target, k), target).item() < 1e-12
    # empty ground truth (all background): finite, and ~0 for the perfect prediction
    empty = torch.zeros_like(target)
    logits, _ = make(requires_grad=True)
    loss = soft_dice_loss(logits, empty)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
    assert soft_dice_loss(perfect_logits(empty, k), empty).item() < 1e-12


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(smooth=-1.0), ValueError, "smooth must be >= 0"),
        (dict(smooth=None), TypeError, "smooth must be a real number"),
        (dict(per_image=1), TypeError, "per_image must be a bool"),
    ],
)
def test_errors(kwargs, exc, match):
    logits, target = multiclass_inputs()
    with pytest.raises(exc, match=match):
        soft_dice_loss(logits, target, **kwargs)
    with pytest.raises(exc, match=match):
        SoftDiceLoss(**kwargs)


def test_repr():
    assert "per_image=True" in repr(SoftDiceLoss()) and "smooth=0.5" in repr(SoftDiceLoss(0.5))
