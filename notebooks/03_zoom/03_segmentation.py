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
# # Learning to zoom: zoom and unzoom for segmentation
#
# The saliency sampler was made for tasks whose output does not live on the image's pixels
# (classification, gaze) {cite:p}`recasens2018zoom`. A segmenter that sees a zoomed image
# predicts on the zoomed lattice; to score it on the original pixels its prediction must be
# warped back. {cite:t}`thavamani2023lzu` zoom the input, compute features, and **unzoom** by
# inverting the warp, and report gains for detection and segmentation (their numbers are
# [unverified] here). `pixelweight.sampling.unzoom` inverts the piecewise-bilinear warp the
# zoom applied (derived in the first notebook of this chapter).
#
# We test the claim on `DigitScenes` of {glue:text}`scene_px` x {glue:text}`scene_px` pixels with
# {glue:text}`scene_digits` digits of {glue:text}`digit_px` pixels: the same U-Net segments a
# {glue:text}`input_px` x {glue:text}`input_px` input made by uniform downsampling (its logits
# upsampled bilinearly to the full resolution) or by the saliency sampler (its logits unzoomed),
# so that the task network's **input size** is the same. The compute is not: the saliency network
# and the grid, and above all the unzoom (an iterative inverse of the warp at every pixel of the
# full resolution), cost time, which the page measures below. Thavamani et al. state their gains
# at similar compute; here the claim is judged at equal task-network input size, and its scope
# says that the zooming arm costs more. Both are scored at the **full label resolution**, by mIoU
# and by the accuracy on object boundaries, where the loss of resolution shows first.
#
# **Needs:** a CPU for the `ci` profile ({glue:text}`n_arms` arms x {glue:text}`n_seeds` seeds,
# {glue:text}`steps` steps: early training); the converged `full` profile
# ({glue:text}`full_seeds` seeds, {glue:text}`full_steps` steps, the plateau of each run
# recorded) runs outside the book with `make results CHAPTER=03_zoom`.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch

from pixelweight import plotting
from pixelweight.book import glue, markdown, table
from pixelweight.chapters import zoom
from pixelweight.stats import mean_ci

plotting.set_style()
# The chapter's typed setup (pixelweight.chapters.zoom): budget, data, one model per arm
setup = zoom.setup("segmentation", profile, device=device, results_dir=results_dir, chapter=chapter)
P = setup.profile
ARMS = [arm.label for arm in setup.arms]
FULL = setup.stage.scale("full").profile
glue("scene_px", setup.data.size)
glue("input_px", setup.input_size)
glue("scene_digits", "{} to {}".format(*setup.data.options["num_digits"]))
glue("digit_px", "{} to {}".format(*setup.data.options["digit_size"]))
glue("n_arms", len(ARMS))
glue("n_seeds", len(P.seeds))
glue("steps", P.steps)
glue("full_seeds", len(FULL.seeds))
glue("full_steps", f"{FULL.steps:,}")
print(setup)

# %% [markdown]
# ## Training

# %%
runs = setup.run()
glue("train_minutes", f"{sum(r.wall_time_s for rs in runs.values() for r in rs) / 60:.1f}")
glue("device_name", runs["uniform"][0].device)
params = {label: sum(p.numel() for p in runs[label][0].model.parameters()) for label in ARMS}
glue("extra_params", f"{100 * (params['zoom + unzoom'] / params['uniform'] - 1):.1f}")

# %% [markdown]
# Each arm trained {glue:text}`n_seeds` seeds of {glue:text}`steps` Adam steps
# ({glue:text}`train_minutes` minutes in all on {glue:text}`device_name`). The saliency
# network adds {glue:text}`extra_params`% to the U-Net's parameters, but parameters are not
# compute.
#
# ## What each arm costs
#
# One training step and one forward pass of each arm's first-seed model on a batch of
# {glue:text}`bench_batch` test scenes (`pixelweight.benchmark.benchmark_models`; medians of
# within-round ratios, CPU time on the CPU): zoom + unzoom costs {glue:text}`cost_step` times
# uniform downsampling's training step and {glue:text}`cost_forward` times its forward pass.
# The comparison below is at equal task-network input size, **not** at equal compute.

# %% tags=["hide-input"]
from pixelweight.benchmark import benchmark_models

