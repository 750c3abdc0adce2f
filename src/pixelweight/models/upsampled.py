r"""A U-Net whose coarse logits are upsampled to the input: the model of the spectral chapter.

:class:`~pixelweight.models.UNet` with ``output_stride = s`` returns logits on a grid
:math:`s` times coarser than the image. Networks such as DeepLab V3+ upsample such logits
bilinearly to the label resolution before the loss and the argmax, so that the loss is computed
against the dense labels and its gradient flows back through the upsampling, a low-pass
filter followed by decimation: only label frequencies below the coarse grid's Nyquist limit
:math:`H/(2s)` drive learning [derived]. :class:`UpsampledUNet` is that network: a U-Net of output
stride :math:`s`, optionally with its decoder run on features truncated by a factor :math:`t`
(:class:`~pixelweight.spectral.TruncatedUNet`: logits of stride :math:`st`), whose logits are
upsampled bilinearly to the input's size. At :math:`s = t = 1` it is the U-Net itself, exactly
(same parameters, same output).

**Where a coarse logit sits.** Logit :math:`j` of a stride-:math:`s` U-Net summarises the
input pixels :math:`sj, \dots, sj + s - 1` (max-pooling), so it sits at their centre
:math:`sj + (s - 1)/2`: the convention of ``F.interpolate(align_corners=False)``, which is used.
Area truncation averages blocks and keeps that convention (centre :math:`stj + (st - 1)/2`). The
FFT crop instead *samples* the band-limited features at every :math:`t`-th position
(:func:`~pixelweight.spectral.fft_crop`), so logit :math:`j` sits at :math:`stj + (s - 1)/2`,
:math:`s(t - 1)/2` pixels before the block's centre; upsampling it with the block-centre
convention would shift every prediction by that much (1.5 pixels at :math:`t = 4`, the width
of a stroke). The upsampling therefore reads each logit at its own position
(``F.grid_sample``, bilinear, the borders clamped as ``F.interpolate`` clamps them).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_int, check_tensor
from .unet import UNet

__all__ = ["UpsampledUNet"]


def _upsample(logits: torch.Tensor, size, stride: int, offset: float) -> torch.Tensor:
    """Bilinear upsampling of logits whose pixel ``j`` sits at input coordinate
    ``stride * j + offset`` (pixel centres at integers) to ``size``; the borders are clamped."""
    if offset == (stride - 1) / 2:  # the block-centre convention of F.interpolate
        return F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
    h, w = logits.shape[-2:]
    kw = dict(dtype=logits.dtype, device=logits.device)
    # the coarse coordinate of every output pixel, then grid_sample's normalisation (align_corners=False)
    ys = (2 * (torch.arange(size[0], **kw) - offset) / stride + 1) / h - 1
    xs = (2 * (torch.arange(size[1], **kw) - offset) / stride + 1) / w - 1
    grid = torch.stack(torch.meshgrid(xs, ys, indexing="xy"), dim=-1)  # (H, W, (x, y))
    return F.grid_sample(logits, grid.expand(logits.shape[0], -1, -1, -1), mode="bilinear",
                         padding_mode="border", align_corners=False)


class UpsampledUNet(nn.Module):
    r"""A :class:`~pixelweight.models.UNet` of output stride :math:`s`, its decoder optionally
    truncated by :math:`t`, with logits upsampled bilinearly to the input's size.

    Parameters
    ----------
    in_channels, num_classes, width, depth, norm
        As for :class:`~pixelweight.models.UNet`.
    output_stride : int
        :math:`s`, a power of two between 1 and ``2**depth``: the decoder stops
        :math:`\log_2 s` levels early.
    truncation : int
        :math:`t \ge 1`: the decoder runs on the bottleneck and the skip connections low-passed
        to a grid :math:`t` times coarser (:class:`~pixelweight.spectral.TruncatedUNet`), about
        :math:`t^2` times fewer multiply-adds in the decoder. The bottleneck of a padded input
        (:math:`\lceil H / 2^{\mathrm{depth}} \rceil`) must be a multiple of :math:`t`.
    truncation_method : {"fft", "area"}
        How features are truncated: an ideal low-pass (:func:`~pixelweight.spectral.fft_crop`,
        default) or block averages (:func:`~pixelweight.spectral.area_downsample`).

    Attributes
    ----------
    unet : UNet
        The network (its parameters are this module's, under ``unet.``).
    logit_stride : int
        :math:`st`, the stride of the logits before they are upsampled.

    Notes
    -----
    Shapes: ``(N, in_channels, H, W) -> (N, num_classes, H, W)``. In the book:
    :doc:`Chapter 5 </notebooks/05_spectral/02_stride_truncation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.models import UNet, UpsampledUNet
    >>> _ = torch.manual_seed(0)
    >>> model = UpsampledUNet(num_classes=3, width=4, depth=2, output_stride=4)
    >>> model(torch.rand(2, 1, 16, 16)).shape, model.logit_stride
    (torch.Size([2, 3, 16, 16]), 4)
    >>> plain = UNet(num_classes=3, width=4, depth=2)
    >>> same = UpsampledUNet(num_classes=3, width=4, depth=2)
    >>> _ = same.unet.load_state_dict(plain.state_dict())
    >>> x = torch.rand(1, 1, 16, 16)
    >>> torch.equal(plain.eval()(x), same.eval()(x))
    True
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 11, width: int = 16, depth: int = 3,
                 output_stride: int = 1, truncation: int = 1, truncation_method: str = "fft",
                 norm: str = "batch"):
        super().__init__()
        self.unet = UNet(in_channels=in_channels, num_classes=num_classes, width=width, depth=depth,
                         output_stride=output_stride, norm=norm)
        self.truncation = check_int(truncation, "truncation", minimum=1)
        self.truncation_method = check_choice(truncation_method, "truncation_method", ("fft", "area"))
        self.in_channels, self.num_classes = in_channels, num_classes

    @property
    def logit_stride(self) -> int:
        """:math:`st`: the stride of the logits before the upsampling."""
        return self.unet.output_stride * self.truncation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W) -> (N, num_classes, H, W)`` logits."""
        check_tensor(x, "x")
        height, width = x.shape[-2:]
        if self.truncation > 1:  # a view of self.unet (its parameters), built per call
            from ..spectral.truncation import TruncatedUNet

            logits = TruncatedUNet(self.unet, self.truncation, method=self.truncation_method)(x)
        else:
            logits = self.unet(x)
        if tuple(logits.shape[-2:]) == (height, width):
            return logits
        s, t = self.unet.output_stride, self.truncation
        centre = (s - 1) / 2 if self.truncation_method == "fft" else (s * t - 1) / 2
        return _upsample(logits, (height, width), s * t, centre)
