"""Calibration-aware training losses, optax-style.

Per-example losses ``fn(logits[..., K], labels[...], *, hyperparameters, where=None) ->
loss[...]`` with integer labels and any number of leading batch dimensions (the caller
reduces; :func:`scalar_objective` builds the usual mean-over-valid-rows objective). All are
computed in float32 or wider whatever the input dtype, work under ``jit``/``vmap``/``grad``,
have finite gradients for every finite logit, and give NaN (or raise, eagerly or under
:func:`calib_jax.validation.checked`) on out-of-range labels or NaN/inf logits. Definitions
are given, with their sources, in each loss's docstring.
"""

from calib_jax.losses._adafocal import (
    AdaFocalState,
    adafocal_init,
    adafocal_loss,
    adafocal_update,
    adafocal_validation_sums,
)
from calib_jax.losses._classification import (
    brier_score,
    cross_entropy,
    entropy_regularized_cross_entropy,
    label_smoothing_cross_entropy,
)
from calib_jax.losses._focal import adaptive_focal_loss, focal_loss, sigmoid_focal_loss
from calib_jax.losses._mmce import mmce
from calib_jax.losses._objective import scalar_objective
from calib_jax.losses._penalties import dca_penalty, mdca_penalty
from calib_jax.losses._wider import (
    dual_focal_loss,
    logit_norm_cross_entropy,
    margin_label_smoothing,
    poly1_cross_entropy,
)

__all__ = [
    "AdaFocalState",
    "adafocal_init",
    "adafocal_loss",
    "adafocal_update",
    "adafocal_validation_sums",
    "adaptive_focal_loss",
    "brier_score",
    "cross_entropy",
    "dca_penalty",
    "dual_focal_loss",
    "entropy_regularized_cross_entropy",
    "focal_loss",
    "label_smoothing_cross_entropy",
    "logit_norm_cross_entropy",
    "margin_label_smoothing",
    "mdca_penalty",
    "mmce",
    "poly1_cross_entropy",
    "scalar_objective",
    "sigmoid_focal_loss",
]
