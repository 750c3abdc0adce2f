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
# # Learning to zoom: the saliency sampler, derived and drawn
#
# A network with a fixed, small input usually sees a large image **uniformly downsampled**:
# every region loses the same share of its pixels, including the few the task needs. The
# saliency sampler of {cite:t}`recasens2018zoom` spends the same budget of input pixels
# unevenly: a saliency map says which regions matter, and the sampling grid becomes dense
# there. The regions are magnified, the rest compressed, and the image turns into a
# "caricature" of itself. This page derives the grid, shows why padding makes a uniform
# saliency the exact identity, draws the caricatures of hand-made saliency maps, and inverts
# the warp, which the segmentation notebook needs {cite:p}`thavamani2023lzu`. The
# implementation is `pixelweight.sampling`; the facts taken from the public code are tagged
# [code], the derivations [derived].
#
# **Needs:** a CPU, seconds; no training.

# %% tags=["parameters"]
profile = "ci"
device = "auto"
results_dir = "_results"
chapter = None  # set by the build: the chapter's folder under notebooks/

# %% tags=["hide-input"]
import matplotlib.pyplot as plt
import numpy as np
import torch
import torch.nn.functional as F
from skimage import data as skdata

from pixelweight import plotting
from pixelweight.book import glue, markdown
from pixelweight.sampling import (CODE_GRID_SIZE, CODE_PADDING, CODE_SIGMA, identity_grid, invert_grid,
                                  saliency_grid, unzoom, zoom)

plotting.set_style()

# %% [markdown]
# ## The grid
#
# The saliency map $S \ge 0$ lives on a coarse lattice of $g \times g$ cells with normalised
# coordinates $x' \in [-1, 1]^2$. The grid point $x$ of the output reads the input at the
# saliency-weighted Gaussian average of the cell coordinates [code]:
#
# $$
# u(x) = \frac{\sum_{x'} S(x')\,k(x, x')\,x'}{\sum_{x'} S(x')\,k(x, x')}, \qquad
# k(x, x') = \exp\!\Big(-\frac{\lVert x - x'\rVert^2}{2\sigma^2}\Big),
# $$
#
# and the output pixel at $x$ is the input at $u(x)$, read by bilinear interpolation
# (`grid_sample`). Where $S$ is large, nearby grid points are pulled toward it: the sampling is
# dense, the region magnified. The public code uses $g$ = {glue:text}`code_grid` cells, a
# Gaussian of full width at half maximum {glue:text}`code_fwhm` cells ($\sigma \approx$ {glue:text}`code_sigma`) and a
# padding of {glue:text}`code_padding` cells [code]; the paper states $\sigma$ as a third of the
# map's width instead (the code's issue #6 asks which is right) [paper, unverified].
#
# Without truncation the warp is the gradient of a convex function [derived]:
# $u(x) = x + \sigma^2 \nabla \log Z(x)$ with $Z(x) = \sum_{x'} S(x') k(x, x')$, so
# $u = \nabla \varphi$ with $\varphi(x) = \lVert x\rVert^2/2 + \sigma^2 \log Z(x)$, whose Hessian is
# the covariance of $x'$ under the weights $S k / Z$ divided by $\sigma^2$, positive
# semi-definite. The warp therefore never folds, which is what makes it invertible.

# %% tags=["hide-input"]
glue("code_grid", CODE_GRID_SIZE)
glue("code_sigma", f"{CODE_SIGMA:.2f}")
glue("code_fwhm", f"{2 * np.sqrt(2 * np.log(2)) * CODE_SIGMA:.0f}")  # FWHM = 2 sqrt(2 ln 2) sigma
glue("code_padding", CODE_PADDING)

# %% [markdown]
# ## Why the padding makes uniform saliency the identity
#
# For a constant $S$ the average is the mean of the coordinates under the Gaussian alone. In
# the middle of the map the Gaussian is symmetric around $x$ and the mean is $x$ itself; near
# the border the window is cut on the outer side, so the mean is pulled **inward**, and the
# image border is never read. The code pads the saliency map by replicating its border cells,
# with coordinates continued linearly beyond $\pm 1$ [code]. If the kernel's radius $R$ is at
# most the padding $P$, every window lies inside the padded map and [derived]
#
# $$
# u(x) = x + \frac{\sum_{|d| \le R} k(d)\, d}{\sum_{|d| \le R} k(d)} = x,
# $$
#
# because $k$ is even: a uniform saliency gives **exactly** uniform downsampling. The figure
# measures it: the largest distance of the grid from the identity, with and without the padding.

# %% tags=["hide-input"]
flat = torch.ones(1, 1, 31, 31)
padded = saliency_grid(flat, out_size=64)
unpadded = saliency_grid(flat, out_size=64, padding=0)
ident = identity_grid(64)
err_padded = float((padded - ident).abs().max())
err_unpadded = float((unpadded - ident).abs().max())
glue("err_padded", f"{err_padded:.1e}")
glue("err_unpadded", f"{err_unpadded:.2f}")
glue("reach_unpadded", f"{float(unpadded[..., 0].max()):.2f}")


