"""Proper scores and accuracy: NLL, Brier score, accuracy (means over samples)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from calib_jax import _validation as v
from calib_jax.metrics import _inputs

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def weighted_mean(x: Array, w: Array | None) -> Array:
    if w is None:
        return jnp.mean(x)
    w = w.astype(x.dtype)
    return jnp.sum(jnp.where(w > 0, w * x, 0)) / jnp.sum(w)


def per_sample_nll(logits: Array, labels: Array) -> Array:
    """``-log softmax(z)[y]`` (``[N, K]``) or binary cross-entropy (``[N]`` logits)."""
    if logits.ndim == 1:
        valid = (labels == 0) | (labels == 1)
        signed = jnp.where(labels == 1, logits, -logits)
        return jnp.where(valid, -jax.nn.log_sigmoid(signed), jnp.nan)
    return -v.take_label(jax.nn.log_softmax(logits, axis=-1), labels)


def per_sample_brier(probs: Array, labels: Array) -> Array:
    """``Σ_k (p_k - 1[k = y])²`` (``[N, K]``) or ``(p - y)²`` (binary ``[N]``)."""
    if probs.ndim == 1:
        valid = (labels == 0) | (labels == 1)
        return jnp.where(valid, (probs - labels.astype(probs.dtype)) ** 2, jnp.nan)
    # Σ_k p_k² - 2 p_y + 1: no [N, K] one-hot.
    return jnp.sum(probs * probs, axis=-1) - 2 * v.take_label(probs, labels) + 1


def nll(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Mean negative log-likelihood of the labels, from logits.

    .. math:: \\mathrm{NLL} = -\\frac{1}{N} \\sum_n \\log \\mathrm{softmax}(z_n)_{y_n}

    Computed with ``log_softmax`` in float32 (or wider). Binary ``[N]`` logits (of the positive
    class) give the mean binary cross-entropy ``-log σ(±z)``.

    Args:
      logits: ``[N, K]`` logits or ``[N]`` binary logits, finite.
      labels: ``[N]`` integer labels in ``[0, K)`` (``{0, 1}`` for binary input).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights (weighted mean).

    Returns:
      Scalar float32.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
      >>> print(f"{float(cj.metrics.nll(logits, jnp.array([0, 2]))):.4f}")
      0.8955

    References:
      Quiñonero-Candela et al., "Evaluating Predictive Uncertainty Challenge", 2006;
      Guo et al., ICML 2017.
    """
    c = _inputs.validate(logits, labels, where, weights, "logits")
    z = v.to_compute_dtype(logits)
    v.check_finite(z, "logits", c.keep)
    return weighted_mean(per_sample_nll(z, c.labels), c.weights)


def brier(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Mean Brier score: squared error between probabilities and one-hot labels.

    .. math:: \\mathrm{Brier} = \\frac{1}{N} \\sum_n \\sum_k (p_{nk} - 1[k = y_n])^2

    Multi-class sum over classes (Brier 1950; range ``[0, 2]``). Binary ``[N]`` input gives
    ``mean (p - y)²`` (scikit-learn's ``brier_score_loss``, half the two-column value).

    Args:
      probs: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels.
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.

    Returns:
      Scalar float32.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.7, 0.2, 0.1], [0.5, 0.25, 0.25]])
      >>> print(f"{float(cj.metrics.brier(probs, jnp.array([0, 1]))):.4f}")
      0.5075

    References:
      Brier, "Verification of forecasts expressed in terms of probability", Monthly Weather
      Review, 1950.
    """
    c = _inputs.validate(probs, labels, where, weights)
    p = v.to_compute_dtype(probs)
    # An invalid row gets an out-of-range label: its Brier term is NaN.
    labels = _inputs.poison_labels(c.labels, v.check_probabilities(probs, "probs", c.keep))
    return weighted_mean(per_sample_brier(p, labels), c.weights)


def accuracy(
    probs: ArrayLike,
    labels: ArrayLike,
    *,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Fraction of samples whose prediction (first maximum of the row) equals the label.

    .. math:: \\mathrm{acc} = \\frac{1}{N} \\sum_n 1[\\hat y_n = y_n]

    Ties go to the first maximum (NumPy ``argmax``). Binary ``[N]`` input predicts class 1 iff
    ``p > 0.5`` (a tie at 0.5 predicts class 0, as the first maximum of ``[1 - p, p]``). Test
    error is ``1 - accuracy``. Works on logits too (same argmax).

    Args:
      probs: ``[N, K]`` class probabilities or scores, or ``[N]`` binary probabilities.
      labels: ``[N]`` integer labels.
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.

    Returns:
      Scalar float32 in ``[0, 1]``; NaN (under ``jit``, where nothing raises) if an unmasked
      label is out of range or an unmasked row is not finite.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.4, 0.4, 0.2], [0.1, 0.6, 0.3]])
      >>> print(f"{float(cj.metrics.accuracy(probs, jnp.array([1, 1]))):.4f}")
      0.5000

    References:
      Guo et al., "On Calibration of Modern Neural Networks", ICML 2017.
    """
    poison, correct, w = _inputs.top_label_correct(probs, labels, where, weights)
    if w is None or not jnp.issubdtype(w.dtype, jnp.floating):
        # Exact integer counts, so streamed and one-shot accuracies agree bit for bit.
        w = jnp.ones(correct.shape, jnp.int32) if w is None else w.astype(jnp.int32)
        hits = jnp.sum(jnp.where(correct, w, 0)).astype(poison.dtype)
        return hits / jnp.sum(w).astype(poison.dtype) + jnp.sum(poison)
    return weighted_mean(correct.astype(poison.dtype) + poison, w)
