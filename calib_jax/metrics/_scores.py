"""Proper scores and accuracy: NLL, Brier score, accuracy (means over samples)."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from calib_jax import _validation as v
from calib_jax.metrics import _inputs, _per_sample

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def weighted_mean(x: Array, w: Array | None) -> Array:
    if w is None:
        return jnp.mean(x)
    w = w.astype(x.dtype)
    return jnp.sum(jnp.where(w > 0, w * x, 0)) / jnp.sum(w)


@functools.partial(jax.jit, static_argnames=("from_logits", "field"))
def _mean_score(x, labels, w, row_stats, from_logits: bool, field: str) -> Array:
    q = _per_sample.per_sample(
        x, labels, from_logits=from_logits, row_stats=row_stats, scores=True, top_label=False
    )
    return weighted_mean(getattr(q, field), w)


def nll(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Mean negative log-likelihood of the labels.

    .. math:: \\mathrm{NLL} = -\\frac{1}{N} \\sum_n \\log p_{n, y_n}

    From logits (``from_logits=True``) the log-probabilities come from ``log_softmax`` in
    float32 (or wider), and binary ``[N]`` logits (of the positive class) give the mean binary
    cross-entropy ``-log σ(±z)``. From probabilities, ``-log p_y`` (``-log p`` or
    ``-log(1 - p)`` for binary input): a zero probability on the label gives ``inf``, its true
    value; pass logits when you have them, they are more accurate for confident predictions.

    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class
        probabilities (logits with ``from_logits=True``).
      labels: ``[N]`` integer labels in ``[0, K)`` (``{0, 1}`` for binary input).
      from_logits: ``predictions`` are logits (``[N, K]``, or binary ``[N]``).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights (weighted mean).

    Returns:
      Scalar float32.

    Examples:
      >>> import jax, jax.numpy as jnp, calib_jax as cj
      >>> logits = jnp.array([[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
      >>> y = jnp.array([0, 2])
      >>> print(f"{float(cj.metrics.nll(logits, y, from_logits=True)):.4f}")
      0.8955
      >>> print(f"{float(cj.metrics.nll(jax.nn.softmax(logits), y)):.4f}")
      0.8955

    References:
      Quiñonero-Candela et al., "Evaluating Predictive Uncertainty Challenge", 2006;
      Guo et al., ICML 2017.
    """
    x, labels, c, row_stats = _inputs.checked_rows(predictions, labels, where, weights, from_logits)
    return _mean_score(x, labels, c.weights, row_stats, from_logits, "nll")


def brier(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Mean Brier score: squared error between probabilities and one-hot labels.

    .. math:: \\mathrm{Brier} = \\frac{1}{N} \\sum_n \\sum_k (p_{nk} - 1[k = y_n])^2

    Multi-class sum over classes (Brier 1950; range ``[0, 2]``). Binary ``[N]`` input gives
    ``mean (p - y)²`` (scikit-learn's ``brier_score_loss``, half the two-column value).

    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels.
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.
      from_logits: ``predictions`` are logits ``[N, K]`` (``softmax``) or binary ``[N]``
        logits (``sigmoid``) rather than probabilities.

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
    # An invalid row gets an out-of-range label: its Brier term is NaN.
    x, labels, c, row_stats = _inputs.checked_rows(predictions, labels, where, weights, from_logits)
    return _mean_score(x, labels, c.weights, row_stats, from_logits, "brier")


def accuracy(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
) -> Array:
    """Fraction of samples whose prediction (first maximum of the row) equals the label.

    .. math:: \\mathrm{acc} = \\frac{1}{N} \\sum_n 1[\\hat y_n = y_n]

    Ties go to the first maximum (NumPy ``argmax``). Binary ``[N]`` input predicts class 1 iff
    ``p > 0.5`` (``z > 0`` for logits; a tie predicts class 0, as the first maximum of
    ``[1 - p, p]``). Test error is ``1 - accuracy``. ``[N, K]`` rows may be any finite scores
    (probabilities or logits have the same argmax; rows are not checked to sum to one).

    Args:
      predictions: ``[N, K]`` class probabilities or scores, or ``[N]`` binary probabilities
        (logits with ``from_logits=True``).
      labels: ``[N]`` integer labels.
      from_logits: ``predictions`` are logits; only changes the binary threshold (``z > 0``).
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
    from_logits = v.check_static_bool(from_logits, "from_logits")
    poison, correct, w = _inputs.top_label_correct(
        predictions, labels, where, weights, binary_threshold=0.0 if from_logits else 0.5
    )
    if w is None or not jnp.issubdtype(w.dtype, jnp.floating):
        # Exact integer counts, so streamed and one-shot accuracies agree bit for bit.
        w = jnp.ones(correct.shape, jnp.int32) if w is None else w.astype(jnp.int32)
        hits = jnp.sum(jnp.where(correct, w, 0)).astype(poison.dtype)
        return hits / jnp.sum(w).astype(poison.dtype) + jnp.sum(poison)
    return weighted_mean(correct.astype(poison.dtype) + poison, w)
