r"""Cross-entropy by frequency: the Parseval decomposition and its truncation :math:`\mathrm{CE}_K`.

**The decomposition** [derived; the book's own: the paper's body was not available]. With
one-hot labels :math:`y_c(x)` (zero at ignored pixels), log-probabilities :math:`\ell_c(x) =
\log p_c(x)` (``log_softmax`` of the logits) and :math:`|V|` valid pixels, the mean
cross-entropy is a sum of inner products over the :math:`HW` pixels, one per class:

.. math::
    \mathrm{CE} = -\frac{1}{|V|} \sum_{x \in V} \sum_c y_c(x)\, \ell_c(x)
                = -\frac{1}{|V|} \sum_c \langle y_c, \ell_c \rangle .

Parseval's identity for the unnormalised DFT (``torch.fft.fft2``), :math:`\langle a, b \rangle =
\frac{1}{HW} \sum_k A(k)\, \overline{B(k)}`, turns each inner product into a sum over frequencies:

.. math::
    \mathrm{CE} = \sum_k T(k), \qquad
    T(k) = -\frac{1}{|V|\, HW} \sum_c \operatorname{Re}\big[Y_c(k)\, \overline{L_c(k)}\big],

with :math:`Y_c = \mathrm{DFT}(y_c)`, :math:`L_c = \mathrm{DFT}(\ell_c)`. (Without ignored pixels
:math:`|V| = HW` and :math:`\mathrm{CE} = -\frac{1}{(HW)^2} \sum_c \sum_k Y_c(k)\,
\overline{L_c(k)}`.) The imaginary parts cancel between :math:`k` and :math:`-k` (both maps are
real), so only the real part is kept. :math:`\ell_c` is set to 0 at ignored pixels, where
:math:`y_c` is 0 anyway: they change no inner product (as in ``F.cross_entropy`` with
``ignore_index``, a NaN logit at an ignored pixel is left out), while a NaN logit at a valid
pixel makes every term NaN.

**The truncation.** Keeping the frequencies with :math:`|k| \le K` (radial bins :math:`0,
\dots, K`, cycles per image; see ``pixelweight.spectral.spectra``) gives

.. math::
    \mathrm{CE}_K = \sum_{k:\, |k| \le K} T(k), \qquad
    \mathrm{CE}_{K_{\max}} = \mathrm{CE}, \qquad
    \mathrm{CE}_0 = -\frac{1}{|V|\, HW} \sum_c n_c \sum_{x \in V} \ell_c(x),

where :math:`K_{\max}` is the radial frequency of the DFT's corner
(:func:`~pixelweight.spectral.max_radial_frequency`; the axis Nyquist limit :math:`N/2` does not
yet hold the corners) and :math:`\mathrm{CE}_0` is the DC term: the cross-entropy of the class
sizes :math:`n_c` against the image-wide mean log-probabilities. **CE_K is not monotone in K**:
each :math:`T(k)` with :math:`k \ne 0` is a correlation between the label and the
log-probability maps at one frequency, of either sign, so partial sums overshoot and come back.
How well the low frequencies account for the loss is therefore reported as the relative error
:math:`|\mathrm{CE}_K - \mathrm{CE}| / \mathrm{CE}` at each :math:`K` rather than as a fraction.

**Precision.** The terms are computed in float32 at least (float64 for float64 logits); their
rounding error scales with :math:`\max |\ell_c|`, so a model that is extremely sure of a wrong
class somewhere (log-probabilities of -1e4) makes every term noisy, although the identity still
holds to rounding.
"""

from __future__ import annotations

import dataclasses
from typing import Optional

import torch
import torch.nn.functional as F

from .._validation import accumulation_dtype, check_choice, check_int, checked_multiclass
from .spectra import _one_hot, _radial_frequency, radial_profile

__all__ = ["cross_entropy_terms", "CrossEntropySpectrum", "cross_entropy_spectrum", "truncated_cross_entropy"]

_REDUCTIONS = ("mean", "none")


def _valid_and_labels(logits, target, ignore_index):
    logits, target, valid, safe = checked_multiclass(logits, target, ignore_index)
    if valid is not None and safe is None:  # ignore_index inside [0, C): labels unchanged, masked below
        safe = torch.where(valid, target, torch.zeros_like(target))
    return logits, target if safe is None else safe, valid


