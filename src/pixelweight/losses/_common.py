"""Pieces shared by the pixel losses: input routing, log p_t, per-class weights.

Every loss in this package takes logits and a target in one of two layouts:

* multiclass: logits ``(N, C, H, W)`` with ``C >= 2`` and a long target ``(N, H, W)``;
  probabilities are ``softmax`` over ``C``;
* binary: logits ``(N, 1, H, W)`` and a target ``(N, H, W)`` or ``(N, 1, H, W)`` with
  values in {0, 1}; the foreground probability is ``sigmoid`` of the logit.

The layout is chosen by the number of logit channels (1 means binary). A binary loss
sees two classes, background 0 and foreground 1, so per-class weights have length 2.
"""

from __future__ import annotations

from numbers import Real
from typing import NamedTuple, Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._validation import (
    check_binary_inputs,
    check_ignore_index,
    check_multiclass_inputs,
    valid_mask,
)

WeightLike = Union[torch.Tensor, Sequence[float], None]


class _Prepared(NamedTuple):
    logits: torch.Tensor  # (N, C, H, W) or (N, 1, H, W)
    target: torch.Tensor  # long, (N, H, W) or (N, 1, H, W); ignored pixels hold ignore_index
    safe_target: torch.Tensor  # like target with ignored pixels set to class 0 (safe to index with)
    valid: torch.Tensor  # bool, same shape as target
    binary: bool
    num_classes: int  # C for multiclass, 2 for binary


def is_binary_logits(logits) -> bool:
    """True when ``logits`` is a 4-D tensor with a single channel (the binary layout)."""
    return isinstance(logits, torch.Tensor) and logits.ndim == 4 and logits.shape[1] == 1


def prepare(logits, target, ignore_index) -> _Prepared:
    """Validate the inputs of a loss and route them to the binary or multiclass layout."""
    ignore_index = check_ignore_index(ignore_index)
    binary = is_binary_logits(logits)
    if binary:
        logits, target = check_binary_inputs(logits, target, ignore_index)
    else:
        logits, target = check_multiclass_inputs(logits, target, ignore_index)
    valid = valid_mask(target, ignore_index)
    # Ignored pixels may hold any value (255, -1, ...): give them class 0 so that gathers
    # and one-hots stay in range; their contribution is masked out by `valid` afterwards.
    safe_target = target.masked_fill(~valid, 0)
    num_classes = 2 if binary else logits.shape[1]
    return _Prepared(logits, target, safe_target, valid, binary, num_classes)


def target_log_prob(p: _Prepared) -> torch.Tensor:
    r"""Per-pixel log-probability of the target class, :math:`\log p_{t,i}`.

    Multiclass: :math:`\log p_{t,i} = z_{i,y_i} - \log\sum_c e^{z_{i,c}}` (log-softmax),
    taken from :func:`torch.nn.functional.cross_entropy` with ``reduction="none"``.
    Binary: :math:`\log p_{t,i} = \log\sigma(z_i)` if :math:`y_i = 1` else
    :math:`\log\sigma(-z_i)`, taken from ``binary_cross_entropy_with_logits``. Both are
    the numerically stable log-sum-exp forms. Values at ignored pixels are meaningless
    (computed for class 0) and must be masked by the caller.
    """
    if p.binary:
        return -F.binary_cross_entropy_with_logits(
            p.logits, p.safe_target.to(p.logits.dtype), reduction="none"
        )
    return -F.cross_entropy(p.logits, p.safe_target, reduction="none")


def check_class_weight(weight: WeightLike, name: str) -> Optional[torch.Tensor]:
    """Validate a per-class weight vector given as a tensor or a sequence of numbers.

    Returns ``None`` for ``None``, else a 1-D floating tensor of finite, non-negative
    values (integer tensors, e.g. counts, are converted to the default float dtype).
    """
    if weight is None:
        return None
    if isinstance(weight, torch.Tensor):
        w = weight
    elif isinstance(weight, (list, tuple)) and all(
        isinstance(v, Real) and not isinstance(v, bool) for v in weight
    ):
        w = torch.tensor([float(v) for v in weight])
    else:
        raise TypeError(
            f"{name} must be a 1-D torch.Tensor or a list/tuple of numbers, got {type(weight).__name__}"
        )
    if w.is_complex() or w.dtype == torch.bool:
        raise ValueError(f"{name} must be a real tensor, got dtype {w.dtype}")
    if not w.is_floating_point():
        w = w.to(torch.get_default_dtype())
    if w.ndim != 1 or w.numel() == 0:
        raise ValueError(f"{name} must be a non-empty 1-D vector of per-class values, got shape {tuple(w.shape)}")
    if not bool(torch.isfinite(w).all()):
        raise ValueError(f"{name} must be finite, got {w.tolist()}")
    if bool((w < 0).any()):
        raise ValueError(f"{name} must be non-negative, got {w.tolist()}")
    return w


def class_weight_for(weight: Optional[torch.Tensor], p: _Prepared, name: str) -> Optional[torch.Tensor]:
    """Check a validated weight vector against the number of classes and move it to the logits.

    A multiclass loss needs ``C`` values; a binary loss needs 2, ``(background,
    foreground)``. The vector is cast to the logits' dtype and device so that a module's
    buffer or a float32 vector works with float64 logits.
    """
    if weight is None:
        return None
    if weight.numel() != p.num_classes:
        what = "2 values (background, foreground) for binary logits" if p.binary else f"C = {p.num_classes} values"
        raise ValueError(
            f"{name} must have {what} of shape {tuple(p.logits.shape)}, got {weight.numel()} values"
        )
    return weight.to(dtype=p.logits.dtype, device=p.logits.device)


def pixel_weight(weight: torch.Tensor, p: _Prepared) -> torch.Tensor:
    """Per-pixel weight :math:`w_{y_i}` of the target class (class 0 at ignored pixels)."""
    return weight[p.safe_target]
