"""Squared kernel calibration error (SKCE, Widmann, Lindsten & Zachariah 2019).

Calibration of the whole probability vector, not only the top label:

    h_ij = k(p_i, p_j) · ⟨e_{y_i} - p_i, e_{y_j} - p_j⟩,

with the matrix-valued kernel ``k(p, p')·I_K``. The unbiased estimator averages ``h`` over all
pairs of distinct samples; it is computed in square tiles of pairs (two small matrix products
per tile, never an ``N × N`` array). The linear block estimator averages ``h`` over the disjoint
pairs ``(1, 2), (3, 4), …``: ``O(N)`` time and memory.
"""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _binning, _tuning
from calib_jax import _validation as v
from calib_jax.metrics import _inputs

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# Rows per tile of the unbiased estimator: a tile's [TILE, TILE] intermediates take 4 MiB in
# float32, and N = 10^5 needs 4,851 tiles above the diagonal.
TILE = 1024
# Samples for the median-distance bandwidth: the median over all pairs of up to this many
# evenly spaced samples (32,640 pairs; sorting the pairs of 512 samples cost 0.25 s).
MEDIAN_SAMPLES = 256


def _kernel(sq_dist: Array, bandwidth: Array, kernel: str) -> Array:
    if kernel == "laplacian":
        return jnp.exp(-jnp.sqrt(sq_dist) / bandwidth)
    return jnp.exp(-sq_dist / (2 * bandwidth * bandwidth))


def _sq_dist_tile(pa: Array, pb: Array, na: Array, nb: Array) -> Array:
    """``‖p_a - p_b‖²`` for every pair of a tile, from the Gram matrix.

    ``na + nb - 2·⟨p_a, p_b⟩`` carries a rounding error up to about ``(K + 2)·ε·(na + nb)``;
    values below that are indistinguishable from 0 and are set to 0, so that duplicated rows
    (saturated predictions, say) are at distance exactly 0, as a direct difference gives.
    """
    gram = jnp.matmul(pa, pb.T, precision="highest")
    norms = na[:, None] + nb[None, :]
    sq = norms - 2 * gram
    noise = (pa.shape[-1] + 2) * jnp.finfo(sq.dtype).eps * norms
    return jnp.where(sq > noise, sq, 0)


