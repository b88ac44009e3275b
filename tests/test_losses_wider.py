"""The wider field's losses (MbLS, LogitNorm, dual focal, Poly-1, DCA, MDCA) against float64 NumPy
references (values and hand-derived gradients, extreme logits included), the authors' released
formulas run in float64 PyTorch, peers, identities, transforms, masks and bad input.

Compile time dominates: the tests reuse a few shapes and call the losses eagerly except where
jit/vmap themselves are under test.
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

F32_MAX = float(np.finfo(np.float32).max)

# ----------------------------------------------------------------------------- references
# Each takes float64 logits [N, K] and labels [N] and returns (value, gradient of the value's
# sum with respect to the logits), both float64; gradients are derived by hand.


def _f64(x):
    return np.asarray(jnp.asarray(x).astype(jnp.float32), np.float64)


def np_log_softmax(z):
    m = z.max(-1, keepdims=True)
    return z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))


def np_onehot(y, k):
    return (np.asarray(y)[..., None] == np.arange(k)).astype(np.float64)


def _max_share(z):
    # The derivative of max_k z_k, shared equally between tied maxima (JAX's convention).
    at_max = (z == z.max(-1, keepdims=True)).astype(np.float64)
    return at_max / at_max.sum(-1, keepdims=True)


def ref_mbls(z, y, margin, alpha):
    k = z.shape[-1]
    lp = np_log_softmax(z)
    onehot = np_onehot(y, k)
    gap = z.max(-1, keepdims=True) - z - margin
    active = (gap > 0).astype(np.float64)
    value = -(onehot * lp).sum(-1) + alpha / k * (active * gap).sum(-1)
    grad = (
        np.exp(lp) - onehot + alpha / k * (active.sum(-1, keepdims=True) * _max_share(z) - active)
    )
    return value, grad


def ref_logit_norm(z, y, temperature):
    k = z.shape[-1]
    norm = np.sqrt((z * z).sum(-1, keepdims=True))
    d = temperature * (norm + 1e-7)
    lp = np_log_softmax(z / d)
    onehot = np_onehot(y, k)
    g = np.exp(lp) - onehot
    # u = z/d: du/dz = (I - τ z zᵀ / (‖z‖ d)) / d, symmetric.
    radial = temperature * (z * g).sum(-1, keepdims=True) / (np.where(norm > 0, norm, 1) * d)
    return -(onehot * lp).sum(-1), (g - z * radial) / d


def ref_dual_focal(z, y, gamma):
    k = z.shape[-1]
    lp = np_log_softmax(z)
    p = np.exp(lp)
    onehot = np_onehot(y, k)
    lp_y = (onehot * lp).sum(-1, keepdims=True)
    p_y = np.exp(lp_y)
    # p_j: the largest probability of a class whose logit is below the label's (0 if none).
    below = z < (onehot * z).sum(-1, keepdims=True)
    masked = np.where(below, z, -np.inf)
    j = masked.argmax(-1)
    has_j = below.any(-1, keepdims=True)
    onehot_j = np_onehot(j, k) * has_j
    p_j = (onehot_j * p).sum(-1, keepdims=True)
    b = 1 - p_y + p_j
    value = -(b**gamma) * lp_y
    # d/dz of -b^γ log p_y with db = -dp_y + dp_j; γ b^(γ-1) log p_y → 0 at b = 0 for γ > 0.
    coef = np.where(b > 0, gamma * b**gamma * lp_y / np.where(b > 0, b, 1), 0.0)
    db = -p_y * (onehot - p) + p_j * (onehot_j - p)
    grad = -coef * db - b**gamma * (onehot - p)
    return value[:, 0], grad


def ref_poly1(z, y, epsilon):
    k = z.shape[-1]
    lp = np_log_softmax(z)
    p = np.exp(lp)
    onehot = np_onehot(y, k)
    lp_y = (onehot * lp).sum(-1, keepdims=True)
    p_y = np.exp(lp_y)
    value = -lp_y - epsilon * np.expm1(lp_y)
    return value[:, 0], p - onehot - epsilon * p_y * (onehot - p)


def ref_dca(z, y):
    n = z.shape[0]
    p = np.exp(np_log_softmax(z))
    c = p.max(-1)
    correct = (z.argmax(-1) == y).astype(np.float64)
    gap = np.mean(c - correct)
    grad = np.sign(gap) / n * c[:, None] * (_max_share(z) - p)
    return abs(gap), grad


def ref_mdca(z, y):
    n, k = z.shape
    p = np.exp(np_log_softmax(z))
    gaps = (p - np_onehot(y, k)).mean(0)
    s = np.sign(gaps)
    grad = p * (s - (p * s).sum(-1, keepdims=True)) / (k * n)
    return np.abs(gaps).mean(), grad


# name -> (calib_jax function with hyperparameters bound, float64 reference)
PER_EXAMPLE = {
    "mbls": (L.margin_label_smoothing, functools.partial(ref_mbls, margin=10.0, alpha=0.1)),
    "mbls_m2_a1": (
        functools.partial(L.margin_label_smoothing, margin=2.0, alpha=1.0),
        functools.partial(ref_mbls, margin=2.0, alpha=1.0),
    ),
    "logit_norm": (
        L.logit_norm_cross_entropy,
        functools.partial(ref_logit_norm, temperature=0.04),
    ),
    "logit_norm_t1": (
        functools.partial(L.logit_norm_cross_entropy, temperature=1.0),
        functools.partial(ref_logit_norm, temperature=1.0),
    ),
    "dual_focal": (L.dual_focal_loss, functools.partial(ref_dual_focal, gamma=5.0)),
    "dual_focal_0.5": (
        functools.partial(L.dual_focal_loss, gamma=0.5),
        functools.partial(ref_dual_focal, gamma=0.5),
    ),
    "poly1": (L.poly1_cross_entropy, functools.partial(ref_poly1, epsilon=1.0)),
    "poly1_-1": (
        functools.partial(L.poly1_cross_entropy, epsilon=-1.0),
        functools.partial(ref_poly1, epsilon=-1.0),
    ),
}
BATCH = {"dca": (L.dca_penalty, ref_dca), "mdca": (L.mdca_penalty, ref_mdca)}
ALL = {name: fn for name, (fn, _) in (PER_EXAMPLE | BATCH).items()}
# LogitNorm's normalised logits reach 1/τ = 25 in magnitude: float32 rounds them, and so the
# loss, to an absolute ~1e-6 whatever the loss's size (as for cross-entropy of such logits).
ATOL = {"logit_norm": 1e-5}


def make_inputs(shape, dtype=jnp.float32, seed=0, scale=3.0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray(rng.normal(0, scale, shape), dtype)
    y = jnp.asarray(rng.integers(0, shape[-1], shape[:-1]), jnp.int32)
    return z, y


def _flat(z, y):
    return _f64(z).reshape(-1, z.shape[-1]), np.asarray(y).reshape(-1)


@jax.jit
def _values_and_grads(z, y):
    out = {}
    for name, fn in ALL.items():
        out[name] = (fn(z, y), jax.grad(lambda z, fn=fn: jnp.sum(fn(z, y)))(z))
    return out


def assert_rows_close(actual, expected, rtol, unit, err_msg=""):
    """Row by row: relative to the row's largest reference entry, plus float32's absolute error
    ``1e-6·unit`` on terms like ``p - onehot`` (``unit``: their scale per row, e.g. 1/N for a
    batch mean), plus 1e-37 for the entries float32 flushes to zero."""
    actual = np.asarray(actual, np.float64).reshape(expected.shape)
    bound = rtol * np.abs(expected).max(-1, keepdims=True) + 1e-6 * unit + 1e-37
    np.testing.assert_array_less(
        np.abs(actual - expected), np.broadcast_to(bound, expected.shape), err_msg=err_msg
    )


def gradient_unit(name, z):
    """The scale of the softmax terms in each row's gradient (see :func:`assert_rows_close`)."""
    n, k = z.shape
    if name.startswith("logit_norm"):
        tau = 0.04 if name == "logit_norm" else 1.0
        return 1 / (tau * (np.sqrt((z * z).sum(-1, keepdims=True)) + 1e-7))
    return {"dca": 1 / n, "mdca": 1 / (n * k)}.get(name, 1.0)


