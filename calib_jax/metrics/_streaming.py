"""Mergeable streaming calibration state: the per-bin sums, accumulated batch by batch.

Everything :class:`CalibrationState` holds is a sum over samples, so batches, devices and hosts
combine by adding states (``merge``, or ``jax.lax.psum(state, axis)`` inside ``shard_map``).
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _binning
from calib_jax import _validation as v
from calib_jax.metrics import _adaptive, _binned, _fine, _inputs, _per_sample, _report, _selective

Array = jax.Array
ArrayLike = jax.typing.ArrayLike

# Fine histogram for streaming AdaECE: confidences are bucketed by the float32 bit pattern of
# min(c, 1 - c), keeping FINE_BITS mantissa bits, i.e. a relative resolution of 2^-FINE_BITS of
# the distance to 0 or 1 (where confidences of trained networks pile up); everything closer than
# 2^-24 to 0 or 1 shares a bucket. Ordering buckets by c is monotone, so the buckets are a
# coarsened sort of the confidences.
FINE_BITS = 10
_EXP_LO = 103  # float32 exponent of 2^-24
_HALF = ((126 - _EXP_LO) << FINE_BITS) + 1  # largest rank: min(c, 1 - c) = 0.5
NUM_FINE = 2 * (_HALF + 1)


def fine_bucket(conf: Array) -> Array:
    """Monotone (non-decreasing in ``conf``) fine bucket index in ``[0, NUM_FINE)``."""
    c = conf.astype(jnp.float32)
    low = c <= 0.5
    d = jnp.where(low, c, 1 - c)  # exact for c > 0.5 (Sterbenz)
    bits = jax.lax.bitcast_convert_type(d, jnp.int32)
    rank = jnp.clip((bits >> (23 - FINE_BITS)) - (_EXP_LO << FINE_BITS) + 1, 0, _HALF)
    return jnp.where(low, rank, NUM_FINE - 1 - rank)


def _fine_width() -> np.ndarray:
    """Width (in confidence) of each fine bucket."""
    rank = np.arange(_HALF + 1)
    exponent = (np.maximum(rank - 1, 0) >> FINE_BITS) + _EXP_LO
    width = 2.0 ** (exponent - 127 - FINE_BITS)
    width[0] = 2.0**-24
    return np.concatenate([width, width[::-1]])


@functools.cache
def _fine_lo() -> Array:
    """Lower confidence edge of each fine bucket (float32, rounded down)."""
    return jnp.asarray(_fine.lower_edges_f32(FINE_BITS, _EXP_LO, _HALF))


def _two_sum(a: Array, b: Array) -> tuple[Array, Array]:
    """``a + b`` as ``(s, e)`` with ``s + e`` exact (Knuth's TwoSum)."""
    s = a + b
    bb = s - a
    return s, (a - (s - bb)) + (b - bb)


# Operators shared by the mergeable states (NamedTuples, so no mixin base): `+` merges, `sum()`
# works, and `*` raises (a tuple would concatenate or repeat: a silent wrong state).


def merge_add(self, other: object):
    """``a + b`` is :meth:`merge` (a tuple would concatenate: a silent wrong state)."""
    if not isinstance(other, type(self)):
        return NotImplemented
    return self.merge(other)


def merge_radd(self, other: object):
    # sum(states) starts from 0.
    if isinstance(other, int) and other == 0:
        return self
    return NotImplemented


def refuse_repeat(self, other: object):
    raise TypeError(f"a {type(self).__name__} cannot be repeated; merge states with + or merge().")


class CalibrationState(NamedTuple):
    """Sufficient statistics of every calibration metric, as a mergeable pytree of sums.

    Create with :meth:`empty`, add batches with :meth:`update`, combine states with
    :meth:`merge` (or ``jax.lax.psum`` / ``jax.tree.map(sum, ...)`` over devices or hosts) and
    read the metrics with :meth:`compute` (a :class:`CalibrationReport`),
    :meth:`reliability_diagram` and :meth:`ada_ece_error_bound`.

    Exactness: counts (``count``, ``correct``, ``fine_count``, ``fine_correct``) are int32, exact
    up to ``2^31 - 1`` samples (float32 counts stop being exact at ``2^24``). Float sums are kept
    as compensated pairs (``x`` + ``x_err``) and combined with TwoSum in :meth:`update` and
    :meth:`merge`, so a stream of many batches matches a one-shot computation to float32
    rounding; ``psum`` adds the two parts separately (the same result up to one rounding per
    device). ECE, MCE, classwise ECE, accuracy, NLL and Brier are then those of the one-shot
    functions. AdaECE needs quantiles and is computed from the fine histogram (see
    :meth:`ada_ece_error_bound`).

    Attributes:
      count: ``[M]`` int32 samples per equal-width bin.
      correct: ``[M]`` int32 correct predictions per bin.
      confidence, confidence_err: ``[M]`` float32 sum of confidences per bin (compensated).
      classwise, classwise_err: ``[K, M]`` float32 ``Σ (1[y = j] - p_j)`` per class and bin.
      fine_count, fine_correct: ``[F]`` int32 counts per fine confidence bucket.
      fine_confidence: ``[F]`` float32 confidence sums per fine bucket.
      hits: int32 scalar, correct top-1 predictions (for binary input ``p > 0.5`` vs label;
        ``correct`` then counts positives, the positive-class convention).
      nll, nll_err, brier, brier_err: float32 scalar sums (compensated).
    """

    count: Array
    correct: Array
    confidence: Array
    confidence_err: Array
    classwise: Array
    classwise_err: Array
    fine_count: Array
    fine_correct: Array
    fine_confidence: Array
    hits: Array
    nll: Array
    nll_err: Array
    brier: Array
    brier_err: Array

    @classmethod
    def empty(cls, num_classes: int, *, num_bins: int = 15) -> CalibrationState:
        """The identity of :meth:`merge`: all sums zero.

        Args:
          num_classes: ``K`` (2 for binary ``[N]`` input), static.
          num_bins: ``M`` equal-width bins, static int ``>= 1``.

        Returns:
          A :class:`CalibrationState` with ``[M]``, ``[K, M]`` and ``[F]`` zero arrays.

        Examples:
          >>> import calib_jax as cj
          >>> s = cj.metrics.CalibrationState.empty(10, num_bins=15)
          >>> s.count.shape, s.classwise.shape
          ((15,), (10, 15))
        """
        num_bins = v.check_num_bins(num_bins)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int | np.integer):
            raise TypeError("num_classes must be a static Python int.")
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
        f32 = jnp.float32
        zm = jnp.zeros((num_bins,), f32)
        zkm = jnp.zeros((int(num_classes), num_bins), f32)
        return cls(
            count=jnp.zeros((num_bins,), jnp.int32),
            correct=jnp.zeros((num_bins,), jnp.int32),
            confidence=zm,
            confidence_err=zm,
            classwise=zkm,
            classwise_err=zkm,
            fine_count=jnp.zeros((NUM_FINE,), jnp.int32),
            fine_correct=jnp.zeros((NUM_FINE,), jnp.int32),
            fine_confidence=jnp.zeros((NUM_FINE,), f32),
            hits=jnp.zeros((), jnp.int32),
            nll=jnp.zeros((), f32),
            nll_err=jnp.zeros((), f32),
            brier=jnp.zeros((), f32),
            brier_err=jnp.zeros((), f32),
        )

    @property
    def num_bins(self) -> int:
        """``M``, from the shape of the per-bin arrays."""
        return self.count.shape[-1]

    @property
    def num_classes(self) -> int:
        """``K``, from the shape of the classwise sums."""
        return self.classwise.shape[-2]

    def update(
        self,
        predictions: ArrayLike,
        labels: ArrayLike,
        *,
        from_logits: bool = False,
        where: ArrayLike | None = None,
        weights: ArrayLike | None = None,
    ) -> CalibrationState:
        """Add one batch: ``self.merge(CalibrationState.from_batch(...))``.

        Args:
          predictions: ``[N, K]`` probabilities (or logits with ``from_logits=True``), or
            ``[N]`` binary positive-class probabilities (logits).
          labels: ``[N]`` integer labels.
          from_logits: whether ``predictions`` are logits (NLL then uses ``log_softmax``).
          where: optional bool ``[N]`` mask (e.g. padding of the last batch).
          weights: optional ``[N]`` integer or bool sample weights, exact replication counts
            (the state's counts are int32; float weights raise ``TypeError``).

        Returns:
          The updated state.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> s = cj.metrics.CalibrationState.empty(3, num_bins=3)
          >>> p = jnp.array([[0.25, 0.20, 0.55], [0.55, 0.05, 0.40],
          ...                [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]])
          >>> y = jnp.array([0, 1, 2, 0])
          >>> s = s.update(p[:2], y[:2]).update(p[2:], y[2:])
          >>> print(f"{float(s.compute().ece):.4f}")
          0.2000
        """
        batch = self.from_batch(
            predictions,
            labels,
            from_logits=from_logits,
            where=where,
            weights=weights,
            num_bins=self.num_bins,
        )
        if batch.classwise.shape != self.classwise.shape:
            raise ValueError(
                f"batch has {batch.num_classes} classes, the state {self.num_classes}."
            )
        return self.merge(batch)

    @classmethod
    def from_batch(
        cls,
        predictions: ArrayLike,
        labels: ArrayLike,
        *,
        from_logits: bool = False,
        where: ArrayLike | None = None,
        weights: ArrayLike | None = None,
        num_bins: int = 15,
    ) -> CalibrationState:
        """The state of a single batch (the same sums the one-shot metrics compute).

        Args:
          predictions: ``[N, K]`` probabilities or logits, or ``[N]`` binary.
          labels: ``[N]`` integer labels.
          from_logits: whether ``predictions`` are logits.
          where: optional bool ``[N]`` mask.
          weights: optional ``[N]`` integer or bool sample weights (exact replication counts;
            float weights raise ``TypeError``, since the state's counts are int32).
          num_bins: ``M`` (static).

        Returns:
          A :class:`CalibrationState` (``K = 2`` for binary input).

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> s = cj.metrics.CalibrationState.from_batch(
          ...     jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0, 0]), num_bins=5)
          >>> print(s.count, s.correct)
          [0 0 0 1 1] [0 0 0 0 1]
        """
        num_bins = v.check_num_bins(num_bins)
        from_logits = v.check_static_bool(from_logits, "from_logits")
        if weights is not None and not (
            jnp.issubdtype(v._dtype(weights), jnp.integer) or v._dtype(weights) == np.bool_
        ):
            raise TypeError(
                "CalibrationState keeps exact int32 counts: weights must be integer replication "
                f"counts or bool, got dtype {v._dtype(weights)}; use the one-shot metrics "
                "(calibration_report, ece, ...) for float weights."
            )
        x, labels, c, row_stats = _inputs.checked_rows(
            predictions, labels, where, weights, from_logits
        )
        return _batch_state(x, labels, c.weights, num_bins, from_logits, row_stats)

    __add__ = merge_add
    __radd__ = merge_radd
    __mul__ = __rmul__ = refuse_repeat

    def to_dict(self) -> dict[str, float]:
        """``self.compute().to_dict()``: the metrics as Python floats."""
        return self.compute().to_dict()

    def __str__(self) -> str:
        n = int(jnp.sum(self.count))
        head = f"CalibrationState({n} samples, {self.num_classes} classes, {self.num_bins} bins)"
        return head + "\n" + str(self.compute())

    def merge(self, other: CalibrationState) -> CalibrationState:
        """Add two states (associative and commutative; :meth:`empty` is the identity).

        Integer counts add exactly; float sums add with TwoSum compensation. Inside
        ``shard_map``/``pmap``, ``jax.lax.psum(state, axis_name)`` is the all-device merge.

        Args:
          other: a state with the same ``num_bins`` and ``num_classes``.

        Returns:
          The merged state.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> a = cj.metrics.CalibrationState.from_batch(jnp.array([[0.9, 0.1]]), jnp.array([0]))
          >>> b = cj.metrics.CalibrationState.from_batch(jnp.array([[0.2, 0.8]]), jnp.array([0]))
          >>> print(int(a.merge(b).count.sum()), int(a.merge(b).correct.sum()))
          2 1
        """
        if jax.tree.map(jnp.shape, self) != jax.tree.map(jnp.shape, other):
            raise ValueError("cannot merge states with different num_bins or num_classes.")
        return _merge(self, other)

    def compute(self) -> _report.CalibrationReport:
        """All metrics of the accumulated samples, as a :class:`CalibrationReport`.

        ``ece``, ``mce``, ``classwise_ece``, ``nll``, ``brier``, ``accuracy``, ``error``,
        ``l2_ece`` and ``debiased_l2_ece`` equal
        the one-shot functions on the concatenated batches (to float32 rounding). ``ada_ece`` is
        the approximation from the fine histogram; its distance to the exact value is at most
        :meth:`ada_ece_error_bound`. An empty state gives NaN, and so does every field once an
        invalid unmasked sample (bad label, NaN input, invalid probability row) was added.

        Returns:
          :class:`CalibrationReport` of float32 scalars.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> s = cj.metrics.CalibrationState.from_batch(
          ...     jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0, 0]), num_bins=5)
          >>> print(f"{float(s.compute().accuracy):.2f}")
          0.50
        """
        return _compute(self)

    def reliability_diagram(self) -> _binned.ReliabilityDiagram:
        """Per-bin reliability data of the accumulated samples (see ``reliability_diagram``).

        Returns:
          :class:`ReliabilityDiagram` with ``[M]`` arrays.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> s = cj.metrics.CalibrationState.from_batch(
          ...     jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0, 0]), num_bins=5)
          >>> print(s.reliability_diagram().accuracy)
          [0. 0. 0. 0. 1.]
        """
        return _binned.diagram_from_sums(self._sums())

    def ada_ece_error_bound(self) -> Array:
        """Guaranteed bound on ``|compute().ada_ece - exact AdaECE|`` for the streamed samples.

        The streaming AdaECE uses the exact equal-mass bin boundaries (array_split sizes on the
        total count) but locates them in a fine histogram of confidences (buckets of relative
        width ``2^-10`` of ``min(c, 1 - c)``) and splits a bucket that straddles a boundary in
        proportion to its count. For a subset of ``L`` of the ``n`` samples of a bucket whose
        values ``a - c`` span a range ``R``, ``|Σ_S - (L/n) Σ| ≤ L (n - L) / n · R``; each of the
        ``M - 1`` boundaries touches two such subsets, so

        .. math:: |\\widetilde{\\mathrm{AdaECE}} - \\mathrm{AdaECE}| \\le \\frac{2}{N}
           \\sum_{m=1}^{M-1} \\min(k_m, n_{b_m} - k_m)\\, R_{b_m}

        where boundary ``m`` falls ``k_m`` samples into bucket ``b_m``, and
        ``R_b = 1 + width_b`` if the bucket holds both correct and wrong predictions, else
        ``width_b``. The bound is 0 when every boundary falls between buckets and is tested
        against the exact in-memory :func:`ada_ece`.

        Returns:
          Scalar float32 bound.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> s = cj.metrics.CalibrationState.from_batch(
          ...     jnp.array([[0.9, 0.1], [0.3, 0.7]]), jnp.array([0, 0]), num_bins=2)
          >>> print(f"{float(s.ada_ece_error_bound()):.4f}")
          0.0000
        """
        return _ada_bound(self)

    def ks_error(self) -> tuple[Array, Array]:
        """KS calibration error of the streamed samples from the fine histogram, with its bound.

        The running sum ``Σ (c - a)`` of :func:`~calib_jax.metrics.ks_error` is exact at the
        end of every fine bucket (a group of equal confidences never spans two buckets), so the
        value read there is a lower bound of the exact KS. Inside bucket ``b`` (``n_b``
        samples, ``A_b`` correct, confidence sum ``C_b``, confidences ``>= lo_b``) the running
        sum stays within ``[H_{b-1} - A_b (1 - lo_b), H_{b-1} + (n_b - A_b) C_b / n_b]``
        whatever the order of its samples, so

        .. math:: \\widetilde{\\mathrm{KS}} \\le \\mathrm{KS} \\le \\widetilde{\\mathrm{KS}}
           + \\mathrm{bound}

        with ``bound = max_b max(H_{b-1} + (n_b - A_b) C_b/n_b, A_b (1 - lo_b) - H_{b-1}) / N
        - KS~`` (clipped at 0), up to float32 rounding of the sums. Only buckets with both
        correct and wrong samples, or with a large count, contribute; tested against the exact
        in-memory :func:`~calib_jax.metrics.ks_error`.

        Returns:
          ``(value, bound)``: float32 scalars; the exact KS lies in ``[value, value + bound]``.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> p = jnp.array([0.25, 0.25, 0.25, 0.25, 0.75, 0.75, 0.75, 0.75])
          >>> y = jnp.array([0, 0, 0, 1, 0, 1, 1, 1])
          >>> ks, bound = cj.metrics.CalibrationState.from_batch(p, 1 - y).ks_error()
          >>> print(f"{float(ks):.4f} {float(bound):.4f}")
          0.2500 0.0313
        """
        return self._curves()["ks"]

    def ece_sweep(self, *, p: float = 1) -> tuple[Array, Array]:
        """ECE-sweep of the streamed samples from the fine histogram, with its bound.

        The sweep of :func:`~calib_jax.metrics.ece_sweep` on the fine histogram, a bucket cut by
        an equal-mass boundary split in proportion to its count (as for the streamed AdaECE).
        The bound accounts for every order of the samples inside the cut buckets: at a boundary
        ``k`` samples into bucket ``b`` the correct count below it lies in
        ``[max(0, k - (n_b - A_b)), min(k, A_b)]`` and the confidence sum in
        ``[k lo_b, k C_b / n_b]``. From these intervals, a bin count ``b`` is a possible
        exact ``b*`` unless ``b + 1`` is monotone for every order, and the search stops at the
        first ``b + 1`` that is non-monotone for every order; each bin's ``|acc - conf|`` mass
        lies in an interval, so the exact ECE-sweep lies in ``[min_b V_lo(b), max_b V_hi(b)]``
        over the possible ``b*``, and

        .. math:: |\\widetilde{\\mathrm{ECE}}_{\\mathrm{sweep}} - \\mathrm{ECE}_{\\mathrm{sweep}}|
           \\le \\max(\\tilde v - \\min_b V_{lo}(b), \\max_b V_{hi}(b) - \\tilde v)

        up to float32 rounding of the sums. The bound is small when the bin accuracies around
        the exact ``b*`` are clearly ordered and large when a boundary bucket decides whether
        two adjacent bins are monotone. At most 4096 bins are tried: if the search gets there
        (bin accuracies monotone for every smaller ``b``) the bound is ``inf``. Tested against
        the exact in-memory :func:`~calib_jax.metrics.ece_sweep`.

        Args:
          p: the norm, a static number ``>= 1``.

        Returns:
          ``(value, bound)``: float32 scalars.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> p = jnp.array([0.2, 0.3, 0.4, 0.6, 0.7, 0.8, 0.9, 0.95])
          >>> y = jnp.array([0, 1, 0, 1, 1, 0, 1, 1])
          >>> value, bound = cj.metrics.CalibrationState.from_batch(p, y).ece_sweep()
          >>> print(f"{float(value):.3f} {float(bound):.3f}")
          0.144 0.000
        """
        if isinstance(p, jax.core.Tracer) or not (1 <= p < np.inf):
            raise ValueError(f"p must be a static finite number >= 1, got {p}.")
        value, bound, _ = _fine.ece_sweep(
            self.fine_count, self.fine_correct, self.fine_confidence, _fine_lo(), float(p)
        )
        return value, bound

    def aurc(self) -> tuple[Array, Array]:
        """AURC of the streamed samples from the fine histogram, with its bound.

        Each fine bucket is one segment of the risk-coverage curve of
        :func:`~calib_jax.metrics.aurc` with its errors spread evenly (as the exact curve
        spreads a group of equal confidences), so the error count ``err(k)`` is exact at bucket
        ends. Inside a bucket of ``n_b`` samples with ``e_b`` errors any order of the samples
        puts ``err`` within ``e_b (n_b - e_b) / n_b`` of the even spread, hence

        .. math:: |\\widetilde{\\mathrm{AURC}} - \\mathrm{AURC}| \\le \\frac{1}{N} \\sum_b
           \\frac{e_b (n_b - e_b)}{n_b} \\sum_{k \\in b} \\frac{1}{k}

        (0 when no bucket holds both correct and wrong samples), up to float32 rounding.
        Tested against the exact in-memory :func:`~calib_jax.metrics.aurc`.

        Returns:
          ``(value, bound)``: float32 scalars.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
          >>> labels = jnp.array([0, 1, 1, 0])
          >>> value, bound = cj.metrics.CalibrationState.from_batch(probs, labels).aurc()
          >>> print(f"{float(value):.4f} {float(bound):.4f}")
          0.3333 0.0000
        """
        return self._curves()["aurc"]

    def augrc(self) -> tuple[Array, Array]:
        """AUGRC of the streamed samples from the fine histogram, with its bound.

        The curve of :meth:`aurc`; over the positions of a bucket the summed error count of any
        order of its samples differs from the even spread by at most ``e_b (n_b - e_b) / 2``:

        .. math:: |\\widetilde{\\mathrm{AUGRC}} - \\mathrm{AUGRC}| \\le \\frac{1}{2 N^2}
           \\sum_b e_b (n_b - e_b)

        up to float32 rounding. Tested against the exact in-memory
        :func:`~calib_jax.metrics.augrc`.

        Returns:
          ``(value, bound)``: float32 scalars.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
          >>> labels = jnp.array([0, 1, 1, 0])
          >>> value, bound = cj.metrics.CalibrationState.from_batch(probs, labels).augrc()
          >>> print(f"{float(value):.4f} {float(bound):.4f}")
          0.2500 0.0000
        """
        return self._curves()["augrc"]

    def selective_risk(self, coverage: float | ArrayLike) -> tuple[Array, Array]:
        """Selective risk at a coverage from the fine histogram, with its bound.

        The curve of :meth:`aurc` read at ``t = κN`` (see
        :func:`~calib_jax.metrics.selective_risk`). If ``t`` falls ``j`` samples into a bucket
        with ``n_b`` samples and ``e_b`` errors, the exact error count lies in
        ``[max(0, j - (n_b - e_b)), min(j, e_b)]`` above the errors of the more confident
        buckets, so the bound is the larger distance from the even spread ``j e_b / n_b`` to
        either end, divided by ``t`` (0 at a bucket end).

        Args:
          coverage: ``κ`` in ``(0, 1]``; a traced value outside it gives NaN.

        Returns:
          ``(value, bound)``: float32 scalars.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
          >>> labels = jnp.array([0, 1, 1, 0])
          >>> s = cj.metrics.CalibrationState.from_batch(probs, labels)
          >>> print([round(float(x), 4) for x in s.selective_risk(0.75)])
          [0.3333, 0.0]
        """
        coverage = _selective._check_level(coverage, "coverage", low_open=True)
        return self._curves(coverage=coverage)["risk"]

    def coverage_at_risk(self, risk: float | ArrayLike) -> tuple[Array, Array]:
        """Coverage at a risk from the fine histogram, with its bound.

        The curve of :meth:`aurc` (see :func:`~calib_jax.metrics.coverage_at_risk`). Whatever
        the order of the samples inside each bucket, the exact error count lies between the
        curve that puts each bucket's errors first and the one that puts them last, so the
        exact coverage lies between the coverages of those two curves; the bound is the larger
        distance from the estimate to either.

        Args:
          risk: ``ρ`` in ``[0, 1]``; a traced value outside it gives NaN.

        Returns:
          ``(value, bound)``: float32 scalars.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> probs = jnp.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]])
          >>> labels = jnp.array([0, 1, 1, 0])
          >>> s = cj.metrics.CalibrationState.from_batch(probs, labels)
          >>> print([round(float(x), 4) for x in s.coverage_at_risk(0.4)])
          [0.8333, 0.0]
        """
        risk = _selective._check_level(risk, "risk", low_open=False)
        return self._curves(risk=risk)["coverage"]

    def _curves(self, coverage=1.0, risk=0.0) -> dict[str, tuple[Array, Array]]:
        # One compiled function for the five estimates: they share their prefix sums.
        coverage, risk = jnp.asarray(coverage, jnp.float32), jnp.asarray(risk, jnp.float32)
        return _fine.curves(
            self.fine_count, self.fine_correct, self.fine_confidence, _fine_lo(), coverage, risk
        )

    def _sums(self) -> _binning.BinSums:
        return _binning.BinSums(self.count, self.correct, self.confidence + self.confidence_err)


