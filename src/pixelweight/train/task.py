r"""What the harness does with a batch: a :class:`Task`.

The loop of :func:`~pixelweight.train.train` and :func:`~pixelweight.train.evaluate` knows
nothing of images and labels. For every batch it asks its task to

1. move the batch to the device (:meth:`Task.to_device`: every tensor of any structure);
2. run the model (:meth:`Task.forward`, under autocast): ``model(inputs)`` where
   ``inputs = batch[inputs]``;
3. compute the loss (:meth:`Task.loss`, in float32): ``loss_fn(output, targets)`` where
   ``output`` is the selected model output (or all of them) and ``targets = batch[targets]``;
4. feed the evaluation accumulator (:meth:`Task.update_metrics`):
   ``metrics.update(output, targets[metric_targets])``;

and at each log step what to add to the history (:meth:`Task.log`). The parts are named by
selectors (an index, a key or attribute, or a function: see
:func:`~pixelweight.train.select`), so the common variations need no subclass:

- a model with several outputs (a tuple, dict or dataclass): ``output`` says which one the
  loss and the metrics use; ``loss_outputs="all"`` hands the loss all of them;
- per-sample auxiliary targets (e.g. a per-image weight map of the Weighted F-measure):
  the batch carries them (``(image, {"mask": m, "weights": w})``, a dict, a dataclass with
  a ``collate_fn``) and the loss reads them from ``targets``; ``metric_targets`` picks
  what the metrics compare with.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Mapping, Optional

import torch
from torch import nn

from .._validation import check_choice
from .batch import Selector, check_selector, float32, move_to_device, select

_LOSS_OUTPUTS = ("selected", "all")


class Task:
    r"""How the harness moves a batch, runs the model, computes the loss and the metrics.

    Parameters
    ----------
    inputs : Selector, default 0
        The model's input in the batch: the first item of an ``(inputs, targets)`` pair.
    targets : Selector, default 1
        What the loss gets as its second argument: the second item of the pair. ``None``
        gives it the whole batch (a dict or dataclass of per-sample tensors, say).
    output : Selector, default None
        The model output the metrics use (and the loss, unless ``loss_outputs="all"``):
        ``None`` for a model that returns one tensor, else an index, key or attribute
        of the tuple, dict or dataclass it returns.
    loss_outputs : {"selected", "all"}, default "selected"
        ``"all"``: the loss receives every output (floating tensors in float32), e.g. a
        main prediction and an auxiliary term.
    metric_targets : Selector, default None
        What ``metrics.update`` compares with, taken from ``targets``; ``None``: the
        targets themselves.
    collate_fn : callable, optional
        Builds a batch from a list of samples (``DataLoader``'s ``collate_fn``; the
        default collates tensors, tuples, named tuples and dicts, not dataclasses).

    Notes
    -----
    For one training step, with ``b`` the batch on the device::

        outputs = forward(model, b)                       # model(select(b, inputs)), autocast
        loss = loss_fn(float32(select(outputs, output)),  # or float32(outputs) with "all"
                       select(b, targets))

    and for one evaluation batch
    ``metrics.update(float32(select(outputs, output)), select(select(b, targets), metric_targets))``.
    The float32 cast is a no-op on float32 outputs, so on the CPU a task computes exactly
    what the harness computed before tasks existed. Subclass and override a method
    (e.g. :meth:`forward` for a model with several inputs, :meth:`log` for quantities to
    record) where a selector is not enough.

    Examples
    --------
    A model returning ``{"logits": ..., "density": ...}`` trained on batches
    ``(image, {"mask": ..., "weights": ...})`` by a loss that reads both outputs and both
    targets, evaluated on the logits against the mask:

    >>> from pixelweight.train import Task
    >>> task = Task(output="logits", loss_outputs="all", metric_targets="mask")
    >>> task.describe()["output"], task.describe()["metric_targets"]
    ('logits', 'mask')
    """

    def __init__(
        self,
        *,
        inputs: Selector = 0,
        targets: Selector = 1,
        output: Selector = None,
        loss_outputs: str = "selected",
        metric_targets: Selector = None,
        collate_fn: Optional[Callable[[list], Any]] = None,
    ) -> None:
        self.inputs = check_selector(inputs, "inputs")
        self.targets = check_selector(targets, "targets")
        self.output = check_selector(output, "output")
        self.loss_outputs = check_choice(loss_outputs, "loss_outputs", _LOSS_OUTPUTS)
        self.metric_targets = check_selector(metric_targets, "metric_targets")
        if collate_fn is not None and not callable(collate_fn):
            raise TypeError(f"collate_fn must be callable, got {type(collate_fn).__name__}")
        self.collate_fn = collate_fn

    # ------------------------------------------------------------------ the batch
    def to_device(self, batch: Any, device: torch.device) -> Any:
        """The batch on ``device`` (:func:`~pixelweight.train.move_to_device`, non-blocking)."""
        return move_to_device(batch, device, non_blocking=True)

    def get_inputs(self, batch: Any) -> Any:
        """The model's input: ``select(batch, inputs)``."""
        return select(batch, self.inputs, "batch")

    def get_targets(self, batch: Any) -> Any:
        """The loss's targets: ``select(batch, targets)``."""
        return select(batch, self.targets, "batch")

    def get_metric_targets(self, batch: Any) -> Any:
        """What the metrics compare with: ``select(targets, metric_targets)``."""
        return select(self.get_targets(batch), self.metric_targets, "targets")

    # ------------------------------------------------------------------ the model
    def forward(self, model: nn.Module, batch: Any) -> Any:
        """The model's outputs on the batch: ``model(inputs)`` (run under autocast)."""
        return model(self.get_inputs(batch))

    def select_output(self, outputs: Any) -> torch.Tensor:
        """The output the metrics (and, by default, the loss) use; a tensor."""
        selected = select(outputs, self.output, "model output")
        if not isinstance(selected, torch.Tensor):
            hint = (" (the model returns several outputs: say which one with Task(output=...))"
                    if self.output is None else "")
            raise TypeError(f"the selected model output must be a tensor, got "
                            f"{type(selected).__name__}{hint}")
        return selected

    # ------------------------------------------------------------------ loss and metrics
    def loss(self, loss_fn: Callable, outputs: Any, batch: Any) -> torch.Tensor:
        """``loss_fn(float32 output(s), targets)``: a scalar tensor with a graph."""
        if self.loss_outputs == "all":
            self.select_output(outputs)  # the metrics' output exists and is a tensor
            return loss_fn(float32(outputs), self.get_targets(batch))
        return loss_fn(self.select_output(outputs).float(), self.get_targets(batch))

    def update_metrics(self, metrics: Any, outputs: Any, batch: Any) -> None:
        """``metrics.update(float32 selected output, metric targets)``."""
        metrics.update(self.select_output(outputs).float(), self.get_metric_targets(batch))

    def check(self, outputs: Any, batch: Any) -> None:
        """Shape checks on the first training step (no device synchronisation).

        The base task checks nothing beyond :meth:`select_output`; subclasses check the
        shapes their metrics expect and raise :class:`ValueError` naming them.
        """

    def log(self, step: int, model: nn.Module, loss_fn: Any) -> Mapping[str, Any]:
        """Values to add to the history entry of log step ``step`` (none by default)."""
        return {}

    def describe(self) -> Dict[str, Any]:
        """The task as JSON-able data, stored in the run record's config (``"task"``)."""

        def name(selector):
            if selector is None or isinstance(selector, (int, str)):
                return selector
            return getattr(selector, "__qualname__", type(selector).__name__)

        return {"type": type(self).__name__, "inputs": name(self.inputs), "targets": name(self.targets),
                "output": name(self.output), "loss_outputs": self.loss_outputs,
                "metric_targets": name(self.metric_targets),
                "collate_fn": None if self.collate_fn is None else name(self.collate_fn)}

    def __repr__(self) -> str:
        fields = ", ".join(f"{k}={v!r}" for k, v in self.describe().items() if k != "type")
        return f"{type(self).__name__}({fields})"


