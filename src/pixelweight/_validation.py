"""Input validation shared by every public function of :mod:`pixelweight`.

Every public function validates its inputs and raises :class:`ValueError` (or
:class:`TypeError` for a wrong Python type) that names the offending shape, dtype or
value. These helpers keep the messages uniform across losses, metrics and data.

**What validation costs, and where it syncs.** A loss is called once per training step,
so its checks must neither cost a pass over the data that the loss does not need nor
stop a GPU's queue:

* Shapes, dtypes, devices and Python arguments are checked on the host: free.
* Label ranges are checked with one masked ``aminmax`` over the (N, H, W) labels, never
  with boolean-mask indexing (a ``nonzero``, a copy and a host sync); the mask of valid
  pixels it needs is the one the loss uses anyway. In a training step the labels are
  read again and again after PyTorch's kernels have evicted them from the caches, so even
  this costs 2-6 % of a cross-entropy forward and backward pass on a CPU. Hence a loss
  that runs PyTorch's cross-entropy kernel over the labels anyway (CE, focal, recall, LMP)
  leaves the check to that kernel on the CPU, where it raises for every label outside
  ``[0, C)`` that is not its ``ignore_index``, and turns the kernel's error into the
  library's ``ValueError`` (:class:`pixelweight.losses._common._Prepared`). Without an
  ``ignore_index`` the masked ``aminmax`` still runs (PyTorch's default ``-100`` would be
  ignored silently); on CUDA it always runs, as a device-side check (next point).
* A value check ends in a 0-dim boolean tensor ``ok`` and :func:`require`. On the CPU,
  reading it costs nothing extra and a bad value raises :class:`ValueError` with the
  offending values. On CUDA, reading it would be a host-device synchronisation per call,
  so by default the check is a device-side assertion, :func:`torch._assert_async`: the
  GPU keeps its queue, and a bad value stops the process at the next synchronisation
  with a ``device-side assert`` naming the check (the same way PyTorch's own
  ``F.cross_entropy`` fails on CUDA for a label out of range), after which the CUDA
  context is unusable. That is the trade-off: full speed and no silent wrong result, but
  the error is terse and fatal. To debug bad inputs on a GPU, turn on synchronous checks
  (``PIXELWEIGHT_SYNC_CHECKS=1`` in the environment, :func:`set_sync_checks` or the
  :func:`sync_checks` context manager): every check then reads its result on the host
  and raises the same :class:`ValueError` as on the CPU, at one synchronisation per check.
  Other accelerators (MPS, XPU) always use synchronous checks.
* Non-finite logits are not an input error: they give a non-finite loss (NaN in, NaN out),
  which a training loop detects on the value it reads anyway.

The reductions accumulate in float32 at least (float64 for float64 inputs) and return
the input's dtype: a float16 map of more than 65,504 pixels has a sum and a count that
float16 cannot hold, but its mean is an ordinary float16 number.
"""

from __future__ import annotations

import contextlib
import math
import os
from numbers import Integral, Real
from typing import Callable, Iterator, Optional, Sequence, Tuple, Union

import torch

REDUCTIONS = ("none", "mean", "sum")

_SYNC_CHECKS = [os.environ.get("PIXELWEIGHT_SYNC_CHECKS", "").strip().lower() not in ("", "0", "false", "no", "off")]


