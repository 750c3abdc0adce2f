r"""Foreground-map metrics: Weighted F-measure, MAE, F-measure curve and S-measure.

A *foreground map* is a prediction :math:`D \in [0, 1]^{H \times W}` scored against a
binary ground truth :math:`G \in \{0, 1\}^{H \times W}` (salient-object detection,
binary segmentation). This module computes, batched in torch, the four numbers that
salient-object papers report, and agrees with PySODMetrics (``normalize=False``) to
rounding error in float64 (the tests hold it to ``1e-9``):

* :func:`~pixelweight.metrics.weighted_fmeasure`: the exact Weighted F-measure :math:`F^w_\beta` of Margolin,
  Zelnik-Manor and Tal (*How to Evaluate Foreground Maps?*, CVPR 2014), written with
  differentiable torch operations so that :math:`1 - F^w_\beta` can be a training loss
  (Kolkin et al., ICCV 2017). What depends on :math:`G` only is computed once by
  :func:`~pixelweight.metrics.wfm_gt_terms` and can be cached per image.
* :func:`~pixelweight.metrics.mae`: mean absolute error (Perazzi et al., CVPR 2012).
* :func:`~pixelweight.metrics.fmeasure_curve`, :func:`~pixelweight.metrics.max_fmeasure`, :func:`~pixelweight.metrics.dataset_max_fmeasure`: the
  F-measure at 256 thresholds (Achanta et al., CVPR 2009) with :math:`\beta^2 = 0.3`.
* :func:`~pixelweight.metrics.s_measure`: the structure measure of Fan et al. (ICCV 2017).

**Inputs (every function).** ``pred``: floating tensor of shape (N, H, W) or
(N, 1, H, W) with values in [0, 1] (no NaN). ``gt``: tensor of shape (N, H, W) or (N, 1, H, W) with the same N, H, W, on
the same device; bool, or integer / floating holding only the values 0 and 1 (the same
rule as the library's binary losses). Every function returns one value per image,
shape (N,), in ``pred``'s dtype and on its device. float16 / bfloat16 predictions are
computed in float32 and the result is cast back.

**Deviations from PySODMetrics (deliberate, and tested).**

* :func:`~pixelweight.metrics.fmeasure_curve` is ordered by *increasing* threshold (column ``t`` is the
  threshold ``t``); PySODMetrics stores the same 256 values in decreasing threshold
  order, so ``ours == theirs[::-1]``.
* :func:`~pixelweight.metrics.s_measure`: where the ground-truth centroid rounds onto the last row or
  column, one of the four quadrants of the region term is empty; PySODMetrics (and the
  MATLAB original) then returns NaN. Here the empty quadrant, whose area weight is 0,
  contributes 0, which is the value every other quadrant split gives in the limit.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from typing import NamedTuple, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import distance_transform_edt

from pixelweight._validation import check_float, check_tensor

__all__ = [
    "ForegroundMetrics",
    "WFMTerms",
    "wfm_gt_terms",
    "weighted_fmeasure",
    "mae",
    "fmeasure_curve",
    "max_fmeasure",
    "dataset_max_fmeasure",
    "s_measure",
    "NUM_THRESHOLDS",
]

#: MATLAB's ``eps`` (:math:`2^{-52}`), the constant of the reference implementations.
EPS = float(np.spacing(1))
#: Number of thresholds of the F-measure curve: ``floor(255 * pred) >= t``, t = 0..255.
NUM_THRESHOLDS = 256
# Margolin's constants: the 7x7 Gaussian of sigma 5 (MATLAB ``fspecial('gaussian', 7, 5)``)
# and alpha = ln(0.5) / 5, so that a false positive 5 pixels away weighs 1.5.
_WFM_KERNEL_SIZE = 7
_WFM_SIGMA = 5.0
_WFM_ALPHA = math.log(0.5) / 5


# --------------------------------------------------------------------------- validation


def _compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; every other floating dtype is computed in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _squeeze_channel(x: torch.Tensor, name: str) -> torch.Tensor:
    """(N, H, W) or (N, 1, H, W) -> (N, H, W), rejecting every other shape."""
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    elif x.ndim != 3:
        raise ValueError(f"{name} must have shape (N, H, W) or (N, 1, H, W), got {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name} is an empty batch (N = 0), got shape {tuple(x.shape)}")
    if x.shape[1] == 0 or x.shape[2] == 0:
        raise ValueError(f"{name} has an empty image (H or W = 0), got shape {tuple(x.shape)}")
    return x


def _check_gt(gt) -> torch.Tensor:
    """Validate a ground truth on its own; return it as a bool (N, H, W) tensor."""
    check_tensor(gt, "gt")
    g = _squeeze_channel(gt, "gt")
    if g.dtype == torch.bool:
        return g
    if g.is_complex():
        raise ValueError(f"gt must be bool, integer or floating, got dtype {g.dtype}")
    if not bool(((g == 0) | (g == 1)).all()):
        bad = g[(g != 0) & (g != 1)]
        raise ValueError(
            f"gt must be binary (bool, or only the values 0 and 1), found the value {bad[0].item()!r}"
        )
    return g == 1


def _check_inputs(pred, gt) -> Tuple[torch.Tensor, torch.Tensor]:
    """Validate ``(pred, gt)``; return pred as (N, H, W) in the compute dtype, gt as bool (N, H, W)."""
    check_tensor(pred, "pred")
    check_tensor(gt, "gt")
    if not pred.is_floating_point():
        raise ValueError(f"pred must be a floating tensor with values in [0, 1], got dtype {pred.dtype}")
    x = _squeeze_channel(pred, "pred")
    g = _check_gt(gt)
    if g.shape != x.shape:
        raise ValueError(
            f"pred and gt must describe the same (N, H, W), got pred {tuple(pred.shape)} "
            f"and gt {tuple(gt.shape)}"
        )
    if g.device != x.device:
        raise ValueError(f"gt is on {g.device} but pred is on {x.device}")
    lo, hi = (float(v) for v in torch.aminmax(x.detach()))  # one pass; a NaN makes both NaN
    if math.isnan(lo) or math.isnan(hi):
        raise ValueError("pred contains NaN")
    if lo < 0 or hi > 1:
        raise ValueError(f"pred values must lie in [0, 1], found values in [{lo}, {hi}]")
    return x.to(_compute_dtype(x.dtype)), g


def _check_beta2(beta2) -> float:
    beta2 = check_float(beta2, "beta2", minimum=0.0)
    if math.isinf(beta2):
        raise ValueError("beta2 must be finite, got inf")
    return beta2


def _abs_error(x: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r""":math:`E = |G - D|`, written as the linear map :math:`G(1 - D) + (1 - G)D`.

    For binary :math:`G` and :math:`D \in [0, 1]` the two are equal, and the linear form
    has no kink at :math:`D = G` (a clean gradient for the Weighted-F-measure loss).
    """
    return torch.where(g, 1 - x, x)


# ------------------------------------------------------------------- Weighted F-measure


class WFMTerms(NamedTuple):
    r"""The parts of the Weighted F-measure that depend on the ground truth only.

    Built by :func:`wfm_gt_terms`; pass it to :func:`weighted_fmeasure` (``terms=``) to
    skip the distance transform, e.g. when a training loop caches it per image.

    Attributes
    ----------
    gt : torch.Tensor
        bool (N, H, W), the ground truth :math:`G` the terms were computed for.
    distance : torch.Tensor
        floating (N, H, W), :math:`\Delta_i`: Euclidean distance from pixel ``i`` to the
        nearest foreground pixel (0 on the foreground, ``inf`` in an image without one).
    nearest : torch.Tensor
        long (N, H, W), :math:`\nu(i)`: flat index ``row * W + col`` of that nearest
        foreground pixel (``i`` itself on the foreground and in an image without one).
    weight : torch.Tensor
        floating (N, H, W), the pixel importance :math:`B_i`: 1 on the foreground,
        :math:`2 - e^{\alpha \Delta_i}` with :math:`\alpha = \ln(0.5)/5` on the background
        (2 in an image without foreground).
    has_foreground : torch.Tensor
        bool (N,), whether each image has at least one foreground pixel.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import wfm_gt_terms
    >>> gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    >>> # the second image has no foreground
    >>> gt[0, 2:6, 2:6] = True
    >>> terms = wfm_gt_terms(gt, dtype=torch.float32)
    >>> terms.has_foreground
    tensor([ True, False])
    >>> terms.weight.dtype, terms.nearest.shape
    (torch.float32, torch.Size([2, 8, 8]))
    """

    gt: torch.Tensor
    distance: torch.Tensor
    nearest: torch.Tensor
    weight: torch.Tensor
    has_foreground: torch.Tensor

    def to(self, device=None, dtype: Optional[torch.dtype] = None) -> "WFMTerms":
        """Move every tensor to ``device``; cast the floating ones to ``dtype``."""
        return WFMTerms(
            gt=self.gt.to(device),
            distance=self.distance.to(device=device, dtype=dtype),
            nearest=self.nearest.to(device),
            weight=self.weight.to(device=device, dtype=dtype),
            has_foreground=self.has_foreground.to(device),
        )


def wfm_gt_terms(gt: torch.Tensor, dtype: torch.dtype = torch.float64) -> WFMTerms:
    r"""Precompute :math:`\Delta`, :math:`\nu` and :math:`B` of the Weighted F-measure.

    MATLAB's ``[Dst, IDXT] = bwdist(G)`` is :func:`scipy.ndimage.distance_transform_edt`
    of :math:`\neg G` with ``return_indices=True``; it runs on the CPU, one image at a
    time (about 2 ms for 256x256; the images are spread over ``torch.get_num_threads()``
    threads, scipy releasing the GIL), and the result is moved to ``gt``'s device. Ties
    between equidistant foreground pixels are broken as scipy (and so PySODMetrics)
    breaks them: scipy's feature transform itself gives :math:`\nu`, and :math:`\Delta` is
    computed from it as scipy computes it.

    To compute them once per image of a training set and serve them with the batch, wrap the
    data set in :class:`pixelweight.data.WithWFMTerms`.

    Parameters
    ----------
    gt : torch.Tensor
        Ground truth, (N, H, W) or (N, 1, H, W); bool, or integer / floating 0-1.
    dtype : torch.dtype
        Floating dtype of ``distance`` and ``weight``; use the dtype of the predictions
        they will score (the weights are computed in float64 and then cast).

    Returns
    -------
    WFMTerms
        The ground-truth-only terms, on ``gt``'s device.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import weighted_fmeasure, wfm_gt_terms
    >>> gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True
    >>> terms = wfm_gt_terms(gt)
    >>> # distance to the object
    >>> [round(v, 4) for v in terms.distance[0, 0, :4].tolist()]
    [2.8284, 2.2361, 2.0, 2.0]
    >>> # B = 2 - exp(alpha * distance)
    >>> [round(v, 4) for v in terms.weight[0, 0, :4].tolist()]
    [1.3244, 1.2665, 1.2421, 1.2421]
    >>> pred = gt.double() * 0.8 + 0.1
    >>> [round(v, 4) for v in weighted_fmeasure(pred, gt, terms=terms).tolist()]
    [0.802]
    """
    g = _check_gt(gt)
    if not isinstance(dtype, torch.dtype):
        raise TypeError(f"dtype must be a torch.dtype, got {type(dtype).__name__}")
    if not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating dtype, got {dtype}")
    g_np = g.detach().cpu().numpy()
    n, h, w = g_np.shape
    has_fg = g_np.reshape(n, -1).any(1)
    # Delta and B are functions of the integer Delta^2: looked up in float64 tables of
    # sqrt(k) and 2 - exp(alpha sqrt(k)) cast to the output dtype (the same values as casting
    # after), up to the largest Delta^2 the image size allows
    largest = (h - 1) ** 2 + (w - 1) ** 2
    # scipy writes int32 coordinates; Delta^2 is computed in int32 while it fits
    index_dtype = np.int32 if largest < 2**31 else np.int64
    # per pixel for distances over about 1,000 pixels, or when the table would outgrow the batch
    tabled = largest < _WFM_TABLE_LIMIT and largest < 4 * n * h * w
    # numpy's own dtype when it has it and the tables serve it; else float64, cast by torch at the end
    table_dtype = dtype if tabled and dtype in _NUMPY_FLOATS else torch.float64
    out_dtype = _NUMPY_FLOATS[table_dtype]
    tables = _wfm_tables(1 << max(largest, 1).bit_length(), table_dtype) if tabled else None
    nearest = np.empty((n, h, w), dtype=np.int64)
    distance = np.empty((n, h, w), dtype=out_dtype)
    weight = np.empty((n, h, w), dtype=out_dtype)
    row_of = np.arange(h, dtype=index_dtype).reshape(h, 1)
    col_of = np.arange(w, dtype=index_dtype).reshape(1, w)

    def transform(k: int) -> None:
        """Image ``k``, whole (its arrays stay in the cache): nu(i) = (row, col) of the nearest
        pixel where the input ~G is 0, i.e. G = 1 (scipy's feature transform, Maurer et al., whose
        ties are PySODMetrics' ties), then nu as a flat index, Delta and B."""
        if not has_fg[k]:  # no foreground: nu(i) = i, Delta = inf, B = 2 (never used: Fw = 0)
            nearest[k] = np.arange(h * w, dtype=np.int64).reshape(h, w)
            distance[k] = np.inf
            weight[k] = 2.0
            return
        feature = np.empty((2, h, w), dtype=np.int32)  # scipy's only choice
        distance_transform_edt(~g_np[k], return_distances=False, return_indices=True, indices=feature)
        rows, cols = feature if index_dtype is np.int32 else feature.astype(np.int64)
        np.multiply(rows, w, out=nearest[k], dtype=np.int64)
        nearest[k] += cols
        # Delta^2 = (row - i_row)^2 + (col - i_col)^2, an exact integer (in place: rows, cols)
        np.subtract(rows, row_of, out=rows)
        np.subtract(cols, col_of, out=cols)
        squared = np.multiply(rows, rows, out=rows)
        squared += np.multiply(cols, cols, out=cols)
        if tables is not None:
            np.take(tables[0], squared, out=distance[k])
            np.take(tables[1], squared, out=weight[k])
        else:  # numpy's root, correctly rounded as scipy's
            root = np.sqrt(squared, dtype=np.float64)
            distance[k] = root
            weight[k] = 2.0 - np.exp(_WFM_ALPHA * root)

    # scipy and numpy release the GIL: the images run on torch's intra-op threads
    workers = min(torch.get_num_threads(), n)
    if workers > 1:
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(transform, range(n)))
    else:
        for k in range(n):
            transform(k)
    has = torch.from_numpy(has_fg)
    nearest = torch.from_numpy(nearest)
    distance = torch.from_numpy(distance).to(dtype)
    weight = torch.from_numpy(weight).to(dtype)
    device = g.device
    return WFMTerms(
        gt=g.clone(),
        distance=distance.to(device),
        nearest=nearest.to(device),
        weight=weight.to(device),
        has_foreground=has.to(device),
    )


