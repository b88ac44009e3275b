"""Ensemble temperature scaling (Zhang, Kailkhura & Han 2020) on logits."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from calib_jax import _validation as v
from calib_jax.calibrators._base import Array, ArrayLike, Calibrator
from calib_jax.calibrators._scaling import _logit_fit

# The authors' bounds on T (util_calibration.py, temperature_scaling: bnds = (0.05, 5.0)).
_T_LOW, _T_HIGH = 0.05, 5.0
_GRID = 48  # log-spaced temperatures scanned before the golden-section refinement
_BISECTIONS = 30  # bracket of two grid steps (0.2 in log T) halved to ~2e-10


class EnsembleTemperatureParams(NamedTuple):
    """Fitted ensemble temperature scaling: the scalar ``temperature`` ``T`` and ``weights [3]``
    on the simplex for ``(softmax(z / T), softmax(z), uniform)``."""

    temperature: Array
    weights: Array


def _components(gaps: Array, temperature: Array) -> tuple[Array, Array, Array]:
    k = gaps.shape[-1]
    scaled = jax.nn.softmax(gaps / temperature, axis=-1)
    return scaled, jax.nn.softmax(gaps, axis=-1), jnp.full_like(scaled, 1.0 / k)


def _brier_at(gaps: Array, onehot: Array, weights: Array, temperature: Array) -> Array:
    p = jax.nn.softmax(gaps / temperature, axis=-1)
    return jnp.sum(weights[:, None] * jnp.square(p - onehot)) / jnp.sum(weights)


def _fit_temperature(gaps: Array, onehot: Array, weights: Array) -> Array:
    """``argmin_T`` of the mean squared error of ``softmax(z / T)`` in ``[0.05, 5]``: the best
    of a log-spaced grid, refined by bisection on the derivative between its neighbours."""
    dtype = gaps.dtype
    grid = jnp.asarray(np.geomspace(_T_LOW, _T_HIGH, _GRID), dtype)
    loss = lambda t: _brier_at(gaps, onehot, weights, t)
    # Sequential: a vmap over the grid would hold _GRID copies of the logits.
    best = jnp.argmin(lax.map(loss, grid))
    lo = jnp.log(grid[jnp.maximum(best - 1, 0)])
    hi = jnp.log(grid[jnp.minimum(best + 1, _GRID - 1)])
    # Bisection on the sign of the derivative in log T: near the minimum the error changes by
    # less than its float32 rounding, while the derivative's sign is still resolved.
    slope = jax.grad(lambda u: loss(jnp.exp(u)))

    def body(_, bracket):
        a, b = bracket
        mid = 0.5 * (a + b)
        up = slope(mid) > 0
        return jnp.where(up, a, mid), jnp.where(up, mid, b)

    a, b = lax.fori_loop(0, _BISECTIONS, body, (lo, hi))
    # The bracket's midpoint, or the grid point if it is better (an end of [0.05, 5]).
    mid = jnp.exp(0.5 * (a + b))
    return jnp.where(loss(mid) <= loss(grid[best]), mid, grid[best])


def _simplex_qp(a: Array, b: Array) -> Array:
    """``argmin_w w^T a w - 2 b^T w`` over the 3-simplex, exactly: the best of the interior
    stationary point (when feasible) and the minimisers on the three edges (vertices
    included)."""
    dtype = a.dtype
    obj = lambda w: w @ a @ w - 2 * b @ w
    candidates, feasible = [], []
    for i, j in ((0, 1), (0, 2), (1, 2)):
        curvature = a[i, i] - 2 * a[i, j] + a[j, j]
        slope = b[i] - b[j] - a[i, j] + a[j, j]
        lam = jnp.clip(slope / jnp.where(curvature > 0, curvature, 1), 0, 1)
        lam = jnp.where(curvature > 0, lam, jnp.where(slope > 0, 1.0, 0.0))
        candidates.append(jnp.zeros(3, dtype).at[i].set(lam).at[j].set(1 - lam))
        feasible.append(jnp.bool_(True))
    kkt = jnp.block(
        [[2 * a, jnp.ones((3, 1), dtype)], [jnp.ones((1, 3), dtype), jnp.zeros((1, 1), dtype)]]
    )
    interior = jnp.linalg.solve(kkt, jnp.concatenate([2 * b, jnp.ones(1, dtype)]))[:3]
    candidates.append(interior)
    feasible.append(jnp.all(interior >= 0) & jnp.all(jnp.isfinite(interior)))
    cands = jnp.stack(candidates)
    values = jnp.where(
        jnp.stack(feasible), jax.vmap(obj)(jnp.where(jnp.isfinite(cands), cands, 0)), jnp.inf
    )
    return cands[jnp.argmin(values)]


def ensemble_temperature_scaling() -> Calibrator:
    """Ensemble temperature scaling: a mixture of the temperature-scaled, the raw and the
    uniform prediction.

    .. math:: \\hat p = w_1\\,\\operatorname{softmax}(z / T) + w_2\\,\\operatorname{softmax}(z)
              + w_3 / K,\\qquad w \\ge 0,\\ w_1 + w_2 + w_3 = 1

    Fitted as the authors' ``ets_calibrate`` does (Mix-n-Match, ``util_calibration.py``): first
    ``T`` alone, by minimising the mean squared error ``mean_{n,k} (softmax(z/T) - onehot(y))^2``
    (their ``mse_t``; ``ets_calibrate`` calls ``temperature_scaling(..., loss='mse')``) over
    ``T in [0.05, 5]`` (their bounds); then ``w`` with ``T`` fixed, by minimising the same mean
    squared error of the mixture over the simplex (their ``mse_w`` with SLSQP). The authors use
    a local L-BFGS-B from ``T = 1``; here ``T`` is the best of 48 log-spaced temperatures in
    ``[0.05, 5]`` refined by bisection on the derivative (in ``log T``), the global minimiser on
    that range when the error is unimodal between grid points. The error is quadratic in ``w``,
    so ``w`` is the exact minimiser on the simplex (the best of the interior stationary point
    and the three edges).
    ``T`` and ``w`` do not depend on ``K``, so the parameters apply to any number of classes.
    The argmax can change only through ties (the mixture is monotone in each logit's rank).

    Returns:
      A :class:`Calibrator`: ``fit(logits [N, K], labels [N], *, where=None) ->
      EnsembleTemperatureParams(temperature, weights [3])``; ``apply(params, logits [..., K])
      -> probs [..., K]``; no ``apply_logits`` (a mixture is not a softmax of logits). Invalid
      fit data raise eagerly and give NaN parameters under ``jit``.

    Examples:
      >>> import jax, calib_jax as cj
      >>> z = 3.0 * jax.random.normal(jax.random.key(0), (2000, 5))
      >>> y = jax.random.categorical(jax.random.key(1), z / 3.0)  # over-confident logits
      >>> ets = cj.calibrators.ensemble_temperature_scaling()
      >>> params = jax.jit(ets.fit)(z, y)
      >>> print(f"{float(params.temperature):.1f}", params.weights.shape)
      3.0 (3,)

    References:
      Zhang, Kailkhura, Han. Mix-n-Match: Ensemble and Compositional Methods for Uncertainty
      Calibration in Deep Learning. ICML 2020.
    """

    def core(logits: Array, labels: Array, weights: Array) -> EnsembleTemperatureParams:
        k = logits.shape[-1]
        gaps = logits - jnp.max(logits, axis=-1, keepdims=True)
        onehot = jax.nn.one_hot(jnp.clip(labels, 0, k - 1), k, dtype=logits.dtype)
        t = _fit_temperature(gaps, onehot, weights)
        comps = jnp.stack(_components(gaps, t))  # [3, N, K]
        scale = 1 / jnp.sum(weights)
        gram = jnp.einsum("ank,bnk,n->ab", comps, comps, weights) * scale
        target = jnp.einsum("ank,nk,n->a", comps, onehot, weights) * scale
        return EnsembleTemperatureParams(t, _simplex_qp(gram, target))

    fit = _logit_fit(core)

    def apply(params: EnsembleTemperatureParams, logits: ArrayLike) -> Array:
        v.check_floating(logits, "logits")
        logits = v.to_compute_dtype(logits)
        v.check_finite(logits, "logits")
        gaps = logits - jnp.max(logits, axis=-1, keepdims=True)
        w = params.weights.astype(logits.dtype)
        scaled, raw, uniform = _components(gaps, params.temperature.astype(logits.dtype))
        return w[0] * scaled + w[1] * raw + w[2] * uniform

    return Calibrator(fit, apply, None, "logits")
