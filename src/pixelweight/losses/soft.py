r"""Cross-entropy with class-probability (soft) targets.

For pixel :math:`i` with target probabilities :math:`q_{i,c}` and logits :math:`z_i`,

.. math::
    \mathrm{CE}_i = -\sum_c q_{i,c} \log p_{i,c}, \qquad
    p_{i,c} = \frac{e^{z_{i,c}}}{\sum_k e^{z_{i,k}}},

which is :math:`-\log p_{i,y_i}` for a one-hot :math:`q_i` (the class-index cross-entropy of
:func:`~pixelweight.losses.cross_entropy`). Its gradient :math:`\partial \mathrm{CE}_i / \partial z_{i,c}
= p_{i,c} \sum_k q_{i,k} - q_{i,c}` is :math:`p_{i,c} - q_{i,c}` for a distribution and exactly
0 for :math:`q_i = 0`: a pixel whose probabilities are all 0 (the one-hot vector of an
ignored pixel) contributes nothing, and it does not count in the mean's denominator.

Soft targets arise from weak annotation: the fraction of each block's pixels in each class
(:func:`pixelweight.spectral.block_fractions`), label smoothing, or a teacher's probabilities.
The same loss takes ``(N, H, W)`` class indices, and is then the library's
:func:`~pixelweight.losses.cross_entropy` exactly, so one registered loss (``"soft-ce"``)
trains on majority labels and on fractions alike.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_ignore_index, check_reduction, check_tensor, reduce_masked, require
from ._common import is_binary_logits
from .ce import cross_entropy
from .registry import LossContext, register_loss

__all__ = ["SoftCrossEntropyLoss", "soft_cross_entropy"]

#: Tolerance of the check that each pixel's probabilities sum to 1 (or to 0), at least the
#: target dtype's machine epsilon: float16 fractions rounded to the nearest float16 sum to 1
#: within 2^-11 (half an ulp, relative to each term, so to their sum), bfloat16 ones within
#: 2^-8 (bfloat16's eps is 2^-7).
SUM_TOLERANCE = 1e-3


def _check_logits(logits: torch.Tensor) -> None:
    if is_binary_logits(logits):
        raise ValueError(
            f"soft_cross_entropy takes multiclass logits (N, C, H, W) with C >= 2, got binary logits "
            f"{tuple(logits.shape)}; give a foreground map as two channels (background, foreground)"
        )
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape (N, C, H, W), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor, got dtype {logits.dtype}")


def _sum_tolerance(dtype: torch.dtype) -> float:
    return max(SUM_TOLERANCE, torch.finfo(dtype).eps)


def _probability_message(q: torch.Tensor, sums: torch.Tensor, tol: float) -> str:
    """The ``ValueError`` text of a failed probability check (only built on failure)."""
    if not bool(torch.isfinite(q).all()):
        return "target probabilities must be finite, found NaN or inf"
    if bool((q < 0).any()):
        return f"target probabilities must be non-negative, found the value {float(q.min()):.6g}"
    bad = sums[((sums - 1).abs() > tol) & (sums != 0)]
    return (f"each pixel's target probabilities must sum to 1 (within {tol:g}), or to 0 for a pixel that "
            f"does not count, found a sum of {float(bad[0]):.6g} ({bad.numel()} such pixels)")


def _checked_probabilities(logits: torch.Tensor, target: torch.Tensor) -> tuple:
    r"""Validate a probability target; return it in the logits' dtype and the mask of the pixels
    that do not count, :math:`s_i = 0` with :math:`s_i = \sum_c q_{i,c}`.

    :math:`s_i` is what the mean needs anyway (a pixel counts iff :math:`s_i > 0`); the sum
    check (:math:`s_i = 0` or :math:`|s_i - 1| \le` tol) is one ``aminmax`` over that
    ``(N, H, W)`` map, :math:`C` times smaller than the target, and also catches a NaN or inf
    in the target. Non-negativity needs one ``amin`` over the target, the only pass that is
    validation alone (as the label-range ``aminmax`` of the class-index losses). Both end in one
    :func:`~pixelweight._validation.require`: a device-side assertion on CUDA, no host
    synchronisation.
    """
    if not target.is_floating_point():
        raise ValueError(
            f"a 4-D target holds class probabilities and must be floating, got dtype {target.dtype}; "
            "give class indices as an (N, H, W) tensor"
        )
    if target.shape != logits.shape:
        raise ValueError(
            f"a probability target must have the logits' shape (N, C, H, W) = {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    sums = target.sum(dim=1, dtype=torch.float64 if target.dtype == torch.float64 else torch.float32)  # s_i
    zero = sums == 0  # pixels that do not count
    if target.numel():
        tol = _sum_tolerance(target.dtype)
        lo, hi = torch.where(zero, torch.ones((), dtype=sums.dtype, device=sums.device), sums).aminmax()
        ok = (lo >= 1 - tol) & (hi <= 1 + tol) & (target.amin() >= 0)  # False for NaN
        require(ok, lambda: _probability_message(target, sums, tol),
                "pixelweight: target probabilities must be finite, non-negative and sum to 1 or 0 per pixel")
    return target.to(logits.dtype), zero


def soft_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Pixel-wise cross-entropy from logits against class probabilities or class indices.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` with ``C >= 2`` (softmax). Binary ``(N, 1, H, W)`` logits are refused
        (a ``ValueError``): a soft binary target would have no all-zero vector to mark an
        ignored pixel; give two channels instead.
    target : torch.Tensor
        Either ``(N, C, H, W)`` floating class probabilities :math:`q_{i,c} \ge 0` whose sum
        over :math:`c` is 1 (within ``max(1e-3, eps)`` of the target's dtype), or 0 for a pixel
        that does not count; or ``(N, H, W)`` integer class indices, for which the result is
        :func:`~pixelweight.losses.cross_entropy`'s exactly. A probability target is cast to
        the logits' dtype.
    ignore_index : int, optional
        Class-index targets: the value of pixels that do not count. Probability targets mark
        such a pixel with all-zero probabilities instead; ``ignore_index`` does not apply.
    reduction : {"mean", "sum", "none"}
        ``"none"``: the per-pixel map :math:`\mathrm{CE}_i`, ``(N, H, W)``, 0 at pixels that
        do not count. ``"sum"``: :math:`\sum_i \mathrm{CE}_i`. ``"mean"``: that sum divided by
        the number of pixels that count, :math:`|\{i : \sum_c q_{i,c} > 0\}|`.

    Returns
    -------
    torch.Tensor
        A scalar for ``"mean"``/``"sum"``, else the per-pixel map, in the logits' dtype (sums
        accumulate in float32 at least). When no pixel counts the mean is a zero that keeps
        the graph, never NaN. A NaN logit at a pixel that counts gives NaN.

    Notes
    -----
    Validation of a probability target: finite, non-negative, and each pixel's sum 1 or 0 (a
    ``ValueError`` on the CPU; on CUDA a device-side assertion, no host synchronisation). It
    costs two reductions over the target: the per-pixel sums, which the mean's denominator
    needs anyway (and which catch NaN and inf), and one ``amin``. The loss itself is
    PyTorch's ``F.cross_entropy(logits, q, reduction="none")``, the speed users compare with;
    as there, a logit of :math:`-\infty` gives NaN (:math:`0 \cdot (-\infty)`), and so does a
    NaN logit at a pixel that does not count (class-index targets give 0 there).

    In the book: training on soft block labels,
    :doc:`Chapter 5: block-wise weak annotation </notebooks/05_spectral/03_weak_annotation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import cross_entropy, soft_cross_entropy
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)                        # (N, C, H, W)
    >>> probs = torch.softmax(torch.randn(2, 3, 4, 4), dim=1)   # (N, C, H, W), sums to 1
    >>> round(soft_cross_entropy(logits, probs).item(), 4)
    1.4709
    >>> probs[0, :, 0, 0] = 0                                   # this pixel does not count
    >>> bool(soft_cross_entropy(logits, probs, reduction="none")[0, 0, 0] == 0)
    True
    >>> target = torch.randint(0, 3, (2, 4, 4))                 # class indices: plain CE
    >>> bool(soft_cross_entropy(logits, target) == cross_entropy(logits, target))
    True
    >>> onehot = torch.nn.functional.one_hot(target, 3).permute(0, 3, 1, 2).float()
    >>> torch.allclose(soft_cross_entropy(logits, onehot), cross_entropy(logits, target))
    True
    """
    check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    check_tensor(logits, "logits")
    check_tensor(target, "target")
    _check_logits(logits)
    if target.ndim == 3:  # class indices (N, H, W): the library's cross-entropy, exactly
        return cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)
    if target.ndim != 4:
        raise ValueError(f"target must be (N, H, W) class indices or (N, C, H, W) class probabilities "
                         f"to match logits {tuple(logits.shape)}, got shape {tuple(target.shape)}")
    q, zero = _checked_probabilities(logits, target)
    # CE_i = -sum_c q_ic log p_ic (PyTorch's kernel for probability targets); 0 where q_i = 0
    ce = F.cross_entropy(logits, q, reduction="none")
    if reduction == "none":
        return ce
    # |V| = |{i : sum_c q_ic > 0}|, a 0-dim tensor (no host sync)
    count = zero.numel() - torch.count_nonzero(zero) if reduction == "mean" else ce.numel()
    return reduce_masked(ce, count, reduction)  # sum_i CE_i, or that / max(|V|, 1), in float32 at least


