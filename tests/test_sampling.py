"""The saliency sampler and its inverse: the identity, the shrinking without padding, the zoom at a
peak, the inversion against a brute-force analytic solver, unzoom(zoom(x)) ~ x, gradients,
devices and dtypes, the fixed Gaussian, the blur warm-up, determinism, and every error.

Tolerances (stated once here, asserted below):

* uniform saliency -> identity grid: max abs error < 1e-6 (float32), < 1e-12 (float64), against
  ``F.affine_grid`` with the identity matrix (``align_corners=True``);
* uniform saliency -> sampler output == ``F.interpolate(x, size, mode=mode, align_corners=True)``
  for ``mode`` bilinear (the default) and bicubic: < 1e-5 (float32 bilinear; 3e-5 bicubic, whose
  kernel amplifies the grid's rounding error), < 1e-12 (float64), pixel values in [0, 1];
* the inversion: residual ``|G(q) - p|`` <= 64 machine epsilons (1.4e-14 in float64, 7.6e-6 in
  float32) at the covered pixels (that is the definition of ``valid``), ``G(q)`` evaluated
  independently by ``grid_sample`` within 1e-12 (float64) / 1e-5 (float32) of ``p``, and ``q``
  within 1e-9 of a brute-force analytic solution of every cell's quadratic, which finds a
  solution exactly at the pixels marked valid;
* ``unzoom(zoom(x))`` on a smooth image (one period of a sine, 64 x 64, zoom factor up to ~2):
  max abs error <= 0.01 (amplitude 1) at the covered pixels, which are at least 70 % of them.
"""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd import gradcheck

from losses.loss_cases import DEVICES
from pixelweight._validation import sync_checks
from pixelweight.sampling import (
    CODE_GRID_SIZE,
    CODE_PADDING,
    CODE_SIGMA,
    SaliencySampler,
    SamplerOutput,
    gaussian_kernel,
    identity_grid,
    invert_grid,
    saliency_grid,
    unzoom,
    zoom,
)

F64 = dict(dtype=torch.float64)


def _reference_identity(n, size, dtype=torch.float32):
    theta = torch.eye(2, 3, dtype=dtype).expand(n, 2, 3)
    return F.affine_grid(theta, (n, 1, *size), align_corners=True)


def _bump(contrast, size=31, centre=(15.0, 15.0), width=2.0, dtype=torch.float32):
    """1 + contrast * a Gaussian bump: saliency with a peak of the given contrast."""
    yy, xx = torch.meshgrid(torch.arange(size, dtype=dtype), torch.arange(size, dtype=dtype), indexing="ij")
    bump = torch.exp(-((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2) / (2 * width**2))
    return (1 + contrast * bump).view(1, 1, size, size)


def _random_saliency(n, size, seed, dtype=torch.float32, power=4, scale=50.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(n, 1, *size, generator=g, dtype=torch.float64) ** power * scale + 0.01).to(dtype)


def _smooth_image(n, size, dtype=torch.float32):
    xy = identity_grid(size, batch=n, dtype=dtype)
    return (torch.sin(math.pi * xy[..., 0]) * torch.cos(math.pi * xy[..., 1])).unsqueeze(1)


# ------------------------------------------------------------------------------------
# the grid
# ------------------------------------------------------------------------------------
def test_the_code_defaults():
    assert CODE_GRID_SIZE == 31 and CODE_PADDING == 30
    # FWHM 13 cells: the Gaussian is at half its maximum 6.5 cells out
    assert math.exp(-(6.5**2) / (2 * CODE_SIGMA**2)) == pytest.approx(0.5, abs=1e-12)
    k = gaussian_kernel(CODE_SIGMA, CODE_PADDING)
    assert k.shape == (61,) and k[30] == 1 and torch.equal(k, k.flip(0))


def test_identity_grid_is_affine_grids_identity():
    for size in [(2, 2), (5, 7), (32, 32)]:
        assert torch.equal(identity_grid(size, batch=3), _reference_identity(3, size))


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-6), (torch.float64, 1e-12)])
@pytest.mark.parametrize("grid_size, out_size", [((31, 31), (32, 32)), ((31, 31), (31, 31)), ((9, 13), (40, 24)),
                                                 ((2, 2), (5, 3)), ((31, 31), (224, 224))])
@pytest.mark.parametrize("scale", [1.0, 1e-30, 1e30])
def test_uniform_saliency_gives_the_identity_grid(dtype, tol, grid_size, out_size, scale):
    s = torch.full((2, 1, *grid_size), scale, dtype=dtype)
    grid = saliency_grid(s, out_size=out_size)  # padding 30 >= radius 30
    assert grid.dtype == dtype and grid.shape == (2, *out_size, 2)
    assert (grid - _reference_identity(2, out_size, dtype)).abs().max() < tol
    sampler = SaliencySampler(None, out_size, grid_size=grid_size).to(dtype)
    assert (sampler.grid(s) - _reference_identity(2, out_size, dtype)).abs().max() < tol


@pytest.mark.parametrize("padding, radius", [(4, 4), (8, 4), (30, None), (3, 0)])
def test_identity_whenever_the_radius_is_within_the_padding(padding, radius):
    grid = saliency_grid(torch.ones(1, 7, 7, **F64), out_size=(7, 7), sigma=2.0, padding=padding, radius=radius)
    assert (grid - _reference_identity(1, (7, 7), torch.float64)).abs().max() < 1e-12


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
@pytest.mark.parametrize("mode", ["bilinear", "bicubic"])
def test_uniform_saliency_output_is_a_plain_resize(dtype, tol, mode):
    tol = 3 * tol if (mode, dtype) == ("bicubic", torch.float32) else tol
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 2, 128, 96, generator=g, dtype=torch.float64).to(dtype)
    expected = F.interpolate(x, size=(32, 40), mode=mode, align_corners=True)
    # a fixed uniform saliency, and a network whose logits are constant (softmax: uniform)
    sampler = SaliencySampler(None, (32, 40), mode=mode).to(dtype)
    out = sampler(x, saliency=torch.ones(3, 1, 31, 31, dtype=dtype))
    assert (out.output - expected).abs().max() < tol
    net = nn.Conv2d(2, 1, 1)
    nn.init.zeros_(net.weight)
    nn.init.constant_(net.bias, 0.7)
    out = SaliencySampler(net, (32, 40), mode=mode).to(dtype)(x)
    assert (out.output - expected).abs().max() < tol
    assert out.saliency.shape == (3, 1, 31, 31)
    assert torch.allclose(out.saliency.sum((1, 2, 3)), torch.ones(3, dtype=dtype))  # softmax over the cells


