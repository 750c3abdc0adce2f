r"""The loss contract as data: one :class:`LossSpec` per loss configuration.

This is kornia's ``BaseTester`` written as a table. ``tests/losses/test_contract.py`` runs
every contract test on every entry of :data:`SPECS`; the per-loss files
(``test_ce.py``, ``test_focal.py``, ...) keep only what is particular to one loss: known
values, identities, references and the pitfalls of the papers' public code.

Adding a loss = adding one spec
-------------------------------
Write the functional form and the ``nn.Module`` in :mod:`pixelweight.losses` (logits in,
``ignore_index`` and ``reduction`` keywords, see ``/work/shared/design.md``), then append a
:class:`LossSpec` to :data:`SPECS`: its functional, its module class, the options it is
tested with (a function of the number of classes, so that per-class vectors fit both the
multiclass and the binary layout), the layout of its ``reduction="none"`` output and the
denominator of its ``"mean"``. Every contract test then runs on it:

* the module equals the functional (and a call is deterministic);
* float64 ``torch.autograd.gradcheck`` of every reduction;
* float32 / float64 / float16 / bfloat16 (CPU, and CUDA when present): the result has the
  input's dtype and is close to the float64 result on the same (rounded) logits, to
  :data:`LOW_PRECISION_RTOL`; once per loss at a realistic size (1M valid pixels);
* an all-ignored batch gives a zero (never NaN) that keeps the graph, with zero gradients;
* ignored pixels are invisible: any logits there give the same loss and a zero gradient;
* ``reduction``: the ``"none"`` layout, ``"sum" == none.sum()`` and ``"mean" == sum /``
  the spec's denominator;
* non-contiguous and channels_last logits (and a non-contiguous target) give the same value
  and gradient as contiguous ones;
* ``state_dict`` round trip (through ``torch.save``), including the state of stateful losses;
* a NaN logit at a valid pixel gives a NaN loss (or, for specs that say so, a ``ValueError``),
  never a finite number;
* invalid inputs raise ``ValueError`` naming the problem;
* a ``torch.compile`` smoke test (``backend="eager"``), once per loss.

A loss that fails a contract test because of a known defect gets an entry in
:data:`KNOWN_DEFECTS` (a strict ``xfail``: the test fails as soon as the defect is fixed,
and the entry must then be deleted).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Callable, Dict, Optional, Tuple

import pytest
import torch

from pixelweight.losses import (
    BCEWeightedFMeasureLoss,
    ClassificationCrossEntropy,
    CrossEntropyLoss,
    FocalLoss,
    HybridLoss,
    LossMaxPooling,
    RecallLoss,
    SoftCrossEntropyLoss,
    SoftDiceLoss,
    SoftFMeasureLoss,
    StructureLoss,
    WeightedFMeasureLoss,
    classification_cross_entropy,
    cross_entropy,
    focal_loss,
    hybrid_loss,
    loss_max_pooling,
    recall_loss,
    recall_weights,
    soft_cross_entropy,
    soft_dice_loss,
    soft_fmeasure_loss,
    structure_loss,
    weighted_fmeasure_loss,
    bce_weighted_fmeasure_loss,
)

from losses.loss_cases import REDUCTIONS

LAYOUTS = ("multiclass", "binary")  # the default layouts of a spec; also "classification": (N, C) logits
DEVICES = ("cpu", "cuda")  # "cuda" is skipped without a GPU
LOW_PRECISION = (torch.float16, torch.bfloat16)

# Low precision against float64 on the same rounded logits: |out - ref| <= rtol (|ref| + max|ref|)
# per entry, i.e. a few units in the last place of the result's dtype (eps = 2^-10 for float16,
# 2^-7 for bfloat16; a result rounded to the dtype is off by up to eps / 2 alone).
LOW_PRECISION_RTOL = {torch.float16: 4 * 2.0**-10, torch.bfloat16: 4 * 2.0**-7}
# float32 against float64: the same rule with float32's eps, with room for sums of a few hundred terms.
FLOAT32_RTOL = 1e-5


# ------------------------------------------------------------------------------------------
# the reduction="none" layouts and the "mean" denominators
# ------------------------------------------------------------------------------------------
def pixel_map(logits_shape, valid) -> Tuple[int, ...]:
    """Per-pixel map in the target's layout: ``(N, H, W)`` multiclass, ``(N, 1, H, W)`` binary."""
    channel = (1,) if logits_shape[1] == 1 else ()
    return (logits_shape[0],) + channel + tuple(valid.shape[-2:])


