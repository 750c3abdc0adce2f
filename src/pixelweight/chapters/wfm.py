r"""Chapter 1, the Weighted F-measure as a training loss (``notebooks/01_wfm``): Margolin's
metric made a loss (``pixelweight.losses.wfm``), trained against BCE and the losses of
salient-object-detection practice (``pixelweight.losses.sod``) on ``SalientDigits``, and
how stably the metric ranks predictions when the ground truth is drawn carelessly.

Kolkin et al. (ICCV 2017) train with a differentiable approximation of the Weighted
F-measure :math:`F^w` of Margolin et al. (CVPR 2014). Their approximation is unknown here
(the paper's body was unavailable): the book's loss is the exact metric of the sigmoid
probabilities, whose non-smooth parts depend on the ground truth only. Its ground-truth
terms (distance transform, nearest-foreground index, importance weights) are computed
once per image by :class:`~pixelweight.data.WithWFMTerms` and reach the loss with the batch
through :class:`~pixelweight.train.AuxiliaryTargetsTask`, never per step.

Stages (``STAGES``):

- ``experiments`` (``02_experiments``): nine arms on ``SalientDigits`` (32 x 32): BCE, soft F
  (FLoss), F3Net's structure loss as published and as intended, BASNet's hybrid loss,
  :math:`F^w`, BCE + :math:`F^w` with the book's U-Net, and BCE and :math:`F^w` with a smaller
  U-Net (:data:`SMALL_MODEL`). ``ci``: 180 steps, 3 seeds; ``full``: 3,000 steps, 5 seeds, the
  plateau of the validation :math:`F^w` recorded.
- ``ranking`` (``03_ranking``): no training. A fixed set of predictions per test image
  (:data:`PREDICTORS`) is ranked by :math:`F^w`, by the F-measure and by the IoU against the
  clean ground truth and against sloppy versions of it (:data:`DEGRADATIONS`).

Claims (texts, sources, how each is judged) are written once, here:
:func:`experiments_claims` ((a), (b), (c), (e), from the runs, live or committed) and
:func:`ranking_claims` ((d)).
"""

from __future__ import annotations

import dataclasses
import math
from numbers import Real
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..claims import Claim, ClaimsTable, Evidence
from ..data import WithWFMTerms
from ..profiles import get_profile
from ..stats import Interval
from ..train import AuxiliaryTargetsTask
from ._base import Arm, Chapter, DataSpec, ModelSpec, Scale, Setup, Stage

__all__ = [
    "BOOK_MODEL",
    "CHAPTER",
    "COST_SCALES",
    "CostScale",
    "DATA",
    "DEGRADATIONS",
    "METRICS",
    "PEERS",
    "PLATEAU",
    "PREDICTORS",
    "RANKING_F_BETA2",
    "RANKING_CONTROLS",
    "RANKING_MEASURES",
    "SMALL_MODEL",
    "STAGES",
    "TOLERANCE",
    "cost_frames",
    "cost_summary",
    "count_parameters",
    "experiments_claims",
    "fp_mass_profile",
    "loss_cost_table",
    "metric_cost_table",
    "far_fp_share",
    "metric_frame",
    "paired_frame",
    "paired_effect",
    "predict",
    "predictor_maps",
    "rank_stability",
    "ranking_claims",
    "ranking_scores",
    "setup",
    "show_converged",
    "stability_effects",
    "stability_table",
    "tracking_hook",
    "wfm_term_maps",
]

# --------------------------------------------------------------------------------------
# The setup: data, models, budgets and arms
# --------------------------------------------------------------------------------------
#: The testbed: 32 x 32 ``SalientDigits``, a salient digit of 16-24 pixels among one to three
#: dimmer distractors (8-12 pixels, contrast 0.6) and four clutter fragments.
DATA = DataSpec("SalientDigits", size=32, options={"salient_size": (16, 24), "distractor_size": (8, 12)})
#: The book's U-Net (width 16, three down-sampling levels) ...
BOOK_MODEL = ModelSpec(width=16, depth=3)
#: ... and the smaller one of claim (c): half the width (a quarter of the weights).
SMALL_MODEL = ModelSpec(width=8, depth=3)

#: The plateau rule of the ``full`` runs: validation :math:`F^w` within 0.01 over the last
#: quarter of training (:func:`pixelweight.train.measure_plateau`).
PLATEAU = {"plateau_metric": "wfm", "plateau_window": 0.25, "plateau_tolerance": 0.01}

#: The test metrics of the chapter: key of the run's metrics, how the book names it, and
#: +1 when larger is better (-1 for MAE).
METRICS = {"test_wfm": ("Fʷ", +1), "test_mae": ("MAE", -1), "test_max_f": ("max F (β² = 0.3)", +1),
           "test_s_measure": ("S-measure", +1)}
#: Non-inferiority tolerance of claims (b) and (c), our reading of "match": a metric no worse
#: than the reference by more than this (in its own units; all four lie in [0, 1]).
TOLERANCE = 0.01

_SCALES = {
    "ci": Scale(
        get_profile("ci", steps=120, train_samples=600, val_samples=100, test_samples=200, eval_every=0),
        DATA, BOOK_MODEL, train={"log_every": 10},
    ),
    # converged on a CPU (the ci data and models, 17x longer), 5 seeds, plateau recorded
    "full": Scale(
        get_profile("full", steps=3000, batch_size=16, train_samples=2000, val_samples=200, test_samples=500,
                    eval_every=200),
        DATA, BOOK_MODEL, train={**PLATEAU, "log_every": 50},
    ),
}

ARMS = (
    Arm("BCE", "ce"),
    Arm("soft F (FLoss)", "floss"),
    Arm("structure (published)", "structure", {"form": "published"}, run="structure-published"),
    Arm("structure (intended)", "structure", {"form": "intended"}, run="structure-intended"),
    Arm("hybrid (BASNet)", "hybrid"),
    Arm("Fʷ", "wfm"),
    Arm("BCE + Fʷ", "bce-wfm"),
    Arm("BCE, small U-Net", "ce", run="ce-small", model=SMALL_MODEL),
    Arm("Fʷ, small U-Net", "wfm", run="wfm-small", model=SMALL_MODEL),
)
#: The salient-object-detection losses claim (e) compares the :math:`F^w` loss with.
PEERS = ("soft F (FLoss)", "structure (published)", "structure (intended)", "hybrid (BASNet)")

