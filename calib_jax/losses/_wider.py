"""Per-example calibration losses of the wider field: margin-based label smoothing (MbLS), logit
normalisation, dual focal loss and Poly-1 cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.custom_derivatives import SymbolicZero

from calib_jax import _validation
from calib_jax.losses import _common
from calib_jax.losses._focal import _gamma_array

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def margin_label_smoothing(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    margin: float = 10.0,
    alpha: float = 0.1,
    where: ArrayLike | None = None,
) -> Array:
    r"""Margin-based label smoothing (MbLS): cross-entropy plus a hinge on large logit gaps.

    .. math::
      \ell = -\log p_y + \frac{α}{K}\sum_{k=1}^{K} \max\bigl(0,\ \max_j z_j - z_k - m\bigr),
      \qquad p = \mathrm{softmax}(z).

    The penalty only acts on logits more than ``m`` below the row maximum, so unlike label
    smoothing it leaves moderately confident predictions alone. ``α = 0`` is exactly
    :func:`cross_entropy`. The mean of this loss over a batch is the authors' training
    objective (their code averages the hinge over all ``N·K`` entries, which is the batch mean
    of the per-example ``1/K`` average here). Gradient: the hinge's derivative at exactly 0 is
    taken as 0, and the derivative of ``max_j z_j`` is shared equally between tied maxima (the
    authors' PyTorch code gives it to one of them; both are subgradients).

    Numerics: the gaps are halved before they are formed, so ``max_j z_j - z_k`` cannot
    overflow for any finite logits; the penalty is finite whenever its exact value is (the
    cross-entropy term overflows to ``+inf`` only where ``-log p_y`` itself exceeds the
    largest float).

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      margin: ``m >= 0``, the logit gap tolerated before the penalty starts (paper: 10); may
        be traced (and differentiated).
      alpha: ``α >= 0``, the weight of the penalty (paper: 0.1); may be traced.
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: a negative ``margin`` or ``alpha``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import margin_label_smoothing
      >>> logits = jnp.array([[12.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = margin_label_smoothing(logits, jnp.array([0, 2]))
      >>> print([f"{float(x):.4f}" for x in loss])  # the first row pays (2 + 3) * 0.1 / 3
      ['0.1667', '1.5514']

    References:
      Liu, Ben Ayed, Galdran & Dolz, "The Devil is in the Margin: Margin-based Label Smoothing
      for Network Calibration", CVPR 2022 (code: by-liu/MbLS, ``logit_margin_l1.py``).
    """
    _validation.check_nonnegative(margin, "margin")
    _validation.check_nonnegative(alpha, "alpha")
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    _, m, lse = _common.log_normalizer(z)
    ce = lse - _common.label_logit(z, labels, m)
    return _common.apply_mask(ce + (2 * alpha) * _margin_penalty(z, margin), mask)


def _half_gaps(z: Array, margin: ArrayLike) -> tuple[Array, Array]:
    """``(max z, relu(max z - z - margin) / 2)`` over the last axis; the halved operands keep
    ``max z - z_k`` from overflowing for any finite logits."""
    top = jnp.max(z, axis=-1, keepdims=True)
    return top, jax.nn.relu(0.5 * top - 0.5 * z - 0.5 * margin)


@jax.custom_jvp
def _margin_penalty(z: Array, margin: ArrayLike) -> Array:
    """``(1/K) Σ_k relu(max z - z_k - margin) / 2`` (each term divided by K before the sum, so
    the sum cannot overflow either)."""
    return jnp.sum(_half_gaps(z, margin)[1] * (1 / z.shape[-1]), axis=-1)


def _margin_penalty_jvp(primals, tangents):
    # Hand-written because autodiff of max z forms its tie-sharing derivative in extra passes
    # (half of MbLS's value-and-grad time at K = 10): d/dz_k = (n_active·[z_k = max z]/n_max
    # - [active_k]) / (2K), the maximum's share split equally between tied maxima.
    z, margin = primals
    dz, d_margin = tangents
    k = z.shape[-1]
    top, half_gap = _half_gaps(z, margin)
    active = half_gap > 0
    at_top = z == top
    n_active = jnp.sum(active, axis=-1, keepdims=True).astype(z.dtype)
    n_top = jnp.sum(at_top, axis=-1, keepdims=True).astype(z.dtype)
    out = jnp.sum(half_gap * (1 / k), axis=-1)
    tangent = jnp.zeros_like(out)
    if not isinstance(dz, SymbolicZero):
        coefficient = jnp.where(at_top, n_active / n_top, 0) - active.astype(z.dtype)
        tangent = jnp.sum(coefficient * dz, axis=-1) * (0.5 / k)
    if not isinstance(d_margin, SymbolicZero):
        tangent = tangent - n_active[..., 0] * (0.5 / k) * d_margin
    return out, tangent


_margin_penalty.defjvp(_margin_penalty_jvp, symbolic_zeros=True)


def _power_of_two(exponent: Array, dtype) -> Array:
    """``2.0 ** exponent`` built from its bits (exact), for exponents of normal numbers."""
    info = jnp.finfo(dtype)
    int_dtype = jnp.int32 if info.bits == 32 else jnp.int64
    biased = exponent.astype(int_dtype) + (info.maxexp - 1)
    return jax.lax.bitcast_convert_type(biased << info.nmant, dtype)


def logit_norm_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    temperature: float = 0.04,
    where: ArrayLike | None = None,
) -> Array:
    r"""Cross-entropy of L2-normalised logits (LogitNorm), per example.

    .. math::
      \ell = -\log \mathrm{softmax}(u)_y, \qquad
      u = \frac{z}{τ\,(\lVert z \rVert_2 + 10^{-7})},

    with the ``1e-7`` of the authors' code. Up to that constant the loss depends only on the
    direction of the logit vector, so training cannot lower it by inflating the logits' norm
    (the source of overconfidence this loss removes); ``|u_k| <= 1/τ`` bounds every loss by
    ``2/τ + log K``. The released training command uses ``τ = 0.01`` on CIFAR-10 (the script's
    default is 1); the default here is 0.04. The norm is computed after scaling each row by a
    power of two near ``1/max_k |z_k|``, so it never overflows (``±3e38`` logits are fine), and
    an all-zero row has the finite gradient ``(p - e_y)/(τ·1e-7)`` of the formula (the norm's
    derivative at 0 taken as 0, as in PyTorch).

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      temperature: ``τ > 0``.
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: ``temperature <= 0``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import logit_norm_cross_entropy
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = logit_norm_cross_entropy(logits, jnp.array([0, 2]), temperature=0.5)
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.2115', '2.2395']

    References:
      Wei, Xie, Cheng, Feng, An & Li, "Mitigating Neural Network Overconfidence with Logit
      Normalization", ICML 2022 (code: hongxin001/logitnorm_ood, ``common/loss_function.py``).
    """
    if not isinstance(temperature, jax.core.Tracer) and not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}.")
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    z = _common.poison_neg_inf(z)
    # z/‖z‖ is scale-free, so the rows are first scaled by a power of two near 1/max|z_k| (a
    # constant for the gradient, like a softmax's shift): ‖z‖ of ±3e38 logits would overflow,
    # and dividing by max|z_k| itself flushes to 0 on XLA:CPU (its reciprocal is subnormal).
    info = jnp.finfo(z.dtype)
    top = jax.lax.stop_gradient(jnp.max(z, axis=-1, keepdims=True))
    bottom = jax.lax.stop_gradient(jnp.min(z, axis=-1, keepdims=True))
    _, exponent = jnp.frexp(jnp.maximum(top, -bottom))
    scale = _power_of_two(jnp.clip(-exponent, 3 - info.maxexp, info.maxexp - 3), z.dtype)
    w = z * scale
    squares = jnp.sum(w * w, axis=-1, keepdims=True)
    nonzero = squares > 0
    norm = jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, squares, 1)), 0)
    t = temperature * (norm + 1e-7 * scale)
    u = w / t
    # max_k u_k is the largest logit put through the same arithmetic, so no pass over u is
    # needed to find the softmax's shift; the label's u is gathered from w, not from u.
    m = jax.lax.stop_gradient(top * scale / t)
    lse = jnp.log(jnp.sum(jnp.exp(u - m), axis=-1))
    u_y = _validation.take_label(w, labels) / t[..., 0]
    return _common.apply_mask(lse - (u_y - m[..., 0]), mask)


def _dual_weight(log_p: Array, p_j: Array, gamma: Array) -> tuple[Array, Array, Array]:
    """``(w, b, log b)`` with ``b = 1 - p_y + p_j`` and ``w = b^γ`` (``0^0 = 1``)."""
    b = -jnp.expm1(log_p) + p_j
    positive = b > 0
    log_b = jnp.log(jnp.where(positive, b, jnp.ones((), b.dtype)))
    w = jnp.where(positive, jnp.exp(gamma * log_b), (gamma == 0).astype(b.dtype))
    return w, b, log_b


@jax.custom_jvp
def _dual_focal_term(log_p: Array, p_j: Array, gamma: Array) -> Array:
    """``-(1 - p_y + p_j)^γ · log p_y`` from ``log p_y <= 0`` and ``p_j``, elementwise."""
    return -_dual_weight(log_p, p_j, gamma)[0] * log_p


def _dual_focal_term_jvp(primals, tangents):
    # Autodiff of b^γ gives γ·b^(γ-1) = inf at b = 0 for γ < 1. With r = log p_y / b, finite
    # because |log p_y| <= 1 - p_y <= b near saturation: d/d(log p_y) = w·(γ·p_y·r - 1),
    # d/dp_j = -γ·w·r, d/dγ = -w·log b·log p_y. p_y·log p_y is formed as a product that is 0
    # at p_y = 0, where log p_y = -inf (logit gaps beyond the float range).
    log_p, p_j, gamma = primals
    d_log_p, d_p_j, d_gamma = tangents
    w, b, log_b = _dual_weight(log_p, p_j, gamma)
    positive = b > 0
    p = jnp.exp(log_p)
    finite_log_p = jnp.where(p > 0, log_p, jnp.zeros((), log_p.dtype))
    safe_b = jnp.where(positive, b, jnp.ones((), b.dtype))
    ratio = jnp.where(positive, finite_log_p / safe_b, -jnp.ones((), b.dtype))
    p_ratio = jnp.where(positive, p * finite_log_p / safe_b, -jnp.ones((), b.dtype))
    out = -w * log_p
    tangent = jnp.zeros_like(out)
    if not isinstance(d_log_p, SymbolicZero):
        tangent = w * (gamma * p_ratio - 1) * d_log_p
    if not isinstance(d_p_j, SymbolicZero):
        tangent = tangent - gamma * w * ratio * d_p_j
    if not isinstance(d_gamma, SymbolicZero):
        tangent = tangent + jnp.where(positive, -w * log_b * log_p, 0) * d_gamma
    return out, tangent


_dual_focal_term.defjvp(_dual_focal_term_jvp, symbolic_zeros=True)


def dual_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    gamma: ArrayLike = 5.0,
    where: ArrayLike | None = None,
) -> Array:
    r"""Dual focal loss with integer labels, per example.

    .. math::
      \ell = -(1 - p_y + p_j)^γ \log p_y, \qquad
      p_j = \max\{p_k : p_k < p_y\}\ (0 \text{ if there is none}), \quad p = \mathrm{softmax}(z).

    ``p_j`` is the largest probability *ranked below* the true class, as in the authors' code
    and paper ("the highest logit ranked after the ground truth logit"): for a correct
    prediction it is the runner-up; for a wrong one it is the next class below the label, not
    the predicted class. Classes tied with the label (``z_k = z_y``) are skipped, as the
    authors' strict ``<`` does; the comparison is made on the logits (the same order as the
    probabilities, without their rounding). The gradient flows through ``p_y`` and ``p_j`` (as
    in the authors' PyTorch code, where ``topk`` passes it to ``p_j``), is hand-derived and
    finite for every finite logit and every ``γ >= 0`` (including ``γ < 1`` at saturation);
    ``γ`` is differentiable too. ``γ = 0`` is :func:`cross_entropy`.

    The default ``γ = 5`` is the authors' published choice for ResNet-50 on CIFAR-10 and
    CIFAR-100 (their README table; they tune ``γ`` per model, between 2.3 and 6.1). Their
    class's own default is ``γ = 0``, which is plain cross-entropy.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      gamma: ``γ >= 0``: a scalar or an array broadcastable to ``labels.shape``; may be traced.
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: a negative (concrete) ``gamma``, or a ``gamma`` of the wrong shape.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import dual_focal_loss
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = dual_focal_loss(logits, jnp.array([0, 2]), gamma=5.0)
      >>> print([f"{float(x):.4f}" for x in loss])  # row 2: no class ranks below the label
      ['0.0002', '0.4716']

    References:
      Tao, Dong & Xu, "Dual Focal Loss for Calibration", ICML 2023 (code:
      Linwei94/ICML2023-DualFocalLoss, ``dual_focal_loss.py``).
    """
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    gamma = _gamma_array(gamma, labels.shape, z.dtype)
    _, m, lse = _common.log_normalizer(z)
    z_y = _validation.take_label(z, labels)
    below = z < jax.lax.stop_gradient(z_y)[..., None]
    lowest = jnp.finfo(z.dtype).min
    runner = jnp.max(jnp.where(below, z, lowest), axis=-1)
    # runner = lowest means nothing ranks below the label, or a class at the lowest float does,
    # whose probability is 0 anyway: a per-row test instead of a second pass over the logits.
    found = runner > lowest
    p_j = jnp.where(found, jnp.exp(jnp.where(found, runner - m, 0) - lse), 0)
    return _common.apply_mask(_dual_focal_term(z_y - m - lse, p_j, gamma), mask)


def poly1_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: float = 1.0,
    where: ArrayLike | None = None,
) -> Array:
    r"""Poly-1 cross-entropy with integer labels, per example.

    .. math::
      \ell = -\log p_y + ε\,(1 - p_y), \qquad p = \mathrm{softmax}(z),

    cross-entropy with the first term of its Taylor series in ``1 - p_y`` reweighted; equal to
    ``optax.losses.poly_loss_cross_entropy`` on one-hot labels (whose default is ``ε = 2``).
    ``ε >= -1`` is required: below it the loss grows as ``p_y → 1`` (its derivative in ``p_y``
    at 1 is ``-1 - ε``), so it would penalise correct confident predictions. ``1 - p_y`` is
    ``-expm1(log p_y)``, accurate for confident predictions.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      epsilon: ``ε >= -1`` (the paper recommends 2 for ImageNet classification, -1 for
        detection, and tuning per task).
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: ``epsilon < -1``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import poly1_cross_entropy
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = poly1_cross_entropy(logits, jnp.array([0, 2]), epsilon=1.0)
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.3261', '2.3395']

    References:
      Leng et al., "PolyLoss: A Polynomial Expansion Perspective of Classification Loss
      Functions", ICLR 2022.
    """
    if not isinstance(epsilon, jax.core.Tracer) and not epsilon >= -1:
        raise ValueError(f"epsilon must be >= -1, got {epsilon}.")
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    log_p = _common.label_log_prob(z, labels)
    return _common.apply_mask(-log_p - epsilon * jnp.expm1(log_p), mask)
