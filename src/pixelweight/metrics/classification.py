"""Classification metrics from a confusion matrix (the saliency-sampler chapter's task).

The same confusion-matrix machinery as segmentation, one sample per "pixel":
``accuracy`` (fraction of samples right), ``mean_recall`` (balanced accuracy, the mean of
the per-class recalls) and per-class recall and precision.
"""

from __future__ import annotations

from typing import Dict

import torch

from .._validation import check_tensor
from .segmentation import SegmentationMetrics, _check_finite_scores, _check_label_map

__all__ = ["ClassificationMetrics"]


class ClassificationMetrics(SegmentationMetrics):
    """Accumulate a confusion matrix of class logits ``(N, C)`` (or labels ``(N,)``)
    against integer targets ``(N,)``; exact under ``torch.distributed`` (summed over ranks).
    NaN or infinite logits raise :class:`ValueError`."""

    @torch.no_grad()
    def update(self, preds: torch.Tensor, target: torch.Tensor) -> None:
        check_tensor(preds, "preds")
        target = _check_label_map(target, "target")
        if target.ndim != 1:
            raise ValueError(f"target must have shape (N,), got {tuple(target.shape)}")
        if preds.is_floating_point():
            if preds.ndim != 2 or preds.shape != (target.shape[0], self.num_classes):
                raise ValueError(
                    f"logits must have shape (N, C) = ({target.shape[0]}, {self.num_classes}), got {tuple(preds.shape)}"
                )
            _check_finite_scores(preds)
            preds = preds.argmax(dim=1)
        # (N,) labels are handled as a 1 x N "image" by the segmentation accumulator
        super().update(preds.reshape(1, 1, -1), target.reshape(1, 1, -1))

    def compute(self, sync: bool = True) -> Dict[str, object]:
        out = super().compute(sync=sync)
        return {
            "accuracy": out["pixel_accuracy"],
            "mean_recall": out["mean_accuracy"],
            "mean_precision": out["mean_precision"],
            "recall": out["recall"],
            "precision": out["precision"],
            "class_names": out["class_names"],
            "confusion_matrix": out["confusion_matrix"],
        }
