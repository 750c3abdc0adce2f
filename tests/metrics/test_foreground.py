"""Tests of :mod:`pixelweight.metrics.foreground`.

The reference is PySODMetrics (``normalize=False``: float prediction in [0, 1], bool
ground truth), stepped one image at a time; values are also checked against hand
computations, and the Weighted F-measure's gradient with float64 ``gradcheck``.
"""

import math
import time
import warnings

import numpy as np
import py_sod_metrics as psm
import pytest
import torch
from scipy.ndimage import convolve, distance_transform_edt, gaussian_filter

from pixelweight.metrics.foreground import (
    NUM_THRESHOLDS,
    WFMTerms,
    dataset_max_fmeasure,
    fmeasure_curve,
    mae,
    max_fmeasure,
    s_measure,
    weighted_fmeasure,
    wfm_gt_terms,
)

# The contract is agreement to 1e-6; in float64 the two agree to rounding, so check tighter.
REF_ATOL = 1e-9
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
WFM_ALPHA = math.log(0.5) / 5


# ------------------------------------------------------------------------- references


class _SmeasureEmptyQuadrantZero(psm.Smeasure):
    """PySODMetrics' S-measure with an empty quadrant scoring 0 instead of NaN."""

    def ssim(self, pred, gt):
        return 0.0 if pred.size == 0 else super().ssim(pred, gt)


REFERENCES = {
    # name: (ours, reference factory, result extractor)
    "weighted_fmeasure": (weighted_fmeasure, psm.WeightedFmeasure, lambda r: r["wfm"]),
    "mae": (mae, psm.MAE, lambda r: r["mae"]),
    # PySODMetrics stores the curve by decreasing threshold; ours increases.
    "fmeasure_curve": (fmeasure_curve, psm.Fmeasure, lambda r: r["fm"]["curve"][::-1]),
    "s_measure": (s_measure, psm.Smeasure, lambda r: r["sm"]),
}


