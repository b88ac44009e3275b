"""Calibration metrics: exact binned metrics, proper scores and a mergeable streaming state.

All binned metrics read one engine, the per-bin sums ``(Σw, Σw·a, Σw·c)`` of
:mod:`calib_jax._binning` (per class for classwise ECE), so one-shot, streamed, sharded and
bootstrapped results agree. Conventions (see each docstring): equal-width bins
``((m-1)/M, m/M]`` decided exactly on the input value (``0`` in the first bin); empty bins weigh
0 and are never NaN; the prediction is the first maximum of each row; ``[N, K]`` input is
top-label calibration and ``[N]`` input binary positive-class calibration; accumulation in
float32 or wider whatever the input dtype.

Sums stay accurate at any ``N``: counts are exact integers, and float sums are scattered in
chunks of rows whose partial sums are then added in a tree (bin confidences as offsets from the
bin centre), so their float32 error grows with ``log N``, not with ``N``, and one-shot and
streamed results agree to float32 rounding (at ``N = 2^24`` within ``2·10^-6``).

Bad input never gives a plausible number. Labels may have any integer dtype (uint8/16/32
included). Invalid values (a label out of range, a probability row with an entry outside
``[0, 1]`` or a sum off one, NaN/inf input, a negative, NaN or infinite weight, an integer
weight or a total of integer weights of ``2^31`` or more) raise ``ValueError`` on eager input,
are checkify checks under ``jit`` (raised by :func:`calib_jax.validation.checked`), and in any
case give NaN in every returned float (every field of a report; accuracy and confidence of every
bin of a reliability diagram). A sample that does not enter the metric, ``where=False`` or
weight 0, is exempt from every check, in all three modes alike: its label and input are never
read (nor, with ``where=False``, its weight). :func:`bootstrap` checks the data once eagerly,
like the metric it resamples.

Top-label metrics take ``from_logits=True`` (no ``[N, K]`` probabilities formed); every metric
takes ``where=`` and non-negative ``weights=``, which :func:`bootstrap` uses for confidence
intervals by ``vmap`` over resampling weights. Integer weights act as replicated samples and
keep every count an exact int32, so each integer weight and their total must stay below
``2^31``; float weights have no such limit and give float32 counts. (With JAX's default 32-bit
types, JAX itself converts an int64 array to int32 when it enters a jitted function, before any
check can see it: pass larger weights as floats.)

Cost of the top-label pass over ``[N, K]`` input: the row maximum and the softmax normaliser (or
the probability-row check) read it about twice. The first-maximum tie rule needs a row re-read
only where the label attains a maximum that may be tied (confidence at most 1/2); on XLA:CPU,
from ``2^21`` scores on with ``K > 64``, only those rows are re-read, so the cost grows with the
number of correct predictions of confidence at most 1/2 and is capped at one extra pass (taken
whenever more than 40% of the rows need it). These size thresholds were measured on XLA:CPU; on
other backends the metrics take the plain formulations (``argmax``, row reductions, a sort for
AdaECE), which give the same numbers.
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
from calib_jax.metrics._decomposition import (
    BrierDecomposition,
    ScoreDecomposition,
    brier_decomposition,
    score_decomposition,
)
from calib_jax.metrics._kernel import skce
from calib_jax.metrics._refinement import CalibrationRefinement, calibration_refinement
from calib_jax.metrics._report import CalibrationReport, calibration_report
from calib_jax.metrics._scores import accuracy, brier, nll
from calib_jax.metrics._selective import augrc, aurc, coverage_at_risk, selective_risk
from calib_jax.metrics._smooth import (
    SmoothReliabilityDiagram,
    smooth_ece,
    smooth_reliability_diagram,
)
from calib_jax.metrics._smooth_streaming import SmoothECEState
from calib_jax.metrics._streaming import CalibrationState
from calib_jax.metrics._wider import (
    ece_sweep,
    ks_error,
    overconfidence_error,
    underconfidence_error,
)

__all__ = [
    "BinSums",
    "BrierDecomposition",
    "CalibrationRefinement",
    "CalibrationReport",
    "CalibrationState",
    "ReliabilityDiagram",
    "ScoreDecomposition",
    "SmoothECEState",
    "SmoothReliabilityDiagram",
    "accuracy",
    "ada_ece",
    "augrc",
    "aurc",
    "bootstrap",
    "brier",
    "brier_decomposition",
    "calibration_refinement",
    "calibration_report",
    "classwise_ece",
    "coverage_at_risk",
    "debiased_l2_ece",
    "ece",
    "ece_sweep",
    "ks_error",
    "lp_ece",
    "mce",
    "nll",
    "overconfidence_error",
    "reliability_diagram",
    "score_decomposition",
    "selective_risk",
    "skce",
    "smooth_ece",
    "smooth_reliability_diagram",
    "underconfidence_error",
]
