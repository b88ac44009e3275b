"""Calibration metrics of the wider field: over-/under-confidence, KS error and ECE-sweep.

Over- and under-confidence read the same per-bin sums as :func:`~calib_jax.metrics.ece`; the
KS error and ECE-sweep read the samples sorted by confidence (equal confidences with incorrect
samples first, as :func:`~calib_jax.metrics.ada_ece` orders them), which the selective-prediction
metrics and the CORP decomposition share through :func:`sort_by_confidence`.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _binning
from calib_jax.metrics import _binned, _inputs
from calib_jax.metrics._adaptive import sort_key, unpack_key

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_ARGS = """
    Args:
      predictions: ``[N, K]`` class probabilities (or logits with ``from_logits=True``), or
        ``[N]`` binary positive-class probabilities (logits).
      labels: ``[N]`` integer labels in ``[0, K)`` (``{0, 1}`` for binary input).
      from_logits: ``predictions`` holds logits; the confidence is ``max softmax(z)`` (binary:
        ``sigmoid(z)``) and the prediction the first maximum of the logits.
      where: optional bool ``[N]`` mask; masked samples are ignored (they may hold garbage).
      weights: optional non-negative ``[N]`` sample weights; integer weights act exactly as
        replicated samples.
"""

_INPUT_RULES = """
    Top-label calibration on ``[N, K]`` input (confidence ``c = max_k p_k``, correctness
    ``a = 1[first argmax = label]``), positive-class calibration on binary ``[N]`` input
    (``c = p``, ``a = 1[label = 1]``; pass ``[1 - p, p]`` for top-label calibration of a binary
    model). Accumulated in float32 (float64 for float64 input) whatever the input dtype.
    Invalid input (an unmasked label out of range, a probability row with an entry outside
    ``[0, 1]`` or a sum off one, NaN/inf) raises eagerly, is a checkify check under ``jit``
    (raised by :func:`calib_jax.validation.checked`), and in any case gives NaN, never a
    plausible number; masked and zero-weight samples are exempt.
"""


def _doc(fn):
    fn.__doc__ = (
        fn.__doc__.replace("    {args}\n", _ARGS.lstrip("\n"))
        .replace("    {rules}\n", _INPUT_RULES.lstrip("\n"))
        .replace("    {bins}\n", _binned._CONVENTIONS.lstrip("\n"))
    )
    return fn


# ---------------------------------------------------------------------------------------------
# Over- and under-confidence: the two signs of the ECE's per-bin gaps.


def overconfidence_from_sums(sums: _binning.BinSums) -> Array:
    """``Σ_m max(Σc - Σa, 0) / N`` over the bins (the part of the ECE where ``conf > acc``)."""
    gap = sums.confidence - sums.correct.astype(sums.confidence.dtype)
    return jnp.sum(jnp.maximum(gap, 0)) / _binned.total_weight(sums)


def underconfidence_from_sums(sums: _binning.BinSums) -> Array:
    """``Σ_m max(Σa - Σc, 0) / N`` over the bins (the part of the ECE where ``acc > conf``)."""
    gap = sums.correct.astype(sums.confidence.dtype) - sums.confidence
    return jnp.sum(jnp.maximum(gap, 0)) / _binned.total_weight(sums)


@_doc
def overconfidence_error(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> Array:
    """Overconfidence error: the part of the ECE from bins whose confidence exceeds accuracy.

    .. math::
       \\mathrm{OE} = \\sum_m \\frac{|B_m|}{N} \\max(\\mathrm{conf}_m - \\mathrm{acc}_m, 0)

    ``overconfidence_error + underconfidence_error == ece`` on the same bins (up to float
    rounding): both read the per-bin sums that :func:`~calib_jax.metrics.ece` reads. (The signed
    binned gap ``Σ_m (|B_m|/N)(conf_m - acc_m)`` is simply ``mean(c) - mean(a)``.)

    {bins}
    {args}
      num_bins: number of equal-width bins ``M`` (static int ``>= 1``).

    Returns:
      Scalar float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> labels = jnp.array([0, 1, 2, 0])
      >>> oe = cj.metrics.overconfidence_error(probs, labels, num_bins=3)
      >>> ue = cj.metrics.underconfidence_error(probs, labels, num_bins=3)
      >>> print(f"{float(oe):.4f} {float(ue):.4f}")
      0.1750 0.0250

    References:
      Thulasidasan, Chennupati, Bilmes, Bhattacharya, Michalak, "On Mixup Training: Improved
      Calibration and Predictive Uncertainty for Deep Neural Networks", NeurIPS 2019 (OE);
      Guo et al., ICML 2017 (ECE).
    """
    sums = _binned._sums(predictions, labels, num_bins, where, weights, from_logits)
    return overconfidence_from_sums(sums)


@_doc
def underconfidence_error(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> Array:
    """Underconfidence error: the part of the ECE from bins whose accuracy exceeds confidence.

    .. math::
       \\mathrm{UE} = \\sum_m \\frac{|B_m|}{N} \\max(\\mathrm{acc}_m - \\mathrm{conf}_m, 0)

    ``overconfidence_error + underconfidence_error == ece`` on the same bins (up to float
    rounding). See :func:`overconfidence_error` for an example.

    {bins}
    {args}
      num_bins: number of equal-width bins ``M`` (static int ``>= 1``).

    Returns:
      Scalar float32 in ``[0, 1]``.

    References:
      Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    sums = _binned._sums(predictions, labels, num_bins, where, weights, from_logits)
    return underconfidence_from_sums(sums)


