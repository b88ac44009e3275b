"""Calibrators of the wider field against float64 references and their peer packages.

Beta calibration against betacal 1.1.0, Venn-Abers against venn-abers 1.5.4, ensemble
temperature scaling and Dirichlet calibration against float64 scipy fits; shared shapes
(N = 400 validation rows, K = 4 classes, 4 stacked models) so compiled functions are reused.
"""

import functools

import jax
import numpy as np
import pytest
import threadpoolctl
from scipy import optimize

import calib_jax as cj
from calib_jax import calibrators as cal

N, K, MODELS = 400, 4, 4


def _softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _overconfident(seed, n, k=K, scale=3.0, t_star=2.5):
    """Labels drawn from softmax(z); the model reports t_star * z (over-confident)."""
    rng = np.random.default_rng(seed)
    z = scale * rng.standard_normal((n, k))
    y = (_softmax64(z).cumsum(-1) > rng.random((n, 1))).argmax(-1)
    return (t_star * z).astype(np.float32), y.astype(np.int32)


def _binary(seed, n, shape="square"):
    """Scores in (0.01, 0.99) and labels whose frequency is a non-logistic function of them."""
    rng = np.random.default_rng(seed)
    s = rng.uniform(0.01, 0.99, n)
    freq = {
        "square": s**2,
        "concave": 1 - (1 - s) ** 3,
        "decreasing_tail": 0.5 + 0.3 * np.sin(6 * s),  # betacal refits with a = 0
        "v_shape": np.where(s < 0.5, 0.8 - s, s),  # betacal refits with a = 0
    }[shape]
    return s.astype(np.float32), (rng.random(n) < freq).astype(np.int32)


def _close(a, b, tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol)


# ------------------------------------------------------------------------- beta calibration


def _logistic64(x, y):
    """Float64 unpenalised logistic regression with intercept (tight L-BFGS-B)."""
    x = np.column_stack([x, np.ones(len(y))])

    def f(th):
        u = x @ th
        return np.mean(np.logaddexp(0, u) - y * u), x.T @ (1 / (1 + np.exp(-u)) - y) / len(y)

    opts = {"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10_000}
    return optimize.minimize(f, np.zeros(x.shape[1]), jac=True, method="L-BFGS-B", options=opts).x


def _beta64(s, y):
    """Reference beta calibration: the "abm" fit with betacal's refit rule, in float64.

    betacal 1.1.0, betacal/beta_calibration.py lines 20-44: features ln s and -ln(1 - s);
    if the coefficient of ln s is negative refit without it (a = 0), elif that of -ln(1 - s) is
    negative refit without it (b = 0). Returns (a, b, c).
    """
    eps = np.finfo(np.float32).eps
    s = np.clip(np.asarray(s, np.float64), eps, 1 - eps)
    x = np.column_stack([np.log(s), -np.log1p(-s)])
    a, b, c = _logistic64(x, y)
    if a < 0:
        (b, c), a = _logistic64(x[:, 1:], y), 0.0
    elif b < 0:
        (a, c), b = _logistic64(x[:, :1], y), 0.0
    return a, b, c


def _beta_predict64(params, s):
    eps = np.finfo(np.float32).eps
    s = np.clip(np.asarray(s, np.float64), eps, 1 - eps)
    a, b, c = params
    return 1 / (1 + np.exp(-(a * np.log(s) - b * np.log1p(-s) + c)))


def _clip32(s):
    eps = np.finfo(np.float32).eps
    return np.clip(np.asarray(s, np.float64), eps, 1 - eps)


BETA = cal.beta_calibration()
SHAPES = ["square", "concave", "decreasing_tail", "v_shape"]


@pytest.mark.parametrize("shape", SHAPES)
def test_beta_equals_float64_reference(shape):
    s, y = _binary(1, 2000, shape)
    params = jax.jit(BETA.fit)(s, y)
    a, b, c = _beta64(s, y)
    got = (*np.asarray(params.slopes[0], np.float64), float(params.intercept[0]))
    np.testing.assert_allclose(got, (a, b, c), atol=5e-4, rtol=5e-4)
    q = np.linspace(0.0, 1.0, 101).astype(np.float32)
    out = np.asarray(BETA.apply(params, q))
    np.testing.assert_allclose(out[:, 1], _beta_predict64((a, b, c), q), atol=2e-5)
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-6)
    assert (a == 0) == (got[0] == 0) and (b == 0) == (got[1] == 0)