def _quietly(factory, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Fmeasure's deprecation notice
        return factory(**kwargs)


def _step(metric, pred: np.ndarray, gt: np.ndarray):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NaN means of empty slices (S-measure)
        metric.step(pred, gt, normalize=False)
        return metric.get_results()


def reference(name: str, pred: np.ndarray, gt: np.ndarray, **kwargs) -> np.ndarray:
    """PySODMetrics, one fresh evaluator per image; the S-measure falls back to the
    empty-quadrant-zero variant only where PySODMetrics returns NaN."""
    _, factory, extract = REFERENCES[name]
    out = []
    for p, g in zip(pred, gt):
        value = np.asarray(extract(_step(_quietly(factory, **kwargs), p, g)), dtype=np.float64)
        if name == "s_measure" and np.isnan(value).any():
            value = np.asarray(extract(_step(_SmeasureEmptyQuadrantZero(**kwargs), p, g)))
        out.append(value)
    return np.stack(out)


def ours(name: str, pred: np.ndarray, gt: np.ndarray, **kwargs) -> np.ndarray:
    return REFERENCES[name][0](torch.from_numpy(pred), torch.from_numpy(gt), **kwargs).numpy()


# ---------------------------------------------------------------------------- inputs


def blobs(rng, n: int, h: int, w: int, fraction: float = 0.3) -> np.ndarray:
    """Smooth random foreground shapes covering about ``fraction`` of each image."""
    smooth = gaussian_filter(rng.random((n, h, w)), sigma=(0, 2, 2))
    cut = np.quantile(smooth.reshape(n, -1), 1 - fraction, axis=1)
    return smooth > cut[:, None, None]


def _cases():
    rng = np.random.default_rng(0)
    cases = {}
    for h, w in [(5, 7), (16, 16), (23, 31), (40, 17)]:
        cases[f"random_{h}x{w}"] = (rng.random((3, h, w)), blobs(rng, 3, h, w))
        cases[f"random_noise_gt_{h}x{w}"] = (rng.random((2, h, w)), rng.random((2, h, w)) < 0.4)
    h, w = 12, 15
    gt = blobs(rng, 3, h, w)
    cases["binary_pred"] = (np.stack([(rng.random((h, w)) < 0.5), gt[1], ~gt[2]]).astype(np.float64), gt)
    for c in (0.0, 1.0, 0.5):
        cases[f"constant_{c}"] = (np.full((3, h, w), c), gt)
    preds = np.stack([rng.random((h, w)), np.zeros((h, w)), np.ones((h, w)), (rng.random((h, w)) < 0.5) * 1.0])
    cases["empty_gt"] = (preds, np.zeros((4, h, w), dtype=bool))
    cases["full_gt"] = (preds, np.ones((4, h, w), dtype=bool))
    single = np.zeros((4, 9, 11), dtype=bool)
    for k, (i, j) in enumerate([(4, 5), (0, 0), (8, 10), (0, 10)]):
        single[k, i, j] = True
    cases["single_pixel_gt"] = (rng.random((4, 9, 11)), single)
    cases["one_pixel_images"] = (rng.random((2, 1, 1)), np.array([[[True]], [[False]]]))
    cases["one_row_images"] = (rng.random((2, 1, 9)), np.array([[[0, 0, 1, 1, 0, 0, 0, 0, 1]], [[1] * 9]], dtype=bool))
    border = np.zeros((4, 10, 13), dtype=bool)
    border[0, :, 0] = True  # left column
    border[1, 0, :] = True  # top row
    border[2, 6:, 8:] = True  # bottom-right block
    border[3] = True
    border[3, 1:-1, 1:-1] = False  # frame along the whole border
    cases["border_gt"] = (rng.random((4, 10, 13)), border)
    thin = np.zeros((4, 14, 12), dtype=bool)
    thin[0, 7, 2:10] = True  # horizontal line
    thin[1, 1:13, 5] = True  # vertical line
    thin[2, np.arange(12), np.arange(12)] = True  # diagonal
    thin[3, 3:11, 3:10] = True
    thin[3, 4:10, 4:9] = False  # one-pixel ring
    cases["thin_gt"] = (rng.random((4, 14, 12)), thin)
    return cases


CASES = _cases()


# ----------------------------------------------------------- agreement with PySODMetrics


@pytest.mark.parametrize("name", list(REFERENCES))
@pytest.mark.parametrize("case", list(CASES))
def test_matches_pysodmetrics(name, case):
    pred, gt = CASES[case]
    np.testing.assert_allclose(ours(name, pred, gt), reference(name, pred, gt), rtol=0, atol=REF_ATOL)


@pytest.mark.parametrize(
    "name, kwargs",
    [
        ("weighted_fmeasure", dict(beta2=0.3)),
        ("weighted_fmeasure", dict(beta2=2.0)),
        ("weighted_fmeasure", dict(beta2=0.0)),
        ("fmeasure_curve", dict(beta2=1.0)),
        ("s_measure", dict(alpha=0.0)),
        ("s_measure", dict(alpha=0.8)),
    ],
)
def test_parameters_match_pysodmetrics(name, kwargs):
    pred, gt = CASES["random_23x31"]
    ref_kwargs = {"beta": kwargs["beta2"]} if "beta2" in kwargs else kwargs  # its beta is beta²
    np.testing.assert_allclose(ours(name, pred, gt, **kwargs), reference(name, pred, gt, **ref_kwargs), atol=REF_ATOL)


def test_fmeasure_curve_matches_fmeasure_v2():
    pred, gt = CASES["random_16x16"]
    expected = []
    for p, g in zip(pred, gt):
        handler = psm.FmeasureHandler(with_dynamic=True, with_adaptive=False, beta=0.3)
        expected.append(_step(psm.FmeasureV2({"fm": handler}), p, g)["fm"]["dynamic"][::-1])
    np.testing.assert_allclose(ours("fmeasure_curve", pred, gt), np.stack(expected), atol=REF_ATOL)


def test_max_fmeasure_is_max_of_reference_curve():
    pred, gt = CASES["random_40x17"]
    expected = reference("fmeasure_curve", pred, gt).max(axis=1)
    got = max_fmeasure(torch.from_numpy(pred), torch.from_numpy(gt))
    np.testing.assert_allclose(got.numpy(), expected, atol=REF_ATOL)


def test_dataset_max_fmeasure_matches_pysodmetrics():
    soft, gt = CASES["random_16x16"]
    pred = np.concatenate([soft, (soft > 0.6).astype(np.float64)])  # soft and binary maps
    gt = np.concatenate([gt, gt])
    evaluator = _quietly(psm.Fmeasure)
    for p, g in zip(pred, gt):
        results = _step(evaluator, p, g)
    # curves of separate batches, concatenated as a user would
    pred_t, gt_t = torch.from_numpy(pred), torch.from_numpy(gt)
    curves = torch.cat([fmeasure_curve(pred_t[i : i + 2], gt_t[i : i + 2]) for i in (0, 2, 4)])
    np.testing.assert_allclose(curves.mean(0).numpy(), results["fm"]["curve"][::-1], atol=REF_ATOL)
    got = dataset_max_fmeasure(curves)
    assert got.ndim == 0
    assert got.item() == pytest.approx(results["fm"]["curve"].max(), abs=REF_ATOL)
    # the dataset maxF (one threshold for all images) is at most the mean per-image max
    assert got.item() <= curves.amax(1).mean().item() + 1e-12
    assert got.item() < curves.amax(1).mean().item()  # strictly, for these images


@pytest.mark.parametrize("name", list(REFERENCES))
def test_float32_close_to_reference(name):
    pred, gt = CASES["random_23x31"]
    pred32 = pred.astype(np.float32)
    got = ours(name, pred32, gt)
    assert got.dtype == np.float32
    # the reference on the same float32 map: identical 8-bit quantisation for the F-measure curve
    np.testing.assert_allclose(got, reference(name, pred32, gt), rtol=0, atol=2e-6)


def test_s_measure_empty_quadrant_is_zero_where_pysodmetrics_gives_nan():
    # foreground centroid on the last row: the bottom quadrants are empty
    gt = np.zeros((1, 6, 5), dtype=bool)
    gt[0, 5, 1:3] = True
    pred = np.random.default_rng(3).random((1, 6, 5))
    assert np.isnan(_step(psm.Smeasure(), pred[0], gt[0])["sm"])
    expected = _step(_SmeasureEmptyQuadrantZero(), pred[0], gt[0])["sm"]
    got = s_measure(torch.from_numpy(pred), torch.from_numpy(gt))
    assert torch.isfinite(got).all()
    assert got.item() == pytest.approx(expected, abs=REF_ATOL)


def test_s_measure_centroid_rounds_half_to_even():
    # foreground rows 1 and 2 -> centroid row 1.5 -> 2 (half to even; MATLAB's round gives 3 in
    # 1-based indexing); rows 2 and 3 -> 2.5 -> 2. PySODMetrics is the reference for both.
    rng = np.random.default_rng(4)
    gt = np.zeros((2, 8, 8), dtype=bool)
    gt[0, 1:3, 2:5] = True
    gt[1, 2:4, 3:6] = True
    pred = rng.random((2, 8, 8))
    np.testing.assert_allclose(ours("s_measure", pred, gt), reference("s_measure", pred, gt), atol=REF_ATOL)


# -------------------------------------------------------------------------- known values


def _gt_square(h=16, w=16, top=5, left=6, size=5):
    gt = torch.zeros(1, h, w, dtype=torch.bool)
    gt[0, top : top + size, left : left + size] = True
    return gt


def test_perfect_prediction():
    gt = torch.from_numpy(CASES["border_gt"][1])
    pred = gt.double()
    assert torch.equal(weighted_fmeasure(pred, gt), torch.ones(4, dtype=torch.float64))
    assert torch.equal(mae(pred, gt), torch.zeros(4, dtype=torch.float64))
    assert torch.allclose(max_fmeasure(pred, gt), torch.ones(4, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(s_measure(pred, gt), torch.ones(4, dtype=torch.float64), atol=1e-12)
    full = torch.ones(1, 5, 6, dtype=torch.bool)
    assert weighted_fmeasure(full.double(), full).item() == 1.0
    assert s_measure(full.double(), full).item() == 1.0


def test_all_wrong_prediction_scores_zero():
    gt = _gt_square()  # at least 3 pixels from the border, so the zero padding never helps
    pred = (~gt).double()
    assert weighted_fmeasure(pred, gt).item() == 0.0
    assert mae(pred, gt).item() == 1.0
    # every threshold t >= 1 keeps only background; t = 0 keeps every pixel (P = |G|/HW, R = 1)
    curve = fmeasure_curve(pred, gt)[0]
    assert torch.equal(curve[1:], torch.zeros(NUM_THRESHOLDS - 1, dtype=torch.float64))
    p = 25 / 256
    assert curve[0].item() == pytest.approx(1.3 * p / (0.3 * p + 1), abs=1e-15)


def test_empty_ground_truth_conventions():
    gt = torch.zeros(2, 6, 7, dtype=torch.bool)
    pred = torch.stack([torch.zeros(6, 7), torch.full((6, 7), 0.25)]).double()
    assert torch.equal(weighted_fmeasure(pred, gt), torch.zeros(2, dtype=torch.float64))
    assert torch.equal(fmeasure_curve(pred, gt), torch.zeros(2, NUM_THRESHOLDS, dtype=torch.float64))
    assert torch.allclose(s_measure(pred, gt), torch.tensor([1.0, 0.75], dtype=torch.float64))
    assert torch.allclose(mae(pred, gt), torch.tensor([0.0, 0.25], dtype=torch.float64))


def test_full_ground_truth_s_measure_is_mean_prediction():
    pred = torch.rand(2, 5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    gt = torch.ones(2, 5, 4, dtype=torch.bool)
    assert torch.allclose(s_measure(pred, gt), pred.mean(dim=(1, 2)), atol=1e-15)


def test_weighted_fmeasure_one_pixel_by_hand():
    # G = [[1]], D = [[p]]: E = 1 - p; the zero-padded blur keeps only the centre tap
    # K_c = 1 / (sum_u exp(-u² / 50))², so E' = K_c E; R = 1 - K_c E; FP = 0 so P = 1 (to eps).
    p = 0.3
    k_c = 1 / sum(math.exp(-(u**2) / 50) for u in range(-3, 4)) ** 2
    recall = 1 - k_c * (1 - p)
    expected = 2 * recall / (recall + 1)
    got = weighted_fmeasure(torch.tensor([[[p]]], dtype=torch.float64), torch.tensor([[[True]]]))
    assert got.item() == pytest.approx(expected, abs=1e-14)


def test_weighted_fmeasure_distant_false_positive_by_hand():
    # G = [1, 0, 0], D = [1, 0, 0.5]: every error is the false positive 2 pixels away,
    # weighted B = 2 - 0.5^(2/5); background pixels borrow E = 0 from the foreground, so R = 1.
    gt = torch.tensor([[[True, False, False]]])
    pred = torch.tensor([[[1.0, 0.0, 0.5]]], dtype=torch.float64)
    fp_w = 0.5 * (2 - 0.5 ** (2 / 5))
    precision = 1 / (1 + fp_w)
    expected = 2 * precision / (precision + 1)
    assert weighted_fmeasure(pred, gt).item() == pytest.approx(expected, abs=1e-14)
    # beta² weighs recall: with R = 1, F = (1 + b) P / (b P + 1)
    b = 0.5
    expected_b = (1 + b) * precision / (b * precision + 1)
    assert weighted_fmeasure(pred, gt, beta2=b).item() == pytest.approx(expected_b, abs=1e-14)


def test_weighted_fmeasure_penalises_distant_false_positives_more():
    gt = _gt_square(h=20, w=20, top=2, left=2, size=4)
    near, far = torch.zeros(1, 20, 20, dtype=torch.float64), torch.zeros(1, 20, 20, dtype=torch.float64)
    near[gt], far[gt] = 1.0, 1.0
    near[0, 6, 3] = 1.0  # one false positive next to the object (distance 1)
    far[0, 18, 18] = 1.0  # one false positive far away (distance ~17)
    assert weighted_fmeasure(far, gt).item() < weighted_fmeasure(near, gt).item() < 1.0
    # the unweighted view cannot tell them apart
    assert mae(far, gt).item() == mae(near, gt).item()


def test_fmeasure_curve_by_hand():
    # levels floor(255 D) = 229, 127, 127, 25; G = 1 1 0 0
    pred = torch.tensor([[[0.9, 0.5, 0.5, 0.1]]], dtype=torch.float64)
    gt = torch.tensor([[[True, True, False, False]]])
    b = 0.3

    def f(p, r):
        return (1 + b) * p * r / (b * p + r)

    expected = torch.zeros(NUM_THRESHOLDS, dtype=torch.float64)
    expected[:26] = f(2 / 4, 1.0)  # t <= 25: everything kept
    expected[26:128] = f(2 / 3, 1.0)  # 26 <= t <= 127: 0.9, 0.5, 0.5 kept
    expected[128:230] = f(1.0, 0.5)  # 128 <= t <= 229: only 0.9 kept
    curve = fmeasure_curve(pred, gt)
    assert curve.shape == (1, NUM_THRESHOLDS)
    torch.testing.assert_close(curve[0], expected, rtol=0, atol=1e-15)
    assert max_fmeasure(pred, gt).item() == pytest.approx(f(1.0, 0.5), abs=1e-15)


def test_mae_by_hand():
    pred = torch.tensor([[[0.2, 0.9], [0.5, 0.0]]], dtype=torch.float64)
    gt = torch.tensor([[[0, 1], [1, 0]]])
    assert mae(pred, gt).item() == pytest.approx((0.2 + 0.1 + 0.5 + 0.0) / 4, abs=1e-15)


def test_s_measure_object_term_by_hand():
    # alpha = 1 leaves the object term: with D constant c on G and 0 elsewhere,
    # S_o = g * 2c / (c² + 1 + eps) + (1 - g) * 2 / (1 + 1 + eps), g the foreground fraction.
    gt = _gt_square(h=8, w=8, top=2, left=2, size=4)
    c = 0.6
    pred = gt * torch.tensor(c, dtype=torch.float64)
    g = 16 / 64
    expected = g * 2 * c / (c**2 + 1) + (1 - g) * 1.0
    assert s_measure(pred, gt, alpha=1.0).item() == pytest.approx(expected, abs=1e-12)


def test_dataset_max_fmeasure_by_hand():
    curves = torch.zeros(2, NUM_THRESHOLDS, dtype=torch.float64)
    curves[0, 10], curves[1, 10] = 0.8, 0.2  # mean 0.5 at t = 10
    curves[0, 20] = 0.9  # mean 0.45 at t = 20, though it is image 0's best
    assert dataset_max_fmeasure(curves).item() == pytest.approx(0.5)


# ------------------------------------------------------------------------ Weighted terms


def test_wfm_gt_terms_brute_force():
    gt = torch.from_numpy(CASES["thin_gt"][1])
    terms = wfm_gt_terms(gt)
    n, h, w = gt.shape
    rr, cc = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for k in range(n):
        fg = torch.nonzero(gt[k]).double()  # (F, 2)
        pix = torch.stack([rr.flatten(), cc.flatten()], 1).double()  # (HW, 2)
        dist = torch.cdist(pix, fg).amin(1).reshape(h, w)
        torch.testing.assert_close(terms.distance[k], dist, rtol=0, atol=1e-12)
        # nu(i) is a foreground pixel at exactly that distance
        near = terms.nearest[k]
        assert gt[k].flatten()[near.flatten()].all()
        nr, nc = near // w, near % w
        torch.testing.assert_close(((nr - rr) ** 2 + (nc - cc) ** 2).double().sqrt(), dist, rtol=0, atol=1e-12)
        expected_b = torch.where(gt[k], 1.0, 2 - torch.exp(WFM_ALPHA * dist).to(torch.float64))
        torch.testing.assert_close(terms.weight[k], expected_b, rtol=0, atol=1e-15)
    assert terms.has_foreground.all()
    assert terms.weight.dtype == torch.float64 and terms.nearest.dtype == torch.long
    # B at distance 5 is 1.5: alpha = ln(0.5) / 5
    assert 2 - math.exp(WFM_ALPHA * 5) == pytest.approx(1.5)


def test_wfm_gt_terms_nearest_is_scipys_choice_among_ties():
    """Equidistant foreground pixels (sparse points, a checkerboard, rings): nu is scipy's own
    feature transform, so E~ and the metric are PySODMetrics' wherever ties change them."""
    rng = np.random.default_rng(11)
    gt = np.stack([rng.random((17, 19)) < 0.05, (np.indices((17, 19)).sum(0) % 4 == 0), np.zeros((17, 19), bool)])
    gt[2, ::6, ::6] = True
    terms = wfm_gt_terms(torch.from_numpy(gt))
    for k in range(gt.shape[0]):
        dist, (rows, cols) = distance_transform_edt(~gt[k], return_indices=True)
        assert torch.equal(terms.nearest[k], torch.from_numpy(rows * 19 + cols))
        assert torch.equal(terms.distance[k], torch.from_numpy(dist))
    pred = rng.random(gt.shape)
    np.testing.assert_allclose(ours("weighted_fmeasure", pred, gt), reference("weighted_fmeasure", pred, gt),
                               rtol=0, atol=REF_ATOL)


def test_wfm_gt_terms_without_foreground():
    gt = torch.zeros(1, 3, 4, dtype=torch.bool)
    terms = wfm_gt_terms(gt, dtype=torch.float32)
    assert torch.isinf(terms.distance).all()
    assert torch.equal(terms.weight, torch.full((1, 3, 4), 2.0))
    assert torch.equal(terms.nearest.flatten(), torch.arange(12))
    assert not terms.has_foreground.item()
    assert terms.distance.dtype == torch.float32


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_wfm_gt_terms_tables_and_per_pixel_path_agree(monkeypatch, dtype):
    """Delta and B come from tables of Delta^2 (images up to about 1,000 pixels across) or per
    pixel (larger ones): the same values, in every dtype the float64 values cast once."""
    import pixelweight.metrics.foreground as fg_module

    rng = np.random.default_rng(3)
    gt = torch.from_numpy(np.stack([rng.random((23, 31)) < 0.03, np.zeros((23, 31), bool)]))
    gt[0, 0, 0] = True
    tabled, tabled_cast = wfm_gt_terms(gt), wfm_gt_terms(gt, dtype=dtype)
    monkeypatch.setattr(fg_module, "_WFM_TABLE_LIMIT", 0)
    per_pixel, per_pixel_cast = wfm_gt_terms(gt), wfm_gt_terms(gt, dtype=dtype)
    assert torch.equal(tabled.distance, per_pixel.distance)
    assert torch.equal(tabled.nearest, per_pixel.nearest)
    torch.testing.assert_close(tabled.weight, per_pixel.weight, rtol=0, atol=4e-16)  # numpy's exp vs torch's
    assert torch.isinf(tabled.distance[1]).all() and torch.equal(per_pixel.weight[1], torch.full((23, 31), 2.0).double())
    for terms in (tabled_cast, per_pixel_cast):
        assert terms.weight.dtype == dtype and terms.distance.dtype == dtype
        assert torch.equal(terms.distance, per_pixel.distance.to(dtype))
        assert torch.equal(terms.weight, tabled.weight.to(dtype))


def test_wfm_gt_terms_far_distances_beyond_int32_squares():
    """(H-1)^2 + (W-1)^2 >= 2^31: Delta^2 in int64 (scipy's coordinates stay int32), per pixel;
    float16 distances are torch's cast of the float64 ones."""
    gt = torch.zeros(1, 1, 46342, dtype=torch.bool)
    gt[..., 0] = True
    terms = wfm_gt_terms(gt)
    assert terms.distance[0, 0, -1].item() == 46341.0
    assert torch.equal(terms.nearest, torch.zeros(1, 1, 46342, dtype=torch.long))
    half = wfm_gt_terms(gt, dtype=torch.float16)
    assert torch.equal(half.distance, terms.distance.to(torch.float16))
    assert torch.equal(half.weight, terms.weight.to(torch.float16))


def test_precomputed_terms_give_the_same_value_and_gradient():
    pred, gt = (torch.from_numpy(a) for a in CASES["random_16x16"])
    terms = wfm_gt_terms(gt.unsqueeze(1))  # the (N, 1, H, W) form is accepted too
    p1, p2 = pred.clone().requires_grad_(), pred.clone().requires_grad_()
    a, b = weighted_fmeasure(p1, gt), weighted_fmeasure(p2, gt, terms=terms)
    assert torch.equal(a, b)
    a.sum().backward()
    b.sum().backward()
    assert torch.equal(p1.grad, p2.grad)
    # float32 terms are cast to a float64 computation (documented precision loss only)
    c = weighted_fmeasure(pred, gt, terms=terms.to(dtype=torch.float32))
    torch.testing.assert_close(c, a.detach(), rtol=0, atol=1e-6)


# ---------------------------------------------------------------------------- gradients


def _gradcheck_inputs():
    g = torch.Generator().manual_seed(7)
    pred = 0.1 + 0.8 * torch.rand(2, 6, 7, dtype=torch.float64, generator=g)
    gt = torch.zeros(2, 6, 7, dtype=torch.bool)
    gt[0, 1:4, 2:6] = True
    gt[1, 3:, :3] = True
    return pred, gt


def test_gradcheck_inputs_stay_away_from_the_min_tie():
    # Recompute E and E_A with PySODMetrics' own steps; gradcheck perturbs by 1e-6, so a
    # margin of 1e-4 keeps every foreground pixel on one side of min(E, E_A).
    pred, gt = (t.numpy() for t in _gradcheck_inputs())
    ref = psm.WeightedFmeasure()
    lower = higher = 0
    for p, g in zip(pred, gt):
        _, idx = distance_transform_edt(~g, return_indices=True)
        e = np.abs(p - g)
        e_t = e[idx[0], idx[1]]
        e_a = convolve(e_t, ref.matlab_style_gauss2D((7, 7), 5), mode="constant", cval=0)
        gap = (e_a - e)[g]
        assert np.abs(gap).min() > 1e-4
        lower += int((gap < 0).sum())
        higher += int((gap > 0).sum())
    assert lower > 0 and higher > 0  # both branches of the minimum are exercised


@pytest.mark.parametrize("beta2", [1.0, 0.3])
def test_weighted_fmeasure_gradcheck(beta2):
    pred, gt = _gradcheck_inputs()
    terms = wfm_gt_terms(gt)
    assert torch.autograd.gradcheck(
        lambda d: weighted_fmeasure(d, gt, beta2=beta2, terms=terms), (pred.requires_grad_(),), eps=1e-6, atol=1e-8
    )


def test_mae_gradcheck():
    pred, gt = _gradcheck_inputs()
    assert torch.autograd.gradcheck(lambda d: mae(d, gt), (pred.requires_grad_(),), eps=1e-6, atol=1e-8)


def test_weighted_fmeasure_gradient_scales_with_background_weight():
    # A background pixel's error enters only FP^w = sum B_i E_i, so dF/dD_i is proportional to B_i.
    gt = _gt_square(h=16, w=16, top=2, left=2, size=4)
    pred = torch.where(gt, torch.tensor(0.8, dtype=torch.float64), 0.1).requires_grad_()
    weighted_fmeasure(pred, gt).sum().backward()
    b = wfm_gt_terms(gt).weight
    i, j = (0, 7, 3), (0, 14, 14)  # distances 2 and about 12
    assert pred.grad[i] < 0 and pred.grad[j] < 0
    assert (pred.grad[j] / pred.grad[i]).item() == pytest.approx((b[j] / b[i]).item(), rel=1e-12)
    assert pred.grad[j] < pred.grad[i]  # the distant false positive is pushed down harder


def test_empty_ground_truth_gives_zero_gradient_not_nan():
    pred = torch.rand(2, 5, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1)).requires_grad_()
    gt = torch.zeros(2, 5, 5, dtype=torch.bool)
    gt[1, 2, 2] = True
    (1 - weighted_fmeasure(pred, gt)).sum().backward()
    assert torch.isfinite(pred.grad).all()
    assert torch.equal(pred.grad[0], torch.zeros(5, 5, dtype=torch.float64))
    assert pred.grad[1].abs().sum() > 0


def test_threshold_metrics_carry_no_gradient():
    pred, gt = (torch.from_numpy(a) for a in CASES["random_5x7"])
    pred = pred.clone().requires_grad_()
    for fn in (fmeasure_curve, max_fmeasure, s_measure):
        assert not fn(pred, gt).requires_grad
    assert weighted_fmeasure(pred, gt).requires_grad and mae(pred, gt).requires_grad


# ------------------------------------------------------------- batches, shapes, dtypes

FUNCTIONS = [weighted_fmeasure, mae, fmeasure_curve, max_fmeasure, s_measure]


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_batch_equals_per_image_loop(fn):
    pred, gt = CASES["random_noise_gt_23x31"]
    pred = np.concatenate([pred, CASES["random_23x31"][0]])
    gt = np.concatenate([gt, np.zeros((1, 23, 31), bool), CASES["random_23x31"][1][1:]])
    pred_t, gt_t = torch.from_numpy(pred), torch.from_numpy(gt)
    batch = fn(pred_t, gt_t)
    loop = torch.cat([fn(pred_t[k : k + 1], gt_t[k : k + 1]) for k in range(len(pred))])
    torch.testing.assert_close(batch, loop, rtol=0, atol=1e-14)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_accepted_shapes_and_ground_truth_dtypes(fn):
    pred, gt = (torch.from_numpy(a) for a in CASES["random_5x7"])
    expected = fn(pred, gt)
    assert expected.shape[0] == 3 and expected.dtype == torch.float64
    variants = [
        (pred.unsqueeze(1), gt),
        (pred, gt.unsqueeze(1)),
        (pred.unsqueeze(1), gt.unsqueeze(1)),
        (pred, gt.to(torch.uint8)),
        (pred, gt.long()),
        (pred, gt.double()),
        (pred.transpose(1, 2).contiguous().transpose(1, 2), gt),  # non-contiguous
    ]
    for p, g in variants:
        torch.testing.assert_close(fn(p, g), expected, rtol=0, atol=0)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
def test_output_dtype_and_device(fn, dtype, device):
    pred, gt = (torch.from_numpy(a) for a in CASES["random_16x16"])
    out = fn(pred.to(device=device, dtype=dtype), gt.to(device))
    assert out.dtype == dtype and out.device.type == device
    reference_value = fn(pred.to(dtype).double(), gt)  # the same (rounded) map in float64
    tol = {torch.float16: 2e-3, torch.bfloat16: 2e-2, torch.float32: 1e-5, torch.float64: 0}[dtype]
    torch.testing.assert_close(out.double().cpu(), reference_value, rtol=0, atol=tol)


def test_runtime_batch_of_16_maps_64x64():
    # One intra-op thread: when other test processes share the cores, OpenMP threads that
    # wait for each other make any multi-threaded timing meaningless (10x slower).
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(16, 64, 64, generator=g)
    gt = torch.rand(16, 64, 64, generator=g) < 0.3
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        for fn in (weighted_fmeasure, s_measure, fmeasure_curve, mae):
            fn(pred, gt)  # warm-up
            best = math.inf
            for _ in range(5):
                start = time.perf_counter()
                fn(pred, gt)
                best = min(best, time.perf_counter() - start)
            assert best < 0.1, f"{fn.__name__} took {best:.3f} s for 16 maps of 64x64"
    finally:
        torch.set_num_threads(threads)


# ------------------------------------------------------------------------------ errors

GOOD_PRED = torch.full((2, 4, 5), 0.5)
GOOD_GT = torch.zeros(2, 4, 5, dtype=torch.bool)


@pytest.mark.parametrize("fn", FUNCTIONS, ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "pred, gt, error, match",
    [
        (np.full((2, 4, 5), 0.5), GOOD_GT, TypeError, "pred must be a torch.Tensor"),
        (GOOD_PRED, np.zeros((2, 4, 5), bool), TypeError, "gt must be a torch.Tensor"),
        (torch.zeros(2, 4, 5, dtype=torch.long), GOOD_GT, ValueError, r"pred must be a floating tensor.*torch.int64"),
        (torch.full((2, 2, 4, 5), 0.5), GOOD_GT, ValueError, r"pred must have shape \(N, H, W\) or .* got \(2, 2, 4, 5\)"),
        (torch.full((4, 5), 0.5), GOOD_GT, ValueError, r"pred must have shape .* got \(4, 5\)"),
        (torch.full((0, 4, 5), 0.5), GOOD_GT[:0], ValueError, r"pred is an empty batch \(N = 0\)"),
        (torch.full((2, 0, 5), 0.5), GOOD_GT[:, :0], ValueError, r"pred has an empty image"),
        (GOOD_PRED, GOOD_GT[:, :3], ValueError, r"same \(N, H, W\), got pred \(2, 4, 5\) and gt \(2, 3, 5\)"),
        (GOOD_PRED, GOOD_GT[:1], ValueError, r"got pred \(2, 4, 5\) and gt \(1, 4, 5\)"),
        (GOOD_PRED, torch.zeros(2, 2, 4, 5, dtype=torch.bool), ValueError, r"gt must have shape .* got \(2, 2, 4, 5\)"),
        (GOOD_PRED, torch.full((2, 4, 5), 2), ValueError, r"gt must be binary .* found the value 2"),
        (GOOD_PRED, torch.full((2, 4, 5), 0.5), ValueError, r"gt must be binary .* found the value 0.5"),
        (GOOD_PRED, torch.full((2, 4, 5), -1, dtype=torch.int8), ValueError, r"gt must be binary .* value -1"),
        (GOOD_PRED, torch.zeros(2, 4, 5, dtype=torch.complex64), ValueError, "gt must be bool, integer or floating"),
        (GOOD_PRED, GOOD_GT.to("meta"), ValueError, "gt is on meta but pred is on cpu"),
        (torch.full((2, 4, 5), float("nan")), GOOD_GT, ValueError, "pred contains NaN"),
        (torch.full((2, 4, 5), 1.5), GOOD_GT, ValueError, r"must lie in \[0, 1\], found values in \[1.5, 1.5\]"),
        (torch.full((2, 4, 5), -0.25), GOOD_GT, ValueError, r"found values in \[-0.25, -0.25\]"),
        (torch.full((2, 4, 5), float("inf")), GOOD_GT, ValueError, r"pred values must lie in \[0, 1\]"),
    ],
)
def test_input_errors(fn, pred, gt, error, match):
    with pytest.raises(error, match=match):
        fn(pred, gt)


@pytest.mark.parametrize("fn", [weighted_fmeasure, fmeasure_curve, max_fmeasure], ids=lambda f: f.__name__)
@pytest.mark.parametrize(
    "beta2, error, match",
    [
        (-0.5, ValueError, r"beta2 must be >= 0.0, got -0.5"),
        (float("nan"), ValueError, "beta2 must not be NaN"),
        (float("inf"), ValueError, "beta2 must be finite"),
        ("1", TypeError, "beta2 must be a real number, got str"),
        (True, TypeError, "beta2 must be a real number, got bool"),
    ],
)
def test_beta2_errors(fn, beta2, error, match):
    with pytest.raises(error, match=match):
        fn(GOOD_PRED, GOOD_GT, beta2=beta2)


@pytest.mark.parametrize(
    "alpha, error, match",
    [
        (-0.1, ValueError, r"alpha must be >= 0.0, got -0.1"),
        (1.5, ValueError, r"alpha must be <= 1.0, got 1.5"),
        (None, TypeError, "alpha must be a real number, got NoneType"),
    ],
)
def test_s_measure_alpha_errors(alpha, error, match):
    with pytest.raises(error, match=match):
        s_measure(GOOD_PRED, GOOD_GT, alpha=alpha)


@pytest.mark.parametrize(
    "gt, dtype, error, match",
    [
        (np.zeros((1, 3, 3), bool), torch.float64, TypeError, "gt must be a torch.Tensor"),
        (torch.zeros(3, 3, dtype=torch.bool), torch.float64, ValueError, r"gt must have shape .* got \(3, 3\)"),
        (torch.full((1, 3, 3), 3), torch.float64, ValueError, "gt must be binary"),
        (torch.zeros(1, 3, 3, dtype=torch.bool), "float64", TypeError, "dtype must be a torch.dtype, got str"),
        (torch.zeros(1, 3, 3, dtype=torch.bool), torch.long, ValueError, "must be a floating dtype, got torch.int64"),
    ],
)
def test_wfm_gt_terms_errors(gt, dtype, error, match):
    with pytest.raises(error, match=match):
        wfm_gt_terms(gt, dtype=dtype)


def test_weighted_fmeasure_terms_errors():
    gt = torch.zeros(2, 4, 5, dtype=torch.bool)
    gt[:, 1, 1] = True
    terms = wfm_gt_terms(gt)
    with pytest.raises(TypeError, match="terms must be a WFMTerms from wfm_gt_terms"):
        weighted_fmeasure(GOOD_PRED, gt, terms=tuple(terms))
    match = r"terms were computed for ground truth of shape \(1, 4, 5\), got gt of shape \(2, 4, 5\)"
    with pytest.raises(ValueError, match=match):
        weighted_fmeasure(GOOD_PRED, gt, terms=wfm_gt_terms(gt[:1]))
    other = gt.clone()
    other[1, 2, 2] = True
    with pytest.raises(ValueError, match="terms were computed for a different ground truth"):
        weighted_fmeasure(GOOD_PRED, other, terms=terms)
    with pytest.raises(ValueError, match="terms are on meta but gt is on cpu"):
        weighted_fmeasure(GOOD_PRED, gt, terms=terms.to("meta"))
    assert isinstance(terms, WFMTerms)


@pytest.mark.parametrize(
    "curves, error, match",
    [
        (np.zeros((2, 256)), TypeError, "curves must be a torch.Tensor"),
        (torch.zeros(2, 256, dtype=torch.long), ValueError, r"curves must be a floating tensor, got dtype torch.int64"),
        (torch.zeros(2, 255), ValueError, r"curves must have shape \(M, 256\) .* got \(2, 255\)"),
        (torch.zeros(256), ValueError, r"got \(256,\)"),
        (torch.zeros(0, 256), ValueError, r"M >= 1 .* got \(0, 256\)"),
        (torch.full((2, 256), float("nan")), ValueError, "curves contain NaN"),
    ],
)
def test_dataset_max_fmeasure_errors(curves, error, match):
    with pytest.raises(error, match=match):
        dataset_max_fmeasure(curves)
