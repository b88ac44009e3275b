"""Parametric calibrators on logits: temperature, vector, matrix and Platt scaling."""

from __future__ import annotations

import functools
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax import lax

from calib_jax import _validation as v
from calib_jax.calibrators._base import (
    Array,
    ArrayLike,
    Calibrator,
    check_apply_input,
    check_fit_inputs,
    fit_is_valid,
    poison,
)

# Bracket of the temperature search: T in [1e-3, 1e3]. A fit that lands on an end means the
# validation set asks for a more extreme temperature (e.g. a perfectly separated set).
_LOG_T_BOUND = float(np.log(1e3))


class TemperatureParams(NamedTuple):
    """Fitted temperature scaling: ``temperature`` is a scalar ``T > 0``."""

    temperature: Array


class VectorScalingParams(NamedTuple):
    """Fitted vector scaling ``softmax(weight * z + bias)``: ``weight``, ``bias`` are ``[K]``."""

    weight: Array
    bias: Array


class MatrixScalingParams(NamedTuple):
    """Fitted matrix scaling ``softmax(z @ weight.T + bias)``: ``weight [K, K]``, ``bias [K]``."""

    weight: Array
    bias: Array


class PlattParams(NamedTuple):
    """Fitted Platt scaling ``sigmoid(slope * z + intercept)``: two scalars."""

    slope: Array
    intercept: Array


def _weighted_mean(values: Array, weights: Array) -> Array:
    return jnp.sum(values * weights) / jnp.sum(weights)


def _logit_fit(core, *, binary_ok: bool = False):
    """``fit(logits, labels, *, where=None)`` around ``core(logits, labels, weights)``.

    The shared input checks run first; ``core`` is compiled with non-finite logits replaced by 0
    (masked rows may hold anything) and its parameters become NaN when the data cannot give a
    fit (:func:`calib_jax.calibrators._base.fit_is_valid`).
    """
    compiled = jax.jit(lambda z, y, w: core(jnp.where(jnp.isfinite(z), z, 0), y, w))

    def fit(logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None):
        logits, labels, weights, k = check_fit_inputs(
            logits, labels, where, name="logits", binary_ok=binary_ok
        )
        return poison(compiled(logits, labels, weights), fit_is_valid(logits, labels, weights, k))

    return fit


def _inverse_temperature_moments(
    gaps: Array, gap_label: Array, weights: Array, log_t: Array
) -> tuple[Array, Array]:
    """d NLL / d beta and d^2 NLL / d beta^2 at inverse temperature ``beta = exp(-log_t)``.

    ``NLL(beta) = mean(logsumexp(beta z) - beta z_y)`` is convex in ``beta``: its first
    derivative is ``mean(E_p[z] - z_y)`` and its second ``mean(Var_p[z])`` with
    ``p = softmax(beta z)``. Both are computed from the gaps ``z - max z <= 0`` (``gap_label``
    the label's): the largest exponent is exactly 0, so no exponential overflows however large
    the logits (a softmax of ``beta * z`` fused by XLA rounds ``beta * z`` differently in its
    maximum and its exponent, and at ``|beta z| ~ 1e9`` that difference overflowed ``exp``:
    NaN). Classes whose weight underflows to 0 are skipped, so gaps that overflowed to
    ``-inf`` (or whose squares would) add nothing.
    """
    beta = jnp.exp(-log_t)
    e = jnp.exp(beta * gaps)
    total = jnp.sum(e, axis=-1)
    present = e > 0
    mean_gap = jnp.sum(jnp.where(present, e * gaps, 0), axis=-1) / total
    centred = gaps - mean_gap[:, None]
    var = jnp.sum(jnp.where(present, e * jnp.square(centred), 0), axis=-1) / total
    return _weighted_mean(mean_gap - gap_label, weights), _weighted_mean(var, weights)


