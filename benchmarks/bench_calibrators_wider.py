"""Paired timings of the wider-field calibrators' fits against their peers.

Beta calibration and Venn-Abers on 10k binary scores (against betacal 1.1.0 and venn-abers
1.5.4), ensemble temperature scaling and Dirichlet calibration on 10k x 10 logits (against the
float64 scipy fits the tests use: the authors' L-BFGS-B + SLSQP for ETS, L-BFGS-B of the same
objective at each λ with the same 5-fold cross-validation for Dirichlet). Our fits are jitted
and warm (compile time excluded). Run: ``python -m benchmarks.bench_calibrators_wider``;
``python -m benchmarks.bench_calibrators_wider venn_abers`` times only the Venn-Abers fit:
the hull-bridge path against the O(N^2) minimax path it replaced and against venn-abers, at
10k and 50k binary scores; ``... dirichlet`` times only Dirichlet calibration at 10k×10 and
50k×100 (one λ against torch-uncertainty's ``DirichletScaler``, the same ODIR objective; the
5-fold × 5-λ search against the scipy fits with the same CV) in alternating pairs.
"""

from __future__ import annotations

import time

import jax
import numpy as np
import threadpoolctl
from scipy import optimize

from benchmarks._harness import block, paired_ratio, time_ms
from calib_jax import calibrators as cal

N, K = 10_000, 10


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _data(seed):
    rng = np.random.default_rng(seed)
    z = 3.0 * rng.standard_normal((N, K))
    y = (_softmax(z).cumsum(-1) > rng.random((N, 1))).argmax(-1).astype(np.int32)
    s = rng.uniform(0.01, 0.99, N)
    yb = (rng.random(N) < s**2).astype(np.int32)
    return (2.5 * z).astype(np.float32), y, s.astype(np.float32), yb


def _ets_scipy(z, y):
    z = z.astype(np.float64)
    onehot = np.eye(K)[y]
    mse_t = lambda t: np.mean((_softmax(z / t[0]) - onehot) ** 2)
    t = optimize.minimize(mse_t, [1.0], method="L-BFGS-B", bounds=((0.05, 5.0),), tol=1e-12).x[0]
    comps = [_softmax(z / t), _softmax(z), np.full_like(z, 1 / K)]
    mse_w = lambda w: np.mean((w[0] * comps[0] + w[1] * comps[1] + w[2] * comps[2] - onehot) ** 2)
    simplex = {"type": "eq", "fun": lambda w: np.sum(w) - 1}
    bounds = ((0, 1),) * 3
    return optimize.minimize(
        mse_w, (1.0, 0, 0), method="SLSQP", bounds=bounds, constraints=simplex, tol=1e-12
    ).x


def _dirichlet_scipy_fit(logp, y, lam, blas_threads=1):
    n, K = logp.shape

    def f(theta):
        w, b = theta[: K * K].reshape(K, K), theta[K * K :]
        out = logp @ w.T + b
        m = out.max(-1, keepdims=True)
        e = np.exp(out - m)
        s = e.sum(-1, keepdims=True)
        nll = np.mean(m[:, 0] + np.log(s[:, 0]) - out[np.arange(n), y])
        g = e / s
        g[np.arange(n), y] -= 1
        g /= n
        off = 1 - np.eye(K)
        val = nll + lam * (np.sum((w * off) ** 2) / (K * (K - 1)) + np.sum(b**2) / K)
        gw = g.T @ logp + lam * 2 * w * off / (K * (K - 1))
        gb = g.sum(0) + lam * 2 * b / K
        return val, np.concatenate([gw.ravel(), gb])

    init = np.concatenate([np.eye(K).ravel(), np.zeros(K)])
    # One BLAS thread by default: threaded OpenBLAS on L-BFGS-B's small vectors was ~40x
    # slower on the busy 2-core machine (10k×10); large matrices may gain from threads.
    with threadpoolctl.threadpool_limits(blas_threads):
        return optimize.minimize(f, init, jac=True, method="L-BFGS-B").x


def _dirichlet_scipy(z, y, lambdas, folds=5):
    logp = np.log(_softmax(z.astype(np.float64)))
    fold = np.arange(len(y)) % folds
    for lam in lambdas:
        for f in range(folds):
            _dirichlet_scipy_fit(logp[fold != f], y[fold != f], lam)
    return _dirichlet_scipy_fit(logp, y, lambdas[0])


