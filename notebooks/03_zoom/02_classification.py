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
# # Learning to zoom: classifying a small digit on a large canvas
#
# The saliency sampler lets a network that must look at a small input choose where that input
# reads a large image: a small saliency network looks at a low-resolution copy, and the
# sampling grid gets dense where it finds something {cite:p}`recasens2018zoom`. The abstract
# claims that the layer beats uniform downsampling at the same input size and that it
# "degrades gracefully" to uniform sampling [abstract]; its tasks were gaze estimation and
# fine-grained classification, whose table numbers are [unverified] here.
#
# We test it where it should matter most: `ClutteredDigits`, one small handwritten digit on a
# {glue:text}`canvas_px` x {glue:text}`canvas_px` canvas strewn with fragments of other digits,
# classified by the same small CNN from a {glue:text}`input_px` x {glue:text}`input_px` input
# made (a) by uniform downsampling, (b) by the saliency sampler, and (c) from the full canvas
# (the upper bound: {glue:text}`highres_factor` times the task network's input pixels). Three
# ablations remove one part of the sampler each: the replicate padding, the blur warm-up, and
# the per-image saliency (one map for the whole data set, a parameter learned with the network:
# the cheap baseline of later work {cite:p}`thavamani2023lzu`). A sweep over the digit size asks
# where zooming helps, and a variant where the digit fills the canvas asks whether the sampler
# does no harm where zooming cannot help. The sampler arms with padding start as uniform
# downsampling exactly (their saliency starts constant); the no-padding ablation starts from a
# centre zoom (a constant saliency without padding pulls the grid inward). All arms share the
# data, the seeds, the batches and the task network's initial weights, so differences are
# paired by seed.
#
# **Differences from the official code** [code]: it trains the saliency network (a ResNet-18 cut
# at layer 3, on a 224 x 224 copy) with learning-rate multipliers of 0.01 and 0.001 on the
# saliency parts; here a small CNN of {glue:text}`saliency_layers` convolutions sees the
# {glue:text}`input_px` x {glue:text}`input_px` uniform copy and every parameter shares one
# learning rate. A ResNet-18 would dwarf the task network and the CPU budget of this book, and
# its small multipliers exist to protect ImageNet features that a network trained from scratch
# does not have; the saliency network's last layer starts at zero instead, so that the sampler
# starts as uniform downsampling and moves only as far as training pushes it.
#
# **Needs:** a CPU for the `ci` profile ({glue:text}`n_arms` arms and a
# {glue:text}`n_variants`-variant sweep, {glue:text}`n_seeds` seeds each, {glue:text}`steps`
# steps: early training); the converged `full` profile ({glue:text}`full_seeds` seeds,
# {glue:text}`full_steps`, the plateau of each run recorded) runs outside the book with
# `make results CHAPTER=03_zoom`.

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
# The chapter's typed setups (pixelweight.chapters.zoom): budget, data, one model per arm
setup = zoom.setup("headline", profile, device=device, results_dir=results_dir, chapter=chapter)
sweep_setup = zoom.setup("sweep", profile, device=device, results_dir=results_dir, chapter=chapter)
P = setup.profile
ARMS = [arm.label for arm in setup.arms]
FULL = zoom.STAGES["headline"].scale("full").profile
glue("canvas_px", setup.data.size)
glue("input_px", zoom.INPUT_SIZE)
glue("highres_factor", f"{(setup.data.size / zoom.INPUT_SIZE) ** 2:g}")
glue("saliency_layers", sum(isinstance(m, torch.nn.Conv2d) for m in
                            setup.build_arm_model(setup.arm("sampler")).sampler.saliency_net.modules()))
glue("n_arms", len(ARMS))
glue("n_variants", len(sweep_setup.stage.variants))
glue("n_seeds", len(P.seeds))
glue("steps", P.steps)
glue("full_seeds", len(FULL.seeds))
own_steps = zoom.setup("headline", "full").arm_budget_text()  # the arms that plateau early train less
glue("full_steps", f"{FULL.steps:,} steps" + (f" ({own_steps}, where it has plateaued)" if own_steps else ""))
print(setup)

# %% [markdown]
# ## The data
#
# Each canvas holds one digit (the label) of side {glue:text}`digit_px` pixels and
# {glue:text}`clutter` fragments of other digits. Uniformly downsampled to {glue:text}`input_px` x
# {glue:text}`input_px`, the digit is about {glue:text}`digit_small` pixels wide: its strokes are
# thinner than a pixel.

