"""Chapter 0, the testbed (``notebooks/00_testbed``): the synthetic scenes, the book's U-Net
and the cross-entropy baseline every later chapter compares with.

Stages:

- ``baseline``: a U-Net trained with plain cross-entropy on ``DigitScenes`` with a Zipf
  long tail (``imbalance = 1``), at the shared profiles' budgets.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence, Tuple

from ..claims import Claim, ClaimsTable, Evidence
from ..profiles import get_profile
from ..stats import Interval
from ._base import PLATEAU, Arm, Chapter, DataSpec, ModelSpec, Scale, Setup, Stage

__all__ = ["CHAPTER", "STAGES", "setup", "RecallGap", "rare_recall_gap", "baseline_claims"]

#: The testbed's scenes: 64 x 64, two to five digits, a Zipf class law with exponent 1.
SCENES = DataSpec("DigitScenes", size=64, options={"imbalance": 1.0})

STAGES = {
    "baseline": Stage(
        "baseline", "a U-Net trained with cross-entropy on a Zipf long tail",
        scales={
            "ci": Scale(get_profile("ci", steps=270), SCENES, ModelSpec(width=16, depth=3)),
            # converged on a CPU: 5 seeds, 4,000 steps, validation every 250 steps for the plateau
            "full": Scale(get_profile("full", steps=4000, batch_size=16, train_samples=1200, val_samples=200,
                                      test_samples=400, eval_every=250),
                          SCENES, ModelSpec(width=16, depth=3), train=PLATEAU),
        },
        arms=(Arm("CE", "ce"),), prefix="ch0",
    ),
}

CHAPTER = Chapter("00_testbed", "The testbed: synthetic scenes, a small U-Net and the cross-entropy baseline",
                  STAGES)
setup = CHAPTER.setup


@dataclasses.dataclass(frozen=True)
class RecallGap:
    """The testbed's measured effect (:func:`rare_recall_gap`): the digit classes split by
    training pixel frequency into the ``frequent`` and the ``rare`` half (names, most frequent
    first), their mean test recall per seed, and ``gap``, the paired difference frequent minus
    rare over seeds."""

    frequent: Tuple[str, ...]
    rare: Tuple[str, ...]
    recall_frequent: Tuple[float, ...]
    recall_rare: Tuple[float, ...]
    gap: Interval


def rare_recall_gap(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> RecallGap:
    """The mean test recall of the five most frequent digits minus that of the five rarest
    (by the training split's pixel frequencies), paired by seed, from the ``"CE"`` runs of
    ``runs`` (those of :meth:`~pixelweight.chapters.Setup.run` or :meth:`~pixelweight.chapters.Setup.committed_runs`). A class whose
    recall is undefined in a run (absent from its test split) is left out of its half's mean."""
    import numpy as np

    from ..stats import paired_difference_ci
    from ._base import per_class_frame

    _check(setup)
    if "CE" not in runs or len(runs["CE"]) < 2:
        raise ValueError(f"the recall gap needs at least two CE runs, got {sorted(runs)}")
    freq = setup.splits.train.class_pixel_frequencies()
    frame = per_class_frame({"CE": runs["CE"]}, setup.class_names, split="test", frequencies=freq)
    digits = frame[frame["class"] != "background"]
    order = digits.groupby("class", sort=False)["pixel_frequency"].first().sort_values(ascending=False,
                                                                                       kind="stable")
    names = list(order.index)
    half = len(names) // 2
    frequent, rare = names[:half], names[-half:]
    per_seed = digits.pivot_table(index="seed_index", columns="class", values="recall")
    high, low = per_seed[frequent].mean(axis=1).to_numpy(), per_seed[rare].mean(axis=1).to_numpy()
    if not (np.isfinite(high).all() and np.isfinite(low).all()):
        raise ValueError("a run has no defined recall in one half of the digits (all its classes absent "
                         "from the test split)")
    return RecallGap(tuple(frequent), tuple(rare), tuple(map(float, high)), tuple(map(float, low)),
                     paired_difference_ci(high, low))


def baseline_claims(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> ClaimsTable:
    """The testbed's one claim, judged on ``runs`` (``{"CE": [run per seed]}``, live or
    committed): CE under-recalls the rare classes (:func:`rare_recall_gap`: mean recall of the
    five most frequent digits minus that of the five rarest, paired by seed, above 0). The
    testbed reproduces no paper: the claim is the book's, not a primary claim."""
    gap = rare_recall_gap(setup, runs)
    return setup.claims_table([
        Claim("CE under-recalls the rare classes of a long tail", source="ours",
              ran="U-Net + CE; mean recall of the 5 most frequent digits minus that of the 5 rarest "
                  "(test), paired by seed",
              digits=2, evidence=Evidence("Δ recall", gap.gap, direction=+1)),
    ])


def _check(setup: Setup) -> None:
    from ._base import check_stage

    check_stage(setup, CHAPTER.folder, "baseline")