def draw_grid(ax, grid, size, step=4, color="tab:orange"):
    g = (grid[0].numpy() + 1) / 2 * (size - 1)
    for r in range(0, g.shape[0], step):
        ax.plot(g[r, :, 0], g[r, :, 1], color=color, lw=0.7)
    for c in range(0, g.shape[1], step):
        ax.plot(g[:, c, 0], g[:, c, 1], color=color, lw=0.7)
    ax.set_xlim(-0.5, size - 0.5)
    ax.set_ylim(size - 0.5, -0.5)
    ax.set_aspect("equal")
    ax.set_xlabel("x (input px)")


fig, axes = plt.subplots(1, 2, figsize=(plotting.PAGE_WIDTH * 0.7, 2.9))
draw_grid(axes[0], padded, 64)
axes[0].set_title(f"replicate padding {CODE_PADDING}: max error {err_padded:.0e}", fontsize="small")
draw_grid(axes[1], unpadded, 64)
axes[1].set_title(f"no padding: max error {err_unpadded:.2f}", fontsize="small")
axes[0].set_ylabel("y (input px)")
plt.show()

# %% [markdown]
# With the code's padding the grid of a uniform map is the identity to
# {glue:text}`err_padded` (float32 rounding); without it the grid shrinks toward the centre by
# up to {glue:text}`err_unpadded` in normalised units, and the samples reach only
# $x \le$ {glue:text}`reach_unpadded` instead of 1: the image border is lost.
#
# ## Caricatures
#
# Hand-made saliency maps on scikit-image's sample photographs: a Gaussian bump on the
# photographer's face, one on the astronaut's face, and a vertical band over the cup of coffee.
# Each photograph is sampled to a {glue:text}`cari_px` x {glue:text}`cari_px` output, uniformly and by the sampler; the grid is
# drawn over the photograph (every fourth line).

# %% tags=["hide-input"]
def bump(g, cy, cx, width, height=20.0):
    """A hand-made saliency map on a g x g grid: 1 plus a Gaussian bump at (cy, cx) in [0, 1]."""
    yy, xx = torch.meshgrid(torch.linspace(0, 1, g), torch.linspace(0, 1, g), indexing="ij")
    return (1 + height * torch.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * width ** 2)))[None, None]


def band(g, cx, width, height=10.0):
    xx = torch.linspace(0, 1, g)[None, :].expand(g, g)
    return (1 + height * torch.exp(-((xx - cx) ** 2) / (2 * width ** 2)))[None, None]


def as_tensor(image):
    x = torch.as_tensor(image, dtype=torch.float32) / 255
    return (x[None, None] if x.ndim == 2 else x.permute(2, 0, 1)[None])


CARICATURE = 96  # side of the sampled output, pixels
glue("cari_px", CARICATURE)
photos = {
    "camera": (as_tensor(skdata.camera()), bump(31, 0.25, 0.45, 0.08)),
    "astronaut": (as_tensor(skdata.astronaut()), bump(31, 0.25, 0.42, 0.08)),
    "coffee": (as_tensor(skdata.coffee()), band(31, 0.35, 0.08)),
}
fig, axes = plt.subplots(len(photos), 4, figsize=(plotting.PAGE_WIDTH, 2.0 * len(photos)))
for row, (name, (x, s)) in zip(axes, photos.items()):
    grid = saliency_grid(s, out_size=CARICATURE)
    uniform = F.interpolate(x, size=CARICATURE, mode="bilinear", align_corners=True)
    caricature = zoom(x, grid)
    h, w = x.shape[-2:]
    show = lambda t: t[0].permute(1, 2, 0).squeeze(-1).clamp(0, 1).numpy()  # noqa: E731
    kw = {"cmap": "gray"} if x.shape[1] == 1 else {}
    row[0].imshow(show(x), **kw)
    g = (grid[0].numpy() + 1) / 2  # the grid in pixel coordinates of each axis
    for r in range(0, CARICATURE, 6):
        row[0].plot(g[r, :, 0] * (w - 1), g[r, :, 1] * (h - 1), color="tab:orange", lw=0.7)
    for c in range(0, CARICATURE, 6):
        row[0].plot(g[:, c, 0] * (w - 1), g[:, c, 1] * (h - 1), color="tab:orange", lw=0.7)
    row[1].imshow(s[0, 0], cmap="magma")
    row[2].imshow(show(uniform), **kw)
    row[3].imshow(show(caricature), **kw)
    row[0].set_ylabel(name, fontsize="small")
for ax, title in zip(axes[0], ["photograph and grid", "saliency (31 x 31 cells)",
                               f"uniform, {CARICATURE} x {CARICATURE}", f"sampler, {CARICATURE} x {CARICATURE}"]):
    ax.set_title(title, fontsize="small")
for ax in axes.flat:
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_xlabel("")
    ax.grid(False)
plt.show()

