"""Chapter 0, the testbed (``notebooks/00_testbed``): the synthetic scenes, the book's U-Net
and the cross-entropy baseline every later chapter compares with.

Stages:

- ``baseline``: a U-Net trained with plain cross-entropy on ``DigitScenes`` with a Zipf
  long tail (``imbalance = 1``), at the shared profiles' budgets.
"""

from __future__ import annotations

from ..claims import Claim, ClaimsTable, Evidence
from ..profiles import get_profile
from ..stats import Interval
from ._base import PLATEAU, Arm, Chapter, DataSpec, ModelSpec, Scale, Setup, Stage

__all__ = ["CHAPTER", "STAGES", "setup", "baseline_claims"]

#: The testbed's scenes: 64 x 64, two to five digits, a Zipf class law with exponent 1.
SCENES = DataSpec("DigitScenes", size=64, options={"imbalance": 1.0})

STAGES = {
    "baseline": Stage(
        "baseline", "a U-Net trained with cross-entropy on a Zipf long tail",
        scales={
            "ci": Scale(get_profile("ci"), SCENES, ModelSpec(width=16, depth=3)),
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


def baseline_claims(setup: Setup, recall_gap: Interval) -> ClaimsTable:
    """The testbed's one claim: CE under-recalls the rare classes (``recall_gap``: mean recall
    of the five most frequent digits minus that of the five rarest, paired by seed)."""
    return setup.claims_table([
        Claim("CE under-recalls the rare classes of a long tail", source="ours",
              ran="U-Net + CE; mean recall of the 5 most frequent digits minus that of the 5 rarest "
                  "(test), paired by seed",
              digits=2, evidence=Evidence("Δ recall", recall_gap, direction=+1)),
    ])
