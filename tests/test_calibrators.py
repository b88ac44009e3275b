"""Tests of calib_jax.calibrators against float64 NumPy references and peer libraries.

Shapes are shared between tests (N = 400 validation rows, K = 4 classes, 8 stacked models) so
that compiled functions are reused.
"""

import functools
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import calibrators as cal

N, K, MODELS = 400, 4, 8


def _softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _nll64(z, y):
    z = np.asarray(z, np.float64)
    m = z.max(-1, keepdims=True)
    lse = (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[:, 0]
    return float(np.mean(lse - z[np.arange(len(y)), y]))


def _ece64(p, y, m=15):
    p = np.asarray(p, np.float64)
    conf, pred = p.max(-1), p.argmax(-1)
    acc = (pred == y).astype(np.float64)
    b = np.maximum(np.ceil(conf * m).astype(int) - 1, 0)
    out = 0.0
    for i in range(m):
        s = b == i
        if s.any():
            out += s.mean() * abs(acc[s].mean() - conf[s].mean())
    return out


def _overconfident(seed, n, k=K, scale=3.0, t_star=2.5):
    """Labels drawn from softmax(z); the model reports t_star * z (over-confident)."""
    rng = np.random.default_rng(seed)
    z = scale * rng.standard_normal((n, k))
    p = _softmax64(z)
    y = (p.cumsum(-1) > rng.random((n, 1))).argmax(-1)
    return (t_star * z).astype(np.float32), y.astype(np.int32)


def _binary(seed, n, ties=False):
    rng = np.random.default_rng(seed)
    s = rng.random(n)
    y = (rng.random(n) < s**2).astype(np.int32)
    if ties:
        s = np.round(s * 20) / 20
    return s.astype(np.float32), y


# Every calibrator on the input it takes: (id, constructor, "logits"|"probs"|"binary"|...)
CASES = [
    ("ts_nll", cal.temperature_scaling, "logits"),
    ("ts_ece_grid", functools.partial(cal.temperature_scaling, method="ece_grid"), "logits"),
    ("vector", cal.vector_scaling, "logits"),
    ("matrix", functools.partial(cal.matrix_scaling, off_diagonal_l2=0.1), "logits"),
    ("platt", cal.platt_scaling, "binary_logits"),
    ("hist_width", cal.histogram_binning, "probs"),
    ("hist_mass", functools.partial(cal.histogram_binning, binning="equal_mass"), "probs"),
    ("hist_top", functools.partial(cal.histogram_binning, mode="top_label"), "probs"),
    ("iso", cal.isotonic_regression, "probs"),
    ("iso_binary", cal.isotonic_regression, "binary"),
    ("bbq", cal.bbq, "probs"),
    ("bbq_binary", cal.bbq, "binary"),
]
IDS = [c[0] for c in CASES]
INSTANCES = {name: make() for name, make, _ in CASES}
# One instance per configuration, so its compiled fit core is shared across tests.
INSTANCES["iso_binary"], INSTANCES["bbq_binary"] = INSTANCES["iso"], INSTANCES["bbq"]
KINDS = {name: kind for name, _, kind in CASES}


def _data(kind, seed, n=N):
    z, y = _overconfident(seed, n)
    if kind == "logits":
        return z, y
    if kind == "probs":
        return _softmax64(z).astype(np.float32), y
    s, yb = _binary(seed, n)
    if kind == "binary_logits":
        return np.log(s / (1 - s)).astype(np.float32), yb
    return s, yb


def _close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


# ------------------------------------------------------------------------- temperature


@pytest.mark.parametrize("t_star", [0.5, 1.0, 2.5])
def test_temperature_recovers_known_temperature(t_star):
    n = 20000
    z, y = _overconfident(1, n, k=10, t_star=t_star)
    ts = INSTANCES["ts_nll"]
    t_hat = float(ts.fit(z, y).temperature)
    # Sampling error of the MLE: Var(1/T) ~ 1 / (n * mean Var_p[z']) for the model logits z'.
    p = _softmax64(z / t_star)
    zz = z.astype(np.float64)
    var = (p * zz**2).sum(-1) - (p * zz).sum(-1) ** 2
    se_t = t_star**2 / np.sqrt(n * var.mean())
    assert abs(t_hat - t_star) < 4 * se_t, (t_hat, t_star, se_t)


def test_temperature_nll_reaches_dense_grid_optimum():
    z, y = _overconfident(2, N)
    w = np.random.default_rng(0).random(N) < 0.7
    for where in (None, w):
        t_hat = float(INSTANCES["ts_nll"].fit(z, y, where=where).temperature)
        zs, ys = (z, y) if where is None else (z[w], y[w])
        grid = np.exp(np.linspace(np.log(0.2), np.log(10), 2001))
        best = min(_nll64(zs / t, ys) for t in grid)
        assert _nll64(zs / t_hat, ys) <= best + 1e-4


def test_temperature_never_changes_argmax_and_accuracy():
    z, y = _overconfident(3, 2 * N)
    ts = INSTANCES["ts_nll"]
    params = ts.fit(z[:N], y[:N])
    p = ts.apply(params, z)
    np.testing.assert_array_equal(np.argmax(p, -1), np.argmax(z, -1))
    before, after, _ = cal.calibrate_and_report(ts, z[:N], y[:N], z[N:], y[N:])
    assert float(before.accuracy) == float(after.accuracy)
    assert float(after.ece) < 0.5 * float(before.ece)


def test_temperature_ece_grid_matches_numpy():
    z, y = _overconfident(4, N)
    t_hat = float(INSTANCES["ts_ece_grid"].fit(z, y).temperature)
    grid = np.arange(1, 101) / 10
    eces = np.array([_ece64(_softmax64(z / t), y) for t in grid])
    assert t_hat in np.float32(grid)
    assert _ece64(_softmax64(z / t_hat), y) <= eces.min() + 1e-6


# ---------------------------------------------------------------- vector / matrix / Platt


def test_platt_equals_sklearn_unregularised_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    s, y = _binary(5, N)
    z = np.log(s / (1 - s)).astype(np.float32)
    lr = LogisticRegression(C=np.inf, tol=1e-12, max_iter=10000).fit(z[:, None], y)
    params = INSTANCES["platt"].fit(z, y)
    a, b = float(params.slope), float(params.intercept)
    # float32 L-BFGS stops at a gradient norm ~1e-6: parameters agree to ~1e-3 relative,
    # probabilities to 1e-4, and the float64 NLL is as low as scikit-learn's float64 fit.
    np.testing.assert_allclose([a, b], [lr.coef_[0, 0], lr.intercept_[0]], rtol=1e-3, atol=1e-3)
    p = INSTANCES["platt"].apply(params, z)
    np.testing.assert_allclose(np.asarray(p), lr.predict_proba(z[:, None]), atol=1e-4)
    z64 = z.astype(np.float64)

    def nll(a, b):
        s = a * z64 + b
        return np.mean(np.logaddexp(0, s) - y * s)

    assert nll(a, b) <= nll(lr.coef_[0, 0], lr.intercept_[0]) + 1e-7
    # [N, 2] logits use z1 - z0.
    two = np.stack([np.zeros_like(z), z], -1)
    _close(INSTANCES["platt"].fit(two, y), params, 1e-5)


def test_matrix_scaling_equals_sklearn_multinomial_logistic_regression():
    from sklearn.linear_model import LogisticRegression

    z, y = _overconfident(6, N, t_star=1.5)
    lr = LogisticRegression(C=np.inf, tol=1e-10, max_iter=10000).fit(z, y)
    ms = cal.matrix_scaling()
    params = ms.fit(z, y)
    # The optimum is flat (W is defined up to a common row): scikit-learn stops within ~5e-4
    # of it in probability, at a slightly higher NLL than ours.
    np.testing.assert_allclose(np.asarray(ms.apply(params, z)), lr.predict_proba(z), atol=1e-3)
    w, b = np.asarray(params.weight, np.float64), np.asarray(params.bias, np.float64)
    assert _nll64(z @ w.T + b, y) <= _nll64(z @ lr.coef_.T + lr.intercept_, y) + 1e-7


def test_vector_scaling_reaches_float64_optimum():
    from scipy.optimize import minimize

    z, y = _overconfident(7, N)
    z64 = z.astype(np.float64)

    def nll(theta):
        return _nll64(z64 * theta[:K] + theta[K:], y)

    ref = minimize(nll, np.r_[np.ones(K), np.zeros(K)], method="BFGS", options={"gtol": 1e-10})
    params = INSTANCES["vector"].fit(z, y)
    ours = nll(np.r_[np.asarray(params.weight), np.asarray(params.bias)])
    assert ours <= ref.fun + 1e-5


def test_matrix_scaling_off_diagonal_penalty_tends_to_vector_scaling():
    z, y = _overconfident(8, N)
    big = cal.matrix_scaling(off_diagonal_l2=1e6).fit(z, y)
    off = np.asarray(big.weight) * (1 - np.eye(K))
    assert np.abs(off).max() < 1e-3
    vs = INSTANCES["vector"].fit(z, y)
    # Both fits stop at the solver's tolerance, the matrix one on a stiff objective (curvature
    # 1e6 off the diagonal), so where they stop depends on the machine code's order of float
    # additions: compiled at XLA's LLVM optimisation levels 0-3 the diagonals were 0.5-2.1e-3
    # apart (the old atol was 2e-3) and the float64 NLLs 0.9-7.7e-6.
    np.testing.assert_allclose(np.diag(big.weight), vs.weight, atol=5e-3)
    z64 = z.astype(np.float64)
    nll_matrix = _nll64(z64 @ np.asarray(big.weight, np.float64).T + np.asarray(big.bias), y)
    nll_vector = _nll64(z64 * np.asarray(vs.weight, np.float64) + np.asarray(vs.bias), y)
    assert abs(nll_matrix - nll_vector) < 2e-5


# --------------------------------------------------------------------- isotonic regression


@pytest.mark.parametrize("ties", [False, True])
def test_isotonic_binary_equals_sklearn(ties):
    from sklearn.isotonic import IsotonicRegression

    s, y = _binary(9, N, ties=ties)
    q = np.concatenate([s, np.linspace(-0.1, 1.1, 301, dtype=np.float32), [0.0, 1.0]])
    q = np.clip(q, 0, 1).astype(np.float32)
    ref = IsotonicRegression(out_of_bounds="clip").fit(s.astype(np.float64), y)
    iso = INSTANCES["iso"]
    params = iso.fit(s, y)
    out = np.asarray(jax.jit(iso.apply)(params, q))
    np.testing.assert_allclose(out[:, 1], ref.predict(q.astype(np.float64)), atol=1e-6)
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-6)


