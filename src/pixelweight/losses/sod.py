r"""The losses of salient-object-detection practice: FLoss, F3Net's structure loss, BASNet's hybrid loss.

The peers of the Weighted F-measure loss (``pixelweight.losses.wfm``): what salient
object detection trains with today, each transcribed from its authors' public code and
tested against an independent transcription. All three take binary logits
``(N, 1, H, W)`` with :math:`p = \sigma(z)` and a target :math:`g` in {0, 1}, and return one
value per image (``reduction="none"``: shape ``(N,)``; ``"mean"`` over images, which for
images of one size is the references' batch mean).

* :func:`~pixelweight.losses.soft_fmeasure_loss` (FLoss; Zhao, Gao, Wang, Cheng, *Optimizing the F-measure for
  Threshold-free Salient Object Detection*, ICCV 2019; code ``zeakey/iccv2019-fmeasure``,
  ``pytorch/floss.py``): the F-measure with soft counts, :math:`\beta^2 = 0.3`, not spatial.
* :func:`~pixelweight.losses.structure_loss` (F3Net; Wei, Wang, Huang, *F3Net: Fusion, Feedback and Focus for
  Salient Object Detection*, AAAI 2020; code ``weijun88/F3Net``, ``src/train.py``, copied by
  PraNet and many others): BCE and IoU weighted by the distance to the mask's edges, in
  the form the official code computes (``form="published"``) or the one it meant
  (``form="intended"``).
* :func:`~pixelweight.losses.hybrid_loss` (BASNet; Qin, Zhang, Huang, Gao, Dehghan, Jagersand, *BASNet:
  Boundary-Aware Salient Object Detection*, CVPR 2019; code ``xuebinqin/BASNet``,
  ``basnet_train.py``, ``pytorch_ssim/``, ``pytorch_iou/``): BCE + (1 - SSIM) + IoU.

**Ignored pixels** (``ignore_index``) are outside the image for every term: their logit is
never read and their label counts as 0, exactly like the zero padding beyond the border
that SSIM's window and F3Net's average pooling already use; every sum and mean runs over
the labelled pixels. Without ignored pixels the losses are the references' exactly. An
image without a labelled pixel has loss 0 and is left out of the ``"mean"``.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_float, check_ignore_index, check_reduction
from ._foreground import binary_maps, masked_sum, reduce_images, valid_count
from ._separable import SymmetricBlur, gaussian_half_kernel

__all__ = [
    "HybridLoss",
    "SoftFMeasureLoss",
    "StructureLoss",
    "hybrid_loss",
    "soft_fmeasure_loss",
    "structure_loss",
]

#: FLoss's constant in the denominator (``EPS = 1e-10`` in ``floss.py``).
FLOSS_EPS = 1e-10
#: F3Net's edge weight: ``1 + 5 |avg_pool2d(mask, 31, stride 1, padding 15) - mask|``.
STRUCTURE_POOL = 31
STRUCTURE_GAIN = 5.0
#: The two forms of F3Net's structure loss.
STRUCTURE_FORMS = ("published", "intended")
#: BASNet's SSIM (pytorch-ssim): 11x11 Gaussian window, sigma 1.5, zero padding, C1 = 0.01², C2 = 0.03².
SSIM_WINDOW = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2
_SSIM_HALF_KERNEL = gaussian_half_kernel(SSIM_WINDOW, SSIM_SIGMA)


def _pixel_bce(z: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""Per-pixel :math:`-g\log\sigma(z) - (1-g)\log(1-\sigma(z))`, the stable log-sum-exp form."""
    return F.binary_cross_entropy_with_logits(z, g, reduction="none")


# ------------------------------------------------------------------------------- FLoss


def _check_beta2(beta2) -> float:
    return check_float(beta2, "beta2", minimum=0.0)


