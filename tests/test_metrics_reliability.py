"""Metrics never return a plausible wrong number: large-N precision, invalid and zero weights,
integer weights near 2^31, unsigned labels, the exact ``1 - p`` of binary classwise ECE and the
eager checks of ``bootstrap``. Each test here failed on the code before these rules were fixed;
the references are float64 NumPy written in this file."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib_jax import _binning
from calib_jax import metrics as cm
from calib_jax.validation import checked

M = 15


def _probs(n=6, k=3, seed=0):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 2
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    return jnp.asarray(p, jnp.float32), jnp.asarray(rng.integers(0, k, n), jnp.int32)


def _diagram(p, y, **kw):
    d = cm.reliability_diagram(p, y, num_bins=M, **kw)
    return d.accuracy, d.confidence


# Every metric that takes `weights=`, on [N, K] probabilities.
WEIGHTED = {
    "ece": cm.ece,
    "mce": cm.mce,
    "lp_ece": functools.partial(cm.lp_ece, p=2),
    "debiased_l2_ece": cm.debiased_l2_ece,
    "ada_ece": cm.ada_ece,
    "classwise_ece": cm.classwise_ece,
    "brier": cm.brier,
    "accuracy": cm.accuracy,
    "nll": lambda p, y, **kw: cm.nll(jnp.log(p), y, from_logits=True, **kw),
    "reliability_diagram": _diagram,
}


def _floats(out):
    return [np.asarray(x) for x in jax.tree.leaves(out) if jnp.issubdtype(x.dtype, jnp.floating)]


def _assert_all_nan(out):
    for x in _floats(out):
        assert np.all(np.isnan(x)), out


def _assert_same(a, b, rtol=1e-6):
    for x, y in zip(_floats(a), _floats(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=rtol, atol=1e-7)


def ref_weighted_ece(conf, correct, w, m=M):
    conf, correct, w = (np.asarray(a, np.float64) for a in (conf, correct, w))
    b = np.clip(np.ceil(conf * m).astype(int) - 1, 0, m - 1)
    gap = np.bincount(b, w * (correct - conf), m)
    return np.abs(gap).sum() / w.sum()


# ------------------------------------------------------------------------------------------------
# Precision at large N (one serial float32 scatter over N samples lost 7e-4 of ECE at N = 2^23
# and 0.08 of classwise ECE at N = 2^24).


def test_one_shot_and_streamed_metrics_are_accurate_at_two_to_the_24_samples():
    # Half the samples at confidence 0.7, half at 0.75 (two bins), with exactly 70% and 75%
    # positives: the float64 values below are exact up to the float32 rounding of 0.7.
    n, half = 2**24, 2**23
    conf = np.float32([0.7, 0.75])
    pos = [round(0.7 * half), round(0.75 * half)]
    p = np.repeat(conf, half)
    y = np.zeros(n, np.int32)
    y[:half][: pos[0]] = 1
    y[half:][: pos[1]] = 1
    c64, acc = conf.astype(np.float64), np.array(pos) / half
    exact = np.abs(acc - c64).sum() / 2  # ECE; both classwise columns have the same gaps
    tol = 2e-6
    assert abs(float(jax.jit(cm.ece)(p, y)) - exact) < tol
    assert abs(float(jax.jit(cm.classwise_ece)(p, y)) - exact) < tol

    # From logits: the report in one pass and the state over four batches, against float64.
    z = np.log(c64 / (1 - c64)).astype(np.float32)
    s = 1 / (1 + np.exp(-z.astype(np.float64)))
    # AdaECE (report only; the state's is approximate): equal-mass bins over tied confidences
    # put incorrect samples first.
    a_sorted = np.concatenate([np.sort(y[:half]), np.sort(y[half:])]).astype(np.float64)
    starts = np.cumsum([0] + [len(b) for b in np.array_split(np.arange(n), M)])[:-1]
    bin_a = np.add.reduceat(a_sorted, starts)
    bin_c = np.add.reduceat(np.repeat(s, half), starts)
    ada = np.abs(bin_a - bin_c).sum() / n
    expected = {
        "ece": np.abs(acc - s).sum() / 2,
        "classwise_ece": np.abs(acc - s).sum() / 2,
        "nll": -(acc * np.log(s) + (1 - acc) * np.log1p(-s)).sum() / 2,
        "brier": (acc * (1 - s) ** 2 + (1 - acc) * s**2).sum() / 2,
        "accuracy": acc.sum() / 2,
        "error": 1 - acc.sum() / 2,
    }
    zs = np.repeat(z, half)
    report = jax.jit(functools.partial(cm.calibration_report, from_logits=True))(zs, y)
    state = cm.CalibrationState.empty(2)
    for i in range(0, n, n // 4):
        state = state.update(zs[i : i + n // 4], y[i : i + n // 4], from_logits=True)
    streamed = state.compute()
    for field, value in expected.items():
        assert abs(float(getattr(report, field)) - value) < tol, field
        assert abs(float(getattr(streamed, field)) - value) < tol, field
    assert abs(float(report.ada_ece) - ada) < tol
    for field in ("ece", "mce", "classwise_ece", "l2_ece", "debiased_l2_ece", "nll", "brier"):
        assert abs(float(getattr(report, field)) - float(getattr(streamed, field))) < tol


def test_segment_sum_error_does_not_grow_with_the_number_of_rows():
    n = 2**22
    x = jnp.full((n,), 0.1, jnp.float32)
    exact = n * np.float64(np.float32(0.1))
    out = jax.jit(_binning.segment_sum, static_argnums=2)(x, jnp.zeros((n,), jnp.int32), 1)
    # The documented bound: SUM_CHUNK_ROWS rounding errors of the sum plus 16 per tree level.
    bound = (_binning.SUM_CHUNK_ROWS + 16 * np.log(n) / np.log(16)) * 2.0**-24
    assert abs(float(out[0]) - exact) / exact < bound


# ------------------------------------------------------------------------------------------------
# Invalid weights: NaN under jit, ValueError eagerly, a checkify error under `checked`.

INVALID_WEIGHTS = {
    "negative": np.array([-1.0, 1, 1, 1, 1, 1], np.float32),
    "only_negative": np.array([-1.0, 0, 0, 0, 0, 0], np.float32),
    "nan": np.array([1.0, np.nan, 1, 1, 1, 1], np.float32),
    "inf": np.array([1.0, 1, np.inf, 1, 1, 1], np.float32),
    "negative_int": np.array([1, 1, 1, -2, 1, 1], np.int32),
    "int_total_past_2_to_31": np.array([2**30, 2**30, 1, 0, 0, 0], np.int32),
}


@pytest.mark.parametrize("name", WEIGHTED)
def test_invalid_weights_are_nan_under_jit_and_raise_eagerly_and_when_checked(name):
    fn = WEIGHTED[name]
    p, y = _probs()
    jitted, strict = jax.jit(fn), checked(jax.jit(fn))
    for case, w in INVALID_WEIGHTS.items():
        _assert_all_nan(jitted(p, y, weights=jnp.asarray(w)))
        with pytest.raises(ValueError, match="weights"):
            fn(p, y, weights=w)
        with pytest.raises(Exception, match="weights"):  # checkify's JaxRuntimeError
            strict(p, y, weights=jnp.asarray(w))
        # A masked sample's weight is exempt, like its label.
        keep = ~((w < 0) | ~np.isfinite(w)) if case != "int_total_past_2_to_31" else w < 2**30
        if keep.any() and np.sum(w[keep], dtype=np.float64) > 0:
            out = jitted(p, y, where=jnp.asarray(keep), weights=jnp.asarray(w))
            assert all(np.all(np.isfinite(x)) for x in _floats(out)), (case, out)


def test_integer_weights_up_to_2_to_31_minus_1_are_exact_and_larger_ones_are_refused():
    p, y = _probs()
    c, a = np.asarray(p, np.float64).max(1), np.asarray(p).argmax(1) == np.asarray(y)
    w = np.array([2**30, 2**30 - 1, 0, 0, 0, 0], np.int32)  # total 2^31 - 1: valid
    np.testing.assert_allclose(cm.ece(p, y, weights=w), ref_weighted_ece(c, a, w), rtol=1e-6)
    np.testing.assert_allclose(
        jax.jit(cm.ece)(p, y, weights=w), ref_weighted_ece(c, a, w), rtol=1e-6
    )
    # One int64 (or uint32) weight of 2^31 + 5 is refused as too large, not as negative.
    for big in (np.array([2**31 + 5, 1, 1, 1, 1, 1], np.int64), np.full(6, 2**31, np.uint32)):
        with pytest.raises(ValueError, match=r"below 2\^31"):
            cm.ece(p, y, weights=big)
    with pytest.raises(ValueError, match=r"total less than 2\^31"):
        cm.ece(p, y, weights=np.array([2**30, 2**30, 0, 0, 0, 0], np.int32))
    # Float weights have no such limit.
    wf = np.array([3e9, 2e9, 1, 1, 1, 1], np.float32)
    np.testing.assert_allclose(cm.ece(p, y, weights=wf), ref_weighted_ece(c, a, wf), rtol=1e-5)


# ------------------------------------------------------------------------------------------------
# Zero-weight samples are exempt from the value checks in every mode.


def _bad_rows(p, y):
    return {
        "label": (p, y.at[2].set(7)),
        "negative_label": (p, y.at[2].set(-1)),
        "nan_row": (p.at[2].set(jnp.nan), y),
        "unnormalised_row": (p.at[2].set(0.9), y),
    }


@pytest.mark.parametrize("name", WEIGHTED)
def test_zero_weight_samples_are_exempt_eagerly_under_jit_and_when_checked(name):
    fn = WEIGHTED[name]
    p, y = _probs(n=8)
    for wdtype in (np.float32, np.int32):
        w = np.array([1, 2, 0, 1, 3, 1, 1, 2], wdtype)
        keep = w != 0
        expected = fn(p[keep], y[keep], weights=w[keep])
        jitted, strict = jax.jit(fn), checked(jax.jit(fn))
        for case, (bp, by) in _bad_rows(p, y).items():
            if name in ("accuracy", "nll") and case == "unnormalised_row":
                continue  # accuracy takes any finite scores, nll any finite logits
            for out in (
                fn(bp, by, weights=w),
                jitted(bp, by, weights=w),
                strict(bp, by, weights=w),
            ):
                _assert_same(out, expected)
            # The same row with weight 1 is invalid in every mode.
            w1 = np.where(keep, w, 1).astype(wdtype)
            _assert_all_nan(jitted(bp, by, weights=w1))
            with pytest.raises(ValueError):
                fn(bp, by, weights=w1)


# ------------------------------------------------------------------------------------------------
# Unsigned integer labels are labels.


def _everything(p, y):
    z = jnp.log(p)
    out = {name: fn(p, y) for name, fn in WEIGHTED.items()}
    out["report"] = cm.calibration_report(z, y, from_logits=True, num_bins=M)
    k = 2 if p.ndim == 1 else p.shape[1]
    state = cm.CalibrationState.empty(k, num_bins=M).update(p, y)
    out["state"] = state.compute()
    out["state_logits"] = cm.CalibrationState.empty(k, num_bins=M).update(z, y, from_logits=True)
    out["bootstrap"] = cm.bootstrap(cm.classwise_ece, p, y, key=jax.random.key(0), num_resamples=4)
    return out


@pytest.mark.parametrize("dtype", [np.uint8, np.uint16, np.uint32])
def test_unsigned_labels_give_the_int32_results_everywhere(dtype):
    p, y = _probs(n=30, k=3)
    pb, yb = p[:, 0], (y == 0).astype(jnp.int32)
    for probs, labels in ((p, y), (pb, yb)):
        got = _everything(probs, labels.astype(dtype))
        want = _everything(probs, labels)
        for key in want:
            _assert_same(got[key], want[key], rtol=0)
    # An unsigned label out of range is still invalid.
    bad = y.astype(dtype).at[0].set(200)
    with pytest.raises(ValueError, match="labels"):
        cm.classwise_ece(p, bad)
    _assert_all_nan(jax.jit(cm.classwise_ece)(p, bad))
    _assert_all_nan(jax.jit(cm.brier)(p, bad))


# ------------------------------------------------------------------------------------------------
# Binary classwise ECE decides the bin of 1 - p exactly.


def test_binary_classwise_ece_bins_the_exact_complement():
    p = jnp.array([0.2, 0.15], jnp.float32)
    y = jnp.array([0, 1], jnp.int32)
    # 1 - float32(0.2) = 0.79999999701... lies in bin (11/15, 12/15]; rounded to float32 it is
    # 0.80000001, one bin higher. Exact: column 0 bins {0.8-, 0.85-} apart, column 1 too.
    exact = 0.525
    np.testing.assert_allclose(cm.classwise_ece(p, y), exact, rtol=1e-6)
    np.testing.assert_allclose(jax.jit(cm.classwise_ece)(p, y), exact, rtol=1e-6)
    state = cm.CalibrationState.from_batch(p, y)
    np.testing.assert_allclose(state.compute().classwise_ece, exact, rtol=1e-6)


@pytest.mark.parametrize("num_bins", [4, 10, 15, 7, 5000])
def test_complement_bin_index_matches_the_float64_rule(num_bins):
    edges = np.arange(1, num_bins) / num_bins
    near = np.concatenate([edges, 1 - edges, [0.0, 1.0, 2.0**-30, 1 - 2.0**-24]])
    v = near.astype(np.float32)
    v = np.unique(np.concatenate([v, np.nextafter(v, 0), np.nextafter(v, 1)]))
    v = v[(v >= 0) & (v <= 1)]
    q = 1 - v.astype(np.float64)  # exact for these float32 values
    expected = np.clip(np.ceil(q * num_bins).astype(int) - 1, 0, num_bins - 1)
    got = _binning.complement_bin_index(jnp.asarray(v), num_bins)
    np.testing.assert_array_equal(got, expected)


# ------------------------------------------------------------------------------------------------
# bootstrap checks its data eagerly, like every metric.


def test_bootstrap_raises_eagerly_on_bad_labels_and_is_nan_under_jit():
    p, y = _probs(n=20)
    bad = y.at[3].set(5)
    with pytest.raises(ValueError, match="labels"):
        cm.bootstrap(cm.ece, p, bad, key=jax.random.key(0), num_resamples=8)
    boot = jax.jit(cm.bootstrap, static_argnums=0, static_argnames="num_resamples")
    assert np.all(np.isnan(boot(cm.ece, p, bad, key=jax.random.key(0), num_resamples=8)))
    assert np.all(np.isfinite(cm.bootstrap(cm.ece, p, y, key=jax.random.key(0), num_resamples=8)))
