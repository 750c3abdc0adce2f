r"""Loss max-pooling (Rota Bulò, Neuhold, Kontschieder. *Loss Max-Pooling for Semantic Image
Segmentation*, CVPR 2017, arXiv:1704.02966).

Cross-entropy averages the pixel losses :math:`\ell_i \ge 0` with the uniform weight
:math:`1/n`. Loss max-pooling (LMP) replaces the average by the **largest** weighted sum over a
set :math:`\mathcal W` of admissible pixel weightings that contains the uniform one,

.. math::
    \mathrm{LMP}(\ell) = \max_{w \in \mathcal W} \sum_{i=1}^n w_i \ell_i , \qquad
    \mathcal W = \{ w \ge 0 : \|w\|_p \le \gamma,\ \|w\|_\infty \le \tau \},

    \gamma = n^{-1/q}, \qquad \tau = \gamma\, m^{-1/p}, \qquad \tfrac1p + \tfrac1q = 1,
    \qquad m = \rho\, n ,

with :math:`\rho` = ``ratio`` the share of pixels that must keep some weight (at most
:math:`\tau` each, so at least :math:`m` of them carry the budget) [code: bes-dev/mpl.pytorch].
The uniform weighting :math:`1/n` lies on the boundary of :math:`\mathcal W`
(:math:`\|1/n\|_p = n^{1/p - 1} = \gamma`), hence :math:`\mathrm{LMP} \ge` mean loss: the
pixels that are already easy lend their weight to the hard ones.

**Closed form** [derived; checked against a generic solver, :func:`~pixelweight.losses.lmp_weights_reference`].
The problem is linear over a convex set. Its KKT conditions give, for one threshold
:math:`\alpha > 0`,

.. math::
    w_i = \tau \min\!\Big(1, \big(\ell_i/\alpha\big)^{q-1}\Big), \qquad
    \sum_{i=1}^n \min\!\Big(1, \big(\ell_i/\alpha\big)^{q}\Big) = m ,

(the second equation is :math:`\|w\|_p^p = \gamma^p`, since :math:`p(q-1) = q` and
:math:`\tau^p = \gamma^p/m`). Pixels with :math:`\ell_i \ge \alpha` are *capped* at
:math:`\tau`; the others get a weight that grows like :math:`\ell_i^{q-1}`. With the losses
sorted in decreasing order, :math:`\ell_{(1)} \ge \dots \ge \ell_{(n)}`, and
:math:`S_k = \sum_{j > k} \ell_{(j)}^q`, if exactly :math:`k` pixels are capped then
:math:`\alpha^q = S_k / (m - k)`, and :math:`k` is the smallest integer with
:math:`\ell_{(k+1)}^q (m - k) \le S_k` (this condition, once true, stays true for larger
:math:`k < m`, and it always holds at :math:`k = \lceil m \rceil - 1`). One sort, one
cumulative sum and one scan: :math:`O(n \log n)`, all on the tensor's device.

**Limits** [derived, each a test]: :math:`m = n` (``ratio = 1``) or :math:`p \to \infty` gives
:math:`w = 1/n`, the mean loss (plain CE); :math:`p \to 1` gives :math:`1/m` on the
:math:`m` largest losses, the **mean of the m hardest pixels** (top-k / OHEM-style mining,
available exactly as ``p = 1``); :math:`m = 1` removes the :math:`\infty`-norm bound and gives the
power mean :math:`(\tfrac1n\sum_i \ell_i^q)^{1/q}`. For :math:`m < 1` the :math:`\infty`-norm bound
is inactive and the solution is the :math:`m = 1` one, so the code uses
:math:`\max(m, 1)`.

**Backward.** The weights are held constant: by Danskin's theorem the gradient of the max
with respect to :math:`\ell` is the maximiser :math:`w^\star` (unique for :math:`1 < p < \infty`
and distinct losses), so :math:`\nabla \mathrm{LMP} = \sum_i w^\star_i \nabla \ell_i`
[derived; ``torch.autograd.gradcheck`` checks it].

**Numerics.** Powers :math:`\ell^q` overflow or underflow for :math:`p` near 1 (:math:`q`
large), so the sums run in the log domain (``logcumsumexp``); zero losses have
:math:`\log 0 = -\infty` and drop out of :math:`S_k` exactly. If fewer than :math:`m` pixels
have a positive loss, every positive pixel is capped and the zero-loss pixels share the rest
of the budget equally (the limit of tiny equal losses) — not the weight 0 that would shrink
the loss. Sorting non-negative floats equals sorting their bit patterns as integers, which
lets PyTorch use its radix sort on the CPU.

**Scale of the loss.** :func:`~pixelweight.losses.loss_max_pooling` multiplies each pixel loss by the *relative*
weight :math:`\omega_i = n w_i` (1 for the uniform weighting) and then reduces like every loss
of this library: ``"mean"`` divides :math:`\sum_i \omega_i \ell_i` by the number of valid
pixels, which is exactly :math:`\mathrm{LMP}(\ell)` for one problem and equals the CE mean when
``ratio = 1``. With ``per_image=True`` each image is its own problem (its own :math:`n`,
:math:`m`) and the mean weighs images by their number of valid pixels.

**Pitfalls of the public code** [code: bes-dev/mpl.pytorch, ``lib_mpl.cpp``], each guarded by a
test here: it drops every loss below ``FLT_EPSILON`` from :math:`n` (ignored pixels, whose CE
is set to 0, but also every well-classified pixel); its scan stops at index :math:`n` counted
*after* the dropped zeros, so the hardest pixels can keep the weight 0 and "the loss goes to
0"; it floors :math:`m = \lfloor \rho n \rfloor` and returns all-zero weights when
:math:`\rho n < 1`; it copies the losses to the CPU to sort them. Here ignored pixels are
excluded from :math:`n` by a mask, zero losses stay in :math:`n`, and nothing leaves the
device. The paper's own choice of :math:`p` and :math:`\rho` and its auxiliary sampling
strategy are [unverified]; the defaults ``p = 1.7``, ``ratio = 0.3`` are the public code's.
"""

