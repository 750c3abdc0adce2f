"""The one training and evaluation harness every chapter uses.

``train(model, loss_fn, train_set, config, ...)`` runs a fixed number of optimiser steps
(not epochs: budgets stay comparable across data-set sizes), evaluates on a validation
and a test split with an accumulator from :mod:`pixelweight.metrics`, keeps a history and
writes a JSON :class:`~pixelweight.results.RunRecord`.

- Seeding: :func:`seed_everything` before building the model; the data order comes from
  a generator seeded by ``config.seed``. Results are deterministic on CPU.
- Device ``"auto"`` picks CUDA, then Apple's MPS, then the CPU.
- Mixed precision on CUDA: bfloat16 autocast where supported, else float16 with a
  gradient scaler. The loss always sees float32 logits.
- Distributed: launched by ``torchrun --nproc_per_node=K``, the same call initialises the
  process group from the environment (NCCL on CUDA, gloo on CPU), wraps the model in
  ``DistributedDataParallel`` (with SyncBatchNorm on CUDA), shards the data and sums
  the evaluation accumulators over ranks, so metrics are exact. Rank 0 alone shows
  progress and writes records.
"""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import math
import os
import random
import time
from typing import Any, Callable, Dict, List, Mapping, Optional

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from ._validation import check_float, check_int
from .results import (
    RunRecord,
    check_record_name,
    check_results_dir,
    device_description,
    provenance,
    save_record,
)

__all__ = [
    "TrainConfig",
    "TrainResult",
    "seed_everything",
    "resolve_device",
    "DistContext",
    "NonFiniteLossError",
    "evaluate",
    "train",
]

_OPTIMIZERS = ("adam", "adamw", "sgd")
_SCHEDULES = ("constant", "cosine", "poly")


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and PyTorch (all devices).

    With ``deterministic=True`` PyTorch is also asked for deterministic algorithms (a
    warning, not an error, where none exists), which makes CUDA runs repeatable at
    some cost in speed. CPU runs are repeatable without it.
    """
    check_int(seed, "seed", minimum=0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` → CUDA if available, else MPS, else CPU; any other name is checked."""
    if isinstance(device, torch.device):
        device = str(device)
    if not isinstance(device, str):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"unknown device {device!r}: {err}") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} requested but CUDA is not available")
    if resolved.type == "mps" and not (
        getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available()
    ):
        raise ValueError(f"device {device!r} requested but MPS is not available")
    return resolved


@dataclasses.dataclass
class TrainConfig:
    """What a training run does. Every field is stored in the run's record."""

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

    def to_dict(self) -> Dict[str, Any]:
        return dataclasses.asdict(self)


def _destroy_process_group() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


@dataclasses.dataclass
class DistContext:
    """The process's place in a distributed run (``world_size == 1`` when not distributed)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @classmethod
    def from_env(cls, device_preference: str = "auto") -> "DistContext":
        """Join the process group that ``torchrun`` describes in the environment, if any."""
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls()
        initialized_here = False
        if not dist.is_initialized():
            use_nccl = torch.cuda.is_available() and device_preference in ("auto", "cuda")
            dist.init_process_group(backend="nccl" if use_nccl else "gloo")
            atexit.register(_destroy_process_group)
            initialized_here = True
        return cls(
            rank=dist.get_rank(),
            world_size=dist.get_world_size(),
            local_rank=int(os.environ.get("LOCAL_RANK", "0")),
            initialized_here=initialized_here,
        )

    def device(self, preference: str) -> torch.device:
        if not self.enabled:
            return resolve_device(preference)
        if torch.cuda.is_available() and preference in ("auto", "cuda"):
            torch.cuda.set_device(self.local_rank)
            return torch.device("cuda", self.local_rank)
        return torch.device("cpu")

    def all_reduce_mean(self, value: float, device: torch.device) -> float:
        if not self.enabled:
            return value
        tensor = torch.tensor([value], dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return float(tensor) / self.world_size


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the trained (unwrapped) model and the run's numbers."""

    model: nn.Module
    history: List[Dict[str, Any]]
    metrics: Dict[str, Any]
    wall_time_s: float
    device: str
    record: Optional[RunRecord] = None
    record_path: Optional[str] = None


