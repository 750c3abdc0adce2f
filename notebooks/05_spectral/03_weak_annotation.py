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
# # Spectral analysis: block-wise weak annotation
#
# Drawing a class boundary pixel by pixel is what makes segmentation labels expensive. Chen,
# Chiu and Wu {cite:p}`chen2020spectral` propose **block-wise annotation**: the annotator gives
# one label per $b \times b$ block, which saves labelling time, and they state that it costs
# accuracy in line with the labels' spectrum **[abstract]**. The book's reading **[derived]**:
# block labels of side $b$ keep the label frequencies up to about $N/(2b)$ cycles per image, as a
# grid of stride $b$ does (first notebook), so training on them should cost little while
# $N/(2b) \ge K_\alpha$ and more beyond. We train the chapter's U-Net on block labels of side
# $b \in \{2, 4, 8, 16\}$ and on the dense labels, and score every network on the **dense** test
# labels. Two kinds of block label:
#
# - **majority**: each block gets its most frequent class (a block with a digit stroke in a
#   minority of its pixels becomes background);
# - **soft**: each block gets the fraction of its pixels in each class, and the network trains on
#   these class probabilities with the cross-entropy against soft targets
#   (`pixelweight.losses.soft_cross_entropy`).
#
# **Needs:** a CPU for the `ci` profile (nine label sets x three seeds, trained briefly); the
# converged `full` runs come from `make results CHAPTER=05_spectral`.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from pixelweight import plotting
from pixelweight.book import glue, markdown, table
from pixelweight.chapters import spectral
from pixelweight.stats import mean_ci

plotting.set_style()

# %% [markdown]
# ## Block labels
#
# `WeakDigitScenes` serves the chapter's scenes (the same images and dense labels as
# `DigitScenes`) with the training split annotated block-wise; its validation and test splits
# keep the dense labels. One data variant of the stage per label set; the network, the loss
# (cross-entropy, with class-index or class-probability targets), the seeds and the budget are
# the same for all.

# %%
setup = spectral.setup("blocks", profile, device=device, results_dir=results_dir, chapter=chapter)
print(setup)
VARIANTS = list(setup.stage.variants)
train_weak = {v: setup.variant(v).splits.train for v in VARIANTS}

