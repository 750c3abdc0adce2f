r"""Chapter 5, spectral analysis of segmentation networks (``notebooks/05_spectral``): which
label frequencies a network needs, after Chen, Chiu and Wu (arXiv:2012.14123), with the book's
own derivations (:mod:`pixelweight.spectral`; no code of the paper is public and only its
abstract could be read).

The testbed is ``DigitScenes`` at 32 x 32 (one to three digits of 12-24 pixels, uniform
classes) and a width-8 U-Net whose logits are upsampled bilinearly to the labels
(:class:`~pixelweight.models.UpsampledUNet`). The spectrum of the training labels gives the
cut-off :math:`K_\alpha` (:data:`ALPHA` of their non-DC energy below it), and from it the
predictions the experiments test: an output grid of stride :math:`s` resolves the labels while
its Nyquist frequency :math:`N/(2s)` is at least :math:`K_\alpha`, and so do block labels of
side :math:`b` (:func:`predicted_knee`).

Stages (``STAGES``):

- ``stride`` (``02_stride_truncation``): output stride :math:`s \in` :data:`STRIDES`, with
  the residual's energy by frequency band and the cross-entropy's spectrum logged on a fixed
  probe batch (:class:`SpectralProbe`): claims (b) and (e). Its stride-1 arm is also the
  trained network of ``01_analysis``, whose cross-entropy is decomposed by frequency: claim (a)
  (the spectra themselves need no training).
- ``truncation`` (``02_stride_truncation``): the decoder run on features low-passed by
  :math:`t \in` :data:`TRUNCATIONS`: claim (c).
- ``blocks`` (``03_weak_annotation``): trained on block labels (:data:`BLOCKS`, majority and
  soft, :class:`~pixelweight.data.WeakDigitScenes`), evaluated on dense labels: claims (d),
  (d′).

Claims (texts, sources, how each is judged) are written once, here: :func:`analysis_claims`,
:func:`stride_claims`, :func:`truncation_claims` and :func:`blocks_claims`, each a function of
the runs, live or committed.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..claims import Check, Claim, ClaimsTable, Evidence
from ..profiles import get_profile
from ..stats import Interval
from ._base import PLATEAU, Arm, Chapter, DataSpec, ModelSpec, Scale, Setup, Stage, check_stage, run_seed

__all__ = [
    "ALPHA",
    "ALPHAS",
    "BLOCKS",
    "CE_ERROR_BOUND",
    "CHAPTER",
    "DATA",
    "PROBE_IMAGES",
    "LEARNED_FRACTION",
    "STAGES",
    "STRIDES",
    "SpectralProbe",
    "TOLERANCE",
    "TRUNCATIONS",
    "WEAK_DATA",
    "analysis_claims",
    "band_curves",
    "band_edges",
    "blocks_claims",
    "blocks_variant",
    "ce_spectrum",
    "ce_spectrum_checks",
    "cutoff",
    "decoder_flops",
    "label_profile",
    "reference_errors",
    "runs_by_block",
    "learning_step_frame",
    "miou_frame",
    "oracle_frame",
    "paired_effect",
    "plot_against_nyquist",
    "predicted_knee",
    "setup",
    "show_analysis_converged",
    "show_blocks_converged",
    "show_stride_converged",
    "show_truncation_converged",
    "stride_claims",
    "train_cutoff",
    "truncation_claims",
]

# --------------------------------------------------------------------------------------
# The testbed, the predictions' parameters and the budgets
# --------------------------------------------------------------------------------------
_SCENES = {"num_digits": (1, 3), "digit_size": (12, 24)}
#: The scenes: 32 x 32, one to three digits of 12-24 pixels, classes uniform (no long tail:
#: the chapter is about frequencies, not class frequencies).
DATA = DataSpec("DigitScenes", size=32, options=_SCENES)
#: The same scenes (the same images and dense labels) with a block-wise annotated training split.
WEAK_DATA = DataSpec("WeakDigitScenes", size=32, options=_SCENES)

#: The energy fraction of the cut-off the predictions use, :math:`K_{0.8}` [ours: the paper's
#: value could not be read]. Chosen from the labels' spectrum alone, before any training, so that
#: the predicted knees fall inside the tested ranges: on these thin strokes :math:`K_{0.9}` lies
#: above the Nyquist frequency of every grid coarser than the input, which would leave the
#: "accuracy holds" half of claims (b) and (d) without a case to test.
ALPHA = 0.8
#: The fractions whose cut-offs the analysis shows.
ALPHAS = (0.5, 0.8, 0.9, 0.95, 0.99)
#: "Accuracy holds" [ours]: test mIoU no worse than the reference by more than this
#: (non-inferiority); "costs accuracy": lower by more than this.
TOLERANCE = 0.02
#: "Cross-entropy is dominated by the low frequencies" [ours]: :math:`\mathrm{CE}_{K_\alpha}`, the
#: loss of the frequencies up to the labels' cut-off, within this relative error of the loss.
CE_ERROR_BOUND = 0.10
#: Images of the probe batch the training hook measures spectra on (a fixed validation batch).
PROBE_IMAGES = 64

#: Output strides :math:`s` of the ``stride`` stage (1: the plain U-Net).
STRIDES = (1, 2, 4, 8, 16)
#: Truncation factors :math:`t` of the decoder's features in the ``truncation`` stage.
TRUNCATIONS = (1, 2, 4)
#: Block sides :math:`b` of the weak annotation in the ``blocks`` stage (besides dense labels).
BLOCKS = (2, 4, 8, 16)
#: A frequency band is *learned* when its residual energy falls below this fraction of its first
#: measured value [ours] (:func:`~pixelweight.spectral.learning_steps`).
LEARNED_FRACTION = 0.5
#: Kinds of block label (:data:`pixelweight.data.ANNOTATIONS`).
ANNOTATIONS = ("majority", "soft")

_WIDTH = 8


def _stride_model(stride: int) -> ModelSpec:
    # depth 4: the bottleneck of a 32 x 32 input is 2 x 2, stride 16
    return ModelSpec("UpsampledUNet", width=_WIDTH, depth=4, options={"output_stride": stride})


def _truncated_model(factor: int) -> ModelSpec:
    # depth 3: a 4 x 4 bottleneck, which factors 2 and 4 divide
    return ModelSpec("UpsampledUNet", width=_WIDTH, depth=3, options={"truncation": factor})


def band_edges(size: int) -> Tuple[int, ...]:
    """The frequency bands of the spectral-bias measurement at an ``size x size`` input: [1, 4),
    [4, 8), [8, 16) and [16, :math:`K_{\\max}`] cycles per image (DC left out)."""
    from ..spectral import max_radial_frequency

    if isinstance(size, bool) or not isinstance(size, int) or size < 32:
        raise ValueError(f"size must be an int >= 32 (the bands reach 16 cycles per image), got {size!r}")
    return (1, 4, 8, 16, max_radial_frequency(size, size) + 1)


class SpectralProbe:
    r"""The ``on_log`` hook of the ``stride`` and ``truncation`` stages: a
    :class:`~pixelweight.spectral.SpectralBiasProbe` on a fixed probe batch (:data:`PROBE_IMAGES`
    images of the validation seed, built on first use from ``data``) that logs the residual's
    energy in each band of :func:`band_edges` (key ``residual_energy``) and the cross-entropy
    truncated at the probe labels' cut-off :math:`K_\alpha` (``ce``, ``ce_truncated``,
    ``ce_relative_error`` and ``ce_cutoff``, :math:`K_\alpha` itself, so that a record says
    where it truncated). The measurement is the library's
    (:func:`~pixelweight.spectral.eval_logits`: eval mode, no gradient, no random number, each
    module's mode restored), so a run is the same with and without the hook.
    """

    def __init__(self, data: DataSpec = DATA, num_images: int = PROBE_IMAGES, alpha: float = ALPHA):
        if not isinstance(data, DataSpec):
            raise TypeError(f"data must be a DataSpec, got {type(data).__name__}")
        if isinstance(num_images, bool) or not isinstance(num_images, int) or num_images < 1:
            raise ValueError(f"num_images must be a positive int, got {num_images!r}")
        if not (isinstance(alpha, float) and 0 < alpha <= 1):
            raise ValueError(f"alpha must be a float in (0, 1], got {alpha!r}")
        self.data, self.num_images, self.alpha = data, num_images, alpha
        self._probe = None
        self._batch: Optional[Tuple[torch.Tensor, torch.Tensor, int, Tuple[int, ...]]] = None

    def batch(self) -> Tuple[torch.Tensor, torch.Tensor, int, Tuple[int, ...]]:
        """``(images, labels, K_alpha, band edges)`` of the probe batch."""
        if self._batch is None:
            probe = self.data.build("val", self.num_images)
            images = torch.as_tensor(np.asarray(probe.images), dtype=torch.float32)
            labels = torch.as_tensor(np.asarray(probe.labels), dtype=torch.long)
            k = cutoff(label_profile(labels, probe.num_classes), self.alpha)
            self._batch = (images, labels, k, band_edges(self.data.size))
        return self._batch

    def __call__(self, step: int, model: torch.nn.Module, loss_fn: Any = None) -> Dict[str, Any]:
        from ..spectral import SpectralBiasProbe

        if self._probe is None:
            images, labels, k, edges = self.batch()
            self._probe = SpectralBiasProbe(images, labels, edges=edges, cross_entropy_at=k)
        return self._probe(step, model, loss_fn)


_PROBE = SpectralProbe()

_CI = get_profile("ci", steps=100, lr=6e-3, train_samples=600, val_samples=100, test_samples=200, eval_every=0)
# converged on a CPU: 3,000 steps (the cosine schedule's end), 5 seeds, validation every 150 steps
# for the plateau (the digits' classes are learned slowly: the validation mIoU still rises at 1,500)
_FULL = get_profile("full", steps=3000, batch_size=16, lr=6e-3, train_samples=1200, val_samples=200,
                    test_samples=400, eval_every=150)


def _scales(data: DataSpec, model: ModelSpec, log_every: Tuple[int, int] = (5, 10)) -> Dict[str, Scale]:
    return {"ci": Scale(_CI, data, model, train={"log_every": log_every[0]}),
            "full": Scale(_FULL, data, model, train={**PLATEAU, "log_every": log_every[1]})}


def blocks_variant(block: int, annotation: str) -> str:
    """The variant name of block labels of side ``block`` (``"b4_soft"``)."""
    if isinstance(block, bool) or not isinstance(block, int) or block not in BLOCKS or annotation not in ANNOTATIONS:
        raise ValueError(f"block must be one of {BLOCKS} and annotation one of {ANNOTATIONS}, "
                         f"got {block!r}, {annotation!r}")
    return f"b{block}_{annotation}"


_BLOCK_VARIANTS = {"dense": {"annotation_block": 1, "annotation": "majority"},
                   **{blocks_variant(b, a): {"annotation_block": b, "annotation": a}
                      for b in BLOCKS for a in ANNOTATIONS}}

STAGES = {
    "stride": Stage(
        "stride", "output stride s of the logits (upsampled bilinearly to the labels)",
        scales=_scales(DATA, _stride_model(1)),
        arms=tuple(Arm(f"s = {s}", "ce", run=f"s{s}", model=_stride_model(s)) for s in STRIDES),
        prefix="ch5-stride", on_log=_PROBE,
    ),
    "truncation": Stage(
        "truncation", "decoder features low-passed (FFT crop) by a factor t",
        scales=_scales(DATA, _truncated_model(1)),
        arms=tuple(Arm(f"t = {t}", "ce", run=f"t{t}", model=_truncated_model(t)) for t in TRUNCATIONS),
        prefix="ch5-truncation", on_log=_PROBE,
    ),
    "blocks": Stage(
        "blocks", "trained on block labels (majority, soft), evaluated on dense labels",
        scales=_scales(WEAK_DATA, _truncated_model(1), log_every=(10, 60)),
        arms=(Arm("CE", "soft-ce", run="ce"),), prefix="ch5-blocks", variants=_BLOCK_VARIANTS,
    ),
}

CHAPTER = Chapter("05_spectral", "Spectral analysis of segmentation networks", STAGES,
                  code_paths=("src/pixelweight/spectral",))
setup = CHAPTER.setup


# --------------------------------------------------------------------------------------
# Spectra of the labels and the predictions they make
# --------------------------------------------------------------------------------------
def _label_maps(labels, name: str = "labels") -> torch.Tensor:
    """``(N, H, W)`` integer labels (a tensor or an array) as a long tensor; floats are refused
    (a label of 0.7 is no class)."""
    labels = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels)
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise ValueError(f"{name} must hold integer class indices, got dtype {labels.dtype}")
    if labels.ndim != 3 or labels.shape[0] == 0:
        raise ValueError(f"{name} must be (N, H, W) with N >= 1, got shape {tuple(labels.shape)}")
    return labels.long()


def label_profile(labels, num_classes: int = 11) -> torch.Tensor:
    """The data set's radial energy profile: :func:`~pixelweight.spectral.label_energy` of
    ``(N, H, W)`` integer labels, averaged over the maps (float64)."""
    from ..spectral import label_energy

    return label_energy(_label_maps(labels), num_classes, dtype=torch.float64).mean(dim=0)


def cutoff(profile: torch.Tensor, alpha: float = ALPHA) -> int:
    """:math:`K_\\alpha` of a profile (:func:`~pixelweight.spectral.energy_cutoff`) as an int."""
    from ..spectral import energy_cutoff

    k = float(energy_cutoff(profile, alpha))
    if not math.isfinite(k):
        raise ValueError("the profile has no energy beyond DC: its cut-off is undefined")
    return int(k)


def predicted_knee(size: int, k: int, factors: Sequence[int]) -> Optional[int]:
    """The largest factor :math:`f` of ``factors`` (an output stride or a block side) whose grid
    resolves the cut-off ``k``: :math:`\\lfloor size / f \\rfloor / 2 \\ge k`; ``None`` when even
    the smallest does not [derived]."""
    if isinstance(size, bool) or not isinstance(size, int) or size < 2:
        raise ValueError(f"size must be an int >= 2, got {size!r}")
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    factors = list(factors)
    if not factors or any(isinstance(f, bool) or not isinstance(f, int) or f < 1 for f in factors):
        raise ValueError(f"factors must be positive ints, got {factors!r}")
    resolving = [f for f in factors if (size // f) / 2 >= k]
    return max(resolving) if resolving else None


def oracle_frame(labels, factors: Sequence[int] = STRIDES, num_classes: int = 11):
    """The oracle of a coarse grid: the mIoU against the dense ``(N, H, W)`` labels of the labels
    passed through each factor's grid (:func:`~pixelweight.spectral.through_stride`, majority per
    block, which is also the majority block annotation), with the grid's Nyquist frequency. A
    DataFrame of ``factor``, ``nyquist`` (cycles per image) and ``oracle_miou``."""
    import pandas as pd

    from ..metrics import SegmentationMetrics
    from ..spectral import through_stride

    labels = _label_maps(labels)
    rows = []
    for f in factors:
        metrics = SegmentationMetrics(num_classes)
        metrics.update(through_stride(labels, f, num_classes), labels)
        rows.append({"factor": f, "nyquist": (labels.shape[-1] // f) / 2, "oracle_miou": metrics.compute()["miou"]})
    return pd.DataFrame(rows)


def decoder_flops(model: ModelSpec, size: int = 32, num_classes: int = 11) -> Dict[str, int]:
    """Multiply-adds of one ``size x size`` image through ``model`` (a
    :class:`~pixelweight.chapters.ModelSpec` of an :class:`~pixelweight.models.UpsampledUNet`):
    ``total`` and ``decoder`` (the up-convolutions, the decoder blocks and the head)."""
    from ..spectral import count_flops

    if not isinstance(model, ModelSpec):
        raise TypeError(f"model must be a ModelSpec, got {type(model).__name__}")
    count = count_flops(model.build(num_classes).eval(), (1, 1, size, size))
    return {"total": count.macs, "decoder": count.within("unet.up", "unet.decoder", "unet.head")}


# --------------------------------------------------------------------------------------
# Frames of the runs
# --------------------------------------------------------------------------------------
def _check_setup(setup: Setup, stage: str) -> None:
    check_stage(setup, CHAPTER.folder, stage)


def paired_effect(runs: Mapping[Any, Sequence[Any]], a: Any, b: Any, key: str = "test_miou") -> Interval:
    """The paired difference ``a - b`` of the final metric ``key`` over seeds (runs keyed by arm
    label, or by ``(variant, arm label)``, live or committed, seeds in the same order); NaN (not
    testable) when a value is undefined."""
    from ..stats import paired_difference_ci

    for label in (a, b):
        if label not in runs:
            raise KeyError(f"no runs of {label!r}; there are {sorted(map(str, runs))}")
    seeds = [[run_seed(r) for r in runs[label]] for label in (a, b)]
    if seeds[0] != seeds[1]:
        raise ValueError(f"the runs of {a!r} and {b!r} must share their seeds, in order; got {seeds}")
    if len(seeds[0]) < 2:
        raise ValueError(f"a paired interval needs at least two seeds, got {len(seeds[0])}")
    values = [[float(r.metrics[key]) if r.metrics.get(key) is not None else math.nan for r in runs[label]]
              for label in (a, b)]
    if any(not math.isfinite(v) for side in values for v in side):
        return Interval(math.nan, math.nan, math.nan, len(values[0]), 0.95)
    return paired_difference_ci(values[0], values[1])


def miou_frame(runs: Mapping[Any, Sequence[Any]], key: str = "test_miou"):
    """A tidy DataFrame: ``arm`` (the runs' key), ``seed`` and ``key`` of each run."""
    import pandas as pd

    rows = [{"arm": label, "seed": run_seed(r), key: r.metrics.get(key)} for label, rs in runs.items() for r in rs]
    return pd.DataFrame(rows, columns=["arm", "seed", key])


def _last(run: Any, key: str) -> float:
    for entry in reversed(run.history):
        if key in entry:
            return float(entry[key])
    raise KeyError(f"the run's history has no {key!r} (was the stage's SpectralProbe hook on?)")


def _learning_steps(run: Any, fraction: float = LEARNED_FRACTION) -> List[float]:
    """Each band's learning step (:func:`~pixelweight.spectral.learning_steps`); a band not
    learned within the run counts as learned one log interval after its last step (censored)."""
    from ..spectral import learning_steps

    logged = [e for e in run.history if "residual_energy" in e]
    if len(logged) < 2:
        raise ValueError("the run logged the residual energy fewer than twice")
    steps = learning_steps(logged, fraction)
    censored = logged[-1]["step"] + (logged[-1]["step"] - logged[-2]["step"])
    return [float(s) if s is not None else float(censored) for s in steps]


def learning_step_frame(runs: Sequence[Any], size: int = 32, fraction: float = LEARNED_FRACTION):
    """Per run (seed) and band: the step its residual energy first falls below ``fraction`` of its
    first logged value. A DataFrame of ``seed``, ``band`` ("[1, 4)"...) and ``step``."""
    import pandas as pd

    edges = band_edges(size)
    names = [f"[{a}, {b})" for a, b in zip(edges, edges[1:])]
    rows = []
    for r in runs:
        for name, step in zip(names, _learning_steps(r, fraction)):
            rows.append({"seed": run_seed(r), "band": name, "step": step})
    return pd.DataFrame(rows, columns=["seed", "band", "step"])


def band_curves(runs: Sequence[Any], size: int = 32):
    """The residual energy of each band along training, relative to its first logged value, per
    seed: a DataFrame of ``seed``, ``step``, ``band`` and ``relative_energy``."""
    import pandas as pd

    edges = band_edges(size)
    names = [f"[{a}, {b})" for a, b in zip(edges, edges[1:])]
    rows = []
    for r in runs:
        logged = [e for e in r.history if "residual_energy" in e]
        if not logged:
            raise KeyError("a run has no residual_energy in its history (was the SpectralProbe hook on?)")
        first = logged[0]["residual_energy"]
        for e in logged:
            for name, value, start in zip(names, e["residual_energy"], first):
                rows.append({"seed": run_seed(r), "step": e["step"], "band": name,
                             "relative_energy": value / start if start > 0 else math.nan})
    return pd.DataFrame(rows, columns=["seed", "step", "band", "relative_energy"])


def runs_by_block(runs: Mapping[Any, Sequence[Any]], annotation: str, arm: str = "CE") -> Dict[int, Sequence[Any]]:
    """The ``blocks`` stage's runs (keyed by ``(variant, arm label)``) of one kind of block label,
    by block side: ``{1: dense runs, 2: ..., 16: ...}``."""
    if annotation not in ANNOTATIONS:
        raise ValueError(f"annotation must be one of {ANNOTATIONS}, got {annotation!r}")
    keys = {b: ("dense" if b == 1 else blocks_variant(b, annotation), arm) for b in (1,) + BLOCKS}
    missing = [k for k in keys.values() if k not in runs]
    if missing:
        raise KeyError(f"no runs of {missing}")
    return {b: runs[key] for b, key in keys.items()}


def plot_against_nyquist(ax, series: Mapping[str, Tuple[Mapping[int, Sequence[Any]], str]], size: int, k: int,
                         oracle=None, symbol: str = "s", key: str = "test_miou"):
    """Draw test mIoU against the Nyquist frequency :math:`N/(2f)` of each factor :math:`f` (a
    stride or a block side; log-2 axis) on ``ax``: for each entry ``{label: (runs by factor,
    marker)}`` the mean over seeds with its 95% interval (runs live or committed), the oracle
    (:func:`oracle_frame`) when given, the factors' names and the cut-off ``k``."""
    from ..stats import mean_ci

    if not isinstance(series, Mapping) or not series:
        raise ValueError("series must map a label to (runs by factor, marker)")
    factors: List[int] = []
    for label, (by_factor, marker) in series.items():
        fs = sorted(by_factor)
        stats = []
        for f in fs:
            values = [r.metrics.get(key) for r in by_factor[f]]
            if not values or any(v is None for v in values):
                raise ValueError(f"{label!r}: a run of factor {f} has no {key!r}")
            stats.append(mean_ci([float(v) for v in values]) if len(values) > 1 else None)
        x = [size / (2 * f) for f in fs]
        means = [float(np.mean([r.metrics[key] for r in by_factor[f]])) for f in fs]
        low = [m - (st.low if st is not None else m) for m, st in zip(means, stats)]
        high = [(st.high if st is not None else m) - m for m, st in zip(means, stats)]
        ax.errorbar(x, means, yerr=[low, high], marker=marker, capsize=3, label=label)
        factors = sorted(set(factors) | set(fs))
    if oracle is not None:
        ax.plot([size / (2 * f) for f in oracle.factor], oracle.oracle_miou, marker="s", ls="--", color="0.5",
                label="oracle: majority labels through the grid")
    for f in factors:
        ax.annotate(f"{symbol} = {f}", (size / (2 * f), 0.02), ha="center", fontsize="x-small")
    ax.axvline(k, color="0.4", ls=":", lw=1)
    ax.text(k * 1.03, 0.9, f"K$_{{{ALPHA:g}}}$ = {k}", fontsize="small")
    ax.set_xscale("log", base=2)
    ax.set_xlabel(f"Nyquist frequency N/(2{symbol}) (cycles per image, log scale)")
    ax.set_ylabel("test mIoU on dense labels")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize="x-small", loc="upper left")


