"""The open harness: tasks, batches of any structure, models with several outputs."""

import dataclasses
from collections import namedtuple

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.toy import TinyClassifier, TwoHeads, WeightedThreshold, classification_task, threshold_task
from pixelweight.metrics import SegmentationMetrics
from pixelweight.models import UNet
from pixelweight.results import load_record
from pixelweight.train import (
    ClassificationTask,
    SegmentationTask,
    Task,
    TrainConfig,
    evaluate,
    move_to_device,
    seed_everything,
    select,
    train,
)

FAST = dict(steps=40, batch_size=8, lr=1e-2, schedule="constant", log_every=10, progress=False, device="cpu")


class Accuracy:
    """A minimal classification accumulator: reset / update(logits, labels) / compute."""

    def reset(self):
        self.right = self.total = 0

    def update(self, logits, labels):
        assert logits.dtype == torch.float32 and logits.ndim == 2
        self.right += int((logits.argmax(1) == labels).sum())
        self.total += labels.numel()

    def compute(self):
        return {"accuracy": self.right / self.total}


# ------------------------------------------------------------------------ the default task
def test_default_task_is_segmentation_and_identical_to_explicit():
    def run(task):
        seed_everything(0)
        model = UNet(1, 2, width=4, depth=1)
        return train(model, F.cross_entropy, threshold_task(), TrainConfig(**FAST, eval_every=20),
                     metrics_factory=lambda: SegmentationMetrics(2), val_set=threshold_task(16, seed=1),
                     task=task)

    a, b = run(None), run(SegmentationTask())
    assert a.history == b.history and a.metrics.keys() == b.metrics.keys()
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)


def test_segmentation_task_rejects_classification_logits():
    with pytest.raises(ValueError, match=r"SegmentationTask expects \(N, C, H, W\) logits.*got shape \(8, 2\)"):
        train(TinyClassifier(), F.cross_entropy, classification_task(), TrainConfig(**FAST))


# ------------------------------------------------------------------------ classification
def test_classification_task_learns_and_evaluates():
    seed_everything(0)
    result = train(TinyClassifier(), F.cross_entropy, classification_task(128), TrainConfig(**{**FAST, "steps": 80}),
                   metrics_factory=Accuracy, val_set=classification_task(64, seed=1),
                   test_set=classification_task(64, seed=2), task=ClassificationTask())
    assert result.metrics["val_accuracy"] > 0.9 and result.metrics["test_accuracy"] > 0.9
    again = evaluate(result.model, classification_task(64, seed=2), Accuracy(), device="cpu",
                     task=ClassificationTask())
    assert again["accuracy"] == result.metrics["test_accuracy"]


def test_classification_task_checks_shapes():
    with pytest.raises(ValueError, match=r"ClassificationTask expects \(N, C\) logits"):
        train(UNet(1, 2, width=4, depth=1), F.cross_entropy, threshold_task(), TrainConfig(**FAST),
              task=ClassificationTask())


# ------------------------------------------------------------------------ several outputs
@pytest.mark.parametrize("as_tuple, output", [(False, "logits"), (True, 0)])
def test_model_with_several_outputs(as_tuple, output):
    seen = []

    def loss_fn(logits, target):
        seen.append(type(logits))
        return F.cross_entropy(logits, target)

    seed_everything(0)
    task = SegmentationTask(output=output)
    result = train(TwoHeads(as_tuple), loss_fn, threshold_task(), TrainConfig(**FAST),
                   metrics_factory=lambda: SegmentationMetrics(2), val_set=threshold_task(32, seed=1), task=task)
    assert set(seen) == {torch.Tensor}  # the loss got the selected tensor
    assert result.metrics["val_pixel_accuracy"] > 0.9
    # one head of the model, on the same weights, is the selected output: same metrics
    single = nn.Conv2d(1, 2, 1)
    single.load_state_dict(result.model.conv.state_dict())
    plain = evaluate(single, threshold_task(32, seed=1), SegmentationMetrics(2), device="cpu")
    assert plain["confusion_matrix"] == result.metrics["val_confusion_matrix"]


def test_loss_reading_all_outputs():
    received = []

    def loss_fn(outputs, target):  # a main term on the logits and a regulariser on the energy
        received.append({k: (type(v), v.dtype) for k, v in outputs.items()})
        return F.cross_entropy(outputs["logits"], target) + 1e-3 * outputs["energy"]

    seed_everything(0)
    result = train(TwoHeads(), loss_fn, threshold_task(), TrainConfig(**FAST),
                   metrics_factory=lambda: SegmentationMetrics(2), val_set=threshold_task(32, seed=1),
                   task=Task(output="logits", loss_outputs="all"))
    assert received[0] == {"logits": (torch.Tensor, torch.float32), "energy": (torch.Tensor, torch.float32)}
    assert len(received) == FAST["steps"] and result.metrics["val_pixel_accuracy"] > 0.9