def _fit_log_temperature(
    logits: Array, labels: Array, weights: Array, *, tol: float, max_iter: int
) -> Array:
    """The NLL-optimal ``log T`` in the bracket ``[-B, B]``, ``B = log 1e3``.

    ``dNLL/dbeta`` is non-decreasing in ``beta``, so its sign at the two ends decides first:
    if the NLL still decreases at ``T = e^-B`` (separable data, or a gradient that underflows to
    0 there), the answer is that end; if it already increases at ``T = e^B`` (e.g. huge logits
    with wrong predictions), that end; if both (the NLL does not depend on ``T``, e.g. constant
    rows), ``T = 1``. Otherwise the root lies inside and a bracketed (safeguarded) Newton
    iteration finds it: each iteration evaluates the derivative once, shrinks the bracket and
    takes the Newton step in ``log T`` when it stays inside, else bisects; it stops when the
    step or the bracket is below ``tol`` (in ``log T``), after at most ``max_iter`` iterations.
    A NaN derivative (which valid input cannot produce) gives NaN, never a bracket midpoint.
    """
    dtype = logits.dtype
    top = jnp.max(logits, axis=-1, keepdims=True)
    gaps = logits - top
    # Masked rows may hold any label: keep them out of the weighted means (0 * NaN is NaN).
    gap_label = jnp.where(weights > 0, v.take_label(logits, labels) - top[:, 0], 0)
    moments = functools.partial(_inverse_temperature_moments, gaps, gap_label, weights)
    ends = jnp.asarray([-_LOG_T_BOUND, _LOG_T_BOUND], dtype)
    g_ends, _ = jax.vmap(moments)(ends)
    at_low, at_high = g_ends[0] <= 0, g_ends[1] >= 0
    start = jnp.where(
        at_low & at_high, 0, jnp.where(at_low, ends[0], jnp.where(at_high, ends[1], 0))
    )

    def body(state):
        it, log_t, lo, hi, _, _ = state
        g, h = moments(log_t)
        # g > 0: beta too large, i.e. T too small: the optimum has a larger log T.
        lo = jnp.where(g > 0, log_t, lo)
        hi = jnp.where(g > 0, hi, log_t)
        beta = jnp.exp(-log_t)
        newton = log_t + g / jnp.maximum(beta * h, jnp.finfo(dtype).tiny)
        inside = (newton > lo) & (newton < hi) & (h > 0)
        new = jnp.where(inside, newton, 0.5 * (lo + hi))
        # g == 0 exactly: log_t is the optimum. Its Newton step lands on the bracket end just
        # set to log_t, so `inside` is False and the bisection midpoint would be returned.
        new = jnp.where(g == 0, log_t, new)
        bad = jnp.isnan(g)
        done = (jnp.abs(new - log_t) < tol) | (hi - lo < tol) | (g == 0) | bad
        return it + 1, new, lo, hi, done, bad

    def cond(state):
        it, _, _, _, done, _ = state
        return (it < max_iter) & ~done

    init = (
        jnp.int32(0),
        start.astype(dtype),
        ends[0],
        ends[1],
        at_low | at_high | jnp.any(jnp.isnan(g_ends)),
        jnp.any(jnp.isnan(g_ends)),
    )
    _, log_t, _, _, _, bad = lax.while_loop(cond, body, init)
    return jnp.where(bad, jnp.nan, log_t)


def _ece_grid_temperature(logits: Array, labels: Array, weights: Array, num_bins: int) -> Array:
    from calib_jax import metrics

    # Built in NumPy so that each k / 10 is correctly rounded (XLA may divide by reciprocal).
    temps = jnp.asarray(np.arange(1, 101) / 10, logits.dtype)
    where = weights > 0

    # Gaps to the row maximum: the largest exponent is exactly 0 for any t, however large the
    # logits (see _inverse_temperature_moments).
    gaps = logits - jnp.max(logits, axis=-1, keepdims=True)

    def ece_at(t):
        return metrics.ece(
            jax.nn.softmax(gaps / t, axis=-1), labels, num_bins=num_bins, where=where
        )

    # A sequential map: a vmap over the 100 temperatures would hold 100 copies of the logits.
    eces = lax.map(ece_at, temps)
    return temps[jnp.argmin(eces)]


