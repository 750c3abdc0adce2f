"""Segmentation metrics: confusion matrix, torchmetrics and scikit-learn references, full-resolution
evaluation, accumulation, torch.distributed sync, errors."""

import json
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from sklearn.metrics import confusion_matrix as sk_confusion_matrix
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassConfusionMatrix,
    MulticlassJaccardIndex,
    MulticlassPrecision,
    MulticlassRecall,
)

from pixelweight.metrics import boundary_mask
from pixelweight.metrics.segmentation import SegmentationMetrics, confusion_matrix, metrics_from_confusion

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
NAN = float("nan")


def _labels(seed, n=3, c=5, h=12, w=10, ignore_index=None):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (n, h, w), generator=g)
    # predictions right 60% of the time, otherwise a random class
    pred = torch.where(torch.rand(n, h, w, generator=g) < 0.6, target, torch.randint(0, c, (n, h, w), generator=g))
    if ignore_index is not None:
        target[torch.rand(n, h, w, generator=g) < 0.2] = ignore_index
    return pred, target


def _assert_list_close(ours, ref, **tol):
    np.testing.assert_allclose(np.asarray(ours, dtype=float), np.asarray(ref, dtype=float), equal_nan=True, **tol)


# ------------------------------------------------------------------------------------ confusion matrix


def test_confusion_matrix_known_values():
    target = torch.tensor([[0, 0, 1, 2], [2, 2, 255, 1]])
    pred = torch.tensor([[0, 1, 1, 2], [0, 2, 0, 1]])
    expected = torch.tensor([[1, 1, 0], [0, 2, 0], [1, 0, 2]])  # rows: ground truth
    assert torch.equal(confusion_matrix(pred, target, 3, ignore_index=255), expected)
    assert confusion_matrix(pred, target, 3, 255).dtype == torch.long


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("ignore_index", [None, 255, 2])
def test_confusion_matrix_matches_sklearn_and_torchmetrics(device, ignore_index):
    pred, target = _labels(0, ignore_index=ignore_index)
    pred, target = pred.to(device), target.to(device)
    cm = confusion_matrix(pred, target, 5, ignore_index)
    assert cm.device.type == device
    keep = np.ones(target.numel(), bool) if ignore_index is None else (target.cpu().numpy().ravel() != ignore_index)
    ref = sk_confusion_matrix(target.cpu().numpy().ravel()[keep], pred.cpu().numpy().ravel()[keep], labels=range(5))
    np.testing.assert_array_equal(cm.cpu().numpy(), ref)
    tm = MulticlassConfusionMatrix(5, ignore_index=ignore_index).to(device)
    assert torch.equal(cm, tm(pred, target).long())


# ------------------------------------------------------------------------------------ metrics of a matrix


def test_metrics_from_confusion_known_values():
    cm = torch.tensor([[3, 1, 0], [1, 2, 0], [0, 2, 1]])
    # TP = (3, 2, 1); GT = (4, 3, 3); PR = (4, 5, 1); union = GT + PR - TP = (5, 6, 3)
    out = metrics_from_confusion(cm, class_names=["sky", "road", "car"])
    _assert_list_close(out["iou"], [3 / 5, 2 / 6, 1 / 3])
    _assert_list_close(out["recall"], [3 / 4, 2 / 3, 1 / 3])
    _assert_list_close(out["precision"], [3 / 4, 2 / 5, 1.0])
    assert out["miou"] == pytest.approx((3 / 5 + 1 / 3 + 1 / 3) / 3)
    assert out["mean_accuracy"] == pytest.approx((3 / 4 + 2 / 3 + 1 / 3) / 3)
    assert out["mean_precision"] == pytest.approx((3 / 4 + 2 / 5 + 1) / 3)
    assert out["pixel_accuracy"] == pytest.approx(6 / 10)
    assert out["class_names"] == ["sky", "road", "car"]
    assert metrics_from_confusion(cm)["class_names"] == ["0", "1", "2"]
    # a numpy matrix gives the same
    assert metrics_from_confusion(cm.numpy())["miou"] == out["miou"]


