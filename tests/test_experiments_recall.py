"""Experiment helpers of the recall-loss chapter: training-split class weights, the weight
trajectory hook and its table, and the frequency exponent of a weight vector."""

import math

import numpy as np
import pytest
import torch

from helpers.toy import threshold_task
from pixelweight.experiments import (
    Splits,
    digit_scenes_splits,
    frequency_exponent,
    log_loss_weights,
    recall_profile,
    recall_scenes,
    train_class_weights,
    weight_history_frame,
)
from pixelweight.losses import CrossEntropyLoss, RecallLoss, class_weights
from pixelweight.models import UNet
from pixelweight.profiles import get_profile
from pixelweight.train import TrainConfig, train


@pytest.fixture(scope="module")
def splits():
    profile = get_profile("ci", train_samples=12, val_samples=6, test_samples=6, image_size=32)
    return digit_scenes_splits(profile, imbalance=1.0, digit_size=(10, 20), cache_dir=False)


@pytest.mark.parametrize("method", ["inverse", "median"])
def test_train_class_weights_use_the_training_split_only(splits, method):
    # pitfall of the paper's public baseline: weights estimated on validation data
    w = train_class_weights(splits, method)
    train_counts = torch.as_tensor(splits.train.pixel_counts).sum(0)
    torch.testing.assert_close(w, class_weights(counts=train_counts, method=method))
    val_counts = torch.as_tensor(splits.val.pixel_counts).sum(0)
    assert not torch.allclose(w, class_weights(counts=val_counts, method=method))
    assert w.shape == (11,)


def test_train_class_weights_errors(splits):
    with pytest.raises(TypeError, match="splits must be a Splits, got dict"):
        train_class_weights({"train": splits.train})
    bare = Splits(train=threshold_task(n=4), val=None, test=None, config={})
    with pytest.raises(ValueError, match="has no pixel_counts"):
        train_class_weights(bare)
    with pytest.raises(ValueError, match="method must be one of"):
        train_class_weights(splits, "sqrt")


def test_log_loss_weights_hook_records_the_trajectory():
    loss = RecallLoss(2, momentum=0.5)
    assert log_loss_weights(10, None, loss) == {"class_weights": [1.0, 1.0]}
    assert log_loss_weights(10, None, CrossEntropyLoss()) == {}
    config = TrainConfig(steps=10, batch_size=8, lr=1e-2, log_every=5, progress=False, device="cpu")
    result = train(UNet(1, 2, width=4, depth=1), loss, threshold_task(n=16, size=8), config,
                   on_log=log_loss_weights)
    logged = [h["class_weights"] for h in result.history]
    assert len(logged) == 2 and all(len(w) == 2 for w in logged)
    assert logged[-1] == pytest.approx(loss.weights.tolist())
    frame = weight_history_frame({"recall": [result]}, ["dark", "bright"])
    assert list(frame.columns) == ["run", "seed_index", "step", "class", "weight"]
    assert len(frame) == 4 and sorted(frame["step"].unique()) == [5, 10]
    # a run without logged weights contributes nothing; a wrong length is an error
    plain = train(UNet(1, 2, width=4, depth=1), CrossEntropyLoss(), threshold_task(n=16, size=8),
                  TrainConfig(steps=5, batch_size=8, log_every=5, progress=False, device="cpu"))
    assert len(weight_history_frame({"recall": [result], "ce": [plain]}, ["dark", "bright"])) == 4
    with pytest.raises(ValueError, match="logged 2 weights for 3 classes"):
        weight_history_frame({"recall": [result]}, ["a", "b", "c"])


def test_frequency_exponent_known_values():
    f = np.array([0.5, 0.3, 0.15, 0.05])
    assert frequency_exponent(np.ones(4), f) == pytest.approx(0.0)  # plain CE
    assert frequency_exponent(1 / f, f) == pytest.approx(1.0)  # inverse frequency
    assert frequency_exponent(3.0 * f ** -0.5, f) == pytest.approx(0.5)  # scale does not matter
    # zero / non-finite entries are left out (a fully recalled class has w = 0)
    assert frequency_exponent([0.0, 1 / 0.3, float("nan"), 1 / 0.05], f) == pytest.approx(1.0)
    assert math.isnan(frequency_exponent([1.0, 0.0, 0.0, 0.0], f))
    assert math.isnan(frequency_exponent([1.0, 2.0], [0.5, 0.5]))  # equal frequencies: no slope
    with pytest.raises(ValueError, match="equal length"):
        frequency_exponent([1.0, 2.0], [0.5, 0.3, 0.2])


def test_recall_chapter_scales():
    ci = recall_profile("ci")
    assert (ci.steps, ci.image_size, ci.width) == (270, 32, 16) and len(ci.seeds) >= 3
    assert recall_scenes("ci") == {"num_digits": (1, 3), "digit_size": (10, 20)}
    full = recall_profile("full")
    assert full == get_profile("full") and len(full.seeds) >= 5 and recall_scenes("full") == {}
    recall_scenes("ci")["num_digits"] = (9, 9)  # a copy: the table is not changed
    assert recall_scenes("ci")["num_digits"] == (1, 3)
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        recall_profile("gpu")
    with pytest.raises(ValueError, match="unknown profile 'gpu'"):
        recall_scenes("gpu")