# --------------------------------------------------------------------------------------
# Claims
# --------------------------------------------------------------------------------------
def train_cutoff(setup: Setup, alpha: float = ALPHA) -> int:
    """:math:`K_\\alpha` of ``setup``'s training labels (their mean profile): the cut-off the
    claims' predictions use."""
    if not isinstance(setup, Setup):
        raise TypeError(f"setup must be a Setup, got {type(setup).__name__}")
    labels = getattr(setup.splits.train, "labels", None)
    if labels is None:
        raise ValueError("the training split has no labels to take the spectrum of")
    return cutoff(label_profile(labels, setup.num_classes), alpha)


def _knee_evidence(runs, labels: Dict[int, Any], reference: Any, knee: Optional[int], name: str) -> List[Evidence]:
    """Non-inferiority of every factor up to the knee, and a loss past the tolerance at the next
    factor (the knee's double), each against ``reference`` (factor 1). A knee at the smallest or
    the largest factor (or none) leaves one half of the prediction without a case: the evidence is
    then "not testable at this scale"."""
    factors = sorted(labels)
    if knee is None or knee <= factors[0] or knee >= factors[-1]:
        nan = math.nan
        return [Evidence(f"knee {name}* = {knee} outside {factors[1]}..{factors[-2]}", Interval(nan, nan, nan, 0, 0.95))]
    out = []
    for f in factors[1:]:
        effect = paired_effect(runs, labels[f], reference)
        if f <= knee:
            out.append(Evidence(f"Δ mIoU, {name} = {f}", effect, tolerance=TOLERANCE))
        elif f == 2 * knee:
            out.append(Evidence(f"Δ mIoU, {name} = {f}", effect, direction=-1, margin=TOLERANCE))
    return out


