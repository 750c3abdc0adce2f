r"""What every chapter shares: typed specs of its data, model and losses, its stages and
budgets, and the drivers that train a stage over its seeds and tabulate the results.

A chapter module (:mod:`pixelweight.chapters.recall`, ...) declares its stages as data::

    STAGES = {
        "headline": Stage(
            "headline", "CE against recall loss on a Zipf long tail",
            scales={"ci": Scale(get_profile("ci", steps=270), DataSpec(size=32, options={...}),
                                ModelSpec(width=16)),
                    "full": Scale(get_profile("full"), DataSpec(), ModelSpec(width=32))},
            arms=(Arm("CE", "ce"), Arm("recall (batch)", "recall"))),
    }

and a notebook asks for one of them at its profile::

    setup = recall.setup("headline", profile, device=device, results_dir=results_dir,
                         chapter=chapter)
    runs = setup.run()            # {arm label: [TrainResult per seed]}

The :class:`Setup` builds the splits (fixed data seeds, ``DATA_SEEDS``), the model and
metric factories, each arm's loss (through :mod:`pixelweight.losses.registry`, so a record
names the loss and its options) and the record config, which the specs write themselves:
a record holds what is needed to rebuild its run.
"""

from __future__ import annotations

import dataclasses
import types
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

from torch import nn

from ..profiles import Profile
from ..train import TrainConfig, TrainResult, seed_everything, train

__all__ = [
    "DATA_SEEDS",
    "PLATEAU",
    "Splits",
    "DataSpec",
    "ModelSpec",
    "Arm",
    "Scale",
    "Stage",
    "Setup",
    "train_config",
    "run_seeds",
    "metric_frame",
    "per_class_frame",
    "group_metric_frame",
    "history_curve",
]

#: Data seeds, fixed and separate from the training seeds: every training seed of every arm
#: sees the same images, so paired comparisons across losses are fair.
DATA_SEEDS = {"train": 1000, "val": 2000, "test": 3000}

_RESERVED_DATA = ("split", "num_samples", "seed", "size")

#: The plateau rule of the converged (``full``) scales: validation mIoU within 0.01 over the
#: last quarter of training (:func:`pixelweight.train.measure_plateau`), recorded in each run.
PLATEAU = {"plateau_metric": "miou", "plateau_window": 0.25, "plateau_tolerance": 0.01}


def _frozen(mapping: Optional[Mapping[str, Any]], name: str) -> Mapping[str, Any]:
    if mapping is None:
        return types.MappingProxyType({})
    if not isinstance(mapping, Mapping):
        raise TypeError(f"{name} must be a mapping, got {type(mapping).__name__}")
    for key in mapping:
        if not isinstance(key, str):
            raise TypeError(f"{name} keys must be strings, got {key!r}")
    return types.MappingProxyType(dict(mapping))


def _plain(value: Any) -> Any:
    """A JSON-friendly copy (tuples become lists), as records store configs."""
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    return value


@dataclasses.dataclass
class Splits:
    """Train/validation/test datasets and the configuration that made them."""

    train: Any
    val: Any
    test: Any
    config: Dict[str, Any]


@dataclasses.dataclass(frozen=True)
class DataSpec:
    """A data set of :mod:`pixelweight.data` and its arguments, without the split.

    Parameters
    ----------
    dataset : str
        A class of :mod:`pixelweight.data` taking ``split``, ``num_samples``, ``size`` and
        ``seed`` (``"DigitScenes"``, ``"SalientDigits"``, ``"ClutteredDigits"``).
    size : int
        Side of the square canvases, in pixels.
    options : mapping
        The class's other keyword arguments (e.g. ``imbalance``, ``num_digits``).
    """

    dataset: str = "DigitScenes"
    size: int = 64
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        from .. import data

        if not isinstance(self.dataset, str) or not isinstance(getattr(data, self.dataset, None), type):
            raise ValueError(f"dataset must name a class of pixelweight.data, got {self.dataset!r}")
        if isinstance(self.size, bool) or not isinstance(self.size, int) or self.size < 1:
            raise ValueError(f"size must be a positive int, got {self.size!r}")
        options = _frozen(self.options, "options")
        reserved = sorted(set(options) & set(_RESERVED_DATA))
        if reserved:
            raise ValueError(f"options {reserved} are set by the spec and the budget; do not pass them")
        object.__setattr__(self, "options", options)

    @property
    def dataset_class(self) -> type:
        from .. import data

        return getattr(data, self.dataset)

    def replace(self, **options: Any) -> "DataSpec":
        """The same spec with some ``options`` replaced (e.g. ``imbalance=2.0``)."""
        return dataclasses.replace(self, options={**self.options, **options})

    def build(self, split: str, num_samples: int, seed: Optional[int] = None):
        """One split: ``seed`` defaults to the split's ``DATA_SEEDS`` entry."""
        if split not in DATA_SEEDS:
            raise ValueError(f"split must be one of {sorted(DATA_SEEDS)}, got {split!r}")
        seed = DATA_SEEDS[split] if seed is None else seed
        return self.dataset_class(split=split, num_samples=num_samples, size=self.size, seed=seed,
                                  **self.options)

    def splits(self, profile: Profile) -> Splits:
        """The train/val/test splits at the profile's sample counts. They draw from disjoint
        source digits and use the fixed data seeds (``DATA_SEEDS``)."""
        if not isinstance(profile, Profile):
            raise TypeError(f"profile must be a Profile, got {type(profile).__name__}")
        sizes = {"train": profile.train_samples, "val": profile.val_samples, "test": profile.test_samples}
        sets = {split: self.build(split, n) for split, n in sizes.items()}
        config = {"dataset": self.dataset, **{f"{k}_config": v.config for k, v in sets.items()}}
        return Splits(config=config, **sets)

    def to_dict(self) -> Dict[str, Any]:
        return {"dataset": self.dataset, "size": self.size, "options": _plain(self.options)}


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """A model of :mod:`pixelweight.models` (a :class:`~pixelweight.models.UNet` by default).

    ``build(num_classes)`` is called after the seed is set, so initialisation is seeded.
    """

    name: str = "UNet"
    in_channels: int = 1
    width: int = 16
    depth: int = 3
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        from .. import models

        if not isinstance(self.name, str) or not isinstance(getattr(models, self.name, None), type):
            raise ValueError(f"name must be a model class of pixelweight.models, got {self.name!r}")
        for field in ("in_channels", "width"):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{field} must be a positive int, got {value!r}")
        if isinstance(self.depth, bool) or not isinstance(self.depth, int) or self.depth < 0:
            raise ValueError(f"depth must be a non-negative int, got {self.depth!r}")
        object.__setattr__(self, "options", _frozen(self.options, "options"))

    def build(self, num_classes: int) -> nn.Module:
        from .. import models

        return getattr(models, self.name)(in_channels=self.in_channels, num_classes=num_classes,
                                          width=self.width, depth=self.depth, **self.options)

    def describe(self) -> str:
        """E.g. "width-16 U-Net"."""
        name = "U-Net" if self.name == "UNet" else self.name
        return f"width-{self.width} {name}"

    def to_dict(self) -> Dict[str, Any]:
        return {"name": self.name, "in_channels": self.in_channels, "width": self.width,
                "depth": self.depth, **_plain(dict(self.options))}


