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
# # The testbed: digits that ship with scikit-learn
#
# Every chapter of this book retrains small networks on data that is **generated**, not
# downloaded: the 1,797 handwritten digits (8x8 pixels) that ship inside scikit-learn,
# rescaled and dropped onto canvases, optionally over the textures that ship inside
# scikit-image. Three data sets cover the papers' tasks:
#
# | data set | task | used by |
# |---|---|---|
# | `DigitScenes` | 11-class segmentation with a tunable long tail | recall loss, loss max-pooling, spectral analysis |
# | `SalientDigits` | binary foreground map, plus "sloppy" ground truths | Weighted F-measure |
# | `ClutteredDigits` | classifying one small digit on a large canvas | saliency sampler |
#
# All three are deterministic for a given seed (bit for bit), cached on disk, and draw
# their train, validation and test images from **disjoint** source digits, so a network
# is always tested on handwriting it never saw.
#
# **Needs:** CPU only; no training.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np

from pixelweight import plotting
from pixelweight.book import glue, markdown, table
from pixelweight.data import (
    DEGRADATIONS,
    ClutteredDigits,
    DigitScenes,
    SalientDigits,
    digit_split,
)
from pixelweight.chapters import testbed

plotting.set_style()
setup = testbed.setup("baseline", profile, chapter=chapter)  # pixelweight.chapters.testbed
P = setup.profile

# %% [markdown]
# ## Disjoint splits
#
# The source digits are split once, stratified by class, with a fixed permutation that
# does not depend on any experiment's seed.

# %%
splits = {name: digit_split(name) for name in ("train", "val", "test")}
overlap = sum(len(np.intersect1d(splits[a], splits[b])) for a, b in [("train", "val"), ("train", "test"), ("val", "test")])
glue("n_train_src", len(splits["train"]))
glue("n_val_src", len(splits["val"]))
glue("n_test_src", len(splits["test"]))
glue("n_overlap", overlap)
assert overlap == 0

# %% [markdown]
# Train, validation and test scenes draw from {glue:text}`n_train_src`,
# {glue:text}`n_val_src` and {glue:text}`n_test_src` source digits; the three sets share
# {glue:text}`n_overlap` of them.
#
# ## `DigitScenes`: segmentation with a long tail
#
# Each scene holds 2 to 5 digits of random size at random places. A pixel's label is its
# digit's class plus one on the digit's strokes and 0 (background) elsewhere: 11 classes.
# The `imbalance` knob $s$ draws digit $k$ with probability $p_k \propto (k+1)^{-s}$, a
# Zipf law: at $s = 0$ all digits are equally likely, at $s = 1$ the digit 0 is ten times
# as likely as the digit 9. Real segmentation data are long-tailed in the same way (a few
# classes such as road, building and sky own most of Cityscapes' pixels).

# %%
scenes = setup.data.build("train", P.train_samples)  # the baseline's training split
textured = DigitScenes(split="train", num_samples=8, size=setup.data.size, imbalance=1.0, background="brick", noise=0.05, seed=7)
images = [scenes[i][0] for i in range(4)] + [textured[i][0] for i in range(3)]
targets = [scenes[i][1] for i in range(4)] + [textured[i][1] for i in range(3)]
fig = plotting.show_pairs(images, targets, scenes.num_classes,
                          titles=["plain"] * 4 + ["texture"] * 3, axes_size=1.05)
plotting.class_legend(fig, scenes.class_names, ncol=6)
fig.suptitle("DigitScenes (imbalance s = 1): images and labels (colour = class)")
plt.show()

# %% [markdown]
# The long tail in pixels, for three values of the Zipf exponent (log scale: each step of
# the grid is a factor of ten):

# %% tags=["hide-input"]
freqs = {}
for s in (0.0, 1.0, 2.0):
    ds = DigitScenes(split="train", num_samples=P.train_samples, size=setup.data.size, imbalance=s, seed=1000)
    freqs[f"s = {s:g}"] = ds.class_pixel_frequencies()
ax = plotting.plot_class_frequencies(freqs, list(DigitScenes.class_names))
ax.set_title("Share of training pixels per class")
ax.legend(title="imbalance", frameon=False)
plt.show()

