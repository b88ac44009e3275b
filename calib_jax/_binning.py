"""The binned-statistics engine: exact equal-width bin assignment.

Convention (README, "Conventions"): with ``M`` bins, bin ``m`` (1-based) holds
``c in ((m-1)/M, m/M]``, decided on the input value as a real number; ``c = 0`` goes to the
first bin. Comparing ``c`` with each internal edge ``m/M`` rounded *down* to the compute dtype
is exact: for a representable ``c``, ``c > m/M`` (real) iff ``c > rounddown(m/M)``.
``ceil(c * M) - 1`` in float32 is not (it puts float32 0.2, 0.4, 0.6, 0.8 one bin low).
"""

from __future__ import annotations

import functools
from fractions import Fraction
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _validation as v


@functools.lru_cache(maxsize=256)
def internal_edges(num_bins: int, dtype: np.dtype) -> np.ndarray:
    """Edges ``m / num_bins`` for ``m = 1 .. num_bins - 1``, each rounded down to ``dtype``."""
    dtype = np.dtype(dtype)
    out = np.empty(num_bins - 1, dtype)
    for m in range(1, num_bins):
        exact = Fraction(m, num_bins)
        e = dtype.type(m / num_bins)
        if Fraction(float(e)) > exact:
            e = np.nextafter(e, dtype.type(-np.inf))
        out[m - 1] = e
    return out


def bin_edges(num_bins: int) -> np.ndarray:
    """All ``num_bins + 1`` nominal edges ``0, 1/M, ..., 1`` (float64, for reporting)."""
    return np.linspace(0.0, 1.0, num_bins + 1)


def bin_index(values: jax.Array, num_bins: int) -> jax.Array:
    """0-based equal-width bin of each value in ``[0, 1]`` (int32, same shape as ``values``).

    Values are compared in the compute dtype (float32, or float64 for float64 input), in which
    every bf16/f16/f32 input is exactly representable. Values outside ``[0, 1]`` are clipped to
    the first/last bin; callers validate the range.
    """
    return jnp.clip(_edges_below(values, num_bins, strict=True), 0, num_bins - 1)


def complement_bin_index(values: jax.Array, num_bins: int) -> jax.Array:
    """:func:`bin_index` of ``1 - values``, decided on the exact real number ``1 - v``.

    ``1 - v`` rounded to the input's dtype can cross an edge (float32 ``1 - 0.2`` rounds up to
    the float above 0.8, one bin high); ``1 - v > m/M`` iff ``v < (M - m)/M``, so the bin is
    ``M - 1`` minus the number of internal edges at or below ``v``, tested exactly.
    """
    return jnp.clip(num_bins - 1 - _edges_below(values, num_bins, strict=False), 0, num_bins - 1)


def _edges_below(values: jax.Array, num_bins: int, *, strict: bool) -> jax.Array:
    """Number of internal edges ``m/M`` (``m = 1 .. M-1``) with ``m/M < v`` (``strict``) or
    ``m/M <= v``, decided exactly on the real numbers; int32, unclipped for ``v`` outside
    ``[0, 1]``."""
    num_bins = v.check_num_bins(num_bins)
    values = v.to_compute_dtype(values)
    if num_bins == 1:
        return jnp.zeros(values.shape, jnp.int32)
    dtype = np.dtype(values.dtype)
    digits = np.finfo(dtype).nmant + 1
    half = (digits + 1) // 2
    if num_bins >= 2 ** (digits - half):
        return _edges_below_by_table(values, num_bins, strict)
    # Candidate g - 1 from the rounded product, then exact tests of the real inequalities
    # c > g/M and c > (g-1)/M (or >=). Veltkamp's split c = hi + lo gives halves of at most
    # digits - half significant bits, so hi*M and lo*M are exact for M < 2^(digits - half) and
    # sign((hi*M - k) + lo*M) = sign(c*M - k). All elementwise arithmetic: no table gather,
    # which XLA:CPU runs far slower than the arithmetic.
    m = dtype.type(num_bins)
    t = values * dtype.type(2**half + 1)
    hi = t - (t - values)
    lo = values - hi
    g = jnp.clip(jnp.ceil(values * m), 1, m)

    def above(k):
        diff = (hi * m - k) + lo * m
        return (diff > 0 if strict else diff >= 0).astype(jnp.int32)

    return g.astype(jnp.int32) - 2 + above(g) + above(g - 1)


