"""Binned metrics vs independent float64 NumPy references, published values and peers."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import _binning, _first_max
from calib_jax import metrics as cm
from calib_jax.metrics import _binned

# ------------------------------------------------------------------------------------------------
# Independent float64 references (loops over bins; NumPy argmax ties; exact bin rule).


def ref_bin(c, m):
    # float32 values are never within float64 rounding of a non-representable m/M, so the
    # float64 product decides the real-number rule exactly.
    c = np.asarray(c, np.float64)
    return np.clip(np.ceil(c * m).astype(int) - 1, 0, m - 1)


def ref_top_label(p, y):
    p = np.asarray(p, np.float64)
    if p.ndim == 1:
        return p, (np.asarray(y) == 1).astype(np.float64)
    return p.max(1), (p.argmax(1) == np.asarray(y)).astype(np.float64)


def ref_bins_stats(c, a, m):
    b = ref_bin(c, m)
    out = []
    for i in range(m):
        sel = b == i
        n = sel.sum()
        out.append((n, a[sel].mean() if n else 0.0, c[sel].mean() if n else 0.0))
    return out


def ref_ece(p, y, m, power=1):
    c, a = ref_top_label(p, y)
    s = sum(n / len(c) * abs(acc - conf) ** power for n, acc, conf in ref_bins_stats(c, a, m))
    return s ** (1 / power)


def ref_mce(p, y, m):
    c, a = ref_top_label(p, y)
    return max(abs(acc - conf) for n, acc, conf in ref_bins_stats(c, a, m) if n)


def ref_debiased(p, y, m):
    c, a = ref_top_label(p, y)
    total = 0.0
    for n, acc, conf in ref_bins_stats(c, a, m):
        if n >= 2:
            total += n / len(c) * ((conf - acc) ** 2 - acc * (1 - acc) / (n - 1))
    return total


def ref_classwise(p, y, m):
    p = np.asarray(p, np.float64)
    if p.ndim == 1:
        p = np.stack([1 - p, p], 1)
    n, k = p.shape
    total = 0.0
    for j in range(k):
        b = ref_bin(p[:, j], m)
        for i in range(m):
            sel = b == i
            if sel.any():
                total += sel.sum() / n * abs((y[sel] == j).mean() - p[sel, j].mean())
    return total / k


def ref_ada(p, y, m):
    c, a = ref_top_label(p, y)
    # Equal confidences: incorrect before correct (our documented, order-free tie rule).
    order = np.lexsort((a, np.float32(c)))
    return sum(abs(a[i].sum() - c[i].sum()) for i in np.array_split(order, m)) / len(c)


def ref_ada_mukhoti(p, y, m):
    # Re-derived from the paper's description of its code: interpolated edges, (lo, hi] bins.
    c, a = ref_top_label(p, y)
    c32 = np.asarray(c, np.float32).astype(np.float64)
    edges = np.interp(np.linspace(0, len(c), m + 1), np.arange(len(c)), np.sort(c32))
    total = 0.0
    for lo, hi in itertools.pairwise(edges):
        sel = (c32 > lo) & (c32 <= hi)
        if sel.any():
            total += sel.mean() * abs(a[sel].mean() - c[sel].mean())
    return total


def ref_brier(p, y):
    p = np.asarray(p, np.float64)
    if p.ndim == 1:
        return np.mean((p - y) ** 2)
    onehot = np.eye(p.shape[1])[y]
    return np.mean(np.sum((p - onehot) ** 2, 1))


def ref_nll(z, y):
    z = np.asarray(z, np.float64)
    lse = np.log(np.exp(z - z.max(1, keepdims=True)).sum(1)) + z.max(1)
    return np.mean(lse - z[np.arange(len(y)), y])


def make_data(n, k, seed, scale=3.0, quantize=False):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * scale).astype(np.float32)
    p = np.array(jax.nn.softmax(jnp.asarray(z)))
    y = rng.integers(0, k, n).astype(np.int32)
    # Make half the labels follow the prediction so accuracy is not ~1/K.
    y = np.where(rng.random(n) < 0.5, p.argmax(1), y).astype(np.int32)
    if quantize:
        # Rows with ties and confidences exactly on bin edges (multiples of 0.2, 0.1).
        q = np.round(p[: n // 4] * 5) / 5
        q[:, 0] += 1 - q.sum(1)
        q = np.abs(q)
        q /= q.sum(1, keepdims=True)
        p[: n // 4] = q.astype(np.float32)
    return z, p, y


CASES = [(1000, 10, 15, False), (257, 3, 7, True), (64, 2, 1, True), (300, 100, 20, False)]


@pytest.mark.parametrize(("n", "k", "m", "quantize"), CASES)
def test_metrics_match_float64_reference(n, k, m, quantize):
    z, p, y = make_data(n, k, seed=n + k, quantize=quantize)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    tol = dict(atol=1e-5, rtol=0)
    np.testing.assert_allclose(cm.ece(pj, yj, num_bins=m), ref_ece(p, y, m), **tol)
    np.testing.assert_allclose(cm.mce(pj, yj, num_bins=m), ref_mce(p, y, m), **tol)
    np.testing.assert_allclose(cm.lp_ece(pj, yj, p=2, num_bins=m), ref_ece(p, y, m, 2), **tol)
    np.testing.assert_allclose(cm.lp_ece(pj, yj, p=1, num_bins=m), ref_ece(p, y, m), **tol)
    np.testing.assert_allclose(cm.lp_ece(pj, yj, p=np.inf, num_bins=m), ref_mce(p, y, m), **tol)
    np.testing.assert_allclose(cm.debiased_l2_ece(pj, yj, num_bins=m), ref_debiased(p, y, m), **tol)
    np.testing.assert_allclose(cm.classwise_ece(pj, yj, num_bins=m), ref_classwise(p, y, m), **tol)
    np.testing.assert_allclose(cm.ada_ece(pj, yj, num_bins=m), ref_ada(p, y, m), **tol)
    np.testing.assert_allclose(
        cm.ada_ece(pj, yj, num_bins=m, variant="mukhoti2020"), ref_ada_mukhoti(p, y, m), **tol
    )
    np.testing.assert_allclose(cm.brier(pj, yj), ref_brier(p, y), atol=1e-5, rtol=1e-6)
    np.testing.assert_allclose(cm.accuracy(pj, yj), np.mean(p.argmax(1) == y), **tol)
    np.testing.assert_allclose(
        cm.nll(jnp.asarray(z), yj, from_logits=True), ref_nll(z, y), rtol=1e-5
    )
    d = cm.reliability_diagram(pj, yj, num_bins=m)
    c, a = ref_top_label(p, y)
    stats = ref_bins_stats(c, a, m)
    np.testing.assert_array_equal(d.count, [s[0] for s in stats])
    np.testing.assert_allclose(d.accuracy, [s[1] for s in stats], **tol)
    np.testing.assert_allclose(d.confidence, [s[2] for s in stats], **tol)
    np.testing.assert_allclose(d.lower, np.arange(m) / m, atol=1e-7)
    np.testing.assert_allclose(d.upper, np.arange(1, m + 1) / m, atol=1e-7)
    assert np.all(np.isfinite(d.accuracy)) and np.all(np.isfinite(d.confidence))


def test_report_matches_individual_metrics():
    z, p, y = make_data(1000, 10, seed=3)
    zj, yj = jnp.asarray(z), jnp.asarray(y)
    r = cm.calibration_report(zj, yj, from_logits=True, num_bins=15)
    pj = jax.nn.softmax(zj)
    tol = dict(atol=2e-6, rtol=0)
    np.testing.assert_allclose(r.ece, ref_ece(p, y, 15), **tol)
    np.testing.assert_allclose(r.mce, ref_mce(p, y, 15), **tol)
    np.testing.assert_allclose(r.ada_ece, ref_ada(p, y, 15), **tol)
    np.testing.assert_allclose(r.classwise_ece, ref_classwise(p, y, 15), **tol)
    np.testing.assert_allclose(r.nll, ref_nll(z, y), rtol=1e-5)
    np.testing.assert_allclose(r.brier, cm.brier(pj, yj), rtol=1e-5)
    np.testing.assert_allclose(r.accuracy, np.mean(z.argmax(1) == y), **tol)
    np.testing.assert_allclose(r.error, 1 - np.mean(z.argmax(1) == y), **tol)
    np.testing.assert_allclose(r.l2_ece, ref_ece(p, y, 15, power=2), **tol)
    np.testing.assert_allclose(r.debiased_l2_ece, ref_debiased(p, y, 15), **tol)


# ------------------------------------------------------------------------------------------------
# Hand-made cases: edges, 0 and 1, empty bins, one sample, K = 2, ties.


def test_edge_values_follow_the_spec_rule():
    # Binary positive-class input puts the confidence exactly where we want it.
    p = jnp.float32([0.0, 0.2, 0.4, 1 / 3, 0.6, 0.8, 1.0, 0.5, 0.2 + 1e-7])
    y = jnp.array([0, 1, 0, 1, 1, 0, 1, 1, 0])
    d = cm.reliability_diagram(p, y, num_bins=15)
    # float32 0.2 = 0.2000000030 lies above 3/15 -> bin 4 (index 3); 1/3 (f32 0.33333334) is
    # above 5/15 -> index 5; 0 -> first bin; 1 -> last; 0.5 = 7.5/15 -> index 7.
    expected = np.zeros(15, int)
    for idx in [0, 3, 6, 5, 9, 12, 14, 7, 3]:
        expected[idx] += 1
    np.testing.assert_array_equal(d.count, expected)
    np.testing.assert_allclose(cm.ece(p, y, num_bins=15), ref_ece(np.asarray(p), y, 15), atol=1e-7)
    # Values exactly on dyadic edges: 0.5 belongs to (0, 0.5] with two bins.
    d2 = cm.reliability_diagram(
        jnp.float32([0.5, 0.25, 0.75, 1.0]), jnp.array([1, 0, 1, 1]), num_bins=2
    )
    np.testing.assert_array_equal(d2.count, [2, 2])


def test_all_but_one_bin_empty_and_single_sample():
    p = jnp.float32([[0.7, 0.3]])
    y = jnp.array([0])
    np.testing.assert_allclose(cm.ece(p, y, num_bins=15), 0.3, atol=1e-7)
    np.testing.assert_allclose(cm.mce(p, y, num_bins=15), 0.3, atol=1e-7)
    np.testing.assert_allclose(cm.ada_ece(p, y, num_bins=15), 0.3, atol=1e-7)
    np.testing.assert_allclose(cm.debiased_l2_ece(p, y, num_bins=15), 0.0, atol=0)
    d = cm.reliability_diagram(p, y, num_bins=15)
    assert int(d.count.sum()) == 1 and np.all(np.isfinite(d.accuracy))
    np.testing.assert_allclose(
        cm.classwise_ece(p, y, num_bins=15), ref_classwise(np.asarray(p), np.asarray(y), 15)
    )


def test_ties_use_first_maximum():
    p = jnp.float32([[0.4, 0.4, 0.2], [0.3, 0.35, 0.35], [0.5, 0.5, 0.0]])
    np.testing.assert_allclose(cm.accuracy(p, jnp.array([0, 1, 0])), 1.0)
    np.testing.assert_allclose(cm.accuracy(p, jnp.array([1, 2, 1])), 0.0)
    r = cm.calibration_report(
        jnp.log(p + 1e-30), jnp.array([0, 1, 0]), from_logits=True, num_bins=5
    )
    np.testing.assert_allclose(r.accuracy, 1.0)


@pytest.mark.parametrize("k", [10, 100])  # the narrow (column loop) and wide (row reduction) paths
def test_first_max_correct_matches_numpy_argmax_with_many_ties(k):
    rng = np.random.default_rng(k)
    n = 300
    z = rng.integers(-2, 2, size=(n, k)).astype(np.float32)  # most rows have tied maxima
    z[:100] *= np.float32(1e-30)  # tiny logits: differences far below float32 resolution of 1
    z[100] = 3e38  # all tied at the largest finite value
    z[101] = -3e38
    z[101, -1] = 3e38  # z_j - z_y overflows to -inf / +inf
    z[102] = 0.0
    y = rng.integers(-1, k + 1, n).astype(np.int32)  # includes out-of-range labels
    y[100:103] = [0, k - 1, 1]
    top, correct, norm = _first_max.first_max_correct(jnp.asarray(z), jnp.asarray(y))
    np.testing.assert_array_equal(correct, z.argmax(1) == y)
    np.testing.assert_array_equal(top, z.max(1))
    z64 = z.astype(np.float64)
    np.testing.assert_allclose(norm, np.exp(z64 - z64.max(1, keepdims=True)).sum(1), rtol=1e-6)


def _tie_heavy(n, k, tied_fraction, seed):
    """Logits whose first rows have integer entries (tied maxima); labels at the first or the
    last maximiser or random (some out of range)."""
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * 4).astype(np.float32)
    tied = int(n * tied_fraction)
    z[:tied] = rng.integers(-2, 2, size=(tied, k))
    first, last = z.argmax(1), k - 1 - z[:, ::-1].argmax(1)
    pick = rng.random(n)
    y = rng.integers(-1, k + 1, n)
    y = np.where(pick < 0.3, first, np.where(pick < 0.6, last, y)).astype(np.int32)
    return z, y


@pytest.mark.parametrize("k", [100, 1000])
def test_correct_given_max_rechecks_flagged_rows_in_chunks_or_in_one_pass(k):
    # Flagged rows whose label attains the maximum are re-read a chunk of rows at a time (sparse)
    # or, past 40% of the rows, in one pass over all rows (dense). Both must equal NumPy's
    # first-maximum rule, across several chunks, with out-of-range labels, under jit and vmap.
    chunk = 2**19 // k
    n = 12 * chunk
    z, y = _tie_heavy(n, k, tied_fraction=0.5, seed=k)
    zj, yj = jnp.asarray(z), jnp.asarray(y)
    expected = z.argmax(1) == y
    top = jnp.asarray(z.max(1))
    tied = (z == z.max(1, keepdims=True)).sum(1) > 1
    at_max = (z[np.arange(n), np.clip(y, 0, k - 1)] == z.max(1)) & (y >= 0) & (y < k)
    assert 3 * chunk < np.sum(tied & at_max) < 0.4 * n  # sparse: several chunks
    assert np.sum(at_max) > 0.4 * n  # flagging every row is the dense case
    check = jax.jit(_first_max.correct_given_max)
    np.testing.assert_array_equal(check(zj, yj, top, jnp.asarray(tied)), expected)
    np.testing.assert_array_equal(check(zj, yj, top, jnp.ones(n, bool)), expected)
    # Unflagged rows are decided by the maximum alone: the flag is what makes ties exact.
    np.testing.assert_array_equal(check(zj, yj, top, jnp.zeros(n, bool)), at_max)
    # vmap: members with different numbers of flagged rows stay independent.
    flags = jnp.stack(
        [jnp.asarray(tied), jnp.ones(n, bool), jnp.asarray(tied) & (jnp.arange(n) < 9)]
    )
    out = jax.vmap(check, in_axes=(None, None, None, 0))(zj, yj, top, flags)
    for row in out[:2]:
        np.testing.assert_array_equal(row, expected)
    np.testing.assert_array_equal(out[2], np.where(np.arange(n) < 9, expected, at_max))


@pytest.mark.parametrize("k", [65, 1000])
def test_wide_rows_with_ties_give_numpy_argmax_results_in_every_metric(k):
    # From 2^21 scores on, wide rows take the row maximum (and the normaliser or the row sum) and
    # re-read only rows that may hold a tied maximum. Exact ties of logits stay exact ties of
    # softmax probabilities; the metrics must follow NumPy's first-maximum rule.
    n = 2**21 // k + 7
    z, y = _tie_heavy(n, k, tied_fraction=0.3, seed=k + 1)
    y = np.clip(y, 0, k - 1)
    zj, yj = jnp.asarray(z), jnp.asarray(y)
    expected = z.argmax(1) == y
    assert _first_max.recheck_pays(zj)
    _, correct, _ = jax.jit(_first_max.top_label_of_logits)(zj, yj)
    np.testing.assert_array_equal(correct, expected)
    p = jax.nn.softmax(zj)
    np.testing.assert_array_equal(np.asarray(p).argmax(1), z.argmax(1))  # ties stay exact
    top, correct_p = jax.jit(_first_max.top_label_of_probs)(p, yj, p.max(1), p.sum(1))
    np.testing.assert_array_equal(correct_p, expected)
    np.testing.assert_array_equal(top, np.asarray(p).max(1))
    p64 = np.asarray(p, np.float64)
    tol = dict(atol=1e-5, rtol=0)
    reference = ref_ece(p64, y, 15)
    np.testing.assert_allclose(cm.ece(p, yj), reference, **tol)
    np.testing.assert_allclose(cm.ece(zj, yj, from_logits=True), reference, **tol)
    np.testing.assert_allclose(cm.ada_ece(p, yj), ref_ada(p64, y, 15), **tol)
    r = cm.calibration_report(zj, yj, from_logits=True)
    np.testing.assert_allclose(r.accuracy, np.mean(expected), **tol)
    np.testing.assert_allclose(r.ece, reference, **tol)
    np.testing.assert_allclose(
        cm.CalibrationState.from_batch(p, yj).compute().ece, reference, **tol
    )


def test_binary_input_is_positive_class_calibration():
    rng = np.random.default_rng(0)
    p = rng.random(500).astype(np.float32)
    y = (rng.random(500) < p).astype(np.int32)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    # Positive-class: the same as classwise bins of column 1 alone.
    b = ref_bin(p, 10)
    expected = sum(abs(y[b == i].sum() - p[b == i].astype(np.float64).sum()) for i in range(10))
    np.testing.assert_allclose(cm.ece(pj, yj, num_bins=10), expected / 500, atol=1e-6)
    np.testing.assert_allclose(cm.accuracy(pj, yj), np.mean((p > 0.5) == (y == 1)))
    np.testing.assert_allclose(cm.brier(pj, yj), np.mean((p - y) ** 2), rtol=1e-6)
    np.testing.assert_allclose(
        cm.classwise_ece(pj, yj, num_bins=10), ref_classwise(p, y, 10), atol=1e-6
    )
    z = jnp.log(pj) - jnp.log1p(-pj)
    np.testing.assert_allclose(
        cm.nll(z, yj, from_logits=True), -np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)), rtol=1e-4
    )


# ------------------------------------------------------------------------------------------------
# Published values and peers.

TM_PREDS = np.float32(
    [[0.25, 0.20, 0.55], [0.55, 0.05, 0.40], [0.10, 0.30, 0.60], [0.90, 0.05, 0.05]]
)
TM_TARGET = np.int32([0, 1, 2, 0])


def test_torchmetrics_docstring_example():
    p, y = jnp.asarray(TM_PREDS), jnp.asarray(TM_TARGET)
    assert f"{float(cm.ece(p, y, num_bins=3)):.4f}" == "0.2000"
    assert f"{float(cm.lp_ece(p, y, p=2, num_bins=3)):.4f}" == "0.2082"
    assert f"{float(cm.mce(p, y, num_bins=3)):.4f}" == "0.2333"


def test_sklearn_calibration_curve_docstring_example():
    from sklearn.calibration import calibration_curve

    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1])
    y_pred = np.array([0.1, 0.2, 0.3, 0.4, 0.65, 0.7, 0.8, 0.9, 1.0])
    prob_true, prob_pred = calibration_curve(y_true, y_pred, n_bins=3)
    np.testing.assert_allclose(prob_true, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(prob_pred, [0.2, 0.525, 0.85])
    d = cm.reliability_diagram(jnp.float32(y_pred), jnp.asarray(y_true), num_bins=3)
    keep = np.asarray(d.count) > 0  # calibration_curve drops empty bins
    np.testing.assert_allclose(np.asarray(d.accuracy)[keep], prob_true, atol=1e-7)
    np.testing.assert_allclose(np.asarray(d.confidence)[keep], prob_pred, atol=1e-7)
    # A case with an empty bin: calibration_curve drops it, we report count 0.
    y_pred2 = np.float32([0.05, 0.1, 0.9, 0.95, 0.8])
    y_true2 = np.array([0, 0, 1, 1, 0])
    pt, pp = calibration_curve(y_true2, y_pred2, n_bins=3)
    d2 = cm.reliability_diagram(jnp.asarray(y_pred2), jnp.asarray(y_true2), num_bins=3)
    np.testing.assert_array_equal(d2.count, [2, 0, 3])
    np.testing.assert_allclose(np.asarray(d2.accuracy)[[0, 2]], pt, atol=1e-7)
    np.testing.assert_allclose(np.asarray(d2.confidence)[[0, 2]], pp, atol=1e-7)


@pytest.mark.parametrize(("n", "k"), [(1000, 10), (2000, 100)])
def test_torchmetrics_and_netcal_agree_on_random_data(n, k):
    import torch
    from netcal.metrics import ECE, MCE
    from torchmetrics.functional.classification import multiclass_calibration_error

    _, p, y = make_data(n, k, seed=11)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    # Random softmax outputs never sit exactly on an edge m/15, where torchmetrics ([lo, hi)
    # bins with float32 edges, 1.0 in a bin of its own) would differ.
    edges = np.arange(1, 15) / 15
    assert np.abs(p.max(1)[:, None] - edges).min() > 1e-6
    pt, yt = torch.from_numpy(p), torch.from_numpy(y.astype(np.int64))
    for norm, ours in [("l1", cm.ece), ("max", cm.mce), ("l2", None)]:
        theirs = float(multiclass_calibration_error(pt, yt, k, n_bins=15, norm=norm))
        mine = cm.lp_ece(pj, yj, p=2, num_bins=15) if ours is None else ours(pj, yj)
        np.testing.assert_allclose(mine, theirs, atol=1e-5)
    np.testing.assert_allclose(cm.ece(pj, yj), ECE(bins=15).measure(p, y), atol=1e-5)
    np.testing.assert_allclose(cm.mce(pj, yj), MCE(bins=15).measure(p, y), atol=1e-5)


# ------------------------------------------------------------------------------------------------
# jit, vmap and where for every metric.

METRICS = {
    "ece": cm.ece,
    "mce": cm.mce,
    "lp_ece": lambda p, y, **kw: cm.lp_ece(p, y, p=2, **kw),
    "debiased_l2_ece": cm.debiased_l2_ece,
    "classwise_ece": cm.classwise_ece,
    "ada_ece": cm.ada_ece,
    "ada_ece_mukhoti": lambda p, y, **kw: cm.ada_ece(p, y, variant="mukhoti2020", **kw),
    "brier": cm.brier,
    "accuracy": cm.accuracy,
    "nll": lambda p, y, **kw: cm.nll(jnp.log(p), y, from_logits=True, **kw),
    "diagram": lambda p, y, **kw: cm.reliability_diagram(p, y, **kw).accuracy,
    "report": lambda p, y, **kw: jnp.stack(
        cm.calibration_report(jnp.log(p), y, from_logits=True, **kw)
    ),
}


@pytest.mark.parametrize("name", sorted(METRICS))
def test_jit_vmap_where(name):
    fn = METRICS[name]
    _, p, y = make_data(300, 5, seed=5)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    eager = fn(pj, yj)
    np.testing.assert_allclose(jax.jit(fn)(pj, yj), eager, atol=1e-6)
    # A batch of three models' predictions on the same labels.
    batch = jnp.stack([pj, jnp.roll(pj, 1, axis=1), jnp.flip(pj, axis=1)])
    out = jax.vmap(fn, in_axes=(0, None))(batch, yj)
    for i in range(3):
        np.testing.assert_allclose(out[i], fn(batch[i], yj), atol=1e-6)
    mask = np.arange(300) % 3 != 0
    np.testing.assert_allclose(
        jax.jit(lambda p, y, w: fn(p, y, where=w))(pj, yj, jnp.asarray(mask)),
        fn(pj[mask], yj[mask]),
        atol=1e-6,
    )
    # Masked rows may hold garbage (padding): it must not leak.
    garbage = pj.at[~mask].set(jnp.nan)
    np.testing.assert_allclose(
        jax.jit(lambda p, y, w: fn(p, y, where=w))(garbage, yj, jnp.asarray(mask)),
        fn(pj[mask], yj[mask]),
        atol=1e-6,
    )


def test_bf16_gives_float32_answer_to_bf16_tolerance():
    _, p, y = make_data(2000, 10, seed=8)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    pb = pj.astype(jnp.bfloat16)
    for fn in (cm.ece, cm.mce, cm.classwise_ece, cm.ada_ece, cm.brier):
        out = fn(pb, yj)
        assert out.dtype == jnp.float32
        np.testing.assert_allclose(out, fn(pj, yj), atol=2e-2)
    # The bf16 answer is exactly the float32 computation on the bf16 values (whose rows sum to 1
    # only within bf16 tolerance, so float32 input of them is invalid: go to the engine).
    d = cm.reliability_diagram(pb, yj)
    conf32, correct32, _ = _first_max.first_max_correct(pb.astype(jnp.float32), yj)
    d32 = _binned.diagram_from_sums(_binning.bin_sums(conf32, correct32, 15))
    np.testing.assert_array_equal(d.count, d32.count)
    np.testing.assert_allclose(d.confidence, d32.confidence, rtol=1e-6)


# ------------------------------------------------------------------------------------------------
# Bad input: a clear error, never a silent number.

ALL_PROB_FNS = [cm.ece, cm.mce, cm.classwise_ece, cm.ada_ece, cm.brier, cm.reliability_diagram]


@pytest.mark.parametrize("fn", ALL_PROB_FNS, ids=lambda f: f.__name__)
def test_bad_input_raises(fn):
    p = jnp.float32([[0.7, 0.3], [0.4, 0.6]])
    y = jnp.array([0, 1])
    with pytest.raises(ValueError, match="labels must lie"):
        fn(p, jnp.array([0, 2]))
    with pytest.raises(ValueError, match="labels must lie"):
        fn(p, jnp.array([-1, 0]))
    with pytest.raises(ValueError, match="probabilities"):
        fn(p.at[0, 0].set(jnp.nan), y)
    with pytest.raises(ValueError, match="probabilities"):
        fn(p.at[0, 0].set(jnp.inf), y)
    with pytest.raises(ValueError, match="probabilities"):
        fn(jnp.float32([[1.2, -0.2], [0.4, 0.6]]), y)
    with pytest.raises(ValueError, match="probabilities"):
        fn(jnp.float32([[0.7, 0.4], [0.4, 0.6]]), y)
    with pytest.raises(ValueError, match="shape"):
        fn(p[None], y)
    with pytest.raises(ValueError, match="shape"):
        fn(p, y[:1])
    with pytest.raises(ValueError, match="empty"):
        fn(jnp.zeros((0, 2)), jnp.zeros((0,), jnp.int32))
    with pytest.raises(TypeError, match="integer"):
        fn(p, jnp.float32([0, 1]))
    if fn is not cm.brier:
        with pytest.raises(ValueError, match="num_bins"):
            fn(p, y, num_bins=0)


def _ada_mukhoti(p, y, **kw):
    return cm.ada_ece(p, y, variant="mukhoti2020", **kw)


# Every scalar metric on probabilities; ada_ece in both variants.
SCALAR_PROB_FNS = [
    cm.ece,
    cm.mce,
    functools.partial(cm.lp_ece, p=2),
    cm.ada_ece,
    _ada_mukhoti,
    cm.classwise_ece,
    cm.debiased_l2_ece,
    cm.brier,
]


def _name(fn):
    return getattr(fn, "__name__", None) or fn.func.__name__


def test_bad_values_under_jit_raise_when_checked_and_never_give_a_number():
    p = jnp.float32([[0.7, 0.3], [0.4, 0.6]])
    bad = jnp.array([0, 5])
    for fn in (*SCALAR_PROB_FNS, cm.accuracy):
        assert np.isnan(jax.jit(fn)(p, bad)), _name(fn)
        with pytest.raises(Exception, match="labels must lie"):
            cj.validation.checked(jax.jit(fn))(p, bad)
        assert np.isnan(jax.jit(fn)(p.at[1, 0].set(jnp.nan), jnp.array([0, 1]))), _name(fn)
    assert np.isnan(jax.jit(functools.partial(cm.nll, from_logits=True))(jnp.log(p), bad))
    report = jax.jit(functools.partial(cm.calibration_report, from_logits=True))(jnp.log(p), bad)
    assert np.all(np.isnan(np.asarray(report))), report
    assert np.isnan(jax.jit(cm.ece)(p.at[0, 0].set(jnp.nan), jnp.array([0, 1])))
    with pytest.raises(Exception, match="probabilities"):
        cj.validation.checked(jax.jit(cm.ece))(p.at[0, 1].set(0.9), jnp.array([0, 1]))
    with pytest.raises(ValueError, match="masked out"):
        cm.ece(p, jnp.array([0, 1]), where=jnp.array([False, False]))
    with pytest.raises(ValueError, match="finite"):
        cm.calibration_report(jnp.float32([[0.0, jnp.nan]]), jnp.array([0]), from_logits=True)


def _invalid_probs():
    """The reviewer's cases: [50, 4] softmax rows, then unnormalised / negative / binary shift."""
    z = jnp.asarray(np.random.default_rng(7).normal(size=(50, 4)).astype(np.float32) * 2)
    p = jax.nn.softmax(z)
    y = jnp.asarray(np.random.default_rng(8).integers(0, 4, 50).astype(np.int32))
    cases = {
        "half": 0.5 * p,
        "negative": p.at[0, 0].set(-0.3),
        "above_one": p.at[0].set(jnp.float32([1.5, -0.5, 0.0, 0.0])),
        "nan": p.at[3, 1].set(jnp.nan),
    }
    return p, y, cases


