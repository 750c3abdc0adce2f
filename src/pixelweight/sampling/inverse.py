r"""Unzoom: map a prediction made on the zoomed image back to the original pixel grid.

Beyond the paper. The saliency sampler feeds a task network a warped image; for a dense task
(segmentation) its prediction lives on the warped lattice and has to be brought back to the
original pixels. Thavamani et al. (*Learning to Zoom and Unzoom*, CVPR 2023, LZU) do this by
inverting the warp: they treat the sampling grid as **piecewise bilinear** on its lattice and
invert it cell by cell; Jin et al. (ICLR 2022) scatter the warped pixels back and fill the holes,
which is neither exact nor differentiable. This module inverts the same piecewise-bilinear warp
as LZU, by a different, vectorised method [ours]:

**The warp.** A grid :math:`G` of :math:`H_g \times W_g` points (what :func:`~pixelweight.sampling.zoom`
uses) defines the map :math:`q \mapsto G(q)` from the normalised coordinates :math:`q \in [-1,1]^2`
of the zoomed image to those of the original (``align_corners=True``: lattice point
:math:`(i, j)` sits at :math:`q = (-1 + 2j/(W_g-1), -1 + 2i/(H_g-1))`). Inside the cell with
corners :math:`P_{00}, P_{01}, P_{10}, P_{11}` and local coordinates :math:`(s, t) \in [0,1]^2`,

.. math::
    G(q) = a + s\,b + t\,c + s\,t\,d, \qquad a = P_{00},\ b = P_{01} - P_{00},\
    c = P_{10} - P_{00},\ d = P_{11} - P_{10} - P_{01} + P_{00},

exactly what ``grid_sample`` computes when it reads the grid as an image — so the inverse is that
of the warp the zoom really applied.

**The inversion.** For every pixel :math:`p` of the original grid (``out_size``,
``align_corners=True``) solve :math:`G(q) = p` by Newton's method on the piecewise-bilinear map.
It starts in the cell that holds the solution: the cells' edges are straight, so grid column
:math:`j` is the polyline through :math:`P_{0j}, P_{1j}, \dots`; where the warp does not fold the
column polylines are ordered left to right and the row polylines top to bottom, and the cell of
:math:`p` is found by counting, with binary searches, the column polylines left of :math:`p` at
its height and the row polylines above it; the start inside the cell interpolates between the
crossings either side (exact where the cell is a parallelogram). In the cell that holds
:math:`q_k`, the Jacobian is :math:`J = [\,(b + t d)\,\tfrac{W_g-1}{2},\ (c + s d)\,\tfrac{H_g-1}{2}\,]`
and :math:`q_{k+1} = \mathrm{clamp}(q_k - \alpha J^{-1}(G(q_k) - p), -1, 1)`. A step is accepted
only if it lowers the residual :math:`\lVert G(q) - p \rVert`; otherwise :math:`\alpha` is halved
(a backtracking line search, per pixel). A step may leave the cell: the next one uses the cell it
lands in. On one bilinear patch Newton's method converges quadratically to its exact inverse:
from the located start, in 2 iterations in float32 and 3 in float64 on random saliency grids of
the chapter's shapes (to
rounding error: the tests ask :math:`\lVert G(q) - p \rVert \le 10^{-10}` in float64 and
compare with a brute-force analytic solution of every cell's quadratic). The saliency sampler's
warp is the gradient of a convex function (see the notes of ``pixelweight.sampling.sampler``):
it does not fold, so the solution is unique where it exists, except on the image border, where
the sampler's clamp to :math:`[-1, 1]` can collapse rows or columns of cells onto the border line:
there several collapsed cells may solve the equation and the inverse takes one of them (the
located start prefers a cell that has not collapsed, where :math:`J` is invertible); a border
pixel that the located start leaves unsolved walks again from :math:`q_0 = p` (what the first
version of this module did for every pixel). A grid whose lines are not in order (it folds, or
is flipped) starts every pixel of that image at :math:`q_0 = p`, as that first version did.

**Where there is no solution.** The zoomed image need not cover the whole original: without
padding the grid shrinks toward the centre, and with it a saliency concentrated inside pulls the
border grid points inward. A pixel outside the warp's range (beyond the first or last column or
row polyline) starts on the border of the range next to it and is not waited for: it takes
Newton steps only while other pixels still need them, each accepted only if it lowers the
residual, and the prediction there is the one of that nearby covered point — an extrapolation.
(The count that finds these pixels can miss a solution on the image border that only a
collapsed cell reaches, e.g. at a corner: 5 pixels in 194,640 of random saliency grids in a
check against the first version, which in turn missed 292 solutions this one finds.) ``valid`` marks the pixels where
:math:`G(q) = p` is solved to rounding error (residual at most 64 machine epsilons); mask the
others (e.g. with ``ignore_index``) where it matters. No hole filling is done.

**Gradients.** :func:`~pixelweight.sampling.unzoom` is linear in the prediction ``y`` and differentiable with respect
to it (``grid_sample``). Gradients also flow to the **grid** (and through it to the saliency),
by the implicit function theorem: at the solution :math:`G_\theta(q^\star) = p`, so
:math:`\partial q^\star / \partial \theta = -J^{-1}\, \partial G_\theta(q^\star)/\partial \theta`,
realised by one differentiable correction
:math:`q = q^\star - J^{-1}(G_\theta(q^\star) - \mathrm{sg}[G_\theta(q^\star)])` whose value is
:math:`q^\star` (``sg`` = stop-gradient); invalid pixels get no gradient to the grid. The Newton
iterations themselves run without autograd. Where a clamped grid (the sampler clamps to
:math:`[-1, 1]`) meets a pixel on the image border exactly, the inverse has a kink: its
gradient there is the one-sided derivative toward the covered side.

In the book: :doc:`Learning to zoom: the inverse map </notebooks/03_zoom/01_derivation>` and
:doc:`zoom and unzoom for segmentation </notebooks/03_zoom/03_segmentation>`.

**Cost.** Locating the cells costs a few binary searches per pixel; each Newton iteration then
evaluates the bilinear map once for each pixel still walking (a gather of one cell's 8
coefficients): a pixel that has converged or stalled is done, keeps its point and is left out of
later iterations, and a pixel outside the warped lattice walks only while others do. The loop
stops when every pixel has converged, stalled or lies outside (checked every iteration; on CUDA
picking the pixels still walking synchronises with the host several times an iteration). After
the first step from the located start most of the pixels still walking are the uncovered ones. For 16 images of 64 x 64 pixels from a 32 x 32 grid (the
chapter's shapes) of the test suite's random saliency maps, one idle CPU thread, ``max_iter=12``:
47-64 ms, against 79-139 ms when every pixel took every iteration (the version before this one,
whose solved pixels could also still move along a collapsed border line while others walked). A
learned saliency that collapses grid lines onto the border keeps a few pixels crawling (their
cell's :math:`J` is singular) until ``max_iter``; they are all that is left to evaluate by then.
Memory is a few dozen numbers per output pixel.
"""

