"""Train a segmentation model on your own data with the book's harness.

The same command runs on one CPU, one GPU or several GPUs::

    pixelweight-train --data voc --root /data/VOC2012 --crop 320 --loss focal --steps 20000 --out runs/
    torchrun --nproc_per_node=4 -m pixelweight.cli --data voc --root /data/VOC2012 --batch-size 32 ...
    pixelweight-train --data saliency --images imgs/ --masks masks/ --crop 256 --out runs/
    pixelweight-train --data digitscenes --imbalance 1.0 --steps 600 --out runs/

It builds the data set (VOC layout, a saliency folder, or the synthetic ``DigitScenes``),
a :class:`~pixelweight.models.UNet` and one of the library's losses, runs
:func:`pixelweight.train.train` (DDP under ``torchrun``) and writes the run's JSON record
(and the model's weights) to ``--out``.

The ``--loss`` choices and their options (``--loss-option NAME=VALUE``, repeatable) come
from :mod:`pixelweight.losses.registry`: every loss of the library, and any loss a chapter
registers, e.g. ``--loss lmp --loss-option p=1.3 --loss-option base=focal``. With
``--output-stride s > 1`` the logits are upsampled bilinearly to the label size before
the loss (as the metrics do before the argmax), so loss and metrics see full-resolution
labels. Everything that can be checked — arguments, the run name, a writable ``--out``,
the data folders, the model, the loss and its options — is checked before the first step;
a problem is reported as a usage message (exit status 2), not a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .data import DigitScenes, SaliencyFolder, VOCSegmentation
from .data.transforms import PadCrop
from .losses import class_counts
from .losses.registry import LossContext, build_loss, loss_names, loss_spec, parse_loss_options
from .metrics import ForegroundMetrics, SegmentationMetrics
from .models import UNet
from .results import check_record_name, check_results_dir
from .train import TrainConfig, resolve_device, seed_everything, train


#: Registered losses of image-level ``(N, C)`` logits (a chapter's classification arms), which
#: this segmentation trainer does not offer. (Kept here rather than as a field of the registry's
#: ``LossSpec``: a new field changes that existing dataclass, and ``_runner.code_changed`` then
#: marks every committed record stale.)
IMAGE_LOSSES = ("classification-ce",)


def dense_loss_names() -> tuple:
    """The registered losses this trainer offers: every one but :data:`IMAGE_LOSSES`."""
    return tuple(name for name in loss_names() if name not in IMAGE_LOSSES)


def _losses_epilog() -> str:
    lines = ["losses (--loss NAME, options as --loss-option NAME=VALUE):"]
    for name in dense_loss_names():
        spec = loss_spec(name)
        lines.append(f"  {name}: {spec.help}")
        lines.extend(f"      {opt.describe()}" for opt in spec.options)
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelweight-train", description=__doc__.split("\n\n")[0],
                                epilog=_losses_epilog(), formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, choices=("voc", "saliency", "digitscenes"))
    p.add_argument("--root", type=Path, help="VOC root (JPEGImages/, SegmentationClass/, ImageSets/)")
    p.add_argument("--split", default="train", help="VOC training split (default: train)")
    p.add_argument("--val-split", default="val", help="VOC validation split; '' for none")
    p.add_argument("--images", type=Path, help="saliency: folder of images")
    p.add_argument("--masks", type=Path, help="saliency: folder of binary masks (same stems)")
    p.add_argument("--crop", type=int, default=256, help="training crop for real data (pixels)")
    p.add_argument("--imbalance", type=float, default=1.0, help="digitscenes: Zipf exponent")
    p.add_argument("--num-samples", type=int, default=2000, help="digitscenes: training images")
    p.add_argument("--loss", default="ce", choices=dense_loss_names(),
                   help="the training loss (default: ce); see the list below")
    p.add_argument("--loss-option", action="append", default=[], metavar="NAME=VALUE",
                   help="an option of the chosen loss, repeatable (e.g. gamma=1.0)")
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--output-stride", type=int, default=1,
                   help="logits s times coarser than the input (a power of two <= 2**depth); "
                        "upsampled to the labels for the loss")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--batch-size", type=int, default=16, help="global batch, split across ranks")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--no-amp", action="store_true", help="disable mixed precision on CUDA")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--out", type=Path, required=True, help="folder for the record and the weights")
    p.add_argument("--name", default=None, help="run name (default: <data>-<loss>)")
    return p


class LabelResolutionLoss(nn.Module):
    """``loss(upsample(logits), target)``: logits coarser than the target (a model with an
    output stride) are upsampled bilinearly (``align_corners=False``) to the target's
    ``(H, W)`` first; logits at that size pass unchanged. The wrapped loss is a submodule,
    so its buffers (e.g. recall-loss weights) follow ``.to(device)``."""

    def __init__(self, loss: nn.Module):
        super().__init__()
        self.loss = loss

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        size = tuple(target.shape[-2:])
        if logits.ndim == 4 and tuple(logits.shape[-2:]) != size:
            logits = F.interpolate(logits, size=size, mode="bilinear", align_corners=False)
        return self.loss(logits, target)


def _datasets(args, parser) -> Tuple[object, Optional[object], int, Optional[int]]:
    """(train set, validation set or None, output channels, ignore_index)."""
    if args.data == "voc":
        if args.root is None:
            parser.error("--data voc needs --root")
        train_set = VOCSegmentation(args.root, args.split, transform=PadCrop(args.crop))
        val_set = None
        if args.val_split:
            val_set = VOCSegmentation(args.root, args.val_split, transform=PadCrop(args.crop, random=False))
        return train_set, val_set, len(train_set.class_names), train_set.ignore_index
    if args.data == "saliency":
        if args.images is None or args.masks is None:
            parser.error("--data saliency needs --images and --masks")
        train_set = SaliencyFolder(args.images, args.masks, transform=PadCrop(args.crop, ignore_index=255))
        return train_set, None, 1, 255
    train_set = DigitScenes(split="train", num_samples=args.num_samples, imbalance=args.imbalance, seed=1000)
    val_set = DigitScenes(split="val", num_samples=max(1, args.num_samples // 5), imbalance=args.imbalance, seed=2000)
    return train_set, val_set, DigitScenes.num_classes, None


def _label_counts(dataset, num_classes: int, ignore_index: Optional[int]) -> torch.Tensor:
    """Training-split pixel counts per class (never validation data)."""
    labels = getattr(dataset, "labels", None)
    if labels is not None:
        return class_counts(torch.as_tensor(labels).long(), num_classes, ignore_index)
    # real data: read every target once
    return sum(class_counts(dataset[i][1], num_classes, ignore_index) for i in range(len(dataset)))


def _prepare(args, parser):
    """Everything a run needs, checked before the first step; a problem is a usage error."""
    try:
        config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                             device=args.device, amp=not args.no_amp, num_workers=args.workers)
        resolve_device(args.device)
        name = check_record_name(args.name or f"{args.data}-{args.loss}")
        check_results_dir(args.out)
        options = parse_loss_options(args.loss, args.loss_option)
        seed_everything(args.seed)
        train_set, val_set, channels, ignore_index = _datasets(args, parser)
        image, _ = train_set[0]  # reads (and checks) one item
        model = UNet(in_channels=image.shape[0], num_classes=channels, width=args.width,
                     depth=args.depth, output_stride=args.output_stride)
        context = LossContext(
            num_classes=channels, ignore_index=ignore_index,
            class_counts=lambda: _label_counts(train_set, max(channels, 2), ignore_index),
        )
        loss = build_loss(args.loss, context, **options)
    except (ValueError, TypeError, OSError) as err:  # OSError: missing or unreadable data files
        parser.error(str(err))
    if args.output_stride > 1:
        loss = LabelResolutionLoss(loss)
    return config, name, train_set, val_set, channels, ignore_index, model, loss


def main(argv: Optional[List[str]] = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    config, name, train_set, val_set, channels, ignore_index, model, loss = _prepare(args, parser)
    if channels == 1:
        metrics = ForegroundMetrics
    else:
        names = list(getattr(train_set, "class_names", [str(c) for c in range(channels)]))
        metrics = lambda: SegmentationMetrics(channels, ignore_index=ignore_index, class_names=names)  # noqa: E731
    result = train(model, loss, train_set, config, metrics_factory=metrics, val_set=val_set,
                   name=name, results_dir=args.out,
                   record_config={"cli": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}})
    if result.record is not None:  # rank 0
        torch.save(result.model.state_dict(), Path(args.out) / f"{name}--seed{args.seed}.pt")
        summary = {k: v for k, v in result.metrics.items() if isinstance(v, float)}
        print(f"record: {result.record_path}")
        print(" ".join(f"{k}={v:.4f}" for k, v in summary.items()))
    return 0


if __name__ == "__main__":  # python -m pixelweight.cli / torchrun -m pixelweight.cli
    sys.exit(main())
