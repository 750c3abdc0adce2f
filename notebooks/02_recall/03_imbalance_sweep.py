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
# # Recall loss: how the gain depends on the tail
#
# Recall loss {cite:p}`tian2022recall` was designed for imbalanced data. By the identity of
# the derivation notebook, on balanced data it should behave like CE with a mild bias toward
# whatever is currently missed, and its gain in mean accuracy should grow with the imbalance.
# That expectation is ours **[derived]**, not a claim of the paper. We test it by sweeping
# the Zipf exponent $s$ of `DigitScenes`: $s = 0$ draws the ten digits equally often,
# $s = 1$ makes the digit 0 ten times as frequent as the digit 9, $s = 2$ a hundred times.
# At each $s$ we train CE and recall loss (batch weights) with the budget, model and seeds
# of the experiments notebook.
#
# **Needs:** a CPU for the `ci` profile (3 values of $s$ x 2 losses x 3 seeds of a short
# training on small scenes); the converged `full` profile (5 seeds, 3,000 steps, the plateau
# of each run recorded) runs outside the book with `make results CHAPTER=02_recall`.

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
from pixelweight.chapters import recall
from pixelweight.stats import mean_ci, paired_difference_ci

plotting.set_style()
# Same budget, data and model as 02_experiments (pixelweight.chapters.recall); the arms are
# CE and recall loss, and the Zipf exponent s is replaced at each point of the sweep.
setup = recall.setup("sweep", profile, device=device, results_dir=results_dir, chapter=chapter)
P = setup.profile
EXPONENTS = recall.EXPONENTS
print(setup)

# %% [markdown]
# ## Training

# %%
runs, frequencies = {}, {}
for s in EXPONENTS:
    at_s = setup.variant(recall.sweep_variant(s))  # the same scenes with Zipf exponent s
    frequencies[s] = at_s.splits.train.class_pixel_frequencies()
    for arm in at_s.arms:
        runs[at_s.variant_name, arm.label] = at_s.run_arm(arm)  # recorded as ch2-sweep-s<s>-<arm>
all_runs = [r for rs in runs.values() for r in rs]
glue("n_runs", len(all_runs))
glue("n_seeds", len(P.seeds))
glue("train_minutes", f"{sum(r.wall_time_s for r in all_runs) / 60:.1f}")
glue("device_name", all_runs[0].device)
ratios = {s: frequencies[s][1] / frequencies[s][10] for s in EXPONENTS}
glue("ratio_s0", f"{ratios[0.0]:.1f}")
glue("ratio_s2", f"{ratios[2.0]:.0f}")

# %% [markdown]
# {glue:text}`n_runs` runs ({glue:text}`n_seeds` seeds each) took {glue:text}`train_minutes`
# minutes on {glue:text}`device_name`. In the training splits, the digit 0 has
# {glue:text}`ratio_s0` times the pixels of the digit 9 at $s = 0$ (chance) and
# {glue:text}`ratio_s2` times at $s = 2$.
#
# ## The gain of recall loss over CE

# %% tags=["hide-input"]
def per_seed(s, label, key):
    return [r.metrics[key] for r in runs[recall.sweep_variant(s), label]]


rows, gains = [], {}
for s in EXPONENTS:
    for key, name in [("test_mean_accuracy", "mean accuracy"), ("test_miou", "mIoU"),
                      ("test_mean_precision", "mean precision")]:
        d = paired_difference_ci(per_seed(s, "recall", key), per_seed(s, "CE", key))
        gains[s, name] = d
        rows.append({"s": s, "metric": name, "CE": mean_ci(per_seed(s, "CE", key)).format(3),
                     "recall": mean_ci(per_seed(s, "recall", key)).format(3), "Δ (recall − CE)": d.format(3)})
sweep = pd.DataFrame(rows)
sweep["s"] = sweep["s"].map(lambda v: f"{v:g}")
markdown("Test metrics, mean over seeds [95% CI], and the paired difference:\n\n" + table(sweep))

