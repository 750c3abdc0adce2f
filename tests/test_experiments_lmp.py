"""Helpers of the loss max-pooling chapter: its profiles, boundary masks, weight shares,
the limit checks on real losses, per-group metrics, the benchmark, and tiny training runs
(LMP with ratio 1 trains exactly like CE; LMP learns a trivial task)."""

import math

import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from helpers.toy import threshold_task
from pixelweight.experiments import (
    LMP_SCALES,
    boundary_mask,
    group_metric_frame,
    lmp_benchmark,
    lmp_limit_frame,
    lmp_path_frame,
    lmp_profile,
    lmp_scenes,
    top_m_mean,
    weight_share_frame,
)
from pixelweight.data import DigitScenes
from pixelweight.losses import CrossEntropyLoss, LossMaxPooling, lmp_weights
from pixelweight.metrics import SegmentationMetrics
from pixelweight.models import UNet
from pixelweight.profiles import get_profile
from pixelweight.train import TrainConfig, TrainResult, seed_everything, train


def test_lmp_profile_and_scenes():
    for name in ("ci", "full"):
        for stage, scales in LMP_SCALES.items():
            assert lmp_profile(name, stage) == get_profile(name, **scales[name]["profile"])
            scenes = lmp_scenes(name, stage)
            assert scenes["imbalance"] == 1.0
            DigitScenes(split="val", num_samples=2, size=lmp_profile(name, stage).image_size, cache_dir=False,
                        **scenes)  # valid arguments
    for stage in ("headline", "grid"):
        assert len(lmp_profile("ci", stage).seeds) >= 3 and len(lmp_profile("full", stage).seeds) >= 5
    assert lmp_profile("full", "headline") == get_profile("full")
    with pytest.raises(ValueError, match="stage must be one of"):
        lmp_profile("ci", "nope")
    with pytest.raises(ValueError, match="stage must be one of"):
        lmp_scenes("ci", "nope")
    with pytest.raises(ValueError, match="unknown profile"):
        lmp_profile("gpu", "grid")


def test_boundary_mask():
    target = torch.zeros(1, 6, 6, dtype=torch.long)
    target[0, 2:4, 2:4] = 3
    b = boundary_mask(target)
    expected = torch.zeros(6, 6, dtype=torch.bool)
    expected[1:5, 1:5] = True  # the 2x2 square and its 1-pixel ring
    assert torch.equal(b[0], expected)
    assert boundary_mask(target, width=2)[0].sum() == 36  # the whole 6x6 canvas
    assert not boundary_mask(torch.ones(2, 5, 5, dtype=torch.long)).any()
    ignored = target.clone()
    ignored[0, :, 0] = 255  # an ignored column creates no boundary and is none
    b2 = boundary_mask(ignored, ignore_index=255)
    assert torch.equal(b2[0], expected) and not b2[0, :, 0].any()


def test_boundary_mask_errors():
    with pytest.raises(ValueError, match=r"integer \(N, H, W\) label map"):
        boundary_mask(torch.zeros(2, 3, 3))
    with pytest.raises(ValueError, match=r"integer \(N, H, W\) label map"):
        boundary_mask(torch.zeros(3, 3, dtype=torch.long))
    with pytest.raises(ValueError, match="width must be >= 1"):
        boundary_mask(torch.zeros(1, 3, 3, dtype=torch.long), width=0)
    with pytest.raises(TypeError, match="target must be a torch.Tensor"):
        boundary_mask([[0]])