def test_without_padding_the_grid_shrinks_toward_the_centre():
    grid = saliency_grid(torch.ones(1, 1, 31, 31, **F64), out_size=(31, 31), padding=0)[0]
    ref = _reference_identity(1, (31, 31), torch.float64)[0]
    off_centre = ref.abs() > 1e-12
    assert (grid.abs()[off_centre] < ref.abs()[off_centre]).all()  # every coordinate moves inward
    assert (grid[~off_centre].abs() < 1e-12).all()  # the centre stays
    assert grid.abs().max() < 0.8  # the image border is never read
    assert torch.allclose(grid[..., 0], -grid[..., 0].flip(1)) and torch.allclose(grid[..., 0], grid[..., 1].T)
    # more padding (radius fixed at 30): less shrinking, none once padding >= radius
    errors = [(saliency_grid(torch.ones(1, 31, 31, **F64), padding=p, radius=30) - ref).abs().max().item()
              for p in (0, 5, 10, 20, 30)]
    assert all(a > b for a, b in zip(errors, errors[1:])) and errors[-1] < 1e-12


def _magnification(grid, i, j):
    """Local zoom along x at output pixel (i, j): uniform spacing over the grid's spacing."""
    w = grid.shape[2]
    return (2 / (w - 1)) / (grid[0, i, j + 1, 0] - grid[0, i, j, 0]).item()


def test_magnification_at_a_peak_grows_with_the_saliency_contrast():
    mags = [_magnification(saliency_grid(_bump(c, dtype=torch.float64), out_size=64), 32, 31)
            for c in (0, 1, 3, 10, 30, 100)]
    assert mags[0] == pytest.approx(1.0, abs=1e-9)
    assert all(b > a for a, b in zip(mags, mags[1:])), mags
    assert mags[-1] > 4


def test_a_peak_pulls_the_samples_toward_itself():
    s = _bump(30, centre=(10.0, 20.0), dtype=torch.float64)
    grid = saliency_grid(s)[0]
    ref = _reference_identity(1, (31, 31), torch.float64)[0]
    peak = torch.tensor([-1 + 2 * 20 / 30, -1 + 2 * 10 / 30], **F64)
    toward = ((grid - ref) * (peak - ref)).sum(-1)
    toward[10, 20] = 1.0  # the peak itself stays where it is
    assert (toward[5:-5, 5:-5] > 0).all()  # away from the replicate-padded border