@dataclasses.dataclass(frozen=True)
class Arm:
    """One arm of an experiment: a label for the book, a run name for its records and a loss
    of :mod:`pixelweight.losses.registry` with its options.

    Parameters
    ----------
    label : str
        How the book names the arm (e.g. "recall (moving average)").
    loss : str
        A registered loss name (:func:`pixelweight.losses.loss_names`).
    options : mapping
        The loss's options (checked against the registry).
    run : str, optional
        The run name's suffix in records (default: ``loss``); the record is named
        ``<stage prefix>-<run>``.
    model : ModelSpec, optional
        The model this arm trains, when a stage compares models (e.g. a smaller U-Net with
        the same loss); default: the stage's scale's model.
    """

    label: str
    loss: str
    options: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    run: str = ""
    model: Optional[ModelSpec] = None

    def __post_init__(self):
        from ..losses.registry import loss_spec

        if not isinstance(self.label, str) or not self.label.strip():
            raise ValueError(f"label must be a non-empty string, got {self.label!r}")
        spec = loss_spec(self.loss)  # raises on an unknown loss
        options = _frozen(self.options, "options")
        for key, value in options.items():
            spec.option(key).check(value)
        object.__setattr__(self, "options", options)
        if not self.run:
            object.__setattr__(self, "run", self.loss)
        if self.model is not None and not isinstance(self.model, ModelSpec):
            raise TypeError(f"model must be a ModelSpec or None, got {type(self.model).__name__}")

    def build_loss(self, num_classes: int, class_counts: Optional[Callable] = None,
                   ignore_index: Optional[int] = None) -> nn.Module:
        from ..losses.registry import LossContext, build_loss

        context = LossContext(num_classes=num_classes, ignore_index=ignore_index, class_counts=class_counts)
        return build_loss(self.loss, context, **self.options)

    def to_dict(self) -> Dict[str, Any]:
        out = {"label": self.label, "name": self.loss, "options": _plain(dict(self.options))}
        if self.model is not None:  # (records hold the model they trained under "model" too)
            out["model"] = self.model.to_dict()
        return out


@dataclasses.dataclass(frozen=True)
class Scale:
    """A stage at one profile: the budget (a :class:`~pixelweight.profiles.Profile`), the data
    and the model, and any :class:`~pixelweight.train.TrainConfig` overrides.

    ``arm_budgets`` gives an arm (by its run name, ``Arm.run``) its own number of steps at
    this scale, e.g. ``{"highres": {"steps": 1200, "eval_every": 75}}``: an arm that reaches its
    plateau much earlier than the others and costs much more a step (a converged budget trains
    each run to its plateau; the arms still share the data, the seeds, the batch size and the
    learning rate, so comparisons stay paired). Only ``steps`` and ``eval_every`` may differ.

    ``shared_variants`` names data variants of the stage whose runs at this scale are another
    stage's, e.g. ``{"d12": headline}``: a sweep point that is exactly the headline experiment
    (same data, model, budget and arms by run name) is not trained twice. The runner skips it
    and :meth:`Setup.committed_runs` reads that stage's records for it; they must be the same
    runs (:meth:`Setup.full_config`), or reading them fails.
    """

    profile: Profile
    data: DataSpec = DataSpec()
    model: ModelSpec = ModelSpec()
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    arm_budgets: Mapping[str, Mapping[str, int]] = dataclasses.field(default_factory=dict)
    shared_variants: Mapping[str, "Stage"] = dataclasses.field(default_factory=dict)

    #: The profile fields an arm's own budget may set (``arm_budgets``).
    ARM_BUDGET_FIELDS = ("steps", "eval_every")

    def __post_init__(self):
        if not isinstance(self.profile, Profile):
            raise TypeError(f"profile must be a Profile, got {type(self.profile).__name__}")
        if not isinstance(self.data, DataSpec):
            raise TypeError(f"data must be a DataSpec, got {type(self.data).__name__}")
        if not isinstance(self.model, ModelSpec):
            raise TypeError(f"model must be a ModelSpec, got {type(self.model).__name__}")
        train_fields = {f.name for f in dataclasses.fields(TrainConfig)}
        train_opts = _frozen(self.train, "train")
        unknown = sorted(set(train_opts) - train_fields)
        if unknown:
            raise ValueError(f"unknown TrainConfig fields {unknown}")
        owned = sorted(set(train_opts) & {"seed", "device", "steps", "batch_size", "lr"})
        if owned:
            raise ValueError(f"train overrides {owned} belong to the profile or the run")
        object.__setattr__(self, "train", train_opts)
        budgets = _frozen(self.arm_budgets, "arm_budgets")
        for run, fields in budgets.items():
            fields = _frozen(fields, f"arm_budgets[{run!r}]")
            unknown = sorted(set(fields) - set(self.ARM_BUDGET_FIELDS))
            if unknown or not fields:
                raise ValueError(f"arm_budgets[{run!r}] may set {list(self.ARM_BUDGET_FIELDS)} only, got "
                                 f"{sorted(fields)}")
            own = dataclasses.replace(self.profile, **fields)  # the profile checks the values
            if "eval_every" in train_opts:
                raise ValueError("train overrides eval_every, which arm_budgets sets per arm: put it in the profile")
            if train_opts.get("warmup_steps", 0) >= own.steps:
                raise ValueError(f"the warm-up of {train_opts['warmup_steps']} steps is not shorter than arm "
                                 f"{run!r}'s {own.steps} steps")
        object.__setattr__(self, "arm_budgets", types.MappingProxyType(
            {run: _frozen(fields, run) for run, fields in budgets.items()}))
        shared = _frozen(self.shared_variants, "shared_variants")
        for variant, stage in shared.items():
            if not isinstance(stage, Stage):
                raise TypeError(f"shared_variants[{variant!r}] must be a Stage, got {type(stage).__name__}")
        object.__setattr__(self, "shared_variants", shared)

    def profile_of(self, arm: Optional["Arm"] = None) -> Profile:
        """The budget ``arm`` trains with at this scale: the profile, with the arm's own steps
        (``arm_budgets``) where it has them."""
        if arm is None:
            return self.profile
        if not isinstance(arm, Arm):
            raise TypeError(f"arm must be an Arm or None, got {type(arm).__name__}")
        fields = self.arm_budgets.get(arm.run)
        return dataclasses.replace(self.profile, **fields) if fields else self.profile

    def to_dict(self) -> Dict[str, Any]:
        out = {"profile": self.profile.to_dict(), "data": self.data.to_dict(), "model": self.model.to_dict(),
               "train": _plain(dict(self.train))}
        if self.arm_budgets:
            out["arm_budgets"] = {run: dict(fields) for run, fields in self.arm_budgets.items()}
        return out


