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


@pytest.mark.parametrize("loss", ["inverse-ce"])  # every loss: test_cli_trains_every_registered_loss_...
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


def _saliency(root, size=18):
    (root / "img").mkdir(parents=True)
    (root / "gt").mkdir()
    rng = np.random.default_rng(1)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / "img" / f"{i}.png")
        Image.fromarray((rng.random((size, size)) > 0.5).astype(np.uint8) * 255).save(root / "gt" / f"{i}.png")
    return ["--data", "saliency", "--images", str(root / "img"), "--masks", str(root / "gt")]


def test_cli_binary_saliency_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    assert main([*_saliency(tmp_path), "--crop", "16", "--out", str(tmp_path / "r"), *COMMON]) == 0
    assert (tmp_path / "r" / "saliency-ce--seed0.json").is_file()


#: The registered losses that take binary logits only (a foreground map): trained on the saliency folder.
FOREGROUND_LOSSES = ("wfm", "floss", "structure", "hybrid", "bce-wfm")


@pytest.mark.parametrize("loss, options", [("wfm", []), ("wfm", ["beta2=0.3", "smoothing=0.05"]), ("floss", []),
                                           ("structure", ["form=intended"]), ("hybrid", []),
                                           ("bce-wfm", ["bce_weight=0.5"])],
                         ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_cli_trains_the_foreground_losses_on_a_saliency_folder(tmp_path, monkeypatch, loss, options):
    """Crops of 20 from 18-pixel images: the padding is ignore_index, which these losses honour."""
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    out = tmp_path / "r"
    argv = [*_saliency(tmp_path / "data"), "--crop", "20", "--loss", loss, "--out", str(out),
            *[a for o in options for a in ("--loss-option", o)], *COMMON]
    assert main(argv) == 0
    record = json.loads((out / f"saliency-{loss}--seed0.json").read_text())
    assert record["config"]["cli"]["loss"] == loss and np.isfinite(record["history"][-1]["loss"])


def test_cli_refuses_a_foreground_loss_for_multiclass_data(tmp_path, capsys):
    _voc(tmp_path / "voc")
    err = _usage_error(["--data", "voc", "--root", str(tmp_path / "voc"), "--loss", "wfm", "--out",
                        str(tmp_path / "r"), *COMMON], capsys)
    assert "loss 'wfm' takes binary logits (a foreground map, num_classes=1), got num_classes=21" in err


def _usage_error(argv, capsys):
    """Run main(argv), expect an argparse usage error (exit status 2); return its message."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: pixelweight-train") and "Traceback" not in err
    return err


def test_cli_argument_errors(tmp_path, capsys):
    assert "--data voc needs --root" in _usage_error(["--data", "voc", "--out", str(tmp_path)], capsys)
    assert "invalid choice: 'nope'" in _usage_error(["--data", "voc", "--loss", "nope", "--out", str(tmp_path)], capsys)


def _counting_loss(monkeypatch):
    """Patch the registry so that any loss the CLI builds counts its calls."""
    import pixelweight.cli as cli

    calls = []
    real = cli.build_loss

    def build(name, context, **options):
        loss = real(name, context, **options)
        loss.register_forward_pre_hook(lambda *a: calls.append(1))
        return loss

    monkeypatch.setattr(cli, "build_loss", build)
    return calls


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--name", "a/b"], "record name must be"),
        (["--name", "../up"], "record name must be"),
        (["--loss", "focal", "--loss-option", "gamma=inf"], "gamma must be finite"),
        (["--loss", "focal", "--loss-option", "beta=1"], "loss 'focal' has no option 'beta' (its options: gamma)"),
        (["--loss", "lmp", "--loss-option", "ratio=0"], "ratio must be > 0.0"),
        (["--loss", "lmp", "--loss-option", "base=dice"], "must be one of ('ce', 'focal')"),
        (["--loss", "dice", "--loss-option", "per_image=maybe"], "must be true or false"),
        (["--loss", "recall", "--loss-option", "momentum"], "must read NAME=VALUE"),
        (["--loss", "recall", "--loss-option", "init=zeros"], "must be one of ('first_batch', 'ones')"),
        (["--output-stride", "3"], "output_stride must be a power of two"),
        (["--output-stride", "8"], "exceeds the coarsest level"),
        (["--lr", "inf"], "lr must be finite"),
        (["--steps", "0"], "steps must be >= 1"),
        (["--crop", "0"], "size must be >= 1"),
        (["--device", "tpu9"], "unknown device"),
    ],
)
def test_cli_checks_everything_before_the_first_step(tmp_path, capsys, monkeypatch, extra, message):
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    _voc(tmp_path / "voc")
    calls = _counting_loss(monkeypatch)
    err = _usage_error(["--data", "voc", "--root", str(tmp_path / "voc"), "--crop", "16",
                        "--out", str(tmp_path / "runs"), *COMMON, *extra], capsys)
    assert message in err
    assert calls == []  # no training step ran
    assert not list((tmp_path / "runs").glob("*.json")) if (tmp_path / "runs").exists() else True


def test_cli_unwritable_out_and_missing_data_are_usage_errors(tmp_path, capsys, monkeypatch):
    _voc(tmp_path / "voc")
    blocker = tmp_path / "file"
    blocker.write_text("a file where --out should be a folder")
    calls = _counting_loss(monkeypatch)
    err = _usage_error(["--data", "voc", "--root", str(tmp_path / "voc"), "--crop", "16",
                        "--out", str(blocker / "runs"), *COMMON], capsys)
    assert f"cannot write results to {blocker / 'runs'}" in err and calls == []
    err = _usage_error(["--data", "voc", "--root", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r"), *COMMON],
                       capsys)
    assert "dataset root folder not found" in err
    (tmp_path / "voc" / "ImageSets/Segmentation/train.txt").write_text("img0\n../img1\n")
    err = _usage_error(["--data", "voc", "--root", str(tmp_path / "voc"), "--out", str(tmp_path / "r"), *COMMON],
                       capsys)
    assert "id '../img1'" in err and "not a plain file name" in err


def test_cli_output_stride_trains_at_label_resolution(tmp_path, monkeypatch):
    """--output-stride 2 used to crash at step 1 (coarse logits vs full-size targets)."""
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    _voc(tmp_path / "voc")
    out = tmp_path / "runs"
    assert main(["--data", "voc", "--root", str(tmp_path / "voc"), "--crop", "16", "--output-stride", "2",
                 "--out", str(out), *COMMON]) == 0
    record = json.loads((out / "voc-ce--seed0.json").read_text())
    assert record["config"]["cli"]["output_stride"] == 2 and len(record["metrics"]["val_iou"]) == 21
    assert (out / "voc-ce--seed0.pt").is_file()


def test_label_resolution_loss_upsamples_coarse_logits():
    from pixelweight.cli import LabelResolutionLoss
    from pixelweight.losses import RecallLoss

    logits, target = torch.randn(2, 3, 4, 4), torch.randint(0, 3, (2, 8, 8))
    up = torch.nn.functional.interpolate(logits, size=(8, 8), mode="bilinear", align_corners=False)
    wrapped = LabelResolutionLoss(torch.nn.CrossEntropyLoss())
    assert torch.allclose(wrapped(logits, target), torch.nn.functional.cross_entropy(up, target))
    assert torch.equal(wrapped(up, target), torch.nn.functional.cross_entropy(up, target))
    assert "loss.weights" in LabelResolutionLoss(RecallLoss(3)).state_dict()  # buffers follow


def test_cli_offers_every_registered_loss_with_its_options(capsys):
    from pixelweight.losses import loss_names

    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    from pixelweight.cli import IMAGE_LOSSES, dense_loss_names

    names = loss_names()
    assert {"ce", "inverse-ce", "median-ce", "focal", "dice", "recall", "lmp"} <= set(names)
    assert dense_loss_names() == tuple(n for n in names if n not in IMAGE_LOSSES)
    for name in dense_loss_names():
        assert f"  {name}: " in text
    for name in IMAGE_LOSSES:  # (N, C) classification losses: not for a segmentation trainer
        assert name in names and f"  {name}: " not in text
    for option in ("gamma=2.0", "smooth=1.0", "momentum=none", "p=1.7", "ratio=0.3", "base=ce (ce|focal)",
                   "init=first_batch (first_batch|ones)", "detach_focal=true", "sync_counts=true"):
        assert option in text


def _registered_runs():
    from pixelweight.cli import dense_loss_names

    runs = [(name, []) for name in dense_loss_names() if name not in FOREGROUND_LOSSES]  # binary: see above
    runs += [("lmp", ["p=1.3", "base=focal", "gamma=1.0", "per_image=true"])]  # options: test_registry.py
    runs += [("recall", ["momentum=0.5", "gamma=1.0", "init=ones", "detach_focal=false", "sync_counts=false"])]
    return runs


@pytest.mark.parametrize("loss, options", _registered_runs(), ids=lambda v: v if isinstance(v, str) else "-".join(v))
def test_cli_trains_every_registered_loss_on_a_voc_fixture(tmp_path, monkeypatch, loss, options):
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    _voc(tmp_path / "voc")
    out = tmp_path / "runs"
    argv = ["--data", "voc", "--root", str(tmp_path / "voc"), "--crop", "16", "--loss", loss, "--out", str(out),
            *[a for o in options for a in ("--loss-option", o)], *COMMON]
    argv[argv.index("--steps") + 1] = "2"
    assert main(argv) == 0
    (path,) = out.glob("*.json")
    record = json.loads(path.read_text())
    assert record["config"]["cli"]["loss"] == loss and record["config"]["cli"]["loss_option"] == options
    assert [h["step"] for h in record["history"]] == [2] and np.isfinite(record["history"][-1]["loss"])
    assert len(record["metrics"]["val_iou"]) == 21


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