def test_saliency_shapes_and_scale_invariance():
    s = _random_saliency(2, (6, 9), seed=1, dtype=torch.float64)
    grid = saliency_grid(s, out_size=(11, 10), sigma=2.0, padding=8)
    assert torch.equal(grid, saliency_grid(s[:, 0], out_size=(11, 10), sigma=2.0, padding=8))  # (N, g, g)
    for c in (1e-300, 1e300):  # normalised by the maximum: neither underflow nor overflow
        assert torch.allclose(saliency_grid(s * c, out_size=(11, 10), sigma=2.0, padding=8), grid, atol=1e-14)
    assert saliency_grid(s, sigma=2.0, padding=8).shape == (2, 6, 9, 2)  # out_size: the map's own
    assert saliency_grid(s.float(), out_size=5).dtype == torch.float32
    assert saliency_grid(s.half(), out_size=5).dtype == torch.float32  # half precision is promoted
    assert saliency_grid(s.bfloat16(), out_size=5).dtype == torch.float32
    assert saliency_grid(torch.ones(0, 1, 4, 4), out_size=3).shape == (0, 3, 3, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_the_grid_ignores_autocast(device):
    """Under torch.autocast the matrix products would run in half precision: not here."""
    s = _random_saliency(2, (31, 31), seed=4).to(device)
    expected = saliency_grid(s, out_size=32)
    dtype = torch.bfloat16 if device == "cpu" else torch.float16
    sampler = SaliencySampler(None, 32).to(device)
    with torch.autocast(device_type=device, dtype=dtype):
        grid = saliency_grid(s, out_size=32)
        out = sampler(torch.rand(2, 1, 64, 64, device=device), saliency=s)
    assert grid.dtype == torch.float32 and torch.equal(grid, expected)
    assert out.grid.dtype == torch.float32 and (out.grid - expected).abs().max() < 1e-6


def test_module_grid_equals_the_function():
    s = _random_saliency(3, (31, 31), seed=2, dtype=torch.float64)
    sampler = SaliencySampler(None, (48, 40), sigma=4.0, padding=12).double()
    expected = saliency_grid(s, out_size=(48, 40), sigma=4.0, padding=12)
    assert torch.allclose(sampler.grid(s), expected, atol=1e-14)
    assert (sampler.grid(s) - expected).abs().max() < 1e-14
    assert sampler.grid(s).min() >= -1 and sampler.grid(s).max() <= 1


def test_zoom_is_grid_sample_with_align_corners():
    g = torch.Generator().manual_seed(3)
    x = torch.rand(2, 3, 20, 30, generator=g)
    grid = torch.rand(2, 7, 5, 2, generator=g) * 2 - 1
    assert torch.equal(zoom(x, grid), F.grid_sample(x, grid, align_corners=True))
    assert torch.equal(zoom(x, grid, mode="nearest"), F.grid_sample(x, grid, mode="nearest", align_corners=True))
    assert zoom(x.double(), grid).dtype == torch.float64  # the grid follows the image's dtype


# ------------------------------------------------------------------------------------
# the inverse
# ------------------------------------------------------------------------------------
def _brute_force_inverse(grid, size):
    """For every target pixel, every cell's bilinear patch inverted analytically (its quadratic
    in s solved in closed form), keeping the solution with (s, t) in the cell; NaN if none."""
    grid = grid.numpy()
    hg, wg = grid.shape[:2]
    h, w = size
    out = np.full((h, w, 2), np.nan)
    ys, xs = np.linspace(-1, 1, h), np.linspace(-1, 1, w)
    tol = 1e-9
    for i in range(hg - 1):
        for j in range(wg - 1):
            a = grid[i, j]
            b, c = grid[i, j + 1] - a, grid[i + 1, j] - a
            d = grid[i + 1, j + 1] - grid[i + 1, j] - grid[i, j + 1] + a
            for yi, py in enumerate(ys):
                for xi, px in enumerate(xs):
                    e = np.array([px, py]) - a
                    # e = s b + t c + s t d  =>  A s^2 + B s + C = 0
                    qa = b[1] * d[0] - b[0] * d[1]
                    qb = e[0] * d[1] - e[1] * d[0] + b[1] * c[0] - b[0] * c[1]
                    qc = e[0] * c[1] - e[1] * c[0]
                    if abs(qa) < 1e-14:
                        roots = [-qc / qb] if abs(qb) > 1e-14 else []
                    else:
                        disc = qb * qb - 4 * qa * qc
                        roots = [] if disc < 0 else [(-qb + sgn * math.sqrt(disc)) / (2 * qa) for sgn in (1, -1)]
                    for s in roots:
                        if not -tol <= s <= 1 + tol:
                            continue
                        den = c + s * d
                        k = int(np.argmax(np.abs(den)))
                        t = (e[k] - s * b[k]) / den[k]
                        if -tol <= t <= 1 + tol:
                            out[yi, xi] = (-1 + 2 * (j + s) / (wg - 1), -1 + 2 * (i + t) / (hg - 1))
    return out


@pytest.mark.parametrize("seed, grid_size, out_size, padding", [(0, (5, 6), (9, 7), 4), (1, (7, 7), (8, 11), 0),
                                                                  (2, (6, 5), (10, 10), 6)])
def test_inverse_matches_a_brute_force_analytic_solver(seed, grid_size, out_size, padding):
    grid = saliency_grid(_random_saliency(1, grid_size, seed, torch.float64, power=2, scale=10.0),
                         sigma=1.5, padding=padding)
    inverse = invert_grid(grid, out_size)
    reference = _brute_force_inverse(grid[0], out_size)
    found = ~np.isnan(reference[..., 0])
    valid = inverse.valid[0].numpy()
    assert found.any() and (valid == found).all()  # covered exactly where a cell has the solution
    np.testing.assert_allclose(inverse.grid[0].numpy()[found], reference[found], rtol=0, atol=1e-9)
    assert inverse.residual[0][inverse.valid[0]].max() <= 1e-13


@pytest.mark.parametrize("dtype, tol", [(torch.float32, 1e-5), (torch.float64, 1e-12)])
def test_inverse_residual_on_strong_zooms(dtype, tol):
    s = torch.full((3, 1, 31, 31), 1e-3, dtype=dtype)
    s[0, 0, 15, 15] = s[1, 0, 3, 25] = 1.0
    s[2] = _random_saliency(1, (31, 31), seed=5, dtype=dtype)[0]
    for sigma in (1.0, 2.0, CODE_SIGMA):
        grid = saliency_grid(s, out_size=96, sigma=sigma)
        inverse = invert_grid(grid, out_size=(80, 72))
        assert inverse.grid.dtype == dtype and inverse.grid.shape == (3, 80, 72, 2)
        assert inverse.valid.float().mean() > 0.6
        assert inverse.residual[inverse.valid].max() <= 64 * torch.finfo(dtype).eps
        # G(q) = p: read the grid at q with grid_sample, as zoom does
        p = F.grid_sample(grid.permute(0, 3, 1, 2), inverse.grid, align_corners=True).permute(0, 2, 3, 1)
        target = identity_grid((80, 72), batch=3, dtype=dtype)
        assert (p - target)[inverse.valid].abs().max() <= tol
        # uncovered pixels are few and lie next to the border
        uncovered = ~inverse.valid
        assert not uncovered[:, 10:-10, 10:-10].any()
    assert _magnification(saliency_grid(s[:1], out_size=96, sigma=1.0), 48, 47) > 50  # a strong zoom indeed


@pytest.mark.parametrize("dtype, iterations", [(torch.float32, 2), (torch.float64, 3)])
@pytest.mark.parametrize("padding", [0, 15])
def test_newton_from_the_located_cell_converges_in_a_few_iterations(dtype, iterations, padding):
    # the chapter's shapes (16 x 16 saliency, 32 x 32 grid, 64 x 64 labels) with strong zooms: the
    # start found by counting grid lines is in the solution's cell, where 2 (float32) or 3
    # (float64) Newton steps reach rounding error; border pixels may walk again (next test)
    s = _random_saliency(4, (16, 16), seed=2, dtype=dtype)
    grid = saliency_grid(s, out_size=32, sigma=16 * 5.52 / 31, padding=padding)  # the models' default width
    many, few = invert_grid(grid, 64, max_iter=100), invert_grid(grid, 64, max_iter=iterations)
    inner = (slice(None), slice(1, -1), slice(1, -1))
    assert 0.4 < many.valid.float().mean() < 0.95  # a real mix of covered and uncovered pixels
    assert torch.equal(few.valid[inner], many.valid[inner])
    assert (few.grid - many.grid)[inner][many.valid[inner]].abs().max() <= 4 * torch.finfo(dtype).eps
    if dtype == torch.float64:  # the located cells say which pixels the warp reaches, before any step
        from pixelweight.sampling.inverse import _start

        _, outside = _start(grid, 64, 64)
        assert torch.equal(outside.view(4, 64, 64)[inner], ~many.valid[inner])


def test_border_pixels_where_the_clamp_collapsed_grid_lines_are_solved():
    # a strong saliency near a corner: the clamp puts two grid rows on the top border and one
    # column on the left one, where every collapsed cell solves G(q) = p; the inverse still
    # finds a solution exactly where the brute-force solver does
    s = _random_saliency(1, (6, 7), seed=57, dtype=torch.float64)
    grid = saliency_grid(s, out_size=(14, 16), sigma=1.5, padding=2)
    assert int(grid[0, :, :, 1].eq(-1).all(dim=1).sum()) == 2 and int(grid[0, :, :, 0].eq(-1).all(dim=0).sum()) == 1
    inverse = invert_grid(grid, (11, 10))
    with np.errstate(divide="ignore", invalid="ignore"):  # the brute force meets the collapsed cells
        reference = _brute_force_inverse(grid[0], (11, 10))
    found = ~np.isnan(reference[..., 0])
    assert found[0].any() and (inverse.valid[0].numpy() == found).all()
    assert inverse.residual[inverse.valid].max() <= 64 * torch.finfo(torch.float64).eps


def test_a_solved_pixel_does_not_depend_on_the_rest_of_the_batch():
    # a pixel that has converged is done: it keeps its point while other pixels (of its image or
    # of another) still walk, so every pixel the warp reaches gets the same inverse alone or in a
    # batch, the image border included (a collapsed border line: next test)
    s = torch.cat((_random_saliency(3, (16, 16), seed=4, scale=5.0), _random_saliency(3, (16, 16), seed=6)))
    grid = saliency_grid(s, out_size=32, sigma=16 * 5.52 / 31, padding=15)
    batch = invert_grid(grid, 64, max_iter=12)
    for n in range(grid.shape[0]):
        alone = invert_grid(grid[n:n + 1], 64, max_iter=12)
        assert torch.equal(alone.valid[0], batch.valid[n])
        assert torch.equal(alone.grid[0][alone.valid[0]], batch.grid[n][batch.valid[n]])


def test_a_border_pixel_does_not_depend_on_the_rest_of_the_batch():
    # found in review: on a border line the clamp collapsed, a solved pixel can move to another
    # collapsed cell (both solve G(q) = p) in the second pass, depending on the other images
    g = torch.Generator().manual_seed(18)
    s = (torch.rand(4, 1, 6, 7, generator=g, dtype=torch.float64) ** 4 * 50 + 0.01).float()
    grid = saliency_grid(s, out_size=(14, 16), sigma=1.5, padding=2)
    batch, alone = invert_grid(grid, (11, 10), max_iter=12), invert_grid(grid[1:2], (11, 10), max_iter=12)
    assert torch.equal(alone.valid[0], batch.valid[1])
    assert torch.equal(alone.grid[0][alone.valid[0]], batch.grid[1][batch.valid[1]])


def test_later_newton_iterations_evaluate_only_the_pixels_still_walking(monkeypatch):
    # the cost of an iteration is that of the pixels not yet converged or stalled: after the
    # first step (float32, from the located cell) the pixels the warp does not reach are most of
    # those left
    import pixelweight.sampling.inverse as inverse_module

    sizes = []
    patch = inverse_module._patch

    def counting(k, *args):
        sizes.append(k.shape[0])
        return patch(k, *args)

    monkeypatch.setattr(inverse_module, "_patch", counting)
    grid = saliency_grid(_random_saliency(4, (16, 16), seed=2), out_size=32, sigma=16 * 5.52 / 31, padding=15)
    invert_grid(grid, 64, max_iter=12)
    pixels = 4 * 64 * 64
    assert sizes[0] == pixels and len(sizes) > 3  # the start, then the iterations
    assert max(sizes[2:]) < 0.2 * pixels  # mostly the uncovered pixels, which walk while others do


@pytest.mark.parametrize("flip", ["x", "y", "both", "transpose"])
def test_a_grid_whose_lines_are_not_in_order_is_still_inverted(flip):
    # a flipped or transposed grid is a valid warp (a mirror image), but its grid lines run
    # the other way: the cell count cannot find the cells, and Newton's method walks from q = p
    grid = saliency_grid(_bump(8.0, size=9, centre=(3.0, 5.0), dtype=torch.float64)[:, 0], out_size=12,
                         sigma=1.5, padding=8)
    flipped = {"x": lambda g: g.flip(2), "y": lambda g: g.flip(1), "both": lambda g: g.flip(1, 2),
               "transpose": lambda g: g.transpose(1, 2).flip(-1)}[flip](grid).contiguous()
    both = torch.cat((grid, flipped))  # each image of a batch gets its own start
    inverse = invert_grid(both, 16)
    assert inverse.valid[1].float().mean() == inverse.valid[0].float().mean() > 0.6
    assert inverse.residual[inverse.valid].max() <= 64 * torch.finfo(torch.float64).eps


def test_the_gradient_to_the_grid_is_finite_where_the_jacobian_is_singular():
    # grid lines the clamp collapsed on the border: cells of zero area, whose Jacobian is singular
    s = _random_saliency(1, (6, 7), seed=57, dtype=torch.float64)
    grid = saliency_grid(s, out_size=(14, 16), sigma=1.5, padding=2).requires_grad_()
    inverse = invert_grid(grid, (11, 10))
    inverse.grid[inverse.valid].sum().backward()
    assert torch.isfinite(grid.grad).all() and grid.grad.abs().sum() > 0


def test_identity_inverse_and_unzoom_at_the_identity_is_a_resize():
    inverse = invert_grid(identity_grid((9, 13), batch=2), out_size=(20, 16))
    assert inverse.valid.all() and (inverse.grid - identity_grid((20, 16), batch=2)).abs().max() < 1e-6
    y = torch.rand(2, 3, 9, 13, generator=torch.Generator().manual_seed(0))
    expected = F.interpolate(y, size=(20, 16), mode="bilinear", align_corners=True)
    assert (unzoom(y, identity_grid((9, 13), batch=2), (20, 16)) - expected).abs().max() < 1e-6


def test_unzoom_of_zoom_gives_the_image_back_where_the_warp_is_invertible():
    image = _smooth_image(4, 64)
    s = torch.cat([_bump(c, centre=cen) for c, cen in [(0, (15, 15)), (3, (15, 15)), (10, (10, 20)),
                                                        (20, (22, 8))]])
    grid = saliency_grid(s, out_size=64)
    zoomed = zoom(image, grid)
    back = unzoom(zoomed, grid, 64)
    covered = invert_grid(grid, 64).valid
    error = (back - image).abs()[:, 0]
    assert covered.float().mean(dim=(1, 2)).min() >= 0.7
    assert error[covered].max() <= 0.01
    assert error[0].max() < 1e-5  # uniform saliency: zoom and unzoom are identities
    # the zoomed images differ from the image: the round trip is not trivial
    assert (zoomed - image).abs().amax(dim=(1, 2, 3))[1:].min() > 0.05
    # a prediction at another resolution than the grid (e.g. a stride-2 network) maps back too
    half = F.interpolate(zoomed, size=32, mode="bilinear", align_corners=True)
    assert (unzoom(half, grid, 64) - image).abs()[:, 0][covered].max() <= 0.03


def test_uncovered_pixels_are_marked_and_get_the_nearest_covered_value():
    grid = saliency_grid(torch.ones(1, 31, 31), out_size=32, padding=0)  # shrunk: the border is not read
    inverse = invert_grid(grid, 32)
    assert not inverse.valid[0, 0].any() and not inverse.valid[0, :, 0].any() and inverse.valid[0, 16, 16]
    assert (inverse.grid.abs() <= 1).all() and torch.isfinite(inverse.grid).all()
    assert inverse.residual[~inverse.valid].min() > 64 * torch.finfo(torch.float32).eps


# ------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------
@pytest.mark.parametrize("padding, out_size", [(4, (7, 6)), (0, (7, 6)), (2, None), (4, (5, 6))])
def test_gradcheck_grid_wrt_saliency(padding, out_size):
    s = (_random_saliency(2, (5, 6), seed=0, dtype=torch.float64, power=1, scale=1.0) + 0.2).requires_grad_()
    assert gradcheck(lambda s: saliency_grid(s, out_size=out_size, sigma=1.5, padding=padding), (s,))


def test_gradcheck_module_grid_wrt_saliency():
    sampler = SaliencySampler(None, (6, 7), grid_size=(4, 5), sigma=1.2, padding=3).double()
    s = (_random_saliency(2, (4, 5), seed=1, dtype=torch.float64, power=1, scale=1.0) + 0.1).requires_grad_()
    assert gradcheck(sampler.grid, (s,))


def test_gradcheck_unzoom_wrt_y():
    grid = saliency_grid(_random_saliency(2, (5, 6), seed=0, dtype=torch.float64, power=1), out_size=(6, 5),
                         sigma=1.5, padding=4)
    y = torch.rand(2, 3, 6, 5, generator=torch.Generator().manual_seed(1), **F64).requires_grad_()
    assert gradcheck(lambda y: unzoom(y, grid, (7, 8)), (y,))
    assert gradcheck(lambda y: unzoom(y, grid, (7, 8), mode="bicubic"), (y,))


@pytest.mark.parametrize("stretch", [1.05, 0.9])
def test_gradcheck_inverse_wrt_the_grid_at_covered_pixels(stretch):
    """The implicit-function gradient. Stretched by 1.05 the grid covers almost every pixel with a
    solution strictly inside; shrunk by 0.9, the border pixels are uncovered. (On the border of
    the image, where a clamped grid meets a pixel exactly, the inverse has a kink: not tested.)"""
    base = saliency_grid(_random_saliency(2, (5, 6), seed=0, dtype=torch.float64, power=1), out_size=(6, 5),
                         sigma=1.5, padding=4)
    grid = (base * stretch).requires_grad_()
    covered = invert_grid(grid, (7, 8)).valid
    assert 0.4 < covered.float().mean() < 1
    assert gradcheck(lambda g: invert_grid(g, (7, 8)).grid[covered], (grid,))
    # uncovered pixels get no gradient
    invert_grid(grid, (7, 8)).grid[~covered].sum().backward()
    assert grid.grad.abs().max() == 0


def test_gradcheck_unzoom_wrt_the_saliency():
    s = (_random_saliency(1, (5, 6), seed=0, dtype=torch.float64, power=1) + 0.2).requires_grad_()
    y = torch.rand(1, 2, 6, 5, generator=torch.Generator().manual_seed(2), **F64)
    covered = invert_grid(saliency_grid(s, out_size=(6, 5), sigma=1.5, padding=4), (7, 8)).valid[0]
    assert 0.5 < covered.float().mean() < 1

    def run(s):
        return unzoom(y, saliency_grid(s, out_size=(6, 5), sigma=1.5, padding=4), (7, 8))[:, :, covered]

    assert gradcheck(run, (s,))


def test_gradcheck_sampler_output_wrt_the_saliency_network():
    torch.manual_seed(0)
    net = nn.Conv2d(1, 1, 3, padding=1).double()
    x = torch.rand(2, 1, 12, 12, **F64)
    sampler = SaliencySampler(net, 6, grid_size=5, sigma=1.5, padding=4).double()

    def run(weight, bias):
        params = {"saliency_net.weight": weight, "saliency_net.bias": bias}
        return torch.func.functional_call(sampler, params, (x,)).output

    assert gradcheck(run, (net.weight.detach().clone().requires_grad_(), net.bias.detach().clone().requires_grad_()))


# ------------------------------------------------------------------------------------
# the module: devices, dtypes, buffers, warm-up, determinism
# ------------------------------------------------------------------------------------
def _net(channels=1):
    return nn.Sequential(nn.Conv2d(channels, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 1, 1))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_devices_and_dtypes(device, dtype):
    torch.manual_seed(0)
    sampler = SaliencySampler(_net(3), (16, 12), grid_size=9, sigma=2.0, padding=8).to(device=device, dtype=dtype)
    x = torch.rand(2, 3, 64, 48, device=device, dtype=dtype, requires_grad=True)
    out = sampler(x)
    assert isinstance(out, SamplerOutput)
    assert out.output.shape == (2, 3, 16, 12) and out.output.dtype == dtype and out.output.device.type == device
    assert out.grid.shape == (2, 16, 12, 2) and out.grid.dtype == dtype and out.grid.device.type == device
    assert out.saliency.shape == (2, 1, 9, 9)
    out.output.sum().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in sampler.parameters())
    assert x.grad is not None and x.grad.shape == x.shape
    y = torch.rand(2, 5, 16, 12, device=device, dtype=dtype)
    back = unzoom(y, out.grid, (64, 48))
    assert back.shape == (2, 5, 64, 48) and back.dtype == dtype and back.device.type == device