#: The squared distances below which :func:`wfm_gt_terms` looks :math:`\Delta` and :math:`B` up in a
#: table (two float64 tables of at most 2**21 entries, 32 MB; a 256x256 image needs 2**17).
_WFM_TABLE_LIMIT = 1 << 21
#: The floating dtypes numpy has, for the tables of :func:`wfm_gt_terms`.
_NUMPY_FLOATS = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}


@lru_cache(maxsize=8)
def _wfm_tables(size: int, dtype: torch.dtype) -> Tuple[np.ndarray, np.ndarray]:
    r""":math:`\Delta = \sqrt{k}` and :math:`B = 2 - e^{\alpha \Delta}` for ``k = 0..size-1``, computed in
    float64 (numpy's correctly rounded root, as scipy's; torch's exp), cast once by torch to
    ``dtype`` (as the per-pixel path casts), as read-only numpy arrays (cached: a training loop
    that computes terms per batch builds them once)."""
    distance = torch.from_numpy(np.sqrt(np.arange(size, dtype=np.float64)))
    weight = distance.mul(_WFM_ALPHA).exp_().neg_().add_(2)
    tables = tuple(t.to(dtype).numpy() for t in (distance, weight))
    for t in tables:
        t.flags.writeable = False
    return tables


@lru_cache(maxsize=None)
def _gaussian_kernel(dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    r"""MATLAB's ``fspecial('gaussian', 7, 5)`` as a (1, 1, 7, 7) conv2d weight.

    :math:`K(u, v) \propto \exp(-(u^2 + v^2) / 2\sigma^2)` for :math:`u, v \in [-3, 3]`,
    :math:`\sigma = 5`, normalised to sum 1. Built in float64 once per (dtype, device);
    a constant, not a parameter.
    """
    r = (_WFM_KERNEL_SIZE - 1) / 2
    u = torch.arange(-r, r + 1, dtype=torch.float64)
    k = torch.exp(-(u[:, None] ** 2 + u[None, :] ** 2) / (2 * _WFM_SIGMA**2))
    k = torch.where(k < torch.finfo(k.dtype).eps * k.max(), torch.zeros_like(k), k)  # fspecial
    k = k / k.sum()
    return k.to(device=device, dtype=dtype).reshape(1, 1, _WFM_KERNEL_SIZE, _WFM_KERNEL_SIZE)


def _conv_blur(x: torch.Tensor) -> torch.Tensor:
    """``K * x`` over (N, H, W), ``K`` the 7x7 Gaussian of σ = 5 (zero padding), differentiable.

    The library's separable block convolution (``pixelweight.losses._separable.conv_blur``),
    imported here on first use (the losses package imports this module), with taps that sum
    to exactly 1 in ``x``'s dtype (``unit_sum_half_kernel``): a region that is wrong
    everywhere keeps :math:`E_A = E = 1`, as in the reference's 2-D convolution.
    """
    from pixelweight.losses._separable import conv_blur, gaussian_half_kernel, unit_sum_half_kernel

    half = unit_sum_half_kernel(gaussian_half_kernel(_WFM_KERNEL_SIZE, _WFM_SIGMA), x.dtype)
    return conv_blur(x, half)


def _batch_dot(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    r"""Per image :math:`\sum_i x_i y_i` of two (N, H, W) tensors, differentiable. (A product and a
    sum: ``torch.bmm`` of (N, 1, HW) by (N, HW, 1) measured slower on the CPU.)"""
    return (x * y).sum(dim=(1, 2))


def _check_terms(terms, g: torch.Tensor) -> None:
    if not isinstance(terms, WFMTerms):
        raise TypeError(f"terms must be a WFMTerms from wfm_gt_terms(), got {type(terms).__name__}")
    if terms.gt.shape != g.shape:
        raise ValueError(
            f"terms were computed for ground truth of shape {tuple(terms.gt.shape)}, "
            f"got gt of shape {tuple(g.shape)}"
        )
    if terms.gt.device != g.device or terms.weight.device != g.device:
        raise ValueError(f"terms are on {terms.weight.device} but gt is on {g.device}; use terms.to(device)")
    if not torch.equal(terms.gt, g):
        raise ValueError("terms were computed for a different ground truth than gt")


def weighted_fmeasure(
    pred: torch.Tensor,
    gt: torch.Tensor,
    beta2: float = 1.0,
    terms: Optional[WFMTerms] = None,
) -> torch.Tensor:
    r"""The exact Weighted F-measure :math:`F^w_\beta` (Margolin et al., CVPR 2014).

    The F-measure counts every error alike; Margolin et al. weight them. Two ideas:

    *Pixel dependency.* A false negative next to correctly detected foreground is less
    harmful than an isolated one, so errors on the foreground are smoothed by their
    neighbourhood. Background pixels borrow the error of their nearest foreground pixel,
    so that the blur near the object's edge does not mix in background errors.

    *Pixel importance.* A false positive far from the object is worse than one on its
    border, so background errors are weighted up with the distance :math:`\Delta`.

    Differentiable in ``pred`` almost everywhere: every step is linear in :math:`D`
    except the minimum (a subgradient: :math:`E` where :math:`E_A \ge E`). The value
    equals PySODMetrics' ``WeightedFmeasure`` (``normalize=False``). An image without
    foreground scores 0 (PySODMetrics' convention; no gradient flows from it). The
    blur's zero padding shrinks :math:`E_A` within 3 pixels of the image border, so a
    foreground error there is partly forgiven even when the map is entirely wrong (as in
    the reference code).

    In the book: each term is pictured in
    :doc:`The Weighted F-measure: from the metric to a loss </notebooks/01_wfm/01_derivation>`.

    Parameters
    ----------
    pred : torch.Tensor
        Foreground probabilities :math:`D`, floating (N, H, W) or (N, 1, H, W) in [0, 1].
    gt : torch.Tensor
        Ground truth :math:`G`, same N, H, W; bool, or integer / floating 0-1.
    beta2 : float
        :math:`\beta^2 \ge 0`, the weight of recall relative to precision; the reference
        ``WFb.m`` and PySODMetrics use 1 (their ``beta`` argument *is* :math:`\beta^2`).
    terms : WFMTerms, optional
        ``wfm_gt_terms(gt)`` computed beforehand (e.g. cached per training image); it is
        checked against ``gt`` and cast to the compute dtype. Computed here if omitted.

    Returns
    -------
    torch.Tensor
        :math:`F^w_\beta` per image, shape (N,), in ``pred``'s dtype and device.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import weighted_fmeasure
    >>> gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True                  # a 4x4 square object
    >>> # 0.9 on the object, 0.1 elsewhere
    >>> pred = gt.double() * 0.8 + 0.1
    >>> [round(v, 4) for v in weighted_fmeasure(pred, gt).tolist()]
    [0.802]
    >>> # a false positive along the top edge
    >>> pred[:, 1, 2:6] = 0.6
    >>> [round(v, 4) for v in weighted_fmeasure(pred, gt).tolist()]
    [0.7551]
    """
    x, g = _check_inputs(pred, gt)
    beta2 = _check_beta2(beta2)
    dtype, device = x.dtype, x.device
    if terms is None:
        terms = wfm_gt_terms(g, dtype=dtype)
    else:
        _check_terms(terms, g)
    n, h, w = x.shape
    zero = x.new_zeros(())

    # E = |G - D| is 1 - D on G and D elsewhere; Ẽ_i = E_{ν(i)}: a background pixel takes the
    # error of its nearest foreground pixel, where E = 1 - D (ν(i) = i on G)
    miss = torch.rsub(x, 1)  # 1 - D: E on G
    err_t = miss.reshape(n, h * w).gather(1, terms.nearest.reshape(n, h * w)).reshape(n, h, w)
    # E_A = K * Ẽ, the 7x7 Gaussian (σ = 5) with zero padding, as two block convolutions
    err_a = _conv_blur(err_t)
    # E' = min(E, E_A) on G (the blur only forgives false negatives), E' = E elsewhere; on G,
    # B = 1 and E^w = E'; the subgradient takes E at ties (torch.minimum would split it)
    fg = g.to(dtype)
    fg_err = _batch_dot(torch.where(err_a < miss, err_a, miss), fg)
    # FP^w = Σ_{¬G} B E = Σ_i w_i D_i with w = B on the background and 0 on G (where B = 1)
    weight = terms.weight.to(dtype)
    fp_w = _batch_dot(x, torch.addcmul(weight, weight, fg, value=-1))
    fg_count = fg.sum(dim=(1, 2))
    # TP^w = |G| - Σ_G E^w
    tp_w = fg_count - fg_err
    # R^w = 1 - mean_G(E^w),   P^w = TP^w / (TP^w + FP^w + ε)
    recall = 1 - fg_err / fg_count.clamp_min(1)
    precision = tp_w / (tp_w + fp_w + EPS)
    # F^w_β = (1 + β²) P^w R^w / (β² P^w + R^w + ε);  0 without foreground
    fw = (1 + beta2) * recall * precision / (recall + beta2 * precision + EPS)
    fw = torch.where(terms.has_foreground, fw, zero)
    return fw.to(pred.dtype)


# ---------------------------------------------------------------------------------- MAE


def mae(pred: torch.Tensor, gt: torch.Tensor) -> torch.Tensor:
    r"""Mean absolute error :math:`\frac{1}{HW}\sum_i |D_i - G_i|` per image.

    Differentiable in ``pred``; equals PySODMetrics' ``MAE`` (``normalize=False``).

    Parameters
    ----------
    pred : torch.Tensor
        Floating (N, H, W) or (N, 1, H, W) in [0, 1].
    gt : torch.Tensor
        Same N, H, W; bool, or integer / floating 0-1.

    Returns
    -------
    torch.Tensor
        Shape (N,), in ``pred``'s dtype and device.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import mae
    >>> gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True
    >>> pred = gt.double() * 0.8 + 0.1
    >>> [round(v, 4) for v in mae(pred, gt).tolist()]
    [0.1]
    """
    x, g = _check_inputs(pred, gt)
    return _abs_error(x, g).mean(dim=(1, 2)).to(pred.dtype)


# -------------------------------------------------------------------------- F-measure


def fmeasure_curve(pred: torch.Tensor, gt: torch.Tensor, beta2: float = 0.3) -> torch.Tensor:
    r"""F-measure at the 256 thresholds of PySODMetrics, per image.

    The prediction is quantised to 8 bits, :math:`q_i = \lfloor 255 D_i \rfloor` (as
    ``(pred * 255).astype(np.uint8)``), and binarised at each threshold
    :math:`t = 0, \dots, 255` as :math:`q_i \ge t`. With :math:`TP_t` the foreground
    pixels kept and :math:`K_t` all pixels kept:

    .. math:: P_t = TP_t / K_t,\quad R_t = TP_t / |G|,\quad
              F_t = \frac{(1 + \beta^2) P_t R_t}{\beta^2 P_t + R_t},

    with :math:`0/0 = 0` throughout (an empty :math:`G` gives an all-zero curve).
    Not differentiable (thresholding); the result carries no gradient.

    Column ``t`` is threshold ``t`` (increasing). PySODMetrics'
    ``Fmeasure().get_results()["fm"]["curve"]`` holds the same values in decreasing
    threshold order: ``ours[k] == theirs[::-1]`` for a single image.

    Parameters
    ----------
    pred : torch.Tensor
        Floating (N, H, W) or (N, 1, H, W) in [0, 1].
    gt : torch.Tensor
        Same N, H, W; bool, or integer / floating 0-1.
    beta2 : float
        :math:`\beta^2 \ge 0`; salient-object detection uses 0.3 (precision matters more).

    Returns
    -------
    torch.Tensor
        Shape (N, 256), in ``pred``'s dtype and device. The mean F-measure of an image
        is ``curve.mean(1)``; its max F-measure is :func:`max_fmeasure`.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import fmeasure_curve
    >>> gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True
    >>> # 8-bit levels 25 (background) and 229 (object)
    >>> pred = gt.double() * 0.8 + 0.1
    >>> curve = fmeasure_curve(pred, gt)
    >>> curve.shape
    torch.Size([1, 256])
    >>> [round(v, 4) for v in curve[0, [0, 25, 26, 229, 230]].tolist()]
    [0.3023, 0.3023, 1.0, 1.0, 0.0]
    """
    x, g = _check_inputs(pred, gt)
    beta2 = _check_beta2(beta2)
    x = x.detach()
    n = x.shape[0]
    # q_i = floor(255 D_i), in the prediction's own precision like numpy's astype(uint8)
    levels = (x * 255).to(torch.uint8).reshape(n, -1).long()
    # one histogram of 2 x 256 bins per image: bin q for the background, 256 + q for G
    bins = levels + NUM_THRESHOLDS * g.reshape(n, -1).long()
    offsets = 2 * NUM_THRESHOLDS * torch.arange(n, device=x.device)[:, None]
    hist = torch.bincount((bins + offsets).flatten(), minlength=2 * NUM_THRESHOLDS * n)
    hist = hist.reshape(n, 2, NUM_THRESHOLDS)
    # counts at q >= t: reverse cumulative sums over the levels
    at_least = hist.flip(-1).cumsum(-1).flip(-1).to(x.dtype)
    tp = at_least[:, 1]
    kept = at_least.sum(1)
    fg_count = g.sum(dim=(1, 2)).to(x.dtype)[:, None]
    precision = tp / kept.clamp_min(1)  # TP_t / K_t, 0 when nothing is kept
    recall = tp / fg_count.clamp_min(1)  # TP_t / |G|, 0 when G is empty
    numerator = (1 + beta2) * precision * recall
    denominator = torch.where(numerator == 0, torch.ones_like(numerator), beta2 * precision + recall)
    return (numerator / denominator).to(pred.dtype)


def max_fmeasure(pred: torch.Tensor, gt: torch.Tensor, beta2: float = 0.3) -> torch.Tensor:
    r"""Per-image maximum of :func:`fmeasure_curve` over the 256 thresholds.

    Note that the "maxF" of salient-object papers is a *dataset* number: the maximum of
    the mean curve (one threshold for the whole data set), given by
    :func:`dataset_max_fmeasure`; it is at most the mean of these per-image maxima.

    Returns
    -------
    torch.Tensor
        Shape (N,), in ``pred``'s dtype and device.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import max_fmeasure
    >>> gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True
    >>> # some threshold separates object and background
    >>> pred = gt.double() * 0.8 + 0.1
    >>> max_fmeasure(pred, gt).tolist()
    [1.0]
    """
    return fmeasure_curve(pred, gt, beta2=beta2).amax(dim=1)


def dataset_max_fmeasure(curves: torch.Tensor) -> torch.Tensor:
    r"""The data set's max F-measure: :math:`\max_t \frac{1}{M}\sum_k F_{k,t}`.

    Concatenate the :func:`fmeasure_curve` outputs of all M images (``torch.cat``) and
    pass them here. Equals PySODMetrics' ``Fmeasure().get_results()["fm"]["curve"].max()``
    after stepping through the same images.

    Parameters
    ----------
    curves : torch.Tensor
        Floating (M, 256), M >= 1.

    Returns
    -------
    torch.Tensor
        A 0-dim tensor in ``curves``' dtype and device.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import dataset_max_fmeasure, fmeasure_curve
    >>> gt = torch.zeros(2, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True
    >>> pred = gt.double() * 0.4 + 0.5           # object 0.9, background 0.5
    >>> # object 0.3, background 0.1: a lower threshold
    >>> pred[1] = gt[1].double() * 0.2 + 0.1
    >>> curves = torch.cat([fmeasure_curve(pred[k:k + 1], gt[k:k + 1])
    ...                     for k in range(2)])
    >>> curves.amax(dim=1).tolist()              # each image alone reaches 1
    [1.0, 1.0]
    >>> # one threshold for both: less
    >>> round(dataset_max_fmeasure(curves).item(), 4)
    0.6512
    """
    check_tensor(curves, "curves")
    if not curves.is_floating_point():
        raise ValueError(f"curves must be a floating tensor, got dtype {curves.dtype}")
    if curves.ndim != 2 or curves.shape[1] != NUM_THRESHOLDS or curves.shape[0] == 0:
        raise ValueError(
            f"curves must have shape (M, {NUM_THRESHOLDS}) with M >= 1 (torch.cat of "
            f"fmeasure_curve outputs), got {tuple(curves.shape)}"
        )
    if bool(torch.isnan(curves).any()):
        raise ValueError("curves contain NaN")
    return curves.mean(dim=0).amax()


# -------------------------------------------------------------------------- S-measure


def _masked_mean(values: torch.Tensor, mask: torch.Tensor, count: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over ``mask`` (last two dims); 0 where the mask is empty."""
    zero = values.new_zeros(())
    return torch.where(mask, values, zero).sum(dim=(-2, -1)) / count.clamp_min(1)


def _s_object(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    r"""Object similarity of a region: :math:`\frac{2\mu}{\mu^2 + 1 + \sigma + \varepsilon}`.

    :math:`\mu, \sigma` are the mean and the sample standard deviation (``ddof=1``; 0
    for a single pixel) of ``values`` over ``mask``.
    """
    count = mask.sum(dim=(-2, -1)).to(values.dtype)
    mu = _masked_mean(values, mask, count)
    centred = torch.where(mask, values - mu[:, None, None], values.new_zeros(()))
    var = (centred**2).sum(dim=(-2, -1)) / (count - 1).clamp_min(1)
    sigma = torch.where(count > 1, var.sqrt(), values.new_zeros(()))
    return 2 * mu / (mu**2 + 1 + sigma + EPS)


def _round_half_even_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``round(num / den)`` for integers, ties to even (``np.round``), exactly."""
    q = torch.div(num, den, rounding_mode="floor")
    twice_r = 2 * (num - q * den)
    up = (twice_r > den) | ((twice_r == den) & (q % 2 == 1))
    return q + up.long()


def _region_score(x: torch.Tensor, gf: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    r"""Region similarity: SSIM of the four quadrants around the centroid of G, area-weighted."""
    n, h, w = x.shape
    device, dtype = x.device, x.dtype
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    count = g.sum(dim=(1, 2)).clamp_min(1)  # images without foreground never reach here
    # centroid (rounded half to even, as np.round), +1 so that rows < cy are the top part
    cy = _round_half_even_div((g.sum(2) * rows).sum(1), count) + 1
    cx = _round_half_even_div((g.sum(1) * cols).sum(1), count) + 1
    top = rows[None, :] < cy[:, None]  # (N, H)
    left = cols[None, :] < cx[:, None]  # (N, W)
    top, left = top[:, None, :, None], left[:, None, None, :]
    quadrants = torch.cat([top & left, top & ~left, ~top & left, ~top & ~left], dim=1)  # (N, 4, H, W)
    # area weights of the quadrants: w_lt, w_rt, w_lb and 1 - their sum
    area = h * w
    w_lt = (cx * cy).to(dtype) / area
    w_rt = (cy * (w - cx)).to(dtype) / area
    w_lb = ((h - cy) * cx).to(dtype) / area
    weights = torch.stack([w_lt, w_rt, w_lb, 1 - w_lt - w_rt - w_lb], dim=1)

    # SSIM of each quadrant (Wang et al. without stabilising constants, as in Fan et al.)
    size = quadrants.sum(dim=(2, 3)).to(dtype)  # (N, 4)
    xq, gq = x[:, None].expand_as(quadrants), gf[:, None].expand_as(quadrants)
    mu_x = _masked_mean(xq, quadrants, size)
    mu_y = _masked_mean(gq, quadrants, size)
    zero = x.new_zeros(())
    dx = torch.where(quadrants, xq - mu_x[..., None, None], zero)
    dy = torch.where(quadrants, gq - mu_y[..., None, None], zero)
    norm = size - 1 + EPS
    var_x = (dx**2).sum(dim=(2, 3)) / norm
    var_y = (dy**2).sum(dim=(2, 3)) / norm
    cov = (dx * dy).sum(dim=(2, 3)) / norm
    # Q = 4 μx μy σxy / ((μx² + μy²)(σx² + σy²)); 1 when numerator and denominator are both 0
    num = 4 * mu_x * mu_y * cov
    den = (mu_x**2 + mu_y**2) * (var_x + var_y)
    ssim = torch.where(num != 0, num / (den + EPS), (den == 0).to(dtype))
    ssim = torch.where(size > 0, ssim, zero)  # an empty quadrant (weight 0) adds nothing
    return (ssim * weights).sum(dim=1)


def s_measure(pred: torch.Tensor, gt: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    r"""Structure measure :math:`S = \alpha S_o + (1 - \alpha) S_r` (Fan et al., ICCV 2017).

    * Object term :math:`S_o = \bar G\, O(D|_G) + (1 - \bar G)\, O((1 - D)|_{\neg G})` with
      :math:`O = 2\mu / (\mu^2 + 1 + \sigma + \varepsilon)` and :math:`\bar G` the
      foreground fraction.
    * Region term :math:`S_r`: split the image at the centroid of :math:`G` into four
      quadrants and sum their SSIM weighted by area.
    * :math:`S = \max(0, \cdot)`; without foreground :math:`S = 1 - \bar D`, with a full
      foreground :math:`S = \bar D`.

    Follows PySODMetrics' ``Smeasure`` (``normalize=False``), including its rounding of
    the centroid (0-based, half to even) and its exact-zero test in the SSIM (``0/0 = 1``);
    an empty quadrant contributes 0 where PySODMetrics returns NaN (see the module notes).
    Not differentiable; the result carries no gradient.

    Parameters
    ----------
    pred : torch.Tensor
        Floating (N, H, W) or (N, 1, H, W) in [0, 1].
    gt : torch.Tensor
        Same N, H, W; bool, or integer / floating 0-1.
    alpha : float
        Weight of the object term, in [0, 1].

    Returns
    -------
    torch.Tensor
        Shape (N,), in ``pred``'s dtype and device.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import s_measure
    >>> gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True
    >>> pred = gt.double() * 0.8 + 0.1
    >>> [round(v, 4) for v in s_measure(pred, gt).tolist()]
    [0.9682]
    """
    x, g = _check_inputs(pred, gt)
    alpha = check_float(alpha, "alpha", minimum=0.0, maximum=1.0)
    x = x.detach()
    gf = g.to(x.dtype)
    fg_fraction = gf.mean(dim=(1, 2))
    mean_pred = x.mean(dim=(1, 2))
    s_obj = fg_fraction * _s_object(x, g) + (1 - fg_fraction) * _s_object(1 - x, ~g)
    s_reg = _region_score(x, gf, g)
    s = (alpha * s_obj + (1 - alpha) * s_reg).clamp_min(0)
    s = torch.where(fg_fraction == 0, 1 - mean_pred, torch.where(fg_fraction == 1, mean_pred, s))
    return s.to(pred.dtype)


class ForegroundMetrics:
    r"""Accumulate foreground-map metrics over batches of binary logits.

    :meth:`update` takes logits ``(N, 1, h, w)`` (upsampled bilinearly to the ground
    truth's size when they differ, then :math:`D = \sigma(z)`) and a binary ground truth
    ``(N, H, W)``. :meth:`compute` returns the means over images of the Weighted
    F-measure (``wfm``, β² = 1), ``mae``, ``s_measure`` and the per-image maximum
    F-measure (``mean_max_f``, β² = 0.3), plus the dataset-level ``max_f`` of SOD papers
    (the maximum of the mean F-measure curve). Under ``torch.distributed`` the sums are
    added over the ranks first, so every rank gets the metrics of the whole set.

    Examples
    --------
    >>> import torch
    >>> from pixelweight.metrics import ForegroundMetrics
    >>> gt = torch.zeros(1, 8, 8, dtype=torch.bool)
    >>> gt[:, 2:6, 2:6] = True
    >>> logits = torch.where(gt, 2.0, -2.0).unsqueeze(1)   # (N, 1, H, W)
    >>> m = ForegroundMetrics()
    >>> m.update(logits, gt)
    >>> {k: round(v, 4) for k, v in m.compute().items()}
    {'wfm': 0.7693, 'mae': 0.1192, 's_measure': 0.9563, 'mean_max_f': 1.0, 'max_f': 1.0, 'num_images': 1}
    """

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        """Forget everything seen so far."""
        self._sums = torch.zeros(4, dtype=torch.float64)  # wfm, mae, s_measure, max_f
        self._curve = torch.zeros(NUM_THRESHOLDS, dtype=torch.float64)
        self._count = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Add a batch of binary logits ``(N, 1, h, w)`` and targets ``(N, H, W)``."""
        check_tensor(logits, "logits")
        check_tensor(target, "target")
        if logits.ndim != 4 or logits.shape[1] != 1 or not logits.is_floating_point():
            raise ValueError(f"logits must be a floating (N, 1, h, w) tensor, got {tuple(logits.shape)} {logits.dtype}")
        gt = _check_gt(target)
        if gt.shape[0] != logits.shape[0]:
            raise ValueError(f"logits hold {logits.shape[0]} images but target {gt.shape[0]}")
        if tuple(logits.shape[-2:]) != tuple(gt.shape[-2:]):
            logits = torch.nn.functional.interpolate(
                logits.float(), size=tuple(gt.shape[-2:]), mode="bilinear", align_corners=False
            )
        pred = torch.sigmoid(logits.float())[:, 0]
        per_image = torch.stack(
            [weighted_fmeasure(pred, gt), mae(pred, gt), s_measure(pred, gt), max_fmeasure(pred, gt)]
        )
        self._sums += per_image.double().sum(dim=1).cpu()
        self._curve += fmeasure_curve(pred, gt).double().sum(dim=0).cpu()
        self._count += gt.shape[0]

    def compute(self) -> dict:
        """Means over every image seen (summed over ranks under ``torch.distributed``)."""
        state = torch.cat([self._sums, self._curve, torch.tensor([float(self._count)], dtype=torch.float64)])
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            device = (
                torch.device("cuda", torch.cuda.current_device())
                if torch.distributed.get_backend() == "nccl" else torch.device("cpu")
            )
            state = state.to(device)
            torch.distributed.all_reduce(state)
            state = state.cpu()
        count = float(state[-1])
        if count == 0:
            raise ValueError("ForegroundMetrics.compute() called before any update()")
        sums, curve = state[:4] / count, state[4:-1] / count
        return {
            "wfm": float(sums[0]),
            "mae": float(sums[1]),
            "s_measure": float(sums[2]),
            "mean_max_f": float(sums[3]),
            "max_f": float(curve.max()),
            "num_images": int(count),
        }