def assert_values_close(actual, expected, rtol, atol, err_msg=""):
    """Float32 values against float64 ones; a reference beyond float32's range must be inf."""
    actual = np.asarray(actual, np.float64).reshape(np.shape(expected))
    expected = np.asarray(expected, np.float64)
    huge = np.abs(expected) > F32_MAX
    np.testing.assert_array_equal(actual[huge], np.sign(expected[huge]) * np.inf, err_msg=err_msg)
    np.testing.assert_allclose(
        actual[~huge], expected[~huge], rtol=rtol, atol=atol, err_msg=err_msg
    )


# ----------------------------------------------------------------------------- values


@pytest.mark.parametrize("shape", [(64, 10), (2, 5, 7), (4, 100)], ids=str)
def test_matches_float64_reference_values_and_gradients(shape):
    z, y = make_inputs(shape, seed=shape[-1])
    zf, yf = _flat(z, y)
    for name, (out, grad) in _values_and_grads(z, y).items():
        fn_ref = (PER_EXAMPLE | BATCH)[name][1]
        ref_value, ref_grad = fn_ref(zf, yf)
        expected_shape = y.shape if name in PER_EXAMPLE else ()
        assert out.shape == expected_shape and out.dtype == jnp.float32, name
        np.testing.assert_allclose(
            np.asarray(out).reshape(-1),
            np.reshape(ref_value, -1),
            rtol=1e-5,
            atol=ATOL.get(name, 1e-7),
            err_msg=name,
        )
        assert grad.shape == z.shape and grad.dtype == jnp.float32, name
        assert_rows_close(grad, ref_grad, rtol=1e-4, unit=gradient_unit(name, zf), err_msg=name)


