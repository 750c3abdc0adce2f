"""Input validation shared by every public function of :mod:`pixelweight`.

Every public function validates its inputs and raises :class:`ValueError` (or
:class:`TypeError` for a wrong Python type) that names the offending shape, dtype or
value. These helpers keep the messages uniform across losses, metrics and data.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Optional, Sequence, Tuple

import torch

REDUCTIONS = ("none", "mean", "sum")


def check_choice(value, name: str, choices: Sequence[str]) -> str:
    """Return ``value`` if it is one of the strings ``choices``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a str, got {type(value).__name__} ({value!r})")
    if value not in choices:
        raise ValueError(f"{name} must be one of {tuple(choices)}, got {value!r}")
    return value


def check_reduction(reduction: str) -> str:
    """Return ``reduction`` if it is one of ``"none"``, ``"mean"``, ``"sum"``."""
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}")
    return reduction


def check_tensor(x, name: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


#: The range of ``torch.int64``, the dtype of label tensors: an ``ignore_index`` outside it
#: cannot be compared with a label (PyTorch raises an overflow error deep inside a loss).
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1


def check_int(value, name: str, minimum: Optional[int] = None) -> int:
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int, got {type(value).__name__} ({value!r})")
    if minimum is not None and value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value}")
    return int(value)


def check_float(
    value,
    name: str,
    minimum: Optional[float] = None,
    maximum: Optional[float] = None,
    min_inclusive: bool = True,
    max_inclusive: bool = True,
    allow_inf: bool = False,
) -> float:
    r"""Return ``value`` as a float after checking its type, finiteness and range.

    NaN is always rejected. ``+inf``/``-inf`` are rejected unless ``allow_inf=True``
    (for a parameter whose infinite value is a documented limit, e.g. loss max-pooling's
    :math:`p = \infty`): an infinite smoothing constant, focusing exponent, noise level
    or learning rate passes every range check yet turns the computation into NaN or
    silently into something else.
    """
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__} ({value!r})")
    value = float(value)
    if value != value:  # NaN
        raise ValueError(f"{name} must not be NaN")
    if math.isinf(value) and not allow_inf:
        raise ValueError(f"{name} must be finite, got {value}")
    if minimum is not None:
        bad = value < minimum if min_inclusive else value <= minimum
        if bad:
            op = ">=" if min_inclusive else ">"
            raise ValueError(f"{name} must be {op} {minimum}, got {value}")
    if maximum is not None:
        bad = value > maximum if max_inclusive else value >= maximum
        if bad:
            op = "<=" if max_inclusive else "<"
            raise ValueError(f"{name} must be {op} {maximum}, got {value}")
    return value


def check_int_range(value, name: str, minimum: int) -> Tuple[int, int]:
    """``value`` as an inclusive integer range ``(lo, hi)``: an int ``k`` means ``(k, k)``."""
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a (min, max) pair, got {value!r}")
        lo = check_int(value[0], f"{name}[0]", minimum)
        hi = check_int(value[1], f"{name}[1]", minimum)
        if lo > hi:
            raise ValueError(f"{name} must satisfy min <= max, got {value!r}")
        return lo, hi
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int or a (min, max) pair of ints, got {type(value).__name__} ({value!r})")
    k = check_int(value, name, minimum)
    return k, k


def check_label_range(
    labels: torch.Tensor, name: str, num_classes: int, ignore_index: Optional[int] = None
) -> None:
    """Every label that is not ``ignore_index`` lies in ``[0, num_classes)``."""
    valid = labels if ignore_index is None else labels[labels != ignore_index]
    if valid.numel() == 0:
        return
    lo, hi = int(valid.min()), int(valid.max())
    if lo < 0 or hi >= num_classes:
        raise ValueError(
            f"{name} values must lie in [0, {num_classes - 1}]"
            + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else "")
            + f", found values in [{lo}, {hi}]"
        )