def temperature_scaling(
    *,
    method: Literal["nll", "ece_grid"] = "nll",
    num_bins: int = 15,
    tol: float = 1e-5,
    max_iter: int = 50,
) -> Calibrator:
    """Temperature scaling: ``softmax(z / T)`` with one scalar ``T > 0`` fitted on held-out data.

    .. math:: \\hat p = \\operatorname{softmax}(z / T)

    ``method="nll"`` (Guo et al. 2017) minimises the mean NLL over ``log T``. The NLL is convex
    in the inverse temperature ``beta = 1/T`` with derivative ``mean(E_softmax(beta z)[z] - z_y)``,
    so the fit is the root of that derivative in ``T in [1e-3, 1e3]``. The derivative's sign at
    the two ends is read first (one pass over the data): a set whose NLL still decreases at
    ``T = 1e-3`` (e.g. perfectly separated data) gets exactly ``1e-3``, one whose NLL already
    increases at ``T = 1e3`` (e.g. logits of scale ``1e10`` with wrong predictions) gets exactly
    ``1e3``, and one whose NLL does not depend on ``T`` (every row constant) gets ``T = 1``.
    Otherwise a bracketed Newton iteration in ``log T`` finds the interior root (a
    ``lax.while_loop`` of at most ``max_iter`` passes; it stops when the step in ``log T``
    falls below ``tol``, i.e. ``T`` to a relative ``1e-5`` by default; about 5 to 10 passes in
    practice). The softmax is taken of the gaps ``z - max z``, so logits of any finite size
    (up to the float maximum) give a finite derivative. It cannot diverge or return a negative
    temperature.

    ``method="ece_grid"`` (Mukhoti et al. 2020) picks ``T`` in ``{0.1, 0.2, ..., 10.0}``
    (``k / 10`` in the compute dtype) with the lowest ``num_bins``-bin ECE
    (:func:`calib_jax.metrics.ece`), the first (smallest) on ties, as the paper's code does.

    Dividing by ``T > 0`` is monotone, so the argmax of the logits is unchanged. The fitted
    ``T`` does not depend on ``K``, so the parameters apply to any number of classes.

    Args:
      method: ``"nll"`` or ``"ece_grid"``.
      num_bins: bins of the ECE for ``"ece_grid"`` (static).
      tol: stopping tolerance on ``log T`` for ``"nll"``.
      max_iter: most data passes for ``"nll"``.

    Returns:
      A :class:`Calibrator`: ``fit(logits [N, K], labels [N], *, where=None) ->
      TemperatureParams`` and ``apply(params, logits [..., K]) -> probs [..., K]``;
      ``apply_logits`` returns ``logits / T``. Invalid fit data (NaN logits, labels out of
      range, a single class) raise eagerly and give ``T = NaN`` under ``jit``.

    Examples:
      >>> import jax, jax.numpy as jnp, calib_jax as cj
      >>> z = 3.0 * jax.random.normal(jax.random.key(0), (2000, 5))
      >>> y = jax.random.categorical(jax.random.key(1), z / 3.0)  # labels drawn at T* = 3
      >>> ts = cj.calibrators.temperature_scaling()
      >>> params = jax.jit(ts.fit)(z, y)
      >>> print(f"{float(params.temperature):.1f}")
      3.0
      >>> ts.apply(params, z).shape
      (2000, 5)

    References:
      Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
      Mukhoti et al. Calibrating Deep Neural Networks using Focal Loss. NeurIPS 2020.
    """
    if method not in ("nll", "ece_grid"):
        raise ValueError(f"method must be 'nll' or 'ece_grid', got {method!r}.")
    num_bins = v.check_num_bins(num_bins)
    if not tol > 0 or max_iter < 1:
        raise ValueError(f"need tol > 0 and max_iter >= 1, got {tol}, {max_iter}.")

    def core(logits: Array, labels: Array, weights: Array) -> TemperatureParams:
        if method == "nll":
            t = jnp.exp(_fit_log_temperature(logits, labels, weights, tol=tol, max_iter=max_iter))
        else:
            labels = jnp.clip(labels, 0, logits.shape[-1] - 1)
            t = _ece_grid_temperature(logits, labels, weights, num_bins)
        return TemperatureParams(t)

    fit = _logit_fit(core)

    def checked(logits: ArrayLike) -> Array:
        v.check_floating(logits, "logits")
        logits = v.to_compute_dtype(logits)
        v.check_finite(logits, "logits")
        return logits

    def apply_logits(params: TemperatureParams, logits: ArrayLike) -> Array:
        logits = checked(logits)
        return logits / params.temperature.astype(logits.dtype)

    def apply(params: TemperatureParams, logits: ArrayLike) -> Array:
        # softmax(z / T) of the gaps z - max z (the same probabilities): a fused softmax of
        # z / T rounds z / T differently in its maximum and its exponent, and at |z / T| ~ 1e10
        # that overflowed exp (NaN rows).
        logits = checked(logits)
        gaps = logits - jnp.max(logits, axis=-1, keepdims=True)
        return jax.nn.softmax(gaps / params.temperature.astype(logits.dtype), axis=-1)

    return Calibrator(fit, apply, apply_logits, "logits")