def _compensated_add(hi: Array, lo: Array, x_hi: Array, x_lo: Array) -> tuple[Array, Array]:
    s, e = _two_sum(hi, x_hi)
    return s, lo + x_lo + e


@jax.jit
def _merge(a: CalibrationState, b: CalibrationState) -> CalibrationState:
    conf, conf_err = _compensated_add(
        a.confidence, a.confidence_err, b.confidence, b.confidence_err
    )
    cw, cw_err = _compensated_add(a.classwise, a.classwise_err, b.classwise, b.classwise_err)
    nll, nll_err = _compensated_add(a.nll, a.nll_err, b.nll, b.nll_err)
    brier, brier_err = _compensated_add(a.brier, a.brier_err, b.brier, b.brier_err)
    return CalibrationState(
        count=a.count + b.count,
        correct=a.correct + b.correct,
        confidence=conf,
        confidence_err=conf_err,
        classwise=cw,
        classwise_err=cw_err,
        fine_count=a.fine_count + b.fine_count,
        fine_correct=a.fine_correct + b.fine_correct,
        fine_confidence=a.fine_confidence + b.fine_confidence,
        hits=a.hits + b.hits,
        nll=nll,
        nll_err=nll_err,
        brier=brier,
        brier_err=brier_err,
    )


@functools.partial(jax.jit, static_argnames=("num_bins", "from_logits"))
def _batch_state(x, labels, where, num_bins, from_logits, row_stats=None) -> CalibrationState:
    q = _per_sample.per_sample(x, labels, from_logits=from_logits, row_stats=row_stats, scores=True)
    sums = _binning.bin_sums(q.confidence, q.correct, num_bins, where)
    gaps = _binning.classwise_gap_sums(q.probs, labels, num_bins, where)
    fine = fine_bucket(q.confidence)
    w = jnp.ones(q.confidence.shape, jnp.int32) if where is None else where.astype(jnp.int32)
    slot = 2 * fine + q.correct.astype(jnp.int32)
    pairs = jnp.zeros((2 * NUM_FINE,), jnp.int32).at[slot].add(w).reshape(NUM_FINE, 2)
    fine_conf = (
        jnp.zeros((NUM_FINE,), jnp.float32)
        .at[fine]
        .add(jnp.where(w > 0, w.astype(jnp.float32) * q.confidence.astype(jnp.float32), 0))
    )
    zero = jnp.zeros((), jnp.float32)
    return CalibrationState(
        count=sums.count,
        correct=sums.correct,
        confidence=sums.confidence.astype(jnp.float32),
        confidence_err=jnp.zeros((num_bins,), jnp.float32),
        classwise=gaps.astype(jnp.float32),
        classwise_err=jnp.zeros(gaps.shape, jnp.float32),
        fine_count=pairs[:, 0] + pairs[:, 1],
        fine_correct=pairs[:, 1],
        fine_confidence=fine_conf,
        hits=jnp.sum(jnp.where(q.hit & (w > 0), w, 0)),
        nll=_masked_sum(q.nll, where),
        nll_err=zero,
        brier=_masked_sum(q.brier, where),
        brier_err=zero,
    )


