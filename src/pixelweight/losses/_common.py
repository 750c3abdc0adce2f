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

import contextlib
from numbers import Real
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F

from .._validation import (
    Count,
    check_ignore_index,
    check_label_range,
    checked_binary,
    checked_multiclass,
    reduce_masked,
    require,
)

WeightLike = Union[torch.Tensor, Sequence[float], None]

#: PyTorch's default ``ignore_index``, passed to ``F.cross_entropy`` when nothing is
#: ignored: the labels are checked to lie in ``[0, C)``, so no pixel holds it.
_TORCH_IGNORE = -100
_UNSET = object()


class _Prepared:
    """Validated inputs of a loss and what every loss derives from them, each computed once.

    ``logits`` (N, C, H, W) or (N, 1, H, W); ``target`` long in the target layout, (N, H, W)
    or (N, 1, H, W), ignored pixels holding ``ignore_index``; ``binary``; ``num_classes``
    (C, or 2 for binary); ``ignore_index``. Computed on first use: ``valid`` (bool mask of
    the pixels that count), ``count`` (their number: an int without ``ignore_index``, else a
    0-dim tensor, so no host sync), ``safe_target`` (ignored pixels set to class 0, safe to
    index with).

    **Label range checked by the kernel.** On the CPU, PyTorch's cross-entropy kernel
    raises for every label outside ``[0, C)`` that is not its ``ignore_index``. A loss that
    runs that kernel over the labels anyway (``prepare(..., kernel_checks_labels=True)``,
    then :meth:`cross_entropy` or :meth:`ce_sum`) therefore skips the library's own pass
    over the labels, and a kernel error is turned into the library's ``ValueError``. On
    other devices, or without ``ignore_index`` (PyTorch's default ``-100`` would be
    silently ignored), the range is checked up front.
    """

    __slots__ = ("logits", "target", "binary", "num_classes", "ignore_index", "_valid", "_count", "_safe",
                 "_range_pending")

    def __init__(self, logits, target, valid, safe, binary, ignore_index, range_pending=False):
        self.logits = logits
        self.target = target
        self.binary = binary
        self.num_classes = 2 if binary else logits.shape[1]
        self.ignore_index = ignore_index
        self._valid = None if ignore_index is None else (_UNSET if valid is None else valid)
        self._count = None
        self._safe = target if ignore_index is None else (_UNSET if safe is None else safe)
        self._range_pending = range_pending

    @property
    def has_ignore(self) -> bool:
        return self.ignore_index is not None

    @property
    def valid_or_none(self) -> Optional[torch.Tensor]:
        """The mask of valid pixels, or ``None`` when every pixel counts (no allocation)."""
        if self._valid is _UNSET:
            self._valid = self.target != self.ignore_index
        return self._valid

    @property
    def valid(self) -> torch.Tensor:
        valid = self.valid_or_none
        return torch.ones_like(self.target, dtype=torch.bool) if valid is None else valid

    @property
    def count(self) -> Count:
        """Number of valid pixels |V|."""
        if self._count is None:
            valid = self.valid_or_none
            self._count = self.target.numel() if valid is None else torch.count_nonzero(valid)
        return self._count

    @property
    def safe_target(self) -> torch.Tensor:
        # Ignored pixels may hold any value (255, -1, ...): give them class 0 so that gathers
        # and one-hots stay in range; their contribution is masked out by `valid` afterwards.
        if self._safe is _UNSET:
            self.check_range()  # a gather with an out-of-range label would raise an IndexError
            self._safe = torch.where(self.valid_or_none, self.target,
                                     torch.zeros((), dtype=self.target.dtype, device=self.target.device))
        return self._safe

    @property
    def torch_ignore_index(self) -> int:
        """``ignore_index`` for ``F.cross_entropy`` / ``F.nll_loss``."""
        return _TORCH_IGNORE if self.ignore_index is None else self.ignore_index

    def check_range(self) -> None:
        """Run the label-range check now if it was left to the kernel (see the class notes)."""
        if self._range_pending:
            self._range_pending = False
            check_label_range(self.target, "target", self.num_classes, self.ignore_index, self.valid_or_none,
                              asynchronous=True)

    @contextlib.contextmanager
    def _kernel_checks_labels(self):
        try:
            yield
        except (IndexError, RuntimeError) as err:
            if self._range_pending:
                try:
                    self.check_range()
                except ValueError as bad:
                    raise bad from None
            raise

    def cross_entropy(self, reduction: str = "none", weight: Optional[torch.Tensor] = None) -> torch.Tensor:
        """``F.cross_entropy`` of the multiclass inputs (0 at ignored pixels for ``"none"``)."""
        with self._kernel_checks_labels():
            return F.cross_entropy(self.logits, self.target, weight=weight, ignore_index=self.torch_ignore_index,
                                   reduction=reduction)

    def ce_sum(self) -> torch.Tensor:
        r""":math:`\sum_{i\in V}\mathrm{CE}_i` with PyTorch's fused kernel; as a by-product it also
        counts :math:`|V|` (its "total weight"), which then needs no pass of its own."""
        log_probs = F.log_softmax(self.logits, dim=1)
        with self._kernel_checks_labels():
            total, total_weight = torch.ops.aten.nll_loss2d_forward(
                log_probs, self.target, None, 2, self.torch_ignore_index)  # 2: reduction "sum"
        if self._count is None and self.ignore_index is not None:
            self._count = total_weight  # the number of pixels whose label is not ignore_index
        return total

    def zero_ignored(self, loss: torch.Tensor) -> torch.Tensor:
        """``loss`` with 0 at the ignored pixels (a ``where``; nothing to do without ignore)."""
        valid = self.valid_or_none
        if valid is None:
            return loss
        return torch.where(valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))

    def reduce(self, loss: torch.Tensor, reduction: str) -> torch.Tensor:
        """Reduce a map that holds 0 at the ignored pixels (float32 accumulation at least)."""
        return reduce_masked(loss, self.count, reduction)


