"""Mergeable streaming state of the smooth ECE: the fine grid of :func:`smooth_ece`, a sum.

Kept apart from :class:`~calib_jax.metrics.CalibrationState` so that its 1 MB grid is paid
only by those who stream the smooth ECE.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax.metrics import _inputs, _per_sample, _smooth, _streaming

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


@functools.partial(jax.jit, static_argnames=("from_logits",))
def _grid_of_batch(x, labels, w, row_stats, from_logits: bool) -> Array:
    q = _per_sample.per_sample(x, labels, from_logits=from_logits, row_stats=row_stats)
    conf, correct = q.confidence, q.correct
    grid = _smooth.fine_grid(conf, correct, w).astype(jnp.float32)
    keep = True if w is None else w > 0
    # A NaN confidence (an invalid row) with non-zero weight poisons both columns.
    return grid + 0 * jnp.sum(jnp.where(keep, conf, 0)).astype(jnp.float32)


class SmoothECEState(NamedTuple):
    """Streaming :func:`~calib_jax.metrics.smooth_ece`: the sums of its fine grid, batch by batch.

    :func:`~calib_jax.metrics.smooth_ece` first splits every sample's weight ``w`` and weighted
    residual ``w·(c - a)`` linearly between the two nearest points of a uniform grid of
    128,000 intervals on ``[0, 1]``, and everything after reads only that grid. The grid is a
    sum over samples, so batches, devices and hosts combine by adding it (:meth:`merge`, ``+``,
    or ``jax.lax.psum(state, axis)`` inside ``shard_map``), and :meth:`compute` gives the smooth
    ECE of all the samples seen. Memory: ``[128001, 2]`` float32 (1 MB), independent of ``N``.

    Exactness: the streamed grid is the one-shot grid summed in another order, so every grid
    value agrees with the one-shot one to float32 rounding of its sums (relative ``~10^-7``
    per addition). The smooth ECE at a given bandwidth then agrees with the one-shot value
    to a few ``10^-7`` (tests allow ``10^-6``); with the automatic bandwidth the search compares
    ``σ`` with ``smECE_σ`` at each halving, so a value within rounding of a step can send the
    streamed search the other way than the one-shot one (the same caveat as float32 against
    float64 in :func:`~calib_jax.metrics.smooth_ece`). Conventions (top-label on ``[N, K]``,
    positive-class on binary ``[N]`` input, weights, bad input giving NaN) are those of
    :func:`~calib_jax.metrics.smooth_ece`.

    Attributes:
      grid: ``[128001, 2]`` float32 sums ``(Σ w·(c - a)·φ_j(c), Σ w·φ_j(c))``, ``φ_j`` the
        linear hat function of grid point ``j``.
    """

    grid: Array

    @classmethod
    def empty(cls) -> SmoothECEState:
        """The identity of :meth:`merge`: a zero grid.

        Returns:
          A :class:`SmoothECEState`.

        Examples:
          >>> import calib_jax as cj
          >>> cj.metrics.SmoothECEState.empty().grid.shape
          (128001, 2)
        """
        return cls(jnp.zeros((_smooth.FINE_CELLS + 1, 2), jnp.float32))

    @classmethod
    def from_batch(
        cls,
        predictions: ArrayLike,
        labels: ArrayLike,
        *,
        from_logits: bool = False,
        where: ArrayLike | None = None,
        weights: ArrayLike | None = None,
    ) -> SmoothECEState:
        """The state of one batch.

        Args:
          predictions: ``[N, K]`` probabilities (or logits with ``from_logits=True``), or
            ``[N]`` binary positive-class probabilities (logits).
          labels: ``[N]`` integer labels.
          from_logits: whether ``predictions`` are logits.
          where: optional bool ``[N]`` mask (e.g. padding of the last batch; a fully masked
            batch adds nothing).
          weights: optional non-negative ``[N]`` sample weights (integer or float).

        Returns:
          A :class:`SmoothECEState`.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> s = cj.metrics.SmoothECEState.from_batch(jnp.array([0.3, 0.8]), jnp.array([0, 1]))
          >>> print(f"{float(s.grid[:, 1].sum()):.1f}")
          2.0
        """
        x, labels, c, row_stats = _inputs.checked_rows(
            predictions, labels, where, weights, from_logits
        )
        return cls(_grid_of_batch(x, labels, c.weights, row_stats, from_logits))

    def update(
        self,
        predictions: ArrayLike,
        labels: ArrayLike,
        *,
        from_logits: bool = False,
        where: ArrayLike | None = None,
        weights: ArrayLike | None = None,
    ) -> SmoothECEState:
        """Add one batch: ``self.merge(SmoothECEState.from_batch(...))``.

        Args:
          predictions: ``[N, K]`` probabilities or logits, or ``[N]`` binary.
          labels: ``[N]`` integer labels.
          from_logits: whether ``predictions`` are logits.
          where: optional bool ``[N]`` mask.
          weights: optional non-negative ``[N]`` sample weights.

        Returns:
          The updated state.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> p = jnp.linspace(0.05, 0.95, 10)
          >>> y = jnp.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
          >>> s = cj.metrics.SmoothECEState.empty().update(p[:4], y[:4]).update(p[4:], y[4:])
          >>> print(f"{float(s.compute()):.4f}")
          0.0928
        """
        batch = self.from_batch(
            predictions, labels, from_logits=from_logits, where=where, weights=weights
        )
        return self.merge(batch)

    def merge(self, other: SmoothECEState) -> SmoothECEState:
        """Add two states (associative and commutative up to float32 rounding).

        Args:
          other: another :class:`SmoothECEState`.

        Returns:
          The merged state.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> a = cj.metrics.SmoothECEState.from_batch(jnp.array([0.3]), jnp.array([0]))
          >>> b = cj.metrics.SmoothECEState.from_batch(jnp.array([0.8]), jnp.array([1]))
          >>> print(f"{float(a.merge(b).grid[:, 1].sum()):.1f}")
          2.0
        """
        if not isinstance(other, SmoothECEState):
            raise TypeError(f"can only merge a SmoothECEState, got {type(other).__name__}.")
        return SmoothECEState(self.grid + other.grid)

    __add__ = _streaming.merge_add
    __radd__ = _streaming.merge_radd
    __mul__ = __rmul__ = _streaming.refuse_repeat

    def compute(self, *, bandwidth: float | None = None) -> Array:
        """The smooth ECE of every sample added, as :func:`~calib_jax.metrics.smooth_ece`.

        Args:
          bandwidth: the kernel's standard deviation ``σ >= 0.001`` (may be traced), or
            ``None`` for the automatic ``σ*``.

        Returns:
          Scalar float32 (NaN for an empty state or after an invalid unmasked sample).

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> p = jnp.linspace(0.05, 0.95, 10)
          >>> y = jnp.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
          >>> s = cj.metrics.SmoothECEState.from_batch(p, y)
          >>> print(f"{float(s.compute(bandwidth=0.05)):.4f}")
          0.2208
        """
        return _smooth.smooth_ece_from_grid(self.grid, _smooth._bandwidth(bandwidth, jnp.float32))[
            0
        ]

    def reliability_diagram(
        self, *, bandwidth: float | None = None, num_points: int = 200
    ) -> _smooth.SmoothReliabilityDiagram:
        """The smoothed reliability diagram of every sample added (see
        :func:`~calib_jax.metrics.smooth_reliability_diagram`).

        Args:
          bandwidth: ``σ >= 0.001`` or ``None`` for the automatic ``σ*``.
          num_points: number of mesh points (static int ``>= 2``).

        Returns:
          :class:`SmoothReliabilityDiagram`.

        Examples:
          >>> import jax.numpy as jnp, calib_jax as cj
          >>> p = jnp.linspace(0.05, 0.95, 10)
          >>> y = jnp.array([0, 0, 1, 0, 0, 1, 1, 0, 1, 1])
          >>> d = cj.metrics.SmoothECEState.from_batch(p, y).reliability_diagram(num_points=5)
          >>> print(f"{float(d.bandwidth):.4f}")
          0.0938
        """
        if isinstance(num_points, bool) or not isinstance(num_points, int | np.integer):
            raise TypeError(f"num_points must be a static Python int, got {type(num_points)}.")
        if num_points < 2:
            raise ValueError(f"num_points must be >= 2, got {num_points}.")
        band = _smooth._bandwidth(bandwidth, jnp.float32)
        return _smooth.smooth_diagram_from_grid(self.grid, band, int(num_points))
