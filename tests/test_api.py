"""The users' API: one signature for every metric, probabilities vs logits, results that read well.

Each test pins a behaviour a user met: a metric whose first argument or options differ from the
others, probabilities passed where logits are expected (confident wrong answers), JAX-internal
error messages, ``state + state`` concatenating tuples.
"""

import functools
import inspect
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj

cm = cj.metrics
M = 10
RNG = np.random.default_rng(0)
Z = (2.5 * RNG.normal(size=(300, 4))).astype(np.float32)
Y = RNG.integers(0, 4, 300)
P = np.asarray(jax.nn.softmax(jnp.asarray(Z)))
ZB = (2.0 * RNG.normal(size=300)).astype(np.float32)
YB = RNG.integers(0, 2, 300)
PB = np.asarray(jax.nn.sigmoid(jnp.asarray(ZB)))

# Public metric functions that take (predictions, labels); the rest are classes or helpers.
METRICS = sorted(
    name
    for name in cm.__all__
    if inspect.isfunction(getattr(cm, name))
    and list(inspect.signature(getattr(cm, name)).parameters)[:2] == ["predictions", "labels"]
)
# Documented exceptions to the shared keywords, with the reason.
NO_FROM_LOGITS_OR_WEIGHTS = {
    # Takes logits by definition (it refits a calibrator on them); see its docstring.
    "calibration_refinement",
}


def test_every_metric_function_has_the_shared_signature():
    functions = [n for n in cm.__all__ if inspect.isfunction(getattr(cm, n))]
    others = set(functions) - set(METRICS) - {"bootstrap", "calibration_refinement"}
    assert not others, f"metrics whose first arguments are not (predictions, labels): {others}"
    for name in METRICS:
        params = inspect.signature(getattr(cm, name)).parameters
        assert params["labels"].kind is inspect.Parameter.POSITIONAL_OR_KEYWORD, name
        if name in NO_FROM_LOGITS_OR_WEIGHTS:
            continue
        for kw in ("from_logits", "where", "weights"):
            assert kw in params, (name, kw)
            assert params[kw].kind is inspect.Parameter.KEYWORD_ONLY, (name, kw)
        assert params["from_logits"].default is False, name
    bootstrap = list(inspect.signature(cm.bootstrap).parameters)
    assert bootstrap[:3] == ["metric", "predictions", "labels"]
    for method, keywords in (
        (cm.CalibrationState.update, ["from_logits", "where", "weights"]),
        (cm.CalibrationState.from_batch, ["from_logits", "where", "weights", "num_bins"]),
    ):
        params = inspect.signature(method).parameters
        positional = [n for n, p in params.items() if p.kind is p.POSITIONAL_OR_KEYWORD]
        assert positional[-2:] == ["predictions", "labels"], method
        assert [n for n, p in params.items() if p.kind is p.KEYWORD_ONLY] == keywords, method


BINNED = {
    "ece": functools.partial(cm.ece, num_bins=M),
    "mce": functools.partial(cm.mce, num_bins=M),
    "lp_ece": functools.partial(cm.lp_ece, num_bins=M, p=2),
    "debiased_l2_ece": functools.partial(cm.debiased_l2_ece, num_bins=M),
    "ada_ece": functools.partial(cm.ada_ece, num_bins=M),
    "classwise_ece": functools.partial(cm.classwise_ece, num_bins=M),
    "reliability_diagram": lambda x, y, **kw: cm.reliability_diagram(x, y, num_bins=M, **kw)[:3],
    "nll": cm.nll,
    "brier": cm.brier,
    "accuracy": cm.accuracy,
    "report": functools.partial(cm.calibration_report, num_bins=M),
}


@pytest.mark.parametrize("binary", [False, True], ids=["multiclass", "binary"])
@pytest.mark.parametrize("name", sorted(BINNED))
def test_from_logits_equals_the_probabilities_path(name, binary):
    z, p, y = (ZB, PB, YB) if binary else (Z, P, Y)
    fn = BINNED[name]
    w = RNG.integers(0, 3, len(y)).astype(np.int32)
    for kw in ({}, {"weights": w}, {"where": w > 0}):
        from_probs = jax.tree.leaves(fn(p, y, **kw))
        from_logits = jax.tree.leaves(fn(z, y, from_logits=True, **kw))
        for a, b in zip(from_probs, from_logits, strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=2e-6, err_msg=f"{name} {kw}")