ratio = {k: float(v[1] / v[10]) for k, v in freqs.items()}
glue("bg_share", f"{100 * freqs['s = 1'][0]:.0f}")
glue("ratio_s0", f"{ratio['s = 0']:.1f}")
glue("ratio_s1", f"{ratio['s = 1']:.1f}")
glue("ratio_s2", f"{ratio['s = 2']:.0f}")

# %% [markdown]
# Background owns about {glue:text}`bg_share`% of the pixels. Among the digits, class "0"
# has {glue:text}`ratio_s0` times the pixels of class "9" at $s = 0$ (digits differ in
# ink), {glue:text}`ratio_s1` times at $s = 1$ and {glue:text}`ratio_s2` times at $s = 2$.
# Chapter 0's baseline and the recall-loss and loss max-pooling chapters train on this
# long tail.
#
# ## `SalientDigits`: foreground maps and sloppy annotators
#
# One large, high-contrast digit is the salient object; smaller, fainter digits and
# fragments are distractors. The ground truth is the salient digit's mask. To test
# Margolin et al.'s claim that the Weighted F-measure ranks maps stably under imprecise
# ground truth, the library degrades masks as a sloppy annotator would: dilated, eroded,
# with a jittered boundary, or traced as a coarse polygon.

# %%
salient = SalientDigits(split="train", num_samples=64, size=setup.data.size, seed=1000)
idx = 0
image, mask = salient[idx]
strength = {"dilate": 2, "erode": 1, "jitter": 2, "polygon": 2}
fig, axes = plt.subplots(1, 2 + len(DEGRADATIONS), figsize=(plotting.PAGE_WIDTH, 1.7))
axes[0].imshow(image[0], cmap="gray", vmin=0, vmax=1)
axes[0].set_title("image")
axes[1].imshow(mask, cmap="gray")
axes[1].set_title("ground truth")
rows = []
for ax, kind in zip(axes[2:], DEGRADATIONS):
    sloppy = salient.sloppy_masks(kind, strength[kind], seed=0)
    ax.imshow(sloppy[idx], cmap="gray")
    ax.set_title(f"{kind} ({strength[kind]} px)")
    gt_all, sl_all = salient.labels.astype(bool), sloppy.astype(bool)
    iou = (gt_all & sl_all).sum(axis=(1, 2)) / np.maximum((gt_all | sl_all).sum(axis=(1, 2)), 1)
    rows.append({"degradation": kind, "strength (px)": strength[kind], "mean IoU with ground truth": float(iou.mean())})
for ax in axes:
    ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
plt.show()

import pandas as pd  # noqa: E402

markdown("Mean IoU between each sloppy ground truth and the true mask, over "
         f"{len(salient)} images:\n\n" + table(pd.DataFrame(rows)))

# %% [markdown]
# ## `ClutteredDigits`: a small digit on a large canvas
#
# Learning to Zoom claims that a saliency-based sampler lets a network see a small object
# at high resolution without processing the whole image at high resolution. Here a
# single digit sits at a random place on a 128x128 canvas among fragments of other
# digits; the `digit_size` knob sets how small the object is.

# %% tags=["hide-input"]
fig, axes = plt.subplots(2, 4, figsize=(plotting.PAGE_WIDTH, 3.9))
shares = {}
for row, size in zip(axes, (12, 28)):
    cl = ClutteredDigits(split="train", num_samples=64, digit_size=size, seed=1000)
    shares[size] = 100 * size**2 / cl.images.shape[-1] ** 2
    for ax, i in zip(row, range(4)):
        image, label = cl[i]
        ax.imshow(image[0], cmap="gray", vmin=0, vmax=1)
        y0, x0, y1, x1 = cl.boxes[i]
        ax.add_patch(plt.Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0, y1 - y0, fill=False, ec="tab:orange", lw=1.2))
        ax.set_title(f"digit {int(label)}, {size} px", fontsize="small")
        ax.set_xticks([]), ax.set_yticks([]), ax.grid(False)
fig.suptitle("ClutteredDigits: the target digit is boxed (orange)")
plt.show()
glue("share_small", f"{shares[12]:.1f}")
glue("share_large", f"{shares[28]:.1f}")

# %% [markdown]
# A 12-pixel digit covers {glue:text}`share_small`% of the canvas, a 28-pixel one
# {glue:text}`share_large`%. Downsampling the canvas uniformly to the classifier's input
# size shrinks the small digit below legibility; that is what the saliency sampler is
# meant to avoid.