def test_invalid_probabilities_under_jit_give_nan_and_masked_rows_are_exempt():
    p, y, cases = _invalid_probs()
    keep_first = jnp.arange(50) > 0
    for fn in SCALAR_PROB_FNS:
        jf = jax.jit(fn)
        assert np.isfinite(jf(p, y)), _name(fn)
        for case, bad in cases.items():
            assert np.isnan(jf(bad, y)), (_name(fn), case)
        # Only row 0 is invalid: masking it gives the value of the valid rows.
        bad = cases["negative"]
        np.testing.assert_allclose(
            jf(bad, y, where=keep_first), fn(p[1:], y[1:]), rtol=1e-6, err_msg=_name(fn)
        )
        with pytest.raises(Exception, match="probabilities"):
            cj.validation.checked(jf)(cases["half"], y)
    # Binary [N] positive-class probabilities outside [0, 1].
    pb = p[:, 0]
    yb = (y == 0).astype(jnp.int32)
    for fn in SCALAR_PROB_FNS:
        jf = jax.jit(fn)
        assert np.isfinite(jf(pb, yb)), _name(fn)
        assert np.isnan(jf(pb - 0.5, yb)), _name(fn)
        assert np.isnan(jf(pb.at[2].set(1.25), yb)), _name(fn)
    # Weighted calls (bootstrap): a zero-weight row is exempt, any other poisons.
    w = jnp.ones((50,), jnp.int32)
    assert np.isnan(jax.jit(cm.ece)(cases["negative"], y, weights=w))
    np.testing.assert_allclose(
        jax.jit(cm.ece)(cases["negative"], y, weights=w.at[0].set(0)), cm.ece(p[1:], y[1:])
    )