def test_several_outputs_without_a_selector_is_a_clear_error():
    with pytest.raises(TypeError, match=r"must be a tensor, got dict.*Task\(output=\.\.\.\)"):
        train(TwoHeads(), F.cross_entropy, threshold_task(), TrainConfig(**FAST))
    with pytest.raises(ValueError, match=r"no key 'main'; it has \['energy', 'logits'\]"):
        train(TwoHeads(), F.cross_entropy, threshold_task(), TrainConfig(**FAST), task=Task(output="main"))


# ------------------------------------------------------------------------ auxiliary targets
def test_batch_with_per_image_auxiliary_targets(tmp_path):
    """The batch carries a per-image weight; the loss reads it, the metrics use the mask."""
    data = WeightedThreshold(64)
    seen = []

    def weighted_ce(logits, targets):
        # the weights are those of the images in the batch, moved with it
        seen.append(torch.equal(targets["weight"], data.weights[targets["index"]]))
        per_image = F.cross_entropy(logits, targets["mask"], reduction="none").mean(dim=(1, 2))
        return (targets["weight"] * per_image).mean()

    seed_everything(0)
    task = SegmentationTask(metric_targets="mask")
    result = train(UNet(1, 2, width=4, depth=1), weighted_ce, data, TrainConfig(**FAST),
                   metrics_factory=lambda: SegmentationMetrics(2), val_set=WeightedThreshold(32, seed=1),
                   task=task, name="aux", results_dir=tmp_path)
    assert len(seen) == FAST["steps"] and all(seen)
    assert result.metrics["val_pixel_accuracy"] > 0.9
    assert load_record(result.record_path).config["task"] == {
        "type": "SegmentationTask", "inputs": 0, "targets": 1, "output": None, "loss_outputs": "selected",
        "metric_targets": "mask", "collate_fn": None}


@dataclasses.dataclass
class Sample:
    image: torch.Tensor
    mask: torch.Tensor
    weight: torch.Tensor


def collate_samples(samples):
    return Sample(*(torch.stack([getattr(s, f) for s in samples]) for f in ("image", "mask", "weight")))


class SampleSet(torch.utils.data.Dataset):
    def __init__(self, n=64, seed=0):
        self.base = WeightedThreshold(n, seed=seed)

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        image, aux = self.base[i]
        return Sample(image, aux["mask"], aux["weight"])


def test_dataclass_batches_with_collate_fn():
    def loss_fn(logits, batch):
        assert isinstance(batch, Sample) and batch.weight.shape == (logits.shape[0],)
        return F.cross_entropy(logits, batch.mask)

    seed_everything(0)
    task = Task(inputs="image", targets=None, metric_targets="mask", collate_fn=collate_samples)
    result = train(UNet(1, 2, width=4, depth=1), loss_fn, SampleSet(), TrainConfig(**FAST),
                   metrics_factory=lambda: SegmentationMetrics(2), val_set=SampleSet(32, seed=1), task=task)
    assert result.metrics["val_pixel_accuracy"] > 0.9


def test_task_log_enters_history():
    class Logging(SegmentationTask):
        def log(self, step, model, loss_fn):
            return {"conv_norm": float(model.conv.weight.detach().norm())}

    seed_everything(0)
    result = train(TwoHeads(), F.cross_entropy, threshold_task(), TrainConfig(**FAST),
                   task=Logging(output="logits"))
    assert [("conv_norm" in h) for h in result.history] == [True] * 4


# ------------------------------------------------------------------------ batches
Pair = namedtuple("Pair", "image target")


@dataclasses.dataclass(frozen=True)
class Frozen:
    x: torch.Tensor
    tag: str


class Movable:
    def __init__(self):
        self.device = None

    def to(self, device):
        self.device = device
        return self


