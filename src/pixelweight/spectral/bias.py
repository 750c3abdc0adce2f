r"""The spectral bias: which frequencies of the labels a network learns first.

Rahaman et al. (*On the Spectral Bias of Neural Networks*, ICML 2019, arXiv:1806.08734) found
that networks fit the low frequencies of a target function first; Kiessling and Thor (AAAI
2022) measure it on the DFT of the **residual**, the difference between target and
prediction. For segmentation the residual of
class :math:`c` at pixel :math:`x` is :math:`r_c(x) = y_c(x) - p_c(x)` (one-hot target minus
softmax probability; 0 at an ignored pixel), and its energy by radial frequency
[derived; the book's own normalisation] is

.. math::
    E_r(\rho) = \frac{1}{|V|\, HW} \sum_c \sum_{k:\, \rho(k) = \rho} |R_c(k)|^2, \qquad
    \sum_\rho E_r(\rho) = \frac{1}{|V|} \sum_{x \in V} \sum_c \big(y_c(x) - p_c(x)\big)^2,

the Brier score split by frequency (Parseval; radial bins in cycles per image as in
``pixelweight.spectral.spectra``). Logged during training
(:class:`~pixelweight.spectral.SpectralBiasProbe`, an ``on_log`` hook of
:func:`~pixelweight.train.train`), band by band, it shows which frequencies the network has
learned: a band is *learned* at the first logged step where its residual energy falls below a
fraction of its initial value (:func:`~pixelweight.spectral.learning_steps`). Low frequencies
learned first means the learning steps grow with the band's frequency.
"""

from __future__ import annotations

import math
from numbers import Integral, Real
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import accumulation_dtype, check_choice, check_float, check_int, check_tensor, checked_multiclass
from .spectra import _one_hot, band_energy, max_radial_frequency, radial_profile

__all__ = ["residual_energy", "eval_logits", "SpectralBiasProbe", "learning_steps"]


def residual_energy(logits: torch.Tensor, target: torch.Tensor, ignore_index: Optional[int] = None,
                    reduction: str = "mean") -> torch.Tensor:
    r"""The energy of the residual :math:`y - \mathrm{softmax}(z)` by radial frequency (see the
    module notes).

    Parameters
    ----------
    logits : torch.Tensor
        Floating ``(B, C, H, W)``, :math:`C \ge 2`, at the labels' resolution.
    target : torch.Tensor
        Integer ``(B, H, W)`` in ``[0, C)`` or equal to ``ignore_index``.
    ignore_index : int, optional
        The label of pixels left out (their residual is 0).
    reduction : {"mean", "none"}
        ``"mean"``: the batch's profile, normalised by its valid pixels, ``(K_max + 1,)``;
        ``"none"``: one per image, ``(B, K_max + 1)``. Without a valid pixel, zeros.

    Returns
    -------
    torch.Tensor
        Float32 (float64 for float64 logits); it sums to the mean over valid pixels of
        :math:`\sum_c (y_c - p_c)^2`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import residual_energy
    >>> target = torch.tensor([[[0, 1, 0, 1]]])
    >>> residual_energy(torch.zeros(1, 2, 1, 4), target)  # p = 1/2: the residual is +-1/2
    tensor([0.0000, 0.0000, 0.5000])
    """
    reduction = check_choice(reduction, "reduction", ("mean", "none"))
    logits, target, valid, safe = checked_multiclass(logits, target, ignore_index)
    if valid is not None and safe is None:
        safe = torch.where(valid, target, torch.zeros_like(target))
    labels = target if safe is None else safe
    acc = accumulation_dtype(logits.dtype)
    batch, num_classes, height, width = logits.shape
    residual = _one_hot(labels, num_classes, None, acc) - torch.softmax(logits.to(acc), dim=1)
    if valid is not None:
        residual = torch.where(valid.unsqueeze(1), residual, torch.zeros((), dtype=acc, device=residual.device))
    spectrum = torch.fft.fft2(residual)
    profile = radial_profile((spectrum.real ** 2 + spectrum.imag ** 2).sum(dim=1))  # (B, K_max + 1)
    pixels = height * width
    if reduction == "mean":
        count = valid.sum() if valid is not None else torch.tensor(batch * pixels, device=logits.device)
        return profile.sum(dim=0) / (count.clamp_min(1).to(acc) * pixels)
    count = valid.flatten(1).sum(dim=1) if valid is not None else torch.full((batch,), pixels, device=logits.device)
    return profile / (count.clamp_min(1).to(acc) * pixels).unsqueeze(1)


