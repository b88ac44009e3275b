"""Metrics of the wider field vs independent float64 NumPy references, peers and invariants.

Over-/under-confidence, KS error, ECE-sweep, selective prediction (AURC, AUGRC, risk at a
coverage, coverage at a risk), the Brier decomposition in tensorflow-probability's form and the
CORP score decomposition.
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import digamma

import calib_jax as cj
from calib_jax import metrics as cm

# ------------------------------------------------------------------------------------------------
# Data: random probabilities with tied confidences (duplicated rows, uniform rows), and a binary
# variant whose probabilities are rounded to two decimals (many ties).


def make_data(n, k, seed):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * 2.5).astype(np.float32)
    p = np.array(jax.nn.softmax(jnp.asarray(z)))
    # Tied confidences: a third of the rows copy another row; a few rows are uniform (a tie for
    # the first maximum as well).
    copy = rng.random(n) < 0.3
    p[copy] = p[rng.integers(0, n, copy.sum())]
    p[rng.random(n) < 0.03] = np.float32(1 / k)
    y = rng.integers(0, k, n).astype(np.int32)
    # Correct more often at higher confidence, so that the equal-mass accuracies rise.
    y = np.where(rng.random(n) < p.max(1) ** 0.5, p.argmax(1), y).astype(np.int32)
    return p.astype(np.float32), y


def make_binary(n, seed):
    rng = np.random.default_rng(seed)
    p = np.round(rng.random(n), 2).astype(np.float32)
    y = (rng.random(n) < np.clip(p + 0.1, 0, 1)).astype(np.int32)
    return p, y


def make_weights(n, seed, kind):
    rng = np.random.default_rng(seed)
    if kind == "none":
        return None
    if kind == "mask":
        return rng.random(n) > 0.3
    if kind == "int":
        return rng.poisson(1.0, n).astype(np.int32)
    return (rng.random(n) * 2).astype(np.float32)


def ref_top_label(p, y):
    p = np.asarray(p, np.float64)
    if p.ndim == 1:
        return p, (np.asarray(y) == 1).astype(np.float64)
    return p.max(1), (p.argmax(1) == np.asarray(y)).astype(np.float64)


def as_weights(w, n):
    return np.ones(n) if w is None else np.asarray(w, np.float64)


def kw(w):
    """The calib_jax keyword for a weight vector of make_weights."""
    if w is None:
        return {}
    if w.dtype == np.bool_:
        return {"where": jnp.asarray(w)}
    return {"weights": jnp.asarray(w)}


# ------------------------------------------------------------------------------------------------
# Independent float64 references.


def ref_bin(c, m):
    # float32 values are never within float64 rounding of a non-representable m/M.
    return np.clip(np.ceil(np.asarray(c, np.float64) * m).astype(int) - 1, 0, m - 1)


def ref_oe_ue(c, a, w, m):
    b = ref_bin(c, m)
    total = w.sum()
    oe = ue = 0.0
    for i in range(m):
        sel = b == i
        if w[sel].sum() > 0:
            # |B| (conf - acc) for the bin.
            gap = np.sum(w[sel] * c[sel]) - np.sum(w[sel] * a[sel])
            oe += max(gap, 0.0) / total
            ue += max(-gap, 0.0) / total
    return oe, ue


def ref_ks(c, a, w):
    order = np.lexsort((a, c))
    cs = c[order]
    h = np.cumsum((w * (c - a))[order]) / w.sum()
    ends = np.r_[cs[1:] != cs[:-1], True]
    return np.max(np.abs(h[ends]))


def replicate(c, a, w):
    """Integer weights (or a 0/1 mask) as replicated samples."""
    reps = np.asarray(w).astype(int)
    return np.repeat(c, reps), np.repeat(a, reps)


def ref_sweep(c, a, w, p=1):
    c, a = replicate(c, a, w)
    order = np.lexsort((a, c))  # equal confidences: incorrect first
    c, a = c[order], a[order]
    n = len(c)
    best = 1
    for b in range(2, n + 1):
        acc = [x.mean() for x in np.array_split(a, b)]
        if np.all(np.diff(acc) >= 0):
            best = b
        else:
            break
    pairs = zip(np.array_split(c, best), np.array_split(a, best), strict=True)
    return sum(len(x) / n * abs(x.mean() - z.mean()) ** p for x, z in pairs) ** (1 / p), best


def ref_error_curve(c, a, w):
    """``E[k]``, k = 0..N: errors among the k most confident (replicated) samples, each tie
    group's errors spread evenly over its positions."""
    c, a = replicate(c, a, w)
    order = np.argsort(-c, kind="stable")
    cs, err = c[order], 1 - a[order]
    n = len(cs)
    e = np.zeros(n + 1)
    start = 0
    while start < n:
        stop = start
        while stop < n and cs[stop] == cs[start]:
            stop += 1
        g = stop - start
        e[start + 1 : stop + 1] = e[start] + err[start:stop].sum() * np.arange(1, g + 1) / g
        start = stop
    return e


