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
# # The Weighted F-measure: experiments
#
# Kolkin et al. {cite:p}`kolkin2017spatially` train networks on a differentiable version of
# the Weighted F-measure $F^w$ of Margolin et al. {cite:p}`margolin2014evaluate` and report,
# in their abstract, that it "often" gains a lot on $F^w$, matches or beats prior art on the
# traditional metrics, and lets a simpler model do so **[abstract]**. The derivation notebook
# made the exact metric a loss. Here we train the book's U-Net on `SalientDigits` (one large
# bright digit among dimmer distractors; the target is the mask of its strokes) with the same
# data, budget and seeds for every loss:
#
# | arm | loss | what it weights |
# |---|---|---|
# | BCE | binary cross-entropy | every pixel alike |
# | soft F (FLoss) | $1 - F_\beta$ of soft counts, $\beta^2 = 0.3$ {cite:p}`zhao2019floss` | nothing: a ratio of sums |
# | structure (published) | F3Net's loss as its code computes it {cite:p}`wei2020f3net` | the IoU term near edges |
# | structure (intended) | the same with the BCE weighted too | BCE and IoU near edges |
# | hybrid (BASNet) | BCE + (1 − SSIM) + IoU {cite:p}`qin2019basnet` | local structure |
# | Fʷ | $1 - F^w$, the exact metric | errors by their distance to the object |
# | BCE + Fʷ | the two summed | both |
#
# and, for the claim that a simpler model suffices, BCE and $F^w$ on a smaller U-Net (half the
# width, a quarter of the weights). We evaluate every run with the four numbers
# salient-object papers report: $F^w$, the mean absolute error (MAE), the data set's maximum
# F-measure over thresholds ($\beta^2 = 0.3$) and the S-measure {cite:p}`fan2017smeasure`.
# The paper's own experiments (saliency and segmentation benchmarks) are not repeated: we
# test the direction of its claims on a testbed a CPU trains in minutes.
#
# **Needs:** a CPU for the `ci` profile (every arm and seed trained briefly on small images);
# the converged `full` profile (more seeds and steps, the plateau of the validation $F^w$
# recorded) runs outside the book with `make results CHAPTER=01_wfm`.

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
from pixelweight.stats import mean_ci, paired_difference_ci

plotting.set_style()

# %% [markdown]
# ## Data and training
#
# The chapter's typed setup (`pixelweight.chapters.wfm`) holds the data, the models, the
# budgets and the arms. Its training split serves every mask with its $F^w$ terms, computed
# once per image when the split is built (`WithWFMTerms`), and the harness hands them to the
# losses that take them (`AuxiliaryTargetsTask`): no distance transform runs during training.

# %%
setup = wfm.setup("experiments", profile, device=device, results_dir=results_dir, chapter=chapter)
print(setup)
runs = setup.run()  # {arm: [result per seed]}, records in results_dir

# %% tags=["hide-input"]
P = setup.profile
ARMS = [arm.label for arm in setup.arms]
test = setup.splits.test
all_runs = [r for rs in runs.values() for r in rs]
glue("n_seeds", len(P.seeds))
glue("n_runs", len(all_runs))
glue("n_arms", len(ARMS))
glue("steps", P.steps)
glue("batch_size", P.batch_size)
glue("image_size", setup.data.size)
glue("n_train", len(setup.splits.train))
glue("n_test", len(test))
glue("train_minutes", f"{sum(r.wall_time_s for r in all_runs) / 60:.1f}")
glue("device_name", all_runs[0].device)
glue("book_weights", f"{wfm.count_parameters(setup.model):,}")
glue("small_weights", f"{wfm.count_parameters(wfm.SMALL_MODEL):,}")
glue("terms_computed", setup.splits.train.computed)

# %% [markdown]
# {glue:text}`n_runs` runs ({glue:text}`n_arms` arms x {glue:text}`n_seeds` seeds, each
# {glue:text}`steps` Adam steps of batch {glue:text}`batch_size` on {glue:text}`n_train`
# training images of {glue:text}`image_size` x {glue:text}`image_size` pixels) took
# {glue:text}`train_minutes` minutes on {glue:text}`device_name`; the $F^w$ terms were
# computed {glue:text}`terms_computed` times, once per training image. The book's U-Net has
# {glue:text}`book_weights` weights, the smaller one {glue:text}`small_weights`. At this
# budget every network is still early in training: the numbers describe what each loss does
# first, and the converged runs at the end of the page say more.
#
# ## The four metrics (test split)
#
# Mean over seeds with its 95% interval, on the {glue:text}`n_test` test images; MAE is an
# error (lower is better), the other three are scores.