_RANKING_SCALES = {
    name: Scale(get_profile(name, train_samples=1, val_samples=1, test_samples=n, steps=1), DATA, BOOK_MODEL)
    for name, n in (("ci", 200), ("full", 1000))
}

STAGES = {
    "experiments": Stage(
        "experiments", "BCE, the SOD losses and the Weighted F-measure loss on SalientDigits; two model sizes",
        scales=_SCALES, arms=ARMS, prefix="ch1", num_classes=1,
        task=AuxiliaryTargetsTask(), dataset_wrapper=WithWFMTerms,  # Fʷ terms once per image
    ),
    "ranking": Stage(
        "ranking", "rank fixed predictions by Fʷ, F and IoU against clean and sloppy ground truth (no training)",
        scales=_RANKING_SCALES, num_classes=1,
    ),
}

CHAPTER = Chapter("01_wfm", "The Weighted F-measure as a training loss", STAGES)
setup = CHAPTER.setup


@dataclasses.dataclass(frozen=True)
class CostScale:
    """The size of the derivation notebook's cost measurement at one profile.

    Attributes
    ----------
    loss_shapes: ``(N, H, W)`` batches of logits on which each loss runs forward + backward
        against ``F.binary_cross_entropy_with_logits`` (:func:`~pixelweight.benchmark.benchmark_foreground`).
    loss_repeats: timed rounds per loss and shape.
    metric_shape: ``(N, H, W)`` maps the exact metric scores against PySODMetrics
        (:func:`~pixelweight.benchmark.benchmark_metric`).
    metric_repeats: timed rounds of the metric.
    threads: CPU thread counts the metric is timed at (the losses at one thread).
    """

    loss_shapes: Tuple[Tuple[int, int, int], ...]
    loss_repeats: int
    metric_shape: Tuple[int, int, int]
    metric_repeats: int
    threads: Tuple[int, ...] = (1, 2)


#: :class:`CostScale` per profile: the issue's sizes (16 x 64 x 64 and 8 x 256 x 256 logits; 64
#: maps of 256 x 256), more rounds at ``full``.
COST_SCALES = {
    "ci": CostScale(((16, 64, 64), (8, 256, 256)), loss_repeats=7, metric_shape=(64, 256, 256), metric_repeats=3),
    "full": CostScale(((16, 64, 64), (8, 256, 256)), loss_repeats=25, metric_shape=(64, 256, 256), metric_repeats=9),
}


def cost_frames(profile: str):
    """Measure the losses against BCE and the metric against PySODMetrics at ``profile``'s
    :class:`CostScale`, on the CPU: ``(losses, metric)``, the frames of
    :func:`~pixelweight.benchmark.benchmark_foreground` (one thread) and
    :func:`~pixelweight.benchmark.benchmark_metric` (one frame over the scale's ``threads``)."""
    import pandas as pd

    from ..benchmark import benchmark_foreground, benchmark_metric

    if profile not in COST_SCALES:
        raise ValueError(f"unknown profile {profile!r}; choose one of {sorted(COST_SCALES)}")
    scale = COST_SCALES[profile]
    losses = benchmark_foreground(scale.loss_shapes, repeats=scale.loss_repeats, num_threads=1)
    metric = pd.concat([benchmark_metric(scale.metric_shape, repeats=scale.metric_repeats, num_threads=t)
                        for t in scale.threads], ignore_index=True)
    return losses, metric


def _quartiles(mid: float, lo: float, hi: float, suffix: str = "×") -> str:
    return f"{mid:.2f}{suffix} [{lo:.2f}, {hi:.2f}]"


def loss_cost_table(losses):
    """The losses' cost for a page: one row per loss, one column per batch shape, each cell the
    median time over BCE's with its quartiles over rounds; the target and whether it is met."""
    import pandas as pd

    from ..benchmark import FOREGROUND_REFERENCE, FOREGROUND_TARGETS

    required = {"loss", "shape", "ratio", "ratio_q25", "ratio_q75"}
    if not isinstance(losses, pd.DataFrame) or not required <= set(losses.columns):
        raise ValueError(f"losses must be benchmark_foreground's frame (columns {sorted(required)})")
    shapes = list(dict.fromkeys(losses["shape"]))
    rows = []
    for name in dict.fromkeys(losses["loss"]):
        if name == FOREGROUND_REFERENCE:
            continue
        row = {"loss (forward + backward)": name}
        meets = []
        for shape in shapes:
            hit = losses[(losses["loss"] == name) & (losses["shape"] == shape)]
            if hit.empty:
                row[f"× BCE, {shape}"] = "—"
                continue
            r = hit.iloc[0]
            row[f"× BCE, {shape}"] = _quartiles(r["ratio"], r["ratio_q25"], r["ratio_q75"])
            meets.append(bool(r["ratio"] <= FOREGROUND_TARGETS[name]) if name in FOREGROUND_TARGETS else None)
        target = FOREGROUND_TARGETS.get(name)
        row["target"] = f"≤ {target:g}×" if target is not None else "—"
        row["met"] = "—" if target is None else ("yes" if all(meets) else "no")
        rows.append(row)
    return pd.DataFrame(rows)


