"""The training harness: seeding, determinism, learning, records, validation, DDP."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.toy import threshold_task
from pixelweight.metrics import SegmentationMetrics
from pixelweight.models import UNet
from pixelweight.results import load_record
from pixelweight.train import (
    DistContext,
    NonFiniteLossError,
    _NonFiniteGuard,
    TrainConfig,
    evaluate,
    resolve_device,
    seed_everything,
    train,
)

FAST = dict(steps=40, batch_size=8, lr=1e-2, schedule="constant", log_every=10, progress=False, device="cpu")


def _metrics():
    return SegmentationMetrics(num_classes=2)


def _run(seed=0, **overrides):
    seed_everything(seed)
    model = UNet(in_channels=1, num_classes=2, width=4, depth=1)
    config = TrainConfig(seed=seed, **{**FAST, **overrides})
    return train(model, F.cross_entropy, threshold_task(), config,
                 metrics_factory=_metrics, val_set=threshold_task(32, seed=1))


def test_training_learns_a_trivial_task():
    result = _run(steps=100)
    assert result.metrics["val_pixel_accuracy"] > 0.95
    assert result.history[-1]["loss"] < result.history[0]["loss"] / 2


def test_same_seed_is_bit_identical_and_other_seed_differs():
    a, b, c = _run(0), _run(0), _run(1)
    assert [h["loss"] for h in a.history] == [h["loss"] for h in b.history]
    for pa, pb in zip(a.model.parameters(), b.model.parameters()):
        assert torch.equal(pa, pb)
    assert [h["loss"] for h in a.history] != [h["loss"] for h in c.history]


def test_history_schedule_and_eval_points():
    result = _run(steps=40, eval_every=20, schedule="cosine", warmup_steps=5)
    steps = [h["step"] for h in result.history]
    assert steps == [10, 20, 30, 40]
    assert "val_miou" in result.history[1] and "val_miou" not in result.history[0]
    assert "val_miou" in result.history[-1]  # the final evaluation lands in the last entry
    assert result.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)  # cosine decays to 0


def test_record_written_with_provenance(tmp_path):
    seed_everything(3)
    model = UNet(in_channels=1, num_classes=2, width=4, depth=1)
    result = train(model, F.cross_entropy, threshold_task(), TrainConfig(seed=3, **FAST),
                   metrics_factory=_metrics, test_set=threshold_task(16, seed=2),
                   name="toy-ce", results_dir=tmp_path, record_config={"data": {"n": 64}})
    path = Path(result.record_path)
    assert path == tmp_path / "toy-ce--seed3.json"
    rec = load_record(path)
    assert rec.seed == 3 and rec.config["data"] == {"n": 64}
    assert rec.config["train"]["steps"] == FAST["steps"] and rec.config["world_size"] == 1
    assert rec.metrics["test_pixel_accuracy"] == result.metrics["test_pixel_accuracy"]
    assert rec.provenance["torch"] == torch.__version__ and "git_commit" in rec.provenance
    assert rec.device.startswith("cpu") and rec.wall_time_s > 0
    json.loads(path.read_text())  # strict JSON


def test_on_log_hook_values_enter_history():
    seed_everything(0)
    model = UNet(in_channels=1, num_classes=2, width=4, depth=1)
    calls = []

    def hook(step, net, loss_fn):
        calls.append(step)
        return {"weight_norm": float(sum(p.detach().norm() for p in net.parameters()))}

    result = train(model, F.cross_entropy, threshold_task(), TrainConfig(**FAST), on_log=hook)
    assert calls == [10, 20, 30, 40]
    assert all("weight_norm" in h for h in result.history)


def test_module_loss_moved_to_device_and_weights_used():
    class Weighted(nn.Module):
        def __init__(self):
            super().__init__()
            self.register_buffer("weight", torch.tensor([0.0, 1.0]))

        def forward(self, logits, target):
            return F.cross_entropy(logits, target, weight=self.weight)

    seed_everything(0)
    result = train(UNet(1, 2, width=4, depth=1), Weighted(), threshold_task(), TrainConfig(**FAST),
                   metrics_factory=_metrics, val_set=threshold_task(32, seed=1))
    # Only class 1 is rewarded: the network learns to predict 1 nearly everywhere.
    assert result.metrics["val_recall"][1] > 0.95


def test_divergence_raises_clear_error():
    def bad_loss(logits, target):
        return logits.sum() * float("nan")

    with pytest.raises(FloatingPointError, match="step 1"):
        train(UNet(1, 2, width=4, depth=1), bad_loss, threshold_task(), TrainConfig(**FAST))


class _NaNAfter(nn.Module):
    """Cross-entropy that turns NaN (or inf) from step ``k`` on: the logits it is given
    are poisoned, as a diverged network's would be."""

    def __init__(self, k, value=float("nan")):
        super().__init__()
        self.k, self.value, self.calls = k, value, 0

    def forward(self, logits, target):
        self.calls += 1
        if self.calls >= self.k:
            logits = logits * self.value
        return F.cross_entropy(logits, target)


