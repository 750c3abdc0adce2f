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
# # The Weighted F-measure: ranking under sloppy ground truth
#
# A measure is only as useful as the order it puts predictions in. Margolin et al.
# {cite:p}`margolin2014evaluate` argue that the F-measure and its relatives get that order
# wrong for reasons $F^w$ repairs, and Kolkin et al. {cite:p}`kolkin2017spatially` build their
# loss on that argument. One consequence we can test without training anything: human
# annotators draw masks carelessly (a little too wide, too thin, wobbly, as a polygon), and a
# good measure should rank a set of predictions in nearly the same order whether it scores
# them against the careful mask or a careless one. We take that as the claim to test, with
# the source tag **[paper, unverified]**: the paper's body was not available to us.
#
# For every test image of `SalientDigits` we make a fixed set of predictions that mimic what
# salient-object detectors get wrong, score each against the clean mask and against four
# sloppy versions of it (`degrade_mask`), and measure with Kendall's $\tau$ how much each
# measure's ranking of the predictions moves.
#
# **Needs:** a CPU; no training. The `ci` profile scores the predictions of a few hundred test
# images, the `full` profile of more.

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
from pixelweight.chapters import wfm
from pixelweight.stats import mean_ci

plotting.set_style()

# %%
setup = wfm.setup("ranking", profile, device=device, results_dir=results_dir, chapter=chapter)
test = setup.splits.test
preds = wfm.predictor_maps(test.images, test.labels, seed=0)  # (N, K, H, W), fixed for the seed
degraded = {kind: test.sloppy_masks(kind, strength, seed=0) for kind, strength in wfm.DEGRADATIONS.items()}
glue("n_images", len(test))
glue("n_predictors", len(wfm.PREDICTORS))
glue("image_size", setup.data.size)

# %% [markdown]
# ## Sloppy annotators
#
# The four careless annotators of the chapter, each at one strength (`wfm.DEGRADATIONS`):
# grown by a radius, shrunk by a radius, the boundary moved by a smooth random field, and the
# outline redrawn as a polygon. The figure shows them on three test images (white: object).

