"""Experiment drivers shared by the chapters: build the testbed splits a profile asks
for, train one configuration over the profile's seeds, and tabulate per-class results.

A chapter notebook states *what* to compare (losses, knobs); these functions do the
bookkeeping so every chapter runs the same budget, seeds and evaluation.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from torch import nn

from .profiles import Profile
from .train import TrainConfig, TrainResult, seed_everything, train

__all__ = ["Splits", "digit_scenes_splits", "train_config", "run_seeds", "per_class_frame",
           "metric_frame"]

# Data seeds are fixed and separate from the training seeds: every training seed of every
# loss sees the same images, so paired comparisons across losses are fair.
DATA_SEEDS = {"train": 1000, "val": 2000, "test": 3000}


@dataclasses.dataclass
class Splits:
    """Train/validation/test datasets and the configuration that made them."""

    train: Any
    val: Any
    test: Any
    config: Dict[str, Any]


def digit_scenes_splits(profile: Profile, **scene_kwargs: Any) -> Splits:
    """The ``DigitScenes`` train/val/test splits at the profile's sizes.

    ``scene_kwargs`` go to :class:`~pixelweight.data.DigitScenes` (``imbalance``,
    ``noise``, ``background``, ...). The three splits draw from disjoint source digits
    and use fixed data seeds (``DATA_SEEDS``: train 1000, val 2000, test 3000).
    """
    from .data import DigitScenes

    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile, got {type(profile).__name__}")
    for reserved in ("split", "num_samples", "seed"):
        if reserved in scene_kwargs:
            raise ValueError(f"{reserved!r} is set by the profile; do not pass it")
    scene_kwargs.setdefault("size", profile.image_size)
    sizes = {"train": profile.train_samples, "val": profile.val_samples, "test": profile.test_samples}
    sets = {
        split: DigitScenes(split=split, num_samples=n, seed=DATA_SEEDS[split], **scene_kwargs)
        for split, n in sizes.items()
    }
    config = {"dataset": "DigitScenes", **{f"{k}_config": v.config for k, v in sets.items()}}
    return Splits(config=config, **sets)


def train_config(profile: Profile, seed: int, device: str = "auto", **overrides: Any) -> TrainConfig:
    """The :class:`~pixelweight.train.TrainConfig` a profile implies for one seed (fields overridable)."""
    base = dict(steps=profile.steps, batch_size=profile.batch_size, lr=profile.lr,
                eval_every=profile.eval_every, seed=seed, device=device)
    base.update(overrides)
    return TrainConfig(**base)


def run_seeds(
    name: str,
    build_model: Callable[[], nn.Module],
    build_loss: Callable[[], Callable],
    splits: Splits,
    profile: Profile,
    metrics_factory: Callable[[], Any],
    *,
    device: str = "auto",
    results_dir: Optional[str] = None,
    record_config: Optional[Mapping[str, Any]] = None,
    on_log: Optional[Callable] = None,
    train_overrides: Optional[Mapping[str, Any]] = None,
) -> List[TrainResult]:
    """Train ``build_model()`` with ``build_loss()`` once per seed of ``profile``.

    Each seed is set (:func:`~pixelweight.train.seed_everything`) before the model and the loss are built,
    so initialisation is seeded too. Validation and test metrics come from
    ``metrics_factory``. With ``results_dir`` each run writes its record there; the
    record's config holds the profile, the data configuration and ``record_config``.
    """
    if not callable(build_model) or not callable(build_loss):
        raise TypeError("build_model and build_loss must be callables returning a model / a loss")
    results = []
    for seed in profile.seeds:
        seed_everything(seed)
        model = build_model()
        loss = build_loss()
        config = train_config(profile, seed, device, **dict(train_overrides or {}))
        extra = {"profile": profile.to_dict(), "data": splits.config, **dict(record_config or {})}
        results.append(
            train(model, loss, splits.train, config, metrics_factory=metrics_factory,
                  val_set=splits.val, test_set=splits.test,
                  name=name if results_dir is not None else None, results_dir=results_dir,
                  record_config=extra, on_log=on_log)
        )
    return results


def metric_frame(results: Mapping[str, Sequence[TrainResult]], keys: Sequence[str]):
    """A tidy DataFrame (run, seed, one column per scalar metric in ``keys``)."""
    import pandas as pd

    rows = []
    for run, runs in results.items():
        for res in runs:
            row = {"run": run, "seed": res.record.seed if res.record else None}
            for key in keys:
                if key not in res.metrics:
                    raise KeyError(f"run {run!r} has no metric {key!r}; it has {sorted(res.metrics)}")
                row[key] = res.metrics[key]
            rows.append(row)
    return pd.DataFrame(rows)


def per_class_frame(
    results: Mapping[str, Sequence[TrainResult]],
    class_names: Sequence[str],
    split: str = "test",
    frequencies: Optional[Sequence[float]] = None,
):
    """A tidy per-class DataFrame: run, seed index, class, IoU, recall, precision (and the
    class's training pixel frequency when given)."""
    import pandas as pd

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    if frequencies is not None and len(frequencies) != len(class_names):
        raise ValueError(f"got {len(frequencies)} frequencies for {len(class_names)} classes")
    rows = []
    for run, runs in results.items():
        for index, res in enumerate(runs):
            per = {m: res.metrics.get(f"{split}_{m}") for m in ("iou", "recall", "precision")}
            for m, values in per.items():
                if values is None or len(values) != len(class_names):
                    raise ValueError(f"run {run!r} lacks per-class {split}_{m} for {len(class_names)} classes")
            for c, cname in enumerate(class_names):
                row = {"run": run, "seed_index": index, "class": cname,
                       **{m: per[m][c] for m in per}}
                if frequencies is not None:
                    row["pixel_frequency"] = float(frequencies[c])
                rows.append(row)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------
# Recall-loss chapter (02_recall): class weights from the training split, the weight
# trajectory that the training harness records, and where a weight vector sits between
# plain CE and inverse-frequency weighting.
# --------------------------------------------------------------------------------------
def train_class_weights(splits: Splits, method: str = "inverse"):
    r"""Inverse- or median-frequency class weights from the **training** split's pixel counts.

    Weights estimated on validation data leak it into training (a pitfall of the recall-loss
    paper's public baseline); this helper only ever reads ``splits.train.pixel_counts``.
    ``method`` is passed to :func:`pixelweight.losses.class_weights`.
    """
    import torch

    from .losses import class_weights

    if not isinstance(splits, Splits):
        raise TypeError(f"splits must be a Splits, got {type(splits).__name__}")
    counts = getattr(splits.train, "pixel_counts", None)
    if counts is None:
        raise ValueError(f"the training split {type(splits.train).__name__} has no pixel_counts")
    return class_weights(counts=torch.as_tensor(counts).sum(dim=0), method=method)


def log_loss_weights(step: int, model: nn.Module, loss_fn: Any) -> Dict[str, Any]:
    """An ``on_log`` hook for :func:`~pixelweight.train.train`: the loss's current class
    weights (``loss_fn.weights``, e.g. :class:`~pixelweight.losses.RecallLoss`) as
    ``{"class_weights": [...]}``; nothing for a loss without weights."""
    import torch

    weights = getattr(loss_fn, "weights", None)
    if not isinstance(weights, torch.Tensor):
        return {}
    return {"class_weights": [float(v) for v in weights.detach().cpu().flatten()]}


def weight_history_frame(
    results: Mapping[str, Sequence[TrainResult]],
    class_names: Sequence[str],
    key: str = "class_weights",
):
    """A tidy DataFrame of logged class weights: run, seed_index, step, class, weight.

    Reads the history entries that :func:`log_loss_weights` filled; runs without them are
    skipped, and a logged vector of the wrong length raises ``ValueError``.
    """
    import pandas as pd

    rows = []
    for run, runs in results.items():
        for index, res in enumerate(runs):
            for entry in res.history:
                weights = entry.get(key)
                if weights is None:
                    continue
                if len(weights) != len(class_names):
                    raise ValueError(f"run {run!r} logged {len(weights)} weights for {len(class_names)} classes")
                rows += [{"run": run, "seed_index": index, "step": entry["step"], "class": name,
                          "weight": float(w)} for name, w in zip(class_names, weights)]
    return pd.DataFrame(rows, columns=["run", "seed_index", "step", "class", "weight"])


def frequency_exponent(weights: Sequence[float], frequencies: Sequence[float]) -> float:
    r"""The exponent :math:`\beta` of the fit :math:`w_c \propto f_c^{-\beta}` (least squares in logs).

    :math:`\beta = 0` is plain cross-entropy (all classes weighted alike), :math:`\beta = 1`
    inverse-frequency weighting. Classes with a zero (or non-finite) weight or frequency
    are left out; with fewer than two classes left, or all frequencies equal, the result is
    NaN.
    """
    import numpy as np

    w = np.asarray(weights, dtype=float)
    f = np.asarray(frequencies, dtype=float)
    if w.ndim != 1 or w.shape != f.shape:
        raise ValueError(f"weights and frequencies must be 1-D of equal length, got {w.shape} and {f.shape}")
    keep = np.isfinite(w) & np.isfinite(f) & (w > 0) & (f > 0)
    if keep.sum() < 2:
        return float("nan")
    x, y = np.log(f[keep]), np.log(w[keep])
    if np.ptp(x) == 0:
        return float("nan")
    slope = np.polyfit(x, y, 1)[0]  # log w_c = a - beta log f_c
    return float(-slope)


__all__ += ["train_class_weights", "log_loss_weights", "weight_history_frame", "frequency_exponent"]


# --------------------------------------------------------------------------------------
# Loss max-pooling chapter (04_lmp): the scales of its three notebooks, where the LMP
# weight goes on an image, the limits checked on a trained batch, and the cost benchmark.
# --------------------------------------------------------------------------------------
#: The scales of the loss max-pooling chapter, by stage and profile: ``profile`` overrides of
#: :func:`~pixelweight.profiles.get_profile` and ``scenes`` keyword arguments of
#: :class:`~pixelweight.data.DigitScenes`. ``maps``: the one CE model whose weights the
#: derivation shows; ``headline``: CE vs LMP at the public defaults on chapter 0's data;
#: ``grid``: the (p, ratio) grid with top-k mining, in ``ci`` on smaller scenes.
LMP_SCALES: Dict[str, Dict[str, Dict[str, Dict[str, Any]]]] = {
    "maps": {
        "ci": {"profile": dict(seeds=(0,), steps=300, lr=4e-3, eval_every=0), "scenes": dict(imbalance=1.0)},
        "full": {"profile": dict(seeds=(0,)), "scenes": dict(imbalance=1.0)},
    },
    "headline": {
        "ci": {"profile": dict(steps=240, lr=4e-3, eval_every=0), "scenes": dict(imbalance=1.0)},
        "full": {"profile": {}, "scenes": dict(imbalance=1.0)},
    },
    "grid": {
        "ci": {"profile": dict(image_size=32, width=8, steps=190, lr=6e-3, eval_every=0),
               "scenes": dict(imbalance=1.0, num_digits=(1, 3), digit_size=(12, 24))},
        "full": {"profile": {}, "scenes": dict(imbalance=1.0)},
    },
}


def _lmp_scale(name: str, stage: str) -> Dict[str, Dict[str, Any]]:
    if stage not in LMP_SCALES:
        raise ValueError(f"stage must be one of {sorted(LMP_SCALES)}, got {stage!r}")
    return LMP_SCALES[stage].get(name, {})


def lmp_profile(name: str, stage: str) -> Profile:
    """The profile ``name`` (``"ci"``/``"full"``) with the LMP chapter's overrides for ``stage``
    (a key of :data:`LMP_SCALES`); a profile the table does not list gets no override."""
    from .profiles import get_profile

    return get_profile(name, **_lmp_scale(name, stage).get("profile", {}))


def lmp_scenes(name: str, stage: str) -> Dict[str, Any]:
    """The :class:`~pixelweight.data.DigitScenes` arguments of the LMP chapter's ``stage`` at
    profile ``name``, for :func:`digit_scenes_splits` (``imbalance = 1`` unless said)."""
    lmp_profile(name, stage)  # validates both names
    return dict(_lmp_scale(name, stage).get("scenes", {"imbalance": 1.0}))


def boundary_mask(target, width: int = 1, ignore_index: Optional[int] = None):
    """Pixels within ``width`` pixels (Chebyshev distance) of a label change: ``(N, H, W)`` bool.

    A pixel is on a boundary when its ``(2 width + 1)``-square neighbourhood holds more than
    one label (max-pooling of the labels differs from min-pooling). Ignored pixels are never
    boundary pixels, and they create none (they take the label of the pixel itself).
    """
    import torch
    import torch.nn.functional as F

    from ._validation import check_ignore_index, check_int, check_tensor

    check_tensor(target, "target")
    width = check_int(width, "width", minimum=1)
    ignore_index = check_ignore_index(ignore_index)
    if target.ndim != 3 or target.is_floating_point() or target.dtype == torch.bool:
        raise ValueError(f"target must be an integer (N, H, W) label map, got {tuple(target.shape)} {target.dtype}")
    labels = target.long()
    ignored = labels == ignore_index if ignore_index is not None else torch.zeros_like(labels, dtype=torch.bool)
    # ignored pixels are transparent: +inf for the min-pool, -inf for the max-pool
    x = labels.double().masked_fill(ignored, -float("inf")).unsqueeze(1)
    y = (-labels.double()).masked_fill(ignored, -float("inf")).unsqueeze(1)
    k, pad = 2 * width + 1, width
    hi = F.max_pool2d(F.pad(x, (pad,) * 4, value=-float("inf")), k, stride=1)[:, 0]
    lo = -F.max_pool2d(F.pad(y, (pad,) * 4, value=-float("inf")), k, stride=1)[:, 0]
    return (hi != lo) & ~ignored


def weight_share_frame(weights, target, class_names: Sequence[str], boundary=None, valid=None):
    """Where the weight goes: per class (and boundary / interior pixels), its share of the
    pixels, its share of the weight, and the ratio of the two (1 = as uniform weighting).

    ``weights``: non-negative ``(N, H, W)`` (e.g. :func:`~pixelweight.losses.lmp_weights`);
    ``target``: ``(N, H, W)`` labels in ``[0, len(class_names))``; ``boundary``: optional bool
    mask (:func:`boundary_mask`); ``valid``: optional bool mask of the pixels that count.
    Returns a DataFrame with ``group``, ``pixel_share``, ``weight_share``, ``enrichment``.
    """
    import pandas as pd
    import torch

    from ._validation import check_label_range, check_tensor

    check_tensor(weights, "weights")
    check_tensor(target, "target")
    if weights.shape != target.shape:
        raise ValueError(f"weights {tuple(weights.shape)} and target {tuple(target.shape)} must have the same shape")
    valid = torch.ones_like(target, dtype=torch.bool) if valid is None else valid
    masks = {"valid": valid}
    if boundary is not None:
        masks["boundary"] = boundary
    for name, mask in masks.items():
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or mask.shape != target.shape:
            raise ValueError(f"{name} must be a bool tensor of shape {tuple(target.shape)}")
    check_label_range(target[valid], "target", len(class_names))
    w = torch.where(valid, weights.detach().double(), 0.0)
    if bool((w < 0).any()):
        raise ValueError("weights must be non-negative")
    total_w, total_n = float(w.sum()), int(valid.sum())
    if total_w <= 0 or total_n == 0:
        raise ValueError("need at least one valid pixel with a positive weight")
    groups = [(name, valid & (target == c)) for c, name in enumerate(class_names)]
    if boundary is not None:
        groups += [("boundary pixels", valid & boundary), ("interior pixels", valid & ~boundary)]
    rows = []
    for name, mask in groups:
        pixel_share = int(mask.sum()) / total_n
        weight_share = float(w[mask].sum()) / total_w
        rows.append({"group": name, "pixel_share": pixel_share, "weight_share": weight_share,
                     "enrichment": weight_share / pixel_share if pixel_share > 0 else float("nan")})
    return pd.DataFrame(rows)


def top_m_mean(losses, m, valid=None):
    r"""The mean of the :math:`m` largest losses of each image (a fractional :math:`m` counts the
    next loss by its fraction; :math:`m` is clipped to :math:`[1, n]`): the :math:`p \to 1` limit of
    LMP, computed independently of :func:`~pixelweight.losses.lmp_weights` with ``torch.topk``.

    ``losses``: ``(N, ...)``; ``m``: a number or one per image; ``valid``: optional bool mask.
    Returns ``(N,)`` float64 (0 for an image without valid pixels).
    """
    import math

    import torch

    from ._validation import check_tensor

    check_tensor(losses, "losses")
    if losses.ndim < 2:
        raise ValueError(f"losses must have shape (N, ...), got {tuple(losses.shape)}")
    rows = losses.detach().double().reshape(losses.shape[0], -1)
    keep = torch.ones_like(rows, dtype=torch.bool) if valid is None else valid.reshape(rows.shape)
    ms = [float(v) for v in (m if isinstance(m, (list, tuple, torch.Tensor)) else [m] * rows.shape[0])]
    if len(ms) != rows.shape[0]:
        raise ValueError(f"need one m per image ({rows.shape[0]}), got {len(ms)}")
    out = []
    for row, mask, mi in zip(rows, keep, ms):
        v = row[mask]
        if v.numel() == 0:
            out.append(torch.zeros((), dtype=torch.float64))
            continue
        mm = min(max(mi, 1.0), float(v.numel()))
        k = int(math.floor(mm))
        top = torch.topk(v, min(k + 1, v.numel())).values
        extra = (mm - k) * top[k] if k < top.numel() else 0.0
        out.append((top[:k].sum() + extra) / mm)
    return torch.stack(out)


def lmp_limit_frame(losses, valid=None, p: float = 1.7, ratio: float = 0.3,
                    p_large: float = 1e6, p_small: float = 1.00001):
    r"""The limits of loss max-pooling checked on real pixel losses: one row per image and limit.

    ``losses``: non-negative ``(N, H, W)`` (e.g. the CE of a trained model on test images),
    each image its own problem (``per_image=True``). Each limit is compared with a reference
    computed without the closed form: ``ratio = 1`` and ``p = p_large`` with the mean loss
    (plain CE); ``p = p_small`` and ``p = 1`` with :func:`top_m_mean`; :math:`m = 1`
    (``ratio = 1/n``) with the power mean :math:`(\mathrm{mean}\,\ell^q)^{1/q}`.
    Returns a DataFrame: ``limit``, ``image``, ``lmp``, ``reference``,
    ``relative_difference`` = (lmp - reference) / reference.
    """
    import pandas as pd
    import torch

    from .losses import lmp_pool

    x = losses.detach().double()
    keep = torch.ones_like(x, dtype=torch.bool) if valid is None else valid
    flat, mask = x.reshape(x.shape[0], -1), keep.reshape(x.shape[0], -1)
    counts = mask.sum(1).double()
    if bool((counts == 0).any()):
        raise ValueError("every image needs at least one valid pixel")
    masked = torch.where(mask, flat, 0.0)
    mean = masked.sum(1) / counts
    q = p / (p - 1.0)
    power_mean = (masked.pow(q).sum(1) / counts).pow(1.0 / q)
    top = top_m_mean(x, ratio * counts, keep)

    def pooled(pp, rr):
        return lmp_pool(x, pp, rr, valid=keep, per_image=True)

    m_one = torch.stack([lmp_pool(x[i], p, min(1.0, 1.0 / float(counts[i])), valid=keep[i]) for i in range(x.shape[0])])
    checks = [
        (f"ratio = 1 (p = {p:g}) → mean (CE)", pooled(p, 1.0), mean),
        (f"p = {p_large:g} (ratio = {ratio:g}) → mean (CE)", pooled(p_large, ratio), mean),
        (f"p = {p_small:g} (ratio = {ratio:g}) → top-m mean", pooled(p_small, ratio), top),
        (f"p = 1 (ratio = {ratio:g}) → top-m mean", pooled(1.0, ratio), top),
        (f"m = 1 (p = {p:g}) → power mean", m_one, power_mean),
    ]
    rows = [{"limit": label, "image": i, "lmp": float(value[i]), "reference": float(ref[i]),
             "relative_difference": float((value[i] - ref[i]) / ref[i])}
            for label, value, ref in checks for i in range(x.shape[0])]
    return pd.DataFrame(rows)


def lmp_path_frame(losses, ps: Sequence[float], ratio: float = 0.3, valid=None):
    """LMP of each image along a path of ``p`` values at a fixed ``ratio``, with its two limits:
    a DataFrame of ``p``, ``image``, ``lmp``, ``mean`` (p -> inf) and ``top_m_mean`` (p -> 1)."""
    import pandas as pd
    import torch

    from .losses import lmp_pool

    x = losses.detach().double()
    keep = torch.ones_like(x, dtype=torch.bool) if valid is None else valid
    counts = keep.reshape(x.shape[0], -1).sum(1).double()
    mean = torch.where(keep, x, 0.0).reshape(x.shape[0], -1).sum(1) / counts.clamp_min(1)
    top = top_m_mean(x, ratio * counts, keep)
    rows = []
    for p in ps:
        value = lmp_pool(x, p, ratio, valid=keep, per_image=True)
        rows += [{"p": float(p), "image": i, "lmp": float(value[i]), "mean": float(mean[i]),
                  "top_m_mean": float(top[i])} for i in range(x.shape[0])]
    return pd.DataFrame(rows)


def group_metric_frame(
    results: Mapping[str, Sequence[TrainResult]],
    groups: Mapping[str, Sequence[int]],
    split: str = "test",
):
    """Per run and seed: mIoU, mean accuracy, pixel accuracy, and the mean IoU and recall of
    each group of classes (e.g. ``{"rare": [6, 7, 8, 9, 10]}`` -> ``rare_iou``, ``rare_recall``).

    A class whose value is undefined (NaN) is left out of its group's mean.
    """
    import numpy as np
    import pandas as pd

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    rows = []
    for run, runs in results.items():
        for index, res in enumerate(runs):
            row = {"run": run, "seed_index": index,
                   "seed": res.record.seed if res.record is not None else index}
            for key in ("miou", "mean_accuracy", "pixel_accuracy"):
                row[key] = res.metrics[f"{split}_{key}"]
            for group, classes in groups.items():
                for metric in ("iou", "recall"):
                    values = np.asarray(res.metrics[f"{split}_{metric}"], dtype=float)
                    if not classes or max(classes) >= values.size or min(classes) < 0:
                        raise ValueError(f"group {group!r} must list class indices in [0, {values.size}), got {list(classes)}")
                    row[f"{group}_{metric}"] = float(np.nanmean(values[list(classes)]))
            rows.append(row)
    return pd.DataFrame(rows)


def lmp_benchmark(
    shape: Sequence[int] = (8, 19, 512, 1024),
    *,
    p: float = 1.7,
    ratio: float = 0.3,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    steady_memory: bool = False,
):
    """What loss max-pooling costs next to plain CE, on random ``(N, C, H, W)`` logits.

    Two measurements, each as a ratio to CE taken within rounds whose order rotates (see
    :func:`pixelweight.benchmark.benchmark_losses`, which does the first):

    * ``forward+backward``: CE, LMP over the batch, LMP per image, top-k (``p = 1``);
    * ``forward``: the per-pixel CE map, and :func:`~pixelweight.losses.lmp_weights` on that
      map (``N x H x W`` pixel losses) alone.

    ``steady_memory`` is :func:`~pixelweight.benchmark.benchmark_losses`' (CPU: time the
    losses, not the kernel's page faults; it lasts for the rest of the process).

    Returns a DataFrame with ``pass``, ``what``, ``median_ms``, ``ratio`` (median over rounds
    of the time over CE's in the same round and pass), ``ratio_q25``, ``ratio_q75`` (its
    quartiles: the spread a reader should expect on a rerun), ``shape``, ``device``,
    ``threads``, ``steady_memory``.
    """

    import numpy as np
    import pandas as pd
    import torch

    from ._validation import check_int
    from .benchmark import benchmark_losses, time_calls
    from .losses import cross_entropy, lmp_weights, loss_max_pooling
    from .train import resolve_device

    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"shape must be (N, C, H, W), got {shape!r}")
    shape = tuple(check_int(v, f"shape[{i}]", minimum=1) for i, v in enumerate(shape))
    repeats = check_int(repeats, "repeats", minimum=1)
    warmup = check_int(warmup, "warmup", minimum=0)
    dev = resolve_device(device)
    losses = {
        "cross_entropy": lambda x, y: cross_entropy(x, y),
        f"loss_max_pooling(p={p:g}, ratio={ratio:g})": lambda x, y: loss_max_pooling(x, y, p, ratio),
        f"loss_max_pooling(p={p:g}, ratio={ratio:g}, per_image=True)":
            lambda x, y: loss_max_pooling(x, y, p, ratio, per_image=True),
        f"top-k mining: loss_max_pooling(p=1, ratio={ratio:g})": lambda x, y: loss_max_pooling(x, y, 1.0, ratio),
    }
    both = benchmark_losses(losses, shape, device=dev, repeats=repeats, warmup=warmup, seed=seed,
                            steady_memory=steady_memory)
    frame = both[["loss", "median_ms", "ratio", "ratio_q25", "ratio_q75"]].rename(columns={"loss": "what"})
    frame.insert(0, "pass", "forward+backward")

    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    logits = torch.randn(shape, generator=g).to(dev)
    target = torch.randint(0, c, (n, h, w), generator=g).to(dev)
    with torch.no_grad():
        ce_map = cross_entropy(logits, target, reduction="none")
    calls = {
        "cross_entropy(reduction='none')": lambda: cross_entropy(logits, target, reduction="none"),
        f"lmp_weights(p={p:g}, ratio={ratio:g}) on those {n}x{h}x{w} losses": lambda: lmp_weights(ce_map, p, ratio),
    }
    names = list(calls)
    with torch.no_grad():
        times = time_calls(calls, repeats=repeats, warmup=warmup, device=dev)  # the benchmark's timing loop
    ref = np.asarray(times[names[0]])
    fwd = pd.DataFrame([{"pass": "forward", "what": k, "median_ms": 1e3 * float(np.median(times[k])),
                         **dict(zip(("ratio_q25", "ratio", "ratio_q75"),
                                    np.quantile(np.asarray(times[k]) / ref, [0.25, 0.5, 0.75]).tolist()))}
                        for k in names])
    out = pd.concat([frame, fwd], ignore_index=True)
    out["shape"] = "x".join(map(str, shape))
    out["device"] = str(dev)
    out["threads"] = torch.get_num_threads()
    out["steady_memory"] = bool(both["steady_memory"].iloc[0])
    return out


