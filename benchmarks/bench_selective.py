"""AURC / AUGRC: calib_jax vs a float64 NumPy reference and torch-uncertainty, same run.

All three take ``[N, K]`` probabilities. calib_jax validates the rows, takes the first-maximum
top label, sorts once and spreads tie groups; the NumPy reference does the same (``argsort``,
``cumsum``, tie groups by ``np.unique``); torch-uncertainty sorts with ``argsort`` and
integrates by the trapezoid rule (no tie handling). Ratios are paired (AB/BA alternation).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import paired_ratio, print_table, time_ms
from calib_jax import metrics as cm


def np_aurc_augrc(p: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    c = p.max(1).astype(np.float64)
    err = (p.argmax(1) != y).astype(np.float64)
    order = np.argsort(-c, kind="stable")
    c, err = c[order], err[order]
    n = len(c)
    cum = np.concatenate([[0.0], np.cumsum(err)])
    # Tie groups: spread each group's errors evenly over its positions.
    _, start, size = np.unique(-c, return_index=True, return_counts=True)
    group = np.repeat(np.arange(len(start)), size)
    pos = np.arange(1, n + 1)
    g_start, g_size = start[group], size[group]
    g_err = cum[g_start + g_size] - cum[g_start]
    e = cum[g_start] + g_err * (pos - g_start) / g_size
    return float(np.mean(e / pos)), float(np.mean(e) / n)


def _torch_uncertainty():
    try:
        dist = importlib.metadata.distribution("torch-uncertainty")
    except importlib.metadata.PackageNotFoundError:
        return None
    # The package __init__ imports torchvision; the metric module itself does not.
    path = next(f for f in dist.files if str(f).endswith("classification/risk_coverage.py"))
    spec = importlib.util.spec_from_file_location("tu_risk_coverage", dist.locate_file(path))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(quick: bool) -> None:
    tu = _torch_uncertainty()
    sizes = [(10_000, 10)] if quick else [(10_000, 10), (100_000, 10), (1_000_000, 10)]
    repeats = 3 if quick else 7
    ours = jax.jit(lambda p, y: (cm.aurc(p, y), cm.augrc(p, y)))
    rows = []
    for n, k in sizes:
        rng = np.random.default_rng(0)
        z = rng.normal(size=(n, k)).astype(np.float32) * 3
        p = np.asarray(jax.nn.softmax(jnp.asarray(z)))
        y = rng.integers(0, k, n).astype(np.int32)
        pj, yj = jnp.asarray(p), jnp.asarray(y)
        a, g = ours(pj, yj)
        ra, rg = np_aurc_augrc(p, y)
        assert abs(float(a) - ra) < 1e-5 and abs(float(g) - rg) < 1e-5, (float(a), ra)
        ms = time_ms(lambda pj=pj, yj=yj: ours(pj, yj), repeats=repeats)
        np_ms = time_ms(lambda p=p, y=y: np_aurc_augrc(p, y), repeats=repeats)
        vs_np = paired_ratio(ours, (pj, yj), np_aurc_augrc, (p, y), repeats)
        row = [f"{n}×{k}", ms, np_ms, vs_np]
        if tu is not None:
            import torch

            tp, ty = torch.tensor(p), torch.tensor(y.astype(np.int64))

            def peer(tp=tp, ty=ty):
                out = []
                for metric in (tu.AURC(), tu.AUGRC()):
                    metric.update(tp, ty)
                    out.append(metric.compute())
                return out

            row += [time_ms(peer, repeats=repeats), paired_ratio(ours, (pj, yj), peer, (), repeats)]
        rows.append(row)
    header = ["N×K", "calib_jax aurc+augrc (ms)", "NumPy (ms)", "ratio vs NumPy (paired)"]
    if tu is not None:
        header += ["torch-uncertainty AURC+AUGRC (ms)", "ratio vs torch-uncertainty (paired)"]
    print_table("AURC and AUGRC together (jit, probabilities given)", header, rows)
