"""AdaFocal (state, validation sums, update rule, loss) against float64 NumPy references that
transcribe the authors' code, 3mcloud/adafocal @ f2c6ca0:

* ``losses/adafocal.py`` lines 33-50 (``update_bin_stats``: the γ update, the switch to inverse
  focal, the clip, the new bin boundaries), 59-72 (``get_gamma_per_sample``: the bin of each
  sample's ``pt``) and 81-92 (``forward``: ``-(1 - sign(γ)·pt + 1e-20)^|γ| · log pt``);
* ``utils/metrics.py`` lines 106-146 (``adaECE_error_mukhoti``: interpolated equal-mass edges,
  ``(lo, hi]`` bins, ``calibration_gap = avg confidence - accuracy``), which ``update_bin_stats``
  reads through ``utils/eval_utils.py`` line 11;
* ``main.py`` lines 53-58 (defaults: 15 bins, λ = 1, initial γ = 1, γ in [-2, 20], switch 0.2).
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import calib_jax as cj
from calib_jax import losses as L
from calib_jax.metrics import BinSums

GAMMA = np.array([5.0, 3.0, 0.5, 0.0, -0.2, -2.0], np.float32)
EDGES = np.array([0.1, 0.25, 0.4, 0.4, 0.7], np.float32)  # a repeated edge: bin 3 is empty
STATE = L.AdaFocalState(jnp.asarray(GAMMA), jnp.asarray(EDGES))


def make_inputs(shape, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(0, scale, shape), jnp.float32)
    y = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]), jnp.int32)
    return z, y


def np_log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def ref_bin(pt, edges, num_bins):
    # losses/adafocal.py lines 59-72: the first bin whose [lower, upper) holds pt; the first bin
    # is open below and the last open above (lines 65, 67). Boundaries: lines 28-29 and 49-50.
    lowers, uppers = [0.0, *edges], [*edges, 1.0]
    for b in range(num_bins):
        if b == 0 and pt < uppers[0]:
            return b
        if b == num_bins - 1 and pt >= lowers[b]:
            return b
        if lowers[b] <= pt < uppers[b]:
            return b
    return num_bins - 1


def ref_loss(z, y, gamma, edges):
    """Float64 value and hand-derived gradient (w.r.t. the logits) of the authors' forward."""
    z = np.asarray(z, np.float64)
    lp = np_log_softmax(z)
    onehot = (np.asarray(y)[:, None] == np.arange(z.shape[1])).astype(np.float64)
    lp_y = (onehot * lp).sum(-1)
    pt = np.exp(lp_y)
    g = np.array([gamma[ref_bin(p, [float(e) for e in edges], len(gamma))] for p in pt], float)
    s, a = np.sign(g), np.abs(g)
    base = 1 - s * pt + 1e-20  # line 90
    w = base**a
    value = -w * lp_y
    d_lp = -(w + lp_y * a * base ** (a - 1) * (-s) * pt)  # d value / d log pt
    return value, d_lp[:, None] * (onehot - np.exp(lp)), g


# ----------------------------------------------------------------------------- the loss


@jax.jit
def _values_and_grads(z, y, state):
    """Per-example values and gradients (w.r.t. the logits and the state), vmapped over rows."""

    def one(z, y, state):
        return L.adafocal_loss(z, y, state=state)

    value, (dz, ds) = jax.vmap(jax.value_and_grad(one, argnums=(0, 2)), (0, 0, None))(z, y, state)
    return value, dz, ds.gamma.sum(0)


Z, Y = make_inputs((256, 10), seed=1, scale=2.0)