def reference_errors(labels, k: int, num_classes: int = 11):
    """What the relative error :math:`|\\mathrm{CE}_K - \\mathrm{CE}| / \\mathrm{CE}` at ``k``
    gives for reference predictors of ``(N, H, W)`` integer labels, no network involved: constant
    logits (the loss has only its DC term: 0), and the labels themselves as logits
    :math:`c \\cdot y` of growing confidence :math:`c` (a perfect, sharp predictor). A DataFrame of
    ``predictor``, ``ce`` and ``relative_error``: the measure depends on how confident the
    predictions are, not only on the labels."""
    import pandas as pd
    import torch.nn.functional as F

    from ..spectral import cross_entropy_spectrum

    labels = _label_maps(labels)
    if isinstance(k, bool) or not isinstance(k, int) or k < 0:
        raise ValueError(f"k must be a non-negative int, got {k!r}")
    one_hot = F.one_hot(labels, num_classes).permute(0, 3, 1, 2).double()
    rows = []
    for name, logits in [("constant logits", torch.zeros_like(one_hot))] + [
            (f"labels as logits, confidence {c:g}", c * one_hot) for c in (1.0, 3.0, 6.0)]:
        spectrum = cross_entropy_spectrum(logits, labels)
        kk = min(k, spectrum.ce_k.shape[-1] - 1)
        rows.append({"predictor": name, "ce": float(spectrum.ce), "relative_error": float(spectrum.relative_error[kk])})
    return pd.DataFrame(rows, columns=["predictor", "ce", "relative_error"])