def main(pairs: int = 3) -> None:
    z, y, s, yb = _data(0)
    import betacal
    import venn_abers

    lambdas = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    two = np.stack([1 - s, s], 1).astype(np.float64)
    rows = [
        (
            "beta_calibration (10k binary) vs betacal",
            jax.jit(cal.beta_calibration().fit),
            (s, yb),
            lambda: betacal.BetaCalibration(parameters="abm").fit(s.astype(np.float64), yb),
        ),
        (
            "venn_abers (10k binary) vs venn-abers",
            jax.jit(cal.venn_abers().fit),
            (s, yb),
            lambda: venn_abers.VennAbers().fit(two, yb),
        ),
        (
            "ensemble_temperature_scaling (10k×10) vs scipy (authors' procedure)",
            jax.jit(cal.ensemble_temperature_scaling().fit),
            (z, y),
            lambda: _ets_scipy(z, y),
        ),
        (
            "dirichlet_calibration (10k×10, 5 folds × 5 λ) vs scipy L-BFGS-B (same CV)",
            jax.jit(cal.dirichlet_calibration(lambdas=lambdas).fit),
            (z, y),
            lambda: _dirichlet_scipy(z, y, lambdas),
        ),
    ]
    print("| fit | ours (ms) | peer (ms) | ours / peer (paired) |")
    print("|---|---|---|---|")
    for name, ours, args, peer in rows:
        ours_ms = time_ms(lambda ours=ours, args=args: ours(*args), repeats=3)
        peer_ms = time_ms(peer, repeats=3)
        ratio = paired_ratio(ours, args, lambda peer=peer: peer(), (), pairs)
        print(f"| {name} | {ours_ms:.1f} | {peer_ms:.1f} | {ratio:.3f}x |", flush=True)


def venn_abers_paths(pairs: int = 3, sizes: tuple[int, ...] = (10_000, 50_000)) -> None:
    """Venn-Abers fit: the bridge path (``fit``) vs the minimax path and vs venn-abers."""
    import venn_abers

    from calib_jax.calibrators import _venn_abers as va

    fit = jax.jit(cal.venn_abers().fit)
    minimax = jax.jit(jax.vmap(va._venn_abers_column_reference, in_axes=(0, 0, None)))
    print("| N | bridge (ms) | minimax (ms) | bridge / minimax | venn-abers (ms) | bridge / peer |")
    print("|---|---|---|---|---|---|")
    for n in sizes:
        rng = np.random.default_rng(n)
        s = rng.uniform(0.01, 0.99, n).astype(np.float32)
        yb = (rng.random(n) < s**2).astype(np.int32)
        two = np.stack([1 - s, s], 1).astype(np.float64)
        cols = (s[None], yb[None].astype(np.float32), np.ones(n, np.float32))
        peer = lambda two=two, yb=yb: venn_abers.VennAbers().fit(two, yb)
        ours_ms = time_ms(lambda s=s, yb=yb: fit(s, yb), repeats=3)
        old_ms = float("nan")
        if n <= 10_000:
            old_ms = time_ms(lambda cols=cols: minimax(*cols), repeats=1)
        old_ratio = paired_ratio(fit, (s, yb), minimax, cols, pairs) if n <= 10_000 else np.nan
        peer_ms = time_ms(peer, repeats=1)
        ratio = paired_ratio(fit, (s, yb), peer, (), pairs)
        print(
            f"| {n} | {ours_ms:.1f} | {old_ms:.1f} | {old_ratio:.4f}x | {peer_ms:.1f} | "
            f"{ratio:.3f}x |",
            flush=True,
        )


def _nll(logp, y, w, b):
    out = logp @ np.asarray(w, np.float64).T + np.asarray(b, np.float64)
    out = out - out.max(-1, keepdims=True)
    return float(np.mean(np.log(np.exp(out).sum(-1)) - out[np.arange(len(y)), y]))


def _tu_dirichlet_scaler():
    """torch-uncertainty's ``DirichletScaler`` without running the package's ``__init__``s, which
    import torchvision (not installed here); only this benchmark process sees the stubs."""
    import importlib.metadata
    import sys
    import types

    root = importlib.metadata.distribution("torch-uncertainty").locate_file("torch_uncertainty")
    for name in ("", ".post_processing", ".post_processing.calibration"):
        package = types.ModuleType("torch_uncertainty" + name)
        package.__path__ = [str(root.joinpath(*name.split(".")[1:]))]
        sys.modules.setdefault(package.__name__, package)
    abstract = importlib.import_module("torch_uncertainty.post_processing.abstract")
    sys.modules["torch_uncertainty.post_processing"].PostProcessing = abstract.PostProcessing
    module = "torch_uncertainty.post_processing.calibration.dirichlet_scaler"
    return importlib.import_module(module).DirichletScaler


def _pairs(ours, peer, pairs):
    """Alternating pairs (ours first on even pairs): median ms of each side, median ratio and
    the range of the per-pair ratios."""
    block(ours())
    block(peer())
    times = []
    for i in range(pairs):
        pair = [0.0, 0.0]
        for j in (0, 1) if i % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            block((ours, peer)[j]())
            pair[j] = (time.perf_counter() - t0) * 1e3
        times.append(pair)
    times = np.asarray(times)
    ratios = times[:, 0] / times[:, 1]
    return *np.median(times, 0), np.median(ratios), ratios.min(), ratios.max()


