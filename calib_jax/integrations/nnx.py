"""A ``flax.nnx`` metric of calibration: the streaming state as an ``nnx.Metric``.

Needs ``flax`` (the ``train`` extra).
"""

from __future__ import annotations

from typing import Any

try:
    from flax import nnx
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError(
        "calib_jax.integrations.nnx needs flax: pip install 'calib_jax[train]'"
    ) from err

from calib_jax.metrics import CalibrationReport, CalibrationState

__all__ = ["CalibrationMetric"]


class CalibrationMetric(nnx.Metric):
    """Calibration metrics of a stream of batches, as a ``flax.nnx`` metric.

    Holds a :class:`calib_jax.metrics.CalibrationState` in an ``nnx.metrics.MetricState``
    variable, so it lives inside a model-like object, goes through ``nnx.jit``, and composes
    with other metrics in ``nnx.MultiMetric`` (which passes every keyword to every metric:
    keywords this metric does not read are ignored). Conventions are those of the state:
    top-label metrics on ``[N, K]`` input, positive-class on binary ``[N]`` input, equal-width
    bins ``((m-1)/M, m/M]``, invalid values poison the result with NaN.

    Args:
      num_classes: ``K`` (2 for binary ``[N]`` input), static.
      num_bins: ``M`` equal-width bins, static.
      from_logits: whether the predictions passed to :meth:`update` are logits.
      predictions_name: the keyword of :meth:`update` that holds the predictions.
      labels_name: the keyword of :meth:`update` that holds the labels.

    Examples:
      >>> import jax.numpy as jnp
      >>> from flax import nnx
      >>> from calib_jax.integrations.nnx import CalibrationMetric
      >>> metrics = nnx.MultiMetric(
      ...     calibration=CalibrationMetric(3, num_bins=3), loss=nnx.metrics.Average("loss"))
      >>> logits = jnp.log(jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40]]))
      >>> metrics.update(logits=logits, labels=jnp.array([0, 1]), loss=jnp.array([1.0, 2.0]))
      >>> out = metrics.compute()
      >>> print(f"{float(out['calibration'].ece):.3f} {float(out['loss']):.1f}")
      0.550 1.5
    """

    def __init__(
        self,
        num_classes: int,
        *,
        num_bins: int = 15,
        from_logits: bool = True,
        predictions_name: str = "logits",
        labels_name: str = "labels",
    ):
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.from_logits = from_logits
        self.predictions_name = predictions_name
        self.labels_name = labels_name
        self.state = nnx.metrics.MetricState(CalibrationState.empty(num_classes, num_bins=num_bins))

    def reset(self) -> None:
        """Empties the accumulated sums."""
        self.state.set_value(CalibrationState.empty(self.num_classes, num_bins=self.num_bins))

    def update(self, *, mask: Any = None, **kwargs: Any) -> None:
        """Adds one batch.

        Args:
          mask: optional bool ``[N]``: ``False`` rows (e.g. padding) are left out.
          **kwargs: must hold ``predictions_name`` (``[N, K]`` or ``[N]``) and ``labels_name``
            (``[N]`` integer labels); other keywords are ignored.
        """
        missing = [k for k in (self.predictions_name, self.labels_name) if k not in kwargs]
        if missing:
            raise TypeError(
                f"CalibrationMetric.update needs the keyword(s) {missing}; set "
                "predictions_name= / labels_name= to read other keywords"
            )
        self.state.set_value(
            self.state.get_value().update(
                kwargs[self.predictions_name],
                kwargs[self.labels_name],
                from_logits=self.from_logits,
                where=mask,
            )
        )

    def compute(self) -> CalibrationReport:
        """Every metric of the samples seen so far (a :class:`CalibrationReport`)."""
        return self.state.get_value().compute()
