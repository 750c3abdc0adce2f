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
# # Spectral analysis: what the labels' spectrum says
#
# Chen, Chiu and Wu {cite:p}`chen2020spectral` analyse semantic segmentation in the frequency
# domain. Their abstract states that the cross-entropy and key features of a segmentation
# network are dominated by the **low-frequency components of the labels**, and draws three
# uses from it: an efficient low-resolution output grid, the truncation of high-frequency
# decoder features, and block-wise weak annotation **[abstract]**. No code of the paper is
# public and only its abstract could be read, so this chapter is the first open
# implementation, and every formula below is **the book's own derivation [derived]**, not the
# paper's.
#
# This notebook needs almost no training: it takes the spectrum of the labels of the chapter's
# testbed, derives from it where a coarse output grid and block labels should start to lose
# accuracy, and decomposes the cross-entropy of a trained network by frequency. The next two
# notebooks train networks to test those predictions.
#
# **Needs:** a CPU for the `ci` profile (three short trainings of a small U-Net); the
# converged `full` runs, which judge claim (a), run outside the book with
# `make results CHAPTER=05_spectral`.

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
from pixelweight.chapters import spectral
from pixelweight.spectral import energy_fractions, label_spectrum, max_radial_frequency, through_stride

plotting.set_style()

# %% [markdown]
# ## The testbed
#
# `DigitScenes` at 32 x 32 pixels: one to three handwritten digits of 12 to 24 pixels on a
# black canvas, eleven classes (background and the ten digits, uniformly drawn). The chapter's
# setup (`pixelweight.chapters.spectral`) holds the data, the models and the budgets.

# %%
setup = spectral.setup("stride", profile, device=device, results_dir=results_dir, chapter=chapter)
print(setup)
train_labels = torch.as_tensor(setup.splits.train.labels).long()
test = setup.splits.test
NUM_CLASSES = setup.num_classes
SIZE = setup.data.size

# %% [markdown]
# ## The spectrum of a label map
#
# Write a label map of $H \times W$ pixels as $C$ one-hot channels $y_c(x) \in \{0, 1\}$ and
# take their discrete Fourier transforms $Y_c(k) = \sum_x y_c(x)\, e^{-2\pi i\, k \cdot x / N}$
# (frequencies $k$ in cycles per image). Grouping the frequencies by their radius
# $\rho(k) = \mathrm{round}(|k|)$ gives the label map's **energy profile**
#
# $$
# E(\rho) = \frac{1}{(HW)^2} \sum_c \sum_{k:\,\rho(k) = \rho} |Y_c(k)|^2 ,
# \qquad \sum_\rho E(\rho) = 1
# $$
#
# (Parseval: $\sum_k |Y_c(k)|^2 = HW \sum_x y_c(x)^2 = HW\, n_c$). The DC term
# $E(0) = \sum_c (n_c / HW)^2$ only says how large each class is, so it is left out of the
# **cumulative energy fraction** $F(K) = \sum_{1 \le \rho \le K} E(\rho) / \sum_{\rho \ge 1} E(\rho)$,
# and the **cut-off** $K_\alpha = \min\{K : F(K) \ge \alpha\}$ is the radius that holds a
# fraction $\alpha$ of the labels' structure. Ignored pixels would be zero in every channel
# (the testbed has none). The library computes these in `pixelweight.spectral`
# (`label_energy`, `energy_fractions`, `energy_cutoff`); its tests check them against a disk
# and a stripe pattern whose spectra are known in closed form.

# %%
profile_train = spectral.label_profile(train_labels, NUM_CLASSES)  # E(rho), mean over the training maps
fractions = energy_fractions(profile_train).numpy()
cutoffs = {alpha: spectral.cutoff(profile_train, alpha) for alpha in spectral.ALPHAS}
K = cutoffs[spectral.ALPHA]
K_MAX = max_radial_frequency(SIZE, SIZE)
markdown(table(pd.DataFrame({"energy fraction α": [f"{a:g}" for a in cutoffs],
                             "cut-off K_α (cycles per image)": list(cutoffs.values())})))

