"""calib_jax.losses against float64 NumPy references, identities, gradients and bad input.

Compile time dominates: the tests reuse a handful of shapes and call the losses eagerly (op by
op, cached per shape) except where jit/vmap themselves are under test.
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from jax.test_util import check_grads

import calib_jax as cj
from calib_jax import losses as L

# ----------------------------------------------------------------------------- references


def _f64(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


def np_log_softmax(z):
    z = _f64(z)
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_onehot(y, k):
    return (np.asarray(y)[..., None] == np.arange(k)).astype(np.float64)


def ref_ce(z, y):
    return -(np_onehot(y, z.shape[-1]) * np_log_softmax(z)).sum(-1)


def ref_ls(z, y, epsilon, paper=False):
    k = z.shape[-1]
    onehot = np_onehot(y, k)
    if paper:
        target = np.where(onehot > 0, 1 - epsilon, epsilon / (k - 1))
    else:
        target = (1 - epsilon) * onehot + epsilon / k
    return -(target * np_log_softmax(z)).sum(-1)


def ref_focal(z, y, gamma):
    lp_y = (np_onehot(y, z.shape[-1]) * np_log_softmax(z)).sum(-1)
    return -((-np.expm1(lp_y)) ** gamma) * lp_y


def ref_flsd(z, y, boundaries, gammas):
    lp_y = (np_onehot(y, z.shape[-1]) * np_log_softmax(z)).sum(-1)
    gamma = np.asarray(gammas)[np.searchsorted(boundaries, np.exp(lp_y), side="right")]
    return -((-np.expm1(lp_y)) ** gamma) * lp_y


def ref_erce(z, y, beta):
    lp = np_log_softmax(z)
    entropy = -(np.exp(lp) * lp).sum(-1)
    return -(np_onehot(y, z.shape[-1]) * lp).sum(-1) - beta * entropy


def ref_brier(z, y):
    return ((np.exp(np_log_softmax(z)) - np_onehot(y, z.shape[-1])) ** 2).sum(-1)


def ref_mmce(z, y, weighted, width=0.4, mask=None):
    k = z.shape[-1]
    p = np.exp(np_log_softmax(z)).reshape(-1, k)
    y = np.asarray(y).reshape(-1)
    if mask is not None:
        keep = np.asarray(mask).reshape(-1)
        p, y = p[keep], y[keep]
    r = p.max(-1)
    a = (p.argmax(-1) == y).astype(np.float64)
    kern = np.exp(-np.abs(r[:, None] - r[None, :]) / width)
    if not weighted:
        sq = (
            sum(
                (a[i] - r[i]) * (a[j] - r[j]) * kern[i, j]
                for i in range(len(r))
                for j in range(len(r))
            )
            / max(len(r), 1) ** 2
        )
    else:
        c, w = np.flatnonzero(a == 1), np.flatnonzero(a == 0)
        m, n = len(c), len(w)
        if m == 0 or n == 0:
            return 0.0
        sq = (
            sum((1 - r[i]) * (1 - r[j]) * kern[i, j] for i in c for j in c) / m**2
            + sum(r[i] * r[j] * kern[i, j] for i in w for j in w) / n**2
            - 2 * sum((1 - r[i]) * r[j] * kern[i, j] for i in c for j in w) / (m * n)
        )
    return np.sqrt(max(sq, 0.0))


def ref_sigmoid_focal(z, t, alpha, gamma):
    z, t = _f64(z), np.asarray(t, np.float64)
    p = 1 / (1 + np.exp(-z))
    bce = -(t * np.log(p) + (1 - t) * np.log1p(-p))
    p_t = p * t + (1 - p) * (1 - t)
    loss = (1 - p_t) ** gamma * bce
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


FLSD52 = {"boundaries": (0.2, 0.5), "gammas": (5.0, 3.0, 2.0)}

# name -> (calib_jax function with hyperparameters bound, float64 reference)
PER_EXAMPLE = {
    "cross_entropy": (L.cross_entropy, ref_ce),
    "label_smoothing": (
        functools.partial(L.label_smoothing_cross_entropy, epsilon=0.1),
        functools.partial(ref_ls, epsilon=0.1),
    ),
    "label_smoothing_paper": (
        functools.partial(L.label_smoothing_cross_entropy, epsilon=0.05, paper_variant=True),
        functools.partial(ref_ls, epsilon=0.05, paper=True),
    ),
    "focal_0.5": (
        functools.partial(L.focal_loss, gamma=0.5),
        functools.partial(ref_focal, gamma=0.5),
    ),
    "focal_3": (
        functools.partial(L.focal_loss, gamma=3.0),
        functools.partial(ref_focal, gamma=3.0),
    ),
    "flsd_53": (
        L.adaptive_focal_loss,
        functools.partial(ref_flsd, boundaries=(0.2,), gammas=(5, 3)),
    ),
    "flsd_52": (
        functools.partial(L.adaptive_focal_loss, **FLSD52),
        functools.partial(ref_flsd, **FLSD52),
    ),
    "entropy_reg": (
        functools.partial(L.entropy_regularized_cross_entropy, beta=0.3),
        functools.partial(ref_erce, beta=0.3),
    ),
    "brier": (L.brier_score, ref_brier),
}

SHAPES = [(6, 3), (2, 5, 10), (3, 100)]


def make_inputs(shape, dtype=jnp.float32, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(0, scale, shape), dtype)
    y = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]), jnp.int32)
    return z, y


# ----------------------------------------------------------------------------- values


@functools.partial(jax.jit, static_argnames="skip")
def _all_per_example(z, y, skip=()):
    return {name: fn(z, y) for name, (fn, _) in PER_EXAMPLE.items() if name not in skip}


CASES = [(shape, jnp.float32) for shape in SHAPES] + [
    ((2, 5, 10), jnp.bfloat16),
    ((3, 100), jnp.bfloat16),
]


@pytest.mark.parametrize(("shape", "dtype"), CASES, ids=lambda c: str(getattr(c, "__name__", c)))
def test_matches_float64_reference(shape, dtype):
    z, y = make_inputs(shape, dtype, seed=len(shape) * 7 + shape[-1])
    for name, out in _all_per_example(z, y).items():
        assert out.shape == y.shape and out.dtype == jnp.float32, name
        expected = PER_EXAMPLE[name][1](z, y)
        np.testing.assert_allclose(np.asarray(out), expected, rtol=1e-5, atol=1e-7, err_msg=name)


def test_k_equals_one():
    z, y = jnp.zeros((4, 1)), jnp.zeros(4, jnp.int32)
    for name, out in _all_per_example(z, y, skip=("label_smoothing_paper",)).items():
        np.testing.assert_allclose(out, 0.0, atol=1e-7, err_msg=name)
    with pytest.raises(ValueError, match="K >= 2"):
        L.label_smoothing_cross_entropy(z, y, paper_variant=True)


@pytest.mark.parametrize("weighted", [False, True])
@pytest.mark.parametrize("shape", [(40, 3), (2, 20, 10)], ids=str)
def test_mmce_matches_reference(weighted, shape):
    z, y = make_inputs(shape, seed=3, scale=1.5)
    out = L.mmce(z, y, weighted=weighted)
    assert out.shape == () and out.dtype == jnp.float32
    np.testing.assert_allclose(float(out), ref_mmce(z, y, weighted), rtol=1e-5)
    np.testing.assert_allclose(
        float(L.mmce(z, y, weighted=weighted, kernel_width=0.1)),
        ref_mmce(z, y, weighted, width=0.1),
        rtol=1e-5,
    )


def test_mmce_weighted_zero_without_both_groups():
    z = jnp.asarray([[3.0, 0.0], [0.0, 2.0], [1.0, 0.0]])
    assert float(L.mmce(z, jnp.asarray([0, 1, 0]), weighted=True)) == 0.0  # all correct
    assert float(L.mmce(z, jnp.asarray([1, 0, 1]), weighted=True)) == 0.0  # all wrong
    assert float(L.mmce(z, jnp.asarray([1, 0, 1]))) > 0.5  # unweighted sees the error


@pytest.mark.parametrize("alpha", [0.25, None])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0])
def test_sigmoid_focal_matches_reference(alpha, gamma):
    rng = np.random.default_rng(5)
    z = jnp.asarray(rng.normal(0, 4, (4, 7)), jnp.float32)
    hard = rng.integers(0, 2, (4, 7))
    soft = rng.random((4, 7))
    for t in (jnp.asarray(hard, jnp.int32), jnp.asarray(soft, jnp.float32)):
        out = L.sigmoid_focal_loss(z, t, alpha=alpha, gamma=gamma)
        assert out.shape == z.shape and out.dtype == jnp.float32
        np.testing.assert_allclose(
            np.asarray(out), ref_sigmoid_focal(z, t, alpha, gamma), rtol=1e-5, atol=1e-7
        )


def test_optax_agrees():
    z, y = make_inputs((3, 100), seed=11)
    np.testing.assert_allclose(
        L.cross_entropy(z, y), optax.softmax_cross_entropy_with_integer_labels(z, y), rtol=1e-6
    )
    t = jax.nn.one_hot(y, z.shape[-1])
    np.testing.assert_allclose(
        L.sigmoid_focal_loss(z / 3, t, alpha=None, gamma=2.0),
        optax.sigmoid_focal_loss(z / 3, t, gamma=2.0),
        rtol=1e-5,
        atol=1e-7,
    )


def test_torch_label_smoothing_agrees():
    torch = pytest.importorskip("torch")
    z, y = make_inputs((3, 100), seed=11)
    theirs = torch.nn.functional.cross_entropy(
        torch.tensor(np.asarray(z)),
        torch.tensor(np.asarray(y), dtype=torch.long),
        label_smoothing=0.1,
        reduction="none",
    )
    np.testing.assert_allclose(
        L.label_smoothing_cross_entropy(z, y, epsilon=0.1), theirs.numpy(), rtol=1e-5
    )


# ----------------------------------------------------------------------------- identities


def test_identities():
    z, y = make_inputs((2, 5, 10), seed=1)
    ce = L.cross_entropy(z, y)
    np.testing.assert_array_equal(L.focal_loss(z, y, gamma=0.0), ce)
    np.testing.assert_array_equal(L.label_smoothing_cross_entropy(z, y, epsilon=0.0), ce)
    log_q = jax.nn.log_softmax(z)
    for eps in (0.05, 0.1, 0.5, 1.0):
        mixture = eps * -jnp.mean(log_q, -1) + (1 - eps) * ce
        np.testing.assert_allclose(
            L.label_smoothing_cross_entropy(z, y, epsilon=eps), mixture, rtol=1e-5, atol=1e-6
        )
    for eps in (0.05, 0.1, 0.5, 0.9):
        np.testing.assert_allclose(
            L.label_smoothing_cross_entropy(z, y, epsilon=eps, paper_variant=True),
            L.label_smoothing_cross_entropy(z, y, epsilon=eps * 10 / 9),
            rtol=1e-5,
        )
    np.testing.assert_allclose(L.entropy_regularized_cross_entropy(z, y, beta=0.0), ce, rtol=1e-6)
    np.testing.assert_allclose(
        L.adaptive_focal_loss(z, y, boundaries=(), gammas=(2.0,)),
        L.focal_loss(z, y, gamma=2.0),
        rtol=1e-6,
    )
    t = jax.nn.one_hot(y, 10)
    np.testing.assert_allclose(
        L.sigmoid_focal_loss(z, t, alpha=None, gamma=0.0),
        optax.sigmoid_binary_cross_entropy(z, t),
        rtol=1e-5,
        atol=1e-6,
    )


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    logits=st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=5, max_size=5),
    label=st.integers(0, 4),
    gamma=st.sampled_from([1.0, 1.5, 2.0, 3.0, 5.0]),
)
def test_focal_bounded_below_by_entropy_regularised_ce(logits, label, gamma):
    z, y = jnp.asarray([logits], jnp.float32), jnp.asarray([label])
    focal = float(L.focal_loss(z, y, gamma=gamma)[0])
    bound = float(L.entropy_regularized_cross_entropy(z, y, beta=gamma)[0])
    assert focal >= bound - 1e-5 * (1 + abs(bound))


def _rows_with_label_probability(p_y, k=4):
    # logits (log(p(k-1)/(1-p)), 0, ..., 0) give the first class probability exactly p.
    p_y = np.asarray(p_y, np.float64)
    z = np.zeros((len(p_y), k))
    z[:, 0] = np.log(p_y * (k - 1) / (1 - p_y))
    return jnp.asarray(z, jnp.float32), jnp.zeros(len(p_y), jnp.int32)


def test_flsd53_is_focal_5_below_0_2_and_3_above_without_gradient_through_gamma():
    p_y = [0.01, 0.1, 0.19, 0.199, 0.201, 0.21, 0.4, 0.7, 0.99]
    z, y = _rows_with_label_probability(p_y)
    gamma = jnp.where(jnp.asarray(p_y) < 0.2, 5.0, 3.0)
    np.testing.assert_allclose(
        L.adaptive_focal_loss(z, y), L.focal_loss(z, y, gamma=gamma), rtol=1e-6
    )
    # The last row (p_y = 0.99, loss 1e-8 ≈ (1-p)^4) carries 4x the float32 relative error of
    # 1 - p_y: hence the absolute floor.
    np.testing.assert_allclose(
        L.adaptive_focal_loss(z, y), ref_flsd(z, y, (0.2,), (5, 3)), rtol=1e-5, atol=1e-7
    )
    g_flsd = jax.jit(jax.grad(lambda z: L.adaptive_focal_loss(z, y).sum()))(z)
    g_fixed = jax.jit(jax.grad(lambda z: L.focal_loss(z, y, gamma=gamma).sum()))(z)
    np.testing.assert_allclose(g_flsd, g_fixed, rtol=1e-6, atol=1e-8)
    # d/dγ of the focal loss is not zero, so a γ that carried a gradient would show here.
    d_gamma = jax.grad(lambda g: L.focal_loss(z, y, gamma=g).sum())(4.0)
    assert abs(float(d_gamma)) > 1e-3
    # The schedule reads stop_gradient(p_y): one stop_gradient more than the focal loss has.
    flsd_jaxpr = str(jax.make_jaxpr(lambda z: L.adaptive_focal_loss(z, y))(z))
    focal_jaxpr = str(jax.make_jaxpr(lambda z: L.focal_loss(z, y, gamma=gamma))(z))
    assert flsd_jaxpr.count("stop_gradient") == focal_jaxpr.count("stop_gradient") + 1


# ----------------------------------------------------------------------------- transforms

Z, Y = make_inputs((3, 4, 5), seed=2, scale=1.0)
T = jax.nn.one_hot(Y, 5)

# name -> f(logits, labels) for every public loss (scalar or per-example)
ALL = {name: fn for name, (fn, _) in PER_EXAMPLE.items()} | {
    "mmce": L.mmce,
    "mmce_weighted": functools.partial(L.mmce, weighted=True),
    "sigmoid_focal": lambda z, y: L.sigmoid_focal_loss(z, jax.nn.one_hot(y, z.shape[-1])),
    "objective": L.scalar_objective(L.cross_entropy, mmce_weight=2.0),
}


@pytest.mark.parametrize("name", ALL)
def test_jit_vmap_grad(name):
    fn = ALL[name]
    jitted = jax.jit(fn)
    rows = [jitted(Z[i], Y[i]) for i in range(Z.shape[0])]
    np.testing.assert_allclose(rows[0], fn(Z[0], Y[0]), rtol=1e-6, atol=1e-7)  # jit == eager
    np.testing.assert_allclose(jax.jit(jax.vmap(fn))(Z, Y), jnp.stack(rows), rtol=1e-6, atol=1e-7)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(jax.vmap(fn)(z, Y))))(Z)
    assert grad.shape == Z.shape and np.isfinite(np.asarray(grad)).all()
    assert np.abs(np.asarray(grad)).max() > 0


@pytest.mark.parametrize("name", ALL)
def test_check_grads(name):
    fn = ALL[name]
    with jax.enable_x64(True):
        z = jnp.asarray(np.asarray(Z[0]), jnp.float64)
        f = jax.jit(lambda z: fn(z, Y[0]))
        check_grads(f, (z,), order=1)
        if name == "focal_0.5":  # second order through the hand-written jvp
            check_grads(f, (z,), order=2, modes=("rev",))


def test_focal_gradient_matches_autodiff_of_naive_formula():
    z, y = make_inputs((6, 3), seed=4)

    def naive(z, gamma):
        p_y = jnp.take_along_axis(jax.nn.softmax(z), y[:, None], -1)[:, 0]
        log_p_y = jnp.take_along_axis(jax.nn.log_softmax(z), y[:, None], -1)[:, 0]
        return jnp.sum(-((1 - p_y) ** gamma) * log_p_y)

    ours = jax.jit(jax.grad(lambda z, g: L.focal_loss(z, y, gamma=g).sum(), argnums=(0, 1)))
    theirs = jax.jit(jax.grad(naive, argnums=(0, 1)))
    for gamma in (0.5, 1.0, 2.0, 3.0, 5.0):
        for a, b in zip(ours(z, gamma), theirs(z, gamma), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


EXTREME = np.array(
    [
        [1e4, -1e4, 0.0],
        [1e4, 1e4, -1e4],
        [-1e4, -1e4, -1e4],
        [100.0, 0.0, -100.0],
        [30.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [1e4, 1e4 - 1, 1e4 - 2],
        [-1e4, 1e4, 1e4],
    ],
    np.float32,
)
EXTREME_Z = jnp.asarray(np.repeat(EXTREME, 3, axis=0))
EXTREME_Y = jnp.asarray(np.tile(np.arange(3), len(EXTREME)), jnp.int32)


GAMMAS = jnp.asarray([0.0, 0.5, 1.0, 2.0, 3.0, 5.0])


@jax.jit
def _extreme_grads(z):
    """Gradients of every loss at extreme logits; the focal ones for every γ in GAMMAS."""

    def focal(z, gamma):
        return L.focal_loss(z, EXTREME_Y, gamma=gamma).sum()

    def sigmoid(z, gamma):
        return L.sigmoid_focal_loss(z, jax.nn.one_hot(EXTREME_Y, 3), gamma=gamma).sum()

    grads = {
        name: jax.vmap(jax.grad(fn), in_axes=(None, 0))(z, GAMMAS)
        for name, fn in (("focal", focal), ("sigmoid_focal", sigmoid))
    }
    for name, fn in ALL.items():
        grads[name] = jax.grad(lambda z, fn=fn: jnp.sum(fn(z, EXTREME_Y)))(z)
    values = {name: fn(z, EXTREME_Y) for name, fn in ALL.items()}
    return grads, values


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_finite_gradients_at_extreme_logits(dtype):
    grads, values = _extreme_grads(EXTREME_Z.astype(dtype))
    for name, g in grads.items():
        assert g.dtype == dtype
        assert np.isfinite(np.asarray(g, np.float32)).all(), name
    for name, v in values.items():
        assert np.isfinite(np.asarray(v)).all(), name


@jax.jit
def _all(z, y):
    return {name: fn(z, y) for name, fn in ALL.items()}


def test_bfloat16_matches_float32():
    z, y = make_inputs((2, 5, 10), seed=9)
    zb = z.astype(jnp.bfloat16)
    out_b, out_rounded, out_f = _all(zb, y), _all(zb.astype(jnp.float32), y), _all(z, y)
    for name in ALL:
        assert out_b[name].dtype == jnp.float32, name
        # computed in float32: exactly the float32 result on the rounded logits ...
        np.testing.assert_allclose(out_b[name], out_rounded[name], rtol=1e-6, err_msg=name)
        # ... and within bf16 rounding of the float32 logits.
        np.testing.assert_allclose(out_b[name], out_f[name], rtol=3e-2, atol=3e-2, err_msg=name)


# ----------------------------------------------------------------------------- masks


def test_where_masks_rows_and_padding_is_inert():
    z, y = make_inputs((2, 5, 10), seed=6)
    mask = jnp.asarray(np.random.default_rng(0).random((2, 5)) < 0.6)
    z_pad = jnp.where(mask[..., None], z, jnp.nan)
    y_pad = jnp.where(mask, y, -1)

    @jax.jit
    def masked_and_plain(z_pad, y_pad, z, y):
        out = {}
        for name, (fn, _) in PER_EXAMPLE.items():
            grad = jax.grad(lambda z, fn=fn: fn(z, y_pad, where=mask).sum())(z_pad)
            out[name] = (fn(z_pad, y_pad, where=mask), fn(z, y), grad)
        return out

    for name, (masked, plain, grad) in masked_and_plain(z_pad, y_pad, z, y).items():
        np.testing.assert_allclose(masked, jnp.where(mask, plain, 0.0), rtol=1e-6, err_msg=name)
        assert np.isfinite(np.asarray(grad)).all(), name
        assert (np.asarray(grad)[~np.asarray(mask)] == 0).all(), name
        assert (np.abs(np.asarray(grad)[np.asarray(mask)]).max(-1) > 0).all(), name
    for weighted in (False, True):
        np.testing.assert_allclose(
            L.mmce(z_pad, y_pad, weighted=weighted, where=mask),
            L.mmce(z[mask], y[mask], weighted=weighted),
            rtol=1e-6,
        )
        np.testing.assert_allclose(
            L.mmce(z, y, weighted=weighted, where=mask),
            ref_mmce(z, y, weighted, mask=mask),
            rtol=1e-5,
        )
    t = jax.nn.one_hot(y, 10)
    emask = jnp.broadcast_to(mask[..., None], z.shape)
    np.testing.assert_allclose(
        L.sigmoid_focal_loss(z_pad, t, where=emask),
        jnp.where(emask, L.sigmoid_focal_loss(z, t), 0.0),
        rtol=1e-6,
    )


def test_scalar_objective():
    z, y = make_inputs((2, 5, 10), seed=8, scale=1.0)
    mask = jnp.asarray(np.random.default_rng(1).random((2, 5)) < 0.6)
    focal = functools.partial(L.focal_loss, gamma=3.0)
    np.testing.assert_allclose(
        L.scalar_objective(focal)(z, y), ref_focal(z, y, 3.0).mean(), rtol=1e-5
    )
    objective = L.scalar_objective(focal, mmce_weight=2.0, kernel_width=0.4)
    expected = ref_focal(z, y, 3.0)[np.asarray(mask)].mean() + 2.0 * ref_mmce(z, y, True, mask=mask)
    np.testing.assert_allclose(objective(z, y, where=mask), expected, rtol=1e-5)
    np.testing.assert_allclose(objective(z, y, where=mask), objective(z[mask], y[mask]), rtol=1e-6)
    assert float(objective(z, y, where=jnp.zeros((2, 5), bool))) == 0.0
    with pytest.raises(ValueError, match="empty"):
        objective(z[:, :0], y[:, :0])
    t = jax.nn.one_hot(y, 10)
    np.testing.assert_allclose(
        L.scalar_objective(L.sigmoid_focal_loss)(z, t),
        ref_sigmoid_focal(z, t, 0.25, 2.0).mean(),
        rtol=1e-5,
    )


# ----------------------------------------------------------------------------- bad input


LABELLED = [name for name in ALL if name != "sigmoid_focal"]  # sigmoid focal takes targets


@pytest.mark.parametrize("name", LABELLED)
def test_out_of_range_labels(name):
    fn = ALL[name]
    z = Z[0]
    for bad in (5, -1):
        y = Y[0].at[1].set(bad)
        with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\)"):
            fn(z, y)
        assert np.isnan(np.asarray(jax.jit(fn)(z, y))).any()  # never a plausible number
        with pytest.raises(Exception, match=r"labels must lie in \[0, 5\)"):
            cj.validation.checked(jax.jit(fn))(z, y)
    np.testing.assert_allclose(
        cj.validation.checked(jax.jit(fn))(z, Y[0]), fn(z, Y[0]), rtol=1e-6, atol=1e-7
    )


@pytest.mark.parametrize("name", ALL)
def test_non_finite_logits_raise(name):
    fn = ALL[name]
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        z = Z[0].at[1, 2].set(bad)
        with pytest.raises(ValueError, match="logits must be finite"):
            fn(z, Y[0])
    with pytest.raises(Exception, match="logits must be finite"):
        cj.validation.checked(jax.jit(fn))(Z[0].at[1, 2].set(jnp.nan), Y[0])
    # Under plain jit a NaN logit poisons its row instead of giving a plausible number.
    assert np.isnan(np.asarray(jax.jit(fn)(Z[0].at[1, 2].set(jnp.nan), Y[0]))).any()


def test_bad_inputs_raise_clear_errors():
    z, y = Z[0], Y[0]
    for fn in (ALL[name] for name in LABELLED):
        with pytest.raises(ValueError, match="shape"):
            fn(z, y[:3])
        with pytest.raises(TypeError, match="integer"):
            fn(z, y.astype(jnp.float32))
        with pytest.raises(TypeError, match="floating"):
            fn(jnp.ones((4, 5), jnp.int32), y)
    with pytest.raises(ValueError, match="gamma"):
        L.focal_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        L.focal_loss(z, y, gamma=jnp.ones(3))
    with pytest.raises(ValueError, match="gamma"):
        L.sigmoid_focal_loss(z, T[0], gamma=-0.5)
    with pytest.raises(ValueError, match="gammas"):
        L.adaptive_focal_loss(z, y, gammas=(5.0, -3.0))
    with pytest.raises(ValueError, match="one more gamma"):
        L.adaptive_focal_loss(z, y, boundaries=(0.2, 0.5), gammas=(5.0, 3.0))
    with pytest.raises(ValueError, match="increase"):
        L.adaptive_focal_loss(z, y, boundaries=(0.5, 0.2), gammas=(5.0, 3.0, 2.0))
    for eps in (-0.1, 1.5):
        with pytest.raises(ValueError, match="epsilon"):
            L.label_smoothing_cross_entropy(z, y, epsilon=eps)
    with pytest.raises(ValueError, match="alpha"):
        L.sigmoid_focal_loss(z, T[0], alpha=1.5)
    with pytest.raises(ValueError, match="beta"):
        L.entropy_regularized_cross_entropy(z, y, beta=-1.0)
    with pytest.raises(ValueError, match="kernel_width"):
        L.mmce(z, y, kernel_width=0.0)
    with pytest.raises(ValueError, match="mmce_weight"):
        L.scalar_objective(L.cross_entropy, mmce_weight=-1.0)
    with pytest.raises(ValueError, match="where"):
        L.cross_entropy(z, y, where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="targets"):
        L.sigmoid_focal_loss(z, T[0][:2])
    with pytest.raises(ValueError, match="targets must lie"):
        L.sigmoid_focal_loss(z, T[0] * 2)
    with pytest.raises(Exception, match="targets must lie"):
        cj.validation.checked(jax.jit(L.sigmoid_focal_loss))(z, T[0] * 2)
