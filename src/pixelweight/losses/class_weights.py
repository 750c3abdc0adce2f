r"""Class weights from pixel frequencies: inverse frequency and median frequency.

Both take the pixel count :math:`N_c` of every class in a **training** split (weights
estimated on validation data leak it into training, a pitfall of public baselines), the
total :math:`N = \sum_c N_c`, the frequency :math:`f_c = N_c / N` and the set :math:`P`
of present classes (:math:`N_c > 0`):

* inverse frequency, scikit-learn's ``class_weight="balanced"``:
  :math:`w_c = N / (|P|\,N_c) = 1 / (|P| f_c)`, so that :math:`\sum_c f_c w_c = 1`: the
  average weight of a training pixel is 1 and the loss keeps the scale of plain CE;
* median frequency (Eigen & Fergus, ICCV 2015; used by SegNet):
  :math:`w_c = \operatorname{median}_{k\in P} f_k \,/\, f_c`, so the median class gets
  weight 1 (the median of an even number of classes is the mean of the two middle ones).

Eigen & Fergus define :math:`f_c` as the pixels of class :math:`c` over the pixels of the
images where :math:`c` is present; we use the global frequency :math:`N_c / N`, which
needs only the counts (the two agree when every class appears in every image).

A class absent from the counts (:math:`N_c = 0`) gets weight **0**, never inf or NaN: no
training pixel carries that label, so the training loss does not depend on its weight.
"""

from __future__ import annotations

from typing import Optional, Sequence, Union

import torch

from .._validation import check_ignore_index, check_int, check_label_range, check_tensor

METHODS = ("inverse", "median")


def class_counts(labels: torch.Tensor, num_classes: int, ignore_index: Optional[int] = None) -> torch.Tensor:
    r"""Pixel count :math:`N_c` of every class in a label tensor, with one ``torch.bincount``.

    Parameters
    ----------
    labels : torch.Tensor
        Integer (or bool) labels of any shape, e.g. ``(N, H, W)`` training targets.
    num_classes : int
        Number of classes :math:`C \ge 1`; labels must lie in ``[0, C)`` or equal
        ``ignore_index``.
    ignore_index : int, optional
        Label of pixels that are not counted.

    Returns
    -------
    torch.Tensor
        Long ``(C,)`` counts on the labels' device. Counts of several batches add up, e.g.
        ``sum(class_counts(y, C, 255) for _, y in loader)``.

    Notes
    -----
    In the book: the class-weighted CE baselines of
    :doc:`Recall loss: experiments on a long tail </notebooks/02_recall/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import class_counts
    >>> labels = torch.tensor([[0, 0, 0, 1], [0, 0, 2, 255]])
    >>> class_counts(labels, num_classes=3, ignore_index=255)
    tensor([5, 1, 1])
    """
    check_tensor(labels, "labels")
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    ignore_index = check_ignore_index(ignore_index)
    if labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"labels must be an integer tensor of class indices, got dtype {labels.dtype}")
    labels = labels.long().flatten()
    if ignore_index is not None:
        labels = labels[labels != ignore_index]
    check_label_range(labels, "labels", num_classes, ignore_index)
    return torch.bincount(labels, minlength=num_classes)


