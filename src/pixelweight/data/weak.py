r"""Block-wise weak annotation: label maps an annotator drew one label per :math:`b \times b` block.

Chen, Chiu and Wu (arXiv:2012.14123) propose annotating segmentation data block-wise, which
saves labelling time and keeps the label frequencies up to about :math:`N/(2b)` cycles per
image [derived]. Two kinds of block label are served, computed once for every image when the
data set is built (:func:`pixelweight.spectral.block_labels`,
:func:`pixelweight.spectral.block_fractions`) and repeated over each block's pixels, so that the
network still trains at full resolution:

- ``"majority"``: the block's most frequent class (ties to the lowest class index), an
  ``(H, W)`` long map of class indices;
- ``"soft"``: the fraction of the block's pixels in each class, a ``(C, H, W)`` float32 map of
  class probabilities (train with a loss that takes them, e.g.
  :func:`pixelweight.losses.soft_cross_entropy`).

:class:`BlockAnnotated` wraps any data set of ``(image, labels)`` pairs;
:class:`WeakDigitScenes` is :class:`~pixelweight.data.DigitScenes` (the same images and dense
labels for the same arguments) whose training split is annotated block-wise, while its
validation and test splits keep their dense labels: the protocol of a weakly annotated training
set evaluated against dense ground truth.
"""

from __future__ import annotations

import operator
import zlib
from typing import Any, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import Dataset

from .._validation import check_choice, check_int
from ._digits import SPLITS
from .scenes import DigitScenes

__all__ = ["ANNOTATIONS", "BlockAnnotated", "WeakDigitScenes"]

#: The kinds of block label.
ANNOTATIONS = ("majority", "soft")


def _block_targets(labels: torch.Tensor, block: int, annotation: str, num_classes: int,
                   ignore_index: Optional[int]) -> torch.Tensor:
    """The block labels of ``(N, H, W)`` labels at block resolution: long ``(N, h, w)`` or
    float32 ``(N, C, h, w)``."""
    from ..spectral import block_fractions, block_labels

    if annotation == "majority":
        return block_labels(labels, block, num_classes, ignore_index)
    return block_fractions(labels, block, num_classes, ignore_index)


def _repeat(coarse: torch.Tensor, block: int, height: int, width: int) -> torch.Tensor:
    """Each block's value copied to its pixels, cropped to ``height x width``."""
    full = coarse.repeat_interleave(block, dim=-2).repeat_interleave(block, dim=-1)
    return full[..., :height, :width].contiguous()


class BlockAnnotated(Dataset):
    r"""A data set of ``(image, labels)`` pairs whose labels are replaced by block labels.

    Item ``i`` is ``(image, target)``: ``target`` is the ``(H, W)`` long map of each
    :math:`b \times b` block's majority class (``annotation="majority"``) or the ``(C, H, W)``
    float32 map of its class fractions (``annotation="soft"``), at the labels' resolution. Both
    are computed for every item when the wrapper is built and kept at block resolution.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image, labels)`` with ``labels`` an integer ``(H, W)`` tensor in ``[0, C)`` or
        equal to ``ignore_index``, all of one size.
    block : int
        :math:`b \ge 1`. At :math:`b = 1` the majority labels are the labels themselves and
        the soft labels their one-hot maps. A last partial block at the bottom or right votes
        with the pixels it has.
    annotation : {"majority", "soft"}
    num_classes : int, optional
        :math:`C`; default: ``dataset.num_classes``.
    ignore_index : int, optional
        Label of pixels that do not vote; a block of them only is ``ignore_index``
        (majority) or 0 in every class (soft: the one-hot convention of an ignored pixel).

    Attributes
    ----------
    dataset : Dataset
        The wrapped data set; its other attributes (``config``, ``pixel_counts``, ...) are
        readable through the wrapper and describe the dense labels.

    Notes
    -----
    In the book: :doc:`Chapter 5: block-wise weak annotation </notebooks/05_spectral/03_weak_annotation>`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.data import BlockAnnotated
    >>> pairs = [(torch.zeros(1, 4, 4), torch.tensor([[0, 0, 1, 1], [0, 1, 1, 1], [2, 2, 1, 1], [2, 2, 1, 1]]))]
    >>> BlockAnnotated(pairs, 2, "majority", num_classes=3)[0][1]
    tensor([[0, 0, 1, 1],
            [0, 0, 1, 1],
            [2, 2, 1, 1],
            [2, 2, 1, 1]])
    >>> BlockAnnotated(pairs, 2, "soft", num_classes=3)[0][1][:, 0, 0]  # the top-left block
    tensor([0.7500, 0.2500, 0.0000])
    """

    def __init__(self, dataset: Any, block: int, annotation: str = "majority", num_classes: Optional[int] = None,
                 ignore_index: Optional[int] = None, chunk: int = 256):
        self.block = check_int(block, "block", minimum=1)
        self.annotation = check_choice(annotation, "annotation", ANNOTATIONS)
        if num_classes is None:
            num_classes = getattr(dataset, "num_classes", None)
            if num_classes is None:
                raise ValueError("num_classes is needed for a data set without a num_classes attribute")
        self.num_classes = check_int(num_classes, "num_classes", minimum=1)
        self.ignore_index = ignore_index
        self.dataset = dataset
        chunk = check_int(chunk, "chunk", minimum=1)
        n = len(dataset)
        if n == 0:
            raise ValueError("the data set is empty")
        parts, shape = [], None
        for start in range(0, n, chunk):
            labels = [dataset[i][1] for i in range(start, min(n, start + chunk))]
            for lab in labels:
                if not isinstance(lab, torch.Tensor) or lab.ndim != 2:
                    raise ValueError(f"labels must be (H, W) tensors, got {getattr(lab, 'shape', type(lab))}")
                if shape is None:
                    shape = tuple(lab.shape)
                elif tuple(lab.shape) != shape:
                    raise ValueError(f"every label map must have one size; got {shape} and {tuple(lab.shape)}")
            parts.append(_block_targets(torch.stack(labels), self.block, self.annotation, self.num_classes,
                                        ignore_index))
        self._coarse = torch.cat(parts)
        self._shape = shape

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index) -> Tuple[torch.Tensor, torch.Tensor]:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        image = self.dataset[i][0]
        return image, _repeat(self._coarse[i], self.block, *self._shape)

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_") or name == "dataset":
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"BlockAnnotated({self.dataset!r}, block={self.block}, annotation={self.annotation!r})"


