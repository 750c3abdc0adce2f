"""Metrics: confusion-matrix segmentation metrics, foreground-map metrics (exact Weighted
F-measure and friends) and classification metrics, each with a batch accumulator that
the training harness uses (exact under ``torch.distributed``)."""

from .classification import ClassificationMetrics
from .foreground import (
    NUM_THRESHOLDS,
    ForegroundMetrics,
    WFMTerms,
    dataset_max_fmeasure,
    fmeasure_curve,
    mae,
    max_fmeasure,
    s_measure,
    weighted_fmeasure,
    wfm_gt_terms,
)
from .segmentation import SegmentationMetrics, boundary_mask, confusion_matrix, metrics_from_confusion

__all__ = [
    "ClassificationMetrics",
    "ForegroundMetrics",
    "NUM_THRESHOLDS",
    "SegmentationMetrics",
    "WFMTerms",
    "boundary_mask",
    "confusion_matrix",
    "dataset_max_fmeasure",
    "fmeasure_curve",
    "mae",
    "max_fmeasure",
    "metrics_from_confusion",
    "s_measure",
    "weighted_fmeasure",
    "wfm_gt_terms",
]
