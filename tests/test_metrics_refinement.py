"""calibration_refinement vs a float64 scipy reference and probmetrics' temperature scaling."""

import functools
import importlib
import sys
import types
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.optimize import minimize_scalar
from scipy.special import log_softmax

import calib_jax as cj
from calib_jax import metrics as cm


def make_logits(n, k, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * scale).astype(np.float32)
    # Over-confident: the label is the argmax less often than softmax(z) claims.
    y = np.where(rng.random(n) < 0.6, z.argmax(1), rng.integers(0, k, n)).astype(np.int32)
    return z, y


def ref_score(z, y, score, w):
    lp = log_softmax(np.asarray(z, np.float64), axis=1)
    picked = lp[np.arange(len(y)), y]
    if score == "log":
        per = -picked
    else:
        p = np.exp(lp)
        per = np.sum(p * p, 1) - 2 * np.exp(picked) + 1
    return np.sum(w * per) / np.sum(w)


def ref_split(z, y, score, w=None, folds=None):
    z = np.asarray(z, np.float64)
    w = np.ones(len(y)) if w is None else np.asarray(w, np.float64)
    bound = np.log(1e3)

    def fit(wt):
        res = minimize_scalar(
            lambda t: ref_score(z * np.exp(-t), y, score, wt),
            bounds=(-bound, bound),
            method="bounded",
            options={"xatol": 1e-9},
        )
        return res.x

    total = ref_score(z, y, score, w)
    if folds is None:
        t = fit(w)
        return total, ref_score(z * np.exp(-t), y, score, w), np.exp(t)
    rank = np.cumsum(w > 0) - 1
    fold = np.where(w > 0, rank % folds, -1)
    held, temps = 0.0, []
    for f in range(folds):
        t = fit(np.where(fold == f, 0, w))
        test = np.where(fold == f, w, 0)
        held += ref_score(z * np.exp(-t), y, score, test) * test.sum()
        temps.append(np.exp(t))
    return total, held / w.sum(), np.array(temps)


@pytest.mark.parametrize("score", ["log", "brier"])
def test_matches_float64_reference_in_sample_and_cross_fitted(score):
    z, y = make_logits(400, 5, seed=1)
    out = cm.calibration_refinement(z, y, score=score)
    total, refined, t = ref_split(z, y, score)
    np.testing.assert_allclose(float(out.score), total, rtol=1e-5)
    np.testing.assert_allclose(float(out.refinement), refined, rtol=1e-5)
    np.testing.assert_allclose(float(out.calibration), total - refined, atol=2e-6)
    # The Brier score is flat near its minimum: its T is determined less precisely.
    np.testing.assert_allclose(float(out.temperature), t, rtol=1e-3 if score == "log" else 1e-2)
    assert float(out.calibration) > 0 and float(out.temperature) > 1  # over-confident
    cv = cm.calibration_refinement(z, y, score=score, folds=3)
    total, refined, temps = ref_split(z, y, score, folds=3)
    np.testing.assert_allclose(float(cv.refinement), refined, rtol=3e-5)
    np.testing.assert_allclose(
        np.asarray(cv.temperature), temps, rtol=1e-3 if score == "log" else 1e-2
    )
    # Held-out scores cannot beat the in-sample optimum on average here.
    assert float(cv.refinement) >= float(out.refinement) - 1e-6


def test_binary_logits_are_the_two_class_logits_and_weights_replicate():
    rng = np.random.default_rng(2)
    z = (rng.normal(size=300) * 4).astype(np.float32)
    y = (rng.random(300) < 1 / (1 + np.exp(-z / 3))).astype(np.int32)  # T = 3 is right
    out = cm.calibration_refinement(z, y)
    two = cm.calibration_refinement(np.stack([np.zeros_like(z), z], 1), y)
    for a, b in zip(out, two, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6)
    assert 2 < float(out.temperature) < 4.5
    w = rng.poisson(1.0, 300).astype(np.int32)
    rep = cm.calibration_refinement(np.repeat(z, w), np.repeat(y, w))
    for a, b in zip(cm.calibration_refinement(z, y, weights=w), rep, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)


