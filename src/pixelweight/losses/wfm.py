r"""The Weighted F-measure as a training loss (Kolkin, Shakhnarovich, Shechtman, ICCV 2017).

Margolin, Zelnik-Manor and Tal (*How to Evaluate Foreground Maps?*, CVPR 2014) score a
foreground map :math:`D \in [0,1]^{H\times W}` against a binary ground truth :math:`G` with
the Weighted F-measure :math:`F^w_\beta`
(:func:`pixelweight.metrics.weighted_fmeasure`, checked against PySODMetrics). Kolkin et
al. (*Training Deep Networks to be Spatially Sensitive*, ICCV 2017, arXiv:1708.02212)
train with a differentiable approximation of it. **Their approximation is unknown here**:
the paper's body was not available, and no public implementation of it was found. This
module does not guess it. It is the **exact metric made a loss**,

.. math:: \mathcal{L} = 1 - F^w_\beta\big(\sigma(z), G\big),

which needs no approximation: with :math:`G` fixed, every non-smooth part of the metric
depends on the ground truth only.

With :math:`D = \sigma(z)` and the ground-truth-only terms of
:func:`pixelweight.metrics.wfm_gt_terms` (distance :math:`\Delta_i` and index
:math:`\nu(i)` of the nearest foreground pixel, importance :math:`B_i`):

* :math:`E = |G - D|`: :math:`1 - D` on :math:`G`, :math:`D` elsewhere (linear in :math:`D`);
* :math:`\tilde E_i = E_{\nu(i)} = 1 - D_{\nu(i)}` (a gather, linear);
* :math:`E_A = K * \tilde E`, the 7x7 Gaussian of :math:`\sigma = 5` normalised to sum 1,
  zero padding (a separable convolution, linear);
* :math:`E'_i = \min(E_i, E_{A,i})` on :math:`G` and :math:`E_i` elsewhere: the only
  non-smooth step. Its subgradient is taken (the gradient flows to :math:`E_A` where
  :math:`E_A < E`, to :math:`E` otherwise); with ``smoothing`` :math:`s > 0` the minimum
  is replaced by :math:`\tfrac12(a + b - \sqrt{(a-b)^2 + s^2})`, smooth and within
  :math:`s/2` below the minimum;
* :math:`B_i = 1` on :math:`G`, :math:`2 - e^{\alpha\Delta_i}` with :math:`\alpha = \ln(0.5)/5`
  elsewhere: a false positive far from the object weighs up to 2, one on its border 1;
* :math:`TP^w = |G| - \sum_G E'`, :math:`FP^w = \sum_{\neg G} B_i E_i`,
  :math:`R^w = 1 - \frac{1}{|G|}\sum_G E'`, :math:`P^w = TP^w / (TP^w + FP^w + \varepsilon)`,

.. math:: F^w_\beta = \frac{(1 + \beta^2) P^w R^w}{\beta^2 P^w + R^w + \varepsilon},
   \qquad \varepsilon = 2^{-52}, \quad \beta^2 = 1 \text{ (Margolin's code)}.

On a binary prediction the loss equals :math:`1 - F^w_\beta` of the metric, to rounding
(saturated logits give :math:`D \in \{0, 1\}`); on any prediction it equals the metric of
:math:`\sigma(z)`.

**Cost.** :math:`\Delta`, :math:`\nu`, :math:`B` need a Euclidean distance transform (scipy,
on the CPU): compute them once per training image with ``wfm_gt_terms(target == 1)`` and
pass them with the batch (``terms=``); the loss then only checks that they belong to the
target (one comparison of the target with ``terms.gt``, which also validates it). Without
``terms`` they are computed at every call. The gather, the blur, its adjoint and the scatter
back are written out in one autograd function (``_WFMSums``); the blur is two block
convolutions (``_separable.conv_blur``) on large batches. Forward and
backward cost about four times ``F.binary_cross_entropy_with_logits`` on the same logits
(8 x 256 x 256 and 16 x 64 x 64, one CPU thread; ``python -m pixelweight.benchmark --set
foreground`` measures it): the gather, the two blurs and the scatter-add alone take more
than the cross-entropy.

**Edge cases.** An image without foreground pixels has :math:`F^w = 0` in the metric
(PySODMetrics' convention), so its loss is 1 whatever is predicted, with zero gradient:
this loss cannot teach a network to predict nothing on an empty image (combine it with a
pixel loss if the data have such images). An image whose ground truth is all foreground
has :math:`FP^w = 0` and a finite loss and gradient. Pixels equal to ``ignore_index`` are
outside the image (e.g. the padding of a crop): their prediction is never read, they count
neither as false positives nor in :math:`|G|`, and :math:`\tilde E = 0` there, the value of
the blur's zero padding beyond the border, so that a padded image scores what the image
itself scores. They are background for the distance transform (:math:`\Delta`, :math:`\nu` of
a labelled pixel are measured to the nearest *labelled* foreground pixel). An image without
a labelled pixel has loss 0 and is left out of the ``"mean"``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import accumulation_dtype, check_float, check_ignore_index, check_reduction, require
from ..metrics.foreground import WFMTerms, wfm_gt_terms
from ._foreground import binary_maps, reduce_images
from ._separable import blur, conv_blur, gaussian_half_kernel, unit_sum_half_kernel
from ._foreground import masked_sum, valid_count  # (BCE + F^w)

__all__ = ["BCEWeightedFMeasureLoss", "WeightedFMeasureLoss", "bce_weighted_fmeasure_loss", "weighted_fmeasure_loss"]

#: MATLAB's ``eps`` (:math:`2^{-52}`), the constant of ``WFb.m`` and PySODMetrics.
_EPS = float(2.0**-52)
#: Half of Margolin's 1-D Gaussian: 7 taps, sigma 5 (``fspecial('gaussian', 7, 5)`` = k k^T).
_WFM_HALF_KERNEL = gaussian_half_kernel(7, 5.0)


# The distance transform is scipy on the host: torch.compile runs it eagerly (a graph break).
_gt_terms = torch.compiler.disable(wfm_gt_terms)


def _check_beta2(beta2) -> float:
    return check_float(beta2, "beta2", minimum=0.0)  # finite (check_float rejects inf)


def _check_smoothing(smoothing) -> float:
    return check_float(smoothing, "smoothing", minimum=0.0)


class _WFMSums(torch.autograd.Function):
    r"""Per image, :math:`S_G = \sum_{i \in G} E'_i` and :math:`S_B = \sum_i w_i D_i` from logits.

    ``forward(ctx, z, fg, fg_f, nearest, bg_weight, keep, smoothing)``: ``z`` logits (N, H, W)
    in the compute dtype; ``fg`` the foreground (bool) and ``fg_f`` the same as 0/1 in that
    dtype; ``nearest`` long (N, HW), :math:`\nu`; ``bg_weight`` :math:`w_i = B_i` on labelled
    background pixels, 0 on the foreground and on ignored pixels (so that :math:`S_B = FP^w`);
    ``keep`` 0/1 (N, H, W), 0 at ignored pixels, where :math:`\tilde E` is 0 (``None``: nothing
    is ignored).

    Backward, with :math:`a = \partial L/\partial S_G`, :math:`b = \partial L/\partial S_B`
    per image and :math:`m_i = [E_{A,i} < E_i]` on :math:`G` (exact minimum):

    .. math::
        \frac{\partial L}{\partial E_{A,i}} = a\, m_i, \qquad
        \frac{\partial L}{\partial D_j} = -\!\!\sum_{i:\,\nu(i) = j}\!\! \big(K * (a\,m)\big)_i
          - a [j \in G](1 - m_j) + b\, w_j,

    (the blur is self-adjoint; the gather's adjoint is a scatter-add through :math:`\nu`),
    then times :math:`D_j (1 - D_j)` for the sigmoid.

    Cost: the forward pass is a sigmoid, a gather, one blur (``_blur``), a minimum and
    two dot products; the backward pass a comparison, one blur (the negated kernel), a
    scatter-add and four multiply-adds, each one pass over the maps.
    """

    @staticmethod
    def forward(ctx, z, fg, fg_f, nearest, bg_weight, keep, smoothing: float):
        n, h, w = z.shape
        p = torch.sigmoid(z)  # D
        e = torch.rsub(p, 1)  # 1 - D: E on the foreground
        e_t = torch.gather(e.reshape(n, h * w), 1, nearest).reshape(n, h, w)  # Ẽ = 1 - D_ν
        if keep is not None:
            e_t.mul_(keep)  # Ẽ = 0 at ignored pixels, like the zero padding
        e_a = _blur(e_t)  # E_A = K * Ẽ
        del e_t
        if smoothing > 0:
            # ½(E + E_A - sqrt((E - E_A)² + s²)), computed into fresh buffers
            root = torch.sub(e, e_a).square_().add_(smoothing * smoothing).sqrt_()
            e_min = e.add(e_a).sub_(root).mul_(0.5)
        else:
            e_min = torch.minimum(e, e_a)  # NaN in either stays NaN
        s_g = _dot(e_min, fg_f)  # Σ_G E'
        del e_min
        s_b = _dot(p, bg_weight)  # Σ_{¬G} B D
        ctx.save_for_backward(p, e, e_a, fg, fg_f, nearest, bg_weight, keep)
        ctx.smoothing = smoothing
        return s_g, s_b

    @staticmethod
    def backward(ctx, grad_g, grad_b):
        p, e, e_a, fg, fg_f, nearest, bg_weight, keep = ctx.saved_tensors
        n, h, w = p.shape
        a = grad_g.reshape(n, 1, 1)
        b = grad_b.reshape(n, 1, 1)
        if ctx.smoothing > 0:
            root = torch.sub(e, e_a).square_().add_(ctx.smoothing**2).sqrt_()
            to_a = torch.sub(e, e_a).div_(root).add_(1).mul_(0.5).mul_(fg_f)  # ∂E'/∂E_A on G; ∂E'/∂E = 1 - it
            to_a.mul_(a)
        else:
            # the subgradient: E_A where it is strictly smaller (a NaN compares false: E, whose gradient is NaN)
            to_a = torch.lt(e_a, e).logical_and_(fg).to(p.dtype).mul_(a)  # ∂L/∂E_A = a m on G, 0 elsewhere
        # ∂L/∂D_j = b w_j - a [j in G] + (a m_j, through E = 1 - D on G) - (adjoint of Ẽ = 1 - D_ν)
        grad_p = torch.addcmul(to_a, bg_weight, b).addcmul_(fg_f, a, value=-1)
        spread = _blur(to_a, scale=-1.0)  # -∂L/∂Ẽ
        if keep is not None:
            spread.mul_(keep)
        grad_p = grad_p.reshape(n, h * w).scatter_add_(1, nearest, spread.reshape(n, h * w))  # through ν
        return grad_p.reshape(n, h, w).mul_(p).mul_(e), None, None, None, None, None, None  # times σ'(z) = D(1 - D)


#: Below this many pixels per batch the shifted-slice blur beats the two convolutions (their
#: fixed cost per call); measured on one CPU thread (16 x 64 x 64: shifts; 8 x 256 x 256: convolutions).
_CONV_BLUR_MIN_PIXELS = 1 << 17


def _blur(x: torch.Tensor, scale: float = 1.0) -> torch.Tensor:
    r""":math:`K * X` (times ``scale``) over the last two dimensions of ``x`` (N, H, W), no autograd.

    The taps of :func:`pixelweight.metrics.weighted_fmeasure`'s blur (summing to exactly 1 in
    ``x``'s dtype), so that the loss stays 1 - the metric to rounding.
    """
    half = unit_sum_half_kernel(_WFM_HALF_KERNEL, x.dtype)
    if x.numel() >= _CONV_BLUR_MIN_PIXELS or x.device.type != "cpu":
        return conv_blur(x, half, scale=scale)
    out = blur(x, half)
    return out if scale == 1.0 else out.mul_(scale)


def _dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per image (first dimension) :math:`\sum_i x_i y_i`, accumulated in ``x``'s dtype."""
    return (x * y).flatten(1).sum(1)


def weighted_fmeasure_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    beta2: float = 1.0,
    smoothing: float = 0.0,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
    terms: Optional[WFMTerms] = None,
) -> torch.Tensor:
    r"""Weighted F-measure loss :math:`1 - F^w_\beta(\sigma(z), G)`, one value per image.

    The exact metric of :func:`pixelweight.metrics.weighted_fmeasure` on the sigmoid
    probabilities, written with a hand-derived backward pass (see the module notes).
    Kolkin et al. (ICCV 2017) train with an approximation of this metric that is not known
    here (the paper's body was unavailable); this loss is the exact metric, whose every
    non-smooth part (distance transform, nearest-foreground index, importance weights and
    the choice inside the minimum) depends on the ground truth only.

    Parameters
    ----------
    logits : torch.Tensor
        Binary logits ``(N, 1, H, W)``, floating.
    target : torch.Tensor
        ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1} (bool, integer or 0./1. floats), or
        ``ignore_index``.
    beta2 : float
        :math:`\beta^2 \ge 0`; 1 in Margolin's ``WFb.m`` and PySODMetrics (whose ``beta``
        argument *is* :math:`\beta^2`).
    smoothing : float
        0 (default): the exact minimum :math:`\min(E, E_A)` with its subgradient. :math:`s > 0`:
        the smooth minimum :math:`\tfrac12(E + E_A - \sqrt{(E - E_A)^2 + s^2})`, at most
        :math:`s/2` below it (then the loss is no longer exactly the metric).
    ignore_index : int, optional
        Target value of pixels outside the metric (see the module notes).
    reduction : {"mean", "sum", "none"}
        ``"none"``: shape ``(N,)``, 0 for an image without a labelled pixel. ``"mean"``:
        over the images with at least one labelled pixel (a zero with a graph when there is
        none). ``"sum"``: over images.
    terms : WFMTerms, optional
        ``wfm_gt_terms(target == 1, dtype=...)`` computed beforehand (e.g. cached per
        training image and stacked per batch): the distance transform is then skipped.
        They must describe this target's foreground (checked); ignored pixels are
        background in them. ``dtype=torch.float32`` for float32/16 logits avoids a cast per
        call. Computed here when omitted.

    Returns
    -------
    torch.Tensor
        Scalar, or ``(N,)`` for ``reduction="none"``, in the logits' dtype. Computed in
        float32 (float64 for float64 logits).

    Notes
    -----
    A NaN logit at a labelled pixel gives a NaN loss for its image, never a number
    (NaN in, NaN out, as every loss of the library: under mixed precision the gradient
    scaler then skips the step). An image without labelled foreground scores
    :math:`F^w = 0` (loss 1, zero gradient), as in the metric.

    In the book: derived in
    :doc:`The Weighted F-measure: from the metric to a loss </notebooks/01_wfm/01_derivation>`;
    trained against BCE and the salient-object losses in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    References: Margolin, Zelnik-Manor, Tal, *How to Evaluate Foreground Maps?*, CVPR 2014
    (metric and ``WFb.m``); Kolkin, Shakhnarovich, Shechtman, *Training Deep Networks to be
    Spatially Sensitive*, ICCV 2017 (the metric as a loss); PySODMetrics
    ``WeightedFmeasure`` (the Python port the metric is tested against).

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import weighted_fmeasure_loss
    >>> from pixelweight.metrics import weighted_fmeasure, wfm_gt_terms
    >>> target = torch.zeros(1, 8, 8, dtype=torch.long)
    >>> target[:, 2:6, 2:6] = 1                     # a 4x4 square object
    >>> logits = torch.where(target == 1, 2.0, -2.0).unsqueeze(1).double()
    >>> loss = weighted_fmeasure_loss(logits, target)
    >>> round(loss.item(), 4)
    0.2307
    >>> # exactly 1 - the metric of the sigmoid probabilities
    >>> round(1 - weighted_fmeasure(torch.sigmoid(logits[:, 0]), target == 1).item(), 4)
    0.2307
    >>> # cached ground-truth terms: the same value, no distance transform
    >>> terms = wfm_gt_terms(target == 1)
    >>> bool(weighted_fmeasure_loss(logits, target, terms=terms) == loss)
    True
    """
    beta2 = _check_beta2(beta2)
    smoothing = _check_smoothing(smoothing)
    check_reduction(reduction)
    if terms is not None and _matching_terms(logits, target, terms, ignore_index):
        # the target is 0/1 and equals terms.gt (one pass): the validation of binary_maps and
        # _check_terms, done at once
        acc = accumulation_dtype(logits.dtype)
        z, fg, valid, has_valid = logits[:, 0].to(acc), terms.gt, None, None
        fg_f = fg.to(acc)
    else:
        maps = binary_maps(logits, target, ignore_index)  # ignored pixels: logit 0, label 0
        z, fg_f, fg = maps.logits[:, 0], maps.target[:, 0], maps.fg[:, 0]  # (N, H, W); G is fg
        valid, has_valid = (None if maps.valid is None else maps.valid[:, 0]), maps.has_valid
        acc = z.dtype
        if terms is None:
            terms = _gt_terms(fg, dtype=acc)
        else:
            _check_terms(terms, fg)
    n, h, w = z.shape
    weight = terms.weight.to(acc)
    if valid is None:
        bg_weight = torch.addcmul(weight, weight, fg_f, value=-1)  # B on the background, B - B = 0 on G
        keep = None
    else:
        zero = torch.zeros((), dtype=acc, device=z.device)
        bg_weight = torch.where(fg | ~valid, zero, weight)  # B on the labelled background
        keep = valid.to(acc)
    s_g, s_b = _WFMSums.apply(z, fg, fg_f, terms.nearest.reshape(n, h * w), bg_weight, keep, smoothing)  # Σ_G E', FP^w

    fg_count = fg_f.sum(dim=(1, 2))
    tp = fg_count - s_g  # TP^w = |G| - Σ_G E^w
    recall = 1 - s_g / fg_count.clamp_min(1)  # R^w = 1 - mean_G(E^w)
    precision = tp / (tp + s_b + _EPS)  # P^w = TP^w / (TP^w + FP^w + ε)
    f = (1 + beta2) * recall * precision / (recall + beta2 * precision + _EPS)
    # no labelled foreground: F^w = 0 (the metric's convention); "0 *" keeps a NaN input NaN
    f = torch.where(terms.has_foreground, f, 0 * (s_g + s_b))
    return reduce_images(1 - f, has_valid, reduction, logits.dtype)


