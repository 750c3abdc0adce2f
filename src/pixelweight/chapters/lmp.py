r"""Chapter 4, loss max-pooling (``notebooks/04_lmp``): its stages, where the LMP weight goes
on an image, the limits of the closed form checked on a trained model's losses, what LMP
costs next to CE, and the chapter's claims.

Stages (``STAGES``):

- ``maps`` (``01_derivation``): one U-Net trained with CE for a short while, whose pixel
  losses the derivation weights;
- ``headline`` (``02_experiments``): CE against LMP at the public implementation's defaults
  (:data:`P_DEFAULT`, :data:`RATIO_DEFAULT`, one problem per batch) on chapter 0's data;
- ``grid`` (``03_grid``): the grid :data:`GRID_PS` x :data:`GRID_RATIOS` (``p = 1`` is
  top-:math:`k` mining; ``ratio = 1`` is CE and reuses the CE runs) and focal loss; in
  ``ci`` on smaller scenes with a narrower U-Net, so that 12 configurations x 3 seeds fit
  the book's CPU build.

Every arm is a registered loss (:mod:`pixelweight.losses.registry`): ``ce``, ``focal``
(``gamma``) and ``lmp`` (``p``, ``ratio``, ``per_image``). Runs are named
``ch4-<stage>-<arm>``, e.g. ``ch4-headline-lmp`` or ``ch4-grid-lmp-p1.7-r0.3``.

Claims: :func:`headline_claims` (``02_experiments``) and :func:`grid_claims` (``03_grid``)
build the chapter's claims tables from the effects a notebook measured; the claim texts,
their sources and how each is judged are written here once.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

from ..claims import Check, Claim, ClaimsTable, Evidence
from ..profiles import get_profile
from ..stats import Interval, paired_difference_ci
from ._base import PLATEAU, Arm, Chapter, DataSpec, ModelSpec, Scale, Setup, Stage

__all__ = [
    "CHAPTER",
    "STAGES",
    "setup",
    "P_DEFAULT",
    "RATIO_DEFAULT",
    "GRID_PS",
    "GRID_RATIOS",
    "FOCAL_GAMMA",
    "RARE_MIN",
    "LIMIT_TOLERANCE",
    "EQUIVALENCE_MARGIN",
    "grid_label",
    "grid_cell",
    "grid_candidates",
    "GridEffects",
    "grid_effects",
    "weight_share_frame",
    "top_m_mean",
    "lmp_limit_frame",
    "lmp_path_frame",
    "limit_checks",
    "limit_table",
    "lmp_benchmark",
    "rare_classes_learned",
    "HeadlineEffects",
    "HEADLINE_METRICS",
    "BOUNDARY_WIDTH",
    "boundary_accuracy",
    "boundary_effect",
    "rare_and_frequent",
    "headline_effects",
    "headline_claims",
    "headline_claims_from_runs",
    "grid_claims",
    "grid_frames",
    "grid_claims_from_runs",
]

#: The public implementation's defaults [code: bes-dev/mpl.pytorch]: the one LMP setting of
#: the headline comparison, fixed before any run.
P_DEFAULT, RATIO_DEFAULT = 1.7, 0.3
#: The grid over ``p`` (1: top-k mining; 100: "infinity-like", CE in all but name) ...
GRID_PS: Tuple[float, ...] = (1.0, 1.1, 1.3, 1.7, 100.0)
#: ... and over the ratio (1: CE exactly, so the grid's ``ratio = 1`` column is the CE runs).
GRID_RATIOS: Tuple[float, ...] = (0.1, 0.3, 1.0)
#: Focal loss's exponent in the grid's comparison.
FOCAL_GAMMA = 2.0
#: A rare-class comparison is testable only if one of the two runs learns the rare classes:
#: a mean rare-class IoU of at least this much.
RARE_MIN = 0.02
#: The limits of the closed form hold when no image's relative difference exceeds this.
LIMIT_TOLERANCE = 1e-3
#: "p -> infinity trains like CE": mIoU within this margin, both ways.
EQUIVALENCE_MARGIN = 0.02

#: Chapter 0's scenes: 64 x 64, two to five digits, a Zipf class law with exponent 1.
SCENES = DataSpec("DigitScenes", size=64, options={"imbalance": 1.0})
#: The grid's ``ci`` scenes: 32 x 32 with one to three smaller digits.
SMALL_SCENES = DataSpec("DigitScenes", size=32,
                        options={"imbalance": 1.0, "num_digits": (1, 3), "digit_size": (12, 24)})


def grid_label(p: float, ratio: float) -> str:
    """The book's label of an LMP grid cell, e.g. ``"p=1.7, ρ=0.3"``."""
    return f"p={p:g}, ρ={ratio:g}"


