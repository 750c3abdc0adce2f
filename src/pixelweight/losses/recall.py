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
module keeps :math:`w` across batches. The official development code, in the repository
PotatoTian/recall-semseg only as compiled files (``ptsemseg/loss/__pycache__/``
``recall_loss.cpython-36.pyc`` and ``recallfocal_loss.cpython-36.pyc``; the source
``ptsemseg/loss/recall_loss.py`` is the earlier version without an average), does with
``EMA=True`` (default ``False``) and :math:`\alpha = 0.5`, per call:

.. math::
    \text{first batch:}\quad w_c = \begin{cases} \mathrm{FN}_c / N_c & N_c > 0 \\
    1 & N_c = 0 \end{cases}
    \qquad\quad
    \text{later:}\quad w_c \leftarrow \begin{cases}
    \alpha\,\mathrm{FN}_c / N_c + (1 - \alpha)\, w_c & N_c > 0 \\
    w_c & N_c = 0 \end{cases}

so the average starts from the **first batch's weights**, not from 1. That is the default
here, ``init="first_batch"``; the buffer ``initialized`` records whether a batch with at
least one valid pixel has been seen (an all-ignored batch changes nothing) and is saved in
the ``state_dict``. ``init="ones"`` is this library's earlier choice: the average starts
from :math:`w = 1` (plain CE), so the first batch already gives
:math:`\alpha\,\mathrm{FN}_c/N_c + 1 - \alpha`. Without ``momentum`` the weights are the
current batch's (:math:`\alpha = 1`), and ``init`` makes no difference.

**Focal variant** [code, development version]: ``gamma`` :math:`= \gamma > 0` multiplies
each pixel by :math:`(1 - p_{i,y_i})^\gamma` (:math:`\gamma = 1` in that code), and the
official code (``recallfocal_loss.cpython-36.pyc``) **detaches** the factor
(``p = exp(-CE).detach()``): it weights the pixel like :math:`w_{y_i}` and carries no
gradient,

.. math::
    \ell_i = w_{y_i}\, \mathrm{sg}\big[(1 - p_{i,y_i})^\gamma\big]\, \mathrm{CE}_i,
    \qquad
    \frac{\partial \ell_i}{\partial z_i} = w_{y_i} (1 - p_{i,y_i})^\gamma
    \frac{\partial \mathrm{CE}_i}{\partial z_i},

with :math:`\mathrm{sg}` the stop-gradient. That is the default, ``detach_focal=True``.
``detach_focal=False`` lets the gradient through the factor as in Lin et al.'s focal loss,
:func:`~pixelweight.losses.focal_loss` with ``alpha`` :math:`= w`; the loss values are the
same, the gradients differ.

**Data parallelism** [code]. The official ``train.py`` wraps the model in
``nn.DataParallel`` and calls the loss on the gathered output, so :math:`N_c` and
:math:`\mathrm{FN}_c` are counted over the **whole batch**. Under
``DistributedDataParallel`` each process sees only its shard; with ``sync_counts=True``
(default) the :math:`(\mathrm{FN}_c, N_c)` of the shards are summed with one
``all_reduce`` (integer counts, one ``(2, C)`` tensor, no host synchronisation) **before**
the weights are computed, so every process uses the weights of the whole batch and a moving
average stays identical on every process. The loss itself stays the mean over the
process's own valid pixels, as for every loss under DDP (which averages the gradients of
the processes). Without an initialised process group (or with one process) nothing is
called. ``sync_counts=False`` uses each shard's own counts. As with any collective, every
process must then call the loss equally often (a validation loop over uneven shards must
pass ``sync_counts=False``).

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
  ``.cuda()`` (here: exact zeros, the mean over :math:`V`, any device);
* [code, development version] the moving average was updated by every call, validation
  batches included (the loss module is not part of the model, so ``model.eval()`` does not
  reach it), and the ignored label, mapped to class 0, made class 0 "present" and so
  updated on every batch with ignored pixels (here only training-mode calls update the
  average, like batch normalisation's running statistics, and only classes with valid
  pixels count as present).

**Which pixels are missed (the tie rule)** [ours]. The reference code takes
:math:`\hat y_i = \arg\max_c z_{i,c}`, and PyTorch's ``argmax`` resolves a tie towards the
lowest class index. Here the decision is made on the **logits** by exact comparisons, the
same in every dtype (no tolerance, no rounding of a log-softmax):

