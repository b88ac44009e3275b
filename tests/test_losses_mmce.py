"""MMCE as the code of Mukhoti et al. (2020) computes it (``variant="mukhoti2020"``), against a
float64 transcription of that code, and the value checks of ``kernel_width``.

The reference below follows torrvision/focal_calibration ``Losses/mmce.py`` (commit 475422a)
line by line, in float64 NumPy: ``MMCE_weighted.forward`` (lines 85-140) and ``MMCE.forward``
(lines 24-51); its gradient is taken by central differences of that reference.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import losses as L


def _softmax64(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _kernel(a, b, width):
    # mmce.py lines 63-64: exp(-|x - x'| / 0.4) over a matrix of pairs.
    return np.exp(-np.abs(a[:, None] - b[None, :]) / width)


def ref_code_mmce_weighted(z, y, width=0.4):
    """``MMCE_weighted.forward`` of ``Losses/mmce.py`` (lines 85-140) in float64."""
    p = _softmax64(z)
    r, pred = p.max(-1), p.argmax(-1)  # line 94
    correct = (pred == np.asarray(y)).astype(np.float64)  # lines 96-98
    big_n = len(r)
    k, k_p = int(correct.sum()), int((1 - correct).sum())  # lines 100-101
    cond = int(k != 0) * int(k_p != 0)  # lines 102-103
    if not cond:  # lines 104-106: a batch without one of the groups takes 2 and N - 2 entries
        k, k_p = 2, big_n - 2
    correct_prob = np.sort(r * correct)[::-1][:k]  # line 109, torch.topk
    incorrect_prob = np.sort(r * (1 - correct))[::-1][:k_p]  # line 110
    cp, ip = correct_prob, incorrect_prob
    # lines 115-130: the mean of kernel * weights over each block of pairs.
    cc = np.mean(_kernel(cp, cp, width) * np.outer(1 - cp, 1 - cp))
    ii = np.mean(_kernel(ip, ip, width) * np.outer(ip, ip))
    ci = np.mean(_kernel(cp, ip, width) * np.outer(1 - cp, ip))
    m, n = correct.sum(), (1 - correct).sum()  # lines 135-136
    mmd = 1 / (m * m + 1e-5) * cc + 1 / (n * n + 1e-5) * ii - 2 / (m * n + 1e-5) * ci  # 137-139
    return max(cond * np.sqrt(mmd + 1e-10), 0.0)  # line 140


def ref_code_mmce(z, y, width=0.4):
    """``MMCE.forward`` of ``Losses/mmce.py`` (lines 24-51): the squared statistic, no root."""
    p = _softmax64(z)
    r, pred = p.max(-1), p.argmax(-1)
    c_minus_r = (pred == np.asarray(y)).astype(np.float64) - r
    return np.sum(np.outer(c_minus_r, c_minus_r) * _kernel(r, r, width)) / len(r) ** 2


def ref_equation_weighted(z, y, width=0.4):
    """Kumar et al. (2018), MMCE_w by the equation (pairs normalised once)."""
    p = _softmax64(z)
    r, a = p.max(-1), p.argmax(-1) == np.asarray(y)
    c, w = r[a], r[~a]
    m, n = len(c), len(w)
    sq = (
        np.sum(_kernel(c, c, width) * np.outer(1 - c, 1 - c)) / m**2
        + np.sum(_kernel(w, w, width) * np.outer(w, w)) / n**2
        - 2 * np.sum(_kernel(c, w, width) * np.outer(1 - c, w)) / (m * n)
    )
    return np.sqrt(sq)


def numeric_grad(f, z, h=1e-6):
    z = np.asarray(z, np.float64)
    g = np.zeros_like(z)
    for idx in np.ndindex(z.shape):
        step = np.zeros_like(z)
        step[idx] = h
        g[idx] = (f(z + step) - f(z - step)) / (2 * h)
    return g


def _batch(n, k, seed, correct):
    """Logits with clear margins (no prediction flips under finite differences) and labels
    making ``correct`` of the ``n`` rows right."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, k)) * 1.5
    pred = z.argmax(-1)
    top2 = np.sort(z, -1)[:, -2]
    z[np.arange(n), pred] = np.maximum(z[np.arange(n), pred], top2 + 0.05)
    y = pred.copy()
    wrong = rng.permutation(n)[: n - correct]
    y[wrong] = (pred[wrong] + 1 + rng.integers(0, k - 1, len(wrong))) % k
    return z.astype(np.float32), y.astype(np.int32)