def image_class_table(logits_shape, valid) -> Tuple[int, ...]:
    """One value per image and class, ``(N, K)`` with ``K = C`` (multiclass) or 1 (binary)."""
    return (logits_shape[0], logits_shape[1])


def per_image(logits_shape, valid) -> Tuple[int, ...]:
    """One value per image, ``(N,)`` (the foreground-map losses: binary logits only)."""
    return (logits_shape[0],)


def per_sample(logits_shape, valid) -> Tuple[int, ...]:
    """One value per sample, ``(N,)`` (the classification layout: ``(N, C)`` logits)."""
    return (logits_shape[0],)


def class_vector(logits_shape, valid) -> Tuple[int, ...]:
    """One value per class over the whole batch, ``(K,)``."""
    return (logits_shape[1],)


def valid_pixels(options, target, valid, none) -> torch.Tensor:
    r""":math:`|V|`, the number of valid pixels (0 -> the mean is a zero)."""
    return valid.sum()


def valid_weight_total(options, target, valid, none) -> torch.Tensor:
    r""":math:`\sum_{i \in V} w_{y_i}` (``normalize="weights"``, PyTorch's ``weight=`` mean)."""
    w = torch.as_tensor(options["weight"], dtype=torch.float64)
    return w[target[valid].long()].sum()


def valid_images_times_classes(options, target, valid, none) -> torch.Tensor:
    """(images with at least one valid pixel) x K: the per-image Dice mean."""
    return valid.flatten(1).any(1).sum() * none.shape[1]


def valid_images(options, target, valid, none) -> torch.Tensor:
    """Images with at least one valid pixel: the per-image foreground-map losses."""
    return valid.flatten(1).any(1).sum()


def number_of_entries(options, target, valid, none) -> int:
    """Every entry of the ``"none"`` output (batch Dice: the K classes)."""
    return none.numel()


# ------------------------------------------------------------------------------------------
# the spec
# ------------------------------------------------------------------------------------------
def _no_options(num_classes: int) -> Dict:
    return {}


