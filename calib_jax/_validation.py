"""Input checks shared by every public function.

Two kinds of checks:

* **Static** checks (ranks, shapes, dtypes, hyperparameter ranges) run in Python at trace time and
  raise ``ValueError``/``TypeError`` at once, under ``jit`` too, at no run-time cost. Rank, shape
  and dtype checks are chex assertions (:func:`chex.assert_rank`, :func:`chex.assert_shape`,
  :func:`chex.assert_type`, ...) raising ``ValueError``/``TypeError`` whose text is chex's finding
  followed by our explanation in brackets. Like every chex assertion they are skipped after
  :func:`chex.disable_asserts`; they cost nothing under ``jit``, so there is no reason to.
* **Value** checks (labels in ``[0, K)``, finite inputs, probabilities that sum to one) depend on
  the data. On concrete (eager) inputs they raise ``ValueError`` immediately. Under a JAX
  transformation they are emitted as :func:`jax.experimental.checkify.debug_check`, which is free
  under plain ``jit`` and raises once the caller wraps the function with
  :func:`calib_jax.validation.checked` (or ``checkify.checkify``). Independently of that, every
  function is written so that invalid values give NaN rather than a plausible wrong number (for
  example an out-of-range label selects NaN instead of JAX's silently clamped gather).

Value checks use :mod:`jax.experimental.checkify` directly rather than :func:`chex.chexify` with
chex's value assertions, for three reasons: a chex value assertion raises ``RuntimeError`` when
traced outside a ``chexify``-wrapped function, so every user ``jit`` would have to be wrapped
(``debug_check`` is free and silent there); our checks exempt masked rows and reuse reductions
the computation needs anyway (a probability row's sum), which ``assert_tree_all_finite`` cannot;
and eager calls raise the same ``ValueError`` as the static checks. ``chex.chexify`` still works
around any calib_jax function: it is a ``checkify`` of the ``user_checks`` these emit.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import checkify

from calib_jax import _tuning

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _dtype(x: Any) -> np.dtype:
    dtype = getattr(x, "dtype", None)
    return np.dtype(dtype) if dtype is not None else np.result_type(x)


def _shape(x: Any) -> tuple[int, ...]:
    return tuple(np.shape(x))


def _array(x: Any) -> Any:
    """``x`` as something with ``shape`` and ``dtype`` for chex (tracers and arrays unchanged)."""
    return x if hasattr(x, "shape") and hasattr(x, "dtype") else np.asarray(x)


def _data_array(x: Any, name: str) -> Any:
    """:func:`_array` of a data argument; a list or tuple is refused with a clear message (chex
    would read it as several inputs, and the functions need arrays)."""
    if isinstance(x, list | tuple):
        raise TypeError(
            f"{name} must be an array (jax.Array or numpy.ndarray), got a {type(x).__name__}."
        )
    return _array(x)


def static_check(
    assertion: Any, *args: Any, message: str, error: type = ValueError, message_vars: Any = ()
) -> None:
    """Run the chex static assertion ``assertion(*args)``, raising ``error`` with ``message``.

    The text is chex's finding (``[Chex] ... has rank 3 ...``) followed by ``[message]``;
    ``message.format(*message_vars)`` is only computed on failure (an eager call pays for
    the check, not for the message). Callers pass a lone array as ``[x]``: chex tests a lone
    input against ``collections.abc.Sequence``, an ABC check slower than the assertion.
    """
    assertion(
        *args,
        custom_message=message,
        custom_message_format_vars=message_vars,
        include_default_message=False,
        exception_type=error,
    )


def check_value(pred: ArrayLike, message: str) -> None:
    """Raise ``ValueError(message)`` if ``pred`` is false; a checkify check when traced."""
    if isinstance(pred, jax.core.Tracer):
        checkify.debug_check(pred, message)
    elif not bool(pred):
        raise ValueError(message)


def check_floating(x: ArrayLike, name: str) -> None:
    x = _data_array(x, name)
    message = name + " must have a floating dtype, got {}."
    static_check(
        chex.assert_type, [x], float, message=message, error=TypeError, message_vars=(x.dtype,)
    )


def check_integer(x: ArrayLike, name: str) -> None:
    """An integer dtype, or bool (binary labels ``False``/``True`` are classes 0 and 1)."""
    x = _data_array(x, name)
    if _dtype(x) == np.bool_:
        return
    message = (
        name + " must have an integer dtype (class indices), got {}; "
        "pass integer labels, not one-hot or float labels."
    )
    static_check(
        chex.assert_type, [x], int, message=message, error=TypeError, message_vars=(x.dtype,)
    )


def check_dtype(x: ArrayLike, expected: Any, name: str, message: str | None = None) -> None:
    """``x``'s dtype is ``expected`` (``float``/``int``: any floating/integer dtype); ``TypeError``.

    ``message`` may name the actual dtype as ``{dtype}``.
    """
    x = _array(x)
    if message is None:
        message = f"{name} must have dtype {np.dtype(expected)}, got {{dtype}}."
    message = message.format(dtype=_dtype(x))
    static_check(chex.assert_type, [x], expected, message=message, error=TypeError)


def check_rank(
    x: ArrayLike, ranks: int | Sequence[int], name: str, message: str | None = None
) -> None:
    ranks = (ranks,) if isinstance(ranks, int) else tuple(ranks)
    x = _array(x)
    if message is None:
        message = f"{name} must have rank in {ranks}, got shape {_shape(x)}."
    static_check(chex.assert_rank, [x], set(ranks), message=message)


def check_shape(x: ArrayLike, shape: Sequence[Any], name: str, message: str | None = None) -> None:
    """``x.shape`` matches ``shape`` (chex shape pattern: ints, ``None`` for any, ``...``)."""
    x = _array(x)
    if message is None:
        message = f"{name} must have shape {tuple(shape)}, got {_shape(x)}."
    static_check(chex.assert_shape, [x], tuple(shape), message=message)


def check_nonempty(x: ArrayLike, name: str) -> None:
    x = _array(x)
    message = f"{name} is empty (shape {_shape(x)}); at least one sample is required."
    for axis in range(x.ndim):
        static_check(chex.assert_axis_dimension_gt, x, axis, 0, message=message)


def check_scores_and_labels(scores: ArrayLike, labels: ArrayLike, name: str = "logits") -> int:
    """Static checks for ``scores[..., K]`` with integer ``labels[...]``; returns ``K``."""
    check_floating(scores, name)
    check_integer(labels, "labels")
    scores = _array(scores)
    shape = _shape(scores)
    # (..., None): any rank >= 1.
    check_shape(scores, (..., None), name, f"{name} must have a trailing class axis, got a scalar.")
    check_shape(
        labels,
        shape[:-1],
        "labels",
        f"labels must have shape {name}.shape[:-1] = {shape[:-1]}, got {_shape(labels)}.",
    )
    static_check(
        chex.assert_axis_dimension_gteq,
        scores,
        -1,
        1,
        message=f"{name} must have at least one class, got shape {shape}.",
    )
    return shape[-1]


def check_labels_in_range(labels: ArrayLike, num_classes: int, where: ArrayLike | None = None):
    """Value check: every (unmasked) label lies in ``[0, num_classes)``."""
    ok = (labels >= 0) & (labels < num_classes)
    if where is not None:
        ok = ok | ~jnp.asarray(where, bool)
    check_value(jnp.all(ok), f"labels must lie in [0, {num_classes}); found a label outside it.")


def check_finite(x: ArrayLike, name: str, where: ArrayLike | None = None) -> None:
    ok = jnp.isfinite(x)
    if where is not None:
        ok = ok | ~jnp.expand_dims(
            jnp.asarray(where, bool), tuple(range(np.ndim(where), np.ndim(x)))
        )
    check_value(jnp.all(ok), f"{name} must be finite; found NaN or inf.")


def probability_tolerance(dtype: Any, num_classes: int) -> float:
    """Tolerance on ``|sum_k p_k - 1|``: 1e-3, widened for low-precision dtypes."""
    eps = float(jnp.finfo(dtype).eps)
    return max(1e-3, 0.5 * num_classes * eps)


def check_probabilities(
    probs: ArrayLike, name: str = "probs", where: ArrayLike | None = None
) -> Array:
    """Value check of probabilities; returns the per-row validity so callers can poison rows.

    ``[..., K]`` rows are valid when every entry is in ``[0, 1]`` and ``|Σ_k p_k - 1|`` is
    within :func:`probability_tolerance` of the *input* dtype (bf16 rows sum to one only to
    about ``K·2^-9``); a binary ``[N]`` input (positive-class probabilities) is valid when each
    entry is in ``[0, 1]``. NaN is invalid. Rows with ``where=False`` are exempt from the
    check but still reported in the returned mask.

    Returns:
      ``[...]`` bool: True where the row (binary: the entry) is valid.
    """
    probs = jnp.asarray(probs)
    if probs.ndim > 1:
        return probability_rows(probs, name, where)[0]
    x = probs.astype(jnp.promote_types(probs.dtype, jnp.float32))
    row_ok = (x >= 0) & (x <= 1)
    message = f"binary {name} must lie in [0, 1] (probability of the positive class)."
    _check_rows(row_ok, where, message)
    return row_ok


def probability_rows(
    probs: ArrayLike, name: str = "probs", where: ArrayLike | None = None, *, order: bool = False
) -> tuple[Array, Array, Array, tuple[Array, Array] | None]:
    """:func:`check_probabilities` for rows ``[..., K]``, also returning the row maximum and sum
    (in float32 or wider) that the check computes, and the first-maximum bracket that it may
    compute with ``order`` (:func:`probability_row_stats`):
    ``(row_ok, row_max, row_sum, bracket or None)``."""
    row_ok, high, total, bracket = probability_row_stats(probs, order=order)
    tol = probability_tolerance(jnp.asarray(probs).dtype, np.shape(probs)[-1])
    message = (
        f"{name} must be probabilities: entries in [0, 1] and each row summing to 1 within "
        f"{tol:g}; found a row that does not (NaN, negative, or unnormalised)."
    )
    if not isinstance(row_ok, jax.core.Tracer):
        unmasked_ok = np.asarray(row_ok if where is None else row_ok | ~jnp.asarray(where, bool))
        if not unmasked_ok.all():
            # Eager input: name the first bad row, so the user can look at it.
            i = np.unravel_index(np.argmin(unmasked_ok), unmasked_ok.shape)
            row = i[0] if len(i) == 1 else i
            message = (
                f"{name} must be probabilities: entries in [0, 1] and each row summing to 1 "
                f"within {tol:g}; row {row} has sum {float(total[i]):.6g}, min "
                f"{float(jnp.min(jnp.asarray(probs)[i])):.6g}, max {float(high[i]):.6g}. If these "
                "are logits, pass from_logits=True."
            )
    _check_rows(row_ok, where, message)
    return row_ok, high, total, bracket


def probability_row_stats(
    probs: ArrayLike, *, order: bool = False
) -> tuple[Array, Array, Array, tuple[Array, Array] | None]:
    """``(row_ok, row_max, row_sum, bracket)`` of rows ``[..., K]`` in float32 or wider, with no
    check raised: ``row_ok`` is :func:`probability_rows`' validity.

    With ``order``, on the tuning's bit-pattern path (wide float32 rows), ``bracket`` is
    ``(first, last)``: each row's first maximiser lies in ``[first, last]``, and is ``first``
    when ``first == last`` (:func:`_min_max_sum_by_bits`); else None.
    """
    probs = jnp.asarray(probs)
    x = probs.astype(jnp.promote_types(probs.dtype, jnp.float32))
    k = x.shape[-1]
    tol = probability_tolerance(probs.dtype, k)
    tuning = _tuning.current()
    bracket = None
    # Row min, max and sum as plain arithmetic reductions: a boolean all() over [N, K] is
    # materialised as a predicate array on XLA:CPU and made the whole top-label pass 3-5x
    # slower. Narrow rows go column by column (one fused elementwise loop), as in
    # _first_max.first_max_correct.
    if k <= tuning.unroll_max_columns:
        columns = [x[..., j] for j in range(k)]
        low = functools.reduce(jnp.minimum, columns)
        high = functools.reduce(jnp.maximum, columns)
        total = functools.reduce(jnp.add, columns)
    elif tuning.max_by_bits and x.dtype == jnp.float32:
        low, high, total, first, last = _min_max_sum_by_bits(x)
        bracket = (first, last) if order else None
    else:
        low, high, total = jnp.min(x, axis=-1), jnp.max(x, axis=-1), jnp.sum(x, axis=-1)
    # NaN propagates through all three and fails every comparison.
    row_ok = (low >= 0) & (high <= 1) & (jnp.abs(total - 1) <= tol)
    return row_ok, high, total, bracket


# Float32 bit patterns read as unsigned integers: from this one on, the sign bit is set.
_SIGN_BIT = np.uint32(2**31)


def _min_max_sum_by_bits(x: Array) -> tuple[Array, Array, Array, Array, Array]:
    """Row ``(min or 0, max, sum, first, last)`` of float32 rows ``[..., K]`` in one pass.

    Float32 numbers without a sign bit (``+0``, positive, ``+inf``, ``+NaN``) are ordered like
    their bit patterns ``u`` read as unsigned integers, and every pattern with the sign bit set
    lies above them all. So one reduction gives each row's exact maximum (the largest ``u``),
    and flags (largest ``u >= 2^31``) the rows holding a negative entry, a ``-0`` or a ``-NaN``;
    only when some row is flagged are the plain max and min taken, and kept for those rows. For
    the other rows the minimum is non-negative and 0 stands in for it.

    The same reduction brackets the first maximiser: with ``t = u >> s`` (``s`` so that
    ``t·K + K`` fits in 32 bits for ``u <= bits(1)``), ``max_j (t_j·K + K-1-j)`` names the
    first and ``max_j (t_j·K + j)`` the last column attaining ``max_j t_j``. The first
    maximiser of ``u`` attains it, so it lies in ``[first, last]``; when the two are equal it
    is ``first``. Only rows with two entries within ``2^s`` ulps of the maximum (or a tie)
    have ``first < last``. Flagged rows get the whole row, ``[0, K-1]``; invalid rows' brackets
    mean nothing (their label is poisoned).

    XLA:CPU runs this variadic reduction of unsigned maxima and a float sum as one fused loop,
    at 0.8-1.0x the time of a plain float ``max`` alone at 100k x 100 and 20k x 1000.
    """
    k = x.shape[-1]
    u = jax.lax.bitcast_convert_type(x, jnp.uint32)
    first_operand, last_operand = bracket_operands(u, max(0, (k - 1).bit_length() - 1))
    top, total, first_key, last_key = jax.lax.reduce(
        (u, x, first_operand, last_operand),
        (np.uint32(0), np.float32(0), np.uint32(0), np.uint32(0)),
        lambda a, b: (
            jnp.maximum(a[0], b[0]),
            a[1] + b[1],
            jnp.maximum(a[2], b[2]),
            jnp.maximum(a[3], b[3]),
        ),
        (x.ndim - 1,),
    )
    signed = top >= _SIGN_BIT
    high = jax.lax.bitcast_convert_type(top, jnp.float32)
    zero = jnp.zeros_like(high)

    def with_signs():
        return (
            jnp.where(signed, jnp.min(x, axis=-1), zero),
            jnp.where(signed, jnp.max(x, axis=-1), high),
        )

    low, high = jax.lax.cond(jnp.any(signed), with_signs, lambda: (zero, high))
    first, last = bracket_of(first_key, last_key, k)
    return low, high, total, jnp.where(signed, 0, first), jnp.where(signed, k - 1, last)


def bracket_operands(key: Array, shift: int) -> tuple[Array, Array]:
    """``(t·K + K-1-j, t·K + j)`` with ``t = key >> shift`` for unsigned keys ``[..., K]`` in
    the order of the scores: their row maxima name the first and the last column attaining
    ``max_j t_j`` (:func:`bracket_of`). ``shift`` must make ``t·K + K`` fit in 32 bits."""
    k = key.shape[-1]
    t = (key >> shift) * np.uint32(k)
    column = jax.lax.broadcasted_iota(jnp.uint32, key.shape, key.ndim - 1)
    return t + (np.uint32(k - 1) - column), t + column


def bracket_of(first_key: Array, last_key: Array, k: int) -> tuple[Array, Array]:
    """The columns ``(first, last)`` named by the row maxima of :func:`bracket_operands`."""
    return (k - 1) - (first_key % k).astype(jnp.int32), (last_key % k).astype(jnp.int32)


def _check_rows(row_ok: Array, where: ArrayLike | None, message: str) -> None:
    unmasked_ok = row_ok if where is None else row_ok | ~jnp.asarray(where, bool)
    check_value(jnp.all(unmasked_ok), message)


def check_nonnegative(value: float, name: str) -> None:
    if not isinstance(value, jax.core.Tracer) and not value >= 0:
        raise ValueError(f"{name} must be >= 0, got {value}.")


def check_unit_interval(value: float, name: str) -> None:
    if not isinstance(value, jax.core.Tracer) and not 0 <= value <= 1:
        raise ValueError(f"{name} must lie in [0, 1], got {value}.")


def hyperparameter(
    value: ArrayLike, name: str, *, low: float = 0.0, high: float = np.inf, open_low: bool = False
) -> ArrayLike:
    """A finite hyperparameter in ``[low, high]`` (``(low, high]`` with ``open_low``).

    A concrete value (Python number or array) outside the range, NaN or infinite raises
    ``ValueError`` at once, at trace time under ``jit`` too, and is returned as given. A traced
    value is a value check (a checkify check under :func:`calib_jax.validation.checked`) and
    comes back with every out-of-range entry replaced by NaN, so that a loss computed from it is
    NaN (value and gradient) instead of a plausible number.
    """
    interval = f"{'(' if open_low else '['}{low:g}, {high:g}]"
    if not isinstance(value, jax.core.Tracer):
        arr = np.asarray(value, np.float64)
        ok = np.isfinite(arr) & (arr > low if open_low else arr >= low) & (arr <= high)
        if not np.all(ok):
            raise ValueError(f"{name} must be finite and lie in {interval}, got {value}.")
        return value
    ok = jnp.isfinite(value) & (value > low if open_low else value >= low) & (value <= high)
    check_value(jnp.all(ok), f"{name} must be finite and lie in {interval}; got a value outside.")
    return jnp.where(ok, value, jnp.nan)


def check_num_bins(num_bins: int) -> int:
    if isinstance(num_bins, bool) or not isinstance(num_bins, int | np.integer):
        raise TypeError(f"num_bins must be a static Python int, got {type(num_bins).__name__}.")
    if num_bins < 1:
        raise ValueError(f"num_bins must be >= 1, got {num_bins}.")
    return int(num_bins)


def compute_dtype(x: ArrayLike) -> np.dtype:
    """The dtype we compute in: at least float32 (bf16/f16 inputs are upcast)."""
    return np.dtype(jnp.promote_types(_dtype(x), jnp.float32))


def to_compute_dtype(x: ArrayLike) -> Array:
    x = jnp.asarray(x)
    return x.astype(compute_dtype(x))


def index_labels(labels: ArrayLike, num_classes: int) -> Array:
    """Integer ``labels`` as int32 class indices, ``-1`` wherever a label is outside ``[0, K)``.

    Every integer dtype holds valid labels (uint8/16/32 too): the range test runs in the label's
    own dtype before the cast, so a large unsigned or 64-bit label cannot wrap into the range,
    and ``-1`` (which an unsigned dtype cannot hold) marks every bad label in the result.
    """
    labels = jnp.asarray(labels)
    valid = (labels >= 0) & (labels < num_classes)
    return jnp.where(valid, labels.astype(jnp.int32), -1)


def take_label(values: Array, labels: Array) -> Array:
    """``values[..., labels]`` along the last axis; NaN where a label is outside ``[0, K)``.

    JAX clamps out-of-range gather indices (and wraps negative ones), which would turn a bad label
    into a plausible wrong number. This gather is exact for valid labels and poisons the rest.
    """
    k = values.shape[-1]
    if labels.dtype == jnp.bool_:
        labels = labels.astype(jnp.int32)
    valid = (labels >= 0) & (labels < k)
    picked = _pick(values, jnp.where(valid, labels, jnp.zeros((), labels.dtype)))
    # A factor rather than a select: the derivative is NaN too, so a loss's gradient for a bad
    # label is NaN instead of a plausible step toward class 0.
    factor = jnp.where(valid, jnp.ones((), picked.dtype), jnp.full((), jnp.nan, picked.dtype))
    return picked * factor


@jax.custom_jvp
def _pick(values: Array, labels: Array) -> Array:
    """``values[..., labels]`` for labels already in ``[0, K)``."""
    return jnp.take_along_axis(values, labels[..., None], axis=-1)[..., 0]


@_pick.defjvp
def _pick_jvp(primals: tuple[Array, Array], tangents: tuple[Array, Array]) -> tuple[Array, Array]:
    # The gather's own derivative, written as a one-hot select: its transpose is an elementwise
    # select that XLA fuses into the softmax gradient of a loss, where the gather's transpose is
    # a scatter plus two index arrays (together about a fifth of optax's cross-entropy time at
    # K = 10 on XLA:CPU).
    values, labels = primals
    dv, _ = tangents
    classes = jax.lax.broadcasted_iota(jnp.int32, values.shape, values.ndim - 1)
    onehot = classes == labels[..., None]
    return _pick(values, labels), jnp.sum(jnp.where(onehot, dv, jnp.zeros((), dv.dtype)), axis=-1)


def check_static_bool(value: Any, name: str) -> bool:
    """``value`` as a Python bool; a traced value (``jax.jit`` traces keyword arguments) raises
    a ``TypeError`` that says how to make it static, instead of JAX's tracer-conversion error."""
    if isinstance(value, jax.core.Tracer):
        raise TypeError(
            f"{name} must be a static Python bool, but it was traced: under jax.jit pass it as "
            f"a static argument, e.g. jax.jit(fn, static_argnames=({name!r},)), or close over "
            f"it with functools.partial(fn, {name}=True)."
        )
    if not isinstance(value, bool | np.bool_):
        raise TypeError(f"{name} must be a bool, got {type(value).__name__}.")
    return bool(value)


def check_not_probabilities(x: ArrayLike, name: str, hint: str) -> None:
    """Raise when concrete ``[..., K]`` logits (``K >= 2``) look like probabilities: every row
    in ``[0, 1]`` and summing to one within :func:`probability_tolerance`.

    Passing probabilities where logits are expected gives confident wrong answers (a softmax of
    probabilities is nearly uniform), and real logits essentially never form such rows. Traced
    values are not checked (no host round trip under ``jit``).
    """
    if isinstance(x, jax.core.Tracer) or np.ndim(x) < 2 or np.shape(x)[-1] < 2 or not np.size(x):
        return
    arr = jnp.asarray(x)
    z = arr.astype(jnp.promote_types(arr.dtype, jnp.float32))
    tol = probability_tolerance(arr.dtype, arr.shape[-1])
    looks = jnp.all((z >= 0) & (z <= 1)) & jnp.all(jnp.abs(jnp.sum(z, axis=-1) - 1) <= tol)
    # A constant closed over inside jit is concrete, but jnp results on it are traced.
    if isinstance(looks, jax.core.Tracer):
        return
    if bool(looks):
        raise ValueError(
            f"{name} look like probabilities: every row lies in [0, 1] and sums to 1. {hint}"
        )
