"""Smooth ECE with the automatic bandwidth: calib_jax vs relplot 1.0.3 ``smECE``, same run.

Binary positive-class input ``(p, y)``, which both take as given. Two regimes: a calibrated
sample (the search ends at a small bandwidth, where calib_jax re-splits its fine grid onto
relplot's finer grids) and a shifted one (bandwidth near the shift, every step on the
1000-interval grid). relplot re-scatters all ``N`` samples twice per bandwidth tried (eleven
times); calib_jax scatters them once. Ratios are paired (AB/BA alternation).
"""

from __future__ import annotations

import jax
import numpy as np

from benchmarks._harness import paired_ratio, print_table, time_ms
from calib_jax import metrics as cm


def main(quick: bool) -> None:
    try:
        import relplot
    except ImportError:
        print("\n(relplot is not installed: smooth ECE benchmark skipped)")
        return
    sizes = [10_000] if quick else [10_000, 100_000, 1_000_000]
    repeats = 3 if quick else 7
    ours = jax.jit(cm.smooth_ece)
    rows = []
    for n in sizes:
        for name, shift in (("calibrated", 0.0), ("shifted 0.05", 0.05)):
            rng = np.random.default_rng(0)
            p = rng.random(n).astype(np.float32)
            y = (rng.random(n) < np.clip(p - shift, 0, 1)).astype(np.int32)
            f, t = p.astype(np.float64), y.astype(np.float64)
            pj, yj = jax.device_put(p), jax.device_put(y)
            ref, width = relplot.smECE(f, t, return_width=True)
            value = float(ours(pj, yj))
            assert abs(value - ref) <= 1e-5, (value, ref)
            ms = time_ms(lambda pj=pj, yj=yj: ours(pj, yj), repeats=repeats)
            peer_ms = time_ms(lambda f=f, t=t: relplot.smECE(f, t), repeats=max(3, repeats // 2))
            ratio = paired_ratio(ours, (pj, yj), relplot.smECE, (f, t), repeats)
            rows.append([n, name, f"{width:.4f}", ms, peer_ms, 1 / ratio, abs(value - ref)])
    header = [
        "N",
        "data",
        "σ*",
        "calib_jax (ms)",
        "relplot (ms)",
        "speed-up (paired)",
        "|difference|",
    ]
    print_table("Smooth ECE, automatic bandwidth (jit, binary probabilities given)", header, rows)