@dataclass(frozen=True)
class LossSpec:
    """One loss configuration under the contract.

    Attributes
    ----------
    id : str
        Test id, ``<family>`` or ``<family>-<variant>``.
    family : str
        The loss (``"ce"``, ``"focal"``, ...): tests run once per loss use the first spec of
        each family.
    functional : callable or None
        ``f(logits, target, **options, ignore_index=..., reduction=...)``. ``None`` for a
        stateful spec, whose reference is ``reference``.
    module : type
        The ``nn.Module``, built as ``module(**options, **module_options(C),
        ignore_index=..., reduction=...)``.
    options : callable
        ``options(C) -> dict`` of keyword arguments shared by the functional and the module;
        ``C`` is the number of classes (2 for binary logits).
    module_options : callable
        Extra module-only keyword arguments (e.g. ``RecallLoss(num_classes, momentum)``).
    layouts : tuple
        ``"multiclass"`` ((N, C, H, W) logits, C >= 2) and/or ``"binary"`` ((N, 1, H, W)), or
        ``"classification"`` ((N, C) class logits and (N,) labels: a loss of whole images).
    none_shape : callable
        ``none_shape(logits.shape, valid) -> shape`` of ``reduction="none"``.
    mean_denominator : callable
        ``(options, target, valid, none) -> d`` with ``"mean" == "sum" / d`` (and 0 when
        ``d = 0``).
    state : tuple of str
        Buffers a training-mode call updates (``()`` for a stateless loss). A stateful spec
        is tested through fresh modules; gradcheck freezes the state with ``eval()``.
    reference : callable or None
        Stateful specs: ``reference(logits, target, C, ignore_index, reduction)``, the output of
        a fresh module's first training-mode call, computed from the functional API.
    nan : {"nan", "raise"}
        What a NaN logit at a valid pixel gives: a NaN loss, or a ``ValueError`` (losses that
        validate per-pixel values); never a finite number.
    none_differentiable : bool
        ``False`` when the entries of ``reduction="none"`` carry weights held constant in the
        backward pass whose sum only is differentiable (loss max-pooling: Danskin's theorem
        holds for the max, not for each term); gradcheck then checks the map's sum.
    frozen : callable or None
        For a loss with a smooth factor held constant in the backward pass (a stop-gradient,
        e.g. recall loss's official detached focal factor), whose gradient is on purpose not
        the derivative of its value: ``frozen(x0, target, C, ignore_index, reduction) -> f``,
        the loss with that factor frozen at the logits ``x0``. Gradcheck then checks ``f``,
        and that the loss has ``f``'s value and gradient at ``x0``.
    """

    id: str
    family: str
    functional: Optional[Callable]
    module: type
    options: Callable[[int], Dict] = _no_options
    module_options: Callable[[int], Dict] = _no_options
    layouts: Tuple[str, ...] = LAYOUTS
    none_shape: Callable = pixel_map
    mean_denominator: Callable = valid_pixels
    state: Tuple[str, ...] = ()
    reference: Optional[Callable] = None
    nan: str = "nan"
    none_differentiable: bool = True
    frozen: Optional[Callable] = None

    def __str__(self) -> str:  # the pytest id
        return self.id

    def make_module(self, num_classes: int, ignore_index=None, reduction: str = "mean"):
        return self.module(**self.options(num_classes), **self.module_options(num_classes),
                           ignore_index=ignore_index, reduction=reduction)

    def loss(self, num_classes: int, ignore_index=None, reduction: str = "mean", device="cpu") -> Callable:
        """The loss under test: the functional, or a fresh module (on ``device``) for a stateful spec."""
        if self.state:
            return self.make_module(num_classes, ignore_index, reduction).to(device)
        return functools.partial(self.functional, **self.options(num_classes),
                                 ignore_index=ignore_index, reduction=reduction)

    def expected(self, logits, target, num_classes: int, ignore_index=None, reduction: str = "mean"):
        """What the module must return on its first call: the functional, or ``reference``."""
        if self.state:
            return self.reference(logits, target, num_classes, ignore_index, reduction)
        return self.functional(logits, target, **self.options(num_classes),
                               ignore_index=ignore_index, reduction=reduction)


def _class_weights(c: int) -> torch.Tensor:
    return torch.tensor([0.5, 2.0, 1.0, 3.0, 1.5, 0.7][:c], dtype=torch.float64)


RECALL_MOMENTUM = 0.5


def _recall_focal_frozen(x0, target, c, ignore_index, reduction, gamma=1.0):
    r"""Recall loss with the official detached focal factor, as a differentiable function of the
    logits :math:`z` with the factor frozen at :math:`x_0`:
    :math:`z \mapsto w_{y_i}\,(1 - p_i(x_0))^\gamma\,\mathrm{CE}_i(z)`, reduced over the valid pixels."""
    x0 = x0.detach()
    w = recall_weights(x0, target, ignore_index, absent=0.0)
    ce0 = cross_entropy(x0, target, ignore_index=ignore_index, reduction="none")
    factor = (-torch.expm1(-ce0)) ** gamma
    valid = target != ignore_index
    per_pixel = (w[target.masked_fill(~valid, 0)].view_as(ce0) * factor).detach()

    def f(z):
        loss = per_pixel * cross_entropy(z, target, ignore_index=ignore_index, reduction="none")
        if reduction == "none":
            return loss
        total = loss.sum()
        return total / valid.sum().clamp_min(1) if reduction == "mean" else total

    return f


def _recall_momentum_reference(logits, target, c, ignore_index, reduction):
    r"""A fresh ``RecallLoss(momentum=a)`` (``init="first_batch"``, the official start): its first
    batch sets :math:`w = \mathrm{FN}/N` on the classes of the batch, 1 on the others; then the
    class-weighted CE with :math:`w` held constant."""
    w = recall_weights(logits.detach(), target, ignore_index, absent=1.0).double()
    return cross_entropy(logits, target, w, ignore_index, reduction)