def test_loss_matches_float64_reference_of_the_authors_forward():
    value, grad, _ = _values_and_grads(Z, Y, STATE)
    ref_value, ref_grad, g = ref_loss(Z, Y, GAMMA, EDGES)
    assert set(g) == set(GAMMA) - {0.0}  # every populated bin, both signs, is exercised
    np.testing.assert_allclose(value, ref_value, rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(grad, ref_grad, rtol=1e-4, atol=1e-6)
    # One γ everywhere: γ = 0 is cross-entropy, γ > 0 focal loss, γ < 0 inverse focal.
    for flat in (0.0, 2.5, -1.5):
        state = L.AdaFocalState(jnp.full(6, flat, jnp.float32), STATE.edges)
        value_flat, grad_flat, _ = _values_and_grads(Z, Y, state)
        ref_value, ref_grad, _ = ref_loss(Z, Y, np.full(6, flat), EDGES)
        np.testing.assert_allclose(value_flat, ref_value, rtol=2e-5, atol=1e-7, err_msg=flat)
        np.testing.assert_allclose(grad_flat, ref_grad, rtol=1e-4, atol=1e-6, err_msg=flat)
    # Autograd of the authors' forward (lines 81-92, run in float64 PyTorch) on the same input.
    torch = pytest.importorskip("torch")
    zt = torch.tensor(np.asarray(Z), dtype=torch.float64, requires_grad=True)
    labels = torch.tensor(np.asarray(Y), dtype=torch.long)[:, None]
    logpt = torch.nn.functional.log_softmax(zt, dim=1).gather(1, labels).view(-1)
    pt = logpt.exp()
    gt = torch.tensor(g, dtype=torch.float64)
    theirs = (-1 * ((1 - torch.sign(gt) * pt + 1e-20) ** torch.abs(gt)) * logpt).sum()
    theirs.backward()
    np.testing.assert_allclose(float(value.sum()), theirs.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-4, atol=1e-6)


def test_finite_gradients_at_extreme_logits_and_masks():
    big = jnp.array([[3e38, -3e38, 0.0], [-3e38, 3e38, 0.0], [1e4, 0.0, -1e4], [0.0, 0.0, 0.0]])
    labels = jnp.array([0, 0, 0, 2])
    edges = jnp.array([0.2, 0.5, 0.8])
    for g in (0.3, 3.0, -0.5, -2.0):
        state = L.AdaFocalState(jnp.full((4,), g, jnp.float32), edges)
        loss, grad, d_gamma = _values_and_grads(big, labels, state)
        assert np.isfinite(np.asarray(grad)).all() and np.isfinite(np.asarray(d_gamma)).all(), g
        assert np.isinf(loss[1]) and np.isfinite(np.asarray(loss)[[0, 2, 3]]).all()  # p_y = 0
    _, _, d_gamma = _values_and_grads(Z, Y, STATE)
    assert np.isfinite(np.asarray(d_gamma)).all() and np.abs(np.asarray(d_gamma)).max() > 1e-3
    with jax.enable_x64(True):
        state = L.AdaFocalState(jnp.asarray(GAMMA, jnp.float64), jnp.asarray(EDGES, jnp.float64))
        z = jnp.asarray(Z[:6, :4], jnp.float64)
        check_grads(jax.jit(lambda z: L.adafocal_loss(z, Y[:6] % 4, state=state)), (z,), order=1)
    mask = jnp.arange(256) % 3 != 0
    z_pad, y_pad = jnp.where(mask[:, None], Z, jnp.nan), jnp.where(mask, Y, -1)

    @jax.jit
    def masked(z, y):
        loss = L.adafocal_loss(z, y, state=STATE, where=mask)
        return loss, jax.grad(lambda z: L.adafocal_loss(z, y, state=STATE, where=mask).sum())(z)

    loss, grad = masked(z_pad, y_pad)
    np.testing.assert_allclose(loss, jnp.where(mask, _values_and_grads(Z, Y, STATE)[0], 0))
    assert np.isfinite(np.asarray(grad)).all() and (np.asarray(grad)[~np.asarray(mask)] == 0).all()


# ----------------------------------------------------------------------------- validation sums


def ref_validation_bins(conf, correct, num_bins):
    # utils/metrics.py lines 106-146 in float64: np.interp edges (line 109), (lo, hi] (line 127),
    # per-bin count, correct predictions and confidence sum.
    n = len(conf)
    edges = np.interp(np.linspace(0, n, num_bins + 1), np.arange(n), np.sort(conf))
    count, hits, conf_sum = [], [], []
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi)
        count.append(inside.sum())
        hits.append(correct[inside].sum())
        conf_sum.append(conf[inside].sum())
    return np.array(count), np.array(hits), np.array(conf_sum), edges


_validation_sums = jax.jit(L.adafocal_validation_sums, static_argnames="num_bins")


def test_validation_sums_match_the_authors_equal_mass_bins():
    n = 150  # 10·15: every edge is a sample exactly; the masked subset (112) interpolates
    z, y = make_inputs((n, 10), seed=n, scale=2.0)
    # Ties, and ties at the smallest confidence: those samples fall below the first bin.
    z = z.at[5:9].set(z[4]).at[20:23].set(jnp.zeros(10).at[0].set(-5.0))
    conf = np.asarray(jnp.max(jax.nn.softmax(z), axis=-1), np.float64)  # float32 confidences
    correct = (np.asarray(z).argmax(-1) == np.asarray(y)).astype(np.float64)
    for keep in (np.ones(n, bool), np.arange(n) % 4 != 1):
        sums, edges = _validation_sums(z, y, where=jnp.asarray(keep))
        count, hits, conf_sum, ref_edges = ref_validation_bins(conf[keep], correct[keep], 15)
        assert count.sum() < keep.sum()  # the minimum's ties were dropped, as by the authors
        np.testing.assert_array_equal(sums.count, count)
        np.testing.assert_array_equal(sums.correct, hits)
        np.testing.assert_allclose(sums.confidence, conf_sum, rtol=1e-6)
        np.testing.assert_allclose(edges, ref_edges[1:-1], rtol=1e-6)