def test_isotonic_step_interpolation_and_one_vs_rest_match_sklearn():
    from sklearn.isotonic import IsotonicRegression

    z, y = _overconfident(10, N)
    p = np.round(_softmax64(z), 3).astype(np.float32)  # ties in every column
    p = p / p.sum(-1, keepdims=True)
    q = _softmax64(_overconfident(11, 300)[0]).astype(np.float32)
    cols = []
    for j in range(K):
        r = IsotonicRegression(out_of_bounds="clip").fit(p[:, j].astype(np.float64), y == j)
        cols.append(r.predict(q[:, j].astype(np.float64)))
    cols = np.stack(cols, -1)
    expected = cols / cols.sum(-1, keepdims=True)
    iso = INSTANCES["iso"]
    np.testing.assert_allclose(np.asarray(iso.apply(iso.fit(p, y), q)), expected, atol=1e-6)
    # Step interpolation: the value at the largest training score <= q.
    s, yb = _binary(12, N, ties=True)
    step = cal.isotonic_regression(interpolation="step")
    params = step.fit(s, yb)
    ref = IsotonicRegression().fit(s.astype(np.float64), yb)
    xs = np.unique(s)
    fitted = ref.predict(xs.astype(np.float64))
    qq = np.linspace(0, 1, 101, dtype=np.float32)
    idx = np.clip(np.searchsorted(xs, qq, side="right") - 1, 0, len(xs) - 1)
    np.testing.assert_allclose(np.asarray(step.apply(params, qq))[:, 1], fitted[idx], atol=1e-6)