def _check_counts(counts) -> torch.Tensor:
    if isinstance(counts, (list, tuple)):
        try:
            counts = torch.tensor(counts, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as err:
            raise TypeError(f"counts must be a 1-D tensor or a list of numbers, got {counts!r}") from err
    if not isinstance(counts, torch.Tensor):
        raise TypeError(f"counts must be a 1-D torch.Tensor or a list of numbers, got {type(counts).__name__}")
    if counts.is_complex() or counts.dtype == torch.bool:
        raise ValueError(f"counts must be a real tensor, got dtype {counts.dtype}")
    if counts.ndim != 1 or counts.numel() == 0:
        raise ValueError(f"counts must be a non-empty 1-D vector, got shape {tuple(counts.shape)}")
    counts = counts.to(torch.float64)
    if not bool(torch.isfinite(counts).all()) or bool((counts < 0).any()):
        raise ValueError(f"counts must be finite and non-negative, got {counts.tolist()}")
    if not bool((counts > 0).any()):
        raise ValueError("counts are all zero: no labelled pixel to estimate class weights from")
    return counts


def class_weights(
    labels: Optional[torch.Tensor] = None,
    num_classes: Optional[int] = None,
    method: str = "inverse",
    ignore_index: Optional[int] = None,
    *,
    counts: Union[torch.Tensor, Sequence[float], None] = None,
) -> torch.Tensor:
    r"""Per-class loss weights from the pixel frequencies of a training split.

    Give either ``labels`` (with ``num_classes`` and optionally ``ignore_index``) or
    ``counts=`` (a vector :math:`N_c`, e.g. accumulated with :func:`class_counts`).

    Parameters
    ----------
    labels : torch.Tensor, optional
        Integer training labels of any shape.
    num_classes : int, optional
        Number of classes; required with ``labels``, checked against ``len(counts)``.
    method : {"inverse", "median"}
        ``"inverse"``: :math:`w_c = N / (|P| N_c)` (scikit-learn's "balanced").
        ``"median"``: :math:`w_c = \operatorname{median}_P(f) / f_c` (median frequency).
    ignore_index : int, optional
        Label of pixels not counted (``labels`` only).
    counts : torch.Tensor or sequence of float, keyword-only, optional
        Non-negative per-class pixel counts :math:`N_c`.

    Returns
    -------
    torch.Tensor
        ``(C,)`` weights in the default float dtype on the input's device; 0 for classes
        with no pixel. Pass them as ``weight=`` to :func:`cross_entropy` (or ``alpha=``
        to :func:`focal_loss`).

    Notes
    -----
    In the book: the class-weighted CE baselines of
    :doc:`Recall loss: experiments on a long tail </notebooks/02_recall/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import class_weights
    >>> # 10 / (3 N_c)
    >>> [round(w, 4) for w in class_weights(counts=[6, 3, 1]).tolist()]
    [0.5556, 1.1111, 3.3333]
    >>> # 0.3 / f_c
    >>> class_weights(counts=[6, 3, 1], method="median").tolist()
    [0.5, 1.0, 3.0]
    >>> labels = torch.tensor([[0, 0, 0, 1], [0, 0, 2, 255]])
    >>> [round(w, 4) for w in class_weights(labels, 3, ignore_index=255).tolist()]
    [0.4667, 2.3333, 2.3333]
    """
    if not isinstance(method, str) or method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}, got {method!r}")
    if (labels is None) == (counts is None):
        raise ValueError("pass exactly one of labels and counts=")
    if labels is not None:
        if num_classes is None:
            raise ValueError("num_classes is required when class weights are estimated from labels")
        n = class_counts(labels, num_classes, ignore_index).to(torch.float64)
        if not bool((n > 0).any()):
            raise ValueError("labels hold no valid pixel (all ignored or empty): cannot estimate class weights")
    else:
        if ignore_index is not None:
            raise ValueError("ignore_index applies to labels only; leave it out with counts=")
        n = _check_counts(counts)
        if num_classes is not None and check_int(num_classes, "num_classes", minimum=1) != n.numel():
            raise ValueError(f"num_classes={num_classes} does not match counts of length {n.numel()}")

    present = n > 0  # P
    f = n / n.sum()  # f_c = N_c / N
    safe_f = torch.where(present, f, torch.ones_like(f))
    if method == "inverse":
        w = 1.0 / (present.sum().to(f.dtype) * safe_f)  # w_c = 1 / (|P| f_c) = N / (|P| N_c)
    else:
        med = torch.quantile(f[present], 0.5)  # median over present classes (mean of the middle two if even)
        w = med / safe_f  # w_c = median(f) / f_c
    w = torch.where(present, w, torch.zeros_like(w))  # absent class: 0, never inf
    return w.to(torch.get_default_dtype())