from __future__ import annotations

from typing import NamedTuple, Tuple

import torch

from .._validation import check_choice, check_int
from .sampler import SAMPLING_MODES, Size, _check_grid, _check_pair, _check_size, identity_grid, zoom

__all__ = ["InverseGrid", "invert_grid", "unzoom"]


class InverseGrid(NamedTuple):
    """What :func:`invert_grid` returns.

    Examples
    --------
    >>> from pixelweight.sampling import identity_grid, invert_grid
    >>> grid, valid, residual = invert_grid(identity_grid(3), out_size=2)
    >>> tuple(grid.shape), tuple(valid.shape), bool(valid.all()), float(residual.max())
    ((1, 2, 2, 2), (1, 2, 2), True, 0.0)
    """

    #: ``(N, H, W, 2)``: for every pixel of the original grid, where it lies in the zoomed image
    #: (normalised :math:`(x, y)`, ``align_corners=True``): the grid that unzooms with :func:`zoom`.
    grid: torch.Tensor
    #: ``(N, H, W)`` bool: the warp reaches the pixel: :math:`G(q) = p` is solved to rounding
    #: error (residual at most 64 machine epsilons of the compute dtype: 7.6e-6 in float32, 1.4e-14
    #: in float64).
    valid: torch.Tensor
    #: ``(N, H, W)``: the residual :math:`\lVert G(q) - p \rVert_2` in normalised coordinates.
    residual: torch.Tensor