def test_isotonic_worst_case_single_block():
    # Decreasing targets pool into one block (the longest chain of merges).
    s = np.linspace(0, 1, N, dtype=np.float32)
    y = (s < 0.5).astype(np.int32)
    out = INSTANCES["iso"].fit(s, y).values[0]
    np.testing.assert_allclose(np.asarray(out), 0.5, atol=1e-6)


# ------------------------------------------------------------------- histogram binning


def _hist_reference(s, t, w, m, equal_mass):
    s, t, w = (np.asarray(a, np.float64) for a in (s, t, w))
    if equal_mass:
        v = np.sort(s[w > 0])
        cut = (np.arange(1, m) * len(v)) // m
        edges = 0.5 * (v[np.maximum(cut - 1, 0)] + v[cut])
        bins = (s[:, None] > edges[None]).sum(-1)
    else:
        edges = np.arange(1, m) / m
        bins = np.maximum(np.ceil(s * m).astype(int) - 1, 0)
    lo = np.r_[0.0, edges]
    hi = np.r_[edges, 1.0]
    vals = np.empty(m)
    for b in range(m):
        sel = (bins == b) & (w > 0)
        vals[b] = t[sel].mean() if sel.any() else 0.5 * (lo[b] + hi[b])
    return vals, edges


@pytest.mark.parametrize("binning", ["equal_width", "equal_mass"])
def test_histogram_binning_equals_numpy_reference(binning):
    z, y = _overconfident(13, N)
    p = _softmax64(z).astype(np.float32)
    w = np.random.default_rng(1).random(N) < 0.8
    hb = cal.histogram_binning(num_bins=10, binning=binning)
    params = hb.fit(p, y, where=w)
    q = _softmax64(_overconfident(14, 200)[0]).astype(np.float32)
    cols = []
    for j in range(K):
        vals, edges = _hist_reference(p[:, j], y == j, w, 10, binning == "equal_mass")
        np.testing.assert_allclose(np.asarray(params.values[j]), vals, atol=1e-6)
        if binning == "equal_mass":
            qb = (q[:, j, None].astype(np.float64) > edges[None]).sum(-1)
        else:
            qb = np.maximum(np.ceil(q[:, j].astype(np.float64) * 10).astype(int) - 1, 0)
        cols.append(vals[qb])
    cols = np.stack(cols, -1)
    expected = cols / cols.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(hb.apply(params, q)), expected, atol=1e-6)


