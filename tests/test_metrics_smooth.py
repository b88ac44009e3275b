"""Smooth ECE and the smoothed reliability diagram vs a float64 NumPy reference and relplot.

The reference below is written from the definition (a linear split of each sample onto a
uniform grid, a Gaussian kernel reflected at 0 and 1 and cut at distance 1/2, linear
interpolation at evenly spaced points), with relplot 1.0.3's grid sizes: ``kernels.py``
``GaussianKernel.apply`` (``max(2000, round(20/σ)) // 2 + 1`` grid points), ``kernel_ev``
(the kernel sampled on ``linspace(0, 1, G) - 1/2``, centred on index ``G // 2``) and
``metrics.py`` ``smooth_ece`` (``max(round(10/σ), 200)`` evaluation points) and
``search_param`` (ten bisection steps from ``[0, 1]``, the upper end kept).
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import metrics as cm
from calib_jax.metrics import _smooth

relplot = pytest.importorskip("relplot")


def make_binary(n, seed, shift=0.0):
    rng = np.random.default_rng(seed)
    p = rng.random(n).astype(np.float32)
    y = (rng.random(n) < np.clip(p - shift, 0, 1)).astype(np.int32)
    return p, y


def make_multiclass(n, k, seed):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * 2).astype(np.float32)
    p = np.asarray(jax.nn.softmax(jnp.asarray(z)))
    y = np.where(rng.random(n) < 0.8 * p.max(1), p.argmax(1), rng.integers(0, k, n))
    return p, y.astype(np.int32)


def top_label(p, y):
    p = np.asarray(p, np.float64)
    if p.ndim == 1:
        return p, (np.asarray(y) == 1).astype(np.float64)
    return p.max(1), (p.argmax(1) == np.asarray(y)).astype(np.float64)


# ------------------------------------------------------------------------------------------------
# Float64 reference.


def ref_grid_size(sigma):
    return max(2000, round(20 / sigma)) // 2 + 1


def ref_smoothed(c, values, w, sigma):
    """Grid points ``x`` and the reflected-kernel smoothing of ``Σ w·value`` split on the grid."""
    g = ref_grid_size(sigma)
    x = np.linspace(0, 1, g)
    # Hat functions: the weight of grid point j for a sample at c.
    hat = np.maximum(0.0, 1 - np.abs(c[:, None] * (g - 1) - np.arange(g)[None, :]))
    grid = hat.T @ (w[:, None] * values)
    # Kernel samples on linspace(0, 1, g) - 1/2 centred on index g // 2: the offset of target
    # i from source position q is (i - q) + (g // 2) - (g - 1)/2 grid steps.
    shift = (g // 2 - (g - 1) / 2) / (g - 1)

    def kern(u):
        u = u + shift
        return np.where(np.abs(u) <= 0.5 + 1e-12, np.exp(-(u**2) / (2 * sigma**2)), 0.0)

    out = np.zeros_like(grid)
    for rows in np.array_split(np.arange(g), max(1, g // 500)):
        i = x[rows, None]
        # Images of source j: itself, mirrored at 0 (-x_j) and at 1 (2 - x_j), each once.
        k = kern(i - x[None, :])
        k = k + np.where(np.arange(g) > 0, kern(i + x[None, :]), 0)
        k = k + np.where(np.arange(g) < g - 1, kern(i - (2 - x[None, :])), 0)
        out[rows] = k @ grid
    return x, out


def ref_smooth_ece(c, a, w, sigma):
    x, sm = ref_smoothed(c, np.stack([c - a, np.ones_like(c)], 1), w, sigma)
    t = np.linspace(0, 1, max(round(10 / sigma), 200))
    r = np.interp(t, x, sm[:, 0])
    d = np.interp(t, x, sm[:, 1])
    return np.sum(np.abs(r)) / np.sum(d)


# ------------------------------------------------------------------------------------------------
# Against the reference and relplot.


def weights_kw(n, kind, seed=3):
    rng = np.random.default_rng(seed)
    if kind == "none":
        return np.ones(n), {}
    if kind == "mask":
        m = rng.random(n) > 0.3
        return m.astype(np.float64), {"where": jnp.asarray(m)}
    if kind == "int":
        w = rng.poisson(1.0, n).astype(np.int32)
        return w.astype(np.float64), {"weights": jnp.asarray(w)}
    w = (rng.random(n) * 2).astype(np.float32)
    return w.astype(np.float64), {"weights": jnp.asarray(w)}


@pytest.mark.parametrize(
    ("multiclass", "weighting"), [(False, "none"), (False, "float"), (True, "mask"), (True, "int")]
)
def test_smooth_ece_matches_float64_reference(multiclass, weighting):
    n = 600
    p, y = make_multiclass(n, 4, seed=1) if multiclass else make_binary(n, seed=1, shift=0.1)
    c, a = top_label(p, y)
    w, kw = weights_kw(n, weighting)
    # σ = 0.0075: an odd number of grid intervals (1333), relplot's half-step kernel centring.
    for sigma in (0.2, 0.05, 0.0075):
        out = cm.smooth_ece(p, y, bandwidth=sigma, **kw)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(float(out), ref_smooth_ece(c, a, w, sigma), atol=2e-6)
    # The automatic bandwidth ends where relplot's bisection ends: smECE_σ <= σ at σ* and
    # smECE_σ > σ one step (1/1024) below.
    value, sigma = (float(x) for x in _smooth.smooth_ece_from_grid(_fine(p, y, **kw)))
    assert sigma * 1024 == round(sigma * 1024)
    np.testing.assert_allclose(value, ref_smooth_ece(c, a, w, sigma), atol=2e-6)
    assert ref_smooth_ece(c, a, w, sigma) <= sigma
    below = sigma - 1 / 1024
    assert below < 0.001 or ref_smooth_ece(c, a, w, below) > below
    np.testing.assert_allclose(float(cm.smooth_ece(p, y, **kw)), value, atol=1e-7)


def _fine(p, y, where=None, weights=None):
    conf, correct, w = cj.metrics._inputs.top_label(jnp.asarray(p), jnp.asarray(y), where, weights)
    return _smooth.fine_grid(conf, correct, w)


def _digits_probabilities():
    from sklearn.datasets import load_digits
    from sklearn.linear_model import LogisticRegression

    digits = load_digits()
    x, y = digits.data / 16.0, digits.target
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(y))
    train, test = idx[:600], idx[600:]
    model = LogisticRegression(C=0.05, max_iter=200).fit(x[train], y[train])
    return model.predict_proba(x[test]).astype(np.float32), y[test].astype(np.int32)


@pytest.mark.parametrize("data", ["binary", "binary_shifted", "multiclass", "digits"])
def test_smooth_ece_matches_relplot(data):
    if data == "digits":
        p, y = _digits_probabilities()
    elif data == "multiclass":
        p, y = make_multiclass(3000, 10, seed=2)
    else:
        p, y = make_binary(5000, seed=4, shift=0.05 if data == "binary_shifted" else 0.0)
    # relplot takes (confidence, correctness); top-label as its multiclass_logits_to_confidences.
    if p.ndim == 2:
        f, t = relplot.multiclass_logits_to_confidences(p.astype(np.float64), y, probs=True)
    else:
        f, t = p.astype(np.float64), y.astype(np.float64)
    ref, width = relplot.smECE(f, t, return_width=True)
    value, sigma = _smooth.smooth_ece_from_grid(_fine(p, y))
    assert float(sigma) == width
    assert abs(float(value) - ref) <= 1e-5
    assert abs(float(cm.smooth_ece(p, y)) - ref) <= 1e-5
    for s in (0.003, 0.02, 0.1):
        assert abs(float(cm.smooth_ece(p, y, bandwidth=s)) - relplot.smECE_sigma(f, t, s)) <= 1e-5


def test_smooth_diagram_density_is_relplots_and_curve_differs_by_the_smoothed_confidence():
    p, y = make_binary(2000, seed=6, shift=0.08)
    f, t = p.astype(np.float64), y.astype(np.float64)
    d = cm.smooth_reliability_diagram(p, y)
    rel = relplot.prepare_rel_diagram(f, t, plot_confidence_band=False, report_CE_std=False)
    np.testing.assert_allclose(np.asarray(d.mesh), rel["mesh"], atol=1e-7)
    assert float(d.bandwidth) == rel["sigma"]
    np.testing.assert_allclose(float(d.smooth_ece), rel["ce"], atol=1e-5)
    np.testing.assert_allclose(np.asarray(d.density), rel["density"], rtol=1e-4, atol=1e-5)
    # relplot draws the kernel-smoothed correctness ā(t) (kernels.py BaseKernelMixin.smooth);
    # the curve here is t - r̂(t) = t - c̄(t) + ā(t), with c̄ the smoothed confidence.
    kernel = relplot.kernels.ReflectedGaussianKernel(rel["sigma"])
    c_bar, _ = kernel.smooth(f, f, rel["mesh"])
    np.testing.assert_allclose(
        np.asarray(d.curve), rel["mesh"] - c_bar + rel["mu"], atol=2e-5, rtol=1e-4
    )
    # ∫ |t - curve| · density over relplot's evaluation points is the smooth ECE.
    sigma = float(d.bandwidth)
    points = max(round(10 / sigma), 200)
    fine = cm.smooth_reliability_diagram(p, y, num_points=points)
    gap = np.abs(np.asarray(fine.mesh) - np.asarray(fine.curve)) * np.asarray(fine.density)
    np.testing.assert_allclose(gap.sum() / np.asarray(fine.density).sum(), float(d.smooth_ece))


# ------------------------------------------------------------------------------------------------
# The fine grid: mergeable, and the coarse grids it gives.


def test_fine_grid_sums_merge_by_addition():
    p, y = make_multiclass(600, 5, seed=7)
    whole = _fine(p, y)
    parts = _fine(p[:300], y[:300]) + _fine(p[300:], y[300:])
    np.testing.assert_allclose(parts, whole, atol=1e-6)
    np.testing.assert_allclose(
        _smooth.smooth_ece_from_grid(parts)[0], cm.smooth_ece(p, y), atol=1e-7
    )


@pytest.mark.parametrize("sigma", [0.0029296875, 0.0068359375])
def test_grids_not_dividing_the_fine_grid(sigma):
    # relplot's grids of 3413 and 1463 intervals (σ = 3/1024 and 7/1024, both visited by the
    # search) come from re-splitting the fine points. A sample in the fine interval around a
    # coarse point moves part of its weight to the next coarse point, keeping its total and
    # mean position, which the kernel smooths away: the value matches the direct split.
    p, y = make_binary(3000, seed=8)
    c, a = top_label(p, y)
    cells = _smooth.grid_cells(sigma)
    assert _smooth.FINE_CELLS % cells != 0
    coarse = np.asarray(_smooth._coarse(_fine(p, y), jnp.int32(cells), cells + 1), np.float64)
    hat = np.maximum(0.0, 1 - np.abs(c[:, None] * cells - np.arange(cells + 1)[None, :]))
    direct = hat.T @ np.stack([c - a, np.ones_like(c)], 1)
    points = np.arange(cells + 1) / cells
    for moment in (np.ones_like(points), points):
        np.testing.assert_allclose(moment @ coarse, moment @ direct, rtol=1e-6, atol=1e-6)
    assert np.max(np.abs(coarse - direct)) > 1e-4  # the split itself does differ
    np.testing.assert_allclose(
        float(cm.smooth_ece(p, y, bandwidth=sigma)),
        ref_smooth_ece(c, a, np.ones(3000), sigma),
        atol=1e-6,
    )


# ------------------------------------------------------------------------------------------------
# Properties.


def test_smooth_ece_of_a_calibrated_sample_shrinks_as_n_grows():
    values = []
    for n in (1000, 10_000, 100_000):
        rng = np.random.default_rng(n)
        p = rng.random(n).astype(np.float32)
        y = (rng.random(n) < p).astype(np.int32)
        values.append(float(cm.smooth_ece(p, y)))
    assert values[0] > values[1] > values[2]
    assert values[2] < 0.35 * values[0]
    # A miscalibrated sample does not shrink towards 0: its value stays near the shift.
    p, y = make_binary(100_000, seed=9, shift=0.1)
    assert float(cm.smooth_ece(p, y)) > 0.08


def test_smooth_ece_is_zero_only_without_residual_and_one_at_most():
    p = np.float32([0.0, 1.0, 0.0, 1.0])
    assert float(cm.smooth_ece(p, np.int32([0, 1, 0, 1]))) == 0.0
    assert float(cm.smooth_ece(p, np.int32([1, 0, 1, 0]))) == pytest.approx(1.0, abs=1e-6)


# ------------------------------------------------------------------------------------------------
# jit, vmap, where, weights, dtypes, bad input.


def test_jit_vmap_where_weights():
    p, y = make_multiclass(600, 5, seed=5)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    np.testing.assert_allclose(jax.jit(cm.smooth_ece)(pj, yj), cm.smooth_ece(pj, yj), atol=1e-7)
    fixed = functools.partial(cm.smooth_ece, bandwidth=0.05)
    mask = np.arange(600) % 3 != 0
    garbage = pj.at[~mask].set(jnp.nan)
    np.testing.assert_allclose(
        fixed(garbage, yj, where=jnp.asarray(mask)), fixed(pj[mask], yj[mask]), atol=1e-7
    )
    w = np.random.default_rng(1).poisson(1.0, 600).astype(np.int32)
    np.testing.assert_allclose(
        fixed(pj, yj, weights=jnp.asarray(w)),
        fixed(jnp.repeat(pj, w, axis=0), jnp.repeat(yj, w)),
        atol=1e-7,
    )
    # Float weights: only their ratios matter. vmap: bootstrap replicates over weights.
    wf = jnp.asarray(np.random.default_rng(2).random(600).astype(np.float32))
    np.testing.assert_allclose(
        fixed(pj, yj, weights=wf), fixed(pj, yj, weights=wf * 1000), rtol=1e-5
    )
    reps = cm.bootstrap(fixed, pj, yj, key=jax.random.key(0), num_resamples=3)
    assert reps.shape == (3,) and np.all(np.isfinite(reps)) and len(set(np.asarray(reps))) == 3
    z = jnp.log(pj)
    np.testing.assert_allclose(fixed(z, yj, from_logits=True), fixed(pj, yj), atol=1e-5)


def test_diagram_jit_vmap_where():
    p, y = make_binary(600, seed=10, shift=0.1)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    fn = functools.partial(cm.smooth_reliability_diagram, bandwidth=0.05, num_points=50)
    d = fn(pj, yj)
    assert d.mesh.shape == d.curve.shape == d.density.shape == (50,)
    assert d.curve.dtype == jnp.float32
    out = jax.jit(jax.vmap(fn, in_axes=(0, None)))(jnp.stack([pj, pj[::-1]]), yj)
    for a, b in zip(out, d, strict=True):
        np.testing.assert_allclose(a[0], b, atol=1e-6)
    np.testing.assert_allclose(out.curve[1], fn(pj[::-1], yj).curve, atol=1e-6)
    mask = jnp.asarray(np.arange(600) % 4 != 0)
    np.testing.assert_allclose(
        fn(pj.at[~mask].set(jnp.nan), yj, where=mask).curve,
        fn(pj[mask], yj[mask]).curve,
        atol=1e-6,
    )


def test_low_precision_input_accumulates_in_float32():
    p, y = make_multiclass(600, 4, seed=12)
    z = jnp.log(jnp.asarray(p)).astype(jnp.bfloat16)
    out = cm.smooth_ece(z, y, bandwidth=0.05, from_logits=True)
    assert out.dtype == jnp.float32
    ref = cm.smooth_ece(z.astype(jnp.float32), y, bandwidth=0.05, from_logits=True)
    np.testing.assert_allclose(out, ref, atol=1e-7)


@pytest.mark.parametrize("fn", ["smooth_ece", "smooth_reliability_diagram"])
def test_bad_input(fn):
    fn = functools.partial(getattr(cm, fn), bandwidth=0.1)
    p = jnp.float32([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    y = jnp.array([0, 1, 1])
    with pytest.raises(ValueError, match="labels must lie"):
        fn(p, jnp.array([0, 2, 1]))
    with pytest.raises(ValueError, match="probabilities"):
        fn(p.at[0, 0].set(0.9), y)
    with pytest.raises(ValueError, match="masked out"):
        fn(p, y, where=jnp.zeros(3, bool))
    with pytest.raises(ValueError, match="weights"):
        fn(p, y, weights=jnp.float32([1, -1, 1]))
    jf = jax.jit(lambda p, y, w: fn(p, y, weights=w))
    leaves = lambda x: np.concatenate([np.ravel(a) for a in jax.tree.leaves(x)])
    one = jnp.ones(3)
    assert np.all(np.isfinite(leaves(jf(p, y, one))))
    assert np.all(np.isnan(leaves(jf(p, jnp.array([0, 5, 1]), one))))
    assert np.all(np.isnan(leaves(jf(p.at[1].set(jnp.nan), y, one))))
    assert np.all(np.isnan(leaves(jf(p, y, jnp.float32([1, -1, 1])))))
    with pytest.raises(Exception, match="labels must lie"):
        cj.validation.checked(jf)(p, jnp.array([0, 5, 1]), one)
    # A zero-weight invalid row is exempt.
    np.testing.assert_allclose(
        leaves(jf(p.at[1].set(jnp.nan), y, jnp.float32([1, 0, 1]))),
        leaves(fn(p[::2], y[::2])),
        atol=1e-6,
    )


def test_static_arguments_are_checked():
    p, y = make_binary(600, seed=0)
    for bad in (0.0, -0.1, 0.0005, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="bandwidth"):
            cm.smooth_ece(p, y, bandwidth=bad)
    # A traced bandwidth: vmap over bandwidths equals the loop; out of range gives NaN.
    sigmas = jnp.float32([0.0005, 0.003, 0.05, 0.3])
    out = jax.jit(jax.vmap(lambda s: cm.smooth_ece(p, y, bandwidth=s)))(sigmas)
    assert np.isnan(out[0])
    for i, s in enumerate((0.003, 0.05, 0.3)):
        np.testing.assert_allclose(out[i + 1], cm.smooth_ece(p, y, bandwidth=s), atol=1e-7)
    with pytest.raises(ValueError, match="num_points"):
        cm.smooth_reliability_diagram(p, y, num_points=1)
    with pytest.raises(TypeError, match="num_points"):
        cm.smooth_reliability_diagram(p, y, num_points=20.0)
