"""Dirichlet calibration (Kull et al. 2019) with the penalty chosen by k-fold cross-validation."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from calib_jax.calibrators._base import Array, ArrayLike, Calibrator, check_apply_input
from calib_jax.calibrators._scaling import _lbfgs, _logit_fit, _mean_nll

_REGULARIZERS = ("odir", "l2")


class DirichletParams(NamedTuple):
    """Fitted Dirichlet calibration ``softmax(W log p + b)``: ``weight [K, K]``, ``bias [K]``
    and the penalty strength ``regularization`` (a scalar) chosen by cross-validation."""

    weight: Array
    bias: Array
    regularization: Array


def _canonical(weight: Array, bias: Array, regularizer: str) -> tuple[Array, Array]:
    """The member of ``(W + 1 vᵀ, b + c 1)`` with the smallest penalty.

    ``W log p + b`` changes by the same amount ``v·log p + c`` in every class under that shift,
    so the softmax and the NLL do not change; only the penalty picks the member, and it is
    smallest with each column's penalised entries centred (the off-diagonal ones under ODIR,
    all under L2) and ``Σ b = 0`` (L2 leaves ``b`` unpenalised: any ``c`` is optimal).
    """
    k = weight.shape[-1]
    if regularizer == "l2":
        shift = jnp.mean(weight, axis=0)
    else:
        shift = (jnp.sum(weight, axis=0) - jnp.diagonal(weight)) / (k - 1)
    return weight - shift[None], bias - jnp.mean(bias)


def _penalty(params: tuple[Array, Array], lam: Array, regularizer: str) -> Array:
    weight, bias = params
    k = weight.shape[-1]
    sq = jnp.square(weight)
    if regularizer == "l2":
        return lam * jnp.sum(sq)
    off = jnp.sum(sq * (1 - jnp.eye(k, dtype=weight.dtype))) / (k * (k - 1))
    return lam * (off + jnp.sum(jnp.square(bias)) / k)


def dirichlet_calibration(
    *,
    regularizer: Literal["odir", "l2"] = "odir",
    lambdas: tuple[float, ...] = (1e-4, 1e-3, 1e-2, 1e-1, 1.0),
    num_folds: int = 5,
    max_iter: int = 500,
    tol: float = 1e-6,
) -> Calibrator:
    """Dirichlet calibration: ``softmax(W log p + b)``, fitted by penalised NLL, the penalty's
    strength chosen by k-fold cross-validation.

    .. math:: \\hat p = \\operatorname{softmax}(W \\log p + b),\\qquad
              \\min_{W, b}\\ \\overline{\\mathrm{NLL}} + \\lambda\\,\\Omega(W, b)

    ``log p`` is the log-softmax of the input, so logits and log-probabilities give the same
    result (``log_softmax(log p) = log p``); pass ``jnp.log(p)`` for probabilities. Penalties:
    ``regularizer="odir"`` (off-diagonal and intercept regularisation, Kull et al. 2019)
    ``Ω = Σ_{i≠j} W_ij² / (K(K-1)) + Σ_k b_k² / K``, one ``λ`` for both terms (the paper
    cross-validates two; here ``μ = λ``); ``regularizer="l2"``: ``Ω = Σ_ij W_ij²`` (the bias
    is not penalised; the returned ``b`` sums to 0, one of its equally good values).

    Each fit is optax L-BFGS from ``W = I, b = 0`` in a ``lax.while_loop``, run on an equivalent
    problem with the same minimiser: ``W`` acts on the columns of ``log p`` divided by their
    spread over the valid rows, and the penalty is taken at the member of ``W``'s class
    ``W + 1 vᵀ`` (which leaves the softmax unchanged) that minimises it. It stops when the
    gradient norm (of the scaled problem) is below ``tol``, when an iteration moves no parameter
    by more than the float resolution, or after ``max_iter`` iterations.

    Cross-validation: the valid (unmasked) rows, in order, are dealt round-robin into
    ``num_folds`` folds (row ``r`` of them into fold ``r mod num_folds``; shuffle rows that are
    ordered, e.g. by class). For every fold and every ``λ`` in ``lambdas`` the model is fitted
    on the other folds; the ``λ`` with the lowest held-out NLL summed over folds (the first on
    ties) is chosen and the model refitted on all rows at that ``λ``. The
    ``num_folds × len(lambdas) + 1`` fits run one after another in one compiled ``lax.scan``.
    With a single ``λ`` nothing is cross-validated: one fit on all rows.

    Args:
      regularizer: ``"odir"`` or ``"l2"``.
      lambdas: the grid of penalty strengths (each finite and ``>= 0``; static).
      num_folds: folds of the cross-validation (``>= 2``; static).
      max_iter: most L-BFGS iterations per fit.
      tol: gradient-norm tolerance (of the scaled problem).

    Returns:
      A :class:`Calibrator`: ``fit(logits [N, K], labels [N], *, where=None) ->
      DirichletParams(weight [K, K], bias [K], regularization)``; ``apply(params, logits
      [..., K]) -> probs``; ``apply_logits`` returns ``log_softmax(z) @ W.T + b``. Invalid fit
      data raise eagerly and give NaN parameters under ``jit``.

    Examples:
      >>> import jax, calib_jax as cj
      >>> z = 3.0 * jax.random.normal(jax.random.key(0), (2000, 3))
      >>> y = jax.random.categorical(jax.random.key(1), z / 2.0)
      >>> dc = cj.calibrators.dirichlet_calibration()
      >>> params = jax.jit(dc.fit)(z, y)
      >>> print(params.weight.shape, f"{float(params.weight.trace() / 3):.1f}")
      (3, 3) 0.5

    References:
      Kull, Perello-Nieto, Kängsepp, Silva Filho, Song, Flach. Beyond temperature scaling:
      Obtaining well-calibrated multiclass probabilities with Dirichlet calibration.
      NeurIPS 2019.
    """
    if regularizer not in _REGULARIZERS:
        raise ValueError(f"regularizer must be one of {_REGULARIZERS}, got {regularizer!r}.")
    grid = np.asarray(lambdas, np.float64).reshape(-1)
    if grid.size < 1 or not np.all(np.isfinite(grid) & (grid >= 0)):
        raise ValueError(f"lambdas must be non-empty, finite and >= 0, got {lambdas}.")
    if isinstance(num_folds, bool) or not isinstance(num_folds, int) or num_folds < 2:
        raise ValueError(f"num_folds must be a static int >= 2, got {num_folds!r}.")
    if max_iter < 1 or not tol > 0:
        raise ValueError(f"need max_iter >= 1 and tol > 0, got {max_iter}, {tol}.")

    def fit_one(
        x: Array, scale: Array, labels: Array, weights: Array, lam: Array
    ) -> tuple[Array, Array]:
        # L-BFGS on (V, b) with W = V / scale and the features x = log p / scale, and the
        # penalty of the canonical member of W's class: the same optimum, far fewer iterations
        # (the NLL is flat along K shifts of W that a small λ barely holds, and the spreads of
        # the columns of log p are far from 1).
        def weight_bias(p):
            return _canonical(p[0] / scale[None], p[1], regularizer)

        def loss(p):
            nll = _mean_nll(x @ p[0].T + p[1][None], labels, weights)
            return nll + _penalty(weight_bias(p), lam, regularizer)

        init = (jnp.diag(scale), jnp.zeros_like(scale))
        return weight_bias(_lbfgs(loss, init, max_iter=max_iter, tol=tol, stop_on_stall=True))

    def core(logits: Array, labels: Array, weights: Array) -> DirichletParams:
        dtype = logits.dtype
        labels = jnp.clip(labels, 0, logits.shape[-1] - 1)
        logp = jax.nn.log_softmax(logits, axis=-1)
        lams = jnp.asarray(grid, dtype)
        # Each column of log p over its spread on the valid rows (1 where it has none).
        share = weights[:, None] / jnp.sum(weights)
        centred = logp - jnp.sum(share * logp, axis=0, keepdims=True)
        spread = jnp.sqrt(jnp.sum(share * jnp.square(centred), axis=0))
        scale = jnp.where(spread > 0, spread, 1)
        x = logp / scale[None]
        if grid.size == 1:  # nothing to choose: one fit on every row
            weight, bias = fit_one(x, scale, labels, weights, lams[0])
            return DirichletParams(weight, bias, lams[0])
        valid = weights > 0
        fold = (jnp.cumsum(valid) - 1) % num_folds
        held_out = (fold[None] == jnp.arange(num_folds)[:, None]) & valid[None]  # [F, N]
        train = jnp.where(held_out, 0, weights[None])
        # Step s < F·G fits fold s // G at λ_(s mod G); the last step refits every row at the λ
        # chosen so far, i.e. by all folds. One compiled L-BFGS, fits one after another (under
        # vmap the line search's branches all run for every fit).
        f_idx, g_idx = np.divmod(np.arange(num_folds * grid.size), grid.size)

        def step(per_lambda, s):
            last = s == f_idx.size
            at = jnp.minimum(s, f_idx.size - 1)
            g = jnp.asarray(g_idx)[at]
            lam = jnp.where(last, lams[jnp.argmin(per_lambda)], lams[g])
            rows = jnp.where(last, weights, train[jnp.asarray(f_idx)[at]])
            weight, bias = fit_one(x, scale, labels, rows, lam)
            picked = jnp.take_along_axis(
                jax.nn.log_softmax(logp @ weight.T + bias[None], axis=-1), labels[:, None], -1
            )[:, 0]
            held = jnp.where(held_out[jnp.asarray(f_idx)[at]] & ~last, picked, 0)
            return per_lambda.at[g].add(-jnp.sum(held)), (weight, bias, lam)

        steps = jnp.arange(f_idx.size + 1)
        _, (weight, bias, best) = lax.scan(step, jnp.zeros(grid.size, dtype), steps)
        weight, bias, best = weight[-1], bias[-1], best[-1]
        return DirichletParams(weight, bias, best.astype(dtype))

    fit = _logit_fit(core)

    def apply_logits(params: DirichletParams, logits: ArrayLike) -> Array:
        logits = check_apply_input(logits, "logits", params.weight.shape[-1], binary=False)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return logp @ params.weight.T + params.bias.reshape((1,) * (logits.ndim - 1) + (-1,))

    def apply(params: DirichletParams, logits: ArrayLike) -> Array:
        return jax.nn.softmax(apply_logits(params, logits), axis=-1)

    return Calibrator(fit, apply, apply_logits, "logits")
