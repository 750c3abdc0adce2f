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
# # The Weighted F-measure: from the metric to a loss
#
# Salient-object detection scores a foreground map $D \in [0, 1]^{H \times W}$ against a
# binary ground truth $G$. Margolin et al. {cite:p}`margolin2014evaluate` showed that the
# F-measure and its relatives count every error alike, and proposed the Weighted F-measure
# $F^w$, which weighs an error by where it is. Kolkin et al. {cite:p}`kolkin2017spatially`
# turned it into a training loss, "a differentiable, efficient approximation" of it
# **[abstract]**. This notebook derives the metric term by term on a real `SalientDigits`
# image, says why it was thought hard to optimise, and shows that it needs no approximation:
# every non-smooth part depends on the ground truth only, so the book's loss is the exact
# metric made a loss, $\mathcal{L} = 1 - F^w(\sigma(z), G)$.
#
# What we could not check: the paper's body was not available to us and no public code of
# its loss was found, so its own approximation (how it handles the nearest-neighbour gather,
# the blur, the minimum and $\beta$) is unknown **[unverified]**. The book does not guess it;
# it trains with the exact metric, and says so wherever it reports a result.
#
# **Needs:** a CPU; one short training run (the last section).

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
from pixelweight.chapters import wfm
from pixelweight.losses import weighted_fmeasure_loss
from pixelweight.metrics import weighted_fmeasure, wfm_gt_terms

plotting.set_style()

# %% [markdown]
# ## The metric, term by term
#
# With $E = |G - D|$ the absolute error, Margolin et al. make two changes to the F-measure
# **[code]** (their `WFb.m`, ported line by line by PySODMetrics, against which the library's
# `weighted_fmeasure` is tested).
#
# **Dependency.** A missed object pixel surrounded by found ones hurts less than an isolated
# miss, so errors on the object are smoothed by their neighbourhood. Each pixel first borrows
# the error of its nearest object pixel $\nu(i)$, so that the blur does not mix in background
# errors, then a 7 x 7 Gaussian $K$ ($\sigma = 5$) averages:
#
# $$
# \tilde E_i = E_{\nu(i)}, \qquad E_A = K * \tilde E, \qquad
# E'_i = \begin{cases} \min(E_i, E_{A,i}) & i \in G \\ E_i & i \notin G. \end{cases}
# $$
#
# **Importance.** A false positive far from the object is worse than one on its border:
#
# $$
# B_i = \begin{cases} 1 & i \in G \\ 2 - e^{\alpha \Delta_i} & i \notin G \end{cases},
# \qquad \alpha = \frac{\ln 0.5}{5},
# $$
#
# with $\Delta_i$ the Euclidean distance to the nearest object pixel: 1 on the border, 1.5 at 5
# pixels, close to 2 far away. With $E^w = E' \circ B$,
#
# $$
# TP^w = |G| - \sum_{G} E^w, \quad FP^w = \sum_{\neg G} E^w, \quad
# R^w = 1 - \frac{1}{|G|}\sum_G E^w, \quad P^w = \frac{TP^w}{TP^w + FP^w}, \quad
# F^w_\beta = \frac{(1 + \beta^2) P^w R^w}{\beta^2 P^w + R^w},
# $$
#
# with $\beta^2 = 1$ in the reference code. Below, each term on a test image of
# `SalientDigits`, scored against a prediction made from the image's own ink (a bottom-up
# map: it finds the salient digit and, wrongly, the distractors too).

# %%
data = wfm.setup("ranking", profile, chapter=chapter).splits.test  # test images, no training
i = 0
gt = torch.from_numpy(data.labels[i]).bool()
ink = wfm.PREDICTORS.index("image ink")
pred = torch.from_numpy(wfm.predictor_maps(data.images[i:i + 1], data.labels[i:i + 1], seed=0)[0, ink]).double()
maps = wfm.wfm_term_maps(pred, gt)  # E, Ẽ, E_A, E', B, E^w and the totals
glue("example_fw", f"{maps['fw']:.3f}")
glue("example_fw_lib", f"{float(weighted_fmeasure(pred[None], gt[None])):.3f}")
glue("example_p", f"{maps['precision']:.3f}")
glue("example_r", f"{maps['recall']:.3f}")

