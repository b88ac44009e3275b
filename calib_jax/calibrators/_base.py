"""Shared pieces of the calibrators: the ``Calibrator`` tuple and the input checks of ``fit``."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _validation as v

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


class Calibrator(NamedTuple):
    """A post-hoc calibrator: a pair of pure functions, like optax's ``GradientTransformation``.

    Attributes:
      fit: ``fit(x, labels, *, where=None) -> params``. ``x`` is ``[N, K]`` (logits or
        probabilities, see ``inputs``) or ``[N]`` for the binary calibrators, ``labels`` is
        ``[N]`` int, ``where`` an optional ``[N]`` bool mask of the rows to use. ``params`` is a
        ``NamedTuple`` of arrays (a pytree): it can be jit-compiled, vmapped over a stack of
        validation sets, and saved with any pytree serialiser.
      apply: ``apply(params, x) -> probs``, ``x`` shaped like the fit input (any leading
        shape), ``probs[..., K]`` rows summing to one (``[..., 2]`` for binary input).
      apply_logits: ``apply_logits(params, x) -> logits`` for the parametric calibrators
        (temperature, vector, matrix and Platt scaling), whose output is a softmax of logits;
        ``None`` for the binning calibrators, whose output is a probability table.
      inputs: ``"logits"`` or ``"probs"``: what ``fit`` and ``apply`` take.
    """

    fit: Callable[..., Any]
    apply: Callable[..., Array]
    apply_logits: Callable[..., Array] | None = None
    inputs: str = "logits"


def check_fit_inputs(
    x: ArrayLike, labels: ArrayLike, where: ArrayLike | None, *, name: str, binary_ok: bool
) -> tuple[Array, Array, Array, int]:
    """Static and value checks shared by every ``fit``.

    Returns ``(x, labels, weights, K)`` with ``x`` in the compute dtype, ``weights`` a float
    ``[N]`` 0/1 mask, and ``K`` the number of classes (2 for binary ``[N]`` input).
    """
    v.check_floating(x, name)
    v.check_integer(labels, "labels")
    shape = np.shape(x)
    if len(shape) == 1 and binary_ok:
        message = f"labels must have the shape of binary {name} {shape}, got {np.shape(labels)}."
        v.check_shape(labels, shape, "labels", message)
        k = 2
    else:
        v.check_rank(x, 2, name)
        k = v.check_scores_and_labels(x, labels, name)
        message = f"{name} must have at least two classes, got shape {shape}."
        v.static_check(chex.assert_axis_dimension_gteq, x, 1, 2, message=message)
    v.check_nonempty(labels, "labels")
    message = f"fitting a calibrator needs at least two samples, got {shape[0]}."
    v.static_check(chex.assert_axis_dimension_gteq, labels, 0, 2, message=message)
    x = v.to_compute_dtype(x)
    labels = jnp.asarray(labels)
    if labels.dtype == jnp.bool_:
        labels = labels.astype(jnp.int32)
    if where is None:
        weights = jnp.ones(labels.shape, x.dtype)
    else:
        message = f"where must have the shape of labels {labels.shape}, got {np.shape(where)}."
        v.check_shape(where, labels.shape, "where", message)
        weights = jnp.asarray(where, bool).astype(x.dtype)
    v.check_finite(x, name, where)
    if name == "logits":
        v.check_not_probabilities(
            x, name, "This calibrator is fitted on logits: pass the logits (or log-probabilities)."
        )
    v.check_labels_in_range(labels, k, where)
    check_two_classes(labels, weights)
    return x, labels, weights, k


def check_two_classes(labels: Array, weights: Array) -> None:
    v.check_value(
        fit_is_valid_labels(labels, weights),
        "fitting a calibrator needs at least two distinct labels among the (unmasked) rows; "
        "found a single class (or no rows).",
    )


def fit_is_valid_labels(labels: Array, weights: Array) -> Array:
    """True iff the unmasked rows hold at least two distinct labels."""
    # Some valid label differs from the largest valid label (a max, not an argmax: XLA would
    # constant-fold an argmax over the all-true mask of an unmasked fit, slowly).
    valid = weights > 0
    largest = jnp.max(jnp.where(valid, labels, jnp.iinfo(labels.dtype).min))
    return jnp.any(valid & (labels != largest))


def fit_is_valid(x: Array, labels: Array, weights: Array, k: int) -> Array:
    """Scalar bool: the data gives a meaningful fit (used to poison params with NaN otherwise)."""
    valid = weights > 0
    finite = jnp.all(jnp.isfinite(x) | ~valid.reshape(valid.shape + (1,) * (x.ndim - 1)))
    in_range = jnp.all(((labels >= 0) & (labels < k)) | ~valid)
    return finite & in_range & fit_is_valid_labels(labels, weights)


def poison(params: Any, ok: Array) -> Any:
    """Every leaf of ``params`` replaced by NaN where ``ok`` is false (never a plausible fit)."""
    return jax.tree.map(lambda p: jnp.where(ok, p, jnp.nan).astype(p.dtype), params)


def check_apply_input(x: ArrayLike, name: str, num_columns: int, *, binary: bool) -> Array:
    """Static checks of ``apply``'s input against the fitted parameters' class count, and the
    value check that it is finite (eager ``ValueError``; a checkify check under ``jit``)."""
    v.check_floating(x, name)
    x = v.to_compute_dtype(x)
    if not binary:
        message = (
            f"these parameters were fitted for K = {num_columns} classes, but {name} has shape "
            f"{x.shape} (K' = {x.shape[-1] if x.ndim else 'none'})."
        )
        v.check_shape(x, (..., num_columns), name, message)
    v.check_finite(x, name)
    return x


def renormalise(p: Array) -> Array:
    """Rows divided by their sum; a row whose calibrated scores are all zero becomes uniform."""
    total = jnp.sum(p, axis=-1, keepdims=True)
    uniform = jnp.full_like(p, 1.0 / p.shape[-1])
    return jnp.where(total > 0, p / jnp.where(total > 0, total, 1), uniform)
