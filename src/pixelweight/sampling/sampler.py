r"""The saliency sampler (Recasens, Kellnhofer, Stent, Matusik, Torralba. *Learning to Zoom: a
Saliency-Based Sampling Layer for Neural Networks*, ECCV 2018, arXiv:1809.03355).

A task network that must see a large image at a small input size usually sees a uniformly
downsampled copy. The saliency sampler instead lets a small network look at a low-resolution
copy, predict a **saliency map** :math:`S \ge 0` on a coarse :math:`g_h \times g_w` grid, and
then samples the **high-resolution** image more densely where :math:`S` is large: a salient
region is magnified, a dull one compressed, and the task network's input size stays the same.

**The sampling grid** [code: recasens/Saliency-Sampler, ``saliency_sampler.py``; paper eq. 3-4].
The grid point :math:`x` of the output takes the saliency-weighted Gaussian average of the
coordinates of all cells :math:`x'`,

.. math::
    u(x) = \frac{\sum_{x'} S(x')\, k(x, x')\, x'}{\sum_{x'} S(x')\, k(x, x')}, \qquad
    k(x, x') = \exp\!\Big(-\frac{\lVert x - x' \rVert^2}{2\sigma^2}\Big)
    \ \text{for}\ \lVert x - x' \rVert_\infty \le R,\ 0 \text{ beyond},

with :math:`x, x'` on the lattice of grid cells, :math:`\sigma` and the kernel radius
:math:`R` in cells, and coordinates in PyTorch's normalised :math:`[-1, 1]` with
``align_corners=True`` (cell :math:`i` of :math:`g` sits at :math:`-1 + 2i/(g-1)`). The
map :math:`u` gives, for every output pixel, where to read the input:
``grid_sample(x_high, u, align_corners=True)``. The grid is computed on the coarse lattice,
its displacement :math:`u(x) - x` is upsampled bilinearly (``align_corners=True``) to the
output size, and the coordinates are clamped to :math:`[-1, 1]` as in the code (here after
the upsampling).

**Why the padding makes uniform saliency an exact identity** [derived, a test]. The
average is taken over the saliency map replicate-padded by :math:`P` cells, whose
coordinates continue linearly beyond :math:`\pm 1`. If :math:`R \le P`, the window
:math:`\{x' : |x' - x| \le R\}` of every grid point lies inside the padded map, so for a
constant :math:`S`

.. math::
    u(x) = x + \frac{\sum_{|d| \le R} k(d)\, d}{\sum_{|d| \le R} k(d)} = x

because :math:`k` is even: uniform saliency gives **exactly** uniform sampling, and the
sampler then equals ``F.interpolate(x, size, mode="bilinear", align_corners=True)``. Without
padding (:math:`P = 0`) the window of a grid point near the border is cut on the outer side,
the average is pulled inward, and the grid **shrinks toward the centre** (the image border is
never read). Here the padding is folded into the linear operators: replicate padding and the
separable Gaussian together are one :math:`g \times g` matrix per axis (built once, in float64),
so the padding costs nothing at run time, and the average is computed as the identity plus a
displacement, :math:`u(x) = x + \sum w\,(x' - x) / \sum w`, whose numerator is a symmetric sum
that cancels to rounding error for uniform saliency.

**The warp does not fold** [derived]. Without truncation, :math:`u(x) = x + \sigma^2 \nabla
\log Z(x)` with :math:`Z(x) = \sum_{x'} S(x') k(x, x')`, so :math:`u = \nabla \varphi` for
:math:`\varphi(x) = \lVert x \rVert^2/2 + \sigma^2 \log Z(x)`, whose Hessian is the covariance of
:math:`x'` under the weights :math:`S(x') k(x, x') / Z(x)`, divided by :math:`\sigma^2`: positive
semi-definite. The warp is the gradient of a convex function, hence monotone (it never folds),
and its Jacobian :math:`\mathrm{Cov}(x')/\sigma^2` is small — the sampling dense, the image
magnified — where the saliency near :math:`x` is concentrated. A flat saliency gives a
covariance close to :math:`\sigma^2 I` and almost no warp: the warping is weak when the
saliency contrast is low [code: a known pitfall], and the magnification at a peak grows with its
contrast (a test). This is what lets :func:`~pixelweight.sampling.invert_grid` invert the grid.

**The kernel width: paper and code disagree** [code; paper, unverified]. The paper states
:math:`\sigma` as one third of the saliency map's width (:math:`31/3 \approx 10.3` cells); the
public code builds a :math:`61 \times 61` Gaussian with a full width at half maximum of 13
cells, :math:`\sigma = 13 / (2\sqrt{2 \ln 2}) \approx 5.52` cells, :math:`R = P = 30`,
:math:`g = 31` (its issue #6, open, asks which is right). The defaults here are the code's
(:data:`~pixelweight.sampling.CODE_SIGMA`, :data:`~pixelweight.sampling.CODE_GRID_SIZE`,
:data:`~pixelweight.sampling.CODE_PADDING`), since the paper's numbers
were produced by it; ``sigma=grid_size / 3`` gives the paper's statement.

**Training details of the code** [code]. The saliency network (ResNet-18 to layer 3 and a
1x1 convolution, on a 224 x 224 copy) outputs logits; a softmax over all cells turns them into
the saliency map (``activation="softmax"`` here). The Gaussian is a fixed convolution that the
code keeps out of the optimiser; here it is a buffer, never a parameter. For the first 30 epochs
the sampled image is average-pooled to a random size in [64, 224] and upsampled back (the
**blur warm-up**, ``blur_warmup=True``), which keeps the task network from relying on the fine
detail of an early, arbitrary zoom; Jin et al. (ICLR 2022) call it "important to avoid
degenerate solutions". The code's learning-rate multipliers for the saliency parts (0.01 /
0.001) are an optimiser setting, not part of this module.

In the book: :doc:`Learning to zoom: the saliency sampler, derived and drawn </notebooks/03_zoom/01_derivation>`;
trained on a classification task in :doc:`Learning to zoom: classifying a small digit on a large canvas
</notebooks/03_zoom/02_classification>`.

**Pitfalls of the public code**, each avoided here: ``.cuda()`` is hard-coded (here the device
and dtype follow the input); the Gaussian convolution is trainable unless frozen (here a
buffer); ``align_corners`` changed meaning after PyTorch 0.4 (here ``True`` everywhere, which
makes the identity exact).
"""