def test_weight_share_frame():
    target = torch.tensor([[[0, 0, 0, 1]]])
    weights = torch.tensor([[[1.0, 1.0, 1.0, 3.0]]])
    boundary = torch.tensor([[[False, False, True, True]]])
    frame = weight_share_frame(weights, target, ["bg", "fg"], boundary)
    rows = frame.set_index("group")
    assert rows.loc["bg", "pixel_share"] == 0.75 and rows.loc["bg", "weight_share"] == 0.5
    assert rows.loc["fg", "enrichment"] == pytest.approx(0.5 / 0.25)
    assert rows.loc["boundary pixels", "weight_share"] == pytest.approx(4 / 6)
    assert rows.loc["interior pixels", "pixel_share"] == 0.5
    uniform = weight_share_frame(torch.ones(1, 1, 4), target, ["bg", "fg"])
    assert list(uniform["enrichment"]) == [1.0, 1.0]
    valid = torch.tensor([[[True, True, True, False]]])
    masked = weight_share_frame(weights, target, ["bg", "fg"], valid=valid).set_index("group")
    assert masked.loc["bg", "weight_share"] == 1.0 and math.isnan(masked.loc["fg", "enrichment"])


def test_weight_share_frame_errors():
    t = torch.zeros(1, 2, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="must have the same shape"):
        weight_share_frame(torch.ones(1, 2, 3), t, ["a", "b"])
    with pytest.raises(ValueError, match="boundary must be a bool tensor"):
        weight_share_frame(torch.ones(1, 2, 2), t, ["a", "b"], boundary=torch.ones(1, 2, 2))
    with pytest.raises(ValueError, match="weights must be non-negative"):
        weight_share_frame(-torch.ones(1, 2, 2), t, ["a", "b"])
    with pytest.raises(ValueError, match="at least one valid pixel with a positive weight"):
        weight_share_frame(torch.zeros(1, 2, 2), t, ["a", "b"])
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 1\]"):
        weight_share_frame(torch.ones(1, 2, 2), t + 2, ["a", "b"])


def test_top_m_mean():
    x = torch.tensor([[4.0, 1.0, 3.0, 2.0], [1.0, 1.0, 1.0, 5.0]])
    torch.testing.assert_close(top_m_mean(x, 2), torch.tensor([3.5, 3.0], dtype=torch.float64))
    torch.testing.assert_close(top_m_mean(x, [2.5, 0.2]), torch.tensor([(7 + 1.0) / 2.5, 5.0], dtype=torch.float64))
    valid = torch.tensor([[False, True, True, True], [False, False, False, False]])
    torch.testing.assert_close(top_m_mean(x, 10, valid), torch.tensor([2.0, 0.0], dtype=torch.float64))
    with pytest.raises(ValueError, match="one m per image"):
        top_m_mean(x, [1.0])
    with pytest.raises(ValueError, match=r"shape \(N, ...\)"):
        top_m_mean(torch.ones(3), 1.0)


def test_lmp_limit_frame_on_losses():
    g = torch.Generator().manual_seed(0)
    losses = torch.rand(3, 8, 8, generator=g) ** 4 * 3
    valid = torch.rand(3, 8, 8, generator=g) > 0.2
    frame = lmp_limit_frame(losses, valid)
    assert set(frame["image"]) == {0, 1, 2} and frame["limit"].nunique() == 5
    worst = frame.groupby("limit")["relative_difference"].apply(lambda s: s.abs().max())
    exact = [k for k in worst.index if k.startswith(("ratio = 1", "p = 1 ", "m = 1"))]
    assert len(exact) == 3 and all(worst[k] < 1e-10 for k in exact)
    assert all(worst[k] < 1e-3 for k in worst.index)
    with pytest.raises(ValueError, match="every image needs at least one valid pixel"):
        lmp_limit_frame(losses, torch.zeros_like(valid))


def test_lmp_path_frame():
    losses = torch.rand(2, 30, generator=torch.Generator().manual_seed(1)) ** 3
    frame = lmp_path_frame(losses, [1.0001, 1.7, 1e5], ratio=0.2)
    assert len(frame) == 6
    near_one, far = frame[frame.p == 1.0001], frame[frame.p == 1e5]
    assert ((near_one.lmp - near_one.top_m_mean).abs() / near_one.top_m_mean).max() < 1e-3
    assert ((far.lmp - far["mean"]).abs() / far["mean"]).max() < 1e-4
    mid = frame[frame.p == 1.7]
    assert (mid["mean"] < mid.lmp).all() and (mid.lmp < mid.top_m_mean).all()


