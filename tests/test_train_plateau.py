"""The plateau rule (issue #12): the range of the validation metric over the last part of
training, on synthetic histories and in a run's record."""

import json
import math

import pytest
import torch.nn.functional as F

from helpers.toy import threshold_task
from pixelweight.metrics import SegmentationMetrics
from pixelweight.models import UNet
from pixelweight.results import RunRecord, load_record
from pixelweight.train import TrainConfig, measure_plateau, seed_everything, train


def history(values, every=10):
    """Log entries every 5 steps, evaluations (val_miou) every ``every`` steps."""
    entries = []
    evals = iter(values)
    last = every * len(values)
    for step in range(5, last + 1, 5):
        entry = {"step": step, "loss": 1.0 / step}
        if step % every == 0:
            entry["val_miou"] = next(evals)
        entries.append(entry)
    return entries


def test_rising_metric_has_not_reached_its_plateau():
    values = [0.1 * k for k in range(1, 11)]  # steps 10..100, +0.1 per evaluation
    p = measure_plateau(history(values), "miou", steps=100)
    assert p["window"] == [75, 100] and p["steps"] == [80, 90, 100]
    assert p["reached"] is False and p["change"] == pytest.approx(0.2) and p["drift"] == pytest.approx(0.2)
    assert p["reason"] is None and p["metric"] == "val_miou" and p["tolerance"] == 0.01


def test_flat_metric_has_reached_its_plateau():
    values = [0.2, 0.5, 0.7, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8, 0.8]
    p = measure_plateau(history(values), "val_miou", steps=100, window=0.25, tolerance=0.0)
    assert p["reached"] is True and p["change"] == 0.0 and p["drift"] == 0.0


def test_noise_within_the_tolerance_is_a_plateau_beyond_it_is_not():
    settled = [0.5, 0.7, 0.8, 0.8, 0.805, 0.8, 0.802, 0.806, 0.801, 0.804]
    p = measure_plateau(history(settled), "miou", steps=100, window=0.5, tolerance=0.01)
    assert p["steps"] == [50, 60, 70, 80, 90, 100] and p["reached"] is True
    assert p["change"] == pytest.approx(0.006)
    # a swing that comes back: the net change is 0.001, but the range (0.05) is not flat
    swinging = [0.5, 0.7, 0.8, 0.8, 0.80, 0.85, 0.80, 0.85, 0.80, 0.801]
    p = measure_plateau(history(swinging), "miou", steps=100, window=0.5, tolerance=0.01)
    assert p["drift"] == pytest.approx(0.001) and p["change"] == pytest.approx(0.05)
    assert p["reached"] is False


def test_too_few_evaluations_is_not_measurable():
    p = measure_plateau(history([0.1, 0.2, 0.3, 0.4]), "miou", steps=40)  # window [30, 40]: 2 evals
    assert p["reached"] is None and p["change"] is None and p["drift"] is None
    assert p["steps"] == [30, 40] and "only 2 evaluation(s) of val_miou in the window [30, 40]" in p["reason"]
    p = measure_plateau([{"step": 10, "loss": 1.0}], "miou", steps=10)
    assert p["reached"] is None and p["steps"] == [] and "only 0" in p["reason"]


def test_unusable_values_are_not_measurable():
    h = [{"step": s, "val_iou": [0.5, 0.5]} for s in (8, 9, 10)]
    p = measure_plateau(h, "iou", steps=10, window=0.5)
    assert p["reached"] is None and "not a number" in p["reason"]
    h = [{"step": s, "val_miou": v} for s, v in ((8, 0.5), (9, math.nan), (10, 0.5))]
    p = measure_plateau(h, "miou", steps=10, window=0.5)
    assert p["reached"] is None and "NaN" in p["reason"]


def test_window_bounds():
    h = [{"step": s, "val_miou": 0.5} for s in range(10, 301, 10)]
    assert measure_plateau(h, "miou", steps=300, window=0.1)["window"] == [270, 300]  # 0.1*300 is 30.000...04
    assert measure_plateau(h, "miou", steps=300, window=1.0)["steps"] == list(range(10, 301, 10))
    assert measure_plateau(h, "miou", steps=7, window=0.1)["window"] == [7, 7]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(metric=""), ValueError, "plateau_metric"),
    (dict(metric=3), TypeError, "plateau_metric"),
    (dict(window=0.0), ValueError, "plateau_window"),
    (dict(window=1.5), ValueError, "plateau_window"),
    (dict(tolerance=-0.1), ValueError, "plateau_tolerance"),
    (dict(tolerance=math.nan), ValueError, "plateau_tolerance"),
    (dict(steps=0), ValueError, "steps"),
])
def test_measure_plateau_validation(kwargs, error, match):
    args = {"metric": "miou", "steps": 10, **kwargs}
    with pytest.raises(error, match=match):
        measure_plateau([], **args)


