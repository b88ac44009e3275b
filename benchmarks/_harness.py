"""Timing helpers shared by the benchmark scripts.

Timings are medians over repeats after a warm-up call (which also compiles), with
``block_until_ready`` on every JAX output. Peers are timed in the same process and run, and
results are printed as ratios, since absolute times on shared machines vary by about 25%.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any

import jax
import numpy as np


def block(x: Any) -> Any:
    return jax.tree.map(
        lambda a: a.block_until_ready() if hasattr(a, "block_until_ready") else a, x
    )


def time_ms(
    fn: Callable[[], Any], *, repeats: int = 7, warmup: int = 1, min_time_s: float = 0.0
) -> float:
    """Median wall time of ``fn()`` in milliseconds (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        block(fn())
    times = []
    start_all = time.perf_counter()
    while len(times) < repeats or time.perf_counter() - start_all < min_time_s:
        t0 = time.perf_counter()
        block(fn())
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def paired_ratio(
    fn: Callable[..., Any],
    fn_args: tuple,
    base: Callable[..., Any],
    base_args: tuple,
    repeats: int,
) -> float:
    """Median over ``repeats`` adjacent pairs of ``time(fn) / time(base)``.

    The two calls of a pair see the same machine load, so on a shared machine this ratio is far
    steadier than a ratio of separately timed medians (which moved by up to 2x between runs).
    The order alternates (AB, BA, ...) so that neither call always runs first.
    """
    block(fn(*fn_args))
    block(base(*base_args))
    ratios = []
    for i in range(repeats):
        elapsed = [0.0, 0.0]
        for j in (0, 1) if i % 2 else (1, 0):
            f, args = (fn, fn_args) if j == 0 else (base, base_args)
            t0 = time.perf_counter()
            block(f(*args))
            elapsed[j] = time.perf_counter() - t0
        ratios.append(elapsed[0] / elapsed[1])
    return statistics.median(ratios)


def machine() -> str:
    import os

    devices = ", ".join(sorted({d.device_kind for d in jax.devices()}))
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"python {platform.python_version()}, jax {jax.__version__}, numpy {np.__version__}, "
        f"devices: {jax.default_backend()} ({devices})"
    )


def print_table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Print a Markdown table (so output can be pasted into RESULTS.md)."""

    def fmt(x: Any) -> str:
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1000 else f"{x:.0f}"
        return str(x)

    print(f"\n### {title}\n")
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" for _ in header) + "|")
    for row in rows:
        print("| " + " | ".join(fmt(x) for x in row) + " |")