def metric_cost_table(metric):
    """The exact metric's cost for a page: one row per call and thread count, its time, how
    many times as fast as PySODMetrics it is (the reference's time over ours; quartiles over
    rounds) and the target, with whether it is met."""
    import pandas as pd

    from ..benchmark import METRIC_REFERENCE, METRIC_TARGETS

    required = {"call", "threads", "median_ms", "ratio", "ratio_q25", "ratio_q75", "max_abs_diff"}
    if not isinstance(metric, pd.DataFrame) or not required <= set(metric.columns):
        raise ValueError(f"metric must be benchmark_metric's frame (columns {sorted(required)})")
    rows = []
    for _, r in metric.iterrows():
        reference = r["call"] == METRIC_REFERENCE
        target = METRIC_TARGETS.get(r["call"])
        rows.append({
            "call": "PySODMetrics (reference)" if reference else r["call"],
            "threads": int(r["threads"]),
            "time": f"{r['median_ms']:.3g} ms",
            "× as fast as PySODMetrics": "1×" if reference else
            _quartiles(1 / r["ratio"], 1 / r["ratio_q75"], 1 / r["ratio_q25"]),
            "target": "—" if target is None else
            f"≥ {1 / target:g}×: " + ("met" if r["ratio"] <= target else "missed"),
        })
    return pd.DataFrame(rows)


def cost_summary(losses, metric) -> Dict[str, str]:
    """The numbers the derivation notebook's prose cites from :func:`cost_frames`' frames, as
    text to glue: the cached-terms loss's range of ratios to BCE and whether its target is
    met; at the most threads measured, the metric's speed-ups over PySODMetrics end to end and
    with cached terms, whether their targets are met, the share of the end-to-end time the
    ground-truth terms take; the largest difference from PySODMetrics' values."""
    from ..benchmark import FOREGROUND_TARGETS, METRIC_TARGETS

    loss_cost_table(losses), metric_cost_table(metric)  # both frames checked
    name = "weighted_fmeasure_loss(terms)"
    fw = losses[losses["loss"] == name]["ratio"]
    threads = int(metric["threads"].max())
    by_call = metric[metric["threads"] == threads].set_index("call")
    speedups = {call: 1 / float(by_call.loc[call, "ratio"]) for call in METRIC_TARGETS}
    met = [float(by_call.loc[call, "ratio"]) <= bound for call, bound in METRIC_TARGETS.items()]
    return {
        "loss_ratio_range": f"{fw.min():.1f}–{fw.max():.1f}",
        "loss_met": "met" if bool((fw <= FOREGROUND_TARGETS[name]).all()) else "missed",
        "cost_threads": str(threads),
        "metric_speedup": f"{speedups['weighted_fmeasure']:.1f}",
        "metric_speedup_terms": f"{speedups['weighted_fmeasure(terms)']:.1f}",
        "metric_met": "both met" if all(met) else "one met" if any(met) else "both missed",
        "metric_diff": f"{float(metric['max_abs_diff'].max()):.0e}",
        "terms_share": f"{float(by_call.loc['wfm_gt_terms', 'median_ms'] / by_call.loc['weighted_fmeasure', 'median_ms']):.0%}",
    }


def count_parameters(model: ModelSpec, num_classes: int = 1) -> int:
    """The number of trainable weights of ``model`` (a :class:`~pixelweight.chapters.ModelSpec`)."""
    if not isinstance(model, ModelSpec):
        raise TypeError(f"model must be a ModelSpec, got {type(model).__name__}")
    return sum(p.numel() for p in model.build(num_classes).parameters() if p.requires_grad)


# --------------------------------------------------------------------------------------
# Claims (a), (b), (c), (e): from the runs of the experiments stage
# --------------------------------------------------------------------------------------
def _check_setup(setup: Setup, stage: str) -> None:
    from ._base import check_stage

    check_stage(setup, CHAPTER.folder, stage)


def _seed(run: Any) -> Optional[int]:
    """The training seed of a run: a committed run's ``seed``, a live one's record's."""
    seed = getattr(run, "seed", None)
    if seed is None:
        seed = getattr(getattr(run, "record", None), "seed", None)
    return seed


def paired_effect(runs: Mapping[str, Sequence[Any]], a: str, b: str, key: str, sign: int = +1) -> Interval:
    """``sign`` x the paired difference ``a - b`` of the final metric ``key`` over the seeds
    (runs of :meth:`~pixelweight.chapters.Setup.run` or committed ones, seeds in the same
    order); ``sign=-1`` for a metric where lower is better (MAE), so that a positive effect
    always means "``a`` is better". NaN (not testable) when a value is undefined."""
    from ..stats import paired_difference_ci

    if sign not in (1, -1) or isinstance(sign, bool):
        raise ValueError(f"sign must be +1 or -1, got {sign!r}")
    for label in (a, b):
        if label not in runs:
            raise KeyError(f"no runs of {label!r}; there are {sorted(runs)}")
        if len(runs[label]) < 2:
            raise ValueError(f"a paired interval needs at least two seeds; {label!r} has {len(runs[label])}")
    seeds = [[_seed(r) for r in runs[label]] for label in (a, b)]
    if seeds[0] != seeds[1]:
        raise ValueError(f"the runs of {a!r} and {b!r} must share their seeds, in order; got {seeds}")
    values = []
    for label in (a, b):
        side = []
        for r in runs[label]:
            if key not in r.metrics:
                raise KeyError(f"a run of {label!r} has no metric {key!r}; it has {sorted(r.metrics)}")
            v = r.metrics[key]
            side.append(math.nan if v is None else float(v))
        values.append(side)
    if any(not math.isfinite(v) for side in values for v in side):
        nan = math.nan
        return Interval(nan, nan, nan, len(values[0]), 0.95)
    return paired_difference_ci([sign * v for v in values[0]], [sign * v for v in values[1]])


def _non_inferior(runs, a: str, b: str, keys: Sequence[str]) -> List[Evidence]:
    out = []
    for key in keys:
        name, sign = METRICS[key]
        what = f"−Δ {name}" if sign < 0 else f"Δ {name}"
        out.append(Evidence(what, paired_effect(runs, a, b, key, sign), tolerance=TOLERANCE))
    return out


