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
# # Recall loss: the derivation
#
# Cross-entropy (CE) gives every pixel the same say, so on a long-tailed data set the
# frequent classes own the gradient and the rare ones are under-recalled (chapter 0).
# Tian et al. {cite:p}`tian2022recall` re-weight each class by how badly the network
# currently recalls it: the weight of class $c$ is $1 - \mathrm{recall}_c$, measured on the
# batch at hand. This notebook derives the loss, proves the identity that explains the
# abstract's claim that it "changes gradually between CE and inverse frequency weighting",
# checks it on computed examples, lists the pitfalls of the public code and times the
# loss against CE.
#
# Tags follow the book's convention: **[code]** checked in the authors' public
# implementation, **[abstract]** stated in the paper's abstract, **[derived]** derived
# here and checked numerically, **[unverified]** not confirmed. The paper's body was not
# available to us; nothing below quotes its tables.
#
# **Needs:** CPU only, no training (most of its time is the micro-benchmark at the end,
# which runs on the GPU where there is one).

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
import torch.nn.functional as F

from pixelweight import plotting
from pixelweight.benchmark import TARGETS, benchmark_losses
from pixelweight.book import glue, markdown, table
from pixelweight.chapters import testbed
from pixelweight.chapters.recall import frequency_exponent
from pixelweight.data import DigitScenes
from pixelweight.losses import (
    class_weights,
    cross_entropy,
    recall_counts,
    recall_loss,
    recall_terms,
    recall_weights,
)
from pixelweight.train import resolve_device

plotting.set_style()
CLASS_NAMES = list(DigitScenes.class_names)
NUM_CLASSES = len(CLASS_NAMES)

# %% [markdown]
# ## The loss
#
# For a batch with valid (not ignored) pixels $V$, label $y_i$ and prediction
# $\hat y_i = \arg\max_c z_{i,c}$, count for each class
#
# $$ N_c = \#\{i \in V: y_i = c\}, \qquad \mathrm{FN}_c = \#\{i \in V: y_i = c,\ \hat y_i \neq c\}, $$
#
# and weight it by the share of its pixels the network misses **[code]**:
#
# $$ w_c = \frac{\mathrm{FN}_c}{N_c} = 1 - \mathrm{recall}_c, \qquad
#    \mathcal{L}_{\text{recall}} = \frac{1}{|V|} \sum_{i \in V} w_{y_i}\, \mathrm{CE}_i,
#    \qquad \mathrm{CE}_i = -\log p_{i, y_i}. $$
#
# Two details matter. The weights come from an argmax, so they carry no gradient: the
# gradient is that of a class-weighted CE whose weights are re-measured on every batch.
# And the mean runs over pixels, not over $\sum_i w_{y_i}$ (PyTorch's
# `F.cross_entropy(weight=...)` would divide by the latter) **[code]**. In `pixelweight`
# the loss is `recall_loss(logits, target)` (or the module `RecallLoss`, which can also
# keep a moving average of the weights, see below).
#
# ### A batch small enough to check by hand
#
# Nine pixels, three classes. The logits put 3 on the predicted class and 0 elsewhere.

# %%
labels = torch.tensor([[[0, 0, 0, 0, 0, 1, 1, 2, 2]]])
preds = torch.tensor([[[0, 0, 0, 0, 1, 1, 0, 0, 1]]])
logits = 3.0 * F.one_hot(preds, 3).permute(0, 3, 1, 2).double()

terms = recall_terms(logits, labels)
w = recall_weights(logits, labels)
hand = pd.DataFrame({
    "class": ["0", "1", "2"],
    "N_c": [str(v) for v in terms.n.tolist()],
    "FN_c": [str(v) for v in terms.fn.tolist()],
    "w_c = FN_c / N_c": w.tolist(),
    "mean CE_c": terms.mean_ce.tolist(),
})
markdown(table(hand))
loss = recall_loss(logits, labels)
by_identity = float((terms.fn * terms.mean_ce).sum() / terms.n.sum())
glue("hand_loss", f"{loss.item():.4f}")
glue("hand_identity", f"{by_identity:.4f}")
glue("hand_ce", f"{cross_entropy(logits, labels).item():.4f}")
ce_hit, ce_miss = math.log(math.exp(3) + 2) - 3, math.log(math.exp(3) + 2)
glue("ce_hit", f"{ce_hit:.4f}")
glue("ce_miss", f"{ce_miss:.4f}")

