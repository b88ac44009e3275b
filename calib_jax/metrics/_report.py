"""All standard calibration metrics from logits in one jit-compiled pass."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from calib_jax import _binning
from calib_jax import _validation as v
from calib_jax.metrics import _adaptive, _binned, _inputs, _per_sample, _scores, _wider

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


class CalibrationReport(NamedTuple):
    """Scalar calibration metrics of one set of predictions (each a float32 scalar).

    Attributes:
      ece: equal-width ECE (:func:`calib_jax.metrics.ece`).
      mce: maximum calibration error (:func:`calib_jax.metrics.mce`).
      ada_ece: equal-mass AdaECE (:func:`calib_jax.metrics.ada_ece`; approximate, with a
        documented bound, when computed from a streaming state).
      classwise_ece: classwise ECE (:func:`calib_jax.metrics.classwise_ece`).
      nll: mean negative log-likelihood.
      brier: mean multi-class Brier score.
      accuracy: top-1 accuracy (first-maximum ties).
      error: test error ``1 - accuracy``.
      l2_ece: L2 calibration error, :func:`calib_jax.metrics.lp_ece` with ``p = 2``.
      debiased_l2_ece: debiased L2 calibration error
        (:func:`calib_jax.metrics.debiased_l2_ece`).
      overconfidence_error: the part of ``ece`` from bins whose confidence exceeds their
        accuracy (:func:`calib_jax.metrics.overconfidence_error`).
      underconfidence_error: the part from bins whose accuracy exceeds their confidence
        (:func:`calib_jax.metrics.underconfidence_error`); the two add up to ``ece``.
    """

    ece: Array
    mce: Array
    ada_ece: Array
    classwise_ece: Array
    nll: Array
    brier: Array
    accuracy: Array
    error: Array
    l2_ece: Array
    debiased_l2_ece: Array
    overconfidence_error: Array
    underconfidence_error: Array

    def to_dict(self) -> dict[str, float]:
        """The fields as Python floats (a host transfer: call outside ``jit``).

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> r = cj.metrics.calibration_report(jnp.array([[0.9, 0.1], [0.4, 0.6]]),
          ...                                   jnp.array([0, 0]), num_bins=5)
          >>> print(r.to_dict()["accuracy"])
          0.5
        """
        return {name: float(value) for name, value in zip(self._fields, self, strict=True)}

    def __str__(self) -> str:
        rows = [f"  {name:<22}{value:.6g}" for name, value in self.to_dict().items()]
        return "\n".join(["CalibrationReport(", *rows, ")"])


@functools.partial(jax.jit, static_argnames=("num_bins", "from_logits"))
def _report(x, labels, where, num_bins: int, from_logits: bool, row_stats=None):
    q = _per_sample.per_sample(x, labels, from_logits=from_logits, row_stats=row_stats, scores=True)
    sums = _binning.bin_sums(q.confidence, q.correct, num_bins, where)
    gaps = _binning.classwise_gap_sums(q.probs, labels, num_bins, where)
    return report_from_sums(
        sums,
        ada_ece=_adaptive.equal_mass_ece(q.confidence, q.correct, where, num_bins),
        classwise_ece=_binned.classwise_from_sums(gaps, _binned.total_weight(sums)),
        nll=_scores.weighted_mean(q.nll, where),
        brier=_scores.weighted_mean(q.brier, where),
        accuracy=_scores.weighted_mean(q.hit.astype(q.confidence.dtype), where),
    )


def report_from_sums(
    sums: _binning.BinSums,
    *,
    ada_ece: Array,
    classwise_ece: Array,
    nll: Array,
    brier: Array,
    accuracy: Array,
) -> CalibrationReport:
    """The report whose binned fields come from ``sums`` (one-shot and streaming alike),
    poisoned by :func:`poison_report`."""
    report = CalibrationReport(
        ece=_binned.ece_from_sums(sums),
        mce=_binned.mce_from_sums(sums),
        ada_ece=ada_ece,
        classwise_ece=classwise_ece,
        nll=nll,
        brier=brier,
        accuracy=accuracy,
        error=1 - accuracy,
        l2_ece=_binned.lp_ece_from_sums(sums, 2),
        debiased_l2_ece=_binned.debiased_l2_from_sums(sums),
        overconfidence_error=_wider.overconfidence_from_sums(sums),
        underconfidence_error=_wider.underconfidence_from_sums(sums),
    )
    return poison_report(report, sums)


def poison_report(report: CalibrationReport, sums: _binning.BinSums) -> CalibrationReport:
    """Every field NaN when any unmasked sample was invalid.

    An invalid sample (bad label, NaN/inf input, invalid probability row) has a NaN confidence,
    which the per-bin confidence sums carry; accuracy reads only the argmax and would otherwise
    stay a plausible number.
    """
    poison = 0 * jnp.sum(sums.confidence)
    return CalibrationReport(*(field + poison for field in report))


def calibration_report(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> CalibrationReport:
    """ECE, MCE, AdaECE, classwise ECE, NLL, Brier, accuracy, error, L2-ECE, debiased L2-ECE and
    over-/under-confidence error in one pass.

    One jit-compiled function computes the probabilities once (from logits: one softmax) and
    shares their maximum, the first-maximum correctness and the bin assignment between all
    metrics. The definitions are those of :func:`ece`, :func:`mce`, :func:`ada_ece`
    (equal-mass), :func:`classwise_ece`, :func:`nll`, :func:`brier`, :func:`accuracy`,
    :func:`lp_ece` (``p = 2``), :func:`debiased_l2_ece`, :func:`overconfidence_error` and
    :func:`underconfidence_error`: equal-width bins ``((m-1)/M, m/M]``
    decided exactly, empty bins weigh 0, ties go to the first maximum, float32 (or wider)
    accumulation. From logits the confidence is ``max softmax(z) = 1 / Σ_k exp(z_k - max z)``
    and the prediction the first maximum of the logits. Binary ``[N]`` input (the positive
    class's probability or logit) gives positive-class ECE/MCE/AdaECE, two-column classwise
    ECE, binary cross-entropy, the binary Brier score ``(p - y)²`` and accuracy of ``p > 0.5``.

    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class
        probabilities; logits of either shape with ``from_logits=True`` (any float dtype;
        computed in float32 or wider).
      labels: ``[N]`` integer labels in ``[0, K)``.
      from_logits: ``predictions`` are logits.
      where: optional bool ``[N]`` mask; masked samples are ignored.
      weights: optional non-negative ``[N]`` sample weights (integer weights act as exact
        replication counts).
      num_bins: number of bins for the binned metrics (static int ``>= 1``).

    Invalid input (an unmasked label outside ``[0, K)``, NaN or inf values, a probability row
    off the simplex, an invalid weight) raises eagerly, is a checkify check under ``jit``, and
    in any case makes *every* field NaN.

    Returns:
      :class:`CalibrationReport` of float32 scalars.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> y = jnp.array([0, 1, 2, 0])
      >>> r = cj.metrics.calibration_report(probs, y, num_bins=3)
      >>> print(f"{float(r.ece):.4f} {float(r.mce):.4f} {float(r.accuracy):.2f}")
      0.2000 0.2333 0.50
      >>> r = cj.metrics.calibration_report(jnp.log(probs), y, from_logits=True, num_bins=3)
      >>> print(f"{float(r.ece):.4f}")
      0.2000

    References:
      Guo et al., ICML 2017; Mukhoti et al., NeurIPS 2020; Kull et al., NeurIPS 2019.
    """
    num_bins = v.check_num_bins(num_bins)
    from_logits = v.check_static_bool(from_logits, "from_logits")
    x, labels, c, row_stats = _inputs.checked_rows(predictions, labels, where, weights, from_logits)
    if c.keep is not None:
        v.check_value(jnp.any(c.keep), "every sample is masked out (where/weights): no data.")
    return _report(x, labels, c.weights, num_bins, from_logits, row_stats)