def soft_fmeasure_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    beta2: float = 0.3,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""FLoss: one minus the F-measure of soft counts, per image (Zhao et al., ICCV 2019).

    .. math::
        \mathcal{L}_n = 1 - \frac{(1 + \beta^2)\sum_i p_i g_i}{\beta^2 \sum_i g_i + \sum_i p_i + \varepsilon},
        \qquad \varepsilon = 10^{-10},

    which is :math:`1 - F_\beta` with :math:`TP = \sum p g`, :math:`FP = \sum p(1-g)`,
    :math:`FN = \sum (1-p) g` (the denominator is :math:`(1+\beta^2)TP + \beta^2 FN + FP`).
    As the official ``floss.py`` (whose ``beta`` *is* :math:`\beta^2`, default 0.3, the
    value of salient-object evaluation). Not spatial: every pixel counts alike. An image
    without foreground has :math:`TP = 0`: loss 1 and zero gradient (FLoss cannot teach an
    empty prediction). The paper's log variant (``log_like``) is not offered.

    Parameters
    ----------
    logits : torch.Tensor
        Binary logits ``(N, 1, H, W)``.
    target : torch.Tensor
        ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1}, or ``ignore_index``.
    beta2 : float
        :math:`\beta^2 \ge 0`.
    ignore_index : int, optional
        Target value of pixels left out of every sum.
    reduction : {"mean", "sum", "none"}
        ``"none"``: ``(N,)``; ``"mean"``: over the images with a labelled pixel.

    Returns
    -------
    torch.Tensor
        Scalar or ``(N,)``, in the logits' dtype (computed in float32 at least).

    Notes
    -----
    In the book: a peer of the Weighted F-measure loss in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import soft_fmeasure_loss
    >>> target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> target[:, 1:3, 1:3] = 1
    >>> logits = torch.where(target == 1, 3.0, -3.0).unsqueeze(1)
    >>> round(soft_fmeasure_loss(logits, target).item(), 4)
    0.1122
    """
    beta2 = _check_beta2(beta2)
    check_reduction(reduction)
    m = binary_maps(logits, target, ignore_index)
    p = torch.sigmoid(m.logits)
    tp = (p * m.target).flatten(1).sum(1)  # Σ p g (g = 0 at ignored pixels)
    h = beta2 * m.target.flatten(1).sum(1) + masked_sum(p, m.valid)  # β² Σ g + Σ p
    loss = 1 - (1 + beta2) * tp / (h + FLOSS_EPS)
    return reduce_images(loss, m.has_valid, reduction, m.dtype)


class SoftFMeasureLoss(nn.Module):
    """Module form of :func:`soft_fmeasure_loss` (FLoss).

    Notes
    -----
    In the book: a peer of the Weighted F-measure loss in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> from pixelweight.losses import SoftFMeasureLoss
    >>> SoftFMeasureLoss()
    SoftFMeasureLoss(beta2=0.3, ignore_index=None, reduction='mean')
    """

    def __init__(self, beta2: float = 0.3, ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        self.beta2 = _check_beta2(beta2)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_fmeasure_loss(logits, target, self.beta2, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"beta2={self.beta2}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"


# ------------------------------------------------------------------- F3Net structure loss


def _box_sum(x: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Sums over a centred window of odd ``size`` along ``dim`` with zero padding: a cumulative
    sum and one difference (exact for integer tensors)."""
    r = size // 2
    n = x.shape[dim]
    pad = [0, 0] * (x.ndim - 1 - (dim % x.ndim)) + [r + 1, r]  # a leading zero, then the padding
    cs = F.pad(x, pad).cumsum(dim)  # cs[j] = sum of the padded x before position j (shifted by one)
    return cs.narrow(dim, size, n) - cs.narrow(dim, 0, n)


def structure_weights(target: torch.Tensor) -> torch.Tensor:
    r"""F3Net's pixel weights :math:`w = 1 + 5\,|\mathrm{avgpool}_{31}(g) - g|` of a 0/1 map.

    ``avg_pool2d(g, 31, stride=1, padding=15)`` with PyTorch's default
    ``count_include_pad=True``: the 31x31 mean with zero padding, divided by 961 at the
    border too. :math:`w` is 1 far from the mask's edges and up to 6 on them (hard pixels).
    ``target`` is a floating ``(N, 1, H, W)`` 0/1 map; no gradient. The window sums are
    counted exactly in integers (two cumulative sums), so the result is ``avg_pool2d``'s
    to the last bit at a small fraction of its cost (961 reads per pixel).
    """
    counts = _box_sum(_box_sum(target.to(torch.int32), STRUCTURE_POOL, -2), STRUCTURE_POOL, -1)
    pooled = counts.to(target.dtype) / (STRUCTURE_POOL * STRUCTURE_POOL)
    return (pooled - target).abs_().mul_(STRUCTURE_GAIN).add_(1)