from __future__ import annotations

import functools
import math
from numbers import Integral
from typing import NamedTuple, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_float, check_int, check_tensor, require

__all__ = [
    "CODE_GRID_SIZE",
    "CODE_PADDING",
    "CODE_SIGMA",
    "SaliencySampler",
    "SamplerOutput",
    "gaussian_kernel",
    "identity_grid",
    "saliency_grid",
    "zoom",
]

Size = Union[int, Sequence[int]]

#: The public code's kernel width, in grid cells: a Gaussian of full width at half maximum
#: 13 cells, :math:`\sigma = 13 / (2 \sqrt{2 \ln 2}) \approx 5.52`. (The paper says one third of
#: the map's width instead; see the module notes.)
CODE_SIGMA = 13.0 / (2.0 * math.sqrt(2.0 * math.log(2.0)))
#: The public code's saliency grid: 31 x 31 cells.
CODE_GRID_SIZE = 31
#: The public code's replicate padding (and kernel radius), in cells: 30, so that the
#: 61 x 61 kernel of every grid point stays inside the padded 91 x 91 map.
CODE_PADDING = 30

SAMPLING_MODES = ("bilinear", "nearest", "bicubic")
ACTIVATIONS = ("softmax", "none")


# --------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------
def _check_size(value, name: str, minimum: int = 2) -> Tuple[int, int]:
    """An int ``k`` (meaning ``(k, k)``) or a pair ``(h, w)``, each ``>= minimum``."""
    if isinstance(value, (tuple, list, torch.Size)):
        if len(value) != 2:
            raise ValueError(f"{name} must be an int or a pair (height, width), got {value!r}")
        return (check_int(value[0], f"{name}[0]", minimum), check_int(value[1], f"{name}[1]", minimum))
    if isinstance(value, bool) or not isinstance(value, Integral):
        raise TypeError(f"{name} must be an int or a pair (height, width) of ints, got "
                        f"{type(value).__name__} ({value!r})")
    k = check_int(value, name, minimum)
    return k, k


def _check_sigma(sigma) -> float:
    return check_float(sigma, "sigma", minimum=0.0, min_inclusive=False)


def _check_radius(radius, padding: int, grid: Tuple[int, int]) -> int:
    """The kernel radius: ``padding`` when it is positive, else the whole map."""
    if radius is None:
        return padding if padding > 0 else max(grid) - 1
    return check_int(radius, "radius", minimum=0)


def _check_image(x, name: str) -> torch.Tensor:
    check_tensor(x, name)
    if x.ndim != 4:
        raise ValueError(f"{name} must have shape (N, C, H, W), got {tuple(x.shape)}")
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {x.dtype}")
    return x


def _check_grid(grid, name: str = "grid") -> torch.Tensor:
    """A sampling grid (N, H, W, 2) of finite floats: one ``aminmax``-like pass, a
    :func:`~pixelweight._validation.require` check (no host sync on CUDA)."""
    check_tensor(grid, name)
    if grid.ndim != 4 or grid.shape[-1] != 2:
        raise ValueError(f"{name} must have shape (N, H, W, 2), got {tuple(grid.shape)}")
    if not grid.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got dtype {grid.dtype}")
    if grid.numel():
        def message() -> str:
            bad = ~torch.isfinite(grid.detach())
            return (f"{name} must be finite (PyTorch's grid_sample would turn a NaN coordinate into a "
                    f"finite pixel value); found {int(bad.sum())} non-finite value(s)")

        require(grid.detach().abs().amax() < math.inf, message,  # NaN fails the test too
                f"pixelweight: {name} must be finite")
    return grid


def _check_saliency(saliency) -> torch.Tensor:
    """(N, 1, g_h, g_w) or (N, g_h, g_w) floating saliency, returned as (N, g_h, g_w)."""
    check_tensor(saliency, "saliency")
    if not saliency.is_floating_point():
        raise ValueError(f"saliency must be a floating tensor, got dtype {saliency.dtype}")
    if saliency.ndim == 4:
        if saliency.shape[1] != 1:
            raise ValueError(f"saliency must have shape (N, 1, g_h, g_w) or (N, g_h, g_w), got "
                             f"{tuple(saliency.shape)} (one channel)")
        saliency = saliency[:, 0]
    elif saliency.ndim != 3:
        raise ValueError(f"saliency must have shape (N, 1, g_h, g_w) or (N, g_h, g_w), got {tuple(saliency.shape)}")
    if saliency.shape[-2] < 2 or saliency.shape[-1] < 2:
        raise ValueError(f"the saliency grid must be at least 2 x 2 cells, got {tuple(saliency.shape[-2:])}")
    return saliency