# %% tags=["hide-input"]
glue("n_train", len(train_labels))
glue("alpha", f"{spectral.ALPHA:g}")
glue("k_alpha", K)
glue("k_half", cutoffs[0.5])
glue("k_09", cutoffs[0.9])
glue("nyquist_2", SIZE // 4)
glue("k_max", K_MAX)
glue("nyquist", SIZE // 2)
glue("dc_share", f"{float(profile_train[0]):.2f}")

fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH * 0.8, 3.2), layout="constrained")
i = int(np.argmax([len(torch.unique(t)) for t in train_labels[:16]]))  # a map with several digits
axes[0].imshow(plotting.colorize(train_labels[i].numpy(), NUM_CLASSES))
axes[0].set_title("a training label map", fontsize="small")
axes[0].set_xticks([])
axes[0].set_yticks([])
power = label_spectrum(train_labels[i:i + 1], NUM_CLASSES).abs().pow(2).sum(1)[0]
power[0, 0] = float("nan")  # DC, left out
shifted = torch.fft.fftshift(power).numpy()
half = SIZE // 2
im = axes[1].imshow(np.log10(shifted / np.nanmax(shifted)), cmap="magma", vmin=-4, vmax=0,
                    extent=[-half - 0.5, half - 0.5, half - 0.5, -half - 0.5])
axes[1].add_patch(plt.Circle((0, 0), K, fill=False, color="white", ls="--", lw=1))
axes[1].set_title(f"its energy Σ_c |Y_c(k)|² (DC out);\ndashed: the radius K_{spectral.ALPHA:g} = {K}", fontsize="small")
axes[1].set_xlabel("k₂ (cycles per image)")
axes[1].set_ylabel("k₁ (cycles per image)")
axes[1].grid(False)
fig.colorbar(im, ax=axes[1], label="log₁₀ energy / max", shrink=0.85)
plt.show()

fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.2), layout="constrained")
rho = np.arange(K_MAX + 1)
ax.plot(rho[1:], profile_train[1:].numpy(), marker="o", ms=3, label="energy E(ρ), mean over maps (left axis)")
ax.set_yscale("log")
ax.set_xlabel("radial frequency ρ (cycles per image)")
ax.set_ylabel("energy E(ρ) (log scale)")
twin = ax.twinx()
twin.plot(rho, fractions, color="tab:orange", label="cumulative non-DC fraction F(K) (right axis)")
twin.set_ylim(0, 1.02)
twin.set_ylabel("F(K)")
twin.grid(False)
for alpha in (0.5, spectral.ALPHA):
    twin.axvline(cutoffs[alpha], color="0.4", ls=":", lw=1)
    twin.text(cutoffs[alpha] + 0.2, 0.03, f"K$_{{{alpha:g}}}$ = {cutoffs[alpha]}", fontsize="small")