def _lbfgs(fun, init, *, max_iter: int, tol: float, stop_on_stall: bool = False):
    """Minimise ``fun`` from ``init`` with optax L-BFGS in a ``lax.while_loop``.

    Stops when the gradient norm is below ``tol`` or after ``max_iter`` iterations; with
    ``stop_on_stall``, also when an iteration moves no parameter by more than the float
    resolution of the largest one (the gradient's rounding floor can lie above ``tol``).
    """
    opt = optax.lbfgs()
    value_and_grad = optax.value_and_grad_from_state(fun)
    leaves = jax.tree.leaves(init)
    eps = jnp.finfo(leaves[0].dtype).eps

    def largest(tree):
        return functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x)) for x in jax.tree.leaves(tree)])

    def step(carry):
        params, state, _ = carry
        value, grad = value_and_grad(params, state=state)
        updates, state = opt.update(grad, state, params, value=value, grad=grad, value_fn=fun)
        new = optax.apply_updates(params, updates)
        if not stop_on_stall:
            return new, state, jnp.asarray(True)
        return new, state, largest(jax.tree.map(jnp.subtract, new, params)) > eps * largest(new)

    def cond(carry):
        _, state, moved = carry
        count = optax.tree.get(state, "count")
        grad = optax.tree.get(state, "grad")
        return (count == 0) | ((count < max_iter) & (optax.tree.norm(grad) >= tol) & moved)

    return lax.while_loop(cond, step, (init, opt.init(init), jnp.asarray(True)))[0]


def _mean_nll(logits: Array, labels: Array, weights: Array) -> Array:
    logp = jax.nn.log_softmax(logits, axis=-1)
    picked = jnp.take_along_axis(logp, labels[:, None], axis=-1)[:, 0]
    return -_weighted_mean(picked, weights)


def _check_reg(value: float, name: str) -> float:
    # A traced penalty out of range becomes NaN, so the fit gives NaN parameters.
    return v.hyperparameter(value, name)


def vector_scaling(*, bias_l2: float = 0.0, max_iter: int = 200, tol: float = 1e-6) -> Calibrator:
    """Vector scaling: ``softmax(w * z + b)`` with a per-class scale ``w`` and bias ``b``.

    .. math:: \\hat p = \\operatorname{softmax}(w \\odot z + b),\\quad
              \\min_{w, b}\\ \\overline{\\mathrm{NLL}} + \\mu \\lVert b \\rVert^2 / K

    Fitted by mean NLL (plus the optional bias penalty ``bias_l2 = mu``, Kull et al. 2019) with
    optax L-BFGS from ``w = 1, b = 0`` (the identity), in a ``lax.while_loop`` that stops when
    the gradient norm is below ``tol`` or after ``max_iter`` iterations. May change the argmax.

    Args:
      bias_l2: L2 penalty on the bias (``>= 0``).
      max_iter: most L-BFGS iterations.
      tol: gradient-norm tolerance.

    Returns:
      A :class:`Calibrator`: ``fit(logits [N, K], labels [N], *, where=None) ->
      VectorScalingParams(weight [K], bias [K])``; ``apply(params, logits [..., K]) -> probs``;
      ``apply_logits`` returns ``w * z + b``. Applying to ``K' != K`` classes raises.

    Examples:
      >>> import jax, calib_jax as cj
      >>> z = 3.0 * jax.random.normal(jax.random.key(0), (2000, 4))
      >>> y = jax.random.categorical(jax.random.key(1), z / 2.0)
      >>> vs = cj.calibrators.vector_scaling()
      >>> params = jax.jit(vs.fit)(z, y)
      >>> print(params.weight.shape, f"{float(params.weight.mean()):.1f}")
      (4,) 0.5

    References:
      Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
      Kull et al. Beyond temperature scaling: Obtaining well-calibrated multiclass
      probabilities with Dirichlet calibration. NeurIPS 2019.
    """
    bias_l2 = _check_reg(bias_l2, "bias_l2")

    def core(logits: Array, labels: Array, weights: Array) -> VectorScalingParams:
        k = logits.shape[-1]
        safe_labels = jnp.clip(labels, 0, k - 1)

        def loss(p):
            nll = _mean_nll(logits * p.weight[None] + p.bias[None], safe_labels, weights)
            return nll + bias_l2 * jnp.sum(jnp.square(p.bias)) / k

        init = VectorScalingParams(jnp.ones(k, logits.dtype), jnp.zeros(k, logits.dtype))
        return _lbfgs(loss, init, max_iter=max_iter, tol=tol)

    fit = _logit_fit(core)

    def apply_logits(params: VectorScalingParams, logits: ArrayLike) -> Array:
        logits = check_apply_input(logits, "logits", params.weight.shape[-1], binary=False)
        lead = (1,) * (logits.ndim - 1)
        return logits * params.weight.reshape((*lead, -1)) + params.bias.reshape((*lead, -1))

    def apply(params: VectorScalingParams, logits: ArrayLike) -> Array:
        return jax.nn.softmax(apply_logits(params, logits), axis=-1)

    return Calibrator(fit, apply, apply_logits, "logits")


