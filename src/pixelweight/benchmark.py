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

**Every loss against PyTorch's cross-entropy.** :func:`benchmark_library` times every loss
of the library (:func:`library_losses`) against ``torch.nn.functional.cross_entropy`` on the
same tensors, at one or more CPU thread counts, and returns one row per loss and thread
count with the median ratio, its quartiles over the rounds and the issue's target
(:data:`TARGETS`); :func:`ratio_table` formats it. The default batch is the issue's:
4 x 19 x 256 x 512 logits with the first 8 rows of every image ignored.
:func:`profile_losses` shows where each loss's time goes (``torch.profiler``'s self time per
operator).

**The saliency sampler against uniform downsampling.** :func:`benchmark_sampler` times the
pipeline of :class:`pixelweight.sampling.SaliencySampler` (a small saliency network, the grid,
``grid_sample`` of the full-resolution images), followed by a small task network, against
``F.interpolate`` followed by the same network, at equal output size, forward or forward and
backward, with the peak memory of each (:func:`peak_memory`); the issue's bound on the time
ratio is :data:`SAMPLER_TARGET`.

On a busy machine, measure with one thread (or ``timer="cpu"``): with two or more threads
every parallel operator waits for a descheduled worker thread, which penalises the losses
that run many small operators (loss max-pooling, the recall loss) far more than
``F.cross_entropy``'s few large ones.

**The foreground-map losses against BCE.** :func:`benchmark_foreground` times the binary
losses (the Weighted F-measure loss with its ground-truth terms cached, as in training, and
computed per call; FLoss, F3Net's structure loss, BASNet's hybrid loss) against
``torch.nn.functional.binary_cross_entropy_with_logits`` on the same logits and blob-shaped
masks, for one or more batch shapes (:data:`FOREGROUND_SHAPES`), with the issue's target
(:data:`FOREGROUND_TARGETS`).