def ce_spectrum(model: torch.nn.Module, dataset, batch_size: int = 256):
    """The cross-entropy of ``model`` on ``dataset`` (``images`` and ``labels`` arrays, e.g. a
    test split) by radial frequency (:func:`~pixelweight.spectral.cross_entropy_spectrum`,
    float64): a DataFrame of ``K`` (cycles per image), ``ce_k`` (:math:`\\mathrm{CE}_K`),
    ``share`` (:math:`\\mathrm{CE}_K / \\mathrm{CE}`) and ``relative_error``."""
    import pandas as pd

    from ..spectral import cross_entropy_spectrum

    from ..spectral import eval_logits

    logits = eval_logits(model, torch.as_tensor(np.asarray(dataset.images)), batch_size=batch_size).double()
    labels = _label_maps(dataset.labels).to(logits.device)
    spectrum = cross_entropy_spectrum(logits, labels)
    ce_k = spectrum.ce_k.cpu().numpy()
    return pd.DataFrame({"K": np.arange(len(ce_k)), "ce_k": ce_k, "share": ce_k / float(spectrum.ce),
                         "relative_error": spectrum.relative_error.cpu().numpy()})


def ce_spectrum_checks(model: torch.nn.Module, dataset, tolerance: float = 1e-6) -> List[Check]:
    """The identities of the cross-entropy's decomposition on ``model``'s predictions of
    ``dataset`` (float64): the terms sum to ``F.cross_entropy`` (Parseval) and
    :math:`\\mathrm{CE}_K` at :math:`K_{\\max}` is the cross-entropy; relative errors."""
    import torch.nn.functional as F

    from ..spectral import cross_entropy_terms, max_radial_frequency, truncated_cross_entropy

    from ..spectral import eval_logits

    logits = eval_logits(model, torch.as_tensor(np.asarray(dataset.images))).double()
    labels = _label_maps(dataset.labels).to(logits.device)
    ce = float(F.cross_entropy(logits, labels))
    parseval = abs(float(cross_entropy_terms(logits, labels).sum()) - ce) / ce
    k_max = max_radial_frequency(*labels.shape[-2:])
    nyquist = abs(float(truncated_cross_entropy(logits, labels, k_max)) - ce) / ce
    on = f"a trained network's predictions of {len(labels)} test images (float64)"
    return [Check("the per-frequency terms sum to the cross-entropy (Parseval)", on, parseval, tolerance),
            Check(f"CE_K at K_max = {k_max} equals the cross-entropy", on, nyquist, tolerance)]


