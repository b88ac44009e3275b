"""Bootstrap distributions of any metric by vmap over resampling weights."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Literal

import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


def resample_weights(
    key: Array,
    num_samples: int,
    num_resamples: int,
    method: Literal["poisson", "multinomial"] = "poisson",
) -> Array:
    """``[B, N]`` int32 resampling counts: Poisson(1) or multinomial (exactly ``N`` draws)."""
    if method == "poisson":
        return jax.random.poisson(key, 1.0, (num_resamples, num_samples), dtype=jnp.int32)
    if method == "multinomial":
        idx = jax.random.randint(key, (num_resamples, num_samples), 0, num_samples)
        return jax.vmap(lambda i: jnp.zeros((num_samples,), jnp.int32).at[i].add(1))(idx)
    raise ValueError(f"method must be 'poisson' or 'multinomial', got {method!r}.")


def bootstrap(
    metric: Callable[..., Array],
    predictions: ArrayLike,
    labels: ArrayLike,
    *,
    key: Array,
    num_resamples: int = 1000,
    method: Literal["poisson", "multinomial"] = "poisson",
    **metric_kwargs: Any,
) -> Array:
    """Bootstrap replicates of ``metric(predictions, labels, weights=w, **metric_kwargs)``.

    Each replicate reweights the ``N`` samples by resampling counts ``w``: ``Poisson(1)`` per
    sample (the Poisson bootstrap; independent across samples, so it also works per shard) or
    multinomial (classic bootstrap, ``Σw = N``). Integer weights act exactly like replicated
    samples in every calib_jax metric (per-bin counts stay int32), so no resampled copy of the
    data is formed: all replicates run as one ``jit(vmap(...))`` over the weights. Take
    percentiles of the result for a confidence interval. ``metric`` must accept ``weights=``
    (every calib_jax metric does; ``ada_ece(variant="mukhoti2020")`` does not).

    Args:
      metric: e.g. :func:`ece`, :func:`classwise_ece`, :func:`ada_ece`, :func:`brier`.
      predictions: ``[N, K]`` (or ``[N]`` binary) input of ``metric``.
      labels: ``[N]`` integer labels.
      key: a ``jax.random`` key.
      num_resamples: ``B``, the number of replicates (static).
      method: ``"poisson"`` (default) or ``"multinomial"``.
      **metric_kwargs: static keyword arguments of ``metric`` (``num_bins=...``,
        ``from_logits=True``).

    Invalid data (a label out of range, an invalid probability row, NaN input) raises
    ``ValueError`` on eager input, as the metric does: the metric is first evaluated once,
    eagerly, on the unweighted data, which costs one more evaluation. Under ``jit`` (where
    nothing raises) it makes every replicate NaN, also those whose resampling weights happen to
    drop the invalid samples.

    Returns:
      ``[B]`` float32 metric values (a leading axis over replicates of the metric's output).

    Examples:
      >>> import jax, jax.numpy as jnp, numpy as np, calib_jax as cj
      >>> probs = jax.nn.softmax(jax.random.normal(jax.random.key(0), (500, 4)) * 2)
      >>> labels = jax.random.randint(jax.random.key(1), (500,), 0, 4)
      >>> reps = cj.metrics.bootstrap(cj.metrics.ece, probs, labels,
      ...                             key=jax.random.key(2), num_resamples=200)
      >>> lo, hi = np.percentile(np.asarray(reps), [2.5, 97.5])
      >>> bool(lo < float(cj.metrics.ece(probs, labels)) < hi)
      True

    References:
      Efron & Tibshirani, "An Introduction to the Bootstrap", 1993; Hanley & MacGibbon,
      "Creating non-parametric bootstrap samples using Poisson frequencies", 2006.
    """
    predictions = jnp.asarray(predictions)
    labels = jnp.asarray(labels)
    if isinstance(num_resamples, bool) or not isinstance(num_resamples, int | np.integer):
        raise TypeError("num_resamples must be a static Python int.")
    if num_resamples < 1:
        raise ValueError(f"num_resamples must be >= 1, got {num_resamples}.")
    if not any(isinstance(x, jax.core.Tracer) for x in (predictions, labels)):
        # The replicates run under jit, where value checks do not raise: check the data once.
        metric(predictions, labels, **metric_kwargs)
    weights = resample_weights(key, predictions.shape[0], int(num_resamples), method)
    return _replicates(metric, tuple(sorted(metric_kwargs.items())), predictions, labels, weights)


@functools.partial(jax.jit, static_argnums=(0, 1))
def _replicates(metric, kwargs, predictions, labels, weights):
    one = lambda w: metric(predictions, labels, weights=w, **dict(kwargs))
    reps = jax.vmap(one)(weights)
    # A replicate that gives an invalid sample weight 0 ignores it and is a number; make every
    # replicate NaN as soon as one is, so invalid data never yields a plausible interval.
    floats = [x for x in jax.tree.leaves(reps) if jnp.issubdtype(x.dtype, jnp.floating)]
    poison = sum((0 * jnp.sum(x) for x in floats), jnp.zeros((), jnp.float32))
    return jax.tree.map(
        lambda x: x + poison.astype(x.dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x,
        reps,
    )