**Whole models against each other.** :func:`benchmark_models` times one training step (forward,
loss, backward, an Adam step, on copies of the models) and one evaluation forward pass of each
of several models on the same batch, and gives each as a ratio to the first model: what the
learning-to-zoom chapter reports for its arms ("equal task-network input size" is not equal
compute: the sampler's saliency network and grid, and for segmentation the unzoom, cost time).

From a shell (every loss, 1 and 2 CPU threads; ``--set recall`` gives the recall chapter's
comparison), e.g. on a GPU at the size of a Cityscapes batch::

    python -m pixelweight.benchmark --threads 1 2 --steady-memory
    python -m pixelweight.benchmark --device cuda --shape 8 19 512 1024 --repeats 20
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import os
import sys
import time
from typing import Callable, Dict, Mapping, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from ._validation import check_float, check_ignore_index, check_int

__all__ = ["DEFAULT_SHAPE", "FOREGROUND_REFERENCE", "FOREGROUND_SHAPES", "FOREGROUND_TARGETS", "LIBRARY_SHAPE",
           "METRIC_REFERENCE", "METRIC_SHAPE", "METRIC_TARGETS",
           "REFERENCE", "SAMPLER_TARGET", "TARGETS", "benchmark_calls", "benchmark_foreground", "benchmark_library",
           "benchmark_losses", "benchmark_metric", "benchmark_models", "benchmark_sampler", "default_losses", "foreground_batch", "foreground_losses",
           "keep_freed_memory", "library_losses", "main", "peak_memory", "profile_losses", "ratio_table",
           "time_calls"]

#: Logits shape of :func:`benchmark_losses`: Cityscapes-like, batch 8, 19 classes, 512 x 1024.
DEFAULT_SHAPE = (8, 19, 512, 1024)
#: Logits shape of :func:`benchmark_library`: 4 x 19 x 256 x 512 (with 8 ignored rows per image).
LIBRARY_SHAPE = (4, 19, 256, 512)
#: The name of the reference every ratio divides by: PyTorch's ``F.cross_entropy``.
REFERENCE = "F.cross_entropy"

#: The library's targets: forward+backward time of each loss over ``F.cross_entropy``'s.
TARGETS = {
    "cross_entropy": 1.05,
    "recall_loss": 1.15,
    "focal_loss": 1.2,
    "loss_max_pooling": 1.3,
    "soft_dice_loss": 1.5,
}
TIMERS = ("wall", "cpu")

#: Mask batches of :func:`benchmark_foreground`, ``(N, H, W)``: 16 maps of 64x64 and 8 of 256x256.
FOREGROUND_SHAPES = ((16, 64, 64), (8, 256, 256))
#: The reference of the foreground-map losses: PyTorch's binary cross-entropy on the same logits.
FOREGROUND_REFERENCE = "F.binary_cross_entropy_with_logits"
#: The issue's target: forward+backward time over the reference's, with the terms cached.
FOREGROUND_TARGETS = {"weighted_fmeasure_loss(terms)": 1.5}

#: Maps of :func:`benchmark_metric`, ``(N, H, W)``: 64 maps of 256x256, float32.
METRIC_SHAPE = (64, 256, 256)
#: The reference of the metric benchmark: PySODMetrics' ``WeightedFmeasure``, stepped per image.
METRIC_REFERENCE = "py_sod_metrics.WeightedFmeasure"
#: The issue's targets: time over PySODMetrics' (at least 3x faster end to end, 20x with the
#: ground-truth terms cached).
METRIC_TARGETS = {"weighted_fmeasure": 1 / 3, "weighted_fmeasure(terms)": 1 / 20}

#: The issue's bound on the saliency sampler's pipeline time over uniform downsampling's, at
#: equal output size (:func:`benchmark_sampler`).
SAMPLER_TARGET = 1.5


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


def library_losses(num_classes: int, ignore_index: Optional[int] = None) -> Dict[str, Callable]:
    r"""Every loss of :mod:`pixelweight.losses` with its defaults, PyTorch's cross-entropy first.

    ``F.cross_entropy`` (the reference users compare with), the library's
    ``cross_entropy``, class-weighted CE (inverse-frequency-like weights), ``focal_loss``
    (:math:`\gamma = 2`), ``recall_loss``, :class:`~pixelweight.losses.RecallLoss` with a
    moving average, ``loss_max_pooling`` (over the batch and per image) and
    ``soft_dice_loss``. The names of the first loss of each kind are the keys of
    :data:`TARGETS`.
    """
    from .losses import RecallLoss, cross_entropy, focal_loss, loss_max_pooling, recall_loss, soft_dice_loss

    num_classes = check_int(num_classes, "num_classes", minimum=2)
    ignore_index = check_ignore_index(ignore_index)
    torch_ignore = -100 if ignore_index is None else ignore_index
    weight = torch.linspace(0.5, 2.0, num_classes)
    module = RecallLoss(num_classes, momentum=0.5, ignore_index=ignore_index)
    ii = ignore_index
    return {
        REFERENCE: lambda x, y: F.cross_entropy(x, y, ignore_index=torch_ignore),
        "cross_entropy": lambda x, y: cross_entropy(x, y, ignore_index=ii),
        "cross_entropy(weight)": lambda x, y: cross_entropy(x, y, weight=weight.to(x.device), ignore_index=ii),
        "focal_loss": lambda x, y: focal_loss(x, y, ignore_index=ii),
        "recall_loss": lambda x, y: recall_loss(x, y, ignore_index=ii),
        "RecallLoss(momentum=0.5)": module,
        "loss_max_pooling": lambda x, y: loss_max_pooling(x, y, ignore_index=ii),
        "loss_max_pooling(per_image)": lambda x, y: loss_max_pooling(x, y, per_image=True, ignore_index=ii),
        "soft_dice_loss": lambda x, y: soft_dice_loss(x, y, ignore_index=ii),
    }


def foreground_batch(shape: Sequence[int], *, seed: int = 0, fraction: float = 0.3,
                     device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32):
    """Random logits ``(N, 1, H, W)`` (requiring grad) and blob-shaped 0/1 masks ``(N, H, W)``.

    The masks threshold smoothed noise (a Gaussian of sigma ``H / 16``) at its
    ``1 - fraction`` quantile: a few compact objects covering about ``fraction`` of each
    image, like salient-object masks (the Weighted F-measure's blur and distance transform
    see edges, not salt-and-pepper noise).
    """
    from scipy.ndimage import gaussian_filter

    if not isinstance(shape, (tuple, list)) or len(shape) != 3:
        raise ValueError(f"shape must be (N, H, W), got {shape!r}")
    n, h, w = (check_int(v, f"shape[{i}]", minimum=1) for i, v in enumerate(shape))
    fraction = check_float(fraction, "fraction", minimum=0.0, maximum=1.0, min_inclusive=False, max_inclusive=False)
    rng = np.random.default_rng(check_int(seed, "seed", minimum=0))
    smooth = gaussian_filter(rng.random((n, h, w)), sigma=(0, max(h / 16, 1), max(w / 16, 1)))
    cut = np.quantile(smooth.reshape(n, -1), 1 - fraction, axis=1)
    target = torch.from_numpy(smooth > cut[:, None, None]).long().to(device)
    logits = torch.from_numpy(rng.standard_normal((n, 1, h, w))).to(device=device, dtype=dtype)
    return logits.requires_grad_(True), target


def foreground_losses(target: torch.Tensor) -> Dict[str, Callable]:
    """The binary losses of the library, ``F.binary_cross_entropy_with_logits`` first (the reference).

    ``weighted_fmeasure_loss(terms)`` gets the ground-truth terms of ``target``, computed here
    once (as a training loop caches them per image); ``weighted_fmeasure_loss`` computes them
    at every call (the distance transform included). Then ``soft_fmeasure_loss`` (FLoss),
    ``structure_loss`` (F3Net, published form) and ``hybrid_loss`` (BASNet).
    """
    from .losses import hybrid_loss, soft_fmeasure_loss, structure_loss, weighted_fmeasure_loss
    from .metrics import wfm_gt_terms

    terms = wfm_gt_terms(target == 1, dtype=torch.float32)
    labels = target.unsqueeze(1).float()
    return {
        FOREGROUND_REFERENCE: lambda x, y: F.binary_cross_entropy_with_logits(x, labels),
        "weighted_fmeasure_loss(terms)": lambda x, y: weighted_fmeasure_loss(x, y, terms=terms),
        "weighted_fmeasure_loss": lambda x, y: weighted_fmeasure_loss(x, y),
        "soft_fmeasure_loss": lambda x, y: soft_fmeasure_loss(x, y),
        "structure_loss": lambda x, y: structure_loss(x, y),
        "hybrid_loss": lambda x, y: hybrid_loss(x, y),
    }


def benchmark_foreground(
    shapes: Sequence[Sequence[int]] = FOREGROUND_SHAPES,
    *,
    device: str | torch.device = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    num_threads: Optional[int] = 1,
    steady_memory: bool = True,
    timer: str = "wall",
    seed: int = 0,
):
    """The foreground-map losses against binary cross-entropy: forward + backward, per batch shape.

    For each ``(N, H, W)`` of ``shapes``: float32 logits ``(N, 1, H, W)`` and blob masks
    (:func:`foreground_batch`), every loss of :func:`foreground_losses` timed by
    :func:`time_calls` (turns within each round, rotating order), and the ratio to
    ``F.binary_cross_entropy_with_logits`` taken within each round. Defaults: the issue's
    sizes (:data:`FOREGROUND_SHAPES`), one CPU thread, ``steady_memory=True`` on the CPU.

    Returns
    -------
    pandas.DataFrame
        One row per shape and loss: ``loss``, ``median_ms``, ``q25_ms``, ``q75_ms``, ``ratio``,
        ``ratio_q25``, ``ratio_q75``, ``shape`` (``NxHxW``), ``device``, ``repeats``,
        ``threads``, ``steady_memory``, ``timer``, ``target`` (:data:`FOREGROUND_TARGETS`, NaN
        where there is none) and ``meets`` (``ratio <= target``, ``None`` without one).

    Examples
    --------
    >>> from pixelweight.benchmark import benchmark_foreground
    >>> frame = benchmark_foreground([(2, 16, 16)], repeats=2, warmup=0)
    >>> frame["loss"].tolist()[:2]
    ['F.binary_cross_entropy_with_logits', 'weighted_fmeasure_loss(terms)']
    >>> float(frame.loc[0, "ratio"]), frame.loc[1, "target"]
    (1.0, 1.5)
    """
    import pandas as pd

    from .train import resolve_device

    if not isinstance(shapes, (tuple, list)) or not shapes:
        raise ValueError(f"shapes must be a non-empty sequence of (N, H, W), got {shapes!r}")
    repeats, warmup, num_threads = _check_timing(repeats, warmup, num_threads, steady_memory, timer)
    device = resolve_device(device)
    steady = steady_memory and device.type == "cpu" and keep_freed_memory()
    batches = [foreground_batch(shape, seed=seed, device=device) for shape in shapes]
    saved_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    frames = []
    try:
        threads = torch.get_num_threads()
        for logits, target in batches:
            losses = foreground_losses(target)

            def fwd_bwd(fn, logits=logits, target=target) -> Callable[[], None]:
                def call() -> None:
                    logits.grad = None
                    fn(logits, target).backward()
                return call

            times = time_calls({name: fwd_bwd(fn) for name, fn in losses.items()}, repeats=repeats,
                               warmup=warmup, device=device, timer=timer)
            rows = _ratio_rows(times)
            for row in rows:
                row.update({"shape": "x".join(map(str, target.shape)), "device": str(device), "repeats": repeats,
                            "threads": threads, "steady_memory": steady, "timer": timer})
            frames.append(pd.DataFrame(rows))
            logits.grad = None
    finally:
        torch.set_num_threads(saved_threads)
    frame = pd.concat(frames, ignore_index=True)
    frame["target"] = [FOREGROUND_TARGETS.get(name, float("nan")) for name in frame["loss"]]
    frame["meets"] = [None if name not in FOREGROUND_TARGETS else bool(r <= FOREGROUND_TARGETS[name])
                      for name, r in zip(frame["loss"], frame["ratio"])]
    return frame


def benchmark_metric(
    shape: Sequence[int] = METRIC_SHAPE,
    *,
    repeats: int = 5,
    warmup: int = 1,
    num_threads: Optional[int] = 1,
    steady_memory: bool = True,
    timer: str = "wall",
    seed: int = 0,
):
    """The exact Weighted F-measure against PySODMetrics: time per batch, and the values.

    Float32 probabilities ``sigmoid(z)`` of :func:`foreground_batch` logits and its blob masks,
    ``shape = (N, H, W)``, on the CPU. Timed in turns (:func:`time_calls`): PySODMetrics'
    ``WeightedFmeasure`` stepped over the N maps (``normalize=False``; the reference),
    :func:`pixelweight.metrics.weighted_fmeasure` end to end (the ground-truth terms, a distance
    transform, computed in the call), the same with the terms cached (``terms=``, computed once
    beforehand, as a training loop caches them) and :func:`pixelweight.metrics.wfm_gt_terms`
    alone. Needs PySODMetrics (``pip install pysodmetrics``, a test dependency).

    Returns
    -------
    pandas.DataFrame
        One row per call: ``call``, ``median_ms``, ``q25_ms``, ``q75_ms``, ``ratio`` (time over
        the reference's in the same round, median over rounds), ``ratio_q25``, ``ratio_q75``,
        ``speedup`` (``1 / ratio``), ``max_abs_diff`` (largest difference from PySODMetrics'
        values over the maps; NaN for the reference and ``wfm_gt_terms``), ``shape``,
        ``repeats``, ``threads``, ``steady_memory``, ``timer``, ``target``
        (:data:`METRIC_TARGETS`, a bound on ``ratio``; NaN where there is none) and ``meets``.

    Examples
    --------
    >>> from pixelweight.benchmark import benchmark_metric
    >>> frame = benchmark_metric((2, 16, 16), repeats=1, warmup=0)
    >>> frame["call"].tolist()
    ['py_sod_metrics.WeightedFmeasure', 'weighted_fmeasure', 'weighted_fmeasure(terms)', 'wfm_gt_terms']
    >>> bool(frame.loc[1, "max_abs_diff"] < 1e-6)
    True
    """
    import pandas as pd

    try:
        import py_sod_metrics
    except ImportError as error:  # pragma: no cover - a test dependency
        raise ImportError("benchmark_metric compares with PySODMetrics: pip install pysodmetrics") from error
    from .metrics import weighted_fmeasure, wfm_gt_terms

    repeats, warmup, num_threads = _check_timing(repeats, warmup, num_threads, steady_memory, timer)
    logits, target = foreground_batch(shape, seed=seed)
    pred = torch.sigmoid(logits.detach())[:, 0].contiguous()
    gt = target == 1
    pred_np, gt_np = pred.numpy(), gt.numpy()
    steady = steady_memory and keep_freed_memory()

    def reference() -> np.ndarray:
        metric = py_sod_metrics.WeightedFmeasure()
        for p, g in zip(pred_np, gt_np):
            metric.step(p, g, normalize=False)
        return np.asarray(metric.weighted_fms, dtype=np.float64)

    saved_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        threads = torch.get_num_threads()
        terms = wfm_gt_terms(gt, dtype=torch.float32)
        calls = {
            METRIC_REFERENCE: reference,
            "weighted_fmeasure": lambda: weighted_fmeasure(pred, gt),
            "weighted_fmeasure(terms)": lambda: weighted_fmeasure(pred, gt, terms=terms),
            "wfm_gt_terms": lambda: wfm_gt_terms(gt, dtype=torch.float32),
        }
        expected = reference()
        diffs = {
            "weighted_fmeasure": float(np.abs(weighted_fmeasure(pred, gt).double().numpy() - expected).max()),
            "weighted_fmeasure(terms)": float(
                np.abs(weighted_fmeasure(pred, gt, terms=terms).double().numpy() - expected).max()),
        }
        times = time_calls(calls, repeats=repeats, warmup=warmup, timer=timer)
    finally:
        torch.set_num_threads(saved_threads)
    rows = _ratio_rows(times)
    for row in rows:
        row["call"] = row.pop("loss")
        row.update({"speedup": 1 / row["ratio"], "max_abs_diff": diffs.get(row["call"], float("nan")),
                    "shape": "x".join(map(str, gt.shape)), "repeats": repeats, "threads": threads,
                    "steady_memory": steady, "timer": timer})
    columns = ["call", "median_ms", "q25_ms", "q75_ms", "ratio", "ratio_q25", "ratio_q75", "speedup",
               "max_abs_diff", "shape", "repeats", "threads", "steady_memory", "timer"]
    frame = pd.DataFrame(rows, columns=columns)
    frame["target"] = [METRIC_TARGETS.get(name, float("nan")) for name in frame["call"]]
    frame["meets"] = [None if name not in METRIC_TARGETS else bool(r <= METRIC_TARGETS[name])
                      for name, r in zip(frame["call"], frame["ratio"])]
    return frame


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


def _check_timing(repeats, warmup, num_threads, steady_memory, timer) -> tuple:
    """The timing options every benchmark takes, checked: ``(repeats, warmup, num_threads)``."""
    repeats = check_int(repeats, "repeats", minimum=1)
    warmup = check_int(warmup, "warmup", minimum=0)
    if num_threads is not None:
        num_threads = check_int(num_threads, "num_threads", minimum=1)
    if not isinstance(steady_memory, bool):
        raise TypeError(f"steady_memory must be a bool, got {type(steady_memory).__name__}")
    if timer not in TIMERS:
        raise ValueError(f"timer must be one of {TIMERS}, got {timer!r}")
    return repeats, warmup, num_threads


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


def _random_batch(shape, device, dtype, seed, ignore_index, ignore_fraction, ignore_rows):
    """Random logits (requiring grad) and uniform labels, some of them ``ignore_index``."""
    g = torch.Generator().manual_seed(seed)
    n, c, h, w = shape
    logits = torch.randn(shape, generator=g).to(device=device, dtype=dtype)
    target = torch.randint(0, c, (n, h, w), generator=g)
    if ignore_fraction > 0:
        target[torch.rand(n, h, w, generator=g) < ignore_fraction] = ignore_index
    if ignore_rows > 0:
        target[:, :ignore_rows] = ignore_index
    return logits.requires_grad_(True), target.to(device)


def time_calls(
    calls: Mapping[str, Callable[[], object]],
    *,
    repeats: int,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    timer: str = "wall",
) -> Dict[str, list]:
    """Seconds of each of ``calls`` (no arguments) per timed round; the timing loop of this module.

    The calls take turns within each round and the order rotates from round to round, so
    that a slow spell of a shared machine hits all of them alike; ``warmup`` untimed rounds
    come first. CUDA work is synchronised before and after each call. ``timer="wall"``
    measures elapsed time (``time.perf_counter``); ``"cpu"`` the process's CPU time
    (``time.process_time``, all threads), which a busy machine disturbs less but which
    counts the spinning of idle worker threads (and not GPU time).
    """
    from .train import resolve_device

    repeats = check_int(repeats, "repeats", minimum=1)
    warmup = check_int(warmup, "warmup", minimum=0)
    if timer not in TIMERS:
        raise ValueError(f"timer must be one of {TIMERS}, got {timer!r}")
    device = resolve_device(device)
    clock = time.perf_counter if timer == "wall" else time.process_time
    names = list(calls)
    times: Dict[str, list] = {name: [] for name in names}
    for r in range(warmup + repeats):
        order = names[r % len(names):] + names[: r % len(names)]  # rotate who goes first
        for name in order:
            _sync(device)
            start = clock()
            calls[name]()
            _sync(device)
            elapsed = clock() - start
            if r >= warmup:
                times[name].append(elapsed)
    return times


def _ratio_rows(times: Mapping[str, Sequence[float]]) -> list:
    """Per name: median and quartiles of the times (ms) and of the within-round ratio to the first name."""
    names = list(times)
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
        })
    return rows


