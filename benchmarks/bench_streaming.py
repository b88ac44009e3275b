"""Streaming states: the cost of one batch update, and of reading the histogram estimates.

``CalibrationState.update`` is what every streaming user pays per batch; ``SmoothECEState`` is a
separate, opt-in state (a 1 MB grid), timed against it with paired ratios. The estimates read
from the fine histogram (KS, ECE-sweep, AURC, AUGRC) cost the same at any ``N``: they read the
histogram, never the samples; they are timed against the exact one-shot functions on the
samples the state holds.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import paired_ratio, print_table, time_ms
from calib_jax import metrics as cm


def _data(n: int, k: int) -> tuple[jax.Array, jax.Array]:
    rng = np.random.default_rng(0)
    z = (rng.normal(size=(n, k)) * 3).astype(np.float32)
    y = np.where(rng.random(n) < 0.6, z.argmax(1), rng.integers(0, k, n)).astype(np.int32)
    return jnp.asarray(z), jnp.asarray(y)


@jax.jit
def _update(state, z, y):
    return state.update(z, y, from_logits=True)


def _update_row(b: int, k: int, repeats: int) -> list:
    z, y = _data(b, k)
    s0, g0 = cm.CalibrationState.empty(k), cm.SmoothECEState.empty()
    ms = time_ms(lambda: _update(s0, z, y), repeats=repeats)
    smooth_ms = time_ms(lambda: _update(g0, z, y), repeats=repeats)
    ratio = paired_ratio(_update, (g0, z, y), _update, (s0, z, y), repeats)
    return [f"{b}×{k}", ms, smooth_ms, ratio]


def main(quick: bool) -> None:
    repeats = 5 if quick else 21
    sizes = [(1024, 10)] if quick else [(1024, 10), (8192, 10), (1024, 100)]
    print_table(
        "Per-batch update (jit, logits): CalibrationState vs the opt-in SmoothECEState",
        ["batch", "CalibrationState (ms)", "SmoothECEState (ms)", "smooth ÷ state (paired)"],
        [_update_row(b, k, repeats) for b, k in sizes],
    )
    rows = []
    n = 10_000 if quick else 1_000_000
    z, y = _data(n, 10)
    state = cm.CalibrationState.from_batch(z, y, from_logits=True)
    p = jax.nn.softmax(z)
    for name in ("ks_error", "ece_sweep", "aurc", "augrc"):
        method = getattr(type(state), name)
        exact = jax.jit(getattr(cm, name))
        ms = time_ms(lambda m=method: m(state), repeats=repeats)
        exact_ms = time_ms(lambda f=exact: f(p, y), repeats=max(3, repeats // 3))
        value, bound = method(state)
        rows.append([name, ms, exact_ms, float(value), float(bound), float(exact(p, y))])
    print_table(
        f"Estimates from the fine histogram vs the exact one-shot function, N = {n}×10",
        ["metric", "from the state (ms)", "exact (ms)", "streamed", "bound", "exact"],
        rows,
    )