def test_bootstrap_and_reliability_diagram_of_invalid_input_are_nan_everywhere():
    p, y, cases = _invalid_probs()
    boot = jax.jit(cm.bootstrap, static_argnums=0, static_argnames="num_resamples")
    for bad in (cases["half"], cases["negative"]):
        # Eagerly the data is checked once and raises; under jit every replicate is NaN.
        with pytest.raises(ValueError, match="probabilities"):
            cm.bootstrap(cm.ece, bad, y, key=jax.random.key(0), num_resamples=8)
        reps = boot(cm.ece, bad, y, key=jax.random.key(0), num_resamples=8)
        assert np.all(np.isnan(reps))
    reps = cm.bootstrap(cm.ece, p, y, key=jax.random.key(0), num_resamples=8)
    assert np.all(np.isfinite(reps))
    diagram = jax.jit(cm.reliability_diagram)
    for bad_p, bad_y in ((cases["half"], y), (p, y.at[0].set(9)), (cases["nan"], y)):
        d = diagram(bad_p, bad_y)
        assert np.all(np.isnan(d.accuracy)) and np.all(np.isnan(d.confidence)), d
        # The counts stay integer counts of every sample (documented), edges unchanged.
        assert d.count.dtype == jnp.int32 and int(d.count.sum()) == 50
        np.testing.assert_array_equal(d.upper, diagram(p, y).upper)
    d = diagram(p, y.at[0].set(9), where=jnp.arange(50) > 0)
    assert np.all(np.isfinite(d.accuracy)) and np.all(np.isfinite(d.confidence))