def experiments_claims(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> ClaimsTable:
    r"""The claims table of ``02_experiments``, judged on ``runs`` (``{arm label: [run per
    seed]}``, live or committed, paired by seed; test split):

    - (a) **primary** [abstract]: the :math:`F^w` loss raises the test :math:`F^w` over BCE
      (direction +1); the detail gives BCE + :math:`F^w` against BCE too.
    - (b) [abstract]: on the traditional metrics (MAE, max F with :math:`\beta^2 = 0.3`,
      S-measure) the :math:`F^w` loss matches or beats BCE: each no worse by more than
      :data:`TOLERANCE` (non-inferiority), combined by
      :func:`pixelweight.stats.combine_verdicts`.
    - (c) [abstract]: the smaller U-Net (:data:`SMALL_MODEL`) trained with :math:`F^w` holds
      up against the book's U-Net trained with BCE: non-inferior on all four metrics.
    - (e) [ours]: the :math:`F^w` loss scores a higher test :math:`F^w` than each loss of
      :data:`PEERS` (composite, direction +1 each).
    """
    _check_setup(setup, "experiments")
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must map arm labels to runs, got {type(runs).__name__}")
    a = paired_effect(runs, "Fʷ", "BCE", "test_wfm")
    a_mix = paired_effect(runs, "BCE + Fʷ", "BCE", "test_wfm")
    traditional = ("test_mae", "test_max_f", "test_s_measure")
    small, book = SMALL_MODEL.describe(), setup.model.describe()
    tol = f"tolerance {TOLERANCE:g}"
    return setup.claims_table([
        Claim("training on Fʷ raises the evaluation Fʷ over BCE", source="abstract", label="(a)", primary=True,
              ran=f"Fʷ loss vs BCE, test Fʷ (β² = 1), {book}",
              detail=f"BCE + Fʷ vs BCE: Δ Fʷ = {a_mix.format(3)}",
              evidence=Evidence("Δ Fʷ", a, direction=+1)),
        Claim("on MAE, max F and S-measure, Fʷ training matches or beats BCE", source="abstract", label="(b)",
              ran=f"Fʷ loss vs BCE, {book}, test MAE, max F (β² = 0.3) and S-measure, each non-inferior ({tol})",
              evidence=_non_inferior(runs, "Fʷ", "BCE", traditional)),
        Claim("a smaller model trained on Fʷ holds up against the book's model trained with BCE",
              source="abstract", label="(c)",
              ran=f"Fʷ loss on a {small} ({count_parameters(SMALL_MODEL):,} weights) vs BCE on the {book} "
                  f"({count_parameters(setup.model):,}), test Fʷ, MAE, max F, S-measure, each non-inferior ({tol})",
              evidence=_non_inferior(runs, "Fʷ, small U-Net", "BCE", ("test_wfm",) + traditional)),
        Claim("training on Fʷ scores a higher Fʷ than each SOD loss", source="ours", label="(e)",
              ran=f"Fʷ loss vs soft F, structure (published, intended) and hybrid, test Fʷ, {book}",
              evidence=[Evidence(f"Δ Fʷ vs {p}", paired_effect(runs, "Fʷ", p, "test_wfm"), direction=+1)
                        for p in PEERS]),
    ])


def show_converged(setup: Setup, results_dir=None) -> Dict[str, Any]:
    """The converged section of ``02_experiments``: :func:`experiments_claims` judged on the
    committed ``full`` records (``setup`` is the ``full`` setup) and recorded in
    ``results_dir`` after the early-training verdicts, which they replace; without records, the
    paragraph that says so (:meth:`~pixelweight.chapters.Setup.show_converged`). Returns what the
    prose cites: ``verdict (a)``, ``effect (a)``, ... as text ("—" without records), ``plateau``,
    ``seeds``, ``hours``, ``stale`` and the ``result``."""
    _check_setup(setup, "experiments")
    result = setup.show_converged(experiments_claims, results_dir)
    text = result.text()
    out = {f"{kind} {label}": text.get(f"{kind} {label}", "—")
           for kind in ("verdict", "effect") for label in ("(a)", "(b)", "(c)", "(e)")}
    out.update({k: text[k] for k in ("plateau", "seeds", "hours", "stale")}, result=result)
    return out


# --------------------------------------------------------------------------------------
# Frames for the tables and figures of the experiments
# --------------------------------------------------------------------------------------
def metric_frame(runs: Mapping[str, Sequence[Any]], keys: Sequence[str] = tuple(METRICS)):
    """A tidy DataFrame: ``arm``, ``seed`` and one column per metric of ``keys``."""
    import pandas as pd

    rows = []
    for label, rs in runs.items():
        for r in rs:
            row = {"arm": label, "seed": _seed(r)}
            for key in keys:
                if key not in r.metrics:
                    raise KeyError(f"a run of {label!r} has no metric {key!r}")
                row[key] = r.metrics[key]
            rows.append(row)
    return pd.DataFrame(rows, columns=["arm", "seed", *keys])


def paired_frame(runs: Mapping[str, Sequence[Any]], reference: str = "BCE", keys: Sequence[str] = tuple(METRICS)):
    """For each arm but ``reference``: the paired difference to it of each metric, oriented so
    that positive is better (MAE negated), as ``mean [low, high]`` text (a table's cells), and
    the number of seeds."""
    import pandas as pd

    if reference not in runs:
        raise KeyError(f"no runs of {reference!r}; there are {sorted(runs)}")
    rows = []
    for label in runs:
        if label == reference:
            continue
        row = {"arm": label}
        for key in keys:
            name, sign = METRICS.get(key, (key, +1))
            row[f"{'−' if sign < 0 else ''}Δ {name}"] = paired_effect(runs, label, reference, key, sign).format(3)
        rows.append(row)
    return pd.DataFrame(rows)


@torch.no_grad()
def predict(model: torch.nn.Module, dataset: Any, batch_size: int = 64, device: Any = None) -> torch.Tensor:
    """Foreground probabilities :math:`\\sigma(z)` of ``model`` on every image of ``dataset``
    (items ``(image, target)``), ``(N, H, W)`` float32 on the CPU; the model is put in
    evaluation mode (and back)."""
    from torch.utils.data import DataLoader

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    device = next(model.parameters()).device if device is None else torch.device(device)
    was_training = model.training
    model.eval()
    out = []
    try:
        for images, _ in DataLoader(dataset, batch_size=batch_size, shuffle=False):
            logits = model(images.to(device))
            if logits.ndim != 4 or logits.shape[1] != 1:
                raise ValueError(f"predict needs binary logits (N, 1, H, W), got {tuple(logits.shape)}")
            out.append(torch.sigmoid(logits.float())[:, 0].cpu())
    finally:
        model.train(was_training)
    return torch.cat(out)


def _masks(masks) -> torch.Tensor:
    m = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks)
    if m.ndim != 3:
        raise ValueError(f"masks must be (N, H, W), got shape {tuple(m.shape)}")
    if m.dtype != torch.bool:
        if not bool(((m == 0) | (m == 1)).all()):
            raise ValueError("masks must hold only 0 and 1")
        m = m == 1
    return m