def _matching_terms(logits, target, terms, ignore_index) -> bool:
    """Whether ``(logits, target, terms)`` are valid inputs with ``terms`` of this target, checked
    with one pass over the target (``target == terms.gt`` everywhere: the target is 0/1 and the
    terms are its own).

    ``False`` sends the call to the full validation (:func:`binary_maps`, :func:`_check_terms`),
    which then raises the precise error, or accepts what this shortcut does not cover:
    ``ignore_index``, a device other than the CPU (where the checks are device-side assertions,
    without a host synchronisation), ``torch.compile``.
    """
    if (ignore_index is not None or not isinstance(terms, WFMTerms) or not isinstance(logits, torch.Tensor)
            or not isinstance(target, torch.Tensor) or torch.compiler.is_compiling()):
        return False
    if (logits.device.type != "cpu" or logits.ndim != 4 or logits.shape[1] != 1 or not logits.is_floating_point()
            or logits.numel() == 0):
        return False
    shape = (logits.shape[0],) + tuple(logits.shape[2:])
    labels = target[:, 0] if target.ndim == 4 and target.shape[1] == 1 else target
    if tuple(labels.shape) != shape or labels.device != logits.device or labels.is_complex():
        return False
    for t in (terms.gt, terms.nearest, terms.weight, terms.has_foreground):
        if not isinstance(t, torch.Tensor) or t.device != logits.device:
            return False
    if (tuple(terms.gt.shape) != shape or tuple(terms.nearest.shape) != shape or tuple(terms.weight.shape) != shape
            or tuple(terms.has_foreground.shape) != shape[:1] or terms.gt.dtype != torch.bool
            or terms.nearest.dtype != torch.long or not terms.weight.is_floating_point()):
        return False
    return torch.equal(labels, terms.gt.to(labels.dtype))  # 1 on G, 0 elsewhere (a NaN is unequal)