def test_accuracy_and_report_are_nan_on_any_invalid_unmasked_input():
    p, y, _ = _invalid_probs()
    z = jnp.log(p)
    acc = jax.jit(cm.accuracy)
    assert np.isnan(acc(p.at[3].set(jnp.nan), y))
    assert np.isnan(acc(p.at[3, 2].set(jnp.inf), y))
    assert np.isnan(acc(p, y.at[0].set(9)))
    assert np.isnan(acc(p[:, 0], (y == 0).astype(jnp.int32).at[4].set(3)))
    assert np.isnan(acc(p[:, 0].at[4].set(jnp.nan), (y == 0).astype(jnp.int32)))
    keep = jnp.arange(50) != 3
    np.testing.assert_allclose(
        acc(p.at[3].set(jnp.nan), y, where=keep), cm.accuracy(p[keep], y[keep])
    )
    assert np.isfinite(acc(p, y.at[3].set(9), weights=jnp.ones((50,)).at[3].set(0)))
    report = jax.jit(functools.partial(cm.calibration_report, from_logits=True))
    for bad_z, bad_y in ((z, y.at[0].set(9)), (z.at[5, 1].set(jnp.nan), y), (z[:, 0], y)):
        r = report(bad_z, bad_y)
        assert np.all(np.isnan(np.asarray(r))), r
    r = report(z, y.at[0].set(9), where=jnp.arange(50) > 0)
    assert np.all(np.isfinite(np.asarray(r))), r