def _cell_coefficients(grid: torch.Tensor) -> torch.Tensor:
    """(N, H_g, W_g, 2) grid -> (N, (H_g - 1)(W_g - 1), 8): the bilinear patch ``a, b, c, d`` of each cell."""
    p00, p01 = grid[:, :-1, :-1], grid[:, :-1, 1:]
    p10, p11 = grid[:, 1:, :-1], grid[:, 1:, 1:]
    coef = torch.cat((p00, p01 - p00, p10 - p00, p11 - p10 - p01 + p00), dim=-1)
    return coef.flatten(1, 2)


def _locate(q: torch.Tensor, hg: int, wg: int) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The cell of each point ``q`` (N, P, 2) in [-1, 1]^2 and its local coordinates (s, t) in [0, 1]."""
    fx = (q[..., 0] + 1.0) * (0.5 * (wg - 1))
    fy = (q[..., 1] + 1.0) * (0.5 * (hg - 1))
    j = fx.floor().clamp(0, wg - 2)
    i = fy.floor().clamp(0, hg - 2)
    cell = (i * (wg - 1) + j).long()
    return cell, fx - j, fy - i


def _patch(k: torch.Tensor, s: torch.Tensor, t: torch.Tensor, hg: int, wg: int):
    """G(q) (..., 2) and the columns dG/dq_x, dG/dq_y (..., 2) of the Jacobian, from the
    coefficients ``k`` (..., 8) of the cell that holds each point and its local coordinates."""
    a, b, c, d = k[..., 0:2], k[..., 2:4], k[..., 4:6], k[..., 6:8]
    s, t = s.unsqueeze(-1), t.unsqueeze(-1)
    value = a + s * b + t * c + (s * t) * d
    return value, (b + t * d) * (0.5 * (wg - 1)), (c + s * d) * (0.5 * (hg - 1))


def _evaluate(coef: torch.Tensor, cell: torch.Tensor, s: torch.Tensor, t: torch.Tensor, hg: int, wg: int):
    """G(q) (N, P, 2) and the columns dG/dq_x, dG/dq_y (N, P, 2) of the Jacobian."""
    return _patch(torch.gather(coef, 1, cell.unsqueeze(-1).expand(*cell.shape, 8)), s, t, hg, wg)


def _crossings(along: torch.Tensor, across: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
    """Where polylines cross lines of constant ``along`` coordinate.

    ``along``, ``across`` ``(N, L, K)``: the two coordinates of the ``K`` vertices of ``L``
    polylines, ``along`` nondecreasing along each (a grid line of a warp that does not fold);
    ``values`` ``(M,)`` sorted. Returns ``(N, L, M)``: each polyline's ``across`` coordinate
    where its ``along`` coordinate is each value, its end segments extended beyond its ends.
    """
    n, lines, k = along.shape
    v = values.expand(n, lines, values.numel()).contiguous()
    seg = (torch.searchsorted(along.contiguous(), v, right=True) - 1).clamp(0, k - 2)
    a0, a1 = along.gather(-1, seg), along.gather(-1, seg + 1)
    c0, c1 = across.gather(-1, seg), across.gather(-1, seg + 1)
    span = a1 - a0
    frac = torch.where(span > 0, (v - a0) / torch.where(span > 0, span, torch.ones_like(span)),
                       torch.zeros_like(span))
    return c0 + frac * (c1 - c0)


def _cell_index(cross: torch.Tensor, at: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    """The cell between consecutive crossings ``cross`` ``(N, M, K)`` (nondecreasing in K) that
    holds each point ``at`` ``(N, M, P)``, and whether the point lies beyond the first or last.

    Where crossings coincide (grid lines collapsed on the image border by the clamp) a point on
    them lies on every collapsed cell: the non-degenerate cell next to them is taken, so that
    the inverse is continuous there.
    """
    k = cross.shape[-1]
    last = (torch.searchsorted(cross, at, right=True) - 1).clamp(0, k - 2)  # the last crossing at or before
    first = (torch.searchsorted(cross, at, right=False) - 1).clamp(0, k - 2)  # the last one strictly before
    flat = cross.gather(-1, last + 1) <= cross.gather(-1, last)
    index = torch.where(flat, first, last)
    return index, (at < cross[..., :1]) | (at > cross[..., -1:])


def _start(grid: torch.Tensor, h: int, w: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """Where Newton's method starts, and which pixels lie outside the warped lattice.

    The edges of the cells are straight (the grid is bilinear in each cell): grid column
    :math:`j` is the polyline through :math:`P_{0j}, P_{1j}, \\dots`. Where the warp does not fold
    the column polylines are ordered left to right and the row polylines top to bottom, so the
    cell of a pixel is found by counting the column polylines to its left at its height and the
    row polylines above it (binary searches), and its local coordinates by its position between
    the two crossings either side, exact where the cell is a parallelogram. Returns ``q0``
    ``(N, H * W, 2)`` and ``outside`` ``(N, H * W)`` bool: left of the first column or right of
    the last, above the first row or below the last (no solution). A grid whose lines are not
    so ordered (one that folds, or is flipped: any finite grid is accepted) gets, image by
    image, the start :math:`q_0 = p` and no pixel outside: Newton's method walks from there.
    """
    n, hg, wg, _ = grid.shape
    gx, gy = grid[..., 0], grid[..., 1]  # (N, H_g, W_g)
    ys = torch.linspace(-1.0, 1.0, h, dtype=grid.dtype, device=grid.device)
    xs = torch.linspace(-1.0, 1.0, w, dtype=grid.dtype, device=grid.device)
    # grid column j at each pixel row's height, grid row i at each pixel column's abscissa
    col_x = _crossings(gy.transpose(1, 2), gx.transpose(1, 2), ys).transpose(1, 2).contiguous()  # (N, H, W_g)
    row_y = _crossings(gx, gy, xs).transpose(1, 2).contiguous()  # (N, W, H_g)
    px = xs.expand(n, h, w).contiguous()
    py = ys.expand(n, w, h).contiguous()
    j, out_x = _cell_index(col_x, px)  # (N, H, W)
    i, out_y = _cell_index(row_y, py)  # (N, W, H)
    i, out_y = i.transpose(1, 2), out_y.transpose(1, 2)
    # the counting is only meaningful where the grid lines are in order: every column's y and
    # every row's x nondecreasing (beyond their ends the extended polylines may still cross,
    # which only pixels near the border of the covered range meet)
    ordered = (gy[:, 1:] >= gy[:, :-1]).flatten(1).all(1) & (gx[:, :, 1:] >= gx[:, :, :-1]).flatten(1).all(1)  # (N,)
    outside = (out_x | out_y) & ordered.view(n, 1, 1)

    def local(cross: torch.Tensor, index: torch.Tensor, at: torch.Tensor) -> torch.Tensor:
        c0, c1 = cross.gather(-1, index), cross.gather(-1, index + 1)
        span = c1 - c0
        return torch.where(span > 0, (at - c0) / torch.where(span > 0, span, torch.ones_like(span)),
                           torch.zeros_like(span)).clamp(0.0, 1.0)

    s = local(col_x, j, px)
    t = local(row_y, i.transpose(1, 2).contiguous(), py).transpose(1, 2)
    q0 = torch.stack((-1.0 + 2.0 * (j + s) / (wg - 1), -1.0 + 2.0 * (i + t) / (hg - 1)), dim=-1)
    q0 = torch.where(ordered.view(n, 1, 1, 1), q0, torch.stack((px, py.transpose(1, 2)), dim=-1))
    return q0.flatten(1, 2), outside.flatten(1)


def _solve(jx: torch.Tensor, jy: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """J^{-1} r for the 2 x 2 Jacobians with columns ``jx``, ``jy``; ``r`` itself where J is singular."""
    det = jx[..., 0] * jy[..., 1] - jy[..., 0] * jx[..., 1]
    singular = (det == 0).unsqueeze(-1)
    # divide by 1 where J is singular: the branch torch.where drops must stay finite, or its
    # gradient (0 * inf) would be NaN
    step = torch.stack((jy[..., 1] * r[..., 0] - jy[..., 0] * r[..., 1],
                        jx[..., 0] * r[..., 1] - jx[..., 1] * r[..., 0]), dim=-1) / torch.where(
                            singular, torch.ones_like(det.unsqueeze(-1)), det.unsqueeze(-1))
    return torch.where(~singular & torch.isfinite(step), step, r)


def _converged(dtype: torch.dtype) -> float:
    """The squared residual at which a pixel's Newton iteration has converged (16 machine epsilons)."""
    return (16 * torch.finfo(dtype).eps) ** 2