from __future__ import annotations

import math
from typing import Callable, Optional, Tuple

import torch
from torch import nn

from .._validation import (
    check_float,
    check_ignore_index,
    check_int,
    check_reduction,
    check_tensor,
    reduce_pixel_loss,
    require,
)
from ._common import ce_total, pixel_ce, prepare

__all__ = [
    "LossMaxPooling",
    "loss_max_pooling",
    "lmp_bounds",
    "lmp_pool",
    "lmp_weights",
    "lmp_weights_reference",
]

PixelLoss = Callable[..., torch.Tensor]


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _check_p(p) -> float:
    """:math:`p \\in [1, \\infty]`; 1 and ``inf`` are the exact limits."""
    return check_float(p, "p", minimum=1.0, allow_inf=True)


def _check_ratio(ratio) -> float:
    return check_float(ratio, "ratio", minimum=0.0, maximum=1.0, min_inclusive=False)


def _check_per_image(per_image) -> bool:
    if not isinstance(per_image, bool):
        raise TypeError(f"per_image must be a bool, got {type(per_image).__name__} ({per_image!r})")
    return per_image


def _check_losses(losses, valid, per_image: bool) -> Tuple[torch.Tensor, torch.Tensor]:
    """A floating tensor of pixel losses and a boolean mask of the same shape and device."""
    check_tensor(losses, "losses")
    if not losses.is_floating_point():
        raise ValueError(f"losses must be a floating tensor, got dtype {losses.dtype}")
    if losses.ndim == 0:
        raise ValueError("losses must have at least one dimension, got a scalar")
    if per_image and losses.ndim < 2:
        raise ValueError(
            f"per_image=True needs losses of shape (N, ...) with at least 2 dimensions, got {tuple(losses.shape)}"
        )
    if valid is None:
        valid = torch.ones_like(losses, dtype=torch.bool)
    else:
        check_tensor(valid, "valid")
        if valid.dtype != torch.bool:
            raise ValueError(f"valid must be a bool mask, got dtype {valid.dtype}")
        if valid.shape != losses.shape:
            raise ValueError(f"valid must have the shape of losses {tuple(losses.shape)}, got {tuple(valid.shape)}")
        if valid.device != losses.device:
            raise ValueError(f"valid is on {valid.device} but losses are on {losses.device}")
    return losses, valid