def test_undefined_classes_are_nan_and_left_out_of_means():
    # class 1: absent from gt, predicted once (recall undefined, IoU 0, precision 0)
    # class 2: absent from gt and prediction (everything undefined)
    # class 3: present in gt, never predicted (precision undefined, IoU 0, recall 0)
    cm = torch.tensor([[4, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0], [2, 0, 0, 0]])
    out = metrics_from_confusion(cm)
    _assert_list_close(out["iou"], [4 / 7, 0.0, NAN, 0.0])
    _assert_list_close(out["recall"], [4 / 5, NAN, NAN, 0.0])
    _assert_list_close(out["precision"], [4 / 6, 0.0, NAN, NAN])
    assert out["miou"] == pytest.approx((4 / 7) / 3)
    assert out["mean_accuracy"] == pytest.approx((4 / 5) / 2)
    assert out["mean_precision"] == pytest.approx((4 / 6) / 2)
    empty = metrics_from_confusion(torch.zeros(3, 3, dtype=torch.long))
    assert all(math.isnan(empty[k]) for k in ("miou", "mean_accuracy", "mean_precision", "pixel_accuracy"))


def test_ignore_index_inside_the_class_range_drops_that_class():
    cm = torch.tensor([[0, 2, 1], [0, 5, 1], [0, 1, 4]])  # class 0 is the ignored label: no gt row
    out = metrics_from_confusion(cm, ignore_index=0)
    assert math.isnan(out["iou"][0]) and math.isnan(out["recall"][0]) and math.isnan(out["precision"][0])
    assert out["miou"] == pytest.approx((5 / 9 + 4 / 7) / 2)
    assert metrics_from_confusion(cm, ignore_index=255)["iou"][0] == 0.0  # outside [0, C): no effect


# ------------------------------------------------------------------------------------ torchmetrics


def _torchmetrics(pred, target, c, ignore_index):
    kw = dict(num_classes=c, ignore_index=ignore_index)
    return {
        "iou": MulticlassJaccardIndex(average=None, **kw)(pred, target),
        "miou": MulticlassJaccardIndex(average="macro", **kw)(pred, target),
        "recall": MulticlassRecall(average=None, **kw)(pred, target),
        "mean_accuracy": MulticlassRecall(average="macro", **kw)(pred, target),
        "precision": MulticlassPrecision(average=None, **kw)(pred, target),
        "mean_precision": MulticlassPrecision(average="macro", **kw)(pred, target),
        "pixel_accuracy": MulticlassAccuracy(average="micro", **kw)(pred, target),
        "macro_accuracy": MulticlassAccuracy(average="macro", **kw)(pred, target),
    }


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_matches_torchmetrics_when_every_class_occurs(seed, ignore_index):
    pred, target = _labels(seed, n=4, c=6, h=20, w=16, ignore_index=ignore_index)
    m = SegmentationMetrics(6, ignore_index=ignore_index)
    m.update(pred, target)
    ours = m.compute()
    ref = _torchmetrics(pred, target, 6, ignore_index)
    for key in ("iou", "recall", "precision"):
        _assert_list_close(ours[key], ref[key], rtol=1e-6, atol=1e-6)
    for key in ("miou", "mean_accuracy", "mean_precision", "pixel_accuracy"):
        assert ours[key] == pytest.approx(ref[key].item(), rel=1e-6, abs=1e-6), key
    assert ours["mean_accuracy"] == pytest.approx(ref["macro_accuracy"].item(), rel=1e-6)  # mean class recall