test = setup.splits.test
bench_n = P.batch_size
bench_x = torch.stack([test[i][0] for i in range(bench_n)])
bench_y = torch.stack([test[i][1] for i in range(bench_n)])
costs = benchmark_models({arm: runs[arm][0].model for arm in ARMS}, bench_x, bench_y,
                         setup.build_loss(setup.arms[0]), repeats=5, device=device).set_index("model")
glue("bench_batch", bench_n)
glue("cost_step", f"{costs.loc['zoom + unzoom', 'train_step_ratio']:.1f}")
glue("cost_forward", f"{costs.loc['zoom + unzoom', 'forward_ratio']:.1f}")
markdown(table(costs.reset_index().assign(**{c: costs[c].map(lambda v: f"{v:.3g}").to_numpy() for c in costs.columns})
               .rename(columns={"model": "input made by", "train_step_s": "train step (s)", "forward_s": "forward (s)",
                                "train_step_ratio": "train step / uniform", "forward_ratio": "forward / uniform"})))
#
# ## Results (test split, full label resolution)

# %% tags=["hide-input"]
effects = zoom.segmentation_effects(setup, runs)
frame = zoom.accuracy_frame(runs, "test_miou")
rows = [{"input made by": arm, "test mIoU, mean [95% CI]": mean_ci(frame[frame.arm == arm]["value"]).format(3)}
        for arm in ARMS]
markdown(table(pd.DataFrame(rows)))
glue("d_miou", effects["miou"].format(3))
glue("d_boundary", effects["boundary"].format(3))
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH * 0.6, 2.6))
for k, arm in enumerate(ARMS):
    values = frame[frame.arm == arm]["value"].to_numpy()
    ci = mean_ci(values)
    ax.scatter(np.full(len(values), k), values, color="0.5", s=14, zorder=3, label="one seed" if k == 0 else None)
    ax.errorbar([k], [ci.mean], yerr=[[ci.mean - ci.low], [ci.high - ci.mean]], fmt="D", color="tab:blue",
                capsize=4, label="mean, 95% CI" if k == 0 else None)
ax.set_xticks(range(len(ARMS)), ARMS)
ax.set_xlim(-0.5, len(ARMS) - 0.5)
ax.set_ylabel(f"test mIoU ({setup.data.size} x {setup.data.size} labels)")
ax.set_xlabel(f"{setup.input_size} x {setup.input_size} U-Net input made by")
ax.legend(frameon=False, fontsize="small")
plt.show()

# %% [markdown]
# Zoom and unzoom change the test mIoU by {glue:text}`d_miou` and the accuracy on object
# boundaries by {glue:text}`d_boundary` (paired by seed, 95% intervals).
#
# ## What each model sees and predicts
#
# {glue:text}`n_show` test scenes: the scene, the two small inputs, the saliency and the predictions of
# the first seed at the full resolution.

# %% tags=["hide-input"]
images = torch.stack([test[i][0] for i in range(4)])
labels = torch.stack([test[i][1] for i in range(4)])
glue("n_show", len(images))
models = {label: runs[label][0].model.cpu().eval() for label in ARMS}
with torch.no_grad():
    preds = {label: m(images).argmax(1) for label, m in models.items()}
seen = {label: zoom.sampled_examples(m, images) for label, m in models.items()}
# how far the learned saliency is from uniform sampling, and how much of each scene the zoom
# covers, on the benchmark's test scenes
bench_saliency = zoom.sampled_examples(models["zoom + unzoom"], bench_x).saliency
concentration = zoom.saliency_concentration(bench_saliency)
coverage = zoom.zoom_coverage(models["zoom + unzoom"], bench_x)
glue("saliency_peak", f"{concentration.median().item():.1f}")
glue("saliency_cells", bench_saliency.shape[-2] * bench_saliency.shape[-1])
glue("conc_n", len(concentration))
glue("coverage", f"{100 * coverage.mean().item():.0f}")
glue("coverage_min", f"{100 * coverage.min().item():.0f}")
fig, axes = plt.subplots(4, 7, figsize=(plotting.PAGE_WIDTH, 4.6))
for i in range(4):
    panels = [(images[i, 0], "gray"), (labels[i], None), (seen["uniform"].output[i, 0], "gray"),
              (preds["uniform"][i], None), (seen["zoom + unzoom"].output[i, 0], "gray"),
              (seen["zoom + unzoom"].saliency[i, 0], "magma"), (preds["zoom + unzoom"][i], None)]
    for ax, (t, cmap) in zip(axes[i], panels):
        if cmap is None:
            ax.imshow(plotting.colorize(t.numpy(), setup.num_classes))
        else:
            ax.imshow(t, cmap=cmap)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.grid(False)
