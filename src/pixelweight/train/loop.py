"""The training loop: setup, step, log, evaluate, record, each a short function."""

from __future__ import annotations

import dataclasses
import math
import os
import time
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..results import (
    RunRecord,
    check_record_name,
    check_results_dir,
    device_description,
    provenance,
    save_record,
)
from .config import TrainConfig
from .evaluation import evaluate
from .guard import _NonFiniteGuard, check_loss_value
from .plateau import run_plateau
from .runtime import DistContext, autocast, unwrap
from .task import Task, check_task


@dataclasses.dataclass
class TrainResult:
    """What :func:`train` returns: the trained (unwrapped) model and the run's numbers.

    Attributes
    ----------
    model : nn.Module
        The trained model (outside any DDP wrapper).
    history : list of dict
        One entry per log step: ``step``, ``loss`` (the mean since the last entry),
        ``lr``, what ``on_log`` and the task's :meth:`~pixelweight.train.Task.log`
        returned, and ``val_*`` at evaluation steps (the final evaluation in the last).
    metrics : dict
        ``train_time_s`` and the final ``val_*`` and ``test_*`` metrics.
    wall_time_s : float
        Training and final evaluations.
    device : str
        :func:`~pixelweight.results.device_description` of the device.
    record, record_path
        The :class:`~pixelweight.results.RunRecord` and its file (rank 0, with a name).
    plateau : dict, optional
        The plateau rule's verdict (:func:`~pixelweight.train.measure_plateau`) when
        ``config.plateau_metric`` is set; also in the record.
    """

    model: nn.Module
    history: List[Dict[str, Any]]
    metrics: Dict[str, Any]
    wall_time_s: float
    device: str
    record: Optional[RunRecord] = None
    record_path: Optional[str] = None
    plateau: Optional[Dict[str, Any]] = None


# ---------------------------------------------------------------------------- data, optimiser
def _batches(dataset: Dataset, batch_size: int, seed: int, ctx: DistContext, num_workers: int,
             pin: bool, collate_fn=None) -> Iterator[Any]:
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
        generator=generator, pin_memory=pin, collate_fn=collate_fn,
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


def _scalars(values: Mapping[str, Any], prefix: str) -> Dict[str, Any]:
    return {f"{prefix}{k}": v for k, v in values.items()}


# ---------------------------------------------------------------------------- the run's state
@dataclasses.dataclass
class _Run:
    """Everything one training run carries from step to step."""

    config: TrainConfig
    task: Task
    ctx: DistContext
    device: torch.device
    net: nn.Module
    loss_fn: Callable
    optimizer: torch.optim.Optimizer
    scheduler: Any
    autocast: Any
    scaler: Any
    stream: Iterator[Any]
    guard: _NonFiniteGuard
    running: torch.Tensor
    check_every: int
    running_n: int = 0
    history: List[Dict[str, Any]] = dataclasses.field(default_factory=list)

    def evaluate(self, dataset: Dataset, metrics_factory: Callable[[], Any]) -> Dict[str, Any]:
        return evaluate(self.net, dataset, metrics_factory(), self.device, self.config.eval_batch_size,
                        self.config.amp, self.ctx, task=self.task)


def _check_arguments(model, loss_fn, train_set, config, metrics_factory, val_set, test_set, name,
                     results_dir, on_log) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    if not isinstance(config, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(config).__name__}")
    if (val_set is not None or test_set is not None) and metrics_factory is None:
        raise ValueError("evaluating on val_set/test_set needs a metrics_factory")
    if metrics_factory is not None and not callable(metrics_factory):
        raise TypeError(f"metrics_factory must be callable, got {type(metrics_factory).__name__}")
    if on_log is not None and not callable(on_log):
        raise TypeError(f"on_log must be callable, got {type(on_log).__name__}")
    if (name is None) != (results_dir is None):
        raise ValueError("give both name and results_dir to write a record, or neither")
    if name is not None:
        check_record_name(name)  # a bad name or folder fails now, not after the last step
    if len(train_set) == 0:
        raise ValueError("train_set is empty")


