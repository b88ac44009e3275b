"""Focal losses: softmax focal loss, sample-dependent (adaptive) focal loss, sigmoid focal loss."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from calib_jax import _validation
from calib_jax.losses import _common

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _focal_weight(log_p: Array, gamma: Array) -> tuple[Array, Array, Array]:
    """``(w, q, log q)`` with ``q = 1 - p = -expm1(log p)`` and ``w = q^γ`` (``0^0 = 1``).

    ``log q`` is replaced by 0 where ``q = 0`` (only reached through ``where``), so no branch
    ever sees ``log 0``. A NaN ``γ`` (an invalid traced value) gives ``w = NaN`` also at ``q = 0``.
    """
    q = -jnp.expm1(log_p)
    positive = q > 0
    log_q = jnp.log(jnp.where(positive, q, jnp.ones((), q.dtype)))
    at_zero = jnp.where(gamma == 0, 1, jnp.where(gamma > 0, 0, jnp.nan)).astype(q.dtype)
    w = jnp.where(positive, jnp.exp(gamma * log_q), at_zero)
    return w, q, log_q


@jax.custom_jvp
def _focal_term(log_p: Array, gamma: Array) -> Array:
    """``-(1 - p)^γ · log p`` as a function of ``log p <= 0``, elementwise."""
    return -_focal_weight(log_p, gamma)[0] * log_p


def _focal_term_jvp(primals, tangents):
    # Autodiff of (1 - p)^γ gives γ(1-p)^(γ-1) = inf at p = 1 for γ < 1, times log p = 0: NaN.
    # Hand-derived instead: d/d(log p) = w·(γ·p·log p/(1-p) - 1), where log p/(1-p) → -1 as
    # p → 1, and d/dγ = -w·log(1-p)·log p → 0; both finite for every finite log p and γ >= 0.
    # log p = -inf (a finite logit gap past the float maximum, e.g. [-3e38, 3e38]) is the limit
    # p → 0, where p·log p → 0 and log(1-p)·log p → 0: both products are taken as 0 there.
    log_p, gamma = primals
    d_log_p, d_gamma = tangents
    w, q, log_q = _focal_weight(log_p, gamma)
    positive = q > 0
    finite = log_p > -jnp.inf
    safe_log_p = jnp.where(finite, log_p, 0)
    ratio = jnp.where(positive, safe_log_p / jnp.where(positive, q, 1), -jnp.ones((), q.dtype))
    p_ratio = jnp.where(finite, (1 - q) * ratio, 0)
    out = -w * log_p
    tangent = jnp.zeros_like(out)
    if not isinstance(d_log_p, SymbolicZero):
        tangent = w * (gamma * p_ratio - 1) * d_log_p
    if not isinstance(d_gamma, SymbolicZero):
        tangent = tangent + jnp.where(positive & finite, -w * safe_log_p * log_q, 0) * d_gamma
    return out, tangent


_focal_term.defjvp(_focal_term_jvp, symbolic_zeros=True)


def _gamma_array(gamma: ArrayLike, shape: tuple[int, ...], dtype) -> Array:
    gamma_shape = tuple(np.shape(gamma))
    try:
        ok = len(gamma_shape) in (0, len(shape)) and (
            np.broadcast_shapes(gamma_shape, shape) == shape
        )
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(
            f"gamma must be a scalar or broadcast to labels.shape = {shape}, got shape "
            f"{gamma_shape}."
        )
    return jnp.asarray(_validation.hyperparameter(gamma, "gamma"), dtype)


def focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: ArrayLike = 3.0,
    where: ArrayLike | None = None,
) -> Array:
    r"""Softmax focal loss with integer labels, per example.

    .. math::
      \ell = -(1 - p_y)^γ \log p_y, \qquad p = \mathrm{softmax}(z).

    ``γ = 0`` is exactly :func:`cross_entropy`; ``γ = 3`` is FL-3 of Mukhoti et al. (2020).
    Numerics: ``log p_y`` comes from a log-softmax and ``1 - p_y = -expm1(log p_y)``. The
    log-softmax carries an absolute error of about ``6e-8`` in float32, so the *relative* error
    of a tiny loss grows as ``1 - p_y → 0`` (about ``2e-3`` at ``1 - p_y = 1e-4`` for ``γ = 3``,
    where the loss is ``~1e-16``); absolute errors stay at float32 rounding, as for optax's
    cross-entropy. The gradient is hand-derived (a
    ``custom_jvp`` on the per-example scalar) and is finite for every finite logit and every
    ``γ >= 0``, including ``γ < 1`` where autodiff of ``(1 - p)^γ`` gives NaN at saturation.
    The backward pass is one softmax over the logits, like cross-entropy's. ``γ`` is
    differentiable as well.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      gamma: finite focusing parameter ``>= 0``: a scalar or an array broadcastable to
        ``labels.shape`` (one ``γ`` per example); may be traced (a traced negative or
        non-finite ``γ`` gives NaN, value and gradient, under ``jit`` and raises under
        :func:`calib_jax.validation.checked`).
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: a concrete ``gamma`` that is negative or not finite, or a ``gamma`` of the
        wrong shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import focal_loss
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = focal_loss(logits, jnp.array([0, 2]), gamma=3.0)
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.0006', '0.7593']

    References:
      Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
      Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020.
    """
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    gamma = _gamma_array(gamma, labels.shape, z.dtype)
    return _common.apply_mask(_focal_term(_common.label_log_prob(z, labels), gamma), mask)


def _check_schedule(boundaries: ArrayLike, gammas: ArrayLike):
    """The schedule as Python floats when concrete (checked at once), else as arrays whose
    gammas are NaN when a traced boundary or gamma is out of range (a checkify check)."""
    for name, x in (("boundaries", boundaries), ("gammas", gammas)):
        if hasattr(x, "shape") and len(x.shape) != 1:
            raise ValueError(f"{name} must be a sequence or a 1-D array, got shape {x.shape}.")
    if len(gammas) != len(boundaries) + 1:
        raise ValueError(
            f"need exactly one more gamma than boundaries, got {len(boundaries)} boundaries "
            f"and {len(gammas)} gammas."
        )

    def traced(x):
        return isinstance(x, jax.core.Tracer) or any(isinstance(e, jax.core.Tracer) for e in x)

    if traced(boundaries) or traced(gammas):
        b = jnp.asarray(boundaries, jnp.float32).reshape(-1)
        b_ok = jnp.all((b >= 0) & (b <= 1)) & jnp.all(b[1:] > b[:-1])
        _validation.check_value(b_ok, "boundaries must increase strictly within [0, 1].")
        g = _validation.hyperparameter(jnp.asarray(gammas, jnp.float32).reshape(-1), "gammas")
        # One bad entry invalidates the whole schedule, not only the rows that would read it.
        return b, jnp.where(b_ok & jnp.all(g == g), g, jnp.nan)
    boundaries = tuple(float(b) for b in boundaries)
    gammas = tuple(float(g) for g in gammas)
    if any(not 0 <= b <= 1 for b in boundaries) or any(
        b >= c for b, c in itertools.pairwise(boundaries)
    ):
        raise ValueError(f"boundaries must increase strictly within [0, 1], got {boundaries}.")
    if any(not 0 <= g < np.inf for g in gammas):
        raise ValueError(f"gammas must be finite and >= 0, got {gammas}.")
    return boundaries, gammas


def adaptive_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    boundaries: Sequence[float] | ArrayLike = (0.2,),
    gammas: Sequence[float] | ArrayLike = (5.0, 3.0),
    where: ArrayLike | None = None,
) -> Array:
    r"""Sample-dependent focal loss (FLSD): ``γ`` chosen per example by a step schedule.

    .. math::
      \ell = -(1 - p_y)^{γ(\bar p_y)} \log p_y, \qquad
      γ(\bar p) = \mathrm{gammas}[\#\{b \in \mathrm{boundaries} : \bar p \ge b\}],

    where :math:`\bar p_y` is ``stop_gradient(p_y)``: ``γ`` is a constant for the gradient.
    A sample with ``p_y`` exactly on a boundary takes the gamma above it (the paper's code
    tests ``p_y < b``). The default is FLSD-53 (``γ = 5`` for ``p_y < 0.2``, else 3); the
    paper's FLSD-52 code uses ``boundaries=(0.2, 0.5), gammas=(5, 3, 2)``. Numerics and
    gradient as in :func:`focal_loss`.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      boundaries: strictly increasing probabilities in ``[0, 1]``: a sequence or a 1-D array
        (its length is static, its values may be traced).
      gammas: finite focusing parameters ``>= 0``, one more than ``boundaries`` (values may be
        traced). Traced values out of range give NaN under ``jit`` and raise under
        :func:`calib_jax.validation.checked`.
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: a schedule whose lengths do not match, or (concrete values) boundaries that
        do not increase or leave ``[0, 1]``, or a negative or non-finite gamma.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import adaptive_focal_loss
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = adaptive_focal_loss(logits, jnp.array([0, 2]))  # p_y = 0.84 and 0.21: γ = 3
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.0006', '0.7593']
      >>> loss = adaptive_focal_loss(logits, jnp.array([1, 2]))  # p_y = 0.11: γ = 5
      >>> print(f"{float(loss[0]):.4f}")
      1.1834

    References:
      Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020
      (code: torrvision/focal_calibration).
    """
    boundaries, gammas = _check_schedule(boundaries, gammas)
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    log_p = _common.label_log_prob(z, labels)
    p_bar = jnp.exp(jax.lax.stop_gradient(log_p))
    gamma = jnp.full(log_p.shape, gammas[0], log_p.dtype)
    for i in range(len(boundaries)):
        gamma = jnp.where(p_bar >= boundaries[i], jnp.asarray(gammas[i + 1], log_p.dtype), gamma)
    return _common.apply_mask(_focal_term(log_p, gamma), mask)


def _sigmoid_parts(z: Array, t: Array) -> tuple[Array, Array, Array, Array]:
    """``(log p, log(1-p), BCE, log(1 - p_t))`` with ``p = σ(z)``, all in log space."""
    log_p, log_1mp = jax.nn.log_sigmoid(z), jax.nn.log_sigmoid(-z)
    bce = -(t * log_p + (1 - t) * log_1mp)
    # log(1 - p_t) = log((1 - t)·p + t·(1 - p)); a zero weight drops its term (log 0 = -inf
    # would otherwise reach the gradient), and the larger surviving term anchors the sum.
    zero = jnp.zeros((), z.dtype)
    neg_inf = jnp.full((), -jnp.inf, z.dtype)
    a = jnp.where(t < 1, log_p + jnp.log(jnp.where(t < 1, 1 - t, 1)), neg_inf)
    b = jnp.where(t > 0, log_1mp + jnp.log(jnp.where(t > 0, t, 1)), neg_inf)
    top = jnp.maximum(a, b)
    top = jnp.where(jnp.isfinite(top), top, zero)
    log_q = top + jnp.log(jnp.exp(a - top) + jnp.exp(b - top))
    return log_p, log_1mp, bce, log_q


@jax.custom_jvp
def _sigmoid_focal_term(z: Array, t: Array, gamma: Array) -> Array:
    """``(1 - p_t)^γ · BCE(z, t)``, elementwise."""
    _, _, bce, log_q = _sigmoid_parts(z, t)
    return jnp.exp(gamma * log_q) * bce


def _sigmoid_focal_term_jvp(primals, tangents):
    # Autodiff multiplies the cotangent of log(1 - p_t), γ·(1-p_t)^γ·BCE, which overflows for
    # |z| near the float maximum, by d log(1 - p_t)/dz = 0 there: NaN. Hand-derived instead,
    # with q = 1 - p_t and r = p(1-p)/q <= 1, so every factor stays bounded:
    # d/dz = q^γ·(γ(1-2t)·r·BCE + p - t), d/dt = q^γ·(γ(1-2p)·BCE/q - z), d/dγ = q^γ·log q·BCE.
    z, t, gamma = primals
    dz, dt, d_gamma = tangents
    log_p, log_1mp, bce, log_q = _sigmoid_parts(z, t)
    w = jnp.exp(gamma * log_q)
    out = w * bce
    tangent = jnp.zeros_like(out)
    if not isinstance(dz, SymbolicZero):
        r = jnp.exp(log_p + log_1mp - log_q)
        tangent = w * (gamma * (1 - 2 * t) * r * bce + jnp.exp(log_p) - t) * dz
    if not isinstance(dt, SymbolicZero):
        has_bce = bce > 0
        bce_over_q = jnp.where(has_bce, jnp.exp(jnp.log(jnp.where(has_bce, bce, 1)) - log_q), 0)
        tangent = tangent + w * (gamma * (1 - 2 * jnp.exp(log_p)) * bce_over_q - z) * dt
    if not isinstance(d_gamma, SymbolicZero):
        tangent = tangent + w * log_q * bce * d_gamma
    return out, tangent


_sigmoid_focal_term.defjvp(_sigmoid_focal_term_jvp, symbolic_zeros=True)


def sigmoid_focal_loss(
    logits: ArrayLike,
    targets: ArrayLike,
    *,
    alpha: float | None = 0.25,
    gamma: float = 2.0,
    where: ArrayLike | None = None,
) -> Array:
    r"""Sigmoid (binary / multi-label) focal loss, per element.

    .. math::
      \ell = α_t (1 - p_t)^γ\,\mathrm{BCE}(z, t), \quad p = σ(z),\ p_t = p t + (1-p)(1-t),\
      α_t = α t + (1 - α)(1 - t),

    with :math:`\mathrm{BCE}(z, t) = -t \log σ(z) - (1-t) \log σ(-z)`. ``alpha=None`` drops
    the ``α_t`` weight; ``γ = 0, α = None`` is binary cross-entropy. Targets may be soft
    (any value in ``[0, 1]``). Numerics: ``log(1 - p_t)`` is formed in log space from
    ``log σ(±z)`` (a two-term log-sum-exp that skips zero-weight terms), and the gradient is
    hand-derived (a ``custom_jvp``, in ``logits``, ``targets`` and ``γ``) with bounded factors,
    so the loss and its gradient are finite for every finite logit and ``γ >= 0``, up to
    ``|z|`` near the float maximum. A NaN or infinite logit or an out-of-range target raises
    on concrete inputs and under :func:`calib_jax.validation.checked`, and gives NaN under
    plain ``jit``; so does a traced ``alpha`` or ``gamma`` out of range.

    Args:
      logits: ``[...]`` floating logits (one per binary decision).
      targets: ``[...]`` targets in ``[0, 1]``, same shape as ``logits`` (integer or float).
      alpha: weight of the positive class in ``[0, 1]``, or ``None`` for no weight.
      gamma: focusing parameter ``>= 0``.
      where: optional boolean mask broadcastable to ``logits.shape``; masked entries give 0.

    Returns:
      ``[...]`` per-element losses, same shape as ``logits`` (float32 or wider).

    Raises:
      ValueError: shape mismatch, a concrete ``alpha`` outside ``[0, 1]`` or ``gamma`` that
        is negative (either not finite), or (on concrete inputs) targets outside ``[0, 1]`` or
        non-finite logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import sigmoid_focal_loss
      >>> loss = sigmoid_focal_loss(jnp.array([2.0, -1.0, 0.5]), jnp.array([1, 0, 0]))
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.0005', '0.0170', '0.2831']

    References:
      Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017.
    """
    _validation.check_floating(logits, "logits")
    if np.shape(targets) != np.shape(logits):
        raise ValueError(
            f"targets must have the shape of logits {np.shape(logits)}, got {np.shape(targets)}."
        )
    if alpha is not None:
        alpha = _validation.hyperparameter(alpha, "alpha", high=1.0)
    gamma = _validation.hyperparameter(gamma, "gamma")
    z = _validation.to_compute_dtype(logits)
    t = jnp.asarray(targets).astype(z.dtype)
    mask = _common.row_mask(where, z.shape, name="logits")
    _validation.check_finite(z, "logits", mask)
    in_range = (t >= 0) & (t <= 1)
    _validation.check_value(
        jnp.all(in_range if mask is None else in_range | ~mask),
        "targets must lie in [0, 1]; found a target outside it.",
    )
    if mask is not None:
        z = jnp.where(mask, z, jnp.zeros((), z.dtype))
        t = jnp.where(mask, t, jnp.zeros((), z.dtype))
    # ±inf logits would give a limit (0 or inf): invalid input is NaN, like out-of-range targets
    # (added, not selected, so that the gradient is NaN as well).
    z = z + jnp.where(jnp.isfinite(z), jnp.zeros((), z.dtype), jnp.full((), jnp.nan, z.dtype))
    t = jnp.where(in_range, t, jnp.nan)
    loss = _sigmoid_focal_term(z, t, jnp.asarray(gamma, z.dtype))
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return _common.apply_mask(loss, mask)
