"""Regression tests of issue 10: NaN in gives NaN out (soft Dice), float16/bfloat16 reductions
that accumulate in float32, the recall loss's dtype-independent tie rule, validation without
host syncs (CUDA, when present) and the label checks left to the cross-entropy kernel."""

import functools
import math

import pytest
import torch
import torch.nn.functional as F

from pixelweight._validation import set_sync_checks, sync_checks
from pixelweight.losses import (
    FocalLoss,
    LossMaxPooling,
    RecallLoss,
    SoftDiceLoss,
    cross_entropy,
    focal_loss,
    loss_max_pooling,
    recall_counts,
    recall_loss,
    recall_weights,
    soft_dice_loss,
)

LOSSES = {
    "cross_entropy": cross_entropy,
    "focal_loss": focal_loss,
    "recall_loss": recall_loss,
    "loss_max_pooling": loss_max_pooling,
    "soft_dice_loss": soft_dice_loss,
}


# ---------------------------------------------------------------------------------------
# Defect 1: soft Dice turned NaN/inf logits into a loss of 0 ("perfect")
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("bad, channels", [(math.nan, 1), (math.nan, 3), (math.inf, 3)])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("per_image", [True, False])
def test_soft_dice_propagates_non_finite_logits(bad, channels, reduction, per_image):
    # NaN, and +inf in a softmax (inf - inf), give NaN probabilities: the loss must be NaN.
    # (A binary +-inf logit is the probability 1 or 0, and -inf in a softmax the probability
    # 0: exact limits with a finite Dice.)
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, channels, 4, 5, generator=g)
    target = torch.randint(0, 2 if channels == 1 else channels, (2, 4, 5), generator=g)
    logits[0, 0, 1, 1] = bad
    out = soft_dice_loss(logits, target, reduction=reduction, per_image=per_image)
    if reduction == "none" and per_image:
        assert torch.isnan(out[0]).all() and torch.isfinite(out[1]).all()  # only image 0 is poisoned
    else:
        assert torch.isnan(out).any(), f"{bad} logits gave {out}"


def test_soft_dice_infinite_limits_stay_finite():
    logits = torch.tensor([[[[math.inf, -math.inf]]]])
    assert soft_dice_loss(logits, torch.tensor([[[1, 0]]]), smooth=0.0).item() == 0.0  # a perfect prediction
    logits = torch.tensor([[[[-math.inf]], [[0.0]]]])  # class 0 has probability 0
    assert math.isfinite(soft_dice_loss(logits, torch.tensor([[[1]]])).item())


def test_soft_dice_all_nan_is_not_perfect():
    # the reported case: an all-NaN model scored Dice 1 (loss 0)
    loss = soft_dice_loss(torch.full((2, 3, 8, 8), math.nan), torch.zeros(2, 8, 8, dtype=torch.long))
    assert math.isnan(loss.item())
    assert math.isnan(SoftDiceLoss()(torch.full((1, 1, 4, 4), math.nan), torch.ones(1, 4, 4)).item())


def test_soft_dice_zero_over_zero_is_still_one():
    # the one defined 0/0: nothing present, nothing predicted, smooth = 0 -> Dice 1, loss 0
    logits = torch.full((1, 1, 3, 3), -800.0, dtype=torch.float64)  # sigmoid underflows to 0
    assert soft_dice_loss(logits, torch.zeros(1, 3, 3), smooth=0.0).item() == 0.0


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_every_loss_propagates_nan(name):
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(2, 4, 5, 6, generator=g)
    target = torch.randint(0, 4, (2, 5, 6), generator=g)
    logits[1, 2, 3, 4] = math.nan
    assert math.isnan(LOSSES[name](logits, target).item())


# ---------------------------------------------------------------------------------------
# Defect 2: float16 sums and counts overflowed (NaN or 0.0); float32 accumulation at least
# ---------------------------------------------------------------------------------------
def test_reported_float16_cases():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(16, 11, 64, 64, generator=g)
    target = torch.randint(0, 11, (16, 64, 64), generator=g)
    ref = cross_entropy(logits.double(), target)
    half = cross_entropy(logits.half(), target)  # 65,536 pixels: the fp16 count was inf -> NaN
    assert half.dtype == torch.float16 and torch.isfinite(half)
    assert half.item() == pytest.approx(ref.item(), rel=2e-3)
    logits = torch.randn(2, 3, 192, 192, generator=g)
    target = torch.randint(0, 3, (2, 192, 192), generator=g)
    half = cross_entropy(logits.half(), target)  # was 0.0
    assert half.item() == pytest.approx(cross_entropy(logits.double(), target).item(), rel=2e-3)