def _fake_result(seed, iou, recall):
    metrics = {"test_miou": sum(iou) / len(iou), "test_mean_accuracy": 0.5, "test_pixel_accuracy": 0.9,
               "test_iou": iou, "test_recall": recall}
    return TrainResult(model=None, history=[], metrics=metrics, wall_time_s=0.0, device="cpu")


def test_group_metric_frame():
    results = {"a": [_fake_result(0, [0.9, 0.2, float("nan")], [1.0, 0.4, 0.0])]}
    frame = group_metric_frame(results, {"rare": [1, 2], "all": [0, 1, 2]})
    row = frame.iloc[0]
    assert row["rare_iou"] == pytest.approx(0.2) and row["rare_recall"] == pytest.approx(0.2)
    assert row["all_iou"] == pytest.approx(0.55) and row["run"] == "a" and row["seed_index"] == 0
    with pytest.raises(ValueError, match="group 'x' must list class indices"):
        group_metric_frame(results, {"x": [5]})
    with pytest.raises(ValueError, match="split must be"):
        group_metric_frame(results, {}, split="train")


def test_lmp_benchmark_small():
    frame = lmp_benchmark((2, 3, 8, 16), repeats=2, warmup=0)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame["pass"]) == ["forward+backward"] * 4 + ["forward"] * 2
    assert frame.loc[0, "ratio"] == 1.0 and frame.loc[4, "ratio"] == 1.0
    assert (frame["median_ms"] > 0).all() and set(frame["shape"]) == {"2x3x8x16"}
    assert (frame["ratio_q25"] <= frame["ratio"]).all() and (frame["ratio"] <= frame["ratio_q75"]).all()
    with pytest.raises(ValueError, match=r"shape must be \(N, C, H, W\)"):
        lmp_benchmark((2, 3, 8))


FAST = dict(steps=12, batch_size=8, lr=1e-2, schedule="constant", log_every=4, progress=False, device="cpu")


def _train(loss, seed=0, steps=12, evaluate=False):
    seed_everything(seed)
    model = UNet(in_channels=1, num_classes=2, width=4, depth=1)
    return train(model, loss, threshold_task(), TrainConfig(seed=seed, **{**FAST, "steps": steps}),
                 metrics_factory=lambda: SegmentationMetrics(2),
                 val_set=threshold_task(32, seed=1) if evaluate else None)


def test_lmp_with_ratio_one_trains_exactly_like_cross_entropy():
    ce = _train(CrossEntropyLoss(), steps=8)
    lmp = _train(LossMaxPooling(p=1.7, ratio=1.0), steps=8)
    for a, b in zip(ce.model.state_dict().values(), lmp.model.state_dict().values()):
        assert torch.equal(a, b)
    assert [h["loss"] for h in ce.history] == [h["loss"] for h in lmp.history]


@pytest.mark.slow
def test_lmp_learns_a_trivial_task():
    result = _train(LossMaxPooling(p=1.7, ratio=0.3), steps=40, evaluate=True)
    assert result.metrics["val_miou"] > 0.8
    assert result.history[-1]["loss"] < result.history[0]["loss"]


def test_lmp_weights_on_a_prediction_favour_errors():
    # a model that is wrong on one class: the LMP weight concentrates on that class's pixels
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    target[:, 2:4, 2:6] = 1
    logits = torch.zeros(2, 2, 8, 8)
    logits[:, 0] = 3.0  # predicts background everywhere
    ce = F.cross_entropy(logits, target, reduction="none")
    frame = weight_share_frame(lmp_weights(ce, 1.7, 0.1), target, ["bg", "fg"], boundary_mask(target))
    rows = frame.set_index("group")
    assert rows.loc["fg", "enrichment"] > 3 and rows.loc["boundary pixels", "enrichment"] > 1