# Rows of logits at and beyond the float32 range's edge, each with every label.
EXTREME = np.array(
    [
        [3e38, -3e38, 0.0],
        [-3e38, -3e38, 3e38],
        [3e38, 3e38, -3e38],
        [3e38, 1e38, -1e38],
        [1e4, -1e4, 0.0],
        [1e4, 1e4 - 1, 1e4 - 2],
        [100.0, 0.0, -100.0],
        [30.0, 0.0, 0.0],
        [0.0, 0.0, 0.0],
        [1e-30, -2e-30, 0.0],
        [-F32_MAX, -F32_MAX, -F32_MAX],
    ],
    np.float32,
)
EXTREME_Z = jnp.asarray(np.repeat(EXTREME, 3, axis=0))
EXTREME_Y = jnp.asarray(np.tile(np.arange(3), len(EXTREME)), jnp.int32)


def test_extreme_logits_match_float64_reference():
    zf, yf = _flat(EXTREME_Z, EXTREME_Y)
    for name, (out, grad) in _values_and_grads(EXTREME_Z, EXTREME_Y).items():
        ref_value, ref_grad = (PER_EXAMPLE | BATCH)[name][1](zf, yf)
        assert np.isfinite(np.asarray(grad)).all(), name
        assert_values_close(out, ref_value, rtol=1e-5, atol=1e-6, err_msg=name)
        assert_rows_close(grad, ref_grad, rtol=1e-4, unit=gradient_unit(name, zf), err_msg=name)
    # The overflow cases are there: -log p_y = 6e38 is beyond float32 for these rows.
    assert np.isinf(np.asarray(L.poly1_cross_entropy(EXTREME_Z[:3], EXTREME_Y[:3]))).any()


@jax.jit
def _extreme_grads_gamma(z):
    gammas = jnp.asarray([0.0, 0.3, 1.0, 2.0, 5.0])

    def dual(z, gamma):
        return L.dual_focal_loss(z, EXTREME_Y, gamma=gamma).sum()

    return jax.vmap(jax.grad(dual), in_axes=(None, 0))(z, gammas), _values_and_grads(z, EXTREME_Y)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["f32", "bf16"])