def _autocast(device: torch.device, enabled: bool):
    if not (enabled and device.type == "cuda"):
        return contextlib.nullcontext(), None
    if torch.cuda.is_bf16_supported():
        return torch.autocast("cuda", dtype=torch.bfloat16), None
    return torch.autocast("cuda", dtype=torch.float16), torch.amp.GradScaler("cuda")


def _batches(dataset: Dataset, batch_size: int, seed: int, ctx: DistContext, num_workers: int,
             pin: bool):
    """An endless stream of shuffled batches; each pass over the data reshuffles."""
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if ctx.enabled:
        sampler = torch.utils.data.DistributedSampler(
            dataset, num_replicas=ctx.world_size, rank=ctx.rank, shuffle=True, seed=seed,
            drop_last=True,
        )
    loader = DataLoader(
        dataset, batch_size=batch_size, shuffle=sampler is None, sampler=sampler,
        drop_last=len(dataset) // max(ctx.world_size, 1) >= batch_size, num_workers=num_workers,
        generator=generator, pin_memory=pin,
    )
    epoch = 0
    while True:
        if sampler is not None:
            sampler.set_epoch(epoch)
        yielded = False
        for batch in loader:
            yielded = True
            yield batch
        if not yielded:
            raise ValueError("the training set yields no batch: it is empty")
        epoch += 1


def _lr_lambda(config: TrainConfig) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if step < config.warmup_steps:
            return (step + 1) / config.warmup_steps
        progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
        progress = min(progress, 1.0)
        if config.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        if config.schedule == "poly":
            return (1.0 - progress) ** 0.9
        return 1.0

    return factor


def _make_optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr, weight_decay=config.weight_decay)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    return torch.optim.SGD(
        params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay
    )


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


@torch.no_grad()
def evaluate(
    model: nn.Module,
    dataset: Dataset,
    metrics,
    device: str | torch.device = "auto",
    batch_size: int = 64,
    amp: bool = True,
    ctx: Optional[DistContext] = None,
) -> Dict[str, Any]:
    """Evaluate ``model`` on ``dataset`` with the accumulator ``metrics``.

    ``metrics`` is any object with ``reset()``, ``update(outputs, targets)`` and
    ``compute() -> dict`` (the accumulators of :mod:`pixelweight.metrics`). Under DDP
    every rank evaluates a disjoint shard (``rank::world_size``, no padding, so nothing
    is counted twice) and ``compute()`` sums the accumulators over the ranks, so every
    rank gets the exact metrics of the whole set.
    """
    for method in ("reset", "update", "compute"):
        if not callable(getattr(metrics, method, None)):
            raise TypeError(f"metrics must have a {method}() method, got {type(metrics).__name__}")
    check_int(batch_size, "batch_size", minimum=1)
    ctx = ctx or DistContext()
    device = resolve_device(device) if not isinstance(device, torch.device) else device
    if ctx.enabled:
        dataset = Subset(dataset, list(range(ctx.rank, len(dataset), ctx.world_size)))
    was_training = model.training
    model.eval()
    metrics.reset()
    autocast, _ = _autocast(device, amp)
    try:
        for images, targets in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with autocast:
                outputs = model(images)
            metrics.update(outputs.float(), targets)
    finally:
        model.train(was_training)
    # compute() sums the accumulators over all ranks when a process group is active
    return metrics.compute()