def eval_logits(model: nn.Module, images: torch.Tensor, size: Optional[Tuple[int, int]] = None,
                batch_size: int = 256) -> torch.Tensor:
    r"""``model``'s float32 logits of ``images``, measured without touching the training run.

    The model runs in eval mode under ``torch.no_grad``, in batches of ``batch_size``, on the
    device of its parameters (batch norm's running statistics do not move, no random number is
    drawn) and every module's mode is restored afterwards. Logits coarser than ``size`` (default:
    the images' size) are upsampled bilinearly (``align_corners=False``), as the evaluation does.

    Parameters
    ----------
    model : nn.Module
        A network returning ``(B, C, h, w)`` logits.
    images : torch.Tensor
        Floating ``(B, C_in, H, W)``, at least one image.
    size : (int, int), optional
        The size of the returned logits.
    batch_size : int
        Images per forward pass, at least 1.

    Returns
    -------
    torch.Tensor
        Float32 ``(B, C, *size)`` on the model's device.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pixelweight.spectral import eval_logits
    >>> model = nn.Sequential(nn.Conv2d(1, 3, 1), nn.BatchNorm2d(3)).train()
    >>> eval_logits(model, torch.rand(5, 1, 8, 8), batch_size=2).shape, model.training
    (torch.Size([5, 3, 8, 8]), True)
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_tensor(images, "images")
    if images.ndim != 4 or not images.is_floating_point() or images.shape[0] == 0:
        raise ValueError(f"images must be a floating (B, C_in, H, W) tensor with B >= 1, got shape "
                         f"{tuple(images.shape)} and dtype {images.dtype}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, Integral) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    size = tuple(images.shape[-2:]) if size is None else tuple(size)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else images.device
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        with torch.no_grad():
            parts = [model(images[i:i + batch_size].to(device)) for i in range(0, images.shape[0], batch_size)]
    finally:
        for module, training in modes:
            module.training = training
    if not all(isinstance(p, torch.Tensor) and p.ndim == 4 for p in parts):
        raise TypeError("the model must return (B, C, h, w) logits")
    logits = torch.cat(parts).float()
    if tuple(logits.shape[-2:]) != size:
        logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    return logits


class SpectralBiasProbe:
    r"""An ``on_log`` hook for :func:`~pixelweight.train.train`: the residual energy of a fixed
    batch by frequency band, at every log step.

    Called as ``probe(step, model, loss_fn)``, it runs ``model`` on the probe images in eval
    mode under ``torch.no_grad`` (batch norm's running statistics do not change, no random
    number is drawn: the training run is the same with and without the probe), restores each
    module's mode, and returns ``{key: [energy of each band]}``, which the harness merges into
    the history entry. Logits coarser than the labels are upsampled bilinearly
    (``align_corners=False``) first, as the evaluation does.

    Parameters
    ----------
    images : torch.Tensor
        Floating ``(B, C_in, H, W)`` probe inputs (e.g. a fixed batch of the validation set);
        moved once to the model's device.
    target : torch.Tensor
        Integer ``(B, H, W)`` labels of the probe images.
    ignore_index : int, optional
        The label of pixels left out.
    edges : sequence of int, optional
        Band edges (:func:`~pixelweight.spectral.band_energy`); default: every radial bin
        :math:`0, \dots, K_{\max}` is its own band.
    key : str
        The history key, ``"residual_energy"`` by default.
    cross_entropy_at : int, optional
        A frequency :math:`K` (cycles per image): the probe then also returns the cross-entropy
        of the probe batch (``ce``), its truncation :math:`\mathrm{CE}_K`
        (:func:`~pixelweight.spectral.truncated_cross_entropy`, ``ce_truncated``), the relative
        error :math:`|\mathrm{CE}_K - \mathrm{CE}| / \mathrm{CE}` (``ce_relative_error``) and
        :math:`K` itself (``ce_cutoff``), so that a record says where it truncated.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> from pixelweight.spectral import SpectralBiasProbe
    >>> target = torch.tensor([[[0, 1, 0, 1]] * 4])
    >>> probe = SpectralBiasProbe(torch.zeros(1, 1, 4, 4), target, edges=[0, 1, 4])
    >>> model = nn.Conv2d(1, 2, 1)
    >>> probe(10, model, None)  # the output is constant: only the stripes' frequency is left
    {'residual_energy': [0.0..., 0.5...]}
    """

    def __init__(self, images: torch.Tensor, target: torch.Tensor, *, ignore_index: Optional[int] = None,
                 edges: Optional[Sequence[int]] = None, key: str = "residual_energy",
                 cross_entropy_at: Optional[int] = None):
        check_tensor(images, "images")
        check_tensor(target, "target")
        if images.ndim != 4 or not images.is_floating_point():
            raise ValueError(f"images must be a floating (B, C_in, H, W) tensor, got shape {tuple(images.shape)} "
                             f"and dtype {images.dtype}")
        if target.ndim != 3 or tuple(target.shape) != (images.shape[0], *images.shape[-2:]):
            raise ValueError(f"target must have shape (B, H, W) = {(images.shape[0], *images.shape[-2:])}, "
                             f"got {tuple(target.shape)}")
        if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
            raise ValueError(f"target must be an integer tensor of class indices, got dtype {target.dtype}")
        if not isinstance(key, str) or not key:
            raise TypeError(f"key must be a non-empty str, got {key!r}")
        if edges is not None:  # checked once here against the labels' number of bins
            band_energy(torch.zeros(max_radial_frequency(*target.shape[-2:]) + 1), edges)
            edges = [int(e) for e in edges]
        if cross_entropy_at is not None:
            cross_entropy_at = check_int(cross_entropy_at, "cross_entropy_at", minimum=0)
        self.images, self.target = images, target.long()
        self.ignore_index, self.edges, self.key = ignore_index, edges, key
        self.cross_entropy_at = cross_entropy_at

    def logits(self, model: nn.Module) -> torch.Tensor:
        """The model's logits of the probe batch at the labels' size (:func:`eval_logits`)."""
        parameter = next(model.parameters(), None) if isinstance(model, nn.Module) else None
        if parameter is not None and self.images.device != parameter.device:
            self.images, self.target = self.images.to(parameter.device), self.target.to(parameter.device)
        return eval_logits(model, self.images, size=tuple(self.target.shape[-2:]))

    def _bands(self, logits: torch.Tensor) -> torch.Tensor:
        profile = residual_energy(logits, self.target, self.ignore_index)
        return profile if self.edges is None else band_energy(profile, self.edges)

    def energy(self, model: nn.Module) -> torch.Tensor:
        """The residual energy of the probe batch by band (or by radial bin), on the model's device."""
        return self._bands(self.logits(model))

    def __call__(self, step: int, model: nn.Module, loss_fn: Any = None) -> Dict[str, Any]:
        logits = self.logits(model)
        out: Dict[str, Any] = {self.key: [float(v) for v in self._bands(logits).cpu()]}
        if self.cross_entropy_at is not None:
            from .parseval import cross_entropy_spectrum

            spectrum = cross_entropy_spectrum(logits, self.target, self.ignore_index)
            k = min(self.cross_entropy_at, spectrum.ce_k.shape[-1] - 1)  # from K_max on, CE_K = CE
            out.update(ce=float(spectrum.ce), ce_truncated=float(spectrum.ce_k[k]),
                       ce_relative_error=float(spectrum.relative_error[k]), ce_cutoff=self.cross_entropy_at)
        return out


