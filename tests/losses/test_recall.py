"""Recall loss: known values, torchmetrics reference, the derived identities, the pitfalls of
the public code (one test each), detached weights, the moving average, limit cases and errors.

The properties every loss shares (module == functional, gradcheck, dtypes, all-ignored batch,
reductions, memory layouts, state_dict, NaN, validation, torch.compile) are in test_contract.py."""

import functools
import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
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
    assert w[1].item() == pytest.approx(fn[1].item() / n[1].item())  # the first batch's weight
    assert torch.all(w[torch.arange(len(w)) != 1] == 1)  # absent classes: 1


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
@pytest.mark.parametrize("detach_focal", [True, False])
@pytest.mark.parametrize("gamma", [0.0, 1.0])
def test_weights_are_detached(gamma, detach_focal):
    # the weights are constants; detach_focal=False: the gradient of a focal loss with alpha = w
    logits, target = multiclass_inputs(ignore_index=255, requires_grad=True)
    recall_loss(logits, target, gamma, 255, detach_focal=detach_focal).backward()
    grad = logits.grad.clone()
    w = recall_weights(logits, target, 255, absent=0.0)
    x = logits.detach().clone().requires_grad_(True)
    if gamma and not detach_focal:
        focal_loss(x, target, gamma, w, 255).backward()
    else:
        _official_focal_reference(x, target, w, gamma, 255).backward()
    torch.testing.assert_close(grad, x.grad)
    assert not recall_weights(logits, target, 255).requires_grad


def _official_focal_reference(x, target, w, gamma, ignore_index):
    r"""Autograd reference of the development code's focal variant, ignored pixels kept out:
    :math:`\frac{1}{|V|}\sum_{i\in V} w_{y_i}\,(1 - p_i)^\gamma\,\mathrm{CE}_i` with
    ``p = exp(-CE).detach()`` (binary: the BCE of the logit)."""
    valid = target != ignore_index
    safe = target.masked_fill(~valid, 0)
    if x.shape[1] == 1:
        ce = F.binary_cross_entropy_with_logits(x[:, 0], safe.to(x.dtype), reduction="none")
    else:
        ce = F.cross_entropy(x, safe, reduction="none")
    p = torch.exp(-ce).detach()
    per_pixel = (1 - p) ** gamma * w.to(x.dtype)[safe] * ce
    return per_pixel[valid].sum() / valid.sum()


@pytest.mark.parametrize("binary", [False, True])
@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.0])
def test_focal_factor_is_detached_by_default(binary, gamma):
    # official (recallfocal_loss.py): p = exp(-CE).detach(); the module and the functional agree
    make = binary_inputs if binary else multiclass_inputs
    logits, target = make(n=3, ignore_index=255, seed=11, requires_grad=True)
    c = 2 if binary else 4
    w = recall_weights(logits, target, 255, absent=0.0)
    x = logits.detach().clone().requires_grad_(True)
    ref = _official_focal_reference(x, target, w, gamma, 255)
    ref.backward()
    for loss_fn in (functools.partial(recall_loss, gamma=gamma, ignore_index=255),
                    RecallLoss(c, gamma=gamma, ignore_index=255).double()):
        z = logits.detach().clone().requires_grad_(True)
        out = loss_fn(z, target)
        out.backward()
        torch.testing.assert_close(out, ref)
        torch.testing.assert_close(z.grad, x.grad)
    # the non-detached option: the same value, the focal loss's gradient, which differs
    z = logits.detach().clone().requires_grad_(True)
    attached = RecallLoss(c, gamma=gamma, ignore_index=255, detach_focal=False).double()(z, target)
    attached.backward()
    torch.testing.assert_close(attached, ref)
    y = logits.detach().clone().requires_grad_(True)
    focal_loss(y, target, gamma, w, 255).backward()
    torch.testing.assert_close(z.grad, y.grad)
    assert not torch.allclose(z.grad, x.grad)