def cross_entropy_terms(logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None,
                        reduction: str = "mean") -> torch.Tensor:
    r"""The per-frequency terms :math:`T(k)` of the cross-entropy (see the module notes).

    ``cross_entropy_terms(logits, target).sum()`` equals
    ``F.cross_entropy(logits, target)`` up to rounding (a test checks 1e-6).

    Parameters
    ----------
    logits : torch.Tensor
        Floating ``(B, C, H, W)``, :math:`C \ge 2`.
    target : torch.Tensor
        Integer ``(B, H, W)`` in ``[0, C)`` or equal to ``ignore_index``.
    ignore_index : int, optional
        The label of pixels left out.
    reduction : {"mean", "none"}
        ``"mean"``: the terms of the batch's mean cross-entropy (normalised by the batch's
        valid pixels), summed over the batch: ``(H, W)``. ``"none"``: the terms of each
        image's own mean cross-entropy, ``(B, H, W)``. An image (or batch) without a valid
        pixel has all terms 0, as its cross-entropy is 0 in :mod:`pixelweight.losses`.

    Returns
    -------
    torch.Tensor
        Real, in FFT order (DC at ``[..., 0, 0]``), float32 (float64 for float64 logits).

    Examples
    --------
    >>> import torch, torch.nn.functional as F
    >>> from pixelweight.spectral import cross_entropy_terms
    >>> g = torch.Generator().manual_seed(0)
    >>> logits = torch.randn(2, 3, 8, 8, generator=g, dtype=torch.float64)
    >>> target = torch.randint(0, 3, (2, 8, 8), generator=g)
    >>> terms = cross_entropy_terms(logits, target)
    >>> terms.shape, abs(float(terms.sum() - F.cross_entropy(logits, target))) < 1e-12
    (torch.Size([8, 8]), True)
    """
    reduction = check_choice(reduction, "reduction", _REDUCTIONS)
    logits, labels, valid = _valid_and_labels(logits, target, ignore_index)
    acc = accumulation_dtype(logits.dtype)
    batch, num_classes, height, width = logits.shape
    log_p = F.log_softmax(logits.to(acc), dim=1)
    y = _one_hot(labels, num_classes, None, acc)
    if valid is not None:
        keep = valid.unsqueeze(1)
        y = y * keep.to(acc)
        log_p = torch.where(keep, log_p, torch.zeros((), dtype=acc, device=log_p.device))
    spectrum = torch.fft.fft2(y) * torch.fft.fft2(log_p).conj()
    terms = -spectrum.real.sum(dim=1)  # (B, H, W): -sum_c Re[Y_c conj(L_c)]
    pixels = height * width
    if reduction == "mean":
        count = valid.sum() if valid is not None else torch.tensor(batch * pixels, device=logits.device)
        return terms.sum(dim=0) / (count.clamp_min(1).to(acc) * pixels)
    count = valid.flatten(1).sum(dim=1) if valid is not None else torch.full((batch,), pixels, device=logits.device)
    return terms / (count.clamp_min(1).to(acc) * pixels).view(batch, 1, 1)


@dataclasses.dataclass(frozen=True)
class CrossEntropySpectrum:
    r"""The cross-entropy by radial frequency: what :func:`~pixelweight.spectral.cross_entropy_spectrum`
    returns. Every field has a last dimension of :math:`K_{\max} + 1` bins (cycles per image)
    but ``ce``; a leading batch dimension with ``reduction="none"``.

    Attributes
    ----------
    terms : torch.Tensor
        :math:`\sum_{\rho(k) = \rho} T(k)`: the loss carried by radial bin :math:`\rho` (bin 0
        is DC). Of either sign beyond DC.
    ce_k : torch.Tensor
        :math:`\mathrm{CE}_K` for :math:`K = 0, \dots, K_{\max}`: the cumulative sum of ``terms``.
    ce : torch.Tensor
        :math:`\mathrm{CE} = \mathrm{CE}_{K_{\max}}` (the last entry of ``ce_k``).
    relative_error : torch.Tensor
        :math:`|\mathrm{CE}_K - \mathrm{CE}| / \mathrm{CE}`; NaN where :math:`\mathrm{CE} = 0`
        (no valid pixel), infinite where only :math:`\mathrm{CE}` rounds to 0.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import cross_entropy_spectrum
    >>> target = torch.zeros(1, 4, 4, dtype=torch.long)
    >>> target[:, :, 2:] = 1
    >>> logits = torch.zeros(1, 2, 4, 4)
    >>> spectrum = cross_entropy_spectrum(logits, target)
    >>> round(float(spectrum.ce), 4), spectrum.ce_k.shape, float(spectrum.relative_error[-1])
    (0.6931, torch.Size([4]), 0.0)
    """

    terms: torch.Tensor
    ce_k: torch.Tensor
    ce: torch.Tensor
    relative_error: torch.Tensor