def structure_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    form: str = "published",
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""F3Net's structure loss: BCE plus a weighted IoU, per image (Wei et al., AAAI 2020).

    With the edge weights :math:`w_i = 1 + 5|\bar g_i - g_i|` (``structure_weights``,
    :math:`\bar g` the 31x31 mean) and :math:`p = \sigma(z)`,

    .. math::
        \mathrm{wIoU}_n = 1 - \frac{\sum_i w_i p_i g_i + 1}{\sum_i w_i (p_i + g_i) - \sum_i w_i p_i g_i + 1},
        \qquad \mathcal{L}_n = \mathrm{BCE}_n + \mathrm{wIoU}_n,

    where the BCE term depends on ``form``:

    * ``"published"`` (default, what F3Net trained with): the official code calls
      ``F.binary_cross_entropy_with_logits(pred, mask, reduce='none')``; ``reduce`` is
      PyTorch's deprecated boolean, a non-empty string is true, so the call returns the
      **unweighted mean** BCE, and ``(weit * wbce).sum() / weit.sum()`` leaves it
      unchanged: :math:`\mathrm{BCE}_n = \frac{1}{|V_n|}\sum_i \mathrm{bce}_i`. Only the IoU
      term is position-weighted. (The official scalar is the batch mean; for images of one
      size the mean over images of this per-image mean is the same number.)
    * ``"intended"`` (the copies that write ``reduction='none'``):
      :math:`\mathrm{BCE}_n = \sum_i w_i \mathrm{bce}_i / \sum_i w_i`.

    Parameters
    ----------
    logits : torch.Tensor
        Binary logits ``(N, 1, H, W)``.
    target : torch.Tensor
        ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1}, or ``ignore_index``.
    form : {"published", "intended"}
        Unweighted (official code) or weighted BCE term.
    ignore_index : int, optional
        Target value of pixels outside the image (label 0 for the pooling, left out of
        every sum).
    reduction : {"mean", "sum", "none"}
        ``"none"``: ``(N,)``; ``"mean"``: over the images with a labelled pixel.

    Returns
    -------
    torch.Tensor
        Scalar or ``(N,)``, in the logits' dtype (computed in float32 at least).

    Notes
    -----
    In the book: a peer of the Weighted F-measure loss in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import structure_loss
    >>> target = torch.zeros(1, 8, 8, dtype=torch.long)
    >>> target[:, 2:6, 2:6] = 1
    >>> logits = torch.where(target == 1, 2.0, -2.0).unsqueeze(1)
    >>> logits[0, 0, 2, 2] = -2.0                  # a missed corner, on the mask's edge
    >>> round(structure_loss(logits, target).item(), 4)
    0.374
    >>> # the edge weights count the missed pixel more in the BCE too
    >>> round(structure_loss(logits, target, form="intended").item(), 4)
    0.4235
    """
    check_choice(form, "form", STRUCTURE_FORMS)
    check_reduction(reduction)
    m = binary_maps(logits, target, ignore_index)
    weight = structure_weights(m.target)  # w, from the labels only
    if m.valid is not None:
        weight = torch.where(m.valid, weight, torch.zeros((), dtype=weight.dtype, device=weight.device))
    bce = _pixel_bce(m.logits, m.target)
    if form == "published":
        bce_n = masked_sum(bce, m.valid) / valid_count(m)  # the unweighted mean
    else:
        bce_n = (bce * weight).flatten(1).sum(1) / weight.flatten(1).sum(1).clamp_min(1)  # Σ w = 0: no pixel
    p = torch.sigmoid(m.logits)
    inter = (weight * p * m.target).flatten(1).sum(1)  # Σ w p g
    union = (weight * (p + m.target)).flatten(1).sum(1)  # Σ w (p + g)
    wiou = 1 - (inter + 1) / (union - inter + 1)
    return reduce_images(bce_n + wiou, m.has_valid, reduction, m.dtype)


class StructureLoss(nn.Module):
    """Module form of :func:`structure_loss` (F3Net).

    Notes
    -----
    In the book: a peer of the Weighted F-measure loss in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> from pixelweight.losses import StructureLoss
    >>> StructureLoss(form="intended")
    StructureLoss(form='intended', ignore_index=None, reduction='mean')
    """

    def __init__(self, form: str = "published", ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        self.form = check_choice(form, "form", STRUCTURE_FORMS)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return structure_loss(logits, target, self.form, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"form={self.form!r}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"


# --------------------------------------------------------------------- BASNet hybrid loss


def ssim_map(p: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""BASNet's (pytorch-ssim's) SSIM map of two ``(N, 1, H, W)`` maps, differentiable in ``p``.

    Local statistics under the 11x11 Gaussian window :math:`K` (:math:`\sigma = 1.5`, zero
    padding): :math:`\mu_p = K*p`, :math:`\sigma_p^2 = K*p^2 - \mu_p^2`,
    :math:`\sigma_{pg} = K*(pg) - \mu_p\mu_g` (likewise for :math:`g`), and

    .. math:: \mathrm{SSIM} = \frac{(2\mu_p\mu_g + C_1)(2\sigma_{pg} + C_2)}
              {(\mu_p^2 + \mu_g^2 + C_1)(\sigma_p^2 + \sigma_g^2 + C_2)},
              \quad C_1 = 0.01^2,\ C_2 = 0.03^2.

    ``g`` must be a 0/1 map (:math:`g^2 = g`). The four blurs run as one separable pass
    over a stacked ``(N, 4, H, W)`` tensor.
    """
    stats = SymmetricBlur.apply(torch.cat([p, p * p, p * g, g], dim=1), _SSIM_HALF_KERNEL)
    mu_p, e_pp, e_pg, mu_g = stats.unbind(1)
    e_gg = mu_g  # K*(g²) = K*g for a 0/1 map
    mu_pp, mu_gg, mu_pg = mu_p * mu_p, mu_g * mu_g, mu_p * mu_g
    var_p, var_g, cov = e_pp - mu_pp, e_gg - mu_gg, e_pg - mu_pg
    ssim = ((2 * mu_pg + SSIM_C1) * (2 * cov + SSIM_C2)) / ((mu_pp + mu_gg + SSIM_C1) * (var_p + var_g + SSIM_C2))
    return ssim.unsqueeze(1)


