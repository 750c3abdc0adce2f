"""Block-wise weak annotation: BlockAnnotated (any data set of (image, labels) pairs) and
WeakDigitScenes (DigitScenes with a block-annotated training split)."""

import pytest
import torch
import torch.nn.functional as F

from pixelweight.data import ANNOTATIONS, BlockAnnotated, DigitScenes, WeakDigitScenes
from pixelweight.spectral import block_fractions, block_labels

KW = dict(num_samples=6, size=32, num_digits=(1, 3), digit_size=(12, 24), cache_dir=False)


def pairs(n=3, size=10, classes=4, seed=0, ignore=None):
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        labels = torch.randint(0, classes, (size, size), generator=g)
        if ignore is not None:
            labels[:3, :3] = ignore
        out.append((torch.rand(1, size, size, generator=g), labels))
    return out


def test_block_one_serves_the_labels_and_their_one_hot_maps():
    data = pairs()
    majority, soft = BlockAnnotated(data, 1, "majority", num_classes=4), BlockAnnotated(data, 1, "soft", num_classes=4)
    for i, (image, labels) in enumerate(data):
        assert torch.equal(majority[i][0], image) and torch.equal(majority[i][1], labels)
        assert soft[i][1].dtype == torch.float32
        assert torch.equal(soft[i][1], F.one_hot(labels, 4).permute(2, 0, 1).float())


@pytest.mark.parametrize("block", [2, 3, 4])
def test_block_labels_are_the_spectral_block_labels_repeated(block):
    data = pairs(size=10)  # 10 is not a multiple of 3 or 4: partial blocks at the edge
    labels = torch.stack([d[1] for d in data])
    majority = torch.stack([x[1] for x in BlockAnnotated(data, block, "majority", num_classes=4)])
    soft = torch.stack([x[1] for x in BlockAnnotated(data, block, "soft", num_classes=4)])
    assert torch.equal(majority, block_labels(labels, block, 4, restore=True))
    assert torch.equal(soft, block_fractions(labels, block, 4, restore=True))
    assert majority.shape == labels.shape and soft.shape == (3, 4, 10, 10)
    torch.testing.assert_close(soft.sum(1), torch.ones(3, 10, 10))
    # every pixel of a block carries the block's label
    assert (majority[:, :block, :block] == majority[:, :1, :1]).all()


def test_ignored_pixels_do_not_vote_and_an_ignored_block_stays_ignored():
    data = pairs(ignore=255)
    majority = BlockAnnotated(data, 3, "majority", num_classes=4, ignore_index=255)[0][1]
    soft = BlockAnnotated(data, 3, "soft", num_classes=4, ignore_index=255)[0][1]
    assert (majority[:3, :3] == 255).all() and (soft[:, :3, :3] == 0).all()
    assert (majority[3:, 3:] < 4).all()


def test_block_annotated_reads_the_wrapped_data_set_and_validates():
    scenes = DigitScenes(split="train", **KW)
    wrapped = BlockAnnotated(scenes, 4, "soft")
    assert wrapped.num_classes == 11 and wrapped.config is scenes.config and len(wrapped) == len(scenes)
    with pytest.raises(ValueError, match="annotation"):
        BlockAnnotated(scenes, 4, "mode")
    with pytest.raises(ValueError, match="block"):
        BlockAnnotated(scenes, 0)
    with pytest.raises(ValueError, match="num_classes"):
        BlockAnnotated(pairs(), 2)
    with pytest.raises(ValueError, match="one size"):
        BlockAnnotated(pairs(n=1, size=8) + pairs(n=1, size=10), 2, num_classes=4)
    with pytest.raises(ValueError, match="empty"):
        BlockAnnotated([], 2, num_classes=4)
    with pytest.raises(TypeError, match="index"):
        wrapped["0"]


@pytest.mark.parametrize("annotation", ANNOTATIONS)
def test_weak_scenes_keep_the_images_and_dense_labels_of_digit_scenes(annotation):
    dense = DigitScenes(split="train", **KW)
    weak = WeakDigitScenes(split="train", annotation_block=8, annotation=annotation, **KW)
    assert (weak.images == dense.images).all() and (weak.labels == dense.labels).all()
    assert (weak.pixel_counts == dense.pixel_counts).all()
    labels = torch.as_tensor(dense.labels).long()
    expected = (block_labels(labels, 8, 11, restore=True) if annotation == "majority"
                else block_fractions(labels, 8, 11, restore=True))
    assert torch.equal(torch.stack([weak[i][1] for i in range(len(weak))]), expected)


def test_weak_scenes_serve_dense_labels_on_the_evaluation_splits():
    for split in ("val", "test"):
        dense = DigitScenes(split=split, **KW)
        weak = WeakDigitScenes(split=split, annotation_block=16, annotation="soft", **KW)
        assert not weak.weak and torch.equal(weak[0][1], dense[0][1])
    weak = WeakDigitScenes(split="val", annotation_block=4, weak_splits=("train", "val"), **KW)
    assert weak.weak and not torch.equal(weak[0][1], DigitScenes(split="val", **KW)[0][1])


def test_weak_scenes_config_rebuilds_the_same_split():
    weak = WeakDigitScenes(split="train", annotation_block=4, annotation="soft", **KW)
    assert weak.config["annotation_block"] == 4 and weak.config["annotation"] == "soft"
    again = WeakDigitScenes(**weak.config, cache_dir=False)
    assert torch.equal(again[1][1], weak[1][1])


@pytest.mark.parametrize("kw, match", [
    (dict(annotation_block=0), "annotation_block"),
    (dict(annotation="fractions"), "annotation"),
    (dict(weak_splits="train"), "weak_splits"),
    (dict(weak_splits=("training",)), "weak_splits"),
])
def test_weak_scenes_validation(kw, match):
    with pytest.raises(ValueError, match=match):
        WeakDigitScenes(split="train", **{**KW, **kw})