# %% tags=["hide-input"]
panels = [("image", data.images[i, 0], "gray"), ("ground truth G", data.labels[i], "gray"),
          ("prediction D", pred.numpy(), "magma"), ("E = |G − D|", maps["E"], "magma"),
          ("Ẽ: error of the nearest object pixel", maps["E_tilde"], "magma"),
          ("E_A = K * Ẽ", maps["E_A"], "magma"), ("E′ = min(E, E_A) on G", maps["E_min"], "magma"),
          ("importance B", maps["B"], "viridis"), ("E^w = E′ B", maps["E_w"], "magma")]
fig, axes = plt.subplots(3, 3, figsize=(plotting.PAGE_WIDTH, 7.4))
for ax, (title, image, cmap) in zip(axes.flat, panels):
    vmax = 2 if title.startswith(("importance", "E^w")) else 1
    im = ax.imshow(image, cmap=cmap, vmin=0, vmax=vmax)
    ax.set_title(title, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
    if cmap != "gray":
        fig.colorbar(im, ax=ax, shrink=0.8, label="value (error or weight)" if title.startswith("E^w") else None)
fig.suptitle("The Weighted F-measure of one prediction, term by term")
plt.show()

# %% [markdown]
# On this image the terms give $P^w$ = {glue:text}`example_p`, $R^w$ = {glue:text}`example_r`
# and $F^w$ = {glue:text}`example_fw` (the library's `weighted_fmeasure` gives
# {glue:text}`example_fw_lib`). The distractor digits are false positives far from the
# object: $B$ weighs them up to twice as much as the salient digit's blurred edge, and they
# dominate $FP^w$.
#
# ## Why it was thought hard to optimise, and why it is not
#
# Read as a function of the network's output, $F^w$ looks forbidding: a Euclidean distance
# transform, a nearest-neighbour lookup, a minimum, and a ratio over the whole image (it does
# not decompose into per-pixel terms, unlike cross-entropy). But with the ground truth fixed,
# each step is of one of three kinds **[derived]**:
#
# | step | depends on | as a function of $D$ |
# |---|---|---|
# | $\Delta$, $\nu$ (distance transform) | $G$ only | a constant, computed once per image |
# | $B$ | $G$ only | a constant |
# | $E = \lvert G - D \rvert$ | $D$ | linear ($1 - D$ on $G$, $D$ elsewhere) |
# | $\tilde E_i = E_{\nu(i)}$ | $D$ | linear (a gather) |
# | $E_A = K * \tilde E$ | $D$ | linear (a convolution) |
# | $\min(E, E_A)$ on $G$ | $D$ | piecewise linear: exact, with its subgradient |
# | $P^w$, $R^w$, $F^w_\beta$ | $D$ | smooth ratios |
#
# So $1 - F^w(\sigma(z), G)$ is differentiable wherever $E \ne E_A$, and equals the metric
# exactly: nothing is approximated. The library's `weighted_fmeasure_loss` computes it with a
# hand-written backward pass, and takes the ground-truth terms ($\Delta$, $\nu$, $B$) from the
# batch so that no distance transform runs during training. What could be smoothed is the
# minimum: `smoothing=s` replaces it by $\tfrac12(a + b - \sqrt{(a - b)^2 + s^2})$, at most
# $s/2$ below it; the book trains with the exact minimum.

# %%
logits = torch.logit(pred.clamp(1e-4, 1 - 1e-4))[None, None]
target = gt[None].long()
terms = wfm_gt_terms(gt[None])
exact = float(weighted_fmeasure_loss(logits, target))
cached = float(weighted_fmeasure_loss(logits, target, terms=terms))
metric = 1 - float(weighted_fmeasure(torch.sigmoid(logits)[:, 0], gt[None]))
hard = torch.where(gt, 30.0, -30.0).double()[None, None]  # a saturated, binary prediction
hard_gap = abs(float(weighted_fmeasure_loss(hard, target)) - (1 - float(weighted_fmeasure((hard > 0).double()[:, 0],
                                                                                          gt[None]))))
glue("loss_gap", f"{max(abs(exact - metric), abs(cached - metric)):.1e}")
glue("hard_gap", f"{hard_gap:.1e}")

# %% [markdown]
# On the example, the loss and 1 − the metric of the sigmoid map differ by
# {glue:text}`loss_gap` (with or without the cached terms), and on a saturated binary
# prediction by {glue:text}`hard_gap`: rounding only.
#
# ## What the gradient rewards
#
# Cross-entropy gives every background pixel the same gradient for the same probability. The
# gradient of $F^w$ with respect to $D$ is larger on a false positive the farther it lies from
# the object (through $B$), and on the object it is spread by the blur. Below, the gradient of
# $F^w$ on the example, and on every background pixel against its distance to the object.

# %%
d = pred.clone()[None].requires_grad_(True)
weighted_fmeasure(d, gt[None]).sum().backward()
grad = d.grad[0].numpy()
dist = maps["distance"]
background = ~gt.numpy()

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.1), width_ratios=[1, 1.4])
lim = np.abs(grad).max()
im = axes[0].imshow(grad, cmap="RdBu", vmin=-lim, vmax=lim)
axes[0].set_title("∂Fʷ/∂D (blue: raise D, red: lower it)", fontsize="small")
axes[0].set_xticks([])
axes[0].set_yticks([])
axes[0].grid(False)
fig.colorbar(im, ax=axes[0], shrink=0.8, label="gradient")
axes[1].scatter(dist[background], -grad[background], s=6, alpha=0.5, label="Fʷ: −∂Fʷ/∂D")
axes[1].set_xlabel("distance to the object Δ (pixels)")
axes[1].set_ylabel("push to lower D on a\nbackground pixel (−∂Fʷ/∂D)")
twin = axes[1].twinx()
x = np.linspace(0, dist[background].max(), 100)
twin.plot(x, 2 - np.exp(np.log(0.5) / 5 * x), color="0.4", ls=":", label="importance B (right)")
twin.set_ylabel("importance B")
twin.grid(False)
h1, l1 = axes[1].get_legend_handles_labels()
h2, l2 = twin.get_legend_handles_labels()
axes[1].legend(h1 + h2, l1 + l2, fontsize="x-small", frameon=False, loc="lower right")
plt.show()
near = background & (dist <= 2)
far = background & (dist >= 8)
glue("grad_ratio", f"{(-grad[far]).mean() / (-grad[near]).mean():.2f}")