def _probs(probs, shape) -> torch.Tensor:
    p = torch.as_tensor(probs, dtype=torch.float64)
    if tuple(p.shape) != tuple(shape):
        raise ValueError(f"probs must have the masks' shape {tuple(shape)}, got {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or float(p.min()) < 0 or float(p.max()) > 1:
        raise ValueError("probs must be finite probabilities in [0, 1]")
    return p


#: The distance bins of the false-positive profile, in pixels from the object.
FP_BINS = (0.0, 1.5, 3.0, 5.0, 8.0, 12.0, 20.0, math.inf)


def fp_mass_profile(probs, masks, bins: Sequence[float] = FP_BINS):
    r"""Where a prediction's false-positive mass lies: for each bin of the distance
    :math:`\Delta` to the nearest object pixel (Euclidean, pixels; the :math:`\Delta` of
    :func:`~pixelweight.metrics.wfm_gt_terms`), the mean predicted probability of the
    background pixels in it (``fp_per_pixel``), the bin's share of all the background's
    probability mass (``share``) and its pixel count. :math:`F^w` weighs a false positive by
    :math:`B = 2 - e^{\alpha\Delta}` (``importance``, at the bin's mean distance). Images
    without foreground are left out (their :math:`\Delta` is infinite).

    Parameters
    ----------
    probs : tensor or array
        ``(N, H, W)`` probabilities in [0, 1].
    masks : tensor or array
        ``(N, H, W)`` binary ground truth.
    bins : sequence of float
        Increasing bin edges (the last may be ``inf``), starting at 0.

    Returns
    -------
    pandas.DataFrame
        ``low``, ``high``, ``distance`` (mean :math:`\Delta` in the bin), ``pixels``,
        ``fp_per_pixel``, ``share``, ``importance``.
    """
    import pandas as pd

    from ..metrics import wfm_gt_terms

    g = _masks(masks)
    p = _probs(probs, g.shape)
    edges = [float(b) for b in bins]
    if len(edges) < 2 or edges[0] != 0 or any(b <= a for a, b in zip(edges, edges[1:])):
        raise ValueError(f"bins must increase from 0, got {bins!r}")
    keep = g.flatten(1).any(1)
    if not bool(keep.any()):
        raise ValueError("no image has foreground: the distance to the object is undefined")
    g, p = g[keep], p[keep]
    terms = wfm_gt_terms(g)
    bg = ~g
    dist, mass = terms.distance[bg], p[bg]
    total = float(mass.sum())
    rows = []
    alpha = math.log(0.5) / 5
    for low, high in zip(edges, edges[1:]):
        inside = (dist > low) & (dist <= high) if low > 0 else dist <= high
        n = int(inside.sum())
        d = float(dist[inside].mean()) if n else math.nan
        rows.append({"low": low, "high": high, "distance": d, "pixels": n,
                     "fp_per_pixel": float(mass[inside].mean()) if n else math.nan,
                     "share": float(mass[inside].sum()) / total if total > 0 else math.nan,
                     "importance": 2 - math.exp(alpha * d) if n else math.nan})
    return pd.DataFrame(rows)


def far_fp_share(probs, masks, distance: float = 5.0) -> float:
    """The share of a prediction's background probability mass lying more than ``distance``
    pixels from the object (where :math:`F^w` weighs a false positive more than 1.5)."""
    if isinstance(distance, bool) or not isinstance(distance, Real) or not distance > 0:
        raise ValueError(f"distance must be a positive number, got {distance!r}")
    frame = fp_mass_profile(probs, masks, bins=(0.0, float(distance), math.inf))
    return float(frame["share"].iloc[1])


# --------------------------------------------------------------------------------------
# The derivation: the metric's terms as pictures, and the loss along training
# --------------------------------------------------------------------------------------
def wfm_term_maps(pred, gt, beta2: float = 1.0) -> Dict[str, Any]:
    r"""Every intermediate map of :math:`F^w_\beta` for one image, for pictures: ``E``
    (:math:`|G - D|`), ``E_tilde`` (:math:`E_{\nu(i)}`), ``E_A`` (the 7x7 blur), ``E_min``
    (:math:`\min(E, E_A)` on :math:`G`, :math:`E` elsewhere), ``B`` (importance), ``E_w``
    (:math:`E' \circ B`), ``distance`` (:math:`\Delta`), as ``(H, W)`` numpy arrays, and the
    numbers ``tp_w``, ``fp_w``, ``recall``, ``precision`` and ``fw`` (equal to
    :func:`pixelweight.metrics.weighted_fmeasure`, checked by the tests).

    Parameters
    ----------
    pred : tensor or array
        ``(H, W)`` probabilities :math:`D` in [0, 1].
    gt : tensor or array
        ``(H, W)`` binary ground truth with at least one foreground pixel.
    """
    import torch.nn.functional as F

    from ..metrics import wfm_gt_terms
    from ..metrics.foreground import EPS

    g = _masks(torch.as_tensor(np.asarray(gt))[None])[0]
    d = _probs(pred, g.shape)
    if not bool(g.any()):
        raise ValueError("gt has no foreground pixel: F^w is 0 by convention and its terms are undefined")
    beta2 = float(beta2)
    if not (math.isfinite(beta2) and beta2 >= 0):
        raise ValueError(f"beta2 must be finite and >= 0, got {beta2!r}")
    h, w = g.shape
    terms = wfm_gt_terms(g[None])
    err = torch.where(g, 1 - d, d)
    err_t = err.flatten()[terms.nearest[0].flatten()].reshape(h, w)
    u = torch.arange(-3, 4, dtype=torch.float64)
    k = torch.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * 5.0 ** 2))
    k = (k / k.sum()).reshape(1, 1, 7, 7)
    err_a = F.conv2d(err_t[None, None], k, padding=3)[0, 0]
    err_min = torch.where(g & (err_a < err), err_a, err)
    weight = terms.weight[0]
    err_w = err_min * weight
    fg = float(g.sum())
    tp_w = fg - float(err_w[g].sum())
    fp_w = float(err_w[~g].sum())
    recall = 1 - float(err_w[g].sum()) / fg
    precision = tp_w / (tp_w + fp_w + EPS)
    fw = (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)
    maps = {"E": err, "E_tilde": err_t, "E_A": err_a, "E_min": err_min, "B": weight, "E_w": err_w,
            "distance": terms.distance[0]}
    out: Dict[str, Any] = {k: v.numpy() for k, v in maps.items()}
    out.update(tp_w=tp_w, fp_w=fp_w, recall=recall, precision=precision, fw=fw)
    return out