def _check_values(losses: torch.Tensor, valid: torch.Tensor) -> None:
    """The closed form needs finite, non-negative losses at the valid pixels: one masked
    ``aminmax``, a :func:`~pixelweight._validation.require` check (no sync on CUDA)."""
    lo, hi = torch.where(valid, losses.detach(), torch.zeros((), dtype=losses.dtype, device=losses.device)).aminmax()

    def message() -> str:
        bad = valid & ~(torch.isfinite(losses) & (losses >= 0))
        values = losses.detach()[bad][:5].tolist()
        return (f"loss max-pooling needs finite, non-negative pixel losses; found {int(bad.sum())} "
                f"valid pixel(s) that are not, e.g. {values}")

    require((lo >= 0) & (hi < math.inf), message,  # NaN fails both tests
            "pixelweight: loss max-pooling needs finite, non-negative pixel losses")


# --------------------------------------------------------------------------------------
# the weights
# --------------------------------------------------------------------------------------
def lmp_bounds(n: int, p: float, ratio: float) -> Tuple[float, float, float]:
    r"""The constants of :math:`\mathcal W` for ``n`` pixels: ``(gamma, tau, m)``.

    :math:`\gamma = n^{-1/q}`, :math:`\tau = \gamma\, m^{-1/p}`, :math:`m = \rho n` (not clamped:
    for :math:`m < 1`, :math:`\tau > \gamma` and the :math:`\infty`-norm bound is inactive).
    ``p = inf`` gives :math:`\gamma = \tau = 1/n`; ``p = 1`` gives :math:`\gamma = 1`,
    :math:`\tau = 1/m`.

    Notes
    -----
    In the book: :doc:`Loss max-pooling: the closed form </notebooks/04_lmp/01_derivation>`.

    Examples
    --------
    >>> from pixelweight.losses import lmp_bounds
    >>> gamma, tau, m = lmp_bounds(100, p=2.0, ratio=0.25)
    >>> round(gamma, 4), round(tau, 4), m
    (0.1, 0.02, 25.0)
    """
    n = check_int(n, "n", minimum=1)
    p, ratio = _check_p(p), _check_ratio(ratio)
    m = ratio * n
    inv_p = 0.0 if math.isinf(p) else 1.0 / p
    inv_q = 1.0 - inv_p  # 1/q = 1 - 1/p
    gamma = n ** (-inv_q)
    tau = gamma * m ** (-inv_p)
    return gamma, tau, m


_INT_OF = {torch.float32: torch.int32, torch.float64: torch.int64}


def _sort_ascending(x: torch.Tensor) -> torch.Tensor:
    """Each row of ``x`` (R, L), non-negative and without -0.0, sorted in increasing order.

    A non-negative IEEE float orders like its bit pattern read as a signed integer, and
    PyTorch sorts a 1-D integer tensor with a radix sort on the CPU (several times faster
    than its comparison sort of floats). Rows are sorted together by prefixing each key with
    its row number (float32: 31 value bits, so the key fits an int64).
    """
    rows, length = x.shape
    bits = x.view(_INT_OF[x.dtype])
    if rows == 1:
        return bits.reshape(-1).sort().values.view(x.dtype).reshape(1, length)
    if x.dtype == torch.float32:
        row = torch.arange(rows, device=x.device, dtype=torch.int64).unsqueeze(1)
        keys = bits.to(torch.int64) | (row << 31)  # row-major keys: rows stay apart
        low = (keys.reshape(-1).sort().values & 0x7FFFFFFF).to(torch.int32)  # drop the row prefix
        return low.view(torch.float32).reshape(rows, length)
    return x.sort(dim=1).values  # float64 rows: 63 value bits leave no room for a row prefix


def _log_cumsum_exp(log_v: torch.Tensor) -> torch.Tensor:
    r"""``torch.logcumsumexp(log_v, dim=1)`` of rows in increasing order.

    On the CPU, first as a cumulative sum in float64 of :math:`e^{v - \max v}` (several times
    faster than ``logcumsumexp``'s kernel there); it is kept unless a positive term underflowed
    to 0 in float64 (only for :math:`p` close to 1 and losses spanning hundreds of orders of
    magnitude), in which case the exact log-domain scan runs instead. Other devices always
    use the log-domain scan (fast there, and the check would synchronise).
    """
    if log_v.device.type == "cpu" and not torch.compiler.is_compiling() and log_v.shape[1] > 0:
        top = log_v[:, -1:].to(torch.float64)  # each row's largest value (increasing order)
        top = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        terms = (log_v.to(torch.float64) - top).exp_()
        if not bool(((terms == 0) & (log_v > -math.inf)).any()):
            return (terms.cumsum_(dim=1).log_() + top).to(log_v.dtype)
    return torch.logcumsumexp(log_v, dim=1)