def test_documented_difference_from_torchmetrics_on_absent_classes():
    # class 3: absent from gt, predicted; class 4: absent from gt and prediction;
    # class 2: present in gt, never predicted
    target = torch.tensor([[[0, 0, 1, 1, 2, 2]]])
    pred = torch.tensor([[[0, 3, 1, 1, 0, 1]]])
    ours = metrics_from_confusion(confusion_matrix(pred, target, 5))
    ref = _torchmetrics(pred, target, 5, None)
    # torchmetrics scores every 0/0 as 0 ...
    _assert_list_close(ref["recall"], [0.5, 1.0, 0.0, 0.0, 0.0])
    _assert_list_close(ref["precision"], [0.5, 2 / 3, 0.0, 0.0, 0.0])
    _assert_list_close(ref["iou"], [1 / 3, 2 / 3, 0.0, 0.0, 0.0])
    # ... where ours is NaN (undefined)
    _assert_list_close(ours["recall"], [0.5, 1.0, 0.0, NAN, NAN])
    _assert_list_close(ours["precision"], [0.5, 2 / 3, NAN, 0.0, NAN])
    _assert_list_close(ours["iou"], [1 / 3, 2 / 3, 0.0, 0.0, NAN])
    # a class absent from both is dropped from the macro mean by both libraries: mIoU agrees
    assert ours["miou"] == pytest.approx(ref["miou"].item(), rel=1e-6)
    # recall: torchmetrics keeps class 3 (predicted, absent from gt) as 0 in the mean; we drop it
    assert ours["mean_accuracy"] == pytest.approx((0.5 + 1.0 + 0.0) / 3)
    assert ref["mean_accuracy"].item() == pytest.approx((0.5 + 1.0 + 0.0 + 0.0) / 4)
    # precision: torchmetrics keeps class 2 (in gt, never predicted) as 0; we drop it
    assert ours["mean_precision"] == pytest.approx((0.5 + 2 / 3 + 0.0) / 3)
    assert ref["mean_precision"].item() == pytest.approx((0.5 + 2 / 3 + 0.0 + 0.0) / 4)
    assert ours["pixel_accuracy"] == pytest.approx(ref["pixel_accuracy"].item())


def test_matches_torchmetrics_jaccard_with_ignore_index_inside_the_range():
    pred, target = _labels(3, c=4, h=16, w=16)
    ours = SegmentationMetrics(4, ignore_index=0)
    ours.update(pred, target)
    ref = MulticlassJaccardIndex(4, average="macro", ignore_index=0)(pred, target)
    assert ours.compute()["miou"] == pytest.approx(ref.item(), rel=1e-6)


# ------------------------------------------------------------------------------------ the accumulator


def test_accumulation_over_updates_equals_one_update():
    pred, target = _labels(4, n=6, ignore_index=255)
    whole = SegmentationMetrics(5, ignore_index=255)
    whole.update(pred, target)
    parts = SegmentationMetrics(5, ignore_index=255)
    for i in range(0, 6, 2):
        parts.update(pred[i:i + 2], target[i:i + 2])
    assert torch.equal(parts.confmat, whole.confmat)
    a, b = parts.compute(), whole.compute()
    for key in ("miou", "mean_accuracy", "mean_precision", "pixel_accuracy"):
        assert a[key] == b[key]
    assert a["iou"] == b["iou"] and a["recall"] == b["recall"] and a["precision"] == b["precision"]
    assert a["confusion_matrix"] == whole.confmat.tolist()
    parts.reset()
    assert parts.confmat.sum() == 0
    assert math.isnan(parts.compute()["miou"])


@pytest.mark.parametrize("device", DEVICES)
def test_logits_are_upsampled_to_the_label_size_before_argmax(device):
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(2, 3, 4, 5, generator=g).to(device)
    target = torch.randint(0, 3, (2, 16, 20), generator=g).to(device)
    m = SegmentationMetrics(3)
    m.update(logits, target)
    up = F.interpolate(logits, size=(16, 20), mode="bilinear", align_corners=False).argmax(1)
    assert torch.equal(m.confmat, confusion_matrix(up, target, 3))
    assert m.confmat.sum() == 2 * 16 * 20  # every label pixel counted, at full resolution
    assert m.confmat.device.type == device


def test_full_resolution_evaluation_differs_from_downsampled_labels():
    # a thin structure: one-pixel lines that a stride-4 grid misses
    target = torch.zeros(1, 16, 16, dtype=torch.long)
    target[0, 1::4, :] = 1
    logits = torch.zeros(1, 2, 4, 4)
    logits[:, 0] = 1.0  # predicts background everywhere
    m = SegmentationMetrics(2)
    m.update(logits, target)
    assert m.compute()["iou"][1] == 0.0  # the full-resolution labels show the missed class
    coarse = target[:, ::4, ::4]  # naive evaluation at the output grid never sees class 1
    assert math.isnan(metrics_from_confusion(confusion_matrix(logits.argmax(1), coarse, 2))["recall"][1])


