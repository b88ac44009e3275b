"""Summaries over several runs of the comparison: seeds as mean ± std, and a focal γ sweep.

    python -m examples.compare_losses.aggregate results/fmnist/seed0 results/fmnist/seed1 ...
    python -m examples.compare_losses.aggregate --sweep results/fmnist/sweep

Each argument is a run's ``results.json`` or a folder holding one (searched recursively).
Seeds: every run must have the same config apart from its seed, loss list and calibrators; the
table gives, per loss and calibration, the mean ± sample standard deviation (``ddof=1``) over
the runs that trained that loss. Sweep: the rows of focal losses ``fl<γ>`` (and ``ce`` as
γ = 0) give ECE and NLL before and after temperature scaling as a function of γ, as a table and
``gamma_sweep.png``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from examples.compare_losses import configs
from examples.compare_losses.compare import METRICS

_FOCAL = re.compile(r"fl(\d+(?:\.\d+)?)")


def load_runs(paths: Sequence[str | Path]) -> list[dict]:
    """The parsed ``results.json`` of every path (a file, or a folder searched for one)."""
    runs = []
    for path in map(Path, paths):
        files = [path] if path.is_file() else sorted(path.rglob("results.json"))
        if not files:
            raise ValueError(f"no results.json in {path}")
        runs.extend(json.loads(f.read_text()) for f in files)
    return runs


# Config fields that may differ between the runs of one table: the seed, the losses trained, and
# the post-hoc calibrators (table rows only: they do not change training).
_FREE_FIELDS = ("seed", "losses", "calibrators")


def _same_setup(runs: list[dict]) -> None:
    # A field added to Config after a run was made is absent from its results.json: the run
    # used that field's default, the only behaviour the code had then.
    defaults = json.loads(json.dumps(dataclasses.asdict(configs.Config())))

    def setup(run):
        config = {**defaults, **run["config"]}
        return {k: v for k, v in config.items() if k not in _FREE_FIELDS}

    for run in runs[1:]:
        if setup(run) != setup(runs[0]):
            diff = sorted(k for k in setup(run) if setup(run)[k] != setup(runs[0]).get(k))
            raise ValueError(f"runs differ in more than seed and losses: {diff}")


def seed_table(runs: list[dict]) -> str:
    """Markdown table of mean ± std over runs per (loss, calibration)."""
    _same_setup(runs)
    groups: dict[tuple[str, str], list[dict]] = {}
    for run in runs:
        for row in run["rows"]:
            groups.setdefault((row["loss"], row["calibration"]), []).append(row)
    cols = ["Loss", "Calibration", "runs", "T", *(title for title, _, _ in METRICS)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]

    def cell(values, percent, digits=None):
        v = np.asarray(values, float) * (100 if percent else 1)
        digits = digits if digits is not None else 2 if percent else 4
        sd = f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else ""
        return f"{v.mean():.{digits}f}{sd}"

    for (loss, calibration), rows in groups.items():
        temps = [r["temperature"] for r in rows if r["temperature"] is not None]
        t = cell(temps, False, 2) if temps else ""
        cells = [loss, calibration, str(len(rows)), t]
        cells += [cell([r[field] for r in rows], pct) for _, field, pct in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    seeds = sorted({run["config"]["seed"] for run in runs})
    return f"Seeds {seeds}; mean ± sample std over runs.\n\n" + "\n".join(lines)


def sweep_rows(runs: list[dict]) -> list[dict]:
    """Per γ: ECE and NLL uncalibrated and after TS (NLL fit), with T; γ = 0 is ``ce``."""
    out: dict[float, dict] = {}
    for run in runs:
        for row in run["rows"]:
            match = _FOCAL.fullmatch(row["loss"])
            gamma = 0.0 if row["loss"] == "ce" else float(match.group(1)) if match else None
            if gamma is None or row["calibration"] not in ("none", "TS (NLL)"):
                continue
            entry = out.setdefault(gamma, {"gamma": gamma, "error": row["error"]})
            key = "before" if row["calibration"] == "none" else "after"
            entry[f"ece_{key}"], entry[f"nll_{key}"] = row["ece"], row["nll"]
            if key == "after":
                entry["temperature"] = row["temperature"]
    return [out[g] for g in sorted(out)]


def sweep_table(rows: list[dict]) -> str:
    lines = [
        "| γ | Error % | ECE % | ECE % after TS | NLL | NLL after TS | T |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['gamma']:g} | {100 * r['error']:.2f} | {100 * r['ece_before']:.2f} | "
            f"{100 * r['ece_after']:.2f} | {r['nll_before']:.4f} | {r['nll_after']:.4f} | "
            f"{r['temperature']:.2f} |"
        )
    return "\n".join(lines)


def plot_sweep(path: Path, rows: list[dict], *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    g = [r["gamma"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4), layout="constrained")
    for ax, (name, scale, label) in zip(
        axes, (("ece", 100, "test ECE % (15 bins)"), ("nll", 1, "test NLL")), strict=True
    ):
        ax.plot(g, [scale * r[f"{name}_before"] for r in rows], "o-", label="uncalibrated")
        ax.plot(g, [scale * r[f"{name}_after"] for r in rows], "s--", label="after TS (NLL)")
        ax.set_xlabel("focal γ")
        ax.set_title(label)
        ax.grid(alpha=0.3)
    axes[0].legend()
    fig.suptitle(f"Focal loss γ sweep — {title}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> str:
    p = argparse.ArgumentParser(prog="python -m examples.compare_losses.aggregate")
    p.add_argument("runs", nargs="+", help="results.json files or folders holding them")
    p.add_argument("--sweep", action="store_true", help="focal γ sweep instead of seeds")
    p.add_argument("--out", help="write the table (and for --sweep the PNG) next to this .md")
    args = p.parse_args(argv)
    try:
        runs = load_runs(args.runs)
        if args.sweep:
            rows = sweep_rows(runs)
            if not rows:
                raise ValueError("no ce or fl<γ> rows in these runs")
            text = sweep_table(rows)
        else:
            text = seed_table(runs)
    except ValueError as err:
        p.error(str(err))
    print(text)
    if args.out:
        out = Path(args.out)
        out.write_text(text + "\n")
        if args.sweep:
            plot_sweep(out.with_suffix(".png"), rows, title=runs[0]["config"]["dataset"])
    return text


if __name__ == "__main__":
    main()
