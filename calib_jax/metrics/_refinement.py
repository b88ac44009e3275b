"""Calibration / refinement split of a proper score (Berta et al. 2025)."""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _validation as v
from calib_jax.calibrators._scaling import _LOG_T_BOUND, _inverse_temperature_moments
from calib_jax.metrics import _inputs

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# Golden-section steps for the optimal log T on [-log 1e3, log 1e3]: the bracket shrinks by
# 0.618 per step, to below 1e-9 after 60.
_GOLDEN_STEPS = 60


class CalibrationRefinement(NamedTuple):
    """``score = calibration + refinement``.

    Attributes:
      score: the mean score of the given logits.
      calibration: ``score - refinement``: what post-hoc temperature scaling removes.
      refinement: the mean score after temperature scaling.
      temperature: the fitted ``T`` (``[folds]`` with cross-fitting).
    """

    score: Array
    calibration: Array
    refinement: Array
    temperature: Array


def _per_sample(logits: Array, labels: Array, score: str) -> Array:
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    if score == "log":
        return -picked
    p = jnp.exp(logp)
    # Σ_k (p_k - e_yk)² = Σ p² - 2 p_y + 1.
    return jnp.sum(p * p, axis=-1) - 2 * jnp.exp(picked) + 1


def _mean(values: Array, w: Array) -> Array:
    return jnp.sum(jnp.where(w > 0, w * values, 0)) / jnp.sum(w)


def _fit(logits: Array, labels: Array, w: Array, score: str) -> Array:
    """The ``log T`` minimising the weighted mean score of ``softmax(z / T)`` in a fixed number
    of steps (the project's Newton fit of the NLL runs a while_loop whose results were wrong
    for some elements under a vmap nested in a vmap): bisection on the sign of the NLL's
    derivative, golden section on the Brier score."""
    bounds = (jnp.asarray(-_LOG_T_BOUND, logits.dtype), jnp.asarray(_LOG_T_BOUND, logits.dtype))
    if score == "log":
        top = jnp.max(logits, axis=-1, keepdims=True)
        gap_label = jnp.where(w > 0, v.take_label(logits, labels) - top[:, 0], 0)
        moments = functools.partial(_inverse_temperature_moments, logits - top, gap_label, w)

        def halve(_, bracket):
            lo, hi = bracket
            mid = (lo + hi) / 2
            # A positive derivative in 1/T: T is too small.
            larger = moments(mid)[0] > 0
            return jnp.where(larger, mid, lo), jnp.where(larger, hi, mid)

        lo, hi = jax.lax.fori_loop(0, _GOLDEN_STEPS, halve, bounds)
        return (lo + hi) / 2
    mean = lambda log_t: _mean(_per_sample(logits * jnp.exp(-log_t), labels, score), w)
    ratio = (np.sqrt(5) - 1) / 2

    def step(_, bracket):
        lo, hi = bracket
        a, b = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        left = mean(a) <= mean(b)
        return jnp.where(left, lo, a), jnp.where(left, b, hi)

    lo, hi = jax.lax.fori_loop(0, _GOLDEN_STEPS, step, bounds)
    return (lo + hi) / 2


@functools.partial(jax.jit, static_argnames=("score", "folds"))
def _split(logits: Array, labels: Array, w: Array, score: str, folds: int | None):
    per = _per_sample(logits, labels, score)
    total = _mean(per, w)
    if folds is None:
        log_t = _fit(logits, labels, w, score)
        refined = _mean(_per_sample(logits * jnp.exp(-log_t), labels, score), w)
        return total, refined, jnp.exp(log_t)
    # Round-robin folds among the samples that enter the metric, so a mask does not empty one.
    rank = jnp.cumsum(w > 0) - 1
    fold = jnp.where(w > 0, rank % folds, -1)

    def held_out(f):
        log_t = _fit(logits, labels, jnp.where(fold == f, 0, w), score)
        scored = _per_sample(logits * jnp.exp(-log_t), labels, score)
        test = jnp.where(fold == f, w, 0)
        return jnp.sum(jnp.where(test > 0, test * scored, 0)), jnp.exp(log_t)

    sums, temps = jax.vmap(held_out)(jnp.arange(folds))
    return total, jnp.sum(sums) / jnp.sum(w), temps


