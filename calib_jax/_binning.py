"""The binned-statistics engine: exact equal-width bin assignment.

Convention (SPEC "Bins"): with ``M`` bins, bin ``m`` (1-based) holds ``c in ((m-1)/M, m/M]``,
decided on the input value as a real number; ``c = 0`` goes to the first bin. Comparing ``c``
with each internal edge ``m/M`` rounded *down* to the compute dtype is exact: for a representable
``c``, ``c > m/M`` (real) iff ``c > rounddown(m/M)``. ``ceil(c * M) - 1`` in float32 is not (it
puts float32 0.2, 0.4, 0.6, 0.8 one bin low).
"""

from __future__ import annotations

import functools
from fractions import Fraction

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _validation as v


@functools.lru_cache(maxsize=256)
def internal_edges(num_bins: int, dtype: np.dtype) -> np.ndarray:
    """Edges ``m / num_bins`` for ``m = 1 .. num_bins - 1``, each rounded down to ``dtype``."""
    dtype = np.dtype(dtype)
    out = np.empty(num_bins - 1, dtype)
    for m in range(1, num_bins):
        exact = Fraction(m, num_bins)
        e = dtype.type(m / num_bins)
        if Fraction(float(e)) > exact:
            e = np.nextafter(e, dtype.type(-np.inf))
        out[m - 1] = e
    return out


def bin_edges(num_bins: int) -> np.ndarray:
    """All ``num_bins + 1`` nominal edges ``0, 1/M, ..., 1`` (float64, for reporting)."""
    return np.linspace(0.0, 1.0, num_bins + 1)


def bin_index(values: jax.Array, num_bins: int) -> jax.Array:
    """0-based equal-width bin of each value in ``[0, 1]`` (int32, same shape as ``values``).

    Values are compared in the compute dtype (float32, or float64 for float64 input), in which
    every bf16/f16/f32 input is exactly representable. Values outside ``[0, 1]`` are clipped to
    the first/last bin; callers validate the range.
    """
    num_bins = v.check_num_bins(num_bins)
    values = v.to_compute_dtype(values)
    if num_bins == 1:
        return jnp.zeros(values.shape, jnp.int32)
    edges = internal_edges(num_bins, values.dtype)
    # Candidate from the multiply, then one exact correction step against the rounded-down
    # edges: O(1) per value instead of O(num_bins) comparisons.
    guess = jnp.clip(jnp.ceil(values * num_bins).astype(jnp.int32) - 1, 0, num_bins - 1)
    e = jnp.asarray(np.concatenate([[-np.inf], edges, [np.inf]]).astype(values.dtype))
    lower = e[guess]  # bin `guess` holds (lower, upper]
    upper = e[guess + 1]
    idx = guess - (values <= lower).astype(jnp.int32) + (values > upper).astype(jnp.int32)
    return jnp.clip(idx, 0, num_bins - 1)
