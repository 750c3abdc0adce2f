"""Real-data loaders on small fixtures written with PIL."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from pixelweight.data import VOC_CLASSES, VOC_IGNORE_INDEX, SaliencyFolder, VOCSegmentation

# --------------------------------------------------------------------------- VOC


@pytest.fixture
def voc(tmp_path, voc_writer):
    root = tmp_path / "VOC2012"
    labels = voc_writer(root, {"train": ["2007_000001", "2007_000002"], "val": ["2007_000003"]})
    return root, labels


def test_voc_reads_palette_indices_and_keeps_255(voc):
    root, labels = voc
    ds = VOCSegmentation(root, split="train")
    assert len(ds) == 2 and ds.ids == ["2007_000001", "2007_000002"]
    for k, image_id in enumerate(ds.ids):
        image, target = ds[k]
        assert image.shape == (3, 20, 24) and image.dtype == torch.float32
        assert target.shape == (20, 24) and target.dtype == torch.long
        np.testing.assert_array_equal(target.numpy(), labels[image_id])  # palette indices, 255 kept
        assert (target[0] == VOC_IGNORE_INDEX).all()
        # the test is meaningful: the palette colours are not the indices
        grey = np.asarray(Image.open(root / "SegmentationClass" / f"{image_id}.png").convert("L"))
        assert not np.array_equal(grey, labels[image_id])
        # the image is the JPEG decoded to RGB in [0, 1]
        ref = np.asarray(Image.open(root / "JPEGImages" / f"{image_id}.jpg").convert("RGB"), np.float32) / 255
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), ref)
        assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert ds.ignore_index == 255 and ds.num_classes == 21 and ds.class_names == VOC_CLASSES
    assert ds.config == {"root": str(root), "split": "train", "num_classes": 21}
    assert VOCSegmentation(root, split="val").ids == ["2007_000003"]


def test_voc_greyscale_label_png_and_custom_classes(tmp_path, voc_writer):
    root = tmp_path / "custom"
    labels = voc_writer(root, {"train": ["a"]}, num_classes=3)
    Image.fromarray(labels["a"]).save(root / "SegmentationClass" / "a.png")  # mode "L"
    ds = VOCSegmentation(root, class_names=("bg", "road", "car"))
    np.testing.assert_array_equal(ds[0][1].numpy(), labels["a"])
    assert ds.num_classes == 3


def test_voc_transform_is_applied(voc):
    root, labels = voc
    ds = VOCSegmentation(root, transform=lambda x, y: (x[:, :8, :8], y[:8, :8]))
    image, target = ds[1]
    assert image.shape == (3, 8, 8)
    np.testing.assert_array_equal(target.numpy(), labels["2007_000002"][:8, :8])


def test_voc_missing_pieces(tmp_path, voc_writer):
    root = tmp_path / "voc"
    voc_writer(root, {"train": ["x1", "x2"], "empty": []})
    with pytest.raises(FileNotFoundError, match="dataset root folder not found"):
        VOCSegmentation(tmp_path / "nowhere")
    with pytest.raises(FileNotFoundError, match=r"no id list for split 'test'.*available: \['empty', 'train'\]"):
        VOCSegmentation(root, split="test")
    with pytest.raises(ValueError, match="id list .*empty.txt is empty"):
        VOCSegmentation(root, split="empty")
    (root / "SegmentationClass" / "x2.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 masks \(\*\.png\) listed in train.txt missing in .*: x2"):
        VOCSegmentation(root)
    (root / "JPEGImages" / "x1.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images \(\*\.jpg\) listed in train.txt missing in .*: x1"):
        VOCSegmentation(root)


def test_voc_many_missing_files_are_summarised(tmp_path, voc_writer):
    root = tmp_path / "voc"
    voc_writer(root, {"train": ["a"]})
    ids = [f"id{k}" for k in range(8)]
    (root / "ImageSets" / "Segmentation" / "train.txt").write_text("\n".join(ids) + "\n\n")
    with pytest.raises(FileNotFoundError, match=r"8 images .*: id0, id1, id2, id3, id4 and 3 more"):
        VOCSegmentation(root)


@pytest.mark.parametrize("folder", ["JPEGImages", "SegmentationClass", "ImageSets/Segmentation"])
def test_voc_missing_folder(tmp_path, voc_writer, folder):
    import shutil

    root = tmp_path / "voc"
    voc_writer(root, {"train": ["a"]})
    shutil.rmtree(root / folder)
    with pytest.raises(FileNotFoundError, match=f"folder not found: .*{folder.split('/')[-1]}"):
        VOCSegmentation(root)


def test_voc_bad_contents(tmp_path, voc_writer, palette_png_writer):
    root = tmp_path / "voc"
    voc_writer(root, {"train": ["a", "b", "c"]})
    Image.new("RGB", (24, 20)).save(root / "SegmentationClass" / "a.png")  # colour-coded label
    palette_png_writer(root / "SegmentationClass" / "b.png", np.zeros((10, 10), np.uint8))  # wrong size
    bad = np.zeros((20, 24), np.uint8)
    bad[5, 5] = 30  # neither a VOC class nor 255
    palette_png_writer(root / "SegmentationClass" / "c.png", bad)
    ds = VOCSegmentation(root)
    with pytest.raises(ValueError, match=r"segmentation mask .*a.png must be a 'P' or 'L' image, got mode 'RGB'"):
        ds[0]
    with pytest.raises(ValueError, match=r"image .*b.jpg is \(20, 24\) \(H, W\) but its mask .*b.png is \(10, 10\)"):
        ds[1]
    with pytest.raises(ValueError, match=r"c.png holds values \[30\] outside \[0, 20\] and the ignore value 255"):
        ds[2]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(root=3), TypeError, "root must be a str or path, got int"),
        (dict(split=1), TypeError, "split must be a str, got int"),
        (dict(class_names=("only",)), ValueError, "class_names must name between 2 and 255 classes, got 1"),
        (dict(class_names="abc"), TypeError, "class_names must be a sequence of str"),
        (dict(class_names=("a", 2)), TypeError, "class_names must be a sequence of str"),
        (dict(transform="flip"), TypeError, "transform must be None or callable, got str"),
    ],
)
def test_voc_argument_errors(voc, kwargs, error, match):
    root, _ = voc
    with pytest.raises(error, match=match):
        VOCSegmentation(**{"root": root, **kwargs})


# --------------------------------------------------------------------------- saliency folders


@pytest.fixture
def sal(tmp_path, saliency_writer):
    masks = saliency_writer(tmp_path / "duts", ["b_002", "a_001", "c_003"])
    return tmp_path / "duts", masks


def test_saliency_pairs_by_stem_and_binarises(sal):
    root, masks = sal
    ds = SaliencyFolder(root / "images", root / "masks")
    assert ds.stems == ["a_001", "b_002", "c_003"] and len(ds) == 3
    for k, stem in enumerate(ds.stems):
        image, target = ds[k]
        assert image.shape == (3, 16, 18) and image.dtype == torch.float32
        assert target.dtype == torch.long and target.shape == (16, 18)
        np.testing.assert_array_equal(target.numpy(), (masks[stem] >= 128).astype(np.int64))
        ref = np.asarray(Image.open(root / "images" / f"{stem}.jpg").convert("RGB"), np.float32) / 255
        np.testing.assert_array_equal(image.permute(1, 2, 0).numpy(), ref)
    assert ds[0][1][3].sum() == 0 and ds[0][1][-4].sum() == 10  # 127 -> 0, 128 -> 1
    assert ds.num_classes == 2 and ds.ignore_index is None
    assert SaliencyFolder(root / "images", root / "masks", threshold=255)[0][1][-4].sum() == 0
    assert SaliencyFolder(root / "images", root / "masks", threshold=1)[0][1][3].sum() == 10


@pytest.mark.parametrize("mode", ["1", "P", "RGB"])
def test_saliency_mask_modes_are_read_as_grey(sal, mode):
    root, masks = sal
    binary = masks["a_001"] >= 128
    img = Image.fromarray(np.where(binary, 255, 0).astype(np.uint8)).convert(mode)
    img.save(root / "masks" / "a_001.png")
    target = SaliencyFolder(root / "images", root / "masks")[0][1]
    np.testing.assert_array_equal(target.numpy(), binary.astype(np.int64))


def test_saliency_pairing_errors(sal):
    root, _ = sal
    (root / "masks" / "b_002.png").unlink()
    (root / "masks" / "extra.txt").write_text("not an image: ignored")
    with pytest.raises(FileNotFoundError, match=r"1 masks for the stems missing in .*masks: b_002"):
        SaliencyFolder(root / "images", root / "masks")
    (root / "images" / "b_002.jpg").unlink()
    (root / "images" / "c_003.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"1 images for the stems missing in .*images: c_003"):
        SaliencyFolder(root / "images", root / "masks")


def test_saliency_folder_errors(sal, tmp_path):
    root, _ = sal
    with pytest.raises(FileNotFoundError, match="image folder not found"):
        SaliencyFolder(root / "nope", root / "masks")
    with pytest.raises(FileNotFoundError, match="mask folder not found"):
        SaliencyFolder(root / "images", root / "nope")
    (tmp_path / "none").mkdir()
    with pytest.raises(ValueError, match="no image files .* in .*none"):
        SaliencyFolder(tmp_path / "none", root / "masks")
    Image.new("L", (18, 16)).save(root / "images" / "a_001.png")
    with pytest.raises(ValueError, match="two images share the stem 'a_001': a_001.jpg, a_001.png"):
        SaliencyFolder(root / "images", root / "masks")
    with pytest.raises(TypeError, match="image_dir must be a str or path, got NoneType"):
        SaliencyFolder(None, root / "masks")


def test_saliency_bad_contents(sal):
    root, _ = sal
    Image.new("RGBA", (18, 16)).save(root / "masks" / "a_001.png")
    Image.new("L", (5, 5)).save(root / "masks" / "b_002.png")
    ds = SaliencyFolder(root / "images", root / "masks")
    with pytest.raises(
        ValueError, match=r"saliency mask .*a_001.png must be a '1' or 'L' or 'P' or 'RGB' image, got mode 'RGBA'"
    ):
        ds[0]
    with pytest.raises(ValueError, match=r"b_002.jpg is \(16, 18\) \(H, W\) but its mask .*b_002.png is \(5, 5\)"):
        ds[1]


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        (dict(threshold=0), ValueError, "threshold must be >= 1, got 0"),
        (dict(threshold=256), ValueError, "threshold must be <= 255, got 256"),
        (dict(threshold=0.5), TypeError, "threshold must be an int, got float"),
        (dict(transform=3), TypeError, "transform must be None or callable, got int"),
    ],
)
def test_saliency_argument_errors(sal, kwargs, error, match):
    root, _ = sal
    with pytest.raises(error, match=match):
        SaliencyFolder(root / "images", root / "masks", **kwargs)


# --- unreadable files and unsafe ids (issue 10, defects 8 and 9) ------------------------


def test_truncated_or_non_image_files_raise_value_errors_naming_the_file(tmp_path, voc_writer):
    voc_writer(tmp_path, {"train": ["a", "b", "c"]})
    mask = tmp_path / "SegmentationClass" / "a.png"
    mask.write_bytes(mask.read_bytes()[:60])  # a truncated PNG: header intact, data cut
    (tmp_path / "SegmentationClass" / "b.png").write_text("not a PNG at all")
    (tmp_path / "JPEGImages" / "c.jpg").write_bytes(b"\x00" * 50)
    ds = VOCSegmentation(tmp_path, "train")
    with pytest.raises(ValueError, match=r"cannot read segmentation mask .*SegmentationClass/a\.png: "):
        ds[0]
    with pytest.raises(ValueError, match=r"cannot read segmentation mask .*b\.png: not an image file"):
        ds[1]
    with pytest.raises(ValueError, match=r"cannot read image .*JPEGImages/c\.jpg: not an image file"):
        ds[2]


def test_saliency_non_image_file_is_a_value_error(sal):
    root, _ = sal
    ds = SaliencyFolder(root / "images", root / "masks")
    image_path, mask_path = root / "images" / f"{ds.stems[0]}.jpg", root / "masks" / f"{ds.stems[0]}.png"
    mask_path.write_text("text in a .png")
    with pytest.raises(ValueError, match=rf"cannot read saliency mask {mask_path}: not an image file"):
        ds[0]
    mask_path.write_bytes((root / "masks" / f"{ds.stems[1]}.png").read_bytes())
    image_path.write_bytes(image_path.read_bytes()[:200])  # a truncated JPEG
    with pytest.raises(ValueError, match=rf"cannot read image {image_path}: "):
        ds[0]


def test_a_file_that_disappears_is_still_a_file_not_found_error(tmp_path, voc_writer):
    voc_writer(tmp_path, {"train": ["a"]})
    ds = VOCSegmentation(tmp_path, "train")
    (tmp_path / "JPEGImages" / "a.jpg").unlink()
    with pytest.raises(FileNotFoundError):
        ds[0]


@pytest.mark.parametrize("bad", ["../secret", "sub/a", "..\\secret", "/etc/passwd", "C:secret", "..", "a\0b"])
def test_voc_ids_must_be_plain_file_names(tmp_path, voc_writer, bad):
    voc_writer(tmp_path / "voc", {"train": ["a"]})
    # files outside the image and mask folders that "../secret" used to read without a word
    for ext, sub in ((".jpg", "JPEGImages"), (".png", "SegmentationClass")):
        (tmp_path / "voc" / f"secret{ext}").write_bytes((tmp_path / "voc" / sub / f"a{ext}").read_bytes())
    split = tmp_path / "voc" / "ImageSets" / "Segmentation" / "train.txt"
    split.write_text(f"a\n{bad}\n")
    with pytest.raises(ValueError, match="not a plain file name") as info:
        VOCSegmentation(tmp_path / "voc", "train")
    assert f"id {bad!r} in {split} " in str(info.value)