# %% [markdown]
# A recalled pixel costs $\mathrm{CE} = \log(e^3 + 2) - 3 =$ {glue:text}`ce_hit` nats, a
# missed one $\log(e^3 + 2) =$ {glue:text}`ce_miss`. Class 0 misses one pixel in five, so
# it keeps a fifth of its weight; class 2 misses both of its pixels and keeps all of it.
# The recall loss of the batch is {glue:text}`hand_loss` nats per pixel, against
# {glue:text}`hand_ce` for plain CE: the well-recalled majority class has been turned
# down.
#
# ## The identity: a loss per false negative
#
# Group the sum by class and write $\overline{\mathrm{CE}}_c = \frac{1}{N_c}
# \sum_{i: y_i = c} \mathrm{CE}_i$ for the mean CE of class $c$ **[derived]**:
#
# $$ \sum_{i \in V} w_{y_i} \mathrm{CE}_i
#    = \sum_c \frac{\mathrm{FN}_c}{N_c} \sum_{i:\, y_i = c} \mathrm{CE}_i
#    = \sum_c \mathrm{FN}_c \, \overline{\mathrm{CE}}_c . $$
#
# Each class enters the loss once **per false negative**, at its average pixel cost. On the
# hand-built batch, $\frac{1}{|V|}\sum_c \mathrm{FN}_c \overline{\mathrm{CE}}_c =$
# {glue:text}`hand_identity`, the loss above. Three readings follow.
#
# 1. **Nothing recalled yet** ($\mathrm{FN}_c = N_c$ for all $c$): the sum is
#    $\sum_c N_c \overline{\mathrm{CE}}_c = \sum_i \mathrm{CE}_i$, **plain CE**. A freshly
#    initialised network that recalls nothing trains exactly as with CE.
# 2. **The same number of misses in every class** ($\mathrm{FN}_c = k$): the weights are
#    $w_c = k / N_c \propto 1/N_c$, **inverse-frequency weighting**, and the loss is
#    $k \sum_c \overline{\mathrm{CE}}_c$: each class counts once, whatever its size.
# 3. **A class recalled perfectly** has $w_c = 0$ and leaves the loss: the loss mines the
#    hard classes.
#
# The identity holds for any batch. A random one, with a quarter of its pixels ignored:

# %%
g = torch.Generator().manual_seed(0)
z = torch.randn(4, NUM_CLASSES, 32, 32, generator=g, dtype=torch.float64)
y = torch.randint(0, NUM_CLASSES, (4, 32, 32), generator=g)
y[torch.rand(4, 32, 32, generator=g) < 0.25] = 255
t = recall_terms(z, y, ignore_index=255)
present = t.n > 0
lhs = recall_loss(z, y, ignore_index=255, reduction="sum").item()
rhs = float((t.fn[present] * t.mean_ce[present]).sum())
glue("identity_lhs", f"{lhs:.6f}")
glue("identity_gap", f"{abs(lhs - rhs):.1e}")
glue("identity_pixels", int(t.n.sum()))

# %% [markdown]
# Over its {glue:text}`identity_pixels` valid pixels, $\sum_i w_{y_i}\mathrm{CE}_i =$
# {glue:text}`identity_lhs` and the two sides differ by {glue:text}`identity_gap`
# (float64 rounding). The test suite checks the identity and both limits
# (`tests/losses/test_recall.py`).
#
# ### The two limits, computed
#
# The first limit needs a network that recalls nothing: logits that put the label last.
# The second needs equal misses per class: a batch with class sizes $N = (8, 4, 2)$ and one
# miss in each class.

