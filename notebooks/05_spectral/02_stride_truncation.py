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
# # Spectral analysis: output stride, spectral bias and truncated decoders
#
# The previous notebook derived, from the spectrum of the labels, which output grids should
# keep their accuracy: those whose Nyquist frequency $N/(2s)$ reaches the labels' cut-off
# $K_\alpha$ **[derived]**. Chen, Chiu and Wu {cite:p}`chen2020spectral` use this to choose an
# efficient low-resolution output grid, and to truncate the high frequencies of a decoder's
# features to save computation **[abstract]**. Here we train the chapter's U-Net at every
# output stride $s \in \{1, 2, 4, 8, 16\}$, its logits upsampled bilinearly to the labels
# (as DeepLab does), and with its decoder run on features low-passed by $t \in \{1, 2, 4\}$;
# every run is scored on the dense test labels. While the stride-1 networks train, a hook
# measures on a fixed probe batch which frequencies of the labels they have learned: the
# spectral bias of Rahaman et al. {cite:p}`rahaman2019spectral`, computed from the DFT of the
# residual as Kiessling and Thor {cite:p}`kiessling2022spectral` propose.
#
# **Needs:** a CPU for the `ci` profile (eight configurations x three seeds, trained briefly);
# the converged `full` runs come from `make results CHAPTER=05_spectral`.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns

from pixelweight import plotting
from pixelweight.book import glue, markdown, table
from pixelweight.chapters import spectral
from pixelweight.stats import mean_ci, paired_difference_ci

plotting.set_style()

# %% [markdown]
# ## Output stride
#
# A U-Net of depth 4 (width 8) whose decoder stops $\log_2 s$ levels early has logits on a grid
# $s$ times coarser than the image; `UpsampledUNet` upsamples them bilinearly to the image before
# the loss and the argmax. Every stride trains with cross-entropy on the same data, seeds and
# budget.

# %%
setup = spectral.setup("stride", profile, device=device, results_dir=results_dir, chapter=chapter)
print(setup)
runs = setup.run()  # {arm: [result per seed]}; the stage's SpectralProbe logs the spectra

# %% tags=["hide-input"]
P = setup.profile
SIZE = setup.data.size
test = setup.splits.test
K = spectral.train_cutoff(setup)
knee = spectral.predicted_knee(SIZE, K, spectral.STRIDES)
oracle = spectral.oracle_frame(test.labels, spectral.STRIDES, setup.num_classes)
frame = spectral.miou_frame(runs)
rows = []
for s in spectral.STRIDES:
    label = f"s = {s}"
    values = frame.loc[frame["arm"] == label, "test_miou"]
    diff = "—" if s == 1 else spectral.paired_effect(runs, label, "s = 1").format(3)
    rows.append({"stride s": s, "N/(2s)": SIZE / (2 * s), "test mIoU": mean_ci(values).format(3),
                 "Δ vs s = 1 (paired)": diff, "oracle mIoU": oracle.oracle_miou.iloc[len(rows)]})
markdown("Test mIoU on the dense labels, mean over seeds [95% CI]; the oracle is the labels through the same "
         "grid (previous notebook):\n\n" + table(pd.DataFrame(rows), floatfmt=".3f"))
all_runs = [r for rs in runs.values() for r in rs]
glue("n_runs", len(all_runs))
glue("n_seeds", len(P.seeds))
glue("steps", P.steps)
glue("train_minutes", f"{sum(r.wall_time_s for r in all_runs) / 60:.1f}")
glue("device_name", all_runs[0].device)
glue("k_alpha", K)
glue("knee", knee if knee is not None else "none")
means = {s: mean_ci(frame.loc[frame["arm"] == f"s = {s}", "test_miou"]).mean for s in spectral.STRIDES}
glue("miou_1", f"{means[1]:.3f}")
glue("miou_2", f"{means[2]:.3f}")
glue("miou_16", f"{means[16]:.3f}")

# %% tags=["hide-input"]
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH * 0.75, 3.3), layout="constrained")
spectral.plot_against_nyquist(
    ax, {f"trained networks, {P.steps} steps (mean, 95% CI)": ({s: runs[f"s = {s}"] for s in spectral.STRIDES}, "o")},
    SIZE, K, oracle)
ax.set_title("Accuracy against the output grid's resolution", fontsize="small")
plt.show()

