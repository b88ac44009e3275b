"""Score decompositions: the Brier decomposition of tensorflow-probability and CORP."""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp

from calib_jax import _validation as v
from calib_jax.calibrators._pav import pav
from calib_jax.metrics import _inputs
from calib_jax.metrics._wider import _doc, sort_by_confidence

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


class BrierDecomposition(NamedTuple):
    """tensorflow-probability's decomposition of the shifted Brier score ``Σ_k p_k² - 2 p_y``.

    Attributes:
      uncertainty: ``-Σ_k p̄_k²`` (``p̄`` the label frequencies); ``<= 0``.
      resolution: ``Σ_j w_j Σ_k (d_jk - p̄_k)²``; ``>= 0``, larger is better.
      reliability: ``mean_n Σ_k (p_nk - d_{ŷ_n k})²``; ``>= 0``, smaller is better.
    """

    uncertainty: Array
    resolution: Array
    reliability: Array


@_doc
def brier_decomposition(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> BrierDecomposition:
    """Uncertainty, resolution and reliability of the Brier score (Bröcker 2009), in the form
    of tensorflow-probability's ``stats.brier_decomposition``.

    .. math::
       \\mathrm{UNC} = -\\sum_k \\bar p_k^2, \\quad
       \\mathrm{RES} = \\sum_j w_j \\sum_k (d_{jk} - \\bar p_k)^2, \\quad
       \\mathrm{REL} = \\frac{1}{N} \\sum_n \\sum_k (p_{nk} - d_{\\hat y_n k})^2

    The probability simplex is partitioned by the predicted class ``ŷ`` (the first maximum of
    each row): ``w_j`` is the fraction of samples predicted ``j``, ``d_jk`` the frequency of
    label ``k`` among them (0 for a class never predicted) and ``p̄_k`` the frequency of label
    ``k``. The components are those of the shifted Brier score ``Σ_k p_k² - 2 p_y`` (the usual
    score minus 1): ``UNC - RES + REL`` equals its mean when the predictions are constant within
    each predicted class, and differs by a term of order ``K/N`` otherwise. tensorflow-probability
    0.25 computes the resolution with ``p̄`` indexed by the *predicted* class,
    ``Σ_j w_j Σ_k (d_jk - p̄_j)²`` (its ``expand_dims(pbar, -1) - dist_mean``); calib_jax follows
    the formula above, and its other two components equal tensorflow-probability's.

    Binary ``[N]`` input is taken as the two columns ``[1 - p, p]`` (``K = 2``). ``[N, K]`` rows
    are needed in full (unlike the top-label metrics): memory ``O(N·K + K²)``. Weighted: every
    frequency and mean is weighted by ``weights`` (integer weights act as replicated samples).
    Computed in float32 or wider. Invalid input (an unmasked label out of range, a probability
    row with an entry outside ``[0, 1]`` or a sum off one, NaN/inf) raises eagerly, is a
    checkify check under ``jit``, and in any case makes every component NaN.

    {args}

    Returns:
      :class:`BrierDecomposition` ``(uncertainty, resolution, reliability)`` of float32
      scalars.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.7, 0.2, 0.1], [0.6, 0.3, 0.1], [0.2, 0.5, 0.3],
      ...                    [0.1, 0.2, 0.7]])
      >>> labels = jnp.array([0, 1, 1, 2])
      >>> unc, res, rel = cj.metrics.brier_decomposition(probs, labels)
      >>> print(f"{float(unc):.4f} {float(res):.4f} {float(rel):.4f}")
      -0.3750 0.3750 0.1800

    References:
      Bröcker, "Reliability, sufficiency, and the decomposition of proper scores", Quarterly
      Journal of the Royal Meteorological Society, 2009; tensorflow-probability,
      ``tfp.stats.brier_decomposition``.
    """
    # validate: a label out of range or an invalid weight (negative, NaN, inf) marks the row
    # invalid (label -1, weight 1), so it gives NaN under plain jit instead of a number.
    c = _inputs.validate(predictions, labels, where, weights, "logits" if from_logits else "probs")
    k = c.k
    x = v.to_compute_dtype(predictions)
    if from_logits:
        v.check_finite(x, "logits", c.keep)
        p = jax.nn.sigmoid(x) if k is None else jax.nn.softmax(x, axis=-1)
        row_ok = jnp.isfinite(x) if k is None else jnp.all(jnp.isfinite(x), axis=-1)
    else:
        row_ok = v.check_probabilities(predictions, "probs", c.keep)
        p = x
    if k is None:
        p = _inputs.two_columns(p)
    valid = row_ok & (c.labels >= 0)
    w = jnp.ones((c.n,), p.dtype) if c.weights is None else c.weights.astype(p.dtype)
    v.check_value(jnp.sum(w) > 0, "every sample is masked out (where/weights): no data.")
    return _brier_parts(p, c.labels, valid, w)


@jax.jit
def _brier_parts(p: Array, labels: Array, valid: Array, w: Array) -> BrierDecomposition:
    k = p.shape[-1]
    poison = jnp.sum(jnp.where(valid | (w == 0), 0, jnp.nan).astype(p.dtype))
    pred = jnp.argmax(jnp.where(w[:, None] > 0, p, 0), axis=-1).astype(jnp.int32)
    label = jnp.where(valid, labels, 0).astype(jnp.int32)
    counts = jnp.zeros((k * k,), p.dtype).at[pred * k + label].add(w).reshape(k, k)
    total = jnp.sum(w)
    per_pred = jnp.sum(counts, axis=1)
    freq = counts / jnp.where(per_pred > 0, per_pred, 1)[:, None]
    pbar = jnp.sum(counts, axis=0) / total
    uncertainty = -jnp.sum(pbar * pbar)
    resolution = jnp.sum(per_pred / total * jnp.sum((freq - pbar[None, :]) ** 2, axis=1))
    gap = jnp.sum((p - freq[pred]) ** 2, axis=-1)
    reliability = jnp.sum(jnp.where(w > 0, w * gap, 0)) / total
    return BrierDecomposition(uncertainty + poison, resolution + poison, reliability + poison)


class ScoreDecomposition(NamedTuple):
    """CORP decomposition ``score = miscalibration - discrimination + uncertainty``.

    Attributes:
      score: the mean score ``S̄(c)`` of the confidences.
      miscalibration: ``S̄(c) - S̄(ĉ)``, ``>= 0`` (``ĉ`` the isotonic recalibration).
      discrimination: ``S̄(r̄) - S̄(ĉ)``, ``>= 0`` (``r̄`` the mean correctness).
      uncertainty: ``S̄(r̄)``.
    """

    score: Array
    miscalibration: Array
    discrimination: Array
    uncertainty: Array


def _mean_score(q: Array, a: Array, w: Array, score: str) -> Array:
    if score == "brier":
        per = (q - a) ** 2
    else:
        per = -(jax.scipy.special.xlogy(a, q) + jax.scipy.special.xlogy(1 - a, 1 - q))
    return jnp.sum(jnp.where(w > 0, w * per, 0)) / jnp.sum(w)


@_doc
def score_decomposition(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    score: Literal["brier", "log"] = "brier",
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> ScoreDecomposition:
    """CORP decomposition of a proper score into miscalibration, discrimination and
    uncertainty (Dimitriadis, Gneiting & Jordan 2021).

    .. math::
       \\bar S(c) = \\underbrace{\\bar S(c) - \\bar S(\\hat c)}_{\\mathrm{MCB}}
       - \\underbrace{(\\bar S(\\bar r) - \\bar S(\\hat c))}_{\\mathrm{DSC}}
       + \\underbrace{\\bar S(\\bar r)}_{\\mathrm{UNC}}

    ``ĉ`` is the isotonic (pool-adjacent-violators) regression of the correctness ``a`` on the
    confidence ``c``, with equal confidences pooled first (decided on the confidence rounded to
    float32), ``r̄`` the mean correctness and ``S̄`` the weighted mean score: ``"brier"``,
    ``(q - a)²``, or ``"log"``, ``-a log q - (1 - a) log(1 - q)`` with ``0 log 0 = 0``. The
    identity holds exactly in real arithmetic (here to float rounding); ``MCB >= 0`` and
    ``DSC >= 0`` because the isotonic fit minimises every proper score among non-decreasing
    recalibrations, the constant ``r̄`` included. Cost: one sort and a sequential PAV pass over
    the distinct confidences.

    {rules}
    {args}
      score: ``"brier"`` or ``"log"`` (static).

    Returns:
      :class:`ScoreDecomposition` ``(score, miscalibration, discrimination, uncertainty)`` of
      float32 scalars.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> p = jnp.array([0.1, 0.3, 0.4, 0.6, 0.8, 0.9])
      >>> y = jnp.array([0, 1, 0, 0, 1, 1])
      >>> d = cj.metrics.score_decomposition(p, y)
      >>> print(" ".join(f"{float(x):.4f}" for x in d))
      0.1783 0.0672 0.1389 0.2500

    References:
      Dimitriadis, Gneiting, Jordan, "Stable reliability diagrams for probabilistic
      classifiers", PNAS 2021; Bröcker, Quarterly Journal of the Royal Meteorological Society,
      2009.
    """
    if score not in ("brier", "log"):
        raise ValueError(f"score must be 'brier' or 'log', got {score!r}.")
    conf, correct, w = _inputs.top_label(
        predictions, labels, where, weights, from_logits=from_logits
    )
    return _corp(sort_by_confidence(conf, correct, w), score)


@functools.partial(jax.jit, static_argnames=("score",))
def _corp(s, score: str) -> ScoreDecomposition:
    n = s.confidence.shape[0]
    dtype = s.confidence.dtype
    w = jnp.where(s.weight > 0, s.weight.astype(dtype), 0)
    group = jnp.cumsum(s.group_start.astype(jnp.int32)) - 1
    group_sums = jax.ops.segment_sum(w * s.correct, group, n)
    group_weights = jax.ops.segment_sum(w, group, n)
    # Zero-weight samples sort last into their own group: the weighted groups come first.
    num_groups = jnp.sum(s.group_start & (s.weight > 0)).astype(jnp.int32)
    recalibrated = pav(group_sums, group_weights, num_groups)[group]
    base_rate = jnp.sum(w * s.correct) / jnp.sum(w)
    mean = lambda q: _mean_score(q, s.correct, w, score)
    s_c, s_hat, s_bar = mean(s.confidence), mean(recalibrated), mean(base_rate)
    out = ScoreDecomposition(s_c, s_c - s_hat, s_bar - s_hat, s_bar)
    return ScoreDecomposition(*(x + s.poison for x in out))
