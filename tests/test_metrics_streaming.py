"""Streaming CalibrationState: batches merged = one shot, exact counts, AdaECE error bound."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from calib_jax import metrics as cm
from calib_jax.metrics import _streaming


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
