r"""Low-pass truncation of features and labels, output strides, and the cost of a decoder.

**FFT crop** [derived]. :func:`~pixelweight.spectral.fft_crop` keeps the centred
:math:`h \times w` block of low frequencies of an :math:`H \times W` map, the frequencies
:math:`f_1 \in \{-\lfloor h/2 \rfloor, \dots, \lceil h/2 \rceil - 1\}` (and likewise along the
width), and returns it as an :math:`h \times w` map, scaled by :math:`hw / HW` so that a constant
stays the same constant: the ideal low-pass filter followed by sampling on the coarse grid. For
an even :math:`h < H` the coarse grid's Nyquist bin stands for both :math:`\pm h/2`; it takes
their sum (the two alias onto one sample, as in ``scipy.signal.resample``). With
``restore=True`` the block is put back into an :math:`H \times W` spectrum, the Nyquist bin split
in halves between :math:`\pm h/2` (band-limited interpolation), which makes the round trip a
projection: ``fft_crop(fft_crop(x, s, restore=True), s, restore=True)`` equals
``fft_crop(x, s, restore=True)``, and cropping a restored map gives the crop back. At
:math:`h = H, w = W` both are the identity.

**Area downsampling.** :func:`~pixelweight.spectral.area_downsample` averages
:math:`t \times t` blocks (``F.avg_pool2d`` with ``ceil_mode=True``: a last, partial block
averages the pixels it has); ``restore=True`` repeats each mean over its block, the projection
onto block-constant maps. Its frequency response is a product of sinc-like (Dirichlet) kernels:
a soft low-pass that lets some of the high frequencies alias in, where the FFT crop is sharp.

**Block labels** (weak annotation). :func:`~pixelweight.spectral.block_labels` gives each
:math:`b \times b` block the class most of its valid pixels have (ties go to the lowest class
index; ignored pixels do not vote; a block without a valid pixel is ignored) and
:func:`~pixelweight.spectral.block_fractions` the fraction of its valid pixels in each class (a
soft label that sums to 1, or 0 in every class for a block without a valid pixel: the one-hot
convention of an ignored pixel). A block label keeps label frequencies up to about
:math:`N/(2b)` cycles per image [derived]. :func:`~pixelweight.spectral.through_stride` passes
labels through an output grid of stride :math:`s` (down to one label per block, then up by
nearest-neighbour copying): the oracle of a stride-:math:`s` output, the most accurate
block-constant labels (the majority maximises each block's pixel accuracy). It is a reference,
not a strict bound, for a network of output stride :math:`s`: its logits are upsampled
bilinearly before the argmax, which can put a boundary inside a block.

**The U-Net's output stride.** :class:`~pixelweight.models.UNet` halves the resolution
``depth`` times (the bottleneck has stride :math:`2^{\mathrm{depth}}`); its decoder climbs back
``len(model.up)`` levels, so its logits have stride :math:`2^{\mathrm{depth} - \mathrm{len(up)}}`
(:func:`~pixelweight.spectral.unet_output_stride`). :class:`~pixelweight.spectral.TruncatedUNet`
runs a U-Net's decoder on features truncated by a factor :math:`t` (the bottleneck and every
skip connection cropped in frequency or area-downsampled), so that the decoder works on a grid
:math:`t` times coarser and costs about :math:`t^2` times fewer multiply-adds, counted by
:func:`~pixelweight.spectral.count_flops`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Dict, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_int, check_tensor
from ._checks import check_labels, check_real, check_size, check_spatial, real_dtype
from .spectra import _one_hot

__all__ = [
    "fft_crop",
    "area_downsample",
    "block_labels",
    "block_fractions",
    "through_stride",
    "unet_output_stride",
    "TruncatedUNet",
    "FlopCount",
    "count_flops",
]


# --------------------------------------------------------------------------------- FFT crop
def _crop_axis(spectrum: torch.Tensor, n: int, dim: int) -> torch.Tensor:
    """The ``n`` lowest frequencies of ``spectrum`` along ``dim`` (FFT order); for an even
    ``n`` below the axis' length its Nyquist bin sums the frequencies -n/2 and +n/2."""
    size = spectrum.shape[dim]
    if n == size:
        return spectrum
    low = (n + 1) // 2  # frequencies 0 .. ceil(n/2) - 1
    high = n // 2  # frequencies -floor(n/2) .. -1
    parts = [spectrum.narrow(dim, 0, low), spectrum.narrow(dim, size - high, high)]
    out = torch.cat(parts, dim)
    if n % 2 == 0:  # the coarse Nyquist bin (index low = n/2, frequency -n/2) also receives +n/2
        nyquist = out.narrow(dim, low, 1) + spectrum.narrow(dim, n // 2, 1)
        out = torch.cat([out.narrow(dim, 0, low), nyquist, out.narrow(dim, low + 1, high - 1)], dim)
    return out


def _pad_axis(spectrum: torch.Tensor, size: int, dim: int) -> torch.Tensor:
    """Put the ``n``-frequency ``spectrum`` back into ``size`` frequencies along ``dim``, zeros
    elsewhere; an even ``n``'s Nyquist bin is split in halves between -n/2 and +n/2."""
    n = spectrum.shape[dim]
    if n == size:
        return spectrum
    low, high = (n + 1) // 2, n // 2
    shape = list(spectrum.shape)
    shape[dim] = size - n
    zeros = spectrum.new_zeros(shape)
    out = torch.cat([spectrum.narrow(dim, 0, low), zeros, spectrum.narrow(dim, low, high)], dim)
    if n % 2 == 0:  # split the Nyquist bin (at index size - n/2 now) into -n/2 and +n/2
        half = spectrum.narrow(dim, low, 1) / 2
        index = torch.arange(size, device=spectrum.device)
        shape = [1] * out.ndim
        shape[dim] = size
        at_plus = (index == n // 2).view(shape)
        at_minus = (index == size - n // 2).view(shape)
        out = torch.where(at_plus | at_minus, half, out)
    return out


def fft_crop(x: torch.Tensor, size: Union[int, Tuple[int, int]], restore: bool = False) -> torch.Tensor:
    r"""Low-pass a map by keeping the centred :math:`h \times w` block of its 2-D spectrum.

    See the module notes for the convention at the Nyquist bin. Differentiable; runs in
    float32 at least and returns the input's dtype.

    Parameters
    ----------
    x : torch.Tensor
        Real ``(..., H, W)``, e.g. features ``(N, C, H, W)``.
    size : int or (int, int)
        :math:`(h, w)` with :math:`1 \le h \le H`, :math:`1 \le w \le W`; an int is a square.
    restore : bool
        ``False``: the low-passed map on the :math:`h \times w` grid (the mean kept).
        ``True``: the low-passed map at the original :math:`H \times W`.

    Returns
    -------
    torch.Tensor
        ``(..., h, w)``, or ``(..., H, W)`` with ``restore=True``.

    Examples
    --------
    >>> import math, torch
    >>> from pixelweight.spectral import fft_crop
    >>> wave = lambda f: [math.cos(2 * math.pi * f * i / 8) for i in range(8)]
    >>> x = torch.tensor(wave(1), dtype=torch.float64) + torch.tensor(wave(3), dtype=torch.float64)
    >>> x = x.repeat(8, 1)  # 1 and 3 cycles per image across the width
    >>> fft_crop(x, (8, 4))[0].round(decimals=6) + 0  # 3 cycles removed, 1 cycle sampled on 4 pixels
    tensor([ 1.,  0., -1.,  0.], dtype=torch.float64)
    >>> torch.allclose(fft_crop(x, (8, 4), restore=True)[0], torch.tensor(wave(1), dtype=torch.float64))
    True
    """
    x = check_real(x, "x")
    height, width = check_spatial(x, "x")
    h, w = check_size(size)
    if h > height or w > width:
        raise ValueError(f"size {(h, w)} must not exceed the map's size {(height, width)}")
    if not isinstance(restore, bool):
        raise TypeError(f"restore must be a bool, got {type(restore).__name__}")
    acc = real_dtype(x.dtype)
    spectrum = torch.fft.fft2(x.to(acc))
    low = _crop_axis(_crop_axis(spectrum, h, -2), w, -1)
    if restore:
        out = torch.fft.ifft2(_pad_axis(_pad_axis(low, height, -2), width, -1)).real
    else:
        out = torch.fft.ifft2(low).real * ((h * w) / (height * width))
    return out.to(x.dtype)


# ------------------------------------------------------------------------- area downsampling
def _pool(x: torch.Tensor, factor: int) -> torch.Tensor:
    """Block means of ``(..., H, W)``; partial blocks at the bottom/right average what they hold."""
    shape = x.shape
    flat = x.reshape(-1, 1, *shape[-2:])
    pooled = F.avg_pool2d(flat, factor, stride=factor, ceil_mode=True)
    return pooled.reshape(*shape[:-2], *pooled.shape[-2:])


def _repeat(x: torch.Tensor, factor: int, height: int, width: int) -> torch.Tensor:
    """Nearest-neighbour upsampling by ``factor`` (each value over its block), cropped to (H, W)."""
    return x.repeat_interleave(factor, dim=-2).repeat_interleave(factor, dim=-1)[..., :height, :width]


def area_downsample(x: torch.Tensor, factor: int, restore: bool = False) -> torch.Tensor:
    r"""Average :math:`t \times t` blocks (area downsampling, ``F.avg_pool2d``).

    Parameters
    ----------
    x : torch.Tensor
        Real ``(..., H, W)``.
    factor : int
        :math:`t \ge 1`; the result has :math:`\lceil H/t \rceil \times \lceil W/t \rceil` values, a
        last partial block averaging the pixels it holds.
    restore : bool
        ``True``: each block mean repeated over its block, at the original :math:`H \times W`.

    Returns
    -------
    torch.Tensor
        ``(..., ceil(H / t), ceil(W / t))``, or ``(..., H, W)`` with ``restore=True``; the
        input's dtype (averages in float32 at least).

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import area_downsample
    >>> x = torch.arange(16.0).view(4, 4)
    >>> area_downsample(x, 2)
    tensor([[ 2.5000,  4.5000],
            [10.5000, 12.5000]])
    >>> area_downsample(x[:3, :3], 2)  # partial blocks average what they hold
    tensor([[ 2.5000,  4.0000],
            [ 8.5000, 10.0000]])
    """
    x = check_real(x, "x")
    height, width = check_spatial(x, "x")
    factor = check_int(factor, "factor", minimum=1)
    if not isinstance(restore, bool):
        raise TypeError(f"restore must be a bool, got {type(restore).__name__}")
    acc = real_dtype(x.dtype)
    pooled = _pool(x.to(acc), factor)
    if restore:
        pooled = _repeat(pooled, factor, height, width)
    return pooled.to(x.dtype)


# ----------------------------------------------------------------------------- block labels
def _block_counts(target: torch.Tensor, block: int, num_classes: int, ignore_index: Optional[int]) -> torch.Tensor:
    """``(B, C, ceil(H/b), ceil(W/b))`` counts of each class's valid pixels per block (exact
    in float64)."""
    one_hot = _one_hot(target, num_classes, ignore_index, torch.float64)
    height, width = target.shape[-2:]
    pad_h, pad_w = (-height) % block, (-width) % block
    one_hot = F.pad(one_hot, (0, pad_w, 0, pad_h))  # padding holds no valid pixel
    batch = target.shape[0]
    rows, cols = one_hot.shape[-2] // block, one_hot.shape[-1] // block
    return one_hot.view(batch, num_classes, rows, block, cols, block).sum(dim=(3, 5))


def _check_block(block, name: str = "block") -> int:
    return check_int(block, name, minimum=1)


def _majority(counts: torch.Tensor, ignore_index: Optional[int]) -> torch.Tensor:
    """The majority class of each block (the first of equal counts), ``ignore_index`` where
    the block has no valid pixel."""
    labels = counts.argmax(dim=1)  # argmax returns the first maximal index: ties -> lowest class
    if ignore_index is not None:
        empty = counts.sum(dim=1) == 0
        labels = torch.where(empty, torch.full_like(labels, ignore_index), labels)
    return labels


def block_labels(target: torch.Tensor, block: int, num_classes: int, ignore_index: Optional[int] = None,
                 restore: bool = False) -> torch.Tensor:
    r"""Block-wise majority labels: one label per :math:`b \times b` block (weak annotation).

    Parameters
    ----------
    target : torch.Tensor
        Integer ``(B, H, W)`` in ``[0, C)`` or equal to ``ignore_index``.
    block : int
        :math:`b \ge 1`; a last partial block at the bottom/right votes with the pixels it has.
    num_classes : int
        :math:`C \ge 1`.
    ignore_index : int, optional
        Ignored pixels do not vote; a block of ignored pixels only is ``ignore_index``.
    restore : bool
        ``True``: each block's label copied to its pixels, at the original :math:`H \times W`.

    Returns
    -------
    torch.Tensor
        Long ``(B, ceil(H / b), ceil(W / b))``, or ``(B, H, W)`` with ``restore=True``. At
        :math:`b = 1` the labels themselves.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import block_labels
    >>> target = torch.tensor([[[0, 1, 2, 2],
    ...                         [1, 0, 2, 255],
    ...                         [255, 255, 1, 1],
    ...                         [255, 255, 0, 1]]])
    >>> block_labels(target, 2, num_classes=3, ignore_index=255)  # a tie goes to class 0
    tensor([[[  0,   2],
             [255,   1]]])
    """
    target, num_classes, ignore_index = check_labels(target, num_classes, ignore_index)
    block = _check_block(block)
    if not isinstance(restore, bool):
        raise TypeError(f"restore must be a bool, got {type(restore).__name__}")
    labels = _majority(_block_counts(target, block, num_classes, ignore_index), ignore_index)
    if restore:
        labels = _repeat(labels, block, *target.shape[-2:])
    return labels


def block_fractions(target: torch.Tensor, block: int, num_classes: int, ignore_index: Optional[int] = None,
                    restore: bool = False, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    r"""Block-wise soft labels: the fraction of each :math:`b \times b` block's valid pixels in
    each class.

    Parameters
    ----------
    target, block, num_classes, ignore_index, restore
        As for :func:`~pixelweight.spectral.block_labels`.
    dtype : torch.dtype
        ``torch.float32`` (default) or ``torch.float64``.

    Returns
    -------
    torch.Tensor
        ``(B, C, ceil(H / b), ceil(W / b))`` (``(B, C, H, W)`` with ``restore=True``): each
        block's fractions sum to 1; a block without a valid pixel is 0 in every class (as an
        ignored pixel's one-hot vector). At :math:`b = 1` the one-hot labels.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import block_fractions
    >>> target = torch.tensor([[[0, 1], [1, 255]]])
    >>> block_fractions(target, 2, num_classes=2, ignore_index=255).flatten()
    tensor([0.3333, 0.6667])
    """
    target, num_classes, ignore_index = check_labels(target, num_classes, ignore_index)
    block = _check_block(block)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64, got {dtype!r}")
    if not isinstance(restore, bool):
        raise TypeError(f"restore must be a bool, got {type(restore).__name__}")
    counts = _block_counts(target, block, num_classes, ignore_index)
    fractions = (counts / counts.sum(dim=1, keepdim=True).clamp_min(1)).to(dtype)
    if restore:
        fractions = _repeat(fractions, block, *target.shape[-2:])
    return fractions


def through_stride(target: torch.Tensor, stride: int, num_classes: int, ignore_index: Optional[int] = None,
                   down: str = "majority") -> torch.Tensor:
    r"""Labels passed through an output grid of stride :math:`s`: down to one label per
    :math:`s \times s` block, then up again by nearest-neighbour copying, at the original size.

    Their mIoU against the dense labels is the oracle of an output stride :math:`s` evaluated at
    full label resolution (a reference, not a strict bound: a network's coarse logits,
    upsampled bilinearly, can put a boundary inside a block).

    Parameters
    ----------
    target, num_classes, ignore_index
        As for :func:`~pixelweight.spectral.block_labels`.
    stride : int
        :math:`s \ge 1`.
    down : {"majority", "nearest"}
        ``"majority"`` (default): each block's majority label
        (:func:`~pixelweight.spectral.block_labels`), the best single label for its pixels;
        a block of ignored pixels only stays ``ignore_index`` (its pixels are ignored in the
        ground truth too). ``"nearest"``: each block's top-left pixel (``target[..., ::s, ::s]``,
        what ``F.interpolate(mode="nearest")`` picks), which aliases; an ignored top-left pixel
        makes its whole block ``ignore_index``.

    Returns
    -------
    torch.Tensor
        Long ``(B, H, W)``; at :math:`s = 1` the labels themselves.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.spectral import through_stride
    >>> target = torch.tensor([[[0, 0, 0, 1],
    ...                         [0, 1, 1, 1],
    ...                         [1, 1, 1, 1],
    ...                         [1, 1, 0, 1]]])
    >>> through_stride(target, 2, num_classes=2)
    tensor([[[0, 0, 1, 1],
             [0, 0, 1, 1],
             [1, 1, 1, 1],
             [1, 1, 1, 1]]])
    """
    target, num_classes, ignore_index = check_labels(target, num_classes, ignore_index)
    stride = _check_block(stride, "stride")
    down = check_choice(down, "down", ("majority", "nearest"))
    if down == "majority":
        coarse = _majority(_block_counts(target, stride, num_classes, ignore_index), ignore_index)
    else:
        coarse = target[..., ::stride, ::stride]
    return _repeat(coarse, stride, *target.shape[-2:])


# ---------------------------------------------------------------------------------- U-Net
def _check_unet(model) -> nn.Module:
    from ..models import UNet

    if not isinstance(model, UNet):
        raise TypeError(f"model must be a pixelweight.models.UNet, got {type(model).__name__}")
    return model


def unet_output_stride(model: nn.Module) -> int:
    r"""The output stride of a :class:`~pixelweight.models.UNet`: :math:`2^{\mathrm{depth} - u}`
    with :math:`u` = ``len(model.up)`` the decoder's upsampling steps (its coarsest level, the
    bottleneck, has stride :math:`2^{\mathrm{depth}}`).

    It equals the ``output_stride`` the model was built with; the logits of an
    :math:`H \times W` input are :math:`\lceil H/s \rceil \times \lceil W/s \rceil`.

    Examples
    --------
    >>> from pixelweight.models import UNet
    >>> from pixelweight.spectral import unet_output_stride
    >>> unet_output_stride(UNet(depth=3)), unet_output_stride(UNet(depth=3, output_stride=4))
    (1, 4)
    """
    model = _check_unet(model)
    return 2 ** (model.depth - len(model.up))


class TruncatedUNet(nn.Module):
    r"""A :class:`~pixelweight.models.UNet` whose decoder runs on features truncated by a factor
    :math:`t` (see the module notes).

    The encoder runs as in the U-Net; the bottleneck and every skip connection the decoder reads
    are low-passed to a grid :math:`t` times coarser (:func:`~pixelweight.spectral.fft_crop` or
    :func:`~pixelweight.spectral.area_downsample`), so that every decoder block works at
    :math:`1/t` of its usual resolution. The logits have stride :math:`s\,t`
    (:math:`\lceil H/(st) \rceil \times \lceil W/(st) \rceil`, :math:`s` the U-Net's output
    stride); evaluate them at full label resolution (e.g. :class:`~pixelweight.metrics.SegmentationMetrics`
    upsamples them). The U-Net is a submodule: its parameters are shared, so a trained U-Net
    can be evaluated truncated, or a truncated one trained. At :math:`t = 1` the output is the
    U-Net's, exactly.

    Parameters
    ----------
    unet : UNet
        The network.
    factor : int
        :math:`t \ge 1`; the padded input's bottleneck size (:math:`\lceil H / 2^{\mathrm{depth}}
        \rceil`) must be a multiple of it, checked at the forward pass.
    method : {"fft", "area"}
        ``"fft"`` (default): :func:`~pixelweight.spectral.fft_crop`; ``"area"``:
        :func:`~pixelweight.spectral.area_downsample`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.models import UNet
    >>> from pixelweight.spectral import TruncatedUNet, count_flops
    >>> _ = torch.manual_seed(0)
    >>> unet = UNet(in_channels=1, num_classes=3, width=4, depth=2)
    >>> truncated = TruncatedUNet(unet, factor=2)
    >>> truncated(torch.rand(1, 1, 16, 16)).shape
    torch.Size([1, 3, 8, 8])
    >>> full, cut = count_flops(unet, (1, 1, 16, 16)), count_flops(truncated, (1, 1, 16, 16))
    >>> full.within("up", "decoder", "head") / cut.within("unet.up", "unet.decoder", "unet.head")
    4.0
    """

    def __init__(self, unet: nn.Module, factor: int, method: str = "fft"):
        super().__init__()
        self.unet = _check_unet(unet)
        self.factor = check_int(factor, "factor", minimum=1)
        self.method = check_choice(method, "method", ("fft", "area"))

    @property
    def output_stride(self) -> int:
        """The stride of the logits: the U-Net's times ``factor``."""
        return unet_output_stride(self.unet) * self.factor

    def _truncate(self, x: torch.Tensor) -> torch.Tensor:
        t = self.factor
        if t == 1:
            return x
        if self.method == "area":
            return area_downsample(x, t)
        return fft_crop(x, (x.shape[-2] // t, x.shape[-1] // t))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N, in_channels, H, W) -> (N, num_classes, ceil(H / (s t)), ceil(W / (s t)))`` logits."""
        unet = self.unet
        check_tensor(x, "x")
        if x.ndim != 4 or x.shape[1] != unet.in_channels:
            raise ValueError(f"expected input of shape (N, {unet.in_channels}, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"input must be a floating tensor, got dtype {x.dtype}")
        height, width = x.shape[-2:]
        multiple = 2**unet.depth
        pad_h, pad_w = (-height) % multiple, (-width) % multiple
        bottom = ((height + pad_h) // multiple, (width + pad_w) // multiple)
        if bottom[0] % self.factor or bottom[1] % self.factor:
            raise ValueError(
                f"the bottleneck of a {height} x {width} input is {bottom[0]} x {bottom[1]} (padded to a multiple "
                f"of 2**depth = {multiple}), not a multiple of factor={self.factor}")
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        skips = []
        for level, block in enumerate(unet.encoder):
            if level > 0:
                x = F.max_pool2d(x, 2)
            x = block(x)
            skips.append(x)
        x = self._truncate(x)  # the decoder's input, the bottleneck
        for i, (up, block) in enumerate(zip(unet.up, unet.decoder)):
            level = unet.depth - 1 - i
            x = block(torch.cat([up(x), self._truncate(skips[level])], dim=1))
        logits = unet.head(x)
        s = self.output_stride
        return logits[..., : math.ceil(height / s), : math.ceil(width / s)]


# ------------------------------------------------------------------------------------ FLOPs
@dataclasses.dataclass(frozen=True)
class FlopCount:
    r"""Multiply-adds of a forward pass, what :func:`~pixelweight.spectral.count_flops` returns.

    Attributes
    ----------
    macs : int
        Multiply-adds of every ``Conv2d``, ``ConvTranspose2d`` and ``Linear`` call.
    by_module : dict of str to int
        The multiply-adds of each such module (by its name in ``named_modules``), summed over
        its calls.

    Examples
    --------
    >>> from torch import nn
    >>> from pixelweight.spectral import count_flops
    >>> count = count_flops(nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.Conv2d(2, 1, 1)), (1, 1, 4, 4))
    >>> count.macs, count.flops, count.by_module, count.within("1")
    (320, 640, {'0': 288, '1': 32}, 32)
    """

    macs: int
    by_module: Dict[str, int]

    @property
    def flops(self) -> int:
        """Floating-point operations, :math:`2 \\times` ``macs`` (a multiply and an add each)."""
        return 2 * self.macs

    def within(self, *prefixes: str) -> int:
        """The multiply-adds of the modules named ``prefix`` or ``prefix.*`` for any of ``prefixes``
        (e.g. ``within("decoder", "up", "head")`` for a U-Net's decoder)."""
        for p in prefixes:
            if not isinstance(p, str):
                raise TypeError(f"prefixes must be str, got {type(p).__name__}")
        return sum(m for name, m in self.by_module.items()
                   if any(name == p or name.startswith(p + ".") for p in prefixes))


def _macs(module: nn.Module, inputs, output) -> int:
    if isinstance(module, nn.Conv2d):  # each output element: C_in/groups * kh * kw products
        kh, kw = module.kernel_size
        return output.numel() * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.ConvTranspose2d):  # each input element scatters C_out/groups * kh * kw
        kh, kw = module.kernel_size
        return inputs[0].numel() * (module.out_channels // module.groups) * kh * kw
    return output.numel() * module.in_features  # nn.Linear


def count_flops(model: nn.Module, inputs: Union[torch.Tensor, Sequence[int]], *,
                dtype: torch.dtype = torch.float32) -> FlopCount:
    r"""Count the multiply-adds of one forward pass, with forward hooks on every ``Conv2d``,
    ``ConvTranspose2d`` and ``Linear`` module.

    Per call: ``Conv2d`` :math:`\lvert\text{output}\rvert \cdot C_\text{in}/g \cdot k_h k_w`;
    ``ConvTranspose2d`` :math:`\lvert\text{input}\rvert \cdot C_\text{out}/g \cdot k_h k_w` (the
    products it makes, whatever overlaps); ``Linear`` :math:`\lvert\text{output}\rvert \cdot
    C_\text{in}`. Biases, normalisation, activations, pooling, padding and FFTs are not counted
    (the FFT crop of a :class:`~pixelweight.spectral.TruncatedUNet` costs
    :math:`O(HW \log HW)` per channel, small beside a 3x3 convolution's :math:`9 C HW`).

    The pass runs in eval mode under ``torch.no_grad`` on a zero input (so batch norm's running
    statistics do not change), and the model's mode is restored.

    Parameters
    ----------
    model : nn.Module
        The network.
    inputs : torch.Tensor or sequence of int
        An example input, or its shape (a zero tensor of ``dtype`` on the model's device).
    dtype : torch.dtype
        The dtype of a zero input built from a shape.

    Returns
    -------
    FlopCount

    Examples
    --------
    >>> from torch import nn
    >>> from pixelweight.spectral import count_flops
    >>> count_flops(nn.Linear(10, 4), (3, 10)).macs  # 3 * 4 outputs, 10 products each
    120
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not isinstance(inputs, torch.Tensor):
        if isinstance(inputs, (str, bytes)) or not isinstance(inputs, Sequence):
            raise TypeError(f"inputs must be a tensor or a shape (a sequence of ints), got {type(inputs).__name__}")
        shape = [check_int(s, f"inputs[{i}]", minimum=1) for i, s in enumerate(inputs)]
        parameter = next(model.parameters(), None)
        device = parameter.device if parameter is not None else torch.device("cpu")
        inputs = torch.zeros(shape, dtype=dtype, device=device)
    counts: Dict[str, int] = {}
    names = {module: name for name, module in model.named_modules()}
    kinds = (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)

    def hook(module, args, output):
        counts[names[module]] = counts.get(names[module], 0) + _macs(module, args, output)

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, kinds)]
    modes = [(m, m.training) for m in model.modules()]  # restored module by module (a frozen part stays so)
    try:
        model.eval()
        with torch.no_grad():
            model(inputs)
    finally:
        for module, training in modes:
            module.training = training
        for handle in handles:
            handle.remove()
    return FlopCount(macs=sum(counts.values()), by_module=counts)