@dataclasses.dataclass(frozen=True)
class Stage:
    """One experiment of a chapter: its scale at each profile and its arms.

    Parameters
    ----------
    name : str
        The stage's key in its chapter (e.g. ``"headline"``).
    description : str
        One line: what the stage compares.
    scales : mapping
        ``{"ci": Scale, "full": Scale}``: the budget, data and model at each profile.
    arms : sequence of Arm
        What it compares (may be empty for a stage whose notebook builds its runs).
    prefix : str
        Records are named ``<prefix>-<arm.run>`` (e.g. ``"ch2"`` → ``ch2-recall``).
    num_classes : int
        Output channels of the model (11 for ``DigitScenes``).
    variants : mapping, optional
        Named variants of the data (``{"s0": {"imbalance": 0.0}, ...}``: options replaced in
        the scale's :class:`DataSpec`); each arm runs on each variant, recorded as
        ``<prefix>-<variant>-<arm.run>`` (:meth:`Setup.variant`).
    on_log : callable, optional
        The harness's ``on_log`` hook for every run of the stage (e.g. the recall-loss
        weights), so that the notebook and ``python -m pixelweight.results run`` record the
        same history.
    task : pixelweight.train.Task, optional
        What the harness does with a batch in every run of the stage (default:
        segmentation), e.g. :class:`~pixelweight.train.AuxiliaryTargetsTask` for batches
        that carry cached ground-truth terms.
    dataset_wrapper : callable, optional
        Applied to each split when the setup builds it (``wrapper(dataset) -> dataset``),
        e.g. :class:`~pixelweight.data.WithWFMTerms`, which computes the Weighted-F-measure
        terms of every mask once and serves them with the batch.

    Notes
    -----
    With ``num_classes=1`` (binary logits, a foreground map) the setup evaluates with
    :class:`~pixelweight.metrics.ForegroundMetrics` (F^w, MAE, max F, S-measure).
    """

    name: str
    description: str
    scales: Mapping[str, Scale]
    arms: Sequence[Arm] = ()
    prefix: str = ""
    num_classes: int = 11
    variants: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    on_log: Optional[Callable] = None
    task: Any = None
    dataset_wrapper: Optional[Callable[[Any], Any]] = None

    def __post_init__(self):
        if not isinstance(self.name, str) or not self.name.isidentifier():
            raise ValueError(f"a stage name is an identifier, got {self.name!r}")
        scales = _frozen(self.scales, "scales")
        if not scales:
            raise ValueError(f"stage {self.name!r} needs at least one scale")
        for key, scale in scales.items():
            if not isinstance(scale, Scale):
                raise TypeError(f"scale {key!r} of stage {self.name!r} must be a Scale")
            if scale.profile.name != key:
                raise ValueError(f"scale {key!r} of stage {self.name!r} holds profile {scale.profile.name!r}")
        object.__setattr__(self, "scales", scales)
        arms = tuple(self.arms)
        for arm in arms:
            if not isinstance(arm, Arm):
                raise TypeError(f"arms must be Arm objects, got {type(arm).__name__}")
        for what in ("label", "run"):
            values = [getattr(a, what) for a in arms]
            if len(set(values)) != len(values):
                raise ValueError(f"stage {self.name!r} lists an arm {what} twice: {values}")
        object.__setattr__(self, "arms", arms)
        for key, scale in scales.items():
            unknown = sorted(set(scale.arm_budgets) - {a.run for a in arms})
            if unknown:
                raise ValueError(f"scale {key!r} of stage {self.name!r} gives a budget to {unknown}, which are not "
                                 f"the run names of its arms {[a.run for a in arms]}")
        variants = _frozen(self.variants, "variants")
        for key, scale in scales.items():
            for variant, other in scale.shared_variants.items():
                if variant not in variants:
                    raise ValueError(f"scale {key!r} of stage {self.name!r} shares variant {variant!r}, which it does "
                                     f"not have; it has {sorted(variants)}")
                if other is self or other.name == self.name or key not in other.scales or other.variants:
                    raise ValueError(f"scale {key!r} of stage {self.name!r} shares variant {variant!r} with stage "
                                     f"{other.name!r}, which must be another stage with a {key!r} scale and no "
                                     "data variants of its own")
                missing = sorted({a.run for a in arms} - {a.run for a in other.arms})
                if missing:
                    raise ValueError(f"stage {other.name!r} has no arm with run name {missing}: it cannot share "
                                     f"variant {variant!r} of stage {self.name!r}")
        for key, options in variants.items():
            if not key or not key.replace(".", "").replace("_", "").isalnum():
                raise ValueError(f"a variant name is a short run-name part such as 's1', got {key!r}")
            _frozen(options, f"variant {key!r}")
        object.__setattr__(self, "variants", variants)
        if self.on_log is not None and not callable(self.on_log):
            raise TypeError("on_log must be callable")
        from ..train import Task

        if self.task is not None and not isinstance(self.task, Task):
            raise TypeError(f"task must be a pixelweight.train.Task, got {type(self.task).__name__}")
        if self.dataset_wrapper is not None and not callable(self.dataset_wrapper):
            raise TypeError("dataset_wrapper must be callable (dataset -> dataset)")
        if isinstance(self.num_classes, bool) or not isinstance(self.num_classes, int) or self.num_classes < 1:
            raise ValueError(f"num_classes must be a positive int, got {self.num_classes!r}")

    def scale(self, profile: str) -> Scale:
        if profile not in self.scales:
            raise ValueError(f"stage {self.name!r} has no profile {profile!r}; it has {sorted(self.scales)}")
        return self.scales[profile]


def train_config(profile: Profile, seed: int, device: str = "auto", **overrides: Any) -> TrainConfig:
    """The :class:`~pixelweight.train.TrainConfig` a profile implies for one seed (fields overridable)."""
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
    task: Any = None,
    seeds: Optional[Sequence[int]] = None,
) -> List[TrainResult]:
    """Train ``build_model()`` with ``build_loss()`` once per seed of ``profile``.

    ``task`` (a :class:`~pixelweight.train.Task`; default: segmentation) says what the
    harness does with a batch (several model outputs, auxiliary targets); ``seeds`` runs a
    subset of the profile's seeds (e.g. one per process), recording the profile unchanged.

    Each seed is set (:func:`~pixelweight.train.seed_everything`) before the model and the
    loss are built, so initialisation is seeded too. Validation and test metrics come from
    ``metrics_factory``. With ``results_dir`` each run writes its record there; the record's
    config holds the profile, the data configuration and ``record_config``.
    """
    if not callable(build_model) or not callable(build_loss):
        raise TypeError("build_model and build_loss must be callables returning a model / a loss")
    if not isinstance(profile, Profile):
        raise TypeError(f"profile must be a Profile, got {type(profile).__name__}")
    if seeds is None:
        seeds = profile.seeds
    unknown = sorted(set(seeds) - set(profile.seeds))
    if unknown:
        raise ValueError(f"seeds {unknown} are not seeds of profile {profile.name!r} {profile.seeds}")
    results = []
    for seed in seeds:
        seed_everything(seed)
        model = build_model()
        loss = build_loss()
        config = train_config(profile, seed, device, **dict(train_overrides or {}))
        extra = {"profile": profile.to_dict(), "data": splits.config, **dict(record_config or {})}
        results.append(
            train(model, loss, splits.train, config, metrics_factory=metrics_factory,
                  val_set=splits.val, test_set=splits.test,
                  name=name if results_dir is not None else None, results_dir=results_dir,
                  record_config=extra, on_log=on_log, task=task)
        )
    return results


