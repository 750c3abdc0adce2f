"""Run by tests/test_train.py under torchrun: the unchanged harness, distributed."""

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

from helpers.toy import threshold_task
from pixelweight.metrics import SegmentationMetrics
from pixelweight.models import UNet
from pixelweight.train import TrainConfig, seed_everything, train

out = Path(sys.argv[1])
seed_everything(0)
model = UNet(1, 2, width=4, depth=1)
config = TrainConfig(steps=20, batch_size=8, lr=5e-3, log_every=5, progress=False, device="cpu")
result = train(model, F.cross_entropy, threshold_task(64), config,
               metrics_factory=lambda: SegmentationMetrics(2),
               val_set=threshold_task(33, seed=1),  # odd size: shards are uneven
               name="ddp-toy", results_dir=out)
if result.record is not None:
    torch.save(result.model.state_dict(), out / "model.pt")