def _saliency_problems(s: torch.Tensor) -> list:
    s = s.detach()
    problems = []
    nan, inf, neg = int(torch.isnan(s).sum()), int(torch.isinf(s).sum()), int((s < 0).sum())
    if nan:
        problems.append(f"{nan} NaN value(s)")
    if inf:
        problems.append(f"{inf} infinite value(s)")
    if neg:
        problems.append(f"{neg} negative value(s), e.g. {s[s < 0][:3].tolist()}")
    zero = [i for i, m in enumerate(s.flatten(1).amax(1).tolist()) if m == 0]
    if zero:
        problems.append(f"an all-zero map in image(s) {zero[:5]}")
    return problems


def _grid_message(saliency: torch.Tensor) -> str:
    """Why the grid of ``saliency`` (N, g_h, g_w) failed its check (called only on failure)."""
    problems = _saliency_problems(saliency)
    if problems:
        return ("saliency must be finite and non-negative with a positive value somewhere in every image "
                "(apply a softmax or a softplus to a network's output); found " + ", ".join(problems))
    return ("the Gaussian-weighted saliency is 0 at some grid point: no cell within the kernel's reach has "
            "positive saliency, or exp(-d^2 / 2 sigma^2) underflows; increase sigma or radius, or give every "
            "cell a positive saliency (e.g. a softmax)")


_GRID_DEVICE_MESSAGE = ("pixelweight: saliency must be finite and non-negative with a positive value in every "
                        "image, and its Gaussian-weighted sum positive at every grid point (increase sigma)")