fig, axes = plt.subplots(1, 3, figsize=(plotting.PAGE_WIDTH, 3.0), sharex=True)
for ax, name in zip(axes, ["mean accuracy", "mIoU", "mean precision"]):
    means = np.array([gains[s, name].mean for s in EXPONENTS])
    low = np.array([gains[s, name].low for s in EXPONENTS])
    high = np.array([gains[s, name].high for s in EXPONENTS])
    ax.errorbar(EXPONENTS, means, yerr=[means - low, high - means], fmt="o-", capsize=3)
    ax.axhline(0, color="0.4", lw=1, ls="--")
    ax.set_xticks(EXPONENTS)
    ax.set_xlabel("Zipf exponent s")
    ax.set_title(f"Δ {name}")
axes[0].set_ylabel("recall loss − CE (paired)")
fig.suptitle("Recall loss − CE against the class imbalance (mean, 95% CI over seeds)")
plt.show()

# %% [markdown]
# ## Committed `full`-profile runs

# %%
setup.show_committed(columns=["seed", "test_miou", "test_mean_accuracy", "device", "commit"])

# %% [markdown]
# ## Claims

# %%
# The effects, measured from the runs (pixelweight.chapters.recall.sweep_effects: the gains
# paired by seed at each s, and the growth paired by seed across the sweep), and the claims
# and how each is judged (sweep_claims; the same function judges the converged records below)
effects = recall.sweep_effects(setup, runs)
growth = effects["growth"]
claims = recall.sweep_claims(setup, **effects)
claims.show()
_ = claims.record(results_dir)
glue("growth", growth.format(3))
glue("verdict_growth", claims.claims[-1].verdict)
for s in EXPONENTS:
    glue(f"gain_s{int(s)}", effects["gains"][s].format(3))

# %% [markdown]
# The mean-accuracy gain of recall loss over CE is {glue:text}`gain_s0` at $s = 0$,
# {glue:text}`gain_s1` at $s = 1$ and {glue:text}`gain_s2` at $s = 2$; the gain at the
# longest tail minus the gain on balanced digits is {glue:text}`growth`, so "the gain grows
# with the imbalance" is **{glue:text}`verdict_growth`** at this scale. Note that even at
# $s = 0$ the classes are not balanced: background owns most pixels whatever $s$ is, so
# recall loss has an imbalance to correct at every point of the sweep.

# %% [markdown]
# ## Converged claims
#
# The same claims, judged by the same function on the committed converged runs of the sweep
# (`full` profile: the same scenes and model, more seeds, trained to a plateau; made with
# `make results CHAPTER=02_recall`). Their verdict on the growth replaces the early one on
# the landing page and the scorecard.
# %%
setup_full = recall.setup("sweep", "full", chapter=chapter)
converged = recall.show_sweep_converged(setup_full, results_dir)
# %% tags=["hide-input"]
if converged.available:
    full_effects = recall.sweep_effects(setup_full, converged.runs)
    text = converged.text()
    growth_full = converged.table.claims[-1]
    markdown(
        f"At the converged budget ({text['seeds']} seeds; {text['plateau']} runs reached the plateau of the "
        f"validation mIoU; {text['hours']} hours of training in all) the mean-accuracy gain of recall loss over "
        "CE is " + ", ".join(f"{full_effects['gains'][s].format(3)} at s = {s:g}" for s in EXPONENTS)
        + f"; the growth is {full_effects['growth'].format(3)}, so \"the gain grows with the imbalance\" is "
        f"**{growth_full.verdict}** (early in training: {claims.claims[-1].verdict}).")
    fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH, 3.0))
    for offset, (name, gains_at, marker) in enumerate([
            (f"this page's {P.name} runs ({len(P.seeds)} seeds)", effects["gains"], "s"),
            (f"converged runs (full profile, {text['seeds']} seeds)", full_effects["gains"], "o")]):
        xs = np.asarray(EXPONENTS) + (offset - 0.5) * 0.08
        means = np.array([gains_at[s].mean for s in EXPONENTS])
        yerr = [means - [gains_at[s].low for s in EXPONENTS], [gains_at[s].high for s in EXPONENTS] - means]
        ax.errorbar(xs, means, yerr=yerr, fmt=marker + "-", capsize=3, label=name)
    ax.axhline(0, color="0.4", lw=1, ls="--")
    ax.set_xticks(EXPONENTS)
    ax.set_xlabel("Zipf exponent s")
    ax.set_ylabel("Δ test mean accuracy\n(recall − CE, paired)")
    ax.set_title("The recall-loss gain against the imbalance, early and converged (95% CI)")
    ax.legend(frameon=False, fontsize="small")
    plt.show()
