"""Input checking and the (confidence, correctness, weight) triple every binned metric reads.

Input conventions shared by all metrics:

* ``probs`` is ``[N, K]`` (rows of class probabilities; top-label calibration: confidence is the
  row maximum, the prediction its *first* maximiser) or ``[N]`` (binary: the probability of the
  positive class, with labels in ``{0, 1}``; positive-class calibration: confidence is ``p`` and
  "correct" means ``label == 1``, the convention of scikit-learn's ``calibration_curve``,
  torchmetrics' ``binary_calibration_error`` and netcal's binary ECE). For top-label calibration
  of a binary model pass the two columns ``[1 - p, p]``.
* ``where`` (bool ``[N]``) keeps a sample when True; ``weights`` (``[N]``, non-negative) weighs
  it. Integer/bool weights keep counts exact (int32: each integer weight and their total must
  be below ``2^31``); float weights give float32 counts. A negative, NaN or infinite weight is
  invalid like a bad label.
* Labels may have any integer dtype; they are used as int32 indices with ``-1`` for every
  label outside ``[0, K)`` (:func:`calib_jax._validation.index_labels`).
* Invalid values (a label outside ``[0, K)``, a probability row with an entry outside ``[0, 1]``
  or a sum off one by more than :func:`calib_jax._validation.probability_tolerance`, NaN or
  inf, an invalid weight) raise eagerly, are checkify checks under ``jit``, and in any case make
  the row's confidence (and label term) NaN, so every metric is NaN rather than a plausible
  number. A sample that does not enter the metric (``where=False`` or weight 0) is exempt, in
  all three modes.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _binning, _first_max, _tuning
from calib_jax import _validation as v
from calib_jax.metrics import _per_sample

Array = jax.Array


class Inputs(NamedTuple):
    """Checked metric inputs (:func:`validate`)."""

    n: int
    k: int | None
    labels: Array  # int32; -1 where out of range or where the sample's weight is invalid
    weights: Array | None  # where and weights combined (see sample_weights)
    keep: Array | None  # bool [N]: the sample enters the metric (where=True, weight != 0)


def validate(probs, labels, where, weights, name: str = "probs") -> Inputs:
    """Static checks, value checks on labels and weights, and the combined weights.

    Value checks exempt the samples that do not enter the metric (``where=False`` or weight 0),
    in every mode: eager, checkify and plain ``jit``. A sample with an invalid weight gets
    label ``-1`` (so its row is NaN downstream) and weight 1 (so the NaN enters every sum).
    """
    v.check_floating(probs, name)
    v.check_integer(labels, "labels")
    shape = np.shape(probs)
    v.check_rank(
        probs,
        (1, 2),
        name,
        f"{name} must have shape [N, K] (class probabilities) or [N] (binary, probability of "
        f"the positive class), got shape {shape}; use jax.vmap for leading batch axes.",
    )
    n = shape[0]
    v.check_shape(
        labels,
        (n,),
        "labels",
        f"labels must have shape ({n},) to match {name}, got {np.shape(labels)}.",
    )
    v.check_nonempty(probs, name)
    if name == "logits":
        v.check_not_probabilities(probs, "logits", _PROBS_AS_LOGITS)
    for arr, arr_name in ((where, "where"), (weights, "weights")):
        if arr is not None:
            v.check_shape(arr, (n,), arr_name)
    if where is not None:
        v.check_dtype(where, bool, "where", "where must be a boolean mask, got dtype {dtype}.")
    k = shape[1] if len(shape) == 2 else None
    w, weight_ok = sample_weights(where, weights)
    keep = None if w is None else w != 0
    v.check_labels_in_range(labels, k if k is not None else 2, keep)
    index = v.index_labels(labels, k if k is not None else 2)
    if weight_ok is not None:
        index = jnp.where(weight_ok, index, -1)
    return Inputs(n, k, index, w, keep)


_PROBS_AS_LOGITS = (
    "Pass probabilities with from_logits=False (the default), or pass the logits themselves."
)


def check_common(probs, labels, where, weights, name: str = "probs") -> tuple[int, int | None]:
    """:func:`validate`'s checks only. Returns ``(N, K or None)``."""
    checked = validate(probs, labels, where, weights, name)
    return checked.n, checked.k


# Integer weights are exact int32 replication counts: each weight and their total must stay
# below this.
INT_WEIGHT_LIMIT = 2**31


