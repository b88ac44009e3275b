"""Equal-width binned calibration metrics, all read from one set of per-bin sums.

Every metric here is a function of :class:`calib_jax._binning.BinSums` (per-bin ``Σw``,
``Σw·a``, ``Σw·c``) or of the classwise gap sums; the same sums are what
:class:`~calib_jax.metrics.CalibrationState` accumulates, so streamed and one-shot results agree.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _binning
from calib_jax import _validation as v
from calib_jax.metrics import _inputs

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

_CONVENTIONS = """
    Conventions: ``M = num_bins`` equal-width bins, bin ``m`` holds confidences in
    ``((m-1)/M, m/M]`` decided exactly on the input value (``c = 0`` goes to the first bin;
    float32 ``0.2`` is in bin 4 of 15). Empty bins have weight 0, never NaN. The prediction is
    the first maximum of each row (NumPy ``argmax`` ties). ``[N]`` input is binary
    positive-class calibration (confidence ``p``, "correct" means ``label == 1``, as in
    scikit-learn's ``calibration_curve``); pass ``[1 - p, p]`` for top-label calibration.
    Computed in float32 (float64 for float64 input) whatever the input dtype, with sums whose
    error grows with ``log N``, not ``N``. Invalid input (a label out of range, a probability
    row with an entry outside ``[0, 1]`` or a sum off one, NaN/inf, a negative, NaN or infinite
    weight, integer weights reaching ``2^31`` in total) raises eagerly, is a checkify check
    under ``jit``, and in any case gives NaN, never a plausible number. Samples with
    ``where=False`` or weight 0 are exempt, in all three modes. Labels may have any integer
    dtype.
"""


def _doc(fn):
    fn.__doc__ = fn.__doc__.replace("    {conventions}\n", _CONVENTIONS.lstrip("\n"))
    return fn


# ---------------------------------------------------------------------------------------------
# Metrics as functions of the per-bin sums (shared with the streaming state).


def _as_float(x: Array, like: Array) -> Array:
    return x.astype(like.dtype)


def total_weight(sums: _binning.BinSums) -> Array:
    return _as_float(jnp.sum(sums.count), sums.confidence)


def _abs_gap(sums: _binning.BinSums) -> Array:
    """``|Σa - Σc|`` per bin, which is ``|B_m|·|acc_m - conf_m|``."""
    return jnp.abs(_as_float(sums.correct, sums.confidence) - sums.confidence)


def ece_from_sums(sums: _binning.BinSums) -> Array:
    return jnp.sum(_abs_gap(sums)) / total_weight(sums)


def mce_from_sums(sums: _binning.BinSums) -> Array:
    count = _as_float(sums.count, sums.confidence)
    filled = count > 0
    gap = jnp.where(filled, _abs_gap(sums) / jnp.where(filled, count, 1), 0)
    return jnp.max(gap)


def lp_ece_from_sums(sums: _binning.BinSums, p: float) -> Array:
    if p == np.inf:
        return mce_from_sums(sums)
    count = _as_float(sums.count, sums.confidence)
    filled = count > 0
    safe = jnp.where(filled, count, 1)
    term = jnp.where(filled, safe * (_abs_gap(sums) / safe) ** p, 0)
    return (jnp.sum(term) / total_weight(sums)) ** (1.0 / p)


def debiased_l2_from_sums(sums: _binning.BinSums) -> Array:
    count = _as_float(sums.count, sums.confidence)
    enough = count >= 2
    safe = jnp.where(enough, count, 2)
    acc = _as_float(sums.correct, sums.confidence) / safe
    conf = sums.confidence / safe
    term = (conf - acc) ** 2 - acc * (1 - acc) / (safe - 1)
    # A NaN confidence in a bin with < 2 samples must still poison the result.
    poison = 0 * jnp.sum(sums.confidence)
    return jnp.sum(jnp.where(enough, count * term, 0)) / total_weight(sums) + poison


def classwise_from_sums(gap_sums: Array, total: Array) -> Array:
    return jnp.sum(jnp.abs(gap_sums)) / (total * gap_sums.shape[0])


# ---------------------------------------------------------------------------------------------
# Public functions.


def _sums(probs, labels, num_bins, where, weights, from_logits=False) -> _binning.BinSums:
    num_bins = v.check_num_bins(num_bins)
    conf, correct, w = _inputs.top_label(probs, labels, where, weights, from_logits=from_logits)
    return _binning.bin_sums(conf, correct, num_bins, w)


@_doc
def ece(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> Array:
    """Expected calibration error with equal-width bins (Guo et al. 2017).

    .. math::
       \\mathrm{ECE} = \\sum_m \\frac{|B_m|}{N} |\\mathrm{acc}_m - \\mathrm{conf}_m|
                    = \\frac{1}{N} \\sum_m \\Big|\\sum_{n \\in B_m} (a_n - c_n)\\Big|

    {conventions}
    Args:
      predictions: ``[N, K]`` class probabilities (rows in ``[0, 1]`` summing to 1 within
        :func:`calib_jax._validation.probability_tolerance`), or ``[N]`` binary
        positive-class probabilities.
      labels: ``[N]`` integer labels in ``[0, K)`` (``{0, 1}`` for binary input).
      num_bins: number of equal-width bins ``M`` (static int ``>= 1``).
      where: optional bool ``[N]`` mask; masked samples are ignored.
      weights: optional non-negative ``[N]`` sample weights (e.g. bootstrap resampling counts).
      from_logits: ``predictions`` holds logits ``[N, K]`` (or binary ``[N]``); the confidence is
        ``max softmax(z) = 1 / Σ_k exp(z_k - max z)`` and the prediction the first maximum of
        the logits, without forming the ``[N, K]`` probabilities (the fast path).

    Returns:
      Scalar float32 ECE in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> labels = jnp.array([0, 1, 2, 0])
      >>> print(f"{float(cj.metrics.ece(probs, labels, num_bins=3)):.4f}")
      0.2000

    References:
      Guo, Pleiss, Sun, Weinberger, "On Calibration of Modern Neural Networks", ICML 2017;
      Naeini, Cooper, Hauskrecht, "Obtaining Well Calibrated Probabilities Using Bayesian
      Binning", AAAI 2015.
    """
    return ece_from_sums(_sums(predictions, labels, num_bins, where, weights, from_logits))


@_doc
def mce(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> Array:
    """Maximum calibration error: the largest ``|acc_m - conf_m|`` over non-empty bins.

    .. math:: \\mathrm{MCE} = \\max_{m : |B_m| > 0} |\\mathrm{acc}_m - \\mathrm{conf}_m|

    {conventions}
    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels.
      num_bins: number of equal-width bins (static int ``>= 1``).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.
      from_logits: ``predictions`` holds logits ``[N, K]`` (or binary ``[N]``); the confidence is
        ``max softmax(z) = 1 / Σ_k exp(z_k - max z)`` and the prediction the first maximum of
        the logits, without forming the ``[N, K]`` probabilities (the fast path).

    Returns:
      Scalar float32 MCE in ``[0, 1]``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> labels = jnp.array([0, 1, 2, 0])
      >>> print(f"{float(cj.metrics.mce(probs, labels, num_bins=3)):.4f}")
      0.2333

    References:
      Naeini, Cooper, Hauskrecht, AAAI 2015; Guo et al., ICML 2017.
    """
    return mce_from_sums(_sums(predictions, labels, num_bins, where, weights, from_logits))


@_doc
def lp_ece(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
    p: float = 2.0,
) -> Array:
    """L_p calibration error with equal-width bins (``p = 1`` is ECE, ``p = inf`` is MCE).

    .. math::
       \\mathrm{ECE}_p = \\Big(\\sum_m \\frac{|B_m|}{N} |\\mathrm{acc}_m - \\mathrm{conf}_m|^p
       \\Big)^{1/p}

    {conventions}
    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels.
      p: the norm, a static float ``>= 1`` or ``inf``.
      num_bins: number of equal-width bins (static int ``>= 1``).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.
      from_logits: ``predictions`` holds logits ``[N, K]`` (or binary ``[N]``); the confidence is
        ``max softmax(z) = 1 / Σ_k exp(z_k - max z)`` and the prediction the first maximum of
        the logits, without forming the ``[N, K]`` probabilities (the fast path).

    Returns:
      Scalar float32.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> labels = jnp.array([0, 1, 2, 0])
      >>> print(f"{float(cj.metrics.lp_ece(probs, labels, p=2, num_bins=3)):.4f}")
      0.2082

    References:
      Kumar, Liang, Ma, "Verified Uncertainty Calibration", NeurIPS 2019.
    """
    if isinstance(p, jax.core.Tracer) or not p >= 1:
        raise ValueError(f"p must be a static number >= 1 (or inf), got {p}.")
    return lp_ece_from_sums(
        _sums(predictions, labels, num_bins, where, weights, from_logits), float(p)
    )


@_doc
def debiased_l2_ece(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> Array:
    """Debiased estimate of the *squared* L2 calibration error (Kumar, Liang & Ma 2019).

    .. math::
       \\widehat{\\mathrm{ECE}}_2^2 = \\sum_m \\frac{n_m}{N}\\Big[(\\mathrm{conf}_m -
       \\mathrm{acc}_m)^2 - \\frac{\\mathrm{acc}_m (1 - \\mathrm{acc}_m)}{n_m - 1}\\Big]

    Bins with fewer than two samples contribute 0. The plug-in ``lp_ece(p=2) ** 2`` is biased
    upwards by the binomial noise of each bin's accuracy; this estimator subtracts it, so it is
    unbiased for the binned squared error and may be slightly negative when the model is well
    calibrated (take ``sqrt(max(·, 0))`` for an L2 value).

    {conventions}
    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels.
      num_bins: number of equal-width bins (static int ``>= 1``).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.
      from_logits: ``predictions`` holds logits ``[N, K]`` (or binary ``[N]``); the confidence is
        ``max softmax(z) = 1 / Σ_k exp(z_k - max z)`` and the prediction the first maximum of
        the logits, without forming the ``[N, K]`` probabilities (the fast path).

    Returns:
      Scalar float32 (squared units; may be negative).

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> labels = jnp.array([0, 1, 2, 0])
      >>> print(f"{float(cj.metrics.debiased_l2_ece(probs, labels, num_bins=3)):.4f}")
      -0.0425

    References:
      Kumar, Liang, Ma, "Verified Uncertainty Calibration", NeurIPS 2019 (Section 5).
    """
    return debiased_l2_from_sums(_sums(predictions, labels, num_bins, where, weights, from_logits))


@_doc
def classwise_ece(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> Array:
    """Classwise ECE: the equal-width ECE of every class's probability, averaged over classes.

    .. math::
       \\mathrm{CW\\text{-}ECE} = \\frac{1}{K} \\sum_{j=1}^K \\sum_m \\frac{|B_{mj}|}{N}
       |A_{mj} - C_{mj}|, \\quad A_{mj} = \\mathrm{mean}_{B_{mj}}(y = j),\\;
       C_{mj} = \\mathrm{mean}_{B_{mj}}(p_{\\cdot j})

    where ``B_mj`` bins ``p[:, j]`` over all ``N`` samples. ``K`` is the number of columns of
    ``probs`` (never ``max(labels) + 1``); classes that never occur still count. Computed with one
    scatter over the ``N·K`` entries, without an ``[N, K, M]`` one-hot. Binary ``[N]`` input is
    taken as the two columns ``[1 - p, p]`` (``K = 2``); the bin of ``1 - p`` is decided on the
    exact real number ``1 - p``, not on its float32 rounding (which can cross a bin edge).

    Bins: ``((m-1)/M, m/M]`` decided exactly, ``0`` in the first bin; empty bins weigh 0.

    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels in ``[0, K)``.
      num_bins: number of equal-width bins (static int ``>= 1``).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.
      from_logits: ``predictions`` are logits ``[N, K]`` (``softmax``) or binary ``[N]``
        logits (``sigmoid``) rather than probabilities.

    Returns:
      Scalar float32.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> probs = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
      ...                    [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
      >>> labels = jnp.array([0, 1, 2, 0])
      >>> print(f"{float(cj.metrics.classwise_ece(probs, labels, num_bins=3)):.4f}")
      0.1917

    References:
      Kull et al., "Beyond temperature scaling: Obtaining well-calibrated multi-class
      probabilities with Dirichlet calibration", NeurIPS 2019; Nixon et al., "Measuring
      Calibration in Deep Learning", CVPR Workshops 2019.
    """
    num_bins = v.check_num_bins(num_bins)
    x, labels, c = _inputs.class_probabilities(predictions, labels, where, weights, from_logits)
    w = c.weights
    gaps = _binning.classwise_gap_sums(x, labels, num_bins, w)
    total = jnp.asarray(x.shape[0], x.dtype) if w is None else _sum_weights(w).astype(x.dtype)
    return classwise_from_sums(gaps, total)


def _sum_weights(w: Array) -> Array:
    if jnp.issubdtype(w.dtype, jnp.floating):
        return _binning.accurate_sum(w)
    return jnp.sum(w, dtype=jnp.int32)


class ReliabilityDiagram(NamedTuple):
    """Per-bin reliability data, each field ``[M]``.

    Invalid input under ``jit`` (see :func:`reliability_diagram`) makes ``accuracy`` and
    ``confidence`` NaN in every bin; ``count`` stays the (integer) count of the samples,
    invalid ones included.

    Attributes:
      count: samples per bin (int32; float32 with float weights).
      accuracy: mean correctness in the bin (0 for an empty bin; NaN everywhere on invalid input).
      confidence: mean confidence in the bin (0 for an empty bin; NaN everywhere on invalid
        input).
      lower: lower bin edge ``(m-1)/M`` (the bin excludes it, except 0 for the first bin).
      upper: upper bin edge ``m/M`` (included in the bin).
    """

    count: Array
    accuracy: Array
    confidence: Array
    lower: Array
    upper: Array


def diagram_from_sums(sums: _binning.BinSums) -> ReliabilityDiagram:
    m = sums.count.shape[-1]
    count = _as_float(sums.count, sums.confidence)
    safe = jnp.where(count > 0, count, 1)
    edges = jnp.asarray(_binning.bin_edges(m), sums.confidence.dtype)
    # An invalid sample's NaN confidence sits in one bin's sum; spread it to every bin of
    # accuracy and confidence so that no part of the diagram looks plausible.
    poison = 0 * jnp.sum(sums.confidence, axis=-1, keepdims=True)
    return ReliabilityDiagram(
        count=sums.count,
        accuracy=_as_float(sums.correct, sums.confidence) / safe + poison,
        confidence=sums.confidence / safe + poison,
        lower=jnp.broadcast_to(edges[:-1], sums.count.shape),
        upper=jnp.broadcast_to(edges[1:], sums.count.shape),
    )


@_doc
def reliability_diagram(
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    from_logits: bool = False,
    where: ArrayLike | None = None,
    weights: ArrayLike | None = None,
    num_bins: int = 15,
) -> ReliabilityDiagram:
    """Per-bin count, accuracy and confidence: the data of a reliability diagram.

    ``accuracy[m] = Σ_{B_m} a / |B_m|`` and ``confidence[m] = Σ_{B_m} c / |B_m|``; an empty bin
    has ``count = 0`` and accuracy and confidence 0 (filter with ``count > 0`` for plotting).
    For binary ``[N]`` input, ``accuracy`` is the fraction of positives (``prob_true`` of
    scikit-learn's ``calibration_curve``) and ``confidence`` the mean predicted probability.
    Invalid input (an unmasked bad label or probability row) raises eagerly, is a checkify
    check under ``jit``, and in any case makes ``accuracy`` and ``confidence`` NaN in every bin
    (``count``, an integer array, keeps the counts, invalid samples included: it cannot hold
    NaN).

    {conventions}
    Args:
      predictions: ``[N, K]`` class probabilities or ``[N]`` binary positive-class probabilities.
      labels: ``[N]`` integer labels.
      num_bins: number of equal-width bins (static int ``>= 1``).
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.
      from_logits: ``predictions`` holds logits ``[N, K]`` (or binary ``[N]``); the confidence is
        ``max softmax(z) = 1 / Σ_k exp(z_k - max z)`` and the prediction the first maximum of
        the logits, without forming the ``[N, K]`` probabilities (the fast path).

    Returns:
      :class:`ReliabilityDiagram` with ``[M]`` arrays ``count, accuracy, confidence, lower,
      upper``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> p = jnp.array([0.1, 0.2, 0.3, 0.4, 0.65, 0.7, 0.8, 0.9, 1.0])
      >>> y = jnp.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
      >>> d = cj.metrics.reliability_diagram(p, y, num_bins=3)
      >>> print(d.count, d.accuracy, d.confidence.round(6))
      [3 2 4] [0.  0.5 1. ] [0.2   0.525 0.85 ]

    References:
      DeGroot & Fienberg, "The Comparison and Evaluation of Forecasters", 1983;
      Niculescu-Mizil & Caruana, ICML 2005; Guo et al., ICML 2017.
    """
    return diagram_from_sums(_sums(predictions, labels, num_bins, where, weights, from_logits))
