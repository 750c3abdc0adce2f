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
# # Recall loss: experiments on a long tail
#
# The derivation notebook showed what recall loss {cite:p}`tian2022recall` does on paper.
# Here we train the book's U-Net on `DigitScenes` with a Zipf class law (exponent
# $s = 1$: the digit 0 is ten times as frequent as the digit 9, and background owns most
# pixels) with six losses and the same model, budget, data and seeds:
#
# | loss | class weights |
# |---|---|
# | CE | none |
# | inverse-frequency CE | $w_c \propto 1 / N_c$ from the training split |
# | median-frequency CE | $w_c = \operatorname{median}(f) / f_c$ from the training split |
# | focal ($\gamma = 1$) | per pixel, $(1 - p_{i,y_i})^{\gamma}$ |
# | recall (batch) | $w_c = 1 - \mathrm{recall}_c$ of each batch |
# | recall (moving average) | the same, smoothed across batches ($\alpha = 0.5$) |
#
# The paper's experiment is a DeepLab-ResNet18 on Synthia-Sequence Summer **[abstract]**,
# trained for 100k iterations of batch 6 **[code]**; its abstract reports about 9% relative gain in mean accuracy over
# CE at competitive mIoU **[abstract]**. We test the direction of its claims on a testbed a
# CPU can train in minutes, not its numbers.
#
# **Needs:** a CPU for the `ci` profile (6 losses x 3 seeds of a short training on small
# scenes); the converged `full` profile (the same scenes and model, 5 seeds, 3,000 steps, the
# plateau of each run recorded) runs outside the book with `make results CHAPTER=02_recall`.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from matplotlib.ticker import FuncFormatter

from pixelweight import plotting
from pixelweight.book import glue, markdown, table
from pixelweight.chapters import per_class_frame, recall
from pixelweight.chapters.recall import frequency_exponent, train_class_weights, weight_history_frame
from pixelweight.stats import mean_ci, paired_difference_ci

plotting.set_style()
# The chapter's typed setup (pixelweight.chapters.recall): at `ci` the profile shrunk to the
# book's CPU build (32 x 32 scenes, fewer steps and samples), at `full` trained to a plateau; the
# six losses are its arms, and the harness logs every step in `ci` (weight trajectory from step 1).
setup = recall.setup("experiments", profile, device=device, results_dir=results_dir, chapter=chapter)
P = setup.profile
LOSSES = [arm.label for arm in setup.arms]
CLASS_NAMES = setup.class_names
NUM_CLASSES = setup.num_classes
print(setup)

# %% [markdown]
# ## Data and training
#
# Every loss sees the same images in the same order for a given seed, so every comparison
# below is paired by seed. The class weights of the weighted baselines come from the
# **training** split only (the paper's public baseline took them from validation data
# **[code]**).

# %%
splits = setup.splits
freq = splits.train.class_pixel_frequencies()
inverse = train_class_weights(splits, "inverse")  # the inverse-frequency arm's weights

runs = setup.run()  # {loss: [result per seed]}, records in results_dir; the stage logs the weights
all_runs = [r for rs in runs.values() for r in rs]
glue("n_seeds", len(P.seeds))
glue("num_classes", NUM_CLASSES)
glue("n_runs", len(all_runs))
glue("steps", P.steps)
glue("image_size", setup.data.size)
glue("train_minutes", f"{sum(r.wall_time_s for r in all_runs) / 60:.1f}")
glue("device_name", all_runs[0].device)

# %% [markdown]
# {glue:text}`n_runs` runs ({glue:text}`n_seeds` seeds per loss, {glue:text}`steps` Adam
# steps each on {glue:text}`image_size` x {glue:text}`image_size` scenes) took
# {glue:text}`train_minutes` minutes on {glue:text}`device_name`. This is a small budget:
# every network here is still far from converged, and the results say what each loss does
# early in training on a long tail.
#
# ## Overall metrics (test split)
#
# Mean accuracy is the mean of the per-class recalls (the paper's headline metric), mean
# precision the mean of the per-class precisions; both average the
# {glue:text}`num_classes` classes equally.

# %% tags=["hide-input"]
KEYS = {"test_miou": "mIoU", "test_mean_accuracy": "mean accuracy", "test_mean_precision": "mean precision",
        "test_pixel_accuracy": "pixel accuracy"}


def per_seed(label, key):
    return [r.metrics[key] for r in runs[label]]