def test_focal_reductions_and_detached_factor_at_gamma_zero():
    logits, target = multiclass_inputs(ignore_index=255, seed=12)
    for reduction in REDUCTIONS:  # the detached map, reduced like every other
        torch.testing.assert_close(recall_loss(logits, target, 1.0, 255, reduction),
                                   recall_loss(logits, target, 1.0, 255, reduction, detach_focal=False))
    # gamma = 0: detach_focal changes nothing
    torch.testing.assert_close(recall_loss(logits, target, 0.0, 255, detach_focal=False),
                               recall_loss(logits, target, 0.0, 255))


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


@pytest.mark.parametrize("init", ["first_batch", "ones"])
def test_moving_average_update_by_hand(init):
    module = RecallLoss(3, momentum=0.25, init=init).double()
    assert module.initialized.item() == (init == "ones")
    logits, target = _hand_batch()  # w_batch = (1/2, 1/2, 1/2)
    module(logits, target)
    first = 0.5 if init == "first_batch" else 0.25 * 0.5 + 0.75  # the batch's weights, or an update of 1
    torch.testing.assert_close(module.weights, torch.full((3,), first, dtype=torch.float64))
    assert module.initialized.item()
    # second batch: class 0 only, all recalled (w_batch = 0); classes 1 and 2 absent keep their weight
    t2 = torch.zeros(1, 2, 2, dtype=torch.long)
    out = module(perfect_logits(t2, 3), t2)
    expected = torch.tensor([0.75 * first, first, first], dtype=torch.float64)
    torch.testing.assert_close(module.weights, expected)
    assert out.item() == pytest.approx(0.75 * first * cross_entropy(perfect_logits(t2, 3), t2).item())
    module.reset_weights()
    assert torch.all(module.weights == 1) and module.initialized.item() == (init == "ones")


@pytest.mark.parametrize("init", ["first_batch", "ones"])
def test_moving_average_uses_updated_weights_and_eval_does_not_store(init):
    logits, target = multiclass_inputs(ignore_index=255, seed=7)
    module = RecallLoss(4, momentum=0.5, ignore_index=255, init=init).double()
    w_batch = recall_weights(logits, target, 255, absent=1.0)
    module.eval()  # eval() computes the weights but stores nothing, not even "initialized"
    torch.testing.assert_close(module(logits, target), cross_entropy(
        logits, target, w_batch if init == "first_batch" else 0.5 * w_batch + 0.5, 255))
    assert torch.all(module.weights == 1) and module.initialized.item() == (init == "ones")
    module.train()
    expected_w = w_batch if init == "first_batch" else 0.5 * w_batch + 0.5  # the first batch, or from w = 1
    loss = module(logits, target)
    torch.testing.assert_close(module.weights, expected_w)
    torch.testing.assert_close(loss, cross_entropy(logits, target, expected_w, 255))
    module.eval()
    before = module.weights.clone()
    eval_loss = module(logits, target)
    assert torch.equal(module.weights, before)
    torch.testing.assert_close(eval_loss, cross_entropy(logits, target, 0.5 * w_batch + 0.5 * before, 255))