def _recall_momentum_ones_reference(logits, target, c, ignore_index, reduction):
    r"""A fresh ``RecallLoss(momentum=a, init="ones")``: :math:`w = a\,\mathrm{FN}/N + (1 - a)\cdot 1`
    on the classes of the batch, 1 on the others."""
    batch = recall_weights(logits.detach(), target, ignore_index, absent=1.0).double()
    w = RECALL_MOMENTUM * batch + (1 - RECALL_MOMENTUM)
    return cross_entropy(logits, target, w, ignore_index, reduction)


def _one_hot_probabilities(logits, target, ignore_index):
    """Class indices as soft-ce's probability target: one-hot vectors ``(N, C, H, W)`` in the logits'
    dtype, all 0 at ignored pixels (the convention of a pixel that does not count). A label outside
    ``[0, C)`` widens the one-hot (a wrong-shape target, which soft-ce must refuse); anything but an
    ``(N, H, W)`` integer tensor is passed on unchanged, for soft-ce to validate."""
    if not isinstance(target, torch.Tensor) or target.ndim != 3 or target.is_floating_point():
        return target
    dtype = logits.dtype if isinstance(logits, torch.Tensor) and logits.is_floating_point() else torch.float64
    c = logits.shape[1] if isinstance(logits, torch.Tensor) and logits.ndim == 4 else 2
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    safe = torch.where(valid, target, torch.zeros_like(target))
    width = max(c, int(safe.max()) + 1) if safe.numel() else c
    onehot = torch.nn.functional.one_hot(safe, width).to(dtype)
    return (onehot * valid.unsqueeze(-1).to(dtype)).permute(0, 3, 1, 2)


def soft_cross_entropy_one_hot(logits, target, ignore_index=None, reduction="mean"):
    """soft-ce on the contract's class-index inputs given as one-hot probabilities."""
    return soft_cross_entropy(logits, _one_hot_probabilities(logits, target, ignore_index), ignore_index, reduction)


class SoftCrossEntropyLossOneHot(SoftCrossEntropyLoss):
    """:class:`SoftCrossEntropyLoss` fed the one-hot probabilities of class-index targets."""

    def forward(self, logits, target):
        return super().forward(logits, _one_hot_probabilities(logits, target, self.ignore_index))


