"""Reliability of the softmax and focal losses: no plausible wrong number anywhere (issue 10).

Regression tests for traced hyperparameters out of range, overflowing logit gaps and ``-inf``
logits, then a property-based battery: random shapes, dtypes and hyperparameters against float64
NumPy references of the value and of the gradient (central differences of the reference), finite
gradients at extreme finite logits, and a bad-input generator under ``jit``.

Every loss is evaluated by one jitted function per shape with its hyperparameters traced, so
hypothesis examples reuse a handful of compilations.
"""

import functools

import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import losses as L

F32_MAX = float(np.finfo(np.float32).max)

# ----------------------------------------------------------------------------- references


def _f64(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


def log_softmax64(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def label_log_prob64(z, y):
    return np.take_along_axis(log_softmax64(z), np.asarray(y)[..., None], -1)[..., 0]


def ref_ce(z, y):
    return -label_log_prob64(z, y)


def ref_ls(z, y, epsilon, paper=False):
    k = z.shape[-1]
    onehot = np.asarray(y)[..., None] == np.arange(k)
    off = epsilon / (k - 1) if paper else epsilon / k
    target = np.where(onehot, 1 - epsilon + (0 if paper else epsilon / k), off)
    return -(target * log_softmax64(z)).sum(-1)


def ref_focal(z, y, gamma):
    lp = label_log_prob64(z, y)
    return -((-np.expm1(lp)) ** gamma) * lp


def flsd_gamma64(z, y, boundaries, gammas):
    """The schedule's gamma per row, read from the float64 label probability."""
    p_y = np.exp(label_log_prob64(z, y))
    return np.asarray(gammas, np.float64)[np.searchsorted(boundaries, p_y, side="right")]


def ref_erce(z, y, beta):
    lp = log_softmax64(z)
    p = np.exp(lp)
    entropy = -np.where(p > 0, p * np.where(p > 0, lp, 0), 0).sum(-1)
    return -label_log_prob64(z, y) - beta * entropy


def ref_brier(z, y):
    p = np.exp(log_softmax64(z))
    return ((p - (np.asarray(y)[..., None] == np.arange(z.shape[-1]))) ** 2).sum(-1)


def ref_sigmoid_focal(z, t, alpha, gamma):
    # log σ(z) = -log(1 + e^-z) and 1 - p_t formed without cancellation (e^|z| may be inf).
    bce = t * np.logaddexp(0, -z) + (1 - t) * np.logaddexp(0, z)
    with np.errstate(over="ignore"):
        q = (1 - t) / (1 + np.exp(-z)) + t / (1 + np.exp(z))
    loss = q**gamma * bce
    if alpha is not None:
        loss = (alpha * t + (1 - alpha) * (1 - t)) * loss
    return loss


def fd_grad(f, z, elementwise=False):
    """Gradient of ``sum(f(z))`` by central differences, for ``f`` acting row by row on the
    last axis (or elementwise): one class column is perturbed in every row at once."""
    z = np.asarray(z, np.float64)
    grad = np.zeros_like(z)
    for k in range(z.shape[-1]):
        h = 1e-6 * np.maximum(1.0, np.abs(z[..., k]))
        up, down = z.copy(), z.copy()
        up[..., k] += h
        down[..., k] -= h
        diff = f(up) - f(down)
        grad[..., k] = (diff[..., k] if elementwise else diff) / (2 * h)
    return grad


# ----------------------------------------------------------------------------- all losses


def _losses(z, y, t, hp):
    """name -> loss of ``z`` with every hyperparameter taken from ``hp`` (traced under jit)."""
    fns = {
        "cross_entropy": lambda z: L.cross_entropy(z, y),
        "label_smoothing": lambda z: L.label_smoothing_cross_entropy(z, y, epsilon=hp["epsilon"]),
        "focal": lambda z: L.focal_loss(z, y, gamma=hp["gamma"]),
        "flsd_53": lambda z: L.adaptive_focal_loss(z, y),
        "flsd_traced": lambda z: L.adaptive_focal_loss(
            z, y, boundaries=hp["boundaries"], gammas=hp["gammas"]
        ),
        "entropy_reg": lambda z: L.entropy_regularized_cross_entropy(z, y, beta=hp["beta"]),
        "brier": lambda z: L.brier_score(z, y),
        "sigmoid_focal": lambda z: L.sigmoid_focal_loss(z, t, alpha=hp["alpha"], gamma=hp["gamma"]),
        "sigmoid_focal_no_alpha": lambda z: L.sigmoid_focal_loss(
            z, t, alpha=None, gamma=hp["gamma"]
        ),
    }
    if z.shape[-1] >= 2:
        fns["label_smoothing_paper"] = lambda z: L.label_smoothing_cross_entropy(
            z, y, epsilon=hp["epsilon"], paper_variant=True
        )
    return fns


ELEMENTWISE = ("sigmoid_focal", "sigmoid_focal_no_alpha")


@jax.jit
def values_and_grads(z, y, t, hp):
    """name -> (per-example loss, gradient of its sum) for every loss, hyperparameters traced."""
    out = {}
    for name, fn in _losses(z, y, t, hp).items():
        value, vjp = jax.vjp(fn, z)
        out[name] = (value, vjp(jnp.ones_like(value))[0])
    return out


def references(y, t, hp, z_base):
    """name -> float64 reference as a function of the logits (for values and differences).

    The schedule of the adaptive focal losses is frozen at ``z_base``: its gamma carries no
    gradient, so the reference derivative holds it fixed too.
    """
    bounds, gammas = np.asarray(hp["boundaries"], np.float64), np.asarray(hp["gammas"])
    g53 = flsd_gamma64(z_base, y, (0.2,), (5.0, 3.0))
    g_traced = flsd_gamma64(z_base, y, bounds, gammas)
    refs = {
        "cross_entropy": lambda z: ref_ce(z, y),
        "label_smoothing": lambda z: ref_ls(z, y, hp["epsilon"]),
        "focal": lambda z: ref_focal(z, y, hp["gamma"]),
        "flsd_53": lambda z: ref_focal(z, y, g53),
        "flsd_traced": lambda z: ref_focal(z, y, g_traced),
        "entropy_reg": lambda z: ref_erce(z, y, hp["beta"]),
        "brier": lambda z: ref_brier(z, y),
        "sigmoid_focal": lambda z: ref_sigmoid_focal(z, t, hp["alpha"], hp["gamma"]),
        "sigmoid_focal_no_alpha": lambda z: ref_sigmoid_focal(z, t, None, hp["gamma"]),
    }
    if z_base.shape[-1] >= 2:
        refs["label_smoothing_paper"] = lambda z: ref_ls(z, y, hp["epsilon"], paper=True)
    return refs


def _traced_hp(hp):
    return {key: jnp.asarray(value, jnp.float32) for key, value in hp.items()}


# ----------------------------------------------------------------------------- regressions

Z = jnp.asarray(np.random.default_rng(0).normal(0, 2, (4, 5)), jnp.float32)
Y = jnp.asarray([0, 1, 2, 4], jnp.int32)
T = jax.nn.one_hot(Y, 5)

# id -> (loss of (z, y, t, hyperparameter), message, bad values). Each bad value is invalid for
# every row, so every row must come out NaN.
HYPER_CASES = {
    "focal_gamma": (
        lambda z, y, t, h: L.focal_loss(z, y, gamma=h),
        "gamma",
        [-1.0, np.nan, np.inf],
    ),
    "label_smoothing_epsilon": (
        lambda z, y, t, h: L.label_smoothing_cross_entropy(z, y, epsilon=h),
        "epsilon",
        [1.5, -0.1, np.nan],
    ),
    "label_smoothing_paper_epsilon": (
        lambda z, y, t, h: L.label_smoothing_cross_entropy(z, y, epsilon=h, paper_variant=True),
        "epsilon",
        [1.5],
    ),
    "entropy_beta": (
        lambda z, y, t, h: L.entropy_regularized_cross_entropy(z, y, beta=h),
        "beta",
        [-1.0, np.nan, np.inf],
    ),
    "sigmoid_alpha": (
        lambda z, y, t, h: L.sigmoid_focal_loss(z, t, alpha=h),
        "alpha",
        [2.0, -0.5, np.nan],
    ),
    "sigmoid_gamma": (
        lambda z, y, t, h: L.sigmoid_focal_loss(z, t, gamma=h),
        "gamma",
        [-1.0, np.nan],
    ),
    "sigmoid_gamma_no_alpha": (
        lambda z, y, t, h: L.sigmoid_focal_loss(z, t, alpha=None, gamma=h),
        "gamma",
        [-1.0],
    ),
    "flsd_gammas": (
        lambda z, y, t, h: L.adaptive_focal_loss(z, y, boundaries=(0.2,), gammas=h),
        "gammas",
        [(5.0, -3.0), (-1.0, 3.0), (5.0, np.nan)],
    ),
    "flsd_boundaries": (
        lambda z, y, t, h: L.adaptive_focal_loss(z, y, boundaries=h, gammas=(5.0, 3.0, 2.0)),
        "boundaries",
        [(0.5, 0.2), (0.2, 1.5), (-0.1, 0.5)],
    ),
}


@pytest.mark.parametrize("case", HYPER_CASES)
def test_traced_hyperparameter_out_of_range_is_nan_under_jit_and_raises_when_checked(case):
    fn, message, bad_values = HYPER_CASES[case]
    jitted = jax.jit(lambda z, h: fn(z, Y, T, h))
    grad = jax.jit(jax.grad(lambda z, h: jnp.sum(fn(z, Y, T, h))))
    good = {"flsd_gammas": (5.0, 3.0), "flsd_boundaries": (0.2, 0.5)}.get(case, 0.2)
    np.testing.assert_allclose(
        jitted(Z, jnp.asarray(good)), fn(Z, Y, T, good), rtol=1e-6, atol=1e-7
    )
    for bad in bad_values:
        traced = jnp.asarray(bad, jnp.float32)
        assert np.isnan(np.asarray(jitted(Z, traced))).all(), bad
        assert np.isnan(np.asarray(grad(Z, traced))).all(), bad
        with pytest.raises(Exception, match=message):
            cj.validation.checked(jitted)(Z, traced)
        with pytest.raises(ValueError, match=message):  # a Python value, eagerly
            fn(Z, Y, T, bad)
        with pytest.raises(ValueError, match=message):  # a Python value at trace time
            jax.jit(lambda z, bad=bad: fn(z, Y, T, bad))(Z)


def test_per_example_gamma_poisons_only_its_rows():
    gamma = jnp.asarray([2.0, -1.0, 0.5, np.nan])
    out = jax.jit(lambda z, g: L.focal_loss(z, Y, gamma=g))(Z, gamma)
    np.testing.assert_array_equal(np.isnan(np.asarray(out)), [False, True, False, True])
    np.testing.assert_allclose(out[0], ref_focal(_f64(Z[:1]), Y[:1], 2.0)[0], rtol=1e-5)
    with pytest.raises(ValueError, match="gamma"):
        L.focal_loss(Z, Y, gamma=gamma)


def test_entropy_regularised_cross_entropy_where_a_logit_gap_overflows():
    # [3e38, -3e38, 0]: the gap -6e38 overflows to -inf in float32; p = (1, 0, 0) and the true
    # loss is ~0 (float64 reference), with a zero gradient.
    z = jnp.asarray([[3e38, -3e38, 0.0], [0.0, -3e38, 3e38]], jnp.float32)
    y = jnp.asarray([0, 2])
    for beta in (0.0, 0.5, 10.0):
        fn = functools.partial(L.entropy_regularized_cross_entropy, beta=beta)
        np.testing.assert_allclose(fn(z, y), ref_erce(_f64(z), y, beta), atol=1e-30)
        np.testing.assert_array_equal(jax.jit(fn)(z, y), [0.0, 0.0])
        grad = jax.jit(jax.grad(lambda z, fn=fn: fn(z, y).sum()))(z)
        np.testing.assert_array_equal(grad, np.zeros((2, 3)))


@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0, 3.0, 5.0])
def test_focal_gradient_finite_where_the_label_probability_underflows(gamma):
    # log p_y = -6e38 overflows to -inf: the loss is +inf (the true value, 6e38, is past the
    # float maximum) and the gradient is its limit, cross-entropy's p - onehot = (-1, 1, 0).
    z = jnp.asarray([[-3e38, 3e38, 0.0]], jnp.float32)
    y = jnp.asarray([0])
    expected = np.asarray([[-1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(
        jax.jit(jax.grad(lambda z: L.cross_entropy(z, y).sum()))(z), expected
    )
    focal = jax.jit(jax.grad(lambda z, g: L.focal_loss(z, y, gamma=g).sum()))
    np.testing.assert_array_equal(focal(z, gamma), expected)
    d_gamma = jax.grad(lambda g: L.focal_loss(z, y, gamma=g).sum())(gamma)
    assert np.isfinite(float(d_gamma))
    flsd = jax.jit(
        jax.grad(lambda z: L.adaptive_focal_loss(z, y, boundaries=(), gammas=(gamma,)).sum())
    )
    np.testing.assert_array_equal(flsd(z), expected)
    assert float(L.focal_loss(z, y, gamma=gamma)[0]) == np.inf


@pytest.mark.parametrize("gamma", [0.0, 0.5, 2.0, 5.0])
@pytest.mark.parametrize("alpha", [None, 0.25])
def test_sigmoid_focal_gradient_finite_at_float_extremes(alpha, gamma):
    # z = -3e38, t = 1 (and the mirror z = 3e38, t = 0): the loss is 3e38 and the gradient its
    # limit α_t·(p - t) = -α_t (resp. +α_t; α_t = 1 without alpha): finite, where autodiff gave NaN.
    z = jnp.asarray([-3e38, 3e38, -3e38, 3e38], jnp.float32)
    t = jnp.asarray([1.0, 0.0, 0.0, 1.0])
    fn = functools.partial(L.sigmoid_focal_loss, alpha=alpha, gamma=gamma)
    a1, a0 = (1.0, 1.0) if alpha is None else (alpha, 1 - alpha)
    np.testing.assert_allclose(
        fn(z, t), ref_sigmoid_focal(_f64(z), _f64(t), alpha, gamma), rtol=1e-6
    )
    grad = jax.jit(jax.grad(lambda z: fn(z, t).sum()))(z)
    np.testing.assert_allclose(grad, [-a1, a0, 0.0, 0.0], atol=1e-7)


def test_label_smoothing_wide_rows_of_huge_logits():
    # K > 32 reads the row mean with a sum, which overflowed for logits of 1e37 (40 · 1e37):
    # -inf. The documented precision is an absolute error of ~1e-7 of the largest |logit|.
    z = jnp.full((2, 40), 1e37, jnp.float32).at[1, 3].set(-1e37)
    y = jnp.asarray([0, 3])
    out = np.asarray(L.label_smoothing_cross_entropy(z, y, epsilon=0.1), np.float64)
    assert np.isfinite(out).all()
    np.testing.assert_array_less(np.abs(out - ref_ls(_f64(z), y, 0.1)), 1e-6 * 1e37)


HP_DEFAULT = {
    "epsilon": 0.1,
    "gamma": 2.0,
    "beta": 0.3,
    "alpha": 0.25,
    "boundaries": (0.2, 0.5),
    "gammas": (5.0, 3.0, 2.0),
}


def _named(name):
    return lambda z: _losses(z, Y, T, HP_DEFAULT)[name](z)


@pytest.mark.parametrize("name", sorted(_losses(Z, Y, T, HP_DEFAULT)))
@pytest.mark.parametrize("bad", [-np.inf, np.inf, np.nan])
def test_non_finite_logit_is_invalid_in_every_mode(name, bad):
    # -inf used to drop out of the softmax under jit (cross-entropy 1.3133 for [0, -inf, 1])
    # while the eager check raised: now every mode treats it like NaN and +inf.
    fn = _named(name)
    z = Z.at[1, 2].set(bad)
    with pytest.raises(ValueError, match="logits must be finite"):
        fn(z)
    with pytest.raises(Exception, match="logits must be finite"):
        cj.validation.checked(jax.jit(fn))(z)
    out = np.asarray(jax.jit(fn)(z))
    row = out[1, 2] if name.startswith("sigmoid") else out[1]
    assert np.isnan(row), (name, out)
    grad = np.asarray(jax.jit(jax.grad(lambda z: fn(z).sum()))(z))
    assert np.isnan(grad[1]).any(), name


@pytest.mark.parametrize(
    "name", [n for n in sorted(_losses(Z, Y, T, HP_DEFAULT)) if "sigmoid" not in n]
)
def test_out_of_range_label_gives_nan_value_and_gradient_under_jit(name):
    # The value was already NaN; the gradient was a finite step toward class 0.
    fn = _losses
    for bad in (5, -1, 1000):
        y = Y.at[1].set(bad)
        value_and_grad = jax.jit(
            lambda z, y: jax.vjp(lambda z: fn(z, y, T, HP_DEFAULT)[name](z), z)[0]
        )
        assert np.isnan(np.asarray(value_and_grad(Z, y))[1])
        grad = jax.jit(jax.grad(lambda z, y: fn(z, y, T, HP_DEFAULT)[name](z).sum()))(Z, y)
        assert np.isnan(np.asarray(grad)[1]).any(), name
        assert np.isfinite(np.asarray(grad)[[0, 2, 3]]).all(), name


# ----------------------------------------------------------------------------- battery

# A few shapes, so that the examples reuse compilations.
SHAPES = [(1,), (3, 2), (2, 3, 5), (6, 8)]


@st.composite
def valid_case(draw, shapes=SHAPES):
    shape = draw(st.sampled_from(shapes))
    dtype = draw(st.sampled_from([jnp.float32, jnp.bfloat16]))
    scale = draw(st.sampled_from([0.1, 1.0, 4.0, 30.0]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(0, scale, shape), dtype)
    y = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]), jnp.int32)
    soft = draw(st.booleans())
    t = rng.random(shape) if soft else rng.integers(0, 2, shape)
    b1 = float(np.float32(draw(st.floats(0.05, 0.6))))
    b2 = float(np.float32(draw(st.floats(b1 + 0.05, 0.95))))
    unit = st.floats(0, 1, width=32)
    hp = {
        "epsilon": draw(unit),
        "gamma": draw(st.floats(0, 5, width=32)),
        "beta": draw(st.floats(0, 3, width=32)),
        "alpha": draw(unit),
        "boundaries": (b1, b2),
        "gammas": tuple(draw(st.floats(0, 5, width=32)) for _ in range(3)),
    }
    return z, y, jnp.asarray(t, jnp.float32), hp


def _far_from_boundaries(z64, y, hp):
    p_y = np.exp(label_log_prob64(z64, y))
    bounds = np.asarray([0.2, *hp["boundaries"]])
    return np.min(np.abs(p_y[..., None] - bounds)) > 1e-4


@hypothesis.settings(max_examples=30, deadline=None)
@hypothesis.given(case=valid_case())
def test_values_and_gradients_match_float64_references(case):
    z, y, t, hp = case
    z64, y_np, t64 = _f64(z), np.asarray(y), _f64(t)
    # The adaptive schedule reads p_y in float32: keep rows clear of its steps.
    hypothesis.assume(_far_from_boundaries(z64, y_np, hp))
    out = values_and_grads(z, y, t, _traced_hp(hp))
    refs = references(y_np, t64, {**hp, "boundaries": np.asarray(hp["boundaries"])}, z64)
    assert set(out) == set(refs)
    bf16 = z.dtype == jnp.bfloat16
    size = 1.0 + np.abs(z64).max()
    for name, (value, grad) in out.items():
        assert value.dtype == jnp.float32 and grad.dtype == z.dtype, name
        expected = refs[name](z64)
        np.testing.assert_allclose(value, expected, rtol=2e-5, atol=2e-6 * size, err_msg=name)
        np.testing.assert_allclose(
            np.asarray(grad, np.float64),
            fd_grad(refs[name], z64, elementwise=name in ELEMENTWISE),
            rtol=1e-2 if bf16 else 1e-4,
            atol=2e-5 * size,
            err_msg=name,
        )


EXTREMES = [-3e38, -1e38, -1e30, -1e4, -30.0, -1.0, 0.0, 1.0, 30.0, 1e4, 1e30, 1e38, 3e38]


@st.composite
def extreme_case(draw):
    shape = draw(st.sampled_from([(3, 2), (4, 5)]))
    z = np.asarray(
        draw(
            st.lists(
                st.sampled_from(EXTREMES),
                min_size=int(np.prod(shape)),
                max_size=int(np.prod(shape)),
            )
        ),
        np.float32,
    ).reshape(shape)
    y = np.asarray(
        draw(st.lists(st.integers(0, shape[-1] - 1), min_size=shape[0], max_size=shape[0])),
        np.int32,
    )
    t = np.asarray(
        draw(st.lists(st.sampled_from([0.0, 1.0, 0.3]), min_size=z.size, max_size=z.size)),
        np.float32,
    ).reshape(shape)
    gamma = draw(st.sampled_from([0.0, 0.5, 1.0, 2.0, 3.0, 5.0]))
    hp = {**HP_DEFAULT, "gamma": gamma, "beta": draw(st.sampled_from([0.0, 0.5, 10.0]))}
    return jnp.asarray(z), jnp.asarray(y), jnp.asarray(t), hp


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(case=extreme_case())
def test_finite_gradients_and_right_values_at_extreme_finite_logits(case):
    z, y, t, hp = case
    z64 = _f64(z)
    out = values_and_grads(z, y, t, _traced_hp(hp))
    refs = references(np.asarray(y), _f64(t), hp, z64)
    for name, (value, grad) in out.items():
        assert np.isfinite(np.asarray(grad)).all(), (name, np.asarray(grad))
        value, expected = np.asarray(value, np.float64), refs[name](z64)
        # A loss past the float32 maximum is +inf; every other one is its reference.
        np.testing.assert_array_equal(np.isinf(value), expected > F32_MAX, err_msg=name)
        finite = expected <= F32_MAX
        scale = 1.0 + np.abs(z64).max(-1) if name not in ELEMENTWISE else 1.0 + np.abs(z64)
        np.testing.assert_allclose(
            value[finite],
            expected[finite],
            rtol=1e-5,
            atol=1e-6 * np.broadcast_to(scale, value.shape)[finite].max(initial=1.0),
            err_msg=name,
        )


BAD_KINDS = ["label_high", "label_negative", "nan_logit", "inf_logit", "neg_inf_logit", "hyper"]
BAD_HYPER = {
    "epsilon": [1.5, -0.1, np.nan],
    "gamma": [-1.0, -1e-3, np.nan, np.inf],
    "beta": [-0.5, np.nan, -np.inf],
    "alpha": [1.5, -0.5, np.nan],
    "gammas": [(5.0, -3.0, 2.0), (np.nan, 3.0, 2.0)],
    "boundaries": [(0.5, 0.2), (0.2, 2.0)],
}
# hyperparameter -> the losses that read it
READS = {
    "epsilon": ["label_smoothing", "label_smoothing_paper"],
    "gamma": ["focal", "sigmoid_focal", "sigmoid_focal_no_alpha"],
    "beta": ["entropy_reg"],
    "alpha": ["sigmoid_focal"],
    "gammas": ["flsd_traced"],
    "boundaries": ["flsd_traced"],
}


@hypothesis.settings(max_examples=40, deadline=None)
@hypothesis.given(case=valid_case(shapes=[(3, 2), (4, 5), (2, 3, 4)]), data=st.data())
def test_invalid_input_is_never_a_finite_number_under_jit(case, data):
    z, y, t, hp = case
    kind = data.draw(st.sampled_from(BAD_KINDS))
    lead = z.shape[:-1]
    row = tuple(data.draw(st.integers(0, n - 1)) for n in lead)
    col = data.draw(st.integers(0, z.shape[-1] - 1))
    affected = None  # names of the losses that must be NaN at `row`, or all of them
    if kind == "label_high":
        y = y.at[row].set(z.shape[-1] + data.draw(st.integers(0, 1000)))
        t = t.at[(*row, col)].set(data.draw(st.sampled_from([1.5, -0.5, np.nan])))
    elif kind == "label_negative":
        y = y.at[row].set(-1 - data.draw(st.integers(0, 1000)))
        t = t.at[(*row, col)].set(-1e-3)
    elif kind.endswith("logit"):
        bad = {"nan_logit": np.nan, "inf_logit": np.inf, "neg_inf_logit": -np.inf}[kind]
        z = z.at[(*row, col)].set(bad)
    else:
        key = data.draw(st.sampled_from(sorted(BAD_HYPER)))
        hp = {**hp, key: data.draw(st.sampled_from(BAD_HYPER[key]))}
        affected = [name for name in READS[key] if z.shape[-1] >= 2 or "paper" not in name]
    out = values_and_grads(z, y, t, _traced_hp(hp))
    for name, (value, grad) in out.items():
        if affected is not None:
            if name in affected:
                assert np.isnan(np.asarray(value)).all(), (kind, name)
                assert np.isnan(np.asarray(grad, np.float32)).all(), (kind, name)
            else:
                assert np.isfinite(np.asarray(value)).all(), (kind, name)
            continue
        at = (*row, col) if name in ELEMENTWISE else row
        assert np.isnan(np.asarray(value)[at]), (kind, name, np.asarray(value))
        assert np.isnan(np.asarray(grad, np.float32)[row]).any(), (kind, name)