def test_same_size_logits_label_maps_and_binary_logits():
    pred, target = _labels(6, c=2)
    onehot = F.one_hot(pred, 2).permute(0, 3, 1, 2).float()
    a, b, c = SegmentationMetrics(2), SegmentationMetrics(2), SegmentationMetrics(2)
    a.update(onehot, target)
    b.update(pred, target)
    c.update((2.0 * pred - 1.0).unsqueeze(1), target)  # one-channel logits: > 0 is foreground
    assert torch.equal(a.confmat, b.confmat) and torch.equal(b.confmat, c.confmat)
    d = SegmentationMetrics(2)
    d.update(pred.bool(), target)
    assert torch.equal(d.confmat, b.confmat)


def test_sync_without_process_group_is_local_and_idempotent():
    pred, target = _labels(7)
    m = SegmentationMetrics(5, class_names=list("abcde"))
    m.update(pred, target)
    local = m.confmat.clone()
    assert torch.equal(m.sync(), local) and torch.equal(m.sync(), local)
    assert m.compute()["class_names"] == list("abcde")
    assert m.compute() == m.compute(sync=False)
    with pytest.raises(TypeError, match="sync must be a bool"):
        m.compute(sync=1)


def test_sync_with_a_single_process_group(tmp_path):
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        pred, target = _labels(8)
        m = SegmentationMetrics(5)
        m.update(pred, target)
        local = m.confmat.clone()
        assert torch.equal(m.sync(), local)
        assert torch.equal(m.sync(), local)  # all-reduces a copy of the local matrix: no double count
        m.update(pred, target)  # back to local accumulation
        assert torch.equal(m.confmat, 2 * local)
        assert m.compute(sync=False)["confusion_matrix"] == (2 * local).tolist()
        assert m.compute()["confusion_matrix"] == (2 * local).tolist()
    finally:
        dist.destroy_process_group()


# Run by two fresh interpreters (python -c): only torch and pixelweight to import, so it is quick.
_DDP_WORKER = """
import json, sys
import torch
import torch.distributed as dist
from pixelweight.metrics.segmentation import SegmentationMetrics


def data():
    g = torch.Generator().manual_seed(9)
    target = torch.randint(0, 5, (5, 12, 10), generator=g)
    pred = torch.where(torch.rand(5, 12, 10, generator=g) < 0.6, target, torch.randint(0, 5, (5, 12, 10), generator=g))
    target[torch.rand(5, 12, 10, generator=g) < 0.2] = 255
    return pred, target


if __name__ == "__main__":
    rank, world_size, store, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
    dist.init_process_group("gloo", init_method="file://" + store, rank=rank, world_size=world_size)
    pred, target = data()
    m = SegmentationMetrics(5, ignore_index=255)
    m.update(pred[rank::world_size], target[rank::world_size])  # uneven shards: 3 and 2 images
    local = m.compute(sync=False)
    m.sync()  # the training harness's protocol: sync(), then compute()
    after_sync = m.compute(sync=False)
    with open(out, "w") as f:
        json.dump({"local": local, "after_sync": after_sync, "compute": m.compute()}, f)
    dist.destroy_process_group()
"""


@pytest.mark.slow
def test_sync_across_two_processes_is_exact(tmp_path):
    store, outs = str(tmp_path / "store"), [tmp_path / f"rank{r}.json" for r in range(2)]
    procs = [subprocess.Popen([sys.executable, "-c", _DDP_WORKER, str(r), "2", store, str(outs[r])],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT) for r in range(2)]
    for p in procs:
        log = p.communicate(timeout=120)[0].decode()
        assert p.returncode == 0, log
    namespace = {}
    exec(_DDP_WORKER, namespace)  # the same data, in this process
    pred, target = namespace["data"]()
    single = SegmentationMetrics(5, ignore_index=255)
    single.update(pred, target)
    expected = single.compute()
    locals_ = []
    for out in outs:
        results = json.loads(out.read_text())
        locals_.append(np.array(results["local"]["confusion_matrix"]))
        for key in ("after_sync", "compute"):  # compute() syncs again from the local matrix: no double count
            assert results[key]["confusion_matrix"] == expected["confusion_matrix"], key
            assert results[key]["miou"] == expected["miou"] and results[key]["iou"] == expected["iou"]
    np.testing.assert_array_equal(locals_[0] + locals_[1], np.array(expected["confusion_matrix"]))
    assert not np.array_equal(locals_[0], np.array(expected["confusion_matrix"]))
    assert sum(sum(row) for row in expected["confusion_matrix"]) == int((target != 255).sum())