def _check_terms(terms, fg: torch.Tensor) -> None:
    """``terms`` are a :class:`WFMTerms` for the foreground ``fg`` (N, H, W), on its device.

    Shapes and devices are checked on the host; that ``terms.gt`` equals ``fg`` is one pass
    over the two boolean maps, a :func:`~pixelweight._validation.require` check (a
    device-side assertion on CUDA, no host synchronisation).
    """
    if not isinstance(terms, WFMTerms):
        raise TypeError(
            f"terms must be a WFMTerms from pixelweight.metrics.wfm_gt_terms(), got {type(terms).__name__}"
        )
    shape = tuple(fg.shape)
    for name in ("gt", "nearest", "weight"):
        t = getattr(terms, name)
        if not isinstance(t, torch.Tensor) or tuple(t.shape) != shape:
            got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
            raise ValueError(f"terms.{name} must have the target's shape (N, H, W) = {shape}, got {got}")
        if t.device != fg.device:
            raise ValueError(f"terms.{name} is on {t.device} but the target is on {fg.device}; use terms.to(device)")
    if tuple(terms.has_foreground.shape) != shape[:1] or terms.has_foreground.device != fg.device:
        raise ValueError(f"terms.has_foreground must have shape ({shape[0]},) on {fg.device}")
    if terms.gt.dtype != torch.bool or terms.nearest.dtype != torch.long or not terms.weight.is_floating_point():
        raise ValueError("terms must hold a bool gt, long nearest and floating weight (build them with wfm_gt_terms)")
    require((terms.gt == fg).all(),
            lambda: "terms were computed for another ground truth: terms.gt must equal target == 1 "
                    "(ignored pixels false); compute them with wfm_gt_terms(target == 1)",
            "pixelweight: terms.gt must equal target == 1")


