"""The one training and evaluation harness every chapter uses.

``train(model, loss_fn, train_set, config, ...)`` runs a fixed number of optimiser steps
(not epochs: budgets stay comparable across data-set sizes), evaluates on a validation
and a test split with an accumulator from :mod:`pixelweight.metrics`, keeps a history,
measures whether the validation metric reached a plateau and writes a JSON
:class:`~pixelweight.results.RunRecord`.

- What happens to a batch is a :class:`Task`: how it moves to the device (any structure),
  the forward pass, the loss, the metric update and what to log.
  :class:`SegmentationTask` (the default: ``(image, target)`` pairs, one logits tensor)
  and :class:`ClassificationTask`; a :class:`Task` with selectors covers models with
  several outputs and batches carrying per-sample auxiliary targets, and
  :class:`AuxiliaryTargetsTask` hands such targets (e.g. cached ground-truth terms) to the
  losses that take them as keywords.
- Seeding: :func:`seed_everything` before building the model; the data order comes from
  a generator seeded by ``config.seed``. Results are deterministic on CPU.
- Device ``"auto"`` picks CUDA, then Apple's MPS, then the CPU.
- Mixed precision on CUDA: bfloat16 autocast where supported, else float16 with a
  gradient scaler. The loss always sees float32 outputs.
- Distributed: launched by ``torchrun --nproc_per_node=K``, the same call initialises the
  process group from the environment (NCCL on CUDA, gloo on CPU), wraps the model in
  ``DistributedDataParallel`` (with SyncBatchNorm on CUDA), shards the data and sums
  the evaluation accumulators over ranks, so metrics are exact. Rank 0 alone shows
  progress and writes records.
- Convergence: with ``config.plateau_metric`` the run applies the plateau rule of
  :func:`measure_plateau` to its validation history and records the verdict.

The package's modules: ``config`` (:class:`TrainConfig`), ``runtime`` (seeding, devices,
:class:`DistContext`, autocast), ``batch`` (moving and selecting parts of batches),
``task`` (the tasks), ``guard`` (the non-finite loss guard), ``evaluation``, ``plateau`` and
``loop`` (:func:`train`). Every public name is imported from ``pixelweight.train``.
"""

from .batch import Selector, move_to_device, select
from .config import TrainConfig
from .evaluation import evaluate
from .guard import NonFiniteLossError, _NonFiniteGuard, check_loss_value as _check_loss_value
from .loop import TrainResult, train
from .plateau import measure_plateau
from .runtime import DistContext, resolve_device, seed_everything
from .task import ClassificationTask, SegmentationTask, Task
from .task import AuxiliaryTargetsTask

__all__ = [
    "TrainConfig",
    "TrainResult",
    "seed_everything",
    "resolve_device",
    "DistContext",
    "NonFiniteLossError",
    "evaluate",
    "train",
    "Task",
    "SegmentationTask",
    "ClassificationTask",
    "AuxiliaryTargetsTask",
    "move_to_device",
    "select",
    "measure_plateau",
]

# The public objects are documented (and pickled, and linked from the book) as
# pixelweight.train.<name>, where users import them from.
for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith(__name__ + "."):
        _obj.__module__ = __name__
del _name, _obj