# ------------------------------------------------------------------------------------ errors


@pytest.mark.parametrize(
    "args, exc, match",
    [
        ((torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), 2), ValueError, "pred must be an integer"),
        ((torch.zeros(2, 3, dtype=torch.long), torch.zeros(3, 2, dtype=torch.long), 2), ValueError,
         r"same shape, got \(2, 3\) and \(3, 2\)"),
        ((torch.tensor([0, 2]), torch.tensor([0, 1]), 2), ValueError, r"pred values must lie in \[0, 1\]"),
        ((torch.tensor([0, 1]), torch.tensor([0, 5]), 2), ValueError, r"target values must lie in \[0, 1\]"),
        ((torch.tensor([0, 1]), torch.tensor([0, 1]), 0), ValueError, "num_classes must be >= 1"),
        ((torch.tensor([0, 1]), torch.tensor([0, 1]), 2.0), TypeError, "num_classes must be an int"),
        (([0, 1], torch.tensor([0, 1]), 2), TypeError, "pred must be a torch.Tensor"),
    ],
)
def test_confusion_matrix_errors(args, exc, match):
    with pytest.raises(exc, match=match):
        confusion_matrix(*args)


@pytest.mark.parametrize(
    "cm, kwargs, exc, match",
    [
        (torch.zeros(2, 3), {}, ValueError, r"square \(C, C\) matrix, got shape \(2, 3\)"),
        (torch.zeros(0, 0), {}, ValueError, "square"),
        (torch.tensor([[1, -1], [0, 1]]), {}, ValueError, "non-negative"),
        (torch.tensor([[1.0, NAN], [0, 1]]), {}, ValueError, "finite"),
        (torch.ones(2, 2, dtype=torch.bool), {}, ValueError, "real counts"),
        ([[1, 0], [0, 1]], {}, TypeError, "cm must be a torch.Tensor"),
        (torch.eye(2), dict(class_names=["a"]), ValueError, "1 names for num_classes=2"),
        (torch.eye(2), dict(class_names="ab"), TypeError, "sequence of str"),
        (torch.eye(2), dict(class_names=["a", 1]), TypeError, "str only"),
        (torch.eye(2), dict(ignore_index=0.0), TypeError, "ignore_index must be an int"),
    ],
)
def test_metrics_from_confusion_errors(cm, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        metrics_from_confusion(cm, **kwargs)


def test_accumulator_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        SegmentationMetrics(1)
    with pytest.raises(ValueError, match="3 names for num_classes=2"):
        SegmentationMetrics(2, class_names=["a", "b", "c"])
    m = SegmentationMetrics(3, ignore_index=255)
    target = torch.zeros(2, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=r"target must have shape \(N, H, W\), got \(8, 8\)"):
        m.update(torch.zeros(8, 8, dtype=torch.long), target[0])
    with pytest.raises(ValueError, match="target must be an integer"):
        m.update(torch.zeros(2, 8, 8, dtype=torch.long), target.float())
    with pytest.raises(ValueError, match=r"label predictions must have the target's shape \(2, 8, 8\)"):
        m.update(torch.zeros(2, 4, 4, dtype=torch.long), target)
    with pytest.raises(ValueError, match=r"logits must have shape \(N, C, h, w\) with N = 2 and C = 3"):
        m.update(torch.zeros(2, 2, 8, 8), target)
    with pytest.raises(ValueError, match=r"with N = 2 and C = 3, got \(1, 3, 8, 8\)"):
        m.update(torch.zeros(1, 3, 8, 8), target)
    with pytest.raises(ValueError, match=r"got \(2, 8, 8\)"):
        m.update(torch.zeros(2, 8, 8), target)
    with pytest.raises(ValueError, match=r"C = 2 \(or 1 for binary\)"):
        SegmentationMetrics(2).update(torch.zeros(2, 3, 8, 8), target)
    with pytest.raises(TypeError, match="preds must be a torch.Tensor"):
        m.update(np.zeros((2, 8, 8)), target)
    with pytest.raises(ValueError, match=r"target values must lie in \[0, 2\] or equal ignore_index=255"):
        m.update(torch.zeros(2, 8, 8, dtype=torch.long), target + 7)
    assert m.confmat.sum() == 0  # failed updates leave the state alone


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