class Setup:
    """A chapter's stage at one profile, ready to run: what a notebook gets from
    ``chapter.setup(stage, profile)``.

    Attributes
    ----------
    chapter : str
        The chapter's folder under ``notebooks/`` (e.g. ``"02_recall"``).
    stage : Stage
    scale : Scale
        The stage's scale at this profile; ``profile``, ``data`` and ``model`` are its parts.
    device, results_dir
        Where to train and where records go (``None``: no records).
    """

    #: The keys of a record's config (``"section.key"``, e.g. ``"model.blur_warmup_steps"``)
    #: whose values this setup derives from the budget (the steps): a rerun at another budget,
    #: as the trace of a record makes (``python -m pixelweight.results trace``), differs from
    #: the record there and nowhere else. A subclass that derives one declares it.
    BUDGET_DERIVED: Tuple[str, ...] = ()

    def __init__(self, chapter: str, stage: Stage, profile: str, *, device: str = "auto",
                 results_dir: Optional[str] = None, data: Optional[DataSpec] = None, variant: str = ""):
        if not isinstance(stage, Stage):
            raise TypeError(f"stage must be a Stage, got {type(stage).__name__}")
        if variant and variant not in stage.variants:
            raise ValueError(f"stage {stage.name!r} has no variant {variant!r}; it has {sorted(stage.variants)}")
        self.chapter = chapter
        self.stage = stage
        self.variant_name = variant
        self.scale = stage.scale(profile)
        if data is None:
            data = self.scale.data.replace(**stage.variants[variant]) if variant else self.scale.data
        self.data = data
        if not isinstance(self.data, DataSpec):
            raise TypeError(f"data must be a DataSpec, got {type(self.data).__name__}")
        self.device = device
        self.results_dir = results_dir
        self._splits: Optional[Splits] = None

    # -- what the notebook reads ----------------------------------------------------
    @property
    def profile(self) -> Profile:
        return self.scale.profile

    @property
    def model(self) -> ModelSpec:
        return self.scale.model

    @property
    def arms(self) -> Tuple[Arm, ...]:
        return tuple(self.stage.arms)

    @property
    def class_names(self) -> List[str]:
        names = getattr(self.data.dataset_class, "class_names", None)
        return list(names) if names is not None else [str(c) for c in range(self.stage.num_classes)]

    @property
    def num_classes(self) -> int:
        return self.stage.num_classes

    @property
    def splits(self) -> Splits:
        """The train/val/test splits (built on first use, then kept)."""
        if self._splits is None:
            splits = self.data.splits(self.profile)
            wrap = self.stage.dataset_wrapper
            if wrap is not None:  # e.g. cached ground-truth terms served with the batch
                splits = Splits(train=wrap(splits.train), val=wrap(splits.val), test=wrap(splits.test),
                                config=splits.config)
            self._splits = splits
        return self._splits

    def with_data(self, **options: Any) -> "Setup":
        """The same stage on data with some options replaced (e.g. another ``imbalance``)."""
        return Setup(self.chapter, self.stage, self.profile.name, device=self.device,
                     results_dir=self.results_dir, data=self.data.replace(**options), variant=self.variant_name)

    def variant(self, name: str) -> "Setup":
        """The stage on its data variant ``name`` (a key of ``Stage.variants``; ``""``:
        the scale's own data); runs are recorded as ``<prefix>-<name>-<arm.run>``."""
        if not name:
            return self
        return Setup(self.chapter, self.stage, self.profile.name, device=self.device,
                     results_dir=self.results_dir, variant=name)

    def budget(self) -> str:
        """The training budget in a few words (:meth:`pixelweight.profiles.Profile.budget`), with
        the arms that train for their own number of steps (``Scale.arm_budgets``)."""
        return _with_arm_budgets(self.profile.budget(), self.profile, self.arm_budget_text())

    def arm_budget_text(self, arms: Optional[Sequence[Arm]] = None) -> str:
        """The arms (of ``arms``, default all) with their own number of steps at this scale, e.g.
        "high-res: 1200 steps"; empty when every one trains for the profile's."""
        parts = []
        for arm in self.arms if arms is None else arms:
            own = self.scale.profile_of(arm)
            if own.steps != self.profile.steps:
                parts.append(f"{arm.label}: {own.steps} steps")
        return "; ".join(parts)

    def describe(self) -> str:
        """The budget and the scale in one line, for a claims table, e.g.
        "`ci` (early training): 450 steps, 3 seeds, 64x64 scenes, width-16 U-Net"."""
        return f"{self.budget()}, {self.data.size}x{self.data.size} scenes, {self.model.describe()}"

    def scale_text(self) -> str:
        """The testbed and model of this setup, e.g. "DigitScenes 64x64, width-16 U-Net": the
        scope every recorded claim carries beside its budget."""
        return f"{self.data.dataset} {self.data.size}x{self.data.size}, {self.model.describe()}"

    # -- factories ---------------------------------------------------------------------
    def build_model(self, arm: Optional[Arm] = None) -> nn.Module:
        """A fresh model (call it after seeding): ``arm``'s own model when it has one."""
        return self.model_of(arm).build(self.num_classes)

    def model_of(self, arm: Optional[Arm] = None) -> ModelSpec:
        """The model ``arm`` trains: its own (``Arm.model``) or the scale's."""
        if arm is not None and not isinstance(arm, Arm):
            raise TypeError(f"arm must be an Arm or None, got {type(arm).__name__}")
        return arm.model if arm is not None and arm.model is not None else self.model

    def metrics(self):
        """A fresh evaluation accumulator: :class:`~pixelweight.metrics.SegmentationMetrics`,
        or :class:`~pixelweight.metrics.ForegroundMetrics` for binary logits (``num_classes=1``)."""
        from ..metrics import ForegroundMetrics, SegmentationMetrics

        if self.num_classes == 1:
            return ForegroundMetrics()
        return SegmentationMetrics(self.num_classes, class_names=self.class_names)

    def class_counts(self):
        """The training split's pixel count per class (never validation data)."""
        import torch

        counts = getattr(self.splits.train, "pixel_counts", None)
        if counts is None:
            raise ValueError(f"the training split {type(self.splits.train).__name__} has no pixel_counts")
        return torch.as_tensor(counts).sum(dim=0)

    def arm(self, label: str) -> Arm:
        for arm in self.arms:
            if arm.label == label:
                return arm
        raise KeyError(f"stage {self.stage.name!r} has no arm {label!r}; it has {[a.label for a in self.arms]}")

    def build_loss(self, arm: Arm) -> nn.Module:
        return arm.build_loss(self.num_classes, class_counts=self.class_counts)

    def run_name(self, arm: Arm) -> str:
        parts = [self.stage.prefix, self.variant_name, arm.run]
        return "-".join(p for p in parts if p)

    def claims_table(self, claims, section: str = "claims", checks=()):
        """A :class:`~pixelweight.claims.ClaimsTable` of this chapter, labelled with this budget
        and scale (``checks``: its numerical identities, :class:`~pixelweight.claims.Check`)."""
        from ..claims import ClaimsTable

        return ClaimsTable(self.chapter, claims, budget=self.budget(), scope=self.describe(), section=section,
                           checks=checks, scale=self.scale_text())

    def record_config(self, **extra: Any) -> Dict[str, Any]:
        """What a record of this setup holds beside the profile and the splits' configs."""
        return {"chapter": self.chapter, "stage": self.stage.name, "variant": self.variant_name,
                "num_classes": self.num_classes,
                "data_spec": self.data.to_dict(), "model": self.model.to_dict(),
                "train_overrides": _plain(dict(self.scale.train)), **extra}

    # -- running -------------------------------------------------------------------------
    def run_arm(self, arm: Arm, *, name: Optional[str] = None, on_log: Optional[Callable] = None,
                seeds: Optional[Sequence[int]] = None, task: Any = None,
                **train_overrides: Any) -> List[TrainResult]:
        """Train one arm over the profile's seeds (or ``seeds``, a subset); its records go to
        ``results_dir``. ``task``: a :class:`~pixelweight.train.Task` (default: the stage's
        ``task``, else segmentation). An arm with its own ``model`` trains that model."""
        if not isinstance(arm, Arm):
            raise TypeError(f"arm must be an Arm, got {type(arm).__name__}")
        return run_seeds(
            name or self.run_name(arm), lambda: self.build_model(arm), lambda: self.build_loss(arm), self.splits,
            self.scale.profile_of(arm), self.metrics, device=self.device, results_dir=self.results_dir,
            record_config=self.record_config(loss=arm.to_dict(), model=self.model_of(arm).to_dict()),
            on_log=on_log if on_log is not None else self.stage.on_log,
            train_overrides={**self.scale.train, **train_overrides},
            task=task if task is not None else self.stage.task, seeds=seeds,
        )

    def run(self, arms: Optional[Sequence[Arm]] = None, *, on_log: Optional[Callable] = None,
            **train_overrides: Any) -> Dict[str, List[TrainResult]]:
        """Train every arm of the stage (or ``arms``), in order: ``{label: [result per seed]}``."""
        chosen = self.arms if arms is None else tuple(arms)
        if not chosen:
            raise ValueError(f"stage {self.stage.name!r} has no arm to run")
        return {arm.label: self.run_arm(arm, on_log=on_log, **train_overrides) for arm in chosen}

    def run_names(self, arms: Optional[Sequence[Arm]] = None, *, variants: bool = False) -> List[str]:
        """The record names of ``arms`` (default: the stage's); with ``variants=True`` those of
        every data variant of the stage."""
        arms = self.arms if arms is None else arms
        if variants and self.stage.variants:
            return [self.variant(v).run_name(a) for v in self.stage.variants for a in arms]
        return [self.run_name(a) for a in arms]

    # -- committed records -----------------------------------------------------------------
    def committed(self, names: Optional[Sequence[str]] = None,
                  columns: Sequence[str] = ("seed", "test_miou", "device", "commit")):
        """The committed ``full`` records of this stage (``results/<chapter>/``) as a frame
        (:func:`pixelweight.results.committed_frame`), compared with the stage's ``full`` scale."""
        from ..results import committed_frame

        full = self.stage.scale("full")
        own = {}  # the arms with their own steps are compared with their own budget
        for arm in self.arms:
            if arm.run in full.arm_budgets:
                for variant in (self.stage.variants or {"": None}):
                    own[self.variant(variant).run_name(arm)] = full.profile_of(arm).to_dict()
        return committed_frame(self.chapter, full.profile.to_dict(),
                               self.run_names(variants=True) if names is None else names, columns=columns,
                               profiles=own)

    def full_config(self, arm: Arm) -> Dict[str, Any]:
        """What a converged record of ``arm`` on this stage (and variant) must hold today: the
        ``full`` scale's profile, data, model and training overrides, the arm's loss and the
        number of classes (as JSON, so that it compares with a record's config)."""
        full = self.stage.scale("full")
        data = full.data.replace(**self.stage.variants[self.variant_name]) if self.variant_name else full.data
        model = arm.model if arm.model is not None else full.model
        return _plain({"profile": full.profile_of(arm).to_dict(), "data_spec": data.to_dict(), "model": model.to_dict(),
                       "train_overrides": dict(full.train), "loss": arm.to_dict(), "num_classes": self.num_classes})

    def committed_runs(self, arms: Optional[Sequence[Arm]] = None) -> Dict[str, List["CommittedRun"]]:
        """The committed converged records of this stage (``results/<chapter>/``), as runs:
        ``{arm label: [CommittedRun per seed]}`` for the arms with records, seeds in order,
        only the seeds every such arm has (the comparisons are paired), and only records made
        with the stage's ``full`` scale and the arm as they are today (:meth:`full_config`).
        Empty when none is committed (e.g. a notebook opened alone on Colab). A data variant the
        ``full`` scale shares with another stage (``Scale.shared_variants``) reads that
        stage's records of the arms with the same run names."""
        from ..results import committed_records

        full = self.stage.scales.get("full")
        shared = full.shared_variants.get(self.variant_name) if full is not None else None
        if shared is not None:
            return self._shared_runs(shared, self.arms if arms is None else tuple(arms))
        records = committed_records(self.chapter)
        found: Dict[str, Dict[int, CommittedRun]] = {}
        for arm in self.arms if arms is None else arms:
            name, wanted = self.run_name(arm), self.full_config(arm)
            for record in records:
                if record.name == name and all(_plain(record.config.get(k)) == v for k, v in wanted.items()):
                    found.setdefault(arm.label, {})[record.seed] = CommittedRun(record)
        if not found:
            return {}
        seeds = sorted(set.intersection(*(set(by_seed) for by_seed in found.values())))
        return {label: [by_seed[s] for s in seeds] for label, by_seed in found.items()} if seeds else {}

    def shared_arms(self, stage: "Stage", arms: Optional[Sequence[Arm]] = None) -> Tuple["Setup", Dict[str, Arm]]:
        """The ``full`` setup of ``stage``, whose runs this variant shares (``Scale.shared_variants``),
        and its arm of each of ``arms`` (default all) by run name; raises where the two are not the
        same run (:meth:`full_config`), so that neither the runner nor a reader mixes them."""
        other = type(self)(self.chapter, stage, "full", device=self.device, results_dir=self.results_dir)
        theirs = {a.run: a for a in other.arms}
        for arm in self.arms if arms is None else arms:
            if self.full_config(arm) != other.full_config(theirs[arm.run]):
                raise ValueError(f"variant {self.variant_name!r} of stage {self.stage.name!r} is shared with stage "
                                 f"{stage.name!r}, but its arm {arm.label!r} is not the same run there: "
                                 "train it (drop the variant from shared_variants) or make the runs equal")
        return other, theirs

    def _shared_runs(self, stage: "Stage", arms: Sequence[Arm]) -> Dict[str, List["CommittedRun"]]:
        """:meth:`committed_runs` of ``arms`` read from ``stage``'s records (a shared variant),
        keyed by this stage's labels (:meth:`shared_arms`)."""
        other, theirs = self.shared_arms(stage, arms)
        found = other.committed_runs([theirs[a.run] for a in arms])
        return {a.label: found[theirs[a.run].label] for a in arms if theirs[a.run].label in found}

    def converged(self, claims: Callable[["Setup", Mapping[Any, Sequence["CommittedRun"]]], Any],
                  arms: Optional[Sequence[Arm]] = None, section: str = "converged-claims",
                  variants: Optional[Sequence[str]] = None) -> "Converged":
        """The stage's claims judged on its committed converged records: ``claims(self, runs)``
        (a chapter's claims function, e.g. :func:`pixelweight.chapters.testbed.baseline_claims`)
        on :meth:`committed_runs` of ``arms`` (default: all the stage's), its table labelled
        with the records' status (:func:`converged_table`). Needs the ``full`` setup. Without
        a committed record of every arm of ``arms`` the result has no table
        (``Converged.available`` is false).

        ``variants``: data variants of the stage (names of ``Stage.variants``) whose runs
        the claims compare, e.g. the points of a sweep; ``runs`` is then keyed by
        ``(variant, arm label)`` and every arm needs records on every variant."""
        if self.profile.name != "full":
            raise ValueError(f"converged claims need the full setup, got profile {self.profile.name!r}")
        if not callable(claims):
            raise TypeError(f"claims must be a function (setup, runs) -> ClaimsTable, got {type(claims).__name__}")
        wanted = self.arms if arms is None else tuple(arms)
        for arm in wanted:
            if not isinstance(arm, Arm):
                raise TypeError(f"arms must be Arm objects, got {type(arm).__name__}")
        if variants is None:
            runs = self.committed_runs(wanted)
            missing = [a.label for a in wanted if a.label not in runs]
        else:
            if isinstance(variants, str) or not variants:
                raise ValueError(f"variants must be a non-empty sequence of variant names, got {variants!r}")
            runs, missing = {}, []
            for name in variants:
                found = self.variant(name).committed_runs(wanted)
                for a in wanted:
                    if a.label in found:
                        runs[name, a.label] = found[a.label]
                    else:
                        missing.append(f"{a.label} ({name})")
            if runs:  # the variants are compared too: keep the seeds all of them share
                common = set.intersection(*({r.seed for r in rs} for rs in runs.values()))
                runs = {key: [r for r in rs if r.seed in common] for key, rs in runs.items()}
        if missing:
            return Converged(None, {}, {}, missing=tuple(missing))
        if min(len(rs) for rs in runs.values()) < 2:  # one paired seed has no interval
            return Converged(None, {}, {}, missing=tuple(f"{key if isinstance(key, str) else ' '.join(key)} "
                                                         "(fewer than two paired seeds)"
                                                         for key, rs in runs.items() if len(rs) < 2))
        table = converged_table(claims(self, runs), runs, section=section, profile=self.profile,
                                arm_budgets=self.arm_budget_text(wanted))
        return Converged(table, runs, committed_status(runs))

    def show_converged(self, claims: Callable, results_dir: Optional[str] = None,
                       arms: Optional[Sequence[Arm]] = None, section: str = "converged-claims",
                       variants: Optional[Sequence[str]] = None) -> "Converged":
        """:meth:`converged` shown in the notebook, its verdicts recorded in ``results_dir``
        (after the early-training ones, which they replace on the landing page and the
        scorecard); without records, a paragraph that says so and how to make them."""
        from ..book import markdown

        result = self.converged(claims, arms=arms, section=section, variants=variants)
        if not result.available:
            markdown(f"No converged (`full`) record of {', '.join(result.missing)} is committed for this "
                     f"stage: the claims above are measured early in training only. "
                     f"`make results CHAPTER={self.chapter}` makes them.")
            return result
        result.table.show()
        if results_dir is not None:
            result.table.record(results_dir)
        return result

    def show_committed(self, names: Optional[Sequence[str]] = None,
                       columns: Sequence[str] = ("seed", "test_miou", "device", "commit")) -> None:
        """Display the committed ``full`` records of this stage, or say that none is committed."""
        from ..book import markdown, table

        frame = self.committed(names, columns)
        if len(frame):
            markdown(table(frame))
        else:
            markdown("No `full`-profile record is committed for this chapter yet: the numbers above "
                     f"are from the `{self.profile.name}` profile only.")

    def __repr__(self) -> str:
        return f"Setup({self.chapter!r}, stage={self.stage.name!r}, {self.describe()})"


