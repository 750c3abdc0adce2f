r"""One registry of the library's losses: what ``pixelweight-train --loss`` offers.

Every loss a researcher can train with is an entry here: a name, a factory that builds
the ``nn.Module`` from what the data tell (:class:`LossContext`: number of classes,
``ignore_index``, the training split's class counts) and the loss's own options
(:class:`LossOption`: name, type, default, help). The command-line trainer builds its
``--loss`` choices, its ``--loss-option NAME=VALUE`` parsing and its help text from
this table, so a chapter that adds a loss registers it once::

    from pixelweight.losses import LossOption, register_loss

    register_loss(
        "my-loss",
        lambda ctx, beta: MyLoss(beta=beta, ignore_index=ctx.ignore_index),
        options=[LossOption("beta", float, 0.5, "sharpness")],
        help="My loss (Author et al., 2024)",
    )
    loss = build_loss("my-loss", LossContext(num_classes=21, ignore_index=255), beta=0.7)

Registered here (name: loss; options):

- ``ce``: cross-entropy;
- ``inverse-ce``: CE with class weights :math:`w_c = N / (|P| N_c)` of the training split;
- ``median-ce``: CE with median-frequency weights :math:`w_c = \mathrm{median}(f) / f_c`;
- ``focal``: focal loss :math:`-(1-p_t)^\gamma \log p_t`; ``gamma``;
- ``dice``: soft Dice, per image and class; ``smooth``, ``per_image``;
- ``recall``: recall loss, class weights :math:`1 - \mathrm{recall}_c`; ``momentum``, ``gamma``,
  ``init``, ``detach_focal``, ``sync_counts`` (defaults: the official code's behaviour);
- ``lmp``: loss max-pooling of CE or focal pixel losses; ``p``, ``ratio``, ``per_image``,
  ``base``, ``gamma`` (of the focal base).

Binary logits only (``num_classes=1``, a foreground map; one value per image):

- ``wfm``: the Weighted F-measure loss :math:`1 - F^w_\beta` (the exact metric of Margolin
  et al. as a loss, Kolkin et al.); ``beta2``, ``smoothing`` (of the minimum). The
  ground-truth terms are computed at every call unless they come with the batch: train on
  a ``pixelweight.data.WithWFMTerms`` data set with ``pixelweight.train.AuxiliaryTargetsTask``
  (terms computed once per image), or call the loss yourself with ``terms=``;
- ``floss``: FLoss, the soft F-measure (Zhao et al.); ``beta2``;
- ``structure``: F3Net's structure loss (Wei et al.); ``form`` (``published``: unweighted
  BCE as the official code computes it, ``intended``: weighted BCE);
- ``hybrid``: BASNet's hybrid loss BCE + (1 - SSIM) + IoU (Qin et al.);
- ``bce-wfm``: BCE plus the Weighted F-measure loss, ``bce_weight`` BCE + (1 - F^w);
  ``bce_weight``, ``beta2``, ``smoothing``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

import torch
from torch import nn

from .._validation import check_ignore_index, check_int
from .ce import CrossEntropyLoss
from .class_weights import class_weights
from .dice import SoftDiceLoss
from .focal import FocalLoss, focal_loss
from .lmp import LossMaxPooling
from .recall import RecallLoss
from .sod import STRUCTURE_FORMS, HybridLoss, SoftFMeasureLoss, StructureLoss
from .wfm import WeightedFMeasureLoss
from .wfm import BCEWeightedFMeasureLoss

__all__ = [
    "LossContext",
    "LossOption",
    "LossSpec",
    "build_loss",
    "loss_names",
    "loss_spec",
    "parse_loss_options",
    "register_loss",
]

_OPTION_TYPES = (float, int, bool, str)


@dataclasses.dataclass(frozen=True)
class LossOption:
    """One option of a registered loss.

    ``type`` is ``float``, ``int``, ``bool`` or ``str``; ``default`` may be ``None`` when
    ``optional`` (then the text ``none`` also parses to ``None``); ``choices`` restricts a
    ``str`` option.

    Examples
    --------
    >>> from pixelweight.losses import LossOption
    >>> beta = LossOption("beta", float, 0.5, "sharpness")
    >>> beta.parse("2"), beta.describe()
    (2.0, 'beta=0.5: sharpness')
    """

    name: str
    type: type
    default: Any
    help: str
    choices: Optional[Tuple[str, ...]] = None
    optional: bool = False

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"an option name must be a Python identifier, got {self.name!r}")
        if self.type not in _OPTION_TYPES:
            raise ValueError(f"option {self.name!r}: type must be one of float, int, bool, str, got {self.type!r}")
        if self.default is None and not self.optional:
            raise ValueError(f"option {self.name!r} has default None: declare it optional=True")

    def parse(self, text: str) -> Any:
        """The value of ``text`` (command-line form): ``1e-3``, ``true``/``false``, ``none``."""
        if not isinstance(text, str):
            raise TypeError(f"option {self.name!r}: expected a string to parse, got {type(text).__name__}")
        if self.optional and text.strip().lower() == "none":
            return None
        if self.type is bool:
            lowered = text.strip().lower()
            if lowered in ("1", "true", "yes", "on"):
                return True
            if lowered in ("0", "false", "no", "off"):
                return False
            raise ValueError(f"option {self.name!r} must be true or false, got {text!r}")
        if self.type is str:
            value = text.strip()
        else:
            try:
                value = self.type(text)
            except ValueError:
                raise ValueError(f"option {self.name!r} must be a{'n' if self.type is int else ''} "
                                 f"{self.type.__name__}, got {text!r}") from None
        return self.check(value)

    def check(self, value: Any) -> Any:
        """``value`` if it has the option's type (an int is accepted for a float)."""
        if value is None:
            if self.optional:
                return None
            raise ValueError(f"option {self.name!r} cannot be None")
        ok = isinstance(value, self.type) and not (self.type is not bool and isinstance(value, bool))
        if self.type is float and isinstance(value, int) and not isinstance(value, bool):
            value, ok = float(value), True
        if not ok:
            raise TypeError(f"option {self.name!r} must be a {self.type.__name__}, got {type(value).__name__} ({value!r})")
        if self.choices is not None and value not in self.choices:
            raise ValueError(f"option {self.name!r} must be one of {self.choices}, got {value!r}")
        return value

    def describe(self) -> str:
        default = "none" if self.default is None else str(self.default).lower() if self.type is bool else self.default
        choices = f" ({'|'.join(self.choices)})" if self.choices else ""
        return f"{self.name}={default}{choices}: {self.help}"


