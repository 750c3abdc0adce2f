r"""Label spectra: the 2-D DFT of one-hot label maps, their radial energy profile and cut-off.

**The DFT and its normalisation.** A map :math:`a(x)` on the :math:`H \times W` pixel grid
:math:`x = (x_1, x_2)` has the unnormalised DFT (``torch.fft.fft2``, ``norm="backward"``)

.. math::
    A(k) = \sum_x a(x)\, e^{-2\pi i\,(k_1 x_1 / H + k_2 x_2 / W)}, \qquad
    \sum_x a(x)\, b(x) = \frac{1}{HW} \sum_k A(k)\, \overline{B(k)}
    \quad\text{(Parseval, real } a, b\text{)}.

**The frequency convention: cycles per image.** The index :math:`k_1` stands for the signed
frequency :math:`f_1 \in \{-\lfloor H/2 \rfloor, \dots, \lceil H/2 \rceil - 1\}` cycles per image
height (``torch.fft.fftfreq(H, 1 / H)``; the same along the width), in the FFT's order (DC
first, not shifted). A stripe pattern of period :math:`P` pixels across an image of side
:math:`N` has its fundamental at :math:`N/P` cycles per image. The **radial frequency** of
:math:`k` is :math:`|k| = \sqrt{f_1^2 + f_2^2}` (isotropic for square images; for a
rectangular one it mixes cycles per height and per width) and its **radial bin** is the integer
:math:`\rho(k) = \lceil |k| \rceil` (:func:`~pixelweight.spectral.radial_frequency`, computed in
integer arithmetic), so that the frequencies of bins :math:`0, \dots, K` are exactly those with
:math:`|k| \le K`: bin 0 is DC alone, bin 1 holds :math:`(\pm 1, 0), (0, \pm 1)`, bin 2 the
diagonal :math:`(\pm 1, \pm 1)` and :math:`(\pm 2, 0), (0, \pm 2)`, and so on.

**The Nyquist limit.** A grid of side :math:`N` resolves frequencies up to :math:`N/2` cycles per
image along each axis (the axis Nyquist limit; an output grid :math:`s` times coarser than the
image resolves up to :math:`N/(2s)` cycles per image of the input). The corners of the DFT reach
further radially, up to :math:`K_{\max} = \lceil \sqrt{\lfloor H/2 \rfloor^2 + \lfloor W/2
\rfloor^2} \rceil` (:func:`~pixelweight.spectral.max_radial_frequency`, :math:`\approx N/\sqrt 2`):
a radial profile has :math:`K_{\max} + 1` bins, and a truncation at :math:`K \ge K_{\max}`
keeps every frequency.

**Label energy** [derived; the book's own normalisation]. The one-hot map :math:`y_c(x) \in
\{0, 1\}` of class :math:`c` is zero in every channel at an ignored pixel, so ignored pixels
carry no energy. With :math:`Y_c = \mathrm{DFT}(y_c)`, the energy of radial bin :math:`\rho` is

.. math::
    E(\rho) = \frac{1}{(HW)^2} \sum_c \sum_{k:\, \rho(k) = \rho} |Y_c(k)|^2, \qquad
    \sum_\rho E(\rho) = \frac{|V|}{HW}, \qquad E(0) = \sum_c \Big(\frac{n_c}{HW}\Big)^2,

by Parseval (:math:`y_c^2 = y_c`), with :math:`|V|` the valid pixels and :math:`n_c` those of
class :math:`c`: 1 in total for a map without ignored pixels. The DC term only says how large
each class is, so the energy fraction that describes the *shape* of the labels leaves it out:

.. math::
    F(K) = \frac{\sum_{\rho=1}^{K} E(\rho)}{\sum_{\rho \ge 1} E(\rho)}, \qquad
    K_\alpha = \min\{K : F(K) \ge \alpha\},

the **cut-off** :math:`K_\alpha`: the smallest radial frequency below which a fraction
:math:`\alpha` of the labels' non-DC energy lies. A map of one class (no energy beyond DC)
has no cut-off: :math:`F` and :math:`K_\alpha` are NaN. Average the profiles over a data set
before taking the cut-off of the data set.

The formulas of Chen, Chiu and Wu (arXiv:2012.14123) could not be read (only the abstract
was available): this normalisation, the binning and the cut-off are the book's [derived].
"""

from __future__ import annotations

import functools
import math
from typing import Optional, Sequence

import torch
import torch.nn.functional as F

from .._validation import check_float, check_int, require
from ._checks import check_float_dtype, check_labels, check_real, check_spatial, real_dtype

__all__ = [
    "radial_frequency",
    "max_radial_frequency",
    "radial_profile",
    "one_hot_labels",
    "label_spectrum",
    "label_energy",
    "energy_fractions",
    "energy_cutoff",
    "band_energy",
]