twin.axvline(SIZE // 2, color="tab:red", ls="--", lw=1)
twin.text(SIZE // 2 + 0.2, 0.03, "Nyquist N/2", color="tab:red", fontsize="small")
h1, l1 = ax.get_legend_handles_labels()
h2, l2 = twin.get_legend_handles_labels()
ax.legend(h1 + h2, l1 + l2, fontsize="x-small", loc="center right")
ax.set_title(f"The spectrum of the labels, {len(train_labels)} training maps", fontsize="small")
plt.show()

# %% [markdown]
# Over the {glue:text}`n_train` training maps, half of the non-DC energy lies below
# {glue:text}`k_half` cycles per image, a fraction {glue:text}`alpha` below
# $K_\alpha$ = {glue:text}`k_alpha` and 0.9 below {glue:text}`k_09`; the input grid resolves up to
# {glue:text}`nyquist` cycles per image along each axis (its Nyquist frequency), and radii up to
# {glue:text}`k_max` on the diagonals. The DC term alone is {glue:text}`dc_share` of the energy:
# mostly background.
#
# The chapter's predictions use $\alpha$ = {glue:text}`alpha` **[ours]**: the paper's value could
# not be read, and this one was fixed from the spectrum above, before any network was trained, so
# that the predicted knees fall inside the tested range of grids. With $\alpha = 0.9$ the cut-off
# {glue:text}`k_09` would lie above the Nyquist frequency {glue:text}`nyquist_2` of every grid
# coarser than the input, and the "accuracy holds" half of the predictions would have no case to
# test.
#
# ## What a coarse grid keeps
#
# A network whose logits live on a grid $s$ times coarser than the labels (output stride $s$)
# can represent frequencies up to the coarse grid's Nyquist frequency $N/(2s)$ only; upsampling
# its logits bilinearly adds no new frequency. Its gradient reaches the coarse logits through the
# transpose of the upsampling, a low-pass filter followed by decimation, so only label
# frequencies below $N/(2s)$ drive learning either. The book's prediction **[derived]**: the
# coarsest grid that keeps a fraction $\alpha$ of the labels' structure is the largest stride with
#
# $$ \frac{N}{2s} \ge K_\alpha , $$
#
# and block labels of side $b$ (one class per $b \times b$ block, the weak annotation of the
# third notebook) keep the frequencies up to about $N/(2b)$ in the same way. The **oracle** of a
# grid measures what it can keep at best, without training: pass the labels down to the coarse
# grid (each block's majority class, the most accurate single label for its pixels) and back up,
# and score the result against the dense labels with the mIoU of the evaluation
# (`spectral.oracle_frame`). It is a reference, not a bound: a trained network sees the image, and
# its bilinearly upsampled logits can place a boundary inside a block.

# %%
oracle = spectral.oracle_frame(test.labels, spectral.STRIDES, NUM_CLASSES)
knee = spectral.predicted_knee(SIZE, K, spectral.STRIDES)
markdown(table(oracle.astype({"factor": str}).rename(
    columns={"factor": "stride s (or block side b)", "nyquist": "N/(2s) (cycles per image)",
             "oracle_miou": "oracle mIoU"}), floatfmt=".3f"))

# %% tags=["hide-input"]
glue("knee", knee if knee is not None else "none")
if knee is None:
    glue("knee_sentence", "no grid, not even the input's, resolves the cut-off.")
elif 2 * knee in spectral.STRIDES:
    glue("knee_sentence", f"the grid of stride {knee} resolves {SIZE / (2 * knee):g} cycles per image, at least the "
                          f"cut-off, the grid of stride {2 * knee} only {SIZE / (4 * knee):g}.")
else:
    glue("knee_sentence", f"even the coarsest grid, of stride {knee}, resolves the cut-off.")
glue("oracle_2", f"{oracle.oracle_miou.iloc[1]:.3f}")
glue("oracle_8", f"{oracle.oracle_miou.iloc[3]:.3f}")
glue("n_test", len(test))

fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.2), width_ratios=[1, 1.7], layout="constrained")
axes[0].plot(oracle.nyquist, oracle.oracle_miou, marker="o")
for row in oracle.itertuples():
    axes[0].annotate(f"s = {row.factor}", (row.nyquist, row.oracle_miou), textcoords="offset points",
                     xytext=(4, -10), fontsize="x-small")
axes[0].axvline(K, color="0.4", ls=":", lw=1)
axes[0].text(K + 0.3, 0.1, f"K$_{{{spectral.ALPHA:g}}}$", fontsize="small")
axes[0].set_xscale("log", base=2)
axes[0].set_xlabel("Nyquist frequency N/(2s) of the grid\n(cycles per image, log scale)")
axes[0].set_ylabel("oracle mIoU (test labels)")
axes[0].set_ylim(0, 1.05)
j = int(np.argmax([len(np.unique(t)) for t in test.labels[:16]]))
row = np.concatenate([plotting.colorize(through_stride(torch.as_tensor(test.labels[j:j + 1]).long(), s,
                                                       NUM_CLASSES)[0].numpy(), NUM_CLASSES)
                      for s in spectral.STRIDES], axis=1)
axes[1].imshow(row)
axes[1].set_xticks([SIZE * (i + 0.5) for i in range(len(spectral.STRIDES))],
                   [f"s = {s}" for s in spectral.STRIDES], fontsize="small")