@functools.lru_cache(maxsize=1)
def _large_batch():
    """About 1M pixels (4 x 3 x 512 x 512), 10 % of them ignored."""
    g = torch.Generator().manual_seed(3)
    logits = 2.0 * torch.randn(4, 3, 512, 512, generator=g)
    target = torch.randint(0, 3, (4, 512, 512), generator=g)
    target[torch.rand(4, 512, 512, generator=g) < 0.1] = 255
    return logits, target


@pytest.mark.parametrize("dtype, rel", [(torch.float16, 5e-3), (torch.bfloat16, 3e-2)])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_low_precision_matches_float64_on_a_million_pixels(name, dtype, rel):
    logits, target = _large_batch()
    low = logits.to(dtype).requires_grad_(True)
    ref = LOSSES[name](low.detach().double(), target, ignore_index=255)  # the same rounded logits
    out = LOSSES[name](low, target, ignore_index=255)
    assert out.dtype == dtype
    assert torch.isfinite(out) and out.item() == pytest.approx(ref.item(), rel=rel)
    out.backward()
    assert torch.isfinite(low.grad).all()


def test_low_precision_sum_keeps_float32_accumulation():
    logits, target = _large_batch()
    ref = cross_entropy(logits.double(), target, ignore_index=255, reduction="sum").item()
    # bfloat16 holds the sum (about 1.3e6); a bfloat16 accumulator would stall far below it
    out = cross_entropy(logits.bfloat16(), target, ignore_index=255, reduction="sum")
    assert out.dtype == torch.bfloat16 and out.item() == pytest.approx(ref, rel=2e-2)
    # float16 cannot hold it: the sum is inf (the true value is out of range), the mean is not
    assert cross_entropy(logits.half(), target, ignore_index=255, reduction="sum").item() == math.inf
    assert math.isfinite(cross_entropy(logits.half(), target, ignore_index=255).item())


# ---------------------------------------------------------------------------------------
# Defect 5: recall loss counted correct bfloat16 pixels as missed (tie tolerance 0.125)
# ---------------------------------------------------------------------------------------
def _argmax_counts(logits, target, c):
    pred = logits.argmax(1)
    n = torch.bincount(target.flatten(), minlength=c)
    fn = torch.bincount(target[pred != target], minlength=c)
    return fn, n


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32, torch.float64])
def test_recall_counts_close_calls_in_every_dtype(dtype):
    # the label's logit beats the others by a little: p_y = e^0.1 / (e^0.1 + 3) = 0.27, just
    # above 1/4; the old rule called it "uniform up to 16 eps" in bfloat16 and counted a miss
    target = torch.arange(4).repeat(2, 3, 1)  # (2, 3, 4), every class
    logits = torch.zeros(2, 4, 3, 4, dtype=dtype)
    logits.scatter_(1, target.unsqueeze(1), 0.1)
    fn, n = recall_counts(logits, target)
    assert fn.tolist() == [0, 0, 0, 0] and n.tolist() == [6, 6, 6, 6]
    assert torch.all(recall_weights(logits, target) == 0)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_recall_counts_equal_argmax_without_ties(dtype):
    # close calls everywhere: per pixel the logits are 1 + k / 128, k a permutation of 0..5,
    # distinct in bfloat16 (spacing 1/128 in [1, 2)), so p_y is never far from 1/6
    g = torch.Generator().manual_seed(4)
    perm = torch.rand(3, 6, 16, 16, generator=g).argsort(dim=1)
    logits = (1.0 + perm.to(torch.float64) / 128).to(dtype)
    target = torch.randint(0, 6, (3, 16, 16), generator=g)
    fn, n = recall_counts(logits, target)
    ref_fn, ref_n = _argmax_counts(logits.float(), target, 6)
    assert torch.equal(fn, ref_fn) and torch.equal(n, ref_n)
    assert 0 < int(fn.sum()) < int(n.sum())
    torch.testing.assert_close(recall_counts(logits.double(), target)[0], fn)  # same rule in float64


