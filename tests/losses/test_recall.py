"""Recall loss: known values, torchmetrics reference, the derived identities, the pitfalls of
the public code (one test each), detached weights, the moving average, limit cases and errors.

The properties every loss shares (module == functional, gradcheck, dtypes, all-ignored batch,
reductions, memory layouts, state_dict, NaN, validation, torch.compile) are in test_contract.py."""

import math

import pytest
import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import multiclass_recall

from losses.loss_cases import DEVICES, REDUCTIONS, binary_inputs, multiclass_inputs, perfect_logits
from pixelweight.losses import (
    RecallLoss,
    class_weights,
    cross_entropy,
    focal_loss,
    recall_counts,
    recall_loss,
    recall_terms,
    recall_weights,
)


def _hand_batch():
    """One image, 3 classes, 2 x 3 pixels, logits chosen so the argmax is known.

    labels       predictions   (argmax of the logits below)
    0 0 1        0 1 1
    1 2 2        2 2 0
    N = (2, 2, 2); FN = (1, 1, 1): pixel (0,1) label 0 -> 1, (1,0) label 1 -> 2, (1,2) label 2 -> 0.
    """
    target = torch.tensor([[[0, 0, 1], [1, 2, 2]]])
    pred = torch.tensor([[[0, 1, 1], [2, 2, 0]]])
    logits = 2.0 * F.one_hot(pred, 3).permute(0, 3, 1, 2).to(torch.float64)  # z = 2 on the predicted class
    return logits, target


def test_known_values_hand_batch():
    logits, target = _hand_batch()
    fn, n = recall_counts(logits, target)
    assert fn.tolist() == [1, 1, 1] and n.tolist() == [2, 2, 2]
    torch.testing.assert_close(recall_weights(logits, target), torch.full((3,), 0.5, dtype=torch.float64))
    # CE with z = 2 on one class, 0 on two: correct pixel -log(e^2 / (e^2 + 2)), wrong pixel -log(1 / (e^2 + 2))
    ce_hit = math.log(math.exp(2) + 2) - 2
    ce_miss = math.log(math.exp(2) + 2)
    expected = 0.5 * (3 * ce_hit + 3 * ce_miss) / 6  # w = 1/2 for every class, mean over 6 pixels
    assert recall_loss(logits, target).item() == pytest.approx(expected)
    assert recall_loss(logits, target, reduction="sum").item() == pytest.approx(6 * expected)
    per_pixel = recall_loss(logits, target, reduction="none")
    assert per_pixel.shape == (1, 2, 3)
    assert per_pixel[0, 0, 1].item() == pytest.approx(0.5 * ce_miss)


def test_known_values_uneven_recall():
    # class 0: 3 pixels, 1 missed (w = 1/3); class 1: 1 pixel, missed (w = 1); class 2 absent
    target = torch.tensor([[[0, 0, 0, 1]]])
    pred = torch.tensor([[[0, 0, 2, 0]]])
    logits = 3.0 * F.one_hot(pred, 3).permute(0, 3, 1, 2).to(torch.float64)
    w = recall_weights(logits, target)
    assert w[0].item() == pytest.approx(1 / 3) and w[1].item() == 1.0 and math.isnan(w[2].item())
    assert recall_weights(logits, target, absent=0.0)[2].item() == 0.0
    ce = F.cross_entropy(logits, target, reduction="none")[0, 0]
    expected = (ce[:3].sum() / 3 + ce[3]) / 4
    assert recall_loss(logits, target).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_weights_match_torchmetrics_recall(device, ignore_index):
    logits, target = multiclass_inputs(n=3, c=5, h=8, w=9, ignore_index=ignore_index, device=device, seed=3)
    ref = multiclass_recall(logits, target, num_classes=5, average="none", ignore_index=ignore_index)
    torch.testing.assert_close(recall_weights(logits, target, ignore_index).float(), 1 - ref.float())