def sample_weights(where, weights) -> tuple[Array | None, Array | None]:
    """``(w, ok)``: ``where`` and ``weights`` as one weight vector, and where each is valid.

    ``w`` is the bool mask (no weights), int32 counts (integer weights) or float32-or-wider
    weights, 0 where ``where`` is False. ``ok`` (None without weights) is False where an
    unmasked weight is negative, NaN or infinite, or (integer weights) not below ``2^31``, and
    everywhere when integer weights total ``2^31`` or more; ``w`` is 1 there. Each failure is a
    value check.
    """
    if where is not None:
        where = jnp.asarray(where, bool)
    if weights is None:
        return where, None
    raw = weights
    if not isinstance(raw, jax.core.Tracer) and np.issubdtype(np.asarray(raw).dtype, np.integer):
        # Before JAX converts the array: without 64-bit types it wraps int64 into int32.
        big = np.asarray(raw) >= INT_WEIGHT_LIMIT
        if where is not None:
            big &= np.asarray(where)
        if np.any(big):
            raise ValueError(_INT_MESSAGE)
    w = jnp.asarray(raw)

    def or_masked(ok):
        return ok if where is None else ok | ~where

    if w.dtype == jnp.bool_:
        return (w if where is None else w & where), None
    if jnp.issubdtype(w.dtype, jnp.floating):
        w = w.astype(jnp.promote_types(w.dtype, jnp.float32))
        ok = (w >= 0) & jnp.isfinite(w)
        v.check_value(jnp.all(or_masked(ok)), "weights must be finite and non-negative.")
    else:
        ok = w >= 0
        if jnp.iinfo(w.dtype).max >= INT_WEIGHT_LIMIT:
            ok &= w < INT_WEIGHT_LIMIT
        v.check_value(jnp.all(or_masked(ok)), _INT_MESSAGE)
        w = jnp.where(ok if where is None else ok & where, w, 0).astype(jnp.int32)
        # int32 wraps a total in [2^31, 2^32) to a negative number; an accurate float32 sum
        # (error below 2e-5 relative) tells totals of 2^32 and more apart.
        total = jnp.sum(w, dtype=jnp.int32)
        approx = _binning.accurate_sum(w.astype(jnp.float32))
        fits = (total >= 0) & (approx < 1.5 * INT_WEIGHT_LIMIT)
        v.check_value(
            fits,
            "integer weights must total less than 2^31 (exact int32 counts); "
            "pass float weights for larger totals.",
        )
        ok &= fits
    ok = or_masked(ok)
    if where is not None:
        w = jnp.where(where, w, jnp.zeros((), w.dtype))
    return jnp.where(ok, w, jnp.ones((), w.dtype)), ok


