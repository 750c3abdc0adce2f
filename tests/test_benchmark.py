"""The loss micro-benchmark: table layout, within-round ratios, custom losses, errors, CLI, and every
loss of the library against F.cross_entropy (structure and values on tiny shapes, no timed assertions)."""

import math
import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pixelweight import benchmark
from pixelweight.benchmark import (
    SAMPLER_TARGET,
    TARGETS,
    benchmark_calls,
    benchmark_library,
    benchmark_losses,
    benchmark_sampler,
    default_losses,
    keep_freed_memory,
    library_losses,
    main,
    peak_memory,
    profile_losses,
    ratio_table,
    time_calls,
)


def test_default_comparison_on_a_small_batch():
    frame = benchmark_losses(shape=(1, 4, 8, 8), repeats=3, warmup=1, ignore_index=255, ignore_fraction=0.2)
    assert frame["loss"].tolist() == ["cross_entropy", "F.cross_entropy", "recall_loss", "RecallLoss(momentum=0.5)"]
    assert frame.loc[0, "ratio"] == 1.0 and (frame["median_ms"] > 0).all()
    assert (frame["q25_ms"] <= frame["q75_ms"]).all()
    assert set(frame["shape"]) == {"1x4x8x8"} and set(frame["device"]) == {"cpu"}


def test_custom_losses_and_dtype():
    calls = []

    def ce(x, y):
        calls.append(x.dtype)
        return F.cross_entropy(x, y)

    frame = benchmark_losses({"ce": ce, "twice": lambda x, y: 2 * F.cross_entropy(x, y)}, (2, 3, 4, 4),
                             dtype=torch.float64, repeats=2, warmup=0)
    assert len(calls) == 2 and calls[0] == torch.float64
    before = torch.get_num_threads()
    one = benchmark_losses({"ce": ce}, (1, 3, 4, 4), repeats=1, warmup=0, num_threads=1)
    assert one["threads"].tolist() == [1] and torch.get_num_threads() == before
    assert frame["dtype"].tolist() == ["float64", "float64"] and frame["repeats"].tolist() == [2, 2]


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(shape=(1, 4, 8)), ValueError, r"shape must be \(N, C, H, W\)"),
        (dict(shape=(1, 1, 8, 8)), ValueError, "C >= 2"),
        (dict(shape=(1, 4, 0, 8)), ValueError, r"shape\[2\] must be >= 1"),
        (dict(repeats=0), ValueError, "repeats must be >= 1"),
        (dict(warmup=-1), ValueError, "warmup must be >= 0"),
        (dict(ignore_fraction=0.1), ValueError, "needs an ignore_index"),
        (dict(ignore_index=255, ignore_fraction=1.0), ValueError, "ignore_fraction must be < 1.0"),
        (dict(dtype=torch.int64), ValueError, "floating torch.dtype"),
        (dict(losses={}), TypeError, "non-empty mapping"),
        (dict(losses={"ce": 3}), TypeError, "map names"),
        (dict(num_threads=0), ValueError, "num_threads must be >= 1"),
        (dict(steady_memory=1), TypeError, "steady_memory must be a bool"),
    ],
)
def test_errors(kwargs, exc, match):
    kwargs.setdefault("shape", (1, 4, 8, 8))
    with pytest.raises(exc, match=match):
        benchmark_losses(repeats=kwargs.pop("repeats", 1), warmup=kwargs.pop("warmup", 0), **kwargs)


def test_default_losses_errors():
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        default_losses(1)


