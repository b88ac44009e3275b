"""Smooth ECE (Błasiok & Nakkiran 2023) and the smoothed reliability diagram.

Discretisation: every sample's weight ``w`` and weighted residual ``w·(c - a)`` are split
linearly between the two nearest points of a uniform grid on ``[0, 1]``; the grid is smoothed
by a Gaussian kernel reflected at 0 and 1 and read at evenly spaced evaluation points by linear
interpolation. The grid and evaluation sizes follow relplot 1.0.3 (``kernels.py``,
``metrics.py``): ``cells = max(2000, round(20/σ)) // 2`` grid intervals, a kernel sampled at the
``cells + 1`` points of ``linspace(0, 1)`` (so it is cut at distance 1/2) and
``max(round(10/σ), 200)`` evaluation points.

All samples are first split onto one fine grid of :data:`FINE_CELLS` intervals, a sum that
merges by addition; every coarser grid is the linear split of the fine grid's points. When the
coarse spacing is a multiple of the fine one (relplot's 1000-interval grid, used for every
``σ > 0.01``) the two-step split equals the direct one exactly, because a piecewise-linear
weight with knots on the coarse grid is linear on each fine interval. Otherwise it differs only
for samples in the fine interval around a coarse point, by far less than float32 rounding of
the result (tests/test_metrics_smooth.py measures it).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _validation as v
from calib_jax.metrics import _inputs
from calib_jax.metrics._wider import _doc

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# Fine grid intervals: a multiple of 1000 (relplot's grid for every σ > 0.01, so that grid is
# exact) and of 1024, 2560 and 5120 (three of the nine finer grids the search can visit).
FINE_CELLS = 128_000
# relplot's grid for σ > 0.01: max(2000, round(20/σ)) // 2 intervals.
BASE_CELLS = 1000
# Smallest bandwidth accepted (relplot's search treats anything below as small enough) and the
# largest grid and number of evaluation points it implies.
MIN_BANDWIDTH = 0.001
MAX_CELLS = 10_000
# The bandwidth search evaluates σ = k/1024 for k >= 2 (k = 1 is below MIN_BANDWIDTH).
SEARCH_DENOMINATOR = 1024
SEARCH_STEPS = 10
# Kernel taps kept when σ·cells <= 10 + σ/2 (every grid finer than the base one): beyond 15σ the
# Gaussian is below exp(-112), zero in float32 and far below float64 rounding of the sum.
SMALL_TAPS = 151


def grid_cells(bandwidth: float) -> int:
    """relplot's number of grid intervals for a bandwidth (``max(2000, round(20/σ)) // 2``)."""
    return max(2000, round(20 / bandwidth)) // 2


def eval_points(bandwidth: float) -> int:
    """relplot's number of evaluation points of the integral (``max(round(10/σ), 200)``)."""
    return max(round(10 / bandwidth), 200)


@jax.jit
def fine_grid(conf: Array, correct: Array, w: Array | None) -> Array:
    """``[FINE_CELLS + 1, 2]`` sums ``(Σ w·(c - a)·φ_j(c), Σ w·φ_j(c))`` over the samples,
    ``φ_j`` the linear hat of fine point ``j``: the mergeable state of the smooth ECE.

    A sample with weight 0 adds nothing (its confidence may be NaN); one with a NaN confidence
    and non-zero weight makes the residual sums NaN.
    """
    dtype = conf.dtype
    w = jnp.ones(conf.shape, dtype) if w is None else w.astype(dtype)
    used = w > 0
    pos = jnp.where(used & jnp.isfinite(conf), conf, 0) * FINE_CELLS
    lo = jnp.clip(jnp.floor(pos), 0, FINE_CELLS - 1)
    frac = pos - lo
    lo = lo.astype(jnp.int32)
    residual = jnp.where(used, w * (conf - correct.astype(dtype)), 0)
    weight = jnp.where(used, w, 0)
    return jnp.stack([_split(x, lo, frac, FINE_CELLS + 1) for x in (residual, weight)], -1)


def _split(x: Array, lo: Array, frac: Array, size: int) -> Array:
    """``x`` split between points ``lo`` and ``lo + 1`` in proportion ``1 - frac : frac``.

    One-column scatters: on XLA:CPU two of them ran 5x faster than one scatter of rows.
    """
    out = jnp.zeros((size,), x.dtype).at[lo].add(x * (1 - frac))
    return out.at[lo + 1].add(x * frac, mode="drop")