@pytest.mark.parametrize("device", DEVICES)
def test_half_precision_images(device):
    sampler = SaliencySampler(_net(), 8, grid_size=5, sigma=1.5, padding=4).to(device)
    x = torch.rand(2, 1, 32, 32, device=device)
    with torch.no_grad():
        reference = sampler(x)
        for dtype in (torch.bfloat16,) + ((torch.float16,) if device == "cuda" else ()):
            out = sampler(x.to(dtype), saliency=reference.saliency)
            assert out.output.dtype == dtype and out.grid.dtype == torch.float32  # the grid stays float32
            # sampled in float32: only the image's own rounding remains
            expected = zoom(x.to(dtype).float(), reference.grid)
            assert torch.equal(out.output, expected.to(dtype))


def test_the_gaussian_is_a_fixed_buffer():
    torch.manual_seed(0)
    net = _net()
    sampler = SaliencySampler(net, 8, grid_size=7, sigma=2.0, padding=6)
    buffers = dict(sampler.named_buffers())
    assert {"gaussian", "left", "right", "upsample_h", "upsample_w", "identity"} <= set(buffers)
    assert torch.allclose(sampler.gaussian, gaussian_kernel(2.0, 6).float())
    parameters = {id(p) for p in sampler.parameters()}
    assert parameters == {id(p) for p in net.parameters()}
    assert not any(id(b) in parameters for b in buffers.values())
    assert set(sampler.state_dict()) == {f"saliency_net.{k}" for k in net.state_dict()}  # derived, not saved
    before = {k: b.clone() for k, b in buffers.items()}
    optimizer = torch.optim.SGD(sampler.parameters(), lr=1.0)
    for _ in range(2):
        optimizer.zero_grad()
        sampler(torch.rand(2, 1, 32, 32)).output.square().sum().backward()
        optimizer.step()
    for name, b in sampler.named_buffers():
        assert not b.requires_grad and b.grad is None and torch.equal(b, before[name]), name
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())
    # the buffers follow .to()
    assert sampler.double().gaussian.dtype == torch.float64 and sampler.left.dtype == torch.float64