class SegmentationTask(Task):
    r"""Dense prediction, the default task: ``(N, C, H, W)`` logits (``(N, 1, H, W)`` binary)
    against label maps.

    Batches are ``(image, target)`` pairs; the loss is
    ``loss_fn(logits.float(), target)`` and the metrics get
    ``metrics.update(logits.float(), target)``, exactly what the harness computed before
    tasks existed (same numbers for the same seed, bit for bit on the CPU). All parameters
    of :class:`Task` are available, e.g. ``output=`` for a model with auxiliary heads.

    Raises
    ------
    ValueError
        On the first training step, when the selected output is not 4-dimensional.

    Examples
    --------
    >>> from pixelweight.train import SegmentationTask
    >>> SegmentationTask()
    SegmentationTask(inputs=0, targets=1, output=None, loss_outputs='selected', metric_targets=None, collate_fn=None)
    """

    def check(self, outputs: Any, batch: Any) -> None:
        """The selected output is ``(N, C, H, W)``."""
        logits = self.select_output(outputs)
        if logits.ndim != 4:
            raise ValueError(f"SegmentationTask expects (N, C, H, W) logits from the model, got shape "
                             f"{tuple(logits.shape)} (use ClassificationTask for (N, C) logits)")


class ClassificationTask(Task):
    r"""Image classification: ``(N, C)`` logits against ``(N,)`` class indices.

    Batches are ``(image, label)`` pairs; the loss is ``loss_fn(logits.float(), labels)``
    (e.g. ``torch.nn.functional.cross_entropy``) and the metrics get
    ``metrics.update(logits.float(), labels)``: any accumulator with ``reset``,
    ``update`` and ``compute``.

    Raises
    ------
    ValueError
        On the first training step, when the selected output is not ``(N, C)`` or the
        metric targets are not ``(N,)``.

    Examples
    --------
    >>> from pixelweight.train import ClassificationTask
    >>> ClassificationTask().describe()["type"]
    'ClassificationTask'
    """

    def check(self, outputs: Any, batch: Any) -> None:
        """The selected output is ``(N, C)`` and the metric targets ``(N,)``."""
        logits = self.select_output(outputs)
        if logits.ndim != 2:
            raise ValueError(f"ClassificationTask expects (N, C) logits from the model, got shape "
                             f"{tuple(logits.shape)} (use SegmentationTask for dense logits)")
        labels = self.get_metric_targets(batch)
        if isinstance(labels, torch.Tensor) and labels.shape != logits.shape[:1]:
            raise ValueError(f"ClassificationTask expects (N,) labels for logits of shape "
                             f"{tuple(logits.shape)}, got shape {tuple(labels.shape)}")


