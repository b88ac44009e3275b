"""MMCE: the maximum mean calibration error, a differentiable batch-level calibration loss."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from calib_jax.losses import _common

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def _safe_sqrt(x: Array) -> Array:
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), jnp.zeros((), x.dtype))


def mmce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weighted: bool = False,
    kernel_width: float = 0.4,
    where: ArrayLike | None = None,
) -> Array:
    r"""Maximum mean calibration error (MMCE) of a batch: a differentiable scalar.

    With confidence :math:`r_i = \max_k p_{ik}` (``p = softmax(z)``), correctness
    :math:`a_i = \mathbf 1[\hat y_i = y_i]` (``ŷ`` the first maximum of ``p``) and the
    Laplacian kernel :math:`k(r, r') = \exp(-|r - r'| / w)`, ``w = kernel_width``:

    * unweighted: :math:`\mathrm{MMCE}^2 = \frac{1}{N^2}\sum_{ij}(a_i - r_i)(a_j - r_j)k(r_i, r_j)`;
    * weighted (``weighted=True``, the training form), with ``m`` correct samples
      :math:`D_c` and ``n`` wrong ones :math:`D_w`:

      .. math::
        \mathrm{MMCE}_w^2 = \sum_{D_c \times D_c}\frac{(1-r_i)(1-r_j)k}{m^2}
          + \sum_{D_w \times D_w}\frac{r_i r_j k}{n^2}
          - 2\sum_{D_c \times D_w}\frac{(1-r_i) r_j k}{m n},

      defined as 0 when ``m = 0`` or ``n = 0``.

    Returns ``sqrt(max(MMCE², 0))`` (with a zero, finite gradient at 0). The gradient flows
    through the confidences ``r`` only (``a`` is piecewise constant). All leading dimensions
    are flattened into one batch of ``N`` rows; masked rows are dropped exactly (``N``, ``m``,
    ``n`` count valid rows only), so a padded batch gives the value of the unpadded one.
    Memory and time are ``O(N²)``: meant for training batches.

    Difference from the public code: the authors' TensorFlow and PyTorch implementations
    divide each pair sum by its pair count twice (a mean over the pair matrix, then a second
    division by ``m²``, ``n²`` or ``m·n``) and add ``1e-10`` under the square root; we follow
    the equation of the paper, so values (and the effective ``λ``) differ from theirs.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      weighted: use the weighted estimator ``MMCE_w`` instead of the unweighted one.
      kernel_width: Laplacian kernel width ``w > 0`` (paper: 0.4).
      where: optional boolean mask broadcastable to ``labels.shape``; False rows are dropped.

    Returns:
      A scalar (float32 or wider); 0 for an empty (fully masked) batch, NaN if an unmasked
      label is out of range or an unmasked logit is not finite.

    Raises:
      ValueError: ``kernel_width <= 0``, mismatched shapes, or (on concrete inputs) labels
        outside ``[0, K)`` or non-finite logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import mmce
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> print(f"{float(mmce(logits, labels)):.4f}")
      0.1647
      >>> print(f"{float(mmce(logits, labels, weighted=True)):.4f}")
      0.7566

    References:
      Kumar, Sarawagi & Jain, "Trainable Calibration Measures for Neural Networks from Kernel
      Mean Embeddings", ICML 2018.
    """
    if not isinstance(kernel_width, jax.core.Tracer) and not kernel_width > 0:
        raise ValueError(f"kernel_width must be > 0, got {kernel_width}.")
    z, labels, mask, num_classes = _common.prepare(logits, labels, where)
    z = z.reshape(-1, num_classes)
    labels = labels.reshape(-1)
    valid = jnp.ones(labels.shape, bool) if mask is None else mask.reshape(-1)
    label_ok = (labels >= 0) & (labels < num_classes)

    shifted, _, lse = _common.log_normalizer(z)
    p = jnp.exp(shifted - lse[:, None])
    r = jnp.max(p, axis=-1)
    correct = jnp.argmax(jax.lax.stop_gradient(p), axis=-1) == labels
    kernel = jnp.exp(-jnp.abs(r[:, None] - r[None, :]) / kernel_width)
    zero = jnp.zeros((), r.dtype)
    if weighted:
        is_c, is_w = valid & correct, valid & ~correct
        m, n = jnp.sum(is_c), jnp.sum(is_w)
        u = jnp.where(is_c, 1 - r, zero) / jnp.maximum(m, 1)
        v = jnp.where(is_w, r, zero) / jnp.maximum(n, 1)
        d = u - v
        squared = jnp.where((m > 0) & (n > 0), d @ (kernel @ d), zero)
    else:
        count = jnp.sum(valid)
        e = jnp.where(valid, correct.astype(r.dtype) - r, zero)
        squared = (e @ (kernel @ e)) / jnp.maximum(count, 1).astype(r.dtype) ** 2
    value = _safe_sqrt(squared)
    # _safe_sqrt maps NaN to 0 and a wrong-only or correct-only batch is 0 by definition, so a
    # NaN/inf logit or a bad label in a valid row must poison the result explicitly.
    row_ok = label_ok & jnp.all(jnp.isfinite(z), axis=-1)
    return jnp.where(jnp.all(row_ok | ~valid), value, jnp.nan)
