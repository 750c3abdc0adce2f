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
# # Loss max-pooling: the closed form
#
# Cross-entropy averages the pixel losses with the same weight $1/n$. Loss max-pooling
# (LMP) {cite:p}`rotabulo2017lmp` lets the loss choose the weights: among all weightings
# $w$ of a set $\mathcal W$ that contains the uniform one, it takes the **worst case**,
#
# $$
# \mathrm{LMP}(\ell) = \max_{w \in \mathcal W} \sum_{i=1}^{n} w_i \ell_i, \qquad
# \mathcal W = \{ w \ge 0 : \|w\|_p \le \gamma,\ \|w\|_\infty \le \tau \},
# $$
#
# with $\gamma = n^{-1/q}$, $\tau = \gamma\, m^{-1/p}$, $1/p + 1/q = 1$ and $m = \rho n$,
# where the *ratio* $\rho$ says how many pixels must keep some weight. The uniform
# weighting $1/n$ lies on the boundary of $\mathcal W$, so $\mathrm{LMP} \ge$ the mean loss:
# easy pixels lend their weight to hard ones. These definitions are those of the public
# implementation [code: bes-dev/mpl.pytorch]; the paper's body was not available to us.
#
# This notebook derives the maximiser in closed form (what
# `pixelweight.losses.lmp_weights` computes), checks it against a generic solver, shows how
# $p$ and $\rho$ shape the weights and where on an image they go, and measures what it costs.
#
# **Needs:** a CPU for the `ci` profile (one short training of chapter 0's U-Net, and a
# timing of the loss on 8 x 19 x 512 x 1024 logits); the `full` profile is meant for one GPU.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import math

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import torch
from matplotlib.colors import LogNorm

from pixelweight import plotting
from pixelweight.book import glue, markdown, table
from pixelweight.chapters import lmp
from pixelweight.losses import cross_entropy, lmp_bounds, lmp_weights, lmp_weights_reference
from pixelweight.metrics import boundary_mask
from pixelweight.train import resolve_device

plotting.set_style()
# The chapter's typed setup (pixelweight.chapters.lmp): budget, data, model of the CE run whose losses we weight
setup = lmp.setup("maps", profile, device=device, results_dir=results_dir, chapter=chapter)
P = setup.profile
CLASS_NAMES = setup.class_names
NUM_CLASSES = setup.num_classes
print(setup)