def tracking_hook(images: torch.Tensor, masks: torch.Tensor, smoothing: float = 0.1) -> Callable:
    r"""An ``on_log`` hook (:func:`pixelweight.train.train`) that follows, on a fixed probe
    set of ``images`` and ``masks``, what the loss optimises and what is evaluated: the mean
    :math:`F^w` of the sigmoid maps (``probe_fw``, exactly 1 minus the loss), of the maps
    binarised at 0.5 (``probe_fw_binary``, the metric on hard predictions), the smoothed-minimum
    variant of the loss (``probe_smooth_fw``, 1 minus it, with ``smoothing``) and soft F
    (``probe_soft_f``, :math:`\beta^2 = 0.3`, 1 minus FLoss), each added to the history entry."""
    from ..losses import soft_fmeasure_loss, weighted_fmeasure_loss
    from ..metrics import weighted_fmeasure, wfm_gt_terms

    if not isinstance(images, torch.Tensor) or images.ndim != 4:
        raise ValueError("images must be an (N, C, H, W) tensor")
    g = _masks(masks)
    if g.shape[0] != images.shape[0] or tuple(g.shape[1:]) != tuple(images.shape[-2:]):
        raise ValueError(f"masks {tuple(g.shape)} do not fit images {tuple(images.shape)}")
    smoothing = float(smoothing)
    if not (math.isfinite(smoothing) and smoothing > 0):
        raise ValueError(f"smoothing must be a positive number, got {smoothing!r}")
    terms = wfm_gt_terms(g, dtype=torch.float32)
    target = g.long()

    @torch.no_grad()
    def hook(step: int, model: torch.nn.Module, loss_fn: Any) -> Dict[str, float]:
        was_training = model.training
        model.eval()
        try:
            device = next(model.parameters()).device
            logits = model(images.to(device)).float().cpu()
        finally:
            model.train(was_training)
        probs = torch.sigmoid(logits[:, 0])
        return {
            "probe_fw": float(weighted_fmeasure(probs, g, terms=terms).mean()),
            "probe_fw_binary": float(weighted_fmeasure((probs >= 0.5).float(), g, terms=terms).mean()),
            "probe_smooth_fw": 1 - float(weighted_fmeasure_loss(logits, target, smoothing=smoothing, terms=terms)),
            "probe_soft_f": 1 - float(soft_fmeasure_loss(logits, target)),
        }

    return hook


# --------------------------------------------------------------------------------------
# Ranking stability under sloppy ground truth, claim (d)
# --------------------------------------------------------------------------------------
#: The sloppy annotators of claim (d): :func:`pixelweight.data.degrade_mask` kind and
#: strength (pixels): grown by 2, shrunk by 1, boundary moved by up to 2, redrawn as a polygon
#: of tolerance 1.5.
DEGRADATIONS = {"dilate": 2.0, "erode": 1.0, "jitter": 2.0, "polygon": 1.5}

#: The fixed set of predictions ranked per image, each made from the image and its clean
#: ground truth :math:`G` with a strength drawn per image (seeded), covering the errors of
#: salient-object detectors: a soft boundary, over- and under-segmentation, a false-positive
#: blob near or far from the object, a missing part, the distractors detected too, and two
#: bottom-up maps of the image's ink.
PREDICTORS = ("soft boundary", "grown", "shrunk", "near false positive", "far false positive",
              "missing part", "distractors too", "image ink", "blurred ink")

#: The measures claim (d) compares: :math:`F^w` (β² = 1) of the soft map, and the F-measure
#: (β² = :data:`RANKING_F_BETA2`, salient-object practice) and the IoU of the map binarised
#: at 0.5. (With β² = 1 the F-measure is :math:`2\,IoU / (1 + IoU)`, which ranks exactly as
#: the IoU does.)
RANKING_MEASURES = ("Fʷ", "F", "IoU")
#: The :math:`\beta^2` of the F-measure claim (d) ranks with (0.3, salient-object practice).
RANKING_F_BETA2 = 0.3
#: A control, shown beside them and not judged: :math:`F^w` of the map binarised at 0.5, which
#: reads what F and IoU read, so that its stability is that of the weights, not of the soft map.
RANKING_CONTROLS = ("Fʷ at 0.5",)


def _blob(shape, center, radius) -> np.ndarray:
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    return (yy - center[0]) ** 2 + (xx - center[1]) ** 2 <= radius ** 2