def cross_entropy_spectrum(logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None,
                           reduction: str = "mean") -> CrossEntropySpectrum:
    r"""The cross-entropy's terms by radial frequency, its truncations :math:`\mathrm{CE}_K` at
    every :math:`K` and their relative errors (see the module notes).

    Parameters
    ----------
    logits, target, ignore_index, reduction
        As for :func:`~pixelweight.spectral.cross_entropy_terms`.

    Returns
    -------
    CrossEntropySpectrum
        ``terms``, ``ce_k``, ``relative_error``: ``(K_max + 1,)`` (``(B, K_max + 1)`` with
        ``reduction="none"``); ``ce``: a scalar (``(B,)``).

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import cross_entropy_spectrum
    >>> g = torch.Generator().manual_seed(0)
    >>> target = torch.zeros(1, 16, 16, dtype=torch.long)
    >>> target[:, 4:12, 4:12] = 1  # a square
    >>> logits = 4 * torch.nn.functional.one_hot(target, 2).permute(0, 3, 1, 2).double()
    >>> logits = logits + torch.randn(1, 2, 16, 16, generator=g, dtype=torch.float64)
    >>> spectrum = cross_entropy_spectrum(logits, target)
    >>> round(float(spectrum.ce), 4)
    0.0499
    >>> [round(float(v), 4) for v in spectrum.ce_k]  # K = 0 .. 12: DC is far off; not monotone near the end
    [1.539, 0.7433, 0.3955, 0.2776, 0.1966, 0.1509, 0.1119, 0.0803, 0.0498, 0.0493, 0.0499, 0.0499, 0.0499]
    >>> float(spectrum.relative_error[-1])
    0.0
    """
    terms = cross_entropy_terms(logits, target, ignore_index, reduction)
    by_bin = radial_profile(terms)
    ce_k = by_bin.cumsum(dim=-1)
    ce = ce_k[..., -1]
    return CrossEntropySpectrum(terms=by_bin, ce_k=ce_k, ce=ce,
                                relative_error=(ce_k - ce.unsqueeze(-1)).abs() / ce.unsqueeze(-1))


def truncated_cross_entropy(logits: torch.Tensor, target: torch.Tensor, max_frequency: int,
                            ignore_index: Optional[int] = None, reduction: str = "mean") -> torch.Tensor:
    r""":math:`\mathrm{CE}_K`: the cross-entropy's terms :math:`T(k)` summed over :math:`|k| \le K`.

    Parameters
    ----------
    logits, target, ignore_index, reduction
        As for :func:`~pixelweight.spectral.cross_entropy_terms`.
    max_frequency : int
        :math:`K \ge 0` in cycles per image; from :math:`K_{\max}`
        (:func:`~pixelweight.spectral.max_radial_frequency`) on, :math:`\mathrm{CE}_K = \mathrm{CE}`.

    Returns
    -------
    torch.Tensor
        A scalar (``(B,)`` with ``reduction="none"``).

    Examples
    --------
    >>> import torch, torch.nn.functional as F
    >>> from pixelweight.spectral import truncated_cross_entropy
    >>> g = torch.Generator().manual_seed(0)
    >>> logits = torch.randn(1, 3, 8, 8, generator=g, dtype=torch.float64)
    >>> target = torch.randint(0, 3, (1, 8, 8), generator=g)
    >>> ce = F.cross_entropy(logits, target)
    >>> abs(float(truncated_cross_entropy(logits, target, 6) - ce)) < 1e-12  # K_max = 6 for 8 x 8
    True
    """
    max_frequency = check_int(max_frequency, "max_frequency", minimum=0)
    terms = cross_entropy_terms(logits, target, ignore_index, reduction)
    height, width = terms.shape[-2:]
    keep = _radial_frequency(height, width).to(terms.device) <= max_frequency
    return torch.where(keep, terms, torch.zeros((), dtype=terms.dtype, device=terms.device)).sum(dim=(-2, -1))
