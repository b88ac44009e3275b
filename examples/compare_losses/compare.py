"""The comparison of Mukhoti et al. 2020: train once per loss, then temperature-scale on the
validation split (NLL fit, and the paper's grid search for the lowest 15-bin ECE; any other
calibrator of ``calib_jax.calibrators`` by ``config.calibrators``), and report test error, NLL,
ECE, AdaECE, Classwise-ECE and MCE before and after, with the fitted T."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import platform
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np

import calib_jax
from calib_jax import calibrators as C
from examples.compare_losses import input_pipeline, train
from examples.compare_losses.configs import Config, ConfigError, validate

LOSS_TITLES = {
    "ce": "Cross-entropy",
    "brier": "Brier",
    "mmce": "MMCE (λ=2)",
    "ls": "Label smoothing",
    "fl3": "Focal (γ=3)",
    "flsd53": "FLSD-53",
    "mbls": "MbLS (m=10)",
    "mdca": "CE + MDCA",
    "logitnorm": "LogitNorm (τ=0.04)",
    "dualfocal": "Dual focal (γ=5)",
    "poly1": "Poly-1 (ε=1)",
    "adafocal": "AdaFocal (λ=1)",
}
# (column title, report field, shown in percent)
METRICS = (
    ("Error %", "error", True),
    ("NLL", "nll", False),
    ("ECE %", "ece", True),
    ("AdaECE %", "ada_ece", True),
    ("CW-ECE %", "classwise_ece", True),
    ("MCE %", "mce", True),
)
CALIBRATORS: dict[str, tuple[str, Callable[[int], calib_jax.calibrators.Calibrator]]] = {
    "ts_nll": ("TS (NLL)", lambda bins: C.temperature_scaling(method="nll", num_bins=bins)),
    "ts_ece_grid": (
        "TS (ECE grid)",
        lambda bins: C.temperature_scaling(method="ece_grid", num_bins=bins),
    ),
    "vector": ("Vector scaling", lambda bins: C.vector_scaling()),
    "matrix": ("Matrix scaling", lambda bins: C.matrix_scaling()),
    "ets": ("Ensemble TS", lambda bins: C.ensemble_temperature_scaling()),
    "dirichlet": ("Dirichlet (ODIR)", lambda bins: C.dirichlet_calibration()),
    "histogram": ("Histogram binning", lambda bins: C.histogram_binning(num_bins=bins)),
    "isotonic": ("Isotonic", lambda bins: C.isotonic_regression()),
    "bbq": ("BBQ", lambda bins: C.bbq()),
    "beta": ("Beta (one-vs-rest)", lambda bins: C.beta_calibration()),
    "venn_abers": ("Venn-Abers (top-label)", lambda bins: C.venn_abers()),
}


def config_hash(config: Config) -> str:
    """Short hash of everything but the loss list: runs that may share checkpoints."""
    fields = dataclasses.asdict(config)
    fields.pop("losses")
    fields.pop("calibrators")  # post hoc: training is the same
    return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:10]


def _row(loss: str, calibration: str, temperature: float | None, report: Any) -> dict:
    row: dict[str, Any] = {"loss": loss, "calibration": calibration, "temperature": temperature}
    for _, field, _ in METRICS:
        row[field] = float(getattr(report, field))
    return row


def calibrate(
    evaluation: tuple[train.Evaluation, train.Evaluation],
    *,
    num_bins: int,
    calibrators: Sequence[str] = ("ts_nll", "ts_ece_grid"),
):
    """Fits each of ``calibrators`` (names of :data:`CALIBRATORS`) on the validation split
    (logits, or their softmax for calibrators on probabilities); returns rows' raw material:
    ``[(calibration name, temperature or None, report, test probabilities)]``, the
    uncalibrated row first."""
    val, test = evaluation
    probs = np.asarray(jax.nn.softmax(test.logits, axis=-1))
    report = calib_jax.metrics.calibration_report(
        test.logits, test.labels, from_logits=True, num_bins=num_bins
    )
    out = [("none", None, report, probs)]
    for key in calibrators:
        name, make = CALIBRATORS[key]
        calibrator = make(num_bins)
        val_x, test_x = val.logits, test.logits
        if calibrator.inputs == "probs":
            val_x, test_x = jax.nn.softmax(val_x, axis=-1), jax.nn.softmax(test_x, axis=-1)
        _, after, params = C.calibrate_and_report(
            calibrator, val_x, val.labels, test_x, test.labels, num_bins=num_bins
        )
        t = float(params.temperature) if isinstance(params, C.TemperatureParams) else None
        out.append((name, t, after, np.asarray(calibrator.apply(params, test_x))))
    return out


def run(
    config: Config,
    workdir: str | Path,
    *,
    data_dir: str | None = None,
    download: bool = False,
    plots: bool = True,
    progress: bool = True,
    overwrite: bool = False,
    config_name: str | None = None,
) -> list[dict]:
    """Trains and calibrates every loss in ``config.losses``; writes ``results.md``,
    ``results.json`` and ``reliability_<loss>.png`` into ``workdir``; returns the rows.

    Nothing is written before the config is validated, the data is loaded and the batch sizes
    are known to fit it. A ``workdir`` whose ``results.json`` came from a different config
    (``config_name`` included) is refused unless ``overwrite``, which first removes those
    results; rerunning the same config resumes from its checkpoints.

    Raises:
      ConfigError: an invalid config, batch sizes that do not fit the data or the devices, or
        a results folder of another config without ``overwrite``.
    """
    validate(config)
    workdir = Path(workdir)
    record = _record(config, config_name)
    previous = workdir / "results.json"
    if previous.exists() and not overwrite:
        try:
            data = json.loads(previous.read_text())
            saved = {k: data.get(k) for k in record}
        except (OSError, ValueError, AttributeError):
            saved = None
        if isinstance(saved, dict) and isinstance(saved.get("config"), dict):
            # A results.json from before calibrators were selectable used the default.
            saved["config"].setdefault("calibrators", list(Config.calibrators))
        if saved != record:
            raise ConfigError(
                f"{workdir} holds the results of another config ({_difference(saved, record)}); "
                "choose a new --workdir, or pass --overwrite to replace them"
            )
    splits = input_pipeline.get_splits(
        config.dataset,
        seed=config.seed,
        val_fraction=config.val_fraction,
        data_dir=data_dir,
        download=download,
    )
    mesh = train.make_mesh()
    _check_batches(config, splits, mesh)
    if overwrite and previous.exists():
        for old in (previous, workdir / "results.md", *workdir.glob("*.png")):
            old.unlink()
    workdir.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    train_losses: dict[str, list[float]] = {}
    curves: dict[str, dict[str, list[float]]] = {}
    train_errors: dict[str, float | None] = {}
    seconds: dict[str, float] = {}
    for loss in config.losses:
        start = time.perf_counter()
        result = train.train_and_evaluate(
            config,
            loss,
            workdir / "checkpoints" / f"{loss}-{config_hash(config)}",
            splits=splits,
            mesh=mesh,
            progress=progress,
        )
        calibrated = calibrate(
            (result.validation, result.test),
            num_bins=config.num_bins,
            calibrators=config.calibrators,
        )
        seconds[loss] = time.perf_counter() - start
        train_losses[loss] = result.losses
        curves[loss] = result.curves
        train_errors[loss] = result.train_error
        rows.extend(_row(loss, name, t, report) for name, t, report, _ in calibrated)
        if plots and jax.process_index() == 0:
            _plot(workdir / f"reliability_{loss}.png", loss, calibrated, result.test.labels, config)
        if jax.process_index() == 0:  # a summary, not a progress bar: --no_progress keeps it
            before, after = rows[-len(calibrated)], rows[-len(calibrated) + 1]
            t = "" if after["temperature"] is None else f", T={after['temperature']:.2f}"
            print(
                f"{loss}: {seconds[loss]:.0f} s, test error {100 * before['error']:.2f}%, "
                f"ECE {100 * before['ece']:.2f}% -> {100 * after['ece']:.2f}% "
                f"({after['calibration']}{t})",
                flush=True,
            )
    if jax.process_index() == 0:
        (workdir / "results.md").write_text(_document(config, rows, config_name))
        meta = {
            **record,
            "rows": rows,
            "train_loss_per_epoch": train_losses,
            # Per-epoch curves since the start of training (resumes included).
            "curves": curves,
            "final_train_error": train_errors,
            "seconds_per_loss": seconds,
            "devices": [str(d) for d in jax.devices()],
            "platform": platform.platform(),
            "jax": jax.__version__,
        }
        (workdir / "results.json").write_text(json.dumps(meta, indent=1))
        if plots and config.track_curves:
            plot_curves(workdir / "training_curves.png", curves, title=config.dataset)
    return rows


def plot_curves(path: Path, curves: dict[str, dict[str, list[float]]], *, title: str) -> None:
    """Training curves of every loss: train loss, test error, test NLL and test ECE per epoch
    (the analogue of Mukhoti et al. 2020, Fig. 1-2)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (
        ("train_loss", "train loss (objective)", False),
        ("test_error", "test error %", True),
        ("test_nll", "test NLL", False),
        ("test_ece", "test ECE % (15 bins)", True),
    )
    fig, axes = plt.subplots(1, 4, figsize=(17, 4.2), layout="constrained")
    for ax, (field, label, percent) in zip(axes, panels, strict=True):
        for loss, c in curves.items():
            values = np.asarray(c.get(field, []), dtype=float) * (100 if percent else 1)
            if values.size:
                ax.plot(np.arange(1, values.size + 1), values, label=LOSS_TITLES.get(loss, loss))
        ax.set_xlabel("epoch")
        ax.set_title(label)
        ax.grid(alpha=0.3)
        if field == "train_loss":
            ax.set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"Training curves — {title}")
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(path: Path, loss: str, calibrated, labels: np.ndarray, config: Config) -> None:
    from calib_jax import plotting

    diagrams, titles = [], []
    for name, t, _, probs in calibrated:
        diagrams.append(
            calib_jax.metrics.reliability_diagram(probs, labels, num_bins=config.num_bins)
        )
        if name == "none":
            titles.append("uncalibrated")
        else:
            titles.append(name if t is None else f"{name}, T={t:.2f}")
    fig = plotting.plot_reliability_diagrams(
        diagrams, titles=titles, suptitle=f"{LOSS_TITLES.get(loss, loss)} — {config.dataset}"
    )
    fig.savefig(path, dpi=110)


