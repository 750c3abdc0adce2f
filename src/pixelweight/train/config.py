"""What a training run does: :class:`TrainConfig`."""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Dict, Optional

from .._validation import check_float, check_int
from .plateau import plateau_key

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine", "poly")


@dataclasses.dataclass
class TrainConfig:
    r"""What a training run does. Every field is stored in the run's record.

    Attributes
    ----------
    steps : int
        Optimiser steps (not epochs: budgets stay comparable across data-set sizes).
    batch_size : int
        The global batch (split evenly over DDP ranks).
    lr, weight_decay, optimizer, momentum
        The optimiser: ``"adam"``, ``"adamw"`` or ``"sgd"`` (``momentum`` is SGD's).
    schedule, warmup_steps
        Linear warm-up over ``warmup_steps``, then ``"constant"``, ``"cosine"``
        (:math:`\tfrac12(1 + \cos \pi p)`) or ``"poly"`` (:math:`(1 - p)^{0.9}`) of the
        progress :math:`p` through the remaining steps.
    eval_every : int
        Evaluate on the validation set every ``eval_every`` steps (0: only at the end).
    eval_batch_size, log_every
        Evaluation batch; the history gets an entry (mean loss, learning rate) every
        ``log_every`` steps and at the last.
    grad_clip : float, optional
        Clip the global gradient norm.
    amp : bool
        Mixed precision on CUDA (bf16 where supported, else fp16 with a gradient scaler).
    seed, device, num_workers, progress
        The data order's seed, the device (``"auto"``), loader workers, tqdm bars
        (``None``: unless ``$PIXELWEIGHT_PROGRESS=0``).
    plateau_metric : str, optional
        The validation metric whose plateau the run measures and records (e.g.
        ``"miou"``, read from the ``val_miou`` entries of the history); ``None``: none.
    plateau_window : float in (0, 1]
        The fraction of the steps at the end of training the plateau rule looks at.
    plateau_tolerance : float >= 0
        The largest range (max - min) of the metric in that window that counts as a
        plateau; see :func:`~pixelweight.train.measure_plateau`.
    """

    steps: int = 300
    batch_size: int = 16
    lr: float = 2e-3
    weight_decay: float = 0.0
    optimizer: str = "adam"
    momentum: float = 0.9
    schedule: str = "cosine"
    warmup_steps: int = 0
    eval_every: int = 0
    eval_batch_size: int = 64
    log_every: int = 10
    grad_clip: Optional[float] = None
    amp: bool = True
    seed: int = 0
    device: str = "auto"
    num_workers: int = 0
    progress: Optional[bool] = None
    plateau_metric: Optional[str] = None
    plateau_window: float = 0.25
    plateau_tolerance: float = 0.01

    def __post_init__(self):
        check_int(self.steps, "steps", minimum=1)
        check_int(self.batch_size, "batch_size", minimum=1)
        check_float(self.lr, "lr", minimum=0.0, min_inclusive=False)
        check_float(self.weight_decay, "weight_decay", minimum=0.0)
        check_float(self.momentum, "momentum", minimum=0.0, maximum=1.0)
        if self.optimizer not in _OPTIMIZERS:
            raise ValueError(f"optimizer must be one of {_OPTIMIZERS}, got {self.optimizer!r}")
        if self.schedule not in _SCHEDULES:
            raise ValueError(f"schedule must be one of {_SCHEDULES}, got {self.schedule!r}")
        check_int(self.warmup_steps, "warmup_steps", minimum=0)
        if self.warmup_steps >= self.steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be < steps ({self.steps})")
        check_int(self.eval_every, "eval_every", minimum=0)
        check_int(self.eval_batch_size, "eval_batch_size", minimum=1)
        check_int(self.log_every, "log_every", minimum=1)
        if self.grad_clip is not None:
            check_float(self.grad_clip, "grad_clip", minimum=0.0, min_inclusive=False)
        check_int(self.seed, "seed", minimum=0)
        check_int(self.num_workers, "num_workers", minimum=0)
        if self.progress is None:  # tqdm bars unless $PIXELWEIGHT_PROGRESS=0 (the book build)
            self.progress = os.environ.get("PIXELWEIGHT_PROGRESS", "1") != "0"
        if not isinstance(self.progress, bool):
            raise TypeError(f"progress must be a bool or None, got {type(self.progress).__name__}")
        if not isinstance(self.device, str):
            raise TypeError(f"device must be a string, got {type(self.device).__name__}")
        if self.plateau_metric is not None:
            plateau_key(self.plateau_metric)
        check_float(self.plateau_window, "plateau_window", minimum=0.0, maximum=1.0, min_inclusive=False)
        check_float(self.plateau_tolerance, "plateau_tolerance", minimum=0.0)

    def to_dict(self) -> Dict[str, Any]:
        """The fields as a dict (what the record stores under ``config["train"]``)."""
        return dataclasses.asdict(self)