class WeightedFMeasureLoss(nn.Module):
    r"""Module form of :func:`weighted_fmeasure_loss`; ``forward(logits, target, terms=None)``.

    Notes
    -----
    In the book: derived in
    :doc:`The Weighted F-measure: from the metric to a loss </notebooks/01_wfm/01_derivation>`;
    trained against BCE and the salient-object losses in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import WeightedFMeasureLoss
    >>> from pixelweight.metrics import wfm_gt_terms
    >>> target = torch.zeros(2, 8, 8, dtype=torch.long)
    >>> target[:, 2:6, 2:6] = 1
    >>> logits = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    >>> loss_fn = WeightedFMeasureLoss(reduction="none")
    >>> loss_fn
    WeightedFMeasureLoss(beta2=1.0, smoothing=0.0, ignore_index=None, reduction='none')
    >>> terms = wfm_gt_terms(target == 1, dtype=torch.float32)   # once per image, cached
    >>> loss_fn(logits, target, terms).shape
    torch.Size([2])
    """

    def __init__(
        self,
        beta2: float = 1.0,
        smoothing: float = 0.0,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.beta2 = _check_beta2(beta2)
        self.smoothing = _check_smoothing(smoothing)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, terms: Optional[WFMTerms] = None) -> torch.Tensor:
        return weighted_fmeasure_loss(logits, target, self.beta2, self.smoothing, self.ignore_index,
                                      self.reduction, terms)

    def extra_repr(self) -> str:
        return (f"beta2={self.beta2}, smoothing={self.smoothing}, ignore_index={self.ignore_index}, "
                f"reduction={self.reduction!r}")