def matrix_scaling(
    *,
    l2: float = 0.0,
    off_diagonal_l2: float = 0.0,
    bias_l2: float = 0.0,
    max_iter: int = 500,
    tol: float = 1e-6,
) -> Calibrator:
    """Matrix scaling: ``softmax(W z + b)`` with a full ``[K, K]`` matrix, fitted by NLL.

    .. math:: \\min_{W, b}\\ \\overline{\\mathrm{NLL}}
              + \\lambda_2 \\lVert W \\rVert_F^2
              + \\lambda \\textstyle\\sum_{i \\ne j} W_{ij}^2 / (K(K-1))
              + \\mu \\lVert b \\rVert^2 / K

    ``l2`` is plain weight decay on ``W``; ``off_diagonal_l2`` and ``bias_l2`` are the ODIR
    penalties of Kull et al. 2019 (normalised by the number of entries). With all three at 0
    this is unregularised multinomial logistic regression on the logits (scikit-learn's
    ``LogisticRegression(penalty=None)``), whose ``W`` is defined only up to adding the same
    vector to every row, though its probabilities are unique. Fitted with optax L-BFGS from the
    identity, in a ``lax.while_loop`` (gradient norm below ``tol`` or ``max_iter`` iterations).

    Args:
      l2: L2 penalty on all of ``W``.
      off_diagonal_l2: L2 penalty on the off-diagonal entries of ``W``.
      bias_l2: L2 penalty on ``b``.
      max_iter: most L-BFGS iterations.
      tol: gradient-norm tolerance.

    Returns:
      A :class:`Calibrator`: ``fit(logits [N, K], labels [N], *, where=None) ->
      MatrixScalingParams(weight [K, K], bias [K])``; ``apply(params, logits [..., K]) ->
      probs``; ``apply_logits`` returns ``z @ W.T + b``.

    Examples:
      >>> import jax, calib_jax as cj
      >>> z = 3.0 * jax.random.normal(jax.random.key(0), (2000, 3))
      >>> y = jax.random.categorical(jax.random.key(1), z / 2.0)
      >>> ms = cj.calibrators.matrix_scaling(off_diagonal_l2=1.0)
      >>> params = jax.jit(ms.fit)(z, y)
      >>> print(params.weight.shape, f"{float(params.weight.trace() / 3):.1f}")
      (3, 3) 0.5

    References:
      Guo, Pleiss, Sun, Weinberger. On Calibration of Modern Neural Networks. ICML 2017.
      Kull et al. Beyond temperature scaling: Obtaining well-calibrated multiclass
      probabilities with Dirichlet calibration. NeurIPS 2019.
    """
    l2 = _check_reg(l2, "l2")
    off_diagonal_l2 = _check_reg(off_diagonal_l2, "off_diagonal_l2")
    bias_l2 = _check_reg(bias_l2, "bias_l2")

    def core(logits: Array, labels: Array, weights: Array) -> MatrixScalingParams:
        k = logits.shape[-1]
        safe_labels = jnp.clip(labels, 0, k - 1)
        off = 1.0 - jnp.eye(k, dtype=logits.dtype)

        def loss(p):
            nll = _mean_nll(logits @ p.weight.T + p.bias[None], safe_labels, weights)
            sq = jnp.square(p.weight)
            reg = l2 * jnp.sum(sq) + bias_l2 * jnp.sum(jnp.square(p.bias)) / k
            if k > 1:
                reg = reg + off_diagonal_l2 * jnp.sum(sq * off) / (k * (k - 1))
            return nll + reg

        init = MatrixScalingParams(jnp.eye(k, dtype=logits.dtype), jnp.zeros(k, logits.dtype))
        return _lbfgs(loss, init, max_iter=max_iter, tol=tol)

    fit = _logit_fit(core)

    def apply_logits(params: MatrixScalingParams, logits: ArrayLike) -> Array:
        logits = check_apply_input(logits, "logits", params.weight.shape[-1], binary=False)
        return logits @ params.weight.T + params.bias.reshape((1,) * (logits.ndim - 1) + (-1,))

    def apply(params: MatrixScalingParams, logits: ArrayLike) -> Array:
        return jax.nn.softmax(apply_logits(params, logits), axis=-1)

    return Calibrator(fit, apply, apply_logits, "logits")