def _setup(model: nn.Module, loss_fn: Callable, train_set: Dataset, config: TrainConfig, task: Task,
           ctx: DistContext) -> _Run:
    """Device, DDP wrapper, optimiser, schedule, autocast and the batch stream."""
    device = ctx.device(config.device)
    if config.batch_size % ctx.world_size:
        raise ValueError(
            f"batch_size {config.batch_size} is not divisible by the world size {ctx.world_size}"
        )
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
    context, scaler = autocast(device, config.amp)
    stream = _batches(train_set, config.batch_size // ctx.world_size, config.seed, ctx,
                      config.num_workers, pin=device.type == "cuda", collate_fn=task.collate_fn)
    # The running loss and the non-finite guard live on the device: no host-device
    # synchronisation per step. On the CPU a sync costs nothing, so the guard is read
    # every step; elsewhere it is read at each log step, where the loop synchronises
    # anyway to log the mean loss (see the Notes of train()).
    return _Run(
        config=config, task=task, ctx=ctx, device=device, net=net, loss_fn=loss_fn,
        optimizer=optimizer, scheduler=scheduler, autocast=context, scaler=scaler, stream=stream,
        guard=_NonFiniteGuard(device), running=torch.zeros((), dtype=torch.float64, device=device),
        check_every=1 if device.type == "cpu" and not ctx.enabled else config.log_every,
    )


def _step(run: _Run, step: int) -> None:
    """One optimiser step: batch, forward (autocast), loss (float32), guard, backward, update."""
    batch = run.task.to_device(next(run.stream), run.device)
    with run.autocast:
        outputs = run.task.forward(run.net, batch)
    loss = run.task.loss(run.loss_fn, outputs, batch)
    if step == 1:
        run.task.check(outputs, batch)
        check_loss_value(loss, run.loss_fn)
    run.guard.observe(step, loss)
    if run.check_every == 1:
        run.guard.raise_if_tripped()
    run.optimizer.zero_grad(set_to_none=True)
    if run.scaler is not None:
        run.scaler.scale(loss).backward()
        run.scaler.unscale_(run.optimizer)
    else:
        loss.backward()
    if run.config.grad_clip is not None:
        nn.utils.clip_grad_norm_(run.net.parameters(), run.config.grad_clip)
    if run.scaler is not None:
        run.scaler.step(run.optimizer)
        run.scaler.update()
    else:
        run.optimizer.step()
    run.scheduler.step()
    run.running += loss.detach().to(torch.float64)
    run.running_n += 1


def _log(run: _Run, step: int, on_log, val_set, metrics_factory) -> Dict[str, Any]:
    """The history entry of a log step (the loop synchronises here: the guard, the mean loss)."""
    run.guard.raise_if_tripped(run.ctx)
    entry: Dict[str, Any] = {
        "step": step,
        "loss": run.ctx.all_reduce_mean(float(run.running) / run.running_n, run.device),
        "lr": run.optimizer.param_groups[0]["lr"],
    }
    run.running.zero_()
    run.running_n = 0
    if on_log is not None:
        entry.update(on_log(step, unwrap(run.net), run.loss_fn) or {})
    entry.update(run.task.log(step, unwrap(run.net), run.loss_fn) or {})
    every = run.config.eval_every
    if val_set is not None and every and step % every == 0 and step != run.config.steps:
        entry.update(_scalars(run.evaluate(val_set, metrics_factory), "val_"))
    run.history.append(entry)
    return entry


def _final_evaluation(run: _Run, val_set, test_set, metrics_factory, train_time: float) -> Dict[str, Any]:
    """``train_time_s`` and the final ``val_*`` (also put in the last history entry) and ``test_*``."""
    final: Dict[str, Any] = {"train_time_s": train_time}
    if val_set is not None:
        final.update(_scalars(run.evaluate(val_set, metrics_factory), "val_"))
        run.history[-1].update({k: v for k, v in final.items() if k.startswith("val_")})
    if test_set is not None:
        final.update(_scalars(run.evaluate(test_set, metrics_factory), "test_"))
    return final


def _record(run: _Run, name, results_dir, record_config, final, wall, plateau, origin):
    """Rank 0 writes the :class:`~pixelweight.results.RunRecord`; returns it and its path.
    ``origin``: the provenance taken when training started (the commit and the state of the
    tree the code was loaded from, not whatever the tree holds when the run ends)."""
    if not (run.ctx.is_main and name is not None):
        return None, None
    full_config = {"train": run.config.to_dict(), "world_size": run.ctx.world_size,
                   "task": run.task.describe()}
    full_config.update(dict(record_config or {}))
    record = RunRecord(
        name=name, config=full_config, metrics=final, seed=run.config.seed, wall_time_s=wall,
        device=device_description(run.device), history=run.history,
        provenance=origin, plateau=plateau,
    )
    return record, str(save_record(record, results_dir))


