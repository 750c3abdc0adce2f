# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% tags=["setup", "remove-cell"]
# Setup, generated from _config.yml by `make sync` (edit it there, not here). Where pixelweight
# is missing (on Colab), install the book's release v0.1.0 of it and keep the machine's PyTorch;
# device = "auto" (next cell) then trains on the GPU when there is one.
import importlib
import importlib.util
import subprocess
import sys

RELEASE = "pixelweight @ git+https://github.com/which-pixels-matter/which-pixels-matter@v0.1.0"

if importlib.util.find_spec("pixelweight") is None:
    from importlib.metadata import PackageNotFoundError, version

    try:  # ask for the installed torch itself, so that pip keeps it (e.g. Colab's CUDA build)
        keep_torch = [f"torch=={version('torch')}"]
    except PackageNotFoundError:
        keep_torch = []
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", *keep_torch, RELEASE], check=True)
    importlib.invalidate_caches()

import pixelweight
from pixelweight.train import resolve_device

auto_device = resolve_device("auto")
print(f"pixelweight {pixelweight.__version__}; device 'auto' is {auto_device}"
      + (" (no GPU: on Colab, Runtime > Change runtime type)" if auto_device.type == "cpu" else ""))

# %% [markdown]
# # What each loss costs
#
# A loss that re-weights pixels is worth using only if it costs little more than the
# cross-entropy it re-weights. Researchers compare with what they already use, PyTorch's
# `torch.nn.functional.cross_entropy`, so that is the reference here: every loss of
# `pixelweight` runs forward and backward on the same logits and labels, and its time is
# divided by `F.cross_entropy`'s. The library's losses also validate their inputs (shapes,
# dtypes, label ranges, parameter values) and raise a clear error where PyTorch would
# compute a wrong number; that validation is part of what is timed.
#
# **Needs:** a CPU for the `ci` profile (the 4 x 19 x 256 x 512 batch, at 1 and
# 2 threads); the `full` profile times a Cityscapes-sized batch and is meant for one GPU.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import os

import matplotlib.pyplot as plt
import numpy as np

from pixelweight import plotting
from pixelweight.benchmark import REFERENCE, TARGETS, benchmark_library, profile_losses, ratio_table
from pixelweight.book import glue, markdown, table
from pixelweight.profiles import benchmark_scale
from pixelweight.train import resolve_device

plotting.set_style()
S = benchmark_scale(profile)
bench_device = resolve_device(device)
print(S, bench_device)

# %% [markdown]
# ## The measurement
#
# Random float32 logits of shape {glue:text}`shape` with uniform labels, the first
# {glue:text}`ignore_rows` rows of every image labelled `ignore_index = 255` (like the
# padded border of a crop). Each round runs every loss once, forward and backward, in an
# order that rotates from round to round; the ratio to `F.cross_entropy` is taken within
# the round, which cancels much of the noise of a shared machine, and the table gives its
# median and quartiles over {glue:text}`repeats` rounds. On the CPU the allocator keeps
# freed memory (`steady_memory=True`), so that the times measure the losses and not the
# kernel zeroing fresh pages. The same measurement from a shell:
# `python -m pixelweight.benchmark --threads 1 2 --steady-memory`.

# %%
bench = benchmark_library(S.shape, threads=S.threads, device=bench_device, repeats=S.repeats, warmup=1,
                          ignore_index=255, ignore_rows=S.ignore_rows, steady_memory=True)
load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
glue("load", f"{load:.1f} on {os.cpu_count()} cores")
glue("shape", " x ".join(map(str, S.shape)))
glue("ignore_rows", S.ignore_rows)
glue("repeats", S.repeats)
glue("device", str(bench["device"].iloc[0]))
ref_ms = bench[bench["loss"] == REFERENCE].set_index("threads")["median_ms"]
glue("ref_ms", " and ".join(f"{ref_ms[t]:.0f} ms at {t} thread{'s' if t > 1 else ''}" for t in S.threads))
markdown(table(ratio_table(bench).rename(columns={"loss": "loss (forward + backward)"})))

# %% [markdown]
# Each cell is the median ratio to `F.cross_entropy` and, in brackets, its quartiles over
# the rounds (on {glue:text}`device`; `F.cross_entropy` itself took {glue:text}`ref_ms`).
# `cross_entropy(weight)` is class-weighted CE, `RecallLoss(momentum=0.5)` the recall loss
# with moving-average weights and `loss_max_pooling(per_image)` one LMP problem per image;
# the targets are the library's, set against `F.cross_entropy` for the plain form of each
# loss.

# %% tags=["hide-input"]
order = list(dict.fromkeys(bench["loss"]))
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 0.45 * plotting.PAGE_WIDTH))
offsets = np.linspace(-0.2, 0.2, len(S.threads))
for offset, t in zip(offsets, S.threads):
    rows = bench[bench["threads"] == t].set_index("loss").loc[order]
    y = np.arange(len(order)) + offset
    ax.errorbar(rows["ratio"], y, xerr=[rows["ratio"] - rows["ratio_q25"], rows["ratio_q75"] - rows["ratio"]],
                fmt="o", capsize=3, label=f"{t} CPU thread{'s' if t > 1 else ''}")
for i, name in enumerate(order):
    if name in TARGETS:
        ax.plot([TARGETS[name]] * 2, [i - 0.35, i + 0.35], color="black", lw=2)