def analysis_claims(setup: Setup, runs: Mapping[str, Sequence[Any]], checks: Sequence[Check] = ()) -> ClaimsTable:
    r"""Claim (a) **primary** [abstract] of ``01_analysis``: the cross-entropy is dominated by
    the labels' low-frequency components. Judged on the runs of the stride-1 arm of the
    ``stride`` stage (``runs["s = 1"]``, live or committed): on the probe batch at the end of
    training (:class:`SpectralProbe`), :math:`\mathrm{CE}_{K_\alpha}` is within
    :data:`CE_ERROR_BOUND` of the cross-entropy: the relative error minus the bound, over seeds,
    below 0. ``checks``: the decomposition's identities (:func:`ce_spectrum_checks`)."""
    from ..stats import mean_ci

    _check_setup(setup, "stride")
    if not isinstance(runs, Mapping) or "s = 1" not in runs:
        raise KeyError("the analysis claims need the runs of 's = 1'")
    if len(runs["s = 1"]) < 2:
        raise ValueError(f"claim (a) needs at least two seeds, got {len(runs['s = 1'])}")
    errors = [_last(r, "ce_relative_error") for r in runs["s = 1"]]
    if all(map(math.isfinite, errors)):
        a = mean_ci([e - CE_ERROR_BOUND for e in errors])
    else:
        a = Interval(math.nan, math.nan, math.nan, len(errors), 0.95)
    cutoffs = {int(_last(r, "ce_cutoff")) for r in runs["s = 1"]}  # where each run's hook truncated
    if len(cutoffs) != 1:
        raise ValueError(f"the runs truncated the cross-entropy at different frequencies {sorted(cutoffs)}")
    (k,) = cutoffs
    return setup.claims_table([
        Claim("cross-entropy is dominated by the labels' low-frequency components", source="abstract", label="(a)",
              primary=True,
              ran=f"CE_K up to the probe labels' cut-off K_{ALPHA:g} = {k} vs the CE, probe batch of {PROBE_IMAGES} "
                  f"validation images, stride-1 network at the end of training; relative error minus "
                  f"{CE_ERROR_BOUND:g}",
              detail=f"mean relative error {np.mean(errors):.3f}",
              evidence=Evidence(f"rel. error − {CE_ERROR_BOUND:g}", a, direction=-1)),
    ], checks=checks)


