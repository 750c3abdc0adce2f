r"""Wall-clock micro-benchmarks of pixel losses: forward + backward time relative to CE.

A re-weighting loss should cost little more than the cross-entropy it re-weights. The
recall loss, for instance, adds one ``amax`` over the logits and one ``bincount`` over the
labels; :func:`benchmark_losses` measures what that costs on a given device and size.

Method: every loss runs on the same logits and labels (a fresh gradient each time). The
losses take turns within each round (the order rotates from round to round), so that
a slow spell of a shared machine hits all of them alike, and the ratio to the reference
is taken **within** each round, then summarised by its median over the rounds. CUDA work is
synchronised before and after each timed call.

On the CPU, ``steady_memory=True`` (:func:`keep_freed_memory`) first tells glibc to keep
freed memory in the process. Otherwise every tensor of this size is a fresh ``mmap`` whose
pages the kernel zeroes on first touch, and the timings then measure page faults (system
time) as much as the loss: on 2 cores at 8 x 19 x 512 x 1024 it halved CE's time and cut
the spread of the ratios several-fold. PyTorch's CUDA caching allocator does the same on a GPU.

From a shell, e.g. on a GPU at the size of a Cityscapes batch::

    python -m pixelweight.benchmark --device cuda --shape 8 19 512 1024 --repeats 20
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import sys
import time
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._validation import check_float, check_ignore_index, check_int

__all__ = ["default_losses", "benchmark_losses", "keep_freed_memory", "main"]

DEFAULT_SHAPE = (8, 19, 512, 1024)  # Cityscapes-like: batch 8, 19 classes, 512 x 1024


def default_losses(num_classes: int, ignore_index: Optional[int] = None) -> Dict[str, Callable]:
    """The comparison the recall-loss chapter reports, the reference (plain CE) first.

    ``cross_entropy`` is :func:`pixelweight.losses.cross_entropy` (input validation
    included, as in training); ``F.cross_entropy`` is PyTorch's, without validation; then
    :func:`~pixelweight.losses.recall_loss` and :class:`~pixelweight.losses.RecallLoss` with
    a moving average.
    """
    from .losses import RecallLoss, cross_entropy, recall_loss

    num_classes = check_int(num_classes, "num_classes", minimum=2)
    ignore_index = check_ignore_index(ignore_index)
    torch_ignore = -100 if ignore_index is None else ignore_index
    module = RecallLoss(num_classes, momentum=0.5, ignore_index=ignore_index)
    return {
        "cross_entropy": lambda x, y: cross_entropy(x, y, ignore_index=ignore_index),
        "F.cross_entropy": lambda x, y: F.cross_entropy(x, y, ignore_index=torch_ignore),
        "recall_loss": lambda x, y: recall_loss(x, y, ignore_index=ignore_index),
        "RecallLoss(momentum=0.5)": module,
    }


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's mallopt parameters (malloc.h)


def keep_freed_memory() -> bool:
    """Make glibc keep freed memory in this process: no ``mmap`` per large tensor, no trim.

    Sets ``M_MMAP_THRESHOLD`` to 1 GiB and ``M_TRIM_THRESHOLD`` to its maximum, so that a
    tensor freed by one benchmark round is reused by the next instead of being returned to
    the kernel and faulted in (zeroed) again. It lasts for the rest of the process (glibc
    has no call that restores its adaptive default) and makes the process hold on to the
    memory it has used. Returns ``False``, changing nothing, where the C library is not glibc
    (macOS, Windows, musl).
    """
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_MMAP_THRESHOLD, 1 << 30)) and bool(mallopt(_M_TRIM_THRESHOLD, 2**31 - 1))


def _check_shape(shape) -> tuple:
    if not isinstance(shape, (tuple, list)) or len(shape) != 4:
        raise ValueError(f"shape must be (N, C, H, W), got {shape!r}")
    shape = tuple(check_int(v, f"shape[{i}]", minimum=1) for i, v in enumerate(shape))
    if shape[1] < 2:
        raise ValueError(f"shape needs C >= 2 classes, got {shape!r}")
    return shape


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def benchmark_losses(
    losses: Optional[Mapping[str, Callable]] = None,
    shape: Sequence[int] = DEFAULT_SHAPE,
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 10,
    warmup: int = 2,
    ignore_index: Optional[int] = None,
    ignore_fraction: float = 0.0,
    seed: int = 0,
    num_threads: Optional[int] = None,
    steady_memory: bool = False,
):
    r"""Time ``loss(logits, target).backward()`` for each loss on the same random batch.

    Parameters
    ----------
    losses : mapping of str to callable, optional
        ``name -> loss(logits, target)``; the first entry is the reference of the ratios.
        Default: :func:`default_losses` (plain CE first).
    shape : (N, C, H, W)
        Logits shape (default 8 x 19 x 512 x 1024). Labels are uniform over the C classes.
    device : str or torch.device
        Where to run (``"auto"`` picks CUDA, MPS or the CPU).
    dtype : torch.dtype
        Floating dtype of the logits.
    repeats : int
        Timed rounds (each loss runs once per round).
    warmup : int
        Untimed rounds first (allocator, kernels, caches).
    ignore_index : int, optional
        Label written into a random ``ignore_fraction`` of the pixels (needs
        ``ignore_fraction > 0`` to matter) and passed to the default losses.
    ignore_fraction : float
        Share of pixels set to ``ignore_index``, in [0, 1).
    seed : int
        Seed of the random logits and labels.
    num_threads : int, optional
        CPU threads for torch during the benchmark (restored afterwards); default: leave
        torch's setting. One thread makes CPU timings on a busy, shared machine far less
        noisy (no waiting on a descheduled worker thread at every operation).
    steady_memory : bool
        On the CPU, call :func:`keep_freed_memory` first, so that the times measure the
        losses rather than the kernel's page faults (for the rest of the process; see the
        module's notes). No effect on other devices.

    Returns
    -------
    pandas.DataFrame
        One row per loss: ``loss``, ``median_ms``, ``q25_ms``, ``q75_ms`` (of the per-call
        times), ``ratio`` (median over rounds of the time over the reference's time in the
        same round), ``ratio_q25``, ``ratio_q75``, and ``shape``, ``device``, ``dtype``,
        ``repeats``, ``threads`` (CPU threads torch used), ``steady_memory`` (whether it
        was in effect).
    """
    import pandas as pd

    from .train import resolve_device

    shape = _check_shape(shape)
    repeats = check_int(repeats, "repeats", minimum=1)
    warmup = check_int(warmup, "warmup", minimum=0)
    seed = check_int(seed, "seed", minimum=0)
    if num_threads is not None:
        num_threads = check_int(num_threads, "num_threads", minimum=1)
    ignore_index = check_ignore_index(ignore_index)
    if not isinstance(steady_memory, bool):
        raise TypeError(f"steady_memory must be a bool, got {type(steady_memory).__name__}")
    ignore_fraction = check_float(ignore_fraction, "ignore_fraction", minimum=0.0, maximum=1.0,
                                  max_inclusive=False)
    if ignore_fraction > 0 and ignore_index is None:
        raise ValueError(f"ignore_fraction={ignore_fraction} needs an ignore_index")
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    device = resolve_device(device)
    if losses is None:
        losses = default_losses(shape[1], ignore_index)
    if not isinstance(losses, Mapping) or not losses:
        raise TypeError("losses must be a non-empty mapping of name -> callable(logits, target)")
    for name, fn in losses.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"losses must map names (str) to callables, got {name!r}: {type(fn).__name__}")
    losses = {name: (fn.to(device) if isinstance(fn, torch.nn.Module) else fn) for name, fn in losses.items()}
    steady = steady_memory and device.type == "cpu" and keep_freed_memory()

    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    base = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    target = torch.randint(0, c, (n, h, w), generator=g)
    if ignore_fraction > 0:
        target[torch.rand(n, h, w, generator=g) < ignore_fraction] = ignore_index
    target = target.to(device)
    logits = base.requires_grad_(True)

    def timed(fn) -> float:
        logits.grad = None
        _sync(device)
        start = time.perf_counter()
        loss = fn(logits, target)
        loss.backward()
        _sync(device)
        return time.perf_counter() - start

    names = list(losses)
    times = {name: [] for name in names}
    saved_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        threads = torch.get_num_threads()
        for r in range(warmup + repeats):
            order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
            for name in order:
                t = timed(losses[name])
                if r >= warmup:
                    times[name].append(t)
    finally:
        torch.set_num_threads(saved_threads)
    ref = np.asarray(times[names[0]])
    rows = []
    for name in names:
        t = np.asarray(times[name])
        ratio = t / ref  # within-round ratios
        rows.append({
            "loss": name,
            "median_ms": 1e3 * float(np.median(t)),
            "q25_ms": 1e3 * float(np.quantile(t, 0.25)),
            "q75_ms": 1e3 * float(np.quantile(t, 0.75)),
            "ratio": float(np.median(ratio)),
            "ratio_q25": float(np.quantile(ratio, 0.25)),
            "ratio_q75": float(np.quantile(ratio, 0.75)),
            "shape": "x".join(map(str, shape)),
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
            "repeats": repeats,
            "threads": threads,
            "steady_memory": steady,
        })
    logits.grad = None
    return pd.DataFrame(rows)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: print the table of :func:`benchmark_losses` (Markdown)."""
    parser = argparse.ArgumentParser(
        prog="python -m pixelweight.benchmark",
        description="Forward+backward time of the recall loss relative to cross-entropy.",
    )
    parser.add_argument("--shape", type=int, nargs=4, default=list(DEFAULT_SHAPE), metavar=("N", "C", "H", "W"))
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ignore-index", type=int, default=None)
    parser.add_argument("--ignore-fraction", type=float, default=0.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--steady-memory", action="store_true",
                        help="CPU: keep freed memory in the process (glibc), so that page faults do not "
                             "dominate the times")
    args = parser.parse_args(argv)
    frame = benchmark_losses(
        shape=args.shape, device=args.device, dtype=getattr(torch, args.dtype), repeats=args.repeats,
        warmup=args.warmup, ignore_index=args.ignore_index, ignore_fraction=args.ignore_fraction,
        seed=args.seed, num_threads=args.threads, steady_memory=args.steady_memory,
    )
    from .book import table

    columns = ["loss", "median_ms", "q25_ms", "q75_ms", "ratio", "ratio_q25", "ratio_q75"]
    first = frame.iloc[0]
    print(f"shape {first['shape']}, device {first['device']}, dtype {first['dtype']}, "
          f"{first['repeats']} rounds, {first['threads']} CPU threads, steady memory {first['steady_memory']}; "
          f"ratio = time / {first['loss']}")
    print(table(frame[columns], floatfmt=".3f"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
