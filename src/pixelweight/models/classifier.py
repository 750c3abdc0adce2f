"""A small convolutional classifier for the high-resolution ``ClutteredDigits`` task.

``depth`` stages of (3x3 conv, norm, ReLU, 2x2 max-pool) double the channels and halve
the resolution; global average pooling and a linear layer give the class logits. The
saliency-sampler chapter feeds it either a uniformly downsampled image or a
saliency-warped one of the same size.
"""

from __future__ import annotations

import torch
from torch import nn

from .._validation import check_int, check_tensor


class SmallCNN(nn.Module):
    """Small CNN classifier: ``(N, in_channels, H, W) -> (N, num_classes)`` logits."""

    def __init__(
        self, in_channels: int = 1, num_classes: int = 10, width: int = 16, depth: int = 4
    ):
        super().__init__()
        check_int(in_channels, "in_channels", minimum=1)
        check_int(num_classes, "num_classes", minimum=2)
        check_int(width, "width", minimum=1)
        check_int(depth, "depth", minimum=1)
        self.in_channels = in_channels
        self.num_classes = num_classes
        layers = []
        channels = in_channels
        for stage in range(depth):
            out = width * 2**stage
            layers += [
                nn.Conv2d(channels, out, 3, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
                nn.MaxPool2d(2, ceil_mode=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        check_tensor(x, "x")
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(
                f"expected input of shape (N, {self.in_channels}, H, W), got {tuple(x.shape)}"
            )
        if not x.is_floating_point():
            raise ValueError(
                f"input must be a floating tensor (e.g. an image scaled to [0, 1]), got dtype {x.dtype}; "
                "convert it with x.float() / 255 for 8-bit images"
            )
        return self.classifier(self.features(x).mean(dim=(2, 3)))
