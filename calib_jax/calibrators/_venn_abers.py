"""Inductive Venn–Abers prediction (Vovk & Petej 2014) on probabilities."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from calib_jax import _validation as v
from calib_jax.calibrators._base import Array, ArrayLike, Calibrator
from calib_jax.calibrators._nonparametric import _make, _tie_groups, _valid_apply_input

# Left ends j handled per step of the minimax scan (a [_CHUNK, N + 1] block at a time).
_CHUNK = 64


class VennAbersParams(NamedTuple):
    """Fitted inductive Venn–Abers predictor, per column (one for binary or top-label input):
    the sorted distinct calibration scores ``thresholds [C, N]`` (padded with ``+inf``) and the
    isotonic values at a test score inserted with label 0, ``p0 [C, N + 1]``, and with label 1,
    ``p1 [C, N + 1]``, one per gap between consecutive distinct scores (padding: NaN)."""

    thresholds: Array
    p0: Array
    p1: Array


def _minimax(cum_s: Array, cum_w: Array, num_groups: Array, extra: float) -> Array:
    """``f(i) = max_{j <= i} min_{k >= i} (S_k - S_j + extra) / (W_k - W_j + 1)``, ``i = 0..G``.

    The isotonic fit at a point is the max over left block ends of the min over right ends of
    the block mean; a test point inserted in gap ``i`` (after ``i`` distinct groups) with
    label ``extra`` joins groups ``j..k-1``, so this is its fitted value. Computed as a scan over
    chunks of ``j``, each a reversed running minimum over ``k``: ``O(G^2)`` work, ``O(G)``
    memory per ``j``.
    """
    size = cum_s.shape[0]
    idx = jnp.arange(size)
    pad = (-size) % _CHUNK
    starts = jnp.pad(idx, (0, pad), constant_values=size).reshape(-1, _CHUNK)
    valid_k = idx <= num_groups

    def step(best, js):
        sj = cum_s[jnp.minimum(js, size - 1)][:, None]
        wj = cum_w[jnp.minimum(js, size - 1)][:, None]
        ratio = (cum_s[None] - sj + extra) / (cum_w[None] - wj + 1)
        ratio = jnp.where((idx[None] >= js[:, None]) & valid_k[None], ratio, jnp.inf)
        right_min = lax.cummin(ratio, axis=1, reverse=True)
        usable = (idx[None] >= js[:, None]) & (js[:, None] <= num_groups)
        return jnp.maximum(best, jnp.max(jnp.where(usable, right_min, -jnp.inf), axis=0)), None

    best, _ = lax.scan(step, jnp.full(size, -jnp.inf, cum_s.dtype), starts)
    return jnp.where(idx <= num_groups, best, jnp.nan)


def _venn_abers_column(scores: Array, targets: Array, weights: Array) -> VennAbersParams:
    idx = jnp.arange(scores.shape[-1])
    # Exactly tied calibration scores form one group (a tied test score joins it).
    g_sum, g_weight, g_x, num_groups = _tie_groups(scores, targets, weights)
    zero = jnp.zeros(1, g_sum.dtype)
    cum_s = jnp.concatenate([zero, jnp.cumsum(g_sum)])
    cum_w = jnp.concatenate([zero, jnp.cumsum(g_weight)])
    thresholds = jnp.where(idx < num_groups, g_x, jnp.inf)
    p0 = _minimax(cum_s, cum_w, num_groups, 0.0)
    p1 = _minimax(cum_s, cum_w, num_groups, 1.0)
    return VennAbersParams(thresholds, p0, p1)


def _interval_column(params: VennAbersParams, s: Array) -> Array:
    # A test score equal to a calibration score joins its group: for label 1 that is the gap
    # before the group, for label 0 the gap after it (the same isotonic fit, see the tests).
    p0 = params.p0[jnp.searchsorted(params.thresholds, s, side="right")]
    p1 = params.p1[jnp.searchsorted(params.thresholds, s, side="left")]
    return jnp.stack([p0, p1], axis=-1)


def _merged(interval: Array) -> Array:
    p0, p1 = interval[..., 0], interval[..., 1]
    return p1 / (1 - p0 + p1)


def venn_abers_interval(params: VennAbersParams, probs: ArrayLike) -> Array:
    """The Venn–Abers interval ``[p0, p1]`` of each test score, from :func:`venn_abers`'s
    parameters.

    For binary ``probs [N]`` (positive-class probabilities) it brackets ``P(y = 1)``; for
    ``probs [..., K]`` it brackets the probability that the input row's argmax is correct
    (top-label). ``p0 <= p1``; ``apply`` returns the merged estimate
    ``p1 / (1 - p0 + p1)``, which lies in ``[p0, p1]``.

    Args:
      params: :class:`VennAbersParams` from ``venn_abers().fit``.
      probs: ``[N]`` binary or ``[..., K]`` probabilities.

    Returns:
      ``[N, 2]`` or ``[..., 2]``: ``(p0, p1)`` per test point; NaN where the input is invalid
      (NaN, out of ``[0, 1]``, rows not summing to one), which raises eagerly.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> va = cj.calibrators.venn_abers()
      >>> params = va.fit(jnp.array([0.1, 0.3, 0.6, 0.8]), jnp.array([0, 1, 0, 1]))
      >>> p0, p1 = cj.calibrators.venn_abers_interval(params, jnp.array([0.7]))[0]
      >>> print(f"{float(p0):.4f} {float(p1):.4f}")
      0.3333 1.0000
      >>> print(f"{float(va.apply(params, jnp.array([0.7]))[0, 1]):.4f}")
      0.6000
    """
    v.check_floating(probs, "probs")
    raw = jnp.asarray(probs)
    x = v.to_compute_dtype(probs)
    first = jax.tree.map(lambda a: a[0], params)
    if params.thresholds.shape[0] == 1 and x.ndim == 1:
        ok = _valid_apply_input(raw, x, from_logits=False, binary=True)
        return jnp.where(ok[..., None], _interval_column(first, x), jnp.nan)
    if x.ndim < 2:
        raise ValueError(f"venn_abers_interval needs [N] or [..., K] probs, got {x.shape}.")
    ok = _valid_apply_input(raw, x, from_logits=False, binary=False)[..., None]
    return jnp.where(ok, _interval_column(first, jnp.max(x, axis=-1)), jnp.nan)


def venn_abers() -> Calibrator:
    """Inductive Venn–Abers predictor (IVAP): two isotonic fits per test score.

    .. math:: p_0(s) = f_{D \\cup \\{(s, 0)\\}}(s),\\quad p_1(s) = f_{D \\cup \\{(s, 1)\\}}(s),
              \\quad \\hat p(s) = \\frac{p_1(s)}{1 - p_0(s) + p_1(s)}

    ``f_D`` is the isotonic (non-decreasing, least-squares) fit of the 0/1 targets of the
    calibration set ``D`` on its scores; the test point is added with label 0 and with label
    1, and the two fitted values at it bracket the probability (Vovk & Petej 2014). The merged
    point estimate ``p1 / (1 - p0 + p1)`` (Vovk, Petej & Fedorova 2015) is what ``apply``
    returns; :func:`venn_abers_interval` returns ``[p0, p1]``. Both depend on the test score
    only through its position among the distinct calibration scores, so ``fit`` precomputes
    them for every gap (a test score equal to a calibration score joins that score's group, as
    exactly tied scores are pooled), each as the minimax formula of the isotonic fit,
    ``max_j min_k`` of block means over prefix sums (``O(N^2)`` work, ``O(N)`` memory per
    step; no Python loop, so ``fit`` is jit- and vmap-able).

    Binary ``probs [N]`` (positive-class probability, labels in ``{0, 1}``); ``[N, K]``
    probabilities are calibrated top-label: the confidence against the correctness of the
    input's argmax ``j*``, ``out[j*]`` the merged estimate and the other classes rescaled to
    fill the row (the output's argmax can differ from ``j*``).

    Returns:
      A :class:`Calibrator` (``inputs="probs"``): ``fit(probs [N, K] or [N], labels [N], *,
      where=None) -> VennAbersParams(thresholds [1, N], p0 [1, N + 1], p1 [1, N + 1])``;
      ``apply(params, probs) -> probs`` (``[N, 2]`` for binary input), and
      ``venn_abers_interval(params, probs) -> [..., 2]``. Invalid fit data raise eagerly and
      give NaN parameters under ``jit``.

    Examples:
      >>> import jax, jax.numpy as jnp, calib_jax as cj
      >>> s = jax.random.uniform(jax.random.key(0), (1000,))
      >>> y = jax.random.bernoulli(jax.random.key(1), s**2).astype(jnp.int32)
      >>> va = cj.calibrators.venn_abers()
      >>> params = jax.jit(va.fit)(s, y)
      >>> lo, hi = cj.calibrators.venn_abers_interval(params, jnp.array([0.5]))[0]
      >>> print(f"{float(lo):.2f} {float(hi):.2f}")
      0.32 0.33

    References:
      Vovk, Petej. Venn-Abers Predictors. UAI 2014.
      Vovk, Petej, Fedorova. Large-scale probabilistic predictors with and without guarantees
      of validity. NeurIPS 2015.
    """

    def fit_columns(scores: Array, targets: Array, weights: Array) -> VennAbersParams:
        return jax.vmap(_venn_abers_column, in_axes=(0, 0, None))(scores, targets, weights)

    def apply_column(params: VennAbersParams, s: Array) -> Array:
        return _merged(_interval_column(params, s))

    # The shared plumbing takes binary [N] scores in its one-vs-rest mode only.
    binary = _make("venn_abers", fit_columns, apply_column, mode="one_vs_rest", from_logits=False)
    top = _make("venn_abers", fit_columns, apply_column, mode="top_label", from_logits=False)

    def fit(probs: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None):
        return (binary if jnp.ndim(probs) == 1 else top).fit(probs, labels, where=where)

    def apply(params: VennAbersParams, probs: ArrayLike) -> Array:
        return (binary if jnp.ndim(probs) == 1 else top).apply(params, probs)

    return Calibrator(fit, apply, None, "probs")
