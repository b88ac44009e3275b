"""AdaECE: calibration error with equal-mass (adaptive) bins (Mukhoti et al. 2020)."""

from __future__ import annotations

import functools
from typing import Literal

import jax
import jax.numpy as jnp

from calib_jax import _binning, _tuning
from calib_jax import _validation as v
from calib_jax.metrics import _inputs

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def sort_key(conf: Array, correct: Array, keep: Array | None) -> Array:
    """int32 keys ordering samples by confidence, then incorrect before correct.

    For ``c >= 0`` the float32 bit pattern is monotone in ``c`` and below ``2^30``, so
    ``bits << 1 | a`` fits in int32; one single-operand integer sort is several times faster on
    XLA:CPU than a float or multi-operand sort. Excluded samples get the largest key.
    """
    bits = jax.lax.bitcast_convert_type(conf.astype(jnp.float32), jnp.int32)
    key = (bits << 1) | correct.astype(jnp.int32)
    if keep is not None:
        key = jnp.where(keep, key, jnp.iinfo(jnp.int32).max)
    return key


def unpack_key(key: Array) -> tuple[Array, Array]:
    """Confidence (float32) and correctness (0/1 float32) from :func:`sort_key` keys."""
    conf = jax.lax.bitcast_convert_type(key >> 1, jnp.float32)
    return conf, (key & 1).astype(jnp.float32)