def _top_m(x, valid, s, n, m) -> torch.Tensor:
    r"""p = 1: the mean of the m largest losses, as relative weights :math:`n w`.

    :math:`w = 1/m` above the threshold :math:`t = \ell_{(\lfloor m\rfloor + 1)}`, and the pixels
    equal to :math:`t` share what is left, :math:`1 - \#\{\ell > t\}/m`, equally (any split of
    a tie is optimal; an equal one is the limit :math:`p \to 1^+`).
    """
    dtype = x.dtype
    idx = torch.minimum(torch.floor(m), n - 1).clamp_min(0).long()  # 0-based rank of t, largest first
    t = s.gather(1, s.shape[1] - 1 - idx)  # s is in increasing order
    above = valid & (x > t)
    tied = valid & (x == t)
    n_above = torch.count_nonzero(above, dim=1).unsqueeze(1).to(torch.float64)
    n_tied = torch.count_nonzero(tied, dim=1).unsqueeze(1).to(torch.float64).clamp_min(1)
    share = ((m - n_above) / n_tied).to(dtype)  # weight x m of each tied pixel, in [0, 1]
    scale = (n / m).to(dtype)  # n tau = n / m
    return scale * torch.where(above, torch.ones((), dtype=dtype, device=x.device),
                               torch.where(tied, share, torch.zeros((), dtype=dtype, device=x.device)))


@torch.no_grad()
def _relative_weights(x: torch.Tensor, valid: torch.Tensor, p: float, ratio: float) -> torch.Tensor:
    r"""Relative LMP weights :math:`\omega = n w` (1 = uniform, 0 at invalid pixels) for each row
    of ``x`` (R, L), one problem per row. No gradient, no host synchronisation."""
    dtype = torch.promote_types(x.dtype, torch.float32)
    x = x.detach().to(dtype)
    zero = torch.zeros((), dtype=dtype, device=x.device)
    positive = valid & (x > 0)
    x = torch.where(positive, x, zero)  # ignored, zero (and -0.0) losses become +0
    n = torch.count_nonzero(valid, dim=1).unsqueeze(1).to(torch.float64)  # (R, 1) valid pixels per problem
    if math.isinf(p) or ratio == 1.0 or x.shape[1] == 0:  # tau = 1/n: the uniform weighting, exactly
        return valid.to(dtype)
    m = (ratio * n).clamp_min(1.0)  # m < 1 has the m = 1 solution (infinity-norm bound inactive)
    rows, length = x.shape
    s = _sort_ascending(x)  # per row, increasing; ignored pixels sort as 0. l_(j) = s[L - j]
    if p == 1.0:
        return torch.where(valid, _top_m(x, valid, s, n, m), zero)

    q = p / (p - 1.0)  # 1/p + 1/q = 1
    # Only the M largest losses can be capped (k <= ceil(m) - 1 < M); M is static (no sync)
    # since m <= ratio * L. In increasing order they are the head s[:, L - M:].
    big_m = min(length, max(1, math.ceil(ratio * length)))
    head = s[:, length - big_m:]
    log_v = torch.log(head).mul_(q)  # log l^q, -inf for zero losses
    # The tail (the L - M smallest), in the linear domain scaled by its largest value (no
    # overflow; underflow only drops terms below that one): log T = q log t + log sum (l / t)^q.
    if big_m < length:
        top = s[:, length - big_m - 1:length - big_m]
        top = torch.where(top > 0, top, torch.ones_like(top))  # an all-zero tail sums to 0 -> -inf
        log_tail = torch.log(top).mul_(q) + torch.log((s[:, :length - big_m] / top).pow_(q).sum(1, keepdim=True))
    else:
        log_tail = torch.full((rows, 1), -math.inf, dtype=dtype, device=x.device)
    # log S at each head loss: log sum of l^q over that loss and all smaller ones (cumulative
    # log-sum-exp in increasing order, plus the tail). Head index h has rank j = M - 1 - h.
    log_s = torch.logaddexp(_log_cumsum_exp(log_v), log_tail)
    room = (m - torch.arange(big_m - 1, -1, -1, device=x.device, dtype=torch.float64)).to(dtype)  # m - j
    # The loss of rank j + 1 is capped while l_(j+1)^q (m - j) > S_j, i.e. S_j / l_(j+1)^q < m - j;
    # the condition holds for the j below k and never at j = ceil(m) - 1.
    capped = (log_s - log_v).exp_() < room
    k = torch.minimum(torch.count_nonzero(capped, dim=1).unsqueeze(1), torch.ceil(m).long() - 1)  # number of capped pixels
    log_s_k = log_s.gather(1, big_m - 1 - k).to(torch.float64)  # log S_k
    rest = m - k  # m - k in (0, m]
    alpha = torch.exp((log_s_k - torch.log(rest)) / q).to(dtype)  # alpha^q = S_k / (m - k)
    scale = (n / m).pow(1.0 / p)  # n tau = (n / m)^{1/p}
    # omega_i = n tau min(1, (l_i / alpha)^{q-1}); alpha = 0 (below) caps every positive loss
    omega = (x / alpha).pow_(q - 1.0).clamp_max_(1.0).mul_(scale.to(dtype))
    # Fewer than m positive losses: S_k = 0, every positive pixel is capped and the zero-loss
    # pixels share the remaining budget, w = tau ((m - k) / (n - k))^{1/p}.
    fill = torch.where(torch.isneginf(log_s_k), scale * (rest / (n - k).clamp_min(1)).pow(1.0 / p),
                       torch.zeros_like(scale)).to(dtype)
    return torch.where(positive, omega, torch.where(valid, fill, zero))