def test_nll_and_brier_of_probabilities_match_float64():
    p64 = P.astype(np.float64)
    ref_nll = -np.mean(np.log(p64[np.arange(len(Y)), Y]))
    ref_brier = np.mean(np.sum((p64 - np.eye(4)[Y]) ** 2, axis=1))
    np.testing.assert_allclose(cm.nll(P, Y), ref_nll, rtol=1e-5)
    np.testing.assert_allclose(cm.brier(Z, Y, from_logits=True), ref_brier, rtol=1e-5)
    pb = PB.astype(np.float64)
    ref_bce = -np.mean(np.where(YB == 1, np.log(pb), np.log1p(-pb)))
    np.testing.assert_allclose(cm.nll(PB, YB), ref_bce, rtol=1e-5)
    # A zero probability on the label is an infinite NLL, its true value.
    assert np.isinf(cm.nll(np.float32([[1.0, 0.0]]), np.array([1])))


def test_report_and_state_take_weights_as_replication_counts():
    w = RNG.integers(0, 4, len(Y)).astype(np.int32)
    rep = np.repeat(np.arange(len(Y)), w)
    weighted = cm.calibration_report(Z, Y, from_logits=True, weights=w, num_bins=M)
    replicated = cm.calibration_report(Z[rep], Y[rep], from_logits=True, num_bins=M)
    state = cm.CalibrationState.empty(4, num_bins=M).update(P, Y, weights=w).compute()
    for field in weighted._fields:
        np.testing.assert_allclose(
            getattr(weighted, field), getattr(replicated, field), rtol=3e-5, atol=3e-6
        )
        if field != "ada_ece":  # the state's AdaECE is the fine-histogram approximation
            np.testing.assert_allclose(
                getattr(state, field), getattr(replicated, field), rtol=3e-5, atol=3e-6
            )
    with pytest.raises(TypeError, match="integer replication counts"):
        cm.CalibrationState.empty(4).update(P, Y, weights=w.astype(np.float32))


LOGIT_PATHS = {
    "ece": lambda x, y: cm.ece(x, y, from_logits=True),
    "ada_ece": lambda x, y: cm.ada_ece(x, y, from_logits=True),
    "classwise_ece": lambda x, y: cm.classwise_ece(x, y, from_logits=True),
    "nll": lambda x, y: cm.nll(x, y, from_logits=True),
    "report": lambda x, y: cm.calibration_report(x, y, from_logits=True),
    "state": lambda x, y: cm.CalibrationState.empty(4).update(x, y, from_logits=True),
    "cross_entropy": cj.losses.cross_entropy,
    "focal_loss": cj.losses.focal_loss,
    "temperature_scaling.fit": cj.calibrators.temperature_scaling().fit,
}


@pytest.mark.parametrize("name", sorted(LOGIT_PATHS))
def test_probabilities_passed_as_logits_raise(name):
    with pytest.raises(ValueError, match="look like probabilities"):
        LOGIT_PATHS[name](P, Y)
    # Log-probabilities are valid logits and pass.
    jax.block_until_ready(LOGIT_PATHS[name](np.log(P), Y))
    # Under jit nothing is checked on values (no host round trip): the check is eager only,
    # also for concrete logits closed over inside jit.
    if name != "state":
        jax.block_until_ready(jax.jit(LOGIT_PATHS[name])(P, Y))
        jax.block_until_ready(jax.jit(lambda y: LOGIT_PATHS[name](np.log(P), y))(Y))
        jax.block_until_ready(jax.jit(lambda y: LOGIT_PATHS[name](P, y))(Y))


def test_not_probabilities_error_names_the_row_and_suggests_from_logits():
    x = P.copy()
    x[7] = Z[7]
    with pytest.raises(ValueError, match=r"row 7 has sum .*from_logits=True"):
        cm.ece(x, Y)
    with pytest.raises(ValueError, match=r"row 7 has sum"):
        cm.calibration_report(x, Y)


def test_traced_from_logits_says_it_must_be_static():
    for fn in (cm.ece, cm.nll, cm.calibration_report, cm.classwise_ece, cm.accuracy):
        with pytest.raises(TypeError, match="from_logits must be a static Python bool"):
            jax.jit(fn)(Z, Y, from_logits=True)
    ok = jax.jit(cm.ece, static_argnames="from_logits")(Z, Y, from_logits=True)
    np.testing.assert_allclose(ok, cm.ece(P, Y), rtol=1e-5)


