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


def classification_task(n: int = 64, size: int = 8, seed: int = 0) -> TensorDataset:
    """Images of uniform noise, brightened by 0.25 for class 1 and darkened for class 0:
    the label is whether the image's mean is above 0.5 (a pooled 1x1 convolution solves it)."""
    g = torch.Generator().manual_seed(seed)
    labels = torch.randint(0, 2, (n,), generator=g)
    images = (torch.rand(n, 1, size, size, generator=g) + 0.5 * labels.view(-1, 1, 1, 1) - 0.25).clamp(0, 1)
    return TensorDataset(images, labels)


class TinyClassifier(torch.nn.Module):
    """(N, 1, H, W) -> (N, 2) logits: a 3x3 convolution, global average pooling, a linear layer."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, padding=1)
        self.head = torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.head(torch.relu(self.conv(x)).mean(dim=(2, 3)))


class TwoHeads(torch.nn.Module):
    """A segmentation network with several outputs: ``{"logits": (N, 2, H, W), "energy": scalar}``
    (or the tuple ``(logits, energy)``), for tasks that select an output."""

    def __init__(self, as_tuple: bool = False):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 2, 1)
        self.as_tuple = as_tuple

    def forward(self, x):
        logits = self.conv(x)
        energy = logits.pow(2).mean()
        return (logits, energy) if self.as_tuple else {"logits": logits, "energy": energy}


class WeightedThreshold(torch.utils.data.Dataset):
    """:func:`threshold_task` with per-image auxiliary targets: item ``i`` is
    ``(image, {"mask": (H, W) long, "weight": () float, "index": i})``; ``weight`` is a
    per-image loss weight in [0.5, 1.5) that a loss reads from the batch."""

    def __init__(self, n: int = 64, size: int = 16, seed: int = 0):
        self.base = threshold_task(n, size, seed)
        self.weights = torch.rand(n, generator=torch.Generator().manual_seed(seed + 7)) + 0.5

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, mask = self.base[i]
        return image, {"mask": mask, "weight": self.weights[i], "index": i}