# %% [markdown]
# ## The maximiser in closed form
#
# The problem is linear in $w$ over a convex set, so an optimum satisfies the KKT
# conditions. With multipliers $\lambda \ge 0$ for $\|w\|_p^p \le \gamma^p$, $\mu_i \ge 0$
# for $w_i \le \tau$ and $\nu_i \ge 0$ for $w_i \ge 0$, stationarity of the Lagrangian reads
# $\ell_i = \lambda p\, w_i^{p-1} + \mu_i - \nu_i$. A pixel below the cap ($\mu_i = 0$) with
# $\ell_i > 0$ has $w_i > 0$ and $w_i = (\ell_i / \lambda p)^{1/(p-1)}$, which grows like
# $\ell_i^{q-1}$ since $1/(p-1) = q - 1$. Writing the cap as the threshold $\alpha$ where this
# curve reaches $\tau$ gives the weights, and the spent $p$-norm budget
# ($\|w\|_p^p = \gamma^p$, with $p(q-1) = q$ and $\tau^p = \gamma^p/m$) gives $\alpha$:
#
# $$
# w_i = \tau \min\!\Big(1, \big(\ell_i / \alpha\big)^{q-1}\Big), \qquad
# \sum_{i=1}^n \min\!\Big(1, \big(\ell_i/\alpha\big)^{q}\Big) = m .
# $$
#
# The left sum decreases in $\alpha$, so $\alpha$ is unique. Sort the losses,
# $\ell_{(1)} \ge \dots \ge \ell_{(n)}$, and let $S_k = \sum_{j>k} \ell_{(j)}^q$. If exactly the
# $k$ largest are capped, $k + S_k/\alpha^q = m$, i.e. $\alpha^q = S_k/(m-k)$, and this is
# consistent when $\ell_{(k+1)} \le \alpha \le \ell_{(k)}$. The right $k$ is the smallest
# with $\ell_{(k+1)}^q\,(m-k) \le S_k$: once true the condition stays true
# ($S_{k+1} = S_k - \ell_{(k+1)}^q \ge \ell_{(k+1)}^q (m-k-1) \ge \ell_{(k+2)}^q (m-k-1)$), and it
# always holds at $k = \lceil m \rceil - 1$. One sort and one cumulative sum give every
# $S_k$: $O(n \log n)$ work, all of it on the tensor's device. This derivation is the
# book's [derived]; the next cell checks it numerically.
#
# **Limits** [derived]. $\rho = 1$ ($m = n$): $\tau = 1/n$, the weights are uniform and LMP is
# the mean (plain CE). $p \to \infty$: $q \to 1$, $\gamma, \tau \to 1/n$, again the mean.
# $p \to 1$: $q \to \infty$, the curve $\ell^{q-1}$ becomes a step and LMP is the mean of the
# $m$ largest losses — top-$k$ hard-pixel mining (the library computes it exactly for $p = 1$).
# $m \le 1$: $\tau \ge \gamma$, the $\infty$-norm bound is inactive, $w \propto \ell^{q-1}$ and LMP is
# the power mean $(\frac1n \sum_i \ell_i^q)^{1/q}$.
#
# **Gradient** [derived]. By Danskin's theorem the gradient of a maximum over a fixed set is
# the gradient at the maximiser, $\nabla_\ell \mathrm{LMP} = w^\star$ when $w^\star$ is unique
# (it is for $1 < p < \infty$ and distinct losses). So the weights are computed without
# gradient and held constant in the backward pass, and that *is* the exact gradient —
# the library's tests check it with finite differences (`torch.autograd.gradcheck`).

# %%
rng = np.random.default_rng(0)
rows = []
for trial in range(40):
    n = int(rng.integers(2, 21))
    p = float(rng.choice([1.1, 1.3, 1.7, 2.0, 3.0, 10.0]))
    ratio = float(rng.choice([0.05, 0.1, 0.3, 0.5, 1.0]))
    losses = rng.exponential(size=n)
    losses[rng.random(n) < 0.2] = 0.0  # some pixels already have zero loss
    closed = lmp_weights(torch.tensor(losses), p, ratio).numpy()
    solver = lmp_weights_reference(losses, p, ratio)  # SciPy's SLSQP on the same problem
    positive = losses > 0  # a zero loss's weight does not change the objective
    gamma, tau, m = lmp_bounds(n, p, ratio)
    rows.append({
        "max |w - w_solver|": float(np.abs(closed - solver)[positive].max()) if positive.any() else 0.0,
        "objective gap": float(closed @ losses - solver @ losses),
        "p-norm / gamma": float((closed ** p).sum() ** (1 / p) / gamma),
        "max w / tau": float(closed.max() / tau),
    })
check = pd.DataFrame(rows)
glue("n_problems", len(check))
glue("max_weight_error", f"{check['max |w - w_solver|'].max():.1e}")
glue("min_objective_gap", f"{check['objective gap'].min():.1e}")
glue("max_norm_ratio", f"{check['p-norm / gamma'].max():.12f}")
glue("max_cap_ratio", f"{check['max w / tau'].max():.12f}")
assert check["max |w - w_solver|"].max() < 1e-6

# %% [markdown]
# On {glue:text}`n_problems` random problems ($n \le 20$, $p$ from 1.1 to 10, $\rho$ from
# 0.05 to 1, exponential losses of which a fifth are set to zero), the closed form and
# SciPy's general-purpose SLSQP solver agree to {glue:text}`max_weight_error` on every
# weight of a positive loss, the closed form's objective is never below the solver's by more than
# {glue:text}`min_objective_gap`, and its weights respect both bounds
# ($\max \|w\|_p/\gamma$ = {glue:text}`max_norm_ratio`, $\max_i w_i/\tau$ =
# {glue:text}`max_cap_ratio`).
#
# ## How $p$ and $\rho$ shape the weights
#
# To see the weights on realistic losses we train the book's U-Net with plain CE for a
# short while (a model that still makes mistakes is what LMP meets during training) and
# take the per-pixel CE of a batch of test images. The plots show the relative weight
# $n w_i$ (1 = the uniform weighting of CE) against the pixel's rank when the losses are
# sorted from the largest down.