def learning_steps(history: Sequence[Union[Tuple[int, Sequence[float]], Mapping[str, Any]]], fraction: float = 0.5,
                   key: str = "residual_energy") -> List[Optional[int]]:
    r"""The step at which each band's residual energy first falls below ``fraction`` of its
    initial value: "which frequencies are learned first".

    Parameters
    ----------
    history : sequence
        Logged energies in order of steps, each a pair ``(step, energies)`` or a history entry
        of :func:`~pixelweight.train.train` (a mapping with ``"step"`` and ``key``; entries
        without ``key`` are skipped). ``energies``: one finite, non-negative value per band,
        the same number in every entry. The first entry is the initial value.
    fraction : float
        :math:`0 < \mathrm{fraction} \le 1`.
    key : str
        The history key of the energies (:class:`~pixelweight.spectral.SpectralBiasProbe`'s).

    Returns
    -------
    list of int or None
        One per band: the first logged step with energy ``< fraction * initial``; ``None`` if
        none (never learned within the run, or a band without energy at the start).

    Raises
    ------
    ValueError
        For an empty history, steps that do not increase, energies of different lengths, or a
        NaN, infinite or negative energy (a diverged run has no learning step).

    Examples
    --------
    >>> from pixelweight.spectral import learning_steps
    >>> history = [(0, [1.0, 1.0, 1.0]), (10, [0.2, 0.9, 1.0]), (20, [0.1, 0.4, 0.8])]
    >>> learning_steps(history, fraction=0.5)
    [10, 20, None]
    """
    fraction = check_float(fraction, "fraction", minimum=0.0, maximum=1.0, min_inclusive=False)
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    if isinstance(history, (str, bytes, Mapping)) or not isinstance(history, Sequence):
        raise TypeError(f"history must be a sequence of (step, energies) pairs or history entries, "
                        f"got {type(history).__name__}")
    steps: List[int] = []
    rows: List[List[float]] = []
    for i, item in enumerate(history):
        if isinstance(item, Mapping):
            if key not in item:
                continue
            step, energies = item.get("step"), item[key]
        elif isinstance(item, (tuple, list)) and len(item) == 2:
            step, energies = item
        else:
            raise TypeError(f"history[{i}] must be a (step, energies) pair or a mapping, got {item!r}")
        if isinstance(step, bool) or not isinstance(step, Integral):
            raise ValueError(f"history[{i}] has step {step!r}, not an int")
        if isinstance(energies, torch.Tensor):
            energies = energies.detach().cpu().flatten().tolist()
        if isinstance(energies, (str, bytes)) or not isinstance(energies, Sequence):
            raise ValueError(f"history[{i}] energies must be a sequence of numbers, got {type(energies).__name__}")
        row = []
        for e in energies:
            if isinstance(e, bool) or not isinstance(e, Real) or not math.isfinite(e) or e < 0:
                raise ValueError(f"history[{i}] (step {step}) holds the energy {e!r}: energies must be finite "
                                 "and >= 0 (a diverged run has no learning step)")
            row.append(float(e))
        if steps and int(step) <= steps[-1]:
            raise ValueError(f"the steps must increase, got {steps[-1]} then {step} at history[{i}]")
        if rows and len(row) != len(rows[0]):
            raise ValueError(f"history[{i}] has {len(row)} energies, the first entry {len(rows[0])}")
        steps.append(int(step))
        rows.append(row)
    if not rows:
        raise ValueError(f"history holds no energies (no (step, energies) pair, no entry with {key!r})")
    if not rows[0]:
        raise ValueError("the energies hold no band")
    result: List[Optional[int]] = []
    for band, initial in enumerate(rows[0]):
        threshold = fraction * initial
        result.append(next((s for s, row in zip(steps, rows) if row[band] < threshold), None))
    return result