axes[1].set_yticks([])
axes[1].grid(False)
axes[1].set_title("a test label map through each grid (majority down, copy up)", fontsize="small")
fig.suptitle(f"What a coarse output grid can keep ({len(test)} test maps)")
plt.show()

# %% [markdown]
# With $K_\alpha$ = {glue:text}`k_alpha` cycles per image the prediction is $s^*$ =
# {glue:text}`knee`: {glue:text}`knee_sentence` The oracle loses accuracy at every stride: the
# labels passed through a stride-2 grid score an mIoU of {glue:text}`oracle_2` against the dense
# ones, through a stride-8 grid {glue:text}`oracle_8` ({glue:text}`n_test` test maps). The second
# notebook trains networks of every stride to see whether trained networks follow the oracle, the
# prediction, or neither.
#
# ## The cross-entropy by frequency
#
# The mean cross-entropy over the $|V|$ valid pixels is
# $\mathrm{CE} = -\frac{1}{|V|}\sum_x \sum_c y_c(x) \log p_c(x)$. With
# $L_c(k)$ the DFT of $\log p_c$ (zero at ignored pixels), Parseval's theorem for the inner
# product of two real maps turns it into a sum over frequencies **[derived]**:
#
# $$
# \mathrm{CE} = \sum_k T(k), \qquad
# T(k) = -\frac{1}{|V|\, HW} \sum_c \mathrm{Re}\big[\, Y_c(k)\, \overline{L_c(k)} \,\big],
# \qquad
# \mathrm{CE}_K = \sum_{k:\, \rho(k) \le K} T(k).
# $$
#
# A term $T(k)$ is large only where the labels have energy, since $|T(k)| \le |Y_c(k)|\,|L_c(k)|$
# summed over classes: the cross-entropy can only be carried by frequencies the labels contain.
# The terms beyond DC take either sign, so $\mathrm{CE}_K$ is not monotone in $K$ and we report
# its relative error $|\mathrm{CE}_K - \mathrm{CE}| / \mathrm{CE}$, not a share. If the
# cross-entropy is dominated by the labels' low frequencies, $\mathrm{CE}_{K_\alpha}$ is close to
# $\mathrm{CE}$. We train the stride-1 network of the next notebook (a width-8 U-Net, cross-entropy)
# and decompose its loss on the test images (`spectral.ce_spectrum`, in float64).

# %%
runs = setup.run([setup.arm("s = 1")])  # {arm: [result per seed]}, records in results_dir
curves = [spectral.ce_spectrum(r.model, test) for r in runs["s = 1"]]
checks = spectral.ce_spectrum_checks(runs["s = 1"][0].model, test)

# %% tags=["hide-input"]
P = setup.profile
glue("n_seeds", len(P.seeds))
glue("steps", P.steps)
glue("train_minutes", f"{sum(r.wall_time_s for r in runs['s = 1']) / 60:.1f}")
glue("device_name", runs["s = 1"][0].device)
at_k = [c.relative_error.iloc[K] for c in curves]
glue("relerr_k", f"{np.mean(at_k):.3f}")
glue("relerr_dc", f"{np.mean([c.relative_error.iloc[0] for c in curves]):.2f}")
glue("ce_test", f"{np.mean([c.ce_k.iloc[-1] for c in curves]):.3f}")

fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.2), layout="constrained")
for seed, c in zip(P.seeds, curves):
    axes[0].plot(c.K, c.share, marker=".", ms=3, label=f"seed {seed}")
    axes[1].plot(c.K, c.relative_error, marker=".", ms=3, label=f"seed {seed}")
axes[0].axhline(1, color="0.5", lw=0.8)
axes[0].set_ylabel("CE_K / CE")
axes[0].set_title("truncated loss / loss", fontsize="small")
axes[1].set_title("relative error", fontsize="small")
axes[1].set_yscale("log")
axes[1].set_ylabel("|CE_K − CE| / CE (log scale)")
for ax in axes:
    ax.axvline(K, color="0.4", ls=":", lw=1)
    ax.text(K + 0.3, ax.get_ylim()[0] * (1.5 if ax is axes[1] else 1) + (0.05 if ax is axes[0] else 0),
            f"K$_{{{spectral.ALPHA:g}}}$", fontsize="small")
    ax.set_xlabel("K (cycles per image)")
