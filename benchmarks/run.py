"""Run every benchmark in one process: ``python -m benchmarks.run [losses metrics ...]``.

Each ``benchmarks/bench_<name>.py`` exposes ``main(quick: bool) -> None`` that prints Markdown
tables with peer timings from the same run and ratios. ``--quick`` uses small sizes (a smoke
run, not for RESULTS.md).
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
from pathlib import Path

from benchmarks._harness import machine


def available() -> list[str]:
    here = Path(__file__).parent
    return sorted(
        m.name.removeprefix("bench_")
        for m in pkgutil.iter_modules([str(here)])
        if m.name.startswith("bench_")
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("names", nargs="*", help=f"subset of {available()}")
    parser.add_argument("--quick", action="store_true", help="small sizes, smoke run only")
    args = parser.parse_args()
    names = args.names or available()
    print(f"machine: {machine()}")
    for name in names:
        importlib.import_module(f"benchmarks.bench_{name}").main(quick=args.quick)


if __name__ == "__main__":
    main()
