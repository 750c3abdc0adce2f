r"""Recall loss (Tian, Mithun, Seymour, Chiu, Kira. *Striking the Right Balance: Recall Loss
for Semantic Segmentation*, ICRA 2022, arXiv:2106.14917).

Cross-entropy treats every pixel alike, so a class's share of the gradient is its share of
the pixels and rare classes are under-recalled. Recall loss re-weights each class by how
badly the network currently recalls it. For a batch, with :math:`V` the valid (not
ignored) pixels, :math:`y_i` the label and :math:`\hat y_i = \arg\max_c z_{i,c}` the
prediction of pixel :math:`i`,

.. math::
    N_c = \#\{i \in V : y_i = c\}, \qquad
    \mathrm{FN}_c = \#\{i \in V : y_i = c,\ \hat y_i \ne c\}, \qquad
    w_c = \frac{\mathrm{FN}_c}{N_c} = 1 - \mathrm{recall}_c ,

and the loss is the pixel mean of the re-weighted cross-entropy, **not** normalised by
:math:`\sum w` [code]:

.. math::
    \mathcal{L} = \frac{1}{|V|} \sum_{i \in V} w_{y_i}\, \mathrm{CE}_i,
    \qquad \mathrm{CE}_i = -\log p_{i, y_i}.

The weights come from a non-differentiable argmax and are treated as constants: no
gradient flows through :math:`w` [code]. The gradient is that of a class-weighted CE whose
weights change from batch to batch.

**The identity behind "between CE and inverse frequency"** [derived]. Grouping the sum by
class, with :math:`\overline{\mathrm{CE}}_c = \frac{1}{N_c}\sum_{i: y_i = c}\mathrm{CE}_i`
the mean CE of class :math:`c`,

.. math::
    \sum_{i \in V} w_{y_i}\mathrm{CE}_i
    = \sum_c \frac{\mathrm{FN}_c}{N_c} \sum_{i: y_i=c} \mathrm{CE}_i
    = \sum_c \mathrm{FN}_c\, \overline{\mathrm{CE}}_c .

* Early in training nothing is recalled, :math:`\mathrm{FN}_c \approx N_c`, and the loss
  is :math:`\sum_c N_c \overline{\mathrm{CE}}_c = \sum_i \mathrm{CE}_i`: plain CE.
* When every class has about the same number of false negatives,
  :math:`\mathrm{FN}_c \approx k`, then :math:`w_c = k / N_c \propto 1/N_c`: inverse
  frequency weighting, :math:`k \sum_c \overline{\mathrm{CE}}_c`, each class counted
  once whatever its size.
* A class recalled perfectly in the batch has :math:`w_c = 0` and drops out of the loss
  (hard-class mining).

The abstract's claim that the loss "changes gradually between CE and inverse frequency
weighting" [abstract] is this identity read along training [derived]; the book's recall
chapter measures whether training follows it.

**Moving average** [code, development version]. With ``momentum`` :math:`\alpha`, the
module keeps :math:`w` across batches and, for the classes present in the batch
(:math:`N_c > 0`), updates :math:`w_c \leftarrow \alpha\,\mathrm{FN}_c / N_c + (1 -
\alpha)\, w_c` (:math:`\alpha = 0.5` in that code); absent classes keep their weight.
The starting value :math:`w = 1` (plain CE) is this library's choice [unverified: the
development code's initial value is not documented]. Without ``momentum`` the weights are
the current batch's (:math:`\alpha = 1`).

**Focal variant** [code]: ``gamma`` :math:`= \gamma > 0` multiplies each pixel by
:math:`(1 - p_{i,y_i})^\gamma` (:math:`\gamma = 1` in the reference code), i.e.
:func:`~pixelweight.losses.focal_loss` with ``alpha`` :math:`= w`.

**Pitfalls of the public code** [code], each guarded by a test here:

* the ignored label was mapped onto an existing class, so ignored pixels entered
  :math:`N_c` and :math:`\mathrm{FN}_c` (here they never count);
* the mapping indexed the second distinct label, an ``IndexError`` when a batch holds a
  single label (here any batch works, including an all-ignored one);
* ``F.cross_entropy(weight=w)`` divides by :math:`\sum_i w_{y_i}` instead of :math:`|V|`,
  a different loss scale (here :math:`|V|`, as
  :func:`~pixelweight.losses.cross_entropy` with ``normalize="pixels"``);
* the counters started at one, so a class with no false negative got :math:`w_c = 1/N_c`
  instead of 0, and the mean ran over ignored pixels too; the counters lived on
  ``.cuda()`` (here: exact zeros, the mean over :math:`V`, any device).

**Cost.** The counts are one ``torch.bincount`` over :math:`y_i + C\,[\hat y_i \ne y_i]`,
not a loop over classes. The test :math:`\hat y_i \ne y_i` reuses the log-softmax of the
loss: pixel :math:`i` is missed when :math:`\max_c \log p_{i,c} > \log p_{i,y_i}`, one
``amax`` pass instead of an ``argmax`` (which PyTorch's CPU kernels run several times
slower). The two agree except on exact ties: a tie between the label and another class
counts as recalled (``argmax`` would pick the lower index), and a uniform prediction
(all classes tied, e.g. a zero-initialised head) counts as missed, so training starts
from plain CE instead of a zero loss. :mod:`pixelweight.benchmark` times the loss
against CE.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import (
    check_float,
    check_ignore_index,
    check_int,
    check_reduction,
    reduce_pixel_loss,
)
from ._common import _Prepared, class_weight_for, pixel_weight, prepare, target_log_prob
from .focal import focal_loss

__all__ = ["RecallLoss", "RecallTerms", "recall_counts", "recall_loss", "recall_terms", "recall_weights"]


class RecallTerms(NamedTuple):
    r"""Per-class pieces of the recall loss of one batch, all ``(C,)``.

    ``fn``: :math:`\mathrm{FN}_c` (long); ``n``: :math:`N_c` (long); ``ce_sum``:
    :math:`\sum_{i \in V: y_i = c} \mathrm{CE}_i` (logits' dtype, no graph). Then
    :math:`\sum_{i\in V} w_{y_i}\mathrm{CE}_i = \sum_c \mathrm{FN}_c \cdot \mathrm{ce\_sum}_c / N_c`.

    Notes
    -----
    In the book: :doc:`Recall loss: the derivation </notebooks/02_recall/01_derivation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import recall_terms
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> t = recall_terms(logits, target)   # a RecallTerms
    >>> t.ce_sum
    tensor([15.0594, 25.6791, 15.2960])
    >>> t.mean_ce                          # ce_sum / n
    tensor([1.8824, 1.8342, 1.5296])
    """

    fn: torch.Tensor
    n: torch.Tensor
    ce_sum: torch.Tensor

    @property
    def mean_ce(self) -> torch.Tensor:
        r""":math:`\overline{\mathrm{CE}}_c`, NaN for a class absent from the batch."""
        n = self.n.to(self.ce_sum.dtype)
        return torch.where(self.n > 0, self.ce_sum / n.clamp_min(1), torch.full_like(n, float("nan")))


def _ce_and_misses(p: _Prepared) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Per-pixel :math:`\mathrm{CE}_i = -\log p_{i,y_i}` (with its graph) and the missed pixels (bool, no graph).

    Pixel :math:`i` is missed (a false negative of its class) when another class is
    strictly more probable, :math:`\max_c \log p_{i,c} > \log p_{i,y_i}` (the argmax is
    not the label), or when the prediction is uniform, :math:`p_{i,y_i} \le 1/C` up to
    rounding (every class tied: nothing is recalled). Multiclass: the log-softmax is computed
    once and serves both the loss (the two kernels of ``F.cross_entropy``) and the test, so
    the only extra pass over the logits is one ``amax``. Binary: missed when the logit has
    the wrong sign or is 0.
    """
    if p.binary:
        ce = -target_log_prob(p)  # -log sigma(+-z_i)
        z = p.logits.detach()
        missed = torch.where(p.safe_target.bool(), z <= 0, z >= 0)  # sign(z_i) disagrees with y_i
        return ce, missed
    logp = F.log_softmax(p.logits, dim=1)  # log p_{i,c}
    ce = F.nll_loss(logp, p.safe_target, reduction="none")  # CE_i = -log p_{i,y_i}
    with torch.no_grad():
        top = logp.amax(dim=1).add_(ce)  # max_c log p_{i,c} - log p_{i,y_i} >= 0
        # p_{i,y_i} <= 1/C while being the largest means all C probabilities are equal
        tol = max(1e-4, 16 * torch.finfo(ce.dtype).eps)
        missed = (top > 0).logical_or_(ce >= math.log(p.num_classes) - tol)
    return ce, missed


@torch.no_grad()
def _counts(p: _Prepared, missed: torch.Tensor, has_ignore: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathrm{FN}_c, N_c)` of the validated batch ``p``, with one bincount."""
    c = p.num_classes
    idx = p.safe_target.add(missed, alpha=c)  # y_i + C [pixel i missed]  in [0, 2C)
    if has_ignore:
        idx = idx.masked_fill(~p.valid, 2 * c)  # ignored pixels land in an extra bin, never counted
    bins = torch.bincount(idx.flatten(), minlength=2 * c + 1)
    fn = bins[c : 2 * c]  # FN_c: label c, missed
    n = bins[:c] + fn  # N_c = TP_c + FN_c
    return fn, n


def _batch_counts(p: _Prepared, has_ignore: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """The counts alone (no graph kept)."""
    with torch.no_grad():
        _, missed = _ce_and_misses(p)
    return _counts(p, missed, has_ignore)


def _ratio(fn: torch.Tensor, n: torch.Tensor, dtype: torch.dtype, absent: float) -> torch.Tensor:
    """FN_c / N_c, ``absent`` where N_c = 0."""
    w = fn.to(dtype) / n.clamp_min(1).to(dtype)  # w_c = FN_c / N_c
    return torch.where(n > 0, w, torch.full_like(w, absent))


def recall_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""False negatives :math:`\mathrm{FN}_c` and ground-truth counts :math:`N_c` of a batch.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` multiclass logits or ``(N, 1, H, W)`` binary logits (classes
        background 0 and foreground 1). A pixel is a false negative of its class when
        another class is strictly more probable (ties count as recalled; see the module
        notes) or, for binary logits, when its logit has the wrong sign.
    target : torch.Tensor
        ``(N, H, W)`` class indices (or ``(N, 1, H, W)`` for binary).
    ignore_index : int, optional
        Pixels with this label count neither in :math:`N_c` nor in :math:`\mathrm{FN}_c`.

    Returns
    -------
    (torch.Tensor, torch.Tensor)
        Long ``(C,)`` tensors ``(fn, n)`` on the logits' device (``C = 2`` for binary).
        Counts of several batches (or processes) add up.

    Notes
    -----
    In the book: :doc:`Recall loss: the derivation </notebooks/02_recall/01_derivation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import recall_counts
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> fn, n = recall_counts(logits, target)
    >>> fn, n
    (tensor([ 6, 11,  8]), tensor([ 8, 14, 10]))
    """
    ignore_index = check_ignore_index(ignore_index)
    p = prepare(logits, target, ignore_index)
    return _batch_counts(p, ignore_index is not None)


def recall_weights(
    logits: torch.Tensor,
    target: torch.Tensor,
    ignore_index: Optional[int] = None,
    absent: float = float("nan"),
) -> torch.Tensor:
    r"""The batch's recall-loss weights :math:`w_c = \mathrm{FN}_c / N_c = 1 - \mathrm{recall}_c`.

    Parameters
    ----------
    logits, target, ignore_index
        As in :func:`recall_counts`.
    absent : float
        Value for a class with no valid pixel in the batch (:math:`N_c = 0`), where the
        recall is undefined. Default NaN; such a class has no pixel, so its weight does not
        change the batch's loss.

    Returns
    -------
    torch.Tensor
        ``(C,)`` in the logits' dtype, values in :math:`[0, 1]` (or ``absent``), detached.

    Notes
    -----
    In the book: :doc:`Recall loss: the derivation </notebooks/02_recall/01_derivation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import recall_weights
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> recall_weights(logits, target)  # FN_c / N_c = 6/8, 11/14, 8/10
    tensor([0.7500, 0.7857, 0.8000])
    """
    absent = _check_absent(absent)
    ignore_index = check_ignore_index(ignore_index)
    p = prepare(logits, target, ignore_index)
    fn, n = _batch_counts(p, ignore_index is not None)
    return _ratio(fn, n, p.logits.dtype, absent)


def _check_absent(absent) -> float:
    if isinstance(absent, bool) or not isinstance(absent, (int, float)):
        raise TypeError(f"absent must be a real number, got {type(absent).__name__} ({absent!r})")
    return float(absent)


def recall_terms(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> RecallTerms:
    r"""The per-class terms of the identity :math:`\sum_i w_{y_i}\mathrm{CE}_i = \sum_c \mathrm{FN}_c\,\overline{\mathrm{CE}}_c`.

    For reading and plotting the loss class by class (no graph). Arguments as in
    :func:`recall_counts`; see :class:`RecallTerms`.

    Notes
    -----
    In the book: :doc:`Recall loss: the derivation </notebooks/02_recall/01_derivation>`, which plots these terms.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import recall_loss, recall_terms
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> t = recall_terms(logits, target)
    >>> t.fn, t.n
    (tensor([ 6, 11,  8]), tensor([ 8, 14, 10]))
    >>> # sum_c FN_c mean-CE_c / |V|
    >>> identity = (t.fn * t.ce_sum / t.n).sum() / target.numel()
    >>> round(identity.item(), 4), round(recall_loss(logits, target).item(), 4)
    (1.3659, 1.3659)
    """
    ignore_index = check_ignore_index(ignore_index)
    p = prepare(logits, target, ignore_index)
    with torch.no_grad():
        ce, missed = _ce_and_misses(p)  # CE_i
        fn, n = _counts(p, missed, ignore_index is not None)
        ce = torch.where(p.valid, ce, torch.zeros((), dtype=ce.dtype, device=ce.device))
        ce_sum = torch.zeros(p.num_classes, dtype=ce.dtype, device=ce.device)
        ce_sum.index_add_(0, p.safe_target.flatten(), ce.flatten())  # sum_{i: y_i = c} CE_i
    return RecallTerms(fn, n, ce_sum)


def _check_gamma(gamma) -> float:
    return check_float(gamma, "gamma", minimum=0.0)


def _check_momentum(momentum) -> Optional[float]:
    if momentum is None:
        return None
    return check_float(momentum, "momentum", minimum=0.0, maximum=1.0, min_inclusive=False)


def _recall_loss(p: _Prepared, logits, target, gamma: float, ignore_index, reduction: str,
                 weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    r"""The loss once the inputs are validated; ``weights(FN, N)`` turns the batch's counts
    into the class weights :math:`w` (the batch's own, or a moving average)."""
    has_ignore = ignore_index is not None
    if gamma == 0.0:
        ce, missed = _ce_and_misses(p)  # one log-softmax for the loss and the counts
        w = weights(*_counts(p, missed, has_ignore))
        w = class_weight_for(w.detach(), p, "weight")  # constants: no gradient through w
        # (1/|V|) sum_V w_{y_i} CE_i: cross_entropy(weight=w, normalize="pixels"), not / sum w
        return reduce_pixel_loss(pixel_weight(w, p) * ce, p.valid, reduction)
    w = class_weight_for(weights(*_batch_counts(p, has_ignore)).detach(), p, "weight")
    return focal_loss(logits, target, gamma, w, ignore_index, reduction)  # -w_{y_i} (1-p_t)^gamma log p_t


def recall_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 0.0,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Recall loss :math:`\frac{1}{|V|}\sum_{i\in V} w_{y_i}\mathrm{CE}_i` with :math:`w_c = 1 - \mathrm{recall}_c` of the batch.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` with ``C >= 2`` (softmax; prediction = argmax) or
        ``(N, 1, H, W)`` (binary: sigmoid; prediction = ``logit > 0``).
    target : torch.Tensor
        ``(N, H, W)`` class indices (binary: ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1}).
    gamma : float
        Focal factor :math:`(1 - p_{i,y_i})^\gamma`; 0 (default) is the plain recall loss,
        the reference code's focal variant uses 1.
    ignore_index : int, optional
        Label of pixels that count nowhere: not in the loss, not in :math:`N_c`, not in
        :math:`\mathrm{FN}_c`.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides by the number of valid pixels :math:`|V|` (not by
        :math:`\sum w`); ``"none"`` gives the per-pixel map (0 at ignored pixels).

    Returns
    -------
    torch.Tensor
        Scalar or per-pixel map. The weights are computed from the batch alone and carry no
        gradient; a class recalled perfectly contributes 0, an all-ignored batch gives a
        zero that keeps the graph. For weights that persist across batches (moving
        average) or to read them, use :class:`RecallLoss`.

    Notes
    -----
    In the book: derived in :doc:`Recall loss: the derivation </notebooks/02_recall/01_derivation>`; trained in
    :doc:`Recall loss: experiments on a long tail </notebooks/02_recall/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import cross_entropy, recall_loss, recall_weights
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> round(recall_loss(logits, target).item(), 4)
    1.3659

    It is the cross-entropy weighted by the batch's :math:`1 - \mathrm{recall}_c`, divided by
    the number of pixels:

    >>> w = recall_weights(logits, target)
    >>> round(cross_entropy(logits, target, weight=w).item(), 4)
    1.3659
    """
    gamma = _check_gamma(gamma)
    check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    p = prepare(logits, target, ignore_index)

    def batch_weights(fn, n):  # w_c = FN_c / N_c; an absent class has no pixel: any value will do
        return _ratio(fn, n, p.logits.dtype, 0.0)

    return _recall_loss(p, logits, target, gamma, ignore_index, reduction, batch_weights)


class RecallLoss(nn.Module):
    r"""Recall loss with class weights that persist across batches (optionally a moving average).

    Parameters
    ----------
    num_classes : int
        :math:`C` (2 for binary ``(N, 1, H, W)`` logits); sizes the ``weights`` buffer.
    momentum : float, optional
        :math:`\alpha \in (0, 1]`: for each class present in the batch,
        :math:`w_c \leftarrow \alpha\,\mathrm{FN}_c/N_c + (1-\alpha)\,w_c` before the loss
        is computed (0.5 in the development code). ``None`` (default) means
        :math:`\alpha = 1`: the batch's own weights, exactly :func:`recall_loss`.
    gamma : float
        Focal factor exponent (see :func:`recall_loss`).
    ignore_index : int, optional
        Label of pixels that count nowhere.
    reduction : {"mean", "sum", "none"}
        As in :func:`recall_loss`.

    Attributes
    ----------
    weights : torch.Tensor
        ``(C,)`` buffer, the class weights used by the last training-mode call (for
        plotting); starts at 1 (plain CE). A class absent from a batch keeps its previous
        weight. It follows ``.to(device/dtype)`` and is saved in the ``state_dict``.

    Notes
    -----
    Like batch normalisation's running statistics, the buffer is updated only in training
    mode; in ``eval()`` mode the weights are computed the same way but not stored.
    Under data parallelism each process uses its own shard's counts (as the reference
    code does).

    In the book: derived in :doc:`Recall loss: the derivation </notebooks/02_recall/01_derivation>`; trained (batch weights and moving average) in
    :doc:`Recall loss: experiments on a long tail </notebooks/02_recall/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import RecallLoss
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> loss_fn = RecallLoss(num_classes=3, momentum=0.5)
    >>> round(loss_fn(logits, target).item(), 4)
    1.5585
    >>> loss_fn.weights                  # 0.5 * FN_c / N_c + 0.5 * 1
    tensor([0.8750, 0.8929, 0.9000])
    >>> round(loss_fn(logits, target).item(), 4)
    1.4622
    >>> # the same batch again: half-way closer to FN_c / N_c
    >>> loss_fn.weights
    tensor([0.8125, 0.8393, 0.8500])
    """

    def __init__(
        self,
        num_classes: int,
        momentum: Optional[float] = None,
        gamma: float = 0.0,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", minimum=2)
        self.momentum = _check_momentum(momentum)
        self.gamma = _check_gamma(gamma)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.register_buffer("weights", torch.ones(self.num_classes))

    def reset_weights(self) -> None:
        """Set every class weight back to 1 (plain CE)."""
        with torch.no_grad():
            self.weights.fill_(1.0)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = prepare(logits, target, self.ignore_index)
        if p.num_classes != self.num_classes:
            raise ValueError(
                f"RecallLoss was built for num_classes={self.num_classes} but the logits of shape "
                f"{tuple(p.logits.shape)} have {p.num_classes} classes"
            )
        if self.weights.device != p.logits.device:
            raise ValueError(
                f"RecallLoss's weights are on {self.weights.device} but the logits are on "
                f"{p.logits.device}: move the loss with .to(device)"
            )
        alpha = 1.0 if self.momentum is None else self.momentum

        @torch.no_grad()
        def moving_weights(fn, n):
            batch = _ratio(fn, n, self.weights.dtype, 0.0)  # FN_c / N_c
            # w_c <- alpha FN_c / N_c + (1 - alpha) w_c on present classes; absent ones keep w_c
            w = torch.where(n > 0, alpha * batch + (1.0 - alpha) * self.weights, self.weights)
            if self.training:
                self.weights.copy_(w)
            return w

        return _recall_loss(p, logits, target, self.gamma, self.ignore_index, self.reduction, moving_weights)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, momentum={self.momentum}, gamma={self.gamma}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}"
        )