axes[0].legend(fontsize="x-small")
fig.suptitle(f"The test cross-entropy of the stride-1 network, truncated at K ({P.steps} steps)")
plt.show()

# %% [markdown]
# After {glue:text}`steps` steps ({glue:text}`n_seeds` seeds, {glue:text}`train_minutes`
# minutes on {glue:text}`device_name`) the test cross-entropy is {glue:text}`ce_test`. The DC
# term alone misses it by a relative {glue:text}`relerr_dc`; up to $K_\alpha$ the truncated loss
# is within a relative {glue:text}`relerr_k` of it (mean over seeds). The decomposition is exact:
# the checks below confirm the identity to rounding.
#
# **What the measure depends on.** The relative error compares the loss's high-frequency terms
# with the loss itself, and both depend on how confident the predictions are, not only on the
# labels. The same measure on reference predictors of the test labels, no network involved
# (`spectral.reference_errors`):

# %% tags=["hide-input"]
references = spectral.reference_errors(test.labels, K, NUM_CLASSES)
markdown(table(references.rename(columns={"predictor": "predictor of the test labels", "ce": "CE",
                                          "relative_error": f"relative error at K = {K}"}), floatfmt=".3g"))
glue("ref_sharp", f"{references.relative_error.iloc[-1]:.2g}")
glue("ref_soft", f"{references.relative_error.iloc[1]:.2g}")

# %% [markdown]
# Constant logits have only a DC term (error 0); the labels themselves used as logits, a perfect
# predictor, give {glue:text}`ref_soft` at confidence 1 and {glue:text}`ref_sharp` at confidence
# 6: the sharper and more confident the predictions, the smaller the loss and the larger the share
# its high frequencies take. A network early in training is unconfident and passes easily; a
# converged one is the real test, which is why the verdict that counts is the converged one.
#
# ## Claims
#
# Claim (a) reads "dominated" as: the truncation at the labels' cut-off $K_\alpha$ recovers the
# cross-entropy to within a relative {glue:text}`ce_bound` **[ours]**. It is judged on a fixed
# probe batch of validation images at the end of every run of the stride-1 network (the
# training logs it, `spectral.SpectralProbe`), as the mean over seeds of the relative error minus
# the bound, with its 95% Student-t interval: supported when the whole interval lies below 0.

# %%
claims = spectral.analysis_claims(setup, runs, checks=checks)  # texts, sources, rules: pixelweight.chapters.spectral
claims.show()
_ = claims.record(results_dir)

# %% tags=["hide-input"]
glue("ce_bound", f"{spectral.CE_ERROR_BOUND:g}")
glue("verdict_a", claims.claims[0].verdict)
glue("effect_a", claims.claims[0].effect_text())

# %% [markdown]
# At this budget claim (a) is **{glue:text}`verdict_a`** (relative error minus the bound:
# {glue:text}`effect_a`), from {glue:text}`n_seeds` seeds early in training; the converged runs
# below are the book's answer.
#
# ## Converged claims
#
# The same claim, judged by the same function on the committed converged runs of the stride-1
# network (`full` profile: the same data and model, trained to a plateau of the validation mIoU,
# made with `make results CHAPTER=05_spectral`). Its verdict replaces the early one on the
# landing page and the scorecard.

# %% tags=["hide-input"]
setup_full = spectral.setup("stride", "full", chapter=chapter)
converged = spectral.show_analysis_converged(setup_full, results_dir)
if converged["result"].available:
    markdown(
        f"At the converged budget ({converged['seeds']} seeds; {converged['plateau']} runs reached the plateau of "
        f"the validation mIoU; {converged['hours']} hours of training), claim (a) is "
        f"**{converged['verdict (a)']}** (relative error minus the bound: {converged['effect (a)']}).")