def train(
    model: nn.Module,
    loss_fn: Callable[..., torch.Tensor],
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
    task: Optional[Task] = None,
) -> TrainResult:
    """Train ``model`` with ``loss_fn(logits, targets)`` for ``config.steps`` steps.

    Parameters
    ----------
    model:
        Built after :func:`seed_everything` so its initialisation is seeded.
    loss_fn:
        Any callable ``(float32 logits, targets) -> scalar``; an ``nn.Module`` loss is
        moved to the device (its buffers, e.g. moving-average class weights, follow).
        What it receives is the ``task``'s choice (all model outputs, per-sample
        auxiliary targets: see :class:`Task`).
    train_set, val_set, test_set:
        Datasets of ``(image, target)`` pairs, or of whatever the ``task`` reads.
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
    task:
        What the harness does with a batch (:class:`Task`); default
        :class:`SegmentationTask`, ``(image, target)`` pairs and one output.

    Returns
    -------
    TrainResult with the unwrapped model, the history (``step``, ``loss``, ``lr`` every
    ``log_every`` steps, ``val_*`` every ``eval_every`` steps), final ``val_*`` and
    ``test_*`` metrics, the wall time, the device, the record and the plateau verdict
    (``config.plateau_metric``; :func:`measure_plateau`).

    Raises
    ------
    NonFiniteLossError
        When a step's loss is NaN or infinite, whatever the loss. It names the first
        such step and its loss; no evaluation runs and no record is written.
    ValueError
        When ``loss_fn`` returns something other than a scalar with a graph (e.g. a loss
        built with ``reduction="none"``), or the model's output does not fit the task;
        checked on the first step.

    Notes
    -----
    The loop is short functions of ``pixelweight.train.loop``: ``_setup`` (device,
    DDP wrapper, optimiser, schedule, autocast, batch stream), then per step ``_step``
    (and ``_log`` every ``log_every`` steps and at every ``eval_every``-th step, which it evaluates), then
    ``_final_evaluation``, the plateau rule and ``_record``.

    The non-finite check costs no host-device synchronisation per step: the running loss
    and the first non-finite step are kept on the device and read back where the loop
    synchronises anyway. On the CPU (one process) that read is free and happens every
    step, so training stops at the first non-finite loss. On CUDA/MPS, and under DDP, it
    happens at each log step (every ``config.log_every`` steps and the last), so up to
    ``log_every - 1`` further steps may run on NaN weights before the error names the
    first bad step; their work is discarded with the run. Under DDP the ranks agree
    (a MIN all-reduce of the first bad step) and all stop at the same log step.
    """
    _check_arguments(model, loss_fn, train_set, config, metrics_factory, val_set, test_set, name,
                     results_dir, on_log)
    task = check_task(task)
    ctx = DistContext.from_env(config.device)
    if name is not None and ctx.is_main:
        check_results_dir(results_dir)
    run = _setup(model, loss_fn, train_set, config, task, ctx)

    origin = provenance(run.device) if ctx.is_main and name is not None else None
    start = time.perf_counter()
    run.net.train()
    progress = None
    if config.progress and ctx.is_main:
        from tqdm.auto import tqdm  # a widget in Jupyter (with ipywidgets), text elsewhere

        progress = tqdm(total=config.steps, desc=name or "train", unit="step", leave=False)
    try:
        for step in range(1, config.steps + 1):
            _step(run, step)
            evaluates = val_set is not None and config.eval_every and step % config.eval_every == 0
            if step % config.log_every == 0 or step == config.steps or evaluates:
                entry = _log(run, step, on_log, val_set, metrics_factory)
                if progress is not None:
                    progress.set_postfix(loss=f"{entry['loss']:.4f}")
            if progress is not None:
                progress.update(1)
    finally:
        if progress is not None:
            progress.close()

    final = _final_evaluation(run, val_set, test_set, metrics_factory, time.perf_counter() - start)
    wall = time.perf_counter() - start
    plateau = run_plateau(config, run.history, val_set is not None)
    record, path = _record(run, name, results_dir, record_config, final, wall, plateau, origin)
    if ctx.enabled:
        dist.barrier()  # no rank leaves before rank 0 has written the record
    return TrainResult(
        model=unwrap(run.net), history=run.history, metrics=final, wall_time_s=wall,
        device=device_description(run.device), record=record, record_path=path, plateau=plateau,
    )