CODE = dict(weighted=True, variant="mukhoti2020")
CASES = {
    "mixed": (16, 5, 0, 11),
    "one_wrong": (9, 4, 1, 8),
    "one_correct": (9, 4, 2, 1),
    "all_correct": (8, 3, 3, 8),
    "all_wrong": (8, 3, 4, 0),
}


@pytest.mark.parametrize("case", CASES)
def test_code_variant_value_and_gradient_match_the_authors_formula(case):
    n, k, seed, correct = CASES[case]
    z, y = _batch(n, k, seed, correct)
    f = lambda zz: ref_code_mmce_weighted(zz, y)
    value, grad = jax.value_and_grad(lambda zz: L.mmce(zz, y, **CODE))(jnp.asarray(z))
    np.testing.assert_allclose(float(value), f(z), rtol=2e-5, atol=1e-7)
    expected_grad = numeric_grad(f, z)
    np.testing.assert_allclose(np.asarray(grad), expected_grad, rtol=2e-3, atol=1e-6)
    with jax.enable_x64(True):
        z64 = jnp.asarray(z, jnp.float64)
        v64, g64 = jax.value_and_grad(lambda zz: L.mmce(zz, y, **CODE))(z64)
        np.testing.assert_allclose(float(v64), f(z), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(np.asarray(g64), expected_grad, rtol=1e-6, atol=1e-9)
    if correct in (0, n):  # the code's guard: 0 and no gradient without both groups
        assert float(value) == 0.0 and not np.asarray(grad).any()
    else:
        assert float(value) > 0 and np.abs(np.asarray(grad)).max() > 0


def test_code_variant_unweighted_is_the_squared_statistic():
    z, y = _batch(16, 5, 5, 10)
    got = L.mmce(z, y, variant="mukhoti2020")
    np.testing.assert_allclose(float(got), ref_code_mmce(z, y), rtol=1e-5)
    np.testing.assert_allclose(float(got), float(L.mmce(z, y)) ** 2, rtol=1e-5)


def test_scale_between_the_variants():
    # m = n = N/2: the code's value is the equation's divided by N/2 (up to its guards).
    z, y = _batch(16, 5, 6, 8)
    code = float(L.mmce(z, y, **CODE))
    equation = float(L.mmce(z, y, weighted=True))
    np.testing.assert_allclose(equation, ref_equation_weighted(z, y), rtol=1e-5)
    np.testing.assert_allclose(code, equation / 8, rtol=1e-4)
    # Otherwise each block is divided once more by its own pair count: m², n², m·n.
    z, y = _batch(16, 5, 7, 13)
    p = _softmax64(z)
    r, a = p.max(-1), p.argmax(-1) == y
    c, w = r[a], r[~a]
    m, n = len(c), len(w)
    sq = (
        np.sum(_kernel(c, c, 0.4) * np.outer(1 - c, 1 - c)) / m**4
        + np.sum(_kernel(w, w, 0.4) * np.outer(w, w)) / n**4
        - 2 * np.sum(_kernel(c, w, 0.4) * np.outer(1 - c, w)) / (m * n) ** 2
    )
    np.testing.assert_allclose(float(L.mmce(z, y, **CODE)), np.sqrt(sq), rtol=1e-4)


def test_code_variant_masks_padding_and_runs_under_jit_vmap_grad():
    z, y = _batch(12, 5, 8, 8)
    pad_z = np.concatenate([z, np.full((4, 5), np.nan, np.float32)])
    pad_y = np.concatenate([y, -np.ones(4, np.int32)])
    mask = np.arange(16) < 12
    fn = jax.jit(lambda zz, yy, ww: L.mmce(zz, yy, where=ww, **CODE))
    np.testing.assert_allclose(
        float(fn(pad_z, pad_y, mask)), ref_code_mmce_weighted(z, y), rtol=2e-5
    )
    grad = jax.grad(lambda zz: fn(zz, pad_y, mask))(jnp.asarray(pad_z))
    assert np.isfinite(np.asarray(grad)).all() and not np.asarray(grad)[12:].any()
    zs = np.stack([z, _batch(12, 5, 9, 6)[0]])
    ys = np.stack([y, _batch(12, 5, 9, 6)[1]])
    batched = jax.jit(jax.vmap(lambda zz, yy: L.mmce(zz, yy, **CODE)))(zs, ys)
    np.testing.assert_allclose(
        np.asarray(batched),
        [ref_code_mmce_weighted(a, b) for a, b in zip(zs, ys, strict=True)],
        rtol=2e-5,
    )


def test_objective_with_the_code_variant():
    z, y = _batch(16, 5, 10, 12)
    objective = L.scalar_objective(L.cross_entropy, mmce_weight=2.0, mmce_variant="mukhoti2020")
    p = _softmax64(z)
    ce = -np.log(p[np.arange(16), y])
    expected = ce.mean() + 2.0 * ref_code_mmce_weighted(z, y)
    np.testing.assert_allclose(float(objective(z, y)), expected, rtol=1e-5)


@pytest.mark.parametrize("variant", ["kumar2018", "mukhoti2020"])
@pytest.mark.parametrize("weighted", [False, True])
def test_bad_kernel_width_is_nan_under_jit_and_raises_when_checked(weighted, variant):
    z, y = _batch(8, 4, 11, 5)
    fn = jax.jit(lambda zz, w: L.mmce(zz, y, weighted=weighted, variant=variant, kernel_width=w))
    for bad in (-0.4, 0.0, np.nan):
        assert np.isnan(float(fn(z, bad)))
        with pytest.raises(Exception, match="kernel_width must be > 0"):
            cj.validation.checked(fn)(z, bad)
        with pytest.raises(ValueError, match="kernel_width must be > 0"):
            L.mmce(z, y, weighted=weighted, variant=variant, kernel_width=bad)
    good = L.mmce(z, y, weighted=weighted, variant=variant, kernel_width=0.3)
    np.testing.assert_allclose(float(fn(z, 0.3)), float(good), rtol=1e-6)
    np.testing.assert_allclose(float(cj.validation.checked(fn)(z, 0.3)), float(good), rtol=1e-6)
    grad = jax.grad(lambda zz: fn(zz, 0.3))(jnp.asarray(z))
    assert np.isfinite(np.asarray(grad)).all()


def test_bad_arguments_raise():
    z, y = _batch(8, 4, 12, 5)
    with pytest.raises(ValueError, match="variant"):
        L.mmce(z, y, weighted=True, variant="tf")
    with pytest.raises(ValueError, match="kernel_width must be a scalar"):
        L.mmce(z, y, kernel_width=jnp.ones(2))
    with pytest.raises(ValueError, match="mmce_variant"):
        L.scalar_objective(L.cross_entropy, mmce_weight=1.0, mmce_variant="tf")


def test_sum_reduction_is_the_paper_codes_objective():
    # train_utils.py line 48 and Losses/loss.py lines 17-18, 36-39: summed CE, and
    # len(batch) * (mean CE + λ·MMCE_weighted) for the MMCE rows.
    z, y = _batch(16, 5, 13, 12)
    p = _softmax64(z)
    ce = -np.log(p[np.arange(16), y])
    summed = L.scalar_objective(L.cross_entropy, reduction="sum")
    np.testing.assert_allclose(float(summed(z, y)), ce.sum(), rtol=1e-5)
    code = L.scalar_objective(
        L.cross_entropy, mmce_weight=2.0, mmce_variant="mukhoti2020", reduction="sum"
    )
    expected = 16 * (ce.mean() + 2.0 * ref_code_mmce_weighted(z, y))
    np.testing.assert_allclose(float(code(z, y)), expected, rtol=1e-5)
    # Padding counts for nothing: n is the number of valid rows.
    mask = np.arange(16) < 11
    expected = 11 * (ce[:11].mean() + 2.0 * ref_code_mmce_weighted(z[:11], y[:11]))
    np.testing.assert_allclose(float(jax.jit(code)(z, y, mask)), expected, rtol=1e-5)
    grad = jax.grad(lambda zz: code(zz, y, mask))(jnp.asarray(z))
    assert np.isfinite(np.asarray(grad)).all() and not np.asarray(grad)[11:].any()
    with pytest.raises(ValueError, match="reduction"):
        L.scalar_objective(L.cross_entropy, reduction="none")
