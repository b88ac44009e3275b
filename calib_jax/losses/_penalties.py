"""DCA and MDCA: differentiable batch-level calibration penalties added to a base loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from calib_jax import _first_max
from calib_jax.losses import _common

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _flat_batch(
    logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None
) -> tuple[Array, Array, Array, Array, int]:
    """``(z [N, K], labels [N], valid [N], count, K)`` with leading dimensions flattened."""
    z, labels, mask, num_classes = _common.prepare(logits, labels, where)
    z = _common.poison_neg_inf(z).reshape(-1, num_classes)
    labels = labels.reshape(-1)
    valid = jnp.ones(labels.shape, bool) if mask is None else mask.reshape(-1)
    count = jnp.maximum(jnp.sum(valid), 1).astype(z.dtype)
    return z, labels, valid, count, num_classes


def _poison_bad_labels(value: Array, labels: Array, valid: Array, num_classes: int) -> Array:
    # An out-of-range label would otherwise just count as a wrong or absent class; NaN or
    # +inf logits already give NaN through the softmax.
    label_ok = (labels >= 0) & (labels < num_classes)
    return jnp.where(jnp.all(label_ok | ~valid), value, jnp.nan)


@jax.custom_jvp
def _top_probability(z: Array) -> Array:
    """``max_k softmax(z)_k = 1 / Σ_k exp(z_k - max z)`` per row."""
    return 1 / jnp.sum(jnp.exp(z - jnp.max(z, axis=-1, keepdims=True)), axis=-1)


@_top_probability.defjvp
def _top_probability_jvp(primals, tangents):
    # dc = c·Σ_k (s_k - p_k) dz_k with s the maximum's indicator shared between tied maxima:
    # written out because autodiff of max z forms that share in extra passes over the logits.
    (z,), (dz,) = primals, tangents
    top = jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z - top)
    at_top = z == top
    norm = jnp.sum(e, axis=-1, keepdims=True)
    n_top = jnp.sum(at_top, axis=-1, keepdims=True).astype(z.dtype)
    c = 1 / norm
    share = jnp.where(at_top, 1 / n_top, 0) - e * c
    return c[..., 0], c[..., 0] * jnp.sum(share * dz, axis=-1)


def dca_penalty(logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None) -> Array:
    r"""Difference between confidence and accuracy (DCA) of a batch: a differentiable scalar.

    .. math::
      \mathrm{DCA} = \Bigl|\frac1N\sum_i c_i - \frac1N\sum_i a_i\Bigr|, \qquad
      c_i = \max_k p_{ik},\ a_i = \mathbf 1[\hat y_i = y_i],\ p = \mathrm{softmax}(z),

    with ``ŷ`` the first maximum of each row. Added to a base loss with a weight ``β``
    (``base + β·DCA``; the authors used ``β = 10`` with cross-entropy, the MDCA authors
    ``β = 1`` for their DCA baseline), e.g. with :func:`scalar_objective`::

      objective = lambda z, y, where=None: (
          scalar_objective(cross_entropy)(z, y, where=where) + 10.0 * dca_penalty(z, y, where=where)
      )

    The gradient flows through the confidences only (``a`` is piecewise constant); at
    ``DCA = 0`` it is 0. All leading dimensions are flattened into one batch of ``N`` rows;
    masked rows are dropped exactly (``N`` counts valid rows), so a padded batch gives the value
    of the unpadded one. Same value as netcal's ``DCAPenalty``.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      where: optional boolean mask broadcastable to ``labels.shape``; False rows are dropped.

    Returns:
      A scalar (float32 or wider); 0 for an empty (fully masked) batch, NaN if an unmasked label
      is out of range or an unmasked logit is NaN or ``+inf``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import dca_penalty
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
      >>> print(f"{float(dca_penalty(logits, jnp.array([0, 1, 1, 0]))):.4f}")
      0.0467

    References:
      Liang, Zhang, Wang & Jacobs, "Improved Trainable Calibration Method for Neural Networks
      on Medical Imaging Classification", BMVC 2020 (code: GB-TonyLiang/DCA, ``loss_fn.py``).
    """
    z, labels, valid, count, num_classes = _flat_batch(logits, labels, where)
    _, correct, _ = _first_max.top_label_of_logits(jax.lax.stop_gradient(z), labels)
    confidence = _top_probability(z)
    zero = jnp.zeros((), z.dtype)
    gap = jnp.sum(jnp.where(valid, confidence - correct.astype(z.dtype), zero)) / count
    return _poison_bad_labels(jnp.abs(gap), labels, valid, num_classes)


def mdca_penalty(logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None) -> Array:
    r"""Multi-class difference in confidence and accuracy (MDCA) of a batch: a differentiable
    scalar.

    .. math::
      \mathrm{MDCA} = \frac1K\sum_{k=1}^{K}\Bigl|\frac1N\sum_i p_{ik}
                      - \frac1N\sum_i \mathbf 1[y_i = k]\Bigr|,
      \qquad p = \mathrm{softmax}(z):

    for every class, the gap between its mean predicted probability and its frequency in the
    batch. Added to a base loss with a weight ``β`` (the authors pair it with cross-entropy,
    focal loss or label smoothing, with ``β = 1`` in their commands), e.g.::

      objective = lambda z, y, where=None: (
          scalar_objective(cross_entropy)(z, y, where=where) + 1.0 * mdca_penalty(z, y, where=where)
      )

    Computed as one weighted column sum of ``p - onehot(y)`` over the valid rows; the derivative
    of ``|·|`` at 0 is 0. All leading dimensions are flattened into one batch of ``N`` rows;
    masked rows are dropped exactly (``N`` counts valid rows), so a padded batch gives the value
    of the unpadded one.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      where: optional boolean mask broadcastable to ``labels.shape``; False rows are dropped.

    Returns:
      A scalar (float32 or wider); 0 for an empty (fully masked) batch, NaN if an unmasked label
      is out of range or an unmasked logit is NaN or ``+inf``.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import mdca_penalty
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
      >>> print(f"{float(mdca_penalty(logits, jnp.array([0, 1, 1, 0]))):.4f}")
      0.1812

    References:
      Hebbalaguppe, Prakash, Madan & Arora, "A Stitch in Time Saves Nine: A Train-Time
      Regularizing Loss for Improved Neural Network Calibration", CVPR 2022 (code:
      mdca-loss/MDCA-Calibration, ``solvers/loss.py``).
    """
    z, labels, valid, count, num_classes = _flat_batch(logits, labels, where)
    shifted, _, lse = _common.log_normalizer(z)
    p = jnp.exp(shifted - lse[:, None])
    classes = jax.lax.broadcasted_iota(labels.dtype, p.shape, 1)
    residual = p - (classes == labels[:, None]).astype(p.dtype)
    # The masked column mean as a vector-matrix product (masked rows hold finite sanitised
    # logits, so a 0 weight removes them exactly).
    total = jnp.matmul(valid.astype(p.dtype), residual, precision=jax.lax.Precision.HIGHEST)
    gaps = total / count
    return _poison_bad_labels(jnp.mean(jnp.abs(gaps)), labels, valid, num_classes)
