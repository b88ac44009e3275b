"""Input checking and the (confidence, correctness, weight) triple every binned metric reads.

Input conventions shared by all metrics:

* ``probs`` is ``[N, K]`` (rows of class probabilities; top-label calibration: confidence is the
  row maximum, the prediction its *first* maximiser) or ``[N]`` (binary: the probability of the
  positive class, with labels in ``{0, 1}``; positive-class calibration: confidence is ``p`` and
  "correct" means ``label == 1``, the convention of scikit-learn's ``calibration_curve``,
  torchmetrics' ``binary_calibration_error`` and netcal's binary ECE). For top-label calibration
  of a binary model pass the two columns ``[1 - p, p]``.
* ``where`` (bool ``[N]``) keeps a sample when True; ``weights`` (``[N]``, non-negative) weighs
  it. Integer/bool weights keep counts exact (int32); float weights give float32 counts.
* Invalid values (a label outside ``[0, K)``, a probability row with an entry outside ``[0, 1]``
  or a sum off one by more than :func:`calib_jax._validation.probability_tolerance`, NaN or
  inf) raise eagerly, are checkify checks under ``jit``, and in any case make the row's
  confidence (and label term) NaN, so every metric is NaN rather than a plausible number. A
  sample that does not enter the metric (``where=False`` or weight 0) is exempt.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _binning
from calib_jax import _validation as v

Array = jax.Array


def check_common(probs, labels, where, weights, name: str = "probs") -> tuple[int, int | None]:
    """Static checks; value checks on labels, weights and mask. Returns ``(N, K or None)``."""
    v.check_floating(probs, name)
    v.check_integer(labels, "labels")
    shape = np.shape(probs)
    if len(shape) not in (1, 2):
        raise ValueError(
            f"{name} must have shape [N, K] (class probabilities) or [N] (binary, probability of "
            f"the positive class), got shape {shape}; use jax.vmap for leading batch axes."
        )
    n = shape[0]
    if np.shape(labels) != (n,):
        raise ValueError(f"labels must have shape ({n},) to match {name}, got {np.shape(labels)}.")
    v.check_nonempty(probs, name)
    for arr, arr_name in ((where, "where"), (weights, "weights")):
        if arr is not None and np.shape(arr) != (n,):
            raise ValueError(f"{arr_name} must have shape ({n},), got {np.shape(arr)}.")
    if where is not None and np.dtype(jnp.asarray(where).dtype) != np.bool_:
        raise TypeError(f"where must be a boolean mask, got dtype {jnp.asarray(where).dtype}.")
    k = shape[1] if len(shape) == 2 else None
    v.check_labels_in_range(labels, k if k is not None else 2, where)
    if weights is not None:
        w = jnp.asarray(weights)
        ok = (
            jnp.all(w >= 0) & jnp.all(jnp.isfinite(w))
            if jnp.issubdtype(w.dtype, jnp.floating)
            else jnp.all(w >= 0)
        )
        v.check_value(ok, "weights must be finite and non-negative.")
    return n, k


def poison_labels(labels, row_ok: Array) -> Array:
    """``labels`` with ``-1`` (out of range: NaN downstream) where ``row_ok`` is False."""
    labels = jnp.asarray(labels)
    return jnp.where(row_ok, labels, jnp.asarray(-1, labels.dtype))


def combined_weights(where, weights) -> Array | None:
    """``where`` and ``weights`` as one weight vector (None when both are None)."""
    if where is None:
        return None if weights is None else jnp.asarray(weights)
    where = jnp.asarray(where, bool)
    if weights is None:
        return where
    weights = jnp.asarray(weights)
    return jnp.where(where, weights, jnp.zeros((), weights.dtype))


def top_label(probs, labels, where=None, weights=None, *, from_logits: bool = False):
    """Validate and reduce to ``(confidence [N], correct [N] bool, weights or None)``.

    Invalid labels and invalid probability rows give a NaN confidence so that every metric
    becomes NaN, never a plausible number, also under ``jit`` where value checks are not raised.
    Logits need no row check: NaN or inf logits already give a NaN confidence.
    """
    _, k = check_common(probs, labels, where, weights, "logits" if from_logits else "probs")
    x = v.to_compute_dtype(probs)
    labels = jnp.asarray(labels)
    if from_logits:
        v.check_finite(x, "logits", where)
        if k is None:
            conf = jax.nn.sigmoid(x)
            correct = labels == 1
            valid = (labels == 0) | (labels == 1)
        else:
            _, correct, norm = _binning.top_label_of_logits(x, labels)
            # max softmax = exp(0) / sum(exp(z - max)): the same float as max(softmax(z)).
            conf = 1.0 / norm
            valid = (labels >= 0) & (labels < k)
    elif k is None:
        conf, correct = x, labels == 1
        valid = ((labels == 0) | (labels == 1)) & v.check_probabilities(probs, "probs", where)
    else:
        row_ok, row_max, row_sum = v.probability_rows(probs, "probs", where)
        conf, correct = _binning.top_label_of_probs(x, labels, row_max, row_sum)
        valid = (labels >= 0) & (labels < k) & row_ok
    conf = jnp.where(valid, conf, jnp.nan)
    w = combined_weights(where, weights)
    if w is not None:
        v.check_value(jnp.sum(w) > 0, "every sample is masked out (where/weights): no data.")
    return conf, correct, w


def two_columns(probs: Array) -> Array:
    """Binary ``[N]`` positive-class probabilities as ``[N, 2]`` rows ``[1 - p, p]``."""
    p = v.to_compute_dtype(probs)
    return jnp.stack([1 - p, p], axis=-1)


def top_label_correct(scores, labels, where=None, weights=None):
    """``(poison [N], correct [N] bool, weights)`` for accuracy: any finite ``[N, K]`` scores
    (probabilities or logits, same first maximum), or ``[N]`` binary probabilities (class 1
    predicted iff ``p > 0.5``). ``poison`` is 0, or NaN where a label is out of range or a row
    is not finite; samples with weight 0 (``where=False``) are exempt."""
    _, k = check_common(scores, labels, where, weights, "probs")
    x = v.to_compute_dtype(scores)
    labels = jnp.asarray(labels)
    v.check_finite(x, "probs", where)
    if k is None:
        correct = (x > 0.5) == (labels == 1)
        valid = ((labels == 0) | (labels == 1)) & jnp.isfinite(x)
    else:
        _, correct, _ = _binning.first_max_correct(x, labels)
        valid = (labels >= 0) & (labels < k) & jnp.all(jnp.isfinite(x), axis=-1)
    w = combined_weights(where, weights)
    if w is not None:
        valid = valid | (w == 0)
    poison = jnp.where(valid, jnp.zeros((), x.dtype), jnp.nan)
    return poison, correct, w
