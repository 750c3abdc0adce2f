"""The contract every loss of ``pixelweight.losses`` keeps, run on every spec of
``losses/contract.py`` (read its docstring to add a loss)."""

from __future__ import annotations

import copy
import io
import itertools

import pytest
import torch

from losses.contract import (
    DEVICES,
    FAMILY_SPECS,
    FLOAT32_RTOL,
    LOW_PRECISION,
    LOW_PRECISION_RTOL,
    REDUCTIONS,
    SPECS,
    image_class_table,
    known_defect,
    per_image,
    per_sample,
    pixel_map,
)
from losses.loss_cases import binary_inputs, classification_inputs, multiclass_inputs

LAYOUT = object()  # an axis of `cases`: the layouts the spec supports
IGNORE = 255


def cases(test, specs, *axes):
    """One ``pytest.param`` per spec and combination of ``axes`` (``LAYOUT``: the spec's
    layouts), marked as a strict xfail when it is a known defect; "cuda" is skipped without CUDA."""
    params = []
    for spec in specs:
        for combo in itertools.product(*[spec.layouts if a is LAYOUT else a for a in axes]):
            marks = list(known_defect(test, spec, *combo))
            if "cuda" in combo and not torch.cuda.is_available():
                marks.append(pytest.mark.skip(reason="needs CUDA"))
            ids = [spec.id] + [str(v).replace("torch.", "") if v is not None else "ii=None" for v in combo]
            params.append(pytest.param(spec, *combo, marks=marks, id="-".join(ids)))
    return params


def inputs(layout, *, n=2, c=4, h=5, w=6, ignore_index=IGNORE, seed=0, dtype=torch.float64, device="cpu",
           requires_grad=False):
    """Random logits and targets of a layout (25% of the pixels ignored) and the number of classes."""
    kw = dict(n=n, h=h, w=w, dtype=dtype, device=device, ignore_index=ignore_index, seed=seed,
              requires_grad=requires_grad)
    if layout == "binary":
        return (*binary_inputs(**kw), 2)
    if layout == "classification":  # (N, C) class logits, (N,) labels: n * h * w samples
        return (*classification_inputs(c=c, **kw), c)
    return (*multiclass_inputs(c=c, **kw), c)


def ignored_logits_mask(logits, target):
    """Bool mask of the logits' entries at ignored pixels (every channel)."""
    ignored = (target == IGNORE).unsqueeze(1)
    return ignored.expand_as(logits)


def grad_of(out, x):
    (g,) = torch.autograd.grad(out.sum() if out.ndim else out, x)
    return g


def assert_close_rel(out, ref, rtol):
    """Each entry within ``rtol * (|ref| + max |ref|)`` of the reference: relative to the entry and
    to the output's scale (small entries of a map carry the absolute error of the large ones)."""
    out, ref = out.detach().cpu().double(), ref.detach().cpu().double()
    scale = float(ref.abs().max()) if ref.numel() else 0.0
    torch.testing.assert_close(out, ref, rtol=rtol, atol=rtol * scale)


# ------------------------------------------------------------------------------------------
# module == functional
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout, reduction, ignore_index, device",
                         cases("module_equals_functional", SPECS, LAYOUT, REDUCTIONS, [None, IGNORE], DEVICES))
