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
# # Chapter 0: cross-entropy on a long tail
#
# Before any paper, the problem they all attack. We train the book's small U-Net with
# plain pixel-wise cross-entropy (CE) on `DigitScenes` with a Zipf class law
# (imbalance $s = 1$: the digit 0 is drawn ten times as often as the digit 9) and ask
# which classes it learns. CE is a mean over pixels,
#
# $$ \mathcal{L}_{\text{CE}} = -\frac{1}{N} \sum_{i=1}^{N} \log p_{i, y_i}, $$
#
# so a class's share of the gradient is its share of the pixels: background owns most
# of them, and a rare digit's errors barely move the loss. The later chapters re-weight
# pixels — by how badly their class is recalled (recall loss), by how large their loss
# is (loss max-pooling), by where they are (Weighted F-measure) — to change that.
#
# **Needs:** a CPU for the `ci` profile (3 seeds); the converged `full` profile (5 seeds,
# 4,000 steps, the plateau of each run recorded) runs outside the book with
# `make results CHAPTER=00_testbed`: well under 90 minutes on two CPU cores.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
from matplotlib.ticker import FuncFormatter
import numpy as np
import pandas as pd
import torch
from scipy import stats as sps

from pixelweight import plotting
from pixelweight.book import format_p, glue, markdown, table
from pixelweight.chapters import history_curve, per_class_frame, testbed
from pixelweight.stats import mean_ci

plotting.set_style()
# The chapter's typed setup (pixelweight.chapters.testbed): budget, data, model, losses
setup = testbed.setup("baseline", profile, device=device, results_dir=results_dir, chapter=chapter)
P = setup.profile
CLASS_NAMES = setup.class_names
NUM_CLASSES = setup.num_classes
print(setup)

# %% [markdown]
# ## Data and training
#
# The splits come from disjoint source digits; every seed and every later chapter sees the
# same images (the data seeds are fixed), so comparisons between losses are paired.

# %%
splits = setup.splits
freq = splits.train.class_pixel_frequencies()
runs = setup.run()["CE"]
glue("n_seeds", len(runs))
glue("steps", P.steps)
glue("train_minutes", f"{sum(r.wall_time_s for r in runs) / 60:.1f}")
glue("device_name", runs[0].device)

# %% [markdown]
# {glue:text}`n_seeds` seeds of {glue:text}`steps` Adam steps each took
# {glue:text}`train_minutes` minutes on {glue:text}`device_name`.

# %% tags=["hide-input"]
ax = plotting.plot_history({"cross-entropy": [r.history for r in runs]}, key="loss",
                           ylabel="training loss (nats per pixel)")
ax.set_yscale("log")
ax.set_title("Training loss (mean ± sd over seeds)")
plt.show()

# %% [markdown]
# ## Overall metrics (test split, full label resolution)

# %% tags=["hide-input"]
summary = []
for key, label in [("test_miou", "mIoU"), ("test_mean_accuracy", "mean accuracy (mean class recall)"),
                   ("test_mean_precision", "mean precision"), ("test_pixel_accuracy", "pixel accuracy")]:
    iv = mean_ci([r.metrics[key] for r in runs])
    summary.append({"metric": label, "mean [95% CI]": iv.format(3)})
    glue(key, f"{iv.mean:.3f}")
markdown(table(pd.DataFrame(summary)))

# %% [markdown]
# Pixel accuracy ({glue:text}`test_pixel_accuracy`) looks excellent because most pixels
# are background; the class-averaged numbers, mIoU {glue:text}`test_miou` and mean
# accuracy {glue:text}`test_mean_accuracy`, tell the real story.
#
# ## Which classes does CE learn?

# %% tags=["hide-input"]
per_class = per_class_frame({"CE": runs}, CLASS_NAMES, split="test", frequencies=freq)
digits = per_class[per_class["class"] != "background"]
by_class = digits.groupby("class", sort=False).agg(
    pixel_frequency=("pixel_frequency", "first"), recall=("recall", "mean"),
    recall_sd=("recall", "std"), iou=("iou", "mean"), precision=("precision", "mean"))

fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.4))
ax.errorbar(100 * by_class["pixel_frequency"], by_class["recall"], yerr=by_class["recall_sd"],
            fmt="o", capsize=3, label="recall (mean ± sd over seeds)")
ax.scatter(100 * by_class["pixel_frequency"], by_class["iou"], marker="s", color="tab:orange", label="IoU (mean)")
for name, row in by_class.iterrows():
    ax.annotate(name, (100 * row["pixel_frequency"], row["recall"]), textcoords="offset points", xytext=(5, 4))
ax.set_xscale("log")
ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
ax.xaxis.set_minor_formatter(FuncFormatter(lambda v, _: f"{v:g}" if round(v / 10 ** np.floor(np.log10(v))) in (2, 5) else ""))
ax.set_xlabel("share of training pixels (%, log scale)")
ax.set_ylabel("test recall / IoU")
ax.set_ylim(-0.05, 1.05)
ax.set_title("Digit classes: frequent classes are learned, rare ones are not")
ax.legend(frameon=False, loc="upper left")
plt.show()

# %% tags=["hide-input"]
rho, p_value = sps.spearmanr(by_class["pixel_frequency"], by_class["recall"])
glue("spearman_rho", f"{rho:.2f}")
glue("spearman_p", format_p(p_value))

# Frequent vs rare half of the digit classes, paired by seed (pixelweight.chapters.testbed)
gap = testbed.rare_recall_gap(setup, {"CE": runs})
glue("frequent_classes", ", ".join(gap.frequent))
glue("rare_classes", ", ".join(gap.rare))
glue("recall_frequent", f"{np.mean(gap.recall_frequent):.2f}")
glue("recall_rare", f"{np.mean(gap.recall_rare):.2f}")
glue("recall_gap", gap.gap.format(2))
claims = testbed.baseline_claims(setup, {"CE": runs})
glue("gap_verdict", claims.claims[0].verdict)

table_df = by_class.reset_index()[["class", "pixel_frequency", "recall", "precision", "iou"]]
table_df["pixel_frequency"] = 100 * table_df["pixel_frequency"]
table_df = table_df.rename(columns={"pixel_frequency": "train pixels (%)"})
markdown("Per-class test metrics, mean over seeds:\n\n" + table(table_df))

# %% [markdown]
# Across the ten digit classes, recall and pixel frequency have a Spearman rank
# correlation of {glue:text}`spearman_rho` ({glue:text}`spearman_p`, ten classes).
# The five most frequent digits ({glue:text}`frequent_classes`) reach a mean recall of
# {glue:text}`recall_frequent`, the five rarest ({glue:text}`rare_classes`)
# {glue:text}`recall_rare`: a gap of {glue:text}`recall_gap` (paired over seeds, 95% CI).
# The claim "CE under-recalls the rare classes of a long tail" is, on this testbed and
# budget, **{glue:text}`gap_verdict`**.
#
# This is the class-imbalance problem the recall-loss and loss max-pooling chapters
# attack. Part of the gap is a budget effect (a short CPU run leaves every class
# under-trained, the rare ones most); the converged runs at the end of this page show what
# remains at the plateau.
#
# ## What the network predicts

# %% tags=["hide-input"]
model = runs[0].model.eval().cpu()
images = torch.stack([splits.test[i][0] for i in range(5)])
labels = torch.stack([splits.test[i][1] for i in range(5)])
with torch.no_grad():
    pred = model(images).argmax(1)
fig, axes = plt.subplots(3, 5, figsize=(plotting.PAGE_WIDTH, 4.8))
for i in range(5):
    axes[0, i].imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[1, i].imshow(plotting.colorize(labels[i].numpy(), NUM_CLASSES))
    axes[2, i].imshow(plotting.colorize(pred[i].numpy(), NUM_CLASSES))
for ax in axes.ravel():
    ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
for ax, title in zip(axes[:, 0], ["image", "ground truth", "CE prediction"]):
    ax.set_ylabel(title)
plotting.class_legend(fig, CLASS_NAMES, ncol=6)
fig.suptitle("Test images, seed 0")
plt.show()