@pytest.fixture(scope="module")
def betacal_converged(monkeypatch_module):
    """betacal with its internal LogisticRegression run to convergence (its default tol=1e-4
    stops lbfgs up to ~2e-4 away in probability); same code path, same refit rule."""
    betacal = pytest.importorskip("betacal")
    from sklearn.linear_model import LogisticRegression

    module = __import__("betacal.beta_calibration", fromlist=["x"])
    monkeypatch_module.setattr(
        module, "LogisticRegression", functools.partial(LogisticRegression, tol=1e-10)
    )
    return betacal


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as mp:
        yield mp


@pytest.mark.parametrize("shape", SHAPES)
def test_beta_matches_betacal(shape, betacal_converged):
    s, y = _binary(2, 2000, shape)
    q = np.linspace(0.0, 1.0, 201).astype(np.float32)
    ours = np.asarray(BETA.apply(BETA.fit(s, y), q))[:, 1]
    peer = betacal_converged.BetaCalibration(parameters="abm").fit(s.astype(np.float64), y)
    np.testing.assert_allclose(ours, peer.predict(q.astype(np.float64)), atol=1e-4)


def test_beta_one_vs_rest_equals_binary_columns_renormalised(betacal_converged):
    z, y = _overconfident(3, N)
    p = _softmax64(z).astype(np.float32)
    params = BETA.fit(p, y)
    assert params.slopes.shape == (K, 2) and params.intercept.shape == (K,)
    zq, _ = _overconfident(4, N)
    pq = _softmax64(zq).astype(np.float32)
    # betacal clips to the eps of its input's dtype; we compute in float32 and clip to float32
    # eps: the same features once the scores are clipped first (then betacal runs in float64).
    cols = np.stack(
        [
            betacal_converged.BetaCalibration(parameters="abm")
            .fit(_clip32(p[:, j]), (y == j).astype(int))
            .predict(_clip32(pq[:, j]))
            for j in range(K)
        ],
        axis=-1,
    )
    expected = cols / cols.sum(-1, keepdims=True)
    np.testing.assert_allclose(np.asarray(BETA.apply(params, pq)), expected, atol=1e-4)


def test_beta_top_label_calibrates_the_confidence():
    z, y = _overconfident(5, N)
    p = _softmax64(z).astype(np.float32)
    top = cal.beta_calibration(mode="top_label")
    params = top.fit(p, y)
    conf, correct = p.max(-1), (p.argmax(-1) == y).astype(int)
    ref = _beta64(conf, correct)
    out = np.asarray(top.apply(params, p))
    np.testing.assert_allclose(
        out[np.arange(N), p.argmax(-1)], _beta_predict64(ref, conf), atol=5e-5
    )
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-5)


# ------------------------------------------------------------------------------ Venn-Abers


def _pav64(y, w):
    """Float64 pool-adjacent-violators on targets y with weights w (already sorted)."""
    blocks = []  # [sum, weight, count]
    for yi, wi in zip(y, w, strict=True):
        blocks.append([yi * wi, wi, 1])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            top = blocks.pop()
            blocks[-1] = [a + b for a, b in zip(blocks[-1], top, strict=True)]
    return np.concatenate([np.full(c, s_ / w_) for s_, w_, c in blocks])


def _venn_abers64(s_cal, y_cal, s_test):
    """Brute force from the definition: add (s, 0) and (s, 1) to the calibration set, pool
    exactly tied scores, run PAV, read the fitted value at s. Returns [n_test, 2] (p0, p1)."""
    out = []
    for s in np.asarray(s_test, np.float64):
        pair = []
        for label in (0, 1):
            xs = np.append(np.asarray(s_cal, np.float64), s)
            ys = np.append(np.asarray(y_cal, np.float64), label)
            _, inv = np.unique(xs, return_inverse=True)
            sums, weights = np.bincount(inv, ys), np.bincount(inv)
            fitted = _pav64(sums / weights, weights)
            pair.append(fitted[inv[-1]])
        out.append(pair)
    return np.array(out)


VA = cal.venn_abers()


