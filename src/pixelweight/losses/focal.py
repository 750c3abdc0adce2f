r"""Focal loss (Lin, Goyal, Girshick, He, Dollár. *Focal Loss for Dense Object Detection*, ICCV 2017).

Cross-entropy down-weights nothing: a pixel classified correctly with :math:`p_t = 0.9`
still adds :math:`-\log 0.9`. The focal loss multiplies each pixel's cross-entropy by a
modulating factor that vanishes as the pixel becomes easy,

.. math::
    \mathrm{FL}_i = -\alpha_{y_i}\,(1 - p_{t,i})^{\gamma}\,\log p_{t,i},

where :math:`p_{t,i}` is the probability of the true class (softmax for multiclass,
:math:`\sigma(z)` or :math:`1-\sigma(z)` for binary), :math:`\gamma \ge 0` the focusing
parameter (:math:`\gamma = 0` gives cross-entropy) and :math:`\alpha` an optional class
weight. In the binary case the paper's scalar :math:`\alpha` weighs the foreground by
:math:`\alpha` and the background by :math:`1-\alpha`.

Stability: :math:`\log p_t` comes from log-softmax / log-sigmoid, and
:math:`1 - p_t = -\operatorname{expm1}(\log p_t)` keeps its precision when :math:`p_t`
is close to 1.

**Compared with kornia** (``kornia.losses.focal_loss``; tested in
``tests/losses/test_focal.py``). The per-pixel loss is the same; the conventions around it
differ:

* kornia's ``reduction="none"`` is an ``(N, C, H, W)`` map, 0 off the target class (its sum
  over :math:`C` is the map here), and its ``"mean"`` divides the sum by :math:`N C H W`:
  the class axis and the ignored pixels are counted. Here ``"mean"`` divides by the number
  of valid pixels :math:`|V|`, so kornia's mean is this one times :math:`|V| / (C\,NHW)`
  (:math:`1/C` without ignored pixels).
* kornia's scalar ``alpha`` weighs class 0 by :math:`1-\alpha` and every other class by
  :math:`\alpha`, for multiclass logits too. Here a scalar ``alpha`` is for binary logits
  only, with the convention of kornia's ``binary_focal_loss_with_logits`` (foreground
  :math:`\alpha`, background :math:`1-\alpha`); kornia's multiclass ``alpha=a`` is the
  vector ``[1 - a, a, ..., a]`` here. kornia's default ``alpha`` for binary logits is 0.25,
  here ``None`` (no weight).
"""

from __future__ import annotations

from numbers import Real
from typing import Optional, Union

import torch
from torch import nn

from .._validation import check_float, check_ignore_index, check_reduction
from ._common import WeightLike, check_class_weight, class_weight_for, pixel_ce, pixel_weight, prepare

AlphaLike = Union[float, WeightLike]


def _check_alpha(alpha: AlphaLike) -> Union[None, float, torch.Tensor]:
    """``None``, a float in [0, 1] (binary only) or a per-class weight vector."""
    if alpha is None:
        return None
    if isinstance(alpha, Real) and not isinstance(alpha, bool):
        return check_float(alpha, "alpha", minimum=0.0, maximum=1.0)
    return check_class_weight(alpha, "alpha")


class _FocalTerm(torch.autograd.Function):
    r"""The focal term of a pixel as a function of its cross-entropy :math:`c = -\log p_t \ge 0`,

    .. math::
        f(c) = u^\gamma c, \qquad u = 1 - p_t = 1 - e^{-c} = -\operatorname{expm1}(-c),
        \qquad f'(c) = u^{\gamma - 1}\big(u + \gamma\, c\, (1 - u)\big),

    with the derivative written out: four passes over the pixels in the backward instead of
    the ten that autograd records for the composition. ``expm1`` keeps :math:`1 - p_t`
    precise when :math:`p_t` is close to 1. At :math:`c = 0` (a perfect or an ignored pixel)
    :math:`f = f' = 0` for every :math:`\gamma > 0`; for :math:`\gamma < 1` the derivative is
    evaluated as :math:`u^\gamma (u + \gamma c (1-u)) / u`, which neither overflows nor
    divides by 0. NaN in :math:`c` stays NaN. Higher derivatives (``create_graph=True``)
    recompute :math:`u` from :math:`c` in the backward, so they are exact too.
    """

    @staticmethod
    def forward(ctx, ce: torch.Tensor, gamma: float) -> torch.Tensor:
        u = torch.expm1(-ce).neg_()  # 1 - p_t
        ug = u * u if gamma == 2.0 else u.pow(gamma)  # u^gamma
        ctx.gamma = gamma
        if gamma < 1.0:
            ctx.save_for_backward(ce, u, ug)
            return ug * ce
        ctx.save_for_backward(ce, u, None)
        return ug.mul_(ce) if ug is not u else ug * ce  # in place on a fresh u^gamma

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        ce, u, ug = ctx.saved_tensors
        gamma = ctx.gamma
        if torch.is_grad_enabled():  # create_graph=True: recompute u from c so that f'' is right too
            u = -torch.expm1(-ce)
            ug = u.pow(gamma) if ug is not None else None
        inner = torch.addcmul(u, ce, 1.0 - u, value=gamma)  # u + gamma c (1 - u)
        if gamma == 1.0:
            d = inner
        elif gamma == 2.0:
            d = inner.mul_(u)
        elif gamma > 1.0:
            d = inner.mul_(u.pow(gamma - 1.0))  # u^(gamma - 1) <= 1
        else:  # u^gamma * inner / u, and 0 at u = 0
            d = torch.where(u > 0, ug * inner / torch.where(u > 0, u, torch.ones_like(u)), torch.zeros_like(u))
        return grad * d, None


