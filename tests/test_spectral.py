"""Spectral analysis (``pixelweight.spectral``): label spectra against analytic ones, the Parseval
decomposition of the cross-entropy against ``F.cross_entropy``, the truncations, the U-Net's
stride, FLOP counts against hand counts, the residual's spectral bias, devices, dtypes, errors.

Tolerances (stated once here, asserted below):

* Parseval: ``sum_k T(k)`` and ``CE_{K_max}`` against ``F.cross_entropy`` (mean, with and without
  ``ignore_index``, per image with ``reduction="none"``): relative error <= 1e-6 in float32,
  <= 1e-12 in float64; the residual's energy against the Brier score likewise;
* analytic spectra: a stripe pattern of period P has all its energy at the odd multiples of
  N/P (other bins <= 1e-12 of the total, float64) and the fraction at N/P is
  ``sin^-2(pi/P) / (P^2/8)`` to 1e-12; a disk of radius 16 on a 128 x 128 grid has cumulative
  energy fractions within 0.02 of the sampled Airy pattern ``(2 J1(x)/x)^2`` at every K, and
  the cut-offs K_0.5, K_0.8, K_0.9 of Rayleigh's encircled energy ``1 - J0^2 - J1^2``;
* FFT crop: the identity at full size (<= 1e-6 float32, <= 1e-12 float64); sampling a
  band-limited map and the projection property <= 1e-12 (float64);
* FLOP counts: exact integers, against hand counts.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from helpers.toy import threshold_task
from losses.loss_cases import DEVICES
from pixelweight.models import UNet
from pixelweight.spectral import (
    eval_logits,
    CrossEntropySpectrum,
    FlopCount,
    SpectralBiasProbe,
    TruncatedUNet,
    area_downsample,
    band_energy,
    block_fractions,
    block_labels,
    count_flops,
    cross_entropy_spectrum,
    cross_entropy_terms,
    energy_cutoff,
    energy_fractions,
    fft_crop,
    label_energy,
    label_spectrum,
    learning_steps,
    max_radial_frequency,
    one_hot_labels,
    radial_frequency,
    radial_profile,
    residual_energy,
    through_stride,
    truncated_cross_entropy,
    unet_output_stride,
)
from pixelweight.train import TrainConfig, seed_everything, train

F64 = torch.float64
TOL = {torch.float32: 1e-6, torch.float64: 1e-12}


def _labels(b=2, h=12, w=10, c=4, seed=0, ignore=None, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    target = torch.randint(0, c, (b, h, w), generator=g)
    if ignore is not None:
        target[torch.rand(b, h, w, generator=g) < 0.2] = ignore
    return target.to(device)


def _logits(b=2, c=4, h=12, w=10, seed=1, dtype=torch.float32, device="cpu", scale=2.0):
    g = torch.Generator().manual_seed(seed)
    return (scale * torch.randn(b, c, h, w, generator=g, dtype=F64)).to(device=device, dtype=dtype)


def _stripes(n, period, horizontal=False, h=None):
    """Vertical stripes of period ``period`` (class 1 on the first half of each period)."""
    row = (torch.arange(n) % period < period // 2).long()
    target = row.repeat(h or n, 1)
    return (target.T if horizontal else target)[None]


def _disk(n, radius):
    yy, xx = torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij")
    d = ((yy - n / 2 + 0.5) ** 2 + (xx - n / 2 + 0.5) ** 2).sqrt()
    return (d < radius).long()[None]


def _rel(a, b):
    return float((torch.as_tensor(a, dtype=F64) - torch.as_tensor(b, dtype=F64)).abs().max()
                 / torch.as_tensor(b, dtype=F64).abs().max())


# ----------------------------------------------------------------------- radial frequency
@pytest.mark.parametrize("size", [(1, 1), (4, 4), (5, 7), (8, 3), (64, 64), (33, 32)])
def test_radial_frequency_is_the_ceiling_of_the_radius_in_cycles_per_image(size):
    h, w = size
    f1, f2 = np.fft.fftfreq(h, 1 / h), np.fft.fftfreq(w, 1 / w)
    radius = np.sqrt(f1[:, None] ** 2 + f2[None, :] ** 2)
    expected = np.ceil(radius - 1e-9).astype(np.int64)  # exact squares stay at their integer
    got = radial_frequency(h, w)
    assert got.dtype == torch.long and np.array_equal(got.numpy(), expected)
    assert int(got.max()) == max_radial_frequency(h, w)
    assert max_radial_frequency(h, w) == math.ceil(math.hypot(h // 2, w // 2) - 1e-9)


def test_radial_frequency_returns_a_fresh_tensor():
    rho = radial_frequency(4, 4)
    rho[0, 0] = 99  # the caller's copy, not a cache shared with later calls
    assert int(radial_frequency(4, 4)[0, 0]) == 0


def test_radial_bins_hold_exactly_the_frequencies_up_to_k():
    rho = radial_frequency(64, 64)
    f = np.fft.fftfreq(64, 1 / 64)
    r2 = f[:, None] ** 2 + f[None, :] ** 2
    for k in (0, 1, 2, 5, 32, 45, 46):
        assert np.array_equal((rho <= k).numpy(), r2 <= k * k)


def test_radial_profile_against_a_loop_and_nan_stays_in_its_bin():
    g = torch.Generator().manual_seed(0)
    values = torch.rand(3, 9, 8, generator=g, dtype=F64)
    got = radial_profile(values)
    rho = radial_frequency(9, 8)
    expected = torch.stack([torch.stack([values[i][rho == k].sum() for k in range(int(rho.max()) + 1)])
                            for i in range(3)])
    assert got.shape == (3, max_radial_frequency(9, 8) + 1)
    assert torch.allclose(got, expected, rtol=0, atol=1e-14)
    values[0, 0, 1] = float("nan")  # bin 1
    got = radial_profile(values)
    assert torch.isnan(got[0, 1]) and torch.isfinite(got[0, [0, *range(2, got.shape[1])]]).all()
    assert torch.isfinite(got[1:]).all()
    assert radial_profile(values.float()).dtype == torch.float32
    assert radial_profile(values.half()).dtype == torch.float32  # sums in float32 at least


# --------------------------------------------------------------------------- label spectra
def test_one_hot_and_spectrum_match_numpy_with_ignored_pixels_zero():
    target = _labels(ignore=255)
    y = one_hot_labels(target, 4, ignore_index=255)
    assert y.shape == (2, 4, 12, 10) and y.dtype == torch.float32
    assert torch.equal(y.sum(1), (target != 255).float())
    spectrum = label_spectrum(target, 4, ignore_index=255, dtype=F64)
    expected = np.fft.fft2(y.double().numpy())
    assert spectrum.dtype == torch.complex128 and np.allclose(spectrum.numpy(), expected, atol=1e-10)


def test_label_energy_sums_to_the_valid_fraction_and_dc_to_the_class_sizes():
    target = _labels(ignore=255, h=16, w=16)
    energy = label_energy(target, 4, ignore_index=255, dtype=F64)
    valid = (target != 255).double().mean(dim=(1, 2))
    assert torch.allclose(energy.sum(1), valid, atol=1e-12)
    sizes = torch.stack([(target == c).double().mean(dim=(1, 2)) for c in range(4)], dim=1)
    assert torch.allclose(energy[:, 0], (sizes ** 2).sum(1), atol=1e-12)


@pytest.mark.parametrize("period", [4, 8, 16])
@pytest.mark.parametrize("horizontal", [False, True])
def test_stripes_of_period_p_put_their_energy_at_n_over_p(period, horizontal):
    n = 64
    energy = label_energy(_stripes(n, period, horizontal), 2, dtype=F64)[0]
    fundamental = n // period
    harmonics = [m * fundamental for m in range(1, period, 2) if m * fundamental <= n // 2]
    off = torch.ones_like(energy, dtype=torch.bool)
    off[[0, *harmonics]] = False
    assert float(energy[off].abs().max()) <= 1e-12
    # the discrete square wave: |sum_{j < P/2} w^{mj}|^2 = sin^2(pi m / 2) / sin^2(pi m / P) per frequency
    # +-m; the non-DC total is P^2 / 4 per class, so the fundamental's fraction is 2 / (sin^2(pi / P) P^2 / 4)
    fraction = 2 / (math.sin(math.pi / period) ** 2 * period ** 2 / 4)
    fractions = energy_fractions(energy)
    assert fractions[fundamental] == pytest.approx(fraction, abs=1e-12)
    assert fractions[fundamental - 1] == 0 and fractions[-1] == 1
    # the analytic cut-off: N/P up to that fraction, the third harmonic just beyond it
    assert float(energy_cutoff(energy, fraction - 1e-6)) == fundamental
    if period > 4:
        assert float(energy_cutoff(energy, min(fraction + 1e-6, 1.0))) == 3 * fundamental
    else:  # P = 4: the square wave is a pure sinusoid on the grid
        assert fraction == pytest.approx(1.0) and float(energy_cutoff(energy, 1.0)) == fundamental


def test_stripes_on_a_rectangular_grid():
    energy = label_energy(_stripes(64, 8, h=32), 2, dtype=F64)[0]
    assert energy.shape == (max_radial_frequency(32, 64) + 1,)
    assert float(energy_cutoff(energy, 0.5)) == 8


def test_a_disk_has_the_airy_spectrum_and_rayleigh_cut_offs():
    n, radius = 128, 16
    target = _disk(n, radius)
    energy = label_energy(target, 2, dtype=F64)[0]
    fractions = energy_fractions(energy)
    # the sampled analytic spectrum of a disk: (a * 2 J1(x) / x)^2 per class beyond DC, x = 2 pi R |k| / N
    area = math.pi * radius ** 2 / n ** 2
    f = (torch.arange(n) + n // 2) % n - n // 2
    x = 2 * math.pi * radius * (f[:, None] ** 2 + f[None, :] ** 2).double().sqrt() / n
    jinc = torch.where(x > 0, 2 * torch.special.bessel_j1(x) / x.clamp_min(1e-300), torch.ones_like(x))
    analytic = radial_profile(2 * (area * jinc) ** 2)
    assert float((fractions - energy_fractions(analytic)).abs().max()) < 0.02
    # Rayleigh: the energy of a disk's transform within |k| <= K is a (1 - J0^2(x) - J1^2(x)), x = 2 pi R K / N
    k = torch.arange(energy.numel(), dtype=F64)
    xk = 2 * math.pi * radius * k / n
    enclosed = area * (1 - torch.special.bessel_j0(xk) ** 2 - torch.special.bessel_j1(xk) ** 2)
    rayleigh = ((enclosed - area ** 2) / (area - area ** 2)).clamp_min(0)
    for alpha in (0.5, 0.8, 0.9):
        expected = int((rayleigh < alpha).sum())
        assert float(energy_cutoff(energy, alpha)) == expected, alpha
    assert [int(energy_cutoff(energy, a)) for a in (0.5, 0.8, 0.9)] == [3, 4, 8]


def test_ignored_pixels_carry_no_energy():
    target = _stripes(16, 4)
    masked = target.clone()
    masked[:, :, :4] = 255
    energy = label_energy(masked, 2, ignore_index=255, dtype=F64)
    y = one_hot_labels(target, 2, dtype=F64)
    y[..., :4] = 0
    spectrum = torch.fft.fft2(y)
    expected = radial_profile((spectrum.abs() ** 2).sum(1)) / 256 ** 2
    assert torch.allclose(energy, expected, atol=1e-14)
    assert energy.sum() == pytest.approx(0.75)


def test_a_single_class_has_no_cut_off():
    energy = label_energy(torch.zeros(2, 8, 8, dtype=torch.long), 3)
    assert float(energy[0, 0]) == 1 and float(energy[:, 1:].abs().max()) == 0
    assert torch.isnan(energy_fractions(energy)).all()
    assert torch.isnan(energy_cutoff(energy, 0.9)).all()


def test_cut_off_definition_and_nan():
    profile = torch.tensor([[9.0, 1.0, 1.0, 2.0, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0]])
    assert energy_fractions(profile)[0].tolist() == [0.0, 0.25, 0.5, 1.0, 1.0]
    assert energy_cutoff(profile, 0.25).tolist() == [1.0, 4.0]
    assert energy_cutoff(profile, 0.26).tolist() == [2.0, 4.0]
    assert energy_cutoff(profile, 1.0).tolist() == [3.0, 4.0]
    profile[1, 2] = float("nan")
    cut = energy_cutoff(profile, 0.5)
    assert cut[0] == 2 and torch.isnan(cut[1])


def test_band_energy_sums_bins():
    profile = torch.arange(6.0)
    assert band_energy(profile, [0, 1, 3, 6]).tolist() == [0.0, 3.0, 12.0]
    assert band_energy(profile[None].repeat(2, 1), [1, 2]).shape == (2, 1)


# ------------------------------------------------------------------------------ Parseval
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ignore_index", [None, 255, 2])
def test_parseval_terms_sum_to_cross_entropy(device, dtype, ignore_index):
    logits = _logits(dtype=dtype, device=device)
    target = _labels(ignore=ignore_index if ignore_index == 255 else None, device=device)
    kwargs = {} if ignore_index is None else {"ignore_index": ignore_index}
    expected = F.cross_entropy(logits.double(), target, **kwargs)
    terms = cross_entropy_terms(logits, target, ignore_index)
    assert terms.shape == (12, 10) and terms.dtype == dtype and terms.device.type == device
    assert _rel(terms.sum().cpu(), expected.cpu()) <= TOL[dtype]
    spectrum = cross_entropy_spectrum(logits, target, ignore_index)
    assert spectrum.ce_k.shape == (max_radial_frequency(12, 10) + 1,)
    # CE_K at the radial Nyquist limit K_max (the DFT's corner) is the cross-entropy
    assert _rel(spectrum.ce_k[-1].cpu(), expected.cpu()) <= TOL[dtype]
    assert _rel(truncated_cross_entropy(logits, target, max_radial_frequency(12, 10), ignore_index).cpu(),
                expected.cpu()) <= TOL[dtype]
    assert float(spectrum.relative_error[-1]) == 0
    per_image = cross_entropy_terms(logits, target, ignore_index, reduction="none").sum(dim=(1, 2))
    each = torch.stack([F.cross_entropy(logits[i:i + 1].double(), target[i:i + 1], **kwargs) for i in range(2)])
    assert _rel(per_image.cpu(), each.cpu()) <= TOL[dtype]
    none = cross_entropy_spectrum(logits, target, ignore_index, reduction="none")
    assert none.ce.shape == (2,) and _rel(none.ce.cpu(), each.cpu()) <= TOL[dtype]


def test_parseval_on_large_maps_in_float32():
    logits, target = _logits(b=2, c=11, h=64, w=64, scale=4.0), _labels(b=2, c=11, h=64, w=64, ignore=255)
    expected = F.cross_entropy(logits.double(), target, ignore_index=255)
    assert _rel(cross_entropy_terms(logits, target, 255).sum(), expected) <= 1e-6


def test_ce_k_is_the_sum_up_to_k_and_not_monotone():
    logits, target = _logits(dtype=F64, h=16, w=16), _labels(h=16, w=16)
    spectrum = cross_entropy_spectrum(logits, target)
    terms = cross_entropy_terms(logits, target)
    rho = radial_frequency(16, 16)
    for k in range(spectrum.ce_k.numel()):
        assert float(truncated_cross_entropy(logits, target, k)) == pytest.approx(float(spectrum.ce_k[k]), abs=1e-12)
        assert float(terms[rho <= k].sum()) == pytest.approx(float(spectrum.ce_k[k]), abs=1e-12)
    assert float(truncated_cross_entropy(logits, target, 1000)) == pytest.approx(float(spectrum.ce), abs=1e-12)
    steps = spectrum.ce_k.diff()
    assert (steps > 0).any() and (steps < 0).any()  # CE_K goes up and down: not monotone in K
    relative = (spectrum.ce_k - spectrum.ce).abs() / spectrum.ce
    assert torch.equal(spectrum.relative_error, relative)


def test_ce_0_is_the_dc_term():
    logits, target = _logits(dtype=F64), _labels(ignore=255)
    valid = target != 255
    log_p = F.log_softmax(logits, dim=1) * valid[:, None]
    counts = torch.stack([(target == c).sum(dim=(1, 2)) for c in range(4)], dim=1).double()  # (B, C)
    dc = -(counts * log_p.sum(dim=(2, 3))).sum() / (valid.sum() * 12 * 10)  # sum_n sum_c Y_nc(0) L_nc(0)
    assert float(cross_entropy_spectrum(logits, target, 255).ce_k[0]) == pytest.approx(float(dc), rel=1e-12)


def test_cross_entropy_terms_have_the_gradient_of_cross_entropy():
    logits = _logits(b=1, c=3, h=5, w=6, dtype=F64).requires_grad_()
    target = _labels(b=1, c=3, h=5, w=6)
    cross_entropy_terms(logits, target).sum().backward()
    grad = logits.grad.clone()
    logits.grad = None
    F.cross_entropy(logits, target).backward()
    assert torch.allclose(grad, logits.grad, atol=1e-12)


def test_nan_logits_give_nan_where_they_count():
    logits, target = _logits(dtype=F64), _labels(ignore=255)
    valid_pixel = tuple(int(i) for i in (target[0] != 255).nonzero()[0])
    ignored_pixel = tuple(int(i) for i in (target[0] == 255).nonzero()[0])
    bad = logits.clone()
    bad[0, 1, valid_pixel[0], valid_pixel[1]] = float("nan")
    assert torch.isnan(cross_entropy_spectrum(bad, target, 255).ce)
    assert torch.isnan(residual_energy(bad, target, 255)).all()
    bad = logits.clone()
    bad[0, 1, ignored_pixel[0], ignored_pixel[1]] = float("nan")  # as F.cross_entropy: left out
    expected = F.cross_entropy(logits, target, ignore_index=255)
    assert float(cross_entropy_spectrum(bad, target, 255).ce) == pytest.approx(float(expected), rel=1e-12)


def test_all_ignored_gives_zero_terms_and_an_undefined_relative_error():
    logits = _logits()
    target = torch.full((2, 12, 10), 255)
    spectrum = cross_entropy_spectrum(logits, target, 255)
    assert float(spectrum.ce) == 0 and float(spectrum.terms.abs().max()) == 0
    assert torch.isnan(spectrum.relative_error).all()
    assert float(residual_energy(logits, target, 255).abs().max()) == 0


def test_half_precision_logits_are_decomposed_in_float32():
    logits, target = _logits(), _labels()
    spectrum = cross_entropy_spectrum(logits.half(), target)
    assert spectrum.ce.dtype == torch.float32
    assert float(spectrum.ce) == pytest.approx(float(F.cross_entropy(logits.half().float(), target)), rel=1e-6)


# ------------------------------------------------------------------------------- FFT crop
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("size", [(8, 8), (7, 9), (6, 5)])
def test_fft_crop_at_full_size_is_the_identity(device, dtype, size):
    x = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0), dtype=F64).to(device, dtype)
    for restore in (False, True):
        out = fft_crop(x, size, restore=restore)
        assert out.dtype == dtype and out.device.type == device and out.shape == x.shape
        assert float((out - x).abs().max()) <= TOL[dtype] * 10


@pytest.mark.parametrize(("big", "small"), [(16, 8), (16, 4), (15, 5), (12, 4), (12, 6)])
def test_fft_crop_samples_a_band_limited_map(big, small):
    """A map with frequencies up to the coarse grid's Nyquist limit (included) is sampled exactly."""
    stride = big // small
    n = torch.arange(big, dtype=F64)
    x = torch.zeros(big, big, dtype=F64)
    g = torch.Generator().manual_seed(3)
    for f1 in range(-(small // 2), (small + 1) // 2):
        for f2 in range(-(small // 2), (small + 1) // 2):
            phase = 2 * math.pi * float(torch.rand(1, generator=g))
            x += torch.cos(2 * math.pi * (f1 * n[:, None] + f2 * n[None, :]) / big + phase)
    if small % 2 == 0:  # the Nyquist frequency itself, as a cosine (its sine is 0 on the coarse grid)
        x += torch.cos(math.pi * small * n / big)[:, None]
    assert torch.allclose(fft_crop(x, small), x[::stride, ::stride], atol=1e-12)


@pytest.mark.parametrize(("size", "crop"), [((16, 16), (8, 8)), ((15, 12), (6, 5)), ((9, 10), (4, 7))])
def test_fft_crop_restore_is_a_projection(size, crop):
    x = torch.randn(2, *size, generator=torch.Generator().manual_seed(1), dtype=F64)
    low = fft_crop(x, crop, restore=True)
    assert torch.allclose(fft_crop(low, crop, restore=True), low, atol=1e-12)
    assert torch.allclose(fft_crop(low, crop), fft_crop(x, crop), atol=1e-12)
    assert torch.allclose(low.mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-12)
    assert torch.allclose(fft_crop(x, crop).mean(dim=(-2, -1)), x.mean(dim=(-2, -1)), atol=1e-12)
    # the removed part is orthogonal to what is kept
    assert float((low * (x - low)).sum().abs()) < 1e-9


def test_fft_crop_keeps_the_dtype_and_the_graph():
    x = torch.randn(1, 2, 8, 8, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda t: fft_crop(t, (4, 6)), (x,))
    assert fft_crop(x.detach().half(), 4).dtype == torch.float16
    assert fft_crop(x.detach().bfloat16(), 4).dtype == torch.bfloat16


# ------------------------------------------------------------------------- area downsample
def test_area_downsample_averages_blocks_and_partial_blocks():
    x = torch.randn(2, 3, 7, 10, generator=torch.Generator().manual_seed(0), dtype=F64)
    out = area_downsample(x, 3)
    assert out.shape == (2, 3, 3, 4)
    for i in range(3):
        for j in range(4):
            block = x[..., 3 * i:3 * i + 3, 3 * j:3 * j + 3]
            assert torch.allclose(out[..., i, j], block.mean(dim=(-2, -1)), atol=1e-14)
    even = torch.randn(2, 8, 8, dtype=F64)
    assert torch.allclose(area_downsample(even, 2), F.avg_pool2d(even[:, None], 2)[:, 0])
    restored = area_downsample(x, 3, restore=True)
    assert restored.shape == x.shape
    assert torch.allclose(area_downsample(restored, 3, restore=True), restored, atol=1e-14)
    assert torch.equal(area_downsample(x, 1), x)
    assert area_downsample(x.half(), 2).dtype == torch.float16


# ------------------------------------------------------------------------------ block labels
def _brute_majority(target, b, c, ignore):
    bsz, h, w = target.shape
    out = torch.empty(bsz, -(-h // b), -(-w // b), dtype=torch.long)
    fractions = torch.zeros(bsz, c, -(-h // b), -(-w // b), dtype=F64)
    for n in range(bsz):
        for i in range(out.shape[1]):
            for j in range(out.shape[2]):
                block = target[n, i * b:(i + 1) * b, j * b:(j + 1) * b].flatten().tolist()
                votes = [block.count(k) for k in range(c)]
                total = sum(votes)
                out[n, i, j] = ignore if total == 0 else votes.index(max(votes))  # first maximum
                if total:
                    fractions[n, :, i, j] = torch.tensor(votes, dtype=F64) / total
    return out, fractions


@pytest.mark.parametrize("block", [1, 2, 3, 4])
def test_block_labels_and_fractions_against_brute_force(block):
    target = _labels(b=2, h=11, w=9, c=3, ignore=255, seed=block)
    target[0, :4, :4] = 255  # an all-ignored block for every b <= 4
    expected, fractions = _brute_majority(target, block, 3, 255)
    assert torch.equal(block_labels(target, block, 3, 255), expected)
    soft = block_fractions(target, block, 3, 255, dtype=F64)
    assert torch.allclose(soft, fractions, atol=1e-15)
    sums = soft.sum(1)
    has_valid = expected != 255
    assert torch.allclose(sums[has_valid], torch.ones_like(sums[has_valid]), atol=1e-12)
    assert float(sums[~has_valid].abs().max()) == 0 and (~has_valid).any()
    restored = block_labels(target, block, 3, 255, restore=True)
    assert restored.shape == target.shape
    assert torch.equal(restored, expected.repeat_interleave(block, 1).repeat_interleave(block, 2)[:, :11, :9])
    assert block_fractions(target, block, 3, 255, restore=True).shape == (2, 3, 11, 9)


def test_block_labels_at_one_are_the_labels():
    target = _labels(ignore=255)
    assert torch.equal(block_labels(target, 1, 4, 255), target)
    assert torch.equal(block_fractions(target, 1, 4, 255), one_hot_labels(target, 4, 255))
    plain = _labels()
    assert torch.equal(block_labels(plain, 1, 4), plain)
    assert torch.equal(through_stride(plain, 1, 4), plain)


def test_block_label_ties_go_to_the_lowest_class():
    target = torch.tensor([[[2, 1], [1, 2]], [[3, 0], [255, 255]]])
    assert block_labels(target, 2, 4, 255).flatten().tolist() == [1, 0]


def test_through_stride():
    target = _labels(b=2, h=12, w=8, c=3, seed=5)
    assert torch.equal(through_stride(target, 4, 3), block_labels(target, 4, 3, restore=True))
    nearest = F.interpolate(target[:, None].float(), scale_factor=0.25, mode="nearest")
    nearest = F.interpolate(nearest, size=(12, 8), mode="nearest")[:, 0].long()
    assert torch.equal(through_stride(target, 4, 3, down="nearest"), nearest)
    # the majority oracle never agrees with fewer pixels than the nearest one
    majority_hits = (through_stride(target, 4, 3) == target).sum()
    assert majority_hits >= (through_stride(target, 4, 3, down="nearest") == target).sum()


@pytest.mark.parametrize("device", DEVICES)
def test_block_functions_on_the_device(device):
    target = _labels(ignore=255, device=device)
    assert block_labels(target, 2, 4, 255).device.type == device
    assert block_fractions(target, 2, 4, 255).device.type == device
    assert through_stride(target, 2, 4, 255).device.type == device


# ---------------------------------------------------------------------------- U-Net stride
@pytest.mark.parametrize("depth", [0, 1, 2, 3])
def test_unet_output_stride_matches_the_logits(depth):
    for stride in [2**i for i in range(depth + 1)]:
        model = UNet(1, 3, width=2, depth=depth, output_stride=stride)
        assert unet_output_stride(model) == stride == model.output_stride
        out = model.eval()(torch.zeros(1, 1, 24, 16))
        assert out.shape[-2:] == (math.ceil(24 / stride), math.ceil(16 / stride))


@pytest.mark.parametrize("method", ["fft", "area"])
def test_truncated_unet(method):
    torch.manual_seed(0)
    unet = UNet(1, 3, width=4, depth=2).eval()
    x = torch.rand(2, 1, 16, 32)
    assert torch.equal(TruncatedUNet(unet, 1, method)(x), unet(x))  # t = 1: the U-Net exactly
    for t in (2, 4):
        model = TruncatedUNet(unet, t, method)
        assert model.output_stride == t
        assert model(x).shape == (2, 3, 16 // t, 32 // t)
    strided = TruncatedUNet(UNet(1, 3, width=4, depth=2, output_stride=2), 2, method)
    assert strided.output_stride == 4 and strided.eval()(x).shape == (2, 3, 4, 8)
    with pytest.raises(ValueError, match="is 4 x 6 .* not a multiple of factor=4"):
        TruncatedUNet(unet, 4, method)(torch.rand(1, 1, 16, 21))  # padded to 16 x 24
    odd = TruncatedUNet(unet, 2, method)(torch.rand(1, 1, 13, 14))  # padded to 16 x 16
    assert odd.shape == (1, 3, 7, 7)


def test_truncated_unet_area_is_the_pooled_decoder():
    """The area-truncated decoder by hand: skips and bottleneck average-pooled by 2."""
    torch.manual_seed(1)
    unet = UNet(1, 2, width=2, depth=1, norm="none").eval()
    x = torch.rand(1, 1, 8, 8)
    skip = unet.encoder[0](x)
    bottom = unet.encoder[1](F.max_pool2d(skip, 2))
    up = unet.up[0](F.avg_pool2d(bottom, 2))
    expected = unet.head(unet.decoder[0](torch.cat([up, F.avg_pool2d(skip, 2)], dim=1)))
    assert torch.allclose(TruncatedUNet(unet, 2, "area")(x), expected, atol=1e-6)


# --------------------------------------------------------------------------------- FLOPs
class _Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1)
        self.grouped = nn.Conv2d(2, 4, 3, stride=2, padding=1, groups=2)
        self.up = nn.ConvTranspose2d(4, 2, 2, stride=2)
        self.fc = nn.Linear(32, 3)
        self.norm = nn.BatchNorm2d(2)

    def forward(self, x):
        x = self.norm(self.conv(x))
        x = self.up(self.grouped(x))
        return self.fc(x.flatten(1))


def test_flop_count_against_a_hand_count():
    count = count_flops(_Tiny(), (1, 1, 4, 4))
    hand = {
        "conv": 2 * 4 * 4 * (1 * 3 * 3),  # 32 outputs, 9 products each
        "grouped": 4 * 2 * 2 * (2 // 2 * 3 * 3),  # 16 outputs, C_in / groups * 9 products
        "up": 4 * 2 * 2 * (2 * 2 * 2),  # 16 inputs, each scattered into C_out * 2 * 2 outputs
        "fc": 3 * 32,
    }
    assert count.by_module == hand and count.macs == 656 and count.flops == 1312
    assert count_flops(_Tiny(), (5, 1, 4, 4)).macs == 5 * 656  # linear in the batch
    assert count.within("conv", "up") == hand["conv"] + hand["up"] and count.within("nothing") == 0
    assert count.within("con") == 0  # a prefix is a whole name component


def test_flop_count_of_a_unet_against_a_hand_count():
    count = count_flops(UNet(1, 3, width=2, depth=1, norm="none"), (1, 1, 4, 4))
    hand = (16 * 2 * 9 * 1 + 16 * 2 * 9 * 2  # encoder level 0, 4 x 4: 1 -> 2 -> 2 channels
            + 4 * 4 * 9 * 2 + 4 * 4 * 9 * 4  # encoder level 1, 2 x 2: 2 -> 4 -> 4
            + 4 * 4 * (2 * 2 * 2)  # transposed convolution: 16 inputs, 2 * 2 x 2 outputs each
            + 16 * 2 * 9 * 4 + 16 * 2 * 9 * 2  # decoder, 4 x 4: 4 -> 2 -> 2
            + 16 * 3 * 2)  # 1x1 head
    assert count.macs == hand == 3680
    assert count.within("up", "decoder", "head") == 128 + 1152 + 576 + 96


def test_flop_count_of_a_truncated_decoder():
    unet = UNet(1, 11, width=8, depth=3)
    full = count_flops(unet, (1, 1, 64, 64))
    for t in (2, 4, 8):
        cut = count_flops(TruncatedUNet(unet, t), (1, 1, 64, 64))
        decoder = ("unet.up", "unet.decoder", "unet.head")
        assert cut.within(*decoder) * t * t == full.within("up", "decoder", "head")
        assert cut.within("unet.encoder") == full.within("encoder")


def test_flop_count_counts_repeated_calls_and_restores_modes():
    conv = nn.Conv2d(1, 1, 3, padding=1)
    twice = nn.Sequential(conv, conv)
    assert count_flops(twice, (1, 1, 4, 4)).macs == 2 * 16 * 9
    model = _Tiny().train()
    model.norm.eval()  # a frozen part
    running = model.norm.running_mean.clone()
    count_flops(model, torch.randn(1, 1, 4, 4))
    assert model.training and model.conv.training and not model.norm.training
    assert torch.equal(model.norm.running_mean, running)
    assert all(not m._forward_hooks for m in model.modules())


# ---------------------------------------------------------------------------- spectral bias
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("ignore_index", [None, 255])
def test_residual_energy_is_the_brier_score_by_frequency(device, dtype, ignore_index):
    logits, target = _logits(dtype=dtype, device=device), _labels(ignore=ignore_index, device=device)
    energy = residual_energy(logits, target, ignore_index)
    assert energy.shape == (max_radial_frequency(12, 10) + 1,) and energy.dtype == dtype
    valid = torch.ones_like(target, dtype=torch.bool) if ignore_index is None else target != ignore_index
    y = one_hot_labels(target, 4, ignore_index, dtype=F64)
    brier = ((y - torch.softmax(logits.double(), 1)) ** 2).sum(1)
    assert _rel(energy.sum().cpu(), (brier[valid].mean()).cpu()) <= TOL[dtype]
    each = residual_energy(logits, target, ignore_index, reduction="none").sum(1)
    assert _rel(each.cpu(), torch.stack([brier[i][valid[i]].mean() for i in range(2)]).cpu()) <= TOL[dtype]


def test_residual_of_a_constant_prediction_is_the_label_spectrum():
    target = _labels(h=16, w=16)
    energy = residual_energy(torch.zeros(2, 4, 16, 16, dtype=F64), target)
    labels = label_energy(target, 4, dtype=F64).mean(0)
    assert torch.allclose(energy[1:], labels[1:], atol=1e-14)


def test_probe_logs_bands_without_changing_the_training_run():
    data = threshold_task(32, size=16)
    images, target = data.tensors[0][:4], data.tensors[1][:4]
    config = TrainConfig(steps=20, batch_size=8, lr=1e-2, schedule="constant", log_every=5, progress=False,
                         device="cpu", amp=False)
    probe = SpectralBiasProbe(images, target, edges=[1, 4, 8, 12])

    def run(on_log):
        seed_everything(0)
        return train(UNet(1, 2, width=4, depth=1), F.cross_entropy, data, config, on_log=on_log)

    with_probe, without = run(probe), run(None)
    assert [h["loss"] for h in with_probe.history] == [h["loss"] for h in without.history]
    for a, b in zip(with_probe.model.state_dict().values(), without.model.state_dict().values()):
        assert torch.equal(a, b)  # batch norm's running statistics included
    bands = [h["residual_energy"] for h in with_probe.history]
    assert len(bands) == 4 and all(len(b) == 3 for b in bands)
    expected = band_energy(residual_energy(with_probe.model.eval()(images), target), [1, 4, 8, 12])
    assert bands[-1] == pytest.approx(expected.tolist(), rel=1e-6)
    steps = learning_steps(with_probe.history, fraction=0.99)
    assert len(steps) == 3 and all(s is None or s in (5, 10, 15, 20) for s in steps)


def test_probe_upsamples_coarse_logits_and_restores_modes():
    target = _stripes(8, 4).repeat(2, 1, 1)
    probe = SpectralBiasProbe(torch.rand(2, 1, 8, 8), target)
    model = UNet(1, 2, width=2, depth=2, output_stride=4).train()
    running = model.encoder[0][1].running_mean.clone()
    out = probe(1, model)
    assert list(out) == ["residual_energy"] and len(out["residual_energy"]) == max_radial_frequency(8, 8) + 1
    assert model.training and torch.equal(model.encoder[0][1].running_mean, running)


def test_probe_logs_the_truncated_cross_entropy_it_is_asked_for():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(3, 1, 16, 16, generator=g)
    target = torch.randint(0, 3, (3, 16, 16), generator=g)
    model = UNet(1, 3, width=2, depth=1).eval()
    with torch.no_grad():
        logits = model(images)
    for k in (0, 4, 50):  # 50 > K_max: CE_K is the CE
        out = SpectralBiasProbe(images, target, cross_entropy_at=k)(1, model)
        ce = float(F.cross_entropy(logits, target))
        ce_k = float(truncated_cross_entropy(logits, target, min(k, max_radial_frequency(16, 16))))
        assert out["ce"] == pytest.approx(ce, rel=1e-5) and out["ce_truncated"] == pytest.approx(ce_k, rel=1e-5)
        assert out["ce_relative_error"] == pytest.approx(abs(ce_k - ce) / ce, abs=2e-6)  # float32 cancellation
        assert out["ce_cutoff"] == k
    assert "ce" not in SpectralBiasProbe(images, target)(1, model)
    with pytest.raises(ValueError, match="cross_entropy_at"):
        SpectralBiasProbe(images, target, cross_entropy_at=-1)


def test_eval_logits_batches_restores_modes_and_validates():
    model = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.BatchNorm2d(2)).train()
    images = torch.rand(5, 1, 8, 8)
    running = model[1].running_mean.clone()
    out = eval_logits(model, images, batch_size=2)
    assert model.training and torch.equal(model[1].running_mean, running)
    assert torch.equal(out, model.eval()(images).detach())
    model.train()
    assert eval_logits(model, images, size=(16, 16)).shape == (5, 2, 16, 16)
    for bad, match in ((dict(batch_size=0), "batch_size"), (dict(images=torch.rand(0, 1, 8, 8)), "B >= 1"),
                       (dict(images=torch.zeros(2, 1, 8, 8, dtype=torch.long)), "floating")):
        kw = {"model": model, "images": images, **bad}
        with pytest.raises(ValueError, match=match):
            eval_logits(**kw)
    with pytest.raises(TypeError, match="nn.Module"):
        eval_logits(lambda x: x, images)


def test_learning_steps():
    history = [{"step": 0, "loss": 1.0, "e": [1.0, 2.0, 0.0]}, {"step": 5, "loss": 0.5},
               {"step": 10, "e": [0.4, 1.5, 0.0]}, {"step": 20, "e": [0.1, 0.9, 0.0]}]
    assert learning_steps(history, 0.5, key="e") == [10, 20, None]
    assert learning_steps(history, 1.0, key="e") == [10, 10, None]
    pairs = [(1, torch.tensor([1.0, 1.0])), (2, [0.5, 1.0])]
    assert learning_steps(pairs, 0.6) == [2, None]


@pytest.mark.parametrize(("history", "match"), [
    ([], "holds no energies"),
    ([(0, [1.0]), (0, [0.5])], "steps must increase"),
    ([(0, [1.0]), (1, [0.5, 0.2])], "has 2 energies"),
    ([(0, [1.0]), (1, [float("nan")])], "finite"),
    ([(0, [1.0]), (1, [-0.1])], ">= 0"),
    ([(0.5, [1.0])], "not an int"),
    ([(0, [])], "no band"),
])
def test_learning_steps_errors(history, match):
    with pytest.raises(ValueError, match=match):
        learning_steps(history)


# ---------------------------------------------------------------------------------- errors
@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: radial_frequency(0, 4), ValueError, "height must be >= 1"),
    (lambda: radial_frequency(4.0, 4), TypeError, "height must be an int"),
    (lambda: radial_profile(torch.ones(4, 4, dtype=torch.long)), ValueError, "real floating"),
    (lambda: radial_profile(torch.ones(4)), ValueError, "at least 2 dimensions"),
    (lambda: one_hot_labels(torch.zeros(4, 4, dtype=torch.long), 2), ValueError, r"shape \(B, H, W\)"),
    (lambda: one_hot_labels(torch.zeros(1, 4, 4), 2), ValueError, "integer tensor"),
    (lambda: one_hot_labels(torch.full((1, 2, 2), 3), 2), ValueError, r"values must lie in \[0, 1\]"),
    (lambda: one_hot_labels(torch.full((1, 2, 2), 255), 2), ValueError, r"values must lie in \[0, 1\]"),
    (lambda: label_energy(torch.zeros(1, 2, 2, dtype=torch.long), 0), ValueError, "num_classes must be >= 1"),
    (lambda: label_spectrum(torch.zeros(1, 2, 2, dtype=torch.long), 2, dtype=torch.float16), ValueError, "dtype"),
    (lambda: energy_cutoff(torch.ones(3), 0.0), ValueError, "alpha must be > 0"),
    (lambda: energy_cutoff(torch.ones(3), 1.5), ValueError, "alpha must be <= 1"),
    (lambda: energy_cutoff(torch.ones(3), float("nan")), ValueError, "alpha must not be NaN"),
    (lambda: energy_cutoff(torch.tensor([1.0, -1.0, 2.0]), 0.5), ValueError, "energies >= 0"),
    (lambda: band_energy(torch.ones(4), [0]), ValueError, "at least two"),
    (lambda: band_energy(torch.ones(4), [2, 1]), ValueError, "strictly increasing"),
    (lambda: band_energy(torch.ones(4), [0, 5]), ValueError, "at most at the number of bins 4"),
    (lambda: band_energy(torch.ones(4), "01"), TypeError, "sequence of ints"),
    (lambda: cross_entropy_terms(torch.zeros(1, 1, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long)),
     ValueError, "C >= 2"),
    (lambda: cross_entropy_terms(torch.zeros(1, 2, 2, 2), torch.zeros(1, 3, 2, dtype=torch.long)),
     ValueError, "target must have shape"),
    (lambda: cross_entropy_terms(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), reduction="sum"),
     ValueError, "reduction must be one of"),
    (lambda: truncated_cross_entropy(torch.zeros(1, 2, 2, 2), torch.zeros(1, 2, 2, dtype=torch.long), -1),
     ValueError, "max_frequency must be >= 0"),
    (lambda: fft_crop(torch.ones(4, 4), (5, 4)), ValueError, "must not exceed"),
    (lambda: fft_crop(torch.ones(4, 4), 0), ValueError, "size must be >= 1"),
    (lambda: fft_crop(torch.ones(4, 4), (2, 2, 2)), ValueError, "pair"),
    (lambda: fft_crop(torch.ones(4, 4, dtype=torch.long), 2), ValueError, "real floating"),
    (lambda: fft_crop(torch.ones(4, 4), 2, restore=1), TypeError, "restore must be a bool"),
    (lambda: area_downsample(torch.ones(4, 4), 0), ValueError, "factor must be >= 1"),
    (lambda: block_labels(torch.zeros(1, 4, 4, dtype=torch.long), 0, 2), ValueError, "block must be >= 1"),
    (lambda: block_fractions(torch.zeros(1, 4, 4, dtype=torch.long), 2, 2, dtype=torch.int64), ValueError, "dtype"),
    (lambda: through_stride(torch.zeros(1, 4, 4, dtype=torch.long), 2, 2, down="bilinear"), ValueError, "down"),
    (lambda: unet_output_stride(nn.Conv2d(1, 1, 1)), TypeError, "UNet"),
    (lambda: TruncatedUNet(UNet(), 0), ValueError, "factor must be >= 1"),
    (lambda: TruncatedUNet(UNet(), 2, method="bilinear"), ValueError, "method"),
    (lambda: TruncatedUNet(UNet(in_channels=1), 2)(torch.zeros(1, 3, 8, 8)), ValueError, "expected input"),
    (lambda: count_flops(nn.Linear(2, 2), "12"), TypeError, "inputs must be"),
    (lambda: count_flops(lambda x: x, (1, 2)), TypeError, "nn.Module"),
    (lambda: SpectralBiasProbe(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 3, dtype=torch.long)),
     ValueError, "target must have shape"),
    (lambda: SpectralBiasProbe(torch.zeros(1, 1, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long), edges=[0, 9]),
     ValueError, "at most at the number of bins"),
    (lambda: learning_steps([(0, [1.0])], fraction=0), ValueError, "fraction must be > 0"),
    (lambda: learning_steps({"step": 0}), TypeError, "history must be"),
    (lambda: residual_energy(torch.zeros(1, 2, 2, 2), torch.full((1, 2, 2), 7)), ValueError, "values must lie"),
])
def test_input_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_dataclasses_are_frozen():
    spectrum = cross_entropy_spectrum(_logits(), _labels())
    assert isinstance(spectrum, CrossEntropySpectrum)
    with pytest.raises(AttributeError):
        spectrum.ce = torch.tensor(0.0)
    assert isinstance(count_flops(nn.Linear(2, 2), (1, 2)), FlopCount)


def test_deterministic():
    logits, target = _logits(), _labels(ignore=255)
    a, b = cross_entropy_spectrum(logits, target, 255), cross_entropy_spectrum(logits, target, 255)
    assert torch.equal(a.terms, b.terms) and torch.equal(a.ce_k, b.ce_k)
    assert torch.equal(label_energy(target, 4, 255), label_energy(target, 4, 255))
    assert torch.equal(residual_energy(logits, target, 255), residual_energy(logits, target, 255))
