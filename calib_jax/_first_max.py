"""Exact first-maximum correctness: whether each label is the *first* maximiser of its row of
scores (NumPy ``argmax``'s tie rule), with the row maximum and the softmax normaliser.

Two formulations per entry point, chosen per backend by :mod:`calib_jax._tuning`: the plain
reference path (``argmax``), and on XLA:CPU a fused path without ``argmax`` (a variadic
reduction that XLA:CPU runs about 10x slower than ``max`` on wide rows): narrow rows go column
by column in one fused loop; wide rows decide ties from the row maximum and sum and re-read
only the rows that may hold a tied maximum. Both give the same booleans; the tests compare
them on tied, random and adversarial rows.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _tuning
from calib_jax import _validation as v


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
    tuning = _tuning.current()
    if not tuning.fused_first_max:
        return plain_first_max_correct(scores, labels)
    if scores.shape[-1] <= tuning.unroll_max_columns:
        return _first_max_by_columns(scores, labels)
    # Written as one chain (max inside) so that the whole sum stays one fused row reduction.
    norm = jnp.sum(jnp.exp(scores - jnp.max(scores, axis=-1, keepdims=True)), axis=-1)
    return jnp.max(scores, axis=-1), _first_max_by_lead(scores, labels), norm


def plain_first_max_correct(
    scores: jax.Array, labels: jax.Array
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The reference path of :func:`first_max_correct`: ``max``, ``argmax == labels`` and the
    normaliser as three plain reductions."""
    top = jnp.max(scores, axis=-1)
    norm = jnp.sum(jnp.exp(scores - top[..., None]), axis=-1)
    return top, jnp.argmax(scores, axis=-1) == labels, norm


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
    for wide rows and from ``recheck_min_scores`` scores on (below, its fixed cost of a loop, a
    prefix sum and a scatter over N outweighs the pass)."""
    n, k = scores.shape
    tuning = _tuning.current()
    return (
        tuning.fused_first_max
        and k > tuning.unroll_max_columns
        and n * k >= tuning.recheck_min_scores
    )


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
    if _tuning.current().max_by_bits and logits.dtype == jnp.float32:
        top, first, last = max_and_bracket(logits)
        top = jax.lax.optimization_barrier(top)
        norm = jnp.sum(jnp.exp(logits - top[:, None]), axis=-1)
        # A no-op (a sum of exponentials is never negative) that gives the row reduction a
        # second consumer: alone, its elementwise consumer is fused into it by XLA:CPU's
        # YNNPACK fusion, which then runs about 1.5x slower (benchmarks/RESULTS.md).
        norm = jnp.where(jnp.any(norm < 0), jnp.nan, norm)
        return top, correct_in_bracket(logits, labels, first, last), norm
    # The maximum materialised once and read by the normaliser: cheaper than a normaliser that
    # finds the maximum again inside its own fusion.
    top = jax.lax.optimization_barrier(jnp.max(logits, axis=-1))
    norm = jnp.sum(jnp.exp(logits - top[:, None]), axis=-1)
    return top, correct_given_max(logits, labels, top, norm >= TIE_FACTOR), norm


_HALF = np.uint32(2**31)


def max_and_bracket(scores: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Row maximum of float32 ``scores [N, K]`` and a bracket ``[first, last]`` of each row's
    first maximiser (it is ``first`` when the two are equal), in one reduction.

    Each float is mapped to an unsigned key in the same order: ``2^31 + |x|`` (as bits) for
    ``x >= 0``, ``2^31 - |x|`` below (``+0`` and ``-0`` share a key; ``+NaN`` lies above
    ``+inf`` and ``-NaN`` below ``-inf``). The largest key gives the maximum exactly. With
    ``t = key >> s`` (so that ``t·K + K`` fits in 32 bits), ``max_j (t_j·K + K-1-j)`` names the
    first and ``max_j (t_j·K + j)`` the last column attaining ``max_j t_j``; the first maximiser
    attains it. Rows have ``first < last`` only when two entries lie within ``2^s`` ulps of the
    maximum, or tie. XLA:CPU runs this variadic reduction as one fused loop.
    """
    k = scores.shape[-1]
    u = jax.lax.bitcast_convert_type(scores, jnp.uint32)
    sign = u >> 31
    magnitude = u & np.uint32(2**31 - 1)
    # Arithmetic only (no select): 2^31 + m for x >= 0, 2^31 - m for x < 0, modulo 2^32.
    key = _HALF + magnitude - np.uint32(2) * sign * magnitude
    top, first_key, last_key = jax.lax.reduce(
        (key, *v.bracket_operands(key, (k - 1).bit_length() + 1)),
        (np.uint32(0), np.uint32(0), np.uint32(0)),
        lambda a, b: tuple(jnp.maximum(p, q) for p, q in zip(a, b, strict=True)),
        (scores.ndim - 1,),
    )
    bits = jnp.where(top >= _HALF, top - _HALF, (_HALF - top) | _HALF)
    return jax.lax.bitcast_convert_type(bits, jnp.float32), *v.bracket_of(first_key, last_key, k)