def focal_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    gamma: float = 2.0,
    alpha: AlphaLike = None,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
) -> torch.Tensor:
    r"""Focal loss :math:`-\alpha_{y_i}(1-p_{t,i})^\gamma \log p_{t,i}` from logits.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` with ``C >= 2`` (softmax) or ``(N, 1, H, W)`` (binary, sigmoid).
    target : torch.Tensor
        ``(N, H, W)`` class indices (multiclass); ``(N, H, W)`` or ``(N, 1, H, W)`` in
        {0, 1} (binary). Pixels equal to ``ignore_index`` are left out.
    gamma : float
        Focusing parameter :math:`\gamma \ge 0`; 0 gives (weighted) cross-entropy.
    alpha : float or torch.Tensor or sequence of float, optional
        ``None``: no class weight. A float :math:`\alpha\in[0,1]` (binary logits only, as
        in the paper): :math:`\alpha_1 = \alpha`, :math:`\alpha_0 = 1-\alpha`. A vector:
        per-class weights, ``C`` values for multiclass and 2 ``(background, foreground)``
        for binary.
    ignore_index : int, optional
        Target value of pixels that do not count.
    reduction : {"mean", "sum", "none"}
        ``"mean"`` divides the sum by the number of valid pixels (not by
        :math:`\sum\alpha`); ``"none"`` returns the per-pixel map, ``(N, H, W)`` for
        multiclass and ``(N, 1, H, W)`` for binary, 0 at ignored pixels.

    Returns
    -------
    torch.Tensor
        Scalar or per-pixel map; an all-ignored batch gives a zero mean with a graph.

    Notes
    -----
    In the book: compared (:math:`\gamma = 1`) with recall loss in
    :doc:`Recall loss: experiments on a long tail </notebooks/02_recall/02_experiments>`, and (:math:`\gamma = 2`) with loss max-pooling in
    :doc:`Loss max-pooling: the grid </notebooks/04_lmp/03_grid>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import cross_entropy, focal_loss
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> round(focal_loss(logits, target, gamma=2.0).item(), 4)
    1.2666
    >>> ce = cross_entropy(logits, target)
    >>> torch.allclose(focal_loss(logits, target, gamma=0.0), ce)  # gamma = 0: CE
    True

    Binary logits with the paper's scalar :math:`\alpha`:

    >>> z = torch.tensor([[[[3.0, -1.0], [0.5, -2.0]]]])  # (1, 1, 2, 2)
    >>> y = torch.tensor([[[1, 0], [0, 1]]])
    >>> round(focal_loss(z, y, gamma=2.0, alpha=0.25).item(), 4)
    0.1781
    """
    gamma = check_float(gamma, "gamma", minimum=0.0)
    check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    alpha = _check_alpha(alpha)
    p = prepare(logits, target, ignore_index, kernel_checks_labels=True)
    if isinstance(alpha, float):
        if not p.binary:
            raise ValueError(
                f"a scalar alpha={alpha} is defined for binary (N, 1, H, W) logits only; for "
                f"multiclass logits of shape {tuple(p.logits.shape)} pass C per-class values"
            )
        alpha = torch.tensor([1.0 - alpha, alpha])  # (alpha_0, alpha_1) = (1 - alpha, alpha)
    alpha = class_weight_for(alpha, p, "alpha")

    loss = pixel_ce(p)  # -log p_t, 0 at ignored pixels (whose focal term is then 0 too)
    if gamma != 0.0:
        loss = _FocalTerm.apply(loss, gamma)  # (1 - p_t)^gamma (-log p_t)
    if alpha is not None:
        loss = pixel_weight(alpha, p) * loss  # alpha_{y_i}
    return p.reduce(loss, reduction)


class FocalLoss(nn.Module):
    """Module form of :func:`focal_loss`; a vector ``alpha`` is a buffer, a scalar an attribute.

    Notes
    -----
    In the book: :doc:`Recall loss: experiments on a long tail </notebooks/02_recall/02_experiments>`;
    :doc:`Loss max-pooling: the grid </notebooks/04_lmp/03_grid>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import FocalLoss
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> loss_fn = FocalLoss(gamma=1.0)
    >>> loss_fn
    FocalLoss(gamma=1.0, alpha=None, ignore_index=None, reduction='mean')
    >>> round(loss_fn(logits, target).item(), 4)
    1.4684
    """

    def __init__(
        self,
        gamma: float = 2.0,
        alpha: AlphaLike = None,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
    ) -> None:
        super().__init__()
        self.gamma = check_float(gamma, "gamma", minimum=0.0)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        alpha = _check_alpha(alpha)
        if isinstance(alpha, torch.Tensor):
            self.register_buffer("alpha", alpha.clone())
        else:
            self.alpha = alpha

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return focal_loss(logits, target, self.gamma, self.alpha, self.ignore_index, self.reduction)

    def extra_repr(self) -> str:
        a = self.alpha if not isinstance(self.alpha, torch.Tensor) else "tensor"
        return f"gamma={self.gamma}, alpha={a}, ignore_index={self.ignore_index}, reduction={self.reduction!r}"