def _masked_sum(x: Array, w: Array | None) -> Array:
    """``Σ w·x`` over the samples with ``w > 0`` (``w`` a bool mask or integer counts)."""
    x = x.astype(jnp.float32)
    if w is None:
        return jnp.sum(x)
    return jnp.sum(jnp.where(w > 0, w.astype(jnp.float32) * x, 0))


@jax.jit
def _ada_from_fine(s: CalibrationState) -> Array:
    count = s.fine_count
    gap = s.fine_correct.astype(jnp.float32) - s.fine_confidence
    unit = gap / jnp.maximum(count, 1).astype(jnp.float32)
    return _adaptive.equal_mass_gap(
        _binning.prefix_sum(count), _binning.prefix_sum(gap), unit, s.num_bins
    )


@jax.jit
def _ada_bound(s: CalibrationState) -> Array:
    count = s.fine_count
    total, bounds, j, prev = _adaptive.array_split_boundaries(
        _binning.prefix_sum(count), s.num_bins
    )
    jc = jnp.minimum(j, count.shape[0] - 1)
    k = (bounds - prev)[1:-1]
    n = count[jc][1:-1]
    inside = (j < count.shape[0])[1:-1]
    width = jnp.asarray(_fine_width(), jnp.float32)[jc][1:-1]
    nc = s.fine_correct[jc][1:-1]
    mixed = (nc > 0) & (nc < n)
    spread = jnp.where(mixed, 1 + width, width)
    term = jnp.where(inside, jnp.minimum(k, n - k).astype(jnp.float32) * spread, 0)
    return 2 * jnp.sum(term) / total.astype(jnp.float32)


@jax.jit
def _compute(s: CalibrationState) -> _report.CalibrationReport:
    sums = s._sums()
    total = _binned.total_weight(sums)
    return _report.report_from_sums(
        sums,
        ada_ece=_ada_from_fine(s),
        classwise_ece=_binned.classwise_from_sums(s.classwise + s.classwise_err, total),
        nll=(s.nll + s.nll_err) / total,
        brier=(s.brier + s.brier_err) / total,
        accuracy=s.hits.astype(jnp.float32) / total,
    )