class WeakDigitScenes(DigitScenes):
    r""":class:`~pixelweight.data.DigitScenes` whose training split is annotated block-wise.

    For the same arguments the images and the dense labels are those of
    :class:`~pixelweight.data.DigitScenes` (``labels``, ``pixel_counts`` and
    ``class_pixel_frequencies`` describe the dense labels). Items of the splits named in
    ``weak_splits`` (the training split by default) serve block labels, as
    :class:`BlockAnnotated` does; the other splits serve the dense labels, so that a network
    trained on weak labels is evaluated against dense ground truth.

    Parameters
    ----------
    annotation_block : int
        :math:`b \ge 1` (1: dense labels for ``"majority"``, one-hot maps for ``"soft"``).
    annotation : {"majority", "soft"}
    weak_splits : sequence of str
        The splits annotated block-wise (default ``("train",)``).
    **kwargs
        The arguments of :class:`~pixelweight.data.DigitScenes` (``split``, ``num_samples``,
        ``size``, ``seed``, ...).

    Notes
    -----
    In the book: :doc:`Chapter 5: block-wise weak annotation </notebooks/05_spectral/03_weak_annotation>`.

    Examples
    --------
    >>> from pixelweight.data import DigitScenes, WeakDigitScenes
    >>> dense = DigitScenes(split="train", num_samples=2, size=32, cache_dir=False)
    >>> weak = WeakDigitScenes(split="train", num_samples=2, size=32, annotation_block=8,
    ...                        annotation="soft", cache_dir=False)
    >>> bool((weak.images == dense.images).all()), weak[0][1].shape
    (True, torch.Size([11, 32, 32]))
    >>> WeakDigitScenes(split="test", num_samples=2, size=32, annotation_block=8, cache_dir=False)[0][1].shape
    torch.Size([32, 32])
    """

    def __init__(self, split: str = "train", annotation_block: int = 1, annotation: str = "majority",
                 weak_splits: Sequence[str] = ("train",), **kwargs: Any):
        block = check_int(annotation_block, "annotation_block", minimum=1)
        annotation = check_choice(annotation, "annotation", ANNOTATIONS)
        if isinstance(weak_splits, str) or not all(isinstance(s, str) and s in SPLITS for s in weak_splits):
            raise ValueError(f"weak_splits must be a sequence of split names of {SPLITS}, got {weak_splits!r}")
        super().__init__(split=split, **kwargs)
        self.config.update(annotation_block=block, annotation=annotation, weak_splits=sorted(set(weak_splits)))
        self.weak = self.split in weak_splits
        self._coarse = None
        if self.weak:
            labels = torch.from_numpy(self.labels.astype(np.int64))
            self._coarse = _block_targets(labels, block, annotation, self.num_classes, None)

    def _rng(self) -> np.random.Generator:
        """DigitScenes' own stream (the base class seeds by the class name): the same images."""
        name_id = zlib.crc32(DigitScenes.__name__.encode("utf-8"))
        return np.random.default_rng([self.config["seed"], name_id, SPLITS.index(self.split)])

    def _target(self, index: int) -> torch.Tensor:
        if self._coarse is None:
            return super()._target(index)
        size = self.labels.shape[-1]
        return _repeat(self._coarse[index], self.config["annotation_block"], size, size)