@pytest.mark.parametrize("ties", [False, True])
def test_venn_abers_equals_float64_brute_force(ties):
    rng = np.random.default_rng(6)
    s = rng.uniform(0, 1, 150)
    y = (rng.random(150) < s**2).astype(np.int32)
    if ties:
        s = np.round(s * 10) / 10
    s = s.astype(np.float32)
    q = np.concatenate([rng.uniform(0, 1, 40), s[:20], [0.0, 1.0]]).astype(np.float32)
    params = jax.jit(VA.fit)(s, y)
    interval = np.asarray(cal.venn_abers_interval(params, q))
    expected = _venn_abers64(s, y, q)
    np.testing.assert_allclose(interval, expected, atol=1e-6)
    assert (interval[:, 0] <= interval[:, 1]).all()
    merged = np.asarray(VA.apply(params, q))
    p0, p1 = expected[:, 0], expected[:, 1]
    np.testing.assert_allclose(merged[:, 1], p1 / (1 - p0 + p1), atol=1e-6)
    np.testing.assert_allclose(merged.sum(-1), 1, atol=1e-6)


def test_venn_abers_hull_bridge_equals_the_minimax_reference_path():
    # The O(N log² N) bridge search against the O(N²) minimax formula on the same groups:
    # ties, masks, runs of one label, a single class, tiny sets; bit-identical values.
    from calib_jax.calibrators import _venn_abers as va

    fast, reference = jax.jit(va._venn_abers_column), jax.jit(va._venn_abers_column_reference)
    rng = np.random.default_rng(11)
    for trial in range(24):
        n = int(rng.integers(1, 200))
        s, y, w = np.zeros((3, 200), np.float32)
        s[:n] = rng.uniform(0, 1, n)
        if trial % 3 == 0:
            s[:n] = np.round(s[:n] * rng.integers(2, 20)) / 20
        y[:n] = rng.random(n) < s[:n] ** rng.uniform(0.2, 3)
        if trial % 5 == 0:
            y[:n] = np.sort(y[:n])
        if trial % 7 == 0:
            y[:n] = 1
        w[:n] = 1 if trial % 2 else rng.random(n) < 0.8
        w[0] = 1
        ours, theirs = fast(s, y, w), reference(s, y, w)
        for a, b in zip(ours, theirs, strict=True):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=str(trial))


@pytest.mark.parametrize("ties", [False, True])
def test_venn_abers_matches_the_venn_abers_package(ties):
    peer = pytest.importorskip("venn_abers")
    s, y = _binary(7, 2000)
    if ties:
        s = (np.round(s * 50) / 50).astype(np.float32)
    rng = np.random.default_rng(8)
    q = np.concatenate([rng.uniform(0, 1, 300), s[:100], [0.0, 1.0]]).astype(np.float32)
    two = lambda a: np.stack([1 - a, a], axis=1).astype(np.float64)
    merged, p0_p1 = peer.VennAbers().fit(two(s), y).predict_proba(two(q))
    params = VA.fit(s, y)
    np.testing.assert_allclose(np.asarray(cal.venn_abers_interval(params, q)), p0_p1, atol=1e-6)
    np.testing.assert_allclose(np.asarray(VA.apply(params, q)), merged, atol=1e-6)


def test_venn_abers_top_label_calibrates_the_confidence():
    z, y = _overconfident(9, N)
    p = _softmax64(z).astype(np.float32)
    params = VA.fit(p, y)
    zq, _ = _overconfident(10, 50)
    pq = _softmax64(zq).astype(np.float32)
    conf, correct = p.max(-1), (p.argmax(-1) == y).astype(np.int32)
    expected = _venn_abers64(conf, correct, pq.max(-1))
    np.testing.assert_allclose(np.asarray(cal.venn_abers_interval(params, pq)), expected, atol=1e-6)
    out = np.asarray(VA.apply(params, pq))
    p0, p1 = expected[:, 0], expected[:, 1]
    np.testing.assert_allclose(out[np.arange(50), pq.argmax(-1)], p1 / (1 - p0 + p1), atol=1e-6)
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-5)


# --------------------------------------------------------------- ensemble temperature scaling