@pytest.mark.parametrize("value", [float("nan"), float("inf")])
def test_first_non_finite_loss_stops_training_and_writes_no_record(tmp_path, value):
    seed_everything(0)
    loss = _NaNAfter(7, value)
    with pytest.raises(RuntimeError, match=r"non-finite \((nan|inf)\) at step 7") as info:
        train(UNet(1, 2, width=4, depth=1), loss, threshold_task(), TrainConfig(**FAST),
              metrics_factory=_metrics, val_set=threshold_task(8, seed=1),
              name="diverged", results_dir=tmp_path)
    assert isinstance(info.value, NonFiniteLossError) and isinstance(info.value, FloatingPointError)
    assert info.value.step == 7
    assert loss.calls == 7  # on the CPU it stops at that very step, before its update
    assert list(tmp_path.iterdir()) == []  # no record, no temporary file


def test_non_finite_guard_reads_the_device_state_only_when_asked():
    """The guard is device tensors until read: it names the *first* bad step and its value
    even when read later (how the CUDA path reads it, at log steps)."""
    guard = _NonFiniteGuard(torch.device("cpu"))
    guard.observe(1, torch.tensor(0.5))
    guard.raise_if_tripped()  # all finite: nothing
    guard.observe(2, torch.tensor(float("inf")))
    guard.observe(3, torch.tensor(float("nan")))
    guard.observe(4, torch.tensor(0.1))
    with pytest.raises(NonFiniteLossError, match=r"\(inf\) at step 2") as info:
        guard.raise_if_tripped()
    assert (info.value.step, info.value.loss) == (2, float("inf"))
    import pickle

    copy = pickle.loads(pickle.dumps(info.value))
    assert (copy.step, copy.loss, str(copy)) == (2, float("inf"), str(info.value))


def test_loss_with_reduction_none_is_a_clear_error():
    from pixelweight.losses import CrossEntropyLoss

    with pytest.raises(ValueError, match=r"must return a scalar, got a tensor of shape \(8, 16, 16\).*reduction='none'"):
        train(UNet(1, 2, width=4, depth=1), CrossEntropyLoss(reduction="none"), threshold_task(),
              TrainConfig(**FAST))
    with pytest.raises(TypeError, match="must return a tensor"):
        train(UNet(1, 2, width=4, depth=1), lambda x, y: 1.0, threshold_task(), TrainConfig(**FAST))


@pytest.mark.parametrize("name", ["a/b", "../up", "", " x"])
def test_bad_record_name_fails_before_the_first_step(tmp_path, name):
    calls = []

    def loss(logits, target):
        calls.append(1)
        return F.cross_entropy(logits, target)

    with pytest.raises(ValueError, match="record name"):
        train(UNet(1, 2, width=4, depth=1), loss, threshold_task(), TrainConfig(**FAST),
              name=name, results_dir=tmp_path)
    assert calls == []