# %% tags=["hide-input"]
test = setup.splits.test
glue("digit_px", setup.data.options["digit_size"])
glue("clutter", setup.data.options["clutter"])
glue("digit_small", f"{setup.data.options['digit_size'] * zoom.INPUT_SIZE / setup.data.size:.0f}")
fig, axes = plt.subplots(1, 6, figsize=(plotting.PAGE_WIDTH, 1.7))
for i, ax in enumerate(axes):
    image, label = test[i]
    y0, x0, y1, x1 = test.boxes[i]
    ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
    ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="tab:red", lw=1))
    ax.set_title(f"label {int(label)}", fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
fig.suptitle(f"Test canvases ({setup.data.size} x {setup.data.size} px); the red square is the digit's box",
             fontsize="small")
plt.show()

# %% [markdown]
# ## Training

# %%
runs = setup.run()
glue("train_minutes", f"{sum(r.wall_time_s for rs in runs.values() for r in rs) / 60:.1f}")
glue("device_name", runs["uniform"][0].device)
glue("trained_steps", f"{P.steps} Adam steps" + (f" ({setup.arm_budget_text()})" if setup.arm_budget_text() else ""))

# %% [markdown]
# Each arm trained {glue:text}`n_seeds` seeds of {glue:text}`trained_steps`
# ({glue:text}`train_minutes` minutes in all on {glue:text}`device_name`).
#
# ## Results (test split)

# %% tags=["hide-input"]
effects = zoom.headline_effects(setup, runs)
frame = zoom.accuracy_frame(runs)
rows = [{"arm": arm, "test accuracy, mean [95% CI]": mean_ci(frame[frame.arm == arm]["value"]).format(3)}
        for arm in ARMS]
markdown(table(pd.DataFrame(rows)))
import textwrap

fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
order = ARMS
for k, arm in enumerate(order):
    values = frame[frame.arm == arm]["value"].to_numpy()
    ax.scatter(np.full(len(values), k), values, color="0.5", s=14, zorder=3,
               label="one seed" if k == 0 else None)
    ax.errorbar([k], [values.mean()], yerr=[[values.mean() - mean_ci(values).low], [mean_ci(values).high - values.mean()]],
                fmt="D", color="tab:blue", capsize=4, label="mean, 95% CI" if k == 0 else None)
ax.set_xticks(range(len(order)), ["\n".join(textwrap.wrap(arm, 12)) for arm in order], fontsize="small")
ax.set_ylabel("test accuracy")
ax.set_xlabel(f"how the {zoom.INPUT_SIZE} x {zoom.INPUT_SIZE} input is made "
              f"(high-res: the {setup.data.size} x {setup.data.size} canvas)")
ax.legend(frameon=False, fontsize="small")
plt.show()
glue("acc_uniform", f"{effects['accuracy']['uniform']:.3f}")
glue("acc_sampler", f"{effects['accuracy']['sampler']:.3f}")
glue("acc_highres", f"{effects['accuracy']['high-res']:.3f}")
glue("gain", effects["gain"].format(3))
glue("closed", "undefined" if not np.isfinite(effects["closed"]) else f"{effects['closed']:.0%}")

# %% [markdown]
# Uniform downsampling reaches a test accuracy of {glue:text}`acc_uniform`, the sampler
# {glue:text}`acc_sampler` and the high-resolution upper bound {glue:text}`acc_highres`
# (means over seeds). The paired gain of the sampler over uniform downsampling is
# {glue:text}`gain`; on average it closes {glue:text}`closed` of the gap to the upper bound.
#
# ## What each arm costs
#
# Equal input size is not equal compute. One training step and one forward pass of each arm's
# first-seed model on a batch of {glue:text}`bench_batch` test canvases, relative to uniform
# downsampling (`pixelweight.benchmark.benchmark_models`; medians of within-round ratios, CPU time
# on the CPU): the sampler's training step costs {glue:text}`cost_sampler` times uniform's, the
# high-resolution upper bound's {glue:text}`cost_highres` times.

# %% tags=["hide-input"]
from pixelweight.benchmark import benchmark_models

bench_n = P.batch_size
bench_x = torch.stack([test[i][0] for i in range(bench_n)])
bench_y = torch.stack([test[i][1] for i in range(bench_n)])
costs = benchmark_models({arm: runs[arm][0].model for arm in ARMS}, bench_x, bench_y,
                         setup.build_loss(setup.arm("uniform")), repeats=5, device=device)
glue("bench_batch", bench_n)
glue("cost_sampler", f"{costs.set_index('model').loc['sampler', 'train_step_ratio']:.1f}")
glue("cost_highres", f"{costs.set_index('model').loc['high-res', 'train_step_ratio']:.1f}")
markdown(table(costs.assign(**{c: costs[c].map(lambda v: f"{v:.3g}") for c in costs.columns if c != "model"})
               .rename(columns={"model": "arm", "train_step_s": "train step (s)", "forward_s": "forward (s)",
                                "train_step_ratio": "train step / uniform", "forward_ratio": "forward / uniform"})))

# %% [markdown]
#
# ## What the sampler sees
#
# The trained sampler of the first seed on {glue:text}`n_show` test canvases: the canvas with the digit's
# box, the uniform {glue:text}`input_px` x {glue:text}`input_px` input, the saliency map (grid
# cells), the sampling grid drawn on the canvas (every second line), and the sampler's input.

# %% tags=["hide-input"]
images = torch.stack([test[i][0] for i in range(6)])
sampler_model = runs["sampler"][0].model.cpu()
uniform_model = runs["uniform"][0].model.cpu()
glue("n_show", len(images))
seen = zoom.sampled_examples(sampler_model, images)
flat = zoom.sampled_examples(uniform_model, images)
fig, axes = plt.subplots(5, 6, figsize=(plotting.PAGE_WIDTH, 6.6))
for i in range(6):
    y0, x0, y1, x1 = test.boxes[i]
    axes[0, i].imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[0, i].add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, color="tab:red", lw=1))
    axes[1, i].imshow(flat.output[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[2, i].imshow(seen.saliency[i, 0], cmap="magma")
    axes[3, i].imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
    grid = (seen.grid[i].numpy() + 1) / 2 * (images.shape[-1] - 1)  # pixel coordinates of the samples
    for r in range(0, grid.shape[0], 2):
        axes[3, i].plot(grid[r, :, 0], grid[r, :, 1], color="tab:orange", lw=0.5)
    for c in range(0, grid.shape[1], 2):
        axes[3, i].plot(grid[:, c, 0], grid[:, c, 1], color="tab:orange", lw=0.5)
    axes[4, i].imshow(seen.output[i, 0], cmap="gray", vmin=0, vmax=1)
for r, name in enumerate(["canvas", "uniform", "saliency", "grid", "sampler"]):
    axes[r, 0].set_ylabel(name, fontsize="small")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
plt.show()

# %% [markdown]
# The data-set-level saliency (the "learned data-set map" arm) is one map for every image. Since
# the digit may lie anywhere on the canvas, there is little for it to learn; its largest
# cell over its smallest is {glue:text}`fixed_contrast` (1 is uniform sampling).

# %% tags=["hide-input"]
fixed_map = zoom.average_saliency(runs[zoom.FIXED_ARM][0].model.cpu(), images[:1])
glue("fixed_contrast", f"{fixed_map.max() / fixed_map.min():.2f}")
fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH * 0.75, 2.8))
for ax, (name, m) in zip(axes, [("learned data-set map\n(one map for all images)", fixed_map),
                                 (f"sampler, mean over\n{len(images)} test canvases",
                                  zoom.average_saliency(sampler_model, images))]):
    im = ax.imshow(m, cmap="magma", vmin=0, vmax=1)
    ax.set_title(name, fontsize="small")
    ax.set_xlabel("grid cell x")
    ax.grid(False)