@functools.partial(jax.jit, static_argnames=("kernel",))
def _unbiased(p: Array, r: Array, w: Array | None, bandwidth: Array, kernel: str) -> Array:
    """``(Σ_{i,j} w_i w_j h_ij - Σ_i w_i h_ii) / (W² - W)``, tile by tile over ``i <= j``."""
    n, k = p.shape
    tile = min(TILE, n)
    blocks = -(-n // tile)
    pad = blocks * tile - n
    pad_rows = lambda x: jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
    p_b = pad_rows(p).reshape(blocks, tile, k)
    r_b = pad_rows(r).reshape(blocks, tile, k)
    # Padding rows are zero vectors with weight 0 (or a residual of 0 without weights).
    w_b = None if w is None else pad_rows(w).reshape(blocks, tile)
    n_b = jnp.sum(p_b * p_b, axis=-1)
    a_idx, b_idx = (jnp.asarray(x, jnp.int32) for x in np.triu_indices(blocks))

    def one(ab):
        a, b = ab
        sq = _sq_dist_tile(p_b[a], p_b[b], n_b[a], n_b[b])
        inner = jnp.matmul(r_b[a], r_b[b].T, precision="highest")
        h = _kernel(sq, bandwidth, kernel) * inner
        s = jnp.sum(h if w is None else w_b[a][:, None] * w_b[b][None, :] * h)
        # Tiles off the diagonal stand for both (a, b) and (b, a).
        return jnp.where(a == b, s, 2 * s)

    total = _binning.tree_sum(jax.lax.map(one, (a_idx, b_idx)))
    # Each sample paired with itself: k(p, p) = 1, h_ii = ‖r_i‖².
    self_h = jnp.sum(r * r, axis=-1)
    self_pairs = jnp.sum(self_h if w is None else w * self_h)
    weight = jnp.asarray(n, p.dtype) if w is None else jnp.sum(w)
    return (total - self_pairs) / (weight * weight - weight)


@functools.partial(jax.jit, static_argnames=("kernel",))
def _block(p: Array, r: Array, w: Array | None, bandwidth: Array, kernel: str) -> Array:
    """``Σ_i w_{2i} w_{2i+1} h_{2i, 2i+1} / Σ_i w_{2i} w_{2i+1}`` (an odd last sample unused)."""
    m, k = p.shape[0] // 2, p.shape[1]
    pairs = lambda x: x[: 2 * m].reshape(m, 2 * k)
    pp, rr = pairs(p), pairs(r)
    if k <= _tuning.current().unroll_max_columns:
        # Column by column: XLA:CPU's reductions along a short minor axis ran 5x slower.
        sq = sum((pp[:, j] - pp[:, k + j]) ** 2 for j in range(k))
        inner = sum(rr[:, j] * rr[:, k + j] for j in range(k))
    else:
        d = pp[:, :k] - pp[:, k:]
        sq, inner = jnp.sum(d * d, axis=-1), jnp.sum(rr[:, :k] * rr[:, k:], axis=-1)
    h = _kernel(sq, bandwidth, kernel) * inner
    if w is None:
        # Unit weights as an opaque array: with h summed alone (or with a constant weight),
        # XLA:CPU fused the pair computation into a form that ran 20x slower (1M x 10).
        w = jax.lax.optimization_barrier(jnp.ones((p.shape[0],), p.dtype))
    ww = w[0 : 2 * m : 2] * w[1 : 2 * m : 2]
    return jnp.sum(jnp.where(ww > 0, ww * h, 0)) / jnp.sum(ww)


@jax.jit
def median_distance(p: Array, count: Array) -> Array:
    """Median of ``‖p_i - p_j‖`` over the pairs ``i < j`` of up to :data:`MEDIAN_SAMPLES`
    evenly spaced rows among the first ``count`` rows of ``p``; 1 if that median is 0."""
    m = jnp.minimum(count, MEDIAN_SAMPLES)
    j = jnp.arange(MEDIAN_SAMPLES, dtype=jnp.int32)
    # Row floor(j·count/m) for j < m: evenly spaced, exact in integers.
    rows = (j * count) // jnp.maximum(m, 1)
    q = p[jnp.clip(rows, 0, p.shape[0] - 1)]
    sq = jnp.sum(q * q, axis=-1)
    dist = jnp.sqrt(_sq_dist_tile(q, q, sq, sq))
    pair = (j[:, None] < j[None, :]) & (j[None, :] < m)
    flat = jnp.sort(jnp.where(pair, dist, jnp.inf).ravel())
    num = m * (m - 1) // 2
    lo = flat[jnp.maximum((num - 1) // 2, 0)]
    hi = flat[jnp.maximum(num // 2, 0)]
    med = (lo + hi) / 2
    return jnp.where((num > 0) & (med > 0), med, 1)


def _kept_first(x: tuple[Array, ...], keep: Array) -> tuple[Array, ...]:
    """The rows of every array with the kept samples first, in their order (stable)."""
    order = jnp.argsort(~keep, stable=True)
    return tuple(a[order] for a in x)


def skce(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    bandwidth: ArrayLike | None = None,
    estimator: Literal["unbiased", "block"] = "unbiased",
    kernel: Literal["laplacian", "gaussian"] = "laplacian",
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Squared kernel calibration error (Widmann, Lindsten & Zachariah 2019) of the whole
    probability vector.

    .. math::
       h_{ij} = k(p_i, p_j)\\, \\langle e_{y_i} - p_i,\\; e_{y_j} - p_j \\rangle, \\qquad
       \\widehat{\\mathrm{SKCE}}_{\\mathrm{uq}} = \\frac{2}{N(N-1)} \\sum_{i<j} h_{ij}, \\qquad
       \\widehat{\\mathrm{SKCE}}_{\\mathrm{ul}} = \\frac{1}{\\lfloor N/2 \\rfloor}
       \\sum_{i=1}^{\\lfloor N/2 \\rfloor} h_{2i-1, 2i}

    The kernel is scalar times the identity: ``"laplacian"`` (default, the paper's choice)
    ``k(p, p') = exp(-‖p - p'‖₂ / ν)``, or ``"gaussian"`` ``exp(-‖p - p'‖₂² / (2ν²))``. Both
    estimators are unbiased for the squared calibration error, so a calibrated model gives
    values around 0, negative ones included; the unbiased (quadratic) estimator has the smaller
    variance, the block (linear) one costs ``O(N)``. ``0`` means calibrated in expectation,
    which implies top-label and class-wise calibration.

    ``estimator="unbiased"`` sums ``h`` over all pairs in tiles of ``1024 × 1024`` pairs (a
    Gram matrix of the probabilities and one of the residuals per tile; ``O(N²K)`` time,
    ``O(1024·(1024 + K))`` extra memory; ``N = 10^5`` with ``K = 10`` takes seconds on a CPU).
    ``estimator="block"`` pairs samples ``(1, 2), (3, 4), …`` in their given order (an odd
    last sample is unused); shuffle first if the order carries information.

    Bandwidth: ``bandwidth=ν`` (a positive number, may be traced), or by default the median
    distance ``‖p_i - p_j‖₂`` over all pairs of at most 256 evenly spaced samples (rows
    ``⌊j·n/m⌋``, ``j < m = min(n, 256)`` of the ``n`` samples that enter the metric, in
    order; the usual midpoint of the two middle values; ``1`` if that median is 0, i.e. all
    of them predict the same vector). Distances in the unbiased estimator come from Gram
    matrices, ``‖p‖² + ‖p'‖² - 2⟨p, p'⟩``, whose rounding error is up to about
    ``(K + 2)·ε·(‖p‖² + ‖p'‖²)`` (``ε`` the float32 epsilon); a squared distance below that is
    taken as 0, so duplicated rows are at distance exactly 0 and a distance below about
    ``1e-3`` (``K = 10``) may be read as 0 (the block estimator takes exact differences).

    Weights: ``where=False`` and weight 0 remove a sample exactly (the estimators see the
    remaining samples, in order). Unbiased: integer weights act as replicated samples,
    ``(Σ_{i≠j} w_i w_j h_ij + Σ_i w_i(w_i - 1) h_ii) / (W(W - 1))`` with ``W = Σw`` (so a
    bootstrap resample is the estimator on the resampled data); real weights continue that
    formula. Block: each pair is weighted by ``w_{2i-1} w_{2i}``.

    Binary ``[N]`` input is the two columns ``[1 - p, p]``. Computed in float32 (float64 for
    float64 input). Invalid input (an unmasked label out of range, a probability row with an
    entry outside ``[0, 1]`` or a sum off one, NaN/inf logits, an invalid weight) raises
    eagerly, is a checkify check under ``jit``, and in any case gives NaN.

    Args:
      predictions: ``[N, K]`` class probabilities (logits with ``from_logits=True``) or
        ``[N]`` binary positive-class probabilities (logits).
      labels: ``[N]`` integer labels in ``[0, K)``.
      bandwidth: the kernel bandwidth ``ν > 0``, or ``None`` for the median distance.
      estimator: ``"unbiased"`` (quadratic) or ``"block"`` (linear), static.
      kernel: ``"laplacian"`` or ``"gaussian"``, static.
      from_logits: ``predictions`` holds logits (softmax / sigmoid applied first).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.

    Returns:
      Scalar float32 (may be slightly negative).

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.9, 0.05, 0.05]] * 3 + [[0.05, 0.9, 0.05]] * 3)
      >>> labels = jnp.array([0, 1, 2, 1, 0, 2])  # right a third of the time at 0.9
      >>> print(f"{float(cj.metrics.skce(probs, labels, bandwidth=1.0)):.4f}")
      0.0159
      >>> print(f"{float(cj.metrics.skce(probs, labels, bandwidth=1.0, estimator='block')):.4f}")
      0.1926

    References:
      Widmann, Lindsten, Zachariah, "Calibration tests in multi-class classification: A
      unifying framework", NeurIPS 2019.
    """
    if estimator not in ("unbiased", "block"):
        raise ValueError(f"estimator must be 'unbiased' or 'block', got {estimator!r}.")
    if kernel not in ("laplacian", "gaussian"):
        raise ValueError(f"kernel must be 'laplacian' or 'gaussian', got {kernel!r}.")
    name = "logits" if from_logits else "probs"
    c = _inputs.validate(predictions, labels, where, weights, name)
    x = v.to_compute_dtype(predictions)
    if from_logits:
        v.check_finite(x, "logits", c.keep)
        p = jax.nn.sigmoid(x) if c.k is None else jax.nn.softmax(x, axis=-1)
        row_ok = jnp.isfinite(x) if c.k is None else jnp.all(jnp.isfinite(x), axis=-1)
    elif c.k is None:
        p, row_ok = x, v.check_probabilities(predictions, "probs", c.keep)
    else:
        p, row_ok = x, v.probability_rows(predictions, "probs", c.keep)[0]
    if c.k is None:
        p = _inputs.two_columns(p)
    valid = (c.labels >= 0) & row_ok
    # e_y - p as -p plus a scatter of N ones (an [N, K] comparison with the labels is slow on
    # XLA:CPU).
    rows = jnp.arange(c.n)
    label = jnp.where(valid, c.labels, 0)
    if c.weights is None:
        w, count = None, jnp.int32(c.n)
        poison = jnp.sum(jnp.where(valid, 0, jnp.nan).astype(p.dtype))
        p = jnp.where(valid[:, None], p, 0)
        r = (-p).at[rows, label].add(1)
    else:
        v.check_value(jnp.any(c.keep), "every sample is masked out (where/weights): no data.")
        used = c.keep
        poison = jnp.sum(jnp.where(used & ~valid, jnp.nan, 0).astype(p.dtype))
        p = jnp.where((used & valid)[:, None], p, 0)
        r = (-p).at[rows, label].add(used.astype(p.dtype))
        w = jnp.where(used, c.weights.astype(p.dtype), 0)
        count = jnp.sum(used).astype(jnp.int32)
        p, r, w = _kept_first((p, r, w), used)
    if bandwidth is None:
        nu = median_distance(p, count)
    else:
        nu = jnp.asarray(v.hyperparameter(bandwidth, "bandwidth", open_low=True), p.dtype)
    if estimator == "block":
        return _block(p, r, w, nu, kernel) + poison
    return _unbiased(p, r, w, nu, kernel) + poison
