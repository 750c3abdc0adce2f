r"""Chapter 2, recall loss (``notebooks/02_recall``): CE against recall loss and the usual
re-weightings on a long tail, the recall-loss weights during training, and how the gain
depends on the imbalance. The loss itself is ``pixelweight.losses.recall``.

Stages (``STAGES``):

- ``experiments`` (``02_experiments``): six losses on ``DigitScenes`` with a Zipf class law
  (:math:`s = 1`): CE, inverse- and median-frequency CE (weights from the training split),
  focal (:math:`\gamma = 1`), recall loss with batch weights and with moving-average
  weights (:math:`\alpha = 0.5`). The harness logs every step in ``ci``, so the weight
  trajectory starts at step 1.
- ``sweep`` (``03_imbalance_sweep``): CE and recall loss at each Zipf exponent of
  :data:`EXPONENTS`, the stage's data variants ``s0``, ``s1``, ``s2``
  (``setup.variant(sweep_variant(s))``), records named by :func:`sweep_run_name`.

Both stages share one scale: in ``ci`` 32 x 32 scenes of one to three smaller digits, 160
steps and fewer samples, so that the chapter's 36 runs fit the book's CPU build; in
``full`` the same scenes and model trained to a plateau (3,000 steps, 5 seeds, validation every
200 steps), sized to run in under 90 minutes on two CPU cores.

The claims of the chapter (texts, sources, labels, how each is judged) are written once,
in :func:`experiments_claims` and :func:`sweep_claims`. Their effects are measured from the
runs by :func:`experiments_effects` and :func:`sweep_effects`, so that one function of the
runs (:func:`experiments_claims_from_runs`, :func:`sweep_claims_from_runs`) judges both the
notebooks' early ``ci`` runs and the committed converged records (:func:`show_converged`,
:func:`show_sweep_converged`).
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Real
from typing import Any, Dict, Mapping, Sequence

from torch import nn

from ..claims import Claim, ClaimsTable, Evidence
from ..profiles import get_profile
from ..stats import Interval
from ..train import TrainResult
from ._base import PLATEAU, Arm, Chapter, DataSpec, ModelSpec, Scale, Setup, Splits, Stage

__all__ = [
    "CHAPTER",
    "EXPONENTS",
    "MIOU_TOLERANCE",
    "BETA_START_MARGIN",
    "BETA_MIN_RISE",
    "BETA_OVERSHOOT",
    "STAGES",
    "experiments_claims",
    "frequency_exponent",
    "log_loss_weights",
    "setup",
    "sweep_claims",
    "converged_claims",
    "experiments_claims_from_runs",
    "experiments_effects",
    "show_converged",
    "sweep_claims_from_runs",
    "sweep_effects",
    "show_sweep_converged",
    "BetaTrajectory",
    "beta_frame",
    "beta_trajectory",
    "learning_curve",
    "paired_effect",
    "sweep_run_name",
    "sweep_variant",
    "train_class_weights",
    "weight_history_frame",
]

# --------------------------------------------------------------------------------------
# The setup: data, model, budgets and arms of each stage
# --------------------------------------------------------------------------------------
#: The scale both stages share, by profile. ``ci``: 32 x 32 scenes of 1-3 digits of 10-20
#: pixels, 160 steps, fewer samples, validation only at the end; ``full``: the same scenes
#: and model trained to a plateau (3,000 steps, 5 seeds, validation every 200 steps).
#: The Zipf exponent is 1 (the ``sweep`` stage replaces it).
_SCALES = {
    "ci": Scale(
        get_profile("ci", steps=160, train_samples=1000, val_samples=100, test_samples=300, eval_every=0),
        DataSpec("DigitScenes", size=32, options={"imbalance": 1.0, "num_digits": (1, 3), "digit_size": (10, 20)}),
        ModelSpec(width=16, depth=3),
    ),
    # converged on a CPU (the ci scenes and model, trained 12x longer), 5 seeds, plateau recorded
    "full": Scale(
        get_profile("full", steps=3000, batch_size=16, train_samples=1000, val_samples=200, test_samples=300,
                    eval_every=200),
        DataSpec("DigitScenes", size=32, options={"imbalance": 1.0, "num_digits": (1, 3), "digit_size": (10, 20)}),
        ModelSpec(width=16, depth=3),
        train=PLATEAU,
    ),
}


def _logging_every_400th(scale: Scale) -> Scale:
    """``scale`` logging 400 times per run (every step in ``ci``): the weight trajectory's
    resolution in ``02_experiments``."""
    return dataclasses.replace(scale, train={**scale.train, "log_every": max(1, scale.profile.steps // 400)})


STAGES = {
    "experiments": Stage(
        "experiments", "CE, class-weighted CE, focal and recall loss on a Zipf long tail (s = 1)",
        scales={name: _logging_every_400th(scale) for name, scale in _SCALES.items()},
        arms=(
            Arm("CE", "ce"),
            Arm("inverse-frequency CE", "inverse-ce", run="inverse"),
            Arm("median-frequency CE", "median-ce", run="median"),
            Arm("focal (γ = 1)", "focal", {"gamma": 1.0}),
            Arm("recall (batch)", "recall"),
            Arm("recall (moving average)", "recall", {"momentum": 0.5}, run="recall-ma"),
        ),
        prefix="ch2",
        on_log=lambda step, model, loss_fn: log_loss_weights(step, model, loss_fn),  # the weight trajectory
    ),
    "sweep": Stage(
        "sweep", "CE against recall loss (batch weights) at several Zipf exponents s",
        scales=_SCALES,
        arms=(Arm("CE", "ce"), Arm("recall", "recall")),
        prefix="ch2-sweep",
        variants={f"s{s:g}": {"imbalance": float(s)} for s in (0.0, 1.0, 2.0)},
    ),
}

CHAPTER = Chapter("02_recall", "Recall loss: re-weighting classes by how badly they are recalled", STAGES)
setup = CHAPTER.setup

#: The Zipf exponents of the ``sweep`` stage (its data variants ``s0``, ``s1``, ``s2``):
#: balanced digits, chapter 0's tail, a longer one.
EXPONENTS = (0.0, 1.0, 2.0)

#: "Competitive mIoU" (claim (b)), our reading: at most this far below CE.
MIOU_TOLERANCE = 0.02
#: Claim (d), our reading of "from CE": the weights' frequency exponent β at the first logged
#: step within this margin of 0 (CE), both ways ...
BETA_START_MARGIN = 0.25
#: ... "toward inverse frequency": β over the last tenth of training higher than at the start by
#: more than this (a tenth of the way from CE to inverse frequency) ...
BETA_MIN_RISE = 0.1
#: ... and not past it: β at the end no more than this above 1.
BETA_OVERSHOOT = 0.1


def sweep_run_name(s: float, arm: Arm) -> str:
    """The record name of ``arm`` of the ``sweep`` stage at Zipf exponent ``s``, e.g.
    ``ch2-sweep-s1-recall``."""
    if isinstance(s, bool) or not isinstance(s, Real) or not math.isfinite(s) or s < 0:
        raise ValueError(f"s must be a finite non-negative number, got {s!r}")
    if not isinstance(arm, Arm):
        raise TypeError(f"arm must be an Arm, got {type(arm).__name__}")
    return f"{STAGES['sweep'].prefix}-{sweep_variant(s)}-{arm.run}"


def sweep_variant(s: float) -> str:
    """The ``sweep`` stage's data variant at Zipf exponent ``s`` (one of :data:`EXPONENTS`),
    e.g. ``"s1"``: ``setup.variant(sweep_variant(s))``."""
    name = f"s{s:g}"
    if name not in STAGES["sweep"].variants:
        raise ValueError(f"s must be one of {EXPONENTS}, got {s!r}")
    return name


# --------------------------------------------------------------------------------------
# Analyses: class weights from the training split, the weight trajectory the harness
# records, and where a weight vector sits between plain CE and inverse frequency
# --------------------------------------------------------------------------------------
def train_class_weights(splits: Splits, method: str = "inverse"):
    r"""Inverse- or median-frequency class weights from the **training** split's pixel counts.

    Weights estimated on validation data leak it into training (a pitfall of the recall-loss
    paper's public baseline); this helper only ever reads ``splits.train.pixel_counts``.
    ``method`` is passed to :func:`pixelweight.losses.class_weights`. (The ``inverse-ce``
    and ``median-ce`` arms compute the same weights from the same counts.)
    """
    import torch

    from ..losses import class_weights

    if not isinstance(splits, Splits):
        raise TypeError(f"splits must be a Splits, got {type(splits).__name__}")
    counts = getattr(splits.train, "pixel_counts", None)
    if counts is None:
        raise ValueError(f"the training split {type(splits.train).__name__} has no pixel_counts")
    return class_weights(counts=torch.as_tensor(counts).sum(dim=0), method=method)


def log_loss_weights(step: int, model: nn.Module, loss_fn: Any) -> Dict[str, Any]:
    """An ``on_log`` hook for :func:`~pixelweight.train.train` (and ``Setup.run``): the loss's
    current class weights (``loss_fn.weights``, e.g. :class:`~pixelweight.losses.RecallLoss`)
    as ``{"class_weights": [...]}``; nothing for a loss without weights."""
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


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------
def _check_setup(setup: Setup, stage: str) -> None:
    from ._base import check_stage

    check_stage(setup, CHAPTER.folder, stage)


def _check_intervals(**effects: Any) -> None:
    for name, value in effects.items():
        if not isinstance(value, Interval):
            raise TypeError(f"{name} must be an Interval (pixelweight.stats), got {type(value).__name__}")


def _claim_a(acc_gain: Interval, detail: str = "") -> Claim:
    return Claim("recall loss raises mean accuracy over CE", source="abstract", label="(a)", primary=True,
                 ran="recall (batch) vs CE, mean accuracy (test)", detail=detail,
                 evidence=Evidence("Δ mean acc.", acc_gain, direction=+1))


def _claim_b(miou_change: Interval) -> Claim:
    return Claim(f"recall loss keeps a competitive mIoU (within {MIOU_TOLERANCE} of CE)", source="abstract",
                 primary=True, label="(b)", ran=f"recall (batch) vs CE, mIoU (test), tolerance {MIOU_TOLERANCE}",
                 evidence=Evidence("Δ mIoU", miou_change, tolerance=MIOU_TOLERANCE))


def paired_effect(runs: Mapping[str, Sequence[Any]], a: str, b: str, key: str) -> Interval:
    """The paired difference ``a - b`` of the final metric ``key`` over the seeds (runs of
    :meth:`~pixelweight.chapters.Setup.run` or :meth:`~pixelweight.chapters.Setup.committed_runs`, seeds in the same order)."""
    from ..stats import paired_difference_ci

    import math

    from ..stats import Interval

    for label in (a, b):
        if label not in runs:
            raise KeyError(f"no runs of {label!r}; there are {sorted(runs)}")
    values = [[r.metrics[key] for r in runs[label]] for label in (a, b)]
    undefined = [v for side in values for v in side if v is None or not math.isfinite(v)]
    if undefined:  # a metric not defined at this scale (records store NaN as null): not testable
        nan = float("nan")
        return Interval(nan, nan, nan, len(values[0]), 0.95)
    return paired_difference_ci(*values)


def experiments_effects(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> Dict[str, Any]:
    """The effects :func:`experiments_claims` judges, measured from ``runs`` of the six arms
    of the ``experiments`` stage (live, :meth:`~pixelweight.chapters.Setup.run`, or committed,
    :meth:`~pixelweight.chapters.Setup.committed_runs`; paired by seed, test split): a dict of
    its keyword arguments. β comes from the weights the recall-loss runs logged
    (:func:`beta_trajectory`)."""
    _check_setup(setup, "experiments")
    missing = [arm.label for arm in setup.arms if arm.label not in runs]
    if missing:
        raise KeyError(f"the experiments claims need runs of every arm; missing {missing}")
    ce_acc = [_finite_or_nan(r.metrics["test_mean_accuracy"]) for r in runs["CE"]]
    acc = paired_effect(runs, "recall (batch)", "CE", "test_mean_accuracy")
    beta = beta_trajectory(setup, runs)
    return dict(
        acc_gain=acc,
        acc_gain_ma=paired_effect(runs, "recall (moving average)", "CE", "test_mean_accuracy"),
        miou_change=paired_effect(runs, "recall (batch)", "CE", "test_miou"),
        inverse_acc_gain=paired_effect(runs, "inverse-frequency CE", "CE", "test_mean_accuracy"),
        inverse_prec_change=paired_effect(runs, "inverse-frequency CE", "CE", "test_mean_precision"),
        prec_vs_inverse=paired_effect(runs, "recall (batch)", "inverse-frequency CE", "test_mean_precision"),
        miou_vs_inverse=paired_effect(runs, "recall (batch)", "inverse-frequency CE", "test_miou"),
        beta_change=beta.change, beta_first=beta.first, beta_last=beta.last, first_step=beta.first_step,
        relative_gain=100 * acc.mean / (sum(ce_acc) / len(ce_acc)),
    )


def experiments_claims_from_runs(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> ClaimsTable:
    """:func:`experiments_claims` judged on ``runs`` (:func:`experiments_effects`): the claims
    function of ``02_experiments``, for its early runs and for the committed converged ones
    (``setup.show_converged(experiments_claims_from_runs)``, :func:`show_converged`), so that
    the converged verdicts replace the early ones on the landing page and the scorecard."""
    return experiments_claims(setup, **experiments_effects(setup, runs))


def converged_claims(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> ClaimsTable:
    """:func:`experiments_claims_from_runs` at the converged budget, from the committed
    ``full`` records (:meth:`~pixelweight.chapters.Setup.committed_runs` of the ``full``
    setup), labelled with the records' status (:func:`~pixelweight.chapters.converged_table`:
    how many runs reached the plateau, whether the library changed since the records were
    made)."""
    from ._base import converged_table

    _check_setup(setup, "experiments")
    if setup.profile.name != "full":
        raise ValueError(f"converged claims need the full setup, got profile {setup.profile.name!r}")
    return converged_table(experiments_claims_from_runs(setup, runs), runs, profile=setup.profile)


def show_converged(setup: Setup, results_dir=None) -> Dict[str, Any]:
    """The converged section of ``02_experiments`` in one call: reads the committed ``full``
    records of the six arms (``setup`` is the ``full`` setup), shows their claims table
    (:func:`experiments_claims_from_runs`) and records its verdicts in ``results_dir`` (after
    the early-training ones, which they replace), or says which arms have no converged record
    (:meth:`~pixelweight.chapters.Setup.show_converged`). Returns what the prose cites: the
    ``verdicts`` and ``effects`` by claim label and the records' status as text (``"—"``
    without records), the runs, β along training (``beta``, a :class:`BetaTrajectory`;
    ``None`` without records) and the :func:`learning_curve` frame (empty without records)."""
    _check_setup(setup, "experiments")
    result = setup.show_converged(experiments_claims_from_runs, results_dir)
    text = result.text()
    labels = ("(a)", "(b)", "(c)", "(c′)", "(d)")
    out = {"result": result, "plateau": text["plateau"], "seeds": text["seeds"], "hours": text["hours"]}
    if not result.available:
        return {**out, "runs": {}, "curve": learning_curve({}), "beta": None,
                "verdicts": dict.fromkeys(labels, "—"), "effects": dict.fromkeys(labels, "—")}
    return {**out, "runs": result.runs, "curve": learning_curve(result.runs),
            "beta": beta_trajectory(setup, result.runs),
            "verdicts": {k: text[f"verdict {k}"] for k in labels}, "effects": {k: text[f"effect {k}"] for k in labels}}


def learning_curve(runs: Mapping[str, Sequence[Any]], a: str = "recall (batch)", b: str = "CE",
                   key: str = "mean_accuracy"):
    """The paired difference ``a - b`` of the validation metric ``key`` at every evaluation
    of the runs' histories (``val_<key>``): a DataFrame of ``step``, ``mean``, ``low``,
    ``high`` (95% interval over seeds) and ``n`` (:func:`~pixelweight.chapters.history_curve`).
    Shows whether a difference measured early in training survives to the plateau."""
    from ._base import history_curve

    column = f"val_{key}"
    return history_curve(runs, lambda entry: entry.get(column), a, b)


def experiments_claims(
    setup: Setup,
    *,
    acc_gain: Interval,
    acc_gain_ma: Interval,
    miou_change: Interval,
    inverse_acc_gain: Interval,
    inverse_prec_change: Interval,
    prec_vs_inverse: Interval,
    miou_vs_inverse: Interval,
    beta_change: Interval,
    beta_first: Interval,
    beta_last: Interval,
    first_step: int,
    relative_gain: float,
) -> ClaimsTable:
    """The claims table of ``02_experiments``: claims (a), (b), (c), (c′) and (d).

    Every effect is a paired difference over seeds (an :class:`~pixelweight.stats.Interval`,
    test split):

    - ``acc_gain``, ``acc_gain_ma``: mean accuracy, recall (batch) and recall (moving
      average) minus CE; ``relative_gain``: ``acc_gain`` in percent of CE's mean accuracy;
    - ``miou_change``: mIoU, recall (batch) minus CE;
    - ``inverse_acc_gain``, ``inverse_prec_change``: mean accuracy and mean precision,
      inverse-frequency CE minus CE;
    - ``prec_vs_inverse``, ``miou_vs_inverse``: mean precision and mIoU, recall (batch)
      minus inverse-frequency CE;
    - ``beta_change``: the frequency exponent β of the recall (batch) weights over the last
      tenth of training minus at ``first_step``; ``beta_first``, ``beta_last``: the two β
      themselves (mean over seeds).

    How each claim is judged: (a) the effect above 0; (b) mIoU no more than
    :data:`MIOU_TOLERANCE` below CE; (c) composite, mean accuracy up **and** mean precision
    down; (c′) composite, precision and mIoU both above inverse-frequency CE; (d) the property
    the abstract states, composite: β within :data:`BETA_START_MARGIN` of 0 (CE) at
    ``first_step``, rising by more than :data:`BETA_MIN_RISE` (``beta_change``), and at the
    end no more than :data:`BETA_OVERSHOOT` above 1 (inverse frequency). Composite verdicts combine by
    :func:`pixelweight.stats.combine_verdicts`.
    """
    _check_setup(setup, "experiments")
    _check_intervals(acc_gain=acc_gain, acc_gain_ma=acc_gain_ma, miou_change=miou_change,
                     inverse_acc_gain=inverse_acc_gain, inverse_prec_change=inverse_prec_change,
                     prec_vs_inverse=prec_vs_inverse, miou_vs_inverse=miou_vs_inverse,
                     beta_change=beta_change, beta_first=beta_first, beta_last=beta_last)
    if isinstance(first_step, bool) or not isinstance(first_step, int) or first_step < 1:
        raise ValueError(f"first_step must be a positive int, got {first_step!r}")
    if isinstance(relative_gain, bool) or not isinstance(relative_gain, Real):
        raise TypeError(f"relative_gain must be a number (percent), got {type(relative_gain).__name__}")
    return setup.claims_table([
        _claim_a(acc_gain, (f"{relative_gain:+.0f}% relative" if math.isfinite(relative_gain) else "relative change "
                            f"undefined") + f"; moving average Δ = {acc_gain_ma.format(3)}"),
        _claim_b(miou_change),
        Claim("inverse-frequency CE gains recall but loses precision", source="abstract", label="(c)",
              ran="inverse-frequency CE vs CE, mean accuracy and mean precision",
              evidence=[Evidence("Δ mean acc.", inverse_acc_gain, direction=+1),
                        Evidence("Δ mean prec.", inverse_prec_change, direction=-1)]),
        Claim("recall loss keeps more precision and mIoU than inverse-frequency CE", source="ours", label="(c′)",
              ran="recall (batch) vs inverse-frequency CE, mean precision and mIoU",
              evidence=[Evidence("Δ mean prec.", prec_vs_inverse, direction=+1),
                        Evidence("Δ mIoU", miou_vs_inverse, direction=+1)]),
        _claim_d(beta_first, beta_last, beta_change, first_step),
    ])


def _claim_d(beta_first: Interval, beta_last: Interval, beta_change: Interval, first_step: int) -> Claim:
    return Claim("recall-loss weights move from CE toward inverse frequency", source="abstract", label="(d)",
                 ran=f"frequency exponent β of the recall (batch) weights (CE: 0, inverse frequency: 1): within "
                     f"±{BETA_START_MARGIN:g} of 0 at step {first_step}; over the last tenth of training higher by "
                     f"more than {BETA_MIN_RISE:g} and not past 1 + {BETA_OVERSHOOT:g}",
                 digits=2, detail=f"β {beta_first.format(2)} at step {first_step}, {beta_last.format(2)} at the end",
                 evidence=[Evidence(f"β at the start (not below −{BETA_START_MARGIN:g})", beta_first,
                                    tolerance=BETA_START_MARGIN),
                           Evidence(f"−β at the start (β not above {BETA_START_MARGIN:g})", _negated(beta_first),
                                    tolerance=BETA_START_MARGIN),
                           Evidence(f"Δβ, end − start (above {BETA_MIN_RISE:g})", beta_change, direction=+1,
                                    margin=BETA_MIN_RISE),
                           Evidence(f"1 − β at the end (β not above 1 + {BETA_OVERSHOOT:g})", _negated(beta_last, 1.0),
                                    tolerance=BETA_OVERSHOOT)])


@dataclasses.dataclass(frozen=True)
class BetaTrajectory:
    """Where the logged recall-loss weights sit between CE and inverse frequency along
    training (:func:`beta_trajectory`): ``frame`` (run, seed_index, step, beta), and for the
    run it was asked about, β at the first logged step (``first``, at ``first_step``), over
    the last tenth of the logged steps (``last``; both means over seeds) and the paired
    ``change`` last − first."""

    frame: Any
    first_step: int
    first: Interval
    last: Interval
    change: Interval


def beta_frame(runs: Mapping[str, Sequence[Any]], class_names: Sequence[str], frequencies: Sequence[float]):
    """The frequency exponent β (:func:`frequency_exponent`) of every logged weight vector of
    ``runs`` (:func:`weight_history_frame`): a DataFrame of run, seed_index, step, beta."""
    import pandas as pd

    weights = weight_history_frame(runs, class_names)
    if weights.empty:
        return pd.DataFrame([], columns=["run", "seed_index", "step", "beta"])
    wide = weights.pivot_table(index=["run", "seed_index", "step"], columns="class", values="weight")
    wide = wide[list(class_names)]
    return pd.DataFrame({"beta": [frequency_exponent(row, frequencies) for row in wide.to_numpy()]},
                        index=wide.index).reset_index()


def beta_trajectory(setup: Setup, runs: Mapping[str, Sequence[Any]], run: str = "recall (batch)") -> BetaTrajectory:
    """β along training for the recall-loss runs of ``runs`` (live, or committed records whose
    history logged ``class_weights``), with the class frequencies of ``setup``'s training
    split; summarised for ``run`` as claim (d) reads it."""
    from ..stats import mean_ci, paired_difference_ci

    _check_setup(setup, "experiments")
    chosen = {k: v for k, v in runs.items() if k in ("recall (batch)", "recall (moving average)")}
    if run not in chosen:
        raise ValueError(f"no runs of {run!r}; there are {sorted(runs)}")
    freq = setup.splits.train.class_pixel_frequencies()
    frame = beta_frame(chosen, setup.class_names, freq)
    group = frame[frame["run"] == run]
    if group.empty:
        raise ValueError(f"the runs of {run!r} logged no class weights")
    steps = sorted(group["step"].unique())
    first_step, last_steps = int(steps[0]), steps[int(0.9 * len(steps)):]
    first = group[group["step"] == first_step].groupby("seed_index")["beta"].mean()
    last = group[group["step"].isin(last_steps)].groupby("seed_index")["beta"].mean()
    if list(first.index) != list(last.index) or len(first) < 2:
        raise ValueError(f"β needs at least two seeds logged at the first and the last steps, got {len(first)}")
    return BetaTrajectory(frame, first_step, mean_ci(first.to_numpy()), mean_ci(last.to_numpy()),
                          paired_difference_ci(last.to_numpy(), first.to_numpy()))


def _negated(effect: Interval, offset: float = 0.0) -> Interval:
    """``offset - effect`` as an interval (its per-seed values too)."""
    return Interval(offset - effect.mean, offset - effect.high, offset - effect.low, effect.n, effect.confidence,
                    tuple(offset - v for v in effect.values))


def sweep_claims(setup: Setup, *, gains: Mapping[float, Interval], growth: Interval) -> ClaimsTable:
    """The claims table of ``03_imbalance_sweep``.

    ``gains``: ``{s: Interval}``, the paired mean-accuracy difference recall loss minus CE at
    each Zipf exponent ``s`` (increasing): claim (a) of ``02_experiments`` restated at each
    imbalance (shown, not recorded). ``growth``: the gain at the largest ``s`` minus the gain
    at the smallest, paired by seed: the book's derived expectation that the gain grows with
    the imbalance, judged by its sign.
    """
    _check_setup(setup, "sweep")
    if not isinstance(gains, Mapping) or len(gains) < 2:
        raise ValueError(f"gains must map at least two Zipf exponents to Intervals, got {gains!r}")
    exponents = list(gains)
    for s in exponents:
        if isinstance(s, bool) or not isinstance(s, Real) or not math.isfinite(s) or s < 0:
            raise ValueError(f"the keys of gains are Zipf exponents (finite, >= 0), got {s!r}")
    if exponents != sorted(exponents) or len(set(exponents)) != len(exponents):
        raise ValueError(f"the Zipf exponents of gains must increase, got {exponents}")
    _check_intervals(growth=growth, **{f"gains[{s:g}]": v for s, v in gains.items()})
    low, high = exponents[0], exponents[-1]
    return setup.claims_table([
        *[Claim(f"recall loss raises mean accuracy over CE, at s = {s:g}", source="abstract", label="(a)",
                ran=f"recall (batch) vs CE, mean accuracy (test), Zipf exponent s = {s:g}",
                evidence=Evidence("Δ mean acc.", gain, direction=+1),
                record=False)  # claim (a) of the experiments notebook, restated at each imbalance
          for s, gain in gains.items()],
        Claim("the recall-loss gain in mean accuracy grows with the class imbalance", source="derived",
              ran=f"gain at s = {high:g} minus gain at s = {low:g}, paired by seed",
              evidence=Evidence("Δ gain", growth, direction=+1)),
    ])


def sweep_effects(setup: Setup, runs: Mapping[Any, Sequence[Any]]) -> Dict[str, Any]:
    """The effects :func:`sweep_claims` judges, measured from ``runs`` of the ``sweep``
    stage keyed by ``(variant, arm label)`` (``runs[sweep_variant(s), "recall"]``; live or
    committed, the same seeds in the same order everywhere): ``gains`` ``{s: Interval}``, the
    paired mean-accuracy difference recall minus CE at every Zipf exponent of
    :data:`EXPONENTS`, and ``growth``, the gain at the largest ``s`` minus the gain at the
    smallest, paired by seed."""
    from ..stats import paired_difference_ci

    _check_setup(setup, "sweep")
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must map (variant, arm label) to runs, got {type(runs).__name__}")
    missing = [(sweep_variant(s), a.label) for s in EXPONENTS for a in setup.arms
               if (sweep_variant(s), a.label) not in runs]
    if missing:
        raise KeyError(f"the sweep claims need runs of every arm at every exponent; missing {missing}")
    from ._base import run_seed

    seeds = {key: [run_seed(r) for r in runs[key]] for key in runs}
    if len({tuple(v) for v in seeds.values()}) != 1 or None in next(iter(seeds.values())):
        raise ValueError(f"the sweep's runs must share their seeds, in order; got {seeds}")

    def gain_per_seed(s: float) -> list:
        v = sweep_variant(s)
        return [_finite_or_nan(r.metrics["test_mean_accuracy"]) - _finite_or_nan(c.metrics["test_mean_accuracy"])
                for r, c in zip(runs[v, "recall"], runs[v, "CE"])]

    gains = {s: paired_effect({"recall": runs[sweep_variant(s), "recall"], "CE": runs[sweep_variant(s), "CE"]},
                              "recall", "CE", "test_mean_accuracy") for s in EXPONENTS}
    high, low = gain_per_seed(EXPONENTS[-1]), gain_per_seed(EXPONENTS[0])
    if not all(math.isfinite(v) for v in high + low):  # a metric undefined at this scale: not testable
        nan = float("nan")
        return {"gains": gains, "growth": Interval(nan, nan, nan, len(high), 0.95)}
    return {"gains": gains, "growth": paired_difference_ci(high, low)}


def _finite_or_nan(value: Any) -> float:
    """A metric as a float, NaN where a record stores it as null (undefined)."""
    return float("nan") if value is None else float(value)


def sweep_claims_from_runs(setup: Setup, runs: Mapping[Any, Sequence[Any]]) -> ClaimsTable:
    """:func:`sweep_claims` judged on ``runs`` keyed by ``(variant, arm label)``
    (:func:`sweep_effects`): the claims function of ``03_imbalance_sweep``, for its early runs
    and for the committed converged ones (:func:`show_sweep_converged`)."""
    return sweep_claims(setup, **sweep_effects(setup, runs))


def show_sweep_converged(setup: Setup, results_dir=None):
    """The converged section of ``03_imbalance_sweep``: the sweep's claims judged on the
    committed ``full`` records of CE and recall loss at every Zipf exponent (``setup`` is the
    ``full`` sweep setup), shown and recorded in ``results_dir``, or a paragraph that says
    which records are missing. Returns the :class:`~pixelweight.chapters.Converged`."""
    _check_setup(setup, "sweep")
    return setup.show_converged(sweep_claims_from_runs, results_dir,
                                variants=[sweep_variant(s) for s in EXPONENTS])
