r"""Soft Dice loss (Milletari, Navab, Ahmadi. *V-Net*, 3DV 2016; smoothed form).

The Dice coefficient of a prediction :math:`P` and a ground truth :math:`G` is
:math:`2|P\cap G| / (|P| + |G|)`. Replacing the hard prediction by probabilities
:math:`p_{i,c}` and the ground truth by its one-hot :math:`g_{i,c}` makes it
differentiable. Per image :math:`n` and class :math:`c`, over the valid pixels
:math:`V_n` of that image,

.. math::
    D_{n,c} = \frac{2\sum_{i\in V_n} p_{i,c}\,g_{i,c} + s}{\sum_{i\in V_n} p_{i,c}
              + \sum_{i\in V_n} g_{i,c} + s},
    \qquad \mathcal{L}_{n,c} = 1 - D_{n,c},

with a smoothing constant :math:`s \ge 0`. Ignored pixels are left out of all three sums.

Classes absent from an image. They are *kept*: with :math:`s > 0`,
:math:`D_{n,c} = s / (\sum_i p_{i,c} + s)`, so the loss pushes the probability mass of a
class that is not there towards 0 (a false-positive penalty) and is 0 once none is
predicted. With :math:`s = 0` an absent class has :math:`D_{n,c} = 0` (loss 1, no
gradient) whatever is predicted. A 0/0 (no valid pixel in the image, or :math:`s = 0`
with nothing predicted and nothing present) is defined as :math:`D = 1`, loss 0: never NaN.

Binary logits ``(N, 1, H, W)`` give the Dice of the foreground only
(:math:`p = \sigma(z)`, one class); for a two-class Dice use two-channel logits.

**Compared with MONAI** (``monai.losses.DiceLoss``; tested in ``tests/losses/test_dice.py``).
``DiceLoss(softmax=True, to_onehot_y=True, include_background=True, squared_pred=False,
jaccard=False, smooth_nr=s, smooth_dr=s, batch=not per_image, ignore_index=...)`` on the
labels as ``(N, 1, H, W)`` (binary logits: ``sigmoid=True`` and no one-hot) computes the
same :math:`\mathcal{L}_{n,c}`; its ``reduction="none"`` has shape ``(N, K, 1, 1)``
(``(K, 1, 1)`` for the batch Dice). The differences:

* MONAI's ``"mean"`` averages every image, those without a valid pixel too (their loss is
  0); here the mean runs over the images with at least one valid pixel;
* with :math:`s = 0`, a 0/0 is NaN in MONAI and :math:`D = 1` (loss 0) here;
* MONAI's defaults: ``smooth_nr = smooth_dr = 1e-5`` (here ``smooth = 1``) and no
  activation (probabilities in, unless ``softmax`` or ``sigmoid`` is set).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._validation import accumulation_dtype, check_float, check_ignore_index, check_reduction
from ._common import prepare


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    smooth: float = 1.0,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
    per_image: bool = True,
) -> torch.Tensor:
    r"""Soft Dice loss :math:`1 - D_{n,c}` from logits, per image and class.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` with ``C >= 2`` (softmax probabilities, one Dice per class) or
        ``(N, 1, H, W)`` (sigmoid, Dice of the foreground).
    target : torch.Tensor
        ``(N, H, W)`` class indices (multiclass); ``(N, H, W)`` or ``(N, 1, H, W)`` in
        {0, 1} (binary). Pixels equal to ``ignore_index`` are left out of every sum.
    smooth : float
        Smoothing :math:`s \ge 0` added to numerator and denominator.
    ignore_index : int, optional
        Target value of pixels that do not count.
    reduction : {"mean", "sum", "none"}
        ``"none"`` returns the loss per image and class, shape ``(N, K)`` with ``K = C``
        (multiclass) or 1 (binary); ``(K,)`` when ``per_image=False``. ``"mean"``
        averages over classes and over the images that have at least one valid pixel
        (an all-ignored batch gives a zero with a graph); ``"sum"`` sums all entries.
    per_image : bool
        ``True`` (default): one Dice per image and class. ``False``: the sums run over
        the whole batch, one Dice per class ("batch Dice").

    Returns
    -------
    torch.Tensor
        Scalar, or ``(N, K)`` / ``(K,)`` for ``reduction="none"``.

    Notes
    -----
    In the book: no chapter trains with soft Dice yet; it is one of the baselines of
    :doc:`Chapter 0 </notebooks/00_testbed/02_ce_baseline>`'s library, an alternative to the
    cross-entropy trained there.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import soft_dice_loss
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> round(soft_dice_loss(logits, target).item(), 4)
    0.6905
    >>> # (N, C): per image and class
    >>> soft_dice_loss(logits, target, reduction="none").shape
    torch.Size([2, 3])
    """
    smooth = check_float(smooth, "smooth", minimum=0.0)
    check_reduction(reduction)
    _check_bool(per_image, "per_image")
    ignore_index = check_ignore_index(ignore_index)
    p = prepare(logits, target, ignore_index)
    acc = accumulation_dtype(p.logits.dtype)
    if p.binary:
        intersection, prob_sum, label_sum, has_valid = _binary_sums(p, acc)
    else:
        intersection, prob_sum, label_sum, has_valid = _multiclass_sums(p, acc)
    if not per_image:
        intersection, prob_sum, label_sum = intersection.sum(0), prob_sum.sum(0), label_sum.sum(0)

    denominator = prob_sum + label_sum + smooth  # sum_i p + sum_i g + s
    numerator = 2.0 * intersection + smooth  # 2 sum_i p g + s
    # D = numerator / denominator, and D = 1 for an exact 0/0 (nothing present, nothing
    # predicted). A NaN denominator (NaN or inf logits) stays NaN: never a "perfect" Dice.
    undefined = denominator == 0
    one = torch.ones_like(denominator)
    dice = torch.where(undefined, one, numerator / torch.where(undefined, one, denominator))
    loss = 1.0 - dice  # (N, K) or (K,), in the accumulation dtype

    if reduction == "none":
        return loss.to(p.logits.dtype)
    if reduction == "sum":
        return loss.sum().to(p.logits.dtype)
    if not per_image:
        return loss.mean().to(p.logits.dtype)
    # mean over classes and over the images with at least one valid pixel
    count = has_valid.sum() * loss.shape[1]
    mean = (loss * has_valid.unsqueeze(1).to(loss.dtype)).sum() / count.clamp_min(1).to(loss.dtype)
    return mean.to(p.logits.dtype)


def _multiclass_sums(p, acc: torch.dtype):
    r"""Per image and class, :math:`\sum_{i\in V_n} p_{i,c} g_{i,c}`, :math:`\sum_{i\in V_n} p_{i,c}`,
    :math:`\sum_{i\in V_n} g_{i,c}` (each ``(N, C)`` in ``acc``) and whether image ``n`` has a
    valid pixel (``(N,)`` bool).

    No one-hot: :math:`\sum_i p_{i,c} g_{i,c}` adds each pixel's :math:`p_{i,y_i}` to its
    class (a gather and a ``scatter_add`` over the ``N H W`` labels), :math:`\sum_i g_{i,c}`
    counts labels the same way, and :math:`\sum_{i\in V_n} p_{i,c}` is a matrix product with the
    mask of valid pixels. The probabilities are computed in ``acc`` (float32 for float16 and
    bfloat16 logits), so that no sum runs in 16 bits.
    """
    n, c = p.logits.shape[:2]
    probs = torch.softmax(p.logits, dim=1, dtype=acc)  # p_{i,c}, (N, C, H, W)
    safe = p.safe_target.reshape(n, -1)  # y_i, class 0 at ignored pixels
    valid = p.valid_or_none
    if valid is None:
        bins, weights = safe, None
    else:
        valid = valid.reshape(n, -1)
        bins = torch.where(valid, safe, torch.full((), c, dtype=safe.dtype, device=safe.device))  # C: ignored
        weights = valid.to(acc).unsqueeze(2)  # (N, HW, 1)
    intersection, prob_sum = _ClassSums.apply(probs.reshape(n, c, -1), safe, bins, weights)
    ones = torch.ones((), dtype=acc, device=probs.device).expand(bins.shape)
    label_sum = torch.zeros(n, c + 1, dtype=acc, device=probs.device).scatter_add_(1, bins, ones)[:, :c]  # sum g
    has_valid = label_sum.sum(1) > 0  # every valid pixel has one label
    return intersection, prob_sum, label_sum, has_valid


class _ClassSums(torch.autograd.Function):
    r"""Per image and class, :math:`I_{n,c} = \sum_{i\in V_n} p_{i,c}\,[y_i = c]` and
    :math:`P_{n,c} = \sum_{i\in V_n} p_{i,c}` of probabilities ``(N, C, HW)``.

    Both are linear in :math:`p`, so the backward is written out:
    :math:`\partial L/\partial p_{i,c} = [i\in V]\,(\partial L/\partial P_{n,c} + [y_i = c]\,
    \partial L/\partial I_{n,c})`, one outer product written once and a scatter of one value per
    pixel into it, instead of autograd's zero-filled gather gradient, outer product and sum of
    the two (three more passes over a tensor the size of the logits). The backward does not
    depend on :math:`p`, so higher derivatives are exact too.
    """

    @staticmethod
    def forward(ctx, probs, safe, bins, weights):
        n, c, _ = probs.shape
        p_label = probs.gather(1, safe.unsqueeze(1)).squeeze(1)  # p_{i, y_i}
        inter = torch.zeros(n, c + 1, dtype=probs.dtype, device=probs.device).scatter_add_(1, bins, p_label)[:, :c]
        prob_sum = probs.sum(2) if weights is None else torch.bmm(probs, weights).squeeze(2)  # sum over V_n
        ctx.save_for_backward(safe, bins, weights)
        ctx.classes = c
        return inter, prob_sum

    @staticmethod
    def backward(ctx, grad_inter, grad_sum):
        safe, bins, weights = ctx.saved_tensors
        n, c = grad_sum.shape
        hw = safe.shape[1]
        if weights is None:
            grad = grad_sum.unsqueeze(2).expand(n, c, hw).contiguous()  # dL/dP_{n,c} at every pixel
        else:
            grad = torch.bmm(grad_sum.unsqueeze(2), weights.transpose(1, 2))  # dL/dP_{n,c} [i in V]
        # + dL/dI_{n,y_i} at (y_i, i) for valid pixels (the extra column C holds 0 for ignored ones)
        extended = torch.cat([grad_inter, torch.zeros_like(grad_inter[:, :1])], dim=1)
        grad = grad.scatter_add_(1, safe.unsqueeze(1), extended.gather(1, bins).unsqueeze(1))  # in place: fresh
        return grad, None, None, None


def _binary_sums(p, acc: torch.dtype):
    """The three sums of the foreground (each ``(N, 1)`` in ``acc``) and the images with a valid pixel."""
    n = p.logits.shape[0]
    probs = torch.sigmoid(p.logits.to(acc)).reshape(n, -1)  # p_i = sigma(z_i)
    labels = p.safe_target.reshape(n, -1).to(acc)  # g_i = y_i
    if p.has_ignore:
        valid = p.valid_or_none.reshape(n, -1)
        probs, labels = p.zero_ignored(probs.reshape(p.target.shape)).reshape(n, -1), labels * valid.to(acc)
        has_valid = valid.any(1)
    else:
        has_valid = torch.ones(n, dtype=torch.bool, device=probs.device)
    intersection = (probs * labels).sum(1, keepdim=True)
    return intersection, probs.sum(1, keepdim=True), labels.sum(1, keepdim=True), has_valid


class SoftDiceLoss(nn.Module):
    """Module form of :func:`soft_dice_loss`.

    Notes
    -----
    In the book: see :func:`soft_dice_loss`; the baseline it is an alternative to is in
    :doc:`Chapter 0: cross-entropy on a long tail </notebooks/00_testbed/02_ce_baseline>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import SoftDiceLoss
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> # "batch Dice"
    >>> round(SoftDiceLoss(per_image=False)(logits, target).item(), 4)
    0.7216
    """

    def __init__(
        self,
        smooth: float = 1.0,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
        per_image: bool = True,
    ) -> None:
        super().__init__()
        self.smooth = check_float(smooth, "smooth", minimum=0.0)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.per_image = _check_bool(per_image, "per_image")

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_dice_loss(logits, target, self.smooth, self.ignore_index, self.reduction, self.per_image)

    def extra_repr(self) -> str:
        return (
            f"smooth={self.smooth}, ignore_index={self.ignore_index}, "
            f"reduction={self.reduction!r}, per_image={self.per_image}"
        )
