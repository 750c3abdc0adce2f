r"""Cross-entropy of class logits ``(N, C)``: the image-classification loss of the
saliency-sampler chapter, registered as ``"classification-ce"`` so that a chapter's arm can
name it (the pixel losses of this package take ``(N, C, H, W)`` logits)."""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .._validation import check_choice, check_ignore_index, check_tensor
from ._common import ce_total, prepare
from .registry import register_loss

__all__ = ["ClassificationCrossEntropy", "classification_cross_entropy"]

_REDUCTIONS = ("none", "mean", "sum")


def classification_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
                                 ignore_index: Optional[int] = None) -> torch.Tensor:
    r"""Cross-entropy :math:`-\log \mathrm{softmax}(z_i)_{y_i}` of ``(N, C)`` class logits against
    ``(N,)`` labels: ``torch.nn.functional.cross_entropy`` with its inputs checked, computed by the
    pixel losses' checked path (:func:`pixelweight.losses.cross_entropy` on a 1 x 1 image per
    sample), so it keeps their contract: the result has the logits' dtype (float16/bfloat16
    accumulate in float32), an all-ignored batch gives 0 (never NaN), and the label check costs
    no host-device synchronisation on a GPU.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C)`` floating logits, :math:`C \ge 2`.
    target : torch.Tensor
        ``(N,)`` integer labels in :math:`[0, C)` (or ``ignore_index``).
    reduction : {"none", "mean", "sum"}, default "mean"
        ``"mean"`` averages over the samples that are not ignored.
    ignore_index : int, optional
        Label of samples left out.

    Returns
    -------
    torch.Tensor
        A scalar, or ``(N,)`` for ``reduction="none"`` (0 for an ignored sample); ``"mean"``
        over no valid sample is a zero that keeps the graph. NaN logits give NaN.

    Notes
    -----
    In the book: :doc:`Learning to zoom: classification </notebooks/03_zoom/02_classification>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import classification_cross_entropy
    >>> logits = torch.tensor([[2.0, 0.0], [0.0, 0.0]])
    >>> round(classification_cross_entropy(logits, torch.tensor([0, 1])).item(), 4)
    0.41
    """
    check_tensor(logits, "logits")
    check_tensor(target, "target")
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    if logits.ndim != 2 or logits.shape[1] < 2:
        raise ValueError(f"logits must have shape (N, C) with C >= 2, got {tuple(logits.shape)} "
                         "(use pixelweight.losses.cross_entropy for (N, C, H, W) logits)")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    if target.shape != logits.shape[:1]:
        raise ValueError(f"target must have shape (N,) = ({logits.shape[0]},), got {tuple(target.shape)}")
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer labels, got dtype {target.dtype}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    # The pixel losses' checked path on a 1 x 1 "image" per sample: the label range is a
    # device-side check (no host sync on CUDA) or left to the CPU kernel; an all-ignored batch
    # gives a zero that keeps the graph; float16/bfloat16 sum in float32 and return their dtype.
    p = prepare(logits[:, :, None, None], target[:, None, None], ignore_index, kernel_checks_labels=True)
    out = ce_total(p, reduction)
    return out.reshape(-1) if reduction == "none" else out


class ClassificationCrossEntropy(nn.Module):
    """Module form of :func:`classification_cross_entropy`.

    Notes
    -----
    In the book: :doc:`Learning to zoom: classification </notebooks/03_zoom/02_classification>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import ClassificationCrossEntropy
    >>> loss_fn = ClassificationCrossEntropy()
    >>> round(loss_fn(torch.tensor([[2.0, 0.0], [0.0, 0.0]]), torch.tensor([0, 1])).item(), 4)
    0.41
    """

    def __init__(self, reduction: str = "mean", ignore_index: Optional[int] = None) -> None:
        super().__init__()
        self.reduction = check_choice(reduction, "reduction", _REDUCTIONS)
        self.ignore_index = check_ignore_index(ignore_index)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return classification_cross_entropy(logits, target, self.reduction, self.ignore_index)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"


register_loss("classification-ce", lambda ctx: ClassificationCrossEntropy(ignore_index=ctx.ignore_index),
              help="cross-entropy of (N, C) class logits against (N,) labels (image classification)")
