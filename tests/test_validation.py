import pytest
import torch

from pixelweight._validation import (
    check_binary_inputs,
    check_float,
    check_int,
    check_multiclass_inputs,
    check_reduction,
    reduce_pixel_loss,
    valid_mask,
)


def test_reduction_and_scalars():
    assert check_reduction("sum") == "sum"
    with pytest.raises(ValueError, match="reduction"):
        check_reduction("avg")
    assert check_int(3, "k", minimum=1) == 3
    with pytest.raises(TypeError, match="k must be an int"):
        check_int(True, "k")
    with pytest.raises(ValueError, match=">= 1"):
        check_int(0, "k", minimum=1)
    assert check_float(2, "x", maximum=2) == 2.0
    with pytest.raises(ValueError, match="< 2"):
        check_float(2, "x", maximum=2, max_inclusive=False)
    with pytest.raises(ValueError, match="> 0"):
        check_float(0.0, "x", minimum=0, min_inclusive=False)
    with pytest.raises(ValueError, match="NaN"):
        check_float(float("nan"), "x")
    with pytest.raises(TypeError):
        check_float("1", "x")


def test_multiclass_inputs():
    logits = torch.randn(2, 3, 4, 5)
    target = torch.randint(0, 3, (2, 4, 5), dtype=torch.int32)
    _, t = check_multiclass_inputs(logits, target)
    assert t.dtype == torch.long
    target[0, 0, 0] = 255
    check_multiclass_inputs(logits, target, ignore_index=255)
    with pytest.raises(ValueError, match=r"\[0, 255\]"):
        check_multiclass_inputs(logits, target)
    with pytest.raises(ValueError, match="C >= 2"):
        check_multiclass_inputs(torch.randn(2, 1, 4, 5), target)
    with pytest.raises(ValueError, match="floating"):
        check_multiclass_inputs(logits.long(), target)
    with pytest.raises(ValueError, match="integer"):
        check_multiclass_inputs(logits, target.float())
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        check_multiclass_inputs(logits, target[:, :3])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        check_multiclass_inputs(logits[0], target)
    with pytest.raises(TypeError, match="torch.Tensor"):
        check_multiclass_inputs(logits, target.numpy())
    # an all-ignored target is valid
    check_multiclass_inputs(logits, torch.full((2, 4, 5), -1), ignore_index=-1)


def test_binary_inputs():
    logits = torch.randn(2, 1, 3, 3)
    _, t = check_binary_inputs(logits, torch.ones(2, 3, 3, dtype=torch.bool))
    assert t.shape == (2, 1, 3, 3) and t.dtype == torch.long
    check_binary_inputs(logits, torch.tensor([0.0, 1.0]).repeat(9).reshape(2, 1, 3, 3))
    with pytest.raises(ValueError, match="only 0.0 and 1.0"):
        check_binary_inputs(logits, torch.full((2, 3, 3), 0.5))
    with pytest.raises(ValueError, match="0 or 1"):
        check_binary_inputs(logits, torch.full((2, 3, 3), 2))
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        check_binary_inputs(torch.randn(2, 2, 3, 3), torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match="matching"):
        check_binary_inputs(logits, torch.zeros(2, 3, 4))
    check_binary_inputs(logits, torch.full((2, 3, 3), 255), ignore_index=255)


def test_reduce_pixel_loss():
    loss = torch.tensor([[1.0, 2.0], [3.0, float("nan")]], requires_grad=True)
    valid = valid_mask(torch.tensor([[0, 1], [1, 9]]), ignore_index=9)
    assert reduce_pixel_loss(loss, valid, "sum").item() == 6.0
    assert reduce_pixel_loss(loss, valid, "mean").item() == 2.0
    none = reduce_pixel_loss(loss, valid, "none")
    assert none[1, 1].item() == 0.0
    empty = reduce_pixel_loss(loss, torch.zeros_like(valid), "mean")
    assert empty.item() == 0.0
    empty.backward()
    assert torch.all(torch.isfinite(loss.grad))
    assert valid_mask(torch.zeros(2), None).all()


# --- infinite parameters and out-of-range ignore_index (issue 10, defect 8) ------------


def test_check_float_rejects_inf_unless_allowed():
    for value in (float("inf"), -float("inf")):
        with pytest.raises(ValueError, match=f"x must be finite, got {value}"):
            check_float(value, "x")
        with pytest.raises(ValueError, match=f"x must be finite, got {value}"):
            check_float(value, "x", minimum=0.0)
    assert check_float(float("inf"), "p", minimum=1.0, allow_inf=True) == float("inf")
    with pytest.raises(ValueError, match="p must be >= 1.0"):
        check_float(-float("inf"), "p", minimum=1.0, allow_inf=True)
    with pytest.raises(ValueError, match="NaN"):
        check_float(float("nan"), "p", allow_inf=True)


from pixelweight.data import DigitScenes  # noqa: E402
from pixelweight.losses import FocalLoss, RecallLoss, SoftDiceLoss, cross_entropy, focal_loss, soft_dice_loss  # noqa: E402

INF = float("inf")


@pytest.mark.parametrize(
    "call, match",
    [
        (lambda: soft_dice_loss(
            torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), smooth=INF), "smooth must be finite"),
        (lambda: SoftDiceLoss(smooth=INF), "smooth must be finite"),
        (lambda: focal_loss(
            torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), gamma=INF), "gamma must be finite"),
        (lambda: FocalLoss(gamma=INF), "gamma must be finite"),
        (lambda: RecallLoss(2, gamma=INF), "gamma must be finite"),
        (lambda: DigitScenes(
            num_samples=2, noise=INF, cache_dir=False), "noise must be finite"),
        (lambda: DigitScenes(
            num_samples=2, imbalance=INF, cache_dir=False), "imbalance must be finite"),
        (lambda: cross_entropy(
            torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long), ignore_index=2**70),
         "ignore_index must fit in int64"),
        (lambda: check_multiclass_inputs(torch.randn(1, 2, 3, 3), torch.zeros(1, 3, 3, dtype=torch.long),
                                         ignore_index=-(2**63) - 1), "ignore_index must fit in int64"),
    ],
)
def test_infinite_parameters_and_huge_ignore_index_fail_validation(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_lmp_p_inf_stays_a_valid_limit():
    from pixelweight.losses import LossMaxPooling

    assert LossMaxPooling(p=INF).p == INF
    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 4, 4))
    ce = torch.nn.functional.cross_entropy(logits, target)
    assert torch.allclose(LossMaxPooling(p=INF)(logits, target), ce)
    assert check_multiclass_inputs(logits, target, ignore_index=2**63 - 1)[1].dtype == torch.long