def _binary_logit(x: Array, name: str) -> Array:
    if x.ndim >= 1 and x.shape[-1] == 2 and x.ndim == 2:
        return x[:, 1] - x[:, 0]
    if x.ndim != 1:
        raise ValueError(
            f"Platt scaling is binary: {name} must be [N] (the positive-class logit) or [N, 2] "
            f"logits, got shape {x.shape}."
        )
    return x


def platt_scaling(*, max_iter: int = 100, tol: float = 1e-6) -> Calibrator:
    """Platt scaling for a binary classifier: ``P(y = 1) = sigmoid(a z + b)``, fitted by NLL.

    .. math:: \\hat p_1 = \\sigma(a z + b),\\quad
              \\min_{a, b}\\ -\\overline{y \\log \\hat p_1 + (1 - y) \\log(1 - \\hat p_1)}

    ``z`` is the positive-class logit (``[N]``), or ``z1 - z0`` for ``[N, 2]`` logits. This
    is unregularised logistic regression on ``z`` (scikit-learn's
    ``LogisticRegression(penalty=None)`` on the single feature ``z``); Platt's smoothed targets
    ``(N+ + 1)/(N+ + 2)`` are not used. Fitted with optax L-BFGS from ``a = 1, b = 0`` in a
    ``lax.while_loop`` (gradient norm below ``tol`` or ``max_iter`` iterations). A perfectly
    separable set has no finite optimum; the fit then stops at ``max_iter`` with a large ``a``.

    Args:
      max_iter: most L-BFGS iterations.
      tol: gradient-norm tolerance.

    Returns:
      A :class:`Calibrator`: ``fit(logits [N] or [N, 2], labels [N] in {0, 1}, *,
      where=None) -> PlattParams(slope, intercept)``; ``apply(params, logits) -> probs [N, 2]``;
      ``apply_logits`` returns the two-class logits ``[0, a z + b]``.

    Examples:
      >>> import jax, calib_jax as cj
      >>> z = 4.0 * jax.random.normal(jax.random.key(0), (4000,))
      >>> y = jax.random.bernoulli(jax.random.key(1), jax.nn.sigmoid(0.5 * z - 1.0)).astype(int)
      >>> params = jax.jit(cj.calibrators.platt_scaling().fit)(z, y)
      >>> print(f"{float(params.slope):.1f} {float(params.intercept):.1f}")
      0.5 -0.9

    References:
      Platt. Probabilistic Outputs for Support Vector Machines and Comparisons to Regularized
      Likelihood Methods. Advances in Large Margin Classifiers, 1999.
    """

    def core(logits: Array, labels: Array, weights: Array) -> PlattParams:
        z = _binary_logit(logits, "logits")
        y = (labels == 1).astype(z.dtype)

        def loss(p):
            s = p.slope * z + p.intercept
            # -[y log sigmoid(s) + (1 - y) log sigmoid(-s)] = softplus(s) - y s
            return _weighted_mean(jax.nn.softplus(s) - y * s, weights)

        init = PlattParams(jnp.ones((), z.dtype), jnp.zeros((), z.dtype))
        return _lbfgs(loss, init, max_iter=max_iter, tol=tol)

    checked_fit = _logit_fit(core, binary_ok=True)

    def fit(logits: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None):
        v.check_floating(logits, "logits")
        if np.ndim(logits) == 2 and np.shape(logits)[-1] != 2:
            raise ValueError(f"Platt scaling is binary; got logits of shape {np.shape(logits)}.")
        return checked_fit(logits, labels, where=where)

    def apply_logits(params: PlattParams, logits: ArrayLike) -> Array:
        v.check_floating(logits, "logits")
        z = _binary_logit(v.to_compute_dtype(logits), "logits")
        v.check_finite(z, "logits")
        s = params.slope * z + params.intercept
        return jnp.stack([jnp.zeros_like(s), s], axis=-1)

    def apply(params: PlattParams, logits: ArrayLike) -> Array:
        return jax.nn.softmax(apply_logits(params, logits), axis=-1)

    return Calibrator(fit, apply, apply_logits, "logits")