def check_ignore_index(ignore_index) -> Optional[int]:
    """``None`` or an int that a label tensor (``torch.int64``) can hold."""
    if ignore_index is None:
        return None
    value = check_int(ignore_index, "ignore_index")
    if not INT64_MIN <= value <= INT64_MAX:
        raise ValueError(
            f"ignore_index must fit in int64 (the dtype of label tensors), got {value}; "
            "use a label value such as 255 or -100"
        )
    return value


def check_multiclass_inputs(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate multiclass segmentation inputs.

    ``logits``: floating (N, C, H, W) with C >= 2. ``target``: integer (N, H, W) with
    values in ``[0, C)`` or equal to ``ignore_index``. Returns ``(logits, target)`` with
    ``target`` as ``torch.long`` on the logits' device.
    """
    check_tensor(logits, "logits")
    check_tensor(target, "target")
    ignore_index = check_ignore_index(ignore_index)
    if logits.ndim != 4:
        raise ValueError(f"logits must have shape (N, C, H, W), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    if logits.shape[1] < 2:
        raise ValueError(
            f"multiclass logits need C >= 2 channels, got shape {tuple(logits.shape)}; "
            "use the binary form for a single foreground channel"
        )
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"target must be an integer tensor of class indices, got dtype {target.dtype}")
    if target.ndim != 3 or target.shape != (logits.shape[0],) + tuple(logits.shape[2:]):
        raise ValueError(
            f"target must have shape (N, H, W) = {(logits.shape[0],) + tuple(logits.shape[2:])} "
            f"to match logits {tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    target = target.long()
    check_label_range(target, "target", logits.shape[1], ignore_index)
    return logits, target


def check_binary_inputs(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate binary segmentation inputs.

    ``logits``: floating (N, 1, H, W). ``target``: (N, H, W) or (N, 1, H, W), integer,
    bool or float with values in {0, 1} (or ``ignore_index``). Returns
    ``(logits, target)`` with ``target`` as a long (N, 1, H, W) tensor.
    """
    check_tensor(logits, "logits")
    check_tensor(target, "target")
    ignore_index = check_ignore_index(ignore_index)
    if logits.ndim != 4 or logits.shape[1] != 1:
        raise ValueError(f"binary logits must have shape (N, 1, H, W), got {tuple(logits.shape)}")
    if not logits.is_floating_point():
        raise ValueError(f"logits must be a floating tensor, got dtype {logits.dtype}")
    if target.ndim == 3:
        target = target.unsqueeze(1)
    if target.shape != logits.shape:
        raise ValueError(
            f"binary target must have shape (N, H, W) or (N, 1, H, W) matching logits "
            f"{tuple(logits.shape)}, got {tuple(target.shape)}"
        )
    if target.device != logits.device:
        raise ValueError(f"target is on {target.device} but logits are on {logits.device}")
    if target.is_floating_point():
        if not torch.all((target == 0) | (target == 1) | ((target == ignore_index) if ignore_index is not None else False)):
            raise ValueError("a floating binary target must hold only 0.0 and 1.0 (or ignore_index)")
    target = target.long()
    valid = target if ignore_index is None else target[target != ignore_index]
    if valid.numel() > 0 and (int(valid.min()) < 0 or int(valid.max()) > 1):
        raise ValueError(
            "binary target values must be 0 or 1"
            + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
            + f", found values in [{int(valid.min())}, {int(valid.max())}]"
        )
    return logits, target


def valid_mask(target: torch.Tensor, ignore_index: Optional[int]) -> torch.Tensor:
    """Boolean mask of the pixels that count (``target != ignore_index``)."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def reduce_pixel_loss(loss: torch.Tensor, valid: torch.Tensor, reduction: str) -> torch.Tensor:
    """Reduce a per-pixel loss map over the valid pixels.

    ``"none"`` returns the map with ignored pixels set to 0; ``"sum"`` sums the valid
    pixels; ``"mean"`` divides that sum by the number of valid pixels and returns a
    zero that keeps the graph (no NaN) when no pixel is valid.
    """
    check_reduction(reduction)
    loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss
    total = loss.sum()
    if reduction == "sum":
        return total
    count = valid.sum()
    return total / count.clamp_min(1).to(loss.dtype)