def test_finite_gradients_at_extreme_logits(dtype):
    # -F32_MAX rounds to -inf in bf16 (invalid input: NaN by policy): use the dtype's own max.
    big = float(jnp.finfo(dtype).max)
    dual_grads, out = _extreme_grads_gamma(jnp.clip(EXTREME_Z, -big, big).astype(dtype))
    assert dual_grads.dtype == dtype and np.isfinite(np.asarray(dual_grads, np.float32)).all()
    for name, (_, grad) in out.items():
        assert grad.dtype == dtype, name
        assert np.isfinite(np.asarray(grad, np.float32)).all(), name


# ----------------------------------------------------------------------------- authors' code
# Each function below transcribes the authors' released PyTorch code (cited by repository, file
# and line, at the commits fetched for this test) into float64 on a fixed input; value and
# autograd gradient are compared with ours in float32.

FIXED_Z, FIXED_Y = make_inputs((64, 10), seed=42, scale=4.0)


def _torch_inputs():
    torch = pytest.importorskip("torch")
    z = torch.tensor(np.asarray(FIXED_Z), dtype=torch.float64, requires_grad=True)
    y = torch.tensor(np.asarray(FIXED_Y), dtype=torch.long)
    return torch, z, y


def _compare_with_torch(ours, torch_loss, z):
    torch_loss.backward()
    value, grad = jax.value_and_grad(ours)(FIXED_Z)
    np.testing.assert_allclose(float(value), torch_loss.item(), rtol=1e-5)
    np.testing.assert_allclose(grad, z.grad.numpy(), rtol=1e-4, atol=1e-8)


@pytest.mark.parametrize(("margin", "alpha"), [(10.0, 0.1), (3.0, 0.5)])
def test_mbls_reproduces_authors_code(margin, alpha):
    # by-liu/MbLS @ dc86503, calibrate/losses/logit_margin_l1.py lines 65-89 (LogitMarginL1:
    # get_diff and forward): CE (batch mean) + α · mean over all N·K entries of
    # relu(max_j z_j - z_k - m). Defaults m = 10, α = 0.1 (lines 31-32, configs/loss/
    # logit_margin.yaml).
    torch, z, y = _torch_inputs()
    ce = torch.nn.functional.cross_entropy(z, y)
    max_values = z.max(dim=1).values.unsqueeze(dim=1).repeat(1, z.shape[1])
    loss_margin = torch.nn.functional.relu(max_values - z - margin).mean()
    theirs = ce + alpha * loss_margin
    assert loss_margin.item() > 0  # the penalty is active on this input
    _compare_with_torch(
        lambda z: L.margin_label_smoothing(z, FIXED_Y, margin=margin, alpha=alpha).mean(),
        theirs,
        z,
    )


@pytest.mark.parametrize("temperature", [0.04, 0.01, 1.0])
def test_logit_norm_reproduces_authors_code(temperature):
    # hongxin001/logitnorm_ood @ 0a60eef, common/loss_function.py lines 54-57 (LogitNormLoss.
    # forward): norms = ‖x‖_2 + 1e-7; F.cross_entropy(x / norms / t) (batch mean).
    torch, z, y = _torch_inputs()
    norms = torch.norm(z, p=2, dim=-1, keepdim=True) + 1e-7
    theirs = torch.nn.functional.cross_entropy(torch.div(z, norms) / temperature, y)
    _compare_with_torch(
        lambda z: L.logit_norm_cross_entropy(z, FIXED_Y, temperature=temperature).mean(),
        theirs,
        z,
    )


