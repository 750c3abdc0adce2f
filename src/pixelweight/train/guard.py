"""The non-finite loss guard: training stops at the first NaN or infinite loss."""

from __future__ import annotations

from typing import Optional

import torch
import torch.distributed as dist

from .runtime import DistContext


class NonFiniteLossError(FloatingPointError, RuntimeError):
    """The training loss became NaN or infinite: :func:`~pixelweight.train.train` stops and
    writes no record.

    A :class:`FloatingPointError` (what earlier versions raised) and a
    :class:`RuntimeError`. ``step`` is the first optimiser step whose loss was not
    finite and ``loss`` its value.
    """

    def __init__(self, step: int, loss: float):
        self.step, self.loss = step, loss
        super().__init__(
            f"the training loss is non-finite ({loss}) at step {step}: training stopped and no "
            "record was written (lower the learning rate, check the data and the loss inputs)"
        )

    def __reduce__(self):  # picklable (multiprocessing, torchrun's error files)
        return type(self), (self.step, self.loss)


class _NonFiniteGuard:
    """Remembers, on the device, the first step whose loss is not finite.

    :meth:`observe` is a handful of scalar device operations (no synchronisation);
    :meth:`raise_if_tripped` reads the state back (one synchronisation) and raises
    :class:`NonFiniteLossError` naming that first step and its loss.
    """

    def __init__(self, device: torch.device):
        self.first_step = torch.zeros((), dtype=torch.long, device=device)  # 0: none yet
        self.first_loss = torch.zeros((), dtype=torch.float64, device=device)

    def observe(self, step: int, loss: torch.Tensor) -> None:
        value = loss.detach().to(torch.float64)
        new = (self.first_step == 0) & ~torch.isfinite(value)
        self.first_step = torch.where(new, torch.full_like(self.first_step, step), self.first_step)
        self.first_loss = torch.where(new, value, self.first_loss)

    def raise_if_tripped(self, ctx: Optional[DistContext] = None) -> None:
        """Raise if a non-finite loss was seen; under DDP if any rank saw one (a
        collective: every rank calls it at the same step, so all ranks stop together)."""
        first = self.first_step
        if ctx is not None and ctx.enabled:
            never = torch.iinfo(torch.long).max
            first = torch.where(first > 0, first, torch.full_like(first, never)).reshape(1)
            dist.all_reduce(first, op=dist.ReduceOp.MIN)
            first = torch.where(first[0] == never, torch.zeros_like(first[0]), first[0])
        step = int(first)
        if step:
            local = step == int(self.first_step)
            raise NonFiniteLossError(step, float(self.first_loss) if local else float("nan"))


def check_loss_value(loss, loss_fn) -> None:
    """The first step's loss is a scalar tensor with a graph (shape only: no sync)."""
    what = getattr(loss_fn, "__name__", type(loss_fn).__name__)
    if not isinstance(loss, torch.Tensor):
        raise TypeError(f"loss_fn ({what}) must return a tensor, got {type(loss).__name__}")
    if loss.ndim != 0:
        raise ValueError(
            f"loss_fn ({what}) must return a scalar, got a tensor of shape {tuple(loss.shape)}; "
            "a loss built with reduction='none' gives a per-pixel map: use reduction='mean' "
            "(or 'sum') for training"
        )
    if not loss.requires_grad:
        raise ValueError(f"loss_fn ({what}) returned a loss without a graph (requires_grad=False)")