def test_module_equals_functional(spec, layout, reduction, ignore_index, device):
    """The module (moved with ``.to(device)``, buffers included) returns the functional's value,
    and on the CPU the same bits again on a second call."""
    x, t, c = inputs(layout, ignore_index=ignore_index, device=device)
    out = spec.make_module(c, ignore_index, reduction).to(device)(x, t)
    assert out.device == x.device
    torch.testing.assert_close(out, spec.expected(x, t, c, ignore_index, reduction))
    if device == "cpu":  # deterministic
        assert torch.equal(spec.make_module(c, ignore_index, reduction)(x, t), out)


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout, reduction", cases("gradcheck", SPECS, LAYOUT, ["none", "mean"]))
def test_gradcheck(spec, layout, reduction):
    """float64 finite differences. ``"sum"`` is ``"mean"`` times a constant (checked by
    test_reduction_layouts_and_normalisers), so it is not checked again."""
    x, t, c = inputs(layout, n=2, c=3, h=2, w=3, seed=1, requires_grad=True)
    loss = spec.loss(c, IGNORE, reduction)
    if spec.state:  # one update, then freeze the state for the finite differences
        loss(x.detach(), t)
        loss.eval()
    if spec.frozen is not None:  # a stop-gradient factor: check the loss with it frozen at x
        frozen = spec.frozen(x, t, c, IGNORE, reduction)
        out, ref = loss(x, t), frozen(x)
        torch.testing.assert_close(out, ref)
        cotangent = torch.randn(out.shape, dtype=out.dtype, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(torch.autograd.grad(out, x, cotangent)[0],
                                   torch.autograd.grad(ref, x, cotangent)[0])
        assert torch.autograd.gradcheck(frozen, (x,))
    elif reduction == "none" and not spec.none_differentiable:
        assert torch.autograd.gradcheck(lambda z: loss(z, t).sum(), (x,))
    else:
        assert torch.autograd.gradcheck(lambda z: loss(z, t), (x,))


# ------------------------------------------------------------------------------------------
# dtypes and devices
# ------------------------------------------------------------------------------------------
def _scaled_inputs(layout, seed, **kw):
    """Image 0 nearly uniform (logits x 0.15: early training, near-ties), image 1 confident (x 1.5);
    for (N, C) logits, the first half of the samples and the second."""
    x, t, c = inputs(layout, seed=seed, **kw)
    if x.ndim == 2:
        scale = torch.tensor([0.15, 1.5], dtype=x.dtype).repeat_interleave(x.shape[0] // 2).view(-1, 1)
        return x * scale, t, c
    scale = torch.tensor([0.15, 1.5], dtype=x.dtype).view(2, 1, 1, 1)
    return x * scale, t, c


@pytest.mark.parametrize("spec, layout, dtype, device",
                         cases("dtype", SPECS, LAYOUT, [torch.float32, torch.float64, *LOW_PRECISION], DEVICES))
def test_dtype_and_device(spec, layout, dtype, device):
    """The result has the input's dtype and device and is close to float64 on the same rounded logits."""
    x64, t, c = _scaled_inputs(layout, seed=2)
    x = x64.to(dtype=dtype, device=device).requires_grad_()
    ref_x = x.detach().cpu().double().requires_grad_()
    rtol = LOW_PRECISION_RTOL.get(dtype, FLOAT32_RTOL if dtype == torch.float32 else 1e-12)
    for reduction in REDUCTIONS:
        out = spec.loss(c, IGNORE, reduction, device)(x, t.to(device))
        ref = spec.loss(c, IGNORE, reduction)(ref_x, t)
        assert out.dtype == dtype and out.device == x.device
        assert_close_rel(out, ref, rtol)
        if device == "cpu":  # deterministic
            assert torch.equal(spec.loss(c, IGNORE, reduction, device)(x, t), out)
        if reduction == "mean":
            g, g_ref = grad_of(out, x), grad_of(ref, ref_x)
            assert g.dtype == dtype
            assert_close_rel(g, g_ref, rtol)


@pytest.mark.parametrize("spec, dtype, device", cases("realistic_size", FAMILY_SPECS, LOW_PRECISION, DEVICES))
def test_low_precision_at_a_realistic_size(spec, dtype, device):
    """4 x 5 x 512 x 512 logits (4 x 1 x 512 x 512 for a binary-only loss), 8 ignored rows per image:
    1,032,192 valid pixels (past float16's largest integer, 65,504), images from nearly uniform to
    confident; the mean against float64."""
    g = torch.Generator().manual_seed(0)
    c = 5 if "binary" not in spec.layouts or "multiclass" in spec.layouts else 1  # binary-only: (N, 1, H, W)
    x = torch.randn(4, c, 512, 512, generator=g) * torch.tensor([0.15, 1.0, 2.0, 4.0]).view(4, 1, 1, 1)
    t = torch.randint(0, max(c, 2), (4, 512, 512), generator=g)
    t[:, :8] = IGNORE
    if spec.layouts == ("classification",):  # as many (N, C) samples: 1,048,576 x 5 logits
        x, t = x.permute(0, 2, 3, 1).reshape(-1, c), t.reshape(-1)
    x = x.to(dtype)
    out = spec.loss(max(c, 2), IGNORE, "mean", device)(x.to(device), t.to(device))
    ref = spec.loss(max(c, 2), IGNORE, "mean")(x.double(), t)
    assert out.dtype == dtype and torch.isfinite(out)
    assert_close_rel(out, ref, LOW_PRECISION_RTOL[dtype])


# ------------------------------------------------------------------------------------------
# ignored pixels
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout", cases("all_ignored", SPECS, LAYOUT))
def test_all_ignored_batch_is_a_zero_with_a_graph(spec, layout):
    x, t, c = inputs(layout, requires_grad=True)
    t = torch.full_like(t, IGNORE)
    for reduction in REDUCTIONS:
        out = spec.loss(c, IGNORE, reduction)(x, t)
        assert torch.all(out == 0), f"{reduction}: {out}"  # 0, not NaN
        assert out.requires_grad
        g = grad_of(out, x)
        assert torch.all(g == 0)


@pytest.mark.parametrize("spec, layout", cases("ignored_invisible", SPECS, LAYOUT))
def test_ignored_pixels_are_invisible(spec, layout):
    """Any (finite) logits at ignored pixels give the same loss, and no gradient flows there."""
    x, t, c = inputs(layout, seed=5, requires_grad=True)
    mask = ignored_logits_mask(x, t)
    noise = 10 * torch.randn(x.shape, generator=torch.Generator().manual_seed(6), dtype=x.dtype)
    y = torch.where(mask, noise, x.detach()).requires_grad_()
    for reduction in REDUCTIONS:
        out, out_y = spec.loss(c, IGNORE, reduction)(x, t), spec.loss(c, IGNORE, reduction)(y, t)
        torch.testing.assert_close(out_y, out)
        assert torch.all(grad_of(out_y, y)[mask] == 0)


# ------------------------------------------------------------------------------------------
# reductions
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout", cases("reductions", SPECS, LAYOUT))
def test_reduction_layouts_and_normalisers(spec, layout):
    """``"none"`` has the spec's layout (0 where nothing is valid), ``"sum"`` sums it and ``"mean"``
    divides the sum by the spec's denominator. Image 2 is entirely ignored."""
    x, t, c = inputs(layout, n=3, seed=3)
    t[2] = IGNORE
    valid = t != IGNORE
    none, total, mean = (spec.loss(c, IGNORE, r)(x, t) for r in ("none", "sum", "mean"))
    assert none.shape == spec.none_shape(x.shape, valid)
    if spec.none_shape in (pixel_map, per_sample):
        assert torch.all(none.reshape(valid.shape)[~valid] == 0)
    if spec.none_shape in (image_class_table, per_image):
        assert torch.all(none[2] == 0)
    assert total.shape == mean.shape == ()
    torch.testing.assert_close(total, none.sum())
    denominator = spec.mean_denominator(spec.options(c), t, valid, none)
    torch.testing.assert_close(mean, total / torch.as_tensor(denominator, dtype=total.dtype))
    if layout == "binary":  # (N, 1, H, W) targets are the same as (N, H, W)
        for r in REDUCTIONS:
            torch.testing.assert_close(spec.loss(c, IGNORE, r)(x, t.unsqueeze(1)), spec.loss(c, IGNORE, r)(x, t))


# ------------------------------------------------------------------------------------------
# memory layouts
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout, memory", cases("memory_layout", SPECS, LAYOUT, ["channels_last", "non_contiguous"]))
def test_memory_layouts(spec, layout, memory):
    x, t, c = inputs(layout, seed=7, requires_grad=True)
    if x.ndim == 2:  # (N, C) logits: no channels_last; the same values behind transposed strides
        y = x.detach().t().contiguous().t()
        u = torch.stack([t, t], 1)[:, 0]
        assert not y.is_contiguous() and not u.is_contiguous()
    elif memory == "channels_last":
        y, u = x.detach().contiguous(memory_format=torch.channels_last), t
        assert layout == "binary" or not y.is_contiguous()
    else:  # the same values behind transposed strides
        y = x.detach().transpose(2, 3).contiguous().transpose(2, 3)
        u = t.transpose(1, 2).contiguous().transpose(1, 2)
        assert not y.is_contiguous() and not u.is_contiguous()
    y.requires_grad_()
    for reduction in REDUCTIONS:
        out, out_y = spec.loss(c, IGNORE, reduction)(x, t), spec.loss(c, IGNORE, reduction)(y, u)
        torch.testing.assert_close(out_y, out)
        torch.testing.assert_close(grad_of(out_y, y), grad_of(out, x))


# ------------------------------------------------------------------------------------------
# state_dict
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout", cases("state_dict", SPECS, LAYOUT))
def test_state_dict_round_trip(spec, layout):
    """A module saved after a batch (``torch.save``) and loaded into a module whose buffers were
    changed continues exactly like the original: same outputs, same state."""
    x1, t1, c = inputs(layout, seed=8)
    x2, t2, _ = inputs(layout, seed=9)
    module = spec.make_module(c, IGNORE)
    module(x1, t1)  # a stateful loss updates its state
    buffer = io.BytesIO()
    torch.save(module.state_dict(), buffer)
    buffer.seek(0)
    state = torch.load(buffer)
    assert set(spec.state) <= set(state)
    fresh = spec.make_module(c, IGNORE)
    with torch.no_grad():
        for b in fresh.buffers():  # every buffer changed: numbers scaled, flags flipped
            b.logical_not_() if b.dtype == torch.bool else b.mul_(0.3).add_(0.2)
    probe = copy.deepcopy(fresh).eval()
    changed = probe(x2, t2)
    fresh.load_state_dict(state)
    out = fresh(x2, t2)
    expected = module(x2, t2)
    torch.testing.assert_close(out, expected)
    for name, value in module.state_dict().items():
        torch.testing.assert_close(fresh.state_dict()[name], value)
    if spec.state or any(isinstance(v, torch.Tensor) for v in spec.options(c).values()):
        assert not torch.allclose(changed, expected)  # the loaded state is what makes them agree


# ------------------------------------------------------------------------------------------
# NaN
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout, reduction", cases("nan", SPECS, LAYOUT, REDUCTIONS))
def test_nan_logit_gives_nan(spec, layout, reduction):
    x, t, c = inputs(layout, seed=10)
    index = tuple((t != IGNORE).nonzero()[0].tolist())  # a valid pixel (or sample)
    x = x.clone()
    x[index[:1] + (0,) + index[1:]] = float("nan")
    loss = spec.loss(c, IGNORE, reduction)
    if spec.nan == "raise":
        with pytest.raises(ValueError, match="finite"):
            loss(x, t)
        return
    out = loss(x, t)
    assert torch.isnan(out).any(), f"a NaN logit gave the finite loss {out}"
    if reduction != "none":
        assert torch.isnan(out)
    elif spec.none_shape in (pixel_map, per_sample):
        assert torch.isnan(out.reshape(t.shape)[index])


# ------------------------------------------------------------------------------------------
# validation
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("spec, layout", cases("validation", SPECS, LAYOUT))
def test_invalid_inputs_raise(spec, layout):
    x, t, c = inputs(layout)
    loss = spec.loss(c, IGNORE)
    bad = [
        (t[:3] if t.ndim == 1 else t[:, :3], r"target.*shape|shape.*target"),  # wrong size
        (torch.full_like(t, 2 if layout == "binary" else c), "target"),  # a label outside [0, C)
        (t.double() + 0.5 if layout == "binary" else t.double(), "target|integer"),  # binary: 0/1 floats are fine
    ]
    for target, match in bad:
        with pytest.raises(ValueError, match=match):
            loss(x, target)
    with pytest.raises(ValueError, match="logits"):
        loss(x[0], t[0])  # 3-D logits (1-D for the classification layout)
    with pytest.raises(ValueError, match="logits"):
        loss(x.long(), t)  # integer logits
    with pytest.raises(TypeError, match="logits"):
        loss(x.numpy(), t)
    with pytest.raises(ValueError, match="reduction"):
        spec.make_module(c, IGNORE, "avg")
    with pytest.raises(TypeError, match="ignore_index"):
        spec.make_module(c, 2.5)
    if spec.functional is not None:
        with pytest.raises(ValueError, match="reduction"):
            spec.functional(x, t, **spec.options(c), reduction="avg")


# ------------------------------------------------------------------------------------------
# torch.compile
# ------------------------------------------------------------------------------------------
def _compile_unsupported():
    try:
        from torch._dynamo import is_dynamo_supported
    except ImportError:  # pragma: no cover - torch without dynamo
        return "torch.compile is not available in this torch"
    return None if is_dynamo_supported() else "torch.compile (dynamo) is not supported on this platform"


COMPILE_SPECS = FAMILY_SPECS + [s for s in SPECS if s.state and s not in FAMILY_SPECS]


@pytest.mark.skipif(_compile_unsupported() is not None, reason=str(_compile_unsupported()))
# Dynamo itself reads `.grad` of the intermediate (non-leaf) tensors it wraps when it resumes after
# a graph break (validation's host reads, bincount); PyTorch warns about that read, nobody else.
@pytest.mark.filterwarnings("ignore:The .grad attribute of a Tensor that is not a leaf Tensor:UserWarning")
# Dynamo (torch 2.13) warns when it traces any custom autograd.Function, even one called as
# `Function.apply` (focal's and Dice's hand-written backward passes): PyTorch's own warning.
@pytest.mark.filterwarnings("ignore:<class 'torch.autograd.function.Function'> should not be instantiated:DeprecationWarning")
@pytest.mark.parametrize("spec", cases("compile", COMPILE_SPECS))
def test_torch_compile_smoke(spec):
    """One call through ``torch.compile(backend="eager")`` (graph capture only: fast on CPU) gives
    the eager value and gradient."""
    x, t, c = inputs(spec.layouts[0], dtype=torch.float32, requires_grad=True)
    y = x.detach().clone().requires_grad_()
    compiled = torch.compile(spec.loss(c, IGNORE, "mean"), backend="eager")
    out = compiled(y, t)
    ref = spec.loss(c, IGNORE, "mean")(x, t)
    torch.testing.assert_close(out, ref)
    torch.testing.assert_close(grad_of(out, y), grad_of(ref, x))