class CommittedRun:
    """A committed run record read as a run: ``metrics``, ``history``, ``seed`` and ``plateau``
    like a :class:`~pixelweight.train.TrainResult` (no model), and ``stale``: the library files
    changed since the record's commit (empty: current; ``None``: unknown, e.g. no git)."""

    def __init__(self, record):
        from ._runner import stale_paths

        self.record = record
        self.metrics = record.metrics
        self.history = record.history
        self.seed = record.seed
        self.plateau = record.plateau
        self.wall_time_s = record.wall_time_s
        self.device = record.device
        self.stale = stale_paths(record)

    def __repr__(self) -> str:
        return f"CommittedRun({self.record.name!r}, seed={self.seed})"


def committed_status(runs: Mapping[str, Sequence[CommittedRun]]) -> Dict[str, Any]:
    """What a chapter says about its committed runs: how many, how many reached the plateau
    (of those that measured one), the library files changed since (``stale``: a sorted list;
    empty when current) and whether staleness could be told."""
    flat = [r for rs in runs.values() for r in rs]
    measured = [r for r in flat if r.plateau and r.plateau.get("reached") is not None]
    stale = sorted({p for r in flat for p in (r.stale or [])})
    return {"runs": len(flat), "plateau_measured": len(measured),
            "plateau_reached": sum(bool(r.plateau["reached"]) for r in measured),
            "stale": stale, "known": all(r.stale is not None for r in flat),
            "commits": sorted({r.record.provenance.get("git_commit", "unknown")[:10] for r in flat}),
            "devices": sorted({r.device for r in flat}),
            "hours": sum(r.wall_time_s for r in flat) / 3600}