def _ets64(z, y):
    """The authors' procedure in float64 (Mix-n-Match util_calibration.py: ets_calibrate,
    lines 112-125, fits T with loss='mse' by L-BFGS-B in bounds (0.05, 5.0) from 1.0 with
    tol=1e-12, lines 63-67 and mse_t lines 16-24; then w by SLSQP from (1, 0, 0) on the simplex,
    bounds [0, 1], tol=1e-12, minimising mse_w, lines 40-47 and 82-88)."""
    z = np.asarray(z, np.float64)
    onehot = np.eye(z.shape[-1])[y]
    mse_t = lambda t: np.mean((_softmax64(z / t[0]) - onehot) ** 2)
    t = optimize.minimize(mse_t, [1.0], method="L-BFGS-B", bounds=((0.05, 5.0),), tol=1e-12).x[0]
    comps = [_softmax64(z / t), _softmax64(z), np.full_like(z, 1 / z.shape[-1])]
    mse_w = lambda w: np.mean((sum(wi * c for wi, c in zip(w, comps, strict=True)) - onehot) ** 2)
    simplex = {"type": "eq", "fun": lambda w: np.sum(w) - 1}
    w = optimize.minimize(
        mse_w, (1.0, 0.0, 0.0), method="SLSQP", bounds=((0, 1),) * 3, constraints=simplex, tol=1e-12
    ).x
    return t, w, lambda zq: sum(wi * c for wi, c in zip(w, _ets_comps64(zq, t), strict=True))


def _ets_comps64(z, t):
    z = np.asarray(z, np.float64)
    return [_softmax64(z / t), _softmax64(z), np.full_like(z, 1 / z.shape[-1])]


ETS = cal.ensemble_temperature_scaling()


@pytest.mark.parametrize(("seed", "t_star"), [(11, 2.5), (12, 0.6), (13, 1.0)])
def test_ets_equals_the_authors_fit_in_float64(seed, t_star):
    z, y = _overconfident(seed, 1000, t_star=t_star)
    params = jax.jit(ETS.fit)(z, y)
    t, w, predict = _ets64(z, y)
    np.testing.assert_allclose(float(params.temperature), t, rtol=1e-4)
    np.testing.assert_allclose(np.asarray(params.weights), w, atol=1e-3)
    np.testing.assert_allclose(float(np.sum(params.weights)), 1, atol=1e-6)
    zq, _ = _overconfident(seed + 100, N, t_star=t_star)
    out = np.asarray(ETS.apply(params, zq))
    np.testing.assert_allclose(out, predict(zq), atol=1e-4)


def test_ets_weight_fit_is_the_simplex_optimum():
    # The exact QP against a dense float64 grid over the simplex at the fitted T.
    z, y = _overconfident(14, 1000, t_star=1.5)
    params = ETS.fit(z, y)
    comps = _ets_comps64(z, float(params.temperature))
    onehot = np.eye(K)[y]
    g = np.linspace(0, 1, 201)
    w1, w2 = np.meshgrid(g, g)
    ok = w1 + w2 <= 1 + 1e-12
    ws = np.stack([w1[ok], w2[ok], 1 - w1[ok] - w2[ok]], -1)
    mse = lambda w: np.mean((sum(wi * c for wi, c in zip(w, comps, strict=True)) - onehot) ** 2)
    best = min(mse(w) for w in ws)
    assert mse(np.asarray(params.weights, np.float64)) <= best + 1e-7


# --------------------------------------------------------------------- Dirichlet calibration


def _dirichlet_objective64(z, y, lam, regularizer, mask=None):
    """Float64 mean NLL of softmax(W log p + b) over the masked rows plus the penalty, and its
    gradient (so that scipy needs no finite differences)."""
    logp = np.log(_softmax64(z))
    k = logp.shape[-1]
    mask = np.ones(len(y), bool) if mask is None else mask
    x, onehot = logp[mask], np.eye(k)[y[mask]]
    off = 1 - np.eye(k)

    def f(theta):
        w, b = theta[: k * k].reshape(k, k), theta[k * k :]
        out = x @ w.T + b
        m = out.max(-1, keepdims=True)
        e = np.exp(out - m)
        lse = m[:, 0] + np.log(e.sum(-1))
        nll = np.mean(lse - np.sum(out * onehot, -1))
        residual = (e / e.sum(-1, keepdims=True) - onehot) / len(x)
        gw, gb = residual.T @ x, residual.sum(0)
        if regularizer == "l2":
            return nll + lam * np.sum(w**2), np.concatenate([(gw + 2 * lam * w).ravel(), gb])
        scale = lam / (k * (k - 1))
        value = nll + scale * np.sum((w * off) ** 2) + lam * np.sum(b**2) / k
        return value, np.concatenate([(gw + 2 * scale * w * off).ravel(), gb + 2 * lam * b / k])

    return f


