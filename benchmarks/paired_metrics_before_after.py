"""Paired runtime of the metrics against another checkout of calib_jax (before/after a change).

``python -m benchmarks.paired_metrics_before_after OLD_CHECKOUT [--quick]``: copies the old
checkout's package under the name ``calib_jax_before``, then times each metric of both versions
in adjacent pairs (:func:`benchmarks._harness.paired_ratio`) on the same float32 data at the
benchmark sizes. Prints ``after / before`` medians as a Markdown table.
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

from benchmarks._harness import machine, paired_ratio, print_table


def _import_before(checkout: str):
    tmp = pathlib.Path(tempfile.mkdtemp())
    dst = tmp / "calib_jax_before"
    shutil.copytree(pathlib.Path(checkout) / "calib_jax", dst)
    for path in dst.rglob("*.py"):
        text = re.sub(r"\bcalib_jax\b", "calib_jax_before", path.read_text())
        path.write_text(text)
    sys.path.insert(0, str(tmp))
    return importlib.import_module("calib_jax_before")


def _cases(cm, n, k, seed=0):
    rng = np.random.default_rng(seed)
    z = jnp.asarray((rng.normal(size=(n, k)) * 3).astype(np.float32))
    y = jnp.asarray(rng.integers(0, k, n).astype(np.int32))
    p = jax.nn.softmax(z)
    w = jnp.asarray(rng.poisson(1.0, n).astype(np.int32))
    return {
        "ece(probs)": (jax.jit(cm.ece), (p, y)),
        "ece(logits)": (jax.jit(lambda z, y: cm.ece(z, y, from_logits=True)), (z, y)),
        # What most users write: the softmax and the metric in one jit.
        "ece(softmax(z))": (jax.jit(lambda z, y: cm.ece(jax.nn.softmax(z), y)), (z, y)),
        "nll(probs)": (jax.jit(cm.nll), (p, y)),
        "ece(probs, int weights)": (jax.jit(lambda p, y, w: cm.ece(p, y, weights=w)), (p, y, w)),
        "classwise_ece(probs)": (jax.jit(cm.classwise_ece), (p, y)),
        "ada_ece(probs)": (jax.jit(cm.ada_ece), (p, y)),
        "calibration_report(logits)": (
            jax.jit(functools.partial(cm.calibration_report, from_logits=True)),
            (z, y),
        ),
        "state from_batch(logits)": (
            jax.jit(lambda z, y: cm.CalibrationState.from_batch(z, y, from_logits=True)),
            (z, y),
        ),
    }


def main(argv=None) -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", help="path of the checkout to compare against")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--repeats", type=int, default=7)
    args = parser.parse_args(argv)
    before = _import_before(args.before)
    from calib_jax import metrics as after_metrics

    sizes = [(20_000, 10)] if args.quick else [(1_000_000, 10), (100_000, 100), (20_000, 1000)]
    print(machine())
    rows = []
    for n, k in sizes:
        new = _cases(after_metrics, n, k)
        old = _cases(before.metrics, n, k)
        for name, (fn, fargs) in new.items():
            base, bargs = old[name]
            ratio = paired_ratio(fn, fargs, base, bargs, args.repeats)
            rows.append((f"{n} x {k}", name, ratio))
            print(*rows[-1], sep=" | ", flush=True)
        pb = jax.nn.sigmoid(new["ece(logits)"][1][0][:, 0])
        yb = (new["ece(logits)"][1][1] == 0).astype(jnp.int32)
        ratio = paired_ratio(
            jax.jit(after_metrics.classwise_ece), (pb, yb),
            jax.jit(before.metrics.classwise_ece), (pb, yb), args.repeats,
        )  # fmt: skip
        rows.append((f"{n} (binary)", "classwise_ece(probs)", ratio))
        print(*rows[-1], sep=" | ", flush=True)
    print_table("after / before (paired medians)", ["N x K", "metric", "after/before"], rows)


if __name__ == "__main__":
    main()
