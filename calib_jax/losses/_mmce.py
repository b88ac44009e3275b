"""MMCE: the maximum mean calibration error, a differentiable batch-level calibration loss."""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _validation
from calib_jax.losses import _common

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

VARIANTS = ("kumar2018", "mukhoti2020")


def _safe_sqrt(x: Array) -> Array:
    positive = x > 0
    return jnp.where(positive, jnp.sqrt(jnp.where(positive, x, 1)), jnp.zeros((), x.dtype))


def mmce(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    weighted: bool = False,
    variant: Literal["kumar2018", "mukhoti2020"] = "kumar2018",
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

    ``variant="kumar2018"`` (default) is the equation above: returns ``sqrt(max(MMCE², 0))``
    (with a zero, finite gradient at 0).

    ``variant="mukhoti2020"`` is the code that trained the MMCE rows of Mukhoti et al. (2020)
    (torrvision/focal_calibration, ``Losses/mmce.py``), so that their numbers can be
    reproduced. Weighted (``MMCE_weighted``): each block of pairs is averaged (divided by its
    pair count ``m²``, ``n²`` or ``m·n``) and then divided again by ``m² + 1e-5``,
    ``n² + 1e-5`` or ``m·n + 1e-5``, and ``1e-10`` is added under the square root:

    .. math::
      \mathrm{MMCE}_{w,\text{code}} = \Big(
        \sum_{D_c \times D_c}\frac{(1-r_i)(1-r_j)k}{m^2 (m^2 + 10^{-5})}
        + \sum_{D_w \times D_w}\frac{r_i r_j k}{n^2 (n^2 + 10^{-5})}
        - 2\sum_{D_c \times D_w}\frac{(1-r_i) r_j k}{m n (m n + 10^{-5})} + 10^{-10}\Big)^{1/2},

    and 0 (with a zero gradient) when ``m = 0`` or ``n = 0``, as the code's guard makes it.
    How the two relate: apart from the guards, the code divides the three sums of the equation
    once more by ``m²``, ``n²`` and ``m·n`` respectively; equivalently, it is the equation with
    the per-sample weights ``(1-r_i)/m`` and ``r_j/n`` replaced by ``(1-r_i)/m²`` and
    ``r_j/n²``. So when ``m = n = N/2`` the code's value is the equation's divided by ``N/2``
    (64 for a batch of 128); with both groups large the same ``λ`` is a far weaker regulariser
    in the code than in the equation (with ``n = 1`` the code's value can be the larger one,
    as in the example below). Unweighted (the code's ``MMCE`` class): the same ``MMCE²`` as
    the equation but *without* the square root. Where float rounding makes the argument of
    the code's square root negative, the code gives NaN; we give 0.

    The gradient flows through the confidences ``r`` only (``a``, ``m`` and ``n`` are piecewise
    constant). All leading dimensions are flattened into one batch of ``N`` rows; masked rows
    are dropped exactly (``N``, ``m``, ``n`` count valid rows only), so a padded batch gives the
    value of the unpadded one. Memory and time are ``O(N²)``: meant for training batches.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      weighted: use the weighted estimator ``MMCE_w`` instead of the unweighted one.
      variant: ``"kumar2018"`` (the paper's equation) or ``"mukhoti2020"`` (the code of
        Mukhoti et al. 2020); static.
      kernel_width: Laplacian kernel width ``w > 0`` (paper: 0.4); may be traced.
      where: optional boolean mask broadcastable to ``labels.shape``; False rows are dropped.

    Returns:
      A scalar (float32 or wider); 0 for an empty (fully masked) batch, NaN if an unmasked
      label is out of range, an unmasked logit is not finite, or a traced ``kernel_width`` is
      not ``> 0``.

    Raises:
      ValueError: ``kernel_width <= 0`` (concrete; a traced one is a value check, raised under
        :func:`calib_jax.validation.checked`), an unknown ``variant``, mismatched shapes, or
        (on concrete inputs) labels outside ``[0, K)`` or non-finite logits.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import mmce
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> print(f"{float(mmce(logits, labels)):.4f}")
      0.1647
      >>> print(f"{float(mmce(logits, labels, weighted=True)):.4f}")
      0.7566
      >>> print(f"{float(mmce(logits, labels, weighted=True, variant='mukhoti2020')):.4f}")
      0.8355

    References:
      Kumar, Sarawagi & Jain, "Trainable Calibration Measures for Neural Networks from Kernel
      Mean Embeddings", ICML 2018. Mukhoti et al., "Calibrating Deep Neural Networks using
      Focal Loss", NeurIPS 2020 (code: github.com/torrvision/focal_calibration).
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}.")
    width_ok = _check_kernel_width(kernel_width)
    z, labels, mask, num_classes = _common.prepare(logits, labels, where)
    z = z.reshape(-1, num_classes)
    labels = labels.reshape(-1)
    valid = jnp.ones(labels.shape, bool) if mask is None else mask.reshape(-1)
    label_ok = (labels >= 0) & (labels < num_classes)

    shifted, _, lse = _common.log_normalizer(z)
    p = jnp.exp(shifted - lse[:, None])
    r = jnp.max(p, axis=-1)
    correct = jnp.argmax(jax.lax.stop_gradient(p), axis=-1) == labels
    # A bad traced width is replaced by 1 so that the kernel (and its gradient) stay finite;
    # the result is poisoned below instead.
    width = jnp.where(width_ok, kernel_width, 1).astype(r.dtype)
    kernel = jnp.exp(-jnp.abs(r[:, None] - r[None, :]) / width)
    zero = jnp.zeros((), r.dtype)
    if weighted:
        is_c, is_w = valid & correct, valid & ~correct
        m, n = jnp.sum(is_c), jnp.sum(is_w)
        both = (m > 0) & (n > 0)
        u = jnp.where(is_c, 1 - r, zero)
        v = jnp.where(is_w, r, zero)
        mf = jnp.maximum(m, 1).astype(r.dtype)
        nf = jnp.maximum(n, 1).astype(r.dtype)
        if variant == "kumar2018":
            d = u / mf - v / nf
            squared = jnp.where(both, d @ (kernel @ d), zero)
        else:
            ku, kv = kernel @ u, kernel @ v
            squared = (
                (u @ ku) / (mf * mf * (mf * mf + 1e-5))
                + (v @ kv) / (nf * nf * (nf * nf + 1e-5))
                - 2 * (u @ kv) / (mf * nf * (mf * nf + 1e-5))
                + 1e-10
            )
            squared = jnp.where(both, squared, zero)
        value = _safe_sqrt(squared)
    else:
        count = jnp.sum(valid)
        e = jnp.where(valid, correct.astype(r.dtype) - r, zero)
        squared = (e @ (kernel @ e)) / jnp.maximum(count, 1).astype(r.dtype) ** 2
        value = _safe_sqrt(squared) if variant == "kumar2018" else squared
    # _safe_sqrt maps NaN to 0 and a wrong-only or correct-only batch is 0 by definition, so a
    # NaN/inf logit or a bad label in a valid row must poison the result explicitly.
    row_ok = label_ok & jnp.all(jnp.isfinite(z), axis=-1)
    return jnp.where(jnp.all(row_ok | ~valid) & width_ok, value, jnp.nan)


def _check_kernel_width(kernel_width: float) -> Array | bool:
    """Static shape check; value check ``kernel_width > 0`` (eager raise, checkify when traced).

    Returns whether the width is valid (a traced bool when traced), to poison the result.
    """
    if np.ndim(kernel_width) != 0:
        raise ValueError(f"kernel_width must be a scalar, got shape {np.shape(kernel_width)}.")
    message = "kernel_width must be > 0."
    if isinstance(kernel_width, jax.core.Tracer):
        ok = kernel_width > 0
        _validation.check_value(ok, message)
        return ok
    if not kernel_width > 0:
        raise ValueError(f"kernel_width must be > 0, got {kernel_width}.")
    return True
