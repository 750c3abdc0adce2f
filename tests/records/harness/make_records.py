"""The harness's reference runs: regenerate the committed records beside this file.

Two small, fully seeded CPU runs of :func:`pixelweight.train.train` (``DigitScenes`` 32x32,
``UNet(width=8, depth=2)``, 40 steps, validation every 10 steps, 48 validation and 48 test
images, ``SegmentationMetrics``): one with cross-entropy and one with a stateful
``RecallLoss(momentum=0.5)`` whose class weights ``on_log`` records. ``tests/test_train_exact.py``
reruns them with today's harness and asserts the metrics and the history are *equal* to the
committed ones (bit for bit), so a refactoring of the harness cannot change a number
unnoticed. The records were first written by the harness as it was before ``train`` became
a package (see their ``provenance.git_commit``).

Regenerate (only when a change of the numbers is intended, and say why in the commit)::

    PYTHONPATH=src python tests/records/harness/make_records.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
import torch.nn.functional as F

HERE = Path(__file__).resolve().parent
RUNS = ("harness-ce", "harness-recall")
#: Runs are made on one thread: CPU kernels may sum in another order on more threads.
THREADS = 1


def run(name: str, results_dir=None, **train_kwargs):
    """Train the reference run ``name`` (one of :data:`RUNS`) and return its ``TrainResult``.

    ``train_kwargs`` are passed on to :func:`pixelweight.train.train` (e.g. ``task=``).
    """
    from pixelweight.data import DigitScenes
    from pixelweight.chapters.recall import log_loss_weights
    from pixelweight.losses import RecallLoss
    from pixelweight.metrics import SegmentationMetrics
    from pixelweight.models import UNet
    from pixelweight.train import TrainConfig, seed_everything, train

    if name not in RUNS:
        raise ValueError(f"name must be one of {RUNS}, got {name!r}")
    scenes = dict(size=32, digit_size=(10, 20), num_digits=(1, 3), imbalance=1.0, cache_dir=False)
    train_set = DigitScenes("train", num_samples=128, seed=1000, **scenes)
    val_set = DigitScenes("val", num_samples=48, seed=2000, **scenes)
    test_set = DigitScenes("test", num_samples=48, seed=3000, **scenes)
    config = TrainConfig(steps=40, batch_size=8, lr=5e-3, schedule="cosine", warmup_steps=4,
                         eval_every=10, eval_batch_size=16, log_every=5, seed=0, device="cpu",
                         progress=False)
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        seed_everything(config.seed)
        model = UNet(in_channels=1, num_classes=11, width=8, depth=2)
        if name == "harness-ce":
            loss, on_log = F.cross_entropy, None
        else:
            # init="ones": the moving average as it started when the record was made (the
            # default became the official first-batch start later); the record tests the harness
            loss, on_log = RecallLoss(11, momentum=0.5, init="ones"), log_loss_weights
        return train(
            model, loss, train_set, config,
            metrics_factory=lambda: SegmentationMetrics(11), val_set=val_set, test_set=test_set,
            name=name if results_dir is not None else None, results_dir=results_dir,
            record_config={"data": train_set.config, "threads": THREADS,
                           "cpu_capability": torch.backends.cpu.get_cpu_capability()},
            on_log=on_log, **train_kwargs,
        )
    finally:
        torch.set_num_threads(threads)


if __name__ == "__main__":
    for run_name in RUNS:
        result = run(run_name, results_dir=HERE)
        print(result.record_path, {k: v for k, v in result.metrics.items() if k.endswith("miou")})
    sys.exit(0)
