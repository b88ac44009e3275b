"""SKCE (Widmann et al. 2019) vs an independent float64 NumPy reference, and its properties.

No Python peer computes it (CalibrationErrors.jl is Julia); the reference below follows the
paper's definitions: ``h_ij = k(p_i, p_j)·(e_{y_i} - p_i)ᵀ(e_{y_j} - p_j)``, the unbiased
estimator ``2/(N(N-1)) Σ_{i<j} h_ij`` and the linear one ``mean_i h_{2i-1, 2i}``.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import metrics as cm


def make_data(n, k, seed, calibrated=False):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * 2).astype(np.float32)
    p = np.array(jax.nn.softmax(jnp.asarray(z)))
    p[rng.random(n) < 0.2] = p[0]  # duplicated rows: distance 0 pairs
    if calibrated:
        y = np.array([rng.choice(k, p=row / row.sum()) for row in p.astype(np.float64)])
    else:
        y = np.where(rng.random(n) < 0.7, p.argmax(1), rng.integers(0, k, n))
    return p.astype(np.float32), y.astype(np.int32)


def ref_h(p, y, nu, kernel):
    p = np.asarray(p, np.float64)
    k = p.shape[1]
    r = np.eye(k)[y] - p
    out = np.empty((len(p), len(p)))
    for i in range(len(p)):
        d2 = np.sum((p[i] - p) ** 2, axis=1)
        kern = np.exp(-np.sqrt(d2) / nu) if kernel == "laplacian" else np.exp(-d2 / (2 * nu**2))
        out[i] = kern * (r @ r[i])
    return out


def ref_unbiased(p, y, nu, kernel="laplacian", w=None):
    h = ref_h(p, y, nu, kernel)
    w = np.ones(len(p)) if w is None else np.asarray(w, np.float64)
    # Replicated samples: every pair of distinct replicas.
    num = w @ h @ w - np.sum(w * np.diag(h))
    return num / (w.sum() ** 2 - w.sum())


def ref_block(p, y, nu, kernel="laplacian"):
    h = ref_h(p, y, nu, kernel)
    m = len(p) // 2
    return np.mean([h[2 * i, 2 * i + 1] for i in range(m)])


def ref_median(p):
    p = np.asarray(p, np.float64)
    n = len(p)
    m = min(n, 256)
    q = p[(np.arange(m) * n) // m]
    d = np.sqrt(np.sum((q[:, None] - q[None, :]) ** 2, -1))
    med = np.median(d[np.triu_indices(m, 1)])
    return med if med > 0 else 1.0


@pytest.mark.parametrize("kernel", ["laplacian", "gaussian"])
@pytest.mark.parametrize(("n", "k"), [(300, 4), (2100, 3)])
def test_skce_matches_float64_reference(n, k, kernel):
    # n = 2100: three tiles of 1024 rows per side, the last one padded.
    p, y = make_data(n, k, seed=n + k)
    for nu in (0.3, 1.5):
        out = cm.skce(p, y, bandwidth=nu, kernel=kernel)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(float(out), ref_unbiased(p, y, nu, kernel), atol=1e-7)
        block = cm.skce(p, y, bandwidth=nu, kernel=kernel, estimator="block")
        np.testing.assert_allclose(float(block), ref_block(p, y, nu, kernel), atol=1e-7)
    nu = ref_median(p)
    np.testing.assert_allclose(
        float(cm.skce(p, y, kernel=kernel)), ref_unbiased(p, y, nu, kernel), atol=1e-7, rtol=1e-5
    )


def test_binary_input_is_the_two_column_vector():
    rng = np.random.default_rng(0)
    p = rng.random(400).astype(np.float32)
    y = (rng.random(400) < p**2).astype(np.int32)
    two = np.stack([1 - p, p], 1)
    for est in ("unbiased", "block"):
        np.testing.assert_allclose(
            cm.skce(p, y, estimator=est), cm.skce(two, y, estimator=est), rtol=1e-5
        )
    np.testing.assert_allclose(
        float(cm.skce(p, y, bandwidth=0.2)), ref_unbiased(two, y, 0.2), rtol=1e-5
    )


def test_weights_mask_and_replication():
    p, y = make_data(300, 4, seed=3)
    mask = np.random.default_rng(1).random(300) > 0.4
    garbage = p.copy()
    garbage[~mask] = np.nan
    for est in ("unbiased", "block"):
        # A mask removes samples; the block estimator re-pairs the remaining ones in order.
        np.testing.assert_allclose(
            cm.skce(garbage, y, where=mask, estimator=est),
            cm.skce(p[mask], y[mask], estimator=est),
            atol=1e-7,
        )
    w = np.random.default_rng(2).poisson(1.0, 300).astype(np.int32)
    # Unbiased: integer weights are replicated samples (the bandwidth fixed, as the default
    # median subsample would differ).
    np.testing.assert_allclose(
        cm.skce(p, y, weights=w, bandwidth=0.5),
        cm.skce(np.repeat(p, w, 0), np.repeat(y, w), bandwidth=0.5),
        atol=1e-7,
    )
    wf = np.random.default_rng(3).random(300).astype(np.float32) * 2
    np.testing.assert_allclose(
        float(cm.skce(p, y, weights=wf, bandwidth=0.5)),
        ref_unbiased(p, y, 0.5, w=wf),
        atol=1e-7,
    )
    # Block: pair (2i, 2i+1) weighted by w_2i·w_2i+1.
    h = ref_h(p, y, 0.5, "laplacian")
    ww = wf[0::2] * wf[1::2]
    ref = np.sum(ww * h[np.arange(0, 300, 2), np.arange(1, 300, 2)]) / ww.sum()
    np.testing.assert_allclose(
        float(cm.skce(p, y, weights=wf, bandwidth=0.5, estimator="block")), ref, atol=1e-7
    )


def test_calibrated_data_averages_zero_and_miscalibrated_data_is_positive():
    # Labels drawn from the predicted distribution: both estimators are unbiased for 0.
    data = [make_data(200, 3, seed=seed, calibrated=True) for seed in range(40)]
    ps, ys = (jnp.asarray(np.stack(x)) for x in zip(*data, strict=True))
    values = {}
    for est in ("unbiased", "block"):
        fn = functools.partial(cm.skce, bandwidth=0.5, estimator=est)
        values[est] = vals = np.asarray(jax.vmap(fn)(ps, ys))
        assert abs(vals.mean()) < 3 * vals.std() / np.sqrt(len(vals)), est
        assert (vals < 0).any()  # unbiased estimates of 0 take both signs
    p, y = data[0]
    q = p**3 / np.sum(p**3, 1, keepdims=True)  # sharpened: over-confident
    assert float(cm.skce(q.astype(np.float32), y, bandwidth=0.5)) > 10 * np.std(values["unbiased"])
    # The unbiased estimator varies less than the block one.
    assert np.std(values["unbiased"]) < np.std(values["block"])


def test_jit_vmap_bootstrap_and_logits():
    p, y = make_data(300, 5, seed=5)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    for est in ("unbiased", "block"):
        fn = functools.partial(cm.skce, estimator=est)
        batch = jnp.stack([pj, jnp.roll(pj, 1, axis=1)])
        out = jax.jit(jax.vmap(fn, in_axes=(0, None)))(batch, yj)
        np.testing.assert_allclose(out[0], fn(pj, yj), atol=1e-7)
        np.testing.assert_allclose(out[1], fn(batch[1], yj), atol=1e-7)
    # Traced bandwidths; an invalid traced one gives NaN.
    nus = jnp.float32([0.2, 1.0, -1.0])
    out = jax.jit(jax.vmap(lambda nu: cm.skce(pj, yj, bandwidth=nu)))(nus)
    np.testing.assert_allclose(out[0], cm.skce(pj, yj, bandwidth=0.2), atol=1e-7)
    assert np.isnan(out[2])
    fixed = functools.partial(cm.skce, bandwidth=0.5)
    reps = cm.bootstrap(fixed, pj, yj, key=jax.random.key(0), num_resamples=3)
    assert reps.shape == (3,) and np.all(np.isfinite(reps))
    np.testing.assert_allclose(fixed(jnp.log(pj), yj, from_logits=True), fixed(pj, yj), atol=1e-6)


@pytest.mark.parametrize("estimator", ["unbiased", "block"])
def test_bad_input(estimator):
    fn = functools.partial(cm.skce, estimator=estimator, bandwidth=0.5)
    p = jnp.float32([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8], [0.5, 0.5]])
    y = jnp.array([0, 1, 1, 0])
    with pytest.raises(ValueError, match="labels must lie"):
        fn(p, jnp.array([0, 2, 1, 0]))
    with pytest.raises(ValueError, match="probabilities"):
        fn(p.at[0, 0].set(0.9), y)
    with pytest.raises(ValueError, match="masked out"):
        fn(p, y, where=jnp.zeros(4, bool))
    with pytest.raises(ValueError, match="weights"):
        fn(p, y, weights=jnp.float32([1, -1, 1, 1]))
    jf = jax.jit(lambda p, y, w: fn(p, y, weights=w))
    one = jnp.ones(4)
    assert np.isfinite(jf(p, y, one))
    assert np.isnan(jf(p, jnp.array([0, 5, 1, 0]), one))
    assert np.isnan(jf(p.at[1].set(jnp.nan), y, one))
    assert np.isnan(jf(p, y, jnp.float32([1, -1, 1, 1])))
    with pytest.raises(Exception, match="labels must lie"):
        cj.validation.checked(jf)(p, jnp.array([0, 5, 1, 0]), one)
    # A zero-weight invalid row is exempt.
    keep = np.array([True, False, True, True])
    np.testing.assert_allclose(
        jf(p.at[1].set(jnp.nan), y, jnp.asarray(keep, jnp.float32)),
        fn(p[keep], y[keep]),
        atol=1e-7,
    )


def test_static_arguments_are_checked():
    p, y = make_data(50, 3, seed=0)
    with pytest.raises(ValueError, match="estimator"):
        cm.skce(p, y, estimator="linear")
    with pytest.raises(ValueError, match="kernel"):
        cm.skce(p, y, kernel="rbf")
    with pytest.raises(ValueError, match="bandwidth"):
        cm.skce(p, y, bandwidth=0.0)