def calibration_refinement(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    score: Literal["log", "brier"] = "log",
    folds: int | None = None,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> CalibrationRefinement:
    """Split a proper score into calibration error and refinement (Berta et al. 2025): the
    refinement is the score left after post-hoc temperature scaling, the calibration error
    what the temperature removed.

    .. math::
       \\mathrm{refinement} = \\min_{T > 0} \\bar S(\\mathrm{softmax}(z / T), y), \\qquad
       \\mathrm{calibration} = \\bar S(\\mathrm{softmax}(z), y) - \\mathrm{refinement}

    ``S`` is the log loss (``"log"``, ``-log p_y``) or the Brier score (``"brier"``,
    ``Σ_k (p_k - 1[k = y])²``), averaged with the weights. The temperature minimises the same
    score over ``T`` in ``[1e-3, 1e3]``, in 60 steps on ``log T``: the log loss is convex in
    ``1/T``, and bisection on the sign of its derivative finds its minimum (the NLL fit of
    :func:`calib_jax.calibrators.temperature_scaling`); the Brier score need not be convex in
    ``T``, and golden-section search finds a local minimum, the global one for the usual
    single-dip curve. Fitted on
    the same data (``folds=None``) the calibration error is ``>= 0`` (``T = 1`` is a
    candidate). With ``folds=k`` the temperature is cross-fitted: the samples that enter the
    metric are dealt round-robin into ``k`` folds, each fold is scored with the temperature
    fitted on the others (all folds as one ``vmap``), and the refinement is the mean
    held-out score; the calibration error may then be negative.

    Temperature scaling keeps the ranking of the classes, so the refinement measures what no
    monotone rescaling of the confidence can fix. Binary ``[N]`` logits are the two-class
    logits ``[0, z]``. Invalid input (an unmasked label out of range, NaN/inf logits, an
    invalid weight) raises eagerly, is a checkify check under ``jit``, and in any case gives
    NaN in every field.

    Args:
      logits: ``[N, K]`` logits, or ``[N]`` binary logits.
      labels: ``[N]`` integer labels in ``[0, K)``.
      score: ``"log"`` or ``"brier"`` (static).
      folds: ``None`` (fit on the same data) or a static int ``>= 2`` (cross-fitting).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.

    Returns:
      :class:`CalibrationRefinement` ``(score, calibration, refinement, temperature)``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> z = jnp.array([[4.0, 0.0], [3.0, 0.5], [0.0, 3.5], [2.5, 0.0], [0.0, 4.0]])
      >>> y = jnp.array([0, 1, 1, 1, 1])
      >>> out = cj.metrics.calibration_refinement(z, y)
      >>> print(" ".join(f"{float(x):.4f}" for x in out))
      1.0448 0.4283 0.6164 4.1057

    References:
      Berta, Holzmüller, Jordan, Bach, "Rethinking Early Stopping: Refine, Then Calibrate",
      2025 (probmetrics); Guo et al., ICML 2017 (temperature scaling).
    """
    if score not in ("log", "brier"):
        raise ValueError(f"score must be 'log' or 'brier', got {score!r}.")
    if folds is not None:
        if isinstance(folds, bool) or not isinstance(folds, int | np.integer):
            raise TypeError(f"folds must be None or a static int, got {type(folds).__name__}.")
        if folds < 2:
            raise ValueError(f"folds must be >= 2, got {folds}.")
        folds = int(folds)
    c = _inputs.validate(logits, labels, where, weights, "logits")
    x = v.to_compute_dtype(logits)
    v.check_finite(x, "logits", c.keep)
    if c.k is None:
        x = jnp.stack([jnp.zeros_like(x), x], axis=-1)
    row_ok = jnp.all(jnp.isfinite(x), axis=-1)
    valid = (c.labels >= 0) & row_ok
    w = jnp.ones((c.n,), x.dtype) if c.weights is None else c.weights.astype(x.dtype)
    if c.keep is not None:
        v.check_value(jnp.any(c.keep), "every sample is masked out (where/weights): no data.")
    used = w > 0
    poison = jnp.sum(jnp.where(used & ~valid, jnp.nan, 0).astype(x.dtype))
    x = jnp.where(valid[:, None], x, 0)
    total, refined, temps = _split(x, jnp.where(valid, c.labels, 0), w, score, folds)
    total, refined = total + poison, refined + poison
    return CalibrationRefinement(total, total - refined, refined, temps + poison)