# ------------------------------------------------------------------------------------------------
# Sample weights and the bootstrap.


def test_integer_weights_equal_replicated_samples():
    _, p, y = make_data(300, 5, seed=9)
    w = np.random.default_rng(0).poisson(1.0, 300).astype(np.int32)
    rep_p, rep_y = np.repeat(p, w, axis=0), np.repeat(y, w)
    pj, yj, wj = jnp.asarray(p), jnp.asarray(y), jnp.asarray(w)
    for fn in (cm.ece, cm.mce, cm.classwise_ece, cm.ada_ece, cm.debiased_l2_ece, cm.brier):
        np.testing.assert_allclose(
            fn(pj, yj, weights=wj), ref_fn(fn)(rep_p, rep_y), atol=1e-5, err_msg=fn.__name__
        )
    np.testing.assert_array_equal(
        cm.reliability_diagram(pj, yj, weights=wj).count,
        cm.reliability_diagram(jnp.asarray(rep_p), jnp.asarray(rep_y)).count,
    )
    # Float weights equal to the integers give the same values (float counts).
    np.testing.assert_allclose(
        cm.ece(pj, yj, weights=wj.astype(jnp.float32)), cm.ece(pj, yj, weights=wj), atol=1e-6
    )


def ref_fn(fn):
    return {
        cm.ece: lambda p, y: ref_ece(p, y, 15),
        cm.mce: lambda p, y: ref_mce(p, y, 15),
        cm.classwise_ece: lambda p, y: ref_classwise(p, y, 15),
        cm.ada_ece: lambda p, y: ref_ada(p, y, 15),
        cm.debiased_l2_ece: lambda p, y: ref_debiased(p, y, 15),
        cm.brier: ref_brier,
    }[fn]


