"""Selective prediction: risk-coverage curves, AURC, AUGRC, risk at a coverage, coverage at a risk.

All four read one piecewise-linear curve. Sort the samples by descending confidence and let
``E(t)`` be the error mass among the first ``t`` units of weight (``t`` samples for unit
weights), with the errors of a group of equal confidences spread evenly over its positions, so
nothing depends on the order of the samples. ``E`` is linear across each sample (and each tie
group); the risk at coverage ``κ`` is ``E(κW) / (κW)`` and the generalised risk ``E(κW) / W``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from calib_jax import _binning
from calib_jax.metrics import _inputs
from calib_jax.metrics._wider import SortedSamples, _doc, sort_by_confidence

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_SELECTIVE_RULES = """
    The curve: sort by descending confidence; ``err(k)`` is the number of errors among the
    first ``k`` samples, where a group of equal confidences (decided on the confidence rounded
    to float32) spreads its errors evenly over its positions. An error is ``a = 0``: a wrong
    first-maximum prediction on ``[N, K]`` input; ``label = 0`` on binary ``[N]`` input
    (positive-class: the confidence is ``p``; pass ``[1 - p, p]`` to rank a binary model's
    predictions by their top-label confidence, as torch-uncertainty does with ``[N]`` input).
    Weights act exactly as replicated samples (integer weights); the curve is linear across
    each sample, so real weights continue it between integer positions.