def ref_aurc_augrc(c, a, w):
    e = ref_error_curve(c, a, w)
    n = len(e) - 1
    k = np.arange(1, n + 1)
    return np.mean(e[1:] / k), np.mean(e[1:] / n)


def ref_risk_at(c, a, w, coverage):
    e = ref_error_curve(c, a, w)
    n = len(e) - 1
    t = coverage * n
    return np.interp(t, np.arange(n + 1), e) / t


def ref_coverage_at(c, a, w, risk):
    e = ref_error_curve(c, a, w)
    n = len(e) - 1
    # Scan from the full coverage down: the first point (or crossing) where E(t) <= risk t.
    for k in range(n, 0, -1):
        g1 = e[k] - risk * k
        g0 = e[k - 1] - risk * (k - 1)
        if g1 <= 0:
            return k / n
        if g0 <= 0:
            return (k - 1 + g0 / (g0 - g1)) / n
    return 0.0


def ref_aurc_real_weights(c, a, w):
    """AURC and AUGRC for real weights: sums over the unit positions across each sample of the
    piecewise-linear error curve, harmonic numbers continued by ``ψ(t + 1)``."""
    order = np.lexsort((a, -c))
    c, a, w = c[order], a[order], w[order]
    total = w.sum()
    aurc = augrc = 0.0
    t0 = e0 = 0.0
    i = 0
    while i < len(c):
        j = i
        while j < len(c) and c[j] == c[i]:
            j += 1
        gw = w[i:j].sum()
        slope = np.sum(w[i:j] * (1 - a[i:j])) / gw if gw > 0 else 0.0
        for wi in w[i:j]:
            dh = digamma(t0 + wi + 1) - digamma(t0 + 1)
            aurc += e0 * dh + slope * (wi - t0 * dh)
            augrc += wi * e0 + slope * wi * (wi + 1) / 2
            t0, e0 = t0 + wi, e0 + slope * wi
        i = j
    return aurc / total, augrc / total**2


def ref_brier_decomposition(p, y, w, resolution_by_predicted=False):
    p = np.asarray(p, np.float64)
    if p.ndim == 1:
        p = np.stack([1 - p, p], 1)
    n, k = p.shape
    pred = p.argmax(1)
    total = w.sum()
    pbar = np.array([w[y == j].sum() for j in range(k)]) / total
    unc = -np.sum(pbar**2)
    res = rel = 0.0
    d = np.zeros((k, k))
    for j in range(k):
        sel = pred == j
        wj = w[sel].sum()
        if wj == 0:
            continue
        d[j] = [w[sel & (y == i)].sum() / wj for i in range(k)]
        ref = pbar[j] if resolution_by_predicted else pbar
        res += wj / total * np.sum((d[j] - ref) ** 2)
    for i in range(n):
        rel += w[i] * np.sum((p[i] - d[pred[i]]) ** 2)
    return unc, res, rel / total


def ref_score(q, a, w, score):
    q = np.asarray(q, np.float64)
    if score == "brier":
        per = (q - a) ** 2
    else:
        with np.errstate(divide="ignore", invalid="ignore"):
            per = -(np.where(a > 0, a * np.log(q), 0) + np.where(a < 1, (1 - a) * np.log(1 - q), 0))
    return np.sum(np.where(w > 0, w * per, 0)) / w.sum()


