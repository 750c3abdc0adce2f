"""Cross-entropy: known values, torch.nn.functional as reference, identities, limit cases, errors.

The properties every loss shares (module == functional, gradcheck, dtypes, all-ignored batch,
reductions, memory layouts, state_dict, NaN, validation, torch.compile) are in test_contract.py."""

import math

import pytest
import torch
import torch.nn.functional as F

from losses.loss_cases import DEVICES, binary_inputs, multiclass_inputs, perfect_logits
from pixelweight.losses import CrossEntropyLoss, cross_entropy

LN2 = math.log(2.0)


def _tiny_multiclass():
    # pixel 0: logits (0, 0), label 0 -> CE = ln 2
    # pixel 1: logits (ln 3, 0), label 1 -> p_1 = 1 / (3 + 1) -> CE = ln 4
    logits = torch.tensor([[[[0.0, math.log(3.0)]], [[0.0, 0.0]]]], dtype=torch.float64)
    target = torch.tensor([[[0, 1]]])
    return logits, target


def test_known_values_multiclass():
    logits, target = _tiny_multiclass()
    assert cross_entropy(logits, target).item() == pytest.approx(1.5 * LN2, abs=1e-12)
    assert cross_entropy(logits, target, reduction="sum").item() == pytest.approx(3 * LN2, abs=1e-12)
    torch.testing.assert_close(cross_entropy(logits, target, reduction="none"),
                               torch.tensor([[[LN2, 2 * LN2]]], dtype=torch.float64))
    w = [2.0, 1.0]  # weighted sum 2 ln2 + 2 ln2 = 4 ln2; 2 valid pixels; weight total 3
    assert cross_entropy(logits, target, w).item() == pytest.approx(2 * LN2, abs=1e-12)
    assert cross_entropy(logits, target, w, normalize="weights").item() == pytest.approx(4 * LN2 / 3, abs=1e-12)
    assert cross_entropy(logits, target, w, reduction="sum").item() == pytest.approx(4 * LN2, abs=1e-12)
    # ignoring pixel 1 leaves ln 2 (mean over the one valid pixel)
    t = target.clone()
    t[0, 0, 1] = 255
    assert cross_entropy(logits, t, ignore_index=255).item() == pytest.approx(LN2, abs=1e-12)


def test_known_values_binary():
    # z = 0 -> sigma = 1/2: CE = ln 2 for either label; z = ln 3, label 0 -> -log(1 - 3/4) = ln 4
    logits = torch.tensor([0.0, math.log(3.0)], dtype=torch.float64).view(1, 1, 1, 2)
    target = torch.tensor([[[1, 0]]])
    assert cross_entropy(logits, target).item() == pytest.approx(1.5 * LN2, abs=1e-12)
    # weights (background 3, foreground 1): 1 ln2 + 3 ln4 = 7 ln2; weight total 4
    assert cross_entropy(logits, target, [3.0, 1.0], normalize="weights").item() == pytest.approx(7 * LN2 / 4)
    assert cross_entropy(logits, target, [3.0, 1.0]).item() == pytest.approx(7 * LN2 / 2)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ignore_index", [None, 255, -1, 0])