* multiclass: pixel :math:`i` is a false negative of :math:`y_i` iff another class has a
  strictly larger logit, :math:`z_{i,y_i} < \max_c z_{i,c}`, **or** all :math:`C` logits
  are equal, :math:`\max_c z_{i,c} = \min_c z_{i,c}` (nothing is predicted);
* binary: iff the logit has the wrong sign or is 0 (the two classes tie).

It agrees with ``argmax != target`` except on exact ties of logits: a tie between the label
and some (not all) other classes counts as recalled, for every tied class (``argmax``
credits only the lowest index); a prediction with all classes tied, e.g. a zero-initialised
head, counts as missed for every class, so training starts from plain CE instead of the
reference's "class 0 recalled everywhere" (or a zero loss, had ties counted as recalled).
In float32 such exact ties practically occur only for degenerate heads; in bfloat16, with 8
significant bits, they are common, which is why no tolerance is used: a correctly
classified bfloat16 pixel is never counted as missed.

**Cost.** The counts are one pass over :math:`2 y_i + [\text{missed}_i]` into a fixed
number of bins (no loop over classes, no host synchronisation), the misses one read of the
label's logit and one ``amax`` (the ``amin`` of the uniform test runs only where two
logits are equal), and the loss itself is PyTorch's fused class-weighted
``F.cross_entropy(weight=w, reduction="sum")`` divided by :math:`|V|`.
:mod:`pixelweight.benchmark` times it against ``F.cross_entropy``.
"""

from __future__ import annotations

import math
from typing import Callable, NamedTuple, Optional, Tuple

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from .._validation import (
    accumulation_dtype,
    check_choice,
    check_float,
    check_ignore_index,
    check_int,
    check_reduction,
    reduce_masked,
)
from ._common import _Prepared, class_weight_for, pixel_ce, pixel_weight, prepare
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


@torch.no_grad()
def _misses(p: _Prepared) -> torch.Tensor:
    r"""The false negatives of the batch: a bool map in the target's layout (no graph).

    Decided on the **logits** by exact comparisons, so the rule is the same in every dtype
    (no tolerance, no rounding of a log-softmax). Multiclass: pixel :math:`i` is missed when
    another class has a strictly larger logit, :math:`z_{i,y_i} < \max_c z_{i,c}`, or when
    all :math:`C` logits are equal, :math:`\max_c z_{i,c} = \min_c z_{i,c}` (nothing is
    predicted). A tie between the label and some, not all, other classes counts as
    recalled. Binary: missed when the logit has the wrong sign or is 0 (the two classes
    tie). Ignored pixels get an arbitrary value; the counts leave them out.

    Cost: the label's logit (``F.nll_loss`` on the logits, whose kernel also checks the labels
    on the CPU) and an ``amax``. The ``amin`` is needed only where
    all logits can be equal, which requires :math:`z_{i,0} = z_{i,1}`: on the CPU it runs
    only if some pixel has that tie (a zero-initialised head, not a trained float32 one);
    on other devices, where it is cheap and a data-dependent branch would synchronise,
    always.
    """
    z = p.logits.detach()
    if p.binary:
        return torch.where(p.safe_target.bool(), z <= 0, z >= 0)  # sign(z_i) disagrees with y_i, or z_i = 0
    with p._kernel_checks_labels():  # z_{i, y_i} (0 at ignored pixels); the kernel checks the labels on the CPU
        label = F.nll_loss(z, p.target, ignore_index=p.torch_ignore_index, reduction="none").neg_()
    top = z.amax(dim=1)  # max_c z_{i,c}
    missed = torch.lt(label, top)  # another class is strictly more probable
    if z.device.type != "cpu" or torch.compiler.is_compiling() or bool(torch.eq(z[:, 0], z[:, 1]).any()):
        missed.logical_or_(top == z.amin(dim=1))  # all C logits equal: nothing is predicted
    return missed


def _bin_counts(index: torch.Tensor, bins: int) -> torch.Tensor:
    """``torch.bincount(index, minlength=bins)`` for indices in ``[0, bins)``: one pass into a
    fixed number of bins, and no host synchronisation on CUDA (``bincount`` reads the
    maximum there to size its output)."""
    index = index.flatten()
    ones = torch.ones((), dtype=torch.long, device=index.device).expand(index.numel())
    return torch.zeros(bins, dtype=torch.long, device=index.device).index_add_(0, index, ones)


#: Above this span of label values (classes and ``ignore_index``) the counts mask the
#: ignored pixels instead of giving ``ignore_index`` a bin of its own.
_MAX_SPAN = 1 << 16


@torch.no_grad()
def _counts(p: _Prepared, missed: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\mathrm{FN}_c, N_c)` of the validated batch ``p``, with one pass of counts over
    :math:`2 (y_i - b) + [\text{missed}_i]`, :math:`b = \min(0, \text{ignore\_index})`: the
    ignored label gets bins of its own, which are left out, so no mask is needed."""
    c = p.num_classes
    ignore = p.ignore_index
    lo = 0 if ignore is None else min(0, ignore)
    hi = c - 1 if ignore is None else max(c - 1, ignore)
    if hi - lo < _MAX_SPAN:
        idx = torch.add(missed, p.target, alpha=2)  # 2 y_i + [missed]
        if lo:
            idx = idx.sub_(2 * lo)
        with p._kernel_checks_labels():  # a label outside [lo, hi] is out of the bins' range
            bins = _bin_counts(idx, 2 * (hi - lo + 1))
        per_class = bins[-2 * lo: -2 * lo + 2 * c].view(c, 2)  # (TP_c, FN_c)
        if ignore is not None and 0 <= ignore < c:  # every pixel labelled ignore_index is ignored
            per_class[ignore] = 0
    else:
        idx = torch.where(p.valid, torch.add(missed, p.safe_target, alpha=2),
                          torch.full((), 2 * c, dtype=torch.long, device=missed.device))
        per_class = _bin_counts(idx, 2 * c + 1)[: 2 * c].view(c, 2)
    fn = per_class[:, 1]  # FN_c: label c, missed
    n = per_class.sum(1)  # N_c = TP_c + FN_c
    return fn, n