# Exact selection instead of a sort: from _tuning's select_min_samples on (and for up to
# _SELECT_MAX_BINS bins), two histogram passes over the packed keys find the bin boundaries.
# Below it the fixed cost of the 2^16-bucket histogram exceeds the sort.
_SELECT_MAX_BINS = 64
_LO_BITS = 15  # keys are below 2^31: 16 high bits (first pass) + 15 low bits (second pass)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def equal_mass_ece(conf: Array, correct: Array, w: Array | None, num_bins: int) -> Array:
    """AdaECE with ``np.array_split``-sized bins over the sorted confidences (see
    :func:`equal_mass_ece_by_sort`; for unit, mask or integer weights on XLA:CPU from ``2^15``
    samples on the same value comes from :func:`equal_mass_ece_by_select`, without a sort)."""
    integral = w is None or not jnp.issubdtype(w.dtype, jnp.floating)
    large = conf.shape[0] >= _tuning.current().select_min_samples
    if integral and large and num_bins <= _SELECT_MAX_BINS:
        return equal_mass_ece_by_select(conf, correct, w, num_bins)
    return equal_mass_ece_by_sort(conf, correct, w, num_bins)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def equal_mass_ece_by_select(conf: Array, correct: Array, w: Array | None, num_bins: int) -> Array:
    """:func:`equal_mass_ece_by_sort` for unit, mask or integer weights, by exact selection.

    Only the ``M - 1`` keys at the bin boundaries of the sorted order matter: bin sums are
    differences of ``S(b) = Σ (a - c)`` over the first ``b`` sorted positions, and
    ``S(b) = Σ_{key < k} (a - c) + (b - #{key < k})·(a - c)(k)`` with ``k`` the key at position
    ``b`` (samples with equal keys have equal ``a`` and ``c``). The boundary keys are found by a
    two-pass radix select on the packed int32 keys of :func:`sort_key`: a histogram of the high
    16 bits, then, only for the buckets holding a boundary, histograms of the low 15 bits,
    which pin every key down exactly. The sums below the boundary keys then come from one
    accurate scatter of ``a - c`` by the number of boundary keys at or below each sample's key
    (:func:`calib_jax._binning.segment_sum`, float32 error growing with ``log N``). Three
    scatters over ``N`` and ``M - 1`` comparisons per sample replace the sort.
    """
    n = conf.shape[0]
    conf = conf.astype(jnp.float32)
    nb = 1 << (31 - _LO_BITS)
    nl = 1 << _LO_BITS
    cnt = jnp.ones((n,), jnp.int32) if w is None else w.astype(jnp.int32)
    key = sort_key(conf, correct, None)
    # Negative keys come only from NaN confidences (the result is poisoned below anyway).
    key = jnp.maximum(key, 0)
    hi = key >> _LO_BITS
    count = jnp.zeros((nb,), jnp.int32).at[hi].add(cnt)
    # Plain cumulative sums of int32 (exact) and masked reductions for the float prefixes: an
    # associative scan over 2^16 entries would add about a second of compile time each.
    # Internal boundaries b_m, m = 1 .. M-1 (np.array_split sizes), the buckets holding them and
    # the count below each such bucket.
    total, bounds, h, below_h = array_split_boundaries(jnp.cumsum(count), num_bins)
    bounds, below_h = bounds[1:-1], below_h[1:-1]
    h = jnp.minimum(h[1:-1], nb - 1).astype(jnp.int32)
    # Second pass: low bits of the keys in boundary buckets, one histogram per distinct bucket.
    target = jnp.full((n,), num_bins - 1, jnp.int32)
    for i in reversed(range(num_bins - 1)):
        target = jnp.where(hi == h[i], i, target)
    slot = target * nl + (key & (nl - 1))
    first_of_run = jnp.searchsorted(h, h, side="left", method="compare_all")
    low_hist = (
        jnp.zeros(((num_bins - 1) * nl,), jnp.int32)
        .at[slot]
        .add(cnt, mode="drop")
        .reshape(num_bins - 1, nl)[first_of_run]
    )
    # The position of rank b_m - below_h inside its bucket, in blocks of 128 low values.
    rank = bounds - below_h
    blocks = low_hist.reshape(num_bins - 1, nl // 128, 128)
    block_sum = jnp.sum(blocks, axis=2)
    block_cum = jnp.cumsum(block_sum, axis=1)
    blk = jnp.minimum(jnp.sum(block_cum <= rank[:, None], axis=1), nl // 128 - 1)
    before_blk = _pick(block_cum - block_sum, blk)
    row = jnp.take_along_axis(blocks, blk[:, None, None], axis=1)[:, 0, :]
    row_cum = jnp.cumsum(row, axis=1)
    pos = jnp.minimum(jnp.sum(row_cum <= (rank - before_blk)[:, None], axis=1), 127)
    low = (blk * 128 + pos).astype(jnp.int32)
    below_k = below_h + before_blk + _pick(row_cum - row, pos)
    # Σ (a - c) over the keys below each boundary key k_m: a sample's keys lie below k_m iff
    # fewer than m boundary keys are at or below it, so one accurate scatter of (a - c) by that
    # number (segment_sum: float32 error growing with log N only) gives every such sum as a prefix.
    boundary = (h << _LO_BITS) | low
    section = jnp.zeros((n,), jnp.int32)
    for i in range(num_bins - 1):
        section += (key >= boundary[i]).astype(jnp.int32)
    gap = jnp.where(cnt > 0, cnt.astype(jnp.float32) * (correct.astype(jnp.float32) - conf), 0)
    section_gap = _binning.segment_sum(gap, section, num_bins)
    below_gap = jnp.cumsum(section_gap)
    k_c, k_a = unpack_key(boundary)
    at_k = (bounds - below_k).astype(jnp.float32) * (k_a - k_c)
    gap_total = below_gap[-1]
    prefix = jnp.where(bounds < total, below_gap[:-1] + at_k, gap_total)
    s = jnp.concatenate([jnp.zeros((1,), jnp.float32), prefix, gap_total[None]])
    kept_conf = conf if w is None else jnp.where(cnt > 0, conf, 0)
    poison = 0 * jnp.sum(kept_conf)
    return jnp.sum(jnp.abs(jnp.diff(s))) / total.astype(jnp.float32) + poison


def _pick(x: Array, i: Array) -> Array:
    """``x[m, i[m]]`` for each row ``m``."""
    return jnp.take_along_axis(x, i[:, None], axis=1)[:, 0]


@functools.partial(jax.jit, static_argnames=("num_bins",))
def equal_mass_ece_by_sort(conf: Array, correct: Array, w: Array | None, num_bins: int) -> Array:
    """AdaECE with ``np.array_split``-sized bins over the sorted confidences.

    Each sample occupies ``w`` consecutive unit positions of the sorted order (integer weights
    are replicated samples, a mask is 0/1 weights); bin ``m`` covers positions
    ``[b_m, b_{m+1})`` with ``b_m = m·q + min(m, r)``, ``q, r = divmod(W, M)``. The per-bin sums
    are differences of the cumulative sums at those boundaries, so fractional weights split a
    sample's mass between the bins it straddles.
    """
    n = conf.shape[0]
    dtype = jnp.float32
    if w is None or w.dtype == jnp.bool_:
        # Unit weights: everything the bins need is in the packed key.
        key = jax.lax.sort(sort_key(conf, correct, w))
        c_s, a_s = unpack_key(key)
        w_s = jnp.ones((n,), jnp.int32) if w is None else (key != jnp.iinfo(jnp.int32).max)
        w_s = w_s.astype(jnp.int32)
        gap_s = jnp.where(w_s > 0, a_s - c_s, 0)
    else:
        w = w.astype(dtype) if jnp.issubdtype(w.dtype, jnp.floating) else w.astype(jnp.int32)
        key, w_s = jax.lax.sort((sort_key(conf, correct, w > 0), w), num_keys=1)
        c_s, a_s = unpack_key(key)
        gap_s = jnp.where(w_s > 0, a_s - c_s, 0)
    cgap = _binning.prefix_sum(w_s.astype(dtype) * gap_s)
    # NaN confidences (poisoned rows) sort to the front and would be skipped by the boundary
    # lookup when they sit exactly at a boundary; propagate them explicitly.
    poison = 0 * cgap[-1]
    return equal_mass_gap(_binning.prefix_sum(w_s), cgap, gap_s, num_bins) + poison


def array_split_boundaries(cw: Array, num_bins: int) -> tuple[Array, Array, Array, Array]:
    """Where the ``np.array_split`` bin boundaries fall in a cumulative weight ``cw``.

    Boundaries are ``b_m = m·q + min(m, r)`` with ``q, r = divmod(W, M)``, ``W = cw[-1]``.
    Returns ``(W, b, j, prev)``: ``j`` the first position with ``cw[j] > b_m`` (the position
    the boundary cuts) and ``prev`` the cumulative weight before it.
    """
    total = cw[-1]
    q = total // num_bins
    r = total - q * num_bins
    m = jnp.arange(num_bins + 1, dtype=cw.dtype)
    bounds = m * q + jnp.minimum(m, r)
    j = jnp.searchsorted(cw, bounds, side="right")
    prev = jnp.where(j > 0, cw[jnp.maximum(j - 1, 0)], 0)
    return total, bounds, j, prev


def equal_mass_gap(cw: Array, cgap: Array, unit_gap: Array, num_bins: int) -> Array:
    """``Σ_m |Σ_{B_m} (a - c)| / W`` over equal-mass bins of sorted positions.

    ``cw``/``cgap`` are the cumulative weight and gap over the positions (samples, or the
    buckets of a fine histogram) and ``unit_gap`` the gap per unit of weight at each position,
    so a boundary that cuts a position splits its mass between the two bins.
    """
    n = cw.shape[0]
    total, bounds, j, prev = array_split_boundaries(cw, num_bins)
    prev_cgap = jnp.where(j > 0, cgap[jnp.maximum(j - 1, 0)], 0)
    cut = unit_gap[jnp.minimum(j, n - 1)]
    partial = jnp.where(j < n, (bounds - prev).astype(cgap.dtype) * cut, 0)
    below = prev_cgap + partial
    return jnp.sum(jnp.abs(jnp.diff(below))) / total.astype(cgap.dtype)


@functools.partial(jax.jit, static_argnames=("num_bins",))
def interpolated_ece(conf: Array, correct: Array, mask: Array | None, num_bins: int) -> Array:
    """AdaECE as in the code of Mukhoti et al. (2020): interpolated edges, ``(lo, hi]`` bins."""
    n = conf.shape[0]
    keep = jnp.ones((n,), bool) if mask is None else mask
    s, _ = unpack_key(jax.lax.sort(sort_key(conf, jnp.zeros((n,), bool), keep)))
    count = jnp.sum(keep.astype(jnp.int32))
    last = jnp.maximum(count - 1, 0)
    x = jnp.arange(num_bins + 1, dtype=conf.dtype) * (count.astype(conf.dtype) / num_bins)
    i0 = jnp.clip(jnp.floor(x).astype(jnp.int32), 0, last)
    i1 = jnp.minimum(i0 + 1, last)
    frac = x - i0.astype(conf.dtype)
    edges = jnp.where(x >= last.astype(conf.dtype), s[last], s[i0] + frac * (s[i1] - s[i0]))
    b = jnp.searchsorted(edges, conf, side="left") - 1
    b = jnp.where(keep & (b >= 0) & (b < num_bins), b, num_bins)
    gap = jnp.where(keep, correct.astype(conf.dtype) - conf, 0)
    sums = jnp.zeros((num_bins + 1,), conf.dtype).at[b].add(gap)[:num_bins]
    # A NaN confidence (poisoned row) sorts last and falls outside every bin; propagate it.
    poison = 0 * jnp.sum(gap)
    return jnp.sum(jnp.abs(sums)) / count.astype(conf.dtype) + poison


def ada_ece(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
    variant: Literal["equal_mass", "mukhoti2020"] = "equal_mass",
) -> Array:
    """Adaptive ECE (AdaECE): ECE over equal-mass bins of the sorted confidences.

    .. math::
       \\mathrm{AdaECE} = \\sum_m \\frac{|B_m|}{N} |\\mathrm{acc}_m - \\mathrm{conf}_m|

    ``variant="equal_mass"`` (default): sort the confidences and split the sorted order into
    ``M`` contiguous bins whose sizes differ by at most one, the larger ones first
    (``np.array_split`` sizes). Equal confidences are ordered incorrect-before-correct, so the
    result does not depend on the order of the samples (a tie group straddling a bin boundary
    is otherwise split arbitrarily). With ``N < M`` the last bins are empty and
    weigh 0. Sample weights act as replication counts (fractional weights split a sample
    between the bins it straddles), so bootstrap weights work.

    ``variant="mukhoti2020"``: the code of Mukhoti et al. (2020): edges
    ``np.interp(linspace(0, N, M+1), arange(N), sort(c))`` (computed here in the compute
    dtype), bins ``(lo, hi]``, weight ``|B_m|/N``. Every sample equal to the minimum confidence
    falls below the first bin and is dropped; use it only to reproduce published numbers.
    ``weights`` are not supported by this variant (``where`` is).

    Top-label confidence and first-maximum prediction for ``[N, K]`` input; positive-class for
    binary ``[N]`` input (as for :func:`ece`). Sums in float32; the confidences are sorted as
    float32 (float64 input loses its extra precision in the ordering only). Cost: one int32 sort
    of ``N`` packed keys; on XLA:CPU, for ``N >= 2^15`` with no weights, a mask or integer
    weights, and up to 64 bins, an exact radix selection of the bin boundaries instead (three
    scatters over ``N``, the same value without sorting).

    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels.
      num_bins: number of bins ``M`` (static int ``>= 1``).
      variant: ``"equal_mass"`` or ``"mukhoti2020"`` (static).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights (``equal_mass`` only).
      from_logits: ``predictions`` holds logits (confidence ``max softmax``, first-max prediction).

    Returns:
      Scalar float32 AdaECE.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> labels = jnp.array([0, 1, 2, 0])
      >>> print(f"{float(cj.metrics.ada_ece(probs, labels, num_bins=2)):.4f}")
      0.4000

    References:
      Mukhoti, Kulharia, Sanyal, Golodetz, Torr, Dokania, "Calibrating Deep Neural Networks
      using Focal Loss", NeurIPS 2020; Nguyen & O'Connor, "Posterior calibration and exploratory
      analysis for natural language processing models", EMNLP 2015.
    """
    num_bins = v.check_num_bins(num_bins)
    if variant not in ("equal_mass", "mukhoti2020"):
        raise ValueError(f"variant must be 'equal_mass' or 'mukhoti2020', got {variant!r}.")
    if variant == "mukhoti2020" and weights is not None:
        raise ValueError("variant='mukhoti2020' does not take weights; use where= to mask.")
    conf, correct, w = _inputs.top_label(
        predictions, labels, where, weights, from_logits=from_logits
    )
    if variant == "mukhoti2020":
        return interpolated_ece(conf, correct, w, num_bins)
    return equal_mass_ece(conf, correct, w, num_bins)