def _probmetrics_temperature_scaling(monkeypatch):
    """probmetrics' temperature-scaling module without its ``calibrators`` package
    ``__init__``, which imports numba (for other calibrators) and is not needed here."""
    probmetrics = pytest.importorskip("probmetrics")
    stub = types.ModuleType("probmetrics.calibrators")
    stub.__path__ = [str(Path(probmetrics.__file__).parent / "calibrators")]
    monkeypatch.setitem(sys.modules, "probmetrics.calibrators", stub)
    for name in ("base", "temperature_scaling"):
        monkeypatch.delitem(sys.modules, f"probmetrics.calibrators.{name}", raising=False)
    ts = importlib.import_module("probmetrics.calibrators.temperature_scaling")
    monkeypatch.delitem(sys.modules, "probmetrics.calibrators.temperature_scaling")
    monkeypatch.delitem(sys.modules, "probmetrics.calibrators.base")
    return ts, importlib.import_module("probmetrics.distributions")


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_probmetrics_temperature_scaling_relation(monkeypatch):
    # probmetrics 1.3 MetricsWithCalibration (metrics.py) scores held-out data after its
    # TemperatureScalingCalibrator (calibrators/temperature_scaling.py: 30 bisection steps on
    # the NLL gradient in log inverse temperature). With its AllSplitter (fit and score on all
    # data) and no mixture, the log-loss refinement is ours for score="log"; its Brier
    # refinement uses the same NLL temperature, so ours (the Brier-optimal one) is not larger.
    torch = pytest.importorskip("torch")
    ts, dist = _probmetrics_temperature_scaling(monkeypatch)
    z, y = make_logits(500, 4, seed=3)
    cal = ts.TemperatureScalingCalibrator(opt="bisection", max_bisection_steps=30)
    logits = dist.CategoricalLogits(torch.tensor(z, dtype=torch.float64))
    cal.fit_torch(logits, torch.tensor(y, dtype=torch.int64))
    p = cal.predict_proba_torch(logits).get_probs().numpy()
    theirs_log = -np.mean(np.log(p[np.arange(500), y]))
    theirs_brier = np.mean(np.sum((p - np.eye(4)[y]) ** 2, 1))
    ours = cm.calibration_refinement(z, y)
    np.testing.assert_allclose(float(ours.refinement), theirs_log, rtol=1e-5)
    brier = cm.calibration_refinement(z, y, score="brier")
    assert float(brier.refinement) <= theirs_brier + 1e-6


def test_jit_vmap_where_and_bad_input():
    z, y = make_logits(300, 4, seed=4)
    zj, yj = jnp.asarray(z), jnp.asarray(y)
    fn = functools.partial(cm.calibration_refinement, folds=2)
    eager = fn(zj, yj)
    for a, b in zip(jax.jit(fn)(zj, yj), eager, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    # vmap: the folds above run as one vmap of the fit; here over two logit sets.
    out = jax.vmap(fn, in_axes=(0, None))(jnp.stack([zj, 2 * zj]), yj)
    np.testing.assert_allclose(out.refinement[1], fn(2 * zj, yj).refinement, rtol=1e-5)
    mask = np.arange(300) % 3 != 0
    garbage = zj.at[~mask].set(jnp.nan)
    for a, b in zip(
        cm.calibration_refinement(garbage, yj, where=jnp.asarray(mask)),
        cm.calibration_refinement(zj[mask], yj[mask]),
        strict=True,
    ):
        np.testing.assert_allclose(a, b, rtol=1e-5)
    with pytest.raises(ValueError, match="labels must lie"):
        cm.calibration_refinement(zj, yj.at[0].set(9))
    with pytest.raises(ValueError, match="score"):
        cm.calibration_refinement(zj, yj, score="spherical")
    with pytest.raises(ValueError, match="folds"):
        cm.calibration_refinement(zj, yj, folds=1)
    jf = jax.jit(lambda z, y, w: fn(z, y, weights=w))
    one = jnp.ones(300)
    leaves = lambda x: np.concatenate([np.ravel(a) for a in x])
    assert np.all(np.isfinite(leaves(jf(zj, yj, one))))
    assert np.all(np.isnan(leaves(jf(zj, yj.at[0].set(9), one))))
    assert np.all(np.isnan(leaves(jf(zj.at[0, 0].set(jnp.nan), yj, one))))
    assert np.all(np.isnan(leaves(jf(zj, yj, one.at[0].set(-1)))))
    with pytest.raises(Exception, match="labels must lie"):
        cj.validation.checked(jf)(zj, yj.at[0].set(9), one)