def set_sync_checks(enabled: bool) -> bool:
    """Read every value check's result on the host, also on CUDA (see the module notes).

    ``True``: a bad value raises :class:`ValueError` on every device, at the cost of a
    host-device synchronisation per check on a GPU. ``False`` (the default unless the
    environment variable ``PIXELWEIGHT_SYNC_CHECKS`` is set): device-side assertions on
    CUDA. Returns the previous setting.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"enabled must be a bool, got {type(enabled).__name__} ({enabled!r})")
    previous, _SYNC_CHECKS[0] = _SYNC_CHECKS[0], enabled
    return previous


@contextlib.contextmanager
def sync_checks(enabled: bool = True) -> Iterator[None]:
    """Context manager form of :func:`set_sync_checks`, restoring the previous setting."""
    previous = set_sync_checks(enabled)
    try:
        yield
    finally:
        set_sync_checks(previous)


def _asynchronous(device: torch.device) -> bool:
    """Whether checks on ``device`` are device-side assertions rather than host reads."""
    return device.type == "cuda" and not _SYNC_CHECKS[0]


def require(ok: torch.Tensor, message: Callable[[], str], device_message: str) -> None:
    """Raise ``ValueError(message())`` unless the 0-dim boolean tensor ``ok`` is true.

    On the CPU (and with synchronous checks) the result is read on the host; ``message``
    is called only on failure, so it may look at the data to name the offending values.
    On CUDA it is ``torch._assert_async(ok, device_message)``: no synchronisation, and a
    failure is a device-side assertion (see the module notes). Under ``torch.compile`` it
    is that assertion on every device, so that the check stays in the graph.
    """
    if _asynchronous(ok.device) or torch.compiler.is_compiling():
        torch._assert_async(ok, device_message)
        return
    if not bool(ok):
        raise ValueError(message())


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


def _masked_labels(labels: torch.Tensor, num_classes: int, ignore_index: Optional[int],
                   valid: Optional[torch.Tensor]) -> torch.Tensor:
    """``labels`` with the ignored ones replaced by 0, or ``labels`` itself when no replacement
    can change the range test (no ``ignore_index``, or one inside ``[0, num_classes)``)."""
    if ignore_index is None or 0 <= ignore_index < num_classes:
        return labels
    if valid is None:
        valid = labels != ignore_index
    return torch.where(valid, labels, torch.zeros((), dtype=labels.dtype, device=labels.device))


def _label_range_message(labels, name, num_classes, ignore_index) -> str:
    lo, hi = (int(v) for v in _masked_labels(labels, num_classes, ignore_index, None).aminmax())
    return (
        f"{name} values must lie in [0, {num_classes - 1}]"
        + (f" or equal ignore_index={ignore_index}" if ignore_index is not None else "")
        + f", found values in [{lo}, {hi}]"
    )


def _range_ok(masked: torch.Tensor, num_classes: int) -> torch.Tensor:
    if masked.numel() == 0:
        return torch.ones((), dtype=torch.bool, device=masked.device)
    lo, hi = masked.aminmax()
    return (lo >= 0) & (hi < num_classes)


def label_range_ok(
    labels: torch.Tensor, num_classes: int, ignore_index: Optional[int] = None,
    valid: Optional[torch.Tensor] = None,
) -> torch.Tensor:
    """0-dim boolean tensor: every label that is not ``ignore_index`` lies in ``[0, num_classes)``.

    One masked ``aminmax`` pass over the labels (plus a ``where`` when ``ignore_index`` lies
    outside the class range); ``valid`` (``labels != ignore_index``), when the caller has it,
    is reused. No boolean indexing, no host synchronisation.
    """
    return _range_ok(_masked_labels(labels, num_classes, ignore_index, valid), num_classes)


def check_label_range(
    labels: torch.Tensor, name: str, num_classes: int, ignore_index: Optional[int] = None,
    valid: Optional[torch.Tensor] = None, *, asynchronous: bool = False,
) -> None:
    """Every label that is not ``ignore_index`` lies in ``[0, num_classes)``, else ``ValueError``.

    The test is :func:`label_range_ok`. By default the result is read on the host (a sync
    on a GPU); ``asynchronous=True`` makes it a :func:`require` check, a device-side
    assertion on CUDA (what the losses use once per call).
    """
    _check_masked_range(labels, _masked_labels(labels, num_classes, ignore_index, valid), name, num_classes,
                        ignore_index, asynchronous)


def _check_masked_range(labels, masked, name, num_classes, ignore_index, asynchronous) -> None:
    ok = _range_ok(masked, num_classes)
    message = lambda: _label_range_message(labels, name, num_classes, ignore_index)  # noqa: E731
    if asynchronous:
        require(ok, message, f"pixelweight: {name} values must lie in [0, {num_classes - 1}] or equal ignore_index")
    elif not bool(ok):
        raise ValueError(message())


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


def checked_multiclass(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None, check_range: bool = True
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """:func:`check_multiclass_inputs` that also returns what it computed on the way: the
    mask ``target != ignore_index`` (``None`` without ``ignore_index``: every pixel counts)
    and the labels with ignored pixels set to class 0 (``None`` if it did not need them).
    The label range is a :func:`require` check (a device-side assertion on CUDA);
    ``check_range=False`` leaves it to the caller (and returns ``None, None``)."""
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
    if not check_range:
        return logits, target, None, None
    num_classes = logits.shape[1]
    valid = None if ignore_index is None else target != ignore_index
    masked = _masked_labels(target, num_classes, ignore_index, valid)
    _check_masked_range(target, masked, "target", num_classes, ignore_index, True)
    safe = target if valid is None else masked if masked is not target else None
    return logits, target, valid, safe


def check_multiclass_inputs(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate multiclass segmentation inputs.

    ``logits``: floating (N, C, H, W) with C >= 2. ``target``: integer (N, H, W) with
    values in ``[0, C)`` or equal to ``ignore_index``. Returns ``(logits, target)`` with
    ``target`` as ``torch.long`` on the logits' device. One masked ``aminmax`` over the
    labels; on CUDA the range test is a device-side assertion (see the module notes).
    """
    logits, target, _, _ = checked_multiclass(logits, target, ignore_index)
    return logits, target