def ref_corp(c, a, w, score):
    from sklearn.isotonic import IsotonicRegression

    keep = w > 0
    iso = IsotonicRegression(out_of_bounds="clip").fit(c[keep], a[keep], sample_weight=w[keep])
    c_hat = iso.predict(c)
    rbar = np.sum(w * a) / w.sum()
    s_c, s_hat, s_bar = (ref_score(q, a, w, score) for q in (c, c_hat, np.full_like(c, rbar)))
    return s_c, s_c - s_hat, s_bar - s_hat, s_bar


# ------------------------------------------------------------------------------------------------
# Every function against its reference: multiclass and binary, unweighted, masked, integer and
# real weights.

DATASETS = {
    "multiclass": lambda: make_data(600, 6, seed=1),
    "binary": lambda: make_binary(500, seed=2),
    "wide": lambda: make_data(150, 40, seed=3),
}
WEIGHTS = ["none", "mask", "int", "float"]
TOL = dict(atol=2e-6, rtol=1e-5)


def _setup(data, weighting):
    p, y = DATASETS[data]()
    w = make_weights(len(y), seed=len(y), kind=weighting)
    c, a = ref_top_label(p, y)
    return p, y, w, c, a, as_weights(w, len(y))


@pytest.mark.parametrize("weighting", WEIGHTS)
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_over_and_under_confidence_match_reference(data, weighting):
    p, y, w, c, a, wf = _setup(data, weighting)
    for m in (1, 7, 15):
        oe = cm.overconfidence_error(p, y, num_bins=m, **kw(w))
        ue = cm.underconfidence_error(p, y, num_bins=m, **kw(w))
        ref_oe, ref_ue = ref_oe_ue(c, a, wf, m)
        np.testing.assert_allclose(oe, ref_oe, **TOL)
        np.testing.assert_allclose(ue, ref_ue, **TOL)
        np.testing.assert_allclose(oe + ue, cm.ece(p, y, num_bins=m, **kw(w)), atol=1e-6)


@pytest.mark.parametrize("weighting", WEIGHTS)
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_ks_error_matches_reference(data, weighting):
    p, y, w, c, a, wf = _setup(data, weighting)
    np.testing.assert_allclose(cm.ks_error(p, y, **kw(w)), ref_ks(c, a, wf), **TOL)


@pytest.mark.parametrize("weighting", ["none", "mask", "int"])
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_ece_sweep_matches_reference(data, weighting):
    p, y, w, c, a, wf = _setup(data, weighting)
    for power in (1, 2):
        value = cm.ece_sweep(p, y, p=power, **kw(w))
        np.testing.assert_allclose(value, ref_sweep(c, a, wf, power)[0], **TOL)


def test_ece_sweep_real_weights_equal_the_integer_path_and_bin_count_is_the_papers():
    from calib_jax.metrics import _inputs, _wider

    p, y = make_binary(500, seed=2)
    w = make_weights(500, seed=500, kind="int")
    c, a = ref_top_label(p, y)
    as_float = cm.ece_sweep(p, y, weights=jnp.asarray(w, jnp.float32))
    np.testing.assert_allclose(as_float, cm.ece_sweep(p, y, weights=jnp.asarray(w)), atol=1e-6)
    conf, correct, wj = _inputs.top_label(jnp.asarray(p), jnp.asarray(y), None, jnp.asarray(w))
    _, bins = _wider.ece_sweep_from_sorted(_wider.sort_by_confidence(conf, correct, wj), 1.0, False)
    assert int(bins) == ref_sweep(c, a, w)[1] > 2


def test_ece_sweep_monotone_data_uses_n_bins_and_exact_ratio_comparison():
    from calib_jax.metrics import _wider

    # Sorted correctness already non-decreasing: every b keeps monotone accuracies, so b* = N.
    p = np.linspace(0.55, 0.95, 40).astype(np.float32)
    y = (np.arange(40) >= 25).astype(np.int32)
    np.testing.assert_allclose(
        cm.ece_sweep(p, y), ref_sweep(p.astype(float), y * 1.0, np.ones(40))[0]
    )
    # Ratios that float32 division rounds to the same value but differ exactly.
    a1, n1 = jnp.float32(16777213), jnp.float32(16777215)
    a2, n2 = jnp.float32(16777212), jnp.float32(16777214)
    assert np.float32(a1 / n1) == np.float32(a2 / n2)  # float32 division cannot tell them apart
    assert 16777213 * 16777214 > 16777212 * 16777215  # a1/n1 > a2/n2 exactly
    assert not bool(_wider._ratio_le(a1, n1, a2, n2))
    assert bool(_wider._ratio_le(a2, n2, a1, n1))