def _rows(t: torch.Tensor, per_image: bool) -> torch.Tensor:
    return t.reshape(t.shape[0] if per_image else 1, -1)


def lmp_weights(
    losses: torch.Tensor,
    p: float = 1.7,
    ratio: float = 0.3,
    *,
    valid: Optional[torch.Tensor] = None,
    per_image: bool = False,
) -> torch.Tensor:
    r"""The optimal LMP weights :math:`w^\star = \arg\max_{w \in \mathcal W} \sum_i w_i \ell_i`.

    Parameters
    ----------
    losses : torch.Tensor
        Finite, non-negative pixel losses :math:`\ell_i`, any shape (e.g. ``(N, H, W)``); no
        gradient flows through the weights.
    p : float
        :math:`p \in [1, \infty]`. ``p = 1``: the weight :math:`1/m` on the :math:`m` largest
        losses (top-k mining); ``p = inf``: uniform.
    ratio : float
        :math:`\rho \in (0, 1]`, :math:`m = \rho n`. ``ratio = 1``: uniform.
    valid : torch.Tensor, optional
        Bool mask of the pixels that count (e.g. ``target != ignore_index``); the others are
        left out of :math:`n` and get the weight 0. Default: all pixels.
    per_image : bool
        ``False``: one problem over all valid pixels. ``True``: one problem per index of the
        first dimension (an image), each with its own :math:`n` and :math:`m`.

    Returns
    -------
    torch.Tensor
        :math:`w^\star`, same shape, dtype and device as ``losses`` (float32 arithmetic for
        half precision): :math:`\|w\|_p \le \gamma`, :math:`0 \le w \le \tau` per problem,
        :math:`w = 1/n` for the uniform cases; 0 at invalid pixels and for a problem without
        valid pixels.

    Notes
    -----
    In the book: :doc:`Loss max-pooling: the closed form </notebooks/04_lmp/01_derivation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import lmp_weights
    >>> losses = torch.tensor([4.0, 1.0, 0.5, 0.0, 2.0])
    >>> w = lmp_weights(losses, p=2.0, ratio=0.4)   # m = 2
    >>> w
    tensor([0.3162, 0.1380, 0.0690, 0.0000, 0.2760])
    >>> round(w.norm(p=2).item(), 4)                # ||w||_2 = gamma = 5^(-1/2)
    0.4472
    >>> # p = 1: 1/m on the m largest losses
    >>> lmp_weights(losses, p=1.0, ratio=0.4)
    tensor([0.5000, 0.0000, 0.0000, 0.0000, 0.5000])
    """
    per_image = _check_per_image(per_image)
    losses, valid = _check_losses(losses, valid, per_image)
    p, ratio = _check_p(p), _check_ratio(ratio)
    if losses.numel() == 0:
        return torch.zeros_like(losses)
    _check_values(losses, valid)
    x, mask = _rows(losses, per_image), _rows(valid, per_image)
    omega = _relative_weights(x, mask, p, ratio)
    n = torch.count_nonzero(mask, dim=1).unsqueeze(1).clamp_min(1).to(omega.dtype)
    return (omega / n).reshape(losses.shape).to(losses.dtype)  # w = omega / n