@dataclasses.dataclass(frozen=True)
class LossContext:
    """What a loss factory may need to know about the task.

    Parameters
    ----------
    num_classes : int
        Logit channels of the model: ``C >= 2`` (multiclass) or 1 (binary).
    ignore_index : int, optional
        Target value of pixels that do not count.
    class_counts : callable, optional
        Returns the training split's pixel count per class (length ``max(C, 2)``); called
        only by the losses that need it (class-weighted CE), so reading a real data set's
        targets happens only then. Never validation data.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import LossContext, build_loss
    >>> ctx = LossContext(num_classes=3, ignore_index=255,
    ...                   class_counts=lambda: torch.tensor([600, 300, 100]))
    >>> build_loss("inverse-ce", ctx).weight  # read from class_counts only when needed
    tensor([0.5556, 1.1111, 3.3333])
    >>> LossContext(num_classes=1).loss_classes  # binary logits: background and foreground
    2
    """

    num_classes: int
    ignore_index: Optional[int] = None
    class_counts: Optional[Callable[[], torch.Tensor]] = None

    def __post_init__(self):
        check_int(self.num_classes, "num_classes", minimum=1)
        check_ignore_index(self.ignore_index)
        if self.class_counts is not None and not callable(self.class_counts):
            raise TypeError("class_counts must be a callable returning the per-class pixel counts")

    @property
    def loss_classes(self) -> int:
        """Classes a loss sees: ``C``, or 2 (background, foreground) for binary logits."""
        return max(self.num_classes, 2)

    def counts(self, for_loss: str) -> torch.Tensor:
        if self.class_counts is None:
            raise ValueError(f"loss {for_loss!r} needs the training split's class counts: "
                             "give LossContext(class_counts=...)")
        return self.class_counts()


