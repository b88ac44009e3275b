"""Command line: train with each loss, temperature-scale, print and save the comparison.

    python -m examples.compare_losses                       # offline digits, all six losses
    python -m examples.compare_losses --losses ce,fl3 --config overconfident
    python -m examples.compare_losses --config cifar10_resnet50 --download

Outputs (in ``--workdir``, default ``results/compare_losses``): ``results.md``,
``results.json``, ``reliability_<loss>.png`` and orbax checkpoints (a rerun resumes).
Multi-host: call with ``--distributed`` on every host (``jax.distributed.initialize`` reads
the cluster from the environment).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Sequence

# Quiet TensorFlow-datasets' optional TF probing; must precede its import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _float_or_none(text: str) -> float | str:
    """A float, or the word ``none`` (kept as the string: "no clipping")."""
    return "none" if text.strip().lower() == "none" else float(text)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see the module docstring)."""
    from examples.compare_losses import input_pipeline, models
    from examples.compare_losses.configs import ALL_LOSSES

    p = argparse.ArgumentParser(
        prog="python -m examples.compare_losses",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--config", default="default", help="config module name or .py path")
    p.add_argument(
        "--dataset",
        choices=input_pipeline.DATASETS,
        help="override the config's dataset",
    )
    p.add_argument("--model", choices=models.MODELS, help="override the config's model")
    p.add_argument("--losses", help=f"comma-separated subset of {','.join(ALL_LOSSES)}")
    p.add_argument("--num_epochs", type=int, help="override the config's epochs")
    p.add_argument("--seed", type=int, help="override the config's seed")
    p.add_argument(
        "--mmce_variant",
        choices=("mukhoti2020", "kumar2018"),
        help="MMCE_w of the 'mmce' row: the paper code's normalisation (mukhoti2020, the "
        "configs' default) or the MMCE paper's equation (kumar2018)",
    )
    p.add_argument(
        "--loss_reduction",
        choices=("mean", "sum"),
        help="reduce the loss over the batch by its mean, or by its sum as the paper code does",
    )
    p.add_argument(
        "--clip_global_norm",
        type=_float_or_none,
        metavar="NORM|none",
        help="clip the loss gradient to this global norm before the weight decay (the paper "
        "code: 2), or none",
    )
    p.add_argument("--workdir", default="results/compare_losses", help="results folder")
    p.add_argument("--data_dir", help="tensorflow-datasets data directory")
    p.add_argument(
        "--download",
        action="store_true",
        help="allow tfds to download and prepare the dataset (needs network)",
    )
    p.add_argument("--no_plots", action="store_true", help="skip the reliability PNGs")
    p.add_argument("--no_progress", action="store_true", help="no progress bars")
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Runs the comparison; returns the table rows."""
    args = parse_args(argv)
    import jax

    if args.distributed:
        jax.distributed.initialize()

    from examples.compare_losses import compare
    from examples.compare_losses.configs import ALL_LOSSES, get_config

    config = get_config(args.config)
    overrides = {
        k: getattr(args, k)
        for k in ("dataset", "model", "num_epochs", "seed", "mmce_variant", "loss_reduction")
        if getattr(args, k) is not None
    }
    if args.clip_global_norm is not None:
        overrides["clip_global_norm"] = (
            None if args.clip_global_norm == "none" else args.clip_global_norm
        )
    if args.losses:
        losses = tuple(s.strip() for s in args.losses.split(",") if s.strip())
        unknown = sorted(set(losses) - set(ALL_LOSSES))
        if unknown:
            sys.exit(f"unknown losses {unknown}; choose from {','.join(ALL_LOSSES)}")
        overrides["losses"] = losses
    config = config.replace(**overrides)

    start = time.perf_counter()
    try:
        rows = compare.run(
            config,
            args.workdir,
            data_dir=args.data_dir,
            download=args.download,
            plots=not args.no_plots,
            progress=not args.no_progress,
        )
    except RuntimeError as err:
        sys.exit(f"error: {err}")
    if jax.process_index() == 0:
        print()
        print(compare.markdown_table(rows))
        print(f"\n{time.perf_counter() - start:.0f} s; results in {args.workdir}/")
    return rows