def lmp_pool(
    losses: torch.Tensor,
    p: float = 1.7,
    ratio: float = 0.3,
    *,
    valid: Optional[torch.Tensor] = None,
    per_image: bool = False,
) -> torch.Tensor:
    r"""The pooled loss :math:`\mathrm{LMP}(\ell) = \sum_i w^\star_i \ell_i` of each problem.

    Same arguments as :func:`lmp_weights`. Returns a scalar (``per_image=False``) or one value
    per image ``(N,)``, differentiable in ``losses`` with the weights held constant. A problem
    without valid pixels pools to 0.

    Notes
    -----
    In the book: :doc:`Loss max-pooling: the closed form </notebooks/04_lmp/01_derivation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import lmp_pool
    >>> losses = torch.tensor([4.0, 1.0, 0.5, 0.0, 2.0])
    >>> round(lmp_pool(losses, p=2.0, ratio=0.4).item(), 4)   # >= the mean, 1.5
    1.9895
    >>> # mean of the 2 largest
    >>> lmp_pool(losses, p=1.0, ratio=0.4).item()
    3.0
    """
    per_image = _check_per_image(per_image)
    losses, valid = _check_losses(losses, valid, per_image)
    if losses.numel() == 0:
        return losses.reshape(losses.shape[0], 0).sum(1) if per_image else losses.sum()
    w = lmp_weights(losses, p, ratio, valid=valid, per_image=per_image)
    # 0 * inf would be NaN: ignored pixels may hold anything
    masked = torch.where(valid, losses, torch.zeros((), dtype=losses.dtype, device=losses.device))
    pooled = _rows(w * masked, per_image).sum(1)  # sum_i w_i l_i
    return pooled if per_image else pooled[0]


def lmp_weights_reference(losses, p: float, ratio: float, tol: float = 1e-15):
    r"""The LMP weights from a generic constrained solver (SciPy's SLSQP): the independent check
    of the closed form. Slow, float64, one 1-D problem, ``1 < p < inf``.

    Solves :math:`\max_u \tfrac1n \sum_i u_i \ell_i` over :math:`u = n w` with
    :math:`0 \le u_i \le n\tau` and :math:`\tfrac1n \sum_i u_i^p \le 1` (:math:`\|w\|_p \le \gamma`),
    from the feasible start :math:`u = 1`, and returns :math:`w = u / n` as a NumPy array.

    Notes
    -----
    In the book: :doc:`Loss max-pooling: the closed form </notebooks/04_lmp/01_derivation>` checks the closed form against it.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import lmp_weights, lmp_weights_reference
    >>> losses = [4.0, 1.0, 0.5, 0.0, 2.0]
    >>> w_solver = lmp_weights_reference(losses, p=2.0, ratio=0.4)
    >>> [round(float(w), 4) for w in w_solver]
    [0.3162, 0.138, 0.069, 0.0, 0.276]
    >>> x = torch.tensor(losses, dtype=torch.float64)
    >>> w_closed = lmp_weights(x, p=2.0, ratio=0.4)
    >>> bool(abs(w_closed.numpy() - w_solver).max() < 1e-6)
    True
    """
    import numpy as np
    from scipy.optimize import minimize

    p, ratio = _check_p(p), _check_ratio(ratio)
    if p == 1.0 or math.isinf(p):
        raise ValueError(f"the reference solver needs 1 < p < inf (the smooth problem), got p={p}")
    ell = np.asarray(losses, dtype=float).ravel()
    n = ell.size
    if n == 0 or not np.all(np.isfinite(ell)) or np.any(ell < 0):
        raise ValueError("losses must be a non-empty array of finite, non-negative numbers")
    _, tau, _ = lmp_bounds(n, p, ratio)
    c = ell / (ell.max() if ell.max() > 0 else 1.0)  # objective of order 1

    def slack(u):  # 1 - mean(u^p) >= 0
        return 1.0 - np.mean(np.abs(u) ** p)

    # SLSQP sometimes stops early on these degenerate linear objectives; retry from other
    # feasible starts and tolerances, and accept a point only if it is feasible. Status 8
    # ("positive directional derivative in the line search") means that no step improves the
    # objective at this precision.
    for start in (1.0, 0.5, 0.1):
        for ftol in (tol, 10 * tol, 100 * tol):
            result = minimize(
                lambda u: -c @ u, np.full(n, start), jac=lambda u: -c, method="SLSQP",
                bounds=[(0.0, n * tau)] * n,
                constraints=[{"type": "ineq", "fun": slack, "jac": lambda u: -p * np.abs(u) ** (p - 1) / n}],
                options={"ftol": ftol, "maxiter": 3000},
            )
            if result.status in (0, 8) and slack(result.x) > -1e-12:
                return np.clip(result.x, 0.0, n * tau) / n
    raise RuntimeError(f"SLSQP found no feasible optimum: {result.message}")