# %% [markdown]
# {glue:text}`n_runs` runs ({glue:text}`n_seeds` seeds per stride, {glue:text}`steps` steps
# each) took {glue:text}`train_minutes` minutes on {glue:text}`device_name`. The stride-1
# network reaches a test mIoU of {glue:text}`miou_1`, stride 2 {glue:text}`miou_2`, stride 16
# {glue:text}`miou_16` (means over seeds). The labels' cut-off $K_\alpha$ =
# {glue:text}`k_alpha` cycles per image predicts the knee at $s^*$ = {glue:text}`knee`.
# These networks are early in training; the converged runs at the end decide.
#
# ## Which frequencies are learned first
#
# The residual of a prediction is $r_c(x) = y_c(x) - p_c(x)$, the one-hot labels minus the
# softmax. Its energy by radial frequency, $E_r(\rho) \propto \sum_c \sum_{\rho(k) = \rho}
# |R_c(k)|^2$, sums to the Brier score (Parseval; `spectral.residual_energy`). Every
# {glue:text}`log_every` steps the training hook measures it on a fixed batch of
# {glue:text}`probe_images` validation images, in four bands of frequency. A band is *learned*
# when its residual energy falls below half of its first measured value (**[ours]**; the first
# measurement comes after {glue:text}`log_every` steps, so what a band learns before it is not
# seen). If low frequencies are
# learned first {cite:p}`rahaman2019spectral`, the bands are learned in order of frequency.

# %% tags=["hide-input"]
glue("log_every", setup.scale.train["log_every"])
glue("probe_images", spectral.PROBE_IMAGES)
curves = spectral.band_curves(runs["s = 1"], SIZE)
coarse = spectral.band_curves(runs["s = 16"], SIZE)
fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.2), sharey=True, layout="constrained")
for ax, data, title in ((axes[0], curves, "stride 1"), (axes[1], coarse, "stride 16")):
    sns.lineplot(data=data, x="step", y="relative_energy", hue="band", ax=ax, errorbar=("ci", 95),
                 palette="viridis")
    ax.axhline(0.5, color="0.5", ls=":", lw=1)
    ax.set_yscale("log")
    ax.set_xlabel("training step")
    ax.set_title(f"{title}: residual energy by band", fontsize="small")
handles, names = axes[0].get_legend_handles_labels()
for ax in axes:
    ax.get_legend().remove()
fig.legend(handles, names, title="band (cycles per image)", fontsize="x-small", title_fontsize="x-small",
           loc="outside lower center", ncol=4, frameon=False)
axes[0].set_ylabel("residual energy / first measured value\n(log scale; mean, 95% CI over seeds)")
plt.show()
last = {name: c[c.step == c.step.max()] for name, c in (("1", curves), ("16", coarse))}
top = curves.band.iloc[-1]
for name, c in last.items():
    glue(f"high_{name}", f"{c.loc[c.band == top, 'relative_energy'].mean():.2f}")
steps_frame = spectral.learning_step_frame(runs["s = 1"], SIZE)
learned = steps_frame.groupby("band", sort=False)["step"].agg(lambda v: mean_ci(v.to_numpy()).format(0))
markdown("Learning step of each band (stride 1; the first step at which its residual energy is below half its "
         "first measured value; a band never learned counts as learned one measurement after the run), mean "
         "over seeds [95% CI]:\n\n" + table(learned.reset_index().rename(columns={"step": "learning step"})))

# %% [markdown]
# The stride-16 network (right) shows the other side of the prediction: a grid of 2 x 2 logits
# cannot represent what the labels hold at high frequencies. At the end of training the residual
# energy of the highest band is {glue:text}`high_16` of its first measured value for stride 16,
# {glue:text}`high_1` for stride 1 (means over seeds). The claims table below compares, per seed,
# the learning steps of the lowest and the highest band of the stride-1 network.
#
# ## Truncated decoder features
#
# `UpsampledUNet(truncation=t)` (the library's `TruncatedUNet`) runs the encoder as usual,
# then low-passes the bottleneck and every skip connection the decoder reads to a grid $t$
# times coarser (an ideal low-pass: the FFT crop), so that every decoder block works at $1/t$
# of its resolution and costs about $t^2$ times fewer multiply-adds. The logits, of stride $t$,
# are upsampled to the image. A depth-3 U-Net (a 4 x 4 bottleneck that 2 and 4 divide) trains
# at each $t$.

# %%
setup_t = spectral.setup("truncation", profile, device=device, results_dir=results_dir, chapter=chapter)
print(setup_t)
runs_t = setup_t.run()

# %% tags=["hide-input"]
flops = {t: spectral.decoder_flops(setup_t.arm(f"t = {t}").model, SIZE) for t in spectral.TRUNCATIONS}
frame_t = spectral.miou_frame(runs_t)
rows = []
for t in spectral.TRUNCATIONS:
    label = f"t = {t}"
    rows.append({"factor t": t, "decoder multiply-adds (M)": flops[t]["decoder"] / 1e6,
                 "all multiply-adds (M)": flops[t]["total"] / 1e6,
                 "test mIoU": mean_ci(frame_t.loc[frame_t["arm"] == label, "test_miou"]).format(3),
                 "Δ vs t = 1 (paired)": "—" if t == 1 else spectral.paired_effect(runs_t, label, "t = 1").format(3)})
markdown("Convolution multiply-adds per 32 x 32 image (`spectral.decoder_flops`); test mIoU mean over seeds "
         "[95% CI]:\n\n" + table(pd.DataFrame(rows), floatfmt=".2f"))