overall = pd.DataFrame([
    {"loss": label, **{name: mean_ci(per_seed(label, key)).format(3) for key, name in KEYS.items()}}
    for label in LOSSES
])
markdown("Mean over seeds [95% CI]:\n\n" + table(overall))

diffs = pd.DataFrame([
    {"loss": label, **{f"Δ {name}": paired_difference_ci(per_seed(label, key), per_seed("CE", key)).format(3)
                       for key, name in KEYS.items() if key != "test_pixel_accuracy"}}
    for label in LOSSES if label != "CE"
])
markdown("Paired difference to CE (same seed), mean [95% CI]:\n\n" + table(diffs))

# %% [markdown]
# ## Which classes gain, and at what price?
#
# Per-class recall and precision on the test split against the class's share of the
# training pixels (mean over seeds). A re-weighting that helps rare classes moves their
# recall up (left panel); if it does so by predicting them too often, their precision
# falls (right panel).

# %% tags=["hide-input"]
per_class = per_class_frame(runs, CLASS_NAMES, split="test", frequencies=freq)
by_class = per_class.groupby(["run", "class"], sort=False).agg(
    pixel_frequency=("pixel_frequency", "first"), recall=("recall", "mean"), precision=("precision", "mean"),
).reset_index()
order = by_class[by_class["run"] == "CE"].sort_values("pixel_frequency", ascending=False)
positions = {name: i for i, name in enumerate(order["class"])}
tick_labels = [f"{'bg' if name == 'background' else name}\n{100 * f:.1f}%"
               for name, f in zip(order["class"], order["pixel_frequency"])]
markers = dict(zip(LOSSES, ["o", "s", "D", "^", "v", "P"]))
offsets = dict(zip(LOSSES, np.linspace(-0.3, 0.3, len(LOSSES))))
fig, axes = plt.subplots(2, 1, figsize=(plotting.PAGE_WIDTH, 5.2), sharex=True)
for label in LOSSES:
    rows = by_class[by_class["run"] == label]
    x = rows["class"].map(positions).to_numpy() + offsets[label]
    for ax, metric in zip(axes, ["recall", "precision"]):
        ax.plot(x, rows[metric], marker=markers[label], ls="none", ms=5, label=label)
for ax, metric in zip(axes, ["recall", "precision"]):
    ax.set_ylabel(f"test {metric}\n(mean over seeds)")
    ax.set_ylim(-0.05, 1.05)
    for boundary in np.arange(len(positions) - 1) + 0.5:
        ax.axvline(boundary, color="0.9", lw=0.8)
    ax.grid(axis="x", visible=False)
axes[1].set_xticks(range(len(positions)), tick_labels, fontsize="small")
axes[1].set_xlabel("class and its share of the training pixels, most frequent first")
axes[0].set_title("Per-class recall and precision on the test split")
handles, names = axes[0].get_legend_handles_labels()
fig.legend(handles, names, ncol=3, fontsize="small", frameon=False, loc="outside lower center")
plt.show()

rare = [str(k) for k in range(5, 10)]  # the five rarest digits under the Zipf law (s > 0)


rare_index = [CLASS_NAMES.index(name) for name in rare]


def rare_recall(label):
    rows = per_class[(per_class["run"] == label) & per_class["class"].isin(rare)]
    return rows.groupby("seed_index")["recall"].mean().to_numpy()


def rare_false_positives(label):
    """Pixels predicted as one of the rare digits that are something else, per test image.
    (Their precision is undefined for a run that never predicts them; this count is not.)"""
    out = []
    for r in runs[label]:
        cm = np.asarray(r.metrics["test_confusion_matrix"])  # rows: ground truth
        out.append((cm[:, rare_index].sum() - cm[rare_index, rare_index].sum()) / len(splits.test))
    return out


rare_recall_gain = paired_difference_ci(rare_recall("recall (batch)"), rare_recall("CE"))
rare_fp = {label: mean_ci(rare_false_positives(label)) for label in ("CE", "inverse-frequency CE", "recall (batch)")}
glue("rare_classes", ", ".join(rare))
glue("rare_recall_gain", rare_recall_gain.format(2))
glue("rare_fp_ce", rare_fp["CE"].format(1))
glue("rare_fp_inverse", rare_fp["inverse-frequency CE"].format(1))
glue("rare_fp_recall", rare_fp["recall (batch)"].format(1))
bg = by_class[by_class["class"] == "background"].set_index("run")["recall"]
glue("bg_recall_ce", f"{bg['CE']:.3f}")
for key, label in [("inverse", "inverse-frequency CE"), ("recall", "recall (batch)")]:
    glue(f"bg_recall_{key}", f"{bg[label]:.3f}")
    glue(f"bg_change_{key}", "falls" if bg[label] < bg["CE"] else "rises")