def test_checked_inside_jit_says_how_to_compose():
    with pytest.raises(TypeError, match=r"checked\(jax.jit\(fn\)\)"):
        jax.jit(cj.validation.checked(cm.ece))(P, Y)
    with pytest.raises(Exception, match="labels must lie in"):
        cj.validation.checked(jax.jit(cm.ece))(P, np.where(Y == 0, 9, Y))


def test_bool_labels_are_binary_class_indices():
    yb = YB.astype(bool)
    for name in ("ece", "nll", "brier", "accuracy", "classwise_ece", "ada_ece", "report"):
        a = jax.tree.leaves(BINNED[name](PB, yb))
        b = jax.tree.leaves(BINNED[name](PB, YB))
        for x, y in zip(a, b, strict=True):
            np.testing.assert_array_equal(x, y, err_msg=name)
    z2 = np.stack([np.zeros_like(ZB), ZB], axis=-1)
    np.testing.assert_array_equal(cj.losses.cross_entropy(z2, yb), cj.losses.cross_entropy(z2, YB))
    ts = cj.calibrators.temperature_scaling()
    np.testing.assert_array_equal(ts.fit(z2, yb).temperature, ts.fit(z2, YB).temperature)


def test_state_addition_merges_and_results_read_well():
    a = cm.CalibrationState.from_batch(P[:100], Y[:100], num_bins=M)
    b = cm.CalibrationState.from_batch(P[100:], Y[100:], num_bins=M)
    merged = a.merge(b)
    for x, y in zip(jax.tree.leaves(a + b), jax.tree.leaves(merged), strict=True):
        np.testing.assert_array_equal(x, y)
    for x, y in zip(jax.tree.leaves(sum([a, b])), jax.tree.leaves(merged), strict=True):
        np.testing.assert_array_equal(x, y)
    with pytest.raises(TypeError):
        a + tuple(b)
    with pytest.raises(TypeError, match="cannot be repeated"):
        a * 2
    report = cm.calibration_report(P, Y, num_bins=M)
    d = merged.to_dict()
    assert list(d) == list(report._fields)
    assert all(isinstance(v, float) for v in d.values())
    np.testing.assert_allclose(d["ece"], report.ece, rtol=1e-6)
    text = str(merged)
    assert text.startswith("CalibrationState(300 samples, 4 classes, 10 bins)")
    assert re.search(rf"\n  ece +{float(report.ece):.6g}\n", str(report))


def test_report_and_state_split_the_ece_into_over_and_under_confidence():
    for x, y, kw in ((P, Y, {}), (Z, Y, {"from_logits": True}), (PB, YB, {})):
        report = cm.calibration_report(x, y, num_bins=M, **kw)
        np.testing.assert_allclose(
            report.overconfidence_error + report.underconfidence_error, report.ece, atol=1e-6
        )
        np.testing.assert_allclose(
            report.overconfidence_error, cm.overconfidence_error(x, y, num_bins=M, **kw), atol=1e-7
        )
        np.testing.assert_allclose(
            report.underconfidence_error,
            cm.underconfidence_error(x, y, num_bins=M, **kw),
            atol=1e-7,
        )
        k = 2 if x.ndim == 1 else x.shape[1]
        state = cm.CalibrationState.empty(k, num_bins=M)
        for i in range(0, len(y), 64):
            state = state.update(x[i : i + 64], y[i : i + 64], **kw)
        streamed = state.compute()
        for field in ("overconfidence_error", "underconfidence_error"):
            np.testing.assert_allclose(
                getattr(streamed, field), getattr(report, field), atol=1e-6, err_msg=field
            )


def test_calibrate_and_report_returns_a_named_result():
    ts = cj.calibrators.temperature_scaling()
    result = cj.calibrators.calibrate_and_report(ts, Z[:150], Y[:150], Z[150:], Y[150:])
    assert isinstance(result, cj.calibrators.CalibrationResult)
    before, after, params = result
    assert result.before is before and result.params is params
    np.testing.assert_allclose(before.ece, cm.ece(Z[150:], Y[150:], from_logits=True), rtol=1e-5)
    np.testing.assert_allclose(after.accuracy, before.accuracy)