def test_histogram_binning_top_label_and_binary():
    z, y = _overconfident(15, N)
    p = _softmax64(z).astype(np.float32)
    hb = cal.histogram_binning(num_bins=10, mode="top_label")
    params = hb.fit(p, y)
    conf, correct = p.max(-1), p.argmax(-1) == y
    vals, _ = _hist_reference(conf, correct, np.ones(N), 10, False)
    np.testing.assert_allclose(np.asarray(params.values[0]), vals, atol=1e-6)
    out = np.asarray(hb.apply(params, p))
    qb = np.maximum(np.ceil(conf.astype(np.float64) * 10).astype(int) - 1, 0)
    np.testing.assert_allclose(out.max(-1), vals[qb], atol=1e-6)
    np.testing.assert_array_equal(out.argmax(-1)[vals[qb] > 0.5], p.argmax(-1)[vals[qb] > 0.5])
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-6)
    # The float32 value 0.2 belongs to bin 4 of 15 (the bin-edge rule).
    s = np.array([0.2, 0.2, 0.19, 0.9], np.float32)
    params = INSTANCES["hist_width"].fit(s, np.array([1, 1, 0, 0], np.int32))
    assert float(params.values[0, 2]) == 0.0 and float(params.values[0, 3]) == 1.0


# --------------------------------------------------------------------------------- BBQ


