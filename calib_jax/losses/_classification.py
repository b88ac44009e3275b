"""Softmax losses with integer labels: cross-entropy, label smoothing, entropy-regularised
cross-entropy and the Brier score."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from calib_jax import _tuning, _validation
from calib_jax.losses import _common

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def cross_entropy(logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None) -> Array:
    r"""Softmax cross-entropy with integer labels, per example.

    .. math::
      \ell(z, y) = -\log p_y, \qquad p = \mathrm{softmax}(z)

    computed as ``logsumexp(z) - z[y]`` after subtracting the row maximum, so it is exact for
    any finite logits. Same value as ``optax.softmax_cross_entropy_with_integer_labels``.

    Conventions: computed in float32 (or float64 for float64 input) whatever the input dtype
    and returned in that dtype. Invalid input, an out-of-range label or a NaN or infinite
    logit (``-inf`` included: it is not read as "probability 0"), raises ``ValueError`` on
    concrete inputs, raises under :func:`calib_jax.validation.checked`, and gives its row NaN
    (value and gradient) under plain ``jit``; every loss in :mod:`calib_jax.losses` does the
    same.

    Args:
      logits: ``[..., K]`` floating logits, any number of leading batch dimensions.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0 (and
        a zero gradient) whatever their logits and labels hold.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import cross_entropy
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = cross_entropy(logits, jnp.array([0, 2]))
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.1698', '1.5514']

    References:
      Goodfellow, Bengio & Courville, *Deep Learning* (2016), section 6.2.2.3.
    """
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    return _common.apply_mask(-_common.label_log_prob(z, labels), mask)


def label_smoothing_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: float = 0.1,
    paper_variant: bool = False,
    where: ArrayLike | None = None,
) -> Array:
    r"""Cross-entropy against a label-smoothed target, per example.

    Default (Szegedy et al. 2016): with probability ``ε`` the target is resampled uniformly over
    all ``K`` classes, so the target is :math:`\tilde p = (1-ε)\,\mathrm{onehot}(y) + ε/K` and

    .. math::
      \ell = -\sum_k \tilde p_k \log q_k
           = ε\,\mathrm{CE}(U \| q) + (1-ε)\,\mathrm{CE}(\mathrm{onehot}(y) \| q),
      \qquad q = \mathrm{softmax}(z).

    ``paper_variant=True`` uses the target of Mukhoti et al. (2020): ``1-ε`` on the true class
    and ``ε/(K-1)`` on every other class (they trained with ``ε = 0.05``); it equals the
    default with ``ε`` replaced by ``ε·K/(K-1)`` and needs ``K >= 2``. ``ε = 0`` is exactly
    :func:`cross_entropy`. Computed as ``lse - (1-ε)·z_y - ε·mean_k z_k`` (logits shifted by
    their row maximum), so it costs about as much as plain cross-entropy; the row mean is read
    from the unshifted logits, so the absolute error is about ``1e-7`` times the largest
    ``|z|`` of the row (float32).

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      epsilon: smoothing strength in ``[0, 1]`` (static or traced scalar; a traced value
        outside it gives NaN under ``jit`` and raises under
        :func:`calib_jax.validation.checked`).
      paper_variant: use the ``ε/(K-1)`` off-class target instead of the uniform ``ε/K``.
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: a concrete ``epsilon`` outside ``[0, 1]`` or not finite, or
        ``paper_variant`` with ``K < 2``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import label_smoothing_cross_entropy
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = label_smoothing_cross_entropy(logits, jnp.array([0, 2]), epsilon=0.1)
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.3365', '1.5181']

    References:
      Szegedy et al., "Rethinking the Inception Architecture for Computer Vision", CVPR 2016.
      Müller, Kornblith & Hinton, "When Does Label Smoothing Help?", NeurIPS 2019.
      Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020.
    """
    epsilon = _validation.hyperparameter(epsilon, "epsilon", high=1.0)
    z, labels, mask, num_classes = _common.prepare(logits, labels, where)
    if paper_variant:
        if num_classes < 2:
            raise ValueError("paper_variant label smoothing needs K >= 2 classes (ε/(K-1)).")
        epsilon = epsilon * num_classes / (num_classes - 1)
    _, m, lse = _common.log_normalizer(z)
    # mean_k z_k costs one more read of the raw logits (a reduction of the shifted logits would
    # make XLA:CPU materialise them); the cheapest read is backend-dependent (calib_jax._tuning).
    # ε is applied before the subtraction of ε·m (and 1/K before the sum): ε·(mean_k z_k - m)
    # formed in that order overflows for logits near the float maximum although the loss does not.
    if num_classes <= _tuning.current().matvec_max_classes:
        uniform = jnp.full((num_classes,), 1 / num_classes, z.dtype) * epsilon
        smooth = jnp.matmul(z, uniform, precision=jax.lax.Precision.HIGHEST) - epsilon * m
    else:
        smooth = jnp.sum(z * (epsilon / num_classes), axis=-1) - epsilon * m
    loss = lse - (1 - epsilon) * _common.label_logit(z, labels, m) - smooth
    return _common.apply_mask(loss, mask)


def entropy_regularized_cross_entropy(
    logits: ArrayLike, labels: ArrayLike, *, beta: float, where: ArrayLike | None = None
) -> Array:
    r"""Cross-entropy minus ``β`` times the predictive entropy (a confidence penalty), per example.

    .. math::
      \ell = -\log p_y - β\,H(p), \qquad H(p) = -\sum_k p_k \log p_k,\ p = \mathrm{softmax}(z).

    ``β > 0`` rewards less confident predictions (Pereyra et al. 2017); Mukhoti et al. (2020)
    show that focal loss is bounded below by this objective with ``β = γ``:
    ``focal_γ >= CE - γ·H(p)`` for ``γ >= 1``. ``0·log 0`` is taken as 0 (it is computed as
    ``p_k · log_softmax(z)_k``, and a class whose probability underflows to 0 adds exactly 0),
    so the value and the gradient are finite for every finite logit, e.g. ~0 for logits
    ``[3e38, -3e38, 0]`` with label 0.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      beta: finite entropy weight ``>= 0`` (static or traced; a traced negative value gives
        NaN under ``jit`` and raises under :func:`calib_jax.validation.checked`).
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider; may be negative).

    Raises:
      ValueError: a concrete ``beta`` that is negative or not finite.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import entropy_regularized_cross_entropy
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = entropy_regularized_cross_entropy(logits, jnp.array([0, 2]), beta=0.5)
      >>> print([f"{float(x):.4f}" for x in loss])
      ['-0.0923', '1.0638']

    References:
      Pereyra et al., "Regularizing Neural Networks by Penalizing Confident Output
      Distributions", ICLR workshop 2017.
      Mukhoti et al., "Calibrating Deep Neural Networks using Focal Loss", NeurIPS 2020.
    """
    beta = _validation.hyperparameter(beta, "beta")
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    shifted, m, lse = _common.log_normalizer(z)
    # H(p) = lse - Σ_k p_k·shifted_k: one pass over the logits, no [..., K] log-probabilities.
    # A class whose exp underflows to 0 adds 0 (its shifted logit may have overflowed to -inf,
    # and 0·-inf is NaN in the value and the gradient): both branches are sanitised.
    e = jnp.exp(shifted)
    present = e > 0
    e_shifted = jnp.where(present, e * jnp.where(present, shifted, 0), 0)
    entropy = lse - jnp.sum(e_shifted, axis=-1) / jnp.sum(e, axis=-1)
    loss = lse - _common.label_logit(z, labels, m) - beta * entropy
    return _common.apply_mask(loss, mask)


def brier_score(logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None) -> Array:
    r"""Multi-class Brier score of ``softmax(logits)``, per example (sum over classes).

    .. math::
      \ell = \sum_k (p_k - \mathbf 1[k = y])^2, \qquad p = \mathrm{softmax}(z),

    in ``[0, 2]``; the mean over the batch is the caller's. The true-class term uses
    ``1 - p_y = -expm1(log p_y)``, accurate to the float32 rounding of the log-softmax (an
    absolute ``~6e-8`` in ``1 - p_y``; see :func:`focal_loss` on tiny losses).

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example scores (float32 or wider).

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import brier_score
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = brier_score(logits, jnp.array([0, 2]))
      >>> print([f"{float(x):.4f}" for x in loss])
      ['0.0392', '0.9979']

    References:
      Brier, "Verification of Forecasts Expressed in Terms of Probability", Monthly Weather
      Review, 1950.
    """
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    shifted, m, lse = _common.log_normalizer(z)
    p = jnp.exp(shifted - lse[..., None])
    log_p_y = _common.label_logit(z, labels, m) - lse
    is_label = jax.lax.broadcasted_iota(labels.dtype, p.shape, p.ndim - 1) == labels[..., None]
    off_label = jnp.sum(jnp.where(is_label, jnp.zeros((), p.dtype), p * p), axis=-1)
    loss = off_label + jnp.square(jnp.expm1(log_p_y))
    return _common.apply_mask(loss, mask)