def grid_cell(p: float, ratio: float) -> str:
    """The arm label that holds the grid cell ``(p, ratio)``: ``"CE"`` for ``ratio = 1``
    (LMP with ratio 1 is CE exactly), else :func:`grid_label`."""
    return "CE" if ratio == 1.0 else grid_label(p, ratio)


def grid_candidates() -> List[str]:
    """The cells among which the best is chosen on validation: ``p <= 1.7`` and ``ratio < 1``
    (``p = 100`` is the grid's CE control, ``ratio = 1`` is CE)."""
    return [grid_label(p, r) for r in GRID_RATIOS[:-1] for p in GRID_PS if p <= P_DEFAULT]


def _grid_arms() -> Tuple[Arm, ...]:
    arms = [Arm("CE", "ce")]
    for ratio in GRID_RATIOS[:-1]:
        for p in GRID_PS:
            arms.append(Arm(grid_label(p, ratio), "lmp", {"p": p, "ratio": ratio, "per_image": False},
                            run=f"lmp-p{p:g}-r{ratio:g}"))
    arms.append(Arm("focal", "focal", {"gamma": FOCAL_GAMMA}))
    return tuple(arms)


#: The converged (``full``) budget of the 64 x 64 stages, sized for a CPU: 5 seeds, 3,000 steps,
#: validation every 200 steps for the plateau rule.
_FULL_64 = get_profile("full", steps=3000, batch_size=16, lr=4e-3, train_samples=1200, val_samples=200,
                       test_samples=400, eval_every=200)

STAGES = {
    "maps": Stage(
        "maps", "the pixel losses of a U-Net trained with CE for a short while, which the derivation weights",
        scales={
            "ci": Scale(get_profile("ci", seeds=(0,), steps=200, lr=4e-3, eval_every=0), SCENES,
                        ModelSpec(width=16, depth=3)),
            "full": Scale(dataclasses.replace(_FULL_64, seeds=(0,)), SCENES,
                          ModelSpec(width=16, depth=3), train=PLATEAU),
        },
        arms=(Arm("CE", "ce"),), prefix="ch4-maps",
    ),
    "headline": Stage(
        "headline", "CE against LMP at the public defaults on chapter 0's long tail",
        scales={
            "ci": Scale(get_profile("ci", steps=140, lr=4e-3, eval_every=0), SCENES, ModelSpec(width=16, depth=3)),
            "full": Scale(_FULL_64, SCENES, ModelSpec(width=16, depth=3), train=PLATEAU),
        },
        arms=(Arm("CE", "ce"),
              Arm("LMP", "lmp", {"p": P_DEFAULT, "ratio": RATIO_DEFAULT, "per_image": False})),
        prefix="ch4-headline",
    ),
    "grid": Stage(
        "grid", "LMP over the grid of p and ratio, with top-k mining (p = 1), CE and focal loss",
        scales={
            "ci": Scale(get_profile("ci", steps=120, lr=6e-3, eval_every=0), SMALL_SCENES,
                        ModelSpec(width=8, depth=3)),
            # 4,000 steps: at 2,000 only 17 of 60 runs reached the plateau, the validation mIoU of
            # the others still rising by 0.01-0.04 over the last quarter
            "full": Scale(get_profile("full", steps=4000, batch_size=16, lr=6e-3, train_samples=1200,
                                      val_samples=200, test_samples=400, eval_every=250),
                          SMALL_SCENES, ModelSpec(width=8, depth=3), train=PLATEAU),
        },
        arms=_grid_arms(), prefix="ch4-grid",
    ),
}

CHAPTER = Chapter("04_lmp", "Loss max-pooling", STAGES)
setup = CHAPTER.setup