@dataclasses.dataclass(frozen=True)
class LossSpec:
    """A registered loss: ``factory(context, **options) -> nn.Module``.

    Examples
    --------
    >>> from pixelweight.losses import loss_spec
    >>> spec = loss_spec("focal")
    >>> spec.option("gamma").default
    2.0
    """

    name: str
    factory: Callable[..., nn.Module]
    options: Tuple[LossOption, ...]
    help: str

    def option(self, name: str) -> LossOption:
        for opt in self.options:
            if opt.name == name:
                return opt
        known = ", ".join(o.name for o in self.options) or "none"
        raise ValueError(f"loss {self.name!r} has no option {name!r} (its options: {known})")

    def describe(self) -> str:
        opts = "; ".join(o.describe() for o in self.options)
        return f"{self.name}: {self.help}" + (f" [options: {opts}]" if opts else "")


_REGISTRY: Dict[str, LossSpec] = {}


def register_loss(name: str, factory: Callable[..., nn.Module], options: Sequence[LossOption] = (),
                  help: str = "", replace: bool = False) -> LossSpec:
    """Add a loss to the registry (and so to ``pixelweight-train --loss``).

    Parameters
    ----------
    name : str
        Lower-case name, letters, digits and ``-`` (e.g. ``"recall"``).
    factory : callable
        ``factory(context: LossContext, **options) -> nn.Module`` taking every option as a
        keyword argument.
    options : sequence of LossOption
        The loss's options, with defaults and help text.
    help : str
        One line naming the loss (and its paper).
    replace : bool
        Allow replacing an existing entry (otherwise a second registration is an error).

    Examples
    --------
    >>> import torch
    >>> from pixelweight.losses import (LossContext, LossOption, build_loss, cross_entropy,
    ...                                 loss_names, register_loss)
    >>> class ScaledCE(torch.nn.Module):
    ...     def __init__(self, scale, ignore_index=None):
    ...         super().__init__()
    ...         self.scale, self.ignore_index = scale, ignore_index
    ...     def forward(self, logits, target):
    ...         return self.scale * cross_entropy(logits, target, ignore_index=self.ignore_index)
    >>> spec = register_loss(
    ...     "scaled-ce",
    ...     lambda ctx, scale: ScaledCE(scale, ignore_index=ctx.ignore_index),
    ...     options=[LossOption("scale", float, 1.0, "multiplies the loss")],
    ...     help="cross-entropy times a constant")
    >>> "scaled-ce" in loss_names()
    True
    >>> build_loss("scaled-ce", LossContext(num_classes=3), scale=0.5).scale
    0.5
    >>> from pixelweight.losses import registry  # (leave the registry as it was)
    >>> _ = registry._REGISTRY.pop("scaled-ce")
    """
    if not isinstance(name, str) or not name or not all(c.isalnum() or c == "-" for c in name) or name != name.lower():
        raise ValueError(f"a loss name must be lower-case letters, digits and '-', got {name!r}")
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    options = tuple(options)
    if not all(isinstance(o, LossOption) for o in options):
        raise TypeError("options must be LossOption instances")
    if len({o.name for o in options}) != len(options):
        raise ValueError(f"loss {name!r} declares an option twice")
    if name in _REGISTRY and not replace:
        raise ValueError(f"a loss named {name!r} is already registered (pass replace=True to replace it)")
    spec = LossSpec(name, factory, options, str(help))
    _REGISTRY[name] = spec
    return spec


def loss_names() -> Tuple[str, ...]:
    """Names of every registered loss, in registration order.

    Examples
    --------
    >>> from pixelweight.losses import loss_names
    >>> loss_names()
    ('ce', 'inverse-ce', 'median-ce', 'focal', 'dice', 'recall', 'lmp', 'wfm', 'floss', 'structure', 'hybrid', 'bce-wfm', 'classification-ce', 'soft-ce')
    """
    return tuple(_REGISTRY)


def loss_spec(name: str) -> LossSpec:
    """The registry entry of ``name``.

    Examples
    --------
    >>> from pixelweight.losses import loss_spec
    >>> spec = loss_spec("dice")
    >>> spec.help
    'soft Dice loss (Milletari et al., 3DV 2016)'
    >>> [(o.name, o.default) for o in spec.options]
    [('smooth', 1.0), ('per_image', True)]
    """
    if name not in _REGISTRY:
        raise ValueError(f"unknown loss {name!r}; registered: {', '.join(_REGISTRY)}")
    return _REGISTRY[name]


