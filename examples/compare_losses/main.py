"""Command line: train with each loss, calibrate post hoc, print and save the comparison.

    python -m examples.compare_losses                       # offline digits, all six losses
    python -m examples.compare_losses --losses ce,fl3 --config overconfident --workdir results/oc
    python -m examples.compare_losses --config cifar10_resnet50 --download
    python -m examples.compare_losses --calibrators ts_nll,dirichlet,venn_abers   # or all

Outputs (in ``--workdir``, default ``results/compare_losses``): ``results.md``,
``results.json`` (the rows and the full config), ``reliability_<loss>.png`` and orbax
checkpoints (a rerun of the same config resumes). A work directory holding the results of
another config is refused unless ``--overwrite``. Every flag and config value is checked
before anything is written; errors are one line, with exit status 2.
Multi-host: call with ``--distributed`` on every host (``jax.distributed.initialize`` reads
the cluster from the environment).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from examples.compare_losses.configs import Config

# Quiet TensorFlow-datasets' optional TF probing; must precede its import.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are one line (no usage dump), with argparse's exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _float_or_none(text: str) -> float | str:
    """A float, or the word ``none`` (kept as the string: "no clipping")."""
    if text.strip().lower() == "none":
        return "none"
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number or none, got {text!r}") from None


def _configs_epilog() -> str:
    """One line per config module: its name and the first line of its docstring."""
    from examples.compare_losses.configs import config_summaries

    lines = [f"  {name:<26}{summary}" for name, summary in config_summaries().items()]
    return "configs (--config NAME):\n" + "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """The command line (see the module docstring)."""
    from examples.compare_losses import input_pipeline, models
    from examples.compare_losses.configs import CALIBRATORS, LOSS_CHOICES, available_configs

    p = _Parser(
        prog="python -m examples.compare_losses",
        description=__doc__,
        epilog=_configs_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "--config",
        default="default",
        help=f"config module ({', '.join(available_configs())}) or a .py path",
    )
    p.add_argument(
        "--dataset",
        choices=input_pipeline.DATASETS,
        help="override the config's dataset",
    )
    p.add_argument("--model", choices=models.MODELS, help="override the config's model")
    p.add_argument("--losses", help=f"comma-separated, from {LOSS_CHOICES}")
    p.add_argument(
        "--calibrators",
        help="post-hoc calibrators fitted on the validation split, comma-separated, from "
        f"{', '.join(CALIBRATORS)}, or all (default: ts_nll,ts_ece_grid)",
    )
    p.add_argument(
        "--num_epochs",
        type=int,
        help="override the config's epochs (its lr_boundaries are rescaled to the same "
        "fractions of training unless --lr_boundaries is given)",
    )
    p.add_argument(
        "--lr_boundaries",
        metavar="E1,E2,...|none",
        help="epochs (0-based) from which the learning rate is decayed; must lie below the "
        "number of epochs",
    )
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
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the results in --workdir even if another config produced them",
    )
    p.add_argument("--data_dir", help="tensorflow-datasets data directory")
    p.add_argument(
        "--download",
        action="store_true",
        help="allow tfds to download and prepare the dataset (needs network)",
    )
    p.add_argument("--no_plots", action="store_true", help="skip the reliability PNGs")
    p.add_argument(
        "--no_progress",
        action="store_true",
        help="no progress bars (the one-line summary per loss and the final table stay)",
    )
    p.add_argument("--distributed", action="store_true", help="call jax.distributed.initialize")
    return p


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parses the command line (see the module docstring)."""
    return build_parser().parse_args(argv)


def make_config(args: argparse.Namespace) -> Config:
    """The config named by ``--config`` with the flags' overrides, validated.

    Raises:
      ConfigError: an unknown config or a bad value, as one line naming the field.
    """
    from examples.compare_losses.configs import CALIBRATORS, ConfigError, get_config, validate

    config = get_config(args.config)
    names = ("dataset", "model", "num_epochs", "seed", "mmce_variant", "loss_reduction")
    overrides = {k: getattr(args, k) for k in names if getattr(args, k) is not None}
    if args.clip_global_norm is not None:
        overrides["clip_global_norm"] = (
            None if args.clip_global_norm == "none" else args.clip_global_norm
        )
    if args.losses is not None:
        overrides["losses"] = tuple(s.strip() for s in args.losses.split(",") if s.strip())
    if args.calibrators is not None:
        names = tuple(s.strip() for s in args.calibrators.split(",") if s.strip())
        overrides["calibrators"] = CALIBRATORS if names == ("all",) else names
    old = (config.num_epochs, *config.lr_boundaries)
    rescale = all(isinstance(v, int) and not isinstance(v, bool) for v in old) and old[0] > 0
    if args.num_epochs is not None and args.lr_boundaries is None and rescale:
        # Same fractions of training, rounded; boundaries that fall outside are dropped.
        n = args.num_epochs
        scaled = {math.floor(b * n / config.num_epochs + 0.5) for b in config.lr_boundaries}
        overrides["lr_boundaries"] = tuple(sorted(b for b in scaled if 0 < b < n))
    if args.lr_boundaries is not None:
        text = args.lr_boundaries.strip().lower()
        try:
            overrides["lr_boundaries"] = tuple(
                int(b) for b in ([] if text == "none" else text.split(","))
            )
        except ValueError:
            raise ConfigError(
                "--lr_boundaries takes comma-separated integers or none, "
                f"got {args.lr_boundaries!r}"
            ) from None
    return validate(config.replace(**overrides))


def main(argv: Sequence[str] | None = None) -> list[dict]:
    """Runs the comparison; returns the table rows.

    Bad flags, an unknown config, loss or dataset, invalid config values and a results folder
    of another config end with a one-line error and exit status 2 before any file is written.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    from examples.compare_losses.configs import ConfigError

    try:
        config = make_config(args)
    except ConfigError as err:
        parser.error(str(err))
    import jax

    if args.distributed:
        jax.distributed.initialize()

    from examples.compare_losses import compare

    start = time.perf_counter()
    try:
        rows = compare.run(
            config,
            args.workdir,
            data_dir=args.data_dir,
            download=args.download,
            plots=not args.no_plots,
            progress=not args.no_progress,
            overwrite=args.overwrite,
            config_name=args.config,
        )
    except ConfigError as err:
        parser.error(str(err))
    except RuntimeError as err:
        sys.exit(f"error: {err}")
    if jax.process_index() == 0:
        print()
        print(compare.describe(config, args.config))
        print(compare.markdown_table(rows))
        print(f"\n{time.perf_counter() - start:.0f} s; results in {args.workdir}/")
    return rows