def _newton(coef: torch.Tensor, q: torch.Tensor, target: torch.Tensor, hg: int, wg: int, max_iter: int,
            skip: torch.Tensor):
    """Newton's method with a per-pixel backtracking line search from ``q`` ``(N, P, 2)`` toward
    ``G(q) = target``, walking from cell to cell. A pixel that has converged or stalled is done:
    it keeps its point and later iterations leave it out (they cost what the pixels still
    walking cost); a pixel in ``skip`` walks only while some pixel not in ``skip`` still does.
    Returns ``(q, cell, s, t, jx, jy, rn)`` ``(N, P, ...)`` at the end, ``rn`` the squared residual."""
    n, p, _ = q.shape
    cells = coef.shape[1]
    flat = coef.reshape(n * cells, 8)
    base = torch.arange(n, device=q.device).repeat_interleave(p) * cells  # (M,): each pixel's image's first cell
    q, target, skip = q.reshape(-1, 2).clone(), target.reshape(-1, 2), skip.reshape(-1)
    converged = _converged(q.dtype)
    cell, s, t = _locate(q, hg, wg)
    value, jx, jy = _patch(flat[base + cell], s, t, hg, wg)
    r = value - target
    rn = r.square().sum(-1)
    alpha = torch.ones_like(rn)
    active = torch.arange(q.shape[0], device=q.device)
    for _ in range(max_iter):
        active = active[(rn[active] > converged) & (alpha[active] >= 2.0 ** -12)]
        if not bool((~skip[active]).any()):
            break
        r_a, alpha_a = r[active], alpha[active]
        trial = (q[active] - alpha_a.unsqueeze(-1) * _solve(jx[active], jy[active], r_a)).clamp(-1.0, 1.0)
        cell_t, s_t, t_t = _locate(trial, hg, wg)
        value_t, jx_t, jy_t = _patch(flat[base[active] + cell_t], s_t, t_t, hg, wg)
        r_t = value_t - target[active]
        rn_t = r_t.square().sum(-1)
        ok = rn_t < rn[active]
        moved = active[ok]
        # boolean-mask writes (a host sync each on CUDA) measured 10-25% faster on CPU than
        # writing every active pixel through torch.where
        for old, new in ((q, trial), (r, r_t), (jx, jx_t), (jy, jy_t), (cell, cell_t), (s, s_t), (t, t_t),
                         (rn, rn_t)):
            old[moved] = new[ok]
        alpha[active] = torch.where(ok, torch.ones_like(alpha_a), 0.5 * alpha_a)
    return tuple(x.view(n, p, *x.shape[1:]) for x in (q, cell, s, t, jx, jy, rn))


