"""calib_jax: calibrated classifiers in JAX.

* :mod:`calib_jax.losses`: per-example training losses that yield calibrated models
  (focal, FLSD, label smoothing, Brier, MMCE, ...), optax-style.
* :mod:`calib_jax.metrics`: exact binned calibration metrics (ECE, MCE, AdaECE,
  classwise-ECE, ...) as pure functions and as mergeable streaming state.
* :mod:`calib_jax.calibrators`: post-hoc calibrators with ``fit``/``apply`` (temperature
  scaling, vector/matrix/Platt scaling, histogram binning, isotonic regression, BBQ).
* :mod:`calib_jax.validation`: turning value checks into errors under ``jax.jit``.
* :mod:`calib_jax.plotting`: reliability diagrams (needs matplotlib, imported only when
  drawing).

Conventions are stated in every docstring and summarised in the README ("Conventions").
"""

from calib_jax import calibrators, losses, metrics, plotting, validation

__version__ = "0.1.0"

__all__ = ["calibrators", "losses", "metrics", "plotting", "validation"]