# ---------------------------------------------------------------------------------------------
# Samples sorted by confidence: shared by KS, ECE-sweep, selective prediction and CORP.


class SortedSamples(NamedTuple):
    """Samples in ascending confidence, equal confidences with incorrect samples first.

    Zero-weight (masked) samples come last with weight 0. Every field is ``[N]``.

    Attributes:
      confidence: sorted confidences (compute dtype; float32 for float32/bf16 input).
      correct: correctness as 0/1 in the compute dtype.
      weight: int32 weights (unit, mask or integer weights) or float weights.
      group_start: True at the first sample of a group of equal confidences.
      group_end: True at the last sample of such a group.
      poison: scalar, 0, or NaN when a sample with non-zero weight has a NaN confidence.
    """

    confidence: Array
    correct: Array
    weight: Array
    group_start: Array
    group_end: Array
    poison: Array


@jax.jit
def sort_by_confidence(conf: Array, correct: Array, w: Array | None) -> SortedSamples:
    """:class:`SortedSamples` of the top-label triple of :func:`_inputs.top_label`.

    Ties are decided on the confidence rounded to float32 (as :func:`ada_ece` does), so the
    order never depends on the order of the samples. Float32 confidences with unit or mask
    weights sort as one packed int32 key (no payload).
    """
    n = conf.shape[0]
    integral = w is None or not jnp.issubdtype(w.dtype, jnp.floating)
    keep = None if w is None else (w if w.dtype == jnp.bool_ else w > 0)
    key = sort_key(conf, correct, keep)
    operands = [key]
    carry_conf = conf.dtype != jnp.float32
    if carry_conf:
        operands.append(conf)
    carry_w = w is not None and w.dtype != jnp.bool_
    if carry_w:
        operands.append(w.astype(jnp.int32) if integral else w)
    out = jax.lax.sort(tuple(operands), num_keys=1)
    key = out[0]
    c_f32, a = unpack_key(key)
    c = out[1] if carry_conf else c_f32
    if carry_w:
        w_s = out[-1]
    elif w is None:
        w_s = jnp.ones((n,), jnp.int32)
    else:
        w_s = (key != jnp.iinfo(jnp.int32).max).astype(jnp.int32)
    group = key >> 1
    differs = group[1:] != group[:-1]
    start = jnp.concatenate([jnp.ones((1,), bool), differs])
    end = jnp.concatenate([differs, jnp.ones((1,), bool)])
    a = a.astype(c.dtype)
    c = jnp.where(w_s > 0, c, 0)
    # A NaN confidence (an invalid row) with non-zero weight poisons every result.
    poison = 0 * jnp.sum(jnp.where(keep if keep is not None else True, conf, 0))
    return SortedSamples(c, a, w_s, start, end, poison)


# ---------------------------------------------------------------------------------------------
# Kolmogorov-Smirnov calibration error.


@jax.jit
def ks_from_sorted(s: SortedSamples) -> Array:
    w = s.weight.astype(s.confidence.dtype)
    h = _binning.prefix_sum(jnp.where(s.weight > 0, w * (s.confidence - s.correct), 0))
    total = jnp.sum(w)
    return jnp.max(jnp.where(s.group_end, jnp.abs(h), 0)) / total + s.poison