def stride_claims(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> ClaimsTable:
    r"""The claims of the ``stride`` stage, judged on ``runs`` (``{arm label: [run per seed]}``,
    live or committed, paired by seed; test split, dense labels):

    - (b) **primary** [abstract]: accuracy holds while the output grid resolves the cut-off: the
      test mIoU of every stride up to the predicted knee :math:`s^*` (:func:`predicted_knee` of
      the training labels' :math:`K_\alpha`) is non-inferior to stride 1 (:data:`TOLERANCE`), and
      stride :math:`2s^*` loses more than the tolerance.
    - (e) [ours, after Rahaman et al. 2019]: low frequencies are learned first: the
      stride-1 network's residual energy in the highest band falls to half its first logged value
      later than in the lowest band (paired by seed).
    """
    from ..stats import mean_ci

    _check_setup(setup, "stride")
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must map arm labels to runs, got {type(runs).__name__}")
    size = setup.data.size
    k = train_cutoff(setup)
    knee = predicted_knee(size, k, STRIDES)
    labels = {s: f"s = {s}" for s in STRIDES}
    reference = runs.get(labels[1])
    if reference is None:
        raise KeyError(f"the stride claims need the runs of {labels[1]!r}")
    if len(reference) < 2:
        raise ValueError(f"the stride claims need at least two seeds, got {len(reference)}")
    steps = [_learning_steps(r) for r in reference]
    edges = band_edges(size)
    e = mean_ci([s[-1] - s[0] for s in steps])
    knee_text = f"s* = {knee}" if knee is not None else "no stride resolves it"
    return setup.claims_table(section="claims-output-stride", claims=[
        Claim("accuracy holds while the output grid resolves the labels' cut-off frequency", source="abstract",
              label="(b)", primary=True,
              ran=f"test mIoU at output strides {', '.join(map(str, STRIDES))} vs stride 1; K_{ALPHA:g} = {k} "
                  f"cycles per image predicts {knee_text} (N/(2s) ≥ K); non-inferior up to it, a loss > "
                  f"{TOLERANCE:g} at 2s*",
              evidence=_knee_evidence(runs, labels, labels[1], knee, "s")),
        Claim("low frequencies are learned first (Rahaman et al.)", source="ours", label="(e)",
              digits=0,
              ran=f"step at which the residual energy of a band falls below {LEARNED_FRACTION:g} of its first logged "
                  f"value (after {setup.scale.train.get('log_every', 10)} steps), band "
                  f"[{edges[-2]}, {edges[-1] - 1}] minus band [{edges[0]}, {edges[1] - 1}] cycles per image, "
                  "stride-1 network, probe batch",
              detail="mean learning steps by band: " + ", ".join(
                  f"{np.mean([s[i] for s in steps]):.0f}" for i in range(len(edges) - 1)),
              evidence=Evidence("Δ learning step (high − low band)", e, direction=+1)),
    ])


def truncation_claims(setup: Setup, runs: Mapping[str, Sequence[Any]]) -> ClaimsTable:
    r"""Claim (c) **primary** [abstract] of the ``truncation`` stage: truncating high-frequency
    decoder features saves computation at a small cost: the test mIoU at every factor
    :math:`t > 1` of :data:`TRUNCATIONS` is non-inferior to :math:`t = 1` (:data:`TOLERANCE`),
    the decoder's multiply-adds (:func:`decoder_flops`) stated beside it."""
    _check_setup(setup, "truncation")
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must map arm labels to runs, got {type(runs).__name__}")
    flops = {t: decoder_flops(setup.arm(f"t = {t}").model, setup.data.size) for t in TRUNCATIONS}
    saved = ", ".join(f"t = {t}: {flops[1]['decoder'] / flops[t]['decoder']:.1f}x fewer decoder multiply-adds "
                      f"({flops[1]['total'] / flops[t]['total']:.2f}x in all)" for t in TRUNCATIONS[1:])
    return setup.claims_table(section="claims-truncation", claims=[
        Claim("truncating high-frequency decoder features saves computation at a small cost", source="abstract",
              label="(c)", primary=True,
              ran=f"decoder on features FFT-cropped by t = {', '.join(map(str, TRUNCATIONS[1:]))} vs t = 1, test mIoU "
                  f"on dense labels, each non-inferior (tolerance {TOLERANCE:g})",
              detail=saved,
              evidence=[Evidence(f"Δ mIoU, t = {t}", paired_effect(runs, f"t = {t}", "t = 1"), tolerance=TOLERANCE)
                        for t in TRUNCATIONS[1:]]),
    ])


def blocks_claims(setup: Setup, runs: Mapping[Any, Sequence[Any]]) -> ClaimsTable:
    r"""The claims of the ``blocks`` stage, judged on ``runs`` keyed by ``(variant, "CE")``
    (:func:`blocks_variant`; ``"dense"`` for the dense labels), live or committed:

    - (d) **primary** [abstract]: block-wise annotation costs accuracy in line with the spectrum:
      with majority and with soft block labels, every block side up to the predicted knee
      :math:`b^*` (:func:`predicted_knee`) is non-inferior to dense labels and side :math:`2b^*`
      loses more than :data:`TOLERANCE` (the oracle of majority labels, no training, in the detail).
    - (d′) [ours]: soft block labels cost less than majority labels, at side 8.
    """
    _check_setup(setup, "blocks")
    if not isinstance(runs, Mapping):
        raise TypeError(f"runs must map (variant, arm label) to runs, got {type(runs).__name__}")
    size = setup.data.size
    k = train_cutoff(setup)
    knee = predicted_knee(size, k, (1,) + BLOCKS)
    arm = setup.arms[0].label
    evidence = []
    for annotation in ANNOTATIONS:
        labels = {1: ("dense", arm), **{b: (blocks_variant(b, annotation), arm) for b in BLOCKS}}
        evidence += _knee_evidence(runs, labels, ("dense", arm), knee, f"{annotation} b")
    oracle = oracle_frame(setup.splits.test.labels, (1,) + BLOCKS, setup.num_classes)
    oracle_text = ", ".join(f"b = {int(r.factor)}: {r.oracle_miou:.3f}" for r in oracle.itertuples())
    knee_text = f"b* = {knee}" if knee is not None else "no block side resolves it"
    return setup.claims_table([
        Claim("block-wise annotation costs accuracy in line with the label spectrum", source="abstract", label="(d)",
              primary=True,
              ran=f"trained on majority and on soft block labels of side {', '.join(map(str, BLOCKS))} vs dense "
                  f"labels, test mIoU on dense labels; K_{ALPHA:g} = {k} predicts {knee_text}; non-inferior up "
                  f"to it, a loss > {TOLERANCE:g} at 2b*",
              detail=f"oracle mIoU of majority block labels (no training): {oracle_text}",
              evidence=evidence),
        Claim("soft block labels cost less accuracy than majority block labels", source="ours", label="(d′)",
              ran="soft vs majority block labels of side 8, test mIoU on dense labels, paired by seed",
              evidence=Evidence("Δ mIoU (soft − majority), b = 8",
                                paired_effect(runs, (blocks_variant(8, "soft"), arm), (blocks_variant(8, "majority"), arm)),
                                direction=+1)),
    ])


# --------------------------------------------------------------------------------------
# Converged sections
# --------------------------------------------------------------------------------------
def _converged_text(result, labels: Sequence[str]) -> Dict[str, Any]:
    text = result.text()
    out = {f"{kind} {label}": text.get(f"{kind} {label}", "—") for kind in ("verdict", "effect") for label in labels}
    out.update({k: text[k] for k in ("plateau", "seeds", "hours", "stale")}, result=result)
    return out


def show_analysis_converged(setup: Setup, results_dir=None) -> Dict[str, Any]:
    """The converged section of ``01_analysis``: :func:`analysis_claims` on the committed
    ``full`` records of the stride-1 arm, shown and recorded in ``results_dir`` (or the paragraph
    that says they are missing). Returns what the prose cites (``verdict (a)``, ``effect (a)``,
    ``plateau``, ``seeds``, ``hours``, ``stale``) and the ``result``."""
    _check_setup(setup, "stride")
    result = setup.show_converged(analysis_claims, results_dir, arms=[setup.arm("s = 1")])
    return _converged_text(result, ("(a)",))


def show_stride_converged(setup: Setup, results_dir=None) -> Dict[str, Any]:
    """The converged section of the stride experiment: :func:`stride_claims` on the committed
    ``full`` records, shown and recorded in ``results_dir`` (or the paragraph that says they are
    missing). Returns what the prose cites (``verdict (b)``, ``effect (b)``, ..., ``plateau``,
    ``seeds``, ``hours``, ``stale``) and the ``result``."""
    _check_setup(setup, "stride")
    return _converged_text(setup.show_converged(stride_claims, results_dir, section="converged-stride"),
                           ("(b)", "(e)"))


def show_truncation_converged(setup: Setup, results_dir=None) -> Dict[str, Any]:
    """:func:`show_stride_converged` for the truncation experiment (:func:`truncation_claims`)."""
    _check_setup(setup, "truncation")
    return _converged_text(setup.show_converged(truncation_claims, results_dir, section="converged-truncation"),
                           ("(c)",))


def show_blocks_converged(setup: Setup, results_dir=None) -> Dict[str, Any]:
    """:func:`show_stride_converged` for the weak-annotation experiment (:func:`blocks_claims`,
    every variant's committed records)."""
    _check_setup(setup, "blocks")
    result = setup.show_converged(blocks_claims, results_dir, variants=list(_BLOCK_VARIANTS))
    return _converged_text(result, ("(d)", "(d′)"))
