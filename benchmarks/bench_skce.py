"""SKCE: the unbiased (quadratic, tiled) estimator up to N = 10^5 and the block (linear)
estimator's time per sample as N grows, with a float64 NumPy block estimator for scale.

No Python library computes SKCE (CalibrationErrors.jl is Julia). Inputs are ``[N, 10]``
probabilities with a fixed bandwidth (the default median subsample is a constant cost).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import paired_ratio, print_table, time_ms
from calib_jax import metrics as cm


def np_block(p: np.ndarray, y: np.ndarray, nu: float) -> float:
    m = len(p) // 2
    r = np.eye(p.shape[1])[y] - p
    d = p[0 : 2 * m : 2] - p[1 : 2 * m : 2]
    kern = np.exp(-np.sqrt(np.sum(d * d, axis=1)) / nu)
    return float(np.mean(kern * np.sum(r[0 : 2 * m : 2] * r[1 : 2 * m : 2], axis=1)))


def _data(n: int, k: int):
    rng = np.random.default_rng(0)
    z = rng.normal(size=(n, k)).astype(np.float32) * 2
    p = np.asarray(jax.nn.softmax(jnp.asarray(z)))
    y = rng.integers(0, k, n).astype(np.int32)
    return p, y


def main(quick: bool) -> None:
    k, nu = 10, 0.5
    unbiased = jax.jit(functools.partial(cm.skce, bandwidth=nu))
    block = jax.jit(functools.partial(cm.skce, bandwidth=nu, estimator="block"))
    rows = []
    for n in [2_000] if quick else [10_000, 30_000, 100_000]:
        p, y = _data(n, k)
        pj, yj = jnp.asarray(p), jnp.asarray(y)
        ms = time_ms(lambda pj=pj, yj=yj: unbiased(pj, yj), repeats=1 if n >= 30_000 else 3)
        rows.append([f"{n}×{k}", ms, ms * 1e6 / (n * (n - 1) / 2)])
    print_table(
        "SKCE unbiased estimator (jit, tiles of 1024×1024 pairs)",
        ["N×K", "time (ms)", "ns per pair"],
        rows,
    )
    rows = []
    for n in [10_000, 100_000] if quick else [100_000, 1_000_000, 4_000_000]:
        p, y = _data(n, k)
        pj, yj = jnp.asarray(p), jnp.asarray(y)
        ref = np_block(p.astype(np.float64), y, nu)
        assert abs(float(block(pj, yj)) - ref) < 1e-5
        ms = time_ms(lambda pj=pj, yj=yj: block(pj, yj), repeats=3 if quick else 5)
        np_ms = time_ms(lambda p=p, y=y: np_block(p, y, nu), repeats=3)
        ratio = paired_ratio(block, (pj, yj), np_block, (p, y, nu), 3 if quick else 5)
        rows.append([f"{n}×{k}", ms, ms * 1e6 / n, np_ms, ratio])
    print_table(
        "SKCE block estimator (jit): time per sample should stay flat as N grows",
        ["N×K", "calib_jax (ms)", "ns per sample", "NumPy float64 (ms)", "ratio (paired)"],
        rows,
    )