axes[0].set_ylabel("grid cell y")
fig.colorbar(im, ax=axes, shrink=0.8, label="saliency / max")
plt.show()

# %% [markdown]
# ## Where zooming helps: the digit size
#
# The sweep trains uniform downsampling and the sampler at {glue:text}`n_sizes` digit sizes,
# the canvas and the input fixed. The smaller the digit, the more uniform downsampling loses and
# the more a zoom has to win. One more variant has the digit fill the whole canvas, without
# clutter: there uniform downsampling already keeps everything there is to see, and the sampler
# can only do as well (claim (b)).

# %%
sweep_runs = {}
for variant in sweep_setup.stage.variants:
    if variant in sweep_setup.scale.shared_variants:  # `full`: the headline's own runs, not trained twice
        sweep_runs.update({(variant, arm.label): runs[arm.label] for arm in sweep_setup.arms})
        continue
    for label, rs in sweep_setup.variant(variant).run().items():
        sweep_runs[variant, label] = rs
sweep = zoom.sweep_effects(sweep_setup, sweep_runs)
glue("n_sizes", len(zoom.DIGIT_SIZES))

# %% tags=["hide-input"]
sf = zoom.sweep_frame(sweep_runs)
sf = sf[sf.digit_size.isin(zoom.DIGIT_SIZES)]  # the fill variant is in the table below
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
for k, (arm, sub) in enumerate(sf.groupby("arm", sort=False)):
    stats = [mean_ci(s["value"]) for _, s in sub.groupby("digit_size")]
    sizes = sorted(sub["digit_size"].unique())
    x = np.asarray(sizes) + (k - 0.5) * 0.3
    ax.errorbar(x, [s.mean for s in stats], yerr=[[s.mean - s.low for s in stats], [s.high - s.mean for s in stats]],
                marker="o", capsize=3, label=arm)