@pytest.mark.parametrize("weighting", ["none", "mask", "int"])
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_selective_metrics_match_reference(data, weighting):
    p, y, w, c, a, wf = _setup(data, weighting)
    ref_a, ref_g = ref_aurc_augrc(c, a, wf)
    np.testing.assert_allclose(cm.aurc(p, y, **kw(w)), ref_a, **TOL)
    np.testing.assert_allclose(cm.augrc(p, y, **kw(w)), ref_g, **TOL)
    for coverage in (0.1, 0.5, 0.77, 1.0):
        np.testing.assert_allclose(
            cm.selective_risk(p, y, coverage=coverage, **kw(w)),
            ref_risk_at(c, a, wf, coverage),
            **TOL,
        )
    for risk in (0.0, 0.05, 0.2, 0.5, 1.0):
        np.testing.assert_allclose(
            cm.coverage_at_risk(p, y, risk=risk, **kw(w)), ref_coverage_at(c, a, wf, risk), **TOL
        )


@pytest.mark.parametrize("data", sorted(DATASETS))
def test_selective_metrics_with_real_weights(data):
    p, y, w, c, a, wf = _setup(data, "float")
    ref_a, ref_g = ref_aurc_real_weights(c, a, wf)
    np.testing.assert_allclose(cm.aurc(p, y, weights=w), ref_a, **TOL)
    np.testing.assert_allclose(cm.augrc(p, y, weights=w), ref_g, **TOL)
    # Integer-valued float weights take the real-weight path and equal replicated samples.
    wi = make_weights(len(y), seed=7, kind="int")
    for fn in (cm.aurc, cm.augrc):
        np.testing.assert_allclose(
            fn(p, y, weights=wi.astype(np.float32)), fn(p, y, weights=wi), **TOL
        )


def test_harmonic_difference_matches_digamma():
    from calib_jax.metrics._selective import _harmonic_diff

    rng = np.random.default_rng(0)
    t0 = np.concatenate([[0, 0, 1, 15, 16, 1e3, 1e6], rng.random(50) * 100])
    d = np.concatenate([[1, 0.25, 3, 1, 1, 2, 1], rng.random(50) * 10])
    got = _harmonic_diff(jnp.float32(t0), jnp.float32(t0 + d))
    t0, t1 = np.float32(t0).astype(float), np.float32(t0 + d).astype(float)
    np.testing.assert_allclose(got, digamma(t1 + 1) - digamma(t0 + 1), rtol=2e-6)


