"""All standard calibration metrics from logits in one jit-compiled pass."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp

from calib_jax import _binning
from calib_jax import _validation as v
from calib_jax.metrics import _adaptive, _binned, _inputs, _scores, _wider

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


class _Pass(NamedTuple):
    """Per-sample quantities of one pass over the logits, shared by every metric."""

    conf: Array
    correct: Array
    probs: Array  # [N, K], or [N] positive-class probabilities of binary input
    nll: Array
    brier: Array
    hit: Array


def logits_pass(logits: Array, labels: Array) -> _Pass:
    """Softmax, its maximum, the first-maximum correctness, NLL and Brier from one softmax.

    ``[N]`` binary logits give the positive-class quantities (confidence ``σ(z)``, "correct"
    means ``label == 1``, accuracy thresholds ``σ(z) > 0.5``); their ``probs`` is ``σ(z)`` ``[N]``,
    which :func:`calib_jax._binning.classwise_gap_sums` takes as the two columns ``[1 - p, p]``.
    """
    z = v.to_compute_dtype(logits)
    if z.ndim == 1:
        valid = (labels == 0) | (labels == 1)
        p = jax.nn.sigmoid(z)
        conf = jnp.where(valid, p, jnp.nan)
        positive = labels == 1
        return _Pass(
            conf=conf,
            correct=positive,
            probs=p,
            nll=_scores.per_sample_nll(z, labels),
            brier=_scores.per_sample_brier(p, labels),
            hit=(z > 0) == positive,
        )
    # Row max and sum as plain reductions, materialised by the barrier: the [N, K] consumers
    # below would otherwise recompute them per element.
    top = jax.lax.optimization_barrier(jnp.max(z, axis=-1))
    s = jax.lax.optimization_barrier(jnp.sum(jnp.exp(z - top[:, None]), axis=-1))
    if _binning.recheck_pays(z):
        hit = _binning.correct_given_max(z, labels, top, s >= _binning.TIE_FACTOR)
    else:
        _, hit, _ = _binning.first_max_correct(z, labels)
    p = jnp.exp(z - top[:, None]) / s[:, None]
    log_p_y = v.take_label(z, labels) - top - jnp.log(s)
    conf = jnp.where(jnp.isnan(log_p_y), jnp.nan, 1.0 / s)
    p_y = jnp.exp(log_p_y)
    return _Pass(
        conf=conf,
        correct=hit,
        probs=p,
        nll=-log_p_y,
        brier=jnp.sum(p * p, axis=-1) - 2 * p_y + 1,
        hit=hit,
    )


def probs_pass(p: Array, labels: Array, row_stats: tuple[Array, Array] | None) -> _Pass:
    """Per-sample quantities of checked probabilities; ``row_stats`` is the row maximum and sum
    of :func:`calib_jax._validation.probability_rows` for ``[N, K]`` input."""
    x = v.to_compute_dtype(p)
    if x.ndim == 1:
        valid = (labels == 0) | (labels == 1)
        positive = labels == 1
        return _Pass(
            conf=jnp.where(valid, x, jnp.nan),
            correct=positive,
            probs=x,
            nll=-jnp.log(jnp.where(positive, x, 1 - x)) + jnp.where(valid, 0, jnp.nan),
            brier=_scores.per_sample_brier(x, labels),
            hit=(x > 0.5) == positive,
        )
    top, hit = _binning.top_label_of_probs(x, labels, *row_stats)
    p_y = v.take_label(x, labels)
    return _Pass(
        conf=jnp.where(jnp.isnan(p_y), jnp.nan, top),
        correct=hit,
        probs=x,
        nll=-jnp.log(p_y),
        brier=_scores.per_sample_brier(x, labels),
        hit=hit,
    )


def pass_inputs(predictions, labels, where, weights, from_logits: bool):
    """Checked input of :func:`logits_pass` / :func:`probs_pass` (the report and the state):
    ``(x, labels, checked, row_stats)``. An invalid probability row gets an out-of-range label
    (NaN confidence, NLL and Brier); ``row_stats`` is the row maximum and sum of the
    probability check for ``[N, K]`` probabilities, which also give the first-maximum tie test.
    """
    c = _inputs.validate(predictions, labels, where, weights, "logits" if from_logits else "probs")
    x = jnp.asarray(predictions)
    labels = c.labels
    row_stats = None
    if from_logits:
        v.check_finite(x, "logits", c.keep)
    elif x.ndim == 2:
        row_ok, row_max, row_sum = v.probability_rows(x, "probs", c.keep)
        labels = _inputs.poison_labels(labels, row_ok)
        row_stats = (row_max, row_sum)
    else:
        labels = _inputs.poison_labels(labels, v.check_probabilities(x, "probs", c.keep))
    return x, labels, c, row_stats


@functools.partial(jax.jit, static_argnames=("num_bins", "from_logits"))
def _report(x, labels, where, num_bins: int, from_logits: bool, row_stats=None):
    q = logits_pass(x, labels) if from_logits else probs_pass(x, labels, row_stats)
    sums = _binning.bin_sums(q.conf, q.correct, num_bins, where)
    gaps = _binning.classwise_gap_sums(q.probs, labels, num_bins, where)
    return report_from_sums(
        sums,
        ada_ece=_adaptive.equal_mass_ece(q.conf, q.correct, where, num_bins),
        classwise_ece=_binned.classwise_from_sums(gaps, _binned.total_weight(sums)),
        nll=_scores.weighted_mean(q.nll, where),
        brier=_scores.weighted_mean(q.brier, where),
        accuracy=_scores.weighted_mean(q.hit.astype(q.conf.dtype), where),
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
    x, labels, c, row_stats = pass_inputs(predictions, labels, where, weights, from_logits)
    if c.keep is not None:
        v.check_value(jnp.any(c.keep), "every sample is masked out (where/weights): no data.")
    return _report(x, labels, c.weights, num_bins, from_logits, row_stats)