# %%
nothing = -5.0 * F.one_hot(y.clamp_max(NUM_CLASSES - 1), NUM_CLASSES).permute(0, 3, 1, 2).double()
ratio_ce = (recall_loss(nothing, y, ignore_index=255) / cross_entropy(nothing, y, ignore_index=255)).item()

lab = torch.tensor([0] * 8 + [1] * 4 + [2] * 2).view(1, 1, 14)
pred = lab.clone()
pred[0, 0, [0, 8, 12]] = torch.tensor([1, 2, 0])  # one miss per class
zz = 4.0 * F.one_hot(pred, 3).permute(0, 3, 1, 2).double() + 0.3 * torch.randn(1, 3, 1, 14, generator=g, dtype=torch.float64)
fn, n = recall_counts(zz, lab)
inverse = class_weights(counts=n, method="inverse").double()  # N / (|P| N_c)
ratio_inv = (recall_loss(zz, lab) / cross_entropy(zz, lab, weight=inverse)).item()
glue("ratio_ce", f"{ratio_ce:.6f}")
glue("ratio_inv", f"{ratio_inv:.6f}")
glue("ratio_inv_expected", f"{1 * 3 / 14:.6f}")
glue("limit_fn", ", ".join(map(str, fn.tolist())))

# %% [markdown]
# With nothing recalled, recall loss / CE $=$ {glue:text}`ratio_ce`. With
# {glue:text}`limit_fn` false negatives in the three classes, recall loss /
# inverse-frequency CE $=$
# {glue:text}`ratio_inv`, the constant $k\,|P| / |V| = 1 \cdot 3 / 14 =$
# {glue:text}`ratio_inv_expected` that the library's normalisation of inverse-frequency
# weights ($w_c = |V| / (|P| N_c)$) predicts.

# %% [markdown]
# ## Between the limits: two toy training runs
#
# How does a run move between the limits? A network learns frequent classes first (they own
# the gradient), so their false negatives fall first. The identity turns any assumption
# about how fast each class's misses fall into a trajectory of the weights. We take the
# class frequencies $f_c$ of real `DigitScenes` labels (Zipf exponent $s = 1$) and two toy
# laws for the miss rate $m_c(\tau) = \mathrm{FN}_c / N_c = w_c$ at "training time"
# $\tau$, both faster for frequent classes ($\bar f$ is the mean of $f_c$):
#
# * hyperbolic, $m_c = 1 / (1 + \tau f_c / \bar f)$: late in training
#   $\mathrm{FN}_c \approx N_c \bar f / (\tau f_c)$ is the same for every class, the
#   second limit above;
# * exponential, $m_c = e^{-\tau \sqrt{f_c / \bar f}}$: frequent classes run out of
#   misses much sooner than rare ones.
#
# Neither is fitted to anything; the real trajectories are in the experiments notebook.
# Two summaries of a weight vector help. Its **frequency exponent** $\beta$ fits
# $w_c \propto f_c^{-\beta}$ across classes (least squares in logs): $\beta = 0$ is CE,
# $\beta = 1$ inverse frequency. Its **class shares** $\mathrm{FN}_c / \sum_k \mathrm{FN}_k$
# say how the loss is split between classes (at equal mean CE, by the identity): CE splits
# it by pixel share $f_c$, inverse frequency evenly.

# %%
scenes = testbed.SCENES.build("train", 64)  # 64 training scenes of chapter 0 (64 x 64, Zipf s = 1)
labels_sim = torch.as_tensor(scenes.labels).long()
freq = scenes.class_pixel_frequencies()
rel = freq / freq.mean()
miss_laws = {
    "hyperbolic": lambda tau: 1.0 / (1.0 + tau * rel),
    "exponential": lambda tau: np.exp(-tau * np.sqrt(rel)),
}
taus = np.concatenate([[0.0], np.geomspace(0.01, 100, 41)])
betas = {name: [frequency_exponent(law(tau), freq) for tau in taus] for name, law in miss_laws.items()}