def test_command_line(capsys):
    assert main(["--shape", "1", "3", "8", "8", "--device", "cpu", "--repeats", "2", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "shape 1x3x8x8, device cpu" in out and "| recall_loss |" in out


def test_steady_memory_off_by_default():
    frame = benchmark_losses(shape=(1, 3, 4, 4), repeats=1, warmup=0)
    assert frame["steady_memory"].tolist() == [False] * 4


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="needs Linux with glibc")
def test_steady_memory_on_glibc():
    # in a child process: the allocator setting lasts for the rest of the process
    code = ("from pixelweight.benchmark import benchmark_losses\n"
            "f = benchmark_losses(shape=(1, 3, 4, 4), repeats=1, warmup=0, steady_memory=True)\n"
            "print(f['steady_memory'].tolist())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[True, True, True, True]"


def test_keep_freed_memory_elsewhere(monkeypatch):
    monkeypatch.setattr(benchmark.sys, "platform", "darwin")
    assert keep_freed_memory() is False


def test_command_line_steady_memory():
    code = "from pixelweight.benchmark import main; main(['--shape', '1', '3', '8', '8', '--repeats', '1', " \
           "'--warmup', '0', '--device', 'cpu', '--steady-memory'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "steady memory True" in out


# ---------------------------------------------------------------------------------------
# Every loss against F.cross_entropy (issue 10)
# ---------------------------------------------------------------------------------------

LIBRARY = ["F.cross_entropy", "cross_entropy", "cross_entropy(weight)", "focal_loss", "recall_loss",
           "RecallLoss(momentum=0.5)", "loss_max_pooling", "loss_max_pooling(per_image)", "soft_dice_loss"]


def test_library_losses_cover_every_loss_and_agree_with_torch():
    losses = library_losses(4, 255)
    assert list(losses) == LIBRARY and set(TARGETS) <= set(losses)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(2, 4, 6, 6, generator=g), torch.randint(0, 4, (2, 6, 6), generator=g)
    y[:, 0] = 255
    ref = F.cross_entropy(x, y, ignore_index=255)
    torch.testing.assert_close(losses["cross_entropy"](x, y), ref)
    torch.testing.assert_close(losses["F.cross_entropy"](x, y), ref)
    for name, fn in losses.items():
        assert torch.isfinite(fn(x, y)), name


def test_benchmark_library_table_on_a_tiny_batch():
    frame = benchmark_library((1, 4, 12, 8), threads=(1, 2), repeats=3, warmup=0, ignore_rows=2,
                              steady_memory=False)
    assert frame["loss"].tolist() == LIBRARY * 2 and frame["threads"].tolist() == [1] * 9 + [2] * 9
    ref = frame[frame["loss"] == "F.cross_entropy"]
    assert (ref["ratio"] == 1.0).all() and (ref["ratio_q25"] == 1.0).all()
    assert (frame["ratio_q25"] <= frame["ratio"]).all() and (frame["ratio"] <= frame["ratio_q75"]).all()
    assert (frame["median_ms"] > 0).all() and set(frame["shape"]) == {"1x4x12x8"}
    targets = frame.set_index(["threads", "loss"])["target"]
    assert targets[(1, "recall_loss")] == 1.15 and targets[(2, "soft_dice_loss")] == 1.5
    assert frame.loc[frame["loss"] == "RecallLoss(momentum=0.5)", "target"].isna().all()
    for _, row in frame.iterrows():
        assert row["meets"] is None if row["loss"] not in TARGETS else row["meets"] == (row["ratio"] <= row["target"])
    table = ratio_table(frame)
    assert list(table.columns) == ["loss", "1 thread", "2 threads", "target"] and table["loss"].tolist() == LIBRARY
    row = frame[(frame["loss"] == "focal_loss") & (frame["threads"] == 2)].iloc[0]
    cell = table.loc[table["loss"] == "focal_loss", "2 threads"].iloc[0]
    assert cell == f"{row['ratio']:.2f} [{row['ratio_q25']:.2f}, {row['ratio_q75']:.2f}]"
    assert table.loc[table["loss"] == "cross_entropy", "target"].iloc[0] == "<= 1.05"


def test_ignore_rows_reach_the_losses():
    seen = []

    def spy(x, y):
        seen.append(int((y == 255).sum()))
        return F.cross_entropy(x, y, ignore_index=255)

    benchmark_losses({"spy": spy}, (2, 3, 6, 5), repeats=1, warmup=0, ignore_index=255, ignore_rows=2)
    assert seen == [2 * 2 * 5]
    with pytest.raises(ValueError, match="needs an ignore_index"):
        benchmark_losses({"spy": spy}, (2, 3, 6, 5), repeats=1, warmup=0, ignore_rows=2)


def test_time_calls_rotates_and_counts():
    order = []
    times = time_calls({"a": lambda: order.append("a"), "b": lambda: order.append("b")}, repeats=2, warmup=1,
                       timer="cpu")
    assert order == ["a", "b", "b", "a", "a", "b"] and [len(v) for v in times.values()] == [2, 2]
    with pytest.raises(ValueError, match="timer must be one of"):
        time_calls({"a": lambda: None}, repeats=1, timer="gpu")
    with pytest.raises(ValueError, match="threads must be"):
        benchmark_library((1, 3, 4, 4), threads=1)


def test_benchmark_calls_times_forward_calls_against_the_first():
    x = torch.randn(16, 16, requires_grad=True)
    seen = []

    def forward():
        y = (x * 2).sum()
        seen.append(y.requires_grad)
        return y

    frame = benchmark_calls({"reference": lambda: x.sum(), "forward": forward}, repeats=3, warmup=1, timer="cpu")
    assert list(frame["call"]) == ["reference", "forward"] and frame.loc[0, "ratio"] == 1.0
    assert list(frame.columns) == ["call", "median_ms", "q25_ms", "q75_ms", "ratio", "ratio_q25", "ratio_q75",
                                   "device", "repeats", "threads", "timer"]
    assert (frame["ratio_q25"] <= frame["ratio"]).all() and (frame["ratio"] <= frame["ratio_q75"]).all()
    assert set(frame["repeats"]) == {3} and set(frame["device"]) == {"cpu"} and set(frame["timer"]) == {"cpu"}
    assert seen == [False] * 4  # forward only: no autograd graph under no_grad
    benchmark_calls({"forward": forward}, repeats=1, warmup=0, no_grad=False)
    assert seen[-1] is True


@pytest.mark.parametrize("calls, kwargs, exc, match", [
    ({}, {}, TypeError, "non-empty mapping"),
    ({"a": 1}, {}, TypeError, "map names"),
    ({"a": lambda: None}, {"repeats": 0}, ValueError, "repeats must be >= 1"),
    ({"a": lambda: None}, {"timer": "gpu"}, ValueError, "timer must be one of"),
    ({"a": lambda: None}, {"no_grad": 1}, TypeError, "no_grad must be a bool"),
])
def test_benchmark_calls_errors(calls, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        benchmark_calls(calls, **kwargs)


def test_command_line_library_set(capsys):
    assert main(["--shape", "1", "3", "12", "8", "--device", "cpu", "--repeats", "1", "--warmup", "0",
                 "--threads", "1", "--ignore-rows", "2"]) == 0
    out = capsys.readouterr().out
    assert "ratio = time / F.cross_entropy" in out and "| soft_dice_loss |" in out
    assert "| loss | 1 thread | target |" in out and "<= 1.30" in out


def test_profile_losses_structure(capfd):
    frame = profile_losses(["F.cross_entropy", "loss_max_pooling"], (1, 4, 16, 8), ignore_rows=2, rounds=1, top=3,
                           steady_memory=False)
    every_op = profile_losses(["loss_max_pooling"], (1, 4, 16, 8), rounds=1, top=1000, steady_memory=False)
    assert list(frame.columns) == ["loss", "op", "self_ms", "calls", "share"]
    for name in ("F.cross_entropy", "loss_max_pooling"):
        rows = frame[frame["loss"] == name]
        assert len(rows) <= 4 and rows["op"].iloc[-1] == "(other)"
        assert rows["share"].sum() == pytest.approx(1.0) and (rows["self_ms"] >= 0).all()
    assert "aten::sort" in set(every_op["op"]) and every_op["share"].iloc[-1] == 0.0
    assert "profiler_start" not in capfd.readouterr().err  # the C++ profiler's lines are silenced
    with pytest.raises(ValueError, match="unknown losses"):
        profile_losses(["nope"], (1, 4, 4, 4))


# ------------------------------------------------------------------ foreground-map losses vs BCE
def test_benchmark_foreground_table_on_tiny_batches():
    from pixelweight.benchmark import FOREGROUND_REFERENCE, FOREGROUND_TARGETS, benchmark_foreground

    frame = benchmark_foreground([(2, 12, 10), (1, 9, 9)], repeats=2, warmup=0)
    names = ["F.binary_cross_entropy_with_logits", "weighted_fmeasure_loss(terms)", "weighted_fmeasure_loss",
             "soft_fmeasure_loss", "structure_loss", "hybrid_loss"]
    assert frame["loss"].tolist() == names * 2 and names[0] == FOREGROUND_REFERENCE
    assert frame["shape"].tolist() == ["2x12x10"] * 6 + ["1x9x9"] * 6
    assert (frame.loc[frame["loss"] == FOREGROUND_REFERENCE, "ratio"] == 1.0).all()
    assert (frame["median_ms"] > 0).all() and set(frame["threads"]) == {1}
    wfm = frame[frame["loss"] == "weighted_fmeasure_loss(terms)"]
    assert (wfm["target"] == FOREGROUND_TARGETS["weighted_fmeasure_loss(terms)"]).all()
    assert all(m == (r <= 1.5) for m, r in zip(wfm["meets"], wfm["ratio"]))
    assert frame.loc[frame["loss"] == "hybrid_loss", "meets"].isna().all()


def test_foreground_batch_holds_blobs_and_the_losses_agree_with_their_functions():
    from pixelweight.benchmark import foreground_batch, foreground_losses
    from pixelweight.losses import weighted_fmeasure_loss

    logits, target = foreground_batch((3, 32, 24), seed=1)
    assert logits.shape == (3, 1, 32, 24) and logits.requires_grad and target.dtype == torch.long
    fraction = target.float().mean(dim=(1, 2))
    assert torch.all((fraction > 0.25) & (fraction < 0.35))
    losses = foreground_losses(target)
    torch.testing.assert_close(losses["weighted_fmeasure_loss(terms)"](logits, target),
                               weighted_fmeasure_loss(logits, target))
    with pytest.raises(ValueError, match=r"shape must be \(N, H, W\)"):
        foreground_batch((1, 1, 8, 8))
    with pytest.raises(ValueError, match="fraction"):
        foreground_batch((1, 8, 8), fraction=1.0)


def test_benchmark_foreground_cli(capsys):
    assert main(["--set", "foreground", "--shape", "1", "1", "8", "8", "--repeats", "1", "--warmup", "0"]) == 0
    out = capsys.readouterr().out
    assert "ratio = time / F.binary_cross_entropy_with_logits" in out and "weighted_fmeasure_loss(terms)" in out
    with pytest.raises(SystemExit):
        main(["--set", "foreground", "--shape", "1", "3", "8", "8"])


# ------------------------------------------------------------- the exact metric vs PySODMetrics
def test_benchmark_metric_rows_on_a_tiny_batch():
    """Structure only (no timing assertion): one row per call, the reference's ratio 1, the
    values equal to PySODMetrics', the issue's targets attached."""
    from pixelweight.benchmark import METRIC_REFERENCE, METRIC_TARGETS, benchmark_metric

    frame = benchmark_metric((2, 12, 10), repeats=2, warmup=0)
    assert frame["call"].tolist() == [METRIC_REFERENCE, "weighted_fmeasure", "weighted_fmeasure(terms)", "wfm_gt_terms"]
    assert frame.loc[0, "ratio"] == 1.0 and (frame["median_ms"] > 0).all() and set(frame["threads"]) == {1}
    assert (frame["shape"] == "2x12x10").all() and (frame["repeats"] == 2).all()
    ours = frame[frame["call"].isin(list(METRIC_TARGETS))]
    assert (ours["max_abs_diff"] < 1e-6).all()
    assert ours["target"].tolist() == [METRIC_TARGETS[c] for c in ours["call"]]
    assert all(m == (r <= t) for m, r, t in zip(ours["meets"], ours["ratio"], ours["target"]))
    assert frame.loc[3, "meets"] is None and math.isnan(frame.loc[3, "target"])
    assert all(abs(s * r - 1) < 1e-12 for s, r in zip(frame["speedup"], frame["ratio"]))


def test_benchmark_metric_cli(capsys):
    assert main(["--set", "metric", "--shape", "1", "1", "8", "8", "--repeats", "1", "--warmup", "0",
                 "--threads", "1"]) == 0
    out = capsys.readouterr().out
    assert "ratio = time / py_sod_metrics.WeightedFmeasure" in out and "weighted_fmeasure(terms)" in out
    with pytest.raises(SystemExit):
        main(["--set", "metric", "--shape", "1", "3", "8", "8"])


# ------------------------------------------------------------------------------------
# the saliency sampler against uniform downsampling (structure, no timed assertions)
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("task_net, train", [(True, False), (True, True), (False, False), (False, True)])
def test_benchmark_sampler_structure(task_net, train):
    before = torch.get_num_threads()
    frame = benchmark_sampler(batch=2, in_size=32, out_size=8, task_net=task_net, train=train, repeats=2, warmup=1)
    assert torch.get_num_threads() == before
    assert frame["call"].tolist() == ["uniform", "sampler"] and frame.loc[0, "ratio"] == 1.0
    assert (frame["median_ms"] > 0).all() and (frame["peak_mib"] > 0).all()
    assert frame["threads"].tolist() == [1, 1] and set(frame["shape"]) == {"2x1x32x32 -> 8x8"}
    assert frame["task_net"].tolist() == [task_net] * 2 and frame["train"].tolist() == [train] * 2
    if task_net:
        assert frame.loc[1, "target"] == SAMPLER_TARGET and frame.loc[1, "meets"] in (True, False)
    else:
        assert frame["meets"].isna().all()
    assert frame["memory_ratio"].iloc[0] == 1.0


def test_benchmark_sampler_errors():
    with pytest.raises(ValueError, match="in_size must be >= 2"):
        benchmark_sampler(in_size=1)
    with pytest.raises(TypeError, match="train must be a bool"):
        benchmark_sampler(train=1)
    with pytest.raises(ValueError, match="num_threads must be >= 1"):
        benchmark_sampler(num_threads=0)


def test_peak_memory_counts_what_a_call_holds_at_once():
    def hold_two():
        a = torch.empty(1 << 18)  # 1 MiB
        b = torch.empty(1 << 18)
        del a, b

    def one_after_the_other():
        for _ in range(2):
            a = torch.empty(1 << 18)
            del a

    assert peak_memory(hold_two) >= 2 << 20
    assert (1 << 20) <= peak_memory(one_after_the_other) < 2 << 20
