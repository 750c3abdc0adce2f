r"""Ground-truth terms computed once per image and served with the batch.

The Weighted F-measure loss (:func:`pixelweight.losses.weighted_fmeasure_loss`) needs, for
every target, a Euclidean distance transform: the distance :math:`\Delta` and the index
:math:`\nu` of the nearest foreground pixel and the importance weights :math:`B`
(:func:`pixelweight.metrics.wfm_gt_terms`). They depend on the ground truth only, so a
training run should compute them once per image, not at every step.
:class:`WithWFMTerms` wraps a data set of ``(image, mask)`` pairs, computes the terms of
every mask when it is built and serves them beside the mask:
``(image, {"mask": mask, "terms": WFMTerms})``. PyTorch's default collate stacks the
per-image :class:`~pixelweight.metrics.WFMTerms` (a named tuple) into the batch's, and
:class:`pixelweight.train.AuxiliaryTargetsTask` hands them to a loss that takes ``terms=``
(every other loss gets the mask alone).
"""

from __future__ import annotations

import operator
from typing import Any, Dict, Tuple

import torch
from torch.utils.data import Dataset

__all__ = ["WithWFMTerms"]


class WithWFMTerms(Dataset):
    r"""A data set of ``(image, mask)`` pairs with the Weighted-F-measure terms of each mask.

    Item ``i`` is ``(image, {"mask": mask, "terms": terms})`` with ``terms`` the
    :class:`~pixelweight.metrics.WFMTerms` of ``mask == 1`` (shapes ``(H, W)``, and ``()``
    for ``has_foreground``), computed for every item when the wrapper is built, in one call
    of :func:`~pixelweight.metrics.wfm_gt_terms` per chunk of images, and kept (compactly:
    ``nearest`` as int32, widened on access). The default ``DataLoader`` collate stacks them
    into the batch's terms, exactly what ``wfm_gt_terms`` gives for the batch's masks.

    Parameters
    ----------
    dataset : Dataset
        Items ``(image, mask)`` with ``mask`` an ``(H, W)`` tensor in {0, 1} (all of one
        size), e.g. :class:`~pixelweight.data.SalientDigits`.
    dtype : torch.dtype
        Floating dtype of ``distance`` and ``weight``: that of the logits the loss will see
        (float32 by default, so the loss casts nothing).
    chunk : int
        Masks per call of ``wfm_gt_terms`` while building.

    Attributes
    ----------
    dataset : Dataset
        The wrapped data set; its other attributes (``labels``, ``config``, ...) are
        readable through the wrapper.
    computed : int
        How many masks the terms were computed for (``len(dataset)``, once): what a test
        reads to see that nothing is recomputed per step.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.data import WithWFMTerms
    >>> mask = torch.zeros(6, 6, dtype=torch.long)
    >>> mask[1:4, 1:4] = 1
    >>> pairs = [(torch.zeros(1, 6, 6), mask), (torch.zeros(1, 6, 6), torch.zeros(6, 6, dtype=torch.long))]
    >>> data = WithWFMTerms(pairs)
    >>> image, target = data[0]
    >>> sorted(target), target["terms"].has_foreground.item(), data[1][1]["terms"].has_foreground.item()
    (['mask', 'terms'], True, False)
    >>> batch = torch.utils.data.default_collate([data[0], data[1]])
    >>> batch[1]["terms"].nearest.shape, data.computed
    (torch.Size([2, 6, 6]), 2)
    """

    def __init__(self, dataset: Any, dtype: torch.dtype = torch.float32, chunk: int = 256) -> None:
        from .._validation import check_int
        from ..metrics import wfm_gt_terms

        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise TypeError(f"dataset must be a map-style data set (__getitem__ and __len__), got "
                            f"{type(dataset).__name__}")
        if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
            raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
        chunk = check_int(chunk, "chunk", minimum=1)
        n = len(dataset)
        if n == 0:
            raise ValueError("dataset is empty")
        self.dataset = dataset
        self.dtype = dtype
        masks = [self._mask(i) for i in range(n)]
        shape = tuple(masks[0].shape)
        odd = next((i for i, m in enumerate(masks) if tuple(m.shape) != shape), None)
        if odd is not None:
            raise ValueError(f"every mask must have one shape; item 0 has {shape}, item {odd} "
                             f"{tuple(masks[odd].shape)}")
        parts = []
        for start in range(0, n, chunk):
            gt = torch.stack([m == 1 for m in masks[start:start + chunk]])
            parts.append(wfm_gt_terms(gt, dtype=dtype))
        self._gt = torch.cat([p.gt for p in parts])
        self._distance = torch.cat([p.distance for p in parts])
        self._nearest = torch.cat([p.nearest for p in parts]).to(torch.int32)  # H * W < 2**31
        self._weight = torch.cat([p.weight for p in parts])
        self._has_foreground = torch.cat([p.has_foreground for p in parts])
        self.computed = n

    def _mask(self, index: int) -> torch.Tensor:
        item = self.dataset[index]
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ValueError(f"items must be (image, mask) pairs; item {index} is a {type(item).__name__}")
        mask = item[1]
        if not isinstance(mask, torch.Tensor) or mask.ndim != 2:
            got = tuple(mask.shape) if isinstance(mask, torch.Tensor) else type(mask).__name__
            raise ValueError(f"the mask of item {index} must be an (H, W) tensor, got {got}")
        if mask.dtype != torch.bool and not bool(((mask == 0) | (mask == 1)).all()):
            raise ValueError(f"the mask of item {index} must hold only 0 and 1 (binary ground truth)")
        return mask

    def terms(self, index: int):
        """The :class:`~pixelweight.metrics.WFMTerms` of item ``index`` (``(H, W)`` tensors)."""
        from ..metrics import WFMTerms

        i = self._index(index)
        return WFMTerms(gt=self._gt[i], distance=self._distance[i], nearest=self._nearest[i].long(),
                        weight=self._weight[i], has_foreground=self._has_foreground[i])

    def _index(self, index) -> int:
        try:
            i = operator.index(index)
        except TypeError:
            raise TypeError(f"index must be an int, got {type(index).__name__}") from None
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"index {i} is out of range for a data set of {n} items")
        return i % n

    def __len__(self) -> int:
        return self._gt.shape[0]

    def __getitem__(self, index) -> Tuple[torch.Tensor, Dict[str, Any]]:
        i = self._index(index)
        image, mask = self.dataset[i]
        return image, {"mask": mask, "terms": self.terms(i)}

    def __getattr__(self, name: str) -> Any:
        # the wrapped data set's attributes (labels, config, ...); never for the wrapper's own
        if name.startswith("_") or name in ("dataset", "dtype", "computed"):
            raise AttributeError(name)
        return getattr(self.dataset, name)

    def __repr__(self) -> str:
        return f"WithWFMTerms({self.dataset!r}, dtype={self.dtype})"