@pytest.mark.parametrize("gamma", [5.0, 2.6, 0.5])
def test_dual_focal_reproduces_authors_code(gamma):
    # Linwei94/ICML2023-DualFocalLoss @ 106f26b, dual_focal_loss.py lines 25-38
    # (DualFocalLoss.forward, size_average=False: a sum): p_j is the top-1 of p masked by
    # p < p_y (line 30: "mask all logit larger and equal than p_k"), loss line 33.
    torch, z, y = _torch_inputs()
    logp_k = torch.nn.functional.log_softmax(z, dim=1)
    softmax_logits = logp_k.exp()
    logp_k = logp_k.gather(1, y.view(-1, 1)).view(-1)
    p_k = logp_k.exp()
    p_j_mask = torch.lt(softmax_logits, p_k.reshape(p_k.shape[0], 1)) * 1
    p_j = torch.topk(p_j_mask * softmax_logits, 1)[0].squeeze()
    theirs = (-1 * (1 - p_k + p_j) ** gamma * logp_k).sum()
    # The input has wrong predictions whose p_j is not the predicted class, and labels ranked
    # last (p_j = 0): the cases where "largest below the label" differs from "largest other".
    wrong = np.asarray(jnp.argmax(FIXED_Z, -1) != FIXED_Y)
    assert wrong.sum() > 10 and (p_j.detach().numpy() == 0).any()
    _compare_with_torch(lambda z: L.dual_focal_loss(z, FIXED_Y, gamma=gamma).sum(), theirs, z)


def test_mdca_reproduces_authors_code():
    # mdca-loss/MDCA-Calibration @ cece2e5, solvers/loss.py lines 59-70 (MDCA.forward): for
    # each class |mean_n softmax(z)[:, c] - mean_n 1[y = c]|, summed, divided by K.
    torch, z, y = _torch_inputs()
    output = torch.softmax(z, dim=1)
    theirs = torch.tensor(0.0, dtype=torch.float64)
    for c in range(output.shape[1]):
        theirs = theirs + torch.abs(torch.mean(output[:, c]) - (y == c).double().mean())
    theirs = theirs / output.shape[1]
    _compare_with_torch(lambda z: L.mdca_penalty(z, FIXED_Y), theirs, z)


def test_dca_reproduces_authors_code_and_netcal():
    # GB-TonyLiang/DCA @ 045ee26, loss_fn.py lines 7-12 (cross_entropy_with_dca_loss, its DCA
    # term): |mean(max softmax) - accuracy|, gradient through the confidences only.
    torch, z, y = _torch_inputs()
    confidences, predictions = torch.max(torch.softmax(z, dim=1), 1)
    accuracies = predictions.eq(y)
    theirs = torch.abs(confidences.mean() - accuracies.double().sum() / len(accuracies))
    _compare_with_torch(lambda z: L.dca_penalty(z, FIXED_Y), theirs, z)
    netcal_regularization = pytest.importorskip("netcal.regularization")
    peer = netcal_regularization.DCAPenalty()(
        torch.tensor(np.asarray(FIXED_Z)), torch.tensor(np.asarray(FIXED_Y))
    )
    np.testing.assert_allclose(float(L.dca_penalty(FIXED_Z, FIXED_Y)), peer.item(), rtol=1e-5)


@pytest.mark.parametrize("epsilon", [1.0, 2.0, -1.0])
def test_poly1_matches_the_paper_listing_and_optax(epsilon):
    # Leng et al. (ICLR 2022), the Poly-1 code listing of the paper: pt = Σ onehot·softmax,
    # Poly1 = CE + ε(1 - pt) (per example). No separate code release.
    torch, z, y = _torch_inputs()
    onehot = torch.nn.functional.one_hot(y, z.shape[1]).double()
    pt = torch.sum(onehot * torch.softmax(z, dim=-1), dim=-1)
    ce = torch.nn.functional.cross_entropy(z, y, reduction="none")
    theirs = (ce + epsilon * (1 - pt)).sum()
    _compare_with_torch(
        lambda z: L.poly1_cross_entropy(z, FIXED_Y, epsilon=epsilon).sum(), theirs, z
    )
    t = jax.nn.one_hot(FIXED_Y, FIXED_Z.shape[-1])
    np.testing.assert_allclose(
        L.poly1_cross_entropy(FIXED_Z, FIXED_Y, epsilon=epsilon),
        optax.losses.poly_loss_cross_entropy(FIXED_Z, t, epsilon=epsilon),
        rtol=1e-5,
        atol=1e-6,
    )


# ----------------------------------------------------------------------------- identities


