"""Input checks shared by the functions of :mod:`pixelweight.spectral` (private)."""

from __future__ import annotations

from numbers import Integral
from typing import Optional, Sequence, Tuple, Union

import torch

from .._validation import check_ignore_index, check_int, check_label_range, check_tensor

def check_labels(target, num_classes, ignore_index, name: str = "target") -> Tuple[torch.Tensor, int, Optional[int]]:
    """``target``: an integer ``(B, H, W)`` label tensor with values in ``[0, num_classes)`` or
    ``ignore_index`` (a device-side assertion on CUDA, a ``ValueError`` on the CPU)."""
    check_tensor(target, name)
    num_classes = check_int(num_classes, "num_classes", minimum=1)
    ignore_index = check_ignore_index(ignore_index)
    if target.is_floating_point() or target.is_complex() or target.dtype == torch.bool:
        raise ValueError(f"{name} must be an integer tensor of class indices, got dtype {target.dtype}")
    if target.ndim != 3:
        raise ValueError(f"{name} must have shape (B, H, W), got {tuple(target.shape)}")
    if target.shape[-1] == 0 or target.shape[-2] == 0:
        raise ValueError(f"{name} must have H, W >= 1, got shape {tuple(target.shape)}")
    target = target.long()
    check_label_range(target, name, num_classes, ignore_index, asynchronous=True)
    return target, num_classes, ignore_index


def check_real(x, name: str, min_ndim: int = 2) -> torch.Tensor:
    """A real floating tensor with at least ``min_ndim`` dimensions."""
    check_tensor(x, name)
    if not x.is_floating_point():
        raise ValueError(f"{name} must be a real floating tensor, got dtype {x.dtype}")
    if x.ndim < min_ndim:
        raise ValueError(f"{name} must have at least {min_ndim} dimensions, got shape {tuple(x.shape)}")
    return x


def check_spatial(x: torch.Tensor, name: str) -> Tuple[int, int]:
    """The last two sizes of ``x``, each >= 1."""
    height, width = x.shape[-2:]
    if height < 1 or width < 1:
        raise ValueError(f"{name} must have H, W >= 1 in its last two dimensions, got shape {tuple(x.shape)}")
    return int(height), int(width)


def check_size(size: Union[int, Sequence[int]], name: str = "size") -> Tuple[int, int]:
    """An int ``s`` (meaning ``(s, s)``) or a pair ``(h, w)`` of ints >= 1."""
    if isinstance(size, (tuple, list, torch.Size)):
        if len(size) != 2:
            raise ValueError(f"{name} must be an int or a pair (h, w), got {tuple(size)!r}")
        return check_int(size[0], f"{name}[0]", minimum=1), check_int(size[1], f"{name}[1]", minimum=1)
    if isinstance(size, bool) or not isinstance(size, Integral):
        raise TypeError(f"{name} must be an int or a pair (h, w) of ints, got {type(size).__name__} ({size!r})")
    s = check_int(size, name, minimum=1)
    return s, s


def real_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a spectrum is computed in: float64 for float64, float32 otherwise (the FFT of
    float16 / bfloat16 is not supported everywhere, and its sums would overflow)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def check_float_dtype(dtype, name: str = "dtype") -> torch.dtype:
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"{name} must be torch.float32 or torch.float64, got {dtype!r}")
    return dtype