__all__ += ["LMP_SCALES", "lmp_profile", "lmp_scenes", "boundary_mask", "weight_share_frame", "top_m_mean",
            "lmp_limit_frame", "lmp_path_frame", "group_metric_frame", "lmp_benchmark"]


# --------------------------------------------------------------------------------------
# Recall-loss chapter (02_recall): the budget its experiment notebooks share.
# --------------------------------------------------------------------------------------
#: The scale of the recall-loss chapter's experiments (``02_experiments`` and
#: ``03_imbalance_sweep`` share it), by profile: ``profile`` overrides of
#: :func:`~pixelweight.profiles.get_profile` and ``scenes`` keyword arguments of
#: :class:`~pixelweight.data.DigitScenes` (the Zipf exponent is set by each notebook). In
#: ``ci``: 32 x 32 scenes of 1-3 smaller digits and 340 steps, so that 18 runs fit the
#: book's CPU build; ``full`` is the library's GPU profile on chapter 0's 64 x 64 scenes.
RECALL_SCALES: Dict[str, Dict[str, Dict[str, Any]]] = {
    "ci": {
        "profile": dict(steps=270, image_size=32, train_samples=1000, val_samples=100, test_samples=300,
                        eval_every=0),
        "scenes": dict(num_digits=(1, 3), digit_size=(10, 20)),
    },
    "full": {"profile": {}, "scenes": {}},
}


def recall_profile(name: str) -> Profile:
    """The profile ``name`` (``"ci"``/``"full"``) with the recall chapter's overrides
    (:data:`RECALL_SCALES`); a profile the table does not list gets none."""
    from .profiles import get_profile

    return get_profile(name, **RECALL_SCALES.get(name, {}).get("profile", {}))


def recall_scenes(name: str) -> Dict[str, Any]:
    """The :class:`~pixelweight.data.DigitScenes` arguments of the recall chapter at profile
    ``name`` (without ``imbalance``), for :func:`digit_scenes_splits`."""
    recall_profile(name)  # validates the name
    return dict(RECALL_SCALES.get(name, {}).get("scenes", {}))


__all__ += ["RECALL_SCALES", "recall_profile", "recall_scenes"]