# --------------------------------------------------------------------------------------
# the Gaussian operators
# --------------------------------------------------------------------------------------
def gaussian_kernel(sigma: float, radius: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    r"""The 1-D kernel :math:`k(d) = \exp(-d^2 / 2\sigma^2)`, :math:`d = -R, \dots, R`, not normalised.

    The 2-D kernel of the sampler is its outer product (the Gaussian is separable). ``sigma``
    (> 0) and ``radius`` (>= 0) are in grid cells; computed in float64, returned in ``dtype``.

    Examples
    --------
    >>> import math
    >>> from pixelweight.sampling import CODE_SIGMA, gaussian_kernel
    >>> k = gaussian_kernel(CODE_SIGMA, 30)
    >>> k.shape, float(k[30])
    (torch.Size([61]), 1.0)
    >>> round(math.exp(-6.5 ** 2 / (2 * CODE_SIGMA ** 2)), 6)  # half maximum 6.5 cells out: FWHM 13
    0.5
    """
    sigma = _check_sigma(sigma)
    radius = check_int(radius, "radius", minimum=0)
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    return torch.exp(-d.square() / (2.0 * sigma * sigma)).to(dtype)


def _axis_operators(kernel: torch.Tensor, size: int, padding: int) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""The Gaussian average along one axis of ``size`` cells, replicate padding folded in.

    ``M[i, a] = sum_p k(i - p)`` and ``O[i, a] = sum_p k(i - p) (c_p - c_i)`` over the padded
    positions :math:`p \in [-P, g - 1 + P]` within the kernel's radius that replicate cell
    :math:`a` (:math:`\mathrm{clamp}(p, 0, g-1) = a`), with :math:`c_p = -1 + 2p/(g-1)` continued
    linearly into the pad. Computed in float64.
    """
    kernel = kernel.to(torch.float64)
    radius = (kernel.numel() - 1) // 2
    i = torch.arange(size, dtype=torch.float64)
    p = torch.arange(-padding, size + padding, dtype=torch.float64)
    d = (i[:, None] - p[None, :]).round().long()  # (g, g + 2P) integer offsets
    inside = d.abs() <= radius
    k = torch.where(inside, kernel[(d + radius).clamp(0, 2 * radius)], torch.zeros((), dtype=torch.float64))
    coord = lambda t: -1.0 + 2.0 * t / (size - 1)  # noqa: E731
    offset = k * (coord(p)[None, :] - coord(i)[:, None])
    source = p.long().clamp(0, size - 1)
    m = torch.zeros(size, size, dtype=torch.float64).index_add_(1, source, k)
    o = torch.zeros(size, size, dtype=torch.float64).index_add_(1, source, offset)
    return m, o


def _upsampling_matrix(size: int, out: int) -> torch.Tensor:
    """``U`` (out, size): ``U @ v`` is ``F.interpolate(v, out, mode="linear", align_corners=True)``."""
    if size == 1:
        return torch.ones(out, 1, dtype=torch.float64)
    pos = torch.arange(out, dtype=torch.float64) * ((size - 1) / (out - 1))
    low = pos.floor().clamp(0, size - 2).long()
    frac = pos - low
    u = torch.zeros(out, size, dtype=torch.float64)
    rows = torch.arange(out)
    u[rows, low] += 1.0 - frac
    u[rows, low + 1] += frac
    return u


def _operators(grid: Tuple[int, int], out_size: Tuple[int, int], kernel: torch.Tensor,
               padding: int) -> Tuple[torch.Tensor, torch.Tensor, Optional[torch.Tensor], Optional[torch.Tensor]]:
    """The grid's linear maps, float64: ``left`` = [M_h; O_h] (2 g_h, g_h), ``right`` =
    [M_w^T, O_w^T] (g_w, 2 g_w), and the bilinear upsampling matrices (``None`` where the
    output has the grid's size)."""
    m_h, o_h = _axis_operators(kernel, grid[0], padding)
    m_w, o_w = _axis_operators(kernel, grid[1], padding)
    up_h = None if out_size[0] == grid[0] else _upsampling_matrix(grid[0], out_size[0])
    up_w = None if out_size[1] == grid[1] else _upsampling_matrix(grid[1], out_size[1])
    return torch.cat((m_h, o_h), dim=0), torch.cat((m_w, o_w), dim=0).transpose(0, 1).contiguous(), up_h, up_w


@functools.lru_cache(maxsize=32)
def _cached_operators(grid: Tuple[int, int], out_size: Tuple[int, int], sigma: float, padding: int, radius: int,
                      device: torch.device, dtype: torch.dtype) -> Tuple[Optional[torch.Tensor], ...]:
    """:func:`_operators` and the identity, rounded to ``dtype`` on ``device`` (kept there: no
    host-to-device copy per call)."""
    ops = (*_operators(grid, out_size, gaussian_kernel(sigma, radius), padding),
           identity_grid(out_size, dtype=torch.float64))
    return tuple(None if op is None else op.to(device=device, dtype=dtype) for op in ops)


@functools.lru_cache(maxsize=32)
def _cached_upsampling(size: int, out: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    return _upsampling_matrix(size, out).to(device=device, dtype=dtype)


def identity_grid(size: Size, *, batch: int = 1, dtype: torch.dtype = torch.float32,
                  device: Union[str, torch.device, None] = None) -> torch.Tensor:
    """The identity sampling grid ``(batch, H, W, 2)`` of ``grid_sample`` with ``align_corners=True``.

    ``grid[n, i, j] = (-1 + 2 j / (W - 1), -1 + 2 i / (H - 1))``: the last axis holds
    :math:`(x, y)`, as ``torch.nn.functional.grid_sample`` expects; it equals
    ``F.affine_grid(eye, size, align_corners=True)``.

    Examples
    --------
    >>> from pixelweight.sampling import identity_grid
    >>> identity_grid((2, 3))[0]
    tensor([[[-1., -1.],
             [ 0., -1.],
             [ 1., -1.]],
    <BLANKLINE>
            [[-1.,  1.],
             [ 0.,  1.],
             [ 1.,  1.]]])
    """
    h, w = _check_size(size, "size")
    batch = check_int(batch, "batch", minimum=0)
    ys = torch.linspace(-1.0, 1.0, h, dtype=dtype, device=device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=dtype, device=device)
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (h, w, 2)
    return grid.unsqueeze(0).expand(batch, h, w, 2).contiguous()


def _compute_grid(saliency: torch.Tensor, left: torch.Tensor, right: torch.Tensor, up_h: Optional[torch.Tensor],
                  up_w: Optional[torch.Tensor], identity: torch.Tensor) -> torch.Tensor:
    """The clamped grid (N, H, W, 2) of checked-shape saliency (N, g_h, g_w) with the operators of
    :func:`_operators` (in the compute dtype, on the saliency's device); ``identity`` is the
    (1, H, W, 2) identity. The values are checked once, at the end: one
    :func:`~pixelweight._validation.require` for the input and the denominator together.

    Every step is a matrix product over the whole batch: the averages along x (numerator and
    denominator together), then along y, the division, the upsampling along x, then along y;
    in the saliency's dtype (float32 at least), also under ``torch.autocast``.
    """
    if saliency.device.type in ("cpu", "cuda"):
        with torch.autocast(device_type=saliency.device.type, enabled=False):  # no half-precision products
            return _grid_products(saliency, left, right, up_h, up_w, identity)
    return _grid_products(saliency, left, right, up_h, up_w, identity)


def _grid_products(saliency, left, right, up_h, up_w, identity) -> torch.Tensor:
    s, input_ok = _normalised(saliency)
    n, gh, gw = s.shape
    t = s @ right  # (N, g_h, 2 g_w): [S M_w^T, S O_w^T]
    averaged = left[:gh] @ t  # (N, g_h, 2 g_w): [M_h S M_w^T, M_h S O_w^T]
    den = averaged[..., :gw].contiguous()  # sum_x' S(x') k(x, x') (a reduction over a strided view is slow)
    offset_x = averaged[..., gw:]
    offset_y = left[gh:] @ t[..., :gw]  # O_h S M_w^T
    if n:  # NaN in the input makes both tests false
        require(input_ok & (den.detach().amin() > 0), lambda: _grid_message(saliency), _GRID_DEVICE_MESSAGE)
    d = torch.stack((offset_x, offset_y), dim=1) / den.unsqueeze(1)  # (N, 2, g_h, g_w): the displacement
    if up_w is not None:
        d = d @ up_w.transpose(0, 1)  # (N, 2, g_h, W)
    if up_h is not None:
        d = up_h @ d  # (N, 2, H, W)
    return (identity + d.permute(0, 2, 3, 1)).clamp_(-1.0, 1.0).contiguous()


def _normalised(saliency: torch.Tensor) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """(N, g_h, g_w) saliency in the compute dtype (float32 at least), divided by its per-image
    maximum (the grid does not change with the scale; the maximum is detached), and the 0-dim
    test that every value is finite and non-negative with a positive maximum in every image."""
    dtype = torch.float64 if saliency.dtype == torch.float64 else torch.float32
    if saliency.shape[0] == 0:
        return saliency.to(dtype), None
    detached = saliency.detach()
    peak = detached.flatten(1).amax(1)  # NaN propagates
    ok = (detached.amin() >= 0) & (peak.amax() < math.inf) & (peak.amin() > 0)
    return saliency.to(dtype) / peak.to(dtype)[:, None, None], ok


def saliency_grid(
    saliency: torch.Tensor,
    out_size: Optional[Size] = None,
    sigma: float = CODE_SIGMA,
    padding: int = CODE_PADDING,
    radius: Optional[int] = None,
) -> torch.Tensor:
    r"""The sampling grid of a saliency map: the saliency-weighted Gaussian average of coordinates.

    .. math::
        u(x) = x + \frac{\sum_{x'} S(x')\, k(x, x')\,(x' - x)}{\sum_{x'} S(x')\, k(x, x')}

    over the map replicate-padded by ``padding`` cells (coordinates continued linearly), with
    the Gaussian :math:`k` of width ``sigma`` truncated at ``radius`` cells; the displacement is
    upsampled bilinearly to ``out_size`` and the result clamped to :math:`[-1, 1]` (see the
    module notes). A uniform saliency gives the identity grid exactly when
    ``radius <= padding`` (the default); ``padding=0`` shrinks the grid toward the centre.

    Parameters
    ----------
    saliency : torch.Tensor
        ``(N, 1, g_h, g_w)`` or ``(N, g_h, g_w)``, finite and non-negative, with a positive value
        in every image; :math:`g_h, g_w \ge 2`. Normalised inside (the grid does not depend on its
        scale): a softmax over cells, as in the paper, or any non-negative map.
    out_size : int or (int, int), optional
        Height and width of the grid, each :math:`\ge 2` (the task network's input size);
        default: the saliency map's own size.
    sigma : float, default :data:`CODE_SIGMA` (:math:`\approx 5.52`)
        Standard deviation of the Gaussian, in grid cells (the public code's; the paper states
        one third of the map's width).
    padding : int, default :data:`CODE_PADDING` (30)
        Replicate padding, in cells.
    radius : int, optional
        Kernel radius in cells; default ``padding``, or the whole map when ``padding`` is 0.
        The identity is exact when ``radius <= padding``.

    Returns
    -------
    torch.Tensor
        ``(N, H, W, 2)`` coordinates :math:`(x, y)` in :math:`[-1, 1]` for
        :func:`zoom` (``grid_sample`` with ``align_corners=True``); float32, or float64 for a
        float64 saliency (half-precision saliency is promoted). Differentiable with respect to
        ``saliency``.

    Raises
    ------
    ValueError
        For a wrong shape or dtype, a map smaller than 2 x 2, ``out_size < 2``, ``sigma <= 0``,
        ``padding < 0``; for NaN, infinite or negative saliency, an all-zero map, or a map so
        concentrated that the weighted sum underflows to 0 (on CUDA the value checks are
        device-side assertions, see the notes of ``pixelweight._validation``).

    Notes
    -----
    The Gaussian and the padding are one :math:`g \times g` matrix per axis, built once per
    configuration in float64 and cached; :class:`SaliencySampler` keeps them as buffers.

    Examples
    --------
    A uniform saliency gives the identity; a peak pulls the samples toward itself:

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from pixelweight.sampling import identity_grid, saliency_grid
    >>> flat = saliency_grid(torch.ones(1, 1, 9, 9), out_size=16, sigma=2.0, padding=8)
    >>> bool((flat - identity_grid(16)).abs().max() < 1e-6)
    True
    >>> peak = torch.ones(1, 9, 9)
    >>> peak[0, 4, 4] = 30.0
    >>> grid = saliency_grid(peak, sigma=2.0, padding=8)
    >>> round(float(grid[0, 4, 5, 0]), 4)  # the grid point right of the centre moves toward it
    0.1239
    >>> round(float(identity_grid(9)[0, 4, 5, 0]), 4)
    0.25
    """
    s = _check_saliency(saliency)
    grid_hw = (s.shape[-2], s.shape[-1])
    out = grid_hw if out_size is None else _check_size(out_size, "out_size")
    sigma = _check_sigma(sigma)
    padding = check_int(padding, "padding", minimum=0)
    radius = _check_radius(radius, padding, grid_hw)
    dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
    return _compute_grid(s, *_cached_operators(grid_hw, out, sigma, padding, radius, s.device, dtype))


def zoom(x: torch.Tensor, grid: torch.Tensor, *, mode: str = "bilinear") -> torch.Tensor:
    r"""Sample the image ``x`` at ``grid``: ``grid_sample`` with ``align_corners=True``.

    Output pixel :math:`(i, j)` reads ``x`` at the normalised coordinates ``grid[n, i, j]``
    (:math:`(x, y)`, :math:`-1` and :math:`1` the centres of the first and last pixels); for
    :func:`identity_grid` this is ``F.interpolate(x, size, mode=mode, align_corners=True)``
    (no antialiasing, as in the paper). Coordinates outside :math:`[-1, 1]` read the border
    (``padding_mode="border"``); the grids of :func:`saliency_grid` never leave it.

    Parameters
    ----------
    x : torch.Tensor
        ``(N, C, H_in, W_in)`` floating image (the high-resolution one).
    grid : torch.Tensor
        ``(N, H, W, 2)`` finite sampling grid; cast to ``x``'s dtype. A float16 or bfloat16 image
        is sampled in float32 and the result cast back: a half-precision grid cannot address the
        pixels (bfloat16 resolves :math:`2^{-8}` of the half-width near :math:`\pm 1`, a quarter
        of a pixel at 128 pixels), which is also what ``torch.autocast`` does for ``grid_sample``.
    mode : {"bilinear", "nearest", "bicubic"}
        Interpolation; ``"nearest"`` for label maps.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)``, differentiable with respect to ``x`` and ``grid``.

    Examples
    --------
    >>> import torch
    >>> import torch.nn.functional as F
    >>> from pixelweight.sampling import identity_grid, zoom
    >>> x = torch.arange(16.0).reshape(1, 1, 4, 4)
    >>> zoom(x, identity_grid(3))
    tensor([[[[ 0.0000,  1.5000,  3.0000],
              [ 6.0000,  7.5000,  9.0000],
              [12.0000, 13.5000, 15.0000]]]])
    >>> torch.equal(zoom(x, identity_grid(3)), F.interpolate(x, size=3, mode="bilinear", align_corners=True))
    True
    """
    _check_pair(x, grid, "x")
    mode = check_choice(mode, "mode", SAMPLING_MODES)
    return _sample(x, grid, mode)


def _check_pair(x, grid, name: str) -> None:
    """Check an image and a sampling grid that go together: same batch size, same device."""
    _check_image(x, name)
    _check_grid(grid)
    if grid.shape[0] != x.shape[0]:
        raise ValueError(f"grid has batch size {grid.shape[0]} but {name} has {x.shape[0]}")
    if grid.device != x.device:
        raise ValueError(f"grid is on {grid.device} but {name} is on {x.device}")


def _sample(x: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """:func:`zoom` without the checks (for grids that are finite by construction)."""
    if x.dtype in (torch.float16, torch.bfloat16):  # a half-precision grid cannot address the pixels
        out = F.grid_sample(x.float(), grid.float(), mode=mode, padding_mode="border", align_corners=True)
        return out.to(x.dtype)
    return F.grid_sample(x, grid.to(x.dtype), mode=mode, padding_mode="border", align_corners=True)


class SamplerOutput(NamedTuple):
    """What :class:`SaliencySampler` returns: the sampled image with what made it.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.sampling import SaliencySampler
    >>> out = SaliencySampler(None, out_size=4, grid_size=3, sigma=1.0, padding=2)(
    ...     torch.zeros(1, 2, 8, 8), saliency=torch.ones(1, 1, 3, 3))
    >>> [tuple(t.shape) for t in out]
    [(1, 2, 4, 4), (1, 4, 4, 2), (1, 1, 3, 3)]
    >>> out.output is out[0]
    True
    """

    #: ``(N, C, H, W)``: the high-resolution input sampled at ``grid`` (blurred during the
    #: warm-up), the task network's input.
    output: torch.Tensor
    #: ``(N, H, W, 2)``: where each output pixel reads the input (:func:`saliency_grid`).
    grid: torch.Tensor
    #: ``(N, 1, g_h, g_w)``: the saliency map the grid was computed from (after the activation).
    saliency: torch.Tensor


class SaliencySampler(nn.Module):
    r"""The saliency sampler: a saliency network looks at a low-resolution copy, the grid zooms
    on the salient parts, and ``grid_sample`` reads the **high-resolution** input.

    ``forward(x)``: ``low = resize(x, saliency_size)`` (bilinear, antialiased by default),
    ``S = activation(resize(saliency_net(low), grid_size))``, ``grid = saliency_grid(S,
    out_size, sigma, padding, radius)``, ``output = zoom(x, grid)``; during training with the
    blur warm-up on, ``output`` is average-pooled to a random size and upsampled back. Returns a
    :class:`SamplerOutput` ``(output, grid, saliency)``. See the module notes for the formulas
    and the sources.

    Parameters
    ----------
    saliency_net : torch.nn.Module or None
        Any module mapping ``(N, C, h, w)`` images to ``(N, 1, h', w')`` saliency (logits with
        ``activation="softmax"``); its output is resized to ``grid_size`` (bilinear,
        ``align_corners=True``) if needed. ``None``: pass the saliency to :meth:`forward`.
    out_size : int or (int, int)
        Output height and width (the task network's input), each :math:`\ge 2`.
    grid_size : int or (int, int), default :data:`CODE_GRID_SIZE` (31)
        Cells of the saliency grid, each :math:`\ge 2`.
    sigma : float, default :data:`CODE_SIGMA`
        Gaussian width in grid cells (the code's; the paper says ``grid_size / 3``).
    padding : int, default :data:`CODE_PADDING`
        Replicate padding in cells.
    radius : int, optional
        Kernel radius in cells; default ``padding`` (or the whole map if ``padding`` is 0).
    saliency_size : int or (int, int), optional
        Size of the low-resolution copy the saliency network sees; default ``out_size``.
    antialias : bool, default True
        Make the low-resolution copy with an antialiased bilinear resize (``F.interpolate(...,
        antialias=True)``, a triangle filter as wide as the scale factor); ``False``: plain
        bilinear, the uniform downsampling itself (cheaper, aliased).
    activation : {"softmax", "none"}, default "softmax"
        ``"softmax"``: a softmax over all cells of each map (the paper's); ``"none"``: the network
        outputs non-negative saliency itself.
    mode : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        Interpolation of :func:`zoom`.
    blur_warmup : bool, default False
        The blur warm-up, applied in training mode only and while this attribute is ``True``
        (switch it off after the warm-up epochs: ``sampler.blur_warmup = False``).
    blur_range : (float, float), default (64/224, 1)
        The pooled size as a fraction of the output height (the code's [64, 224] of 224); the
        width follows the aspect ratio. An integer height is drawn uniformly from the range.
    seed : int, optional
        Seed of a private ``torch.Generator`` for the blur sizes; ``None``: PyTorch's global
        generator (reproducible under ``torch.manual_seed``).

    Attributes
    ----------
    gaussian : torch.Tensor
        Buffer: the 1-D Gaussian :math:`k(d)`, :math:`d = -R, \dots, R`; the 2-D kernel is its
        outer product. Like the linear maps built from it (buffers ``left`` and ``right``: the
        Gaussian averages with the padding folded in; ``upsample_h``, ``upsample_w``: the
        bilinear upsampling to ``out_size``; ``identity``) it follows ``.to()``, is not a
        parameter, never receives a gradient and is not saved in the ``state_dict`` (it is
        derived from the configuration).

    Notes
    -----
    In the book: :doc:`Learning to zoom: the saliency sampler, derived and drawn </notebooks/03_zoom/01_derivation>`.

    Examples
    --------
    With a fixed uniform saliency the sampler is a plain resize:

    >>> import torch
    >>> import torch.nn.functional as F
    >>> from pixelweight.sampling import SaliencySampler
    >>> sampler = SaliencySampler(None, out_size=8, grid_size=5, sigma=1.5, padding=4)
    >>> x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    >>> out = sampler(x, saliency=torch.ones(2, 1, 5, 5))
    >>> out.output.shape, out.grid.shape
    (torch.Size([2, 3, 8, 8]), torch.Size([2, 8, 8, 2]))
    >>> bool((out.output - F.interpolate(x, size=8, mode="bilinear", align_corners=True)).abs().max() < 1e-5)
    True

    A learned saliency network, and the Gaussian is no parameter:

    >>> net = torch.nn.Conv2d(3, 1, 3, padding=1)
    >>> sampler = SaliencySampler(net, out_size=16, grid_size=9, sigma=2.0, padding=8)
    >>> sampler(x).output.shape
    torch.Size([2, 3, 16, 16])
    >>> sum(p.numel() for p in sampler.parameters()) == sum(p.numel() for p in net.parameters())
    True
    """

    def __init__(
        self,
        saliency_net: Optional[nn.Module],
        out_size: Size,
        *,
        grid_size: Size = CODE_GRID_SIZE,
        sigma: float = CODE_SIGMA,
        padding: int = CODE_PADDING,
        radius: Optional[int] = None,
        saliency_size: Optional[Size] = None,
        antialias: bool = True,
        activation: str = "softmax",
        mode: str = "bilinear",
        blur_warmup: bool = False,
        blur_range: Tuple[float, float] = (64 / 224, 1.0),
        seed: Optional[int] = None,
    ):
        super().__init__()
        if saliency_net is not None and not isinstance(saliency_net, nn.Module):
            raise TypeError(f"saliency_net must be a torch.nn.Module or None, got {type(saliency_net).__name__}")
        self.saliency_net = saliency_net
        self.out_size = _check_size(out_size, "out_size")
        self.grid_size = _check_size(grid_size, "grid_size")
        self.sigma = _check_sigma(sigma)
        self.padding = check_int(padding, "padding", minimum=0)
        self.radius = _check_radius(radius, self.padding, self.grid_size)
        self.saliency_size = self.out_size if saliency_size is None else _check_size(saliency_size, "saliency_size", 1)
        if not isinstance(antialias, bool):
            raise TypeError(f"antialias must be a bool, got {type(antialias).__name__}")
        self.antialias = antialias
        self.activation = check_choice(activation, "activation", ACTIVATIONS)
        self.mode = check_choice(mode, "mode", SAMPLING_MODES)
        if not isinstance(blur_warmup, bool):
            raise TypeError(f"blur_warmup must be a bool, got {type(blur_warmup).__name__}")
        self.blur_warmup = blur_warmup
        if not isinstance(blur_range, (tuple, list)) or len(blur_range) != 2:
            raise ValueError(f"blur_range must be a pair (low, high) of fractions, got {blur_range!r}")
        low = check_float(blur_range[0], "blur_range[0]", minimum=0.0, maximum=1.0, min_inclusive=False)
        high = check_float(blur_range[1], "blur_range[1]", minimum=0.0, maximum=1.0, min_inclusive=False)
        if low > high:
            raise ValueError(f"blur_range must satisfy low <= high, got {blur_range!r}")
        self.blur_range = (low, high)
        self.seed = None if seed is None else check_int(seed, "seed", minimum=0)
        self._generator = None if seed is None else torch.Generator().manual_seed(self.seed)

        # the fixed linear maps, computed in float64 once; the buffers hold them rounded to their dtype
        kernel = gaussian_kernel(self.sigma, self.radius)
        left, right, up_h, up_w = _operators(self.grid_size, self.out_size, kernel, self.padding)
        self._exact = {"gaussian": kernel, "left": left, "right": right, "upsample_h": up_h, "upsample_w": up_w,
                       "identity": identity_grid(self.out_size, dtype=torch.float64)}
        dtype = torch.get_default_dtype()
        for name, value in self._exact.items():
            self.register_buffer(name, None if value is None else value.to(dtype), persistent=False)

    def _apply(self, fn, *args, **kwargs):
        """After ``.to()``, ``.double()``, ...: round the float64 originals to the buffers' new dtype
        (rather than casting float32 values up, which would lose the exact identity)."""
        super()._apply(fn, *args, **kwargs)
        for name, value in self._exact.items():
            buffer = self._buffers.get(name)
            if buffer is not None and buffer.is_floating_point() and buffer.dtype != torch.float32:
                self._buffers[name] = value.to(device=buffer.device, dtype=buffer.dtype)
        return self

    def extra_repr(self) -> str:
        return (f"out_size={self.out_size}, grid_size={self.grid_size}, sigma={self.sigma:.4g}, "
                f"padding={self.padding}, radius={self.radius}, saliency_size={self.saliency_size}, "
                f"activation={self.activation!r}, blur_warmup={self.blur_warmup}")

    def grid(self, saliency: torch.Tensor) -> torch.Tensor:
        """The sampling grid ``(N, H, W, 2)`` at ``out_size`` of a non-negative saliency map
        ``(N, 1, g_h, g_w)`` (after the activation): :func:`saliency_grid` with this module's
        buffers."""
        s = _check_saliency(saliency)
        if tuple(s.shape[-2:]) != self.grid_size:
            raise ValueError(f"saliency must be on the {self.grid_size} grid of this sampler, got "
                             f"{tuple(s.shape[-2:])}")
        dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
        ops = [None if b is None else b.to(device=s.device, dtype=dtype)
               for b in (self.left, self.right, self.upsample_h, self.upsample_w, self.identity)]
        return _compute_grid(s, *ops)

    def _saliency(self, x: torch.Tensor) -> torch.Tensor:
        if self.saliency_net is None:
            raise ValueError("this sampler has no saliency_net: pass saliency=... to forward")
        low = x
        if tuple(x.shape[-2:]) != self.saliency_size:
            low = F.interpolate(x, size=self.saliency_size, mode="bilinear", align_corners=False,
                                antialias=self.antialias)
        s = self.saliency_net(low)
        if not isinstance(s, torch.Tensor) or s.ndim != 4 or s.shape[:2] != (x.shape[0], 1):
            shape = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
            raise ValueError(f"saliency_net must return (N, 1, h, w) = ({x.shape[0]}, 1, h, w), got {shape}")
        dtype = torch.float64 if s.dtype == torch.float64 else torch.float32
        s = s.to(dtype)
        if tuple(s.shape[-2:]) != self.grid_size:  # = F.interpolate(bilinear, align_corners=True), faster
            u_h = _cached_upsampling(s.shape[-2], self.grid_size[0], s.device, dtype)
            u_w = _cached_upsampling(s.shape[-1], self.grid_size[1], s.device, dtype)
            s = u_h @ s @ u_w.transpose(0, 1)
        return s

    def _blur(self, out: torch.Tensor) -> torch.Tensor:
        """Average-pool to a random size and upsample back (bilinear), one size per batch."""
        h, w = out.shape[-2:]
        low = max(1, round(self.blur_range[0] * h))
        high = max(low, round(self.blur_range[1] * h))
        size_h = int(torch.randint(low, high + 1, (1,), generator=self._generator))  # on the CPU: no sync
        size_w = max(1, round(size_h * w / h))
        if (size_h, size_w) == (h, w):
            return out
        pooled = F.adaptive_avg_pool2d(out, (size_h, size_w))
        return F.interpolate(pooled, size=(h, w), mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor, saliency: Optional[torch.Tensor] = None) -> SamplerOutput:
        """Sample ``x`` ``(N, C, H_in, W_in)``; ``saliency`` ``(N, 1, g_h, g_w)`` (non-negative,
        on the sampler's grid) replaces the network's when given. Returns a
        :class:`SamplerOutput`."""
        _check_image(x, "x")
        if saliency is None:
            s = self._saliency(x)  # float32 at least
            if self.activation == "softmax":
                s = torch.softmax(s.flatten(1), dim=1).view(s.shape)
        else:
            s = saliency
            if _check_saliency(s).shape[0] != x.shape[0]:
                raise ValueError(f"saliency has batch size {s.shape[0]} but x has {x.shape[0]}")
            if s.ndim == 3:
                s = s.unsqueeze(1)
        if s.device != x.device:
            raise ValueError(f"saliency is on {s.device} but x is on {x.device}")
        grid = self.grid(s)  # finite and in [-1, 1] by construction
        out = _sample(x, grid, self.mode)
        if self.training and self.blur_warmup:
            out = self._blur(out)
        return SamplerOutput(out, grid, s)