def test_identities():
    z, y = make_inputs((2, 5, 10), seed=1)
    ce = L.cross_entropy(z, y)
    np.testing.assert_array_equal(L.margin_label_smoothing(z, y, alpha=0.0), ce)
    np.testing.assert_array_equal(L.margin_label_smoothing(z, y, margin=1e4), ce)
    np.testing.assert_allclose(L.dual_focal_loss(z, y, gamma=0.0), ce, rtol=1e-6)
    np.testing.assert_allclose(L.poly1_cross_entropy(z, y, epsilon=0.0), ce, rtol=1e-6)
    np.testing.assert_array_equal(L.dual_focal_loss(z, y), L.dual_focal_loss(z, y, gamma=5.0))
    # LogitNorm is cross-entropy of z/(τ(‖z‖ + 1e-7)), written out naively for these logits.
    tau = 0.04
    u = z / (tau * (jnp.linalg.norm(z, axis=-1, keepdims=True) + 1e-7))
    np.testing.assert_allclose(L.logit_norm_cross_entropy(z, y), L.cross_entropy(u, y), rtol=1e-5)
    # ... so it is (up to the 1e-7) invariant to scaling the logits.
    np.testing.assert_allclose(
        L.logit_norm_cross_entropy(1e30 * z, y), L.logit_norm_cross_entropy(z, y), rtol=1e-5
    )
    # MDCA is 0 when every class's mean probability equals its frequency.
    uniform_y = jnp.arange(20, dtype=jnp.int32) % 4
    assert float(L.mdca_penalty(jnp.zeros((20, 4)), uniform_y)) == 0.0
    # DCA on an all-correct batch is the mean under-confidence 1 - mean(c).
    zc = jnp.asarray([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]])
    yc = jnp.asarray([0, 1, 0])
    np.testing.assert_allclose(
        L.dca_penalty(zc, yc), 1 - jnp.mean(jnp.max(jax.nn.softmax(zc), -1)), rtol=1e-6
    )


@hypothesis.settings(max_examples=25, deadline=None)
@hypothesis.given(
    logits=st.lists(st.floats(-30, 30, allow_nan=False, width=32), min_size=5, max_size=5),
    label=st.integers(0, 4),
    gamma=st.sampled_from([0.5, 1.0, 2.0, 5.0]),
)
def test_dual_focal_lies_between_focal_and_cross_entropy(logits, label, gamma):
    # 1 - p_y <= 1 - p_y + p_j < 1 since 0 <= p_j < p_y.
    z, y = jnp.asarray([logits], jnp.float32), jnp.asarray([label])
    dual = float(L.dual_focal_loss(z, y, gamma=gamma)[0])
    focal = float(L.focal_loss(z, y, gamma=gamma)[0])
    ce = float(L.cross_entropy(z, y)[0])
    assert focal - 1e-6 * (1 + focal) <= dual <= ce + 1e-6 * (1 + ce)


def test_dual_focal_gradient_matches_autodiff_of_naive_formula():
    z, y = make_inputs((16, 5), seed=4)

    def naive(z, gamma):
        # p and p_y from the same log-softmax, as in the authors' code: with p from
        # jax.nn.softmax, rounding can put the label's own p below p_y and select it as p_j.
        log_p = jax.nn.log_softmax(z)
        p = jnp.exp(log_p)
        log_p_y = jnp.take_along_axis(log_p, y[:, None], -1)[:, 0]
        p_y = jnp.exp(log_p_y)
        p_j = jnp.max(jnp.where(p < p_y[:, None], p, 0.0), -1)
        return jnp.sum(-((1 - p_y + p_j) ** gamma) * log_p_y)

    ours = jax.jit(jax.grad(lambda z, g: L.dual_focal_loss(z, y, gamma=g).sum(), argnums=(0, 1)))
    theirs = jax.jit(jax.grad(naive, argnums=(0, 1)))
    for gamma in (1.0, 2.0, 3.0, 5.0):
        for a, b in zip(ours(z, gamma), theirs(z, gamma), strict=True):
            np.testing.assert_allclose(a, b, rtol=2e-5, atol=1e-7)