def parse_loss_options(name: str, items: Sequence[str]) -> Dict[str, Any]:
    """``["gamma=1", "p=2.5"]`` → ``{"gamma": 1.0, "p": 2.5}`` for the loss ``name``,
    each value parsed by its :class:`LossOption`; an unknown or repeated option is an error.

    Examples
    --------
    >>> from pixelweight.losses import parse_loss_options
    >>> parse_loss_options("lmp", ["p=2.5", "per_image=true"])
    {'p': 2.5, 'per_image': True}
    """
    spec = loss_spec(name)
    out: Dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"a loss option must read NAME=VALUE, got {item!r}")
        if key in out:
            raise ValueError(f"loss option {key!r} given twice")
        out[key] = spec.option(key).parse(text)
    return out


def build_loss(name: str, context: LossContext, **options: Any) -> nn.Module:
    """Build the registered loss ``name`` for ``context`` with ``options`` (the others take
    their defaults). Unknown options and values of the wrong type raise; each loss's
    constructor validates the values.

    Examples
    --------
    >>> from pixelweight.losses import LossContext, build_loss
    >>> loss = build_loss("recall", LossContext(num_classes=3, ignore_index=255), momentum=0.5)
    >>> loss.num_classes, loss.momentum, loss.ignore_index, loss.init
    (3, 0.5, 255, 'first_batch')
    """
    if not isinstance(context, LossContext):
        raise TypeError(f"context must be a LossContext, got {type(context).__name__}")
    spec = loss_spec(name)
    values = {o.name: o.default for o in spec.options}
    for key, value in options.items():
        values[key] = spec.option(key).check(value)
    loss = spec.factory(context, **values)
    if not isinstance(loss, nn.Module):
        raise TypeError(f"the factory of loss {name!r} returned {type(loss).__name__}, not an nn.Module")
    return loss


# ----------------------------------------------------------------------------------------
# the library's losses
# ----------------------------------------------------------------------------------------
def _weighted_ce(method: str):
    def factory(ctx: LossContext) -> nn.Module:
        weight = class_weights(counts=ctx.counts(f"{method}-ce"), method=method)
        if weight.numel() != ctx.loss_classes:
            raise ValueError(f"class_counts gave {weight.numel()} values for {ctx.loss_classes} classes")
        return CrossEntropyLoss(weight=weight, ignore_index=ctx.ignore_index)

    return factory


def _lmp(ctx: LossContext, p: float, ratio: float, per_image: bool, base: str, gamma: float) -> nn.Module:
    if base == "ce" and gamma != 2.0:
        raise ValueError("option 'gamma' of loss 'lmp' applies to base=focal only")
    pixel_loss = None if base == "ce" else functools.partial(focal_loss, gamma=gamma)
    return LossMaxPooling(p=p, ratio=ratio, per_image=per_image, ignore_index=ctx.ignore_index,
                          pixel_loss=pixel_loss)


register_loss("ce", lambda ctx: CrossEntropyLoss(ignore_index=ctx.ignore_index),
              help="cross-entropy")
register_loss("inverse-ce", _weighted_ce("inverse"),
              help="cross-entropy with inverse-frequency class weights N / (|P| N_c) of the training split")
register_loss("median-ce", _weighted_ce("median"),
              help="cross-entropy with median-frequency class weights median(f) / f_c of the training split")
