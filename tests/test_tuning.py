"""The backend-keyed tuning table: every tuned formulation gives the plain path's numbers."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib_jax import _first_max, _tuning
from calib_jax import metrics as cm

# Small thresholds so that every tuned branch runs on test-sized arrays: the column loop up to
# 8 columns, the re-read of possibly tied rows from 1 score on (sparse below 40% of the rows).
EVERY_BRANCH = _tuning.CPU._replace(
    unroll_max_columns=8, recheck_min_scores=1, select_min_samples=64, matvec_max_classes=8
)
TABLES = {"plain": _tuning.PLAIN, "cpu": _tuning.CPU, "every_branch": EVERY_BRANCH}


def _scores(n, k, seed):
    """Rows with ties of the maximum (coarse values), labels hitting the first, a later tied
    and a non-maximal column."""
    rng = np.random.default_rng(seed)
    z = rng.integers(0, 4, size=(n, k)).astype(np.float32)
    first = z.argmax(1)
    last = k - 1 - z[:, ::-1].argmax(1)
    pick = rng.integers(0, 3, n)
    y = np.where(pick == 0, first, np.where(pick == 1, last, rng.integers(0, k, n)))
    return z, y.astype(np.int32)


def _first_max_under(table, z, y):
    with _tuning.override(table):
        top, correct, norm = _first_max.first_max_correct(jnp.asarray(z), jnp.asarray(y))
        _, recheck = _first_max.top_label_of_probs(
            jnp.asarray(z), jnp.asarray(y), jnp.asarray(z.max(1)), jnp.asarray(z.sum(1))
        )
        logit_top, logit_correct, logit_norm = _first_max.top_label_of_logits(
            jnp.asarray(z), jnp.asarray(y)
        )
    np.testing.assert_array_equal(np.asarray(logit_top), np.asarray(top))
    np.testing.assert_array_equal(np.asarray(logit_correct), np.asarray(correct))
    np.testing.assert_allclose(np.asarray(logit_norm), np.asarray(norm), rtol=1e-6)
    return np.asarray(top), np.asarray(correct), np.asarray(norm), np.asarray(recheck)


@pytest.mark.parametrize("k", [5, 12])
@pytest.mark.parametrize("table", sorted(TABLES))
def test_first_max_matches_numpy_argmax(table, k):
    z, y = _scores(257, k, seed=k)
    top, correct, norm, recheck = _first_max_under(TABLES[table], z, y)
    ref = z.argmax(1) == y  # NumPy's first-maximum rule
    assert ref.any() and (~ref).any() and ((z == z.max(1, keepdims=True)).sum(1) > 1).any()
    np.testing.assert_array_equal(correct, ref)
    np.testing.assert_array_equal(recheck, ref)
    np.testing.assert_array_equal(top, z.max(1))
    np.testing.assert_allclose(norm, np.exp(z - z.max(1, keepdims=True)).sum(1), rtol=1e-6)


def test_metrics_agree_across_tables():
    rng = np.random.default_rng(0)
    z = rng.normal(size=(300, 12)).astype(np.float32)
    z[:40, 3] = z[:40].max(1)  # tied maxima: the tie rule decides these rows
    y = rng.integers(0, 12, 300).astype(np.int32)
    p = np.array(jax.nn.softmax(jnp.asarray(z)))
    p[5] = np.nan  # an invalid row: NaN whatever the path
    results = []
    # The report runs every tuned branch at once: first maximum, AdaECE's selection, scores;
    # ece on probabilities the materialised top-label pass.
    for table in (_tuning.PLAIN, EVERY_BRANCH):
        with _tuning.override(table):
            report = cm.calibration_report(z, y, from_logits=True).to_dict()
            ece = jax.jit(lambda p, y, w: cm.ece(p, y, where=w))
            report["ece_probs"] = float(ece(p, y, np.arange(300) != 5))
            assert np.isnan(float(ece(p, y, np.ones(300, bool))))
            results.append(report)
    assert results[0]["ece"] > 0 and results[0]["ada_ece"] > 0
    # Equal up to float32 rounding (the formulations sum in different orders).
    for name, value in results[0].items():
        np.testing.assert_allclose(results[1][name], value, rtol=2e-6, atol=1e-7, err_msg=name)


def test_label_smoothing_agrees_across_tables():
    from calib_jax import losses

    rng = np.random.default_rng(1)
    z = jnp.asarray(rng.normal(size=(64, 6)).astype(np.float32))
    y = jnp.asarray(rng.integers(0, 6, 64).astype(np.int32))
    loss = jax.jit(lambda z, y: losses.label_smoothing_cross_entropy(z, y, epsilon=0.1))
    tuned = loss(z, y)  # the matrix-vector path on CPU
    with _tuning.override(_tuning.PLAIN):
        plain = loss(z, y)
    np.testing.assert_allclose(np.asarray(tuned), np.asarray(plain), rtol=1e-6)


def test_table_is_keyed_on_the_default_backend(monkeypatch):
    assert _tuning.current() == (_tuning.CPU if jax.default_backend() == "cpu" else _tuning.PLAIN)
    monkeypatch.setattr(jax, "default_backend", lambda: "gpu")
    assert _tuning.current() == _tuning.PLAIN  # unmeasured backends take the plain paths
    with _tuning.override(EVERY_BRANCH):
        assert _tuning.current() == EVERY_BRANCH
    assert _tuning.current() == _tuning.PLAIN


def _awkward_probability_rows():
    """Rows of 12 probabilities: valid ones with exact and near ties of the maximum and -0
    entries, and invalid ones (negative, NaN, -NaN, inf, above 1, unnormalised)."""
    rng = np.random.default_rng(3)
    p = rng.dirichlet(np.ones(12), size=40).astype(np.float32)
    p[0] = 1 / 12  # every entry tied
    p[1, [2, 7]] = p[1].max() + 0.05  # a tie of the maximum, not at column 0
    p[1] /= p[1].sum()
    p[2] = 0.04
    p[2, 6] = 0.3
    p[2, 1] = np.nextafter(np.float32(0.3), np.float32(0))  # an earlier column one ulp below
    p[3, [0, 4]] = [0.0, -0.0]  # -0 is a valid zero
    p[3] /= p[3].sum()
    p[4, 0] = -1e-3
    p[5, 3] = np.nan
    p[6, 3] = np.array(0xFFC00000, np.uint32).view(np.float32)  # NaN with the sign bit
    p[7, 3] = np.inf
    p[8] = 0.0
    p[8, 3] = 1.25
    p[9] *= 1.5
    y = rng.integers(0, 12, 40).astype(np.int32)
    y[:4] = [0, 2, int(p[2].argmax()), int(p[3].argmax())]  # labels on the first maximiser
    valid = np.ones(40, bool)
    valid[4:10] = False
    return p, y, valid


def test_probability_check_by_bits_matches_plain_reductions():
    from calib_jax import _validation
    from calib_jax.metrics import _inputs

    p, y, valid = _awkward_probability_rows()
    out = {}
    for name in ("plain", "every_branch"):
        with _tuning.override(TABLES[name]):
            ok, high, total, bracket = _validation.probability_row_stats(jnp.asarray(p), order=True)
            conf, correct = _inputs._top_label(jnp.asarray(p), jnp.asarray(y), False)
            out[name] = [np.asarray(a) for a in (ok, high, total, conf, correct)]
            assert (bracket is None) == (name == "plain")
    np.testing.assert_array_equal(out["plain"][0], valid)
    np.testing.assert_array_equal(out["every_branch"][0], valid)
    for plain, bits in zip(out["plain"], out["every_branch"], strict=True):
        np.testing.assert_allclose(bits[valid], plain[valid], rtol=1e-6)
    np.testing.assert_array_equal(out["every_branch"][1][valid], p[valid].max(1))
    np.testing.assert_array_equal(out["every_branch"][4][valid], (p.argmax(1) == y)[valid])
    assert out["every_branch"][4][:4].all()  # each label is its row's first maximiser
    assert np.isnan(out["every_branch"][3][~valid]).all()


def test_logit_bracket_on_signed_zeros_ties_and_near_ties():
    # The bit-pattern path keys -0 and +0 alike (NumPy's argmax treats them as equal), orders
    # negative logits, and re-reads rows whose top two lie within its truncation.
    rng = np.random.default_rng(5)
    z = rng.normal(size=(64, 12)).astype(np.float32) * 3
    z[0] = -1.0
    z[0, [2, 5]] = [-0.0, 0.0]  # maximum 0, first attained by -0
    z[1] = -2.0  # all tied
    # The maximum at column 6 and an earlier column one ulp below it, both with the same high
    # bits: the bracket cannot tell them apart and the row is re-read.
    z[2, [6, 1]] = np.array([0x41100010, 0x4110000F], np.uint32).view(np.float32)
    z[3] = -np.abs(z[3])  # negative logits only
    y = np.where(rng.uniform(size=64) < 0.5, z.argmax(1), rng.integers(0, 12, 64))
    y[:4] = [2, 0, int(z[2].argmax()), int(z[3].argmax())]
    ref = z.argmax(1) == y
    for table in (_tuning.PLAIN, EVERY_BRANCH):
        with _tuning.override(table):
            top, correct, _ = _first_max.top_label_of_logits(jnp.asarray(z), jnp.asarray(y))
        np.testing.assert_array_equal(np.asarray(correct), ref)
        np.testing.assert_array_equal(np.asarray(top), z.max(1))
    assert ref[:4].all() and (~ref).any()
