"""Calibration metrics: exact binned metrics, proper scores and a mergeable streaming state.

All binned metrics read one engine, the per-bin sums ``(Σw, Σw·a, Σw·c)`` of
:mod:`calib_jax._binning` (per class for classwise ECE), so one-shot, streamed, sharded and
bootstrapped results agree. Conventions (see each docstring): equal-width bins
``((m-1)/M, m/M]`` decided exactly on the input value (``0`` in the first bin); empty bins weigh
0 and are never NaN; the prediction is the first maximum of each row; ``[N, K]`` input is
top-label calibration and ``[N]`` input binary positive-class calibration; accumulation in
float32 or wider whatever the input dtype. Invalid values (an unmasked label out of range, a
probability row with an entry outside ``[0, 1]`` or a sum off one, NaN/inf) raise ``ValueError``
on eager input, are checkify checks under ``jit`` (raised by
:func:`calib_jax.validation.checked`), and in any case give NaN in every returned float (every
field of a report; accuracy and confidence of every bin of a reliability diagram), never a
plausible number; masked (``where=False``) and zero-weight samples are exempt.
Top-label metrics take ``from_logits=True`` (no ``[N, K]`` probabilities formed); every metric
takes ``where=`` and non-negative ``weights=`` (integer weights act as replicated samples), which
:func:`bootstrap` uses for confidence intervals by ``vmap`` over resampling weights.

Cost of the top-label pass over ``[N, K]`` input: the row maximum and the softmax normaliser (or
the probability-row check) read it about twice. The first-maximum tie rule needs a row re-read
only where the label attains a maximum that may be tied (confidence at most 1/2); from ``2^21``
scores on with ``K > 64``, only those rows are re-read, so the cost grows with the number of
correct predictions of confidence at most 1/2 and is capped at one extra pass (taken whenever
more than 40% of the rows need it).
"""

from calib_jax._binning import BinSums
from calib_jax.metrics._adaptive import ada_ece
from calib_jax.metrics._binned import (
    ReliabilityDiagram,
    classwise_ece,
    debiased_l2_ece,
    ece,
    lp_ece,
    mce,
    reliability_diagram,
)
from calib_jax.metrics._bootstrap import bootstrap
from calib_jax.metrics._report import CalibrationReport, calibration_report
from calib_jax.metrics._scores import accuracy, brier, nll
from calib_jax.metrics._streaming import CalibrationState

__all__ = [
    "BinSums",
    "CalibrationReport",
    "CalibrationState",
    "ReliabilityDiagram",
    "accuracy",
    "ada_ece",
    "bootstrap",
    "brier",
    "calibration_report",
    "classwise_ece",
    "debiased_l2_ece",
    "ece",
    "lp_ece",
    "mce",
    "nll",
    "reliability_diagram",
]