def _official_moving_average(batches, num_classes, alpha, ignore_index=None, counters_at_one=False):
    r"""An independent transcription (numpy, loops) of the development code's update rule
    (``recall_loss.py`` / ``recallfocal_loss.py`` with ``EMA=True``, read from the compiled files):
    the first call sets :math:`w_c = \mathrm{FN}_c / N_c`, 1 for a class without pixels;
    each later call sets :math:`w_c = \alpha\,\mathrm{FN}_c/N_c + (1-\alpha)\,w_c` for the
    classes of the batch only. The prediction is the argmax (no ties in random float64
    logits). ``counters_at_one``: the code's counters, which start at 1 and are overwritten by
    the counts that occur (a class with no miss gets FN = 1); by default the counts start at
    0, the library's fix, and ignored pixels count nowhere (the code mapped them onto
    class 0). Returns the weights after each batch and the losses (the code's focal-free
    ``(w[target] * CE).mean()`` over the valid pixels)."""
    w, history, losses = None, [], []
    for logits, target in batches:
        z = logits.detach().double().numpy()
        y = target.numpy()
        pred = z.argmax(1)
        n = np.zeros(num_classes)
        fn = np.zeros(num_classes)
        for idx in np.ndindex(y.shape):
            if ignore_index is not None and y[idx] == ignore_index:
                continue
            n[y[idx]] += 1
            fn[y[idx]] += pred[idx] != y[idx]
        present = n > 0
        if counters_at_one:
            ratio = np.where(fn > 0, fn, 1.0) / np.where(n > 0, n, 1.0)
        else:
            ratio = np.where(present, fn / np.maximum(n, 1), 1.0)
        if w is None:
            w = ratio.copy()
        else:
            w = w.copy()
            for c in range(num_classes):
                if present[c]:
                    w[c] = alpha * ratio[c] + (1 - alpha) * w[c]
        history.append(w)
        total, count = 0.0, 0
        for idx in np.ndindex(y.shape):
            if ignore_index is not None and y[idx] == ignore_index:
                continue
            zi = z[(idx[0], slice(None)) + idx[1:]]
            ce = np.log(np.exp(zi - zi.max()).sum()) + zi.max() - zi[y[idx]]
            total += w[y[idx]] * ce
            count += 1
        losses.append(total / max(count, 1))
    return history, losses


def _appearing_and_disappearing_batches(ignore_index=None, every_class_missed=False, seed=0):
    """Six batches of 5 classes whose label sets change: {0,1,2}, {1,3}, {0,4}, {2,3,4}, {3}, all."""
    g = torch.Generator().manual_seed(seed)
    label_sets = [[0, 1, 2], [1, 3], [0, 4], [2, 3, 4], [3], [0, 1, 2, 3, 4]]
    batches = []
    for labels in label_sets:
        logits = torch.randn(2, 5, 4, 5, generator=g, dtype=torch.float64)
        pick = torch.randint(0, len(labels), (2, 4, 5), generator=g)
        target = torch.tensor(labels)[pick]
        for c in labels:  # raise the label's logit on most pixels: some classes are well recalled
            logits[:, c] += 2.0 * (target == c)
        if every_class_missed:  # one miss per present class: the code's counters-at-1 cannot bite
            for c in target.unique().tolist():
                first = (target == c).nonzero()[0]
                logits[first[0], c, first[1], first[2]] = -10.0
        if ignore_index is not None:
            target[torch.rand(2, 4, 5, generator=g) < 0.25] = ignore_index
        batches.append((logits, target))
    return batches


def _round_trip(module):
    """A fresh module (initialized = False, weights = 1) loaded from ``module``'s saved state."""
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    fresh = RecallLoss(module.num_classes, momentum=module.momentum, ignore_index=module.ignore_index).double()
    fresh.load_state_dict(torch.load(buffer))
    return fresh


@pytest.mark.parametrize("ignore_index", [None, 255])
def test_moving_average_matches_the_official_update_rule(ignore_index):
    # classes appear and disappear; every step goes through a state_dict round trip into a
    # fresh module, so the "first batch seen" flag has to survive it
    batches = _appearing_and_disappearing_batches(ignore_index)
    history, losses = _official_moving_average(batches, 5, 0.5, ignore_index)
    module = RecallLoss(5, momentum=0.5, ignore_index=ignore_index).double()
    for (logits, target), w, expected in zip(batches, history, losses):
        loss = module(logits, target)
        torch.testing.assert_close(module.weights, torch.from_numpy(w), rtol=1e-12, atol=0)
        assert loss.item() == pytest.approx(expected, rel=1e-12)
        module = _round_trip(module)
        assert module.initialized.item()
    # the same stream without round trips, and the first step without the flag, differ
    unsaved = RecallLoss(5, momentum=0.5, ignore_index=ignore_index).double()
    for logits, target in batches:
        unsaved(logits, target)
    torch.testing.assert_close(unsaved.weights, torch.from_numpy(history[-1]), rtol=1e-12, atol=0)
    restarted = RecallLoss(5, momentum=0.5, ignore_index=ignore_index).double()
    restarted(*batches[1])  # a module that forgot the first batch treats the second as the first
    assert not torch.allclose(restarted.weights, torch.from_numpy(history[1]))