def predictor_maps(images, masks, seed: int = 0) -> np.ndarray:
    """The :data:`PREDICTORS` maps of every image: ``(N, K, H, W)`` float32 in [0, 1].

    ``images`` ``(N, 1, H, W)`` or ``(N, H, W)`` in [0, 1], ``masks`` ``(N, H, W)`` binary,
    each image with foreground. Deterministic for ``seed``."""
    from scipy import ndimage

    g_all = _masks(masks).numpy()
    x_all = np.asarray(images.numpy() if isinstance(images, torch.Tensor) else images, dtype=np.float64)
    if x_all.ndim == 4 and x_all.shape[1] == 1:
        x_all = x_all[:, 0]
    if x_all.shape != g_all.shape:
        raise ValueError(f"images {x_all.shape} and masks {g_all.shape} must describe the same (N, H, W)")
    if not g_all.reshape(len(g_all), -1).any(1).all():
        raise ValueError("every mask needs foreground (the predictors are made from it)")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    rng = np.random.default_rng(seed)
    n, h, w = g_all.shape
    out = np.empty((n, len(PREDICTORS), h, w), dtype=np.float32)
    for i in range(n):
        g, x = g_all[i], x_all[i]
        inside = ndimage.distance_transform_edt(g)
        outside = ndimage.distance_transform_edt(~g)
        ys, xs = np.nonzero(g)
        soft = ndimage.gaussian_filter(g.astype(float), rng.uniform(0.7, 2.0))
        grown = (outside <= rng.uniform(1.0, 3.0)).astype(float)
        shrunk = (inside > rng.uniform(1.0, 1.5)).astype(float)  # at least the boundary goes
        near_ring = np.argwhere((outside > 2) & (outside <= 5))
        far_ring = np.argwhere(outside >= 10)
        near = g.astype(float)
        if len(near_ring):
            near = np.maximum(near, _blob(g.shape, near_ring[rng.integers(len(near_ring))], rng.uniform(1.5, 3.0)))
        far = g.astype(float)
        if len(far_ring):
            far = np.maximum(far, _blob(g.shape, far_ring[rng.integers(len(far_ring))], rng.uniform(1.5, 3.0)))
        k = rng.integers(len(ys))
        missing = g & ~_blob(g.shape, (ys[k], xs[k]), rng.uniform(3.0, 6.0))
        distractors = np.maximum(g, x >= 0.45).astype(float)  # every bright stroke
        ink = np.clip(x, 0, 1)
        blurred = np.clip(ndimage.gaussian_filter(x, rng.uniform(0.7, 1.5)), 0, 1)
        maps = (soft, grown, shrunk, near, far, missing.astype(float), distractors, ink, blurred)
        for j, m in enumerate(maps):
            # a detector's confidence: softened by a random contrast, plus a little noise
            c = rng.uniform(0.7, 1.0)
            noisy = c * m + (1 - c) * 0.5 * (1 - m) + rng.normal(0, 0.03, size=m.shape)
            out[i, j] = np.clip(noisy, 0, 1)
    return out


