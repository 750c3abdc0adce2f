r"""Spectral analysis of segmentation: which label frequencies matter.

After Chen, Chiu and Wu, *Spectral Analysis for Semantic Segmentation with Applications on
Feature Truncation and Weak Annotation* (arXiv:2012.14123). No code of the paper is public and
only its abstract could be read: the derivations here (normalisations, binning, the
decomposition of the cross-entropy, the truncations) are the book's own [derived].

- **Label spectra** (``pixelweight.spectral.spectra``): the 2-D DFT of one-hot label maps
  (:func:`~pixelweight.spectral.label_spectrum`), their energy by integer radial frequency in cycles per image
  (:func:`~pixelweight.spectral.label_energy`, :func:`~pixelweight.spectral.radial_profile`, :func:`~pixelweight.spectral.radial_frequency`,
  :func:`~pixelweight.spectral.max_radial_frequency`), the cumulative non-DC energy fraction
  (:func:`~pixelweight.spectral.energy_fractions`) and the cut-off :math:`K_\alpha` (:func:`~pixelweight.spectral.energy_cutoff`).
- **Cross-entropy by frequency** (``pixelweight.spectral.parseval``): the Parseval
  decomposition :math:`\mathrm{CE} = \sum_k T(k)` (:func:`~pixelweight.spectral.cross_entropy_terms`), its truncation
  :math:`\mathrm{CE}_K` and relative error (:func:`~pixelweight.spectral.cross_entropy_spectrum`,
  :func:`~pixelweight.spectral.truncated_cross_entropy`).
- **Truncation** (``pixelweight.spectral.truncation``): low-pass features
  (:func:`~pixelweight.spectral.fft_crop`, :func:`~pixelweight.spectral.area_downsample`), block-wise labels (:func:`~pixelweight.spectral.block_labels`,
  :func:`~pixelweight.spectral.block_fractions`), labels through an output stride (:func:`~pixelweight.spectral.through_stride`), the
  U-Net's output stride (:func:`~pixelweight.spectral.unet_output_stride`), a U-Net with a truncated decoder
  (:class:`~pixelweight.spectral.TruncatedUNet`) and multiply-add counts (:func:`~pixelweight.spectral.count_flops`).
- **Spectral bias** (``pixelweight.spectral.bias``): the residual's energy by frequency
  (:func:`~pixelweight.spectral.residual_energy`), logged during training
  (:class:`~pixelweight.spectral.SpectralBiasProbe`, an ``on_log`` hook, which can log the
  truncated cross-entropy too; :func:`~pixelweight.spectral.eval_logits` runs a model without
  touching its training) and read as the step each band is learned
  (:func:`~pixelweight.spectral.learning_steps`).

Frequencies are in cycles per image, the DFT unnormalised (``torch.fft.fft2``) and in FFT
order; ignored pixels are zero in every one-hot channel. Every function validates its inputs
(``ValueError`` / ``TypeError`` naming the offending value), lets a NaN through as NaN, runs on
the inputs' device and computes in float32 at least (float64 for float64 inputs).
"""

from .bias import SpectralBiasProbe, eval_logits, learning_steps, residual_energy
from .parseval import CrossEntropySpectrum, cross_entropy_spectrum, cross_entropy_terms, truncated_cross_entropy
from .spectra import (
    band_energy,
    energy_cutoff,
    energy_fractions,
    label_energy,
    label_spectrum,
    max_radial_frequency,
    one_hot_labels,
    radial_frequency,
    radial_profile,
)
from .truncation import (
    FlopCount,
    TruncatedUNet,
    area_downsample,
    block_fractions,
    block_labels,
    count_flops,
    fft_crop,
    through_stride,
    unet_output_stride,
)

__all__ = [
    "CrossEntropySpectrum",
    "FlopCount",
    "SpectralBiasProbe",
    "TruncatedUNet",
    "area_downsample",
    "band_energy",
    "block_fractions",
    "block_labels",
    "count_flops",
    "cross_entropy_spectrum",
    "cross_entropy_terms",
    "energy_cutoff",
    "energy_fractions",
    "eval_logits",
    "fft_crop",
    "label_energy",
    "label_spectrum",
    "learning_steps",
    "max_radial_frequency",
    "one_hot_labels",
    "radial_frequency",
    "radial_profile",
    "residual_energy",
    "through_stride",
    "truncated_cross_entropy",
    "unet_output_stride",
]
