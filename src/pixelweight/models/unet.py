"""A small U-Net (Ronneberger et al., MICCAI 2015) with a configurable output stride.

The encoder halves the resolution ``depth`` times; the decoder climbs back up, each
step concatenating the encoder's features at the same scale (the skip connection).
With ``output_stride = s`` the decoder stops ``log2(s)`` steps early, so the logits
live on a grid ``s`` times coarser than the input: the knob the spectral chapter turns
(a coarse output grid keeps only the label frequencies below its Nyquist limit).

Inputs of any size are accepted: the image is zero-padded on the bottom/right up to a
multiple of ``2**depth`` and the logits are cropped back to ``ceil(H / s) x ceil(W / s)``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
import torch.nn.functional as F

from .._validation import check_int, check_tensor

_NORMS = ("batch", "group", "none")


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(min(8, channels), channels)
    return nn.Identity()


class ConvBlock(nn.Sequential):
    """Two 3x3 convolutions, each followed by normalisation and ReLU."""

    def __init__(self, in_channels: int, out_channels: int, norm: str = "batch"):
        bias = norm == "none"
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(out_channels, out_channels, 3, padding=1, bias=bias),
            _norm(norm, out_channels),
            nn.ReLU(inplace=True),
        )


class UNet(nn.Module):
    """U-Net for dense prediction.

    Parameters
    ----------
    in_channels:
        Channels of the input image (1 for the digit testbeds, 3 for RGB data).
    num_classes:
        Output channels: C >= 2 for multiclass logits, 1 for a binary foreground logit.
    width:
        Channels of the first level; level ``l`` has ``width * 2**l`` channels.
    depth:
        Number of 2x downsamplings (levels below the input resolution).
    output_stride:
        Power of two between 1 and ``2**depth``: the logits are ``output_stride`` times
        coarser than the input.
    norm:
        ``"batch"`` (default; converted to SyncBatchNorm by the DDP harness), ``"group"``
        or ``"none"``.

    Notes
    -----
    Shapes: ``(N, in_channels, H, W) -> (N, num_classes, ceil(H / s), ceil(W / s))``.
    """

    def __init__(
        self,
        in_channels: int = 1,
        num_classes: int = 11,
        width: int = 16,
        depth: int = 3,
        output_stride: int = 1,
        norm: str = "batch",
    ):
        super().__init__()
        check_int(in_channels, "in_channels", minimum=1)
        check_int(num_classes, "num_classes", minimum=1)
        check_int(width, "width", minimum=1)
        check_int(depth, "depth", minimum=0)
        check_int(output_stride, "output_stride", minimum=1)
        if output_stride & (output_stride - 1):
            raise ValueError(f"output_stride must be a power of two, got {output_stride}")
        if output_stride > 2**depth:
            raise ValueError(
                f"output_stride={output_stride} exceeds the coarsest level 2**depth={2**depth}"
            )
        if norm not in _NORMS:
            raise ValueError(f"norm must be one of {_NORMS}, got {norm!r}")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.depth = depth
        self.output_stride = output_stride
        channels = [width * 2**level for level in range(depth + 1)]
        self.encoder = nn.ModuleList(
            [ConvBlock(in_channels, channels[0], norm)]
            + [ConvBlock(channels[l - 1], channels[l], norm) for l in range(1, depth + 1)]
        )
        # The decoder climbs from level `depth` up to level log2(output_stride).
        self.top_level = int(math.log2(output_stride))
        self.up = nn.ModuleList()
        self.decoder = nn.ModuleList()
        for level in range(depth - 1, self.top_level - 1, -1):
            self.up.append(nn.ConvTranspose2d(channels[level + 1], channels[level], 2, stride=2))
            self.decoder.append(ConvBlock(2 * channels[level], channels[level], norm))
        self.head = nn.Conv2d(channels[self.top_level], num_classes, 1)

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
        height, width = x.shape[-2:]
        multiple = 2**self.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for level, block in enumerate(self.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        for i, (up, block) in enumerate(zip(self.up, self.decoder)):
            level = self.depth - 1 - i
            x = block(torch.cat([up(x), skips[level]], dim=1))
        logits = self.head(x)
        s = self.output_stride
        return logits[..., : math.ceil(height / s), : math.ceil(width / s)]