_INT_MESSAGE = (
    "integer weights must be non-negative and below 2^31 (exact int32 replication counts); "
    "pass float weights for larger values."
)


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

    Invalid labels, invalid probability rows and invalid weights give a NaN confidence (and an
    invalid weight is replaced by 1 so that the NaN is counted) so that every metric becomes
    NaN, never a plausible number, also under ``jit`` where value checks are not raised.
    Logits need no row check: NaN or inf logits already give a NaN confidence.
    """
    from_logits = v.check_static_bool(from_logits, "from_logits")
    c = validate(probs, labels, where, weights, "logits" if from_logits else "probs")
    x = jnp.asarray(probs)
    # The checks raise (eagerly) or are checkify checks; the invalid rows are poisoned inside
    # _top_label, in the same pass that computes the confidences.
    if from_logits:
        v.check_finite(x, "logits", c.keep)
    else:
        v.check_probabilities(x, "probs", c.keep)
    if c.keep is not None:
        v.check_value(jnp.any(c.keep), "every sample is masked out (where/weights): no data.")
    conf, correct = _top_label(x, c.labels, from_logits)
    return conf, correct, c.weights


@functools.partial(jax.jit, static_argnames=("from_logits",))
def _top_label(x, labels, from_logits):
    def one_pass():
        lab, row_stats = labels, None
        if not from_logits:
            if x.ndim == 2:
                order = _first_max.recheck_pays(x)
                row_ok, row_max, row_sum, bracket = v.probability_row_stats(x, order=order)
                row_stats = (row_max, row_sum, bracket)
            else:
                row_ok = (x >= 0) & (x <= 1)
            lab = poison_labels(labels, row_ok)
        q = _per_sample.per_sample(x, lab, from_logits=from_logits, row_stats=row_stats)
        return q.confidence, q.correct

    tuning = _tuning.current()
    narrow = x.ndim == 2 and x.shape[1] <= tuning.unroll_max_columns
    if from_logits or not (narrow and tuning.materialise_top_label):
        return one_pass()

    def packed():
        # A valid row's confidence is > 0 (at least about 1/K): its sign carries `correct`.
        conf, correct = one_pass()
        return jnp.where(correct, conf, -conf)

    # Always true (int32 addition wraps), but opaque to the compiler: the conditional keeps
    # the pass in one fusion, whose output the consumers read (see _tuning.Tuning).
    always = labels[0] != labels[0] + 1
    s = jax.lax.cond(always, packed, lambda: jnp.zeros(labels.shape, v.compute_dtype(x)))
    return jnp.abs(s), s > 0


def checked_rows(predictions, labels, where, weights, from_logits):
    """:func:`validate` plus the row checks: ``(x, labels, checked, row_stats)``.

    Logits must be finite; probability rows must lie on the simplex. An invalid row gets label
    ``-1`` (NaN downstream). ``row_stats`` is the row maximum, sum and first-maximum
    bracket (or None) that the check of ``[N, K]`` probabilities computes (they decide the
    first maximum, :func:`calib_jax._first_max.top_label_of_probs`), else None.
    """
    from_logits = v.check_static_bool(from_logits, "from_logits")
    c = validate(predictions, labels, where, weights, "logits" if from_logits else "probs")
    x = jnp.asarray(predictions)
    labels = c.labels
    row_stats = None
    if from_logits:
        v.check_finite(x, "logits", c.keep)
    elif x.ndim == 2:
        order = _first_max.recheck_pays(x)
        row_ok, row_max, row_sum, bracket = v.probability_rows(x, "probs", c.keep, order=order)
        labels = poison_labels(labels, row_ok)
        row_stats = (row_max, row_sum, bracket)
    else:
        labels = poison_labels(labels, v.check_probabilities(x, "probs", c.keep))
    return x, labels, c, row_stats


def two_columns(probs: Array) -> Array:
    """Binary ``[N]`` positive-class probabilities as ``[N, 2]`` rows ``[1 - p, p]``."""
    p = v.to_compute_dtype(probs)
    return jnp.stack([1 - p, p], axis=-1)


def top_label_correct(scores, labels, where=None, weights=None, *, binary_threshold=0.5):
    """``(poison [N], correct [N] bool, weights)`` for accuracy.

    Any finite ``[N, K]`` scores (probabilities or logits, same first maximum), or ``[N]``
    binary scores (class 1 predicted iff the score exceeds ``binary_threshold``: 0.5 for
    probabilities, 0 for logits). ``poison`` is 0, or NaN where a label is out of range or a
    row is not finite; samples with weight 0 (``where=False``) are exempt."""
    c = validate(scores, labels, where, weights, "probs")
    x = v.to_compute_dtype(scores)
    labels = c.labels
    v.check_finite(x, "probs", c.keep)
    if c.k is None:
        correct = (x > binary_threshold) == (labels == 1)
        valid = (labels >= 0) & jnp.isfinite(x)
    else:
        _, correct, _ = _first_max.first_max_correct(x, labels)
        valid = (labels >= 0) & jnp.all(jnp.isfinite(x), axis=-1)
    if c.keep is not None:
        valid = valid | ~c.keep
    poison = jnp.where(valid, jnp.zeros((), x.dtype), jnp.nan)
    return poison, correct, c.weights


def class_probabilities(predictions, labels, where, weights, from_logits: bool):
    """``(p, labels, checked)``: float32-or-wider probabilities (``[N, K]``, or binary ``[N]``)
    of probabilities or logits (``softmax``/``sigmoid``), with label ``-1`` (NaN downstream)
    where a row is invalid: a probability row off the simplex, or a NaN or infinite logit."""
    from_logits = v.check_static_bool(from_logits, "from_logits")
    c = validate(predictions, labels, where, weights, "logits" if from_logits else "probs")
    x = v.to_compute_dtype(predictions)
    if not from_logits:
        row_ok = v.check_probabilities(predictions, "probs", c.keep)
        return x, poison_labels(c.labels, row_ok), c
    v.check_finite(x, "logits", c.keep)
    if c.k is None:
        p, row_ok = jax.nn.sigmoid(x), jnp.isfinite(x)
    else:
        p, row_ok = jax.nn.softmax(x, axis=-1), jnp.all(jnp.isfinite(x), axis=-1)
    return p, poison_labels(c.labels, row_ok), c