def _border_index(h: int, w: int, device) -> torch.Tensor:
    """The flat indices of the pixels on the border of an ``h x w`` image."""
    on = torch.zeros(h, w, dtype=torch.bool, device=device)
    on[0], on[-1], on[:, 0], on[:, -1] = True, True, True, True
    return on.flatten().nonzero().squeeze(1)


def _merge(old: torch.Tensor, new: torch.Tensor, index: torch.Tensor, better: torch.Tensor) -> torch.Tensor:
    """``old`` ``(N, P, ...)`` with ``new`` ``(N, B, ...)`` written at the pixels ``index`` where ``better``."""
    mask = better.view(*better.shape, *([1] * (new.dim() - 2)))
    out = old.clone()
    out[:, index] = torch.where(mask, new, old[:, index])
    return out


def invert_grid(grid: torch.Tensor, out_size: Size, *, max_iter: int = 50) -> InverseGrid:
    r"""Invert a sampling grid, treated as piecewise bilinear on its lattice, at every pixel of ``out_size``.

    For every pixel :math:`p` of an ``out_size`` image (normalised, ``align_corners=True``),
    find :math:`q` with :math:`G(q) = p`, :math:`G` the bilinear interpolation of ``grid``: Newton's
    method with a per-pixel backtracking line search, walking from cell to cell (see the module
    notes). ``zoom(y, invert_grid(grid, size).grid)`` is :func:`unzoom`.

    Parameters
    ----------
    grid : torch.Tensor
        ``(N, H_g, W_g, 2)`` finite sampling grid, :math:`H_g, W_g \ge 2` (what
        :func:`~pixelweight.sampling.saliency_grid` returns: the zoomed image's pixel
        :math:`(i, j)` read the original at ``grid[n, i, j]``).
    out_size : int or (int, int)
        Height and width of the original pixel grid, each :math:`\ge 2`.
    max_iter : int, default 50
        Most Newton iterations; the loop ends earlier once every pixel has converged or stalled.

    Returns
    -------
    InverseGrid
        ``(grid, valid, residual)``: ``grid`` ``(N, H, W, 2)`` (float32, float64 for a float64
        grid) differentiable with respect to the input grid at the valid pixels (implicit
        function theorem); ``valid`` ``(N, H, W)`` bool; ``residual`` ``(N, H, W)``.

    Examples
    --------
    The inverse of the identity is the identity; a zoom's inverse undoes it:

    >>> import torch
    >>> from pixelweight.sampling import identity_grid, invert_grid, saliency_grid
    >>> inverse = invert_grid(identity_grid(5), out_size=4)
    >>> bool((inverse.grid - identity_grid(4)).abs().max() < 1e-6), bool(inverse.valid.all())
    (True, True)
    >>> saliency = torch.ones(1, 9, 9)
    >>> saliency[0, 3:5, 3:5] = 20.0
    >>> grid = saliency_grid(saliency, out_size=32, sigma=2.0, padding=8)
    >>> inverse = invert_grid(grid, out_size=32)
    >>> q = inverse.grid[0, 10, 12]  # where original pixel (10, 12) lies in the zoomed image
    >>> p = torch.nn.functional.grid_sample(grid.permute(0, 3, 1, 2), q.view(1, 1, 1, 2), align_corners=True)
    >>> [round(v, 5) for v in p.flatten().tolist()], [round(v, 5) for v in identity_grid(32)[0, 10, 12].tolist()]
    ([-0.22581, -0.35484], [-0.22581, -0.35484])
    """
    _check_grid(grid)
    hg, wg = grid.shape[1:3]
    if hg < 2 or wg < 2:
        raise ValueError(f"grid must have at least 2 x 2 points, got {tuple(grid.shape)}")
    h, w = _check_size(out_size, "out_size")
    max_iter = check_int(max_iter, "max_iter", minimum=1)
    dtype = torch.float64 if grid.dtype == torch.float64 else torch.float32
    n = grid.shape[0]
    eps = torch.finfo(dtype).eps
    target = identity_grid((h, w), batch=n, dtype=dtype, device=grid.device).flatten(1, 2)  # (N, P, 2)
    coef = _cell_coefficients(grid.detach().to(dtype))

    with torch.no_grad():
        q, outside = _start(grid.detach().to(dtype), h, w)
        state = _newton(coef, q, target, hg, wg, max_iter, outside)
        # On the image border a clamped grid can collapse whole rows or columns of cells onto the
        # border line (and only there): the located start may then sit on a collapsed row that
        # does not reach the pixel. Those pixels (not outside) walk again from q = p, and keep
        # the better end.
        border = _border_index(h, w, grid.device)
        unsolved = (state[-1][:, border] > _converged(dtype)) & ~outside[:, border]
        if bool(unsolved.any()):
            again = _newton(coef, target[:, border], target[:, border], hg, wg, max_iter,
                            ~unsolved)
            # only the pixels that were unsolved take the second pass's end: the others walked
            # only to keep the batch in step, and a solved pixel on a collapsed border line could
            # otherwise move to another collapsed cell, depending on the rest of the batch
            better = (again[-1] < state[-1][:, border]) & unsolved
            state = tuple(_merge(old, new, border, better) for old, new in zip(state, again))
        q, cell, s, t, jx, jy, rn = state
        residual = rn.sqrt()
        valid = residual <= 64 * eps

    if grid.requires_grad and torch.is_grad_enabled() and n:
        value_g, _, _ = _evaluate(_cell_coefficients(grid.to(dtype)), cell, s, t, hg, wg)
        correction = _solve(jx, jy, value_g - value_g.detach())
        q = q - torch.where(valid.unsqueeze(-1), correction, torch.zeros((), dtype=dtype, device=q.device))
    return InverseGrid(q.view(n, h, w, 2), valid.view(n, h, w), residual.view(n, h, w))