def _batch_counts(p: _Prepared) -> Tuple[torch.Tensor, torch.Tensor]:
    """The counts alone (no graph kept); the labels are checked here (no kernel does it later)."""
    p.check_range()
    return _counts(p, _misses(p))


def _ratio(fn: torch.Tensor, n: torch.Tensor, dtype: torch.dtype, absent: float) -> torch.Tensor:
    """FN_c / N_c, ``absent`` where N_c = 0."""
    acc = accumulation_dtype(dtype)  # counts beyond 65,504 overflow float16
    w = fn.to(acc) / n.clamp_min(1).to(acc)  # w_c = FN_c / N_c
    return torch.where(n > 0, w, torch.full_like(w, absent)).to(dtype)


def recall_counts(
    logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None
) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""False negatives :math:`\mathrm{FN}_c` and ground-truth counts :math:`N_c` of a batch.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` multiclass logits or ``(N, 1, H, W)`` binary logits (classes
        background 0 and foreground 1). A pixel is a false negative of its class when
        another class has a strictly larger logit or all classes tie (see the module
        notes on the tie rule) or, for binary logits, when its logit has the wrong sign or
        is 0.
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
    p = prepare(logits, target, ignore_index, kernel_checks_labels=True)
    return _batch_counts(p)


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
    p = prepare(logits, target, ignore_index, kernel_checks_labels=True)
    fn, n = _batch_counts(p)
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
        fn, n = _batch_counts(p)
        ce = pixel_ce(p)  # CE_i, 0 at ignored pixels
        ce_sum = torch.zeros(p.num_classes, dtype=accumulation_dtype(ce.dtype), device=ce.device)
        ce_sum.index_add_(0, p.safe_target.flatten(), ce.flatten().to(ce_sum.dtype))  # sum_{i: y_i = c} CE_i
        ce_sum = ce_sum.to(ce.dtype)
    return RecallTerms(fn, n, ce_sum)


def _check_gamma(gamma) -> float:
    return check_float(gamma, "gamma", minimum=0.0)


def _check_momentum(momentum) -> Optional[float]:
    if momentum is None:
        return None
    return check_float(momentum, "momentum", minimum=0.0, maximum=1.0, min_inclusive=False)


def _check_bool(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__} ({value!r})")
    return value


#: How the moving average starts: the official code's first batch, or this library's earlier 1.
INITS = ("first_batch", "ones")


def _sync_counts(fn: torch.Tensor, n: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r""":math:`(\sum_r \mathrm{FN}_c^{(r)}, \sum_r N_c^{(r)})` over the processes :math:`r` of the
    default process group: one ``all_reduce`` of a ``(2, C)`` long tensor (asynchronous on
    the device, no host synchronisation). Without an initialised group, or with a single
    process, the counts are returned as they are and nothing is called."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() < 2:
        return fn, n
    both = torch.stack((fn, n))
    dist.all_reduce(both, op=dist.ReduceOp.SUM)  # the counts of the whole batch, as under nn.DataParallel
    return both[0], both[1]


def _detached_focal_factor(ce: torch.Tensor, gamma: float) -> torch.Tensor:
    r""":math:`\mathrm{sg}[(1 - p_t)^\gamma]` from :math:`\mathrm{CE} = -\log p_t` (no graph), with
    :math:`1 - p_t = -\operatorname{expm1}(-\mathrm{CE})` in float32 at least; 0 where
    :math:`\mathrm{CE} = 0` (a perfect or an ignored pixel), NaN stays NaN."""
    with torch.no_grad():
        c = ce.detach().to(accumulation_dtype(ce.dtype))
        return torch.expm1(-c).neg_().pow_(gamma).to(ce.dtype)  # (1 - p_t)^gamma, as p = exp(-CE).detach()


def _recall_loss(p: _Prepared, logits, target, gamma: float, ignore_index, reduction: str,
                 weights: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                 commit: Optional[Callable[[torch.Tensor, torch.Tensor], None]] = None,
                 detach_focal: bool = True, sync_counts: bool = True) -> torch.Tensor:
    r"""The loss once the inputs are validated; ``weights(FN, N)`` turns the counts into the
    class weights :math:`w` (the batch's own, or a moving average), and ``commit(w, N)``, if
    given, stores them once the loss has been computed (so that a batch whose labels fail the
    check changes no state). With ``sync_counts`` the counts are summed over the processes
    first (:func:`_sync_counts`).

    The weights depend on the logits only through the (non-differentiable) misses, so they
    are known before the loss: the loss is then PyTorch's fused class-weighted
    cross-entropy, :math:`\sum_{i\in V} w_{y_i}\mathrm{CE}_i` from
    ``F.cross_entropy(weight=w, reduction="sum")``, divided by :math:`|V|` of this process
    (not by :math:`\sum_i w_{y_i}` as ``reduction="mean"`` would). Float16 and bfloat16
    sum the per-pixel map in float32 instead. The focal variant multiplies the map by
    :math:`\mathrm{sg}[(1-p_t)^\gamma]` (``detach_focal``) or is
    :func:`~pixelweight.losses.focal_loss` with ``alpha`` :math:`= w`.
    """
    fn, n = _counts(p, _misses(p))  # on the CPU the labels are checked by the loss's kernel below
    count = n.sum()  # |V| of this process
    if sync_counts:
        fn, n = _sync_counts(fn, n)  # N_c, FN_c of the whole batch
    w = weights(fn, n).detach()  # constants: no gradient through w
    wl = class_weight_for(w, p, "weight")
    if gamma != 0.0 and not detach_focal:
        loss = focal_loss(logits, target, gamma, wl, ignore_index, reduction)  # -w_{y_i} (1-p_t)^gamma log p_t
    elif gamma != 0.0 or p.binary:
        ce = pixel_ce(p)  # CE_i, 0 at ignored pixels
        loss = pixel_weight(wl, p) * ce  # w_{y_i} CE_i
        if gamma != 0.0:
            loss = loss * _detached_focal_factor(ce, gamma)  # w_{y_i} sg[(1 - p_t)^gamma] CE_i
        loss = reduce_masked(loss, count, reduction)
    elif reduction == "none" or p.logits.dtype not in (torch.float32, torch.float64):
        loss = reduce_masked(p.cross_entropy("none", weight=wl), count, reduction)  # w_{y_i} CE_i, 0 if ignored
    else:
        loss = p.cross_entropy("sum", weight=wl)  # sum_V w_{y_i} CE_i
        if reduction == "mean":
            loss = loss / count.clamp_min(1).to(loss.dtype)
    if commit is not None:
        commit(w, n)
    return loss


def recall_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 0.0,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
    *,
    detach_focal: bool = True,
    sync_counts: bool = True,
) -> torch.Tensor:
    r"""Recall loss :math:`\frac{1}{|V|}\sum_{i\in V} w_{y_i}\mathrm{CE}_i` with :math:`w_c = 1 - \mathrm{recall}_c` of the batch.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` with ``C >= 2`` (softmax; prediction = argmax, ties as in the module notes) or
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
    detach_focal : bool
        With ``gamma > 0``: ``True`` (default, the official behaviour, ``p =
        exp(-CE).detach()`` in the development code's ``recallfocal_loss.py``) holds the
        focal factor constant in the backward pass, like :math:`w`; ``False`` lets the
        gradient through it (Lin et al.'s focal loss weighted by :math:`w`). Same value,
        different gradient. No effect when ``gamma == 0``.
    sync_counts : bool
        ``True`` (default, the official behaviour: ``nn.DataParallel`` counts over the
        whole batch): in an initialised ``torch.distributed`` process group of more than
        one process, sum :math:`N_c` and :math:`\mathrm{FN}_c` over the processes (one
        ``all_reduce``; every process must call the loss) before computing :math:`w`; the
        mean stays over this process's :math:`|V|`. Without a process group nothing is
        called. ``False``: each process's own counts.

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
    detach_focal = _check_bool(detach_focal, "detach_focal")
    sync_counts = _check_bool(sync_counts, "sync_counts")
    p = prepare(logits, target, ignore_index, kernel_checks_labels=True)

    def batch_weights(fn, n):  # w_c = FN_c / N_c; an absent class has no pixel: any value will do
        return _ratio(fn, n, p.logits.dtype, 0.0)

    return _recall_loss(p, logits, target, gamma, ignore_index, reduction, batch_weights,
                        detach_focal=detach_focal, sync_counts=sync_counts)


class RecallLoss(nn.Module):
    r"""Recall loss with class weights that persist across batches (optionally a moving average).

    Parameters
    ----------
    num_classes : int
        :math:`C` (2 for binary ``(N, 1, H, W)`` logits); sizes the ``weights`` buffer.
    momentum : float, optional
        :math:`\alpha \in (0, 1]`: for each class present in the batch,
        :math:`w_c \leftarrow \alpha\,\mathrm{FN}_c/N_c + (1-\alpha)\,w_c` before the loss
        is computed (0.5 in the development code, where ``EMA=False`` is the default).
        ``None`` (default) means :math:`\alpha = 1`: the batch's own weights, exactly
        :func:`recall_loss`.
    gamma : float
        Focal factor exponent (see :func:`recall_loss`).
    ignore_index : int, optional
        Label of pixels that count nowhere.
    reduction : {"mean", "sum", "none"}
        As in :func:`recall_loss`.
    init : {"first_batch", "ones"}
        Where the moving average starts. ``"first_batch"`` (default, the official
        behaviour of the development code's ``recall_loss.py``): the first training-mode
        batch with a valid pixel sets :math:`w_c = \mathrm{FN}_c/N_c` for its classes and 1
        for the others; the average runs from there. ``"ones"``: the average starts from
        :math:`w = 1` (plain CE), the first batch included. No effect without ``momentum``.
    detach_focal : bool
        ``True`` (default, official): no gradient through the focal factor; see
        :func:`recall_loss`.
    sync_counts : bool
        ``True`` (default, official: the counts of the whole batch): under
        ``torch.distributed``, all-reduce :math:`N_c` and :math:`\mathrm{FN}_c` before the
        weights, so every process computes (and stores) the same weights; see
        :func:`recall_loss`.

    Attributes
    ----------
    weights : torch.Tensor
        ``(C,)`` buffer, the class weights used by the last training-mode call (for
        plotting); 1 before the first call. A class absent from a batch keeps its previous
        weight. It follows ``.to(device/dtype)`` and is saved in the ``state_dict``.
    initialized : torch.Tensor
        0-dim bool buffer: whether ``weights`` holds an average to update (``init="ones"``:
        from the start; ``"first_batch"``: once a training-mode batch with a valid pixel
        has been seen). Saved in the ``state_dict``, so a resumed run continues the average.

    Notes
    -----
    In a call, with :math:`a_c = \mathrm{FN}_c / N_c` the batch's weights and :math:`I` the
    ``initialized`` flag (no host synchronisation: the choices are ``torch.where``):

    .. math::
        w_c = \begin{cases} \alpha\, a_c + (1-\alpha)\, w_c & N_c > 0,\ I \\
        a_c & N_c > 0,\ \neg I \\ w_c & N_c = 0,\ I \\ 1 & N_c = 0,\ \neg I \end{cases}
        \qquad I \leftarrow I \lor (|V| > 0).

    Like batch normalisation's running statistics, the buffers are updated only in training
    mode; in ``eval()`` mode the weights are computed the same way but not stored (the
    official code also updates on validation batches).
    Under ``DistributedDataParallel``, with ``sync_counts=True`` (default) each process
    uses the counts of the whole batch, as the official ``nn.DataParallel`` training does,
    and the buffers stay identical across processes.

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
    1.3659
    >>> loss_fn.weights                  # the first batch's FN_c / N_c = 6/8, 11/14, 8/10
    tensor([0.7500, 0.7857, 0.8000])
    >>> # the same batch again: 0.5 * FN_c / N_c + 0.5 * w_c leaves w where it is
    >>> round(loss_fn(logits, target).item(), 4)
    1.3659

    The earlier start from :math:`w = 1` (plain CE):

    >>> ones = RecallLoss(num_classes=3, momentum=0.5, init="ones")
    >>> round(ones(logits, target).item(), 4)
    1.5585
    >>> ones.weights                     # 0.5 * FN_c / N_c + 0.5 * 1
    tensor([0.8750, 0.8929, 0.9000])
    """

    def __init__(
        self,
        num_classes: int,
        momentum: Optional[float] = None,
        gamma: float = 0.0,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
        init: str = "first_batch",
        detach_focal: bool = True,
        sync_counts: bool = True,
    ) -> None:
        super().__init__()
        self.num_classes = check_int(num_classes, "num_classes", minimum=2)
        self.momentum = _check_momentum(momentum)
        self.gamma = _check_gamma(gamma)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.init = check_choice(init, "init", INITS)
        self.detach_focal = _check_bool(detach_focal, "detach_focal")
        self.sync_counts = _check_bool(sync_counts, "sync_counts")
        self.register_buffer("weights", torch.ones(self.num_classes))
        self.register_buffer("initialized", torch.tensor(self.init == "ones"))

    def reset_weights(self) -> None:
        """Start again: every class weight back to 1 and, with ``init="first_batch"``, the
        next training batch sets the weights."""
        with torch.no_grad():
            self.weights.fill_(1.0)
            self.initialized.fill_(self.init == "ones")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        # A state_dict saved before the `initialized` buffer existed holds a running average
        # that started from 1: continue it (as init="ones" would) instead of failing.
        key = prefix + "initialized"
        if key not in state_dict and prefix + "weights" in state_dict:
            state_dict = dict(state_dict)
            state_dict[key] = torch.ones((), dtype=torch.bool)
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        p = prepare(logits, target, self.ignore_index, kernel_checks_labels=True)
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
            old, started = self.weights, self.initialized
            batch = _ratio(fn, n, old.dtype, 1.0)  # a_c = FN_c / N_c (1 where N_c = 0)
            # present classes: w_c <- alpha a_c + (1 - alpha) w_c once started, a_c on the first batch;
            # absent classes: keep w_c once started, 1 on the first batch
            present = torch.where(started, alpha * batch + (1.0 - alpha) * old, batch)
            return torch.where(n > 0, present, torch.where(started, old, batch))

        @torch.no_grad()
        def commit(w, n):
            if self.training:
                self.weights.copy_(w)
                self.initialized.logical_or_(n.sum() > 0)  # a batch with a valid pixel was seen

        return _recall_loss(p, logits, target, self.gamma, self.ignore_index, self.reduction, moving_weights,
                            commit, detach_focal=self.detach_focal, sync_counts=self.sync_counts)

    def extra_repr(self) -> str:
        return (
            f"num_classes={self.num_classes}, momentum={self.momentum}, gamma={self.gamma}, "
            f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, init={self.init!r}, "
            f"detach_focal={self.detach_focal}, sync_counts={self.sync_counts}"
        )
