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
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple

import torch

from .data import DigitScenes, SaliencyFolder, VOCSegmentation
from .data.transforms import PadCrop
from .losses import CrossEntropyLoss, FocalLoss, SoftDiceLoss, class_counts, class_weights
from .metrics import ForegroundMetrics, SegmentationMetrics
from .models import UNet
from .train import TrainConfig, seed_everything, train

LOSSES = ("ce", "inverse-ce", "median-ce", "focal", "dice")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pixelweight-train", description=__doc__.split("\n\n")[0])
    p.add_argument("--data", required=True, choices=("voc", "saliency", "digitscenes"))
    p.add_argument("--root", type=Path, help="VOC root (JPEGImages/, SegmentationClass/, ImageSets/)")
    p.add_argument("--split", default="train", help="VOC training split (default: train)")
    p.add_argument("--val-split", default="val", help="VOC validation split; '' for none")
    p.add_argument("--images", type=Path, help="saliency: folder of images")
    p.add_argument("--masks", type=Path, help="saliency: folder of binary masks (same stems)")
    p.add_argument("--crop", type=int, default=256, help="training crop for real data (pixels)")
    p.add_argument("--imbalance", type=float, default=1.0, help="digitscenes: Zipf exponent")
    p.add_argument("--num-samples", type=int, default=2000, help="digitscenes: training images")
    p.add_argument("--loss", default="ce", choices=LOSSES)
    p.add_argument("--width", type=int, default=32)
    p.add_argument("--depth", type=int, default=4)
    p.add_argument("--output-stride", type=int, default=1)
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


def _datasets(args) -> Tuple[object, Optional[object], int, Optional[int]]:
    """(train set, validation set or None, output channels, ignore_index)."""
    if args.data == "voc":
        if args.root is None:
            raise SystemExit("--data voc needs --root")
        train_set = VOCSegmentation(args.root, args.split, transform=PadCrop(args.crop))
        val_set = None
        if args.val_split:
            val_set = VOCSegmentation(args.root, args.val_split, transform=PadCrop(args.crop, random=False))
        return train_set, val_set, len(train_set.class_names), train_set.ignore_index
    if args.data == "saliency":
        if args.images is None or args.masks is None:
            raise SystemExit("--data saliency needs --images and --masks")
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


def _loss(args, train_set, channels: int, ignore_index: Optional[int]) -> Callable:
    if args.loss in ("inverse-ce", "median-ce"):
        classes = max(channels, 2)
        counts = _label_counts(train_set, classes, ignore_index)
        weight = class_weights(counts=counts, method=args.loss.split("-")[0])
        return CrossEntropyLoss(weight=weight, ignore_index=ignore_index)
    builders: Dict[str, Callable] = {
        "ce": lambda: CrossEntropyLoss(ignore_index=ignore_index),
        "focal": lambda: FocalLoss(ignore_index=ignore_index),
        "dice": lambda: SoftDiceLoss(ignore_index=ignore_index),
    }
    return builders[args.loss]()


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    seed_everything(args.seed)
    train_set, val_set, channels, ignore_index = _datasets(args)
    model = UNet(in_channels=train_set[0][0].shape[0], num_classes=channels, width=args.width,
                 depth=args.depth, output_stride=args.output_stride)
    loss = _loss(args, train_set, channels, ignore_index)
    if channels == 1:
        metrics = ForegroundMetrics
    else:
        names = list(getattr(train_set, "class_names", [str(c) for c in range(channels)]))
        metrics = lambda: SegmentationMetrics(channels, ignore_index=ignore_index, class_names=names)  # noqa: E731
    config = TrainConfig(steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                         device=args.device, amp=not args.no_amp, num_workers=args.workers)
    name = args.name or f"{args.data}-{args.loss}"
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
