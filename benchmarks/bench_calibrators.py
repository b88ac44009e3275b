"""Calibrators: fit + apply time against netcal and scikit-learn, in the same run.

Data: over-confident synthetic logits (labels drawn from ``softmax(z)``, the model reports
``2.5 z``) at ``N x K = 50k x 100`` and ``10k x 10``. Every row times fit then apply on the same
validation set; our functions are ``jax.jit``-compiled (compile excluded: one warm-up call).
Peers get float64 NumPy inputs. netcal's multi-class BBQ at 50k x 100 would take many minutes,
so it is timed on two one-vs-rest columns and scaled by ``K / 2`` (marked "extrapolated").
"""

from __future__ import annotations

import warnings

import jax
import numpy as np

from benchmarks._harness import print_table, time_ms
from calib_jax import calibrators as cal


def _data(n: int, k: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    z = 3.0 * rng.standard_normal((n, k))
    p = np.exp(z - z.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    y = (p.cumsum(-1) > rng.random((n, 1))).argmax(-1).astype(np.int32)
    logits = (2.5 * z).astype(np.float32)
    probs = np.exp(logits - logits.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return logits, probs.astype(np.float32), y


def _ours(c, x, y):
    fit, apply = jax.jit(c.fit), jax.jit(c.apply)
    return lambda: apply(fit(x, y), x)


def _netcal(make, x, y):
    def run():
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return make().fit(x, y).transform(x)

    return run


def _sklearn_isotonic(p, y):
    from sklearn.isotonic import IsotonicRegression

    def run():
        cols = [
            IsotonicRegression(out_of_bounds="clip").fit(p[:, j], y == j).predict(p[:, j])
            for j in range(p.shape[1])
        ]
        out = np.stack(cols, -1)
        return out / np.maximum(out.sum(-1, keepdims=True), 1e-300)

    return run


def _sklearn_logreg(x, y):
    from sklearn.linear_model import LogisticRegression

    def run():
        features = x[:, None] if x.ndim == 1 else x
        return LogisticRegression(C=np.inf, max_iter=1000).fit(features, y).predict_proba(features)

    return run


def _row(name, ours_ms, peer_name, peer_ms, note=""):
    ratio = ours_ms / peer_ms if peer_ms else float("nan")
    return [name, ours_ms, peer_name, peer_ms, f"{ratio:.3f}", note]


def _size(n: int, k: int, quick: bool) -> list[list]:
    from netcal.binning import BBQ, HistogramBinning, IsotonicRegression
    from netcal.scaling import TemperatureScaling

    logits, probs, y = _data(n, k)
    p64 = probs.astype(np.float64)
    reps = dict(repeats=3 if quick else 5)
    slow = dict(repeats=1, warmup=0)
    rows = []

    ts = time_ms(_ours(cal.temperature_scaling(), logits, y), **reps)
    ts_fit_jit = jax.jit(cal.temperature_scaling().fit)
    ts_fit = time_ms(lambda: ts_fit_jit(logits, y), **reps)
    nc_ts = time_ms(_netcal(TemperatureScaling, p64, y), **slow)
    rows.append(_row("temperature (NLL) fit+apply", ts, "netcal TemperatureScaling", nc_ts))
    rows.append(_row("temperature (NLL) fit only", ts_fit, "netcal TemperatureScaling", nc_ts))
    grid = time_ms(_ours(cal.temperature_scaling(method="ece_grid"), logits, y), repeats=3)
    rows.append(_row("temperature (ECE grid, 100 T)", grid, "netcal TemperatureScaling", nc_ts))

    iso = time_ms(_ours(cal.isotonic_regression(), probs, y), **reps)
    sk_iso = time_ms(_sklearn_isotonic(p64, y), **slow)
    nc_iso = time_ms(_netcal(IsotonicRegression, p64, y), **slow)
    rows.append(_row("isotonic (one-vs-rest)", iso, "sklearn IsotonicRegression x K", sk_iso))
    rows.append(_row("isotonic (one-vs-rest)", iso, "netcal IsotonicRegression", nc_iso))

    hb = time_ms(_ours(cal.histogram_binning(), probs, y), **reps)
    nc_hb = time_ms(_netcal(lambda: HistogramBinning(bins=15), p64, y), **slow)
    rows.append(_row("histogram binning (15, one-vs-rest)", hb, "netcal HistogramBinning", nc_hb))

    bbq = time_ms(_ours(cal.bbq(), probs, y), **reps)
    if k <= 10:
        nc_bbq = time_ms(_netcal(BBQ, p64, y), **slow)
        note = ""
    else:
        cols = 2
        col_ms = [
            time_ms(_netcal(BBQ, p64[:, j], (y == j).astype(np.int64)), **slow) for j in range(cols)
        ]
        nc_bbq = float(np.mean(col_ms)) * k
        note = f"extrapolated: {cols} one-vs-rest columns x K/{cols}"
    rows.append(_row("BBQ (BDeu, one-vs-rest)", bbq, "netcal BBQ (BIC)", nc_bbq, note))

    top = np.argmax(logits, -1)
    margin = (logits[np.arange(n), top] - np.partition(logits, -2, -1)[:, -2]).astype(np.float32)
    correct = (top == y).astype(np.int32)
    platt = time_ms(_ours(cal.platt_scaling(), margin, correct), **reps)
    sk_lr = time_ms(_sklearn_logreg(margin.astype(np.float64), correct), **slow)
    rows.append(
        _row("Platt (binary, top-label margin)", platt, "sklearn LogisticRegression", sk_lr)
    )
    if k <= 10:
        ms = time_ms(_ours(cal.matrix_scaling(), logits, y), **reps)
        sk_ms = time_ms(_sklearn_logreg(logits.astype(np.float64), y), **slow)
        rows.append(_row("matrix scaling", ms, "sklearn LogisticRegression (multinomial)", sk_ms))
    return rows


def main(quick: bool) -> None:
    sizes = [(5000, 10), (10000, 20)] if quick else [(50000, 100), (10000, 10)]
    header = ["calibrator", "ours ms", "peer", "peer ms", "ours/peer", "note"]
    for n, k in sizes:
        print_table(f"Calibrators, fit + apply, N x K = {n} x {k}", header, _size(n, k, quick))


if __name__ == "__main__":
    main(quick=False)
