"""Streaming CalibrationState: batches merged = one shot, exact counts, AdaECE error bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib_jax import metrics as cm
from calib_jax.metrics import _fine, _streaming


def _data(n, k, seed, scale=3.0):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * scale).astype(np.float32)
    y = np.where(rng.random(n) < 0.6, z.argmax(1), rng.integers(0, k, n)).astype(np.int32)
    return jnp.asarray(z), jnp.asarray(y)


def test_one_thousand_streamed_batches_equal_one_shot():
    n_batches, b, k = 1000, 64, 10
    z, y = _data(n_batches * b, k, seed=0)
    p = jax.nn.softmax(z)

    @jax.jit
    def stream(p, y):
        def step(state, batch):
            return state.update(*batch), None

        batches = (p.reshape(n_batches, b, k), y.reshape(n_batches, b))
        state, _ = jax.lax.scan(step, cm.CalibrationState.empty(k), batches)
        return state

    state = stream(p, y)
    got = state.compute()
    tol = dict(atol=1e-6, rtol=0)
    np.testing.assert_allclose(got.ece, cm.ece(p, y), **tol)
    np.testing.assert_allclose(got.mce, cm.mce(p, y), **tol)
    np.testing.assert_allclose(got.classwise_ece, cm.classwise_ece(p, y), **tol)
    np.testing.assert_allclose(got.brier, cm.brier(p, y), rtol=1e-6)
    np.testing.assert_allclose(got.nll, cm.nll(z, y, from_logits=True), rtol=1e-5)
    assert float(got.accuracy) == float(cm.accuracy(p, y))
    one = cm.reliability_diagram(p, y)
    streamed = state.reliability_diagram()
    np.testing.assert_array_equal(streamed.count, one.count)
    np.testing.assert_allclose(streamed.confidence, one.confidence, rtol=1e-6)
    # The same from logits, and the streamed AdaECE within its documented bound.
    from_logits = jax.jit(
        lambda z, y: jax.lax.scan(
            lambda s, bt: (s.update(*bt, from_logits=True), None),
            cm.CalibrationState.empty(k),
            (z.reshape(n_batches, b, k), y.reshape(n_batches, b)),
        )[0]
    )(z, y)
    np.testing.assert_allclose(from_logits.compute().ece, cm.ece(p, y), **tol)
    exact_ada = float(cm.ada_ece(p, y))
    bound = float(state.ada_ece_error_bound())
    assert abs(float(got.ada_ece) - exact_ada) <= bound + 1e-6
    assert bound < 5e-3


def test_merge_is_associative_with_empty_identity_and_handles_masks():
    z, y = _data(300, 4, seed=1)
    p = jax.nn.softmax(z)
    a = cm.CalibrationState.from_batch(p[:100], y[:100])
    b = cm.CalibrationState.from_batch(p[100:200], y[100:200])
    c = cm.CalibrationState.from_batch(p[200:], y[200:])
    left, right = a.merge(b).merge(c), a.merge(b.merge(c))
    for x, w in zip(jax.tree.leaves(left.compute()), jax.tree.leaves(right.compute()), strict=True):
        np.testing.assert_allclose(x, w, atol=1e-7)
    np.testing.assert_array_equal(a.merge(cm.CalibrationState.empty(4)).count, a.count)
    mask = np.arange(300) % 4 != 0
    masked = cm.CalibrationState.from_batch(p, y, where=jnp.asarray(mask)).compute()
    ref = cm.calibration_report(z[mask], y[mask], from_logits=True)
    for name in ("ece", "mce", "classwise_ece", "brier", "accuracy", "l2_ece", "debiased_l2_ece"):
        np.testing.assert_allclose(getattr(masked, name), getattr(ref, name), atol=1e-6)
    with pytest.raises(ValueError, match="different"):
        a.merge(cm.CalibrationState.empty(4, num_bins=10))
    with pytest.raises(ValueError, match="classes"):
        cm.CalibrationState.empty(3).update(p, y)


def test_counts_are_exact_beyond_two_to_the_24():
    # float32 cannot count past 2^24: 2^25 + 1 rounds to 2^25.
    assert np.float32(2**25) + np.float32(1) == np.float32(2**25)
    n = 2**25 + 1
    p = jnp.full((n,), 0.7, jnp.float32)
    y = jnp.ones((n,), jnp.int32)
    d = jax.jit(cm.reliability_diagram)(p, y)
    assert int(d.count[10]) == n and int(d.count.sum()) == n
    # Streaming: doubling a state 25 times then adding one sample.
    s = cm.CalibrationState.from_batch(jnp.float32([[0.2, 0.8]]), jnp.array([1]))
    one = s
    for _ in range(25):
        s = s.merge(s)
    s = s.merge(one)
    assert int(s.count.sum()) == n and int(s.correct.sum()) == n and int(s.hits) == n
    np.testing.assert_allclose(s.compute().ece, 0.2, atol=1e-6)


def test_ada_bound_holds_on_adversarial_and_tied_data():
    rng = np.random.default_rng(3)
    # Confidences packed into few fine buckets (many ties, mixed correctness) stress the bound.
    conf = rng.choice(np.float32([0.9, 0.95, 0.97, 0.99]), size=3001)
    y = (rng.random(3001) < conf).astype(np.int32)
    p, yj = jnp.asarray(conf), jnp.asarray(y)
    s = cm.CalibrationState.from_batch(p, yj)
    exact = float(cm.ada_ece(p, yj))
    got = float(s.compute().ada_ece)
    bound = float(s.ada_ece_error_bound())
    assert abs(got - exact) <= bound + 1e-6
    assert bound > 0  # boundaries fall inside tied buckets here
    # Continuous confidences: the bound is small and the approximation well within it.
    z, y2 = _data(20000, 10, seed=4)
    p2 = jax.nn.softmax(z)
    s2 = cm.CalibrationState.from_batch(p2, y2)
    bound2 = float(s2.ada_ece_error_bound())
    assert abs(float(s2.compute().ada_ece) - float(cm.ada_ece(p2, y2))) <= bound2 + 1e-6
    assert bound2 < 3e-3


def test_fine_buckets_are_monotone_and_cover_the_unit_interval():
    c = np.sort(np.concatenate([np.random.default_rng(0).random(5000), [0, 1e-30, 0.5, 1]]))
    c = np.unique(np.concatenate([c, [np.nextafter(np.float32(0.5), 1), np.float32(1 - 2**-24)]]))
    b = np.asarray(_streaming.fine_bucket(jnp.asarray(c, jnp.float32)))
    assert np.all(np.diff(b) >= 0)
    assert b.min() == 0 and b.max() == _streaming.NUM_FINE - 1
    width = _streaming._fine_width()
    # Every value lies within its bucket's width of the other values in the same bucket.
    for bucket in np.unique(b):
        vals = c[b == bucket]
        assert vals.max() - vals.min() <= width[bucket]


def test_streaming_compute_is_nan_in_every_field_after_an_invalid_sample():
    z, y = _data(50, 4, seed=3)
    p = jax.nn.softmax(z)

    def run(x, labels, from_logits):
        state = cm.CalibrationState.empty(4).update(x[:25], labels[:25], from_logits=from_logits)
        state = state.update(x[25:], labels[25:], from_logits=from_logits)
        return state.compute(), state.reliability_diagram()

    run = jax.jit(run, static_argnums=2)
    ok, _ = run(p, y, False)
    assert np.all(np.isfinite(np.asarray(ok)))
    bad_inputs = [
        (p, y.at[30].set(9), False),
        (z, y.at[30].set(-2), True),
        (z.at[30, 0].set(jnp.nan), y, True),
        (0.5 * p, y, False),
        (p.at[30, 0].set(-0.3), y, False),
        (p.at[30, 1].set(jnp.nan), y, False),
    ]
    for x, labels, from_logits in bad_inputs:
        report, diagram = run(x, labels, from_logits)
        assert np.all(np.isnan(np.asarray(report))), report
        assert np.all(np.isnan(diagram.accuracy)) and np.all(np.isnan(diagram.confidence))
    # Binary [N] probabilities outside [0, 1].
    pb, yb = p[:, 0], (y == 0).astype(jnp.int32)
    binary = jax.jit(lambda x, t: cm.CalibrationState.from_batch(x, t).compute())
    assert np.all(np.isfinite(np.asarray(binary(pb, yb))))
    assert np.all(np.isnan(np.asarray(binary(pb - 0.5, yb))))
    # A masked invalid row is exempt.
    masked = cm.CalibrationState.from_batch(p.at[0].set(-1.0), y, where=jnp.arange(50) > 0)
    expected = cm.CalibrationState.from_batch(p[1:], y[1:]).compute()
    np.testing.assert_allclose(np.asarray(masked.compute()), np.asarray(expected), rtol=1e-6)


def _binary(n, seed, tied):
    rng = np.random.default_rng(seed)
    if tied:
        # Few distinct confidences, mixed correctness: boundaries fall inside crowded buckets.
        conf = rng.choice(np.float32([0.4, 0.6, 0.7, 0.9, 0.95, 0.99, 1.0]), size=n)
    else:
        conf = rng.beta(4, 2, size=n).astype(np.float32)
    accuracy = np.clip(conf + 0.1 * (conf - 0.6), 0, 1) - (0.05 if tied else 0)
    y = (rng.random(n) < accuracy).astype(np.int32)
    return jnp.asarray(conf), jnp.asarray(y)


def test_fine_histogram_ks_sweep_and_selective_curves_lie_within_their_bounds():
    # Binary positive-class input (the state's convention) of one shape for both data sets.
    # (Streamed = one-shot histograms is tested above: the fine sums add exactly.)
    n = 4000
    p, y = _binary(n, seed=5, tied=False)
    state = cm.CalibrationState.from_batch(p, y)
    pt, yt = _binary(n, seed=6, tied=True)
    tied = cm.CalibrationState.from_batch(pt, yt)
    for s, x, labels in ((state, p, y), (tied, pt, yt)):
        ks, ks_bound = s.ks_error()
        exact_ks = float(cm.ks_error(x, labels))
        # The bucket ends give a lower bound of the exact KS.
        assert float(ks) - 1e-6 <= exact_ks <= float(ks) + float(ks_bound) + 1e-6
        estimates = {
            "ece_sweep": (s.ece_sweep(), cm.ece_sweep(x, labels)),
            "aurc": (s.aurc(), cm.aurc(x, labels)),
            "augrc": (s.augrc(), cm.augrc(x, labels)),
            "risk": (s.selective_risk(0.37), cm.selective_risk(x, labels, coverage=0.37)),
            "coverage": (s.coverage_at_risk(0.2), cm.coverage_at_risk(x, labels, risk=0.2)),
        }
        for name, ((value, bound), exact) in estimates.items():
            assert abs(float(value) - float(exact)) <= float(bound) + 1e-6, name
    # Continuous confidences: every bound is far below the value it bounds.
    for value, bound in (state.ks_error(), state.aurc(), state.augrc(), state.ece_sweep()):
        assert float(bound) < 0.02 * float(value)
    assert 0 < float(state.coverage_at_risk(0.2)[1]) < 0.02 * float(state.coverage_at_risk(0.2)[0])
    # Tied confidences: boundaries inside crowded mixed buckets give non-zero bounds.
    assert float(tied.aurc()[1]) > 0 and float(tied.selective_risk(0.37)[1]) > 0
    # vmap over stacked states equals each state alone.
    stacked = jax.tree.map(lambda a, b: jnp.stack([a, b]), state, tied)

    def read(s):
        return s.ks_error(), s.augrc(), s.aurc(), s.selective_risk(0.37), s.coverage_at_risk(0.2)

    both = jax.vmap(read)(stacked)
    for i, s in enumerate((state, tied)):
        alone = read(s)
        np.testing.assert_allclose(
            np.asarray(jax.tree.leaves(both))[:, i], np.asarray(jax.tree.leaves(alone)), rtol=1e-6
        )
    # An invalid sample leaves a NaN confidence sum in the state: every estimate is NaN.
    bad = state._replace(fine_confidence=state.fine_confidence.at[40000].set(jnp.nan))
    for value, bound in (bad.ks_error(), bad.aurc(), bad.coverage_at_risk(0.2), bad.ece_sweep()):
        assert np.isnan(float(value)) and np.isnan(float(bound))
    with pytest.raises(ValueError, match="coverage"):
        state.selective_risk(0.0)
    with pytest.raises(ValueError, match="p must"):
        state.ece_sweep(p=0.5)


def test_fine_bucket_edges_contain_their_confidences():
    c = np.random.default_rng(7).random(20000).astype(np.float32)
    c = np.concatenate([c, np.float32([0, 1e-30, 0.5, 1, 1 - 2**-24])])
    b = np.asarray(_streaming.fine_bucket(jnp.asarray(c)))
    lo = np.asarray(_streaming._fine_lo())
    _, hi = _fine.bucket_edges(_streaming.FINE_BITS, _streaming._EXP_LO, _streaming._HALF)
    assert np.all(lo[b] <= c) and np.all(c <= hi[b])


def test_smooth_ece_state_streamed_equals_one_shot():
    z, y = _data(6000, 10, seed=8)
    state = sum(
        cm.SmoothECEState.from_batch(z[i : i + 1500], y[i : i + 1500], from_logits=True)
        for i in range(0, 6000, 1500)
    )
    for bandwidth in (None, 0.05):
        np.testing.assert_allclose(
            state.compute(bandwidth=bandwidth),
            cm.smooth_ece(z, y, from_logits=True, bandwidth=bandwidth),
            atol=1e-6,
        )
    diagram = state.reliability_diagram(bandwidth=0.05, num_points=50)
    one = cm.smooth_reliability_diagram(z, y, bandwidth=0.05, from_logits=True, num_points=50)
    np.testing.assert_allclose(diagram.curve, one.curve, atol=1e-5)
    # Masks (padding) and the empty identity; an invalid unmasked label poisons the state.
    mask = jnp.arange(6000) % 3 > 0
    masked = cm.SmoothECEState.empty().update(z, y, from_logits=True, where=mask)
    np.testing.assert_allclose(
        masked.compute(), cm.smooth_ece(z, y, from_logits=True, where=mask), atol=1e-6
    )
    assert np.isnan(float(cm.SmoothECEState.empty().compute()))
    batch = jax.jit(lambda z, y: cm.SmoothECEState.from_batch(z, y, from_logits=True))
    assert np.isnan(float(batch(z[:1500], y[:1500].at[3].set(10)).compute()))
    with pytest.raises(ValueError, match="labels must lie"):
        cm.SmoothECEState.from_batch(z[:1500], y[:1500].at[3].set(10), from_logits=True)
    with pytest.raises(TypeError, match="merge"):
        state.merge(cm.CalibrationState.empty(10))