# %% [markdown]
# On the five rarest digits ({glue:text}`rare_classes`), recall loss changes the mean
# recall by {glue:text}`rare_recall_gain` over CE (paired, 95% CI). The false positives
# of these digits (pixels predicted as one of them that are something else) number
# {glue:text}`rare_fp_ce` per test image with CE, {glue:text}`rare_fp_inverse` with
# inverse-frequency CE and {glue:text}`rare_fp_recall` with recall loss. The background's
# recall is {glue:text}`bg_recall_ce` with CE; it {glue:text}`bg_change_inverse` to
# {glue:text}`bg_recall_inverse` with inverse-frequency CE and {glue:text}`bg_change_recall`
# to {glue:text}`bg_recall_recall` with recall loss. Every background pixel labelled as a
# digit is a false positive of that digit: a falling background recall and a falling digit
# precision are two views of the same errors.
#
# ## How the recall-loss weights move during training
#
# The training harness records `loss.weights` at every step (`log_loss_weights`). Left: the
# weight of each class for the moving-average variant, mean over seeds. Right: the
# frequency exponent $\beta$ of the weight vector, the slope of
# $\log w_c = a - \beta \log f_c$ across classes (derivation notebook): $\beta = 0$ is CE,
# $\beta = 1$ is inverse frequency (the weights of the inverse- and median-frequency
# baselines have $\beta = 1$ exactly).

# %% tags=["hide-input"]
weights = weight_history_frame({k: runs[k] for k in ("recall (batch)", "recall (moving average)")}, CLASS_NAMES)
# β of every logged weight vector, and its summary as claim (d) reads it (pixelweight.chapters.recall)
beta = recall.beta_trajectory(setup, runs)
beta_ma = recall.beta_trajectory(setup, runs, "recall (moving average)")
betas = beta.frame
beta_inverse = frequency_exponent(inverse.numpy(), freq)

fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.3))
ma = weights[weights["run"] == "recall (moving average)"].groupby(["class", "step"], sort=False)["weight"].mean()
colors = plotting.label_colors(NUM_CLASSES)
for c, name in enumerate(CLASS_NAMES):
    series = ma.loc[name]
    axes[0].plot(series.index, series.to_numpy(), color=colors[c] if c else "0.3", lw=1.2,
                 ls="--" if c == 0 else "-", label=name if c else "background")
axes[0].set_xscale("log")
axes[0].set_xlabel("optimiser step (log scale)")
axes[0].set_ylabel(r"class weight $w_c$ (moving average)")
axes[0].legend(ncol=2, fontsize="x-small", frameon=False, title="class", title_fontsize="x-small")
for run, group in betas.groupby("run", sort=False):
    stats = group.groupby("step")["beta"].agg(["mean", "std"])
    axes[1].plot(stats.index, stats["mean"], label=run)
    axes[1].fill_between(stats.index, stats["mean"] - stats["std"], stats["mean"] + stats["std"], alpha=0.2)
axes[1].axhline(0, color="0.4", ls="--", lw=1, label="CE")
axes[1].axhline(beta_inverse, color="0.4", ls=":", lw=1, label="inverse frequency")
axes[1].set_xscale("log")
axes[1].set_xlabel("optimiser step (log scale)")
axes[1].set_ylabel(r"exponent $\beta$ (mean ± sd over seeds)")
axes[1].legend(fontsize="x-small", frameon=False)
fig.suptitle("Recall-loss class weights during training")
plt.show()


half = betas[betas["run"] == "recall (batch)"].groupby("step")["beta"].mean()
cross_half = half.index[half.to_numpy() >= 0.5]
glue("beta_first", beta.first.format(2))
glue("beta_last", beta.last.format(2))
glue("beta_last_ma", beta_ma.last.format(2))
glue("beta_first_ma", beta_ma.first.format(2))
glue("beta_cross_half", f"{int(cross_half[0])}" if len(cross_half) else "never")
glue("beta_change", beta.change.format(2))