def check_stage(setup: Any, chapter: str, stage: str) -> None:
    """Raise unless ``setup`` is a :class:`Setup` of ``stage`` of ``chapter`` (a chapter
    module's claims and analyses are judged on one stage)."""
    if not isinstance(setup, Setup):
        raise TypeError(f"setup must be a Setup, got {type(setup).__name__}")
    if setup.chapter != chapter or setup.stage.name != stage:
        raise ValueError(f"these claims are judged on stage {stage!r} of chapter {chapter!r}, "
                         f"got stage {setup.stage.name!r} of {setup.chapter!r}")


def _with_arm_budgets(budget: str, profile: Profile, arm_budgets: str) -> str:
    """``budget`` (:meth:`Profile.budget`) with the arms that train for their own number of
    steps after the profile's, e.g. "`full` (converged budget): 2000 steps (high-res: 1200 steps), 5 seeds"."""
    if not arm_budgets:
        return budget
    steps = f": {profile.steps} steps"
    return budget.replace(steps, f"{steps} ({arm_budgets})", 1) if steps in budget else f"{budget} ({arm_budgets})"


def converged_table(table, runs: Mapping[str, Sequence[CommittedRun]], section: str = "converged-claims",
                    profile: Optional[Profile] = None, arm_budgets: str = ""):
    """``table`` (a :class:`~pixelweight.claims.ClaimsTable` judged on committed runs)
    labelled with the runs' status. Its budget counts the seeds the comparison paired (of
    ``profile``, the ``full`` profile, when given) and how many runs reached the plateau; its
    scope adds from which commits the records are and whether the library changed since. A
    stale table says "STALE records" in its budget and is marked ``stale``, so that the
    landing page and the scorecard never show its verdicts as current. ``arm_budgets``
    (:meth:`Setup.arm_budget_text`) names the arms that trained for their own number of steps."""
    from ..claims import ClaimsTable

    if not isinstance(table, ClaimsTable):
        raise TypeError(f"a claims function must return a ClaimsTable, got {type(table).__name__}")
    if not isinstance(arm_budgets, str):
        raise TypeError(f"arm_budgets must be a string (Setup.arm_budget_text), got {type(arm_budgets).__name__}")
    status = committed_status(runs)
    if not status["runs"]:
        raise ValueError("converged claims need at least one committed run")
    budget, scope = table.budget, table.scope
    if profile is not None:
        if not isinstance(profile, Profile):
            raise TypeError(f"profile must be a Profile, got {type(profile).__name__}")
        seeds = sorted({r.seed for rs in runs.values() for r in rs})
        paired = _with_arm_budgets(dataclasses.replace(profile, seeds=tuple(seeds)).budget(), profile, arm_budgets)
        scope = paired + scope[len(table.budget):] if scope.startswith(table.budget) else scope
        budget = paired
    plateau = (f"{status['plateau_reached']} of {status['plateau_measured']} runs reached the plateau"
               if status["plateau_measured"] else "plateau not measured")
    if status["stale"]:
        stale = "STALE: the library changed since the records were made (" + ", ".join(status["stale"]) + ")"
    elif status["known"]:
        stale = "records current with the library"
    else:
        stale = "staleness unknown (no git history)"
    budget += "; " + plateau.replace(" reached the plateau", " at the plateau") + (
        "; STALE records" if status["stale"] else "")
    return ClaimsTable(table.chapter, table.claims, budget=budget, section=section, checks=table.checks,
                       scale=table.scale, stale=bool(status["stale"]),
                       scope=f"{scope}; committed records of {', '.join(status['commits'])}: {plateau}; {stale}")


