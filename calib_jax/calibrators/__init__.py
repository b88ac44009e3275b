"""Post-hoc calibrators, shaped like optax transformations.

Each constructor returns a :class:`Calibrator` ``(fit, apply, apply_logits, inputs)`` of pure
functions: ``params = fit(x, labels, *, where=None)`` returns a ``NamedTuple`` of arrays, and
``apply(params, x)`` returns probabilities whose rows sum to one. Hyperparameters are
constructor arguments, so ``fit`` and ``apply`` can be ``jax.jit``-compiled, ``jax.vmap``-ed over
a stack of models' validation sets, and their parameters saved as plain pytrees.

* On logits: :func:`temperature_scaling`, :func:`vector_scaling`, :func:`matrix_scaling`,
  :func:`platt_scaling` (binary), :func:`ensemble_temperature_scaling`,
  :func:`dirichlet_calibration`.
* On probabilities (binary ``[N]`` or one-vs-rest / top-label ``[N, K]``):
  :func:`histogram_binning`, :func:`isotonic_regression`, :func:`bbq`,
  :func:`beta_calibration`, :func:`venn_abers` (with :func:`venn_abers_interval`).
* :func:`calibrate_and_report`: fit on validation data and compare test metrics.

Fit-time checks: empty or one-sample sets, mismatched shapes and wrong dtypes raise at trace
time; NaN inputs, labels out of range and a single class present raise eagerly, are checkify
checks under ``jit`` (see :mod:`calib_jax.validation`) and give NaN parameters.
``apply`` raises when the parameters were fitted for a different number of classes; the
binning calibrators' ``apply`` also raises eagerly on NaN or out-of-range probabilities (rows
not summing to one), which under ``jit`` give NaN rows instead of a clipped, plausible value.
"""

from calib_jax.calibrators._base import Calibrator
from calib_jax.calibrators._beta import BetaParams, beta_calibration
from calib_jax.calibrators._dirichlet import DirichletParams, dirichlet_calibration
from calib_jax.calibrators._ensemble import (
    EnsembleTemperatureParams,
    ensemble_temperature_scaling,
)
from calib_jax.calibrators._nonparametric import (
    BBQParams,
    HistogramBinningParams,
    IsotonicParams,
    bbq,
    histogram_binning,
    isotonic_regression,
)
from calib_jax.calibrators._report import CalibrationResult, calibrate_and_report
from calib_jax.calibrators._scaling import (
    MatrixScalingParams,
    PlattParams,
    TemperatureParams,
    VectorScalingParams,
    matrix_scaling,
    platt_scaling,
    temperature_scaling,
    vector_scaling,
)
from calib_jax.calibrators._venn_abers import VennAbersParams, venn_abers, venn_abers_interval

__all__ = [
    "BBQParams",
    "BetaParams",
    "CalibrationResult",
    "Calibrator",
    "DirichletParams",
    "EnsembleTemperatureParams",
    "HistogramBinningParams",
    "IsotonicParams",
    "MatrixScalingParams",
    "PlattParams",
    "TemperatureParams",
    "VectorScalingParams",
    "VennAbersParams",
    "bbq",
    "beta_calibration",
    "calibrate_and_report",
    "dirichlet_calibration",
    "ensemble_temperature_scaling",
    "histogram_binning",
    "isotonic_regression",
    "matrix_scaling",
    "platt_scaling",
    "temperature_scaling",
    "vector_scaling",
    "venn_abers",
    "venn_abers_interval",
]