glue("decoder_share", f"{flops[1]['decoder'] / flops[1]['total']:.0%}")
glue("saving_4", f"{flops[1]['total'] / flops[4]['total']:.2f}")
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH * 0.6, 3.0), layout="constrained")
stats_t = [mean_ci(frame_t.loc[frame_t["arm"] == f"t = {t}", "test_miou"]) for t in spectral.TRUNCATIONS]
xs = [flops[t]["total"] / 1e6 for t in spectral.TRUNCATIONS]
ax.errorbar(xs, [v.mean for v in stats_t], yerr=[[v.mean - v.low for v in stats_t], [v.high - v.mean for v in stats_t]],
            marker="o", capsize=3)
for xi, v, t in zip(xs, stats_t, spectral.TRUNCATIONS):
    ax.annotate(f"t = {t}", (xi, v.mean), textcoords="offset points", xytext=(6, 4), fontsize="x-small")
ax.set_xlabel("multiply-adds per image (millions)")
ax.set_ylabel("test mIoU (mean, 95% CI)")
ax.set_title("Accuracy against computation, truncated decoders", fontsize="small")
plt.show()

# %% [markdown]
# The decoder (up-convolutions, decoder blocks and head) does {glue:text}`decoder_share` of the
# network's convolution multiply-adds at $t = 1$; truncating by 4 divides the whole network's by
# {glue:text}`saving_4`. These counts leave out the FFT crops themselves (a few FFTs of the skip
# connections, not free). The claims below judge what the truncation costs in accuracy.
#
# ## Committed `full`-profile runs
#
# Converged runs (the `full` profile) are committed under `results/05_spectral/` with their
# provenance; a record whose configuration differs from what this notebook would run today is
# flagged.

# %%
setup.show_committed(columns=["seed", "test_miou", "device", "commit"])
setup_t.show_committed(columns=["seed", "test_miou", "device", "commit"])

# %% [markdown]
# ## Claims: output stride
#
# Paired differences over seeds ({glue:text}`n_seeds` seeds, 95% Student-t intervals).
# "Accuracy holds" is our reading: no worse than stride 1 by more than {glue:text}`tolerance`
# mIoU (non-inferiority) at every stride up to the predicted knee $s^*$, and a loss of more than
# that at $2s^*$; a composite claim is supported only when every part is.

# %%
claims = spectral.stride_claims(setup, runs)  # texts, sources, rules: pixelweight.chapters.spectral
claims.show()
_ = claims.record(results_dir)

# %% [markdown]
# ## Claims: truncation

# %%
claims_t = spectral.truncation_claims(setup_t, runs_t)
claims_t.show()
_ = claims_t.record(results_dir)

# %% tags=["hide-input"]
glue("tolerance", f"{spectral.TOLERANCE:g}")
verdicts = {c.label: c for c in claims.claims + claims_t.claims}
for key in ("b", "c", "e"):
    glue(f"verdict_{key}", verdicts[f"({key})"].verdict)

# %% [markdown]
# At this budget: (b) {glue:text}`verdict_b`, (c) {glue:text}`verdict_c`, (e)
# {glue:text}`verdict_e`, from {glue:text}`n_seeds` seeds early in training; the converged runs
# below are the book's answer.
#
# ## Converged: stride
#
# The same claims, judged by the same functions on the committed converged runs (`full`
# profile: the same data and models, trained to a plateau of the validation mIoU). Their
# verdicts replace the early ones on the landing page and the scorecard.

# %% tags=["hide-input"]
converged = spectral.show_stride_converged(spectral.setup("stride", "full", chapter=chapter), results_dir)
if converged["result"].available:
    committed = converged["result"].runs
    fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH * 0.75, 3.3), layout="constrained")
    spectral.plot_against_nyquist(
        ax, {"converged (full profile; mean, 95% CI)": ({s: committed[f"s = {s}"] for s in spectral.STRIDES}, "o"),
             f"early ({P.name} profile)": ({s: runs[f"s = {s}"] for s in spectral.STRIDES}, "x")}, SIZE, K, oracle)
    ax.set_title("Accuracy against the output grid's resolution, converged and early", fontsize="small")
    plt.show()
    markdown(
        f"At the converged budget ({converged['seeds']} seeds; {converged['plateau']} runs reached the plateau; "
        f"{converged['hours']} hours of training), claim (b) is **{converged['verdict (b)']}** and (e) "
        f"**{converged['verdict (e)']}** (Δ learning step {converged['effect (e)']}).")

# %% [markdown]
# ## Converged: truncation

# %% tags=["hide-input"]
converged_t = spectral.show_truncation_converged(spectral.setup("truncation", "full", chapter=chapter), results_dir)
if converged_t["result"].available:
    markdown(
        f"At the converged budget ({converged_t['seeds']} seeds; {converged_t['plateau']} runs reached the "
        f"plateau), claim (c) is **{converged_t['verdict (c)']}**.")
