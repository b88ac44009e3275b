"""Fit a calibrator on a validation split and report the metric table before and after."""

from __future__ import annotations

import functools
from typing import Any, NamedTuple

import jax.numpy as jnp

from calib_jax.calibrators._base import Array, ArrayLike, Calibrator


def _log_probs(p: Array) -> Array:
    # Probabilities enter the report as log-probabilities (softmax(log p) = p); a probability of
    # exactly 0 is floored at the smallest normal float so that NLL stays finite (~87.3 nats).
    return jnp.log(jnp.maximum(p, jnp.finfo(p.dtype).tiny))


def _as_logits(calibrator: Calibrator, x: Array) -> Array:
    return x if calibrator.inputs == "logits" else _log_probs(x)


class CalibrationResult(NamedTuple):
    """What :func:`calibrate_and_report` returns (unpacks as ``before, after, params``).

    Attributes:
      before: ``CalibrationReport`` of the uncalibrated test inputs.
      after: ``CalibrationReport`` of the calibrated test inputs.
      params: the fitted calibrator parameters (a pytree).
    """

    before: Any
    after: Any
    params: Any


def calibrate_and_report(
    calibrator: Calibrator,
    val_x: ArrayLike,
    val_labels: ArrayLike,
    test_x: ArrayLike,
    test_labels: ArrayLike,
    *,
    num_bins: int = 15,
) -> CalibrationResult:
    """Fit ``calibrator`` on the validation split; report the test metrics before and after.

    Both reports are :func:`calib_jax.metrics.calibration_report` on the test split (ECE, MCE,
    AdaECE, classwise-ECE, NLL, Brier, accuracy, error; ``num_bins`` equal-width bins). The
    "before" report scores the uncalibrated test inputs, the "after" report the calibrated
    ones: from ``calibrator.apply_logits`` where the calibrator has one, else from
    ``log(apply(...))`` with probabilities floored at the smallest normal float, so a
    calibrated probability of exactly 0 on a true label costs about 87.3 nats of NLL rather
    than infinity. Binary ``[N]`` inputs are reported as two-class ``[N, 2]`` problems.

    Args:
      calibrator: a :class:`Calibrator` (its ``inputs`` says logits or probabilities).
      val_x: validation logits or probabilities ``[N_val, K]`` (or ``[N_val]`` binary).
      val_labels: ``[N_val]`` int.
      test_x: test inputs ``[N_test, K]`` (or ``[N_test]``).
      test_labels: ``[N_test]`` int.
      num_bins: bins of the binned metrics (static).

    Returns:
      :class:`CalibrationResult` ``(before, after, params)``: two ``CalibrationReport``
      NamedTuples of scalars and the fitted parameters.

    Examples:
      >>> import jax, calib_jax as cj
      >>> z = 4.0 * jax.random.normal(jax.random.key(0), (4000, 10))
      >>> y = jax.random.categorical(jax.random.key(1), z / 4.0)
      >>> ts = cj.calibrators.temperature_scaling()
      >>> before, after, params = cj.calibrators.calibrate_and_report(
      ...     ts, z[:2000], y[:2000], z[2000:], y[2000:])
      >>> print(f"{float(before.ece):.2f} -> {float(after.ece):.2f}")
      0.41 -> 0.03
      >>> bool(before.accuracy == after.accuracy)
      True

    References:
      Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
    """
    from calib_jax import metrics

    params = calibrator.fit(val_x, val_labels)
    test_x = jnp.asarray(test_x)
    test_x = test_x.astype(jnp.promote_types(test_x.dtype, jnp.float32))
    if calibrator.apply_logits is not None:
        after_logits = calibrator.apply_logits(params, test_x)
    else:
        # apply returns probabilities whatever the input (ensemble TS takes logits).
        after_logits = _log_probs(calibrator.apply(params, test_x))
    before_logits = test_x
    if test_x.ndim == 1:
        if calibrator.inputs == "logits":
            before_logits = jnp.stack([jnp.zeros_like(test_x), test_x], axis=-1)
        else:
            before_logits = jnp.stack([1 - test_x, test_x], axis=-1)
    before_logits = _as_logits(calibrator, before_logits)
    report = functools.partial(
        metrics.calibration_report, labels=test_labels, from_logits=True, num_bins=num_bins
    )
    return CalibrationResult(report(before_logits), report(after_logits), params)
