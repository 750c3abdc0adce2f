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
    and use fixed data seeds (:data:`DATA_SEEDS`).
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
    """The :class:`TrainConfig` a profile implies for one seed (fields overridable)."""
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

    Each seed is set (:func:`seed_everything`) before the model and the loss are built,
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