def test_binary_counts_and_zero_logit():
    logits = torch.tensor([[[[2.0, -1.0, 0.0, 0.5, -3.0, 0.0]]]])
    target = torch.tensor([[[1, 1, 1, 0, 0, 0]]])
    # foreground: 2.0 hit, -1.0 miss, 0.0 tie -> miss; background: 0.5 miss, -3.0 hit, 0.0 tie -> miss
    fn, n = recall_counts(logits, target)
    assert fn.tolist() == [2, 2] and n.tolist() == [3, 3]
    ce = F.binary_cross_entropy_with_logits(logits[:, 0], target.float(), reduction="none")
    torch.testing.assert_close(recall_loss(logits, target), (2 / 3 * ce).mean())


# ---------------------------------------------------------------------------------------
# The derived identities
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_identity_sum_w_ce_equals_sum_fn_mean_ce(ignore_index):
    logits, target = multiclass_inputs(n=2, c=5, h=7, w=8, ignore_index=ignore_index, seed=1)
    t = recall_terms(logits, target, ignore_index)
    present = t.n > 0
    rhs = (t.fn[present] * t.mean_ce[present]).sum()  # sum_c FN_c mean-CE_c
    lhs = recall_loss(logits, target, ignore_index=ignore_index, reduction="sum")  # sum_i w_{y_i} CE_i
    torch.testing.assert_close(lhs, rhs)
    assert int(t.n.sum()) == (target.numel() if ignore_index is None else int((target != ignore_index).sum()))
    torch.testing.assert_close(t.ce_sum.sum(), cross_entropy(logits, target, ignore_index=ignore_index, reduction="sum"))


@pytest.mark.parametrize("binary", [False, True])
def test_nothing_recalled_is_plain_ce(binary):
    # every pixel missed: FN_c = N_c, w = 1, the loss is CE
    make = binary_inputs if binary else multiclass_inputs
    _, target = make(ignore_index=255)
    safe = target.masked_fill(target == 255, 0)
    logits = -perfect_logits(safe, 1 if binary else 4, scale=5.0)  # the label is the least likely class
    fn, n = recall_counts(logits, target, 255)
    assert torch.equal(fn, n)
    for reduction in REDUCTIONS:
        torch.testing.assert_close(recall_loss(logits, target, ignore_index=255, reduction=reduction),
                                   cross_entropy(logits, target, ignore_index=255, reduction=reduction))


