"""Binning calibrators on probabilities: histogram binning, isotonic regression and BBQ.

All three calibrate one column of scores at a time against 0/1 targets and share the plumbing
that turns ``[N, K]`` probabilities into columns and back:

* binary input ``probs[N]`` (the positive-class probability, labels in ``{0, 1}``): one column;
  ``apply`` returns ``[N, 2] = [1 - f, f]``;
* ``mode="one_vs_rest"`` on ``probs[N, K]``: column ``j`` is ``p[:, j]`` against
  ``labels == j``; ``apply`` calibrates every column and renormalises each row to sum to one
  (a row whose calibrated scores are all zero becomes uniform);
* ``mode="top_label"`` on ``probs[N, K]``: one column, the confidence ``c = max_k p`` against
  the correctness of the prediction ``j*`` (the input row's first maximum). ``apply`` sets
  entry ``j*`` to the calibrated confidence ``c' = f(c)`` and scales the other classes by
  ``(1 - c') / (1 - c)`` (or spreads ``1 - c'`` uniformly over them when ``c = 1``).

  Guaranteed: ``out[j*] == c'`` exactly, and each row sums to one. Not guaranteed: that
  ``j*`` is still the output row's maximum. When ``c'`` is smaller than the largest rescaled
  other class, ``c' < (1 - c')·p_2 / (1 - c)`` with ``p_2`` the runner-up (always when
  ``c' < 1/K``), the output's argmax moves to that class and ``max(out)`` is not ``c'``.
  Keeping ``j*`` on top would need another rule for the other classes (capping them at
  ``c'``, impossible when ``c' < 1/K``); the proportional rule is kept. So read the calibrated
  top-label confidence as ``out[j*]`` with ``j*`` taken from the *input*, and do not
  recompute the prediction from the output (a top-label metric on ``out`` would score another
  class).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from calib_jax import _binning
from calib_jax import _validation as v
from calib_jax.calibrators._base import (
    Array,
    ArrayLike,
    Calibrator,
    check_fit_inputs,
    fit_is_valid,
    poison,
    renormalise,
)
from calib_jax.calibrators._pav import pav

_MODES = ("one_vs_rest", "top_label")
# Sort key of masked rows: the bits of the largest float32 below 2, shifted left with a 0
# target bit, so that masked rows sort after every probability and unpack to a score > 1.
_PAD_KEY = np.int32(0x3FFFFFFF << 1)


class HistogramBinningParams(NamedTuple):
    """Fitted histogram binning: per column (class, or one for binary / top-label input) the
    bin ``edges [C, M - 1]`` and calibrated bin ``values [C, M]``."""

    edges: Array
    values: Array


class IsotonicParams(NamedTuple):
    """Fitted isotonic regression: per column the sorted distinct training scores
    ``thresholds [C, N]`` and the fitted non-decreasing ``values [C, N]`` (padded by repeating
    the last pair)."""

    thresholds: Array
    values: Array


class BBQParams(NamedTuple):
    """Fitted BBQ: per column the model-averaged step function, ``values[C, j]`` on the
    interval after ``j`` of the sorted ``edges [C, N - 1]`` (``values [C, N]``)."""

    edges: Array
    values: Array


# ----------------------------------------------------------------------------- plumbing


def _columns(
    x: ArrayLike, labels: ArrayLike, where: ArrayLike | None, *, mode: str, from_logits: bool
) -> tuple[Array, Array, Array, Array]:
    """Checks the fit inputs and returns ``(scores [C, N], targets [C, N], weights [N], ok)``."""
    if mode == "top_label" and np.ndim(x) != 2:
        raise ValueError(f"mode='top_label' needs [N, K] input, got shape {np.shape(x)}.")
    name = "logits" if from_logits else "probs"
    raw = jnp.asarray(x)
    x, labels, weights, k = check_fit_inputs(x, labels, where, name=name, binary_ok=True)
    ok = fit_is_valid(x, labels, weights, k)
    where_b = weights > 0
    if from_logits:
        probs = jax.nn.sigmoid(x) if x.ndim == 1 else jax.nn.softmax(x, axis=-1)
    else:
        probs = x
        # Out-of-range or unnormalised rows (e.g. logits passed as probabilities) under jit:
        # NaN parameters, never a plausible fit. The row-sum tolerance follows the input dtype
        # (bf16 rows sum to 1 only within ~K·2^-9), so the input is checked as given.
        rows = v.check_probabilities(raw, "probs", where)
        ok = ok & jnp.all(rows | ~where_b)
    # -0.0 + 0.0 = +0.0, so the bit patterns of the scores sort like the scores.
    probs = jnp.clip(jnp.where(jnp.isfinite(probs), probs, 0), 0, 1) + 0.0
    if probs.ndim == 1:
        scores, targets = probs[None], (labels == 1)[None]
    elif mode == "one_vs_rest":
        scores = probs.T
        targets = labels[None, :] == jnp.arange(k, dtype=labels.dtype)[:, None]
    else:
        conf = jnp.max(probs, axis=-1)
        scores, targets = conf[None], (jnp.argmax(probs, axis=-1) == labels)[None]
    return scores, targets.astype(probs.dtype), weights, ok


def _valid_apply_input(raw: Array, x: Array, *, from_logits: bool, binary: bool) -> Array:
    """Value checks of ``apply``'s input: raise eagerly (checkify under ``jit``) and return the
    validity per element (binary) or per row, so that invalid inputs can be poisoned with NaN.

    Without them a NaN, an out-of-range score or logits passed as probabilities would be
    clipped into the first or last bin and come out as a plausible calibrated probability.
    """
    if from_logits:
        ok = jnp.isfinite(x)
        v.check_value(jnp.all(ok), "logits must be finite; found NaN or inf.")
        return ok if binary else jnp.all(ok, axis=-1)
    return v.check_probabilities(raw, "probs")


def _make(
    name: str,
    fit_columns: Callable[[Array, Array, Array], Any],
    apply_column: Callable[[Any, Array], Array],
    *,
    mode: str,
    from_logits: bool,
) -> Calibrator:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    # Eager fits (checks done in Python) then run one compiled program, not op by op.
    fit_columns = jax.jit(fit_columns)

    def fit(x: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None):
        scores, targets, weights, ok = _columns(
            x, labels, where, mode=mode, from_logits=from_logits
        )
        return poison(fit_columns(scores, targets, weights), ok)

    def apply(params: Any, x: ArrayLike) -> Array:
        xname = "logits" if from_logits else "probs"
        v.check_floating(x, xname)
        raw = jnp.asarray(x)
        x = v.to_compute_dtype(x)
        num_columns = jax.tree.leaves(params)[0].shape[-2]
        v.static_check(
            chex.assert_tree_shape_prefix,
            params,
            (num_columns,),
            message=(
                f"these {name} parameters are not one fit: every array must start with the "
                f"{num_columns} fitted columns; apply stacked parameters (a vmapped fit) with "
                "jax.vmap(apply)."
            ),
        )
        first = lambda: jax.tree.map(lambda a: a[0], params)
        if mode == "one_vs_rest" and num_columns == 1:
            if x.ndim != 1:
                raise ValueError(
                    f"these {name} parameters were fitted on binary [N] scores; got {xname} of "
                    f"shape {x.shape}."
                )
            ok = _valid_apply_input(raw, x, from_logits=from_logits, binary=True)
            f = apply_column(first(), jax.nn.sigmoid(x) if from_logits else x)
            f = jnp.where(ok, f, jnp.nan)
            return jnp.stack([1 - f, f], axis=-1)
        if x.ndim < 2:
            raise ValueError(f"{name} needs [..., K] {xname} here, got shape {x.shape}.")
        if mode == "one_vs_rest" and x.shape[-1] != num_columns:
            raise ValueError(
                f"these {name} parameters were fitted for K = {num_columns} classes; got "
                f"{xname} of shape {x.shape} (K' = {x.shape[-1]})."
            )
        ok = _valid_apply_input(raw, x, from_logits=from_logits, binary=False)[..., None]
        p = jax.nn.softmax(x, axis=-1) if from_logits else x
        flat = p.reshape(-1, p.shape[-1])
        if mode == "one_vs_rest":
            cols = jax.vmap(apply_column, in_axes=(0, 1), out_axes=1)(params, flat)
            return jnp.where(ok, renormalise(cols).reshape(p.shape), jnp.nan)
        conf = jnp.max(flat, axis=-1)
        new_conf = apply_column(first(), conf)
        k = flat.shape[-1]
        is_pred = jnp.arange(k)[None] == jnp.argmax(flat, axis=-1)[:, None]
        # The mass of the other classes as summed (not 1 - conf), so rows sum to one even when
        # the input rows are off by rounding and conf is close to 1.
        rest = jnp.sum(jnp.where(is_pred, 0, flat), axis=-1)
        scale = (1 - new_conf) / jnp.where(rest > 0, rest, 1)
        others = jnp.where(
            (rest > 0)[:, None], flat * scale[:, None], ((1 - new_conf) / (k - 1))[:, None]
        )
        return jnp.where(
            ok, jnp.where(is_pred, new_conf[:, None], others).reshape(p.shape), jnp.nan
        )

    return Calibrator(fit, apply, None, "logits" if from_logits else "probs")


def _check_from_logits_mode(mode: str, from_logits: bool) -> None:
    if mode not in _MODES:
        raise ValueError(f"mode must be one of {_MODES}, got {mode!r}.")
    if not isinstance(from_logits, bool):
        raise TypeError(f"from_logits must be a bool, got {type(from_logits).__name__}.")


def _sort_columns(scores: Array, targets: Array, weights: Array) -> tuple[Array, Array, Array]:
    """Sorts each column by score with its 0/1 target; masked rows go last.

    Non-negative float32 scores sort like their bit patterns, and a 0/1 target fits in the
    spare low bit, so one int32 sort does it (XLA:CPU sorts a single int32 array ~6x faster
    than a float key with a payload). Returns ``(sorted scores, sorted targets, n valid)``.
    """
    bits = lax.bitcast_convert_type(scores.astype(jnp.float32), jnp.int32)
    key = (bits << 1) | targets.astype(jnp.int32)
    key = jnp.sort(jnp.where(weights > 0, key, _PAD_KEY), axis=-1)
    n = jnp.sum(weights > 0).astype(jnp.int32)
    valid = jnp.arange(scores.shape[-1]) < n
    sorted_scores = lax.bitcast_convert_type(key >> 1, jnp.float32).astype(scores.dtype)
    sorted_targets = jnp.where(valid, key & 1, 0).astype(scores.dtype)
    return sorted_scores, sorted_targets, n


# ----------------------------------------------------------------------- histogram binning


def _equal_mass_edges(sorted_scores: Array, n: Array, num_bins: int) -> Array:
    """Edges between the sorted scores at ranks ``floor(b n / M)``, ``b = 1 .. M - 1``."""
    b = jnp.arange(1, num_bins, dtype=jnp.int32)
    cut = b * (n // num_bins) + (b * (n % num_bins)) // num_bins
    hi = jnp.clip(cut, 0, jnp.maximum(n - 1, 0))
    lo = jnp.clip(cut - 1, 0, jnp.maximum(n - 1, 0))
    return 0.5 * (sorted_scores[lo] + sorted_scores[hi])


def histogram_binning(
    *,
    num_bins: int = 15,
    binning: Literal["equal_width", "equal_mass"] = "equal_width",
    mode: Literal["one_vs_rest", "top_label"] = "one_vs_rest",
    from_logits: bool = False,
) -> Calibrator:
    """Histogram binning: each score is replaced by the mean 0/1 target of its bin.

    .. math:: f(s) = \\theta_m = \\frac{\\sum_{i \\in B_m} y_i}{|B_m|}\\quad (s \\in B_m)

    Bins: ``binning="equal_width"`` uses the project's exact equal-width rule
    (:mod:`calib_jax._binning`: bin ``m`` holds ``((m-1)/M, m/M]``, 0 in the first bin);
    ``"equal_mass"`` puts the edges midway between the sorted training scores at ranks
    ``floor(b n / M)``, ``b = 1..M-1``, with the same ``(lo, hi]`` rule (tied scores share a
    bin, so bins can be empty). An empty bin gets its midpoint. Multi-class: one-vs-rest then
    renormalisation, or the top-label form (see the module docstring for both).

    Args:
      num_bins: number of bins ``M`` (static).
      binning: ``"equal_width"`` or ``"equal_mass"``.
      mode: ``"one_vs_rest"`` or ``"top_label"`` (ignored for binary ``[N]`` input). With
        ``"top_label"``, ``out[j*]`` is exactly the calibrated confidence for ``j*`` the
        *input* row's argmax; the output's own argmax can differ (module docstring).
      from_logits: take logits (softmax / sigmoid applied first) instead of probabilities.

    Returns:
      A :class:`Calibrator` (``inputs="probs"`` unless ``from_logits``):
      ``fit(probs [N, K] or [N], labels [N], *, where=None) -> HistogramBinningParams``
      (``edges [C, M-1]``, ``values [C, M]``, ``C = K``, or 1 for binary / top-label input);
      ``apply(params, probs [..., K] or [N]) -> probs [..., K]`` (``[N, 2]`` for binary).

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> hb = cj.calibrators.histogram_binning(num_bins=2)
      >>> params = hb.fit(jnp.array([0.1, 0.2, 0.7, 0.9]), jnp.array([0, 1, 1, 1]))
      >>> print(params.values)
      [[0.5 1. ]]
      >>> print(hb.apply(params, jnp.array([0.3, 0.6])))
      [[0.5 0.5]
       [0.  1. ]]

    References:
      Zadrozny, Elkan. Obtaining calibrated probability estimates from decision trees and naive
      Bayesian classifiers. ICML 2001.
      Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
    """
    num_bins = v.check_num_bins(num_bins)
    if binning not in ("equal_width", "equal_mass"):
        raise ValueError(f"binning must be 'equal_width' or 'equal_mass', got {binning!r}.")
    _check_from_logits_mode(mode, from_logits)

    def fit_columns(scores: Array, targets: Array, weights: Array) -> HistogramBinningParams:
        c = scores.shape[0]
        if binning == "equal_width":
            edges = jnp.broadcast_to(
                jnp.asarray(_binning.internal_edges(num_bins, scores.dtype)), (c, num_bins - 1)
            )
            bins = _binning.bin_index(scores, num_bins)
        else:
            sorted_scores, _, n = _sort_columns(scores, targets, weights)
            edges = jax.vmap(_equal_mass_edges, in_axes=(0, None, None))(sorted_scores, n, num_bins)
            bins = jax.vmap(lambda e, s: jnp.searchsorted(e, s, side="left"))(edges, scores)
        segment = (jnp.arange(c, dtype=jnp.int32)[:, None] * num_bins + bins).ravel()
        data = jnp.stack([(targets * weights[None]).ravel(), jnp.tile(weights, c)], axis=-1)
        sums = jax.ops.segment_sum(data, segment, c * num_bins).reshape(c, num_bins, 2)
        lower = jnp.concatenate([jnp.zeros((c, 1), edges.dtype), edges], axis=1)
        upper = jnp.concatenate([edges, jnp.ones((c, 1), edges.dtype)], axis=1)
        count = sums[..., 1]
        values = jnp.where(
            count > 0, sums[..., 0] / jnp.where(count > 0, count, 1), 0.5 * (lower + upper)
        )
        return HistogramBinningParams(edges.astype(scores.dtype), values.astype(scores.dtype))

    def apply_column(params: HistogramBinningParams, s: Array) -> Array:
        if binning == "equal_width":
            return params.values[_binning.bin_index(s, num_bins)]
        return params.values[jnp.searchsorted(params.edges, s, side="left")]

    return _make("histogram_binning", fit_columns, apply_column, mode=mode, from_logits=from_logits)


# ---------------------------------------------------------------------- isotonic regression


def _tie_groups(scores: Array, targets: Array, weights: Array) -> tuple[Array, Array, Array, Array]:
    """Sorted scores pooled into groups of exactly equal score: ``(Σ target, count, score,
    number of groups)``, each ``[n_rows]`` with the groups first (zeros after them)."""
    n_rows = scores.shape[-1]
    xs, ys, n = _sort_columns(scores, targets, weights)
    idx = jnp.arange(n_rows)
    valid = idx < n
    prev = jnp.concatenate([xs[:1], xs[:-1]])
    new_group = valid & ((idx == 0) | (xs != prev))
    group = jnp.where(valid, jnp.cumsum(new_group) - 1, n_rows)
    data = jnp.stack([ys, valid.astype(xs.dtype), jnp.where(new_group, xs, 0)], axis=-1)
    g = jax.ops.segment_sum(data, group, n_rows)
    return g[:, 0], g[:, 1], g[:, 2], jnp.sum(new_group).astype(jnp.int32)


def _isotonic_column(scores: Array, targets: Array, weights: Array) -> IsotonicParams:
    n_rows = scores.shape[-1]
    idx = jnp.arange(n_rows)
    # Exactly tied scores form one group with their mean target (scikit-learn does the same
    # with its float64 resolution 1e-15, i.e. exact ties for float32 scores).
    g_sum, g_weight, g_x, num_groups = _tie_groups(scores, targets, weights)
    # Runs of adjacent groups whose targets are all 0 (or all 1) lie on one straight piece of
    # the cumulative-sum diagram, so PAV would give them one value anyway: pooling them first
    # is exact and shrinks the sequential part to the number of label changes.
    g_valid = idx < num_groups
    kind = jnp.where(g_sum == 0, 0, jnp.where(g_sum == g_weight, 1, 2 + idx))
    prev_kind = jnp.concatenate([kind[:1], kind[:-1]])
    new_run = g_valid & ((idx == 0) | (kind != prev_kind) | (kind >= 2))
    run = jnp.where(g_valid, jnp.cumsum(new_run) - 1, n_rows)
    r = jax.ops.segment_sum(jnp.stack([g_sum, g_weight], axis=-1), run, n_rows)
    fitted_runs = pav(r[:, 0], r[:, 1], jnp.sum(new_run).astype(jnp.int32))
    last = jnp.maximum(num_groups - 1, 0)
    group_of = jnp.minimum(idx, last)
    thresholds = g_x[group_of]
    values = fitted_runs[jnp.minimum(run[group_of], n_rows - 1)]
    return IsotonicParams(thresholds, values)


def _interpolate(params: IsotonicParams, s: Array, linear: bool) -> Array:
    xp, fp = params.thresholds, params.values
    n = xp.shape[-1]
    if n == 1:
        return jnp.broadcast_to(fp[0], s.shape)
    hi = jnp.clip(jnp.searchsorted(xp, s, side="right"), 1, n - 1)
    x0, x1, y0, y1 = xp[hi - 1], xp[hi], fp[hi - 1], fp[hi]
    if linear:
        t = jnp.where(x1 > x0, (s - x0) / jnp.where(x1 > x0, x1 - x0, 1), 1.0)
    else:
        t = (s >= x1).astype(s.dtype)
    return y0 + jnp.clip(t, 0, 1) * (y1 - y0)


def isotonic_regression(
    *,
    mode: Literal["one_vs_rest", "top_label"] = "one_vs_rest",
    interpolation: Literal["linear", "step"] = "linear",
    from_logits: bool = False,
) -> Calibrator:
    """Isotonic regression: the non-decreasing fit of the 0/1 targets on the scores (PAV).

    .. math:: \\min_{f \\text{ non-decreasing}} \\textstyle\\sum_i w_i (f(s_i) - y_i)^2

    Ties: exactly equal training scores are pooled first (one point, mean target), as
    scikit-learn's ``IsotonicRegression`` does. The fit is pool-adjacent-violators over the
    distinct sorted scores, run as a compiled stack machine (see ``_pav``), after pooling runs
    of all-0 or all-1 targets (exact, and fast: its cost grows with the label changes in
    sorted order). Prediction (``interpolation="linear"``, the default) interpolates linearly
    between the fitted values at consecutive distinct training scores and clips outside their
    range: exactly scikit-learn's ``IsotonicRegression(out_of_bounds="clip").predict``.
    ``interpolation="step"`` instead keeps the value of the largest training score ``<= s``
    (the piecewise-constant ``f`` defined above; both agree on the training scores).

    Args:
      mode: ``"one_vs_rest"`` or ``"top_label"`` (ignored for binary ``[N]`` input). With
        ``"top_label"``, ``out[j*]`` is exactly the calibrated confidence for ``j*`` the
        *input* row's argmax; the output's own argmax can differ (module docstring).
      interpolation: ``"linear"`` or ``"step"``.
      from_logits: take logits (softmax / sigmoid applied first) instead of probabilities.

    Returns:
      A :class:`Calibrator`: ``fit(probs [N, K] or [N], labels [N], *, where=None) ->
      IsotonicParams(thresholds [C, N], values [C, N])``; ``apply(params, probs) -> probs``
      (``[N, 2]`` for binary input). The parameters grow with ``N``.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> iso = cj.calibrators.isotonic_regression()
      >>> s = jnp.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6])
      >>> params = iso.fit(s, jnp.array([0, 1, 0, 0, 1, 1]))
      >>> print([round(float(f), 4) for f in params.values[0]])
      [0.0, 0.3333, 0.3333, 0.3333, 1.0, 1.0]
      >>> print(f"{float(iso.apply(params, jnp.array([0.45]))[0, 1]):.4f}")
      0.6667

    References:
      Zadrozny, Elkan. Transforming classifier scores into accurate multiclass probability
      estimates. KDD 2002.
      Barlow, Bartholomew, Bremner, Brunk. Statistical Inference under Order Restrictions, 1972.
    """
    if interpolation not in ("linear", "step"):
        raise ValueError(f"interpolation must be 'linear' or 'step', got {interpolation!r}.")
    _check_from_logits_mode(mode, from_logits)
    linear = interpolation == "linear"

    def fit_columns(scores: Array, targets: Array, weights: Array) -> IsotonicParams:
        return jax.vmap(_isotonic_column, in_axes=(0, 0, None))(scores, targets, weights)

    return _make(
        "isotonic_regression",
        fit_columns,
        functools.partial(_interpolate, linear=linear),
        mode=mode,
        from_logits=from_logits,
    )


# ----------------------------------------------------------------------------------- BBQ


def _bbq_bin_range(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``B_min = max(1, floor(n^(1/3) / 10))``, ``B_max = min(ceil(n / 5), ceil(10 n^(1/3)))``,
    exactly in integers (float cube roots are off by one at perfect cubes)."""
    n = np.asarray(n, np.int64)
    lo = np.floor(np.cbrt(n) / 10).astype(np.int64)
    lo = np.where((10 * (lo + 1)) ** 3 <= n, lo + 1, lo)
    lo = np.where((10 * lo) ** 3 > n, lo - 1, lo)
    hi = np.ceil(10 * np.cbrt(n)).astype(np.int64)
    hi = np.where((hi - 1) ** 3 >= 1000 * n, hi - 1, hi)
    hi = np.where(hi**3 < 1000 * n, hi + 1, hi)
    return np.maximum(1, lo), np.minimum(-(-n // 5), hi)


def _bbq_column(scores: Array, targets: Array, weights: Array, prior_strength: float) -> BBQParams:
    n_rows = scores.shape[-1]
    dtype = scores.dtype
    s, y, n = _sort_columns(scores, targets, weights)
    # Edge candidates midway between consecutive sorted scores: mid[c] for c = 1 .. N-1.
    mid = 0.5 * (s[:-1] + s[1:])
    rank = jnp.searchsorted(s, mid, side="right").astype(jnp.int32)  # #{scores <= mid[c]}
    rank = jnp.minimum(rank, n)
    positives = jnp.concatenate([jnp.zeros(1, dtype), jnp.cumsum(y)])  # over the first r
    lo_table, hi_table = (jnp.asarray(t, jnp.int32) for t in _bbq_bin_range(np.arange(n_rows + 1)))
    max_bins = int(_bbq_bin_range(np.array([n_rows]))[1][0])
    num_bins = jnp.arange(1, max_bins + 1, dtype=jnp.int32)[:, None]  # one model per row
    b = jnp.arange(max_bins + 1, dtype=jnp.int32)[None, :]
    cut = b * (n // num_bins) + (b * (n % num_bins)) // num_bins  # floor(b n / B)
    inner = (b > 0) & (b < num_bins)
    cut_idx = jnp.clip(cut - 1, 0, n_rows - 2)
    r = jnp.where(b == 0, 0, jnp.where(inner, rank[cut_idx], n))
    edge = jnp.where(b == 0, 0, jnp.where(inner, mid[cut_idx], 1)).astype(dtype)
    count = (r[:, 1:] - r[:, :-1]).astype(dtype)
    pos = positives[r[:, 1:]] - positives[r[:, :-1]]
    in_model = b[:, 1:] <= num_bins
    prior = jnp.clip(0.5 * (edge[:, 1:] + edge[:, :-1]), 0.005, 0.995)
    a0 = prior_strength / num_bins.astype(dtype)
    alpha, beta = a0 * prior, a0 * (1 - prior)
    lg = jax.scipy.special.gammaln
    per_bin = (
        lg(a0) - lg(count + a0) + lg(pos + alpha) - lg(alpha) + lg(count - pos + beta) - lg(beta)
    )
    log_ml = jnp.sum(jnp.where(in_model, per_bin, 0), axis=-1)
    active = (num_bins[:, 0] >= lo_table[n]) & (num_bins[:, 0] <= hi_table[n])
    weight = jax.nn.softmax(jnp.where(active, log_ml, -jnp.inf))
    # Inactive models (too many bins for n) can hold nonsense counts; they have weight 0 and
    # must not turn the average into NaN through 0 * inf.
    theta = jnp.where(active[:, None], (pos + alpha) / (count + a0), 0)
    # The average of step functions is a step function: accumulate each model's jumps at the
    # rank of its edge and take a cumulative sum.
    jump = weight[:, None] * (theta[:, 1:] - theta[:, :-1])
    at = jnp.where(inner[:, 1:-1] & in_model[:, 1:], cut[:, 1:-1], n_rows)
    steps = jax.ops.segment_sum(jump.ravel(), at.ravel(), n_rows)
    values = jnp.sum(weight * theta[:, 0]) + jnp.cumsum(steps)
    return BBQParams(mid, values)


def bbq(
    *,
    prior_strength: float = 2.0,
    mode: Literal["one_vs_rest", "top_label"] = "one_vs_rest",
    from_logits: bool = False,
) -> Calibrator:
    """Bayesian Binning into Quantiles (Naeini, Cooper & Hauskrecht 2015), BDeu-scored.

    Every equal-frequency binning with ``B`` bins, ``B`` from ``max(1, floor(n^(1/3) / 10))``
    to ``min(ceil(n / 5), ceil(10 n^(1/3)))`` (``n`` valid samples), is scored by its BDeu
    marginal likelihood

    .. math:: \\log P(D \\mid M_B) = \\sum_{b=1}^{B} \\log
        \\frac{\\Gamma(N'/B)}{\\Gamma(n_b + N'/B)}
        \\frac{\\Gamma(m_b + \\alpha_b)}{\\Gamma(\\alpha_b)}
        \\frac{\\Gamma(n_b - m_b + \\beta_b)}{\\Gamma(\\beta_b)},\\quad
        \\alpha_b = \\tfrac{N'}{B} p_b,\\ \\beta_b = \\tfrac{N'}{B}(1 - p_b)

    (``n_b`` samples and ``m_b`` positives in bin ``b``, prior strength ``N' = 2``, prior mean
    ``p_b`` the bin's midpoint clamped to ``[0.005, 0.995]``), and the calibrated score is the
    average of the models' posterior means ``(m_b + alpha_b) / (n_b + N'/B)`` with weights
    ``exp(log P(D | M_B))`` normalised (uniform model prior; the same as
    ``exp((min score - score) / 2)`` with ``score = -2 log ML``). Bin ``b`` of ``M_B`` holds
    scores in ``(e_{b-1}, e_b]`` with ``e_0 = 0``, ``e_B = 1`` and ``e_b`` midway between the
    sorted training scores at ranks ``floor(b n / B)`` and ``floor(b n / B) + 1``. All models
    are scored at once as one ``[models, bins]`` array (no Python loop), and their average is
    stored as one step function over the ``N - 1`` edge candidates.

    Differences from netcal's ``BBQ`` (checked in the tests on the same data): netcal scores
    models by BIC (``-2`` max log-likelihood ``+ log(n)·B``) rather than the Bayesian marginal
    likelihood, uses equal-width bins by default (``equal_intervals=True``) where the paper
    uses equal-frequency ones, averages only the models its "elbow" rule keeps, and predicts
    each model's maximum-likelihood bin frequency without the Beta prior. BIC penalises each
    bin by ``log n``; BDeu's prior shrinks small bins toward their midpoint instead, so the two
    weigh the binnings differently, and netcal's outputs are coarser (its bin frequencies can
    be exactly 0 or 1).

    Args:
      prior_strength: the equivalent sample size ``N'`` (``> 0``).
      mode: ``"one_vs_rest"`` or ``"top_label"`` (ignored for binary ``[N]`` input). With
        ``"top_label"``, ``out[j*]`` is exactly the calibrated confidence for ``j*`` the
        *input* row's argmax; the output's own argmax can differ (module docstring).
      from_logits: take logits (softmax / sigmoid applied first) instead of probabilities.

    Returns:
      A :class:`Calibrator`: ``fit(probs [N, K] or [N], labels [N], *, where=None) ->
      BBQParams(edges [C, N-1], values [C, N])``; ``apply(params, probs) -> probs``
      (``[N, 2]`` for binary input).

    Examples:
      >>> import jax, jax.numpy as jnp, calib_jax as cj
      >>> s = jax.random.uniform(jax.random.key(0), (1000,))
      >>> y = jax.random.bernoulli(jax.random.key(1), s**2).astype(jnp.int32)
      >>> params = jax.jit(cj.calibrators.bbq().fit)(s, y)
      >>> out = cj.calibrators.bbq().apply(params, jnp.array([0.2, 0.5, 0.9]))[:, 1]
      >>> print([round(float(p), 1) for p in out])
      [0.0, 0.3, 0.8]

    References:
      Naeini, Cooper, Hauskrecht. Obtaining Well Calibrated Probabilities Using Bayesian
      Binning. AAAI 2015.
    """
    if not prior_strength > 0:
        raise ValueError(f"prior_strength must be > 0, got {prior_strength}.")
    _check_from_logits_mode(mode, from_logits)

    def fit_columns(scores: Array, targets: Array, weights: Array) -> BBQParams:
        column = functools.partial(_bbq_column, prior_strength=prior_strength)
        return jax.vmap(column, in_axes=(0, 0, None))(scores, targets, weights)

    def apply_column(params: BBQParams, s: Array) -> Array:
        return params.values[jnp.searchsorted(params.edges, s, side="left")]

    return _make("bbq", fit_columns, apply_column, mode=mode, from_logits=from_logits)