# %% [markdown]
# On the background the push is proportional to $B$: a false positive 8 pixels or more from
# the object is pushed down {glue:text}`grad_ratio` times as hard, on average, as one within 2
# pixels of it. (The gradient of a ratio also depends on the whole image: every pixel's push
# scales with the current $P^w$ and $R^w$.)
#
# ## The loss along training
#
# Does optimising the loss optimise the metric one reports? For the exact loss the answer is
# yes by construction on the soft map, but two questions remain: how the metric of the map
# thresholded at 0.5 (a hard prediction) follows, and how close a smoothed loss or a
# different F-measure (soft F, FLoss's objective) stays to it. We train the book's U-Net with
# the $F^w$ loss once (the experiments notebook's budget, one seed) and follow, on a fixed
# probe set of validation images, the $F^w$ of the soft maps (1 − the loss), of the maps at
# 0.5, 1 − the smoothed loss ($s$ = {glue:text}`smoothing`) and the soft F-measure.

# %%
setup = wfm.setup("experiments", profile, device=device, chapter=chapter)  # no records from here
probe = setup.splits.val
images = torch.stack([probe[k][0] for k in range(64)])
masks = torch.from_numpy(probe.labels[:64])
SMOOTHING = 0.1
(run,) = setup.run_arm(setup.arm("Fʷ"), seeds=[setup.profile.seeds[0]], log_every=max(1, setup.profile.steps // 40),
                       on_log=wfm.tracking_hook(images, masks, smoothing=SMOOTHING))
history = pd.DataFrame([h for h in run.history if "probe_fw" in h])
glue("smoothing", f"{SMOOTHING:g}")
glue("train_steps", setup.profile.steps)

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
ax.plot(history["step"], 1 - history["loss"], color="0.6", lw=1, label="1 − training loss (batches)")
for key, label in [("probe_fw", "Fʷ of the soft maps (= 1 − loss)"), ("probe_fw_binary", "Fʷ of the maps at 0.5"),
                   ("probe_smooth_fw", "1 − smoothed loss"), ("probe_soft_f", "soft F (β² = 0.3)")]:
    ax.plot(history["step"], history[key], marker="o", ms=2.5, lw=1.2, label=label)
ax.set_xlabel("optimiser step")
ax.set_ylabel("score on 64 validation images")
ax.set_ylim(0, 1)
ax.legend(fontsize="x-small", frameon=False, loc="lower right")
ax.set_title("What the Fʷ loss optimises, and what is reported, along training")
plt.show()
last = history.iloc[-1]
glue("final_soft", f"{last['probe_fw']:.3f}")
glue("final_binary", f"{last['probe_fw_binary']:.3f}")
glue("final_smooth_gap", f"{abs(last['probe_smooth_fw'] - last['probe_fw']):.3f}")
glue("final_soft_f", f"{last['probe_soft_f']:.3f}")

# %% [markdown]
# After {glue:text}`train_steps` steps the probe's $F^w$ is {glue:text}`final_soft` on the
# soft maps and {glue:text}`final_binary` on the maps at 0.5; the smoothed loss stays within
# {glue:text}`final_smooth_gap` of the exact one, and the soft F-measure, which the $F^w$ loss
# does not optimise, reads {glue:text}`final_soft_f`. The metric one reports is the one the
# loss optimises; thresholding changes it, since $F^w$ credits a confident probability and
# penalises a hesitant one continuously.
#
# ## What it costs
#
# A loss one trains with runs at every step, and a metric one reports runs over whole test
# sets, so both are timed here against what a user would otherwise call: the losses, forward
# and backward on float32 logits, against `F.binary_cross_entropy_with_logits` on the same
# logits (one CPU thread; $F^w$ with its ground-truth terms cached, as training serves them,
# and without); the exact metric against PySODMetrics' `WeightedFmeasure` on
# {glue:text}`metric_maps` float32 maps, end to end (the distance transform included) and
# with the terms cached. Each round runs every call once in a rotating order, and each ratio
# is taken within a round; the tables give the median and the quartiles over the rounds. The
# same from a shell: `python -m pixelweight.benchmark --set foreground` and `--set metric`.

# %%
loss_costs, metric_costs = wfm.cost_frames(profile)
markdown(table(wfm.loss_cost_table(loss_costs)))

# %%
markdown(table(wfm.metric_cost_table(metric_costs)))
glue("metric_maps", " x ".join(map(str, wfm.COST_SCALES[profile].metric_shape)))
for key, text in wfm.cost_summary(loss_costs, metric_costs).items():
    glue(key, text)

# %% [markdown]
# With its terms cached, the $F^w$ loss costs {glue:text}`loss_ratio_range` times BCE here:
# the library's target of 1.5 is {glue:text}`loss_met`. Beyond the cross-entropy's work it
# gathers each background pixel's nearest foreground error, blurs it with a 7 x 7 kernel
# forward and again backward (the adjoint), and scatters the gradient back; the library does
# each once, and going further would take a fused kernel. At {glue:text}`cost_threads`
# threads the exact metric is {glue:text}`metric_speedup` times as fast as PySODMetrics end to
# end and {glue:text}`metric_speedup_terms` times with the terms cached (targets 3 and 20:
# {glue:text}`metric_met`), and its values agree with PySODMetrics' to
# {glue:text}`metric_diff`. End to end,
# {glue:text}`terms_share` of our time goes to the ground-truth terms, mostly SciPy's
# distance transform, which PySODMetrics calls too. The times come from the machine that
# built this page; the ratios are what carries over.
#
# The next notebook trains the $F^w$ loss against BCE and the losses of salient-object
# detection; the last one asks whether $F^w$ ranks predictions stably when the ground truth
# is drawn carelessly.