def benchmark_calls(
    calls: Mapping[str, Callable[[], object]],
    *,
    repeats: int = 10,
    warmup: int = 1,
    device: str | torch.device = "cpu",
    timer: str = "wall",
    no_grad: bool = True,
):
    """Time calls without arguments (e.g. forward passes) against the first one, as ratios.

    The timing loop of :func:`time_calls`: the calls take turns within each round, the order
    rotates from round to round, and each call's time is divided by the first call's time
    **in the same round**; the ratios are summarised by their median and quartiles over the
    rounds. With ``no_grad`` (default) the calls run under ``torch.no_grad()``, so a
    forward pass builds no autograd graph; :func:`benchmark_losses` times forward and
    backward passes of losses instead.

    Parameters
    ----------
    calls : mapping of str to callable
        ``name -> call()``; the first entry is the reference of the ratios.
    repeats, warmup : int
        Timed rounds, and untimed rounds first.
    device : str or torch.device
        Where the calls run (CUDA work is synchronised around each call).
    timer : {"wall", "cpu"}
        What is timed, see :func:`time_calls`.
    no_grad : bool
        Run the calls under ``torch.no_grad()``.

    Returns
    -------
    pandas.DataFrame
        One row per call: ``call``, ``median_ms``, ``q25_ms``, ``q75_ms`` (of its times),
        ``ratio`` (median over rounds of its time over the reference's in the same round),
        ``ratio_q25``, ``ratio_q75``, and ``device``, ``repeats``, ``threads``, ``timer``.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.benchmark import benchmark_calls
    >>> x = torch.randn(64, 64)
    >>> frame = benchmark_calls({"sum": lambda: x.sum(), "sort": lambda: x.sort()}, repeats=3)
    >>> list(frame["call"]), float(frame.loc[0, "ratio"])
    (['sum', 'sort'], 1.0)
    """
    import pandas as pd

    from .train import resolve_device

    if not isinstance(calls, Mapping) or not calls:
        raise TypeError("calls must be a non-empty mapping of name -> callable()")
    for name, fn in calls.items():
        if not isinstance(name, str) or not callable(fn):
            raise TypeError(f"calls must map names (str) to callables, got {name!r}: {type(fn).__name__}")
    if not isinstance(no_grad, bool):
        raise TypeError(f"no_grad must be a bool, got {type(no_grad).__name__}")
    device = resolve_device(device)
    with torch.no_grad() if no_grad else contextlib.nullcontext():
        times = time_calls(calls, repeats=repeats, warmup=warmup, device=device, timer=timer)
    rows = _ratio_rows(times)
    for row in rows:
        row["call"] = row.pop("loss")
        row.update({"device": str(device), "repeats": len(times[row["call"]]),
                    "threads": torch.get_num_threads(), "timer": timer})
    columns = ["call", "median_ms", "q25_ms", "q75_ms", "ratio", "ratio_q25", "ratio_q75", "device", "repeats",
               "threads", "timer"]
    return pd.DataFrame(rows, columns=columns)


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
    ignore_rows: int = 0,
    timer: str = "wall",
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
    ignore_rows : int
        The first ``ignore_rows`` rows of every image are set to ``ignore_index`` too (the
        issue's measurement ignores 8 rows, like the border of a padded crop).
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
    timer : {"wall", "cpu"}
        What is timed, see :func:`time_calls`.

    Returns
    -------
    pandas.DataFrame
        One row per loss: ``loss``, ``median_ms``, ``q25_ms``, ``q75_ms`` (of the per-call
        times), ``ratio`` (median over rounds of the time over the reference's time in the
        same round), ``ratio_q25``, ``ratio_q75``, and ``shape``, ``device``, ``dtype``,
        ``repeats``, ``threads`` (CPU threads torch used), ``steady_memory`` (whether it
        was in effect), ``timer``.
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
    ignore_rows = check_int(ignore_rows, "ignore_rows", minimum=0)
    if ignore_rows > 0 and ignore_index is None:
        raise ValueError(f"ignore_rows={ignore_rows} needs an ignore_index")
    if timer not in TIMERS:
        raise ValueError(f"timer must be one of {TIMERS}, got {timer!r}")
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

    logits, target = _random_batch(shape, device, dtype, seed, ignore_index, ignore_fraction, ignore_rows)

    def fwd_bwd(fn) -> Callable[[], None]:
        def call() -> None:
            logits.grad = None
            fn(logits, target).backward()
        return call

    saved_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        threads = torch.get_num_threads()
        times = time_calls({name: fwd_bwd(fn) for name, fn in losses.items()}, repeats=repeats, warmup=warmup,
                           device=device, timer=timer)
    finally:
        torch.set_num_threads(saved_threads)
    rows = _ratio_rows(times)
    for row in rows:
        row.update({
            "shape": "x".join(map(str, shape)),
            "device": str(device),
            "dtype": str(dtype).replace("torch.", ""),
            "repeats": repeats,
            "threads": threads,
            "steady_memory": steady,
            "timer": timer,
        })
    logits.grad = None
    return pd.DataFrame(rows)


def benchmark_library(
    shape: Sequence[int] = LIBRARY_SHAPE,
    *,
    threads: Sequence[int] = (1, 2),
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    repeats: int = 7,
    warmup: int = 1,
    ignore_index: Optional[int] = 255,
    ignore_rows: int = 8,
    seed: int = 0,
    steady_memory: bool = True,
    timer: str = "wall",
    losses: Optional[Mapping[str, Callable]] = None,
):
    """Every loss of the library against ``F.cross_entropy``, forward + backward, per thread count.

    Runs :func:`benchmark_losses` with :func:`library_losses` (reference
    ``F.cross_entropy``) once per entry of ``threads`` (on a GPU the thread count only
    affects host code). Defaults: the issue's batch, 4 x 19 x 256 x 512 float32 logits with
    the first ``ignore_rows`` rows of every image labelled ``ignore_index``, and
    ``steady_memory=True`` on the CPU.

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`benchmark_losses` for every loss and thread count, plus
        ``target`` (the issue's bound on ``ratio`` from :data:`TARGETS`, NaN where there is
        none) and ``meets`` (``ratio <= target``; ``None`` without a target). Format it with
        :func:`ratio_table`.
    """
    import pandas as pd

    if isinstance(threads, int) or not isinstance(threads, (tuple, list)) or not threads:
        raise ValueError(f"threads must be a non-empty sequence of thread counts, got {threads!r}")
    threads = [check_int(t, "threads", minimum=1) for t in threads]
    shape = _check_shape(shape)
    if losses is None:
        losses = library_losses(shape[1], ignore_index)
    frames = [
        benchmark_losses(losses, shape, device=device, dtype=dtype, repeats=repeats, warmup=warmup,
                         ignore_index=ignore_index, ignore_rows=ignore_rows, seed=seed, num_threads=t,
                         steady_memory=steady_memory, timer=timer)
        for t in threads
    ]
    frame = pd.concat(frames, ignore_index=True)
    frame["target"] = [TARGETS.get(name, float("nan")) for name in frame["loss"]]
    frame["meets"] = [None if name not in TARGETS else bool(r <= TARGETS[name])
                      for name, r in zip(frame["loss"], frame["ratio"])]
    return frame


def ratio_table(frame) -> "object":
    """One row per loss, one column per thread count: ``median [q25, q75]`` of the ratio, and the target.

    ``frame`` is the output of :func:`benchmark_library` (or of :func:`benchmark_losses`).
    Returns a DataFrame of strings, ready for :func:`pixelweight.book.table`.
    """
    import pandas as pd

    rows = {}
    for _, row in frame.iterrows():
        entry = rows.setdefault(row["loss"], {"loss": row["loss"]})
        entry[f"{row['threads']} thread{'s' if row['threads'] != 1 else ''}"] = (
            f"{row['ratio']:.2f} [{row['ratio_q25']:.2f}, {row['ratio_q75']:.2f}]")
        if "target" in frame.columns:
            target = row["target"]
            entry["target"] = "" if target != target else f"<= {target:.2f}"
    out = pd.DataFrame(list(rows.values()))
    if "target" in out.columns:  # the target last
        out = out[[c for c in out.columns if c != "target"] + ["target"]]
    return out


@contextlib.contextmanager
def _quiet_stderr():
    """Silence the C++ profiler's start/stop lines, written straight to file descriptor 2."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError):  # no real descriptor (e.g. an embedded interpreter)
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def profile_losses(
    names: Optional[Sequence[str]] = None,
    shape: Sequence[int] = LIBRARY_SHAPE,
    *,
    device: str | torch.device = "cpu",
    num_threads: Optional[int] = 1,
    ignore_index: int = 255,
    ignore_rows: int = 8,
    rounds: int = 3,
    top: int = 8,
    seed: int = 0,
    steady_memory: bool = True,
):
    """Where the time of each loss goes: ``torch.profiler``'s self time per operator, forward + backward.

    ``names`` are keys of :func:`library_losses` (default: ``F.cross_entropy`` and the losses
    with a target). Each runs once untimed, then ``rounds`` times under the profiler on the
    batch of :func:`benchmark_library`. Returns a DataFrame with ``loss``, ``op`` (the
    PyTorch operator), ``self_ms`` (its own time per call, without the operators it calls),
    ``calls`` (per loss call) and ``share`` (of the loss's total self time); the ``top``
    operators of each loss, the rest summed in an ``(other)`` row. The profiler adds its
    own overhead: compare the shares, not the absolute times.
    """
    import pandas as pd
    from torch.profiler import ProfilerActivity, profile

    from .train import resolve_device

    shape = _check_shape(shape)
    rounds = check_int(rounds, "rounds", minimum=1)
    top = check_int(top, "top", minimum=1)
    device = resolve_device(device)
    losses = library_losses(shape[1], ignore_index)
    names = [REFERENCE, *TARGETS] if names is None else list(names)
    unknown = [n for n in names if n not in losses]
    if unknown:
        raise ValueError(f"unknown losses {unknown}; choose from {list(losses)}")
    if steady_memory and device.type == "cpu":
        keep_freed_memory()
    logits, target = _random_batch(shape, device, torch.float32, seed, ignore_index, 0.0, ignore_rows)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    saved_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(check_int(num_threads, "num_threads", minimum=1))
    rows = []
    try:
        for name in names:
            fn = losses[name]
            fn = fn.to(device) if isinstance(fn, torch.nn.Module) else fn

            def call() -> None:
                logits.grad = None
                fn(logits, target).backward()

            call()
            _sync(device)
            with _quiet_stderr(), profile(activities=activities) as prof:
                for _ in range(rounds):
                    call()
                _sync(device)
            events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
            events.sort(key=lambda e: -e.self_cpu_time_total)
            total = sum(e.self_cpu_time_total for e in events) or 1.0
            for e in events[:top]:
                rows.append({"loss": name, "op": e.key, "self_ms": e.self_cpu_time_total / rounds / 1e3,
                             "calls": e.count / rounds, "share": e.self_cpu_time_total / total})
            rest = sum(e.self_cpu_time_total for e in events[top:])
            rows.append({"loss": name, "op": "(other)", "self_ms": rest / rounds / 1e3,
                         "calls": float(sum(e.count for e in events[top:])) / rounds, "share": rest / total})
    finally:
        torch.set_num_threads(saved_threads)
        logits.grad = None
    return pd.DataFrame(rows)


def peak_memory(call: Callable[[], object], device: str | torch.device = "cpu") -> int:
    """Bytes that ``call()`` holds at most at once, above what was allocated before it.

    On CUDA: ``torch.cuda.max_memory_allocated`` (PyTorch's caching allocator). On the CPU:
    the running sum, in time order, of the memory that ``torch.profiler`` attributes to each
    operator (allocations minus frees) and to its ``[memory]`` records, i.e. the peak at
    operator granularity (a temporary allocated and freed inside one operator is not seen);
    memory held by Python objects other than tensors is not counted.
    """
    from torch.profiler import ProfilerActivity, profile

    from .train import resolve_device

    device = resolve_device(device)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        before = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        call()
        torch.cuda.synchronize(device)
        return int(torch.cuda.max_memory_allocated(device) - before)
    with _quiet_stderr(), profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        call()
    events = sorted((e for e in prof.events() if e.self_cpu_memory_usage),
                    key=lambda e: e.time_range.start)
    live = peak = 0
    for e in events:
        live += e.self_cpu_memory_usage
        peak = max(peak, live)
    return int(peak)


def _small_saliency_net(channels: int) -> torch.nn.Module:
    """The benchmark's saliency network: 3x3 conv (8, stride 2) - ReLU - 3x3 conv (8) - ReLU - 1x1 conv (1).

    Strided like the paper's (ResNet-18 to layer 3, stride 16: a 14 x 14 map for a 224 x 224 copy,
    upsampled to the 31 x 31 grid): here a map of half the low-resolution copy's size.
    """
    from torch import nn

    return nn.Sequential(nn.Conv2d(channels, 8, 3, stride=2, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, padding=1),
                         nn.ReLU(), nn.Conv2d(8, 1, 1))


def benchmark_sampler(
    batch: int = 16,
    in_size: int = 128,
    out_size: int = 32,
    *,
    channels: int = 1,
    task_net: bool = True,
    train: bool = False,
    num_threads: Optional[int] = 1,
    device: str | torch.device = "cpu",
    repeats: int = 10,
    warmup: int = 2,
    seed: int = 0,
    timer: str = "wall",
):
    r"""Time and memory of the saliency sampler's pipeline against uniform downsampling, same output size.

    Two calls on the same random ``batch x channels x in_size x in_size`` images:

    * ``uniform``: ``F.interpolate(x, out_size, mode="bilinear", align_corners=True)`` (what the
      sampler reduces to for a uniform saliency), the reference of the ratios;
    * ``sampler``: :class:`~pixelweight.sampling.SaliencySampler` with its defaults (31 x 31
      grid, the code's :math:`\sigma`, padding 30) and a small saliency network (two 3x3
      convolutions of 8 channels, the first of stride 2, and a 1x1 convolution; strided like the
      paper's) on a low-resolution copy of ``out_size`` (antialiased resize), its map upsampled to
      the grid, softmax, grid, ``grid_sample`` of the full-resolution images;

    each followed, with ``task_net=True``, by the task network both feed:
    :class:`~pixelweight.models.SmallCNN` (width 16, depth 4, 10 classes). ``train=True`` times a
    training step's forward and backward pass (sum of the logits; ``uniform`` without a task
    network has nothing to train and runs forward only); otherwise forward passes under
    ``torch.no_grad()``. Timing: :func:`benchmark_calls` (within-round ratios, median over
    rounds). Memory: :func:`peak_memory` of one call, after the timing.

    Returns
    -------
    pandas.DataFrame
        :func:`benchmark_calls`'s columns, and ``peak_mib`` (:func:`peak_memory` in MiB),
        ``memory_ratio``, ``shape`` (``"N x C x H x W -> h x w"``), ``task_net``, ``train``,
        ``target`` (:data:`SAMPLER_TARGET` for the sampler row when ``task_net``, NaN otherwise)
        and ``meets`` (``ratio <= target``, ``None`` without a target).

    Examples
    --------
    >>> from pixelweight.benchmark import benchmark_sampler
    >>> frame = benchmark_sampler(batch=2, in_size=32, out_size=8, repeats=2, warmup=0)
    >>> list(frame["call"]), float(frame.loc[0, "ratio"])
    (['uniform', 'sampler'], 1.0)
    """
    import pandas as pd

    from .models import SmallCNN
    from .sampling import SaliencySampler
    from .train import resolve_device

    batch = check_int(batch, "batch", minimum=1)
    in_size = check_int(in_size, "in_size", minimum=2)
    out_size = check_int(out_size, "out_size", minimum=2)
    channels = check_int(channels, "channels", minimum=1)
    seed = check_int(seed, "seed", minimum=0)
    for name, flag in (("task_net", task_net), ("train", train)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if num_threads is not None:
        num_threads = check_int(num_threads, "num_threads", minimum=1)
    device = resolve_device(device)

    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, in_size, in_size, generator=g).to(device)
    sampler = SaliencySampler(_small_saliency_net(channels), out_size).to(device)
    head = SmallCNN(in_channels=channels, num_classes=10, width=16, depth=4).to(device) if task_net else None
    modules = [sampler] + ([head] if head is not None else [])
    for module in modules:
        module.train(train)

    def pipeline(sample: Callable[[], torch.Tensor]) -> Callable[[], None]:
        def call() -> None:
            out = sample()
            if head is not None:
                out = head(out)
            if train and out.requires_grad:
                for module in modules:
                    module.zero_grad(set_to_none=True)
                out.sum().backward()
        return call

    calls = {
        "uniform": pipeline(lambda: F.interpolate(x, size=out_size, mode="bilinear", align_corners=True)),
        "sampler": pipeline(lambda: sampler(x).output),
    }
    saved_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    try:
        frame = benchmark_calls(calls, repeats=repeats, warmup=warmup, device=device, timer=timer,
                                no_grad=not train)
        with torch.no_grad() if not train else contextlib.nullcontext():
            peaks = {name: peak_memory(call, device) for name, call in calls.items()}
    finally:
        torch.set_num_threads(saved_threads)
    frame["peak_mib"] = [peaks[name] / 2**20 for name in frame["call"]]
    frame["memory_ratio"] = frame["peak_mib"] / frame.loc[0, "peak_mib"] if peaks["uniform"] else float("nan")
    frame["shape"] = f"{batch}x{channels}x{in_size}x{in_size} -> {out_size}x{out_size}"
    frame["task_net"] = task_net
    frame["train"] = train
    frame["target"] = [SAMPLER_TARGET if (name == "sampler" and task_net) else float("nan") for name in frame["call"]]
    frame["meets"] = [None if t != t else bool(r <= t) for t, r in zip(frame["target"], frame["ratio"])]
    return frame


def benchmark_models(models: Mapping[str, torch.nn.Module], inputs: torch.Tensor, targets: torch.Tensor,
                     loss_fn: Callable, *, repeats: int = 5, warmup: int = 1, timer: str = "auto",
                     device: str | torch.device = "cpu", lr: float = 1e-3) -> "object":
    """Seconds of a training step and of an evaluation forward pass of each of ``models`` on
    the batch ``(inputs, targets)``, and their ratio to the **first** model.

    Every model is deep-copied (the originals are left as they are) and moved to ``device``;
    a training step is ``loss_fn(model(inputs), targets).backward()`` and an Adam step
    (``lr``) in training mode, a forward pass runs in eval mode under ``torch.no_grad``. The
    calls take turns within each round (:func:`time_calls`) and each ratio is the median over
    the rounds of the ratio within a round, so that a slow spell of a shared machine hits all
    models alike. ``timer="auto"``: process CPU time on the CPU (a loaded machine disturbs it
    less; use one thread), elapsed time on a GPU.

    Returns
    -------
    pandas.DataFrame
        One row per model: ``model``, ``train_step_s`` and ``forward_s`` (medians), and
        ``train_step_ratio`` and ``forward_ratio`` (to the first model).
    """
    import copy
    import statistics

    import pandas as pd

    from .train import resolve_device

    if not isinstance(models, Mapping) or not models:
        raise ValueError("models must be a non-empty mapping of name -> nn.Module")
    for name, m in models.items():
        if not isinstance(m, torch.nn.Module):
            raise TypeError(f"models[{name!r}] must be an nn.Module, got {type(m).__name__}")
    if not callable(loss_fn):
        raise TypeError("loss_fn must be callable")
    if timer not in TIMERS + ("auto",):
        raise ValueError(f"timer must be one of {TIMERS + ('auto',)}, got {timer!r}")
    device = resolve_device(device)
    if timer == "auto":
        timer = "cpu" if device.type == "cpu" else "wall"
    x, y = inputs.to(device), targets.to(device)
    steps, forwards = {}, {}
    for name, model in models.items():
        m = copy.deepcopy(model).to(device)
        opt = torch.optim.Adam(m.parameters(), lr=lr)

        def step(m=m, opt=opt):
            m.train()
            opt.zero_grad(set_to_none=True)
            loss_fn(m(x), y).backward()
            opt.step()

        def forward(m=m):
            m.eval()
            with torch.no_grad():
                m(x)

        steps[name], forwards[name] = step, forward
    train_times = time_calls(steps, repeats=repeats, warmup=warmup, device=device, timer=timer)
    forward_times = time_calls(forwards, repeats=repeats, warmup=warmup, device=device, timer=timer)
    first = next(iter(models))
    rows = []
    for name in models:
        rows.append({
            "model": name,
            "train_step_s": statistics.median(train_times[name]),
            "forward_s": statistics.median(forward_times[name]),
            "train_step_ratio": statistics.median(a / b for a, b in zip(train_times[name], train_times[first])),
            "forward_ratio": statistics.median(a / b for a, b in zip(forward_times[name], forward_times[first])),
        })
    return pd.DataFrame(rows, columns=["model", "train_step_s", "forward_s", "train_step_ratio", "forward_ratio"])


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line: time the losses against ``F.cross_entropy`` and print the ratio table (Markdown)."""
    parser = argparse.ArgumentParser(
        prog="python -m pixelweight.benchmark",
        description="Forward+backward time of every loss of pixelweight relative to torch.nn.functional."
                    "cross_entropy, as the median ratio over rounds with its quartiles.",
    )
    parser.add_argument("--set", choices=["library", "recall", "foreground", "metric"], default="library",
                        help="library: every loss against F.cross_entropy (default); recall: the recall "
                             "chapter's comparison against the library's CE; foreground: the binary "
                             "foreground-map losses against F.binary_cross_entropy_with_logits (shapes "
                             "16x1x64x64 and 8x1x256x256 unless --shape N 1 H W); metric: the exact "
                             "Weighted F-measure against PySODMetrics, end to end and with cached "
                             "ground-truth terms (64 maps of 256x256 unless --shape N 1 H W, 1 and 2 threads)")
    parser.add_argument("--shape", type=int, nargs=4, default=None, metavar=("N", "C", "H", "W"),
                        help=f"logits shape (default {' '.join(map(str, LIBRARY_SHAPE))} for the library set, "
                             f"{' '.join(map(str, DEFAULT_SHAPE))} for the recall set)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64", "float16", "bfloat16"])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--ignore-index", type=int, default=None,
                        help="label of ignored pixels (library set: default 255)")
    parser.add_argument("--ignore-fraction", type=float, default=0.0)
    parser.add_argument("--ignore-rows", type=int, default=None,
                        help="ignored rows at the top of every image (library set: default 8)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, nargs="+", default=None,
                        help="CPU thread counts, one table each (library set: default 1 2; recall set: torch's)")
    parser.add_argument("--timer", choices=list(TIMERS), default="wall")
    parser.add_argument("--steady-memory", action="store_true",
                        help="CPU: keep freed memory in the process (glibc), so that page faults do not "
                             "dominate the times")
    args = parser.parse_args(argv)
    if args.set == "foreground":
        return _main_foreground(args, parser)
    if args.set == "metric":
        return _main_metric(args, parser)
    library = args.set == "library"
    shape = args.shape or list(LIBRARY_SHAPE if library else DEFAULT_SHAPE)
    ignore_index = args.ignore_index if args.ignore_index is not None or not library else 255
    ignore_rows = args.ignore_rows if args.ignore_rows is not None else (8 if library else 0)
    threads = args.threads or ([1, 2] if library else [None])
    losses = library_losses(shape[1], ignore_index) if library else default_losses(shape[1], ignore_index)
    from .book import table

    frames = []
    for t in threads:
        frame = benchmark_losses(
            losses, shape=shape, device=args.device, dtype=getattr(torch, args.dtype), repeats=args.repeats,
            warmup=args.warmup, ignore_index=ignore_index, ignore_fraction=args.ignore_fraction,
            ignore_rows=ignore_rows, seed=args.seed, num_threads=t, steady_memory=args.steady_memory,
            timer=args.timer,
        )
        frames.append(frame)
        columns = ["loss", "median_ms", "q25_ms", "q75_ms", "ratio", "ratio_q25", "ratio_q75"]
        first = frame.iloc[0]
        print(f"shape {first['shape']}, device {first['device']}, dtype {first['dtype']}, "
              f"{first['repeats']} rounds, {first['threads']} CPU threads, steady memory {first['steady_memory']}, "
              f"{first['timer']} time; ratio = time / {first['loss']}")
        print(table(frame[columns], floatfmt=".3f"))
        print()
    if library:
        import pandas as pd

        both = pd.concat(frames, ignore_index=True)
        both["target"] = [TARGETS.get(name, float("nan")) for name in both["loss"]]
        print("ratio to F.cross_entropy: median [25 %, 75 %] over the rounds")
        print(table(ratio_table(both)))
    return 0


