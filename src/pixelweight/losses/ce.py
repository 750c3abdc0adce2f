r"""Pixel-wise cross-entropy, plain and class-weighted.

For pixel :math:`i` with label :math:`y_i` and logits :math:`z_i`,

.. math::
    \mathrm{CE}_i = -\log p_{i,y_i}, \qquad
    p_{i,c} = \frac{e^{z_{i,c}}}{\sum_k e^{z_{i,k}}}

(multiclass, softmax), or :math:`\mathrm{CE}_i = -\log\sigma(z_i)` for a foreground
pixel and :math:`-\log\sigma(-z_i)` for a background pixel (binary, sigmoid).

A class weight :math:`w_c` scales the pixels of class :math:`c`. Two normalisations of
the weighted mean exist, and they differ in scale:

.. math::
    \underbrace{\frac{1}{|V|}\sum_{i\in V} w_{y_i}\,\mathrm{CE}_i}_{\texttt{normalize="pixels"}}
    \qquad\text{vs.}\qquad
    \underbrace{\frac{\sum_{i\in V} w_{y_i}\,\mathrm{CE}_i}{\sum_{i\in V} w_{y_i}}}_{\texttt{normalize="weights"}}

over the valid (non-ignored) pixels :math:`V`. PyTorch's ``F.cross_entropy(weight=...)``
uses the second. This library's default is the first: the weights then act as
multipliers of the per-pixel loss, and the recall loss of Tian et al. (2022) is exactly
this loss with batch-dependent weights (their reference code does not divide by
:math:`\sum w`). With no weight the two coincide.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._validation import accumulation_dtype, check_choice, check_ignore_index, check_reduction
from ._common import WeightLike, ce_total, check_class_weight, class_weight_for, pixel_ce, pixel_weight, prepare

NORMALIZATIONS = ("pixels", "weights")


def _check_normalize(normalize) -> str:
    return check_choice(normalize, "normalize", NORMALIZATIONS)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    weight: WeightLike = None,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
    normalize: str = "pixels",
) -> torch.Tensor:
    r"""Pixel-wise (class-weighted) cross-entropy from logits.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` with ``C >= 2`` (softmax cross-entropy) or ``(N, 1, H, W)``
        (binary: sigmoid cross-entropy, i.e. BCE with logits).
    target : torch.Tensor
        Integer ``(N, H, W)`` class indices in ``[0, C)`` for multiclass; ``(N, H, W)`` or
        ``(N, 1, H, W)`` with values in {0, 1} (integer, bool or float) for binary.
        Pixels equal to ``ignore_index`` are left out.
    weight : torch.Tensor or sequence of float, optional
        Per-class weights :math:`w_c \ge 0`: ``C`` values for multiclass, 2 values
        ``(w_background, w_foreground)`` for binary. ``weight=(1, k)`` in the binary
        case equals ``F.binary_cross_entropy_with_logits(pos_weight=k)``. Cast to the
        logits' dtype and device. See :func:`pixelweight.losses.class_weights`.
    ignore_index : int, optional
        Target value of pixels that do not count.
    reduction : {"mean", "sum", "none"}
        ``"none"``: the per-pixel map :math:`w_{y_i}\mathrm{CE}_i` with the target's
        layout, ``(N, H, W)`` for multiclass and ``(N, 1, H, W)`` for binary, 0 at
        ignored pixels. ``"sum"``: :math:`\sum_{i\in V} w_{y_i}\mathrm{CE}_i`.
        ``"mean"``: that sum divided as ``normalize`` says.
    normalize : {"pixels", "weights"}
        Denominator of ``"mean"``: the number of valid pixels :math:`|V|` (default) or
        the weight total :math:`\sum_{i\in V} w_{y_i}` (PyTorch's ``weight=`` semantics).
        Ignored by the other reductions.

    Returns
    -------
    torch.Tensor
        A scalar for ``"mean"``/``"sum"``, else the per-pixel map. When no pixel is valid
        (or, for ``normalize="weights"``, all valid pixels have weight 0) the mean is a
        zero that keeps the graph, never NaN.

    Notes
    -----
    In the book: the baseline every chapter compares with,
    :doc:`Chapter 0: cross-entropy on a long tail </notebooks/00_testbed/02_ce_baseline>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import cross_entropy
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)         # (N, C, H, W)
    >>> target = torch.randint(0, 3, (2, 4, 4))  # (N, H, W) class indices
    >>> round(cross_entropy(logits, target).item(), 4)
    1.7511
    >>> w = torch.tensor([1.0, 2.0, 0.5])
    >>> # divided by |V|
    >>> round(cross_entropy(logits, target, weight=w).item(), 4)
    2.3145
    >>> # by sum w
    >>> round(cross_entropy(logits, target, weight=w, normalize="weights").item(), 4)
    1.8065
    >>> cross_entropy(logits, target, reduction="none").shape
    torch.Size([2, 4, 4])
    """
    check_reduction(reduction)
    _check_normalize(normalize)
    ignore_index = check_ignore_index(ignore_index)
    w = check_class_weight(weight, "weight")
    p = prepare(logits, target, ignore_index, kernel_checks_labels=True)
    w = class_weight_for(w, p, "weight")
    return _weighted_ce(p, w, reduction, normalize)


def _weighted_ce(p, w: Optional[torch.Tensor], reduction: str, normalize: str) -> torch.Tensor:
    r"""The loss once inputs are validated; shared with subclasses of the CE idea (e.g. recall loss).

    Unweighted multiclass, the common case, is PyTorch's fused kernel alone:
    ``F.cross_entropy(reduction="none", ignore_index=...)`` writes :math:`\mathrm{CE}_i`
    and 0 at ignored pixels, and the sum runs in float32 at least. Sum and count in the
    logits' own dtype would overflow in float16 beyond 65,504 pixels (PyTorch's own
    ``reduction="mean"`` returns NaN there).
    """
    if w is None:
        return ce_total(p, reduction)  # sum_V CE_i, CE_i = -log p_{i, y_i}; or / |V|
    if p.binary:
        wce = pixel_weight(w, p) * pixel_ce(p)  # w_{y_i} CE_i
    else:  # the fused kernel weighs by w_{y_i} itself and keeps 0 at ignored pixels
        wce = p.cross_entropy("none", weight=w)  # (the kernel's label error becomes the library's ValueError)
    if reduction != "mean" or normalize == "pixels":
        return p.reduce(p.zero_ignored(wce), reduction)  # sum_V w_{y_i} CE_i, or that / |V|
    acc = accumulation_dtype(wce.dtype)
    total = p.zero_ignored(wce).sum(dtype=acc)  # sum_V w_{y_i} CE_i
    wsum = p.zero_ignored(pixel_weight(w, p)).sum(dtype=acc)  # sum_V w_{y_i}
    # An all-ignored batch or all-zero weights: the numerator is 0 too; divide by 1 to
    # return a zero that keeps the graph instead of PyTorch's NaN.
    return (total / torch.where(wsum > 0, wsum, torch.ones_like(wsum))).to(wce.dtype)


class CrossEntropyLoss(nn.Module):
    r"""Module form of :func:`cross_entropy`; the class weights are a buffer.

    Named like :class:`torch.nn.CrossEntropyLoss` but with this library's conventions:
    binary ``(N, 1, H, W)`` logits are accepted, ``ignore_index`` defaults to ``None``,
    and the weighted mean divides by the number of valid pixels unless
    ``normalize="weights"``.

    Notes
    -----
    In the book: :doc:`Chapter 0: cross-entropy on a long tail </notebooks/00_testbed/02_ce_baseline>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import CrossEntropyLoss
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> # the first row of every image is ignored
    >>> target[:, 0] = 255
    >>> loss_fn = CrossEntropyLoss(weight=[1.0, 2.0, 0.5], ignore_index=255)
    >>> loss_fn
    CrossEntropyLoss(ignore_index=255, reduction='mean', normalize='pixels')
    >>> round(loss_fn(logits, target).item(), 4)
    2.5307
    """

    def __init__(
        self,
        weight: WeightLike = None,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
        normalize: str = "pixels",
    ) -> None:
        super().__init__()
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.normalize = _check_normalize(normalize)
        w = check_class_weight(weight, "weight")
        self.register_buffer("weight", None if w is None else w.clone())

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return cross_entropy(logits, target, self.weight, self.ignore_index, self.reduction, self.normalize)

    def extra_repr(self) -> str:
        return f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, normalize={self.normalize!r}"