for ax, title in zip(axes[0], ["scene", "label", "uniform\ninput", "uniform\nprediction", "zoomed\ninput",
                               "saliency", "unzoomed\nprediction"]):
    ax.set_title(title, fontsize="x-small")
plotting.class_legend(fig, setup.class_names)
plt.show()

# %% [markdown]
# After {glue:text}`steps` steps the first seed's saliency puts {glue:text}`saliency_peak` times
# the mean saliency on its peak cell (median over {glue:text}`conc_n` test scenes; 1 for a flat
# map, which samples uniformly; {glue:text}`saliency_cells`, the number of cells, when it all
# sits on one cell), and on the same scenes its zoomed input covers {glue:text}`coverage`% of
# each scene's pixels on average (the least {glue:text}`coverage_min`%;
# `pixelweight.chapters.zoom.zoom_coverage`). A saliency concentrated away from the scene's edges
# pulls the sampling grid's border toward it, so part of the scene is never sampled: the unzoom
# gives those pixels the prediction of (about) the nearest sampled point. Uniform downsampling
# covers every pixel. A classifier loses nothing there when the digit is elsewhere; a segmenter
# is scored on every pixel.

# %% [markdown]
# ## Committed `full`-profile runs

# %%
setup.show_committed(columns=["seed", "test_miou", "device", "commit"])

# %% [markdown]
# ## Claims

# %%
# pixelweight.chapters.zoom.segmentation_claims: (h)-(j) from this page's runs
claims = zoom.segmentation_claims(setup, runs)
claims.show()
_ = claims.record(results_dir)
for c in claims.claims:
    glue("verdict_" + c.label.strip("()"), c.verdict)

# %% [markdown]
# At this budget the claim that zooming helps dense prediction at equal input size (not at equal
# compute) is {glue:text}`verdict_h`; the boundary claim {glue:text}`verdict_j`. Every run
# records its boundary accuracy (`test_boundary_accuracy`), so the converged section judges the
# boundary claim too.
#
# ## Converged claims
#
# The same claims judged on the committed converged runs (`full` profile, made with
# `make results CHAPTER=03_zoom`). These verdicts replace the early ones on the landing page
# and the scorecard.

# %%
setup_full = zoom.setup("segmentation", "full", chapter=chapter)
converged = setup_full.show_converged(zoom.segmentation_claims, results_dir)

# %% [markdown]
# ### How the converged runs trained

# %% tags=["hide-input"]
FULL_TRAIN = setup_full.scale.train
if not converged.available:
    markdown("The training curves of the converged runs appear here once their records are committed.")
else:
    markdown(f"The validation mIoU of every committed converged run, one line per seed, evaluated every "
             f"{FULL.eval_every} steps. A run has reached its plateau when its evaluations over the last "
             f"{FULL_TRAIN['plateau_window']:.0%} of its steps stay within {FULL_TRAIN['plateau_tolerance']:.2f} "
             f"mIoU; a run that predicts background only is flat too, so the table counts those apart.")
    fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
    plotting.plot_history({arm: [r.history for r in converged.runs[arm]] for arm in ARMS}, key="val_miou", ax=ax,
                          per_seed=True,
                          ylabel=f"validation mIoU ({setup_full.data.size} x {setup_full.data.size} labels)")
    ax.legend(title=f"{setup_full.input_size} x {setup_full.input_size} input made by", frameon=False,
              fontsize="small", loc="lower right")
    plt.show()
    markdown(table(zoom.converged_summary(converged.runs)))
    if all(r.plateau and r.plateau.get("reached") for arm in ARMS for r in converged.runs[arm]):
        markdown(f"Every committed run reached its plateau within its {FULL.steps:,} steps: the converged verdicts "
                 "compare trained-out models.")
    else:
        markdown("Where an arm's runs have not all reached the plateau (the table's second column), the converged "
                 "verdicts above compare runs that were still rising when their learning-rate schedule ended: a "
                 "longer budget could move them.")