# ---------------------------------------------------------------------------------------------
# BCE + F^w: a pixel loss beside the spatial one
# ---------------------------------------------------------------------------------------------
def _check_bce_weight(bce_weight) -> float:
    return check_float(bce_weight, "bce_weight", minimum=0.0)


def bce_weighted_fmeasure_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    bce_weight: float = 1.0,
    beta2: float = 1.0,
    smoothing: float = 0.0,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
    terms: Optional[WFMTerms] = None,
) -> torch.Tensor:
    r"""Binary cross-entropy plus the Weighted F-measure loss, per image.

    .. math::
        \mathcal{L}_n = \lambda\,\frac{1}{|V_n|}\sum_{i \in V_n} \mathrm{bce}_i
          + \big(1 - F^w_\beta(\sigma(z_n), G_n)\big),

    with :math:`\mathrm{bce}_i = -g_i\log\sigma(z_i) - (1 - g_i)\log(1 - \sigma(z_i))` over
    the labelled pixels :math:`V_n` of image :math:`n` and the second term
    :func:`weighted_fmeasure_loss` (the exact metric). The F^w term alone has no gradient
    on an image without foreground (its metric is 0 whatever is predicted) and, like
    every F-measure, only a weak one where the prediction is already confidently wrong; the
    pixel term teaches every pixel, including those of empty images. Salient-object
    practice combines a pixel loss with a region loss the same way (F3Net, BASNet).

    Parameters
    ----------
    logits : torch.Tensor
        Binary logits ``(N, 1, H, W)``.
    target : torch.Tensor
        ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1}, or ``ignore_index``.
    bce_weight : float
        :math:`\lambda \ge 0`, the weight of the BCE term (0: the F^w loss alone).
    beta2, smoothing, terms
        As in :func:`weighted_fmeasure_loss` (``terms``: the cached ground-truth terms).
    ignore_index : int, optional
        Target value of pixels outside both terms.
    reduction : {"mean", "sum", "none"}
        ``"none"``: ``(N,)``; ``"mean"``: over the images with a labelled pixel.

    Returns
    -------
    torch.Tensor
        Scalar or ``(N,)``, in the logits' dtype (computed in float32 at least).

    Notes
    -----
    In the book: :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`
    trains with it beside BCE and the F^w loss alone.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import bce_weighted_fmeasure_loss, cross_entropy, weighted_fmeasure_loss
    >>> target = torch.zeros(1, 8, 8, dtype=torch.long)
    >>> target[:, 2:6, 2:6] = 1
    >>> logits = torch.where(target == 1, 2.0, -2.0).unsqueeze(1).double()
    >>> loss = bce_weighted_fmeasure_loss(logits, target)
    >>> round(loss.item(), 4)
    0.3576
    >>> round((cross_entropy(logits, target) + weighted_fmeasure_loss(logits, target)).item(), 4)
    0.3576
    """
    bce_weight = _check_bce_weight(bce_weight)
    check_reduction(reduction)
    maps = binary_maps(logits, target, ignore_index)
    pixel = F.binary_cross_entropy_with_logits(maps.logits, maps.target, reduction="none")
    bce = masked_sum(pixel, maps.valid) / valid_count(maps)  # mean over the labelled pixels
    wfm = weighted_fmeasure_loss(logits, target, beta2, smoothing, ignore_index, "none", terms)
    return reduce_images(bce_weight * bce + wfm.to(bce.dtype), maps.has_valid, reduction, maps.dtype)