def test_bootstrap_by_vmap_over_weights():
    _, p, y = make_data(300, 5, seed=10)
    pj, yj = jnp.asarray(p), jnp.asarray(y)
    key = jax.random.key(0)
    reps = cm.bootstrap(cm.ece, pj, yj, key=key, num_resamples=64, num_bins=10)
    assert reps.shape == (64,) and np.all(np.isfinite(reps))
    # Replicate i is the metric on the data resampled with the same counts.
    w = cm._bootstrap.resample_weights(key, 300, 64)
    i = 7
    rep = np.repeat(np.arange(300), np.asarray(w[i]))
    np.testing.assert_allclose(reps[i], ref_ece(p[rep], y[rep], 10), atol=1e-5)
    multi = cm.bootstrap(cm.ada_ece, pj, yj, key=key, num_resamples=16, method="multinomial")
    assert multi.shape == (16,)
    assert int(cm._bootstrap.resample_weights(key, 300, 3, "multinomial").sum()) == 900
    lo, hi = np.percentile(np.asarray(reps), [2.5, 97.5])
    assert lo < float(cm.ece(pj, yj, num_bins=10)) < hi


def _ref_equal_mass(c, a, m, counts=None):
    """float64 AdaECE over confidences ``c`` and correctness ``a``, samples repeated ``counts``."""
    c = np.asarray(c, np.float32).astype(np.float64)
    a = np.asarray(a, np.float64)
    if counts is not None:
        c, a = np.repeat(c, counts), np.repeat(a, counts)
    order = np.lexsort((a, c))
    return sum(abs(a[i].sum() - c[i].sum()) for i in np.array_split(order, m)) / len(c)


