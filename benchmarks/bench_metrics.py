"""Calibration metrics vs the floor (jitted softmax + max), torchmetrics, netcal and NumPy.

``python -m benchmarks.run metrics``. Each case draws float32 logits ``[N, K]`` and labels; JAX
functions are jitted and timed after compilation; peers get probabilities (NumPy/torch arrays)
and are timed in the same run. Ratios are per case.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import paired_ratio, print_table, time_ms
from calib_jax import metrics as cm

M = 15


def np_ece(p, y):
    c = p.max(1)
    a = p.argmax(1) == y
    b = np.clip(np.ceil(c * M).astype(np.int64) - 1, 0, M - 1)
    return np.abs(np.bincount(b, a, M) - np.bincount(b, c, M)).sum() / len(c)


def np_classwise(p, y):
    n, k = p.shape
    b = np.clip(np.ceil(p * M).astype(np.int64) - 1, 0, M - 1) + M * np.arange(k)
    gap = np.bincount(b.ravel(), p.ravel(), k * M)
    hits = np.bincount(b[np.arange(n), y], None, k * M)
    return np.abs(hits - gap).sum() / (n * k)


def np_ada(p, y):
    c = p.max(1)
    a = (p.argmax(1) == y).astype(np.float64)
    order = np.argsort(c, kind="stable")
    return sum(abs(a[i].sum() - c[i].sum()) for i in np.array_split(order, M)) / len(c)


def _case(n, k, seed=0):
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(n, k)) * 3).astype(np.float32)
    y = rng.integers(0, k, n).astype(np.int32)
    return z, y


def _labels_from_model(z, seed):
    """Labels drawn from ``softmax(z)``: the data of a perfectly calibrated model."""
    rng = np.random.default_rng(seed)
    p = np.exp(z - z.max(1, keepdims=True))
    cdf = np.cumsum(p / p.sum(1, keepdims=True), axis=1)
    labels = (cdf < rng.random((len(z), 1))).sum(1)
    return np.minimum(labels, z.shape[1] - 1).astype(np.int32)


def main(quick: bool = False) -> None:
    import torch
    from netcal.metrics import ECE
    from torchmetrics.functional.classification import multiclass_calibration_error

    torch.set_num_threads(1)
    cases = (
        [(20_000, 10), (5_000, 100)] if quick else [(1_000_000, 10), (100_000, 100), (20_000, 1000)]
    )
    repeats = 3 if quick else 7
    floor = jax.jit(lambda z: jnp.max(jax.nn.softmax(z), axis=-1))
    # One read of given probabilities: the floor of any metric on them.
    read = jax.jit(lambda p: jnp.max(p, axis=-1).sum())
    ece_l = jax.jit(lambda z, y: cm.ece(z, y, from_logits=True))
    mce_l = jax.jit(lambda z, y: cm.mce(z, y, from_logits=True))
    ece_sm = jax.jit(lambda z, y: cm.ece(jax.nn.softmax(z), y))
    report = jax.jit(cm.calibration_report)
    cw = jax.jit(cm.classwise_ece)
    ada = jax.jit(cm.ada_ece)
    ece_p = jax.jit(cm.ece)
    rows, ratio_rows, paired_rows, regime_rows = [], [], [], []

    def run(fn, *args, reps=repeats):
        return time_ms(lambda: fn(*args), repeats=reps)

    for n, k in cases:
        z, y = _case(n, k)
        zj, yj = jnp.asarray(z), jnp.asarray(y)
        pj = jax.block_until_ready(jax.nn.softmax(zj))
        p = np.array(pj)
        pt, yt = torch.from_numpy(p), torch.from_numpy(y.astype(np.int64))
        t = {}
        t["floor"] = run(floor, zj)
        t["ece(logits)"] = run(ece_l, zj, yj)
        t["mce(logits)"] = run(mce_l, zj, yj)
        t["ece(softmax(z))"] = run(ece_sm, zj, yj)
        t["ece(probs)"] = run(ece_p, pj, yj)
        t["report"] = run(report, zj, yj)
        t["classwise"] = run(cw, pj, yj)
        t["ada_ece"] = run(ada, pj, yj)
        t["np ece"] = run(np_ece, p, y)
        t["np classwise"] = run(np_classwise, p, y)
        t["np ada"] = run(np_ada, p, y)
        t["torchmetrics"] = run(multiclass_calibration_error, pt, yt, k, M)
        t["netcal"] = run(ECE(bins=M).measure, p, y, reps=max(1, repeats // 2))
        # Same numbers, or the timing means nothing.
        assert abs(float(ece_l(zj, yj)) - np_ece(p, y)) < 1e-4
        assert abs(float(cw(pj, yj)) - np_classwise(p, y)) < 1e-4
        assert abs(float(ada(pj, yj)) - np_ada(p, y)) < 1e-4
        rows.append([f"{n}x{k}", *(t[key] for key in t)])
        paired_rows.append(
            [
                f"{n}x{k}",
                *(
                    paired_ratio(f, (zj, yj), floor, (zj,), 3 * repeats)
                    for f in (ece_l, mce_l, report, ece_sm)
                ),
                paired_ratio(ece_p, (pj, yj), read, (pj,), 3 * repeats),
            ]
        )
        # Wide rows re-read only the rows whose label attains a maximum that may be tied
        # (confidence <= 1/2), so the cost depends on the data: labels drawn from softmax(z)
        # (a calibrated model) and labels equal to the prediction (every prediction right, most
        # with confidence <= 1/2 at this logit scale: the costly case).
        for regime, labels in (
            ("uniform", y),
            ("drawn from softmax(z)", _labels_from_model(z, seed=n + k)),
            ("argmax(z)", z.argmax(1).astype(np.int32)),
        ):
            lj = jnp.asarray(labels)
            assert abs(float(ece_l(zj, lj)) - np_ece(p, labels)) < 1e-4
            regime_rows.append(
                [
                    f"{n}x{k}",
                    regime,
                    f"{np.mean(p.argmax(1) == labels):.2f}",
                    paired_ratio(ece_l, (zj, lj), floor, (zj,), 3 * repeats),
                    paired_ratio(ece_p, (pj, lj), floor, (zj,), 3 * repeats),
                    paired_ratio(ada, (pj, lj), np_ada, (p, labels), repeats),
                ]
            )
        fl = t["floor"]
        ratio_rows.append(
            [
                f"{n}x{k}",
                t["ece(logits)"] / fl,
                t["mce(logits)"] / fl,
                t["report"] / fl,
                t["classwise"] / t["np classwise"],
                t["ada_ece"] / t["np ada"],
                t["torchmetrics"] / t["ece(logits)"],
                t["netcal"] / t["ece(logits)"],
                t["np ece"] / t["ece(logits)"],
            ]
        )
    print_table("Calibration metrics: median ms", ["N x K", *t.keys()], rows)
    print_table(
        "Ratios (targets: ece/mce <= 1.5x floor, report <= 2x floor, classwise <= 0.5x NumPy,"
        " ada < 1x NumPy; peer columns are their time over ours)",
        [
            "N x K",
            "ece/floor",
            "mce/floor",
            "report/floor",
            "classwise/np",
            "ada/np",
            "torchmetrics/ece",
            "netcal/ece",
            "np/ece",
        ],
        ratio_rows,
    )
    print_table(
        "Paired ratios (alternating calls, median of per-pair ratios): to the floor, and ece on"
        " given probabilities to one read of them (targets: ece(softmax(z)) <= 2x the floor,"
        " ece(probs) <= 2x one read)",
        [
            "N x K",
            "ece/floor",
            "mce/floor",
            "report/floor",
            "ece(softmax(z))/floor",
            "ece(probs)/read",
        ],
        paired_rows,
    )
    print_table(
        "Label regimes: paired ratios (ece to the floor, ada_ece to NumPy's AdaECE)",
        ["N x K", "labels", "accuracy", "ece(logits)/floor", "ece(probs)/floor", "ada/np"],
        regime_rows,
    )
