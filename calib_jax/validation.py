"""Run-time value checks under ``jax.jit``.

Every calib_jax function checks shapes, ranks and dtypes at trace time (always, at no cost) and
checks *values* (labels in ``[0, K)``, finite inputs, probabilities summing to one) eagerly when
its inputs are concrete. Under ``jit``/``vmap`` value checks are recorded with
:func:`jax.experimental.checkify.debug_check`: free unless the caller asks for them, and invalid
values still never produce a plausible number (they give NaN). To turn the checks into errors
under ``jit``, wrap the jitted function::

    import calib_jax as cj
    safe_ece = cj.validation.checked(jax.jit(cj.metrics.ece))
    safe_ece(probs, labels)   # raises checkify.JaxRuntimeError with a clear message on bad labels

``checked(f)`` is ``checkify.checkify(f, errors=checkify.user_checks)`` followed by
``err.throw()``; use ``checkify`` directly to handle the error value yourself. The error it
raises is :class:`jax.experimental.checkify.JaxRuntimeError`, a ``ValueError`` (not
``jax.errors.JaxRuntimeError``), so ``except ValueError`` catches a bad value both eagerly and
under ``checked``. ``chex.chexify`` works the same way around calib_jax functions.

With jax 0.10, ``checkify`` cannot transform a ``while_loop`` whose predicate is batched by
``vmap`` (in either order, ``checked(jax.vmap(f))`` or ``jax.vmap(checkify.checkify(f))``):
this concerns the functions with a data-dependent loop (``metrics.ece_sweep``, the iterative
calibrator fits). Check such a function per batch element, or without ``vmap``; plain
``jax.jit(jax.vmap(f))`` works and gives NaN for invalid values as always.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import jax
from jax.experimental import checkify

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["checked"]


def checked(fn: F) -> F:
    """Wrap ``fn`` so that calib_jax's value checks raise, also inside ``jax.jit``.

    Args:
      fn: any function (typically ``jax.jit(...)`` of one) that calls calib_jax functions.

    Returns:
      A function with the same signature and outputs that raises
      ``jax.experimental.checkify.JaxRuntimeError`` (a ``ValueError``) naming the failed check
      when any value check fails.

    Examples:
      >>> import jax, jax.numpy as jnp, calib_jax as cj
      >>> f = cj.validation.checked(jax.jit(cj.losses.cross_entropy))
      >>> f(jnp.zeros((2, 3)), jnp.array([0, 3]))  # doctest: +IGNORE_EXCEPTION_DETAIL
      Traceback (most recent call last):
      JaxRuntimeError: labels must lie in [0, 3); found a label outside it.
    """
    checked_fn = checkify.checkify(fn, errors=checkify.user_checks)

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if any(isinstance(x, jax.core.Tracer) for x in jax.tree.leaves((args, kwargs))):
            # err.throw() needs concrete values; inside a trace JAX's own message is cryptic.
            raise TypeError(
                "checked(fn) was called inside a jax transformation (jit/vmap/grad): wrap the "
                "transformed function instead, e.g. checked(jax.jit(fn)), not "
                "jax.jit(checked(fn)); to handle the error inside a trace, use "
                "jax.experimental.checkify.checkify(fn, errors=checkify.user_checks)."
            )
        err, out = checked_fn(*args, **kwargs)
        err.throw()
        return out

    return wrapper  # type: ignore[return-value]