@pytest.mark.parametrize("weighting", WEIGHTS)
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_brier_decomposition_matches_reference(data, weighting):
    p, y, w, _, _, wf = _setup(data, weighting)
    out = cm.brier_decomposition(p, y, **kw(w))
    np.testing.assert_allclose(out, ref_brier_decomposition(p, y, wf), **TOL)
    if np.ndim(p) == 2:
        logits = np.log(p)
        out = cm.brier_decomposition(logits, y, from_logits=True, **kw(w))
        np.testing.assert_allclose(out, ref_brier_decomposition(p, y, wf), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("score", ["brier", "log"])
@pytest.mark.parametrize("weighting", WEIGHTS)
@pytest.mark.parametrize("data", sorted(DATASETS))
def test_score_decomposition_matches_reference(data, weighting, score):
    p, y, w, c, a, wf = _setup(data, weighting)
    out = cm.score_decomposition(p, y, score=score, **kw(w))
    np.testing.assert_allclose(out, ref_corp(c, a, wf, score), atol=1e-5, rtol=1e-5)


def test_from_logits_equals_probabilities_for_every_top_label_function():
    p, y = make_data(400, 5, seed=11)
    z = jnp.log(jnp.asarray(p))
    for fn in (
        cm.overconfidence_error,
        cm.underconfidence_error,
        cm.ks_error,
        cm.ece_sweep,
        cm.aurc,
        cm.augrc,
        functools.partial(cm.selective_risk, coverage=0.6),
        functools.partial(cm.coverage_at_risk, risk=0.1),
        cm.score_decomposition,
    ):
        # Confidences from logits differ from the given probabilities by float rounding only,
        # which can move a sample across a tie or bin edge: compare to a tolerance.
        np.testing.assert_allclose(
            np.asarray(fn(z, y, from_logits=True)), np.asarray(fn(p, y)), atol=5e-3
        )


# ------------------------------------------------------------------------------------------------
# Peers.


def _torch_uncertainty_risk_coverage():
    """torch-uncertainty's ``metrics/classification/risk_coverage.py``, loaded on its own: the
    package's ``__init__`` imports torchvision, whose only wheels here need another torch. The
    module itself needs torch, torchmetrics and matplotlib only."""
    import importlib.metadata
    import importlib.util

    pytest.importorskip("torch")
    try:
        dist = importlib.metadata.distribution("torch-uncertainty")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("torch-uncertainty is not installed")
    path = next(f for f in dist.files if str(f).endswith("classification/risk_coverage.py"))
    spec = importlib.util.spec_from_file_location("tu_risk_coverage", dist.locate_file(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _no_ties(n, k, seed):
    p, y = make_data(n, k, seed)
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * 2).astype(np.float32)
    p = np.array(jax.nn.softmax(jnp.asarray(z)))
    c = p.max(1)
    assert len(np.unique(c)) == n
    return p, y


@pytest.mark.parametrize("n", [2, 7, 500])
def test_aurc_augrc_torch_uncertainty_trapezoid_relation(n):
    # torch-uncertainty 0.13 metrics/classification/risk_coverage.py: AURC.compute (line 118-124)
    # integrates the risks r_k = err(k)/k over coverages k/N with a trapezoid and divides by
    # 1 - 1/N; AUGRC.compute (253-258) does the same with g_k = r_k k/N.
    torch = pytest.importorskip("torch")
    tu = _torch_uncertainty_risk_coverage()
    p, y = _no_ties(max(n, 2), 4, seed=n)
    e = ref_error_curve(*ref_top_label(p, y), np.ones(n))
    r = e[1:] / np.arange(1, n + 1)
    g = e[1:] / n
    for fn, ours, ends in ((tu.AURC, cm.aurc, (r[0], r[-1])), (tu.AUGRC, cm.augrc, (g[0], g[-1]))):
        metric = fn()
        metric.update(torch.tensor(p, dtype=torch.float64), torch.tensor(y, dtype=torch.long))
        theirs = float(metric.compute())
        expected = (1 - 1 / n) * theirs + (ends[0] + ends[1]) / (2 * n)
        np.testing.assert_allclose(ours(p, y), expected, rtol=1e-5, atol=1e-7)
        # The two conventions differ for small N (not a rounding difference).
        if n <= 7 and e[-1] > 0:
            assert abs(float(ours(p, y)) - theirs) > 1e-3


def test_risk_and_coverage_torch_uncertainty_relations():
    # RiskAtxCov.compute takes error_rates[ceil(N κ) - 1]; CovAtxRisk.compute returns the
    # largest k/N with err(k)/k <= ρ (NaN if none) (risk_coverage.py lines 389-408, 499-505).
    torch = pytest.importorskip("torch")
    tu = _torch_uncertainty_risk_coverage()
    n = 400
    p, y = _no_ties(n, 5, seed=5)
    tp, ty = torch.tensor(p, dtype=torch.float64), torch.tensor(y, dtype=torch.long)
    for coverage in (0.25, 0.5, 0.8, 1.0):  # κ N an integer: the same selection
        m = tu.RiskAtxCov(cov_threshold=coverage)
        m.update(tp, ty)
        np.testing.assert_allclose(
            cm.selective_risk(p, y, coverage=coverage), float(m.compute()), rtol=1e-6
        )
    for risk in (0.013, 0.05, 0.11, 0.3):
        m = tu.CovAtxRisk(risk_threshold=risk)
        m.update(tp, ty)
        ours = float(cm.coverage_at_risk(p, y, risk=risk))
        np.testing.assert_allclose(np.floor(ours * n + 1e-4) / n, float(m.compute()), rtol=1e-6)


def test_brier_decomposition_tensorflow_probability_relation():
    # tfp 0.25 python/stats/calibration.py lines 128-134: the resolution subtracts
    # expand_dims(pbar, -1), i.e. p̄ indexed by the predicted class j; uncertainty and
    # reliability follow the formula.
    tfp = pytest.importorskip("tensorflow_probability.substrates.numpy")
    for data in ("multiclass", "wide"):
        p, y = DATASETS[data]()
        logits = np.log(p.astype(np.float64))
        unc, res, rel = (float(x) for x in tfp.stats.brier_decomposition(y, logits))
        ours = cm.brier_decomposition(p, y)
        ones = np.ones(len(y))
        np.testing.assert_allclose(ours.uncertainty, unc, atol=1e-6)
        np.testing.assert_allclose(ours.reliability, rel, atol=2e-6)
        np.testing.assert_allclose(
            res, ref_brier_decomposition(p, y, ones, resolution_by_predicted=True)[1], atol=1e-9
        )
        np.testing.assert_allclose(ours.resolution, ref_brier_decomposition(p, y, ones)[1], **TOL)
        assert abs(float(ours.resolution) - res) > 1e-3  # the documented difference is real


@pytest.mark.parametrize("score", ["brier", "log"])
def test_score_decomposition_model_diagnostics(score):
    md = pytest.importorskip("model_diagnostics.scoring")
    for data, weighting in (("binary", "none"), ("binary", "float"), ("multiclass", "int")):
        p, y, w, c, a, wf = _setup(data, weighting)
        fn = md.SquaredError() if score == "brier" else md.LogLoss()
        keep = wf > 0  # model-diagnostics' isotonic fit rejects zero weights
        df = md.decompose(y_obs=a[keep], y_pred=c[keep], weights=wf[keep], scoring_function=fn)
        theirs = [
            df[col][0] for col in ("score", "miscalibration", "discrimination", "uncertainty")
        ]
        ours = cm.score_decomposition(p, y, score=score, **kw(w))
        np.testing.assert_allclose(ours, theirs, atol=1e-5, rtol=1e-5)


def test_ks_error_mapie_relation():
    # MAPIE 1.6 metrics/calibration.py kolmogorov_smirnov_statistic: max |cumulative
    # differences| (scores jittered by 1e-8, so ties are broken at random) divided by
    # length_scale = sqrt(Σ s(1 - s))/N. Without ties: ks_error = statistic · length_scale.
    mc = pytest.importorskip("mapie.metrics.calibration")
    rng = np.random.default_rng(3)
    s = rng.random(800).astype(np.float32)
    assert len(np.unique(s)) == len(s)  # MAPIE's 1e-8 jitter cannot reorder distinct float32
    yb = (rng.random(800) < s**1.3).astype(np.int32)
    stat = mc.kolmogorov_smirnov_statistic(yb, s.astype(np.float64))
    np.testing.assert_allclose(cm.ks_error(s, yb), stat * mc.length_scale(s), rtol=1e-5)
    # Top-label: MAPIE on (correctness, confidence).
    p, y = _no_ties(800, 5, seed=9)
    c, a = ref_top_label(p, y)
    stat = mc.kolmogorov_smirnov_statistic(a, c)
    np.testing.assert_allclose(cm.ks_error(p, y), stat * mc.length_scale(c), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Invariants (hypothesis).

probs_strategy = st.integers(0, 2**31 - 1)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(seed=probs_strategy, m=st.integers(1, 30), binary=st.booleans())
def test_property_oe_plus_ue_is_ece(seed, m, binary):
    p, y = make_binary(97, seed) if binary else make_data(97, 4, seed)
    w = make_weights(97, seed, "float")
    for extra in ({}, {"weights": w}):
        oe = cm.overconfidence_error(p, y, num_bins=m, **extra)
        ue = cm.underconfidence_error(p, y, num_bins=m, **extra)
        assert oe >= 0 and ue >= 0
        np.testing.assert_allclose(oe + ue, cm.ece(p, y, num_bins=m, **extra), atol=1e-6)


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    seed=probs_strategy, binary=st.booleans(), score=st.sampled_from(["brier", "log"])
)
def test_property_corp_identity(seed, binary, score):
    p, y = make_binary(97, seed) if binary else make_data(97, 4, seed)
    if binary and score == "log":
        p = np.clip(p, 0.01, 0.99)  # a confidence of 0 or 1 on a wrong label is an infinite score
    d = cm.score_decomposition(p, y, score=score, weights=make_weights(97, seed, "int"))
    np.testing.assert_allclose(
        d.score, d.miscalibration - d.discrimination + d.uncertainty, atol=1e-6, rtol=1e-6
    )
    assert d.miscalibration >= -1e-6 and d.discrimination >= -1e-6


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    levels=st.lists(st.integers(0, 16), min_size=1, max_size=6, unique=True),
    reps=st.lists(st.integers(1, 3), min_size=6, max_size=6),
    seed=probs_strategy,
)
def test_property_ks_error_is_zero_for_calibrated_step_data(levels, reps, seed):
    # Each confidence j/16 is held by 16·r samples, exactly j·r of them correct (positive).
    p = np.concatenate([np.full(16 * r, j / 16) for j, r in zip(levels, reps, strict=False)])
    y = np.concatenate(
        [np.r_[np.ones(j * r), np.zeros((16 - j) * r)] for j, r in zip(levels, reps, strict=False)]
    )
    # Padded to one shape (masked garbage rows) so that every example reuses one compilation.
    size = 16 * 3 * 6
    n = len(p)
    perm = np.random.default_rng(seed).permutation(size)
    p = np.r_[p, np.full(size - n, 0.3)][perm].astype(np.float32)
    y = np.r_[y, np.ones(size - n)][perm].astype(np.int32)
    keep = jnp.asarray(perm < n)
    assert float(cm.ks_error(p, y, where=keep)) <= 1e-7
    assert float(cm.ks_error(p, 1 - y, where=keep)) > 0 or np.all(p[perm < n] == 0.5)
    # Top-label form: [1 - p, p] rows, label 1 correct, where p > 1/2 (p is the confidence).
    upper = keep & jnp.asarray(p > 0.5)
    two = np.stack([1 - p, p], 1)
    if bool(upper.any()):
        assert float(cm.ks_error(two, y, where=upper)) <= 1e-7


# ------------------------------------------------------------------------------------------------
# jit, vmap and where for every function; integer weights equal replicated samples.

FUNCTIONS = {
    "overconfidence_error": cm.overconfidence_error,
    "underconfidence_error": cm.underconfidence_error,
    "ks_error": cm.ks_error,
    "ece_sweep": cm.ece_sweep,
    "ece_sweep_p2": functools.partial(cm.ece_sweep, p=2),
    "aurc": cm.aurc,
    "augrc": cm.augrc,
    "selective_risk": functools.partial(cm.selective_risk, coverage=0.7),
    "coverage_at_risk": functools.partial(cm.coverage_at_risk, risk=0.2),
    "brier_decomposition": lambda p, y, **k: jnp.stack(cm.brier_decomposition(p, y, **k)),
    "score_decomposition": lambda p, y, **k: jnp.stack(cm.score_decomposition(p, y, **k)),
    "score_decomposition_log": lambda p, y, **k: jnp.stack(
        cm.score_decomposition(p, y, score="log", **k)
    ),
}


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_jit_vmap_where(name):
    fn = FUNCTIONS[name]
    p, y = make_data(300, 5, seed=5)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    eager = fn(pj, yj)
    assert eager.dtype == jnp.float32
    np.testing.assert_allclose(jax.jit(fn)(pj, yj), eager, atol=1e-6)
    batch = jnp.stack([pj, jnp.roll(pj, 1, axis=1), jnp.flip(pj, axis=1)])
    out = jax.vmap(fn, in_axes=(0, None))(batch, yj)
    for i in range(3):
        np.testing.assert_allclose(out[i], fn(batch[i], yj), atol=1e-6)
    mask = np.arange(300) % 3 != 0
    garbage = pj.at[~mask].set(jnp.nan)
    np.testing.assert_allclose(
        jax.jit(lambda p, y, w: fn(p, y, where=w))(garbage, yj, jnp.asarray(mask)),
        fn(pj[mask], yj[mask]),
        atol=1e-6,
    )
    w = make_weights(300, seed=1, kind="int")
    np.testing.assert_allclose(
        jax.jit(lambda p, y, w: fn(p, y, weights=w))(pj, yj, jnp.asarray(w)),
        fn(jnp.repeat(pj, w, axis=0), jnp.repeat(yj, w)),
        atol=2e-6,
        rtol=1e-5,
    )
    # Bootstrap replicates by vmap over resampling weights.
    reps = cm.bootstrap(fn, pj, yj, key=jax.random.key(0), num_resamples=4)
    assert reps.shape[0] == 4 and np.all(np.isfinite(reps))


def test_selective_levels_can_be_traced_and_vmapped():
    p, y = make_data(200, 4, seed=3)
    coverages = jnp.array([0.2, 0.5, 1.0])
    out = jax.vmap(lambda k: cm.selective_risk(p, y, coverage=k))(coverages)
    for i, k in enumerate([0.2, 0.5, 1.0]):
        np.testing.assert_allclose(out[i], cm.selective_risk(p, y, coverage=k), atol=1e-7)
    risks = jnp.array([0.05, 0.3])
    out = jax.jit(jax.vmap(lambda r: cm.coverage_at_risk(p, y, risk=r)))(risks)
    np.testing.assert_allclose(out[1], cm.coverage_at_risk(p, y, risk=0.3), atol=1e-7)
    # Outside the range: an error on concrete values, NaN when traced.
    with pytest.raises(ValueError, match="coverage"):
        cm.selective_risk(p, y, coverage=0.0)
    with pytest.raises(ValueError, match="risk"):
        cm.coverage_at_risk(p, y, risk=1.5)
    assert np.isnan(jax.jit(lambda k: cm.selective_risk(p, y, coverage=k))(1.5))


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error eagerly, a checkify check under jit, NaN otherwise.

SCALAR = [f for n, f in sorted(FUNCTIONS.items())]


@pytest.mark.parametrize("name", sorted(FUNCTIONS))
def test_bad_input(name):
    fn = FUNCTIONS[name]
    p = jnp.float32([[0.7, 0.3], [0.4, 0.6], [0.2, 0.8]])
    y = jnp.array([0, 1, 1])
    with pytest.raises(ValueError, match="labels must lie"):
        fn(p, jnp.array([0, 2, 1]))
    with pytest.raises(ValueError, match="probabilities"):
        fn(p.at[0, 0].set(jnp.nan), y)
    with pytest.raises(ValueError, match="probabilities"):
        fn(p.at[0, 0].set(0.9), y)
    with pytest.raises(ValueError, match="shape"):
        fn(p, y[:2])
    with pytest.raises(TypeError, match="integer"):
        fn(p, jnp.float32([0, 1, 1]))
    with pytest.raises(ValueError, match="masked out"):
        fn(p, y, where=jnp.zeros(3, bool))
    jf = jax.jit(fn)
    assert np.all(np.isfinite(jf(p, y)))
    assert np.all(np.isnan(jf(p, jnp.array([0, 5, 1]))))
    assert np.all(np.isnan(jf(p.at[1, 1].set(0.9), y)))
    assert np.all(np.isnan(jf(p.at[1].set(jnp.nan), y)))
    assert np.all(np.isnan(jf(p[:, 1].at[0].set(1.5), y)))  # binary outside [0, 1]
    with pytest.raises(Exception, match="labels must lie"):
        cj.validation.checked(jf)(p, jnp.array([0, 5, 1]))
    # A masked invalid row is exempt.
    keep = jnp.array([True, False, True])
    np.testing.assert_allclose(
        jf(p.at[1].set(jnp.nan), y, where=keep), fn(p[keep], y[keep]), atol=1e-6
    )


def test_static_arguments_are_checked():
    p, y = make_data(50, 3, seed=0)
    with pytest.raises(ValueError, match="num_bins"):
        cm.overconfidence_error(p, y, num_bins=0)
    with pytest.raises(ValueError, match="p must"):
        cm.ece_sweep(p, y, p=0.5)
    with pytest.raises(ValueError, match="score"):
        cm.score_decomposition(p, y, score="spherical")