# --------------------------------------------------------------------------------------
# where the weight goes, and the limits of the closed form on real losses
# --------------------------------------------------------------------------------------
def weight_share_frame(weights, target, class_names: Sequence[str], boundary=None, valid=None):
    """Where the weight goes: per class (and boundary / interior pixels), its share of the
    pixels, its share of the weight, and the ratio of the two (1 = as uniform weighting).

    ``weights``: non-negative ``(N, H, W)`` (e.g. :func:`~pixelweight.losses.lmp_weights`);
    ``target``: ``(N, H, W)`` labels in ``[0, len(class_names))``; ``boundary``: optional bool
    mask (:func:`~pixelweight.metrics.boundary_mask`); ``valid``: optional bool mask of the
    pixels that count. Returns a DataFrame with ``group``, ``pixel_share``, ``weight_share``,
    ``enrichment``.
    """
    import pandas as pd
    import torch

    from .._validation import check_label_range, check_tensor

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

    from .._validation import check_tensor

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


def lmp_limit_frame(losses, valid=None, p: float = P_DEFAULT, ratio: float = RATIO_DEFAULT,
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

    from ..losses import lmp_pool

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


def lmp_path_frame(losses, ps: Sequence[float], ratio: float = RATIO_DEFAULT, valid=None):
    """LMP of each image along a path of ``p`` values at a fixed ``ratio``, with its two limits:
    a DataFrame of ``p``, ``image``, ``lmp``, ``mean`` (p -> inf) and ``top_m_mean`` (p -> 1)."""
    import pandas as pd
    import torch

    from ..losses import lmp_pool

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


def limit_checks(limits, tolerance: float = LIMIT_TOLERANCE) -> List[Check]:
    """One :class:`~pixelweight.claims.Check` per limit of :func:`lmp_limit_frame`: the largest
    absolute relative difference over the images against ``tolerance``. The limits are
    identities of the method, checked deterministically, not claims judged over seeds."""
    _check_limits(limits)
    tolerance = float(tolerance)
    return [Check(f"LMP limit: {name}", f"the CE of a trained model, {len(sub)} images",
                  float(sub["relative_difference"].abs().max()), tolerance)
            for name, sub in limits.groupby("limit", sort=False)]


def limit_table(limits, tolerance: float = LIMIT_TOLERANCE):
    """The limits as the chapter shows them: per limit, the images, the largest relative
    difference and whether it is within ``tolerance`` (:func:`limit_checks`)."""
    import pandas as pd

    checks = limit_checks(limits, tolerance)
    rows = []
    for check, (name, sub) in zip(checks, limits.groupby("limit", sort=False)):
        rows.append({"limit": name, "images": len(sub),
                     "largest relative difference": f"{check.max_error:.1e}",
                     f"within {tolerance:g}": "passes" if check.passed else "fails"})
    return pd.DataFrame(rows)


def _check_limits(limits) -> None:
    import pandas as pd

    if not isinstance(limits, pd.DataFrame) or not {"limit", "relative_difference"} <= set(limits.columns):
        raise ValueError("limits must be a DataFrame of lmp_limit_frame (columns limit, relative_difference)")
    if len(limits) == 0:
        raise ValueError("limits holds no row")


# --------------------------------------------------------------------------------------
# what it costs
# --------------------------------------------------------------------------------------
def lmp_benchmark(
    shape: Sequence[int] = (8, 19, 512, 1024),
    *,
    p: float = P_DEFAULT,
    ratio: float = RATIO_DEFAULT,
    device: str = "cpu",
    repeats: int = 5,
    warmup: int = 1,
    seed: int = 0,
    steady_memory: bool = False,
):
    """What loss max-pooling costs next to plain CE, on random ``(N, C, H, W)`` logits.

    Two measurements, each as a ratio to CE taken within rounds whose order rotates:

    * ``forward+backward`` (:func:`pixelweight.benchmark.benchmark_losses`): CE, LMP over the
      batch, LMP per image, top-k (``p = 1``);
    * ``forward`` (:func:`pixelweight.benchmark.benchmark_calls`): the per-pixel CE map, and
      :func:`~pixelweight.losses.lmp_weights` on that map (``N x H x W`` pixel losses) alone.

    ``steady_memory`` is :func:`~pixelweight.benchmark.benchmark_losses`' (CPU: time the
    losses, not the kernel's page faults; it lasts for the rest of the process).

    Returns a DataFrame with ``pass``, ``what``, ``median_ms``, ``ratio`` (median over rounds
    of the time over CE's in the same round and pass), ``ratio_q25``, ``ratio_q75`` (its
    quartiles: the spread a reader should expect on a rerun), ``shape``, ``device``,
    ``threads``, ``steady_memory``.
    """
    import pandas as pd
    import torch

    from .._validation import check_int
    from ..benchmark import benchmark_calls, benchmark_losses
    from ..losses import cross_entropy, lmp_weights, loss_max_pooling
    from ..train import resolve_device

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
    fwd = benchmark_calls(calls, repeats=repeats, warmup=warmup, device=dev)
    fwd = fwd[["call", "median_ms", "ratio", "ratio_q25", "ratio_q75"]].rename(columns={"call": "what"})
    fwd.insert(0, "pass", "forward")
    out = pd.concat([frame, fwd], ignore_index=True)
    out["shape"] = "x".join(map(str, shape))
    out["device"] = str(dev)
    out["threads"] = torch.get_num_threads()
    out["steady_memory"] = bool(both["steady_memory"].iloc[0])
    return out


# --------------------------------------------------------------------------------------
# the grid's comparisons
# --------------------------------------------------------------------------------------
def _values(frame, label: str, key: str):
    sub = frame[frame.run == label].sort_values("seed")
    if not len(sub):
        raise ValueError(f"no run labelled {label!r} in the frame; it has {sorted(set(frame.run))}")
    return sub[key].to_numpy()


@dataclasses.dataclass(frozen=True)
class GridEffects:
    """The grid's paired comparisons (mIoU on the test split unless said), from :func:`grid_effects`.

    ``best``: the candidate cell (:func:`grid_candidates`) with the best validation mIoU;
    ``default``, ``best_vs_ce``: the public default and that cell against CE; ``rare``: the
    default against CE on the rare-class IoU, with ``rare_iou`` the two runs' mean rare-class
    IoU; ``topk``: ``p = 1.7`` against ``p = 1`` (top-k mining) per ratio; ``infinity``:
    ``p = 100, ratio = 0.3`` against CE; ``focal``: the default against focal loss.
    """

    best: str
    candidates: Tuple[str, ...]
    default: Interval
    best_vs_ce: Interval
    rare: Interval
    rare_iou: Mapping[str, float]
    topk: Mapping[float, Interval]
    infinity: Interval
    focal: Interval


def grid_effects(test, val) -> GridEffects:
    """The grid's comparisons from the per-seed frames of the test and validation splits
    (:func:`~pixelweight.chapters.group_metric_frame` with a ``"rare"`` group, runs labelled
    as the grid stage's arms). The best cell is chosen on validation and scored on test, so
    that the maximum of many noisy cells does not pass for a gain."""
    candidates = tuple(grid_candidates())
    best = max(candidates, key=lambda label: _values(val, label, "miou").mean())

    def diff(a, b, key="miou"):
        return paired_difference_ci(_values(test, a, key), _values(test, b, key))

    default = grid_label(P_DEFAULT, RATIO_DEFAULT)
    return GridEffects(
        best=best, candidates=candidates,
        default=diff(default, "CE"), best_vs_ce=diff(best, "CE"),
        rare=diff(default, "CE", "rare_iou"),
        rare_iou={label: float(_values(test, label, "rare_iou").mean()) for label in (default, "CE")},
        topk={r: diff(grid_label(P_DEFAULT, r), grid_label(1.0, r)) for r in GRID_RATIOS[:-1]},
        infinity=diff(grid_label(100.0, RATIO_DEFAULT), "CE"),
        focal=diff(default, "focal"),
    )


# --------------------------------------------------------------------------------------
# the claims
# --------------------------------------------------------------------------------------
def rare_classes_learned(rare_iou: Mapping[str, float]) -> bool:
    """Whether a rare-class comparison is testable: one of the runs' mean rare-class IoU is at
    least :data:`RARE_MIN`."""
    values = [float(v) for v in dict(rare_iou).values()]
    if not values:
        raise ValueError("rare_iou needs the mean rare-class IoU of at least one run")
    return max(values) >= RARE_MIN


def _rare_claim(text: str, ran: str, effect: Interval, rare_iou: Mapping[str, float], **kw) -> Claim:
    """A rare-class claim: judged on ``effect`` when a run learns the rare classes at all
    (:func:`rare_classes_learned`), else "not testable at this scale"."""
    if rare_classes_learned(rare_iou):
        return Claim(text, source="abstract", ran=ran, evidence=Evidence("Δ rare IoU", effect, direction=+1), **kw)
    return Claim(text, source="abstract", ran=ran, effect=effect, verdict="not testable at this scale", **kw)


def _reversed(effect: Interval) -> Interval:
    """The paired difference the other way round (b - a for a - b)."""
    return Interval(-effect.mean, -effect.high, -effect.low, effect.n, effect.confidence,
                    tuple(-v for v in effect.values))


@dataclasses.dataclass(frozen=True)
class HeadlineEffects:
    """The headline comparison measured on runs (:func:`headline_effects`): ``frame``, the
    per-seed test metrics of each loss (:func:`~pixelweight.chapters.group_metric_frame`
    with the ``rare`` and ``frequent`` groups); ``rare`` and ``frequent``, the class indices
    of the five rarest and the five most frequent digits of the training split; ``diffs``,
    the paired differences LMP − CE of :data:`HEADLINE_METRICS`; ``rare_iou``, the mean
    rare-class IoU of each loss."""

    frame: object
    rare: Tuple[int, ...]
    frequent: Tuple[int, ...]
    diffs: Mapping[str, Interval]
    rare_iou: Mapping[str, float]


#: The headline comparison's metrics (test split), by their column in ``HeadlineEffects.frame``.
HEADLINE_METRICS = {"miou": "mIoU", "mean_accuracy": "mean accuracy", "rare_iou": "rare-class IoU",
                    "rare_recall": "rare-class recall", "frequent_iou": "frequent-class IoU"}


def rare_and_frequent(setup: Setup) -> Tuple[Tuple[int, ...], Tuple[int, ...]]:
    """The five rarest and the five most frequent digit classes of ``setup``'s training split
    (class indices, most frequent first)."""
    import numpy as np

    freq = setup.splits.train.class_pixel_frequencies()
    order = [int(c) for c in np.argsort(-freq[1:], kind="stable") + 1]  # digits, most frequent first
    half = len(order) // 2
    return tuple(order[-half:]), tuple(order[:half])


def headline_effects(setup: Setup, runs: Mapping[str, Sequence[object]]) -> HeadlineEffects:
    """The headline comparison on ``runs`` (``{"CE": [...], "LMP": [...]}``, live runs of
    :meth:`~pixelweight.chapters.Setup.run` or committed ones, seeds in the same order)."""
    from ._base import group_metric_frame

    _check_stage(setup, "headline")
    missing = sorted({"CE", "LMP"} - set(runs))
    if missing:
        raise ValueError(f"the headline comparison needs runs of {missing}; got {sorted(runs)}")
    rare, frequent = rare_and_frequent(setup)
    frame = group_metric_frame({k: runs[k] for k in ("CE", "LMP")}, {"rare": rare, "frequent": frequent})
    ce, ours = (frame[frame.run == k].sort_values("seed") for k in ("CE", "LMP"))
    if list(ce["seed"]) != list(ours["seed"]):
        raise ValueError(f"CE and LMP runs must share their seeds, got {list(ce['seed'])} and {list(ours['seed'])}")
    diffs = {key: paired_difference_ci(ours[key].to_numpy(), ce[key].to_numpy()) for key in HEADLINE_METRICS}
    return HeadlineEffects(frame, rare, frequent, diffs,
                           {"CE": float(ce["rare_iou"].mean()), "LMP": float(ours["rare_iou"].mean())})


def _check_stage(setup: Setup, stage: str) -> None:
    from ._base import check_stage

    check_stage(setup, CHAPTER.folder, stage)


#: The intra-class claim's hard pixels, our reading: pixels within this many pixels of a label
#: change (:func:`~pixelweight.metrics.boundary_mask`), where 01_derivation shows LMP's weight goes.
BOUNDARY_WIDTH = 1


def boundary_accuracy(model, dataset, width: int = BOUNDARY_WIDTH, batch_size: int = 64,
                      device: str = "cpu") -> float:
    """The pixel accuracy of ``model`` on the object boundaries of ``dataset`` (pixels within
    ``width`` of a label change, :func:`~pixelweight.metrics.boundary_mask`): the hard pixels
    *within* a class, for the abstract's intra-class claim. ``dataset`` yields ``(image,
    labels)`` pairs; the model is evaluated in ``eval`` mode without gradients."""
    import torch

    from ..metrics import boundary_mask

    if not isinstance(model, torch.nn.Module):
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if len(dataset) == 0:
        raise ValueError("dataset is empty")
    was_training = model.training
    model.eval()
    correct = total = 0
    try:
        with torch.no_grad():
            for start in range(0, len(dataset), batch_size):
                items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
                images = torch.stack([x for x, _ in items]).to(device)
                labels = torch.stack([y for _, y in items]).to(device)
                logits = model(images)
                if not bool(torch.isfinite(logits).all()):
                    raise ValueError("the model's logits are not finite")
                mask = boundary_mask(labels, width=width)
                correct += int((logits.argmax(1)[mask] == labels[mask]).sum())
                total += int(mask.sum())
    finally:
        model.train(was_training)
    if total == 0:
        raise ValueError("the dataset has no boundary pixels")
    return correct / total


def boundary_effect(setup: Setup, runs: Mapping[str, Sequence[object]]) -> Optional[Interval]:
    """The paired difference LMP − CE of :func:`boundary_accuracy` on the test split, or
    ``None`` when a run keeps no model (committed records): the intra-class claim is then
    judged on the runs that do."""
    _check_stage(setup, "headline")
    models = {label: [getattr(r, "model", None) for r in runs[label]] for label in ("CE", "LMP")}
    if any(m is None for ms in models.values() for m in ms):
        return None
    values = {label: [boundary_accuracy(m, setup.splits.test) for m in ms] for label, ms in models.items()}
    return paired_difference_ci(values["LMP"], values["CE"])


def headline_claims(setup: Setup, diffs: Mapping[str, Interval], rare_iou: Mapping[str, float],
                    limits=None, boundary: Optional[Interval] = None) -> ClaimsTable:
    """The claims of ``02_experiments``.

    ``diffs``: the paired differences LMP - CE (test) of ``"miou"``, ``"rare_iou"`` (the five
    rarest digits) and ``"mean_accuracy"``; ``rare_iou``: ``{"CE": ..., "LMP": ...}``, the mean
    rare-class IoU of each loss (the rare-class claim is testable only when one learns them,
    :func:`rare_classes_learned`); ``limits``: :func:`lmp_limit_frame` on a trained model's
    losses (each limit must hold within :data:`LIMIT_TOLERANCE`), shown as the table's
    numerical checks, not as a claim (``None``: no checks, e.g. for committed runs, which
    keep no model); ``boundary``: :func:`boundary_effect`, the paired difference of the
    accuracy on object boundaries, which judges the abstract's intra-class claim (our
    reading of its "hard pixels"; ``None``: the row is left out, e.g. for committed runs).

    The abstract names no metric: judging "improves" by mIoU is our reading (the paper's
    tables report IoU). The mIoU claim is the paper's headline (primary).
    """
    missing = sorted({"miou", "rare_iou", "mean_accuracy"} - set(diffs))
    if missing:
        raise ValueError(f"diffs lacks {missing}")
    if "CE" not in rare_iou:
        raise ValueError("rare_iou needs the CE run's mean rare-class IoU under 'CE'")
    options = setup.arm("LMP").options
    checks = []
    if limits is not None:
        _check_limits(limits)
        checks = limit_checks(limits)
    if boundary is not None and not isinstance(boundary, Interval):
        raise TypeError(f"boundary must be an Interval (boundary_effect) or None, got {type(boundary).__name__}")
    return setup.claims_table(checks=checks, claims=[
        Claim("LMP improves mIoU over CE", source="abstract", primary=True,
              ran=f"CE vs LMP (p = {options['p']}, ρ = {options['ratio']}), {diffs['miou'].n} paired seeds, "
                  "mIoU (test; the abstract names no metric: mIoU is our reading)",
              evidence=Evidence("Δ mIoU", diffs["miou"], direction=+1)),
        _rare_claim("LMP improves rare-class IoU over CE", "same runs; IoU of the 5 rarest digits",
                    diffs["rare_iou"], rare_iou, detail=f"CE {float(rare_iou['CE']):.3f}"),
        Claim("LMP raises mean class recall over CE", source="ours",
              ran="same runs; mean accuracy (test)",
              evidence=Evidence("Δ mean acc.", diffs["mean_accuracy"], direction=+1)),
    ] + ([] if boundary is None else [
        Claim("LMP handles intra-class imbalance (hard pixels within a class)", source="abstract",
              ran=f"same runs; pixel accuracy on object boundaries (within {BOUNDARY_WIDTH} px of a label change, "
                  "test): our reading of the hard pixels",
              evidence=Evidence("Δ boundary acc.", boundary, direction=+1)),
    ]))


def headline_claims_from_runs(setup: Setup, runs: Mapping[str, Sequence[object]], limits=None) -> ClaimsTable:
    """:func:`headline_claims` judged on ``runs`` (:func:`headline_effects`, and
    :func:`boundary_effect` when the runs keep their models): the claims function of the
    page's runs and of its converged section (``setup.show_converged(headline_claims_from_runs)``)."""
    effects = headline_effects(setup, runs)
    return headline_claims(setup, effects.diffs, effects.rare_iou, limits, boundary=boundary_effect(setup, runs))


def grid_claims(setup: Setup, effects: GridEffects) -> ClaimsTable:
    """The claims of ``03_grid``, from its comparisons (:func:`grid_effects`). The comparison
    with focal loss is the book's and is shown, not recorded (the LMP paper claims nothing
    about focal loss)."""
    if not isinstance(effects, GridEffects):
        raise TypeError(f"effects must be GridEffects (grid_effects), got {type(effects).__name__}")
    default = grid_label(P_DEFAULT, RATIO_DEFAULT)
    return setup.claims_table(section="claims-at-this-scale", claims=[
        Claim("LMP (public default) improves mIoU over CE, grid scale", source="abstract",
              ran=f"public default {default} vs CE, mIoU (test)",
              evidence=Evidence("Δ mIoU", effects.default, direction=+1)),
        Claim("the best (p, ratio) chosen on validation improves mIoU over CE, grid scale", source="ours",
              ran=f"best of the {len(effects.candidates)} cells with p ≤ {P_DEFAULT:g} on validation: "
                  f"{effects.best}; mIoU (test)",
              evidence=Evidence("Δ mIoU", effects.best_vs_ce, direction=+1)),
        _rare_claim("LMP improves rare-class IoU over CE, grid scale",
                    f"{default} vs CE, IoU of the 5 rarest digits", effects.rare, effects.rare_iou),
        Claim("LMP (p = 1.7) beats top-k mining at the same ratio", source="ours",
              ran=f"p = 1.7 vs p = 1, ρ = {RATIO_DEFAULT:g}, mIoU (ρ = 0.1: {effects.topk[0.1].format(3)})",
              evidence=Evidence("Δ mIoU", effects.topk[RATIO_DEFAULT], direction=+1)),
        # two-sided: no worse and no better than CE by more than the margin
        Claim("LMP with p -> infinity trains like CE", source="derived",
              ran=f"p = 100, ρ = 0.3 vs CE, mIoU within ±{EQUIVALENCE_MARGIN:g}", effect=effects.infinity,
              evidence=[Evidence("Δ mIoU (p = 100 − CE)", effects.infinity, tolerance=EQUIVALENCE_MARGIN),
                        Evidence("Δ mIoU (CE − p = 100)", _reversed(effects.infinity),
                                 tolerance=EQUIVALENCE_MARGIN)]),
        Claim("LMP beats focal loss", source="ours", ran=f"{default} vs focal (γ = {FOCAL_GAMMA:g}), mIoU",
              evidence=Evidence("Δ mIoU", effects.focal, direction=+1), record=False),
    ])


def grid_frames(setup: Setup, runs: Mapping[str, Sequence[object]]):
    """The per-seed frames ``(test, val)`` of the grid's runs (live or committed), with the
    ``rare`` group of the five rarest digits (:func:`rare_and_frequent`): what
    :func:`grid_effects` reads."""
    from ._base import group_metric_frame

    _check_stage(setup, "grid")
    missing = [arm.label for arm in setup.arms if arm.label not in runs]
    if missing:
        raise ValueError(f"the grid needs runs of every arm; missing {missing}")
    rare, _ = rare_and_frequent(setup)
    chosen = {arm.label: runs[arm.label] for arm in setup.arms}
    test = group_metric_frame(chosen, {"rare": rare}, split="test")
    seeds = {label: sorted(test[test.run == label]["seed"]) for label in chosen}
    if len({tuple(v) for v in seeds.values()}) != 1:
        raise ValueError(f"every arm of the grid must have the same seeds (the comparisons are paired), got {seeds}")
    return test, group_metric_frame(chosen, {"rare": rare}, split="val")


def grid_claims_from_runs(setup: Setup, runs: Mapping[str, Sequence[object]]) -> ClaimsTable:
    """:func:`grid_claims` judged on ``runs`` (:func:`grid_frames`, :func:`grid_effects`): the
    claims function of the grid's converged section."""
    return grid_claims(setup, grid_effects(*grid_frames(setup, runs)))