# The weight profile at three moments beside the inverse-frequency weights, each scaled
# to its largest class weight (only the ratios between classes matter to the gradient)
first_step = beta.first_step  # 1 in `ci` (log_every = 1)
glue("first_step", first_step)
profile_steps = [first_step, int(cross_half[0]) if len(cross_half) else P.steps // 10, P.steps]
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
xs = np.arange(NUM_CLASSES)
ranked = [CLASS_NAMES[i] for i in np.argsort(-freq)]
ax.plot(xs, np.ones(NUM_CLASSES), "k--", lw=1, label="CE (all equal)")
inv_profile = (inverse / inverse.max()).numpy()[np.argsort(-freq)]
ax.plot(xs, inv_profile, "k:", marker="s", ms=4, lw=1.2, label="inverse frequency (training split)")
batch_w = weights[weights["run"] == "recall (batch)"]
last_tenth = batch_w["step"] > 0.9 * P.steps
moments = {f"recall (batch), step {profile_steps[0]}": batch_w["step"] == profile_steps[0],
           f"recall (batch), step {profile_steps[1]}": batch_w["step"] == profile_steps[1],
           "recall (batch), last tenth of training": last_tenth}
for label, chosen in moments.items():
    w_moment = batch_w[chosen].groupby("class")["weight"].mean().reindex(ranked).to_numpy()
    ax.plot(xs, w_moment / w_moment.max(), marker="o", ms=4, label=label)
ax.set_yscale("log")
ax.set_xticks(xs, ["bg" if n == "background" else n for n in ranked])
ax.set_xlabel("class, most frequent first")
ax.set_ylabel(r"$w_c$ / largest (log scale)")
ax.set_title("Recall-loss weight profile during training, beside inverse frequency")
ax.legend(fontsize="x-small", frameon=False, ncol=2, loc="lower right")
plt.show()
glue("profile_mid_step", profile_steps[1])
glue("profile_vs_inverse", "flatter" if beta.last.mean < beta_inverse else "steeper")
bg_ma = ma.loc["background"]
below = bg_ma.index[bg_ma.to_numpy() < 0.5]
glue("bg_half_step", f"{int(below[0])}" if len(below) else "never")
final_ma = ma.groupby(level="class").last()
glue("digits_below_half", int((final_ma.drop("background") < 0.5).sum()))

# %% [markdown]
# At step {glue:text}`first_step` (the first one logged) the weights come from a
# nearly untrained network and have $\beta =$
# {glue:text}`beta_first` (batch variant; {glue:text}`beta_first_ma` with the moving
# average): close to CE, as the identity predicts when almost nothing is recalled. The mean
# $\beta$ passes 0.5 at step {glue:text}`beta_cross_half`; over the last tenth of training
# it is {glue:text}`beta_last` (moving average: {glue:text}`beta_last_ma`), against 1 for
# inverse frequency. The background's weight (moving average, mean over seeds) falls below
# 0.5 at step {glue:text}`bg_half_step`; at the end of training {glue:text}`digits_below_half`
# of the ten digits have a weight below 0.5 (left). The second figure shows the weight
# profile of the batch variant at step {glue:text}`first_step`, at step {glue:text}`profile_mid_step` (where
# $\beta$ passes 0.5) and over the last tenth of training (mean over seeds and steps), each
# divided by its largest weight, beside the inverse-frequency profile: it leaves the flat
# line of CE, tilts towards the rare classes, and at this budget ends
# {glue:text}`profile_vs_inverse` than inverse frequency.

# %% [markdown]
# ## Committed `full`-profile runs
#
# Converged runs (the `full` profile, `make results CHAPTER=02_recall`) are committed under
# `results/02_recall/` with
# their provenance. A record whose configuration differs from what this notebook would run
# today is flagged.

# %%
setup.show_committed(columns=["seed", "test_miou", "test_mean_accuracy", "test_mean_precision", "device", "commit"])

# %% [markdown]
# ## Claims
#
# Each verdict comes from the paired differences over seeds ({glue:text}`n_seeds` seeds,
# 95% Student-t intervals): *supported* when the whole interval lies on the claimed side,
# *contradicted* when it lies wholly on the other side, *inconclusive* otherwise.
# "Competitive mIoU" is our reading: at most {glue:text}`miou_tolerance` below CE.

# %%
# The effects, measured from the runs, and the claims, their sources and how each is judged:
# pixelweight.chapters.recall.experiments_effects and experiments_claims (the same function
# judges the converged records below)
effects = recall.experiments_effects(setup, runs)
claims = recall.experiments_claims(setup, **effects)
claims.show()
_ = claims.record(results_dir)
verdicts = {claim.label: claim.verdict for claim in claims.claims}
glue("miou_tolerance", f"{recall.MIOU_TOLERANCE:.2f}")
glue("verdict_a", verdicts["(a)"])
glue("verdict_b", verdicts["(b)"])
glue("verdict_c", verdicts["(c)"])
glue("verdict_d", verdicts["(d)"])
glue("verdict_e", verdicts["(c′)"])
glue("relative_gain", f"{effects['relative_gain']:.0f}")

# %% [markdown]
# At this scale: (a) {glue:text}`verdict_a` (a {glue:text}`relative_gain`% relative change
# of mean accuracy; the paper's abstract reports about 9% on Synthia with a much longer
# run), (b) {glue:text}`verdict_b`, (c) {glue:text}`verdict_c`, (c′) {glue:text}`verdict_e`,
# (d) {glue:text}`verdict_d`.
# With {glue:text}`n_seeds` seeds and {glue:text}`steps` steps the intervals are wide, and the
# networks are far from converged: the converged runs below say more. The next notebook asks
# how the gain of recall loss depends on how long the tail is.

# %% [markdown]
# ## Converged claims
#
# The verdicts above describe early training. The same claims are tested again, by the same
# function, on the committed converged runs: the same scenes, model and seeds' data, trained
# to a plateau (`full` profile, made with `make results CHAPTER=02_recall`). Their verdicts
# replace the early ones on the landing page and the scorecard.
# %%
setup_full = recall.setup("experiments", "full", chapter=chapter)
converged = recall.show_converged(setup_full, results_dir)
# %% tags=["hide-input"]
if converged["runs"]:
    v, beta_full = converged["verdicts"], converged["beta"]
    by_label = {c.label: c for c in converged["result"].table.claims}

    def measured(label):  # each measured difference of a claim with its interval, without the judging detail
        return ", ".join(f"{e.what} {e.effect.mean:+.3f} [{e.effect.low:.3f}, {e.effect.high:.3f}]"
                         for e in by_label[label].evidence)

    flips = [label for label in v if v[label] != verdicts[label]]
    markdown(
        f"At the converged budget ({converged['seeds']} seeds; {converged['plateau']} runs reached the plateau "
        f"of the validation mIoU; {converged['hours']} hours of training in all): (a) is **{v['(a)']}** "
        f"({measured('(a)')}), (b) **{v['(b)']}** ({measured('(b)')}), (c) **{v['(c)']}** ({measured('(c)')}), "
        f"(c′) **{v['(c′)']}** ({measured('(c′)')}) and (d) **{v['(d)']}**: β is "
        f"{beta_full.first.format(2)} at step {beta_full.first_step} and {beta_full.last.format(2)} over the last "
        f"tenth of training, against 1 for inverse frequency. "
        + (f"{len(flips)} of the {len(v)} verdicts differ from this page's early ones: "
           f"{', '.join(flips)}. " if flips else "Every verdict is the same as early in training. ")
        + "The figure follows the mean-accuracy difference of recall loss and CE along training: a gain "
        "measured early in training need not survive to the plateau, which is why the book's verdicts come "
        "from the converged runs.")
# %% tags=["hide-input"]
curve, early = converged["curve"], recall.learning_curve(runs)
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
ax.axhline(0, color="0.4", lw=1, ls="--")
if len(curve):
    ax.plot(curve["step"], curve["mean"], marker="o", ms=3, label=f"converged runs (full profile, {converged['seeds']} seeds)")
    ax.fill_between(curve["step"], curve["low"], curve["high"], alpha=0.25, label="95% interval over seeds")
ax.errorbar(early["step"], early["mean"], yerr=[early["mean"] - early["low"], early["high"] - early["mean"]],
            fmt="s", color="tab:red", capsize=3, label=f"this page's {P.name} runs ({len(P.seeds)} seeds), end of training")
ax.set_xlabel("optimiser step")
ax.set_ylabel("Δ validation mean accuracy\n(recall (batch) − CE)")
ax.set_title("The recall-loss gain in mean accuracy along training")
ax.legend(frameon=False, fontsize="small")
plt.show()
