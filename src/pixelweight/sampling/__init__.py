r"""Saliency-based sampling: zoom on what matters, and unzoom dense predictions.

The saliency sampler (Recasens et al., ECCV 2018) re-weights pixels by how densely it samples
them: a saliency map computed from a low-resolution copy of the image decides where the task
network's fixed-size input reads the high-resolution image.

- :func:`saliency_grid`: the sampling grid of a saliency map (the saliency-weighted Gaussian
  average of coordinates, with the replicate padding that makes uniform saliency the identity);
- :func:`zoom`: ``grid_sample`` of the high-resolution image at that grid;
- :class:`SaliencySampler`: the whole layer, a saliency network of your choice included, with the
  paper's blur warm-up; it returns the sampled image with its grid and saliency;
- :func:`unzoom` and :func:`invert_grid`: the inverse warp for dense outputs (after Thavamani et
  al., CVPR 2023): a prediction on the zoomed image brought back to the original pixels.

In the book: :doc:`Learning to zoom: the saliency sampler, derived and drawn </notebooks/03_zoom/01_derivation>`
(the grid, the padding, caricatures, the inverse map), :doc:`classification
</notebooks/03_zoom/02_classification>` and :doc:`zoom and unzoom for segmentation
</notebooks/03_zoom/03_segmentation>`.

Coordinates are PyTorch's normalised :math:`(x, y) \in [-1, 1]^2` with ``align_corners=True``
throughout.
"""

from .inverse import InverseGrid, invert_grid, unzoom
from .sampler import (
    CODE_GRID_SIZE,
    CODE_PADDING,
    CODE_SIGMA,
    SaliencySampler,
    SamplerOutput,
    gaussian_kernel,
    identity_grid,
    saliency_grid,
    zoom,
)

__all__ = [
    "CODE_GRID_SIZE",
    "CODE_PADDING",
    "CODE_SIGMA",
    "InverseGrid",
    "SaliencySampler",
    "SamplerOutput",
    "gaussian_kernel",
    "identity_grid",
    "invert_grid",
    "saliency_grid",
    "unzoom",
    "zoom",
]
