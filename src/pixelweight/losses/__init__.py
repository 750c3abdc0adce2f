"""Pixel losses: a functional form and an ``nn.Module`` for each, logits in.

Baselines: cross-entropy (plain and class-weighted), focal loss and soft Dice, plus the
class-weight estimators they share; the papers' recall loss and loss max-pooling; the
Weighted F-measure loss (the exact metric of Margolin et al. as a loss, Kolkin et al.,
ICCV 2017) and the salient-object-detection losses it is compared with: FLoss, F3Net's
structure loss and BASNet's hybrid loss (binary logits, one value per image). Every
loss is registered in :mod:`pixelweight.losses.registry` (:func:`build_loss`,
:func:`register_loss`), which is what ``pixelweight-train --loss`` offers. Conventions: multiclass logits ``(N, C, H, W)`` with
``(N, H, W)`` long targets; binary logits ``(N, 1, H, W)`` with ``(N, H, W)`` or
``(N, 1, H, W)`` targets in {0, 1}; ``ignore_index``; ``reduction`` in
``{"none", "mean", "sum"}``.
"""

from __future__ import annotations

from .ce import CrossEntropyLoss, cross_entropy
from .class_weights import class_counts, class_weights
from .dice import SoftDiceLoss, soft_dice_loss
from .focal import FocalLoss, focal_loss
from .lmp import LossMaxPooling, lmp_bounds, lmp_pool, lmp_weights, lmp_weights_reference, loss_max_pooling
from .recall import RecallLoss, RecallTerms, recall_counts, recall_loss, recall_terms, recall_weights
from .sod import HybridLoss, SoftFMeasureLoss, StructureLoss, hybrid_loss, soft_fmeasure_loss, structure_loss
from .wfm import WeightedFMeasureLoss, weighted_fmeasure_loss
from .wfm import BCEWeightedFMeasureLoss, bce_weighted_fmeasure_loss
from .registry import LossContext, LossOption, LossSpec, build_loss, loss_names, loss_spec, parse_loss_options, register_loss
from .classification import ClassificationCrossEntropy, classification_cross_entropy
from .soft import SoftCrossEntropyLoss, soft_cross_entropy

__all__ = [
    "ClassificationCrossEntropy",
    "CrossEntropyLoss",
    "FocalLoss",
    "LossContext",
    "LossMaxPooling",
    "LossOption",
    "LossSpec",
    "RecallLoss",
    "RecallTerms",
    "SoftDiceLoss",
    "class_counts",
    "build_loss",
    "class_weights",
    "classification_cross_entropy",
    "cross_entropy",
    "focal_loss",
    "lmp_bounds",
    "lmp_pool",
    "lmp_weights",
    "lmp_weights_reference",
    "loss_max_pooling",
    "loss_names",
    "loss_spec",
    "parse_loss_options",
    "recall_counts",
    "recall_loss",
    "recall_terms",
    "recall_weights",
    "register_loss",
    "soft_dice_loss",
    "HybridLoss",
    "SoftFMeasureLoss",
    "StructureLoss",
    "WeightedFMeasureLoss",
    "BCEWeightedFMeasureLoss",
    "bce_weighted_fmeasure_loss",
    "hybrid_loss",
    "soft_fmeasure_loss",
    "structure_loss",
    "weighted_fmeasure_loss",
    "SoftCrossEntropyLoss",
    "soft_cross_entropy",
]
