"""One figure style for the whole book, and the plots the chapters share.

Call :func:`set_style` once at the top of a notebook. Figures are sized for the page
width of the book (``PAGE_WIDTH`` inches), with labelled axes (units where there are
any) and legends; label maps use one fixed palette so a class has the same colour in
every chapter.
"""

from __future__ import annotations

from typing import Dict, Iterable, List, Optional, Sequence

import numpy as np

PAGE_WIDTH = 7.5  # inches: the book's text column at 100 dpi renders at ~750 px
_STYLE = dict(style="whitegrid", context="notebook", font_scale=0.95)


def set_style() -> None:
    """Apply the book's seaborn style (whitegrid, notebook context, colour-blind palette)."""
    import matplotlib as mpl
    import seaborn as sns

    sns.set_theme(palette="colorblind", **_STYLE)
    mpl.rcParams.update(
        {
            "figure.dpi": 100,
            "savefig.dpi": 150,
            "figure.figsize": (PAGE_WIDTH, PAGE_WIDTH * 0.5),
            "figure.constrained_layout.use": True,
            "axes.titlesize": "medium",
            "image.interpolation": "nearest",
        }
    )


def label_colors(num_classes: int) -> np.ndarray:
    """RGB colours (num_classes, 3) in [0, 1]: class 0 (background) black, then a
    qualitative palette (tab20's strong shades) for the foreground classes."""
    import matplotlib as mpl

    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    tab = mpl.colormaps["tab20"].colors
    strong = [tab[i] for i in range(0, 20, 2)] + [tab[i] for i in range(1, 20, 2)]
    colors = [(0.0, 0.0, 0.0)] + [strong[i % len(strong)] for i in range(num_classes - 1)]
    return np.asarray(colors, dtype=float)


def colorize(labels, num_classes: int, ignore_index: Optional[int] = None) -> np.ndarray:
    """Map an integer label image (H, W) to RGB (H, W, 3); ignored pixels are white."""
    labels = np.asarray(labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be a 2-D integer array, got shape {labels.shape} dtype {labels.dtype}")
    colors = label_colors(num_classes)
    ignored = labels == ignore_index if ignore_index is not None else np.zeros(labels.shape, bool)
    valid = labels[~ignored]
    if valid.size and (valid.min() < 0 or valid.max() >= num_classes):
        raise ValueError(f"labels must lie in [0, {num_classes - 1}], found [{valid.min()}, {valid.max()}]")
    out = colors[np.where(ignored, 0, labels)]
    out[ignored] = 1.0
    return out


def show_pairs(
    images: Sequence,
    targets: Sequence,
    num_classes: int,
    titles: Optional[Sequence[str]] = None,
    target_title: str = "label",
    axes_size: float = 1.6,
):
    """A 2-row grid: images (grey) on top, their label maps (class colours) below."""
    import matplotlib.pyplot as plt

    n = len(images)
    if n == 0 or n != len(targets):
        raise ValueError(f"need as many targets as images (>0), got {n} and {len(targets)}")
    fig, axes = plt.subplots(2, n, figsize=(min(PAGE_WIDTH, axes_size * n), 2 * axes_size + 0.3), squeeze=False)
    for i in range(n):
        image = np.asarray(images[i]).squeeze()
        axes[0, i].imshow(image, cmap="gray", vmin=0, vmax=1)
        target = np.asarray(targets[i]).squeeze()
        axes[1, i].imshow(colorize(target.astype(np.int64), num_classes, ignore_index=255))
        if titles is not None:
            axes[0, i].set_title(titles[i], fontsize="small")
        for ax in axes[:, i]:
            ax.set_xticks([])
            ax.set_yticks([])
            ax.grid(False)
    axes[0, 0].set_ylabel("image")
    axes[1, 0].set_ylabel(target_title)
    return fig


def class_legend(fig, class_names: Sequence[str], ncol: int = 6) -> None:
    """Add a legend of the label colours below the figure's axes."""
    from matplotlib.patches import Patch

    colors = label_colors(len(class_names))
    handles = [Patch(facecolor=c, edgecolor="0.5", label=n) for c, n in zip(colors, class_names)]
    fig.legend(handles=handles, ncol=ncol, fontsize="small", frameon=False, loc="outside lower center")


def plot_class_frequencies(
    frequencies: Dict[str, Sequence[float]], class_names: Sequence[str], ax=None, log: bool = True
):
    """Bar plot of per-class pixel frequencies (%), one hue per data set / setting."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    rows = []
    for setting, freqs in frequencies.items():
        freqs = np.asarray(freqs, dtype=float)
        if freqs.shape != (len(class_names),):
            raise ValueError(f"{setting!r}: expected {len(class_names)} frequencies, got {freqs.shape}")
        rows += [{"class": c, "setting": setting, "pixels (%)": 100 * f} for c, f in zip(class_names, freqs)]
    if ax is None:
        _, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.0))
    sns.barplot(data=pd.DataFrame(rows), x="class", y="pixels (%)", hue="setting", ax=ax)
    if log:
        ax.set_yscale("log")
        ax.set_ylabel("pixels (%, log scale)")
    ax.set_xlabel("class")
    return ax


def plot_history(histories: Dict[str, List[dict]], key: str = "loss", ax=None, ylabel: Optional[str] = None,
                 per_seed: bool = False):
    """Training curves: ``key`` against the step for each named run (mean ± sd over seeds
    when a name maps to several runs, a list of histories; ``per_seed=True``: one thin line per
    history instead, which shows a seed that stalls where the mean would hide it). A history is
    a list of entries with ``step`` (e.g. the ``history`` of a run)."""
    import matplotlib.pyplot as plt
    import pandas as pd
    import seaborn as sns

    if not isinstance(histories, dict) or not histories:
        raise ValueError("histories must be a non-empty dict {name: history or [history, ...]}")
    if not isinstance(key, str):
        raise TypeError(f"key must be a str, got {type(key).__name__}")
    if not isinstance(per_seed, bool):
        raise TypeError(f"per_seed must be a bool, got {type(per_seed).__name__}")
    rows = []
    for label, runs in histories.items():
        runs = runs if runs and isinstance(runs[0], list) else [runs]
        for seed, history in enumerate(runs):
            rows += [{"step": h["step"], key: h[key], "run": label, "seed": seed} for h in history if key in h]
    if not rows:
        raise ValueError(f"no history entry has the key {key!r}")
    if ax is None:
        _, ax = plt.subplots(figsize=(PAGE_WIDTH, 3.0))
    if per_seed:
        sns.lineplot(data=pd.DataFrame(rows), x="step", y=key, hue="run", units="seed", estimator=None,
                     linewidth=1.0, alpha=0.8, ax=ax)
    else:
        sns.lineplot(data=pd.DataFrame(rows), x="step", y=key, hue="run", errorbar="sd", ax=ax)
    ax.set_xlabel("optimiser step")
    ax.set_ylabel(ylabel or key)
    return ax