# %% tags=["hide-input"]
colors = plotting.label_colors(setup.num_classes)
i = int(np.argmax([len(np.unique(t)) for t in train_weak["dense"].labels[:16]]))
show = ["dense", "b4_majority", "b8_majority", "b4_soft", "b8_soft"]
fig, axes = plt.subplots(1, len(show), figsize=(plotting.PAGE_WIDTH, 1.9), layout="constrained")
for ax, v in zip(axes, show):
    target = train_weak[v][i][1].numpy()
    # soft labels are drawn as the mix of their classes' colours
    rgb = plotting.colorize(target, setup.num_classes) if target.ndim == 2 else np.einsum("chw,cd->hwd", target, colors)
    ax.imshow(rgb)
    ax.set_title(v.replace("_", " "), fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
fig.suptitle("One training label map as each annotator gives it (soft: colours mixed by class fraction)",
             fontsize="small")
plt.show()
SIZE = setup.data.size
glue("labels_per_image_8", (SIZE // 8) ** 2)
glue("labels_dense", SIZE * SIZE)

# %% [markdown]
# A dense label map of this testbed holds {glue:text}`labels_dense` labels; block labels of side
# 8 hold {glue:text}`labels_per_image_8`.
#
# ## Training on block labels

# %%
runs = {}
for variant in VARIANTS:  # every label set, the same seeds: {(variant, arm): [result per seed]}
    for label, results in setup.variant(variant).run().items():
        runs[variant, label] = results

# %% tags=["hide-input"]
P = setup.profile
ARM = setup.arms[0].label
test = setup.splits.test
K = spectral.train_cutoff(setup)
knee = spectral.predicted_knee(SIZE, K, (1,) + spectral.BLOCKS)
oracle = spectral.oracle_frame(test.labels, (1,) + spectral.BLOCKS, setup.num_classes)
rows = []
for b in (1,) + spectral.BLOCKS:
    row = {"block side b": str(b), "N/(2b)": SIZE / (2 * b), "oracle mIoU": oracle.oracle_miou.iloc[len(rows)]}
    for annotation in spectral.ANNOTATIONS:
        key = ("dense" if b == 1 else spectral.blocks_variant(b, annotation), ARM)
        values = [r.metrics["test_miou"] for r in runs[key]]
        row[f"{annotation}: test mIoU"] = mean_ci(values).format(3)
        row[f"{annotation}: Δ vs dense"] = "—" if b == 1 else spectral.paired_effect(runs, key, ("dense", ARM)).format(3)
    rows.append(row)
markdown("Test mIoU on the dense labels, mean over seeds [95% CI]; Δ: paired difference to the network trained "
         "on dense labels; the oracle is the majority block labels themselves, scored against the dense ones "
         "(no training):\n\n" + table(pd.DataFrame(rows), floatfmt=".3f"))
all_runs = [r for rs in runs.values() for r in rs]
glue("n_runs", len(all_runs))
glue("n_seeds", len(P.seeds))
glue("steps", P.steps)
glue("train_minutes", f"{sum(r.wall_time_s for r in all_runs) / 60:.1f}")
glue("device_name", all_runs[0].device)
glue("k_alpha", K)
glue("knee", knee if knee is not None else "none")

fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH * 0.75, 3.3), layout="constrained")
spectral.plot_against_nyquist(ax, {f"trained on {a} block labels": (spectral.runs_by_block(runs, a, ARM), m)
                                   for a, m in zip(spectral.ANNOTATIONS, ("o", "^"))}, SIZE, K, oracle, symbol="b")
ax.set_title(f"Accuracy against the block side ({P.steps} steps; mean, 95% CI over seeds)", fontsize="small")
plt.show()

# %% [markdown]
# {glue:text}`n_runs` runs ({glue:text}`n_seeds` seeds per label set, {glue:text}`steps` steps
# each) took {glue:text}`train_minutes` minutes on {glue:text}`device_name`. The labels'
# cut-off $K_\alpha$ = {glue:text}`k_alpha` cycles per image predicts the knee at $b^*$ =
# {glue:text}`knee`. The oracle is not a bound for a trained network: the network sees the
# image, whose strokes are drawn at full resolution, so it can place boundaries the block labels
# never showed it. These networks are early in training; the converged runs at the end decide.
#
# ## Committed `full`-profile runs

# %%
setup.show_committed(columns=["seed", "test_miou", "device", "commit"])

# %% [markdown]
# ## Claims
#
# Paired differences over seeds ({glue:text}`n_seeds` seeds, 95% Student-t intervals). Claim
# (d) is composite: with each kind of block label, every block side up to the predicted knee
# must be no worse than the dense labels by more than {glue:text}`tolerance` mIoU, and the side
# twice the knee must lose more than that. Claim (d′) is the book's own question.

# %%
claims = spectral.blocks_claims(setup, runs)  # texts, sources, rules: pixelweight.chapters.spectral
claims.show()
_ = claims.record(results_dir)

# %% tags=["hide-input"]
glue("tolerance", f"{spectral.TOLERANCE:g}")
glue("verdict_d", claims.claims[0].verdict)
glue("verdict_d2", claims.claims[1].verdict)
glue("effect_d2", claims.claims[1].effect_text())

# %% [markdown]
# At this budget: (d) {glue:text}`verdict_d`, (d′) {glue:text}`verdict_d2` (soft minus majority
# at $b = 8$: {glue:text}`effect_d2`), from {glue:text}`n_seeds` seeds early in training; the
# converged runs below are the book's answer.
#
# ## Converged claims
#
# The same claims, judged by the same function on the committed converged runs (`full` profile:
# the same data, labels and model, trained to a plateau of the validation mIoU). Their verdicts
# replace the early ones on the landing page and the scorecard.

# %% tags=["hide-input"]
converged = spectral.show_blocks_converged(spectral.setup("blocks", "full", chapter=chapter), results_dir)
if converged["result"].available:
    committed = converged["result"].runs
    fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH * 0.75, 3.3), layout="constrained")
    spectral.plot_against_nyquist(ax, {f"converged, {a} block labels": (spectral.runs_by_block(committed, a, ARM), m)
                                       for a, m in zip(spectral.ANNOTATIONS, ("o", "^"))}, SIZE, K, oracle,
                                  symbol="b")
    ax.set_title("Accuracy against the block side, converged (full profile; mean, 95% CI)", fontsize="small")
    plt.show()
    markdown(
        f"At the converged budget ({converged['seeds']} seeds; {converged['plateau']} runs reached the plateau; "
        f"{converged['hours']} hours of training), claim (d) is **{converged['verdict (d)']}** and (d′) "
        f"**{converged['verdict (d′)']}** (soft minus majority at b = 8: {converged['effect (d′)']}).")