# %% tags=["hide-input"]
frame = wfm.metric_frame(runs)
names = {key: name for key, (name, _) in wfm.METRICS.items()}
overall = pd.DataFrame([
    {"arm": label, **{names[k]: mean_ci(frame.loc[frame["arm"] == label, k]).format(3) for k in wfm.METRICS}}
    for label in ARMS
])
markdown("Mean over seeds [95% CI]:\n\n" + table(overall))
markdown("Paired difference to BCE (same seed), oriented so that positive is better "
         "(the MAE difference is negated), mean [95% CI]:\n\n" + table(wfm.paired_frame(runs, "BCE")))

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 4, figsize=(plotting.PAGE_WIDTH, 3.4), sharey=True)
y = np.arange(len(ARMS))
for ax, (key, (name, sign)) in zip(axes, wfm.METRICS.items()):
    stats = [mean_ci(frame.loc[frame["arm"] == label, key]) for label in ARMS]
    means = np.array([s.mean for s in stats])
    err = np.array([[s.mean - s.low for s in stats], [s.high - s.mean for s in stats]])
    colors = ["tab:red" if "Fʷ" in label else "tab:blue" if label.startswith("BCE") else "0.45" for label in ARMS]
    ax.errorbar(means, y, xerr=err, fmt="none", ecolor="0.6", capsize=2)
    ax.scatter(means, y, c=colors, zorder=3, s=18)
    ax.set_xlabel(f"test {name}\n({'lower' if sign < 0 else 'higher'} is better)")
    ax.tick_params(axis="x", labelsize="small")
axes[0].set_yticks(y, ARMS, fontsize="small")
axes[0].invert_yaxis()
fig.suptitle("Test metrics by loss (mean and 95% interval over seeds)")
plt.show()

# %% [markdown]
# ## Where the false positives are
#
# $F^w$ weighs a false positive by $B = 2 - e^{\alpha\Delta}$, $\alpha = \ln(0.5)/5$: 1 on the
# object's border, 1.5 at 5 pixels, close to 2 far away. If the loss does what its weights
# say, a network trained on it should put less of its false-positive probability far from the
# object. For every run we take the predicted probability of each background pixel of the
# test images and group the pixels by their distance to the object (`wfm.fp_mass_profile`).

# %%
FP_ARMS = ["BCE", "soft F (FLoss)", "hybrid (BASNet)", "Fʷ", "BCE + Fʷ"]
probs = {label: [wfm.predict(r.model, test) for r in runs[label]] for label in ARMS}
profiles = pd.concat([
    wfm.fp_mass_profile(p, test.labels).assign(arm=label, seed=seed)
    for label in ARMS for seed, p in zip(P.seeds, probs[label])
])
far = {label: [wfm.far_fp_share(p, test.labels) for p in probs[label]] for label in ARMS}

# %% tags=["hide-input"]
fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.8), width_ratios=[1.4, 1])
for label in FP_ARMS:
    mean = profiles[profiles["arm"] == label].groupby("high", sort=True)[["distance", "fp_per_pixel"]].mean()
    axes[0].plot(mean["distance"], mean["fp_per_pixel"], marker="o", ms=4, label=label)
axes[0].set_yscale("log")
axes[0].set_xlabel("distance to the object Δ (pixels, bin mean)")
axes[0].set_ylabel("mean predicted probability\nof a background pixel (log)")
twin = axes[0].twinx()
d = np.linspace(0, profiles["distance"].max(), 100)
twin.plot(d, 2 - np.exp(np.log(0.5) / 5 * d), color="0.5", ls=":", lw=1.2, label="Fʷ importance B (right axis)")
twin.set_ylabel("importance B")
twin.set_ylim(0.9, 2.1)
twin.grid(False)
h1, l1 = axes[0].get_legend_handles_labels()
h2, l2 = twin.get_legend_handles_labels()
fig.legend(h1 + h2, l1 + l2, fontsize="x-small", frameon=False, ncol=3, loc="outside lower center")
shares = [mean_ci(far[label]) for label in ARMS]
yy = np.arange(len(ARMS))
axes[1].errorbar([s.mean for s in shares], yy, fmt="o", ms=4,
                 xerr=[[s.mean - s.low for s in shares], [s.high - s.mean for s in shares]], capsize=2)
axes[1].set_yticks(yy, ARMS, fontsize="x-small")
axes[1].invert_yaxis()
axes[1].set_xlabel("share of the background's probability\nmass beyond 5 pixels (mean, 95% CI)")
fig.suptitle("False-positive mass against the distance to the object (test split, mean over seeds)")
plt.show()

far_change = paired_difference_ci(far["Fʷ"], far["BCE"])
glue("far_bce", mean_ci(far["BCE"]).format(3))
glue("far_fw", mean_ci(far["Fʷ"]).format(3))
glue("far_mix", mean_ci(far["BCE + Fʷ"]).format(3))
glue("far_change", far_change.format(3))
glue("far_direction", "less" if far_change.high < 0 else "more" if far_change.low > 0 else "no clearly different share of")

