"""The command-line trainer on small fixtures: VOC layout, saliency folder, DigitScenes."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from pixelweight.cli import main
from pixelweight.data import PadCrop


def _voc(root, n=4):
    rng = np.random.default_rng(0)
    for sub in ("JPEGImages", "SegmentationClass", "ImageSets/Segmentation"):
        (root / sub).mkdir(parents=True)
    ids = [f"img{i}" for i in range(n)]
    for i, stem in enumerate(ids):
        h, w = 20 + 3 * i, 24 - 2 * i  # varying sizes, as in real VOC
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(root / "JPEGImages" / f"{stem}.jpg")
        mask = rng.integers(0, 3, (h, w), dtype=np.uint8)
        mask[0] = 255
        png = Image.fromarray(mask, mode="P")
        png.putpalette([0, 0, 0, 128, 0, 0, 0, 128, 0] + [0] * (256 * 3 - 9))
        png.save(root / "SegmentationClass" / f"{stem}.png")
    for split in ("train", "val"):
        (root / "ImageSets/Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")


COMMON = ["--steps", "3", "--batch-size", "2", "--width", "4", "--depth", "2", "--workers", "0", "--device", "cpu"]


@pytest.mark.parametrize("loss", ["ce", "inverse-ce", "focal"])
def test_cli_trains_on_a_voc_fixture_and_writes_record(tmp_path, loss, monkeypatch):
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    _voc(tmp_path / "voc")
    out = tmp_path / "runs"
    assert main(["--data", "voc", "--root", str(tmp_path / "voc"), "--crop", "16", "--loss", loss,
                 "--out", str(out), *COMMON]) == 0
    record = json.loads((out / f"voc-{loss}--seed0.json").read_text())
    assert record["config"]["cli"]["loss"] == loss and record["config"]["train"]["steps"] == 3
    assert len(record["metrics"]["val_iou"]) == 21  # the 21 VOC classes
    state = torch.load(out / f"voc-{loss}--seed0.pt")
    assert state["head.weight"].shape[0] == 21


def test_cli_binary_saliency_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    (tmp_path / "img").mkdir()
    (tmp_path / "gt").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (18, 18, 3), dtype=np.uint8)).save(tmp_path / "img" / f"{i}.png")
        Image.fromarray((rng.random((18, 18)) > 0.5).astype(np.uint8) * 255).save(tmp_path / "gt" / f"{i}.png")
    assert main(["--data", "saliency", "--images", str(tmp_path / "img"), "--masks", str(tmp_path / "gt"),
                 "--crop", "16", "--out", str(tmp_path / "r"), *COMMON]) == 0
    assert (tmp_path / "r" / "saliency-ce--seed0.json").is_file()


def test_cli_argument_errors(tmp_path):
    with pytest.raises(SystemExit, match="needs --root"):
        main(["--data", "voc", "--out", str(tmp_path)])
    with pytest.raises(SystemExit):
        main(["--data", "voc", "--loss", "nope", "--out", str(tmp_path)])


def test_padcrop_pads_with_ignore_and_crops():
    image, target = torch.ones(3, 5, 7), torch.zeros(5, 7, dtype=torch.long)
    torch.manual_seed(0)
    im, tg = PadCrop((8, 4))(image, target)
    assert im.shape == (3, 8, 4) and tg.shape == (8, 4)
    assert (tg[5:] == 255).all() and (im[:, 5:] == 0).all() and (tg[:5] == 0).all()
    im, tg = PadCrop(3, random=False)(torch.arange(25.0).reshape(1, 5, 5), torch.zeros(5, 5, dtype=torch.long))
    assert im[0, 0, 0] == 6.0  # centred window starts at (1, 1)
    with pytest.raises(ValueError, match=r"\(C, H, W\)"):
        PadCrop(3)(torch.ones(5, 5), torch.zeros(5, 5))
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        PadCrop(3)(torch.ones(1, 5, 5), torch.zeros(4, 5))
    with pytest.raises(ValueError, match="pair"):
        PadCrop((1, 2, 3))
    with pytest.raises(ValueError, match="ignore_index"):
        PadCrop(3, ignore_index=None)
    with pytest.raises(TypeError, match="random"):
        PadCrop(3, random=1)
    with pytest.raises(ValueError, match="size"):
        PadCrop(0)


def test_padcrop_never_pads_a_target_with_another_value_than_ignore_index():
    """A bool target used to be padded with True (a fake foreground) and a uint8 target
    with ignore_index=-1 with 255 (a wrapped, wrong label); both become int64 labels padded
    with ignore_index exactly. Dtypes that hold the value are kept."""
    image = torch.ones(1, 2, 3)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    _, tg = PadCrop(4, random=False)(image, mask)
    assert tg.dtype == torch.long
    assert tg[:2, :3].tolist() == mask.long().tolist()
    assert (tg[2:] == 255).all() and (tg[:, 3:] == 255).all()
    _, tg = PadCrop(4, random=False)(torch.ones(1, 4, 4), torch.ones(4, 4, dtype=torch.bool))
    assert tg.dtype == torch.long  # same dtype whether or not this item needed padding
    labels = torch.tensor([[0, 1, 2], [2, 1, 0]], dtype=torch.uint8)
    _, tg = PadCrop(4, ignore_index=-1, random=False)(image, labels)
    assert tg.dtype == torch.long and (tg[2:] == -1).all() and (tg[:, 3:] == -1).all()
    assert tg[:2, :3].tolist() == labels.tolist()
    _, tg = PadCrop(4, ignore_index=300, random=False)(image, labels)
    assert tg.dtype == torch.long and (tg[2:] == 300).all()
    _, tg = PadCrop(4, ignore_index=255, random=False)(image, labels)
    assert tg.dtype == torch.uint8 and (tg[2:] == 255).all()
    _, tg = PadCrop(4, ignore_index=-1, random=False)(image, labels.to(torch.int8))
    assert tg.dtype == torch.int8 and (tg[2:] == -1).all()
    _, tg = PadCrop(4, ignore_index=255, random=False)(image, labels.to(torch.int8))
    assert tg.dtype == torch.long and (tg[2:] == 255).all()
