"""Turning a per-example loss into the scalar objective of a training step."""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import jax
import jax.numpy as jnp

from calib_jax import _validation
from calib_jax.losses import _common
from calib_jax.losses._mmce import VARIANTS, mmce

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

REDUCTIONS = ("mean", "sum")


def scalar_objective(
    loss_fn: Callable[..., Array],
    *,
    mmce_weight: float = 0.0,
    kernel_width: float = 0.4,
    mmce_variant: Literal["kumar2018", "mukhoti2020"] = "kumar2018",
    reduction: Literal["mean", "sum"] = "mean",
    penalty: Callable[..., Array] | None = None,
    penalty_weight: float = 1.0,
) -> Callable[..., Array]:
    r"""Wrap a per-example loss into ``objective(logits, labels, where=None) -> scalar``.

    .. math::
      J = \frac{\sum_i \mathrm{where}_i\,\ell_i}{\max(1, \sum_i \mathrm{where}_i)}
          + λ\,\mathrm{MMCE}_w,

    the mean of ``loss_fn(logits, labels, where=where)`` over the valid entries (0 when none is
    valid) plus, when ``mmce_weight = λ > 0``, the weighted MMCE of the same batch
    (:func:`mmce` with ``weighted=True`` and ``variant=mmce_variant``), the training objective
    of Kumar et al. (2018) (they used ``λ = 2`` on CIFAR and 8 on 20 Newsgroups with
    cross-entropy; Mukhoti et al. (2020) trained their MMCE rows with ``λ = 2`` and
    ``mmce_variant="mukhoti2020"``, the normalisation of their code). Bind
    hyperparameters first, e.g. ``functools.partial(focal_loss, gamma=3.0)``. For a loss with
    one value per logit (:func:`sigmoid_focal_loss`, ``labels`` = targets) the mean runs over
    every valid element. Padded batches: pass ``where`` and padded rows count for nothing.

    ``penalty`` adds a batch-level regulariser ``β·penalty(logits, labels, where=where)``
    (``β = penalty_weight``), e.g. :func:`mdca_penalty` or :func:`dca_penalty` as in
    Hebbalaguppe et al. (2022) and Liang et al. (2020): ``J + β·P`` (scaled by ``n`` with
    ``reduction="sum"``, like the MMCE term).

    ``reduction="sum"`` returns ``n·J`` instead, ``n`` the number of valid entries: the sum of
    the per-example losses plus ``n·λ·MMCE_w``. That is how the code of Mukhoti et al. (2020)
    trains (its losses are summed over the batch, and its MMCE objective is
    ``batch_size · (mean CE + λ·MMCE_w)``); with SGD it scales the gradient by the batch size.

    Args:
      loss_fn: a per-example loss ``fn(logits, labels, *, where=None) -> loss`` from this
        module (or anything with that signature).
      mmce_weight: ``λ >= 0``; 0 adds no MMCE term (and costs nothing).
      kernel_width: Laplacian kernel width for the MMCE term.
      mmce_variant: ``"kumar2018"`` (the equation) or ``"mukhoti2020"`` (the code of Mukhoti
        et al. 2020): see :func:`mmce`.
      reduction: ``"mean"`` (default) or ``"sum"`` over the valid entries, as above.
      penalty: optional batch penalty ``fn(logits, labels, *, where=None) -> scalar``.
      penalty_weight: ``β >= 0``, its weight (ignored without ``penalty``).

    Returns:
      ``objective(logits, labels, where=None) -> scalar`` (float32 or wider), ready for
      ``jax.value_and_grad`` in an optax train step.

    Raises:
      ValueError: a negative ``mmce_weight`` or ``penalty_weight``, an unknown
        ``mmce_variant`` or ``reduction``; the objective raises on an empty batch or a
        penalty that is not a scalar.

    Examples:
      >>> import functools, jax.numpy as jnp
      >>> from calib_jax.losses import focal_loss, scalar_objective
      >>> objective = scalar_objective(functools.partial(focal_loss, gamma=3.0), mmce_weight=2.0)
      >>> logits = jnp.array([[3.0, 0.0], [2.0, 0.0], [0.0, 1.0], [0.5, 0.0]])
      >>> labels = jnp.array([0, 1, 1, 0])
      >>> print(f"{float(objective(logits, labels)):.4f}")
      1.8844
      >>> print(f"{float(objective(logits, labels, where=jnp.array([1, 1, 1, 0]) > 0)):.4f}")
      2.0361

    References:
      Kumar, Sarawagi & Jain, "Trainable Calibration Measures for Neural Networks from Kernel
      Mean Embeddings", ICML 2018.
    """
    _validation.check_nonnegative(mmce_weight, "mmce_weight")
    if mmce_variant not in VARIANTS:
        raise ValueError(f"mmce_variant must be one of {VARIANTS}, got {mmce_variant!r}.")
    if reduction not in REDUCTIONS:
        raise ValueError(f"reduction must be one of {REDUCTIONS}, got {reduction!r}.")
    _validation.check_nonnegative(penalty_weight, "penalty_weight")
    if penalty is not None and not callable(penalty):
        raise TypeError(f"penalty must be a function, got {type(penalty).__name__}.")

    def objective(logits: ArrayLike, labels: ArrayLike, where: ArrayLike | None = None) -> Array:
        per_example = loss_fn(logits, labels, where=where)
        if per_example.size == 0:
            raise ValueError(
                f"the batch is empty (loss shape {per_example.shape}); the mean over no rows "
                "is undefined. Pad the batch and mask the padding with where= instead."
            )
        mask = _common.row_mask(where, per_example.shape, name="the loss")
        dtype = per_example.dtype
        if mask is None:
            count = jnp.asarray(per_example.size, dtype)
            total = jnp.sum(per_example) if reduction == "sum" else jnp.mean(per_example)
        else:
            count = jnp.sum(mask).astype(dtype)
            total = jnp.sum(jnp.where(mask, per_example, jnp.zeros((), dtype)))
            if reduction == "mean":
                total = total / jnp.maximum(count, 1)
        value = total
        # "sum" multiplies the whole mean objective, MMCE term included, by the count.
        scale = count if reduction == "sum" else 1
        if isinstance(mmce_weight, jax.core.Tracer) or mmce_weight > 0:
            value = value + scale * mmce_weight * mmce(
                logits,
                labels,
                weighted=True,
                variant=mmce_variant,
                kernel_width=kernel_width,
                where=where,
            )
        if penalty is not None:
            term = jnp.asarray(penalty(logits, labels, where=where))
            if term.shape != ():
                raise ValueError(f"penalty must return a scalar, got shape {term.shape}.")
            value = value + scale * penalty_weight * term
        return value

    return objective