# %% [markdown]
# With BCE a share {glue:text}`far_bce` of the background's probability mass lies more than 5
# pixels from the object; with the $F^w$ loss {glue:text}`far_fw` (paired difference
# {glue:text}`far_change`: {glue:text}`far_direction` far mass), with BCE + $F^w$
# {glue:text}`far_mix` (means over seeds, 95% intervals). The left panel shows the whole
# profile: how much probability each loss leaves on the background at each distance, beside
# the weight $F^w$ gives an error there. The weights say where a false positive costs most;
# they do not say how fast a network learns to remove it, and this budget stops early in
# training. Whether the profile follows the weights once training has converged is a question
# for the `full` runs.
#
# ## What the networks predict
#
# Four test images, their ground truth and the probability maps of three arms (seed
# {glue:text}`example_seed`).

# %% tags=["hide-input"]
show_arms = ["BCE", "hybrid (BASNet)", "Fʷ"]
seed_index = 0
glue("example_seed", P.seeds[seed_index])
picks = [0, 1, 2, 3]
fig, axes = plt.subplots(len(picks), 2 + len(show_arms), figsize=(plotting.PAGE_WIDTH, 1.6 * len(picks)))
for row, i in enumerate(picks):
    axes[row, 0].imshow(test.images[i, 0], cmap="gray", vmin=0, vmax=1)
    axes[row, 1].imshow(test.labels[i], cmap="gray", vmin=0, vmax=1)
    for col, label in enumerate(show_arms, start=2):
        im = axes[row, col].imshow(probs[label][seed_index][i], cmap="magma", vmin=0, vmax=1)
for col, title in enumerate(["image", "ground truth", *show_arms]):
    axes[0, col].set_title(title, fontsize="small")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
fig.colorbar(im, ax=axes[:, -1], shrink=0.6, label="predicted probability")
plt.show()

# %% [markdown]
# ## Committed `full`-profile runs
#
# Converged runs (the `full` profile, `make results CHAPTER=01_wfm`) are committed under
# `results/01_wfm/` with their provenance. A record whose configuration differs from what
# this notebook would run today is flagged.

# %%
setup.show_committed(columns=["seed", "test_wfm", "test_mae", "test_max_f", "test_s_measure", "device", "commit"])

# %% [markdown]
# ## Claims
#
# Each verdict comes from paired differences over seeds ({glue:text}`n_seeds` seeds, 95%
# Student-t intervals): *supported* when the whole interval lies on the claimed side,
# *contradicted* when it lies wholly on the other side, *inconclusive* otherwise. "Matches"
# (claims (b) and (c)) is our reading of the abstract: no worse than the reference by more than
# {glue:text}`tolerance` on each metric (non-inferiority); a composite claim is supported only
# when every part is. Claim (d), on ranking under sloppy ground truth, is tested in the next
# notebook.

# %%
claims = wfm.experiments_claims(setup, runs)  # texts, sources and rules: pixelweight.chapters.wfm
claims.show()
_ = claims.record(results_dir)

# %% tags=["hide-input"]
verdicts = {c.label: c.verdict for c in claims.claims}
glue("tolerance", f"{wfm.TOLERANCE:g}")
for key in ("a", "b", "c", "e"):
    glue(f"verdict_{key}", verdicts[f"({key})"])
glue("effect_a", claims.claims[0].evidence[0].effect.format(3))

# %% [markdown]
# At this budget: (a) {glue:text}`verdict_a` ($\Delta F^w$ = {glue:text}`effect_a`),
# (b) {glue:text}`verdict_b`, (c) {glue:text}`verdict_c`, (e) {glue:text}`verdict_e`. These
# are early-training verdicts with {glue:text}`n_seeds` seeds; the converged runs below are
# the book's answer.
#
# ## Converged claims
#
# The same claims, judged by the same function on the committed converged runs: the same
# data, models and seeds, trained to a plateau of the validation $F^w$ (`full` profile, made
# with `make results CHAPTER=01_wfm`). Their verdicts replace the early ones on the landing
# page and the scorecard.

# %%
setup_full = wfm.setup("experiments", "full", chapter=chapter)
converged = wfm.show_converged(setup_full, results_dir)
if converged["result"].available:
    markdown(
        f"At the converged budget ({converged['seeds']} seeds; {converged['plateau']} runs reached the plateau of "
        f"the validation Fʷ; {converged['hours']} hours of training in all), claim (a) is "
        f"**{converged['verdict (a)']}** (Δ Fʷ {converged['effect (a)']}), (b) **{converged['verdict (b)']}**, "
        f"(c) **{converged['verdict (c)']}** and (e) **{converged['verdict (e)']}**.")
