r"""Separable blurs with a symmetric kernel and zero padding, for the foreground-map losses.

The Weighted F-measure blurs errors with Margolin's 7x7 Gaussian (:math:`\sigma = 5`),
SSIM takes local statistics under an 11x11 Gaussian (:math:`\sigma = 1.5`). Both kernels
are outer products :math:`K = k k^\top` of a symmetric 1-D kernel :math:`k_{-r..r}`
(:math:`k_{-t} = k_t`), and both references pad with zeros ("same" output size). So

.. math:: (K * X)_{i,j} = \sum_{s,t=-r}^{r} k_s k_t X_{i+s, j+t}
          \quad (X = 0 \text{ outside the image}),

computed as two 1-D passes, each :math:`k_0 X + \sum_{t=1}^{r} k_t (X_{\cdot+t} + X_{\cdot-t})`:
in-place adds of shifted slices, exact zero padding, any image size (a shift past the
border adds nothing).

Why not a plain ``conv2d``: on the CPU PyTorch's convolution with one input channel is a
slow path (an im2col and a matrix product of one row): for a batch of 8 maps of 256x256 a
7x7 ``conv2d`` measured 23 ms on one thread, the two shifted passes of :func:`blur` 3-4 ms.

:func:`conv_blur` gives the convolution channels instead: the columns of each map are cut
into blocks of ``block`` (16) adjacent columns, and column ``c`` of a block becomes channel
``c`` of a channels-last image of ``W / block`` columns (a view, no copy). The vertical pass is
then a depthwise ``conv2d`` (kernel ``(2r+1) x 1``, one group per channel), the horizontal one
a dense ``block -> block`` ``conv2d`` over 3 neighbouring blocks whose weight places
:math:`k_t` at the channel pairs ``t`` columns apart; the convolution's own zero padding is
the image's. Both are vectorised convolutions of oneDNN (cuDNN on a GPU): for the same
8 x 256 x 256 batch about 1 ms on one thread, four times faster than :func:`blur` (which stays
the faster one on small maps, where the per-call overhead of a convolution dominates).

The operator is self-adjoint (a symmetric kernel with zero padding is a symmetric matrix),
so :class:`SymmetricBlur`'s backward pass is the same blur of the incoming gradient.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Tuple

import torch
import torch.nn.functional as F

Kernel = Tuple[float, ...]


def gaussian_half_kernel(size: int, sigma: float) -> Kernel:
    r"""The normalised 1-D Gaussian of odd ``size`` as its half :math:`(k_0, k_1, \dots, k_r)`.

    :math:`k_t \propto \exp(-t^2 / 2\sigma^2)` for :math:`t = -r..r`, :math:`r = (size-1)/2`,
    normalised so that the full kernel sums to 1, in float64. The outer product of this
    kernel with itself is MATLAB's ``fspecial('gaussian', size, sigma)`` (whose truncation of
    values below ``eps * max`` never applies for the sizes used here) and pytorch-ssim's
    ``create_window(size)`` for ``sigma = 1.5``.
    """
    if size % 2 != 1 or size < 1:
        raise ValueError(f"size must be a positive odd integer, got {size}")
    r = size // 2
    full = [math.exp(-(t * t) / (2.0 * sigma * sigma)) for t in range(-r, r + 1)]
    total = math.fsum(full)
    return tuple(v / total for v in full[r:])


def unit_sum_half_kernel(half: Kernel, dtype: torch.dtype) -> Kernel:
    r"""``half`` rounded to multiples of :math:`2^{-b}` whose full kernel sums to exactly 1.

    :math:`b = 45` for float64, 24 otherwise: every tap and every partial sum of taps is then
    exact in ``dtype``, so a blur of a constant region returns the constant itself in any
    summation order (a map that is wrong everywhere keeps :math:`E_A = E` exactly). The taps
    move by at most :math:`2^{-b-1}` (:math:`3 \cdot 10^{-14}` relative in float64, below
    float32's own rounding otherwise); the centre tap takes the remainder.
    """
    bits = 45 if dtype == torch.float64 else 24
    scale = float(2**bits)
    side = [round(v * scale) for v in half[1:]]
    centre = int(scale) - 2 * sum(side)
    return tuple(v / scale for v in [centre] + side)


def _blur_dim(x: torch.Tensor, half: Kernel, dim: int) -> torch.Tensor:
    """One 1-D pass along ``dim``: a fresh tensor ``k_0 x + sum_t k_t (x shifted by +t and -t)``."""
    out = x * half[0]
    size = x.shape[dim]
    for t in range(1, len(half)):
        if t >= size:
            break  # a shift past the border adds only padding zeros
        k = half[t]
        out.narrow(dim, t, size - t).add_(x.narrow(dim, 0, size - t), alpha=k)  # out_i += k_t x_{i-t}
        out.narrow(dim, 0, size - t).add_(x.narrow(dim, t, size - t), alpha=k)  # out_i += k_t x_{i+t}
    return out


def blur(x: torch.Tensor, half: Kernel) -> torch.Tensor:
    r""":math:`K * X` over the last two dimensions of ``x`` (zero padding, same size); no autograd."""
    return _blur_dim(_blur_dim(x, half, -2), half, -1)


#: Columns per block of :func:`conv_blur`: the channel count of its convolutions.
CONV_BLOCK = 16


@lru_cache(maxsize=None)
def _block_weights(half: Kernel, block: int, scale: float, dtype: torch.dtype, device: torch.device):
    """``(vertical, horizontal, reach)``: the two ``conv2d`` weights of :func:`conv_blur` and the
    number of neighbouring blocks the horizontal one reaches on each side (constants, cached)."""
    r = len(half) - 1
    full = torch.tensor(half[::-1] + half[1:], dtype=torch.float64)  # k_{-r..r}
    vertical = full.reshape(1, 1, 2 * r + 1, 1).expand(block, 1, 2 * r + 1, 1)
    reach = -(-r // block)  # ceil(r / block)
    horizontal = torch.zeros(block, block, 1, 2 * reach + 1, dtype=torch.float64)
    out_c = torch.arange(block).reshape(block, 1, 1)
    in_c = torch.arange(block).reshape(1, block, 1)
    shift = torch.arange(-reach, reach + 1).reshape(1, 1, -1)
    offset = block * shift + in_c - out_c  # input column - output column
    inside = offset.abs() <= r
    horizontal[:, :, 0] = torch.where(inside, scale * full[(offset + r).clamp(0, 2 * r)], torch.zeros(()))
    return (vertical.to(device=device, dtype=dtype).contiguous(),
            horizontal.to(device=device, dtype=dtype).contiguous(), reach)


def conv_blur(x: torch.Tensor, half: Kernel, scale: float = 1.0, block: int = CONV_BLOCK) -> torch.Tensor:
    r"""``scale`` times :math:`K * X` for ``x`` of shape (N, H, W), as two block convolutions.

    The same operator as :func:`blur` (zero padding, same size; equal to rounding), computed
    by two ``conv2d`` calls on a channels-last view (see the module notes). ``W`` is padded
    with zero columns to a multiple of ``block`` when it is not one (a copy). Differentiable by
    autograd (the convolution's backward pass), on any device; ``len(half) - 1 <= block``.
    ``scale`` (e.g. -1) is folded into the weights.
    """
    n, h, w = x.shape
    vertical, horizontal, reach = _block_weights(tuple(half), block, float(scale), x.dtype, x.device)
    pad = -w % block
    if pad:
        x = F.pad(x, (0, pad))
    cols = (w + pad) // block
    v = x.reshape(n, h, cols, block).permute(0, 3, 1, 2)  # (N, block, H, cols), channels last
    v = F.conv2d(v, vertical, padding=(len(half) - 1, 0), groups=block)
    v = F.conv2d(v, horizontal, padding=(0, reach))
    out = v.permute(0, 2, 3, 1).reshape(n, h, w + pad)
    return out[..., :w] if pad else out


class SymmetricBlur(torch.autograd.Function):
    r""":func:`blur` as an autograd function whose backward pass is the same blur.

    ``SymmetricBlur.apply(x, half)``: ``x`` floating, at least 2-D; ``half`` the half kernel
    :math:`(k_0, \dots, k_r)` as Python floats.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, half: Kernel) -> torch.Tensor:
        ctx.half = half
        return blur(x, half)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return SymmetricBlur.apply(grad, ctx.half), None