def _signed(n: int) -> torch.Tensor:
    """The signed frequencies of an axis of ``n`` samples in FFT order (``fftfreq(n, 1/n)``)."""
    return (torch.arange(n) + n // 2) % n - n // 2


def radial_frequency(height: int, width: int, device: Optional[torch.device] = None) -> torch.Tensor:
    r"""The radial bin :math:`\rho(k) = \lceil |k| \rceil` of every DFT index, in FFT order.

    :math:`|k| = \sqrt{f_1^2 + f_2^2}` with :math:`f_1, f_2` in cycles per image (see the
    module notes); computed in integer arithmetic, so that :math:`\rho(k) \le K` exactly
    when :math:`|k| \le K`.

    Parameters
    ----------
    height, width : int
        The grid's size, >= 1.
    device : torch.device, optional
        Where the result lives (default: the CPU).

    Returns
    -------
    torch.Tensor
        Long ``(height, width)``, values in ``[0, max_radial_frequency(height, width)]``.

    Examples
    --------
    >>> from pixelweight.spectral import radial_frequency
    >>> radial_frequency(4, 4)
    tensor([[0, 1, 2, 1],
            [1, 2, 3, 2],
            [2, 3, 3, 3],
            [1, 2, 3, 2]])
    """
    height = check_int(height, "height", minimum=1)
    width = check_int(width, "width", minimum=1)
    return _radial_frequency(height, width).to(device, copy=True)  # never the cached tensor itself


@functools.lru_cache(maxsize=32)
def _radial_frequency(height: int, width: int) -> torch.Tensor:
    f1, f2 = _signed(height), _signed(width)
    r2 = f1[:, None] ** 2 + f2[None, :] ** 2  # |k|^2, an exact integer
    root = torch.sqrt(r2.double()).floor().long()  # floor(sqrt), corrected to be exact
    root = root - (root * root > r2).long()
    root = root + ((root + 1) * (root + 1) <= r2).long()
    return root + (root * root < r2).long()  # ceil(sqrt(r2))


def max_radial_frequency(height: int, width: int) -> int:
    r""":math:`K_{\max} = \lceil \sqrt{\lfloor H/2 \rfloor^2 + \lfloor W/2 \rfloor^2} \rceil`: the
    largest radial bin of an :math:`H \times W` grid (its DFT's corner), the last index of a
    radial profile. The axis Nyquist limit is :math:`\min(H, W)/2`; the corners lie beyond it.

    Examples
    --------
    >>> from pixelweight.spectral import max_radial_frequency
    >>> max_radial_frequency(64, 64), max_radial_frequency(4, 4), max_radial_frequency(1, 1)
    (46, 3, 0)
    """
    height = check_int(height, "height", minimum=1)
    width = check_int(width, "width", minimum=1)
    r2 = (height // 2) ** 2 + (width // 2) ** 2
    root = math.isqrt(r2)
    return root + (root * root < r2)


@functools.lru_cache(maxsize=32)
def _bin_index(height: int, width: int) -> torch.Tensor:
    """``(K_max + 1, M)`` indices into the flattened grid plus one zero slot (index ``H*W``):
    row ``rho`` lists the frequencies of bin ``rho``, padded with the zero slot."""
    bins = _radial_frequency(height, width).flatten()
    count = torch.bincount(bins, minlength=max_radial_frequency(height, width) + 1)
    order = torch.argsort(bins, stable=True)
    index = torch.full((count.numel(), int(count.max())), height * width, dtype=torch.long)
    start = 0
    for rho, n in enumerate(count.tolist()):
        index[rho, :n] = order[start:start + n]
        start += n
    return index


def radial_profile(values: torch.Tensor) -> torch.Tensor:
    r"""Sum a map over each radial bin: :math:`P(\rho) = \sum_{k:\, \rho(k) = \rho} v(k)`.

    A gather and a sum per bin (no atomic adds: deterministic on every device, and a NaN
    stays in its own bin). Sums run in float32 at least (float64 for float64 input).

    Parameters
    ----------
    values : torch.Tensor
        Real ``(..., H, W)`` map over the DFT indices, in FFT order (not shifted), e.g.
        ``spectrum.abs() ** 2``.

    Returns
    -------
    torch.Tensor
        ``(..., K_max + 1)`` with :math:`K_{\max}` = :func:`~pixelweight.spectral.max_radial_frequency`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import radial_profile
    >>> radial_profile(torch.ones(4, 4))  # how many DFT indices each bin holds
    tensor([1., 4., 6., 5.])
    """
    values = check_real(values, "values")
    height, width = check_spatial(values, "values")
    acc = real_dtype(values.dtype)
    flat = values.to(acc).reshape(*values.shape[:-2], height * width)
    flat = torch.cat([flat, flat.new_zeros(*flat.shape[:-1], 1)], dim=-1)
    index = _bin_index(height, width).to(values.device)
    return flat[..., index].sum(dim=-1)


def one_hot_labels(target: torch.Tensor, num_classes: int, ignore_index: Optional[int] = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""One-hot maps :math:`y_c(x)` of a batch of label maps, zero in every channel at an
    ignored pixel.

    Parameters
    ----------
    target : torch.Tensor
        Integer ``(B, H, W)`` labels in ``[0, C)`` or equal to ``ignore_index``.
    num_classes : int
        :math:`C \ge 1`.
    ignore_index : int, optional
        The label of pixels left out.
    dtype : torch.dtype
        ``torch.float32`` (default) or ``torch.float64``.

    Returns
    -------
    torch.Tensor
        ``(B, C, H, W)`` of ``dtype`` on the target's device.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import one_hot_labels
    >>> one_hot_labels(torch.tensor([[[0, 2, 255]]]), num_classes=3, ignore_index=255)
    tensor([[[[1., 0., 0.]],
    <BLANKLINE>
             [[0., 0., 0.]],
    <BLANKLINE>
             [[0., 1., 0.]]]])
    """
    target, num_classes, ignore_index = check_labels(target, num_classes, ignore_index)
    dtype = check_float_dtype(dtype)
    return _one_hot(target, num_classes, ignore_index, dtype)


def _one_hot(target: torch.Tensor, num_classes: int, ignore_index: Optional[int], dtype: torch.dtype,
             valid: Optional[torch.Tensor] = None) -> torch.Tensor:
    """One-hot ``(B, C, H, W)`` of checked labels; zero at ``target == ignore_index``."""
    if valid is None and ignore_index is not None:
        valid = target != ignore_index
    safe = target if valid is None else torch.where(valid, target, torch.zeros_like(target))
    y = F.one_hot(safe, num_classes).permute(0, 3, 1, 2).to(dtype)
    if valid is not None:
        y = y * valid.unsqueeze(1).to(dtype)
    return y


def label_spectrum(target: torch.Tensor, num_classes: int, ignore_index: Optional[int] = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""The unnormalised 2-D DFT :math:`Y_c(k)` of each one-hot label map (ignored pixels zero).

    Parameters
    ----------
    target, num_classes, ignore_index, dtype
        As for :func:`~pixelweight.spectral.one_hot_labels`.

    Returns
    -------
    torch.Tensor
        Complex ``(B, C, H, W)`` (``complex64`` for float32, ``complex128`` for float64), in
        FFT order: ``torch.fft.fft2`` of the one-hot maps.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import label_spectrum
    >>> target = torch.tensor([[[0, 1, 0, 1]]])  # a stripe of period 2: its energy at 4/2 = 2
    >>> label_spectrum(target, num_classes=2)[0, 1].abs()
    tensor([[2., 0., 2., 0.]])
    """
    target, num_classes, ignore_index = check_labels(target, num_classes, ignore_index)
    dtype = check_float_dtype(dtype)
    return torch.fft.fft2(_one_hot(target, num_classes, ignore_index, dtype))


def label_energy(target: torch.Tensor, num_classes: int, ignore_index: Optional[int] = None,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""The radial energy profile :math:`E(\rho)` of each label map (see the module notes).

    :math:`E(\rho) = (HW)^{-2} \sum_c \sum_{\rho(k) = \rho} |Y_c(k)|^2`, summed over classes;
    the profile sums to the fraction of valid pixels (1 without ignored pixels), and
    :math:`E(0)` is the DC term :math:`\sum_c (n_c / HW)^2`.

    Parameters
    ----------
    target, num_classes, ignore_index, dtype
        As for :func:`~pixelweight.spectral.one_hot_labels`.

    Returns
    -------
    torch.Tensor
        ``(B, K_max + 1)`` of ``dtype``: one profile per map. Average over maps (``.mean(0)``)
        for a data set's profile.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import label_energy
    >>> target = torch.tensor([[0, 0, 1, 1]]).repeat(4, 1)[None]  # vertical stripes, period 4
    >>> label_energy(target, num_classes=2)
    tensor([[0.5000, 0.5000, 0.0000, 0.0000]])
    """
    spectrum = label_spectrum(target, num_classes, ignore_index, dtype)
    height, width = spectrum.shape[-2:]
    power = (spectrum.real ** 2 + spectrum.imag ** 2).sum(dim=1)
    return radial_profile(power) / float(height * width) ** 2


def _check_profile(profile: torch.Tensor, name: str = "profile") -> torch.Tensor:
    profile = check_real(profile, name, min_ndim=1)
    if profile.shape[-1] < 1:
        raise ValueError(f"{name} must have at least one bin in its last dimension, got shape {tuple(profile.shape)}")
    return profile


def energy_fractions(profile: torch.Tensor) -> torch.Tensor:
    r"""The cumulative non-DC energy fraction :math:`F(K) = \sum_{1 \le \rho \le K} E(\rho) /
    \sum_{\rho \ge 1} E(\rho)` of a radial profile; :math:`F(0) = 0`, and the last bin is
    exactly 1.

    Parameters
    ----------
    profile : torch.Tensor
        Non-negative ``(..., K_max + 1)``, e.g. :func:`~pixelweight.spectral.label_energy`;
        bin 0 is DC.

    Returns
    -------
    torch.Tensor
        ``(..., K_max + 1)``; NaN where the profile has no energy beyond DC (a map of one
        class) or holds a NaN.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import energy_fractions
    >>> energy_fractions(torch.tensor([0.5, 0.3, 0.0, 0.1]))
    tensor([0.0000, 0.7500, 0.7500, 1.0000])
    """
    profile = _check_profile(profile)
    acc = real_dtype(profile.dtype)
    cumulative = profile.to(acc).clone()
    cumulative[..., 0] = 0
    cumulative = cumulative.cumsum(dim=-1)
    total = cumulative[..., -1:]
    # 0/0 (no energy beyond DC) is NaN: the fraction is undefined, not 0 or 1
    return cumulative / total


def energy_cutoff(profile: torch.Tensor, alpha: float) -> torch.Tensor:
    r"""The cut-off :math:`K_\alpha = \min\{K : F(K) \ge \alpha\}` of a radial energy profile.

    Parameters
    ----------
    profile : torch.Tensor
        Non-negative ``(..., K_max + 1)`` energies by radial bin (bin 0 is DC, left out), e.g.
        :func:`~pixelweight.spectral.label_energy` or its mean over a data set.
    alpha : float
        The energy fraction, :math:`0 < \alpha \le 1`.

    Returns
    -------
    torch.Tensor
        ``(...)`` floating, integer-valued (cycles per image); NaN where the cut-off is
        undefined (no energy beyond DC, or a NaN in the profile).

    Raises
    ------
    ValueError
        For an ``alpha`` outside ``(0, 1]`` or a negative energy.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import energy_cutoff
    >>> profile = torch.tensor([0.5, 0.3, 0.0, 0.1])
    >>> energy_cutoff(profile, 0.5), energy_cutoff(profile, 0.8)
    (tensor(1.), tensor(3.))
    """
    profile = _check_profile(profile)
    alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0, min_inclusive=False)
    # an energy is never negative (a NaN is not an input error: it gives a NaN cut-off)
    require(~(profile < 0).any(), lambda: f"profile must hold energies >= 0, found a minimum of "
            f"{float(profile.nan_to_num(nan=float('inf')).min())}",
            "pixelweight: profile must hold energies >= 0")
    fractions = energy_fractions(profile)
    # F is non-decreasing and F(K_max) = 1 >= alpha: K_alpha = #{K : F(K) < alpha}
    count = (fractions < alpha).sum(dim=-1).to(fractions.dtype)
    undefined = torch.isnan(fractions).any(dim=-1)
    return torch.where(undefined, torch.full_like(count, float("nan")), count)


def band_energy(profile: torch.Tensor, edges: Sequence[int]) -> torch.Tensor:
    r"""Sum a radial profile over frequency bands: band :math:`j` holds the bins
    :math:`e_j \le \rho < e_{j+1}`.

    Parameters
    ----------
    profile : torch.Tensor
        ``(..., K_max + 1)`` by radial bin.
    edges : sequence of int
        Strictly increasing :math:`0 \le e_0 < e_1 < \dots \le K_{\max} + 1`; at least two.

    Returns
    -------
    torch.Tensor
        ``(..., len(edges) - 1)``.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import band_energy
    >>> band_energy(torch.tensor([4.0, 3.0, 2.0, 1.0]), edges=[1, 2, 4])
    tensor([3., 3.])
    """
    profile = _check_profile(profile)
    bins = profile.shape[-1]
    if isinstance(edges, (str, bytes)) or not isinstance(edges, Sequence):
        raise TypeError(f"edges must be a sequence of ints, got {type(edges).__name__}")
    edges = [check_int(e, f"edges[{i}]", minimum=0) for i, e in enumerate(edges)]
    if len(edges) < 2:
        raise ValueError(f"edges must hold at least two bin edges, got {edges}")
    if any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"edges must be strictly increasing, got {edges}")
    if edges[-1] > bins:
        raise ValueError(f"edges must end at most at the number of bins {bins} (K_max + 1), got {edges}")
    acc = real_dtype(profile.dtype)
    return torch.stack([profile[..., a:b].to(acc).sum(dim=-1) for a, b in zip(edges, edges[1:])], dim=-1)
