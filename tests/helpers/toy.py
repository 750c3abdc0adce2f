"""Tiny learnable problems shared by the training tests (and the DDP worker script)."""

import torch
from torch.utils.data import TensorDataset


def threshold_task(n: int = 64, size: int = 16, seed: int = 0) -> TensorDataset:
    """Images of uniform noise; the label is 1 where the pixel is brighter than 0.5.

    A 1x1 convolution can solve it exactly, so any working harness learns it fast.
    """
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n, 1, size, size, generator=g)
    return TensorDataset(images, (images[:, 0] > 0.5).long())