def _main_foreground(args, parser) -> int:
    """``--set foreground``: :func:`benchmark_foreground`, one table per thread count."""
    from .book import table

    if args.shape is not None and args.shape[1] != 1:
        parser.error(f"--set foreground takes binary logits: --shape N 1 H W, got {args.shape}")
    shapes = [(args.shape[0], args.shape[2], args.shape[3])] if args.shape else list(FOREGROUND_SHAPES)
    columns = ["loss", "shape", "median_ms", "ratio", "ratio_q25", "ratio_q75", "target"]
    for t in args.threads or [1]:
        frame = benchmark_foreground(shapes, device=args.device, repeats=args.repeats, warmup=args.warmup,
                                     num_threads=t, steady_memory=args.steady_memory, timer=args.timer,
                                     seed=args.seed)
        first = frame.iloc[0]
        print(f"device {first['device']}, float32, {first['repeats']} rounds, {first['threads']} CPU threads, "
              f"steady memory {first['steady_memory']}, {first['timer']} time; ratio = time / {FOREGROUND_REFERENCE}")
        print(table(frame[columns], floatfmt=".3f"))
        print()
    return 0


def _main_metric(args, parser) -> int:
    """``--set metric``: :func:`benchmark_metric`, one table per thread count."""
    from .book import table

    if args.shape is not None and args.shape[1] != 1:
        parser.error(f"--set metric takes maps: --shape N 1 H W, got {args.shape}")
    shape = (args.shape[0], args.shape[2], args.shape[3]) if args.shape else METRIC_SHAPE
    columns = ["call", "median_ms", "ratio", "ratio_q25", "ratio_q75", "speedup", "max_abs_diff", "target"]
    for t in args.threads or [1, 2]:
        frame = benchmark_metric(shape, repeats=args.repeats, warmup=args.warmup, num_threads=t,
                                 steady_memory=args.steady_memory, timer=args.timer, seed=args.seed)
        first = frame.iloc[0]
        print(f"maps {first['shape']}, float32, cpu, {first['repeats']} rounds, {first['threads']} CPU threads, "
              f"steady memory {first['steady_memory']}, {first['timer']} time; ratio = time / {METRIC_REFERENCE}")
        print(table(frame[columns], floatfmt=".4g"))
        print()
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