@_doc
def ks_error(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Kolmogorov-Smirnov calibration error (Gupta et al. 2021): the largest gap between the
    cumulative confidence and the cumulative correctness along the sorted confidences.

    .. math::
       \\mathrm{KS} = \\max_i \\Big|\\frac{1}{N} \\sum_{j \\le i} (c_{(j)} - a_{(j)})\\Big|

    Samples are sorted by ascending confidence and the running sum is evaluated only at the
    ends of groups of equal confidence (decided on the confidence rounded to float32), so the
    value never depends on the order of the samples. No bins and no hyperparameter; ``0`` when
    every group of equal confidence has accuracy equal to its confidence. Weighted: each sample
    contributes ``w·(c - a)`` and the sum is divided by ``Σw``. Cost: one sort of ``N`` keys.

    {rules}
    {args}

    Returns:
      Scalar float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> p = jnp.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
      >>> y = jnp.array([0, 0, 0, 1, 0, 1, 1, 1])
      >>> print(f"{float(cj.metrics.ks_error(p, y)):.4f}")
      0.0000
      >>> print(f"{float(cj.metrics.ks_error(p, 1 - y)):.4f}")
      0.2500

    References:
      Gupta, Rahimi, Ajanthan, Mensink, Sminchisescu, Hartley, "Calibration of Neural Networks
      using Splines", ICLR 2021.
    """
    conf, correct, w = _inputs.top_label(
        predictions, labels, where, weights, from_logits=from_logits
    )
    return ks_from_sorted(sort_by_confidence(conf, correct, w))


# ---------------------------------------------------------------------------------------------
# ECE-sweep.


def _two_product(x: Array, y: Array) -> tuple[Array, Array]:
    """``x·y = p + e`` exactly (Dekker's product: Veltkamp split into half-width pieces)."""
    dtype = np.dtype(x.dtype)
    split = dtype.type(2 ** ((np.finfo(dtype).nmant + 2) // 2) + 1)

    def halves(z):
        t = z * split
        hi = t - (t - z)
        return hi, z - hi

    p = x * y
    xh, xl = halves(x)
    yh, yl = halves(y)
    e = ((xh * yh - p) + xh * yl + xl * yh) + xl * yl
    return p, e


def _ratio_le(a1: Array, n1: Array, a2: Array, n2: Array) -> Array:
    """``a1/n1 <= a2/n2`` for positive ``n``, exactly: the cross products ``a1·n2``, ``a2·n1``
    as exact two-float sums (float32 division would call distinct ratios equal from ``N`` of
    a few thousand on)."""
    p1, e1 = _two_product(a1, n2)
    p2, e2 = _two_product(a2, n1)
    return (p1 < p2) | ((p1 == p2) & (e1 <= e2))


def _cumulative(s: SortedSamples) -> tuple[Array, Array, Array]:
    """Prefix sums with a leading 0: weight (int32 or float), weighted correct, weighted conf."""
    dtype = s.confidence.dtype
    w = s.weight
    wa = jnp.where(w > 0, w.astype(dtype) * s.correct, 0)
    wc = jnp.where(w > 0, w.astype(dtype) * s.confidence, 0)
    zero = lambda x: jnp.zeros((1,), x.dtype)
    cw, ca, cc = (jnp.concatenate([zero(x), _binning.prefix_sum(x)]) for x in (w, wa, wc))
    return cw, ca, cc


def _at_positions(cw: Array, cx: Array, x: Array, pos: Array, positional: bool) -> Array:
    """Sum of ``x`` over the first ``pos`` units of weight of the sorted order, from its prefix
    sum ``cx``; a sample straddling ``pos`` contributes in proportion to its covered weight."""
    if positional:
        return cx[pos]
    n = x.shape[0]
    j = jnp.clip(jnp.searchsorted(cw, pos, side="right"), 1, n)  # cw[j-1] <= pos < cw[j]
    partial = cx[j - 1] + (pos - cw[j - 1]).astype(cx.dtype) * x[j - 1]
    return jnp.where(pos >= cw[-1], cx[-1], partial)


@functools.partial(jax.jit, static_argnames=("p", "positional"))
def ece_sweep_from_sorted(s: SortedSamples, p: float, positional: bool) -> tuple[Array, Array]:
    """``(L_p ECE, number of bins)`` of the monotone sweep over equal-mass bins.

    ``positional``: unit or mask weights, so unit position ``k`` is sorted sample ``k``.
    """
    n = s.confidence.shape[0]
    dtype = s.confidence.dtype
    cw, ca, cc = _cumulative(s)
    total = cw[-1]
    # b = 1 .. floor(W) bins (b = N for unit weights).
    max_bins = jnp.maximum(jnp.floor(total).astype(jnp.int32), 1)
    m = jnp.arange(n + 1, dtype=jnp.int32)

    def bins(b):
        # np.array_split sizes over W units: b_m = m q + min(m, r), q, r = divmod(W, b).
        q = total // b.astype(total.dtype)
        r = total - q * b.astype(total.dtype)
        mm = jnp.minimum(m, b).astype(total.dtype)
        bounds = mm * q + jnp.minimum(mm, r)
        a_at = _at_positions(cw, ca, s.correct, bounds, positional)
        c_at = _at_positions(cw, cc, s.confidence, bounds, positional)
        return jnp.diff(bounds).astype(dtype), jnp.diff(a_at), jnp.diff(c_at)

    def monotone(b):
        size, acc_sum, _ = bins(b)
        ok = _ratio_le(acc_sum[:-1], size[:-1], acc_sum[1:], size[1:])
        return jnp.all(ok | (m[:-2] >= b - 1))

    def body(state):
        b, _ = state
        grow = (b + 1 <= max_bins) & monotone(b + 1)
        return jnp.where(grow, b + 1, b), ~grow

    b, _ = jax.lax.while_loop(lambda st: ~st[1], body, (jnp.int32(1), max_bins <= 1))
    size, acc_sum, conf_sum = bins(b)
    live = size > 0
    safe = jnp.where(live, size, 1)
    term = jnp.where(live, size * (jnp.abs(acc_sum - conf_sum) / safe) ** p, 0)
    value = (jnp.sum(term) / total.astype(dtype)) ** (1.0 / p)
    return value + s.poison, b


@_doc
def ece_sweep(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    p: float = 1,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """ECE-sweep (Roelofs et al. 2022): the equal-mass ECE at the largest number of bins
    before the bin accuracies first stop being monotone.

    .. math::
       \\mathrm{ECE}_{\\mathrm{sweep}} = \\Big(\\sum_{m=1}^{b^*} \\frac{|B_m|}{N}
       |\\mathrm{acc}_m - \\mathrm{conf}_m|^p\\Big)^{1/p}

    For ``b = 1, 2, …``: sort the confidences (equal confidences with incorrect samples first,
    so the value does not depend on the order of the samples) and split the sorted order into
    ``b`` contiguous bins whose sizes differ by at most one (``np.array_split`` sizes, the
    larger first). ``b*`` is the last ``b`` before the first ``b`` whose bin accuracies are not
    non-decreasing, or ``N`` if there is none. Accuracies are compared exactly (cross products
    as exact two-float sums), not after a rounded division. Weights act as replicated samples
    (fractional weights split a sample between the bins it straddles; ``b`` runs up to
    ``floor(Σw)``). Cost: one sort, then ``O(N)`` per candidate ``b``, so ``O(N·b*)`` in all
    (``b*`` is typically a few tens; a sorted correctness sequence that is already
    non-decreasing makes ``b* = N``).

    {rules}
    {args}
      p: the norm, a static number ``>= 1`` (``1``: the ECE of the paper).

    Returns:
      Scalar float32.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> p = jnp.array([0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95])
      >>> y = jnp.array([0, 1, 0, 1, 1, 0, 1, 1])
      >>> print(f"{float(cj.metrics.ece_sweep(p, y)):.4f}")
      0.1438

    References:
      Roelofs, Cain, Shlens, Mozer, "Mitigating Bias in Calibration Error Estimation",
      AISTATS 2022.
    """
    if isinstance(p, jax.core.Tracer) or not (1 <= p < np.inf):
        raise ValueError(f"p must be a static finite number >= 1, got {p}.")
    conf, correct, w = _inputs.top_label(
        predictions, labels, where, weights, from_logits=from_logits
    )
    positional = w is None or w.dtype == jnp.bool_
    return ece_sweep_from_sorted(sort_by_confidence(conf, correct, w), float(p), positional)[0]