def test_history_must_be_entries():
    with pytest.raises(TypeError, match="history"):
        measure_plateau([1, 2], "miou", steps=10)


@pytest.mark.parametrize("kwargs, match", [
    (dict(plateau_metric=""), "plateau_metric"),
    (dict(plateau_window=0.0), "plateau_window"),
    (dict(plateau_tolerance=-1.0), "plateau_tolerance"),
])
def test_config_validation(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**kwargs)


FAST = dict(steps=40, batch_size=8, lr=1e-2, schedule="constant", log_every=5, progress=False, device="cpu")


def _run(tmp_path=None, val=True, **overrides):
    seed_everything(0)
    return train(UNet(1, 2, width=4, depth=1), F.cross_entropy, threshold_task(), TrainConfig(**{**FAST, **overrides}),
                 metrics_factory=lambda: SegmentationMetrics(2),
                 val_set=threshold_task(32, seed=1) if val else None,
                 name=None if tmp_path is None else "plateau", results_dir=tmp_path)


def test_run_records_its_plateau_and_no_metric_changes(tmp_path):
    with_rule = _run(tmp_path, eval_every=5, plateau_metric="pixel_accuracy", plateau_tolerance=0.05)
    without = _run(eval_every=5)
    # JSON text: NaN (a class never predicted has no precision) equals itself there
    assert json.dumps(with_rule.history) == json.dumps(without.history)
    assert json.dumps({k: v for k, v in with_rule.metrics.items() if k != "train_time_s"}) == \
        json.dumps({k: v for k, v in without.metrics.items() if k != "train_time_s"})
    p = with_rule.plateau
    assert without.plateau is None
    assert p["metric"] == "val_pixel_accuracy" and p["window"] == [30, 40] and p["steps"] == [30, 35, 40]
    assert p["values"] == [h["val_pixel_accuracy"] for h in with_rule.history if h["step"] >= 30]
    assert p["reached"] == (p["change"] <= 0.05)
    record = load_record(with_rule.record_path)
    assert record.plateau == p and record.config["train"]["plateau_metric"] == "pixel_accuracy"


def test_run_without_evaluations_says_why():
    p = _run(plateau_metric="miou").plateau
    assert p["reached"] is None and "eval_every = 0" in p["reason"]
    p = _run(val=False, eval_every=5, plateau_metric="miou").plateau
    assert p["reached"] is None and "no val_set" in p["reason"]


def test_record_plateau_field():
    kwargs = dict(name="r", config={}, metrics={}, seed=0, wall_time_s=1.0, device="cpu", provenance={})
    assert RunRecord(**kwargs).plateau is None
    with pytest.raises(ValueError, match="plateau must be a mapping or None"):
        RunRecord(**kwargs, plateau="reached")
    old = RunRecord(**kwargs).to_dict()
    del old["plateau"]  # a record written before the rule existed
    assert RunRecord.from_dict(old).plateau is None


def test_evaluation_does_not_wait_for_a_log_step(tmp_path):
    """eval_every need not be a multiple of log_every: every eval_every-th step is evaluated
    (the plateau rule needs its evaluations), and the record's provenance is the one of the
    start of training."""
    from helpers.toy import threshold_task

    from pixelweight.metrics import SegmentationMetrics
    from pixelweight.train import TrainConfig, train
    from torch import nn

    data = threshold_task(n=32, size=8)
    config = TrainConfig(steps=40, batch_size=8, log_every=7, eval_every=10, device="cpu", progress=False,
                         plateau_metric="miou")
    result = train(nn.Conv2d(1, 2, 1), nn.CrossEntropyLoss(), data, config,
                   metrics_factory=lambda: SegmentationMetrics(2), val_set=data, name="toy", results_dir=tmp_path)
    evaluated = [h["step"] for h in result.history if "val_miou" in h]
    assert evaluated == [10, 20, 30, 40]
    assert result.plateau["steps"] == [30, 40] or result.plateau["reason"]
