"""Value-and-grad of the mean loss, jitted, against optax's integer-label cross-entropy.

Each row times ``jax.jit(jax.value_and_grad(lambda z: loss(z, labels).mean()))`` on float32
logits; ratios are to ``optax.softmax_cross_entropy_with_integer_labels`` timed in the same
run. "naive focal" is autodiff of ``-(1 - softmax(z)[y])**γ * log_softmax(z)[y]`` (what the
hand-derived gradient replaces), shown for scale. Targets: focal and FLSD <= 1.25x, label
smoothing <= 1.1x. DCA and MDCA are batch scalars (their "mean" is the scalar itself), timed
alone, i.e. without the base loss they are added to.
"""

from __future__ import annotations

import functools
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from benchmarks._harness import paired_ratio, print_table, time_ms
from calib_jax import losses


def _naive_focal(logits, labels, gamma=3.0):
    log_p = jax.nn.log_softmax(logits)
    p = jax.nn.softmax(logits)
    log_p_y = jnp.take_along_axis(log_p, labels[:, None], axis=-1)[:, 0]
    p_y = jnp.take_along_axis(p, labels[:, None], axis=-1)[:, 0]
    return -((1 - p_y) ** gamma) * log_p_y


CANDIDATES = {
    "optax CE": optax.softmax_cross_entropy_with_integer_labels,
    "cross_entropy": losses.cross_entropy,
    "label smoothing (ε=0.1)": functools.partial(losses.label_smoothing_cross_entropy, epsilon=0.1),
    "focal (γ=3)": functools.partial(losses.focal_loss, gamma=3.0),
    "focal (γ=0.5)": functools.partial(losses.focal_loss, gamma=0.5),
    "FLSD-53": losses.adaptive_focal_loss,
    "entropy-reg. CE (β=0.1)": functools.partial(
        losses.entropy_regularized_cross_entropy, beta=0.1
    ),
    "brier_score": losses.brier_score,
    "MbLS (m=10, α=0.1)": losses.margin_label_smoothing,
    "LogitNorm (τ=0.04)": losses.logit_norm_cross_entropy,
    "dual focal (γ=5)": losses.dual_focal_loss,
    "Poly-1 (ε=1)": losses.poly1_cross_entropy,
    "DCA (batch scalar)": losses.dca_penalty,
    "MDCA (batch scalar)": losses.mdca_penalty,
    "naive focal (γ=3)": _naive_focal,
}

# The losses with a speed target, also timed in adjacent pairs with optax CE.
PAIRED = ("cross_entropy", "label smoothing (ε=0.1)", "focal (γ=3)", "FLSD-53")
# The wider field's losses (no target yet), timed in adjacent pairs with optax CE as well.
PAIRED_WIDER = (
    "MbLS (m=10, α=0.1)",
    "LogitNorm (τ=0.04)",
    "dual focal (γ=5)",
    "Poly-1 (ε=1)",
    "DCA (batch scalar)",
    "MDCA (batch scalar)",
)


def _interleaved(
    steps: dict, args: tuple, rounds: int
) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Wall and process-CPU milliseconds of every step, once per round, in a fresh random
    order each round, so that load changes and the after-effects of the previous step (a
    heavy one leaves caches and the allocator in another state) hit every candidate alike.
    CPU time is the steadier measure on a machine shared with other jobs."""
    for step in steps.values():
        time_ms(functools.partial(step, *args), repeats=1)
    names = list(steps)
    order_rng = np.random.default_rng(1)
    wall: dict[str, list[float]] = {name: [] for name in steps}
    cpu: dict[str, list[float]] = {name: [] for name in steps}
    for _ in range(rounds):
        for i in order_rng.permutation(len(names)):
            step = functools.partial(steps[names[i]], *args)
            start = time.process_time()
            wall[names[i]].append(time_ms(step, repeats=1, warmup=0))
            cpu[names[i]].append((time.process_time() - start) * 1e3)
    return wall, cpu


def main(quick: bool) -> None:
    sizes = (
        [(20_000, 10), (4_000, 100), (1_000, 1000)]
        if quick
        else [(1_000_000, 10), (100_000, 100), (20_000, 1000)]
    )
    rounds = 5 if quick else 21
    rng = np.random.default_rng(0)
    median, best, cpu_median, paired = {}, {}, {}, {}
    for n, k in sizes:
        logits = jnp.asarray(rng.normal(0, 3, (n, k)), jnp.float32)
        labels = jnp.asarray(rng.integers(0, k, n), jnp.int32)
        steps = {
            name: jax.jit(jax.value_and_grad(lambda z, y, fn=fn: jnp.mean(fn(z, y))))
            for name, fn in CANDIDATES.items()
        }
        wall, cpu = _interleaved(steps, (logits, labels), rounds)
        for name in CANDIDATES:
            median[name, n, k] = float(np.median(wall[name]))
            best[name, n, k] = min(wall[name])
            cpu_median[name, n, k] = float(np.median(cpu[name]))
        for name in PAIRED + PAIRED_WIDER:
            paired[name, n, k] = paired_ratio(
                steps[name], (logits, labels), steps["optax CE"], (logits, labels), 3 * rounds
            )
    header = (
        ["loss"]
        + [f"{n}×{k} ms" for n, k in sizes]
        + [f"{n}×{k} ratio wall median / best / CPU" for n, k in sizes]
    )
    rows = []
    for name in CANDIDATES:
        times = [median[name, n, k] for n, k in sizes]
        ratios = [
            f"{median[name, n, k] / median['optax CE', n, k]:.2f}x / "
            f"{best[name, n, k] / best['optax CE', n, k]:.2f}x / "
            f"{cpu_median[name, n, k] / cpu_median['optax CE', n, k]:.2f}x"
            for n, k in sizes
        ]
        rows.append([name, *times, *ratios])
    print_table(
        f"Losses: jitted value-and-grad of the mean loss (float32), {rounds} rounds in random "
        "order; median wall ms; ratios to optax CE of median wall / best wall / median CPU time",
        header,
        rows,
    )
    print_table(
        f"Losses: paired ratio to optax CE (median of {3 * rounds} adjacent pairs, alternating "
        "order; the steadiest measure on a shared machine)",
        ["loss", *(f"{n}×{k}" for n, k in sizes)],
        [
            [name, *(f"{paired[name, n, k]:.3f}x" for n, k in sizes)]
            for name in PAIRED + PAIRED_WIDER
        ],
    )
    mmce_rows = []
    for n in [256] if quick else [256, 1024]:
        logits = jnp.asarray(rng.normal(0, 3, (n, 10)), jnp.float32)
        labels = jnp.asarray(rng.integers(0, 10, n), jnp.int32)
        steps = {
            "CE": jax.jit(jax.value_and_grad(lambda z, y: jnp.mean(losses.cross_entropy(z, y)))),
            "MMCE_w": jax.jit(jax.value_and_grad(lambda z, y: losses.mmce(z, y, weighted=True))),
        }
        wall, _ = _interleaved(steps, (logits, labels), rounds)
        t_ce, t_mm = float(np.median(wall["CE"])), float(np.median(wall["MMCE_w"]))
        mmce_rows.append([f"{n}×10", t_ce, t_mm, f"{t_mm / t_ce:.1f}x"])
    print_table(
        "MMCE_w (O(N²) pairs): value-and-grad per training batch, medians",
        ["batch", "CE ms", "MMCE_w ms", "ratio"],
        mmce_rows,
    )
