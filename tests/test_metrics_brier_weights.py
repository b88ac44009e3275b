"""Regression: brier_decomposition applies the metrics' weight policy.

It used to check the weights without using the checked result, so under plain ``jit`` a
negative weight gave a plausible decomposition; now an invalid weight raises eagerly, is a
checkify check under ``jit`` and otherwise makes every component NaN, like every other metric.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import metrics as cm

P = jnp.float32([[0.7, 0.2, 0.1], [0.2, 0.5, 0.3], [0.1, 0.3, 0.6], [0.6, 0.3, 0.1]])
Y = jnp.array([0, 1, 2, 1])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_invalid_weight_raises_eagerly_and_is_nan_under_jit(bad):
    w = jnp.float32([1, bad, 1, 1])
    with pytest.raises(ValueError, match="weights"):
        cm.brier_decomposition(P, Y, weights=w)
    jf = jax.jit(lambda p, y, w: cm.brier_decomposition(p, y, weights=w))
    assert np.all(np.isnan(np.stack(jf(P, Y, w))))
    with pytest.raises(Exception, match="weights"):
        cj.validation.checked(jf)(P, Y, w)
    # Valid weights under the same jit give the eager numbers.
    good = jnp.float32([1, 2, 1, 0.5])
    np.testing.assert_allclose(
        np.stack(jf(P, Y, good)), np.stack(cm.brier_decomposition(P, Y, weights=good)), atol=1e-7
    )


def test_masked_sample_is_exempt_from_the_weight_check():
    w = jnp.float32([1, -1, 1, 1])
    keep = jnp.array([True, False, True, True])
    out = jax.jit(lambda w, m: cm.brier_decomposition(P, Y, weights=w, where=m))(w, keep)
    np.testing.assert_allclose(np.stack(out), np.stack(cm.brier_decomposition(P[keep], Y[keep])))