# --------------------------------------------------------------------------------------
# the loss
# --------------------------------------------------------------------------------------
def _check_pixel_loss(pixel_loss) -> Optional[PixelLoss]:
    if pixel_loss is not None and not callable(pixel_loss):
        raise TypeError(f"pixel_loss must be a callable or None, got {type(pixel_loss).__name__}")
    return pixel_loss


def _pixel_losses(logits, target, ignore_index, pixel_loss):
    """Per-pixel losses and the valid mask, in the target's layout."""
    prepared = prepare(logits, target, ignore_index, kernel_checks_labels=pixel_loss is None)
    if pixel_loss is None:
        return pixel_ce(prepared), prepared.valid  # CE_i = -log p_{i, y_i}, 0 at ignored pixels
    losses = pixel_loss(logits, target, ignore_index=ignore_index, reduction="none")
    if not isinstance(losses, torch.Tensor) or losses.shape != prepared.valid.shape:
        got = tuple(losses.shape) if isinstance(losses, torch.Tensor) else type(losses).__name__
        raise ValueError(
            f"pixel_loss(..., reduction='none') must return a per-pixel map of shape "
            f"{tuple(prepared.valid.shape)}, got {got}"
        )
    return losses, prepared.valid


def loss_max_pooling(
    logits: torch.Tensor,
    target: torch.Tensor,
    p: float = 1.7,
    ratio: float = 0.3,
    per_image: bool = False,
    ignore_index: Optional[int] = None,
    reduction: str = "mean",
    pixel_loss: Optional[PixelLoss] = None,
) -> torch.Tensor:
    r"""Loss max-pooling of a per-pixel loss (default: cross-entropy), from logits.

    Parameters
    ----------
    logits : torch.Tensor
        ``(N, C, H, W)`` with ``C >= 2`` (softmax CE) or ``(N, 1, H, W)`` (binary).
    target : torch.Tensor
        ``(N, H, W)`` class indices (multiclass); ``(N, H, W)`` or ``(N, 1, H, W)`` in {0, 1}
        (binary). Pixels equal to ``ignore_index`` are left out of :math:`n`.
    p : float
        :math:`p \in [1, \infty]` (default 1.7, the public code's). 1: mean of the
        :math:`m` hardest pixels (top-k mining); ``inf``: plain mean.
    ratio : float
        :math:`\rho \in (0, 1]` (default 0.3): :math:`m = \rho n`. 1: plain mean.
    per_image : bool
        One LMP problem per image (``True``) or one over the whole batch (``False``, as the
        public code does).
    ignore_index : int, optional
        Target value of pixels that do not count.
    reduction : {"mean", "sum", "none"}
        Of the re-weighted map :math:`\omega_i \ell_i` with :math:`\omega_i = n w^\star_i`:
        ``"none"`` returns it (target layout, 0 at ignored pixels), ``"sum"`` sums it,
        ``"mean"`` divides that sum by the number of valid pixels — the LMP value itself
        for ``per_image=False``; with ``ratio = 1`` every reduction equals CE's.
    pixel_loss : callable, optional
        ``pixel_loss(logits, target, ignore_index=..., reduction="none")`` returning finite,
        non-negative per-pixel losses in the target's layout, e.g.
        ``functools.partial(pixelweight.losses.focal_loss, gamma=2)``. Default: CE.

    Returns
    -------
    torch.Tensor
        Scalar or map; the weights are constants in the backward pass. An all-ignored batch
        gives a zero that keeps the graph.

    Notes
    -----
    In the book: derived in :doc:`Loss max-pooling: the closed form </notebooks/04_lmp/01_derivation>`; trained in
    :doc:`Loss max-pooling: does it help on a long tail? </notebooks/04_lmp/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import cross_entropy, loss_max_pooling
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> round(loss_max_pooling(logits, target, p=1.7, ratio=0.3).item(), 4)
    2.0812
    >>> # ratio 1: the CE mean
    >>> round(loss_max_pooling(logits, target, ratio=1.0).item(), 4)
    1.7511
    >>> round(cross_entropy(logits, target).item(), 4)
    1.7511
    """
    p, ratio = _check_p(p), _check_ratio(ratio)
    per_image = _check_per_image(per_image)
    check_reduction(reduction)
    ignore_index = check_ignore_index(ignore_index)
    pixel_loss = _check_pixel_loss(pixel_loss)
    if pixel_loss is None and (ratio == 1.0 or math.isinf(p)):  # the uniform weighting: exactly CE
        return ce_total(prepare(logits, target, ignore_index, kernel_checks_labels=True), reduction)
    losses, valid = _pixel_losses(logits, target, ignore_index, pixel_loss)
    if pixel_loss is not None:  # CE is >= 0 by construction (non-finite logits give a non-finite loss)
        _check_values(losses, valid)
    omega = _relative_weights(_rows(losses, per_image), _rows(valid, per_image), p, ratio)
    omega = omega.reshape(losses.shape).to(losses.dtype)
    return reduce_pixel_loss(omega * losses, valid, reduction)  # sum_i omega_i l_i (/ n)


