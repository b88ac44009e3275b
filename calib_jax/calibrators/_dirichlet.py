"""Dirichlet calibration (Kull et al. 2019) with the penalty chosen by k-fold cross-validation."""

from __future__ import annotations

from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax.calibrators._base import Array, ArrayLike, Calibrator, check_apply_input
from calib_jax.calibrators._scaling import _lbfgs, _logit_fit, _mean_nll

_REGULARIZERS = ("odir", "l2")


class DirichletParams(NamedTuple):
    """Fitted Dirichlet calibration ``softmax(W log p + b)``: ``weight [K, K]``, ``bias [K]``
    and the penalty strength ``regularization`` (a scalar) chosen by cross-validation."""

    weight: Array
    bias: Array
    regularization: Array


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
    is not penalised). Each fit is optax L-BFGS from ``W = I, b = 0`` in a ``lax.while_loop``
    (gradient norm below ``tol`` or ``max_iter`` iterations).

    Cross-validation: the valid (unmasked) rows, in order, are dealt round-robin into
    ``num_folds`` folds (row ``r`` of them into fold ``r mod num_folds``; shuffle rows that are
    ordered, e.g. by class). For every fold and every ``λ`` in ``lambdas`` the model is fitted
    on the other folds; all ``num_folds × len(lambdas)`` fits are one ``vmap``. The ``λ`` with
    the lowest held-out NLL summed over folds (the first on ties) is chosen, and the fit on all
    rows at that ``λ`` (computed in the same ``vmap``) is returned with it.

    Args:
      regularizer: ``"odir"`` or ``"l2"``.
      lambdas: the grid of penalty strengths (each finite and ``>= 0``; static).
      num_folds: folds of the cross-validation (``>= 2``; static).
      max_iter: most L-BFGS iterations per fit.
      tol: gradient-norm tolerance.

    Returns:
      A :class:`Calibrator`: ``fit(logits [N, K], labels [N], *, where=None) ->
      DirichletParams(weight [K, K], bias [K], regularization)``; ``apply(params, logits
      [..., K]) -> probs``; ``apply_logits`` returns ``log_softmax(z) @ W.T + b``. Invalid fit
      data raise eagerly and give NaN parameters under ``jit``. (``checkify`` cannot trace the
      vmapped fitting loop, so :func:`calib_jax.validation.checked` does not apply to ``fit``.)

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

    def fit_one(logp: Array, labels: Array, weights: Array, lam: Array) -> tuple[Array, Array]:
        k = logp.shape[-1]

        def loss(p):
            nll = _mean_nll(logp @ p[0].T + p[1][None], labels, weights)
            return nll + _penalty(p, lam, regularizer)

        init = (jnp.eye(k, dtype=logp.dtype), jnp.zeros(k, logp.dtype))
        return _lbfgs(loss, init, max_iter=max_iter, tol=tol)

    def core(logits: Array, labels: Array, weights: Array) -> DirichletParams:
        dtype = logits.dtype
        labels = jnp.clip(labels, 0, logits.shape[-1] - 1)
        logp = jax.nn.log_softmax(logits, axis=-1)
        lams = jnp.asarray(grid, dtype)
        valid = weights > 0
        fold = (jnp.cumsum(valid) - 1) % num_folds
        held_out = (fold[None] == jnp.arange(num_folds)[:, None]) & valid[None]  # [F, N]
        # Row F of the masks is the final fit on every row (one compiled L-BFGS, not two).
        train = jnp.concatenate([jnp.where(held_out, 0, weights[None]), weights[None]])
        # Every (fold, λ) pair and the all-rows fit at every λ as one vmap: [(F + 1)·G] fits.
        f_idx, g_idx = np.divmod(np.arange((num_folds + 1) * grid.size), grid.size)
        w_all, b_all = jax.vmap(fit_one, in_axes=(None, None, 0, 0))(
            logp, labels, train[f_idx], lams[g_idx]
        )
        cv = slice(0, num_folds * grid.size)
        out = jax.nn.log_softmax(jnp.einsum("nk,fjk->fnj", logp, w_all[cv]) + b_all[cv, None])
        picked = jnp.take_along_axis(out, labels[None, :, None], axis=-1)[..., 0]
        held_nll = -jnp.sum(jnp.where(held_out[f_idx[cv]], picked, 0), axis=-1)
        per_lambda = jnp.zeros(grid.size, dtype).at[g_idx[cv]].add(held_nll)
        choice = jnp.argmin(per_lambda) if grid.size > 1 else 0
        best = lams[choice]
        weight = w_all[num_folds * grid.size + choice]
        bias = b_all[num_folds * grid.size + choice]
        return DirichletParams(weight, bias, best.astype(dtype))

    fit = _logit_fit(core)

    def apply_logits(params: DirichletParams, logits: ArrayLike) -> Array:
        logits = check_apply_input(logits, "logits", params.weight.shape[-1], binary=False)
        logp = jax.nn.log_softmax(logits, axis=-1)
        return logp @ params.weight.T + params.bias.reshape((1,) * (logits.ndim - 1) + (-1,))

    def apply(params: DirichletParams, logits: ArrayLike) -> Array:
        return jax.nn.softmax(apply_logits(params, logits), axis=-1)

    return Calibrator(fit, apply, apply_logits, "logits")
