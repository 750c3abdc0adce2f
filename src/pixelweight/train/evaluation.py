"""Exact evaluation of a model on a data set, alone or sharded over DDP ranks."""

from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .._validation import check_int
from .runtime import DistContext, autocast, resolve_device
from .task import Task, check_task


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    metrics,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    amp: bool = True,
    ctx: Optional[DistContext] = None,
    *,
    task: Optional[Task] = None,
) -> Dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` with the accumulator ``metrics``.

    Parameters
    ----------
    model : nn.Module
        Put in ``eval()`` mode for the evaluation and restored to its mode afterwards.
    dataset : Dataset
        Batched in order (no shuffling), ``batch_size`` samples at a time.
    metrics
        Any object with ``reset()``, ``update(outputs, targets)`` and
        ``compute() -> dict`` (the accumulators of :mod:`pixelweight.metrics`).
    device, amp
        As in :class:`~pixelweight.train.TrainConfig` (autocast only on CUDA).
    ctx : DistContext, optional
        Under DDP every rank evaluates a disjoint shard (``rank::world_size``, no
        padding, so nothing is counted twice) and ``compute()`` sums the accumulators
        over the ranks, so every rank gets the exact metrics of the whole set.
    task : Task, optional
        How a batch is moved, fed to the model and to ``metrics``
        (default :class:`~pixelweight.train.SegmentationTask`: ``(image, target)`` pairs,
        ``metrics.update(logits.float(), target)``).

    Returns
    -------
    dict
        ``metrics.compute()``.
    """
    for method in ("reset", "update", "compute"):
        if not callable(getattr(metrics, method, None)):
            raise TypeError(f"metrics must have a {method}() method, got {type(metrics).__name__}")
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    check_int(batch_size, "batch_size", minimum=1)
    task = check_task(task)
    ctx = ctx or DistContext()
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    if ctx.enabled:
        dataset = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))
    was_training = model.training
    model.eval()
    metrics.reset()
    context, _ = autocast(device, amp)
    try:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=task.collate_fn)
        for batch in loader:
            batch = task.to_device(batch, device)
            with context:
                outputs = task.forward(model, batch)
            task.update_metrics(metrics, outputs, batch)
    finally:
        model.train(was_training)
    # compute() sums the accumulators over all ranks when a process group is active
    return metrics.compute()