def _dirichlet64(z, y, lam, regularizer="odir", mask=None):
    k = z.shape[-1]
    f = _dirichlet_objective64(z, y, lam, regularizer, mask)
    init = np.concatenate([np.eye(k).ravel(), np.zeros(k)])
    opts = {"gtol": 1e-10, "ftol": 1e-15, "maxiter": 10_000}
    # One BLAS thread: scipy's L-BFGS-B calls BLAS on 20-vectors, and threaded OpenBLAS made
    # each iteration ~40x slower on a busy machine.
    with threadpoolctl.threadpool_limits(1):
        res = optimize.minimize(f, init, jac=True, method="L-BFGS-B", options=opts)
    return res.x[: k * k].reshape(k, k), res.x[k * k :], res.fun


def _nll_dirichlet64(z, y, w, b):
    out = np.log(_softmax64(z)) @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
    return -np.mean(np.log(_softmax64(out))[np.arange(len(y)), y])


LAMBDAS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
DIR = cal.dirichlet_calibration(lambdas=LAMBDAS, num_folds=5)


def test_dirichlet_cross_validation_and_fit_equal_float64_reference():
    # Under-confident logits with class biases, so that a small penalty wins the CV.
    z, y = _overconfident(16, N, t_star=0.5)
    z = z + np.array([0.8, 0.0, -0.5, 0.3], np.float32)
    params = jax.jit(DIR.fit)(z, y)
    fold = np.arange(N) % 5
    held = []
    for lam in LAMBDAS:
        total = 0.0
        for f in range(5):
            w, b, _ = _dirichlet64(z, y, lam, mask=fold != f)
            total += _nll_dirichlet64(z[fold == f], y[fold == f], w, b) * np.sum(fold == f)
        held.append(total)
    lam = LAMBDAS[int(np.argmin(held))]
    assert float(params.regularization) == pytest.approx(lam, rel=1e-6), (held, params)
    _, _, best = _dirichlet64(z, y, lam)
    theta = np.concatenate([np.asarray(params.weight, np.float64).ravel(), params.bias])
    assert _dirichlet_objective64(z, y, lam, "odir")(theta)[0] <= best + 1e-5
    zq, yq = _overconfident(17, N, t_star=0.5)
    zq = zq + np.array([0.8, 0.0, -0.5, 0.3], np.float32)
    w, b, _ = _dirichlet64(z, y, lam)
    ours = -np.mean(np.log(np.asarray(DIR.apply(params, zq), np.float64)[np.arange(N), yq]))
    assert abs(ours - _nll_dirichlet64(zq, yq, w, b)) <= 1e-3


def test_dirichlet_l2_at_one_lambda_equals_float64_fit_and_takes_log_probs():
    z, y = _overconfident(18, N)
    l2 = cal.dirichlet_calibration(regularizer="l2", lambdas=(0.01,))
    params = jax.jit(l2.fit)(z, y)
    w, b, best = _dirichlet64(z, y, 0.01, "l2")
    theta = np.concatenate([np.asarray(params.weight, np.float64).ravel(), params.bias])
    assert _dirichlet_objective64(z, y, 0.01, "l2")(theta)[0] <= best + 1e-5
    zq, yq = _overconfident(19, N)
    ours = -np.mean(np.log(np.asarray(l2.apply(params, zq), np.float64)[np.arange(N), yq]))
    assert abs(ours - _nll_dirichlet64(zq, yq, w, b)) <= 1e-3
    # Log-probabilities are logits of the same model: the same fit and output.
    logp = np.log(_softmax64(z)).astype(np.float32)
    _close(jax.jit(l2.fit)(logp, y), params, 1e-4)


# ------------------------------------------------------------- properties of every calibrator

# (id, calibrator, input kind): "logits" [N, K], "probs" [N, K] or "binary" [N] probabilities.
CASES = {
    "beta": (BETA, "probs"),
    "beta_binary": (BETA, "binary"),
    "beta_top": (cal.beta_calibration(mode="top_label"), "probs"),
    "venn_abers_top": (VA, "probs"),
    "ets": (ETS, "logits"),
    "dirichlet": (DIR, "logits"),
    "venn_abers_binary": (VA, "binary"),
}
KEEP = np.random.default_rng(3).random(N) < 0.75


