r"""Cross-entropy of class logits ``(N, C)``: the image-classification loss of the
saliency-sampler chapter, registered as ``"classification-ce"`` so that a chapter's arm can
name it (the pixel losses of this package take ``(N, C, H, W)`` logits)."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_tensor
from .registry import register_loss

__all__ = ["ClassificationCrossEntropy", "classification_cross_entropy"]

_REDUCTIONS = ("none", "mean", "sum")


def classification_cross_entropy(logits: torch.Tensor, target: torch.Tensor, reduction: str = "mean",
                                 ignore_index: Optional[int] = None) -> torch.Tensor:
    r"""Cross-entropy :math:`-\log \mathrm{softmax}(z_i)_{y_i}` of ``(N, C)`` class logits against
    ``(N,)`` labels: ``torch.nn.functional.cross_entropy`` with its inputs checked.

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
        A scalar, or ``(N,)`` for ``reduction="none"`` (0 for an ignored sample). NaN logits
        give NaN.

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
    if target.dtype.is_floating_point or target.dtype == torch.bool:
        raise ValueError(f"target must hold integer labels, got dtype {target.dtype}")
    if ignore_index is not None and (isinstance(ignore_index, bool) or not isinstance(ignore_index, int)):
        raise TypeError(f"ignore_index must be an int or None, got {ignore_index!r}")
    target = target.long()
    keep = target != ignore_index if ignore_index is not None else torch.ones_like(target, dtype=torch.bool)
    bad = keep & ((target < 0) | (target >= logits.shape[1]))
    if bool(bad.any()):
        raise ValueError(f"target labels must lie in [0, {logits.shape[1]}), got {target[bad][:5].tolist()}")
    return F.cross_entropy(logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits, target,
                           reduction=reduction, ignore_index=-100 if ignore_index is None else ignore_index)


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
        self.ignore_index = ignore_index

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return classification_cross_entropy(logits, target, self.reduction, self.ignore_index)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}, ignore_index={self.ignore_index}"


register_loss("classification-ce", lambda ctx: ClassificationCrossEntropy(ignore_index=ctx.ignore_index),
              help="cross-entropy of (N, C) class logits against (N,) labels (image classification)")
