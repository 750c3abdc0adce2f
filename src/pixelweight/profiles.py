"""Run profiles: the training budget shared by every chapter, as data rather than if-branches.

Every notebook has a papermill parameter ``profile``: ``"ci"`` (CPU, minutes: what CI and
the published book run) or ``"full"`` (GPU scale: more seeds, steps and samples). A
:class:`Profile` holds what every chapter's budget has — seeds, steps, batch size,
learning rate, samples per split, validation cadence; the size of the images and of the
model belong to a chapter's stage (:class:`pixelweight.chapters.Scale`), which takes a
profile with any fields overridden, e.g. ``get_profile("ci", steps=270)``. A notebook never
branches on the name; the overrides are part of the record's config.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Dict, Tuple


@dataclasses.dataclass(frozen=True)
class Profile:
    """The scale of a chapter's experiments.

    Attributes
    ----------
    name: ``"ci"`` or ``"full"`` (or a custom name).
    seeds: training seeds; statistics across seeds give the confidence intervals.
    steps: optimiser steps per training run.
    batch_size: global batch size (split across DDP ranks).
    train_samples, val_samples, test_samples: generated images per split.
    eval_every: validation every this many steps (0: only at the end).
    lr: learning rate (Adam).
    """

    name: str
    seeds: Tuple[int, ...]
    steps: int
    batch_size: int
    train_samples: int
    val_samples: int
    test_samples: int
    eval_every: int = 0
    lr: float = 2e-3

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name:
            raise ValueError(f"profile name must be a non-empty string, got {self.name!r}")
        seeds = tuple(self.seeds)
        if not seeds or any(isinstance(s, bool) or not isinstance(s, int) or s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty tuple of non-negative ints, got {self.seeds!r}")
        if len(set(seeds)) != len(seeds):
            raise ValueError(f"seeds must be distinct, got {seeds}")
        object.__setattr__(self, "seeds", seeds)
        for field in ("steps", "batch_size", "train_samples", "val_samples", "test_samples"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if isinstance(self.eval_every, bool) or not isinstance(self.eval_every, int) or self.eval_every < 0:
            raise ValueError(f"eval_every must be a non-negative int, got {self.eval_every!r}")
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ValueError(f"lr must be a positive number, got {self.lr!r}")

    def budget(self) -> str:
        """The training budget in a few words, for the scorecard, e.g.
        "`ci` (early training): 450 steps, 3 seeds"."""
        meaning = f" ({BUDGET_MEANING[self.name]})" if self.name in BUDGET_MEANING else ""
        seeds = len(self.seeds)
        return f"`{self.name}`{meaning}: {self.steps} steps, {seeds} seed{'s' if seeds != 1 else ''}"

    def to_dict(self) -> Dict[str, Any]:
        data = dataclasses.asdict(self)
        data["seeds"] = list(self.seeds)
        return data


#: What a profile's numbers describe, printed beside every verdict measured with it.
BUDGET_MEANING: Dict[str, str] = {
    "ci": "early training",
    "full": "converged budget",
}

PROFILES: Dict[str, Profile] = {
    # CPU, 2 cores: each chapter notebook must finish within 4 minutes (each notebook about 3.5 min on a slow host).
    "ci": Profile(
        name="ci", seeds=(0, 1, 2), steps=450, batch_size=16,
        train_samples=1200, val_samples=200, test_samples=400, eval_every=150,
    ),
    # One GPU (Colab or better): more seeds, longer training, more data.
    "full": Profile(
        name="full", seeds=(0, 1, 2, 3, 4), steps=4000, batch_size=32,
        train_samples=12000, val_samples=1000, test_samples=2000, eval_every=500,
    ),
}


def get_profile(name: str, **overrides: Any) -> Profile:
    """The profile called ``name`` with any fields replaced by ``overrides``."""
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(PROFILES)}")
    unknown = set(overrides) - {f.name for f in dataclasses.fields(Profile)}
    if unknown:
        raise ValueError(f"unknown profile fields {sorted(unknown)}")
    return dataclasses.replace(PROFILES[name], **overrides)


@dataclasses.dataclass(frozen=True)
class BenchmarkScale:
    """The size of the book's loss-cost benchmark (:func:`pixelweight.benchmark.benchmark_library`).

    Attributes
    ----------
    shape: ``(N, C, H, W)`` of the random logits.
    repeats: timed rounds per thread count (each loss runs once per round).
    threads: CPU thread counts, one measurement each.
    ignore_rows: rows at the top of every image labelled ``ignore_index``.
    """

    shape: Tuple[int, int, int, int]
    repeats: int
    threads: Tuple[int, ...] = (1, 2)
    ignore_rows: int = 8

    def __post_init__(self):
        shape = tuple(self.shape)
        if len(shape) != 4 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in shape) \
                or shape[1] < 2:
            raise ValueError(f"shape must be (N, C, H, W) of positive ints with C >= 2, got {self.shape!r}")
        threads = tuple(self.threads)
        if not threads or any(isinstance(t, bool) or not isinstance(t, int) or t < 1 for t in threads):
            raise ValueError(f"threads must be a non-empty tuple of positive ints, got {self.threads!r}")
        if isinstance(self.repeats, bool) or not isinstance(self.repeats, int) or self.repeats < 1:
            raise ValueError(f"repeats must be a positive int, got {self.repeats!r}")
        if isinstance(self.ignore_rows, bool) or not isinstance(self.ignore_rows, int) or not 0 <= self.ignore_rows < shape[2]:
            raise ValueError(f"ignore_rows must be an int in [0, H), got {self.ignore_rows!r}")
        object.__setattr__(self, "shape", shape)
        object.__setattr__(self, "threads", threads)


BENCHMARK_SCALES: Dict[str, BenchmarkScale] = {
    # The measurement: 4 x 19 x 256 x 512 logits, 8 ignored rows; about 15 s on 2 cores.
    "ci": BenchmarkScale(shape=(4, 19, 256, 512), repeats=7),
    # A Cityscapes batch, more rounds.
    "full": BenchmarkScale(shape=(8, 19, 512, 1024), repeats=15),
}


def benchmark_scale(name: str) -> BenchmarkScale:
    """The loss-cost benchmark's size for the profile ``name``."""
    if name not in BENCHMARK_SCALES:
        raise ValueError(f"unknown profile {name!r}; choose one of {sorted(BENCHMARK_SCALES)}")
    return BENCHMARK_SCALES[name]