def _data(kind, seed, n=N):
    z, y = _overconfident(seed, n)
    if kind == "logits":
        return z, y
    if kind == "probs":
        return _softmax64(z).astype(np.float32), y
    return _binary(seed, n)


@functools.cache
def _jit(name, what):
    return jax.jit(getattr(CASES[name][0], what))


@pytest.mark.parametrize("name", list(CASES))
def test_jit_fit_and_apply_equal_eager(name):
    c, kind = CASES[name]
    x, y = _data(kind, 20)
    params = c.fit(x, y, where=KEEP)
    _close(_jit(name, "fit")(x, y, where=KEEP), params, 2e-5)
    xq, _ = _data(kind, 21)
    out = np.asarray(_jit(name, "apply")(params, xq))
    assert out.shape == (N, K if xq.ndim == 2 else 2)
    assert np.isfinite(out).all() and (out >= 0).all()
    np.testing.assert_allclose(out.sum(-1), 1, atol=1e-5)
    np.testing.assert_allclose(out, np.asarray(c.apply(params, xq)), atol=1e-6)


@pytest.mark.parametrize("name", list(CASES))
def test_vmap_fit_and_apply_over_models_equal_separate_ones(name):
    c, kind = CASES[name]
    data = [_data(kind, 30 + i) for i in range(MODELS)]
    xs = np.stack([d[0] for d in data])
    ys = np.stack([d[1] for d in data])
    masks = np.random.default_rng(4).random((MODELS, N)) < 0.9
    batched = jax.jit(jax.vmap(c.fit))(xs, ys, where=masks)
    applied = jax.jit(jax.vmap(c.apply))(batched, xs)
    for i in range(MODELS):
        params = jax.tree.map(lambda a, i=i: a[i], batched)
        _close(params, c.fit(xs[i], ys[i], where=masks[i]), 2e-5)
        np.testing.assert_allclose(applied[i], _jit(name, "apply")(params, xs[i]), atol=1e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_masked_rows_have_no_influence(name):
    """Rows outside ``where`` may hold NaN inputs and out-of-range labels: same parameters."""
    c, kind = CASES[name]
    x, y = _data(kind, 22)
    garbage_x = np.where(KEEP.reshape((-1,) + (1,) * (x.ndim - 1)), x, np.nan).astype(x.dtype)
    garbage_y = np.where(KEEP, y, 99).astype(np.int32)
    xq, _ = _data(kind, 21)
    masked = c.apply(c.fit(garbage_x, garbage_y, where=KEEP), xq)
    np.testing.assert_allclose(masked, c.apply(c.fit(x[KEEP], y[KEEP]), xq), atol=2e-5)


@pytest.mark.parametrize("name", list(CASES))
def test_bad_fit_data_raises_eagerly_and_gives_nan_params_under_jit(name):
    c, kind = CASES[name]
    x, y = _data(kind, 23)
    bad = np.array(x)
    bad[3] = np.nan
    with pytest.raises(ValueError, match="finite"):
        c.fit(bad, y)
    with pytest.raises(ValueError, match="single class"):
        c.fit(x, np.ones_like(y))
    for args in ((bad, y), (x, np.ones_like(y))):
        params = _jit(name, "fit")(*args)
        assert all(np.isnan(np.asarray(a)).all() for a in jax.tree.leaves(params)), name
    with pytest.raises(Exception, match="single class"):
        cj.validation.checked(_jit(name, "fit"))(x, np.ones_like(y))


@pytest.mark.parametrize("name", [n for n in CASES if CASES[n][1] != "binary"])
def test_calibrate_and_report_accepts_it(name):
    c, kind = CASES[name]
    x, y = _data(kind, 24, n=2 * N)
    before, after, params = cal.calibrate_and_report(c, x[:N], y[:N], x[N:], y[N:])
    out = np.asarray(c.apply(params, x[N:]), np.float64)
    nll = -np.mean(np.log(np.maximum(out[np.arange(N), y[N:]], np.finfo(np.float32).tiny)))
    np.testing.assert_allclose(float(after.nll), nll, rtol=1e-4)
    assert float(after.ece) < float(before.ece), (name, float(before.ece), float(after.ece))
