"""Paired before/after timing of the losses and temperature scaling against another checkout.

``python -m benchmarks.paired_old_new OLD_CHECKOUT [--quick]`` copies ``OLD_CHECKOUT/calib_jax``
into a temporary package ``calib_jax_old`` (its imports renamed), so that the old and the
current code run in one process, and prints ``time(new) / time(old)`` as the median of
adjacent, alternating pairs (:func:`benchmarks._harness.paired_ratio`) for the jitted
value-and-grad of each loss's mean and for a jitted temperature fit.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import pathlib
import re
import shutil
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

import calib_jax
from benchmarks._harness import paired_ratio, print_table


def _load_old(checkout: str):
    root = pathlib.Path(tempfile.mkdtemp())
    target = root / "calib_jax_old"
    shutil.copytree(pathlib.Path(checkout) / "calib_jax", target)
    for path in target.rglob("*.py"):
        text = path.read_text()
        path.write_text(re.sub(r"\bcalib_jax\b", "calib_jax_old", text))
    sys.path.insert(0, str(root))
    return importlib.import_module("calib_jax_old")


def _losses(module):
    lo = module.losses
    return {
        "cross_entropy": lo.cross_entropy,
        "label smoothing (ε=0.1)": functools.partial(lo.label_smoothing_cross_entropy, epsilon=0.1),
        "focal (γ=3)": functools.partial(lo.focal_loss, gamma=3.0),
        "focal (γ=0.5)": functools.partial(lo.focal_loss, gamma=0.5),
        "FLSD-53": lo.adaptive_focal_loss,
        "entropy-reg. CE (β=0.1)": functools.partial(
            lo.entropy_regularized_cross_entropy, beta=0.1
        ),
        "brier_score": lo.brier_score,
        "sigmoid focal (one-hot targets)": lambda z, y: lo.sigmoid_focal_loss(
            z, jax.nn.one_hot(y, z.shape[-1])
        ),
    }


def main(old_checkout: str, quick: bool) -> None:
    old = _load_old(old_checkout)
    sizes = (
        [(20_000, 10), (4_000, 100), (1_000, 1000)]
        if quick
        else [(1_000_000, 10), (100_000, 100), (20_000, 1000)]
    )
    repeats = 7 if quick else 11
    rng = np.random.default_rng(0)
    new_fns, old_fns = _losses(calib_jax), _losses(old)
    ratios = {}
    for n, k in sizes:
        z = jnp.asarray(rng.normal(0, 3, (n, k)), jnp.float32)
        y = jnp.asarray(rng.integers(0, k, n), jnp.int32)
        for name in new_fns:
            steps = [
                jax.jit(jax.value_and_grad(lambda z, y, fn=fn: jnp.mean(fn(z, y))))
                for fn in (new_fns[name], old_fns[name])
            ]
            ratios[name, n, k] = paired_ratio(steps[0], (z, y), steps[1], (z, y), repeats)
            print(f"{name} {n}x{k}: {ratios[name, n, k]:.3f}x", flush=True)
    fits = [jax.jit(m.calibrators.temperature_scaling().fit) for m in (calib_jax, old)]
    fit_sizes = [(10_000, 10), (10_000, 100)]
    for n, k in fit_sizes:
        z = jnp.asarray(rng.normal(0, 3, (n, k)), jnp.float32)
        y = jax.random.categorical(jax.random.key(0), z / 2.0)
        ratios["temperature fit (NLL)", n, k] = paired_ratio(
            fits[0], (z, y), fits[1], (z, y), repeats
        )
    print_table(
        f"Paired time(new) / time(old), median of {repeats} alternating pairs",
        ["step", *(f"{n}×{k}" for n, k in sizes + fit_sizes)],
        [
            [
                name,
                *(
                    f"{ratios[name, n, k]:.3f}x" if (name, n, k) in ratios else ""
                    for n, k in sizes + fit_sizes
                ),
            ]
            for name in [*new_fns, "temperature fit (NLL)"]
        ],
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old_checkout")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    main(args.old_checkout, args.quick)