def test_blur_warmup_only_in_training_and_while_enabled():
    torch.manual_seed(0)
    x = torch.rand(2, 1, 64, 64)
    sampler = SaliencySampler(_net(), 32, grid_size=9, sigma=2.0, padding=8, blur_warmup=True,
                              blur_range=(0.25, 0.5), seed=0)
    sampler.eval()
    with torch.no_grad():
        plain = sampler(x).output
        sampler.train()
        blurred = sampler(x).output
        assert (blurred - plain).abs().max() > 1e-2  # pooled to 8..16 pixels and upsampled back
        assert blurred.shape == plain.shape
        # a blurred image is smoother: smaller differences between neighbours
        assert (blurred.diff(dim=-1).abs().mean() < plain.diff(dim=-1).abs().mean())
        sampler.blur_warmup = False
        assert torch.equal(sampler(x).output, plain)
        sampler.eval()
        sampler.blur_warmup = True
        assert torch.equal(sampler(x).output, plain)
    # gradients flow through the blur
    sampler.train()
    sampler.saliency_net.zero_grad()
    sampler(x).output.sum().backward()
    assert sampler.saliency_net[0].weight.grad.abs().sum() > 0


def test_blur_pools_to_the_drawn_size():
    sampler = SaliencySampler(None, (40, 20), grid_size=5, sigma=1.5, padding=4, blur_warmup=True,
                              blur_range=(0.1, 0.1), seed=0).train()
    x = torch.rand(1, 1, 80, 40, generator=torch.Generator().manual_seed(0))
    out = sampler(x, saliency=torch.ones(1, 1, 5, 5)).output
    # 0.1 x 40 = 4 rows, 2 columns: the image is constant on 10 x 10 blocks before upsampling
    pooled = F.adaptive_avg_pool2d(F.interpolate(x, size=(40, 20), mode="bilinear", align_corners=True), (4, 2))
    assert torch.allclose(out, F.interpolate(pooled, size=(40, 20), mode="bilinear", align_corners=False), atol=1e-6)