ax.axvline(1.0, color="grey", ls="--", lw=1)
ax.set_yticks(np.arange(len(order)), order)
ax.invert_yaxis()
ax.set_xlabel("forward + backward time / F.cross_entropy's (ratio; dashed: 1, bars: targets)")
ax.set_ylabel("loss")
ax.set_title(f"Cost of each loss on {' x '.join(map(str, S.shape))} logits ({bench_device}); "
             "median and quartiles over rounds")
ax.legend(loc="upper right")
plt.show()

# %%
targeted = bench[bench["loss"].isin(list(TARGETS))]
met = [name for name in TARGETS if bool(targeted.loc[targeted["loss"] == name, "meets"].all())]
missed = [name for name in TARGETS if name not in met]


def worst(name):
    rows = targeted[targeted["loss"] == name]
    row = rows.loc[rows["ratio"].idxmax()]
    return f"`{name}` ({row['ratio']:.2f} at {row['threads']} thread{'s' if row['threads'] > 1 else ''}, " \
           f"target {TARGETS[name]:.2f})"


glue("n_met", f"{len(met)} of {len(TARGETS)}")
glue("met", ", ".join(f"`{n}`" for n in met) if met else "none")
glue("missed", ", ".join(worst(n) for n in missed) if missed else "none")
ce = targeted[targeted["loss"] == "cross_entropy"]
glue("ce_ratio", " and ".join(f"{r:.2f}" for r in ce["ratio"]))
glue("n_pixels", f"{S.shape[0] * S.shape[2] * S.shape[3]:,}")

# %% [markdown]
# ## Which targets are met
#
# At both thread counts, {glue:text}`n_met` losses meet their target: {glue:text}`met`.
# Missed (worst thread count shown): {glue:text}`missed`. The library's CE costs
# {glue:text}`ce_ratio` times PyTorch's at 1 and 2 threads: it *is* PyTorch's fused kernel
# (`reduction="sum"`, divided by the number of valid pixels it counts on the way), and its
# label-range check is the kernel's own on the CPU; a bad label still raises a
# `ValueError` that names the offending values.
#
# Where the extra time goes, loss by loss:
#
# * **focal loss**: the per-pixel CE map instead of the fused sum, and the focal factor
#   $(1-p_t)^\gamma$ with its derivative written out (four passes over the pixel map in the
#   backward instead of the ten autograd would record).
# * **soft Dice**: a softmax instead of a log-softmax, and per image and class three sums
#   (the probabilities as one matrix product with the mask of valid pixels, the
#   probability of the label and the label counts as scatter-adds), no one-hot tensor, and
#   the gradient of the two sums written out as one outer product and one scatter.
# * **recall loss**: its weights need every pixel's prediction before the loss. The misses
#   are decided exactly on the logits, with one read of the label's logit and an `amax`
#   over the classes, two more reads of the whole logits tensor; the counts take one pass
#   over the labels, and the loss is then `F.cross_entropy(weight=w)`.
# * **loss max-pooling**: its closed form needs the pixel losses sorted (a radix sort of
#   their bit patterns on the CPU), then a few passes over the {glue:text}`n_pixels` pixel
#   losses for the threshold and the weights.
#
# ## Where the time goes
#
# `torch.profiler` on one CPU thread, for `F.cross_entropy` and every loss that misses its
# target in this run: each operator's own time per call (forward and backward), its share
# of the loss's total, and the operators that `F.cross_entropy` does not run.

# %% tags=["hide-input"]
profiled = [REFERENCE] + missed
prof = profile_losses(profiled, S.shape, device=bench_device, ignore_rows=S.ignore_rows, rounds=3, top=8)
reference_ops = set(prof.loc[prof["loss"] == REFERENCE, "op"]) | {"aten::fill_", "(other)"}
shown = prof.assign(extra=[("" if op in reference_ops else "not in F.cross_entropy") for op in prof["op"]])
markdown(table(shown.rename(columns={"self_ms": "self time (ms)", "calls": "calls per loss call",
                                     "share": "share of the loss's time", "extra": ""}), floatfmt=".2f"))
ref_total = prof.loc[prof["loss"] == REFERENCE, "self_ms"].sum()


def extra_ops(name):
    rows = prof[(prof["loss"] == name) & ~prof["op"].isin(reference_ops)]
    return ", ".join(f"`{r.op}` {r.self_ms / ref_total:.0%}" for r in rows.itertuples()) or "none among the top 8"


glue("profile_text", "; ".join(f"`{n}`: {extra_ops(n)}" for n in missed) if missed
     else "no loss misses its target in this run, so only `F.cross_entropy` is profiled")

# %% [markdown]
# The operators that only the missing losses run, as a share of `F.cross_entropy`'s own
# total time: {glue:text}`profile_text`. The rest of their time is the same log-softmax,
# gathers and fills as CE's.
#
# The ratios depend on the machine. With two threads every parallel operator waits for the
# second worker thread; on a busy machine (the load average during this measurement was
# {glue:text}`load`) that wait can exceed the operator's own work, which penalises the
# losses that run many small operators (loss max-pooling, the recall loss) far more than
# `F.cross_entropy`'s few large ones: the one-thread column is the more reliable one there. The absolute times are not comparable across machines; the ratios, taken
# within rounds, mostly are.
