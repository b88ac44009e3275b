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


# Up to this many columns the first maximum is found by a running comparison over the column
# slices: one fused elementwise loop over rows (XLA:CPU's row reductions are slow for narrow rows).
UNROLL_MAX_COLUMNS = 64


@jax.jit
def first_max_correct(
    scores: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Row maximum of ``scores [N, K]``, whether ``labels`` is its *first* maximiser, and
    ``Σ_k exp(scores - max)`` (the softmax normaliser when ``scores`` are logits).

    Equivalent to ``(max(scores, -1), argmax(scores, -1) == labels)`` with NumPy's first-maximum
    tie rule, without ``argmax`` (a variadic reduction that is slow on XLA:CPU for wide rows).
    Out-of-range labels give ``correct = False``; callers poison them with NaN. Outputs a
    caller drops are dead code (removed by XLA). Any real scores; the top-label metrics use the
    cheaper :func:`top_label_of_logits` and :func:`top_label_of_probs`.
    """
    if scores.shape[-1] <= UNROLL_MAX_COLUMNS:
        return _first_max_by_columns(scores, labels)
    # Written as one chain (max inside) so that the whole sum stays one fused row reduction.
    norm = jnp.sum(jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True)), axis=-1)
    return jnp.max(scores, axis=-1), _first_max_by_lead(scores, labels), norm


def _first_max_by_lead(scores: jax.Array, labels: jax.Array) -> jax.Array:
    """Exact first-maximum correctness as one fused row reduction over ``scores [..., K]``."""
    k = scores.shape[-1]
    dtype = scores.dtype
    valid = (labels >= 0) & (labels < k)
    at_label = jnp.take_along_axis(scores, jnp.where(valid, labels, 0)[..., None], axis=-1)[..., 0]
    # The label is the first maximiser iff z_j - z_y <= 0 for every j > y and < 0 for j < y, so
    # with b_j = tiny * (y - j) (at least the smallest normal for j < y, 0 at j = y, at most
    # K * tiny below 0 for j > y), iff max_j (z_j - z_y + b_j) <= 0. Exact while z_j - z_y is
    # 0 or at least K * tiny in magnitude (logits differing by less than ~1e-35 count as tied).
    # Only arithmetic and max, no select, compare or clamp on [N, K] (a clamp against 0 made
    # XLA:CPU materialise a broadcast zero of size N x K inside calibration_report): one fused
    # row reduction that reads the scores once and writes nothing of size N x K.
    tiny = jnp.finfo(dtype).tiny
    column = jnp.asarray(np.arange(k) * np.float64(tiny), dtype).reshape(
        (1,) * (scores.ndim - 1) + (k,)
    )
    before = labels.astype(dtype)[..., None] * tiny - column
    lead = jnp.max((scores - at_label[..., None]) + before, axis=-1)
    return valid & (lead <= 0)


# A maximum attained twice puts two terms exp(0) = 1 into the softmax normaliser, or two equal
# terms `top` into a row sum of non-negative scores. A sum of non-negative floats is at least the
# rounded sum of any two of its terms, whatever the order of the additions (rounding is
# monotone), so such a row has normaliser >= 2 (sum >= 2 * top); the margin absorbs an exp(0)
# that an approximate exp evaluates a few ulp below 1.
TIE_FACTOR = 2.0 - 2.0**-9


def recheck_pays(scores: jax.Array) -> bool:
    """Whether deciding ties by re-reading rows (:func:`correct_given_max`) beats one fused pass:
    for wide rows and from about 2^21 scores on (below, its fixed cost of a loop, a prefix sum
    and a scatter over N outweighs the pass; measured on XLA:CPU)."""
    n, k = scores.shape
    return k > UNROLL_MAX_COLUMNS and n * k >= 2**21


@jax.jit
def top_label_of_logits(
    logits: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """:func:`first_max_correct` for logits ``[N, K]``: ``(max, correct, normaliser)``.

    Wide rows take the row maximum and the softmax normaliser as two plain reductions, then
    decide correctness from them: the label is the first maximiser iff it attains the maximum
    and no earlier class does. The second condition can only fail in a row whose normaliser is
    at least 2 (a tied maximum); only those rows among the ones whose label attains the maximum
    are re-read, see :func:`correct_given_max`.
    """
    if not recheck_pays(logits):
        return first_max_correct(logits, labels)
    # The maximum materialised once and read by the normaliser: cheaper than a normaliser that
    # finds the maximum again inside its own fusion.
    top = jax.lax.optimization_barrier(jnp.max(logits, axis=-1))
    norm = jnp.sum(jnp.exp(logits - top[:, None]), axis=-1)
    return top, correct_given_max(logits, labels, top, norm >= TIE_FACTOR), norm


@jax.jit
def top_label_of_probs(
    probs: jax.Array, labels: jax.Array, row_max: jax.Array, row_sum: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """:func:`first_max_correct` for probabilities ``[N, K]``: ``(max, correct)``, given the row
    maximum and sum (which the probability check computes anyway).

    A row with a tied maximum has ``row_sum >= 2 * max``; only such rows whose label attains the
    maximum are re-read (:func:`correct_given_max`). Rows with negative entries are invalid
    and poisoned by the caller.
    """
    if not recheck_pays(probs):
        return first_max_correct(probs, labels)[:2]
    maybe_tied = row_sum >= TIE_FACTOR * row_max
    return row_max, correct_given_max(probs, labels, row_max, maybe_tied)


def prefix_sum(x: jax.Array) -> jax.Array:
    """Inclusive prefix sum along the last axis.

    A log-depth scan: exact for integers and pairwise-accurate for float32; XLA:CPU lowers
    ``jnp.cumsum`` to a reduce-window that is about twice as slow.
    """
    return jax.lax.associative_scan(jnp.add, x, axis=x.ndim - 1)


@jax.jit
def correct_given_max(
    scores: jax.Array, labels: jax.Array, top: jax.Array, maybe_tied: jax.Array
) -> jax.Array:
    """Whether ``labels`` is the first maximiser of each row of ``scores [N, K]``, given the row
    maximum ``top [N]`` and a flag ``maybe_tied [N]`` that is True wherever the maximum may be
    attained more than once.

    A label attaining the maximum in an unflagged row is the first maximiser. Flagged rows whose
    label attains the maximum are gathered, a chunk of rows at a time, and decided exactly by
    :func:`_first_max_by_lead`, so the cost beyond an ``O(N)`` gather of the label scores is
    proportional to the number of such rows, not to ``N·K``. When more than 40% of the rows
    need it, one pass over all rows is cheaper and is taken instead (under ``vmap`` both
    branches of that choice run). Out-of-range labels give False.
    """
    n, k = scores.shape
    at_max = v.take_label(scores, labels) == top  # NaN (never equal) for out-of-range labels
    recheck = at_max & maybe_tied
    count = jnp.sum(recheck, dtype=jnp.int32)
    chunk = min(n, max(8, 2**19 // k))  # rows per step: about 2^19 scores

    def sparse():
        # Row indices to re-check first (in order), then `n` (out of bounds: dropped below).
        # jnp.cumsum rather than prefix_sum: ~0.1 ms slower at N = 10^5 but one op, where the
        # scan's 2·log2(N) ops added 0.4 s to the compile time of every metric using this.
        slot = jnp.where(recheck, jnp.cumsum(recheck, dtype=jnp.int32) - 1, n + chunk)
        rows = jnp.full((n + chunk,), n, jnp.int32).at[slot].set(jnp.arange(n), mode="drop")

        def body(carry):
            step, correct = carry
            idx = jax.lax.dynamic_slice(rows, (step * chunk,), (chunk,))
            safe = jnp.minimum(idx, n - 1)
            # Materialised: fused into the row reduction, the gather made it twice as slow.
            block = jax.lax.optimization_barrier(scores[safe])
            exact = _first_max_by_lead(block, labels[safe])
            return step + 1, correct.at[idx].set(exact, mode="drop")

        carry = (jnp.int32(0), at_max)
        return jax.lax.while_loop(lambda c: c[0] * chunk < count, body, carry)[1]

    # Re-reading gathered rows in the loop costs 2-2.6x per score what one pass over all rows
    # does (gather, scatter and per-step overhead; XLA:CPU at 100k x 100 and 20k x 1000), so
    # from about 40% of the rows on the full pass is cheaper.
    dense = 5 * count > 2 * n
    return jax.lax.cond(dense, lambda: _first_max_by_lead(scores, labels), sparse)


def _first_max_by_columns(scores: jax.Array, labels: jax.Array):
    """:func:`first_max_correct` for narrow rows, by a running strict comparison over columns."""
    top = scores[..., 0]
    first = jnp.zeros(top.shape, jnp.int32)
    for j in range(1, scores.shape[-1]):
        first = jnp.where(scores[..., j] > top, j, first)
        top = jnp.maximum(top, scores[..., j])
    norm = sum(jnp.exp(scores[..., j] - top) for j in range(scores.shape[-1]))
    return top, first == labels, norm


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
