"""The loss micro-benchmark: table layout, within-round ratios, custom losses, errors, CLI."""

import platform
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

from pixelweight import benchmark
from pixelweight.benchmark import benchmark_losses, default_losses, keep_freed_memory, main


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