# %% tags=["hide-input"]
picks = [0, 1, 2]
fig, axes = plt.subplots(len(picks), 2 + len(degraded), figsize=(plotting.PAGE_WIDTH, 1.45 * len(picks)))
for row, i in enumerate(picks):
    axes[row, 0].imshow(test.images[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[row, 1].imshow(test.labels[i], cmap="gray", vmin=0, vmax=1)
    for col, (kind, masks) in enumerate(degraded.items(), start=2):
        axes[row, col].imshow(masks[i], cmap="gray", vmin=0, vmax=1)
titles = ["image", "clean mask"] + [f"{k}, {wfm.DEGRADATIONS[k]:g} px" for k in degraded]
for col, title in enumerate(titles):
    axes[0, col].set_title(title, fontsize="x-small")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
plt.show()

# %% [markdown]
# ## A fixed set of predictions
#
# Each test image gets {glue:text}`n_predictors` predictions, made from its image and its
# clean mask with a strength drawn per image (`wfm.predictor_maps`): a soft boundary, an
# over- and an under-segmented object, a false-positive blob near the object or far from
# it, a missing part, every bright stroke (the distractors detected too) and two bottom-up
# maps of the image's ink; each softened by a random contrast and a little noise, as a
# detector's confidence is. They are made, not learnt: the test is about the measures, and a
# fixed set keeps it free of training noise. Below, one image's predictions with their scores
# against the clean mask: $F^w$ (β² = 1) of the soft map, and the F-measure (β² =
# {glue:text}`f_beta2`) and the IoU of the map at 0.5.

# %% tags=["hide-input"]
i = picks[0]
scores = wfm.ranking_scores(preds[i:i + 1], test.labels[i:i + 1])
fig, axes = plt.subplots(1, len(wfm.PREDICTORS), figsize=(plotting.PAGE_WIDTH, 1.9))
for k, (ax, name) in enumerate(zip(axes, wfm.PREDICTORS)):
    im = ax.imshow(preds[i, k], cmap="magma", vmin=0, vmax=1)
    ax.set_title(name.replace(" ", "\n", 1), fontsize="xx-small")
    ax.set_xlabel("\n".join(f"{m} {scores[m][0, k]:.2f}" for m in wfm.RANKING_MEASURES), fontsize="xx-small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
fig.colorbar(im, ax=axes, shrink=0.7, label="predicted probability")
plt.show()
glue("f_beta2", f"{wfm.RANKING_F_BETA2:g}")

# %% [markdown]
# ## How far each ranking moves
#
# For each image and each measure we rank the predictions by their scores against the clean
# mask and against a sloppy one, and compare the two rankings with Kendall's $\tau_b$ (1: the
# same order, 0: unrelated). An image where a measure gives every prediction the same score
# has no ranking and is left out. A fourth column is a control: $F^w$ of the map thresholded
# at 0.5, which reads exactly what F and the IoU read. Where it is as stable as $F^w$ of the
# soft map, the stability comes from the metric's weights; where it is not, from seeing the
# probabilities.

# %%
stability = wfm.rank_stability(preds, test.labels, degraded)
markdown("Mean Kendall τ between the clean and the sloppy ranking, over images [95% CI]:\n\n"
         + table(wfm.stability_table(stability)))

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
kinds = list(degraded)
measures = wfm.RANKING_MEASURES + wfm.RANKING_CONTROLS
width = 0.8 / len(measures)
for j, measure in enumerate(measures):
    stats = [mean_ci(stability[(stability["kind"] == k) & (stability["measure"] == measure)]["tau"].dropna())
             for k in kinds]
    x = np.arange(len(kinds)) + (j - (len(measures) - 1) / 2) * width
    ax.bar(x, [s.mean for s in stats], width, label=measure,
           yerr=[[s.mean - s.low for s in stats], [s.high - s.mean for s in stats]], capsize=3)
ax.set_xticks(np.arange(len(kinds)), [f"{k} ({wfm.DEGRADATIONS[k]:g} px)" for k in kinds])
ax.set_xlabel("sloppy annotator (strength in pixels)")
ax.set_ylabel("Kendall τ, clean vs sloppy ranking\n(mean over images, 95% CI)")
ax.set_ylim(0, 1.05)
fig.legend(*ax.get_legend_handles_labels(), title="measure", fontsize="small", frameon=False, ncol=4,
           loc="outside lower center")
fig.suptitle("How stably each measure ranks the same predictions")
plt.show()

# %% [markdown]
# How the stability falls as the annotator gets sloppier: the same test at three strengths of
# each annotator (mean $\tau$ over images).

# %%
strengths = {kind: [s * f for f in (0.5, 1.0, 2.0)] for kind, s in wfm.DEGRADATIONS.items()}
sweep = pd.concat([
    wfm.rank_stability(preds, test.labels, {kind: test.sloppy_masks(kind, s, seed=0)}).assign(strength=s)
    for kind, values in strengths.items() for s in values
])

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, len(strengths), figsize=(plotting.PAGE_WIDTH, 2.6), sharey=True)
for ax, kind in zip(axes, strengths):
    sub = sweep[sweep["kind"] == kind].groupby(["measure", "strength"])["tau"].mean()
    for measure in wfm.RANKING_MEASURES + wfm.RANKING_CONTROLS:
        ax.plot(sub.loc[measure].index, sub.loc[measure].to_numpy(), marker="o", ms=4, label=measure)
    ax.set_title(kind, fontsize="small")
    ax.set_xlabel("strength (pixels)")
axes[0].set_ylabel("mean Kendall τ")
axes[0].legend(fontsize="x-small", frameon=False)
plt.show()

# %% [markdown]
# ## Claims
#
# Claim (d) is judged per annotator and per baseline on the paired difference over images
# $\tau_{F^w} - \tau_{\text{baseline}}$: *supported* when its 95% interval lies above 0,
# *contradicted* when below, *inconclusive* otherwise; the claim is supported only when every
# part is. The interval runs over the {glue:text}`n_images` test images, not over seeds: no
# network is trained.

# %%
claims = wfm.ranking_claims(setup, stability)  # text, source and rule: pixelweight.chapters.wfm
claims.show()
_ = claims.record(results_dir)

# %% tags=["hide-input"]
claim = claims.claims[0]
glue("verdict_d", claim.verdict)
effects = wfm.stability_effects(stability)
smallest = min(effects.items(), key=lambda item: item[1].mean)
glue("smallest_gap", f"{smallest[1].format(3)} ({smallest[0][0]}, against {smallest[0][1]})")
tau = stability.groupby("measure")["tau"].mean()
glue("tau_fw", f"{tau['Fʷ']:.2f}")
glue("tau_fw_hard", f"{tau['Fʷ at 0.5']:.2f}")
glue("tau_iou", f"{tau['IoU']:.2f}")
glue("tau_f", f"{tau['F']:.2f}")

# %% [markdown]
# Claim (d) is {glue:text}`verdict_d` on this testbed. The smallest advantage of $F^w$ is
# {glue:text}`smallest_gap`. Averaged over the four annotators, $\tau$ is
# {glue:text}`tau_fw` for $F^w$, {glue:text}`tau_f` for F and {glue:text}`tau_iou` for the
# IoU; the control, $F^w$ of the thresholded map, reaches {glue:text}`tau_fw_hard`: that is
# how much of the stability the metric's weights keep when it reads what F and the IoU read.
# The predictions are made, not learnt: networks err in other ways, and the experiments
# notebook shows what trained networks predict.