"""


def _rules(fn):
    fn.__doc__ = fn.__doc__.replace("    {selective}\n", _SELECTIVE_RULES.lstrip("\n"))
    return _doc(fn)


class _Curve(NamedTuple):
    """Each sorted sample covers the descending positions ``(t0, t0 + w]``; ``e0 = E(t0)`` and
    the error mass grows with ``slope`` per unit of weight across it."""

    t0: Array
    w: Array
    e0: Array
    slope: Array
    total: Array
    poison: Array


@jax.jit
def _curve(s: SortedSamples) -> _Curve:
    dtype = s.confidence.dtype
    n = s.confidence.shape[0]
    idx = jnp.arange(n, dtype=jnp.int32)
    w_int = s.weight
    w = w_int.astype(dtype)
    errors = jnp.where(w_int > 0, w_int * (1 - s.correct.astype(w_int.dtype)), 0)
    # Integer prefix sums stay exact; float weights accumulate in the compute dtype.
    cw = _binning.prefix_sum(w_int).astype(dtype)
    ce = _binning.prefix_sum(errors).astype(dtype)
    first = jax.lax.cummax(jnp.where(s.group_start, idx, 0))
    last = jax.lax.cummin(jnp.where(s.group_end, idx, n - 1), reverse=True)
    group_lo = cw[first] - w[first]
    group_hi = cw[last]
    group_w = group_hi - group_lo
    group_err = ce[last] - (ce[first] - errors[first].astype(dtype))
    slope = jnp.where(group_w > 0, group_err / jnp.where(group_w > 0, group_w, 1), 0)
    total, err_total = cw[-1], ce[-1]
    # Ascending sample i ends at cw[i]; descending, it starts at W - cw[i]. Errors above it:
    # every later group, and the part of its own group that lies above it.
    e0 = (err_total - ce[last]) + slope * (group_hi - cw)
    return _Curve(total - cw, w, e0, slope, total, s.poison)


def _harmonic_diff(t0: Array, t1: Array) -> Array:
    """``H(t1) - H(t0)`` for ``0 <= t0 <= t1``, ``H(t) = Σ_{k<=t} 1/k`` continued by
    ``ψ(t + 1) + γ``: shift by 16 with the recurrence, then the asymptotic series (error below
    1e-10 relative), written so that no difference of nearly equal numbers is formed."""
    d = t1 - t0
    shift = 16
    small = sum(d / ((t0 + j) * (t1 + j)) for j in range(1, shift + 1))
    u, v = 1 / (t0 + shift), 1 / (t1 + shift)
    duv = d * u * v
    big = jnp.log1p(d * u) - duv / 2 + duv * (u + v) / 12 - duv * (u + v) * (u * u + v * v) / 120
    return small + big


def _sorted_curve(predictions, labels, where, weights, from_logits):
    conf, correct, w = _inputs.top_label(
        predictions, labels, where, weights, from_logits=from_logits
    )
    unit = w is None or w.dtype == jnp.bool_
    return _curve(sort_by_confidence(conf, correct, w)), unit


@jax.jit
def _aurc_unit(c: _Curve) -> Array:
    t1 = c.t0 + c.w
    risk = (c.e0 + c.slope * c.w) / jnp.where(c.w > 0, t1, 1)
    return jnp.sum(jnp.where(c.w > 0, risk, 0)) / c.total + c.poison


@jax.jit
def _aurc_weighted(c: _Curve) -> Array:
    # Σ over the unit positions k in (t0, t0 + w] of E(k)/k, E linear across the sample.
    dh = _harmonic_diff(c.t0, c.t0 + c.w)
    term = c.e0 * dh + c.slope * (c.w - c.t0 * dh)
    return jnp.sum(jnp.where(c.w > 0, term, 0)) / c.total + c.poison


@jax.jit
def _augrc(c: _Curve) -> Array:
    # Σ over the unit positions k in (t0, t0 + w] of E(k) = e0 + slope (k - t0).
    term = c.w * c.e0 + c.slope * c.w * (c.w + 1) / 2
    return jnp.sum(jnp.where(c.w > 0, term, 0)) / (c.total * c.total) + c.poison


def _errors_within(c: _Curve, t: Array) -> Array:
    """``E(t)``: the error mass of the first ``t`` units of weight."""
    return jnp.sum(jnp.where(c.w > 0, c.slope * jnp.clip(t - c.t0, 0, c.w), 0))


@jax.jit
def _risk_at(c: _Curve, coverage: Array) -> Array:
    t = coverage.astype(c.total.dtype) * c.total
    bad = ~((coverage > 0) & (coverage <= 1))
    return jnp.where(bad, jnp.nan, _errors_within(c, t) / t) + c.poison


@jax.jit
def _coverage_at(c: _Curve, risk: Array) -> Array:
    rho = risk.astype(c.total.dtype)
    t1 = c.t0 + c.w
    e1 = c.e0 + c.slope * c.w
    g0, g1 = c.e0 - rho * c.t0, e1 - rho * t1
    # E(t) - ρt is linear across a sample: its last zero there, if any.
    cross = c.t0 + c.w * g0 / jnp.where(g0 < g1, g0 - g1, -1)
    candidate = jnp.where(g1 <= 0, t1, jnp.where(g0 <= 0, cross, 0))
    best = jnp.max(jnp.where(c.w > 0, candidate, 0)) / c.total
    bad = ~((risk >= 0) & (risk <= 1))
    return jnp.where(bad, jnp.nan, jnp.clip(best, 0, 1)) + c.poison


@_rules
def aurc(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Area under the risk-coverage curve (Geifman & El-Yaniv 2017).

    .. math::
       \\mathrm{AURC} = \\frac{1}{N} \\sum_{k=1}^{N} \\frac{\\mathrm{err}(k)}{k}

    the mean of the selective risk over the coverages ``k/N``. Lower is better; it mixes
    accuracy and the ranking quality of the confidence (see :func:`augrc`).

    {selective}
    torch-uncertainty's ``AURC`` integrates the same risks ``r_k = err(k)/k`` over the
    coverages ``k/N`` by the trapezoid rule and divides by ``1 - 1/N``, so (without tied
    confidences, which it orders arbitrarily) its value ``T`` relates to this one by
    ``AURC = (1 - 1/N)·T + (r_1 + r_N) / (2N)``. Real weights: ``Σ_k 1/k`` over the positions
    across a sample is a difference of harmonic numbers, continued by the digamma function.
    Cost: one sort of ``N`` keys.

    {rules}
    {args}

    Returns:
      Scalar float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
      >>> labels = jnp.array([0, 1, 1, 0])  # errors at confidences 0.8 and 0.6
      >>> print(f"{float(cj.metrics.aurc(probs, labels)):.4f}")
      0.3333

    References:
      Geifman, El-Yaniv, "Selective Classification for Deep Neural Networks", NeurIPS 2017;
      Geifman, Uziel, El-Yaniv, "Bias-Reduced Uncertainty Estimation for Deep Neural
      Classifiers", ICLR 2019.
    """
    c, unit = _sorted_curve(predictions, labels, where, weights, from_logits)
    return _aurc_unit(c) if unit else _aurc_weighted(c)


