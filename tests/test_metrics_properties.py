"""Property-based battery for every metric: random data, dtypes, masks and weights against float64
NumPy references written here; one-shot equals streamed; invalid input never gives a number.

Shapes come from a small fixed set so that compilations are shared between examples; example
counts are bounded so that the file runs in well under a minute on an idle machine.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from calib_jax import metrics as cm

M = 5
SHAPES = [(12,), (12, 3), (9, 4)]
DTYPES = [jnp.float32, jnp.bfloat16, jnp.float16]
WEIGHTS = ["none", "where", "int", "float", "where+int"]


def _settings(examples):
    # Each new (shape, dtype, weights) combination compiles; few examples keep the file fast.
    return settings(
        max_examples=examples,
        deadline=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow],
    )


# ------------------------------------------------------------------------------------------------
# Data


def _draw(seed, shape, dtype, weight_kind, style):
    """Probabilities in `dtype`, labels, logits, where and weights (None where not used)."""
    rng = np.random.default_rng(seed)
    n = shape[0]
    if len(shape) == 1:
        p = rng.random(n)
        if style == "edges":  # values on and next to the bin edges, and 0 and 1
            p = rng.choice(np.concatenate([np.arange(M + 1) / M, [0.5, 0.3]]), n)
        y = (rng.random(n) < p).astype(np.int32)
    else:
        z = rng.normal(size=shape) * 2
        if style == "edges":  # tied maxima and saturated rows
            z = np.round(z) * 3
        p = np.exp(z - z.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        y = rng.integers(0, shape[1], n).astype(np.int32)
    p = jnp.asarray(p, dtype)
    where = weights = None
    if "where" in weight_kind:
        where = rng.random(n) < 0.7
        where[rng.integers(n)] = True
    if "int" in weight_kind:
        weights = rng.integers(0, 4, n).astype(np.int32)
        weights[rng.integers(n)] = 2
    elif weight_kind == "float":
        weights = (rng.random(n) * 3 * (rng.random(n) < 0.8)).astype(np.float32)
        weights[rng.integers(n)] = 1.5
    if where is not None and weights is not None and not np.any(weights[where] > 0):
        weights[np.flatnonzero(where)[0]] = 1
    return p, jnp.asarray(y), where, weights


def _w64(n, where, weights):
    w = np.ones(n) if weights is None else np.asarray(weights, np.float64)
    return w if where is None else w * where


# ------------------------------------------------------------------------------------------------
# float64 references (weighted; integer weights are replicated samples)


def ref_top(p, y):
    if p.ndim == 1:
        return p, (y == 1).astype(np.float64)
    return p.max(1), (p.argmax(1) == y).astype(np.float64)


def ref_bin(c):
    # The input values are float32 or narrower: float64 decides c > m/M exactly.
    return np.clip(np.ceil(c * M).astype(int) - 1, 0, M - 1)


def ref_bins(c, a, w):
    b = ref_bin(c)
    return (np.bincount(b, w, M), np.bincount(b, w * a, M), np.bincount(b, w * c, M))


def ref_binned(p, y, w):
    c, a = ref_top(p, y)
    cnt, sa, sc = ref_bins(c, a, w)
    total = w.sum()
    filled = cnt > 0
    gap = np.abs(sa - sc)
    safe = np.where(filled, cnt, 1)
    enough = cnt >= 2
    s2 = np.where(enough, cnt, 2)
    acc, conf = sa / s2, sc / s2
    debiased = np.where(enough, cnt * ((conf - acc) ** 2 - acc * (1 - acc) / (s2 - 1)), 0)
    return {
        "ece": gap.sum() / total,
        "mce": np.where(filled, gap / safe, 0).max(),
        "lp_ece": np.sqrt((np.where(filled, safe * (gap / safe) ** 2, 0)).sum() / total),
        "debiased_l2_ece": debiased.sum() / total,
        "diagram": (cnt, np.where(filled, sa / safe, 0), np.where(filled, sc / safe, 0)),
    }


def ref_classwise(p, y, w):
    cols = np.stack([1 - p, p], 1) if p.ndim == 1 else p  # float64: 1 - p exact
    k = cols.shape[1]
    total = 0.0
    for j in range(k):
        b = ref_bin(cols[:, j])
        total += np.abs(np.bincount(b, w * ((y == j) - cols[:, j]), M)).sum()
    return total / (k * w.sum())


def ref_ada(p, y, w):
    c, a = ref_top(p, y)
    reps = w.astype(int)
    c, a = np.repeat(c, reps), np.repeat(a, reps)
    order = np.lexsort((a, c))  # by confidence, incorrect first among ties
    return sum(abs(a[i].sum() - c[i].sum()) for i in np.array_split(order, M)) / len(c)


def ref_scores(p, y, z, w):
    if p.ndim == 1:
        brier = (p - y) ** 2
        acc = (p > 0.5) == (y == 1)
        nll = np.logaddexp(0, np.where(y == 1, -z, z))
    else:
        onehot = np.eye(p.shape[1])[y]
        brier = ((p - onehot) ** 2).sum(1)
        acc = p.argmax(1) == y
        zs = z - z.max(1, keepdims=True)
        nll = np.log(np.exp(zs).sum(1)) - zs[np.arange(len(y)), y]
    return {
        k: (w * v).sum() / w.sum() for k, v in (("brier", brier), ("accuracy", acc), ("nll", nll))
    }


# ------------------------------------------------------------------------------------------------
# Values against the references


def _metrics(p, y, where, weights):
    kw = {"where": where, "weights": weights}
    out = {
        "ece": cm.ece(p, y, num_bins=M, **kw),
        "mce": cm.mce(p, y, num_bins=M, **kw),
        "lp_ece": cm.lp_ece(p, y, p=2, num_bins=M, **kw),
        "debiased_l2_ece": cm.debiased_l2_ece(p, y, num_bins=M, **kw),
        "classwise_ece": cm.classwise_ece(p, y, num_bins=M, **kw),
        "brier": cm.brier(p, y, **kw),
        "accuracy": cm.accuracy(p, y, **kw),
        "diagram": tuple(cm.reliability_diagram(p, y, num_bins=M, **kw)[:3]),
    }
    if weights is None or not np.issubdtype(weights.dtype, np.floating):
        out["ada_ece"] = cm.ada_ece(p, y, num_bins=M, **kw)
    return out


@_settings(12)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(SHAPES),
    dtype=st.sampled_from(DTYPES),
    weight_kind=st.sampled_from(WEIGHTS),
    style=st.sampled_from(["random", "edges"]),
)
def test_every_metric_matches_its_float64_reference(seed, shape, dtype, weight_kind, style):
    p, y, where, weights = _draw(seed, shape, dtype, weight_kind, style)
    p64, y64 = np.asarray(p, np.float64), np.asarray(y)
    w = _w64(len(y64), where, weights)
    got = _metrics(p, y, where, weights)
    want = ref_binned(p64, y64, w)
    want["classwise_ece"] = ref_classwise(p64, y64, w)
    if "ada_ece" in got:
        want["ada_ece"] = ref_ada(p64, y64, w)
    scores = ref_scores(p64, y64, np.log(np.maximum(p64, 1e-30)), w)
    want["brier"], want["accuracy"] = scores["brier"], scores["accuracy"]
    for name, value in got.items():
        for g, e in zip(jax.tree.leaves(value), jax.tree.leaves(want[name]), strict=True):
            np.testing.assert_allclose(
                np.asarray(g, np.float64), e, rtol=2e-5, atol=2e-6, err_msg=name
            )
    # NLL and the one-pass report from logits (finite: log of the probabilities, clipped).
    z = jnp.log(jnp.maximum(p.astype(jnp.float32), 1e-30))
    z64 = np.asarray(z, np.float64)
    zw = {"where": where, "weights": weights}
    np.testing.assert_allclose(
        cm.nll(z, y, from_logits=True, **zw),
        ref_scores(p64, y64, z64, w)["nll"],
        rtol=2e-5,
        atol=2e-6,
    )
    if weights is None and style == "random":
        # Confidences as computed in float32 (random data: none within rounding of an edge).
        q64 = np.asarray(jax.nn.sigmoid(z) if len(shape) == 1 else jax.nn.softmax(z), np.float64)
        report = cm.calibration_report(z, y, from_logits=True, num_bins=M, where=where)
        ref = ref_binned(q64, y64, w)
        for field in ("ece", "mce", "debiased_l2_ece"):
            np.testing.assert_allclose(getattr(report, field), ref[field], atol=2e-6, err_msg=field)
        np.testing.assert_allclose(report.classwise_ece, ref_classwise(q64, y64, w), atol=2e-6)
        np.testing.assert_allclose(report.ada_ece, ref_ada(q64, y64, w), atol=2e-6)


# ------------------------------------------------------------------------------------------------
# One-shot = streamed (batches of 4 rows, the last padded with masked garbage)


@_settings(8)
@given(
    seed=st.integers(0, 2**32 - 1),
    shape=st.sampled_from(SHAPES),
    dtype=st.sampled_from(DTYPES[:2]),
    masked=st.booleans(),
    from_logits=st.booleans(),
)
def test_streamed_state_equals_the_one_shot_metrics(seed, shape, dtype, masked, from_logits):
    p, y, where, _ = _draw(seed, shape, dtype, "where" if masked else "none", "random")
    n = shape[0]
    x = jnp.log(jnp.maximum(p.astype(jnp.float32), 1e-30)).astype(dtype) if from_logits else p
    keep = np.ones(n, bool) if where is None else where
    pad = -n % 4
    xp = jnp.concatenate([x, jnp.full((pad, *shape[1:]), jnp.nan, x.dtype)])
    yp = jnp.concatenate([y, jnp.full((pad,), 99, y.dtype)])
    kp = np.concatenate([keep, np.zeros(pad, bool)])
    state = cm.CalibrationState.empty(2 if len(shape) == 1 else shape[1], num_bins=M)
    for i in range(0, n + pad, 4):
        state = state.update(
            xp[i : i + 4], yp[i : i + 4], where=kp[i : i + 4], from_logits=from_logits
        )
    streamed = state.compute()
    if from_logits:
        one_shot = cm.calibration_report(x, y, from_logits=True, num_bins=M, where=where)
        fields = [f for f in one_shot._fields if f != "ada_ece"]
        for f in fields:
            np.testing.assert_allclose(
                getattr(streamed, f), getattr(one_shot, f), atol=1e-6, err_msg=f
            )
        return
    expected = {
        "ece": cm.ece(p, y, num_bins=M, where=where),
        "mce": cm.mce(p, y, num_bins=M, where=where),
        "l2_ece": cm.lp_ece(p, y, p=2, num_bins=M, where=where),
        "debiased_l2_ece": cm.debiased_l2_ece(p, y, num_bins=M, where=where),
        "classwise_ece": cm.classwise_ece(p, y, num_bins=M, where=where),
        "brier": cm.brier(p, y, where=where),
        "accuracy": cm.accuracy(p, y, where=where),
    }
    for f, value in expected.items():
        np.testing.assert_allclose(getattr(streamed, f), value, atol=1e-6, err_msg=f)
    d = state.reliability_diagram()
    d1 = cm.reliability_diagram(p, y, num_bins=M, where=where)
    np.testing.assert_array_equal(d.count, d1.count)
    np.testing.assert_allclose(d.confidence, d1.confidence, atol=1e-6)


# ------------------------------------------------------------------------------------------------
# Invalid input: NaN under jit (never a finite plausible number), ValueError eagerly.


def _on_logits(fn):
    return lambda p, y, **kw: fn(jnp.log(p), y, from_logits=True, **kw)


def _state(p, y, where=None):
    k = 2 if p.ndim == 1 else p.shape[1]
    return cm.CalibrationState.empty(k, num_bins=M).update(p, y, where=where).compute()


WEIGHTED = {
    "ece": functools.partial(cm.ece, num_bins=M),
    "mce": functools.partial(cm.mce, num_bins=M),
    "lp_ece": functools.partial(cm.lp_ece, p=2, num_bins=M),
    "debiased_l2_ece": functools.partial(cm.debiased_l2_ece, num_bins=M),
    "ada_ece": functools.partial(cm.ada_ece, num_bins=M),
    "classwise_ece": functools.partial(cm.classwise_ece, num_bins=M),
    "brier": cm.brier,
    "accuracy": cm.accuracy,
    "nll": _on_logits(cm.nll),
    "reliability_diagram": lambda p, y, **kw: cm.reliability_diagram(p, y, num_bins=M, **kw)[1:3],
}
UNWEIGHTED = {
    "calibration_report": _on_logits(functools.partial(cm.calibration_report, num_bins=M)),
    "state": _state,
}
JITTED = {name: jax.jit(fn) for name, fn in {**WEIGHTED, **UNWEIGHTED}.items()}
ROW_DEFECTS = ["label_high", "label_negative", "label_uint_high", "nan", "inf", "negative_entry"]
ROW_DEFECTS_PROBS = ["unnormalised"]  # valid logits for nll and the report
WEIGHT_DEFECTS = ["weight_negative", "weight_nan", "weight_inf", "int_total"]


@_settings(20)
@given(
    seed=st.integers(0, 2**32 - 1),
    name=st.sampled_from(sorted(JITTED)),
    shape=st.sampled_from(SHAPES[:2]),
    defect=st.sampled_from(ROW_DEFECTS + ROW_DEFECTS_PROBS + WEIGHT_DEFECTS),
    weight_kind=st.sampled_from(["none", "where", "float", "where+int"]),
)
def test_invalid_input_is_nan_under_jit_and_raises_eagerly(seed, name, shape, defect, weight_kind):
    takes_weights = name in WEIGHTED
    if not takes_weights:
        weight_kind = "where" if "where" in weight_kind else "none"
        if defect in WEIGHT_DEFECTS:
            defect = "nan"
    if defect == "int_total":
        weight_kind = "where+int"
    if defect in ROW_DEFECTS_PROBS and name in ("nll", "calibration_report", "accuracy"):
        defect = "label_high"  # valid logits / scores
    if defect == "negative_entry" and name == "accuracy":
        defect = "label_negative"  # accuracy takes any finite scores
    p, y, where, weights = _draw(seed, shape, jnp.float32, weight_kind, "random")
    n = shape[0]
    rng = np.random.default_rng(seed + 1)
    entered = np.ones(n, bool) if where is None else where.copy()
    if weights is not None:
        entered &= weights != 0
    row = int(rng.choice(np.flatnonzero(entered)))
    if defect == "label_high":
        y = y.at[row].set(2 if len(shape) == 1 else shape[1])
    elif defect == "label_negative":
        y = y.at[row].set(-3)
    elif defect == "label_uint_high":
        y = y.astype(jnp.uint8).at[row].set(250)
    elif defect in ("nan", "inf"):
        p = p.at[row].set(jnp.nan if defect == "nan" else jnp.inf)
    elif defect == "negative_entry":
        p = p.at[row].set(-0.5) if len(shape) == 1 else p.at[row].set(jnp.array([1.5, -0.5, 0.0]))
    elif defect == "unnormalised":
        p = p.at[row].set(1.2) if len(shape) == 1 else p.at[row].set(0.6)
    elif defect == "int_total":
        other = (row + 1) % n
        weights, where = weights.copy(), where.copy()
        weights[row] = weights[other] = 2**30
        where[other] = True
    else:
        weights = (np.ones(n, np.float32) if weights is None else weights).astype(np.float32)
        weights[row] = {"weight_negative": -1.0, "weight_nan": np.nan, "weight_inf": np.inf}[defect]
    kw = {"where": where}
    if takes_weights:
        kw["weights"] = weights
    out = JITTED[name](p, y, **kw)
    floats = [x for x in jax.tree.leaves(out) if jnp.issubdtype(x.dtype, jnp.floating)]
    assert floats and all(np.all(np.isnan(np.asarray(x))) for x in floats), (name, defect, out)
    with pytest.raises(ValueError):
        {**WEIGHTED, **UNWEIGHTED}[name](p, y, **kw)
