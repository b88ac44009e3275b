"""A ``clu.metrics`` metric of calibration: the streaming state in a ``clu`` ``Collection``.

Needs ``clu`` (``pip install clu``).
"""

from __future__ import annotations

import functools
from typing import Any

try:
    import clu.metrics as clu_metrics
    import flax
except ImportError as err:  # pragma: no cover - depends on the environment
    raise ImportError("calib_jax.integrations.clu needs clu and flax: pip install clu") from err

import jax

from calib_jax.metrics import CalibrationReport, CalibrationState

__all__ = ["calibration_metric"]


@functools.cache
def calibration_metric(
    num_classes: int,
    *,
    num_bins: int = 15,
    from_logits: bool = True,
    predictions_name: str = "logits",
    labels_name: str = "labels",
) -> type[clu_metrics.Metric]:
    """A ``clu.metrics.Metric`` class that accumulates a
    :class:`calib_jax.metrics.CalibrationState`.

    Use it as a field of a ``clu.metrics.Collection``, like ``clu``'s own
    ``Average.from_output(...)``. ``from_model_output`` reads the predictions and labels from
    the keywords ``predictions_name`` and ``labels_name`` and an optional bool ``mask``;
    ``merge`` adds the sums exactly (integer counts, compensated float sums); ``reduce``
    merges a leading device axis (after ``all_gather`` in ``pmap``); ``compute`` returns a
    :class:`calib_jax.metrics.CalibrationReport`. The same static arguments return the same
    class.

    Args:
      num_classes: ``K`` (2 for binary ``[N]`` input), static.
      num_bins: ``M`` equal-width bins, static.
      from_logits: whether the predictions are logits.
      predictions_name: keyword holding the predictions.
      labels_name: keyword holding the integer labels.

    Returns:
      A ``flax.struct.dataclass`` subclass of ``clu.metrics.Metric`` with one field, ``state``.

    Examples:
      >>> import jax.numpy as jnp
      >>> import clu.metrics
      >>> from calib_jax.integrations.clu import calibration_metric
      >>> Metrics = clu.metrics.Collection.create(calibration=calibration_metric(3, num_bins=3))
      >>> logits = jnp.log(jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40]]))
      >>> m = Metrics.single_from_model_output(logits=logits, labels=jnp.array([0, 1]))
      >>> print(f"{float(m.compute()['calibration'].ece):.3f}")
      0.550
    """

    @flax.struct.dataclass
    class Calibration(clu_metrics.Metric):
        state: CalibrationState

        @classmethod
        def empty(cls) -> Calibration:
            return cls(state=CalibrationState.empty(num_classes, num_bins=num_bins))

        @classmethod
        def from_model_output(cls, *, mask: Any = None, **kwargs: Any) -> Calibration:
            missing = [k for k in (predictions_name, labels_name) if k not in kwargs]
            if missing:
                raise TypeError(
                    f"calibration metric needs the model output(s) {missing}; set "
                    "predictions_name= / labels_name= to read other names"
                )
            state = CalibrationState.from_batch(
                kwargs[predictions_name],
                kwargs[labels_name],
                num_bins=num_bins,
                from_logits=from_logits,
                where=mask,
            )
            if state.num_classes != num_classes:
                raise ValueError(
                    f"predictions have {state.num_classes} classes, the metric {num_classes}"
                )
            return cls(state=state)

        def merge(self, other: Calibration) -> Calibration:
            return type(self)(state=self.state.merge(other.state))

        def reduce(self) -> Calibration:
            # Merge, not a plain sum, over the leading axis: keeps the compensated float sums.
            stacked = self.state
            state = jax.tree.map(lambda x: x[0], stacked)
            for i in range(1, jax.tree.leaves(stacked)[0].shape[0]):
                state = state.merge(jax.tree.map(lambda x, i=i: x[i], stacked))
            return type(self)(state=state)

        def compute(self) -> CalibrationReport:
            return self.state.compute()

    Calibration.__name__ = Calibration.__qualname__ = f"Calibration{num_classes}x{num_bins}"
    return Calibration