def test_determinism():
    x = torch.rand(2, 1, 64, 64, generator=torch.Generator().manual_seed(0))

    def make(seed):
        torch.manual_seed(1)
        return SaliencySampler(_net(), 32, grid_size=9, sigma=2.0, padding=8, blur_warmup=True,
                               blur_range=(0.1, 1.0), seed=seed).train()

    def outputs(sampler, k=6):
        with torch.no_grad():
            return [sampler(x).output for _ in range(k)]

    a, b = outputs(make(3)), outputs(make(3))
    assert all(torch.equal(u, v) for u, v in zip(a, b))  # same seed, same sizes, same outputs
    assert len({round(float(o.sum()), 4) for o in a}) > 1  # the sizes vary from call to call
    c = outputs(make(4))
    assert any(not torch.equal(u, v) for u, v in zip(a, c))
    # seed=None: PyTorch's global generator, reproducible under torch.manual_seed
    sampler = make(None)
    torch.manual_seed(7)
    d = outputs(sampler)
    torch.manual_seed(7)
    assert all(torch.equal(u, v) for u, v in zip(d, outputs(sampler)))
    # the inversion is deterministic too
    grid = saliency_grid(_random_saliency(2, (31, 31), seed=0), out_size=32)
    assert torch.equal(invert_grid(grid, 48).grid, invert_grid(grid, 48).grid)