register_loss(
    "focal",
    lambda ctx, gamma: FocalLoss(gamma=gamma, ignore_index=ctx.ignore_index),
    options=[LossOption("gamma", float, 2.0, "focusing exponent of (1 - p_t)^gamma")],
    help="focal loss (Lin et al., ICCV 2017)",
)
register_loss(
    "dice",
    lambda ctx, smooth, per_image: SoftDiceLoss(smooth=smooth, ignore_index=ctx.ignore_index, per_image=per_image),
    options=[
        LossOption("smooth", float, 1.0, "smoothing constant s >= 0 added to numerator and denominator"),
        LossOption("per_image", bool, True, "one Dice per image and class (false: batch Dice)"),
    ],
    help="soft Dice loss (Milletari et al., 3DV 2016)",
)
register_loss(
    "recall",
    lambda ctx, momentum, gamma, init, detach_focal, sync_counts: RecallLoss(
        ctx.loss_classes, momentum=momentum, gamma=gamma, ignore_index=ctx.ignore_index, init=init,
        detach_focal=detach_focal, sync_counts=sync_counts),
    options=[
        LossOption("momentum", float, None, "moving-average factor in (0, 1] of the class weights "
                   "(none: each batch's own weights)", optional=True),
        LossOption("gamma", float, 0.0, "focal exponent (0: plain recall loss)"),
        LossOption("init", str, "first_batch", "start of the moving average: the first batch's weights "
                   "(official) or 1 (plain CE)", choices=("first_batch", "ones")),
        LossOption("detach_focal", bool, True, "no gradient through the focal factor (official; "
                   "false: through it, as focal loss)"),
        LossOption("sync_counts", bool, True, "under torch.distributed, all-reduce the class counts "
                   "before the weights (official: counts of the whole batch)"),
    ],
    help="recall loss, class weights 1 - recall_c (Tian et al., ICRA 2022)",
)
register_loss(
    "lmp",
    _lmp,
    options=[
        LossOption("p", float, 1.7, "norm p in [1, inf] of the weight budget (1: top-k, inf: plain mean)"),
        LossOption("ratio", float, 0.3, "fraction rho in (0, 1] of pixels m = rho n"),
        LossOption("per_image", bool, False, "one pooling problem per image (false: over the batch)"),
        LossOption("base", str, "ce", "the per-pixel loss that is pooled", choices=("ce", "focal")),
        LossOption("gamma", float, 2.0, "focusing exponent of the focal base loss (base=focal only)"),
    ],
    help="loss max-pooling (Rota Bulo et al., CVPR 2017)",
)


def _binary_only(name: str, build: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """A factory that builds ``build(ctx, **options)`` for binary logits and refuses others."""

    def factory(ctx: LossContext, **options: Any) -> nn.Module:
        if ctx.num_classes != 1:
            raise ValueError(f"loss {name!r} takes binary logits (a foreground map, num_classes=1), "
                             f"got num_classes={ctx.num_classes}")
        return build(ctx, **options)

    return factory


register_loss(
    "wfm",
    _binary_only("wfm", lambda ctx, beta2, smoothing: WeightedFMeasureLoss(
        beta2=beta2, smoothing=smoothing, ignore_index=ctx.ignore_index)),
    options=[
        LossOption("beta2", float, 1.0, "beta^2 of F^w (1 in Margolin's code)"),
        LossOption("smoothing", float, 0.0, "0: exact min(E, E_A) with its subgradient; s > 0: a smooth "
                   "minimum within s/2 of it"),
    ],
    help="Weighted F-measure loss 1 - F^w, the exact metric (Margolin et al., CVPR 2014; as a loss: "
         "Kolkin et al., ICCV 2017); binary logits",
)
register_loss(
    "floss",
    _binary_only("floss", lambda ctx, beta2: SoftFMeasureLoss(beta2=beta2, ignore_index=ctx.ignore_index)),
    options=[LossOption("beta2", float, 0.3, "beta^2 of the soft F-measure (0.3 in salient-object detection)")],
    help="FLoss, the soft F-measure (Zhao et al., ICCV 2019); binary logits",
)
register_loss(
    "structure",
    _binary_only("structure", lambda ctx, form: StructureLoss(form=form, ignore_index=ctx.ignore_index)),
    options=[LossOption("form", str, "published", "published: unweighted BCE (the official code); intended: "
                        "edge-weighted BCE", choices=STRUCTURE_FORMS)],
    help="F3Net's structure loss, BCE + edge-weighted IoU (Wei et al., AAAI 2020); binary logits",
)
register_loss(
    "hybrid",
    _binary_only("hybrid", lambda ctx: HybridLoss(ignore_index=ctx.ignore_index)),
    help="BASNet's hybrid loss BCE + (1 - SSIM) + IoU (Qin et al., CVPR 2019); binary logits",
)
register_loss(
    "bce-wfm",
    _binary_only("bce-wfm", lambda ctx, bce_weight, beta2, smoothing: BCEWeightedFMeasureLoss(
        bce_weight=bce_weight, beta2=beta2, smoothing=smoothing, ignore_index=ctx.ignore_index)),
    options=[
        LossOption("bce_weight", float, 1.0, "weight of the BCE term (the F^w term has weight 1)"),
        LossOption("beta2", float, 1.0, "beta^2 of F^w (1 in Margolin's code)"),
        LossOption("smoothing", float, 0.0, "0: exact min(E, E_A) with its subgradient; s > 0: a smooth "
                   "minimum within s/2 of it"),
    ],
    help="BCE plus the Weighted F-measure loss, bce_weight * BCE + (1 - F^w); binary logits",
)