def _fmt(row: dict, field: str, percent: bool) -> str:
    value = row[field]
    return f"{100 * value:.2f}" if percent else f"{value:.4f}"


def markdown_table(rows: list[dict]) -> str:
    """The rows as one Markdown table (one line per loss and calibration)."""
    cols = ["Loss", "Calibration", "T", *(title for title, _, _ in METRICS)]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for r in rows:
        t = "" if r["temperature"] is None else f"{r['temperature']:.2f}"
        cells = [r["loss"], r["calibration"], t]
        cells += [_fmt(r, field, pct) for _, field, pct in METRICS]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def describe(config: Config, config_name: str | None = None) -> str:
    """One line naming what produced a table: config, hash, seed, recipe, MMCE variant."""
    if config.loss_reduction == "sum":
        recipe = "loss summed over the batch (the paper code's)"
    else:
        recipe = "loss averaged over the batch"
    clip = config.clip_global_norm
    recipe += ", no gradient clipping" if clip is None else f", gradient clipped to norm {clip:g}"
    steps = ", ".join(map(str, config.lr_boundaries)) or "-"
    return (
        f"Config `{config_name or 'custom'}` (hash {config_hash(config)}), seed {config.seed}: "
        f"{config.dataset}, {config.model}, {config.num_epochs} epochs (lr "
        f"{config.learning_rate:g}, ×{config.lr_decay:g} from epochs {steps}); {recipe}; "
        f"MMCE row: {config.mmce_variant} MMCE_w, λ = {config.mmce_weight:g}."
    )