@pytest.mark.parametrize("net_size", [(16, 16), (31, 31), (40, 7), (1, 1), (5, 31)])
def test_the_networks_map_is_resized_like_interpolate(net_size):
    """The network's map is brought to the grid by two matrix products: F.interpolate's
    bilinear resize with align_corners=True."""
    logits = torch.rand(2, 1, *net_size, generator=torch.Generator().manual_seed(0), **F64) + 0.1

    class Fixed(nn.Module):
        def forward(self, x):
            return logits

    out = SaliencySampler(Fixed(), 8, grid_size=(31, 29), activation="none").double()(torch.rand(2, 1, 8, 8, **F64))
    expected = F.interpolate(logits, size=(31, 29), mode="bilinear", align_corners=True)
    assert torch.allclose(out.saliency, expected, atol=1e-12)


def test_repr_and_rectangular_sizes():
    sampler = SaliencySampler(_net(), (24, 32), grid_size=(7, 9), sigma=2.0, padding=8, saliency_size=(12, 16))
    assert "grid_size=(7, 9)" in repr(sampler) and "saliency_size=(12, 16)" in repr(sampler)
    out = sampler(torch.rand(1, 1, 96, 128))
    assert out.output.shape == (1, 1, 24, 32) and out.saliency.shape == (1, 1, 7, 9)


# ------------------------------------------------------------------------------------
# errors: every input is validated, and NaN never becomes a number
# ------------------------------------------------------------------------------------
def _nan_saliency():
    s = torch.ones(1, 1, 4, 4)
    s[0, 0, 1, 2] = float("nan")
    return s


def _inf_saliency():
    s = torch.ones(1, 4, 4)
    s[0, 0, 0] = float("inf")
    return s