def test_uniform_prediction_is_plain_ce():
    # all classes tied (a zero-initialised head): nothing counts as recalled, so training starts as CE
    logits = torch.zeros(2, 4, 3, 5, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 4, (2, 3, 5), generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(recall_loss(logits, target), cross_entropy(logits, target))
    assert torch.all(recall_weights(logits, target) == 1)


def test_equal_false_negatives_is_inverse_frequency():
    # N = (8, 4, 2), exactly k = 1 miss per class: w_c = 1/N_c, i.e. inverse-frequency CE up to a constant
    target = torch.tensor([0] * 8 + [1] * 4 + [2] * 2).view(1, 1, 14)
    pred = target.clone()
    pred[0, 0, [0, 8, 12]] = torch.tensor([1, 2, 0])  # one miss in each class
    g = torch.Generator().manual_seed(0)
    logits = (4.0 * F.one_hot(pred, 3).permute(0, 3, 1, 2) + 0.3 * torch.randn(1, 3, 1, 14, generator=g)).double()
    fn, n = recall_counts(logits, target)
    assert fn.tolist() == [1, 1, 1]
    inv = class_weights(counts=n, method="inverse").double()  # N / (|P| N_c)
    k, total, present = 1, 14, 3
    torch.testing.assert_close(recall_loss(logits, target),
                               cross_entropy(logits, target, weight=inv) * k * present / total)


def test_recalled_class_drops_out():
    # hard-class mining: a class with no false negative gets weight exactly 0 and no gradient
    logits, target = _hand_batch()
    target = target.clone()
    target[0, 0, 1] = 1  # pixel (0,1) predicted 1: now class 0 = {(0,0)} is fully recalled
    assert recall_weights(logits, target)[0].item() == 0.0
    logits = logits.clone().requires_grad_(True)
    recall_loss(logits, target).backward()
    assert torch.all(logits.grad[0, :, 0, 0] == 0)
    assert torch.any(logits.grad[0, :, 0, 1] != 0)


# ---------------------------------------------------------------------------------------
# The pitfalls of the public code, each as a test that would have caught it
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("ignore_index", [255, -1, 2])
def test_pitfall_ignored_pixels_never_count(ignore_index):
    # the reference mapped ignored pixels onto an existing class; here they change nothing
    logits, target = multiclass_inputs(n=1, c=4, h=6, w=6, seed=5)
    target = target.clamp_max(1) if ignore_index == 2 else target  # labels 0, 1 (2 then means "ignore")
    extra_logits = torch.randn(1, 4, 6, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(9))
    both = torch.cat([logits, extra_logits], dim=3)
    both_target = torch.cat([target, torch.full_like(target, ignore_index)], dim=2)
    fn, n = recall_counts(logits, target, ignore_index)
    fn2, n2 = recall_counts(both, both_target, ignore_index)
    assert torch.equal(fn, fn2) and torch.equal(n, n2)
    # the mean runs over valid pixels only, and ignored pixels carry no loss
    torch.testing.assert_close(recall_loss(both, both_target, ignore_index=ignore_index),
                               recall_loss(logits, target, ignore_index=ignore_index))
    assert torch.all(recall_loss(both, both_target, ignore_index=ignore_index, reduction="none")[..., 6:] == 0)


@pytest.mark.parametrize("ignore", [False, True])
@pytest.mark.parametrize("binary", [False, True])
def test_pitfall_single_label_batch(ignore, binary):
    # the reference indexed the second distinct label: IndexError on a one-label batch
    c = 1 if binary else 5
    target = torch.full((2, 4, 4), 1, dtype=torch.long)
    if ignore:
        target[:, 0] = 255
    logits = torch.randn(2, c, 4, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    fn, n = recall_counts(logits, target, 255)
    assert n.tolist()[1] == (24 if ignore else 32) and n.sum() == n[1]
    loss = recall_loss(logits, target, ignore_index=255)
    assert torch.isfinite(loss)
    module = RecallLoss(2 if binary else 5, momentum=0.5, ignore_index=255).double()
    module(logits, target)
    w = module.weights
    assert w[1].item() == pytest.approx(0.5 * fn[1].item() / n[1].item() + 0.5)
    assert torch.all(w[torch.arange(len(w)) != 1] == 1)  # absent classes keep their weight


def test_pitfall_not_normalised_by_weight_sum():
    # F.cross_entropy(weight=w) divides by sum_i w_{y_i}: a different scale from the paper's mean over pixels
    logits, target = multiclass_inputs(n=2, c=4, h=5, w=6, seed=4)
    w = recall_weights(logits, target)
    ours = recall_loss(logits, target)
    torch.testing.assert_close(ours, (w[target] * F.cross_entropy(logits, target, reduction="none")).mean())
    torch_weighted = F.cross_entropy(logits, target, weight=w)
    assert not torch.allclose(ours, torch_weighted)
    torch.testing.assert_close(torch_weighted, cross_entropy(logits, target, weight=w, normalize="weights"))


def test_pitfall_counters_start_at_zero():
    # the reference's counters started at one: a fully recalled class got w = 1 / N_c instead of 0
    logits = perfect_logits(torch.tensor([[[0, 0, 1, 1]]]), 2)
    logits[0, :, 0, 3] = torch.tensor([5.0, 0.0], dtype=torch.float64)  # one pixel of class 1 missed
    w = recall_weights(logits, torch.tensor([[[0, 0, 1, 1]]]))
    assert w.tolist() == [0.0, 0.5]


def test_pitfall_mean_over_valid_pixels_only():
    # the reference's loss.mean() divided by all pixels, ignored ones included
    logits, target = multiclass_inputs(n=2, c=4, h=5, w=6, ignore_index=255, seed=6)
    valid = target != 255
    per_pixel = recall_loss(logits, target, ignore_index=255, reduction="none")
    torch.testing.assert_close(recall_loss(logits, target, ignore_index=255), per_pixel.sum() / valid.sum())


@pytest.mark.parametrize("device", DEVICES)
def test_pitfall_device_agnostic(device):
    # the reference hard-coded .cuda(); here the counts, weights and buffer follow the inputs
    # (the loss's own dtype and device: test_contract.py)
    dtype = torch.float64
    logits, target = multiclass_inputs(dtype=dtype, device=device, ignore_index=255)
    fn, n = recall_counts(logits, target, 255)
    assert fn.device.type == device and fn.dtype == torch.long
    module = RecallLoss(4, momentum=0.5, ignore_index=255).to(device=device, dtype=dtype)
    torch.testing.assert_close(module(logits, target).float(),
                               cross_entropy(logits, target, module.weights, 255).float())
    assert module.weights.dtype == dtype and module.weights.device.type == device


# ---------------------------------------------------------------------------------------
# Gradients: the weights carry no gradient (gradcheck: test_contract.py)
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_weights_are_detached(gamma):
    # the gradient is that of a weighted CE (or focal loss) with the weights held fixed
    logits, target = multiclass_inputs(ignore_index=255, requires_grad=True)
    recall_loss(logits, target, gamma, 255).backward()
    grad = logits.grad.clone()
    w = recall_weights(logits, target, 255, absent=0.0)
    x = logits.detach().clone().requires_grad_(True)
    ref = focal_loss(x, target, gamma, w, 255) if gamma else cross_entropy(x, target, w, 255)
    ref.backward()
    torch.testing.assert_close(grad, x.grad)
    assert not recall_weights(logits, target, 255).requires_grad


# ---------------------------------------------------------------------------------------
# The module's weights, the moving average
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [False, True])
def test_without_momentum_the_buffer_holds_the_last_batch_weights(binary):
    logits, target = (binary_inputs if binary else multiclass_inputs)(ignore_index=255)
    module = RecallLoss(2 if binary else 4, gamma=2.0, ignore_index=255).double()
    for _ in range(2):  # without momentum every call uses the batch's own weights
        torch.testing.assert_close(module(logits, target), recall_loss(logits, target, 2.0, 255))
    torch.testing.assert_close(module.weights, recall_weights(logits, target, 255, absent=1.0))


def test_moving_average_update_by_hand():
    module = RecallLoss(3, momentum=0.25).double()
    logits, target = _hand_batch()  # w_batch = (1/2, 1/2, 1/2)
    module(logits, target)
    torch.testing.assert_close(module.weights, torch.full((3,), 0.25 * 0.5 + 0.75, dtype=torch.float64))
    # second batch: class 0 only, all recalled (w_batch = 0); classes 1 and 2 absent keep their weight
    t2 = torch.zeros(1, 2, 2, dtype=torch.long)
    out = module(perfect_logits(t2, 3), t2)
    expected = torch.tensor([0.75 * 0.875, 0.875, 0.875], dtype=torch.float64)
    torch.testing.assert_close(module.weights, expected)
    assert out.item() == pytest.approx(0.75 * 0.875 * cross_entropy(perfect_logits(t2, 3), t2).item())
    module.reset_weights()
    assert torch.all(module.weights == 1)


def test_moving_average_uses_updated_weights_and_eval_does_not_store():
    logits, target = multiclass_inputs(ignore_index=255, seed=7)
    module = RecallLoss(4, momentum=0.5, ignore_index=255).double()
    w_batch = recall_weights(logits, target, 255, absent=1.0)
    expected_w = 0.5 * w_batch + 0.5  # from the initial w = 1
    loss = module(logits, target)
    torch.testing.assert_close(module.weights, expected_w)
    torch.testing.assert_close(loss, cross_entropy(logits, target, expected_w, 255))
    module.eval()
    before = module.weights.clone()
    eval_loss = module(logits, target)
    assert torch.equal(module.weights, before)
    torch.testing.assert_close(eval_loss, cross_entropy(logits, target, 0.5 * w_batch + 0.5 * before, 255))


def test_all_ignored_batch_keeps_the_weights():
    logits, target = multiclass_inputs(requires_grad=True)
    target = torch.full_like(target, 255)
    module = RecallLoss(4, momentum=0.5, ignore_index=255).double()
    module(logits, target)  # the loss itself (a zero with a graph): test_contract.py
    assert torch.all(module.weights == 1)  # an all-ignored batch leaves the moving average alone
    assert torch.all(recall_counts(logits, target, 255)[1] == 0)


def test_repr():
    module = RecallLoss(3, momentum=0.5)
    assert "momentum=0.5" in repr(module) and "num_classes=3" in repr(module)


def test_optimising_logits_raises_every_class_recall():
    # a tiny "training run": free logits, imbalanced labels, recall loss must learn every class
    g = torch.Generator().manual_seed(0)
    target = torch.multinomial(torch.tensor([0.8, 0.15, 0.05]), 400, replacement=True, generator=g).view(1, 20, 20)
    logits = torch.zeros(1, 3, 20, 20, requires_grad=True)
    module = RecallLoss(3, momentum=0.5)
    opt = torch.optim.Adam([logits], lr=0.1)
    for _ in range(40):
        opt.zero_grad()
        module(logits, target).backward()
        opt.step()
    fn, n = recall_counts(logits.detach(), target)
    assert torch.all(fn == 0)
    assert torch.all(module.weights < 0.5)


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(gamma=-1.0), ValueError, "gamma must be >= 0.0"),
        (dict(gamma="2"), TypeError, "gamma must be a real number"),
    ],
)
def test_functional_argument_errors(kwargs, exc, match):
    logits, target = multiclass_inputs()
    with pytest.raises(exc, match=match):
        recall_loss(logits, target, **kwargs)