def hybrid_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""BASNet's hybrid loss: BCE + (1 - SSIM) + IoU, per image (Qin et al., CVPR 2019).

    .. math::
        \mathcal{L}_n = \frac{1}{|V_n|}\sum_i \mathrm{bce}_i
          + \Big(1 - \frac{1}{|V_n|}\sum_i \mathrm{SSIM}_i\Big)
          + \Big(1 - \frac{\sum_i p_i g_i}{\sum_i g_i + \sum_i p_i - \sum_i p_i g_i}\Big),

    with :math:`p = \sigma(z)`, the SSIM map of ``ssim_map`` (11x11 Gaussian window,
    :math:`\sigma = 1.5`, zero padding, :math:`C_1 = 0.01^2`, :math:`C_2 = 0.03^2`) and the IoU
    without smoothing, as ``pytorch_iou``. One deliberate difference: BASNet applies
    ``nn.BCELoss`` to sigmoid outputs, here the BCE is computed from the logits (the stable
    form); the two agree wherever :math:`\sigma(z)` is not rounded to 0 or 1 (where
    ``nn.BCELoss`` clamps the log at -100). The IoU's 0/0 (no foreground and a prediction
    that is exactly 0 everywhere) is taken as a perfect overlap, loss term 0, where the
    reference gives NaN. The reference's ``size_average`` means over the batch equal the
    mean over images of these per-image terms for images of one size.

    Parameters
    ----------
    logits : torch.Tensor
        Binary logits ``(N, 1, H, W)``.
    target : torch.Tensor
        ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1}, or ``ignore_index``.
    ignore_index : int, optional
        Target value of pixels outside the image (label 0 and prediction 0 for the SSIM
        window, like its zero padding; left out of every sum and mean).
    reduction : {"mean", "sum", "none"}
        ``"none"``: ``(N,)``; ``"mean"``: over the images with a labelled pixel.

    Returns
    -------
    torch.Tensor
        Scalar or ``(N,)``, in the logits' dtype (computed in float32 at least).

    Notes
    -----
    In the book: a peer of the Weighted F-measure loss in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import hybrid_loss
    >>> target = torch.zeros(1, 8, 8, dtype=torch.long)
    >>> target[:, 2:6, 2:6] = 1
    >>> logits = torch.where(target == 1, 2.0, -2.0).unsqueeze(1)
    >>> round(hybrid_loss(logits, target).item(), 4)
    0.5809
    """
    check_reduction(reduction)
    m = binary_maps(logits, target, ignore_index)
    count = valid_count(m)
    bce = masked_sum(_pixel_bce(m.logits, m.target), m.valid) / count
    p = torch.sigmoid(m.logits)
    if m.valid is not None:
        p = torch.where(m.valid, p, torch.zeros((), dtype=p.dtype, device=p.device))  # like the zero padding
    ssim = masked_sum(ssim_map(p, m.target), m.valid) / count
    inter = (p * m.target).flatten(1).sum(1)  # Σ p g
    union = m.target.flatten(1).sum(1) + p.flatten(1).sum(1) - inter  # Σ g + Σ p - Σ p g
    empty = union == 0
    iou = torch.where(empty, torch.zeros_like(union), 1 - inter / torch.where(empty, torch.ones_like(union), union))
    return reduce_images(bce + (1 - ssim) + iou, m.has_valid, reduction, m.dtype)


class HybridLoss(nn.Module):
    """Module form of :func:`hybrid_loss` (BASNet).

    Notes
    -----
    In the book: a peer of the Weighted F-measure loss in
    :doc:`The Weighted F-measure: experiments </notebooks/01_wfm/02_experiments>`.

    Examples
    --------
    >>> from pixelweight.losses import HybridLoss
    >>> HybridLoss(ignore_index=255)
    HybridLoss(ignore_index=255, reduction='mean')
    """

    def __init__(self, ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return hybrid_loss(logits, target, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
