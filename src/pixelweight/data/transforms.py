"""Joint image/target transforms for real data sets of varying image sizes.

Real segmentation images (VOC, saliency folders) differ in size, so a batch needs a
common size. :class:`PadCrop` pads an image/target pair to at least ``size`` (the image
with zeros, the target with ``ignore_index`` so padding never counts as a label) and cuts
a ``size`` window from it: at random for training, centred for evaluation. Randomness
comes from torch's global generator, which :func:`pixelweight.train.seed_everything`
seeds, so a seeded run crops the same windows.

The padded target pixels must hold ``ignore_index`` exactly. A target whose dtype cannot
hold it — ``bool`` (only False/True), ``uint8`` with ``ignore_index=-1`` or ``>= 256``,
``int8``, ... — would silently pad with another value (``True``, or ``-1`` wrapped to
255), so such a target is converted to ``int64`` (the label dtype of the losses) first,
whatever the image size, so that every item of a data set has the same dtype.
"""

from __future__ import annotations

from typing import Optional, Tuple, Union

import torch
import torch.nn.functional as F

from .._validation import check_ignore_index, check_int, check_tensor

__all__ = ["PadCrop"]


class PadCrop:
    """Pad to at least ``size`` and crop a ``size`` window; ``(image, target) -> (image, target)``.

    Parameters
    ----------
    size : int or (int, int)
        Output height and width.
    ignore_index : int, default 255
        Value given to padded target pixels (and kept as the "ignore" label).
    random : bool, default True
        Random window (training) or centred window (evaluation).

    Notes
    -----
    The target keeps its dtype when that dtype can hold ``ignore_index``; otherwise
    (``bool`` targets always, ``uint8`` targets with a negative or ``>= 256``
    ``ignore_index``) it is returned as ``int64`` with the same values, padded with
    ``ignore_index``. Floating targets (binary {0, 1} maps) keep their dtype.
    """

    def __init__(self, size: Union[int, Tuple[int, int]], ignore_index: int = 255, random: bool = True):
        if isinstance(size, (tuple, list)):
            if len(size) != 2:
                raise ValueError(f"size must be an int or a (height, width) pair, got {size!r}")
            self.size = (check_int(size[0], "size[0]", 1), check_int(size[1], "size[1]", 1))
        else:
            s = check_int(size, "size", 1)
            self.size = (s, s)
        self.ignore_index = check_ignore_index(ignore_index)
        if self.ignore_index is None:
            raise ValueError("PadCrop needs an ignore_index for the padded target pixels")
        if not isinstance(random, bool):
            raise TypeError(f"random must be a bool, got {type(random).__name__}")
        self.random = random

    def _offset(self, extent: int, window: int) -> int:
        slack = extent - window
        if slack <= 0:
            return 0
        if self.random:
            return int(torch.randint(0, slack + 1, (1,)))
        return slack // 2

    def __call__(self, image: torch.Tensor, target: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        check_tensor(image, "image")
        check_tensor(target, "target")
        if image.ndim != 3:
            raise ValueError(f"image must have shape (C, H, W), got {tuple(image.shape)}")
        if target.ndim != 2 or tuple(target.shape) != tuple(image.shape[1:]):
            raise ValueError(
                f"target must have shape (H, W) = {tuple(image.shape[1:])}, got {tuple(target.shape)}"
            )
        target = self._label_dtype(target)
        (h, w), (th, tw) = image.shape[1:], self.size
        pad_h, pad_w = max(0, th - h), max(0, tw - w)
        if pad_h or pad_w:
            image = F.pad(image, (0, pad_w, 0, pad_h), value=0.0)
            target = F.pad(target, (0, pad_w, 0, pad_h), value=self.ignore_index)
        y, x = self._offset(image.shape[1], th), self._offset(image.shape[2], tw)
        return image[:, y : y + th, x : x + tw], target[y : y + th, x : x + tw]

    def _label_dtype(self, target: torch.Tensor) -> torch.Tensor:
        """``target``, as ``int64`` when its dtype cannot hold ``ignore_index``."""
        if target.is_floating_point() or target.is_complex():
            return target  # holds any label value exactly (binary {0, 1} float targets)
        if target.dtype == torch.bool:
            return target.long()
        info = torch.iinfo(target.dtype)
        if not info.min <= self.ignore_index <= info.max:
            return target.long()
        return target

    def __repr__(self) -> str:
        return f"PadCrop(size={self.size}, ignore_index={self.ignore_index}, random={self.random})"