# %%
splits = setup.splits
run = setup.run()["CE"][0]
model = run.model.eval().cpu()
batch = 64
images = torch.stack([splits.test[i][0] for i in range(batch)])
labels = torch.stack([splits.test[i][1] for i in range(batch)])
with torch.no_grad():
    logits = model(images)
ce = cross_entropy(logits, labels, reduction="none")  # (64, H, W) pixel losses
pred = logits.argmax(1)
n_pixels = ce.numel()
glue("maps_steps", P.steps)
glue("maps_miou", f"{run.metrics['test_miou']:.2f}")
glue("maps_batch", batch)
glue("maps_pixels", f"{n_pixels:,}")
glue("maps_errors", f"{100 * (pred != labels).float().mean().item():.1f}")

# %% tags=["hide-input"]
sorted_ce = ce.flatten().sort(descending=True).values
rank = np.arange(1, n_pixels + 1) / n_pixels
fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.2), sharey=True)
for p in (1.0, 1.1, 1.3, 1.7, 3.0, math.inf):
    w = n_pixels * lmp_weights(sorted_ce, p, 0.3)
    label = "p = 1 (top-k)" if p == 1 else ("p = ∞ (CE)" if math.isinf(p) else f"p = {p:g}")
    axes[0].plot(rank, w.numpy(), label=label)
axes[0].set_title("ratio ρ = 0.3, varying p")
for ratio in (0.03, 0.1, 0.3, 0.6, 1.0):
    w = n_pixels * lmp_weights(sorted_ce, 1.7, ratio)
    axes[1].plot(rank, w.numpy(), label=f"ρ = {ratio:g}" + (" (CE)" if ratio == 1 else ""))
axes[1].set_title("p = 1.7, varying ratio ρ")
for ax in axes:
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_ylim(1e-3, 60)
    ax.set_xlabel("rank of the pixel's loss / n (log scale)")
    ax.legend(frameon=False, fontsize="small", loc="lower left")
axes[0].set_ylabel("relative weight n·w (log scale)")
fig.suptitle(f"LMP weights of {n_pixels:,} test pixels, sorted by their CE (largest first)")
plt.show()