# %% [markdown]
# ## Committed `full`-profile runs
#
# Converged runs (the `full` profile, `make results CHAPTER=00_testbed`) are committed under
# `results/00_testbed/` with their provenance (library version, git commit, device). A record whose
# configuration differs from what this notebook would run today is flagged.

# %%
setup.show_committed(columns=["seed", "test_miou", "test_mean_accuracy", "device", "commit", "wall_time_s"])

# %% [markdown]
# ## Claims
#
# The testbed reproduces no paper; its one claim is the problem the recall-loss and loss
# max-pooling chapters set out to solve. Judged first on this page's early-training runs:

# %%
claims.show()
_ = claims.record(results_dir)

# %% [markdown]
# ## Converged claims
#
# The same claim judged on the committed converged runs (`full` profile, made with
# `make results CHAPTER=00_testbed`): the same scenes and model trained to a plateau of the
# validation mIoU. Its verdict replaces the early one on the landing page and the scorecard.

# %%
setup_full = testbed.setup("baseline", "full", chapter=chapter)
converged = setup_full.show_converged(testbed.baseline_claims, results_dir)

# %% tags=["hide-input"]
# The converged paragraph: every number computed from the committed records
full_text = converged.text()
full_gap = testbed.rare_recall_gap(setup_full, converged.runs) if converged.available else gap
if converged.available:
    markdown(
        f"At the converged budget ({full_text['seeds']} seeds; {full_text['plateau']} runs reached the plateau; "
        f"{full_text['hours']} hours of training in all) CE reaches a test mIoU of "
        f"{mean_ci([r.metrics['test_miou'] for r in converged.runs['CE']]).format(3)}; the five most frequent "
        f"digits a mean recall of {np.mean(full_gap.recall_frequent):.2f}, the five rarest "
        f"{np.mean(full_gap.recall_rare):.2f}: a gap of {full_gap.gap.format(2)}, so the claim is "
        f"**{converged.table.claims[0].verdict}** at the plateau. " + (
            f"The gap shrinks from {gap.gap.format(2)} in this page's early-training runs to "
            f"{full_gap.gap.format(2)}: on this testbed much of CE's neglect of the rare digits is a matter of "
            "training budget, and what the later chapters' losses can still gain at the plateau is bounded by what "
            "is left of it." if full_gap.gap.mean < gap.gap.mean else
            f"The gap does not shrink with training ({gap.gap.format(2)} in this page's early-training runs): the "
            "neglect of the rare digits persists at the plateau.")
        + " The figure follows the gap along training on the validation split.")

# %% tags=["hide-input"]
# The recall gap along training: validation recall of the frequent minus the rare half (the
# halves of the converged runs' training split), per seed; records store an undefined recall as null
FREQUENT_IDX = [CLASS_NAMES.index(n) for n in full_gap.frequent]
RARE_IDX = [CLASS_NAMES.index(n) for n in full_gap.rare]


def gap_at(entry):
    if entry.get("val_recall") is None:
        return None
    recall = np.asarray(entry["val_recall"], dtype=float)
    return float(np.nanmean(recall[FREQUENT_IDX]) - np.nanmean(recall[RARE_IDX]))


fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
ax.axhline(0, color="0.4", lw=1, ls="--")
curve = history_curve(converged.runs, gap_at, "CE")
if len(curve):
    ax.plot(curve["step"], curve["mean"], marker="o", ms=3,
            label=f"converged runs (full profile, {full_text['seeds']} seeds)")
    ax.fill_between(curve["step"], curve["low"], curve["high"], alpha=0.25, label="95% interval over seeds")
ax.errorbar([P.steps], [gap.gap.mean], yerr=[[gap.gap.mean - gap.gap.low], [gap.gap.high - gap.gap.mean]],
            fmt="s", color="tab:red", capsize=3,
            label=f"this page's {P.name} runs ({len(P.seeds)} seeds, test split), end of training")
ax.set_xlabel("optimiser step")
ax.set_ylabel("recall gap, validation\n(frequent − rare digits)")
ax.set_title("How much more of the frequent digits CE recalls, along training")
ax.legend(frameon=False, fontsize="small")
plt.show()