# ----------------------------------------------------------------------------- the update


def ref_update(gamma, gaps, lam=1.0, gamma_min=-2.0, gamma_max=20.0, switch_pt=0.2):
    # losses/adafocal.py lines 34-48, in Python floats.
    out = []
    for prev_gamma, exp_term in zip(gamma, gaps, strict=True):
        if prev_gamma > 0:
            next_gamma = prev_gamma * np.exp(lam * exp_term)
        else:
            next_gamma = prev_gamma * np.exp(-lam * exp_term)
        if abs(next_gamma) < switch_pt:
            next_gamma = -switch_pt if next_gamma > 0 else switch_pt
        out.append(max(min(next_gamma, gamma_max), gamma_min))
    return np.array(out)


def test_update_follows_the_authors_rule_over_epochs():
    rng = np.random.default_rng(0)
    state = L.adafocal_init()
    np.testing.assert_array_equal(state.gamma, np.ones(15))
    np.testing.assert_allclose(state.edges, np.arange(1, 15) / 15, rtol=1e-7)
    gamma = np.ones(15)
    update = jax.jit(L.adafocal_update)
    signs_seen = set()
    for epoch in range(12):
        count = rng.integers(0, 40, 15).astype(np.int32)
        count[epoch % 15] = 0  # an empty bin: gap 0
        # Over-confident bins first, then under-confident ones: γ falls through the switch.
        correct = rng.binomial(count, 0.3 if epoch < 3 else 0.97).astype(np.int32)
        conf = count * rng.uniform(0.3, 1.0, 15)
        edges = np.sort(rng.uniform(0, 1, 14)).astype(np.float32)
        state = update(state, BinSums(count, correct, jnp.asarray(conf, jnp.float32)), edges=edges)
        gap = np.where(count > 0, (conf.astype(np.float32) - correct) / np.maximum(count, 1), 0.0)
        gamma = ref_update(gamma, gap)
        np.testing.assert_allclose(state.gamma, gamma, rtol=1e-5, atol=1e-6)
        np.testing.assert_array_equal(state.edges, edges)
        signs_seen |= set(np.sign(gamma))
    assert signs_seen == {-1.0, 1.0}  # both sides of the switch were reached
    # Other hyperparameters, and the clip at both ends.
    gaps = np.array([0.9, -0.9, 0.05, -0.05, 0.0])
    start = np.array([15.0, -1.5, 0.21, -0.21, 0.0])
    sums = BinSums(np.full(5, 10), np.zeros(5, np.int32), jnp.asarray(10 * gaps, jnp.float32))
    new = L.adafocal_update(
        L.AdaFocalState(jnp.asarray(start), jnp.linspace(0.2, 0.8, 4)), sums, lam=3.0
    )
    np.testing.assert_allclose(new.gamma, ref_update(start, gaps, lam=3.0), rtol=1e-6)
    assert new.gamma[0] == 20.0 and new.gamma[1] == -2.0 and new.gamma[4] == 0.2


def test_the_streaming_state_drives_the_update():
    stream = jax.jit(
        lambda z, y: cj.metrics.CalibrationState.empty(10, num_bins=15).update(
            z, y, from_logits=True
        )
    )(Z, Y)
    state = L.adafocal_update(
        L.adafocal_init(), BinSums(stream.count, stream.correct, stream.confidence)
    )
    p = np.asarray(jax.nn.softmax(Z), np.float64)
    conf, correct = p.max(-1), (p.argmax(-1) == np.asarray(Y))
    b = np.clip(np.ceil(conf * 15).astype(int) - 1, 0, 14)  # equal-width (lo, hi] bins
    gap = np.array(
        [conf[b == m].mean() - correct[b == m].mean() if (b == m).any() else 0.0 for m in range(15)]
    )
    assert (np.abs(gap) > 0.01).sum() > 5
    np.testing.assert_allclose(state.gamma, ref_update(np.ones(15), gap), rtol=1e-5)
    np.testing.assert_array_equal(state.edges, L.adafocal_init().edges)


# ----------------------------------------------------------------------------- transforms


