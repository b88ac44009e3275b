"""The per-sample pass every metric, the report and the streaming state read: confidence,
first-maximum correctness and (on request) probabilities, NLL and Brier term of each sample.

Input is checked first (:func:`calib_jax.metrics._inputs.validate`): labels are int32 indices,
``-1`` for every label outside ``[0, K)`` and for every sample whose row or weight is invalid;
such a sample's confidence, NLL and Brier term are NaN. Binary ``[N]`` input follows the
positive-class convention: confidence ``p`` (``σ(z)`` from logits), "correct" means
``label == 1``, and the top-1 hit is ``p > 0.5`` (``z > 0``) against the label.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from calib_jax import _first_max
from calib_jax import _validation as v

Array = jax.Array


class PerSample(NamedTuple):
    """Per-sample quantities (each ``[N]`` unless noted; float32 or wider). The first three
    are None when :func:`per_sample` is called with ``top_label=False``.

    Attributes:
      confidence: top-label confidence ``max_k p_k`` (binary: ``p``); NaN for an invalid sample.
      correct: bool, the label is the first maximiser (binary: ``label == 1``).
      hit: bool, top-1 prediction right (equal to ``correct`` for ``[N, K]``; binary:
        ``p > 0.5`` against the label).
      probs: ``[N, K]`` (binary ``[N]``) probabilities; None unless ``scores=True``.
      nll: ``-log p_y``; None unless ``scores=True``.
      brier: ``Σ_k (p_k - 1[k = y])²`` (binary ``(p - y)²``); None unless ``scores=True``.
    """

    confidence: Array | None
    correct: Array | None
    hit: Array | None
    probs: Array | None = None
    nll: Array | None = None
    brier: Array | None = None


def per_sample(
    x: Array,
    labels: Array,
    *,
    from_logits: bool,
    row_stats: tuple[Array, Array, tuple[Array, Array] | None] | None = None,
    scores: bool = False,
    top_label: bool = True,
) -> PerSample:
    """One pass over checked predictions ``x`` (``[N, K]`` or binary ``[N]``).

    Args:
      x: probabilities, or logits with ``from_logits``.
      labels: int32 index labels, ``-1`` where the sample is invalid.
      from_logits: ``x`` holds logits.
      row_stats: row maximum, sum and first-maximum bracket (or None) of ``[N, K]``
        probabilities, as the probability check computes them
        (:func:`calib_jax._validation.probability_rows`); None computes the first two.
      scores: also return the probabilities, NLL and Brier terms. The binned metrics leave it
        off: from logits they then read the logits once, in one fused pass, where the scores
        need the row maximum and normaliser materialised first.
      top_label: compute the confidence and first-maximum correctness (None when off: the mean
        scores need neither, and the first-maximum re-check of wide rows is a loop that the
        compiler does not always remove).

    Traceable: callers run it inside their own ``jit`` so that the fields they do not read are
    dead code.
    """
    x = v.to_compute_dtype(x)
    valid = labels >= 0
    if x.ndim == 1:
        return _binary(x, labels, valid, from_logits, scores)
    if not top_label:
        return _scores_only(x, labels, from_logits)
    if from_logits:
        if not scores:
            _, correct, norm = _first_max.top_label_of_logits(x, labels)
            # max softmax = exp(0) / Σ exp(z - max): the same float as max(softmax(z)).
            conf = jnp.where(valid, 1.0 / norm, jnp.nan)
            return PerSample(conf, correct, correct)
        # Row max and sum as plain reductions, materialised by the barrier: the [N, K] consumers
        # below would otherwise recompute them per element.
        top = jax.lax.optimization_barrier(jnp.max(x, axis=-1))
        s = jax.lax.optimization_barrier(jnp.sum(jnp.exp(x - top[:, None]), axis=-1))
        if _first_max.recheck_pays(x):
            correct = _first_max.correct_given_max(x, labels, top, s >= _first_max.TIE_FACTOR)
        else:
            _, correct, _ = _first_max.first_max_correct(x, labels)
        p = jnp.exp(x - top[:, None]) / s[:, None]
        log_p_y = v.take_label(x, labels) - top - jnp.log(s)
        conf = jnp.where(jnp.isnan(log_p_y), jnp.nan, 1.0 / s)
        brier = jnp.sum(p * p, axis=-1) - 2 * jnp.exp(log_p_y) + 1
        return PerSample(conf, correct, correct, p, -log_p_y, brier)
    if row_stats is None:
        row_stats = (jnp.max(x, axis=-1), jnp.sum(x, axis=-1), None)
    top, correct = _first_max.top_label_of_probs(x, labels, *row_stats)
    conf = jnp.where(valid, top, jnp.nan)
    if not scores:
        return PerSample(conf, correct, correct)
    p_y = v.take_label(x, labels)
    # Σ_k p_k² - 2 p_y + 1: no [N, K] one-hot.
    brier = jnp.sum(x * x, axis=-1) - 2 * p_y + 1
    return PerSample(conf, correct, correct, x, -jnp.log(p_y), brier)


def _scores_only(x: Array, labels: Array, from_logits: bool) -> PerSample:
    """The probabilities, NLL and Brier terms of ``[N, K]`` rows, without the top label."""
    # Callers read one of NLL and Brier: the other's computation is dead code.
    p = jax.nn.softmax(x, axis=-1) if from_logits else x
    p_y = v.take_label(p, labels)
    log_p_y = v.take_label(jax.nn.log_softmax(x, axis=-1), labels) if from_logits else jnp.log(p_y)
    brier = jnp.sum(p * p, axis=-1) - 2 * p_y + 1  # no [N, K] one-hot
    return PerSample(None, None, None, p, -log_p_y, brier)


def _binary(x: Array, labels: Array, valid: Array, from_logits: bool, scores: bool) -> PerSample:
    positive = labels == 1
    p = jax.nn.sigmoid(x) if from_logits else x
    conf = jnp.where(valid, p, jnp.nan)
    hit = ((x > 0) if from_logits else (x > 0.5)) == positive
    if not scores:
        return PerSample(conf, positive, hit)
    if from_logits:
        nll = -jax.nn.log_sigmoid(jnp.where(positive, x, -x))
    else:
        nll = -jnp.log(jnp.where(positive, x, 1 - x))
    poison = jnp.where(valid, jnp.zeros((), p.dtype), jnp.nan)
    brier = (p - positive.astype(p.dtype)) ** 2
    return PerSample(conf, positive, hit, p, nll + poison, brier + poison)