@_rules
def augrc(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Area under the generalised risk-coverage curve (Traub et al. 2024).

    .. math::
       \\mathrm{AUGRC} = \\frac{1}{N} \\sum_{k=1}^{N} \\frac{\\mathrm{err}(k)}{N}

    the mean, over the coverages ``k/N``, of the fraction of *all* samples that are accepted
    and wrong. Lower is better; unlike :func:`aurc` it does not overweight the few most
    confident samples.

    {selective}
    torch-uncertainty's ``AUGRC`` integrates ``g_k = err(k)/N`` over the coverages ``k/N`` by
    the trapezoid rule and divides by ``1 - 1/N``: ``AUGRC = (1 - 1/N)·T + (g_1 + g_N)/(2N)``
    relates its value ``T`` to this one (without tied confidences). Cost: one sort.

    {rules}
    {args}

    Returns:
      Scalar float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> print(f"{float(cj.metrics.augrc(probs, labels)):.4f}")
      0.2500

    References:
      Traub, Bungert, Lüth, Baumgartner, Maier-Hein, Jäger, Jaeger, "Overcoming Common Flaws
      in the Evaluation of Selective Classification Systems", NeurIPS 2024.
    """
    c, _ = _sorted_curve(predictions, labels, where, weights, from_logits)
    return _augrc(c)


def _check_level(value, name: str, low_open: bool) -> Array:
    if not isinstance(value, jax.core.Tracer):
        x = float(value)
        if not ((0 < x if low_open else 0 <= x) and x <= 1):
            interval = "(0, 1]" if low_open else "[0, 1]"
            raise ValueError(f"{name} must lie in {interval}, got {value}.")
    return jnp.asarray(value)


@_rules
def selective_risk(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    coverage: float | ArrayLike,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Selective risk at a coverage: the error rate among the most confident ``κ·N`` samples.

    .. math:: r(\\kappa) = \\frac{\\mathrm{err}(\\kappa N)}{\\kappa N}

    {selective}
    Between integer positions ``err`` is linear (a sample straddling ``κN`` counts in
    proportion), so ``κ·N`` need not be an integer. torch-uncertainty's ``RiskAtxCov`` takes the
    first ``ceil(κN)`` samples: the same value when ``κN`` is an integer.

    {rules}
    {args}
      coverage: ``κ`` in ``(0, 1]``; a traced value outside it gives NaN.

    Returns:
      Scalar float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> print(f"{float(cj.metrics.selective_risk(probs, labels, coverage=0.75)):.4f}")
      0.3333

    References:
      Geifman, El-Yaniv, "Selective Classification for Deep Neural Networks", NeurIPS 2017.
    """
    coverage = _check_level(coverage, "coverage", low_open=True)
    c, _ = _sorted_curve(predictions, labels, where, weights, from_logits)
    return _risk_at(c, coverage)


@_rules
def coverage_at_risk(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    risk: float | ArrayLike,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """The largest coverage whose selective risk is at most ``risk``.

    .. math::
       \\kappa^*(\\rho) = \\sup\\{\\kappa \\in [0, 1] :
       \\mathrm{err}(\\kappa N) \\le \\rho\\,\\kappa N\\}

    {selective}
    ``err`` is linear between integer positions, so ``κ*`` may fall between ``k/N`` and
    ``(k+1)/N``; it is ``0`` when even the most confident sample (group) exceeds the risk.
    torch-uncertainty's ``CovAtxRisk`` keeps only the coverages ``k/N`` (NaN instead of 0):
    without tied confidences its value is ``floor(N·κ*)/N``.

    {rules}
    {args}
      risk: ``ρ`` in ``[0, 1]``; a traced value outside it gives NaN.

    Returns:
      Scalar float32 in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> print(f"{float(cj.metrics.coverage_at_risk(probs, labels, risk=0.4)):.4f}")
      0.8333

    References:
      Geifman, El-Yaniv, "Selective Classification for Deep Neural Networks", NeurIPS 2017.
    """
    risk = _check_level(risk, "risk", low_open=False)
    c, _ = _sorted_curve(predictions, labels, where, weights, from_logits)
    return _coverage_at(c, risk)