@pytest.mark.parametrize("weighting", [None, "mask", "int"])
def test_equal_mass_select_equals_reference(weighting):
    # The radix-select path (no sort) must equal the float64 sorted reference, including tie
    # groups that straddle bin boundaries, masks and integer replication weights. The algorithm
    # does not depend on N; the public path uses it from N = 2^15 (tested below).
    from calib_jax.metrics import _adaptive

    rng = np.random.default_rng(len(str(weighting)))
    n = 6_000
    w = {
        None: None,
        "mask": rng.uniform(size=n) < 0.7,
        "int": rng.integers(0, 4, n).astype(np.int32),
    }[weighting]
    wj = None if w is None else jnp.asarray(w)
    counts = None if w is None else np.asarray(w, int)
    for data in ("uniform", "ties", "beta", "two_values"):
        c = {
            "uniform": rng.uniform(0.1, 1, n),
            "ties": rng.integers(0, 60, n) / 59,
            "beta": rng.beta(5, 1, n),
            "two_values": rng.choice([0.5, 1.0], n),
        }[data].astype(np.float32)
        a = rng.uniform(size=n) < c
        for m in (1, 15, 64) if weighting is None else (15,):
            got = _adaptive.equal_mass_ece_by_select(jnp.asarray(c), jnp.asarray(a), wj, m)
            ref = _ref_equal_mass(c, a, m, counts)
            np.testing.assert_allclose(float(got), ref, rtol=1e-5, atol=1e-8, err_msg=data)


