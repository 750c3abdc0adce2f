r"""Task networks behind a sampler: what the saliency-sampler chapter compares.

A task network sees a small input (``input_size`` x ``input_size``) made from a large image in
one of four ways (``mode``):

- ``"uniform"``: uniform downsampling, ``F.interpolate(x, input_size, mode="bilinear",
  align_corners=True)`` (``antialias=True``: with an antialiasing filter). This is exactly
  the saliency sampler with a constant saliency map (the identity grid), so the two differ
  in the saliency only;
- ``"saliency"``: the saliency sampler (:class:`~pixelweight.sampling.SaliencySampler`): a
  small saliency network looks at the uniformly downsampled copy and decides where the
  input reads the **high-resolution** image;
- ``"fixed"``: one saliency map for the whole data set (a learned parameter, the same for
  every image): the cheap baseline of later work (Thavamani et al., CVPR 2023);
- ``"full"``: the task network reads the full-resolution image (the upper bound; it costs
  :math:`(\text{size}/\text{input\_size})^2` times the task network's compute).

The last layer of the saliency network and the fixed map start at zero, so the saliency
starts constant. With the default replicate padding a constant saliency gives the identity
grid exactly, so those models start as uniform downsampling and depart from it only as far
as training moves them. Without padding (``padding=0``, the ablation) a constant saliency
does **not** give the identity: the kernel's weights are cut at the border, every sample is
pulled toward the centre, and the model starts from a **centre zoom** (at the chapter's
sizes the grid starts up to about 0.26 off the identity in normalised coordinates, whose
range [-1, 1] spans the image). ``blur_warmup_steps``: the sampler's blur warm-up (the sampled image is
average-pooled to a random size and upsampled back) for that many training forward passes,
counted by the buffer ``training_steps`` (in the ``state_dict``; eval passes do not count).

The task network is built **before** the saliency network, so that under the same seed every
mode gives the task network the same initial weights (the arms of a comparison then differ
in how the input is made, not in the draw of the task network).

:class:`ZoomClassifier` puts a :class:`~pixelweight.models.SmallCNN` behind the sampler;
:class:`ZoomSegmenter` a :class:`~pixelweight.models.UNet`, whose logits it brings back to
the full label resolution: bilinear upsampling after uniform downsampling,
:func:`~pixelweight.sampling.unzoom` after a zoom.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from .._validation import check_choice, check_float, check_int, check_tensor
from .classifier import SmallCNN
from .unet import UNet

__all__ = ["ZOOM_MODES", "ZoomClassifier", "ZoomSegmenter"]

#: How a zooming model makes the task network's input: see the module notes.
ZOOM_MODES = ("uniform", "saliency", "fixed", "full")


class _Zoom(nn.Module):
    """The sampler part shared by :class:`ZoomClassifier` and :class:`ZoomSegmenter`."""

    def __init__(self, in_channels: int, mode: str, input_size: int, grid_size: int, sigma: Optional[float],
                 padding: Optional[int], saliency_width: int, blur_warmup_steps: int, antialias: bool):
        super().__init__()
        from ..sampling import CODE_GRID_SIZE, CODE_SIGMA

        self.mode = check_choice(mode, "mode", ZOOM_MODES)
        self.input_size = check_int(input_size, "input_size", minimum=4)
        self.grid_size = check_int(grid_size, "grid_size", minimum=2)
        # the public code's kernel width relative to its grid (5.52 of 31 cells), and a
        # padding as wide as the kernel's reach (its 30 of 31): the identity stays exact
        self.sigma = (self.grid_size * CODE_SIGMA / CODE_GRID_SIZE if sigma is None
                      else check_float(sigma, "sigma", minimum=0.0, min_inclusive=False))
        self.padding = self.grid_size - 1 if padding is None else check_int(padding, "padding", minimum=0)
        self.saliency_width = check_int(saliency_width, "saliency_width", minimum=1)
        self.blur_warmup_steps = check_int(blur_warmup_steps, "blur_warmup_steps", minimum=0)
        if not isinstance(antialias, bool):
            raise TypeError(f"antialias must be a bool, got {type(antialias).__name__}")
        if antialias and self.mode != "uniform":
            raise ValueError(f"antialias applies to mode='uniform' only, got mode={self.mode!r}")
        self.antialias = antialias
        # training forward passes seen (the blur warm-up's clock): a buffer, so that it is saved
        # with the model, moves with it and is updated in place (no Python int for
        # torch.compile to guard on); read on the host only while the warm-up may still be on
        self.register_buffer("training_steps", torch.zeros((), dtype=torch.long))
        self._warmup_over = self.blur_warmup_steps == 0
        self._in_channels = in_channels
        self.sampler = None
        self.fixed_logits = None

    def _build_sampler(self) -> None:
        """The saliency network and the sampler: called by the subclasses **after** they built
        their task network, so that the task network's initial weights do not depend on the mode."""
        from ..sampling import SaliencySampler

        in_channels = self._in_channels
        if self.mode in ("saliency", "fixed"):
            net = None
            if self.mode == "saliency":
                w = self.saliency_width
                net = nn.Sequential(
                    nn.Conv2d(in_channels, w, 3, padding=1, bias=False), nn.BatchNorm2d(w), nn.ReLU(inplace=True),
                    nn.MaxPool2d(2, ceil_mode=True),
                    nn.Conv2d(w, 2 * w, 3, padding=1, bias=False), nn.BatchNorm2d(2 * w), nn.ReLU(inplace=True),
                    nn.Conv2d(2 * w, 2 * w, 3, padding=2, dilation=2, bias=False), nn.BatchNorm2d(2 * w),
                    nn.ReLU(inplace=True),
                    nn.Conv2d(2 * w, 1, 1),
                )
                nn.init.zeros_(net[-1].weight)  # start from a constant saliency: uniform sampling
                nn.init.zeros_(net[-1].bias)
            self.sampler = SaliencySampler(net, self.input_size, grid_size=self.grid_size, sigma=self.sigma,
                                           padding=self.padding, saliency_size=self.input_size, antialias=False,
                                           activation="softmax", blur_warmup=self.blur_warmup_steps > 0)
        self.fixed_logits = (nn.Parameter(torch.zeros(1, 1, self.grid_size, self.grid_size))
                             if self.mode == "fixed" else None)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        self._warmup_over = self.blur_warmup_steps == 0  # the loaded clock decides again

    def _check_input(self, x: torch.Tensor, in_channels: int) -> None:
        check_tensor(x, "x")
        if x.ndim != 4 or x.shape[1] != in_channels:
            raise ValueError(f"expected input of shape (N, {in_channels}, H, W), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"input must be a floating tensor, got dtype {x.dtype}")
        if self.mode != "full" and min(x.shape[-2:]) < self.input_size:
            raise ValueError(f"the image ({tuple(x.shape[-2:])}) is smaller than input_size={self.input_size}: "
                             "these models sample a large image down")

    def sample(self, x: torch.Tensor):
        """The task network's input with what made it: a
        :class:`~pixelweight.sampling.SamplerOutput` ``(output, grid, saliency)``. For
        ``"uniform"`` the grid is the identity and the saliency constant; for ``"full"``
        ``output`` is ``x`` itself."""
        from ..sampling import SamplerOutput, identity_grid

        n = x.shape[0]
        if self.mode in ("uniform", "full"):
            flat = x.new_ones(n, 1, self.grid_size, self.grid_size) / self.grid_size ** 2
            if self.mode == "full":
                return SamplerOutput(x, identity_grid(tuple(x.shape[-2:]), batch=n, dtype=x.dtype, device=x.device),
                                     flat)
            out = F.interpolate(x, size=self.input_size, mode="bilinear", align_corners=True,
                                antialias=self.antialias)
            return SamplerOutput(out, identity_grid(self.input_size, batch=n, dtype=x.dtype, device=x.device), flat)
        if self.training:
            if not self._warmup_over:
                self._warmup_over = int(self.training_steps) >= self.blur_warmup_steps
            self.sampler.blur_warmup = not self._warmup_over
            with torch.no_grad():
                self.training_steps.add_(1)
        if self.mode == "fixed":
            s = torch.softmax(self.fixed_logits.flatten(), 0).view(1, 1, self.grid_size, self.grid_size)
            return self.sampler(x, saliency=s.expand(n, 1, self.grid_size, self.grid_size))
        return self.sampler(x)

    def _zoom_repr(self) -> str:
        return (f"mode={self.mode!r}, input_size={self.input_size}, grid_size={self.grid_size}, "
                f"sigma={self.sigma:.4g}, padding={self.padding}, blur_warmup_steps={self.blur_warmup_steps}")


class ZoomClassifier(_Zoom):
    r"""Classify a large image from a small input: a :class:`~pixelweight.models.SmallCNN` behind
    uniform downsampling, the saliency sampler, a fixed data-set-level saliency, or nothing.

    ``(N, in_channels, H, W) -> (N, num_classes)`` logits.

    Parameters
    ----------
    in_channels, num_classes, width, depth
        The :class:`~pixelweight.models.SmallCNN` (its input is ``input_size`` x ``input_size``,
        or the full image for ``mode="full"``).
    mode : {"uniform", "saliency", "fixed", "full"}, default "saliency"
        How the task network's input is made (module notes).
    input_size : int, default 32
        Side of the task network's input (>= 4); the image must be at least as large.
    grid_size : int, default 16
        Cells of the saliency grid (the saliency network's output is resized to it).
    sigma : float, optional
        Gaussian width in cells; default the public code's ratio to its grid,
        ``grid_size * 5.52 / 31``.
    padding : int, optional
        Replicate padding in cells; default ``grid_size - 1``; 0 is the no-padding ablation.
    saliency_width : int, default 8
        Channels of the saliency network's first layer.
    blur_warmup_steps : int, default 0
        Training forward passes with the sampler's blur warm-up on.
    antialias : bool, default False
        Antialiased uniform downsampling (``mode="uniform"`` only).

    Examples
    --------
    At initialisation the sampler (with its default padding) is uniform downsampling, exactly:

    >>> import torch
    >>> from pixelweight.models import ZoomClassifier
    >>> _ = torch.manual_seed(0)
    >>> x = torch.rand(2, 1, 96, 96)
    >>> zoomed = ZoomClassifier(mode="saliency", input_size=32).eval()
    >>> uniform = ZoomClassifier(mode="uniform", input_size=32).eval()
    >>> bool((zoomed.sample(x).output - uniform.sample(x).output).abs().max() < 1e-5)
    True
    >>> zoomed(x).shape
    torch.Size([2, 10])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, width: int = 16, depth: int = 4, *,
                 mode: str = "saliency", input_size: int = 32, grid_size: int = 16, sigma: Optional[float] = None,
                 padding: Optional[int] = None, saliency_width: int = 8, blur_warmup_steps: int = 0,
                 antialias: bool = False):
        super().__init__(check_int(in_channels, "in_channels", minimum=1), mode, input_size, grid_size, sigma,
                         padding, saliency_width, blur_warmup_steps, antialias)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.net = SmallCNN(in_channels, num_classes, width, depth)
        self._build_sampler()  # after the task network: the same draw of it in every mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self._check_input(x, self.in_channels)
        return self.net(self.sample(x).output)

    def extra_repr(self) -> str:
        return self._zoom_repr()


class ZoomSegmenter(_Zoom):
    r"""Segment a large image from a small input: a :class:`~pixelweight.models.UNet` behind
    uniform downsampling or a zoom, its logits brought back to the full resolution.

    ``(N, in_channels, H, W) -> (N, num_classes, H, W)`` logits: after ``"uniform"`` the
    task network's logits are upsampled bilinearly (``align_corners=True``); after a zoom
    (``"saliency"``, ``"fixed"``) they are unzoomed (:func:`~pixelweight.sampling.unzoom`);
    ``"full"`` segments the image itself. The parameters are those of :class:`ZoomClassifier`
    (with the U-Net's ``width`` and ``depth``; default ``num_classes=11``, the classes of
    :class:`~pixelweight.data.DigitScenes`), ``unzoom_gradient`` and ``unzoom_iterations``.

    Parameters
    ----------
    unzoom_gradient : bool, default False
        Let the gradient reach the saliency through the unzoom too
        (:func:`~pixelweight.sampling.unzoom` is differentiable with respect to the grid by
        the implicit function theorem); by default it reaches the saliency through the zoom
        of the input only: the inverse's gradient holds :math:`J^{-1}`, large where the warp
        is nearly singular, and made the chapter's training diverge.
    unzoom_iterations : int, default 12
        Most Newton iterations of the inverse warp (``max_iter`` of
        :func:`~pixelweight.sampling.invert_grid`, whose default is 50): started in the cell
        that holds the solution, pixels the warp reaches converge in 2-3, and those it does
        not reach (no solution) are not waited for, so the cap binds only on unusual grids.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.models import ZoomSegmenter
    >>> model = ZoomSegmenter(mode="saliency", input_size=16, grid_size=8, width=4, depth=2).eval()
    >>> model(torch.rand(1, 1, 48, 48)).shape
    torch.Size([1, 11, 48, 48])
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 11, width: int = 16, depth: int = 3, *,
                 mode: str = "saliency", input_size: int = 32, grid_size: int = 16, sigma: Optional[float] = None,
                 padding: Optional[int] = None, saliency_width: int = 8, blur_warmup_steps: int = 0,
                 antialias: bool = False, unzoom_gradient: bool = False, unzoom_iterations: int = 12):
        super().__init__(check_int(in_channels, "in_channels", minimum=1), mode, input_size, grid_size, sigma,
                         padding, saliency_width, blur_warmup_steps, antialias)
        if not isinstance(unzoom_gradient, bool):
            raise TypeError(f"unzoom_gradient must be a bool, got {type(unzoom_gradient).__name__}")
        self.unzoom_gradient = unzoom_gradient
        self.unzoom_iterations = check_int(unzoom_iterations, "unzoom_iterations", minimum=1)
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.net = UNet(in_channels, num_classes, width=width, depth=depth)
        self._build_sampler()  # after the task network: the same draw of it in every mode

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from ..sampling import unzoom

        self._check_input(x, self.in_channels)
        size = tuple(x.shape[-2:])
        if self.mode == "full":
            return self.net(x)
        sampled = self.sample(x)
        logits = self.net(sampled.output)
        if self.mode == "uniform":
            return F.interpolate(logits, size=size, mode="bilinear", align_corners=True)
        return unzoom(logits, sampled.grid if self.unzoom_gradient else sampled.grid.detach(), size,
                      max_iter=self.unzoom_iterations)

    def extra_repr(self) -> str:
        return self._zoom_repr()