def test_move_to_device_recurses_through_any_structure():
    movable = Movable()
    batch = {"pair": Pair(torch.zeros(2), [torch.ones(1), "text", 3]), "frozen": Frozen(torch.ones(3), "a"),
             "other": movable, "none": None}
    moved = move_to_device(batch, "meta")  # the meta device shows that every tensor moved
    assert isinstance(moved["pair"], Pair) and moved["pair"].image.is_meta
    assert moved["pair"].target[0].is_meta and moved["pair"].target[1:] == ["text", 3]
    assert isinstance(moved["frozen"], Frozen) and moved["frozen"].x.is_meta and moved["frozen"].tag == "a"
    assert not batch["frozen"].x.is_meta  # the original is left as it was
    assert moved["other"] is movable and movable.device == torch.device("meta")
    assert moved["none"] is None
    with pytest.raises(TypeError, match="device"):
        move_to_device(batch, 3)


def test_select_and_its_errors():
    assert select({"a": 1}, "a") == 1 and select((1, 2), 1) == 2 and select(Pair(1, 2), "target") == 2
    assert select([1, 2], lambda b: b[0] + b[1]) == 3 and select("x", None) == "x"
    with pytest.raises(ValueError, match=r"has 2 items, there is no item 2"):
        select((1, 2), 2, "batch")
    with pytest.raises(TypeError, match="not a tuple or list"):
        select({"a": 1}, 0, "batch")
    with pytest.raises(ValueError, match=r"Frozen\) has no key or attribute 'y'; it has the fields \['x', 'tag'\]"):
        select(Frozen(torch.ones(1), "a"), "y", "batch")
    with pytest.raises(TypeError, match="selector"):
        select((1,), 1.5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(output=1.5), TypeError, "output must be None, an int, a str or a callable"),
    (dict(inputs=True), TypeError, "inputs"),
    (dict(loss_outputs="both"), ValueError, "loss_outputs must be one of"),
    (dict(collate_fn=3), TypeError, "collate_fn must be callable"),
])
def test_task_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        Task(**kwargs)


def test_task_argument_errors():
    data = threshold_task(8)
    with pytest.raises(TypeError, match="task must be a pixelweight.train.Task"):
        train(UNet(1, 2, width=4, depth=1), F.cross_entropy, data, TrainConfig(**FAST), task="segmentation")
    with pytest.raises(TypeError, match="task must be"):
        evaluate(UNet(1, 2, width=4, depth=1), data, SegmentationMetrics(2), device="cpu", task=object())
    with pytest.raises(TypeError, match="on_log must be callable"):
        train(UNet(1, 2, width=4, depth=1), F.cross_entropy, data, TrainConfig(**FAST), on_log=3)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        evaluate("net", data, SegmentationMetrics(2), device="cpu")


def test_docstring_examples_run():
    """The examples of pixelweight.train's public names (their __module__ is the package)."""
    import doctest

    import pixelweight.train as package

    runner = doctest.DocTestRunner(optionflags=doctest.NORMALIZE_WHITESPACE | doctest.ELLIPSIS)
    report = []
    for test in doctest.DocTestFinder().find(package, package.__name__, globs={}):
        runner.run(test, out=report.append)
    assert runner.tries >= 10 and runner.failures == 0, "".join(report)


# ----------------------------------------------------------------------------------
# AuxiliaryTargetsTask: per-image auxiliary targets handed to the losses that take them
# ----------------------------------------------------------------------------------
def test_auxiliary_task_passes_terms_only_to_losses_that_take_them():
    from pixelweight.losses import WeightedFMeasureLoss
    from pixelweight.train import AuxiliaryTargetsTask

    task = AuxiliaryTargetsTask()
    seen = {}

    def plain(logits, target):
        seen["plain"] = target
        return logits.sum()

    def spatial(logits, target, terms=None):
        seen["spatial"] = terms
        return logits.sum()

    def anything(logits, target, **kw):
        seen["anything"] = sorted(kw)
        return logits.sum()

    batch = (torch.zeros(2, 1, 3, 3), {"mask": torch.ones(2, 3, 3), "terms": "T", "other": 1})
    for fn in (plain, spatial, anything):
        task.loss(fn, torch.zeros(2, 1, 3, 3), batch)
    assert seen["spatial"] == "T" and seen["anything"] == ["other", "terms"] and seen["plain"].shape == (2, 3, 3)
    assert task.accepted(WeightedFMeasureLoss()) >= {"terms"}
    with pytest.raises(ValueError, match="expects targets"):
        task.loss(plain, torch.zeros(2, 1, 3, 3), (torch.zeros(2, 1, 3, 3), torch.ones(2, 3, 3)))
    with pytest.raises(TypeError, match="metric_targets"):
        AuxiliaryTargetsTask(metric_targets="x")
    assert task.describe()["mask"] == "mask" and task.describe()["metric_targets"] == "mask"