class BCEWeightedFMeasureLoss(nn.Module):
    r"""Module form of :func:`bce_weighted_fmeasure_loss`; ``forward(logits, target, terms=None)``.

    Notes
    -----
    In the book: :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> from pixelweight.losses import BCEWeightedFMeasureLoss
    >>> BCEWeightedFMeasureLoss(bce_weight=0.5)
    BCEWeightedFMeasureLoss(bce_weight=0.5, beta2=1.0, smoothing=0.0, ignore_index=None, reduction='mean')
    """

    def __init__(
        self,
        bce_weight: float = 1.0,
        beta2: float = 1.0,
        smoothing: float = 0.0,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.bce_weight = _check_bce_weight(bce_weight)
        self.beta2 = _check_beta2(beta2)
        self.smoothing = _check_smoothing(smoothing)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor, terms: Optional[WFMTerms] = None) -> torch.Tensor:
        return bce_weighted_fmeasure_loss(logits, target, self.bce_weight, self.beta2, self.smoothing,
                                          self.ignore_index, self.reduction, terms)

    def extra_repr(self) -> str:
        return (f"bce_weight={self.bce_weight}, beta2={self.beta2}, smoothing={self.smoothing}, "
                f"ignore_index={self.ignore_index}, reduction={self.reduction!r}")