@dataclasses.dataclass(frozen=True)
class Converged:
    """A stage's converged section (:meth:`Setup.converged`): the claims ``table`` judged on the
    committed ``runs`` and their ``status`` (:func:`committed_status`); without records
    (``available`` false) ``table`` is ``None`` and ``missing`` names the arms without one.
    :meth:`text` gives what the prose cites, ``"—"`` without records."""

    table: Any
    runs: Mapping[str, Sequence[CommittedRun]]
    status: Mapping[str, Any]
    missing: Tuple[str, ...] = ()

    @property
    def available(self) -> bool:
        return self.table is not None

    def claim(self, label: str):
        """The claim labelled (or, failing that, worded) ``label``."""
        if not self.available:
            raise ValueError(f"no converged records: {', '.join(self.missing)} missing")
        for c in self.table.claims:
            if label in (c.label, c.text):
                return c
        raise KeyError(f"no claim {label!r}; there are {[c.label or c.text for c in self.table.claims]}")

    def text(self) -> Dict[str, str]:
        """``verdict <label>`` and ``effect <label>`` of each claim, ``plateau`` ("9 of 10"),
        ``seeds``, ``hours`` and ``stale`` ("current" / "stale" / "unknown") as text."""
        if not self.available:
            return {"plateau": "—", "seeds": "0", "hours": "—", "stale": "—"}
        out = {}
        for c in self.table.claims:
            key = c.label or c.text
            out[f"verdict {key}"], out[f"effect {key}"] = c.verdict, c.effect_text()
        status = self.status
        out.update(plateau=f"{status['plateau_reached']} of {status['plateau_measured']}"
                   if status["plateau_measured"] else "none (plateau not measured)",
                   seeds=str(min(len(rs) for rs in self.runs.values())), hours=f"{status['hours']:.1f}",
                   stale="stale" if status["stale"] else "current" if status["known"] else "unknown")
        return out


def run_seed(run: Any) -> Optional[int]:
    """The training seed of a run: a committed run's ``seed``, or the seed of a live run's
    record (:class:`~pixelweight.train.TrainResult` ``.record``); ``None`` when neither says."""
    seed = getattr(run, "seed", None)
    return seed if seed is not None else getattr(getattr(run, "record", None), "seed", None)