def test_unwritable_results_dir_fails_before_the_first_step(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file where the results folder should be")
    calls = []

    def loss(logits, target):
        calls.append(1)
        return F.cross_entropy(logits, target)

    with pytest.raises(ValueError, match=r"cannot write results to .*file/runs"):
        train(UNet(1, 2, width=4, depth=1), loss, threshold_task(), TrainConfig(**FAST),
              name="ok", results_dir=blocker / "runs")
    assert calls == []


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(batch_size=0), "batch_size"),
        (dict(lr=0.0), "lr"),
        (dict(optimizer="rmsprop"), "optimizer"),
        (dict(schedule="step"), "schedule"),
        (dict(warmup_steps=10, steps=10), "warmup_steps"),
        (dict(grad_clip=-1.0), "grad_clip"),
        (dict(seed=-1), "seed"),
        (dict(steps=1.5), "steps"),
        (dict(lr=float("inf")), "lr must be finite"),
        (dict(weight_decay=float("inf")), "weight_decay must be finite"),
        (dict(grad_clip=float("inf")), "grad_clip must be finite"),
        (dict(lr=float("nan")), "lr must not be NaN"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        TrainConfig(**kwargs)


def test_train_argument_errors(tmp_path):
    data = threshold_task(8)
    model = UNet(1, 2, width=4, depth=1)
    cfg = TrainConfig(**FAST)
    with pytest.raises(TypeError, match="model"):
        train("net", F.cross_entropy, data, cfg)
    with pytest.raises(TypeError, match="config"):
        train(model, F.cross_entropy, data, {"steps": 1})
    with pytest.raises(ValueError, match="metrics_factory"):
        train(model, F.cross_entropy, data, cfg, val_set=data)
    with pytest.raises(ValueError, match="both name and results_dir"):
        train(model, F.cross_entropy, data, cfg, name="x")
    with pytest.raises(ValueError, match="empty"):
        train(model, F.cross_entropy, threshold_task(0), cfg)
    with pytest.raises(TypeError, match="reset"):
        evaluate(model, data, metrics=object(), device="cpu")


def test_resolve_device():
    assert resolve_device("cpu") == torch.device("cpu")
    auto = resolve_device("auto")
    assert auto.type == ("cuda" if torch.cuda.is_available() else auto.type)
    if not torch.cuda.is_available():
        assert auto.type in ("cpu", "mps")
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")
    with pytest.raises(ValueError, match="unknown device"):
        resolve_device("tpu9")
    with pytest.raises(TypeError):
        resolve_device(3)


def test_single_process_context_is_not_distributed(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    ctx = DistContext.from_env()
    assert (ctx.rank, ctx.world_size, ctx.enabled, ctx.is_main) == (0, 1, False, True)
    assert ctx.all_reduce_mean(2.5, torch.device("cpu")) == 2.5


@pytest.mark.slow
def test_torchrun_two_processes_gives_exact_distributed_metrics(tmp_path):
    """The same harness under torchrun (2 CPU ranks, gloo): trains, writes one record,
    and its sharded evaluation equals a single-process evaluation of the final model."""
    worker = Path(__file__).parent / "helpers" / "ddp_worker.py"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).parent)}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", "--standalone",
           str(worker), str(tmp_path)]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    records = sorted(tmp_path.glob("*.json"))
    assert [p.name for p in records] == ["ddp-toy--seed0.json"]
    rec = load_record(records[0])
    assert rec.config["world_size"] == 2
    model = UNet(1, 2, width=4, depth=1)
    model.load_state_dict(torch.load(tmp_path / "model.pt"))
    single = evaluate(model, threshold_task(33, seed=1), SegmentationMetrics(2), device="cpu")
    assert rec.metrics["val_confusion_matrix"] == single["confusion_matrix"]
    assert rec.metrics["val_miou"] == pytest.approx(single["miou"], abs=1e-12)


def test_progress_default_follows_environment(monkeypatch):
    monkeypatch.setenv("PIXELWEIGHT_PROGRESS", "0")
    assert TrainConfig().progress is False
    monkeypatch.delenv("PIXELWEIGHT_PROGRESS")
    assert TrainConfig().progress is True
    assert TrainConfig(progress=False).progress is False
    with pytest.raises(TypeError, match="progress"):
        TrainConfig(progress="yes")


def test_non_finite_guard_agrees_across_ranks(tmp_path):
    """Under DDP the guard's first bad step is MIN-all-reduced, so every rank raises at the
    same log step (a one-process gloo group stands in for the ranks)."""
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        ctx = DistContext(rank=0, world_size=2)  # "enabled": takes the collective path
        guard = _NonFiniteGuard(torch.device("cpu"))
        guard.observe(1, torch.tensor(1.0))
        guard.raise_if_tripped(ctx)
        guard.observe(2, torch.tensor(float("nan")))
        with pytest.raises(NonFiniteLossError, match=r"\(nan\) at step 2"):
            guard.raise_if_tripped(ctx)
    finally:
        dist.destroy_process_group()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_non_finite_guard_and_running_loss_do_not_synchronise_on_cuda():
    """What the loop adds per step on CUDA (guard.observe, the running loss) runs with
    torch.cuda.set_sync_debug_mode("error"): no host-device synchronisation."""
    device = torch.device("cuda")
    guard = _NonFiniteGuard(device)
    running = torch.zeros((), dtype=torch.float64, device=device)
    losses = torch.tensor([0.5, float("nan"), 0.25], device=device)
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for step in range(1, 4):
            loss = losses[step - 1]
            guard.observe(step, loss)
            running += loss.detach().to(torch.float64)
    finally:
        torch.cuda.set_sync_debug_mode("default")
    with pytest.raises(NonFiniteLossError, match="at step 2"):
        guard.raise_if_tripped()