def test_penalties_compose_with_scalar_objective():
    z, y = make_inputs((2, 5, 10), seed=8, scale=1.0)
    mask = jnp.asarray(np.random.default_rng(1).random((2, 5)) < 0.6)
    for penalty, ref, beta in ((L.mdca_penalty, ref_mdca, 1.0), (L.dca_penalty, ref_dca, 10.0)):
        objective = L.scalar_objective(L.cross_entropy, penalty=penalty, penalty_weight=beta)
        zf, yf = _flat(z, y)
        keep = np.asarray(mask).reshape(-1)
        ce = -(np_onehot(yf, 10) * np_log_softmax(zf)).sum(-1)
        expected = ce[keep].mean() + beta * ref(zf[keep], yf[keep])[0]
        np.testing.assert_allclose(objective(z, y, where=mask), expected, rtol=1e-5)
        summed = L.scalar_objective(
            L.cross_entropy, penalty=penalty, penalty_weight=beta, reduction="sum"
        )
        np.testing.assert_allclose(summed(z, y, where=mask), keep.sum() * expected, rtol=1e-5)
        grad = jax.jit(jax.grad(objective))(z, y, mask)
        assert np.isfinite(np.asarray(grad)).all()
        assert (np.asarray(grad)[~np.asarray(mask)] == 0).all()
    with pytest.raises(ValueError, match="penalty_weight"):
        L.scalar_objective(L.cross_entropy, penalty=L.mdca_penalty, penalty_weight=-1.0)
    with pytest.raises(ValueError, match="must return a scalar"):
        L.scalar_objective(L.cross_entropy, penalty=L.cross_entropy)(z, y)


# ----------------------------------------------------------------------------- transforms

Z, Y = make_inputs((3, 4, 5), seed=2, scale=1.0)


@pytest.mark.parametrize("name", ALL)
def test_jit_vmap_grad(name):
    fn = ALL[name]
    jitted = jax.jit(fn)
    rows = [jitted(Z[i], Y[i]) for i in range(Z.shape[0])]
    atol = ATOL.get(name, 1e-7)
    np.testing.assert_allclose(rows[0], fn(Z[0], Y[0]), rtol=1e-6, atol=atol)  # jit == eager
    np.testing.assert_allclose(jax.jit(jax.vmap(fn))(Z, Y), jnp.stack(rows), rtol=1e-6, atol=atol)
    grad = jax.jit(jax.grad(lambda z: jnp.sum(jax.vmap(fn)(z, Y))))(Z)
    assert grad.shape == Z.shape and np.isfinite(np.asarray(grad)).all()
    assert np.abs(np.asarray(grad)).max() > 0


@pytest.mark.parametrize("name", ALL)
def test_check_grads(name):
    fn = ALL[name]
    with jax.enable_x64(True):
        z = jnp.asarray(3 * np.asarray(Z[0]), jnp.float64)
        f = jax.jit(lambda z: fn(z, Y[0]))
        check_grads(f, (z,), order=1)
        if name.startswith("dual_focal"):  # second order through the hand-written jvp
            check_grads(f, (z,), order=2, modes=("rev",))