# %%
w_def = lmp_weights(ce, 1.7, 0.3)
gamma, tau, m = lmp_bounds(n_pixels, 1.7, 0.3)
capped = int((w_def >= tau * (1 - 1e-6)).sum())
top10 = sorted_ce[: n_pixels // 10]
glue("capped_pct", f"{100 * capped / n_pixels:.2f}")
glue("cap_weight", f"{n_pixels * tau:.2f}")
glue("top10_weight", f"{100 * (n_pixels * lmp_weights(sorted_ce, 1.7, 0.3))[: n_pixels // 10].sum().item() / n_pixels:.0f}")
glue("top10_loss", f"{100 * top10.sum().item() / sorted_ce.sum().item():.0f}")
glue("lmp_over_ce", f"{(w_def * ce).sum().item() / ce.mean().item():.1f}")

# %% [markdown]
# The model of {glue:text}`maps_steps` steps reaches a test mIoU of {glue:text}`maps_miou`
# and gets {glue:text}`maps_errors`% of the {glue:text}`maps_pixels` pixels of this batch
# wrong. The losses are heavy-tailed: the 10% largest carry {glue:text}`top10_loss`% of the
# CE. With the public defaults ($p = 1.7$, $\rho = 0.3$), {glue:text}`capped_pct`% of the
# pixels are capped at $n\tau$ = {glue:text}`cap_weight` times the uniform weight, the 10%
# hardest pixels receive {glue:text}`top10_weight`% of the total weight, and the pooled loss
# is {glue:text}`lmp_over_ce` times the mean CE.
#
# Left: as $p$ falls towards 1 the weight curve steepens into a step, top-$k$ mining of the
# $m = \rho n$ hardest pixels; as $p$ grows it flattens into CE's uniform weighting. Right:
# the ratio sets the cap $n\tau = (n/m)^{1/p}$ and how far down the ranking the weight
# reaches; $\rho = 1$ is CE whatever $p$.
#
# ## Where on an image the weight goes

# %% tags=["hide-input"]
show = [0, 1, 2, 3]
omega = n_pixels * w_def  # relative weights, 1 = CE
fig, axes = plt.subplots(5, len(show), figsize=(plotting.PAGE_WIDTH, 8.6))
for col, i in enumerate(show):
    axes[0, col].imshow(images[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[1, col].imshow(plotting.colorize(labels[i].numpy(), NUM_CLASSES))
    axes[2, col].imshow(plotting.colorize(pred[i].numpy(), NUM_CLASSES))
    im_ce = axes[3, col].imshow(ce[i].clamp_min(1e-4).numpy(), cmap="magma", norm=LogNorm(1e-4, 10))
    im_w = axes[4, col].imshow(omega[i].clamp_min(1e-3).numpy(), cmap="viridis", norm=LogNorm(1e-3, 10))
for ax in axes.ravel():
    ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
for ax, title in zip(axes[:, 0], ["image", "ground truth", "CE prediction", "pixel CE", "LMP weight n·w"]):
    ax.set_ylabel(title)
fig.colorbar(im_ce, ax=axes[3, :], shrink=0.9, label="CE (nats, log)")
fig.colorbar(im_w, ax=axes[4, :], shrink=0.9, label="n·w (log); 1 = CE")
plotting.class_legend(fig, CLASS_NAMES, ncol=6)
fig.suptitle("Test images: where the CE is large and where LMP (p = 1.7, ρ = 0.3) puts its weight")
plt.show()

# %%
boundary = boundary_mask(labels)
freq = splits.train.class_pixel_frequencies()
digit_order = np.argsort(freq[1:])[::-1] + 1  # digit classes from the most to the least frequent
rare = [CLASS_NAMES[c] for c in digit_order[5:]]
shares = {}
for name, (p, ratio) in {"LMP p = 1.7, ρ = 0.3": (1.7, 0.3), "LMP p = 1.1, ρ = 0.1": (1.1, 0.1),
                         "top-k p = 1, ρ = 0.3": (1.0, 0.3)}.items():
    shares[name] = lmp.weight_share_frame(lmp_weights(ce, p, ratio), labels, CLASS_NAMES, boundary).set_index("group")
base = shares["LMP p = 1.7, ρ = 0.3"]
glue("boundary_pixels", f"{100 * base.loc['boundary pixels', 'pixel_share']:.0f}")
glue("boundary_weight", f"{100 * base.loc['boundary pixels', 'weight_share']:.0f}")
glue("rare_names", ", ".join(rare))
glue("rare_pixels", f"{100 * base.loc[rare, 'pixel_share'].sum():.1f}")
glue("rare_weight", f"{100 * base.loc[rare, 'weight_share'].sum():.0f}")
glue("bg_pixels", f"{100 * base.loc['background', 'pixel_share']:.0f}")
glue("bg_weight", f"{100 * base.loc['background', 'weight_share']:.0f}")

groups = CLASS_NAMES + ["boundary pixels", "interior pixels"]
tick_names = ["bg"] + CLASS_NAMES[1:] + ["boundary", "interior"]
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.4))
x = np.arange(len(groups))
for k, (name, frame) in enumerate(shares.items()):
    ax.bar(x + (k - 1) * 0.27, frame.loc[groups, "enrichment"], width=0.27, label=name)
ax.axhline(1.0, color="0.3", lw=1, ls="--", label="CE (uniform weight)")
ax.set_xticks(x, tick_names)
ax.set_yscale("log")
ax.set_ylim(0.03, 30)
ax.set_xlabel("class (bg = background; digit k drawn with probability ∝ 1/(k+1)) and pixel group")
ax.set_ylabel("weight share / pixel share (log)")
ax.set_title(f"Where the weight goes, over {batch} test images")
ax.legend(frameon=False, fontsize="small", ncol=2, loc="upper left")
plt.show()
markdown("Share of pixels and of LMP weight (p = 1.7, ρ = 0.3), over the batch:\n\n"
         + table((100 * base[["pixel_share", "weight_share"]]).rename(
             columns={"pixel_share": "pixels (%)", "weight_share": "weight (%)"}).loc[groups].reset_index(),
             floatfmt=".1f"))

# %% [markdown]
# The weight follows the errors. Boundary pixels (within one pixel of a label change) are
# {glue:text}`boundary_pixels`% of the pixels and receive {glue:text}`boundary_weight`% of
# the LMP weight; the five rarest digits ({glue:text}`rare_names`) own
# {glue:text}`rare_pixels`% of the pixels and receive {glue:text}`rare_weight`% of it;
# background, {glue:text}`bg_pixels`% of the pixels, keeps {glue:text}`bg_weight`%. LMP
# knows nothing of classes: rare classes gain weight only because this model gets them
# wrong, which is the mechanism behind the paper's claim that LMP counters class imbalance
# [abstract]. Whether that helps training is the question of the next two notebooks.
#
# ## What it costs
#
# The weights need one sort of the $n$ pixel losses and a few passes over them. We time
# plain CE, LMP (over the batch and per image) and top-$k$ mining, forward and backward, on
# random logits of a Cityscapes-sized batch, 8 x 19 x 512 x 1024, and the weights alone
# against the CE map they are computed from. The losses take turns within each round and
# the ratio to CE is taken within the round, which cancels much of the noise of a shared
# machine; the table gives the quartiles of that ratio over the rounds, the spread to expect
# on a rerun. On a CPU the allocator is first told to keep freed memory
# (`steady_memory=True`, as a GPU's caching allocator does), so that the times measure the
# losses and not the kernel zeroing fresh pages for every 300 MiB tensor.

# %%
bench_device = resolve_device(device)
BENCH_ROUNDS = 7
bench = lmp.lmp_benchmark((8, 19, 512, 1024), device=str(bench_device), repeats=BENCH_ROUNDS, warmup=1,
                          steady_memory=True)
markdown(f"Median of {BENCH_ROUNDS} rounds on {bench_device} ({bench['threads'][0]} CPU threads), "
         "times in ms, ratio to CE within each pass and its quartiles over the rounds:\n\n"
         + table(bench[["pass", "what", "median_ms", "ratio", "ratio_q25", "ratio_q75"]]
                 .rename(columns={"ratio_q25": "ratio 25%", "ratio_q75": "ratio 75%"}), floatfmt=".2f"))
lmp_ratio = float(bench.loc[1, "ratio"])
glue("bench_ratio_iqr", f"{float(bench.loc[1, 'ratio_q25']):.2f} to {float(bench.loc[1, 'ratio_q75']):.2f}")
glue("bench_device", str(bench_device))
glue("bench_ratio", f"{lmp_ratio:.2f}")
glue("bench_ratio_image", f"{float(bench.loc[2, 'ratio']):.2f}")
glue("bench_weights_ratio", f"{float(bench.loc[5, 'ratio']):.2f}")
glue("bench_target", "meets" if lmp_ratio <= 1.3 else "misses")

# %% [markdown]
# On {glue:text}`bench_device`, LMP's forward and backward pass takes
# {glue:text}`bench_ratio` times as long as CE's (quartiles over the rounds
# {glue:text}`bench_ratio_iqr`; {glue:text}`bench_ratio_image` per image), so its median
# {glue:text}`bench_target` the book's target of at most 1.3. The weights alone
# cost {glue:text}`bench_weights_ratio` times the forward CE map on the same logits. The
# public implementation copies the losses to the host and sorts them there; here nothing
# leaves the device, and on the CPU the sort runs as a radix sort over the bit patterns of
# the (non-negative) losses.