def history_curve(runs: Mapping[str, Sequence[Any]], value: Callable[[Mapping[str, Any]], float], a: str,
                  b: Optional[str] = None):
    """A quantity along training, with its 95% interval over seeds: ``value(entry)`` of every
    history entry of the runs of ``a`` that has it (``value`` returns ``None`` for an entry
    without it, e.g. a step without validation), as the paired difference ``a - b`` by seed
    when ``b`` is given, else as the mean over seeds. A DataFrame of ``step``, ``mean``,
    ``low``, ``high`` and ``n`` (steps with fewer than two seeds are left out; empty when
    ``runs`` lacks ``a`` or ``b``): the learning curve that shows whether an effect measured
    early in training survives to the plateau."""
    import math

    import pandas as pd

    from ..stats import mean_ci, paired_difference_ci

    if not callable(value):
        raise TypeError(f"value must be a function of a history entry, got {type(value).__name__}")
    columns = ["step", "mean", "low", "high", "n"]
    if a not in runs or (b is not None and b not in runs):
        return pd.DataFrame([], columns=columns)

    def seeds(label: str) -> List[Any]:
        return [run_seed(r) for r in runs[label]]

    if b is not None and seeds(a) != seeds(b):
        raise ValueError(f"the runs of {a!r} and {b!r} must share their seeds, in order; "
                         f"got {seeds(a)} and {seeds(b)}")

    def by_step(run) -> Dict[int, float]:
        out = {}
        for entry in run.history:
            v = value(entry)
            if v is not None:
                if not math.isfinite(v):
                    raise ValueError(f"the value at step {entry.get('step')} is not finite: {v!r}")
                out[entry["step"]] = float(v)
        return out

    sides = [[by_step(r) for r in runs[a]]] + ([[by_step(r) for r in runs[b]]] if b is not None else [])
    rows = []
    for step in sorted({s for seed in sides[0] for s in seed}):
        if b is None:
            values = [seed[step] for seed in sides[0] if step in seed]
            if len(values) >= 2:
                iv = mean_ci(values)
                rows.append({"step": step, "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
            continue
        pairs = [(x[step], y[step]) for x, y in zip(*sides) if step in x and step in y]
        if len(pairs) >= 2:
            iv = paired_difference_ci([p[0] for p in pairs], [p[1] for p in pairs])
            rows.append({"step": step, "mean": iv.mean, "low": iv.low, "high": iv.high, "n": iv.n})
    return pd.DataFrame(rows, columns=columns)


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


def group_metric_frame(
    results: Mapping[str, Sequence[TrainResult]],
    groups: Mapping[str, Sequence[int]],
    split: str = "test",
):
    """Per run and seed: mIoU, mean accuracy, pixel accuracy, and the mean IoU and recall of
    each group of classes (e.g. ``{"rare": [6, 7, 8, 9, 10]}`` -> ``rare_iou``, ``rare_recall``).

    A class whose value is undefined (NaN) is left out of its group's mean.
    """
    import numpy as np
    import pandas as pd

    if split not in ("val", "test"):
        raise ValueError(f"split must be 'val' or 'test', got {split!r}")
    rows = []
    for run, runs in results.items():
        for index, res in enumerate(runs):
            row = {"run": run, "seed_index": index,
                   "seed": res.record.seed if res.record is not None else index}
            for key in ("miou", "mean_accuracy", "pixel_accuracy"):
                row[key] = res.metrics[f"{split}_{key}"]
            for group, classes in groups.items():
                for metric in ("iou", "recall"):
                    values = np.asarray(res.metrics[f"{split}_{metric}"], dtype=float)
                    if not classes or max(classes) >= values.size or min(classes) < 0:
                        raise ValueError(f"group {group!r} must list class indices in [0, {values.size}), got {list(classes)}")
                    row[f"{group}_{metric}"] = float(np.nanmean(values[list(classes)]))
            rows.append(row)
    return pd.DataFrame(rows)


@dataclasses.dataclass(frozen=True)
class Chapter:
    """A chapter of the book: its folder under ``notebooks/`` and its stages.

    A chapter module holds one (``CHAPTER``) and exposes ``setup = CHAPTER.setup``.
    """

    folder: str
    title: str
    stages: Mapping[str, Stage]
    #: Library folders beyond ``_runner.CODE_PATHS`` whose code shapes this chapter's runs
    #: (e.g. ``("src/pixelweight/sampling",)``): a change there stales its records only.
    code_paths: Tuple[str, ...] = ()

    def __post_init__(self):
        import re

        paths = self.code_paths
        if isinstance(paths, str) or not all(isinstance(x, str) and x.startswith("src/pixelweight/") for x in paths):
            raise ValueError(f"code_paths must be folders under src/pixelweight/, got {paths!r}")
        object.__setattr__(self, "code_paths", tuple(paths))

        if not isinstance(self.folder, str) or not re.match(r"^\d\d_[a-z0-9_]+$", self.folder):
            raise ValueError(f"folder must be a chapter folder such as '02_recall', got {self.folder!r}")
        stages = _frozen(self.stages, "stages")
        for key, stage in stages.items():
            if not isinstance(stage, Stage) or stage.name != key:
                raise ValueError(f"stage {key!r} of chapter {self.folder!r} must be a Stage named {key!r}")
        for stage in stages.values():
            for profile, scale in stage.scales.items():
                for variant, other in scale.shared_variants.items():
                    if stages.get(other.name) is not other:
                        raise ValueError(f"stage {stage.name!r} shares variant {variant!r} at {profile!r} with a stage "
                                         f"{other.name!r} that is not this chapter's own")
        object.__setattr__(self, "stages", stages)

    def stage(self, name: str) -> Stage:
        if name not in self.stages:
            raise ValueError(f"chapter {self.folder!r} has no stage {name!r}; it has {sorted(self.stages)}")
        return self.stages[name]

    @property
    def setup(self) -> Callable[..., Setup]:
        """This chapter's ``setup(stage, profile, *, device="auto", results_dir=None,
        chapter=None)``, the function its module exposes (``setup = CHAPTER.setup``): a function
        of its own per chapter, not a method bound to :class:`Chapter` (Sphinx's autodoc
        rewrites the signature of what it documents, and a function shared by every chapter
        module would be rewritten once per module)."""
        this = self

        def setup(stage: str, profile: str, *, device: str = "auto", results_dir: Optional[str] = None,
                  chapter: Optional[str] = None) -> Setup:
            """The ``stage`` at ``profile`` (``"ci"``/``"full"``), ready to run.

            ``chapter`` is the name the book's build passes to the notebook (a papermill
            parameter; ``None`` outside the build): it must be this chapter's folder, so that a
            notebook cannot record its verdicts under another chapter.
            """
            return this._setup(stage, profile, device=device, results_dir=results_dir, chapter=chapter)

        return setup

    def _setup(self, stage: str, profile: str, *, device: str = "auto", results_dir: Optional[str] = None,
               chapter: Optional[str] = None) -> Setup:
        if chapter is not None and chapter != self.folder:
            raise ValueError(f"this notebook belongs to chapter {self.folder!r}, but the build says {chapter!r}")
        if not isinstance(profile, str):
            raise TypeError(f"profile must be a profile name such as 'ci', got {type(profile).__name__}")
        return Setup(self.folder, self.stage(stage), profile, device=device, results_dir=results_dir)


__all__ += ["Chapter", "CommittedRun", "Converged", "check_stage", "committed_status", "converged_table"]