ax.set_xlabel(f"digit side on the {setup.data.size} x {setup.data.size} canvas (px)")
ax.set_ylabel("test accuracy")
ax.set_xticks(list(zoom.DIGIT_SIZES))
ax.legend(title=f"{zoom.INPUT_SIZE} x {zoom.INPUT_SIZE} input by", frameon=False, fontsize="small")
plt.show()
markdown("Paired gain of the sampler over uniform downsampling (test accuracy) [95% CI]:\n\n" + table(pd.DataFrame(
    [{"digit side (px)": d, "Δ accuracy": g.format(3)} for d, g in sweep["gains"].items()]
    + [{"digit side (px)": f"{setup.data.size} (fills the canvas, no clutter)", "Δ accuracy": sweep["fill"].format(3)}])))
glue("growth", sweep["growth"].format(3))

# %% [markdown]
# The gain at the smallest digit minus the gain at the largest, paired by seed, is
# {glue:text}`growth`.
#
# ## Committed `full`-profile runs

# %%
setup.show_committed(columns=["seed", "test_accuracy", "device", "commit"])

# %% [markdown]
# ## Claims
#
# Claim (b) has a numerical side, checked below the table: a constant saliency gives uniform
# downsampling to rounding error, and a saliency of low contrast moves no sample by more than
# {glue:text}`shift_tol` of a task-input pixel. Its empirical side asks that the sampler be no
# worse than uniform downsampling by more than {glue:text}`graceful_tol` accuracy where zooming
# cannot help (the digit fills the canvas).

# %%
# pixelweight.chapters.zoom.headline_claims: claims (a)-(g) from the headline and sweep runs
glue("shift_tol", f"{zoom.LOW_CONTRAST_SHIFT:g}")
glue("graceful_tol", f"{zoom.GRACEFUL_TOLERANCE:g}")
checks = zoom.identity_checks(images)
claims = zoom.headline_claims(setup, runs, sweep, checks)
claims.show()
_ = claims.record(results_dir)
for c in claims.claims:
    glue("verdict_" + c.label.strip("()"), c.verdict)

# %% [markdown]
# At this budget the primary claim (a) is {glue:text}`verdict_a`, graceful degradation (b)
# {glue:text}`verdict_b`, closing half the gap (c) {glue:text}`verdict_c` and the growth
# of the gain as the digit shrinks (d) {glue:text}`verdict_d`. These are early-training
# verdicts; the converged ones follow.
#
# ## Converged claims
#
# The same claims judged on the committed converged runs (`full` profile, made with
# `make results CHAPTER=03_zoom`); the sweep's claims on its own records. Committed records
# keep no model, so the identity checks stay with the runs above. These verdicts replace the
# early ones on the landing page and the scorecard.

# %%
setup_full = zoom.setup("headline", "full", chapter=chapter)
converged = setup_full.show_converged(zoom.headline_claims, results_dir)

# %% [markdown]
# ### Converged sweep

# %%
sweep_full = zoom.setup("sweep", "full", chapter=chapter)
converged_sweep = sweep_full.show_converged(zoom.sweep_claims, results_dir, section="converged-sweep",
                                            variants=list(sweep_full.stage.variants))
