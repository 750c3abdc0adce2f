"""Pixel losses: a functional form and an ``nn.Module`` for each, logits in.

Baselines: cross-entropy (plain and class-weighted), focal loss and soft Dice, plus the
class-weight estimators they share. Conventions: multiclass logits ``(N, C, H, W)`` with
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

__all__ = [
    "CrossEntropyLoss",
    "FocalLoss",
    "LossMaxPooling",
    "RecallLoss",
    "RecallTerms",
    "SoftDiceLoss",
    "class_counts",
    "class_weights",
    "cross_entropy",
    "focal_loss",
    "lmp_bounds",
    "lmp_pool",
    "lmp_weights",
    "lmp_weights_reference",
    "loss_max_pooling",
    "recall_counts",
    "recall_loss",
    "recall_terms",
    "recall_weights",
    "soft_dice_loss",
]