def test_recall_tie_rule_is_the_documented_one():
    # labels 0, 1, 2 on three pixels; logits (a) label tied with one other class at the top,
    # (b) all three tied, (c) label strictly below the top
    logits = torch.tensor([[[[1.0, 0.0, 0.0]], [[1.0, 0.0, 2.0]], [[0.0, 0.0, 1.0]]]], dtype=torch.bfloat16)
    target = torch.tensor([[[0, 1, 2]]])
    # pixel 0: z = (1, 1, 0), label 0 tied with class 1 at the top -> recalled
    # pixel 1: z = (0, 0, 0), all tied -> missed
    # pixel 2: z = (0, 2, 1), label 2 below class 1 -> missed
    fn, n = recall_counts(logits, target)
    assert fn.tolist() == [0, 1, 1] and n.tolist() == [1, 1, 1]


def test_recall_zero_head_is_plain_ce_in_bfloat16():
    target = torch.randint(0, 5, (2, 4, 4), generator=torch.Generator().manual_seed(0))
    logits = torch.zeros(2, 5, 4, 4, dtype=torch.bfloat16, requires_grad=True)
    assert torch.all(recall_weights(logits, target) == 1)
    torch.testing.assert_close(recall_loss(logits, target), cross_entropy(logits, target))


# ---------------------------------------------------------------------------------------
# Validation: bad labels still raise ValueError when the CE kernel does the check
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(LOSSES))
@pytest.mark.parametrize("bad", [7, -3, -100])
@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_bad_labels_raise_value_error(name, bad, reduction):
    logits = torch.randn(2, 4, 3, 3)
    target = torch.randint(0, 4, (2, 3, 3))
    target[0, 0, 0] = 255
    target[1, 2, 2] = bad
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\]"):
        LOSSES[name](logits, target, ignore_index=255, reduction=reduction)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 3\]"):
        LOSSES[name](logits, target.masked_fill(target == 255, 0), reduction=reduction)


def test_recall_module_state_unchanged_by_a_bad_batch():
    loss = RecallLoss(4, momentum=0.5, ignore_index=255)
    before = loss.weights.clone()
    target = torch.zeros(1, 2, 2, dtype=torch.long)
    target[0, 0, 0] = 9
    with pytest.raises(ValueError, match="target values"):
        loss(torch.randn(1, 4, 2, 2), target)
    assert torch.equal(loss.weights, before)


def test_sync_checks_switch():
    assert set_sync_checks(True) is False
    assert set_sync_checks(False) is True
    with sync_checks():
        with pytest.raises(ValueError, match="target values"):
            cross_entropy(torch.randn(1, 3, 2, 2), torch.full((1, 2, 2), 3))
    with pytest.raises(TypeError, match="must be a bool"):
        set_sync_checks(1)


# ---------------------------------------------------------------------------------------
# No host-device synchronisation per call on CUDA
# ---------------------------------------------------------------------------------------
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("make", [
    lambda: functools.partial(cross_entropy, ignore_index=255),
    lambda: functools.partial(focal_loss, ignore_index=255),
    lambda: functools.partial(recall_loss, ignore_index=255),
    lambda: RecallLoss(5, momentum=0.5, ignore_index=255).cuda(),
    lambda: RecallLoss(5, momentum=0.5, gamma=1.0, ignore_index=255, init="ones").cuda(),
    lambda: functools.partial(recall_loss, gamma=1.0, ignore_index=255, detach_focal=False),
    lambda: functools.partial(loss_max_pooling, ignore_index=255),
    lambda: LossMaxPooling(per_image=True, ignore_index=255),
    lambda: functools.partial(soft_dice_loss, ignore_index=255),
    lambda: FocalLoss(alpha=torch.ones(5), ignore_index=255).cuda(),
], ids=["ce", "focal", "recall", "RecallLoss", "RecallLoss(focal,ones)", "recall(attached)", "lmp", "LossMaxPooling", "dice", "FocalLoss(alpha)"])
def test_no_host_sync_on_cuda(make):
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 5, 32, 32, generator=g).cuda().requires_grad_(True)
    target = torch.randint(0, 5, (2, 32, 32), generator=g)
    target[:, :2] = 255
    target = target.cuda()
    loss_fn = make()
    loss_fn(logits, target)  # warm-up: lazy CUDA initialisation may synchronise
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        loss = loss_fn(logits, target)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    loss.backward()
    assert torch.isfinite(loss).item()