def test_input_errors():
    logits, target = multiclass_inputs()
    with pytest.raises(ValueError, match=r"target must have shape \(N, H, W\)"):
        recall_counts(logits, target[:, :2])
    with pytest.raises(ValueError, match="integer tensor of class indices"):
        recall_weights(logits, target.float())
    with pytest.raises(TypeError, match="logits must be a torch.Tensor"):
        recall_terms(logits.numpy(), target)
    with pytest.raises(TypeError, match="absent must be a real number"):
        recall_weights(logits, target, absent="nan")
    with pytest.raises(TypeError, match="absent must be a real number"):
        recall_weights(logits, target, absent=True)


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(num_classes=1), ValueError, "num_classes must be >= 2"),
        (dict(num_classes=3.0), TypeError, "num_classes must be an int"),
        (dict(num_classes=3, momentum=0.0), ValueError, r"momentum must be > 0.0"),
        (dict(num_classes=3, momentum=1.5), ValueError, r"momentum must be <= 1.0"),
        (dict(num_classes=3, momentum="0.5"), TypeError, "momentum must be a real number"),
        (dict(num_classes=3, gamma=-0.5), ValueError, "gamma must be >= 0.0"),
    ],
)
def test_module_constructor_errors(kwargs, exc, match):
    with pytest.raises(exc, match=match):
        RecallLoss(**kwargs)


def test_module_call_errors():
    logits, target = multiclass_inputs()  # C = 4
    with pytest.raises(ValueError, match=r"built for num_classes=3 but the logits of shape \(2, 4, 5, 6\) have 4"):
        RecallLoss(3)(logits, target)
    with pytest.raises(ValueError, match="weights are on meta but the logits are on cpu"):
        RecallLoss(4).to("meta")(logits, target)
