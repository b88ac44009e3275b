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
