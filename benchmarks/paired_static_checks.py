"""Cost of the static input checks: paired timing of two checkouts (issue 16, chex assertions).

``python -m benchmarks.paired_static_checks OLD_CHECKOUT NEW_CHECKOUT`` loads both checkouts'
``calib_jax`` into one process (as renamed copies) and prints ``time(new) / time(old)`` as the
median of adjacent alternating pairs (:func:`benchmarks._harness.paired_ratio`) for: the
compiled ``ece`` and a compiled loss value-and-grad (the checks run at trace time, so these
should be 1.00x), a fresh trace of ``ece`` (where the checks run), an eager ``ece`` on a small
batch, and the microseconds of one call of the static checks of a loss's inputs.
"""

from __future__ import annotations

import argparse
import importlib
import pathlib
import re
import shutil
import sys
import tempfile
import timeit

import jax
import jax.numpy as jnp
import numpy as np

from benchmarks._harness import machine, paired_ratio, print_table


def _load(checkout: str, name: str):
    root = pathlib.Path(tempfile.mkdtemp())
    shutil.copytree(pathlib.Path(checkout) / "calib_jax", root / name)
    for path in (root / name).rglob("*.py"):
        path.write_text(re.sub(r"\bcalib_jax\b", name, path.read_text()))
    sys.path.insert(0, str(root))
    return importlib.import_module(name)


def main(old_checkout: str, new_checkout: str, repeats: int) -> None:
    old, new = _load(old_checkout, "calib_jax_before"), _load(new_checkout, "calib_jax_after")
    rng = np.random.default_rng(0)
    n, k = 100_000, 10
    z = jnp.asarray(rng.normal(0, 3, (n, k)), jnp.float32)
    p = jax.nn.softmax(z)
    y = jnp.asarray(rng.integers(0, k, n), jnp.int32)
    small_p, small_y = p[:1000], y[:1000]
    rows = []

    def pair(label, make):
        ratio = paired_ratio(*make(new), *make(old), repeats)
        rows.append([label, f"{ratio:.3f}x"])
        print(f"{label}: {ratio:.3f}x", flush=True)

    pair("jit(ece) 100k×10, run", lambda m: (jax.jit(m.metrics.ece), (p, y)))
    pair(
        "jit(value_and_grad(mean focal γ=3)) 100k×10, run",
        lambda m: (
            jax.jit(jax.value_and_grad(lambda z, y: jnp.mean(m.losses.focal_loss(z, y)))),
            (z, y),
        ),
    )
    pair(
        "trace of ece (make_jaxpr, 1000×10)",
        lambda m: (
            lambda a, b: jax.make_jaxpr(lambda a, b: m.metrics.ece(a, b))(a, b),
            (small_p, small_y),
        ),
    )
    pair("eager ece 1000×10", lambda m: (m.metrics.ece, (small_p, small_y)))
    for label, module in (("before", old), ("after", new)):
        seconds = min(
            timeit.repeat(
                lambda m=module: m._validation.check_scores_and_labels(z, y), number=200, repeat=5
            )
        )
        rows.append(
            [f"check_scores_and_labels, one call ({label})", f"{seconds / 200 * 1e6:.1f} µs"]
        )
    print_table(
        f"Static checks before/after, median of {repeats} alternating pairs ({machine()})",
        ["quantity", "after / before"],
        rows,
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("old_checkout")
    parser.add_argument("new_checkout")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args()
    main(args.old_checkout, args.new_checkout, args.repeats)