SPECS = [
    LossSpec("ce", "ce", cross_entropy, CrossEntropyLoss),
    LossSpec("ce-weighted", "ce", cross_entropy, CrossEntropyLoss,
             options=lambda c: dict(weight=_class_weights(c))),
    LossSpec("ce-normalize-weights", "ce", cross_entropy, CrossEntropyLoss,
             options=lambda c: dict(weight=_class_weights(c), normalize="weights"),
             mean_denominator=valid_weight_total),
    LossSpec("focal", "focal", focal_loss, FocalLoss, options=lambda c: dict(gamma=2.0)),
    LossSpec("focal-alpha-gamma0.5", "focal", focal_loss, FocalLoss,  # gamma < 1: x^gamma has an infinite slope at 0
             options=lambda c: dict(gamma=0.5, alpha=0.25 if c == 2 else _class_weights(c))),
    LossSpec("dice", "dice", soft_dice_loss, SoftDiceLoss, options=lambda c: dict(smooth=1.0),
             none_shape=image_class_table, mean_denominator=valid_images_times_classes),
    LossSpec("dice-batch-smooth0", "dice", soft_dice_loss, SoftDiceLoss,  # s = 0: the 0/0 cases
             options=lambda c: dict(smooth=0.0, per_image=False),
             none_shape=class_vector, mean_denominator=number_of_entries),
    LossSpec("recall", "recall", recall_loss, RecallLoss, module_options=lambda c: dict(num_classes=c)),
    LossSpec("recall-focal", "recall", recall_loss, RecallLoss, options=lambda c: dict(gamma=1.0),
             module_options=lambda c: dict(num_classes=c), frozen=_recall_focal_frozen),
    LossSpec("recall-focal-attached-nosync", "recall", recall_loss, RecallLoss,  # the non-official options
             options=lambda c: dict(gamma=1.0, detach_focal=False, sync_counts=False),
             module_options=lambda c: dict(num_classes=c)),
    LossSpec("recall-momentum", "recall", None, RecallLoss,
             module_options=lambda c: dict(num_classes=c, momentum=RECALL_MOMENTUM),
             state=("weights", "initialized"), reference=_recall_momentum_reference),
    LossSpec("recall-momentum-ones", "recall", None, RecallLoss,
             module_options=lambda c: dict(num_classes=c, momentum=RECALL_MOMENTUM, init="ones"),
             state=("weights", "initialized"), reference=_recall_momentum_ones_reference),
    LossSpec("lmp", "lmp", loss_max_pooling, LossMaxPooling, options=lambda c: dict(p=1.7, ratio=0.3),
             none_differentiable=False),
    LossSpec("lmp-per-image", "lmp", loss_max_pooling, LossMaxPooling,
             options=lambda c: dict(p=1.3, ratio=0.2, per_image=True),
             none_differentiable=False),
    LossSpec("lmp-top-k", "lmp", loss_max_pooling, LossMaxPooling, options=lambda c: dict(p=1.0, ratio=0.3),
             none_differentiable=False),
    LossSpec("lmp-focal", "lmp", loss_max_pooling, LossMaxPooling,  # a user pixel loss: its values are checked
             options=lambda c: dict(p=3.0, ratio=0.6, pixel_loss=functools.partial(focal_loss, gamma=2.0)),
             nan="raise",
             none_differentiable=False),
    # soft targets: class indices (then plain CE), and the same labels as one-hot probabilities,
    # all 0 at ignored pixels (a family of its own, so that the once-per-loss tests, realistic size
    # and torch.compile, run the probability path too)
    LossSpec("soft-ce", "soft-ce", soft_cross_entropy, SoftCrossEntropyLoss, layouts=("multiclass",)),
    LossSpec("soft-ce-probs", "soft-ce-probs", soft_cross_entropy_one_hot, SoftCrossEntropyLossOneHot,
             layouts=("multiclass",)),
    # image classification: (N, C) logits, (N,) labels, one value per sample
    LossSpec("classification-ce", "classification-ce", classification_cross_entropy, ClassificationCrossEntropy,
             layouts=("classification",), none_shape=per_sample),
    # the foreground-map losses: binary logits, one value per image
    LossSpec("wfm", "wfm", weighted_fmeasure_loss, WeightedFMeasureLoss, layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
    LossSpec("wfm-beta0.3-smooth", "wfm", weighted_fmeasure_loss, WeightedFMeasureLoss,
             options=lambda c: dict(beta2=0.3, smoothing=0.05), layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
    LossSpec("floss", "floss", soft_fmeasure_loss, SoftFMeasureLoss, layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
    LossSpec("structure", "structure", structure_loss, StructureLoss, layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
    LossSpec("structure-intended", "structure", structure_loss, StructureLoss,
             options=lambda c: dict(form="intended"), layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
    LossSpec("hybrid", "hybrid", hybrid_loss, HybridLoss, layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
    LossSpec("bce-wfm", "bce-wfm", bce_weighted_fmeasure_loss, BCEWeightedFMeasureLoss, layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
    LossSpec("bce-wfm-weighted-smooth", "bce-wfm", bce_weighted_fmeasure_loss, BCEWeightedFMeasureLoss,
             options=lambda c: dict(bce_weight=0.5, beta2=0.3, smoothing=0.05), layouts=("binary",),
             none_shape=per_image, mean_denominator=valid_images),
]

FAMILY_SPECS = [s for i, s in enumerate(SPECS) if s.family not in {t.family for t in SPECS[:i]}]  # one per loss

# ------------------------------------------------------------------------------------------
# known defects: strict xfails, keyed by (test key, spec id, parameter values), where the test
# key is the first argument of `cases(...)` in test_contract.py and the parameters follow the
# spec in the order of the test's parametrisation (layout, reduction, dtype, device, ...)
# ------------------------------------------------------------------------------------------
# Empty: the defects of issue 10 that this suite found (soft Dice's NaN -> 0 and its float16
# sums, float16 counts of the "mean" reductions, recall's bfloat16 ties) are fixed; a defect
# found later goes here, with its issue, until it is fixed.
KNOWN_DEFECTS: Dict[Tuple, str] = {}


def known_defect(test: str, spec: LossSpec, *params) -> Tuple:
    """pytest marks for ``(test, spec, *params)``: a strict xfail if it is a known defect."""
    reason = KNOWN_DEFECTS.get((test, spec.id) + tuple(params))
    return (pytest.mark.xfail(strict=True, reason=reason),) if reason else ()