@pytest.mark.parametrize(
    "saliency, kwargs, exc, match",
    [
        ([[1.0]], {}, TypeError, "saliency must be a torch.Tensor"),
        (torch.ones(4, 4), {}, ValueError, r"\(N, 1, g_h, g_w\) or \(N, g_h, g_w\)"),
        (torch.ones(1, 2, 4, 4), {}, ValueError, "one channel"),
        (torch.ones(1, 1, 4, 4, dtype=torch.int64), {}, ValueError, "floating"),
        (torch.ones(1, 1, 1, 4), {}, ValueError, "at least 2 x 2"),
        (_nan_saliency(), {}, ValueError, "1 NaN value"),
        (_inf_saliency(), {}, ValueError, "1 infinite value"),
        (-torch.ones(1, 4, 4), {}, ValueError, "16 negative value"),
        (torch.stack([torch.ones(4, 4), torch.zeros(4, 4)]), {}, ValueError, r"all-zero map in image\(s\) \[1\]"),
        (torch.ones(1, 4, 4), dict(out_size=1), ValueError, "out_size must be >= 2"),
        (torch.ones(1, 4, 4), dict(out_size=(8, 1)), ValueError, r"out_size\[1\] must be >= 2"),
        (torch.ones(1, 4, 4), dict(out_size=(8, 8, 8)), ValueError, "pair"),
        (torch.ones(1, 4, 4), dict(out_size=8.0), TypeError, "out_size must be an int"),
        (torch.ones(1, 4, 4), dict(sigma=0.0), ValueError, "sigma must be > 0"),
        (torch.ones(1, 4, 4), dict(sigma=-1.0), ValueError, "sigma must be > 0"),
        (torch.ones(1, 4, 4), dict(sigma=float("nan")), ValueError, "sigma must not be NaN"),
        (torch.ones(1, 4, 4), dict(sigma=float("inf")), ValueError, "sigma must be finite"),
        (torch.ones(1, 4, 4), dict(padding=-1), ValueError, "padding must be >= 0"),
        (torch.ones(1, 4, 4), dict(padding=1.5), TypeError, "padding must be an int"),
        (torch.ones(1, 4, 4), dict(radius=-1), ValueError, "radius must be >= 0"),
    ],
)
def test_saliency_grid_errors(saliency, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        saliency_grid(saliency, **kwargs)


def test_a_saliency_too_concentrated_for_sigma_raises():
    s = torch.zeros(1, 31, 31)
    s[0, 15, 15] = 1.0
    saliency_grid(s, sigma=CODE_SIGMA)  # exp(-15^2 / 2 sigma^2) > 0 everywhere: fine
    with pytest.raises(ValueError, match="Gaussian-weighted saliency is 0 at some grid point"):
        saliency_grid(s, sigma=0.5)  # exp(-15^2 / 0.5) underflows
    with pytest.raises(ValueError, match="Gaussian-weighted saliency is 0"):
        saliency_grid(s, padding=2)  # radius 2: the kernel does not reach the peak from the corners


def test_sync_checks_give_the_same_errors():
    with sync_checks(True), pytest.raises(ValueError, match="NaN"):
        saliency_grid(_nan_saliency())


@pytest.mark.parametrize(
    "make, exc, match",
    [
        (lambda: zoom(torch.ones(1, 4, 4), identity_grid(2)), ValueError, r"x must have shape \(N, C, H, W\)"),
        (lambda: zoom(torch.ones(1, 1, 4, 4, dtype=torch.int64), identity_grid(2)), ValueError, "x must be a floating"),
        (lambda: zoom(torch.ones(1, 1, 4, 4), torch.zeros(1, 2, 2, 3)), ValueError,
         r"grid must have shape \(N, H, W, 2\)"),
        (lambda: zoom(torch.ones(1, 1, 4, 4), torch.zeros(1, 2, 2, 2, dtype=torch.int64)), ValueError,
         "grid must be a floating"),
        (lambda: zoom(torch.ones(2, 1, 4, 4), identity_grid(2)), ValueError, "batch size 1 but x has 2"),
        (lambda: zoom(torch.ones(1, 1, 4, 4), identity_grid(2).fill_(float("nan"))), ValueError, "must be finite"),
        (lambda: zoom(torch.ones(1, 1, 4, 4), identity_grid(2), mode="area"), ValueError, "mode must be one of"),
        (lambda: zoom(torch.ones(1, 1, 4, 4), "grid"), TypeError, "grid must be a torch.Tensor"),
        (lambda: invert_grid(torch.zeros(1, 1, 4, 2), 4), ValueError, "at least 2 x 2"),
        (lambda: invert_grid(identity_grid(4), 1), ValueError, "out_size must be >= 2"),
        (lambda: invert_grid(identity_grid(4), 4, max_iter=0), ValueError, "max_iter must be >= 1"),
        (lambda: invert_grid(identity_grid(4).fill_(float("inf")), 4), ValueError, "must be finite"),
        (lambda: unzoom(torch.ones(2, 1, 4, 4), identity_grid(4), 4), ValueError, "batch size 1 but y has 2"),
        (lambda: unzoom(torch.ones(1, 1, 4, 4), identity_grid(4), 4, mode="linear"), ValueError, "mode must be"),
        (lambda: unzoom(torch.ones(1, 1, 4, 4), None, 4), TypeError, "grid must be a torch.Tensor"),
        (lambda: identity_grid(1), ValueError, "size must be >= 2"),
        (lambda: gaussian_kernel(0.0, 3), ValueError, "sigma must be > 0"),
        (lambda: gaussian_kernel(1.0, -1), ValueError, "radius must be >= 0"),
    ],
)
def test_zoom_and_unzoom_errors(make, exc, match):
    with pytest.raises(exc, match=match):
        make()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        (dict(saliency_net=lambda x: x), TypeError, "saliency_net must be a torch.nn.Module or None"),
        (dict(out_size=1), ValueError, "out_size must be >= 2"),
        (dict(grid_size=(31, 1)), ValueError, r"grid_size\[1\] must be >= 2"),
        (dict(sigma=0), ValueError, "sigma must be > 0"),
        (dict(padding=-2), ValueError, "padding must be >= 0"),
        (dict(saliency_size=0), ValueError, "saliency_size must be >= 1"),
        (dict(activation="sigmoid"), ValueError, "activation must be one of"),
        (dict(mode="area"), ValueError, "mode must be one of"),
        (dict(antialias=1), TypeError, "antialias must be a bool"),
        (dict(blur_warmup="yes"), TypeError, "blur_warmup must be a bool"),
        (dict(blur_range=(0.5,)), ValueError, "blur_range must be a pair"),
        (dict(blur_range=(0.0, 1.0)), ValueError, r"blur_range\[0\] must be > 0"),
        (dict(blur_range=(0.5, 1.5)), ValueError, r"blur_range\[1\] must be <= 1"),
        (dict(blur_range=(0.8, 0.5)), ValueError, "low <= high"),
        (dict(seed=-1), ValueError, "seed must be >= 0"),
    ],
)
def test_sampler_constructor_errors(kwargs, exc, match):
    args = dict(saliency_net=None, out_size=8)
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        SaliencySampler(args.pop("saliency_net"), args.pop("out_size"), **args)


def test_sampler_forward_errors():
    x = torch.rand(2, 1, 16, 16)
    with pytest.raises(ValueError, match="no saliency_net"):
        SaliencySampler(None, 8)(x)
    with pytest.raises(ValueError, match=r"must return \(N, 1, h, w\)"):
        SaliencySampler(nn.Conv2d(1, 2, 1), 8)(x)
    with pytest.raises(ValueError, match=r"x must have shape \(N, C, H, W\)"):
        SaliencySampler(_net(), 8)(x[0])
    with pytest.raises(ValueError, match="x must be a floating"):
        SaliencySampler(_net(), 8)(x.long())
    with pytest.raises(ValueError, match="batch size 1 but x has 2"):
        SaliencySampler(None, 8, grid_size=5)(x, saliency=torch.ones(1, 1, 5, 5))
    with pytest.raises(ValueError, match=r"on the \(5, 5\) grid"):
        SaliencySampler(None, 8, grid_size=5)(x, saliency=torch.ones(2, 1, 6, 6))
    with pytest.raises(ValueError, match="NaN"):  # a network that outputs NaN: an error, not a finite image
        net = nn.Conv2d(1, 1, 1)
        nn.init.constant_(net.bias, float("nan"))
        SaliencySampler(net, 8, grid_size=5)(x)
    identity = nn.Conv2d(1, 1, 1)
    nn.init.ones_(identity.weight)
    nn.init.zeros_(identity.bias)
    with pytest.raises(ValueError, match="negative"):
        SaliencySampler(identity, 8, grid_size=5, activation="none")(-torch.rand(2, 1, 16, 16))


def test_nan_in_a_prediction_stays_nan_after_unzoom():
    y = torch.rand(1, 2, 8, 8)
    y[0, 1, 3, 4] = float("nan")
    grid = saliency_grid(_bump(5, size=9, centre=(4, 4)), out_size=8, sigma=2.0, padding=8)
    back = unzoom(y, grid, 16)
    assert torch.isfinite(back[0, 0]).all()
    assert torch.isnan(back[0, 1]).any() and torch.isnan(back[0, 1]).sum() < 16 * 16  # only nearby pixels