def test_traced_hyperparameters():
    z, y = Z[0], Y[0]
    for fn, kwarg, value in (
        (L.margin_label_smoothing, "alpha", 0.3),
        (L.margin_label_smoothing, "margin", 1.0),
        (L.logit_norm_cross_entropy, "temperature", 0.5),
        (L.dual_focal_loss, "gamma", 2.0),
        (L.poly1_cross_entropy, "epsilon", 2.0),
    ):
        jitted = jax.jit(lambda z, h, fn=fn, kwarg=kwarg: fn(z, y, **{kwarg: h}))
        np.testing.assert_allclose(
            jitted(z, value), fn(z, y, **{kwarg: value}), rtol=1e-6, err_msg=kwarg
        )
    d_gamma = jax.grad(lambda g: L.dual_focal_loss(z, y, gamma=g).sum())(2.0)
    assert np.isfinite(float(d_gamma)) and abs(float(d_gamma)) > 1e-3
    # MbLS: d/dm = -α·(number of active gaps)/K and d/dα = the mean hinge, per example.
    zf = 4 * _f64(z)
    gaps = zf.max(-1, keepdims=True) - zf - 1.0
    grads = jax.grad(
        lambda m, a: L.margin_label_smoothing(4 * z, y, margin=m, alpha=a).sum(), argnums=(0, 1)
    )(1.0, 0.3)
    assert (gaps > 0).sum() > 0
    np.testing.assert_allclose(grads[0], -0.3 * (gaps > 0).sum() / 5, rtol=1e-6)
    np.testing.assert_allclose(grads[1], np.maximum(gaps, 0).sum() / 5, rtol=1e-5)


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
        np.testing.assert_allclose(
            out_b[name], out_rounded[name], rtol=1e-6, atol=ATOL.get(name, 0), err_msg=name
        )
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
        for name, fn in ALL.items():
            grad = jax.grad(lambda z, fn=fn: fn(z, y_pad, where=mask).sum())(z_pad)
            out[name] = (fn(z_pad, y_pad, where=mask), fn(z, y), grad, fn(z[mask], y[mask]))
        return out

    for name, (masked, plain, grad, kept) in masked_and_plain(z_pad, y_pad, z, y).items():
        if name in PER_EXAMPLE:
            expected = jnp.where(mask, plain, 0.0)
        else:  # a padded batch gives the value of the unpadded one
            expected = kept
        np.testing.assert_allclose(
            masked, expected, rtol=1e-6, atol=ATOL.get(name, 0), err_msg=name
        )
        assert np.isfinite(np.asarray(grad)).all(), name
        assert (np.asarray(grad)[~np.asarray(mask)] == 0).all(), name
        assert (np.abs(np.asarray(grad)[np.asarray(mask)]).max(-1) > 0).all(), name
    for penalty in (L.dca_penalty, L.mdca_penalty):
        assert float(penalty(z_pad, y_pad, where=jnp.zeros((2, 5), bool))) == 0.0


# ----------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("name", ALL)
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
        cj.validation.checked(jax.jit(fn))(z, Y[0]),
        fn(z, Y[0]),
        rtol=1e-6,
        atol=ATOL.get(name, 1e-7),
    )


@pytest.mark.parametrize("name", ALL)
def test_non_finite_logits(name):
    fn = ALL[name]
    for bad in (jnp.nan, jnp.inf, -jnp.inf):
        z = Z[0].at[1, 2].set(bad)
        with pytest.raises(ValueError, match="logits must be finite"):
            fn(z, Y[0])
        if bad != -jnp.inf:  # under plain jit NaN and +inf poison the result
            assert np.isnan(np.asarray(jax.jit(fn)(z, Y[0]))).any()
    with pytest.raises(Exception, match="logits must be finite"):
        cj.validation.checked(jax.jit(fn))(Z[0].at[1, 2].set(jnp.nan), Y[0])


def test_bad_inputs_raise_clear_errors():
    z, y = Z[0], Y[0]
    for fn in ALL.values():
        with pytest.raises(ValueError, match="shape"):
            fn(z, y[:3])
        with pytest.raises(TypeError, match="integer"):
            fn(z, y.astype(jnp.float32))
        with pytest.raises(TypeError, match="floating"):
            fn(jnp.ones((4, 5), jnp.int32), y)
        with pytest.raises(ValueError, match="where"):
            fn(z, y, where=jnp.ones(3, bool))
    with pytest.raises(ValueError, match="margin"):
        L.margin_label_smoothing(z, y, margin=-1.0)
    with pytest.raises(ValueError, match="alpha"):
        L.margin_label_smoothing(z, y, alpha=-0.1)
    for t in (0.0, -0.5):
        with pytest.raises(ValueError, match="temperature"):
            L.logit_norm_cross_entropy(z, y, temperature=t)
    with pytest.raises(ValueError, match="gamma"):
        L.dual_focal_loss(z, y, gamma=-1.0)
    with pytest.raises(ValueError, match="gamma"):
        L.dual_focal_loss(z, y, gamma=jnp.ones(3))
    with pytest.raises(ValueError, match="epsilon"):
        L.poly1_cross_entropy(z, y, epsilon=-1.5)