def unzoom(y: torch.Tensor, grid: torch.Tensor, out_size: Size, *, mode: str = "bilinear",
           max_iter: int = 50) -> torch.Tensor:
    r"""Map a prediction ``y`` made on the zoomed image back to the original ``out_size`` pixel grid.

    ``zoom(y, invert_grid(grid, out_size).grid, mode=mode)``: every original pixel reads ``y``
    where the zoom put it. Differentiable with respect to ``y`` (linear in it) and, at the pixels
    the warp reaches, with respect to ``grid`` (see the module notes). Pixels the zoomed image
    does not cover get the prediction of a nearby covered point on the border of the covered
    region; :func:`invert_grid` returns the mask of the covered ones.

    Parameters
    ----------
    y : torch.Tensor
        ``(N, C, h, w)`` floating prediction on the zoomed image (logits, features); its size may
        differ from the grid's (its corners are aligned with the zoomed image's,
        ``align_corners=True``).
    grid : torch.Tensor
        ``(N, H_g, W_g, 2)``: the grid that made the zoomed image.
    out_size : int or (int, int)
        The original pixel grid, each side :math:`\ge 2`.
    mode : {"bilinear", "nearest", "bicubic"}, default "bilinear"
        Interpolation of ``y``.
    max_iter : int, default 50
        See :func:`invert_grid`.

    Returns
    -------
    torch.Tensor
        ``(N, C, H, W)`` in ``y``'s dtype.

    Examples
    --------
    Zooming and unzooming a smooth image gives it back where the warp reaches (a central salient
    block pulls the grid's border inward: the outer pixels are not covered):

    >>> import math
    >>> import torch
    >>> from pixelweight.sampling import identity_grid, invert_grid, saliency_grid, unzoom, zoom
    >>> xy = identity_grid(48)
    >>> image = (torch.sin(math.pi * xy[..., 0]) * torch.cos(math.pi * xy[..., 1])).unsqueeze(1)
    >>> saliency = torch.ones(1, 9, 9)
    >>> saliency[0, 3:6, 3:6] = 4.0
    >>> grid = saliency_grid(saliency, out_size=48, sigma=2.0, padding=8)
    >>> back = unzoom(zoom(image, grid), grid, out_size=48)
    >>> covered = invert_grid(grid, out_size=48).valid
    >>> round(float(covered.float().mean()), 2), bool((back - image).abs()[:, 0][covered].max() < 0.01)
    (0.81, True)
    """
    _check_pair(y, grid, "y")  # before the inversion, which is the costly part
    mode = check_choice(mode, "mode", SAMPLING_MODES)
    return zoom(y, invert_grid(grid, out_size, max_iter=max_iter).grid, mode=mode)