class SoftCrossEntropyLoss(nn.Module):
    r"""Module form of :func:`soft_cross_entropy`: class probabilities ``(N, C, H, W)`` or
    class indices ``(N, H, W)`` as targets.

    Notes
    -----
    In the book: training on soft block labels,
    :doc:`Chapter 5: block-wise weak annotation </notebooks/05_spectral/03_weak_annotation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import SoftCrossEntropyLoss
    >>> from pixelweight.spectral import block_fractions
    >>> _ = torch.manual_seed(0)
    >>> labels = torch.randint(0, 3, (2, 8, 8))
    >>> labels[:, :4] = 255                                     # the top blocks: no valid pixel
    >>> soft = block_fractions(labels, 4, num_classes=3, ignore_index=255, restore=True)
    >>> soft.shape                                              # each 4 x 4 block's class fractions
    torch.Size([2, 3, 8, 8])
    >>> soft[0, :, 0, 0]                                        # all 0: the pixel does not count
    tensor([0., 0., 0.])
    >>> loss_fn = SoftCrossEntropyLoss(ignore_index=255)
    >>> loss_fn
    SoftCrossEntropyLoss(ignore_index=255, reduction='mean')
    >>> logits = torch.randn(2, 3, 8, 8)
    >>> round(loss_fn(logits, soft).item(), 4)                  # mean over the 64 pixels that count
    1.3372
    >>> round(loss_fn(logits, labels).item(), 4)                # the dense labels: plain CE
    1.4758
    """

    def __init__(self, ignore_index: Optional[int] = None, reduction: str = "mean") -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return soft_cross_entropy(logits, target, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"


def _soft_ce(ctx: LossContext) -> nn.Module:
    if ctx.num_classes < 2:
        raise ValueError("loss 'soft-ce' takes multiclass logits (num_classes >= 2), got num_classes=1; "
                         "give a foreground map as two channels")
    return SoftCrossEntropyLoss(ignore_index=ctx.ignore_index)


register_loss("soft-ce", _soft_ce,
              help="cross-entropy against class probabilities (N, C, H, W), e.g. block fractions, "
                   "or class indices (then plain CE)")