def _random_sums(rng, num_bins):
    count = rng.integers(0, 30, num_bins)
    correct = rng.binomial(count, 0.6)
    return BinSums(count, correct, jnp.asarray(count * rng.uniform(0.2, 1, num_bins), jnp.float32))


def test_vmap_over_states_and_checkpoint_round_trip(tmp_path):
    serialization = pytest.importorskip("flax.serialization")
    rng = np.random.default_rng(6)
    z, y = make_inputs((40, 5), seed=6)
    edges = jnp.asarray(np.sort(rng.uniform(0, 1, 5)), jnp.float32)
    states = jax.tree.map(lambda *x: jnp.stack(x), STATE, L.adafocal_init(6, gamma=2.0))
    stacked_sums = jax.tree.map(lambda *x: jnp.stack(x), _random_sums(rng, 6), _random_sums(rng, 6))

    @jax.jit
    def batched_epoch(states, sums, z, y):
        new = jax.vmap(lambda s, m: L.adafocal_update(s, m, edges=edges))(states, sums)
        return new, jax.vmap(lambda s: L.adafocal_loss(z, y, state=s))(new)

    batched, losses = batched_epoch(states, stacked_sums, z, y)
    for i in range(2):
        one = L.adafocal_update(
            jax.tree.map(lambda x, i=i: x[i], states),
            jax.tree.map(lambda x, i=i: x[i], stacked_sums),
            edges=edges,
        )
        np.testing.assert_allclose(batched.gamma[i], one.gamma, rtol=1e-6)
        np.testing.assert_array_equal(batched.edges[i], edges)
    assert losses.shape == (2, 40) and np.isfinite(np.asarray(losses)).all()
    path = tmp_path / "adafocal.msgpack"
    path.write_bytes(serialization.to_bytes(batched))
    template = L.AdaFocalState(jnp.zeros((2, 6)), jnp.zeros((2, 5)))
    restored = serialization.from_bytes(template, path.read_bytes())
    assert isinstance(restored, L.AdaFocalState)
    for a, b in zip(restored, batched, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- bad input


def test_bad_input_raises_or_gives_nan():
    z, y = make_inputs((12, 5), seed=7)
    with pytest.raises(ValueError, match="edges"):
        L.adafocal_loss(z, y, state=L.AdaFocalState(jnp.ones(4), jnp.ones(4)))
    with pytest.raises(ValueError, match="num_bins"):
        L.adafocal_init(0)
    with pytest.raises(ValueError, match="gamma"):
        L.adafocal_init(gamma=np.inf)
    sums = _random_sums(np.random.default_rng(7), 6)
    for kwargs, match in (
        (dict(lam=-1.0), "lam"),
        (dict(switch_point=np.nan), "switch_point"),
        (dict(gamma_min=3.0, gamma_max=2.0), "gamma_min"),
        (dict(edges=jnp.ones(3)), "edges"),
    ):
        with pytest.raises(ValueError, match=match):
            L.adafocal_update(STATE, sums, **kwargs)
    with pytest.raises(ValueError, match=r"sums\.count"):
        L.adafocal_update(L.adafocal_init(5), sums)
    bad = y.at[2].set(5)
    for fn in (lambda z, y: L.adafocal_loss(z, y, state=STATE), L.adafocal_validation_sums):
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
            fn(z, bad)
    with pytest.raises(Exception, match="labels must lie"):
        cj.validation.checked(jax.jit(lambda z, y: L.adafocal_loss(z, y, state=STATE)))(z, bad)
    with pytest.raises(ValueError, match="at least one sample"):
        L.adafocal_validation_sums(z, y, where=jnp.zeros(12, bool))
    # Under plain jit: NaN rows, NaN sums and edges, and a NaN state poisons every row.
    bad_y = Y.at[2].set(10)
    loss, _, _ = _values_and_grads(Z, bad_y, STATE)
    assert np.isnan(loss[2]) and np.isfinite(np.delete(np.asarray(loss), 2)).all()
    nan_sums, nan_edges = _validation_sums(Z[:150], bad_y[:150], where=jnp.ones(150, bool))
    assert np.isnan(np.asarray(nan_sums.confidence)).all() and np.isnan(np.asarray(nan_edges)).all()
    poisoned = L.adafocal_update(L.adafocal_init(), nan_sums, edges=nan_edges)
    assert np.isnan(np.asarray(poisoned.gamma)).all()
    nan_gamma = STATE._replace(gamma=STATE.gamma.at[0].set(jnp.nan))
    for bad_state in (nan_gamma, STATE._replace(edges=STATE.edges.at[0].set(jnp.nan))):
        assert np.isnan(np.asarray(_values_and_grads(Z, Y, bad_state)[0])).all()