# %% [markdown]
# The faces and the cup fill a larger part of the {glue:text}`cari_px` x {glue:text}`cari_px` output than under uniform
# downsampling, at the cost of everything around them; the grid lines crowd over the salient
# regions. This is what the task network sees.
#
# ## Contrast decides how much it zooms
#
# The grid does not depend on the scale of $S$ (it is normalised), only on its contrast. For a
# bump of height $h$ over a flat map the magnification at the bump grows with $h$; a low
# contrast barely moves the grid, which is why a sampler with an uninformative saliency
# "degrades gracefully" to uniform sampling [abstract].

# %% tags=["hide-input"]
heights = [0.0, 0.1, 0.5, 1, 2, 5, 10, 20, 50, 100]
mags = []
for height in heights:
    grid = saliency_grid(bump(31, 0.5, 0.5, 0.06, height), out_size=97)
    step = (grid[0, 48, 49, 0] - grid[0, 48, 47, 0]) / 2  # spacing at the centre, normalised
    mags.append(float((2 / 96) / step))
glue("contrast_low", f"{1 + heights[1]:g}")
glue("contrast_high", f"{1 + heights[-1]:g}")
glue("mag_low", f"{mags[1]:.3f}")
glue("mag_high", f"{mags[-1]:.1f}")
fig, ax = plt.subplots(figsize=(plotting.PAGE_WIDTH * 0.6, 2.6))
ax.plot([1 + h for h in heights], mags, marker="o", label="centre of a Gaussian bump (width 0.06)")
ax.set_xscale("log")
ax.set_xlabel("saliency contrast (peak / background)")
ax.set_ylabel("magnification at the peak\n(× uniform sampling)")
ax.legend(frameon=False, fontsize="small")
plt.show()

# %% [markdown]
# A bump of contrast {glue:text}`contrast_low` magnifies its centre by {glue:text}`mag_low` (1 is
# uniform sampling); a contrast of {glue:text}`contrast_high` by {glue:text}`mag_high`.
#
# ## The inverse map
#
# A classifier only needs the caricature. A segmenter predicts on the caricature's lattice,
# and its prediction has to be brought back to the original pixels: the sampling grid $G$ is
# bilinear inside each cell of its lattice (exactly what `grid_sample` computes when it reads
# it), and since the warp does not fold, every original pixel $p$ has one $q$ with $G(q) = p$.
# `invert_grid` finds it by Newton's method walking from cell to cell; `unzoom` resamples a
# prediction there (after {cite:t}`thavamani2023lzu`, who invert cell by cell analytically).
# The figure zooms the camera photograph and unzooms it again: where the warp reaches, the
# round trip gives the photograph back up to the detail the compressed regions lost.

# %% tags=["hide-input"]
x, s = photos["camera"]
ZOOMED = 128  # side of the zoomed image, pixels
side = x.shape[-1]  # the photograph's
glue("zoomed_px", ZOOMED)
grid = saliency_grid(s, out_size=ZOOMED)
small = zoom(x, grid)
inverse = invert_grid(grid, out_size=side)
back = unzoom(small, grid, out_size=side)
uniform_back = F.interpolate(F.interpolate(x, size=ZOOMED, mode="bilinear", align_corners=True), size=side,
                             mode="bilinear", align_corners=True)
yy, xx = np.mgrid[0:side, 0:side]
face = (np.abs(yy / (side - 1) - 0.25) < 0.1) & (np.abs(xx / (side - 1) - 0.45) < 0.1)
err_zoom = float((back - x).abs()[0, 0].numpy()[face].mean())
err_uniform = float((uniform_back - x).abs()[0, 0].numpy()[face].mean())
glue("covered", f"{100 * float(inverse.valid.float().mean()):.1f}")
glue("err_face_zoom", f"{err_zoom:.3f}")
glue("err_face_uniform", f"{err_uniform:.3f}")
fig, axes = plt.subplots(1, 4, figsize=(plotting.PAGE_WIDTH, 2.2))
panels = [(x, f"photograph ({side} px)"), (small, f"zoomed ({ZOOMED} px)"), (back, f"unzoomed ({side} px)"),
          (uniform_back, "uniform down and up")]
for ax, (t, title) in zip(axes, panels):
    ax.imshow(t[0, 0].clamp(0, 1), cmap="gray")
    ax.set_title(title, fontsize="small")
    ax.set_xticks([])
    ax.set_yticks([])
    ax.grid(False)
plt.show()

# %% [markdown]
# The warp reaches {glue:text}`covered`% of the original pixels (the padding keeps the grid
# on the image border). Over the face, the mean absolute error of the round trip is
# {glue:text}`err_face_zoom` after zoom and unzoom, against {glue:text}`err_face_uniform` after
# uniform downsampling to the same {glue:text}`zoomed_px` x {glue:text}`zoomed_px` and back: the zoom kept detail where the saliency
# asked for it. The next notebook asks whether a network can *learn* such a saliency from a
# classification loss; the third whether zoom and unzoom help segmentation.