def _logits(n, k, seed=0):
    rng = np.random.default_rng(seed)
    z = 3.0 * rng.standard_normal((n, k))
    y = (_softmax(z).cumsum(-1) > rng.random((n, 1))).argmax(-1).astype(np.int32)
    return (2.5 * z).astype(np.float32), y


def dirichlet_paths(
    pairs: int = 5,
    sizes: tuple[tuple[int, int], ...] = ((10_000, 10), (50_000, 100)),
    lam: float = 1e-2,
) -> None:
    """Dirichlet calibration at one λ vs torch-uncertainty, and the CV search vs scipy.

    Every row alternates ours and the peer ``pairs`` times (compile and warm-up excluded) and
    checks first that both reach the same penalised NLL (float64). The scipy CV at 50k×100
    (26 fits of 10,100 parameters) is out of reach on the 2-core machine; there one scipy fit
    at one λ (threaded BLAS) is timed once against the median of three of ours instead.
    """
    import os

    import torch
    from torch.utils.data import DataLoader, TensorDataset

    DirichletScaler = _tu_dirichlet_scaler()
    lambdas = (1e-4, 1e-3, 1e-2, 1e-1, 1.0)
    print(f"load average {os.getloadavg()}, torch threads {torch.get_num_threads()}")
    print("| fit | ours (ms) | peer (ms) | ours / peer (median, range) | objective ours / peer |")
    print("|---|---|---|---|---|")

    def row(name, ours_ms, peer_ms, ratio, lo, hi, obj=""):
        print(
            f"| {name} | {ours_ms:,.0f} | {peer_ms:,.0f} | {ratio:.3f}x ({lo:.3f}-{hi:.3f}) | "
            f"{obj} |",
            flush=True,
        )

    for n, k in sizes:
        z, y = _logits(n, k)
        logp = np.log(_softmax(z.astype(np.float64)))
        off = 1 - np.eye(k)
        one = jax.jit(cal.dirichlet_calibration(lambdas=(lam,)).fit)
        loader = DataLoader(TensorDataset(torch.from_numpy(z), torch.from_numpy(y).long()), n)

        def peer(k=k, loader=loader):
            scaler = DirichletScaler(k, lambda_reg=lam, mu_reg=lam)
            scaler.fit(loader, progress=False)
            return scaler

        def objective(w, b, logp=logp, y=y, off=off, k=k):
            w, b = np.asarray(w, np.float64), np.asarray(b, np.float64)
            penalty = np.sum((w * off) ** 2) / (k * (k - 1)) + np.mean(b**2)
            return _nll(logp, y, w, b) + lam * penalty

        params = one(z, y)
        w_t, b_t = (t.detach().numpy() for t in peer().inv_temperature)
        obj = f"{objective(params.weight, params.bias):.5f} / {objective(w_t, b_t):.5f}"
        name = f"one λ = {lam:g}, {n // 1000}k×{k}, vs torch-uncertainty DirichletScaler"
        row(name, *_pairs(lambda one=one, z=z, y=y: one(z, y), peer, pairs), obj)

        cv = jax.jit(cal.dirichlet_calibration(lambdas=lambdas).fit)
        if n * k <= 100_000:
            scipy_cv = lambda z=z, y=y: _dirichlet_scipy(z, y, lambdas)
            name = f"5 folds × 5 λ, {n // 1000}k×{k}, vs scipy L-BFGS-B (same CV)"
            row(name, *_pairs(lambda cv=cv, z=z, y=y: cv(z, y), scipy_cv, pairs))
        else:
            t0 = time.perf_counter()
            theta = _dirichlet_scipy_fit(logp, y, lam, blas_threads=None)
            scipy_ms = (time.perf_counter() - t0) * 1e3
            w_s, b_s = theta[: k * k].reshape(k, k), theta[k * k :]
            obj = f"{objective(params.weight, params.bias):.5f} / {objective(w_s, b_s):.5f}"
            ours_ms = time_ms(lambda one=one, z=z, y=y: one(z, y), repeats=3)
            name = f"one λ = {lam:g}, {n // 1000}k×{k}, vs one scipy L-BFGS-B fit (timed once)"
            ratio = ours_ms / scipy_ms
            row(name, ours_ms, scipy_ms, ratio, ratio, ratio, obj)
            t0 = time.perf_counter()
            block(cv(z, y))
            compile_and_run = time.perf_counter() - t0
            ours_ms = time_ms(lambda cv=cv, z=z, y=y: cv(z, y), repeats=1, warmup=0)
            print(
                f"| 5 folds × 5 λ, {n // 1000}k×{k}, ours alone (first call "
                f"{compile_and_run:,.1f} s) | {ours_ms:,.0f} | | | |",
                flush=True,
            )


if __name__ == "__main__":
    import sys

    modes = {"venn_abers": venn_abers_paths, "dirichlet": dirichlet_paths}
    modes.get(sys.argv[1] if len(sys.argv) > 1 else "", main)()