def _base_grid(fine: Array) -> Array:
    """The fine grid split onto relplot's 1000 intervals: exact, as 1000 divides FINE_CELLS."""
    q = FINE_CELLS // BASE_CELLS
    m = jnp.arange(q, dtype=fine.dtype) / q
    blocks = fine[:-1].reshape(BASE_CELLS, q, 2)
    lo = jnp.einsum("jmc,m->jc", blocks, 1 - m, precision="highest")
    hi = jnp.einsum("jmc,m->jc", blocks, m, precision="highest")
    out = jnp.zeros((BASE_CELLS + 1, 2), fine.dtype)
    out = out.at[:BASE_CELLS].add(lo).at[1:].add(hi)
    return out.at[BASE_CELLS].add(fine[-1])


def _coarse(fine: Array, cells: Array, size: int) -> Array:
    """The fine grid split linearly onto ``cells`` (traced, ``< size``) intervals, ``[size, 2]``."""
    # j·cells < 2^32 for cells <= MAX_CELLS: exact in uint32.
    j = jnp.arange(FINE_CELLS + 1, dtype=jnp.uint32)
    p = j * cells.astype(jnp.uint32)
    idx = (p // FINE_CELLS).astype(jnp.int32)
    frac = (p % FINE_CELLS).astype(fine.dtype) / FINE_CELLS
    return jnp.stack([_split(fine[:, c], idx, frac, size) for c in range(2)], -1)


def _smooth(grid: Array, cells, sigma, taps: int) -> Array:
    """relplot's reflected-Gaussian convolution of the grid values (``[size, 2]``), unnormalised.

    Point ``i`` receives ``Σ_d g_d · v(i - d)`` with ``v`` reflected at 0 and ``cells`` and
    ``g_d = exp(-x_d²/(2σ²))``, ``x_d = (2d + e)/(2·cells)``, ``e = cells mod 2`` (relplot
    samples its kernel on ``linspace(0, 1, cells + 1) - 1/2`` and centres it on index
    ``(cells + 1) // 2``, half a step off for an odd number of intervals), ``|x_d| <= 1/2``.
    """
    size = grid.shape[0]
    dtype = grid.dtype
    q = jnp.arange(-taps, size + taps)
    idx = jnp.abs(q)
    idx = jnp.where(idx > cells, 2 * cells - idx, idx)
    ext = grid[jnp.clip(idx, 0, size - 1)]
    num = 2 * jnp.arange(-taps, taps + 1) + cells % 2
    x = num.astype(dtype) / (2 * jnp.asarray(cells, dtype))
    g = jnp.where(jnp.abs(num) <= cells, jnp.exp(-(x * x) / (2 * sigma * sigma)), 0)
    conv = lambda col: jnp.convolve(col, g, mode="valid", precision="highest")
    return jax.vmap(conv, in_axes=1, out_axes=1)(ext)


def _smoothed(fine: Array, base: Array, sigma: Array, cells: Array) -> Array:
    """``[MAX_CELLS + 1, 2]`` smoothed sums ``(A_r, A_1)`` on relplot's grid of ``cells``
    intervals (entries past ``cells`` unused): from the exact base grid when ``cells`` is 1000,
    else from the fine grid split onto ``cells`` intervals."""
    size = MAX_CELLS + 1

    def on_base(_):
        out = _smooth(base, BASE_CELLS, sigma, BASE_CELLS // 2)
        return jnp.zeros((size, 2), out.dtype).at[: BASE_CELLS + 1].set(out)

    def on_fine(_):
        c = jnp.clip(cells, 1, MAX_CELLS)
        return _smooth(_coarse(fine, c, size), c, sigma, SMALL_TAPS)

    return jax.lax.cond(cells == BASE_CELLS, on_base, on_fine, None)


def _interpolate(smoothed: Array, cells, points, size: int) -> tuple[Array, Array, Array]:
    """``(t, values [size, 2], live)``: the smoothed grid read at ``t_j = j / (points - 1)``,
    ``j < points`` (``live``), by linear interpolation between grid points."""
    dtype = smoothed.dtype
    j = jnp.arange(size, dtype=jnp.int32)
    den = jnp.maximum(points - 1, 1)
    p = j * cells  # exact integer position t_j·cells·(points - 1)
    idx = jnp.clip(p // den, 0, cells - 1)
    frac = (p - idx * den).astype(dtype) / den.astype(dtype)
    vals = smoothed[idx] * (1 - frac)[:, None] + smoothed[idx + 1] * frac[:, None]
    t = j.astype(dtype) / den.astype(dtype)
    return t, vals, j < points


def _value(fine: Array, base: Array, sigma: Array, cells: Array, points: Array) -> Array:
    """``smECE_σ = Σ_t |A_r(t)| / Σ_t A_1(t)`` over relplot's evaluation points."""
    sm = _smoothed(fine, base, sigma, cells)
    _, vals, live = _interpolate(sm, cells, points, MAX_CELLS)
    residual = jnp.sum(jnp.where(live, jnp.abs(vals[:, 0]), 0))
    return residual / jnp.sum(jnp.where(live, vals[:, 1], 0))


def _round_div(a: int, k: Array) -> Array:
    """``round(a / k)`` for positive ints (no ties occur for the ``k`` of the search)."""
    return (2 * a + k) // (2 * k)


def _search_sizes(k: Array) -> tuple[Array, Array]:
    """relplot's ``(cells, points)`` at ``σ = k / 1024``, in exact integer arithmetic."""
    cells = jnp.maximum(2000, _round_div(20 * SEARCH_DENOMINATOR, k)) // 2
    return cells, jnp.maximum(_round_div(10 * SEARCH_DENOMINATOR, k), 200)


@jax.jit
def search_bandwidth(fine: Array, base: Array) -> tuple[Array, Array]:
    """``(smooth ECE, σ*)`` by relplot's bisection: ``σ*`` is the upper end after ten halvings
    of ``[0, 1]`` keeping ``σ < 0.001 or σ < smECE_σ`` false at the upper end."""
    dtype = fine.dtype

    def value(k):
        return _value(fine, base, k.astype(dtype) / SEARCH_DENOMINATOR, *_search_sizes(k))

    inf = jnp.asarray(jnp.inf, dtype)

    def step(_, carry):
        start, end, at_start = carry
        mid = (start + end) // 2
        # relplot's eps: σ = 1/1024 < 0.001 counts as small enough without evaluating.
        val = jax.lax.cond(mid >= 2, value, lambda _: inf, mid)
        small = mid.astype(dtype) / SEARCH_DENOMINATOR < val
        return (
            jnp.where(small, start, mid),
            jnp.where(small, mid, end),
            jnp.where(small, at_start, val),
        )

    # smECE <= 1 always, so relplot's first test at σ = 1 never stops the search.
    start = jnp.int32(SEARCH_DENOMINATOR)
    init = (start, jnp.int32(0), jnp.asarray(jnp.nan, dtype))
    start, _, at_start = jax.lax.fori_loop(0, SEARCH_STEPS, step, init)
    at_start = jax.lax.cond(start == SEARCH_DENOMINATOR, value, lambda _: at_start, start)
    return at_start, start.astype(dtype) / SEARCH_DENOMINATOR


class _Bandwidth(NamedTuple):
    sigma: Array
    cells: Array
    points: Array


def _bandwidth(bandwidth, dtype) -> _Bandwidth | None:
    """None (automatic), or ``σ`` with relplot's grid sizes: computed in float64 for a concrete
    ``σ``; in the compute dtype for a traced one (then NaN if out of range)."""
    if bandwidth is None:
        return None
    if np.ndim(bandwidth) != 0:
        raise ValueError(f"bandwidth must be a scalar, got shape {np.shape(bandwidth)}.")
    sigma = v.hyperparameter(bandwidth, "bandwidth", low=MIN_BANDWIDTH)
    if not isinstance(sigma, jax.core.Tracer):
        sigma = float(sigma)
        return _Bandwidth(
            jnp.asarray(sigma, dtype), jnp.int32(grid_cells(sigma)), jnp.int32(eval_points(sigma))
        )
    sigma = jnp.asarray(sigma, dtype)
    safe = jnp.where(jnp.isnan(sigma), 1, jnp.maximum(sigma, MIN_BANDWIDTH))
    cells = jnp.maximum(2000, jnp.round(20 / safe).astype(jnp.int32)) // 2
    points = jnp.maximum(jnp.round(10 / safe).astype(jnp.int32), 200)
    return _Bandwidth(sigma, cells, points)


@jax.jit
def smooth_ece_from_grid(fine: Array, bandwidth: _Bandwidth | None = None) -> tuple[Array, Array]:
    """``(smooth ECE, σ)`` of a fine grid of :func:`fine_grid` (sums of batches merge by
    addition); ``bandwidth`` from :func:`_bandwidth` (None: the automatic ``σ*``)."""
    base = _base_grid(fine)
    if bandwidth is None:
        return search_bandwidth(fine, base)
    return _value(fine, base, *bandwidth), bandwidth.sigma


def _fine_of_inputs(predictions, labels, where, weights, from_logits) -> tuple[Array, Array]:
    conf, correct, w = _inputs.top_label(
        predictions, labels, where, weights, from_logits=from_logits
    )
    keep = True if w is None else w > 0
    # A NaN confidence (an invalid row) with non-zero weight poisons every result.
    poison = 0 * jnp.sum(jnp.where(keep, conf, 0))
    return fine_grid(conf, correct, w), poison


_SMOOTH_RULES = """
    The kernel is the Gaussian of standard deviation ``σ`` reflected at 0 and 1 (mass that
    would fall outside ``[0, 1]`` is folded back) and cut at distance 1/2; ``r̂_σ`` is the
    kernel-weighted mean residual ``c - a`` and ``δ̂_σ`` the kernel density of ``c``. Both are
    computed on relplot 1.0.3's grid (each sample split linearly between its two nearest grid
    points; ``max(2000, round(20/σ)) // 2`` intervals; the integral as the mean over
    ``max(round(10/σ), 200)`` evenly spaced points), so results agree with relplot's
    ``smECE`` / ``smECE_sigma`` to float32 rounding (relplot's ``+1e-4`` in the density, a
    change below ``10^-7`` relative, is left out). The automatic bandwidth ``σ*`` is relplot's:
    bisect ``[0, 1]`` ten times keeping ``σ >= smECE_σ`` at the upper end, and report
    ``smECE`` at that upper end, a multiple of ``1/1024`` (``σ < 0.001`` counts as small
    enough). A float32 value within rounding of ``σ`` at a bisection step can send the search
    the other way than a float64 computation. Weighted: each sample enters the grid with its
    weight. Cost: one scatter of the ``N`` samples into a fine grid of 128,001 points, then
    ``O(grid)`` per bandwidth tried, independent of ``N``.
"""


def _smooth_doc(fn):
    fn.__doc__ = fn.__doc__.replace("    {smooth}\n", _SMOOTH_RULES.lstrip("\n"))
    return _doc(fn)


@_smooth_doc
def smooth_ece(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    bandwidth: float | None = None,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Smooth ECE (Błasiok & Nakkiran 2023): the calibration error of the kernel-smoothed
    residual, weighted by the kernel density of the confidences.

    .. math::
       \\mathrm{smECE}_\\sigma = \\int_0^1 |\\hat r_\\sigma(t)|\\, \\hat\\delta_\\sigma(t)\\, dt,
       \\qquad \\hat r_\\sigma(t) = \\frac{\\sum_i w_i K_\\sigma(t, c_i)(c_i - a_i)}
       {\\sum_i w_i K_\\sigma(t, c_i)}

    With the default ``bandwidth=None`` the bandwidth is chosen automatically as the fixed
    point ``smECE_σ = σ``, which makes the metric free of any binning choice. No bins; ``0``
    for a perfectly calibrated infinite sample; a finite calibrated sample gives a value that
    shrinks as ``N`` grows.

    {smooth}
    {rules}
    {args}
      bandwidth: the kernel's standard deviation ``σ >= 0.001``, or ``None`` for the automatic
        ``σ*``. It may be traced (``vmap`` over bandwidths): relplot's grid sizes are then
        computed in float32, whose ``round(20/σ)`` can differ from relplot's float64 by one at
        a few bandwidths; a traced value out of range gives NaN.

    Returns:
      Scalar float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> p = jnp.linspace(0.05, 0.95, 10)
      >>> y = jnp.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
      >>> print(f"{float(cj.metrics.smooth_ece(p, y)):.4f}")
      0.0928
      >>> print(f"{float(cj.metrics.smooth_ece(p, y, bandwidth=0.05)):.4f}")
      0.2208

    References:
      Błasiok, Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing",
      ICLR 2024 (arXiv 2309.12236); relplot 1.0.3 (Apple).
    """
    fine, poison = _fine_of_inputs(predictions, labels, where, weights, from_logits)
    return smooth_ece_from_grid(fine, _bandwidth(bandwidth, fine.dtype))[0] + poison


class SmoothReliabilityDiagram(NamedTuple):
    """The smoothed reliability diagram on an evenly spaced mesh of ``[0, 1]``.

    Attributes:
      mesh: ``[P]`` points ``t_j = j / (P - 1)``.
      curve: ``[P]`` smoothed reliability curve ``t - r̂_σ(t)``: the kernel-weighted mean
        correctness, corrected for the spread of the confidences around ``t``. It can leave
        ``[0, 1]`` by up to about ``σ`` near the ends, where the kernel reaches confidences
        on one side of ``t`` only; ``t`` where the density is 0.
      density: ``[P]`` kernel density of the confidences (integrates to about 1 over
        ``[0, 1]``).
      bandwidth: the ``σ`` used (scalar).
      smooth_ece: :func:`smooth_ece` at that ``σ`` (scalar).
    """

    mesh: Array
    curve: Array
    density: Array
    bandwidth: Array
    smooth_ece: Array


@functools.partial(jax.jit, static_argnames=("num_points",))
def smooth_diagram_from_grid(
    fine: Array, bandwidth: _Bandwidth | None, num_points: int
) -> SmoothReliabilityDiagram:
    """:class:`SmoothReliabilityDiagram` of a fine grid of :func:`fine_grid`."""
    dtype = fine.dtype
    value, sigma = smooth_ece_from_grid(fine, bandwidth)
    if bandwidth is None:
        k = jnp.round(sigma * SEARCH_DENOMINATOR).astype(jnp.int32)
        cells = _search_sizes(k)[0]
    else:
        cells = bandwidth.cells
    smoothed = _smoothed(fine, _base_grid(fine), sigma, cells)
    t, vals, _ = _interpolate(smoothed, cells, jnp.int32(num_points), num_points)
    a_r, a_1 = vals[:, 0], vals[:, 1]
    has_mass = a_1 > 0
    r_hat = jnp.where(has_mass, a_r / jnp.where(has_mass, a_1, 1), 0)
    total = jnp.sum(fine[:, 1])
    density = a_1 / (total * jnp.sqrt(2 * jnp.pi).astype(dtype) * sigma)
    return SmoothReliabilityDiagram(t, t - r_hat, density, sigma, value)


@_smooth_doc
def smooth_reliability_diagram(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    bandwidth: float | None = None,
    num_points: int = 200,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> SmoothReliabilityDiagram:
    """The smoothed reliability diagram of :func:`smooth_ece`: the curve ``t - r̂_σ(t)`` and
    the density ``δ̂_σ(t)`` on ``num_points`` evenly spaced points of ``[0, 1]``.

    ``∫ |t - curve(t)|·density(t) dt`` is the smooth ECE. relplot's ``prepare_rel_diagram``
    draws the kernel-smoothed correctness ``ā_σ(t)`` instead, which differs from this curve
    by ``t - c̄_σ(t)`` (``c̄_σ`` the kernel-smoothed confidence: ``curve = t - c̄_σ + ā_σ``);
    its ``density`` is this one. Where the density underflows to 0 (far from every sample
    with a small ``σ``) the curve is the diagonal.

    {smooth}
    {rules}
    {args}
      bandwidth: the kernel's standard deviation ``σ >= 0.001`` (may be traced, see
        :func:`smooth_ece`), or ``None`` for the automatic ``σ*`` of :func:`smooth_ece`.
      num_points: number of mesh points ``P`` (static int ``>= 2``).

    Returns:
      :class:`SmoothReliabilityDiagram` ``(mesh, curve, density, bandwidth, smooth_ece)``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> p = jnp.linspace(0.05, 0.95, 10)
      >>> y = jnp.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
      >>> d = cj.metrics.smooth_reliability_diagram(p, y, num_points=5)
      >>> print([round(float(x), 3) for x in d.curve], f"{float(d.bandwidth):.4f}")
      [-0.054, 0.428, 0.5, 0.572, 1.054] 0.0938

    References:
      Błasiok, Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing",
      ICLR 2024; relplot 1.0.3 (Apple).
    """
    if isinstance(num_points, bool) or not isinstance(num_points, int | np.integer):
        raise TypeError(f"num_points must be a static Python int, got {type(num_points).__name__}.")
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}.")
    fine, poison = _fine_of_inputs(predictions, labels, where, weights, from_logits)
    d = smooth_diagram_from_grid(fine, _bandwidth(bandwidth, fine.dtype), int(num_points))
    return SmoothReliabilityDiagram(*(x + poison for x in d))
