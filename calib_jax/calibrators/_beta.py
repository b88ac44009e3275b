"""Beta calibration (Kull, Silva Filho & Flach 2017) on probabilities."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from calib_jax.calibrators._base import Array, Calibrator
from calib_jax.calibrators._nonparametric import _check_from_logits_mode, _make

# Step lengths tried by the Newton line search: 1, 1/2, ..., 2^-11.
_STEPS = 2.0 ** -jnp.arange(12)


class BetaParams(NamedTuple):
    """Fitted beta calibration ``sigmoid(a ln s - b ln(1 - s) + c)`` per column (class, or one
    for binary / top-label input): ``slopes [C, 2]`` holds ``(a, b)``, ``intercept [C]`` is
    ``c``."""

    slopes: Array
    intercept: Array


def _features(s: Array) -> Array:
    """``[ln s, -ln(1 - s), 1]`` with ``s`` clipped to ``[eps, 1 - eps]`` of its dtype."""
    eps = jnp.finfo(s.dtype).eps
    s = jnp.clip(s, eps, 1 - eps)
    return jnp.stack([jnp.log(s), -jnp.log1p(-s), jnp.ones_like(s)], axis=-1)


def newton_logistic(
    x: Array, y: Array, w: Array, active: Array, init: Array, *, max_iter: int, tol: float
) -> Array:
    """Unpenalised logistic regressions ``min_theta mean_w softplus(x theta) - y x theta``, one
    per leading index ``c`` (``x [C, N, P]``, ``y [C, N]``, ``w [N]``, ``active``/``init
    [C, P]``), by Newton's method over the coordinates where ``active`` is true (the others
    stay at 0).

    Each iteration solves the Newton system (a tiny ridge keeps it solvable; it scales the step,
    not the optimum) and takes the longest step of ``1, 1/2, ..., 2^-11`` that decreases the
    loss (Armijo), or the full step once the predicted decrease is below the loss's rounding
    error; a column stops when no step decreases its loss, its step is below ``tol``, or after
    ``max_iter`` iterations (e.g. separable data, whose optimum is at infinity). The loop is one
    ``lax.while_loop`` over all columns (not a vmapped loop), so ``checkify`` can trace it.
    """
    total = jnp.sum(w)
    mask = active.astype(x.dtype)
    p_dim = x.shape[-1]
    steps = _STEPS.astype(x.dtype)

    def loss_at(u, yc):
        return jnp.sum(w * (jax.nn.softplus(u) - yc * u)) / total

    def step(xc, yc, mc, theta):
        u = xc @ theta
        sig = jax.nn.sigmoid(u)
        grad = mc * (xc.T @ (w * (sig - yc))) / total
        hess = (xc.T * (w * sig * (1 - sig))[None]) @ xc / total
        hess = hess * (mc[:, None] * mc[None]) + jnp.diag(1 - mc)
        ridge = 1e-10 * (jnp.trace(hess) + jnp.finfo(x.dtype).tiny)
        delta = -jnp.linalg.solve(hess + ridge * jnp.eye(p_dim, dtype=x.dtype), grad) * mc
        d = xc @ delta
        current = loss_at(u, yc)
        losses = jax.vmap(lambda t: loss_at(u + t * d, yc))(steps)
        ok = (losses <= current + 1e-4 * steps * jnp.dot(grad, delta)) & jnp.isfinite(losses)
        # Near the optimum the loss changes by less than its rounding error, so a comparison
        # of losses is noise: take the full Newton step there (it converges quadratically).
        tiny = -jnp.dot(grad, delta) < 100 * jnp.finfo(x.dtype).eps * (1 + jnp.abs(current))
        ok = ok | ((jnp.arange(steps.shape[0]) == 0) & tiny)
        t = jnp.where(jnp.any(ok), steps[jnp.argmax(ok)], 0)
        move = t * delta
        finite = jnp.all(jnp.isfinite(move))
        done = ~jnp.any(ok) | (jnp.max(jnp.abs(move)) < tol) | ~finite
        return jnp.where(finite, theta + move, theta), done

    def body(state):
        it, theta, done = state
        new, new_done = jax.vmap(step)(x, y, mask, theta)
        return it + 1, jnp.where(done[:, None], theta, new), done | new_done

    def cond(state):
        it, _, done = state
        return (it < max_iter) & ~jnp.all(done)

    start = (jnp.int32(0), init * mask, jnp.zeros(init.shape[0], bool))
    return lax.while_loop(cond, body, start)[1]


def _beta_columns(
    scores: Array, targets: Array, weights: Array, *, max_iter: int, tol: float
) -> BetaParams:
    x = _features(scores)
    fit = lambda active, init: newton_logistic(
        x, targets, weights, active, init, max_iter=max_iter, tol=tol
    )
    theta = fit(jnp.ones(x.shape[::2], bool), jnp.zeros(x.shape[::2], x.dtype))
    # betacal's rule: a negative a drops ln s and refits (a = 0); otherwise a negative b drops
    # -ln(1 - s) and refits (b = 0). With both >= 0 the refit starts at the optimum and stops.
    a_neg, b_neg = theta[:, :1] < 0, theta[:, 1:2] < 0
    active = jnp.where(
        a_neg,
        jnp.array([[False, True, True]]),
        jnp.where(b_neg, jnp.array([[True, False, True]]), jnp.ones((1, 3), bool)),
    )
    theta = fit(active, theta)
    return BetaParams(theta[:, :2], theta[:, 2])


def beta_calibration(
    *,
    mode: Literal["one_vs_rest", "top_label"] = "one_vs_rest",
    from_logits: bool = False,
    max_iter: int = 100,
    tol: float = 1e-7,
) -> Calibrator:
    """Beta calibration: ``P(y = 1 | s) = sigmoid(a ln s - b ln(1 - s) + c)`` with ``a, b >= 0``.

    .. math:: \\hat p = \\sigma\\bigl(a \\ln s - b \\ln(1 - s) + c\\bigr)
              = \\frac{1}{1 + e^{-c}\\,(1 - s)^b / s^a}

    The three-parameter ("abm") fit of Kull, Silva Filho & Flach 2017: unpenalised logistic
    regression of the 0/1 targets on the features ``ln s`` and ``-ln(1 - s)``, with ``s``
    clipped to ``[eps, 1 - eps]`` (``eps`` of the compute dtype, ``~1.2e-7`` in float32), fitted
    by a line-searched Newton method (exact for this convex problem; a ``lax.while_loop`` of
    at most ``max_iter`` iterations). The map is monotone only for ``a, b >= 0``, so the fit
    follows the refit rule of the authors' package ``betacal``: if the fitted ``a < 0``, refit
    with ``a = 0`` (features ``-ln(1 - s)`` and the intercept); else if ``b < 0``, refit with
    ``b = 0``. (The refitted coefficient is not checked again, as in ``betacal``.) A perfectly
    separated set has no finite optimum; the fit then stops at ``max_iter`` with large
    coefficients.

    Multi-class ``[N, K]`` probabilities: one-vs-rest (column ``j`` against ``labels == j``)
    and each row renormalised to sum to one, or ``mode="top_label"`` (the confidence against
    the correctness of the input's argmax ``j*``; ``out[j*]`` is the calibrated confidence and
    the other classes are rescaled to fill the row; the output's argmax can differ from
    ``j*``). Binary ``[N]`` input is the positive-class probability with labels in ``{0, 1}``.

    Args:
      mode: ``"one_vs_rest"`` or ``"top_label"`` (ignored for binary ``[N]`` input).
      from_logits: take logits (softmax / sigmoid applied first) instead of probabilities.
      max_iter: most Newton iterations per fit (two fits: before and after the refit rule).
      tol: stop when the largest coefficient step is below this.

    Returns:
      A :class:`Calibrator` (``inputs="probs"`` unless ``from_logits``):
      ``fit(probs [N, K] or [N], labels [N], *, where=None) -> BetaParams(slopes [C, 2],
      intercept [C])`` (``C = K``, or 1 for binary / top-label input);
      ``apply(params, probs [..., K] or [N]) -> probs [..., K]`` (``[N, 2]`` for binary input).
      Invalid fit data (NaN, probabilities out of range or rows not summing to one, labels out
      of range, a single class) raise eagerly and give NaN parameters under ``jit``.

    Examples:
      >>> import jax, jax.numpy as jnp, calib_jax as cj
      >>> s = jax.random.uniform(jax.random.key(0), (4000,), minval=0.01, maxval=0.99)
      >>> y = jax.random.bernoulli(jax.random.key(1), s**2).astype(jnp.int32)
      >>> beta = cj.calibrators.beta_calibration()
      >>> params = jax.jit(beta.fit)(s, y)
      >>> print([round(float(a), 1) for a in params.slopes[0]])
      [1.9, 0.8]
      >>> print(f"{float(beta.apply(params, jnp.array([0.5]))[0, 1]):.2f}")
      0.27

    References:
      Kull, Silva Filho, Flach. Beta calibration: a well-founded and easily implemented
      improvement on logistic calibration for binary classifiers. AISTATS 2017.
    """
    _check_from_logits_mode(mode, from_logits)
    if max_iter < 1 or not tol > 0:
        raise ValueError(f"need max_iter >= 1 and tol > 0, got {max_iter}, {tol}.")

    def fit_columns(scores: Array, targets: Array, weights: Array) -> BetaParams:
        return _beta_columns(scores, targets, weights, max_iter=max_iter, tol=tol)

    def apply_column(params: BetaParams, s: Array) -> Array:
        f = _features(s)
        return jax.nn.sigmoid(f[..., :2] @ params.slopes + params.intercept)

    return _make("beta_calibration", fit_columns, apply_column, mode=mode, from_logits=from_logits)
