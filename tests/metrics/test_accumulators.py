"""Accumulators used by the training harness for binary maps and classification."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from py_sod_metrics import FmeasureHandler, FmeasureV2
from torchmetrics.functional.classification import multiclass_accuracy, multiclass_recall

from pixelweight.metrics.classification import ClassificationMetrics
from pixelweight.metrics.foreground import (
    ForegroundMetrics,
    mae,
    max_fmeasure,
    s_measure,
    weighted_fmeasure,
)


def _maps(n=5, size=24, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, 1, size, size, generator=g, dtype=torch.float64) * 2
    gt = torch.zeros(n, size, size, dtype=torch.long)
    for i in range(n):
        gt[i, 4 + i : 14 + i, 6:18] = 1
    return logits, gt


def test_foreground_accumulator_equals_direct_means_over_batches():
    logits, gt = _maps()
    m = ForegroundMetrics()
    m.update(logits[:2], gt[:2])
    m.update(logits[2:], gt[2:])
    out = m.compute()
    pred = torch.sigmoid(logits)[:, 0]
    assert out["num_images"] == 5
    assert out["wfm"] == pytest.approx(float(weighted_fmeasure(pred, gt).mean()), abs=1e-6)
    assert out["mae"] == pytest.approx(float(mae(pred, gt).mean()), abs=1e-6)
    assert out["s_measure"] == pytest.approx(float(s_measure(pred, gt).mean()), abs=1e-6)
    assert out["mean_max_f"] == pytest.approx(float(max_fmeasure(pred, gt).mean()), abs=1e-6)
    ref = FmeasureV2({"fm": FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3)})
    for p, g in zip(pred.numpy(), gt.numpy().astype(bool)):
        ref.step(p, g, normalize=False)
    dataset_curve = ref.get_results()["fm"]["dynamic"]  # mean over images of the per-image curves
    assert out["max_f"] == pytest.approx(float(np.max(dataset_curve)), abs=1e-6)  # float32 accumulator


def test_foreground_accumulator_upsamples_logits_and_resets():
    logits, gt = _maps(n=2, size=32)
    small = logits[..., ::2, ::2]
    m = ForegroundMetrics()
    m.update(small, gt)
    up = F.interpolate(small, size=(32, 32), mode="bilinear", align_corners=False)
    expected = weighted_fmeasure(torch.sigmoid(up)[:, 0], gt).mean()
    assert m.compute()["wfm"] == pytest.approx(float(expected), abs=1e-6)
    m.reset()
    with pytest.raises(ValueError, match="before any update"):
        m.compute()


def test_foreground_accumulator_errors():
    m = ForegroundMetrics()
    with pytest.raises(ValueError, match=r"\(N, 1, h, w\)"):
        m.update(torch.randn(2, 2, 4, 4), torch.zeros(2, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="binary"):
        m.update(torch.randn(2, 1, 4, 4), torch.full((2, 4, 4), 3))
    with pytest.raises(ValueError, match="2 images but target 3"):
        m.update(torch.randn(2, 1, 4, 4), torch.zeros(3, 4, 4, dtype=torch.long))


def test_classification_accumulator_matches_torchmetrics():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(200, 10, generator=g)
    target = torch.randint(0, 10, (200,), generator=g)
    m = ClassificationMetrics(10)
    m.update(logits[:50], target[:50])
    m.update(logits[50:].argmax(1), target[50:])  # labels are accepted too
    out = m.compute()
    assert out["accuracy"] == pytest.approx(float(multiclass_accuracy(logits, target, 10, average="micro")), abs=1e-7)
    assert out["mean_recall"] == pytest.approx(float(multiclass_recall(logits, target, 10, average="macro")), abs=1e-7)
    assert len(out["recall"]) == 10 and sum(map(sum, out["confusion_matrix"])) == 200


def test_classification_accumulator_errors():
    m = ClassificationMetrics(3)
    with pytest.raises(ValueError, match=r"\(N,\)"):
        m.update(torch.randn(2, 3), torch.zeros(2, 1, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, C\) = \(2, 3\)"):
        m.update(torch.randn(2, 4), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match="lie in"):
        m.update(torch.randn(2, 3), torch.tensor([0, 5]))


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_segmentation_and_classification_accumulators_reject_non_finite_logits(value):
    """An all-NaN model used to score mIoU 1.0 on an all-background target (argmax of NaN
    is 0); non-finite scores are now an error, as in ForegroundMetrics."""
    from pixelweight.metrics import SegmentationMetrics

    seg = SegmentationMetrics(3)
    logits = torch.randn(2, 3, 4, 5)
    logits[1, 2, 3, 4] = value
    with pytest.raises(ValueError, match=r"logits must be finite, found \d NaN and \d infinite"):
        seg.update(logits, torch.zeros(2, 4, 5, dtype=torch.long))
    with pytest.raises(ValueError, match="logits must be finite"):  # coarse logits are checked before upsampling
        seg.update(torch.full((2, 3, 2, 3), value), torch.zeros(2, 4, 5, dtype=torch.long))
    binary = SegmentationMetrics(2)
    with pytest.raises(ValueError, match="logits must be finite"):
        binary.update(torch.full((1, 1, 4, 5), value), torch.zeros(1, 4, 5, dtype=torch.long))
    assert seg.confmat.sum() == 0 and binary.confmat.sum() == 0  # nothing was counted
    cls = ClassificationMetrics(3)
    scores = torch.randn(4, 3)
    scores[2, 0] = value
    with pytest.raises(ValueError, match="logits must be finite"):
        cls.update(scores, torch.zeros(4, dtype=torch.long))
    cls.update(torch.randn(4, 3), torch.zeros(4, dtype=torch.long))  # finite logits still work
    assert cls.confmat.sum() == 4