def check_task(task: Any) -> Task:
    """``task`` if it is a :class:`Task`, a :class:`SegmentationTask` for ``None``."""
    if task is None:
        return SegmentationTask()
    if not isinstance(task, Task):
        raise TypeError(f"task must be a pixelweight.train.Task, got {type(task).__name__}")
    return task


class AuxiliaryTargetsTask(SegmentationTask):
    r"""Dense prediction whose batches carry per-image auxiliary targets beside the mask.

    Batches are ``(image, {"mask": m, name: value, ...})`` (e.g. from
    :class:`pixelweight.data.WithWFMTerms`: the cached Weighted-F-measure terms). The loss
    is called as ``loss_fn(logits.float(), m, **aux)`` where ``aux`` holds the auxiliary
    targets whose names are keyword parameters of the loss (of its ``forward`` for an
    ``nn.Module``); every other loss gets ``loss_fn(logits.float(), m)``, so one data
    stream serves a stage whose arms train with different losses. The metrics get the mask.

    Parameters
    ----------
    mask : str, default "mask"
        The key of the mask in the batch's targets.
    **kwargs
        The other parameters of :class:`Task` (``inputs``, ``targets``, ``output``,
        ``collate_fn``); ``metric_targets`` is ``mask``.

    Raises
    ------
    ValueError
        When the batch's targets are not a mapping holding ``mask``.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.train import AuxiliaryTargetsTask
    >>> task = AuxiliaryTargetsTask()
    >>> batch = (torch.zeros(1, 1, 2, 2), {"mask": torch.ones(1, 2, 2), "terms": "cached"})
    >>> def plain(logits, target):
    ...     return "mask only"
    >>> def spatial(logits, target, terms=None):
    ...     return f"mask and {terms}"
    >>> task.loss(plain, torch.zeros(1, 1, 2, 2), batch), task.loss(spatial, torch.zeros(1, 1, 2, 2), batch)
    ('mask only', 'mask and cached')
    """

    def __init__(self, *, mask: str = "mask", **kwargs: Any) -> None:
        if not isinstance(mask, str) or not mask:
            raise TypeError(f"mask must be a non-empty str key, got {mask!r}")
        if "metric_targets" in kwargs or "loss_outputs" in kwargs:
            raise TypeError("AuxiliaryTargetsTask sets metric_targets (the mask) and hands the loss one output")
        super().__init__(metric_targets=mask, **kwargs)
        self.mask = mask

    def _targets(self, batch: Any) -> Mapping[str, Any]:
        targets = self.get_targets(batch)
        if not isinstance(targets, Mapping) or self.mask not in targets:
            what = sorted(map(str, targets)) if isinstance(targets, Mapping) else type(targets).__name__
            raise ValueError(f"AuxiliaryTargetsTask expects targets {{{self.mask!r}: mask, ...}}, got {what}")
        return targets

    def accepted(self, loss_fn: Callable) -> frozenset:
        """The keyword parameters of ``loss_fn`` (of its ``forward`` for a module), or every
        name when it takes ``**kwargs`` (a signature lookup, microseconds per step)."""
        import inspect

        target = loss_fn.forward if isinstance(loss_fn, nn.Module) else loss_fn
        try:
            params = inspect.signature(target).parameters.values()
        except (TypeError, ValueError):  # a builtin without a signature: the mask only
            return frozenset()
        if any(p.kind is p.VAR_KEYWORD for p in params):
            return _Everything()
        return frozenset(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY))

    def loss(self, loss_fn: Callable, outputs: Any, batch: Any) -> torch.Tensor:
        """``loss_fn(float32 output, mask, **the auxiliary targets it accepts)``."""
        targets = self._targets(batch)
        accepted = self.accepted(loss_fn)
        aux = {k: v for k, v in targets.items() if k != self.mask and k in accepted}
        return loss_fn(self.select_output(outputs).float(), targets[self.mask], **aux)

    def describe(self) -> Dict[str, Any]:
        return {**super().describe(), "mask": self.mask}


class _Everything(frozenset):
    """Contains every name (a loss that takes ``**kwargs``)."""

    def __contains__(self, item: object) -> bool:
        return True