def checked_binary(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """:func:`check_binary_inputs` that also returns the mask and the safe labels (see
    :func:`checked_multiclass`)."""
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
        binary = (target == 0) | (target == 1)
        if ignore_index is not None:
            binary |= target == ignore_index
        require(binary.all(), lambda: "a floating binary target must hold only 0.0 and 1.0 (or ignore_index)",
                "pixelweight: a floating binary target must hold only 0.0 and 1.0 (or ignore_index)")
    target = target.long()
    valid = None if ignore_index is None else target != ignore_index

    def message() -> str:
        lo, hi = (int(v) for v in _masked_labels(target, 2, ignore_index, None).aminmax())
        return ("binary target values must be 0 or 1"
                + (f" or ignore_index={ignore_index}" if ignore_index is not None else "")
                + f", found values in [{lo}, {hi}]")

    masked = _masked_labels(target, 2, ignore_index, valid)
    require(_range_ok(masked, 2), message, "pixelweight: binary target values must be 0 or 1 or equal ignore_index")
    safe = target if valid is None else masked if masked is not target else None
    return logits, target, valid, safe


def check_binary_inputs(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate binary segmentation inputs.

    ``logits``: floating (N, 1, H, W). ``target``: (N, H, W) or (N, 1, H, W), integer,
    bool or float with values in {0, 1} (or ``ignore_index``). Returns
    ``(logits, target)`` with ``target`` as a long (N, 1, H, W) tensor.
    """
    logits, target, _, _ = checked_binary(logits, target, ignore_index)
    return logits, target


def valid_mask(target: torch.Tensor, ignore_index: Optional[int]) -> torch.Tensor:
    """Boolean mask of the pixels that count (``target != ignore_index``)."""
    if ignore_index is None:
        return torch.ones_like(target, dtype=torch.bool)
    return target != ignore_index


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a sum over pixels runs in: float64 for float64, float32 for everything else."""
    return torch.float64 if dtype == torch.float64 else torch.float32


Count = Union[int, torch.Tensor]


def reduce_masked(loss: torch.Tensor, count: Count, reduction: str) -> torch.Tensor:
    r"""Reduce a per-pixel loss map whose ignored pixels already hold 0.

    ``count`` is the number of valid pixels :math:`|V|` (an int or a 0-dim tensor).
    ``"sum"`` and ``"mean"`` accumulate in :func:`accumulation_dtype` and return the
    map's dtype; ``"mean"`` is :math:`\sum_i \ell_i / \max(|V|, 1)`, a zero that keeps the
    graph (never NaN) when no pixel is valid.
    """
    if reduction == "none":
        return loss
    acc = accumulation_dtype(loss.dtype)
    total = loss.sum(dtype=acc)
    if reduction == "mean":
        if isinstance(count, torch.Tensor):
            total = total / count.clamp_min(1).to(acc)
        else:
            total = total / max(int(count), 1)
    return total.to(loss.dtype)


def reduce_pixel_loss(loss: torch.Tensor, valid: Optional[torch.Tensor], reduction: str) -> torch.Tensor:
    """Reduce a per-pixel loss map over the valid pixels.

    ``"none"`` returns the map with ignored pixels set to 0; ``"sum"`` sums the valid
    pixels; ``"mean"`` divides that sum by the number of valid pixels and returns a
    zero that keeps the graph (no NaN) when no pixel is valid. ``valid=None`` means every
    pixel counts. Sums and counts run in float32 at least (:func:`reduce_masked`) and the
    result has the loss's dtype.
    """
    check_reduction(reduction)
    if valid is None:
        return reduce_masked(loss, loss.numel(), reduction)
    loss = torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    return reduce_masked(loss, torch.count_nonzero(valid), reduction)