def test_moving_average_matches_the_official_counters_where_they_agree():
    # The code's counters start at 1 (pitfall: a class with no miss gets 1/N_c). On batches where
    # every present class has a miss and nothing is ignored, the literal rule gives our weights.
    batches = _appearing_and_disappearing_batches(every_class_missed=True, seed=3)
    literal, losses = _official_moving_average(batches, 5, 0.5, counters_at_one=True)
    fixed, _ = _official_moving_average(batches, 5, 0.5)
    assert all(np.array_equal(a, b) for a, b in zip(literal, fixed))
    module = RecallLoss(5, momentum=0.5).double()
    for (logits, target), w, expected in zip(batches, literal, losses):
        loss = module(logits, target)
        torch.testing.assert_close(module.weights, torch.from_numpy(w), rtol=1e-12, atol=0)
        assert loss.item() == pytest.approx(expected, rel=1e-12)


def test_init_ones_is_the_earlier_start():
    batches = _appearing_and_disappearing_batches(255)
    history, _ = _official_moving_average(batches, 5, 0.5, 255)
    module = RecallLoss(5, momentum=0.5, ignore_index=255, init="ones").double()
    w = np.ones(5)
    for logits, target in batches:
        module(logits, target)
        fn, n = recall_counts(logits, target, 255)
        present = (n > 0).numpy()
        w = np.where(present, 0.5 * fn.numpy() / np.maximum(n.numpy(), 1) + 0.5 * w, w)
        torch.testing.assert_close(module.weights, torch.from_numpy(w), rtol=1e-12, atol=0)
    assert not np.allclose(w, history[-1])


def test_state_dict_without_the_flag_continues_the_average():
    # a state_dict saved before the `initialized` buffer existed: its weights are an average
    # that started from 1, so loading continues it rather than restarting at the next batch
    logits, target = multiclass_inputs(ignore_index=255, seed=7)
    old = {"weights": torch.tensor([0.9, 0.8, 0.7, 0.6], dtype=torch.float64)}
    module = RecallLoss(4, momentum=0.5, ignore_index=255).double()
    module.load_state_dict(old)
    assert module.initialized.item()
    module(logits, target)
    w_batch = recall_weights(logits, target, 255, absent=1.0)
    present = recall_counts(logits, target, 255)[1] > 0
    torch.testing.assert_close(module.weights, torch.where(present, 0.5 * w_batch + 0.5 * old["weights"],
                                                           old["weights"]))


@pytest.mark.parametrize("init", ["first_batch", "ones"])
def test_all_ignored_batch_keeps_the_weights(init):
    logits, target = multiclass_inputs(requires_grad=True)
    ignored = torch.full_like(target, 255)
    module = RecallLoss(4, momentum=0.5, ignore_index=255, init=init).double()
    module(logits, ignored)  # the loss itself (a zero with a graph): test_contract.py
    assert torch.all(module.weights == 1)  # an all-ignored batch leaves the moving average alone
    assert module.initialized.item() == (init == "ones")  # ... and is not "the first batch"
    assert torch.all(recall_counts(logits, ignored, 255)[1] == 0)
    module(logits, target)
    w_batch = recall_weights(logits, target, 255, absent=1.0)
    torch.testing.assert_close(module.weights, w_batch if init == "first_batch" else 0.5 * w_batch + 0.5)
    before = module.weights.clone()
    module(logits, ignored)
    assert torch.equal(module.weights, before)