class NonFiniteLossError(FloatingPointError, RuntimeError):
    """The training loss became NaN or infinite: :func:`train` stops and writes no record.

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

    def raise_if_tripped(self, ctx: Optional["DistContext"] = None) -> None:
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


def _check_loss_value(loss, loss_fn) -> None:
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


def _scalars(values: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in values.items()}


def train(
    model: nn.Module,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    train_set: Dataset,
    config: TrainConfig,
    *,
    metrics_factory: Optional[Callable[[], Any]] = None,
    val_set: Optional[Dataset] = None,
    test_set: Optional[Dataset] = None,
    name: Optional[str] = None,
    results_dir: Optional[str | os.PathLike] = None,
    record_config: Optional[Mapping[str, Any]] = None,
    on_log: Optional[Callable[[int, nn.Module, Any], Mapping[str, Any]]] = None,
) -> TrainResult:
    """Train ``model`` with ``loss_fn(logits, targets)`` for ``config.steps`` steps.

    Parameters
    ----------
    model:
        Built after :func:`seed_everything` so its initialisation is seeded.
    loss_fn:
        Any callable ``(float32 logits, targets) -> scalar``; an ``nn.Module`` loss is
        moved to the device (its buffers, e.g. moving-average class weights, follow).
    train_set, val_set, test_set:
        Datasets of ``(image, target)`` pairs.
    metrics_factory:
        Builds a fresh evaluation accumulator (required with ``val_set``/``test_set``).
    name, results_dir:
        When both are given, rank 0 writes the run's :class:`~pixelweight.results.RunRecord` there.
    record_config:
        Extra configuration stored in the record beside ``config`` (data set, model,
        loss and profile settings): what someone needs to rerun it.
    on_log:
        Called every ``config.log_every`` steps as ``on_log(step, model, loss_fn)``; the
        returned mapping is merged into that history entry (e.g. recall-loss weights).

    Returns
    -------
    TrainResult with the unwrapped model, the history (``step``, ``loss``, ``lr`` every
    ``log_every`` steps, ``val_*`` every ``eval_every`` steps), final ``val_*`` and
    ``test_*`` metrics, the wall time, the device and the record.

    Raises
    ------
    NonFiniteLossError
        When a step's loss is NaN or infinite, whatever the loss. It names the first
        such step and its loss; no evaluation runs and no record is written.
    ValueError
        When ``loss_fn`` returns something other than a scalar with a graph (e.g. a loss
        built with ``reduction="none"``); checked on the first step.

    Notes
    -----
    The non-finite check costs no host-device synchronisation per step: the running loss
    and the first non-finite step are kept on the device and read back where the loop
    synchronises anyway. On the CPU (one process) that read is free and happens every
    step, so training stops at the first non-finite loss. On CUDA/MPS, and under DDP, it
    happens at each log step (every ``config.log_every`` steps and the last), so up to
    ``log_every - 1`` further steps may run on NaN weights before the error names the
    first bad step; their work is discarded with the run. Under DDP the ranks agree
    (a MIN all-reduce of the first bad step) and all stop at the same log step.
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if (val_set is not None or test_set is not None) and metrics_factory is None:
        raise ValueError("evaluating on val_set/test_set needs a metrics_factory")
    if (name is None) != (results_dir is None):
        raise ValueError("give both name and results_dir to write a record, or neither")
    if name is not None:
        check_record_name(name)  # a bad name or folder fails now, not after the last step
    if len(train_set) == 0:
        raise ValueError("train_set is empty")

    ctx = DistContext.from_env(config.device)
    if name is not None and ctx.is_main:
        check_results_dir(results_dir)
    device = ctx.device(config.device)
    if config.batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the world size {ctx.world_size}"
        )
    local_batch = config.batch_size // ctx.world_size

    model = model.to(device)
    if isinstance(loss_fn, nn.Module):
        loss_fn = loss_fn.to(device)
    net: nn.Module = model
    if ctx.enabled:
        if device.type == "cuda":
            net = nn.SyncBatchNorm.convert_sync_batchnorm(net)
        net = nn.parallel.DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None
        )
    optimizer = _make_optimizer(net, config)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_lambda(config))
    autocast, scaler = _autocast(device, config.amp)
    stream = _batches(train_set, local_batch, config.seed, ctx, config.num_workers,
                      pin=device.type == "cuda")

    def run_eval(dataset):
        return evaluate(net, dataset, metrics_factory(), device, config.eval_batch_size,
                        config.amp, ctx)

    history: List[Dict[str, Any]] = []
    start = time.perf_counter()
    # The running loss and the non-finite guard live on the device: no host-device
    # synchronisation per step. On the CPU a sync costs nothing, so the guard is read
    # every step; elsewhere it is read at each log step, where the loop synchronises
    # anyway to log the mean loss (see the Notes of this function).
    running = torch.zeros((), dtype=torch.float64, device=device)
    running_n = 0
    guard = _NonFiniteGuard(device)
    check_every = 1 if device.type == "cpu" and not ctx.enabled else config.log_every
    net.train()
    progress = None
    if config.progress and ctx.is_main:
        from tqdm.auto import tqdm  # a widget in Jupyter (with ipywidgets), text elsewhere

        progress = tqdm(total=config.steps, desc=name or "train", unit="step", leave=False)
    try:
        for step in range(1, config.steps + 1):
            images, targets = next(stream)
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            with autocast:
                logits = net(images)
            loss = loss_fn(logits.float(), targets)
            if step == 1:
                _check_loss_value(loss, loss_fn)
            guard.observe(step, loss)
            if check_every == 1:
                guard.raise_if_tripped()
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.unscale_(optimizer)
            else:
                loss.backward()
            if config.grad_clip is not None:
                nn.utils.clip_grad_norm_(net.parameters(), config.grad_clip)
            if scaler is not None:
                scaler.step(optimizer)
                scaler.update()
            else:
                optimizer.step()
            scheduler.step()
            running += loss.detach().to(torch.float64)
            running_n += 1

            if step % config.log_every == 0 or step == config.steps:
                guard.raise_if_tripped(ctx)  # the log step synchronises anyway (the mean loss)
                entry: Dict[str, Any] = {
                    "step": step,
                    "loss": ctx.all_reduce_mean(float(running) / running_n, device),
                    "lr": optimizer.param_groups[0]["lr"],
                }
                running.zero_()
                running_n = 0
                if on_log is not None:
                    entry.update(on_log(step, _unwrap(net), loss_fn) or {})
                if val_set is not None and config.eval_every and (
                    step % config.eval_every == 0 and step != config.steps
                ):
                    entry.update(_scalars(run_eval(val_set), "val_"))
                history.append(entry)
                if progress is not None:
                    progress.set_postfix(loss=f"{entry['loss']:.4f}")
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()

    train_time = time.perf_counter() - start
    final: Dict[str, Any] = {"train_time_s": train_time}
    if val_set is not None:
        final.update(_scalars(run_eval(val_set), "val_"))
        history[-1].update({k: v for k, v in final.items() if k.startswith("val_")})
    if test_set is not None:
        final.update(_scalars(run_eval(test_set), "test_"))
    wall = time.perf_counter() - start

    record = path = None
    device_name = device_description(device)
    if ctx.is_main and name is not None:
        full_config = {"train": config.to_dict(), "world_size": ctx.world_size}
        full_config.update(dict(record_config or {}))
        record = RunRecord(
            name=name, config=full_config, metrics=final, seed=config.seed, wall_time_s=wall,
            device=device_name, history=history, provenance=provenance(device),
        )
        path = str(save_record(record, results_dir))
    if ctx.enabled:
        dist.barrier()  # no rank leaves before rank 0 has written the record
    return TrainResult(
        model=_unwrap(net), history=history, metrics=final, wall_time_s=wall,
        device=device_name, record=record, record_path=path,
    )
