"""Sharded = unsharded: per-device states psum-merged over 8 virtual CPU devices."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

from calib_jax import metrics as cm

pytestmark = pytest.mark.skipif(
    jax.device_count() < 8, reason="needs 8 devices (conftest sets XLA_FLAGS)"
)


def _mesh():
    # jax 0.10 defaults make_mesh to Explicit axes; Auto lets plain jit consume the sharding.
    return jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))


def test_psum_of_per_device_states_equals_one_device():
    rng = np.random.default_rng(0)
    n, k = 8 * 500, 10
    z = jnp.asarray((rng.normal(size=(n, k)) * 3).astype(np.float32))
    y = jnp.asarray(rng.integers(0, k, n).astype(np.int32))
    mesh = _mesh()

    def per_device(z, y):
        state = cm.CalibrationState.from_batch(z, y, from_logits=True)
        return jax.lax.psum(state, "data")

    sharded = jax.jit(
        jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
    )
    state = sharded(z, y)
    got = state.compute()
    p = jax.nn.softmax(z)
    np.testing.assert_allclose(got.ece, cm.ece(p, y), atol=1e-6)
    np.testing.assert_allclose(got.mce, cm.mce(p, y), atol=1e-6)
    np.testing.assert_allclose(got.classwise_ece, cm.classwise_ece(p, y), atol=1e-6)
    np.testing.assert_array_equal(state.count, cm.reliability_diagram(p, y).count)
    assert float(got.accuracy) == float(cm.accuracy(p, y))


def test_jit_of_metrics_on_sharded_input_equals_unsharded():
    rng = np.random.default_rng(1)
    n, k = 8 * 250, 5
    p = jax.nn.softmax(jnp.asarray(rng.normal(size=(n, k)).astype(np.float32) * 2))
    y = jnp.asarray(rng.integers(0, k, n).astype(np.int32))
    mesh = _mesh()
    ps = jax.device_put(p, NamedSharding(mesh, P("data")))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    for fn in (cm.ece, cm.mce, cm.classwise_ece, cm.ada_ece):
        np.testing.assert_allclose(jax.jit(fn)(ps, ys), fn(p, y), atol=1e-6)
    r = jax.jit(functools.partial(cm.calibration_report, from_logits=True))(jnp.log(ps), ys)
    np.testing.assert_allclose(r.ece, cm.ece(p, y), atol=1e-6)


def test_sharded_large_n_ada_ece_and_report_equal_unsharded():
    # N >= 2^15 takes the radix-select AdaECE (scatters into replicated histograms); under jit
    # on an input sharded over 8 devices it must give the one-device value.
    rng = np.random.default_rng(2)
    n, k = 2**15, 4
    z = jnp.asarray((rng.normal(size=(n, k)) * 2).astype(np.float32))
    y = jnp.asarray(rng.integers(0, k, n).astype(np.int32))
    mesh = _mesh()
    zs = jax.device_put(z, NamedSharding(mesh, P("data")))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    p = jax.nn.softmax(z)
    expected = float(cm.ada_ece(p, y))
    np.testing.assert_allclose(
        float(jax.jit(cm.ada_ece)(jax.nn.softmax(zs), ys)), expected, atol=1e-6
    )
    r = jax.jit(functools.partial(cm.calibration_report, from_logits=True))(zs, ys)
    np.testing.assert_allclose(float(r.ada_ece), expected, atol=1e-6)


def test_sharded_fine_histogram_estimates_and_smooth_ece_state_equal_one_device():
    rng = np.random.default_rng(3)
    n = 8 * 500
    p = jnp.asarray(rng.beta(4, 2, size=n).astype(np.float32))
    y = jnp.asarray((rng.random(n) < np.asarray(p)).astype(np.int32))
    mesh = _mesh()

    def per_device(p, y):
        states = cm.CalibrationState.from_batch(p, y), cm.SmoothECEState.from_batch(p, y)
        return jax.lax.psum(states, "data")

    sharded = jax.jit(
        jax.shard_map(per_device, mesh=mesh, in_specs=(P("data"), P("data")), out_specs=P())
    )
    state, smooth = sharded(p, y)
    one = cm.CalibrationState.from_batch(p, y)
    # The KS, ECE-sweep and selective estimates are functions of these three arrays only (their
    # streamed-vs-exact bounds are tests/test_metrics_streaming.py's): equal arrays, equal values.
    np.testing.assert_array_equal(state.fine_count, one.fine_count)
    np.testing.assert_array_equal(state.fine_correct, one.fine_correct)
    np.testing.assert_allclose(state.fine_confidence, one.fine_confidence, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(state.ks_error(), one.ks_error(), atol=1e-6)
    # The smooth ECE reads only the grid: the psum of the shards' grids is the one-device grid.
    np.testing.assert_allclose(smooth.grid, cm.SmoothECEState.from_batch(p, y).grid, atol=1e-5)
    np.testing.assert_allclose(float(jnp.sum(smooth.grid[:, 1])), n, rtol=1e-6)