@pytest.mark.parametrize("weighted", [False, True])
def test_matches_torch_cross_entropy(device, ignore_index, weighted):
    dtype = torch.float64  # other dtypes: test_contract.py, against this float64 result
    logits, target = multiclass_inputs(dtype=dtype, device=device, ignore_index=ignore_index)
    w = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=dtype, device=device) if weighted else None
    ii = -100 if ignore_index is None else ignore_index
    tol = dict(rtol=1e-12, atol=1e-12)
    for reduction in ("none", "sum"):
        ours = cross_entropy(logits, target, w, ignore_index, reduction)
        ref = F.cross_entropy(logits, target, w, ignore_index=ii, reduction=reduction)
        torch.testing.assert_close(ours, ref, **tol)
    # PyTorch's weighted mean divides by the weight total
    ref_mean = F.cross_entropy(logits, target, w, ignore_index=ii)
    torch.testing.assert_close(cross_entropy(logits, target, w, ignore_index, normalize="weights"), ref_mean, **tol)
    # ours divides by the number of valid pixels
    n_valid = (target != ii).sum()
    ref_pixels = F.cross_entropy(logits, target, w, ignore_index=ii, reduction="sum") / n_valid
    torch.testing.assert_close(cross_entropy(logits, target, w, ignore_index), ref_pixels, **tol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("target_layout", ["nhw", "n1hw_float", "n1hw_bool"])
def test_binary_matches_bce_with_pos_weight(device, target_layout):
    dtype = torch.float64
    logits, target = binary_inputs(dtype=dtype, device=device)
    layouts = {"nhw": target, "n1hw_float": target.unsqueeze(1).to(dtype), "n1hw_bool": target.unsqueeze(1).bool()}
    t = layouts[target_layout]
    tol = {}
    ref = F.binary_cross_entropy_with_logits(logits, target.unsqueeze(1).to(dtype), reduction="none")
    torch.testing.assert_close(cross_entropy(logits, t, reduction="none"), ref, **tol)
    torch.testing.assert_close(cross_entropy(logits, t), ref.mean(), **tol)
    # weight (1, k) == pos_weight k, mean over pixels
    pw = torch.tensor([2.5], dtype=dtype, device=device)
    ref_pw = F.binary_cross_entropy_with_logits(logits, target.unsqueeze(1).to(dtype), pos_weight=pw)
    torch.testing.assert_close(cross_entropy(logits, t, [1.0, 2.5]), ref_pw, **tol)


def test_binary_ignore_index_masks_pixels():
    logits, target = binary_inputs(ignore_index=255)
    valid = (target != 255).unsqueeze(1)
    ref = F.binary_cross_entropy_with_logits(logits, (target == 1).unsqueeze(1).double(), reduction="none")
    torch.testing.assert_close(cross_entropy(logits, target, ignore_index=255), ref[valid].mean())


@pytest.mark.parametrize("binary", [False, True])
def test_uniform_weights_equal_plain_ce(binary):
    logits, target = (binary_inputs if binary else multiclass_inputs)(ignore_index=255)
    k = 2 if binary else 4
    plain = cross_entropy(logits, target, ignore_index=255)
    torch.testing.assert_close(cross_entropy(logits, target, torch.full((k,), 3.0), 255, normalize="weights"), plain)
    torch.testing.assert_close(cross_entropy(logits, target, torch.full((k,), 3.0), 255), 3 * plain)
    torch.testing.assert_close(cross_entropy(logits, target, torch.ones(k), 255), plain)


@pytest.mark.parametrize("binary", [False, True])
def test_perfect_logits_give_zero(binary):
    _, target = (binary_inputs if binary else multiclass_inputs)()
    logits = perfect_logits(target, 1 if binary else 4)
    assert 0 <= cross_entropy(logits, target).item() < 1e-12


def test_zero_weights_give_zero_not_nan():
    logits, target = multiclass_inputs(requires_grad=True)
    loss = cross_entropy(logits, target, torch.zeros(4), normalize="weights")
    assert torch.isnan(F.cross_entropy(logits, target, torch.zeros(4, dtype=torch.float64)))  # PyTorch: 0/0
    assert loss.item() == 0.0
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_single_class_batch():
    logits, _ = multiclass_inputs(requires_grad=True)
    target = torch.full((2, 5, 6), 2)
    loss = cross_entropy(logits, target, [1.0, 1.0, 5.0, 1.0], normalize="weights")
    torch.testing.assert_close(loss, F.cross_entropy(logits, target))
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_weight_dtype_is_cast_to_logits():
    logits, target = multiclass_inputs(dtype=torch.float64)
    w64 = torch.tensor([0.5, 2.0, 1.0, 3.0], dtype=torch.float64)
    out = cross_entropy(logits, target, w64.float())  # float32 weights, float64 logits
    assert out.dtype == torch.float64
    torch.testing.assert_close(out, cross_entropy(logits, target, w64))
    torch.testing.assert_close(cross_entropy(logits, target, torch.tensor([1, 2, 1, 3])),
                               cross_entropy(logits, target, [1.0, 2.0, 1.0, 3.0]))


def test_module_weight_is_a_buffer():
    w = torch.tensor([0.5, 2.0, 1.0])
    module = CrossEntropyLoss(w)
    assert "weight" in dict(module.named_buffers()) and "weight" in module.state_dict()
    w[0] = 100.0  # the module keeps its own copy
    assert module.weight[0].item() == 0.5
    assert module.to(torch.float64).weight.dtype == torch.float64
    assert CrossEntropyLoss().weight is None
    assert "normalize='pixels'" in repr(CrossEntropyLoss())


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(normalize="batch"), ValueError, "normalize must be one of"),
        (dict(normalize=None), TypeError, "normalize must be a str"),
        (dict(weight=[1.0, 2.0]), ValueError, r"weight must have C = 4 values"),
        (dict(weight=[1.0, -1.0, 1.0, 1.0]), ValueError, "non-negative"),
        (dict(weight=[1.0, float("nan"), 1.0, 1.0]), ValueError, "finite"),
        (dict(weight=torch.ones(2, 2)), ValueError, "1-D vector"),
        (dict(weight=torch.ones(0)), ValueError, "1-D vector"),
        (dict(weight=torch.ones(4, dtype=torch.bool)), ValueError, "real tensor"),
        (dict(weight="balanced"), TypeError, "weight must be a 1-D torch.Tensor"),
        (dict(weight=[1, "a", 1, 1]), TypeError, "weight must be a 1-D torch.Tensor"),
    ],
)
def test_errors(kwargs, exc, match):
    logits, target = multiclass_inputs()
    with pytest.raises(exc, match=match):
        cross_entropy(logits, target, **kwargs)


def test_errors_module_and_binary_weight():
    with pytest.raises(ValueError, match="normalize must be one of"):
        CrossEntropyLoss(normalize="Weights")
    with pytest.raises(ValueError, match="non-negative"):
        CrossEntropyLoss(weight=[-1.0, 1.0])
    logits, target = binary_inputs()
    with pytest.raises(ValueError, match=r"2 values \(background, foreground\)"):
        cross_entropy(logits, target, [1.0, 2.0, 3.0])