# The library's weights on sampled predictions match the law (one check per law, tau = 1)
gen = torch.Generator().manual_seed(1)
sample_gap = {}
for name, law in miss_laws.items():
    miss = torch.as_tensor(law(1.0))
    missed = torch.rand(labels_sim.shape, generator=gen) < miss[labels_sim]
    other = (labels_sim + torch.randint(1, NUM_CLASSES, labels_sim.shape, generator=gen)) % NUM_CLASSES
    sim_logits = 3.0 * F.one_hot(torch.where(missed, other, labels_sim), NUM_CLASSES).permute(0, 3, 1, 2).float()
    sample_gap[name] = float((recall_weights(sim_logits, labels_sim).double() - miss).abs().max())

fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH, 3.1))
for name, values in betas.items():
    axes[0].plot(taus[1:], values[1:], label=f"{name} misses")
axes[0].axhline(0, color="0.4", ls="--", lw=1, label="CE")
axes[0].axhline(1, color="0.4", ls=":", lw=1, label="inverse frequency")
axes[0].set_xscale("log")
axes[0].set_xlabel(r"toy training time $\tau$ (log scale)")
axes[0].set_ylabel(r"frequency exponent $\beta$ of $w$")
axes[0].set_ylim(-0.2, 4.0)
axes[0].legend(frameon=False, fontsize="x-small")
order = np.argsort(-freq)
x = np.arange(NUM_CLASSES)
axes[1].plot(x, freq[order], "k--", lw=1, label="CE (pixel share)")
axes[1].plot(x, np.full(NUM_CLASSES, 1 / NUM_CLASSES), "k:", lw=1, label="inverse frequency")
for tau in (1.0, 10.0, 100.0):
    fn_share = freq * miss_laws["hyperbolic"](tau)
    axes[1].plot(x, fn_share[order] / fn_share.sum(), "o-", ms=3, label=rf"hyperbolic, $\tau$ = {tau:g}")
axes[1].set_yscale("log")
axes[1].set_xticks(x, [CLASS_NAMES[i] if i else "bg" for i in order], fontsize="small")
axes[1].set_xlabel("class, most frequent first")
axes[1].set_ylabel("share of the loss (log scale)")
axes[1].legend(frameon=False, fontsize="x-small")
fig.suptitle("Toy runs: recall-loss weights start at CE and move towards inverse frequency")
plt.show()

hyp, expo = np.asarray(betas["hyperbolic"]), np.asarray(betas["exponential"])
glue("toy_beta_zero", f"{round(hyp[0], 2) + 0.0:.2f}")  # + 0.0: no "-0.00"
glue("toy_beta_hyp_end", f"{hyp[-1]:.2f}")
glue("toy_beta_exp_10", f"{expo[np.argmin(np.abs(taus - 10))]:.1f}")
glue("toy_tau_exp_cross", f"{taus[np.argmax(expo >= 1)]:.1f}")
glue("toy_sample_gap", f"{max(sample_gap.values()):.3f}")
glue("toy_pixels", int(labels_sim.numel()))