def _bbq_reference(s, y, prior_strength=2.0):
    from math import lgamma

    s, y = np.asarray(s, np.float64), np.asarray(y, np.float64)
    n = len(s)
    v = np.sort(s)
    b_lo = max(1, int(np.floor(round(n ** (1 / 3), 9) / 10)))
    b_hi = min(-(-n // 5), int(np.ceil(round(10 * n ** (1 / 3), 9))))
    models = []
    for b in range(b_lo, b_hi + 1):
        cut = (np.arange(1, b) * n) // b
        # float32 midpoints, as the library stores them
        edges = np.asarray(0.5 * (v[cut - 1].astype(np.float32) + v[cut].astype(np.float32)))
        bins = (s[:, None] > edges[None]).sum(-1)
        lo, hi = np.r_[0, edges], np.r_[edges, 1]
        prior = np.clip((lo + hi) / 2, 0.005, 0.995)
        a0 = prior_strength / b
        log_ml, theta = 0.0, np.empty(b)
        for i in range(b):
            cnt, pos = (bins == i).sum(), y[bins == i].sum()
            al, be = a0 * prior[i], a0 * (1 - prior[i])
            log_ml += lgamma(a0) - lgamma(cnt + a0) + lgamma(pos + al) - lgamma(al)
            log_ml += lgamma(cnt - pos + be) - lgamma(be)
            theta[i] = (pos + al) / (cnt + a0)
        models.append((log_ml, edges, theta))
    scores = np.array([m[0] for m in models])
    weights = np.exp(scores - scores.max())
    weights /= weights.sum()

    def predict(q):
        q = np.asarray(q, np.float64)
        out = np.zeros(len(q))
        for w, (_, edges, theta) in zip(weights, models, strict=True):
            out += w * theta[(q[:, None] > edges[None]).sum(-1)]
        return out

    return predict


@pytest.mark.parametrize("n", [N, 2000])
def test_bbq_equals_numpy_bdeu_reference(n):
    s, y = _binary(16, n)
    q = np.concatenate([s[:200], np.linspace(0, 1, 101, dtype=np.float32)])
    ref = _bbq_reference(s, y)(q)
    b = INSTANCES["bbq"]
    out = np.asarray(b.apply(b.fit(s, y), q))[:, 1]
    np.testing.assert_allclose(out, ref, atol=2e-5)


def test_bbq_bin_range_is_exact_at_perfect_cubes():
    from calib_jax.calibrators._nonparametric import _bbq_bin_range

    lo, hi = _bbq_bin_range(np.array([999, 1000, 1001, 8000, 27000, 10**6]))
    np.testing.assert_array_equal(lo, [1, 1, 1, 2, 3, 10])
    np.testing.assert_array_equal(hi, [100, 100, 101, 200, 300, 1000])


def test_bbq_compared_with_netcal():
    """Same data: our BDeu-averaged equal-frequency binnings vs netcal's BIC-weighted
    equal-width ones (netcal has not implemented ``equal_intervals=False``).

    The two agree to a few hundredths on average and both remove most of the miscalibration;
    they are not equal (see the ``bbq`` docstring for why).
    """
    netcal_binning = pytest.importorskip("netcal.binning")
    s, y = _binary(17, 3000)
    st, yt = _binary(18, 3000)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        nc = netcal_binning.BBQ().fit(s.astype(np.float64), y)
        theirs = nc.transform(st.astype(np.float64))
    b = INSTANCES["bbq"]
    ours = np.asarray(b.apply(b.fit(s, y), st))[:, 1]
    gap = np.abs(ours - theirs)
    assert gap.mean() < 0.03, gap.mean()
    assert gap.max() > 1e-3  # different scores, different averages: not the same function

    def binary_ece(p):
        b = np.minimum((p * 10).astype(int), 9)
        return sum(
            (b == i).mean() * abs(yt[b == i].mean() - p[b == i].mean())
            for i in range(10)
            if (b == i).any()
        )

    raw, e_ours, e_theirs = binary_ece(st), binary_ece(ours), binary_ece(theirs)
    assert e_ours < 0.5 * raw and e_theirs < 0.5 * raw, (raw, e_ours, e_theirs)


# ------------------------------------------------------------- properties of every calibrator

KEEP = np.random.default_rng(3).random(N) < 0.75


@functools.cache
def _jit_apply(name):
    return jax.jit(INSTANCES[name].apply)


@pytest.fixture(scope="module")
def fitted():
    """Every calibrator fitted on an over-confident validation set, masked by KEEP."""
    out = {}
    for name in IDS:
        x, y = _data(KINDS[name], 20)
        out[name] = (x, y, INSTANCES[name].fit(x, y, where=KEEP))
    return out


@pytest.mark.parametrize("name", IDS)
def test_jitted_apply_rows_are_probabilities(name, fitted):
    c = INSTANCES[name]
    _, _, params = fitted[name]
    xq, _ = _data(KINDS[name], 21)
    out = np.asarray(_jit_apply(name)(params, xq))
    assert out.shape == (N, K if xq.ndim == 2 else 2)
    assert np.isfinite(out).all() and (out >= 0).all()
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(out, np.asarray(c.apply(params, xq)), atol=1e-6)


@pytest.mark.parametrize("name", IDS)
def test_vmap_fit_and_apply_over_models_equal_separate_ones(name):
    c = INSTANCES[name]
    data = [_data(KINDS[name], 30 + i) for i in range(MODELS)]
    xs = np.stack([d[0] for d in data])
    ys = np.stack([d[1] for d in data])
    masks = np.random.default_rng(4).random((MODELS, N)) < 0.9
    batched = jax.jit(jax.vmap(c.fit))(xs, ys, where=masks)
    applied = jax.jit(jax.vmap(c.apply))(batched, xs)
    for i in range(MODELS):
        params = jax.tree.map(lambda a, i=i: a[i], batched)
        _close(params, c.fit(xs[i], ys[i], where=masks[i]), 2e-5)
        np.testing.assert_allclose(applied[i], _jit_apply(name)(params, xs[i]), atol=1e-6)


@pytest.mark.parametrize("name", IDS)
def test_masked_rows_have_no_influence(name, fitted):
    """Rows outside ``where`` may hold NaN inputs and out-of-range labels: same parameters."""
    x, y, params = fitted[name]
    garbage_x = np.where(KEEP.reshape((-1,) + (1,) * (x.ndim - 1)), x, np.nan).astype(x.dtype)
    garbage_y = np.where(KEEP, y, 99).astype(np.int32)
    _close(INSTANCES[name].fit(garbage_x, garbage_y, where=KEEP), params, 0)


@pytest.mark.parametrize("name", ["ts_nll", "matrix", "hist_mass", "iso_binary", "bbq"])
def test_where_mask_equals_fitting_the_subset(name, fitted):
    x, y, params = fitted[name]
    c = INSTANCES[name]
    xq, _ = _data(KINDS[name], 22)
    subset = c.apply(c.fit(x[KEEP], y[KEEP]), xq)
    np.testing.assert_allclose(np.asarray(c.apply(params, xq)), np.asarray(subset), atol=2e-5)


@pytest.mark.parametrize("name", IDS)
def test_params_round_trip_through_a_file(name, fitted, tmp_path):
    serialization = pytest.importorskip("flax.serialization")
    x, _, params = fitted[name]
    path = tmp_path / f"{name}.msgpack"
    path.write_bytes(serialization.to_bytes(params))
    template = jax.tree.map(jnp.zeros_like, params)
    restored = serialization.from_bytes(template, path.read_bytes())
    assert type(restored) is type(params)
    _close(restored, params, 0)
    apply = _jit_apply(name)
    np.testing.assert_array_equal(np.asarray(apply(restored, x)), np.asarray(apply(params, x)))


def test_ece_drops_on_an_overconfident_model(fitted):
    """Every multi-class calibrator lowers held-out ECE (float64 reference) on the over-confident
    model the fixture was fitted on; temperature scaling keeps the accuracy."""
    z, y = _overconfident(23, 10 * N)
    p = _softmax64(z).astype(np.float32)
    before = _ece64(p, y)
    assert before > 0.1
    for name in IDS:
        kind = KINDS[name]
        if kind.startswith("binary"):
            continue
        out = np.asarray(INSTANCES[name].apply(fitted[name][2], z if kind == "logits" else p))
        after = _ece64(out, y)
        print(f"ECE {name}: {before:.4f} -> {after:.4f}")
        assert after < 0.6 * before, (name, after, before)
        if name.startswith("ts"):
            assert (out.argmax(-1) == y).mean() == (p.argmax(-1) == y).mean()


def test_calibrate_and_report_on_probabilities():
    z, y = _overconfident(24, 2 * N)
    p = _softmax64(z).astype(np.float32)
    hb = INSTANCES["hist_width"]
    before, after, params = cal.calibrate_and_report(hb, p[:N], y[:N], p[N:], y[N:])
    np.testing.assert_allclose(float(before.ece), _ece64(p[N:], y[N:]), atol=1e-5)
    out = np.asarray(hb.apply(params, p[N:]))
    np.testing.assert_allclose(float(after.ece), _ece64(out, y[N:]), atol=1e-5)
    assert float(after.ece) < float(before.ece)


# --------------------------------------------------------------------------- bad input


def test_bad_input_raises_clear_errors():
    z, y = _data("logits", 50, n=100)
    p = _softmax64(z).astype(np.float32)
    for c, x in ((INSTANCES["ts_nll"], z), (INSTANCES["iso"], p)):
        with pytest.raises(ValueError, match="empty"):
            c.fit(x[:0], y[:0])
        with pytest.raises(ValueError, match="single class"):
            c.fit(x, np.zeros_like(y))
        with pytest.raises(ValueError, match="finite"):
            c.fit(x.at[3, 1].set(np.nan) if isinstance(x, jax.Array) else _nan(x), y)
        with pytest.raises(ValueError, match="labels must have shape"):
            c.fit(x, y[:-1])
        with pytest.raises(TypeError, match="integer"):
            c.fit(x, y.astype(np.float32))
        with pytest.raises(ValueError, match=r"labels must lie"):
            c.fit(x, np.where(y == 0, K, y).astype(np.int32))
    with pytest.raises(ValueError, match="probabilities"):
        INSTANCES["bbq"].fit(p * 2, y)


def _nan(x):
    x = np.array(x)
    x[3, 1] = np.nan
    return x


K_FREE = [n for n in IDS if n.startswith("ts") or n.endswith("_top")]


@pytest.mark.parametrize("name", [n for n in IDS if n not in K_FREE])
def test_applying_params_to_another_class_count_raises(name, fitted):
    c = INSTANCES[name]
    x, _, params = fitted[name]
    if x.ndim == 1:
        other = np.tile(x[:, None], (1, 3))
    else:
        other = x[:, :3]
    with pytest.raises(ValueError, match=r"fitted|binary|Platt"):
        c.apply(params, other)


@pytest.mark.parametrize("name", K_FREE)
def test_class_count_free_params_apply_to_another_class_count(name, fitted):
    # A temperature and a top-label map do not depend on K, so applying them to K' != K is
    # valid and must give proper probability rows.
    x, _, params = fitted[name]
    other = x[:, :3]
    if KINDS[name] == "probs":
        other = other / other.sum(-1, keepdims=True)
    probs = np.asarray(INSTANCES[name].apply(params, other))
    assert probs.shape == other.shape
    assert np.all(probs >= 0)
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)


def test_invalid_values_under_jit_give_nan_params_and_checked_raises():
    z, y = _data("logits", 51, n=100)
    bad = _nan(z)
    c = INSTANCES["ts_nll"]
    params = jax.jit(c.fit)(bad, y)
    assert np.isnan(np.asarray(params.temperature))
    with pytest.raises(Exception, match="finite"):
        cj.validation.checked(jax.jit(c.fit))(bad, y)
    with pytest.raises(Exception, match="single class"):
        cj.validation.checked(jax.jit(c.fit))(z, np.ones_like(y))
    p = _softmax64(z).astype(np.float32)
    params = jax.jit(INSTANCES["hist_width"].fit)(p, np.zeros_like(y))
    assert np.isnan(np.asarray(params.values)).all()


def test_unnormalised_probabilities_under_jit_give_nan_params():
    # Logits or unnormalised scores passed as probabilities must never give a plausible fit.
    z, y = _data("logits", 51, n=100)
    p = _softmax64(z).astype(np.float32)
    for name in ("hist_width", "iso", "bbq"):
        with pytest.raises(ValueError, match="probabilities"):
            INSTANCES[name].fit(0.5 * p, y)
        params = jax.jit(INSTANCES[name].fit)(0.5 * p, y)
        assert all(np.isnan(np.asarray(a)).all() for a in jax.tree.leaves(params)), name


@pytest.mark.parametrize("name", [n for n in IDS if KINDS[n] in ("probs", "binary")])
def test_apply_on_invalid_probabilities_raises_or_gives_nan(name, fitted):
    # A NaN or out-of-range score must not be clipped into an end bin and calibrated.
    _, _, params = fitted[name]
    xq, _ = _data(KINDS[name], 21)
    bad = np.array(xq)
    if bad.ndim == 1:
        bad[[0, 1, 2]] = [np.nan, 1.5, -0.25]
    else:
        bad[0, 0] = np.nan
        bad[1] *= 1.5  # logits or unnormalised scores passed as probabilities
        bad[2, 0] = -0.25
    with pytest.raises(ValueError, match=r"probs must"):
        INSTANCES[name].apply(params, bad)
    out = np.asarray(_jit_apply(name)(params, bad))
    assert np.isnan(out[:3]).all() and np.isfinite(out[3:]).all()
    np.testing.assert_array_equal(out[3:], np.asarray(_jit_apply(name)(params, xq))[3:])


@pytest.mark.parametrize("name", [n for n in IDS if "logits" in KINDS[n]])
def test_apply_on_non_finite_logits_raises_or_gives_nan(name, fitted):
    _, _, params = fitted[name]
    xq, _ = _data(KINDS[name], 21)
    bad = np.array(xq)
    bad[0] = np.nan
    with pytest.raises(ValueError, match="logits must be finite"):
        INSTANCES[name].apply(params, bad)
    out = np.asarray(_jit_apply(name)(params, bad))
    assert np.isnan(out[0]).all() and np.isfinite(out[1:]).all()


@pytest.mark.parametrize("name", IDS)
def test_bfloat16_inputs_fit_in_float32(name, fitted):
    x, y, params = fitted[name]
    c = INSTANCES[name]
    xb = jnp.asarray(x, jnp.bfloat16)
    # bf16 probability rows sum to one only within bf16 rounding: accepted, fitted in float32.
    got = c.fit(xb, y, where=KEEP)
    assert all(a.dtype == jnp.float32 for a in jax.tree.leaves(got)), name
    assert all(np.isfinite(np.asarray(a)).all() for a in jax.tree.leaves(got)), name
    if KINDS[name] != "probs":  # no row-sum check: exactly the fit of the float32 copy
        _close(got, c.fit(xb.astype(jnp.float32), y, where=KEEP), 0)
    xq, _ = _data(KINDS[name], 21)
    apply = _jit_apply(name)
    gap = np.abs(np.asarray(apply(got, xq)) - np.asarray(apply(params, xq)))
    assert gap.mean() < 1e-2, (name, gap.mean())


def test_calibrate_and_report_under_jit_and_vmap():
    z, y = _overconfident(25, 2 * N)
    ts = INSTANCES["ts_nll"]
    run = lambda vx, vy, tx, ty: cal.calibrate_and_report(ts, vx, vy, tx, ty)
    stacked = [np.stack([a, a[::-1]]) for a in (z[:N], y[:N], z[N:], y[N:])]
    before, after, params = jax.jit(jax.vmap(run))(*stacked)
    for i in range(2):
        b, a, p = run(*(s[i] for s in stacked))
        _close((b, a, p), jax.tree.map(lambda x, i=i: x[i], (before, after, params)), 2e-5)