def test_equal_mass_select_small_inputs_and_nan():
    from calib_jax.metrics import _adaptive

    # Fewer samples than bins (empty trailing bins), a single sample, and a NaN confidence.
    c = jnp.float32([0.9, 0.6, 0.6, 0.3, 1.0])
    a = jnp.array([True, False, True, False, True])
    for m in (1, 3, 15):
        np.testing.assert_allclose(
            float(_adaptive.equal_mass_ece_by_select(c, a, None, m)),
            _ref_equal_mass(c, a, m),
            atol=1e-7,
        )
    np.testing.assert_allclose(
        float(_adaptive.equal_mass_ece_by_select(c[:1], a[:1], None, 15)), 0.1, atol=1e-7
    )
    assert np.isnan(float(_adaptive.equal_mass_ece_by_select(c.at[2].set(jnp.nan), a, None, 15)))
    # A masked-out NaN does not poison.
    keep = jnp.array([True, True, False, True, True])
    np.testing.assert_allclose(
        float(_adaptive.equal_mass_ece_by_select(c.at[2].set(jnp.nan), a, keep, 3)),
        _ref_equal_mass(np.delete(np.asarray(c), 2), np.delete(np.asarray(a), 2), 3),
        atol=1e-7,
    )


def test_ada_ece_large_n_public_path_jit_and_vmap():
    # ada_ece on N >= 2^15 samples (the selection path) under jit and vmap over 3 models.
    rng = np.random.default_rng(3)
    n, k = 2**15 + 3, 5
    p = rng.dirichlet(np.ones(k) * 0.5, size=(3, n)).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    got = jax.jit(jax.vmap(lambda q: cm.ada_ece(q, jnp.asarray(y))))(jnp.asarray(p))
    for i in range(3):
        np.testing.assert_allclose(float(got[i]), ref_ada(p[i], y, 15), rtol=1e-5, atol=1e-8)