# %% [markdown]
# At $\tau = 0$ nothing is recalled, every weight is 1 and $\beta =$
# {glue:text}`toy_beta_zero`: plain CE. Under both laws $\beta$ then grows. With
# hyperbolic misses it creeps towards inverse frequency and reaches
# {glue:text}`toy_beta_hyp_end` at $\tau = 100$; with exponential misses it crosses 1 at
# $\tau \approx$ {glue:text}`toy_tau_exp_cross` and keeps going ($\beta =$
# {glue:text}`toy_beta_exp_10` at $\tau = 10$): the loss does not stop at inverse frequency but keeps
# moving weight to whatever is still missed. The shares (right, hyperbolic law) start
# like CE's, background first, and flatten towards an even split. So "changes gradually
# between CE and inverse frequency weighting" **[abstract]** is exactly right at the start
# and right at the end only if every class keeps about the same number of misses
# **[derived]**; which law real training follows is measured in the experiments notebook.
# (On {glue:text}`toy_pixels` sampled pixels, the weights the library computes from
# sampled predictions differ from the laws by at most {glue:text}`toy_sample_gap`.)
#
# ## Moving average and focal variant
#
# The development version of the code smooths the weights across batches **[code]**: for
# each class present in the batch,
# $w_c \leftarrow \alpha\, \mathrm{FN}_c / N_c + (1 - \alpha)\, w_c$, with $\alpha = 0.5$;
# `RecallLoss(num_classes, momentum=0.5)` does this and keeps $w$ in a buffer
# (`loss.weights`). As in the development code **[code]** (read from the repository's compiled
# files), the first training batch sets $w_c = \mathrm{FN}_c / N_c$ (1 for the classes it
# lacks) and the average starts from there (`init="first_batch"`, the default;
# `init="ones"` starts at 1, i.e. at CE). A focal variant multiplies each pixel by
# $(1 - p_{i,y_i})^{\gamma}$ with $\gamma = 1$ **[code]** (`gamma=1.0`), with no gradient
# through that factor, as there (`detach_focal=True`). The official training wraps the model
# in `nn.DataParallel`, so the counts come from the whole batch; under DDP the loss sums
# $N_c$ and $\mathrm{FN}_c$ over the processes before the weights (`sync_counts=True`).
#
# ## Pitfalls of the public code
#
# Reading the reference implementation **[code]** turned up the points below. Each is a
# test in `tests/losses/test_recall.py` or `tests/chapters/test_recall.py` that the
# library passes; the last column shows what the library computes on small batches.

# %%
valid = y != 255
w_rand = recall_weights(z, y, ignore_index=255)
one_label = torch.ones(1, 4, 4, dtype=torch.long)
loss_one_label = recall_loss(torch.randn(1, 3, 4, 4, generator=g), one_label).item()
# the hand-built batch with class 2 fully recalled: the public code's counters would give 1 / N_2
recalled = preds.clone()
recalled[0, 0, 7:] = 2
w_recalled = recall_weights(3.0 * F.one_hot(recalled, 3).permute(0, 3, 1, 2).double(), labels)
ours = recall_loss(z, y, ignore_index=255).item()
torch_weighted = F.cross_entropy(z, y, weight=w_rand, ignore_index=255).item()
wsum = float(w_rand[y[valid]].sum())
pitfalls = pd.DataFrame([
    {"pitfall in the public code": "ignored pixels mapped onto a real class, so they entered N_c and FN_c",
     "here": "ignored pixels count nowhere (their label is counted in bins of its own, never read)",
     "example": f"{int((~valid).sum())} ignored pixels, sum of N_c = {int(t.n.sum())} = valid pixels"},
    {"pitfall in the public code": "IndexError when a batch holds a single label",
     "here": "any batch works, including one label or all pixels ignored",
     "example": f"a one-label 4 x 4 batch: loss {loss_one_label:.4f}"},
    {"pitfall in the public code": "F.cross_entropy(weight=w) divides by the weight total",
     "here": "mean over valid pixels, as in the paper's code",
     "example": f"ours {ours:.4f}; divided by sum w: {torch_weighted:.4f} (x{valid.sum().item() / wsum:.2f})"},
    {"pitfall in the public code": "weighted-CE baseline weights estimated on validation data",
     "here": "inverse/median-frequency weights from the training split only",
     "example": "-"},
    {"pitfall in the public code": "counters initialised to 1: a fully recalled class gets 1/N_c, not 0",
     "here": "exact zero; a recalled class leaves the loss",
     "example": f"hand batch with class 2 recalled: w_2 = {w_recalled[2].item():g} (public code: 1/2)"},
])
markdown(table(pitfalls))