def is_binary_logits(logits) -> bool:
    """True when ``logits`` is a 4-D tensor with a single channel (the binary layout)."""
    return isinstance(logits, torch.Tensor) and logits.ndim == 4 and logits.shape[1] == 1


def prepare(logits, target, ignore_index, kernel_checks_labels: bool = False) -> _Prepared:
    """Validate the inputs of a loss and route them to the binary or multiclass layout.

    Costs at most one masked ``aminmax`` over the labels (see :mod:`pixelweight._validation`),
    none when the loss's own cross-entropy kernel checks them (``kernel_checks_labels``, see
    :class:`_Prepared`), and no host synchronisation on CUDA.
    """
    ignore_index = check_ignore_index(ignore_index)
    binary = is_binary_logits(logits)
    if binary:
        logits, target, valid, safe = checked_binary(logits, target, ignore_index)
        return _Prepared(logits, target, valid, safe, binary, ignore_index)
    defer = (kernel_checks_labels and ignore_index is not None and isinstance(logits, torch.Tensor)
             and logits.device.type == "cpu" and not torch.compiler.is_compiling())
    logits, target, valid, safe = checked_multiclass(logits, target, ignore_index, check_range=not defer)
    return _Prepared(logits, target, valid, safe, binary, ignore_index, range_pending=defer)


def pixel_ce(p: _Prepared) -> torch.Tensor:
    r"""Per-pixel cross-entropy :math:`\mathrm{CE}_i = -\log p_{t,i}`, **0 at ignored pixels**.

    Multiclass: :math:`-\log p_{t,i} = \log\sum_c e^{z_{i,c}} - z_{i,y_i}`, from
    ``F.cross_entropy(reduction="none", ignore_index=...)``, whose kernel writes the 0 at
    ignored pixels itself. Binary: :math:`-\log\sigma(z_i)` if :math:`y_i = 1` else
    :math:`-\log\sigma(-z_i)`, from ``binary_cross_entropy_with_logits``, then masked. Both
    are the numerically stable log-sum-exp forms.
    """
    if p.binary:
        bce = F.binary_cross_entropy_with_logits(p.logits, p.safe_target.to(p.logits.dtype), reduction="none")
        return p.zero_ignored(bce)
    return p.cross_entropy("none")


def pixel_log_pt(p: _Prepared) -> torch.Tensor:
    r"""Per-pixel log-probability of the target class, :math:`\log p_{t,i} = -\mathrm{CE}_i`, 0 at ignored pixels."""
    return -pixel_ce(p)


def target_log_prob(p: _Prepared) -> torch.Tensor:
    r"""Per-pixel :math:`\log p_{t,i}`, 0 at ignored pixels (alias of :func:`pixel_log_pt`)."""
    return pixel_log_pt(p)


def ce_total(p: _Prepared, reduction: str) -> torch.Tensor:
    r"""Plain (unweighted) CE reduced by ``reduction``: :math:`\sum_{i\in V}\mathrm{CE}_i`, its mean, or the map.

    Multiclass float32/float64 ``"mean"``/``"sum"``: PyTorch's fused kernel with
    ``reduction="sum"`` (:meth:`_Prepared.ce_sum`, which accumulates in the logits' dtype,
    at least float32 here, and counts :math:`|V|` on the way), divided by :math:`|V|`.
    Float16/bfloat16 and ``"none"``: the map of :func:`pixel_ce`, summed in float32 (a
    float16 sum or count overflows beyond 65,504 pixels).
    """
    if reduction != "none" and not p.binary and p.logits.dtype in (torch.float32, torch.float64):
        total = p.ce_sum()
        if reduction == "sum":
            return total
        count = p.count
        return total / (count.clamp_min(1).to(total.dtype) if isinstance(count, torch.Tensor) else max(count, 1))
    return p.reduce(pixel_ce(p), reduction)


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
    # one check of C values; on CUDA (a module's buffer) a device-side assertion, no sync
    require(torch.isfinite(w).all() & (w >= 0).all(),
            lambda: f"{name} must be {'finite' if not bool(torch.isfinite(w).all()) else 'non-negative'}, "
                    f"got {w.tolist()}",
            f"pixelweight: {name} must be finite and non-negative")
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