def test_repr_and_official_defaults():
    module = RecallLoss(3, momentum=0.5)
    assert "momentum=0.5" in repr(module) and "num_classes=3" in repr(module)
    assert (module.init, module.detach_focal, module.sync_counts) == ("first_batch", True, True)
    assert "init='first_batch', detach_focal=True, sync_counts=True" in repr(module)


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
# Data parallelism: the counts of the whole batch (official: nn.DataParallel)
# ---------------------------------------------------------------------------------------
@pytest.mark.slow
def test_sync_counts_under_ddp_gives_the_weights_of_the_whole_batch(tmp_path):
    """2 CPU ranks (gloo, torchrun), uneven shards: with sync_counts (default) every rank's
    weights equal a single process's on the concatenated batch, step after step of a moving
    average; the functional uses them with the shard's own mean. Without, each rank's weights
    are its shard's."""
    import pixelweight
    from helpers import recall_ddp_worker as worker

    tests, src = Path(__file__).parents[1], Path(pixelweight.__file__).parents[1]  # this checkout's library
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(tests), str(src)])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           worker.__file__, str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    ranks = [torch.load(tmp_path / f"rank{r}.pt") for r in range(2)]
    c, ii = worker.NUM_CLASSES, worker.IGNORE
    whole = RecallLoss(c, momentum=0.5, ignore_index=ii).double()
    shards = [RecallLoss(c, momentum=0.5, ignore_index=ii).double() for _ in worker.SHARDS]
    for step, (logits, target) in enumerate(worker.batches()):
        whole(logits, target)
        w = recall_weights(logits, target, ii, absent=0.0)  # the whole batch's FN_c / N_c
        for r, shard in enumerate(worker.SHARDS):
            rec = ranks[r]
            assert torch.equal(rec["synced"][step], whole.weights), (r, step)
            shards[r](logits[shard], target[shard])
            assert torch.equal(rec["local"][step], shards[r].weights), (r, step)
            x = logits[shard].clone().requires_grad_(True)
            ref = cross_entropy(x, target[shard], weight=w, ignore_index=ii)  # sum_shard w CE / |V_shard|
            ref.backward()
            torch.testing.assert_close(rec["loss"][step], ref.detach())
            torch.testing.assert_close(rec["grad"][step], x.grad)
            x = logits[shard].clone().requires_grad_(True)
            ref = _official_focal_reference(x, target[shard], w, 1.0, ii)
            ref.backward()
            torch.testing.assert_close(rec["focal_loss"][step], ref.detach())
            torch.testing.assert_close(rec["focal_grad"][step], x.grad)
    for r in range(2):  # the shards' own counts give other weights
        assert not all(torch.equal(a, b) for a, b in zip(ranks[r]["local"], ranks[r]["synced"]))


def test_sync_counts_without_a_process_group_calls_nothing(monkeypatch, tmp_path):
    import torch.distributed as dist

    calls = []
    monkeypatch.setattr(dist, "all_reduce", lambda *args, **kwargs: calls.append(args))
    logits, target = multiclass_inputs(ignore_index=255, seed=13)

    def results():
        module = RecallLoss(4, momentum=0.5, ignore_index=255).double()
        return recall_loss(logits, target, ignore_index=255), module(logits, target), module.weights

    assert not dist.is_initialized()
    expected = results()
    local = RecallLoss(4, momentum=0.5, ignore_index=255, sync_counts=False).double()
    torch.testing.assert_close(expected[1:], (local(logits, target), local.weights))
    torch.testing.assert_close(expected[0], recall_loss(logits, target, ignore_index=255, sync_counts=False))
    # a one-process group: nothing to add up, nothing called either
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        torch.testing.assert_close(results(), expected)
    finally:
        dist.destroy_process_group()
    assert calls == []


# ---------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(gamma=-1.0), ValueError, "gamma must be >= 0.0"),
        (dict(gamma="2"), TypeError, "gamma must be a real number"),
        (dict(detach_focal=1), TypeError, r"detach_focal must be a bool, got int \(1\)"),
        (dict(sync_counts="yes"), TypeError, "sync_counts must be a bool, got str"),
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
        (dict(num_classes=3, init="zeros"), ValueError, r"init must be one of \('first_batch', 'ones'\)"),
        (dict(num_classes=3, init=None), TypeError, "init must be a str"),
        (dict(num_classes=3, detach_focal=None), TypeError, "detach_focal must be a bool"),
        (dict(num_classes=3, sync_counts=0), TypeError, "sync_counts must be a bool"),
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
