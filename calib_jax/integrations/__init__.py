"""Adapters that drop :class:`calib_jax.metrics.CalibrationState` into existing training loops.

* :mod:`calib_jax.integrations.nnx`: :class:`~calib_jax.integrations.nnx.CalibrationMetric`,
  a ``flax.nnx.Metric`` (works inside ``nnx.MultiMetric``); needs ``flax``.
* :mod:`calib_jax.integrations.clu`: :func:`~calib_jax.integrations.clu.calibration_metric`,
  a ``clu.metrics.Metric`` class (works in a ``clu.metrics.Collection``); needs ``clu``.

Neither is imported by ``import calib_jax``: the core package needs only jax, chex and optax.
Both keep the exact, mergeable per-bin sums of the streaming state, so a report computed from
them equals :func:`calib_jax.metrics.calibration_report` on all the batches at once (AdaECE up
to the state's documented bound).
"""