# %% [markdown]
# ## How much does it cost?
#
# The weights need the prediction of every pixel and a count per class. The library
# decides "missed" on the logits with one read of the label's logit and one `amax` over the
# classes (a pixel is missed when another class has a strictly larger logit, or when all
# classes tie, so the prediction is the argmax except on exact ties, in every dtype), counts
# with one pass over $2 y_i + [\text{missed}_i]$ (no loop over classes) and then computes
# the loss with PyTorch's fused class-weighted cross-entropy. The library's target
# (`pixelweight.benchmark.TARGETS`) is at most {glue:text}`bench_target_value` times the forward
# and backward time of PyTorch's `F.cross_entropy`; here it is timed at the paper's scale, 8 x 19 x 512 x 1024 logits (a
# Cityscapes batch, {glue:text}`full_mb` MiB per float32 copy). That is what this cell times,
# on the notebook's device (on a GPU, `python -m pixelweight.benchmark --set recall --device
# cuda` gives the same table from a shell; the testbed's "What each loss costs" compares
# every loss with `F.cross_entropy`). A CPU call takes about a second, so the CPU gets fewer rounds,
# and there the allocator is first told to keep freed memory (`steady_memory=True`, as a
# GPU's caching allocator does), so that the times measure the losses and not the kernel
# zeroing fresh pages for every 300 MiB tensor.

# %%
BENCH_SHAPE = (8, 19, 512, 1024)
glue("full_mb", f"{np.prod(BENCH_SHAPE) * 4 / 2**20:.0f}")
bench_device = resolve_device(device)
# one CPU thread: on a shared machine, multi-threaded timings mostly measure waiting
bench = benchmark_losses(shape=BENCH_SHAPE, device=bench_device,
                         repeats=8 if bench_device.type == "cpu" else 50, warmup=1, steady_memory=True,
                         ignore_index=255, ignore_fraction=0.1,
                         num_threads=1 if bench_device.type == "cpu" else None)
shown = bench[["loss", "median_ms", "q25_ms", "q75_ms", "ratio", "ratio_q25", "ratio_q75"]].rename(columns={
    "median_ms": "median (ms)", "q25_ms": "25% (ms)", "q75_ms": "75% (ms)",
    "ratio": "time / CE (median)", "ratio_q25": "25%", "ratio_q75": "75%"})
markdown(table(shown, floatfmt=".2f"))
ratio_recall = float(bench.loc[bench["loss"] == "recall_loss", "ratio"].iloc[0])
ratio_ma = float(bench.loc[bench["loss"] == "RecallLoss(momentum=0.5)", "ratio"].iloc[0])
ratio_torch = float(bench.loc[bench["loss"] == "F.cross_entropy", "ratio"].iloc[0])
glue("bench_shape", " x ".join(map(str, BENCH_SHAPE)))
glue("bench_device", str(bench["device"].iloc[0]))
glue("bench_threads", int(bench["threads"].iloc[0]))
glue("bench_ratio", f"{ratio_recall:.2f}")
row = bench.loc[bench["loss"] == "recall_loss"].iloc[0]
glue("bench_ratio_iqr", f"{row['ratio_q25']:.2f} to {row['ratio_q75']:.2f}")
glue("bench_ratio_ma", f"{ratio_ma:.2f}")
vs_torch = ratio_recall / ratio_torch
glue("bench_vs_torch", f"{vs_torch:.2f}")
glue("bench_target_value", f"{TARGETS['recall_loss']:.2f}")
glue("bench_target", "within" if vs_torch <= TARGETS["recall_loss"] else "above")

# %% [markdown]
# On {glue:text}`bench_shape` logits ({glue:text}`bench_device`, CPU threads:
# {glue:text}`bench_threads`, a tenth of the pixels ignored), the recall loss
# takes {glue:text}`bench_ratio` times the forward and backward time of the library's CE
# ({glue:text}`bench_ratio_ma` with the moving average); against PyTorch's `F.cross_entropy`,
# the reference of the target, the ratio is {glue:text}`bench_vs_torch`,
# {glue:text}`bench_target` the target of {glue:text}`bench_target_value`. The ratios are medians of within-round ratios
# (for `recall_loss` the middle half of the rounds spans {glue:text}`bench_ratio_iqr`),
# which keeps them meaningful on a shared machine; the absolute times are not.