class LossMaxPooling(nn.Module):
    """Module form of :func:`loss_max_pooling` (no state: the weights are recomputed per batch).

    Notes
    -----
    In the book: derived in :doc:`Loss max-pooling: the closed form </notebooks/04_lmp/01_derivation>`; trained in
    :doc:`Loss max-pooling: does it help on a long tail? </notebooks/04_lmp/02_experiments>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import LossMaxPooling
    >>> _ = torch.manual_seed(0)
    >>> logits = torch.randn(2, 3, 4, 4)
    >>> target = torch.randint(0, 3, (2, 4, 4))
    >>> # mean of the 4 hardest pixels
    >>> loss_fn = LossMaxPooling(p=1.0, ratio=0.25, per_image=True)
    >>> round(loss_fn(logits, target).item(), 4)
    3.0914
    """

    def __init__(
        self,
        p: float = 1.7,
        ratio: float = 0.3,
        per_image: bool = False,
        ignore_index: Optional[int] = None,
        reduction: str = "mean",
        pixel_loss: Optional[PixelLoss] = None,
    ) -> None:
        super().__init__()
        self.p = _check_p(p)
        self.ratio = _check_ratio(ratio)
        self.per_image = _check_per_image(per_image)
        self.ignore_index = check_ignore_index(ignore_index)
        self.reduction = check_reduction(reduction)
        self.pixel_loss = _check_pixel_loss(pixel_loss)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return loss_max_pooling(logits, target, self.p, self.ratio, self.per_image, self.ignore_index,
                                self.reduction, self.pixel_loss)

    def extra_repr(self) -> str:
        loss = "cross_entropy" if self.pixel_loss is None else getattr(self.pixel_loss, "__name__", repr(self.pixel_loss))
        return (f"p={self.p}, ratio={self.ratio}, per_image={self.per_image}, "
                f"ignore_index={self.ignore_index}, reduction={self.reduction!r}, pixel_loss={loss}")