def ranking_scores(preds, masks) -> Dict[str, np.ndarray]:
    """The scores of every prediction: ``{measure: (N, K)}`` for :data:`RANKING_MEASURES` and
    :data:`RANKING_CONTROLS`,
    ``preds`` ``(N, K, H, W)`` in [0, 1] against ``masks`` ``(N, H, W)`` (each with
    foreground). :math:`F^w` (β² = 1) of the soft maps; F (β² = 0.3) and IoU of the maps at
    0.5 (an empty prediction and an empty mask overlap perfectly: 1)."""
    from ..metrics import weighted_fmeasure, wfm_gt_terms

    g = _masks(masks)
    p = torch.as_tensor(np.asarray(preds), dtype=torch.float64)
    if p.ndim != 4 or p.shape[0] != g.shape[0] or tuple(p.shape[-2:]) != tuple(g.shape[-2:]):
        raise ValueError(f"preds must be (N, K, H, W) for masks {tuple(g.shape)}, got {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or float(p.min()) < 0 or float(p.max()) > 1:
        raise ValueError("preds must be finite probabilities in [0, 1]")
    n, k, h, w = p.shape
    terms = wfm_gt_terms(g)
    rep = type(terms)(*(t.repeat_interleave(k, dim=0) for t in terms))
    flat = p.reshape(n * k, h, w)
    fw = weighted_fmeasure(flat, rep.gt, terms=rep).reshape(n, k)
    hard = flat >= 0.5
    gt = rep.gt
    tp = (hard & gt).flatten(1).sum(1).double()
    fp = (hard & ~gt).flatten(1).sum(1).double()
    fn = (~hard & gt).flatten(1).sum(1).double()
    b2 = RANKING_F_BETA2  # F_β = (1 + β²) TP / ((1 + β²) TP + β² FN + FP)
    f = torch.where(tp + fp + fn > 0, (1 + b2) * tp / ((1 + b2) * tp + b2 * fn + fp).clamp_min(1e-12),
                    torch.ones_like(tp))
    iou = torch.where(tp + fp + fn > 0, tp / (tp + fp + fn).clamp_min(1), torch.ones_like(tp))
    fw_hard = weighted_fmeasure(hard.double(), rep.gt, terms=rep).reshape(n, k)
    return {"Fʷ": fw.numpy(), "F": f.reshape(n, k).numpy(), "IoU": iou.reshape(n, k).numpy(),
            "Fʷ at 0.5": fw_hard.numpy()}


def _kendall(a: np.ndarray, b: np.ndarray) -> float:
    from scipy.stats import kendalltau

    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return math.nan  # a ranking without any order: undefined
    return float(kendalltau(a, b).statistic)


def rank_stability(preds, clean, degraded: Mapping[str, Any]):
    r"""How far each measure's ranking of the predictions of an image moves when its ground
    truth is drawn sloppily: Kendall's :math:`\tau_b` between the scores against the clean
    mask and against each degraded one, per image.

    Parameters
    ----------
    preds : array
        ``(N, K, H, W)`` predictions in [0, 1] (:func:`predictor_maps`).
    clean : array
        ``(N, H, W)`` clean masks.
    degraded : mapping
        ``{kind: (N, H, W) masks}``, e.g. from ``SalientDigits.sloppy_masks``.

    Returns
    -------
    pandas.DataFrame
        ``kind``, ``image``, ``measure``, ``tau`` (NaN where a measure gives every prediction
        the same score, or a degraded mask lost all its foreground).
    """
    import pandas as pd

    if not isinstance(degraded, Mapping) or not degraded:
        raise ValueError("degraded must map at least one degradation kind to its masks")
    clean_scores = ranking_scores(preds, clean)
    g = _masks(clean)
    rows = []
    for kind, masks in degraded.items():
        d = _masks(masks)
        if d.shape != g.shape:
            raise ValueError(f"the {kind!r} masks have shape {tuple(d.shape)}, the clean ones {tuple(g.shape)}")
        has = d.flatten(1).any(1).numpy()
        if not has.any():
            raise ValueError(f"every {kind!r} mask is empty")
        scores = ranking_scores(np.asarray(preds)[has], d[has])
        index = np.nonzero(has)[0]
        for measure in RANKING_MEASURES + RANKING_CONTROLS:
            taus = np.full(len(g), math.nan)
            for j, i in enumerate(index):
                taus[i] = _kendall(clean_scores[measure][i], scores[measure][j])
            rows += [{"kind": kind, "image": i, "measure": measure, "tau": t} for i, t in enumerate(taus)]
    return pd.DataFrame(rows, columns=["kind", "image", "measure", "tau"])


def _over_images(values: np.ndarray) -> Interval:
    """A mean over images with its t-interval, without per-value text ("k of n seeds" would
    misname images as seeds)."""
    from ..stats import mean_ci

    return dataclasses.replace(mean_ci(values), values=())


def stability_effects(stability) -> Dict[Tuple[str, str], Interval]:
    """From :func:`rank_stability`: per degradation kind and baseline measure (F, IoU), the
    paired difference over images :math:`\\tau_{F^w} - \\tau_{\\text{baseline}}` (on the images
    where every measure's :math:`\\tau` is defined), as ``{(kind, baseline): Interval}``."""
    import pandas as pd

    if not isinstance(stability, pd.DataFrame) or not {"kind", "image", "measure", "tau"} <= set(stability.columns):
        raise ValueError("stability must be the DataFrame of rank_stability")
    wide = stability.pivot_table(index=["kind", "image"], columns="measure", values="tau", dropna=False)
    wide = wide[[m for m in RANKING_MEASURES if m in wide.columns]]  # the controls are not judged
    if list(wide.columns) != list(RANKING_MEASURES):
        raise ValueError(f"stability must hold the measures {RANKING_MEASURES}, got {list(wide.columns)}")
    out = {}
    for kind in dict.fromkeys(stability["kind"]):
        rows = wide.loc[kind].dropna()
        if len(rows) < 2:
            nan = math.nan
            for base in RANKING_MEASURES[1:]:
                out[(kind, base)] = Interval(nan, nan, nan, len(rows), 0.95)
            continue
        for base in RANKING_MEASURES[1:]:
            out[(kind, base)] = _over_images((rows["Fʷ"] - rows[base]).to_numpy())
    return out


def stability_table(stability):
    """Mean :math:`\\tau` [95% interval over images] per degradation kind (rows) and measure
    (columns; the controls last), as text cells, and the number of images where all are defined."""
    import pandas as pd

    wide = stability.pivot_table(index=["kind", "image"], columns="measure", values="tau", dropna=False)
    measures = [m for m in RANKING_MEASURES + RANKING_CONTROLS if m in wide.columns]
    rows = []
    for kind in dict.fromkeys(stability["kind"]):
        sub = wide.loc[kind][measures].dropna()
        row = {"sloppy annotator": f"{kind} ({DEGRADATIONS.get(kind, '?')} px)"}
        for m in measures:
            row[f"τ of {m}"] = _over_images(sub[m].to_numpy()).format(3) if len(sub) >= 2 else "—"
        row["images"] = len(sub)
        rows.append(row)
    return pd.DataFrame(rows)


def ranking_claims(setup: Setup, stability) -> ClaimsTable:
    r"""Claim (d) [Margolin]: :math:`F^w` ranks predictions more stably under sloppy ground
    truth than the F-measure and the IoU. Judged on :func:`rank_stability` of ``setup``'s test
    images: for each sloppy annotator of :data:`DEGRADATIONS` and each baseline, the paired
    difference over images of Kendall's :math:`\tau` (clean vs sloppy ranking),
    :math:`\tau_{F^w} - \tau_{\text{baseline}}`, must be above 0; the parts combine by
    :func:`pixelweight.stats.combine_verdicts`. The interval is over images, not seeds: no
    network is trained."""
    _check_setup(setup, "ranking")
    effects = stability_effects(stability)
    n_images = int(stability["image"].nunique())
    kinds = ", ".join(f"{k} {v:g} px" for k, v in DEGRADATIONS.items() if any(key[0] == k for key in effects))
    budget = f"`{setup.profile.name}`: no training; {n_images} test images, {len(PREDICTORS)} fixed predictions each"
    scope = f"{budget}, {setup.scale_text().split(',')[0]}"
    claim = Claim(
        "Fʷ ranks predictions more stably under sloppy ground truth than F and IoU (Margolin et al.)",
        source="paper, unverified",
        label="(d)", digits=3,
        ran=f"Kendall τ between the rankings of {len(PREDICTORS)} predictions per image against clean and sloppy "
            f"ground truth ({kinds}); Fʷ (soft map) vs F (β² = 0.3) and IoU (map at 0.5), paired over images",
        evidence=[Evidence(f"Δτ vs {base}, {kind}", effect, direction=+1) for (kind, base), effect in effects.items()])
    return ClaimsTable(CHAPTER.folder, [claim], budget=budget, scope=scope, scale=setup.scale_text().split(",")[0])