def _record(config: Config, config_name: str | None) -> dict[str, Any]:
    """The config as ``results.json`` records it (JSON types: tuples become lists)."""
    fields = json.loads(json.dumps(dataclasses.asdict(config)))
    return {"config_name": config_name, "config_hash": config_hash(config), "config": fields}


def _difference(saved: dict[str, Any] | None, record: dict[str, Any]) -> str:
    if not saved or not isinstance(saved.get("config"), dict):
        return "its results.json has no readable config"
    old, new = saved["config"], record["config"]
    changed = sorted(k for k in old.keys() | new.keys() if old.get(k) != new.get(k))
    if not changed:
        return f"config {saved['config_name']!r} there, {record['config_name']!r} here"
    shown = "; ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} here" for k in changed[:3])
    return shown + (f"; {len(changed) - 3} more" if len(changed) > 3 else "")


def _check_batches(config: Config, splits: input_pipeline.Splits, mesh) -> None:
    train_size = len(splits.train)
    if config.max_train_examples is not None:
        train_size = min(train_size, config.max_train_examples)
    if config.batch_size > train_size:
        raise ConfigError(
            f"batch_size {config.batch_size} is larger than the {train_size} training examples"
        )
    for name in ("batch_size", "eval_batch_size"):
        if getattr(config, name) % mesh.size:
            raise ConfigError(
                f"{name} {getattr(config, name)} is not divisible by the {mesh.size} devices"
            )


def _document(config: Config, rows: list[dict], config_name: str | None = None) -> str:
    return (
        f"# Loss comparison on {config.dataset} ({config.model}, {config.num_epochs} epochs, "
        f"seed {config.seed})\n\n{describe(config, config_name)} The full config is in "
        f"results.json.\n\n"
        f"Test split; post-hoc calibrators fitted on the {config.val_fraction:.0%} validation "
        f"split; {config.num_bins} bins.\n\n{markdown_table(rows)}\n"
    )