@jax.jit
def top_label_of_probs(
    probs: jax.Array,
    labels: jax.Array,
    row_max: jax.Array,
    row_sum: jax.Array,
    bracket: tuple[jax.Array, jax.Array] | None = None,
) -> tuple[jax.Array, jax.Array]:
    """:func:`first_max_correct` for probabilities ``[N, K]``: ``(max, correct)``, given the row
    maximum and sum (which the probability check computes anyway) and, where the check computed
    it, a ``bracket`` ``(first, last)`` of each row's first maximiser
    (:func:`calib_jax._validation.probability_row_stats`).

    With a bracket, a row is decided without reading it again when ``first == last`` (the
    first maximiser is ``first``) or the label lies outside the bracket (not the first
    maximiser); only the other rows are re-read. Without one, a row with a tied maximum has
    ``row_sum >= 2 * max``; only such rows whose label attains the maximum are re-read
    (:func:`correct_given_max`). Rows with negative entries are invalid and poisoned by the
    caller.
    """
    if not recheck_pays(probs):
        return first_max_correct(probs, labels)[:2]
    if bracket is not None:
        return row_max, correct_in_bracket(probs, labels, *bracket)
    maybe_tied = row_sum >= TIE_FACTOR * row_max
    return row_max, correct_given_max(probs, labels, row_max, maybe_tied)


def correct_in_bracket(
    scores: jax.Array, labels: jax.Array, first: jax.Array, last: jax.Array
) -> jax.Array:
    """Whether ``labels`` is the first maximiser of each row of ``scores [N, K]``, given a
    bracket ``[first, last]`` holding it (it is ``first`` when the two agree): a label outside
    the bracket is not; only rows with ``first < last`` and the label inside are re-read."""
    unique = first == last
    inside = (labels >= first) & (labels <= last)
    return recheck_rows(scores, labels, unique & (labels == first), ~unique & inside)


@jax.jit
def correct_given_max(
    scores: jax.Array, labels: jax.Array, top: jax.Array, maybe_tied: jax.Array
) -> jax.Array:
    """Whether ``labels`` is the first maximiser of each row of ``scores [N, K]``, given the row
    maximum ``top [N]`` and a flag ``maybe_tied [N]`` that is True wherever the maximum may be
    attained more than once.

    A label attaining the maximum in an unflagged row is the first maximiser; flagged rows
    whose label attains the maximum are decided by :func:`recheck_rows`, so the cost beyond an
    ``O(N)`` gather of the label scores is proportional to the number of such rows, not to
    ``N·K``. Out-of-range labels give False.
    """
    at_max = v.take_label(scores, labels) == top  # NaN (never equal) for out-of-range labels
    return recheck_rows(scores, labels, at_max, at_max & maybe_tied)


def recheck_rows(
    scores: jax.Array, labels: jax.Array, correct: jax.Array, recheck: jax.Array
) -> jax.Array:
    """``correct`` (right wherever ``recheck`` is False) with the ``recheck`` rows decided
    exactly by :func:`_first_max_by_lead`.

    No row to re-check: nothing is read. Few: the rows are gathered, a chunk at a time. When
    more than the tuning's ``recheck_max_fraction`` of the rows need it, one pass over all rows
    is cheaper and is taken instead. (Under ``vmap`` all three branches run.)
    """
    n, k = scores.shape
    count = jnp.sum(recheck, dtype=jnp.int32)
    chunk = min(n, max(8, 2**19 // k))  # rows per step: about 2^19 scores

    def sparse():
        # Row indices to re-check first (in order), then `n` (out of bounds: dropped below).
        # jnp.cumsum rather than prefix_sum: ~0.1 ms slower at N = 10^5 but one op, where the
        # scan's 2·log2(N) ops added 0.4 s to the compile time of every metric using this.
        slot = jnp.where(recheck, jnp.cumsum(recheck, dtype=jnp.int32) - 1, n + chunk)
        rows = jnp.full((n + chunk,), n, jnp.int32).at[slot].set(jnp.arange(n), mode="drop")

        def body(carry):
            step, out = carry
            idx = jax.lax.dynamic_slice(rows, (step * chunk,), (chunk,))
            safe = jnp.minimum(idx, n - 1)
            # Materialised: fused into the row reduction, the gather made it twice as slow.
            block = jax.lax.optimization_barrier(scores[safe])
            exact = _first_max_by_lead(block, labels[safe])
            return step + 1, out.at[idx].set(exact, mode="drop")

        return jax.lax.while_loop(lambda c: c[0] * chunk < count, body, (jnp.int32(0), correct))[1]

    # Re-reading gathered rows costs more per score than one pass over all rows (gather,
    # scatter and per-step overhead), so above some fraction of the rows the full pass wins.
    branch = jnp.where(count > _tuning.current().recheck_max_fraction * n, 2, (count > 0) * 1)
    return jax.lax.switch(
        branch, (lambda: correct, sparse, lambda: _first_max_by_lead(scores, labels))
    )


def _first_max_by_columns(scores: jax.Array, labels: jax.Array):
    """:func:`first_max_correct` for narrow rows, by a running strict comparison over columns."""
    top = scores[..., 0]
    first = jnp.zeros(top.shape, jnp.int32)
    for j in range(1, scores.shape[-1]):
        first = jnp.where(scores[..., j] > top, j, first)
        top = jnp.maximum(top, scores[..., j])
    norm = sum(jnp.exp(scores[..., j] - top) for j in range(scores.shape[-1]))
    return top, first == labels, norm