def _edges_below_by_table(values: jax.Array, num_bins: int, strict: bool) -> jax.Array:
    """The same count by comparison with tabulated edges (any ``num_bins``): ``v > m/M`` iff
    ``v`` exceeds ``m/M`` rounded down, ``v >= m/M`` iff ``v`` reaches it rounded up."""
    edges = internal_edges(num_bins, values.dtype)
    if not strict:
        exact = np.array(
            [Fraction(float(e)) == Fraction(m, num_bins) for m, e in enumerate(edges, 1)]
        )
        edges = np.where(exact, edges, np.nextafter(edges, edges.dtype.type(np.inf)))
    guess = jnp.clip(jnp.ceil(values * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    e = jnp.asarray(np.concatenate([[-np.inf], edges, [np.inf]]).astype(values.dtype))
    lower = e[guess]  # the count is `guess` when lower < v <= upper (strict)
    upper = e[guess + 1]
    if strict:
        return guess - (values <= lower).astype(jnp.int32) + (values > upper).astype(jnp.int32)
    return guess - (values < lower).astype(jnp.int32) + (values >= upper).astype(jnp.int32)


# ----------------------------------------------------------------------------------------------
# Per-bin sums: the one engine every binned metric, reliability diagram and streaming state reads.


class BinSums(NamedTuple):
    """Per-bin sufficient statistics of top-label (or positive-class) calibration, shape ``[M]``.

    ``count`` and ``correct`` are int32 (exact) for unweighted or masked input and float32 for
    real-valued sample weights; ``confidence`` is the float32 sum of confidences.
    """

    count: jax.Array
    correct: jax.Array
    confidence: jax.Array


def prefix_sum(x: jax.Array) -> jax.Array:
    """Inclusive prefix sum along the last axis.

    A log-depth scan: exact for integers and pairwise-accurate for float32; XLA:CPU lowers
    ``jnp.cumsum`` to a reduce-window that is about twice as slow.
    """
    return jax.lax.associative_scan(jnp.add, x, axis=x.ndim - 1)


def _weights(weights: jax.Array | None, n: int) -> jax.Array:
    """Unit/bool/int weights as int32 (exact counts); float weights as float32 or wider."""
    if weights is None:
        return jnp.ones((n,), jnp.int32)
    if jnp.issubdtype(weights.dtype, jnp.floating):
        return weights.astype(jnp.promote_types(weights.dtype, jnp.float32))
    return weights.astype(jnp.int32)


# Rows per chunk of :func:`segment_sum`: each output slot receives at most this many serial
# float additions per chunk, so its rounding error is at most SUM_CHUNK_ROWS·u of the summed
# magnitudes whatever N (one serial scatter over N rows lost 7e-4 of ECE at N = 2^23). The
# partial sums take (N / SUM_CHUNK_ROWS)·slots memory; on XLA:CPU the chunked scatter runs as
# fast as the plain one (benchmarks/RESULTS.md, 2026-12-02).
SUM_CHUNK_ROWS = 256


def segment_sum(values: jax.Array, slots: jax.Array, num_slots: int) -> jax.Array:
    """``Σ values`` per slot (``[num_slots]``) with a float32 error that grows with ``log R``.

    ``values`` and ``slots`` are ``[R]`` or ``[R, P]`` (every entry of a row goes to its own
    slot). Rows are scattered chunk by chunk into separate partial sums, which are then added
    by :func:`tree_sum`: the error is at most ``(SUM_CHUNK_ROWS + 16·log16(chunks))·u``
    times the sum of magnitudes in a slot, instead of ``R·u`` for a single serial scatter.
    """
    rows = values.shape[0]
    chunks = -(-rows // SUM_CHUNK_ROWS)
    chunk = jax.lax.broadcasted_iota(jnp.int32, slots.shape, 0) // SUM_CHUNK_ROWS
    flat = (slots + num_slots * chunk).reshape(-1)
    partial = jnp.zeros((chunks * num_slots,), values.dtype).at[flat].add(values.reshape(-1))
    return tree_sum(partial.reshape(chunks, num_slots))


def accurate_sum(x: jax.Array) -> jax.Array:
    """``Σ x`` of a 1-D array with the float32 error bound of :func:`segment_sum`: blocks of
    ``SUM_CHUNK_ROWS`` entries reduced by XLA, then the block sums by :func:`tree_sum`."""
    whole = x.shape[0] - x.shape[0] % SUM_CHUNK_ROWS
    blocks = jnp.sum(x[:whole].reshape(-1, SUM_CHUNK_ROWS), axis=1)
    return tree_sum(jnp.concatenate([blocks, jnp.sum(x[whole:])[None]]))


def tree_sum(x: jax.Array) -> jax.Array:
    """Sum over the leading axis as a tree of fan-in 16 (error at most ``16·log16(len)·u`` of
    the magnitudes; fan-in 2 would need four times as many small kernels)."""
    while x.shape[0] > 16:
        pad = -x.shape[0] % 16
        if pad:
            x = jnp.concatenate([x, jnp.zeros((pad, *x.shape[1:]), x.dtype)])
        x = jnp.sum(x.reshape(-1, 16, *x.shape[1:]), axis=1)
    return jnp.sum(x, axis=0)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def bin_sums(
    confidence: jax.Array,
    correct: jax.Array,
    num_bins: int,
    weights: jax.Array | None = None,
) -> BinSums:
    """Per-bin ``(Σw, Σw·a, Σw·c)`` of ``confidence [N]`` and boolean ``correct [N]``.

    ``weights`` (``[N]``) may be bool/int (exact int32 counts; a mask is 0/1 weights) or float
    (float32 counts, e.g. bootstrap weights). Counts and correct counts come from a single int
    scatter into ``2·M`` slots (bin, correct). Confidences are summed as offsets from the bin
    centre (at most ``1/(2M)`` in magnitude) by :func:`segment_sum`, and ``count × centre`` is
    added back: the float32 error of a bin's sum is then at most the bound of
    :func:`segment_sum` times ``count / (2M)``, plus the rounding of ``count × centre``. A
    sample with weight 0 contributes nothing, even when its confidence is NaN (padding).
    """
    conf = v.to_compute_dtype(confidence)
    b = bin_index(conf, num_bins)
    w = _weights(weights, conf.shape[0])
    slot = 2 * b + correct.astype(jnp.int32)
    if jnp.issubdtype(w.dtype, jnp.floating):
        pairs = segment_sum(w, slot, 2 * num_bins).reshape(num_bins, 2)
    else:
        pairs = jnp.zeros((2 * num_bins,), w.dtype).at[slot].add(w).reshape(num_bins, 2)
    centre = jnp.asarray((np.arange(num_bins) + 0.5) / num_bins, conf.dtype)
    wc = jnp.where(w > 0, w.astype(conf.dtype) * (conf - centre[b]), 0)
    count = pairs[:, 0] + pairs[:, 1]
    conf_sum = segment_sum(wc, b, num_bins) + count.astype(conf.dtype) * centre
    return BinSums(count, pairs[:, 1], conf_sum)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def classwise_gap_sums(
    probs: jax.Array, labels: jax.Array, num_bins: int, weights: jax.Array | None = None
) -> jax.Array:
    """Per class ``j`` and bin ``m`` of ``p[:, j]``: ``Σ_n w_n·(1[y_n = j] - p[n, j])``, ``[K, M]``.

    For each class the weighted gap ``(|B_mj|/N)·|A_mj - C_mj|`` equals ``|this sum| / N``, so
    one scatter of ``-p`` over the ``N·K`` entries plus one of the label indicator over ``N``
    entries replace three, and no ``[N, K, M]`` one-hot is ever formed. Binary ``[N]`` input is
    the two columns ``[1 - p, p]``, the first binned by the exact real number ``1 - p``
    (:func:`complement_bin_index`). Probabilities are summed by :func:`segment_sum`; with unit,
    mask or integer weights the label indicator is an exact int32 count. An out-of-range label
    (an unmasked one, or one with non-zero weight) gives NaN.
    """
    p = v.to_compute_dtype(probs)
    if p.ndim == 1:
        bins = jnp.stack([complement_bin_index(p, num_bins), bin_index(p, num_bins)], axis=-1)
        p = jnp.stack([1 - p, p], axis=-1)
    else:
        bins = bin_index(p, num_bins)
    n, k = p.shape
    column = jax.lax.broadcasted_iota(jnp.int32, p.shape, 1)
    w = None if weights is None else _weights(weights, n)
    minus_p = -p if w is None else jnp.where(w[:, None] > 0, -w[:, None].astype(p.dtype) * p, 0)
    sums = segment_sum(minus_p, bins + num_bins * column, k * num_bins)
    # The label term 1[y = j] is non-zero once per row: a second scatter over N entries only
    # (an [N, K] comparison with the labels is slow on XLA:CPU).
    valid = (labels >= 0) & (labels < k)
    safe = jnp.where(valid, labels, 0).astype(jnp.int32)
    if k == 2 and probs.ndim == 1:
        label_bin = jnp.where(safe == 1, bins[:, 1], bins[:, 0])
    else:
        label_bin = bin_index(v.take_label(p, safe), num_bins)
    hit_slot = label_bin + num_bins * safe
    used = jnp.ones((n,), bool) if w is None else w > 0
    poison = jnp.sum(jnp.where(used & ~valid, jnp.nan, 0).astype(p.dtype))
    if w is None or not jnp.issubdtype(w.dtype, jnp.floating):
        unit = jnp.ones((n,), jnp.int32) if w is None else w
        hits = jnp.zeros((k * num_bins,), jnp.int32).at[hit_slot].add(jnp.where(valid, unit, 0))
        hits = hits.astype(p.dtype)
    else:
        hits = segment_sum(jnp.where(valid & used, w, 0), hit_slot, k * num_bins)
    return (hits + sums + poison).reshape(k, num_bins)
