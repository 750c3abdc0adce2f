"""Pieces shared by the foreground-map losses (one value per image): inputs and reductions.

The foreground-map losses (:mod:`~pixelweight.losses.wfm`, :mod:`~pixelweight.losses.sod`)
take binary logits ``(N, 1, H, W)`` and a target ``(N, H, W)`` or ``(N, 1, H, W)`` in
{0, 1} (or ``ignore_index``), like the library's other binary losses, and return one value
per image. Ignored pixels are outside the image for them: their logit is never read (it is
replaced by 0 before anything else, so even a NaN there is invisible), their label counts
as 0, the value of the zero padding beyond the border that the windowed terms (SSIM,
F3Net's average pooling) already use, and every sum and mean runs over the labelled
pixels. (The Weighted F-measure loss blurs errors, not labels; it sets those to 0 there.)
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch

from .._validation import accumulation_dtype, check_ignore_index, checked_binary


class BinaryMaps(NamedTuple):
    """Validated binary inputs in the compute dtype.

    ``logits`` (N, 1, H, W), 0 at ignored pixels; ``target`` (N, 1, H, W) 0./1., 0 at
    ignored pixels, and ``fg`` the same as bool; ``valid`` (N, 1, H, W) bool or ``None`` (every pixel counts);
    ``has_valid`` (N,) bool or ``None``; ``dtype`` the logits' own dtype (of the result).
    """

    logits: torch.Tensor
    target: torch.Tensor
    fg: torch.Tensor
    valid: Optional[torch.Tensor]
    has_valid: Optional[torch.Tensor]
    dtype: torch.dtype


def binary_maps(logits, target, ignore_index: Optional[int]) -> BinaryMaps:
    """Validate ``(logits, target)`` (:func:`~pixelweight._validation.checked_binary`) and
    return them as :class:`BinaryMaps` in float32 (float64 for float64 logits)."""
    ignore_index = check_ignore_index(ignore_index)
    logits, target, valid, _ = checked_binary(logits, target, ignore_index)
    n, _, h, w = logits.shape
    if n == 0 or h == 0 or w == 0:
        raise ValueError(f"logits must hold at least one pixel per image, got shape {tuple(logits.shape)}")
    acc = accumulation_dtype(logits.dtype)
    z = logits.to(acc)
    fg = target == 1
    has_valid = None
    if valid is not None:
        fg &= valid
        z = torch.where(valid, z, torch.zeros((), dtype=acc, device=z.device))
        has_valid = valid.flatten(1).any(1)
    return BinaryMaps(z, fg.to(acc), fg, valid, has_valid, logits.dtype)


def masked_sum(x: torch.Tensor, valid: Optional[torch.Tensor]) -> torch.Tensor:
    """Per image (first dimension) sum of ``x`` over the valid pixels (a ``where``, NaN-safe)."""
    if valid is not None:
        x = torch.where(valid, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.flatten(1).sum(1)


def valid_count(maps: BinaryMaps) -> torch.Tensor:
    """Per image, the number of valid pixels (in the compute dtype), at least 1."""
    n, _, h, w = maps.logits.shape
    if maps.valid is None:
        return torch.full((n,), float(h * w), dtype=maps.logits.dtype, device=maps.logits.device)
    return maps.valid.flatten(1).sum(1).clamp_min(1).to(maps.logits.dtype)


def reduce_images(loss: torch.Tensor, has_valid: Optional[torch.Tensor], reduction: str,
                  dtype: torch.dtype) -> torch.Tensor:
    """Reduce per-image losses ``(N,)``: an image without a valid pixel gets 0 and is left out
    of the ``"mean"`` (a zero with a graph when no image has one); the result in ``dtype``."""
    if has_valid is not None:
        loss = torch.where(has_valid, loss, torch.zeros((), dtype=loss.dtype, device=loss.device))
    if reduction == "none":
        return loss.to(dtype)
    total = loss.sum()
    if reduction == "mean":
        count = loss.shape[0] if has_valid is None else has_valid.sum().clamp_min(1).to(loss.dtype)
        total = total / count
    return total.to(dtype)
