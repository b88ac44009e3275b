"""Experiment configurations: each module here defines ``get_config() -> Config``.

``--config`` takes a module name from this package (``default``, ``tiny``, ``overconfident``,
``cifar10_resnet50``, ...) or a path to a Python file defining ``get_config``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib
import importlib.util
import math
import pkgutil
import re
import textwrap
from pathlib import Path

ALL_LOSSES = ("ce", "brier", "mmce", "ls", "fl3", "flsd53")
# Selectable with --losses too: losses of the wider field, and focal loss with any γ as fl<γ>.
EXTRA_LOSSES = ("mbls", "mdca", "logitnorm", "dualfocal", "poly1", "adafocal")


def is_loss_name(name: str) -> bool:
    """Whether ``name`` is a loss of the comparison (see ``train.make_objective``)."""
    return name in ALL_LOSSES or name in EXTRA_LOSSES or bool(re.fullmatch(r"fl\d+(\.\d+)?", name))


LOSS_CHOICES = f"{', '.join(ALL_LOSSES + EXTRA_LOSSES)} or fl<γ> (focal loss, e.g. fl2)"
# Post-hoc calibrators of the table (see compare.CALIBRATORS); the paper's two TS fits first.
CALIBRATORS = (
    "ts_nll",
    "ts_ece_grid",
    "vector",
    "matrix",
    "ets",
    "dirichlet",
    "histogram",
    "isotonic",
    "bbq",
    "beta",
    "venn_abers",
)


@dataclasses.dataclass(frozen=True)
class Config:
    """Everything that defines one run of the comparison.

    The learning rate follows a step schedule: ``learning_rate`` multiplied by ``lr_decay``
    once for each entry of ``lr_boundaries`` that is ``<= epoch``, ``epoch`` counted from 0:
    a boundary is the first (0-based) epoch that trains at the decayed rate (see
    :func:`paper_cifar_config` for the paper's). Weight decay is coupled L2 added to the
    gradient before momentum, as PyTorch's SGD does.

    Two recipes (``loss_reduction``, ``clip_global_norm``): ``"mean"`` with no clipping (the
    default) averages the loss over the batch; ``"sum"`` with ``clip_global_norm=2.0`` is
    what the code of Mukhoti et al. 2020 runs (torrvision/focal_calibration ``train_utils.py``):
    the loss summed over the batch (its Brier score is averaged, as its ``BrierScore`` does;
    its MMCE objective is ``batch_size · (mean CE + λ·MMCE_w)``), and the gradient of the loss
    clipped to that global norm before the weight decay is added (``clip_grad_norm`` runs
    before ``optimizer.step()``, which adds the decay).
    """

    dataset: str = "digits"
    model: str = "small_cnn"
    losses: tuple[str, ...] = ALL_LOSSES
    num_epochs: int = 40
    batch_size: int = 128
    eval_batch_size: int = 256
    learning_rate: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    lr_boundaries: tuple[int, ...] = (20, 30)
    lr_decay: float = 0.1
    # "mean" or "sum" over the batch; a global-norm bound on the loss gradient (None: off).
    loss_reduction: str = "mean"
    clip_global_norm: float | None = None
    augment: bool = False
    val_fraction: float = 0.1
    num_bins: int = 15
    seed: int = 0
    # MMCE: the paper's CIFAR objective is mean CE + λ·MMCE_w with λ = 2, MMCE_w as the
    # authors' code normalises it ("mukhoti2020"); "kumar2018" is the equation of the MMCE
    # paper (see calib_jax.losses.mmce for how the two relate).
    mmce_weight: float = 2.0
    mmce_variant: str = "mukhoti2020"
    # LS: the paper's variant (1-ε on the true class, ε/(K-1) elsewhere) with ε = 0.05, so
    # the "ls" row is comparable with the paper's LS-0.05 numbers.
    ls_epsilon: float = 0.05
    ls_paper_variant: bool = True
    checkpoint_every_epochs: int = 5
    # Keep the first N training examples (None: all): smoke tests, small-data regimes.
    max_train_examples: int | None = None
    # Evaluate on the test split after every epoch (test error, NLL, ECE: the training curves).
    track_curves: bool = False
    # Post-hoc calibrators fitted on the validation split, one table row each (names from
    # CALIBRATORS); they do not change training, so runs differing only here share checkpoints.
    calibrators: tuple[str, ...] = ("ts_nll", "ts_ece_grid")

    def replace(self, **changes) -> Config:
        """A copy with ``changes`` applied."""
        return dataclasses.replace(self, **changes)


def paper_cifar_config(dataset: str, model: str) -> Config:
    """The recipe of Mukhoti et al. 2020 for ``model`` on a CIFAR-sized ``dataset``, as their
    code (torrvision/focal_calibration ``train.py``, ``train_utils.py``) runs it.

    SGD lr 0.1, momentum 0.9, coupled weight decay 5e-4, batch 128, 350 epochs, random crop +
    flip, 10% of train held out for validation; the loss summed over the batch and its
    gradient clipped to global norm 2 before each step; the MMCE row is
    ``batch_size · (mean CE + 2·MMCE_w)`` with the code's MMCE_w; the last epoch's model is
    evaluated. The code's schedule is ``MultiStepLR(milestones=[150, 250], gamma=0.1)`` with
    ``scheduler.step()`` called at the *start* of every epoch (``train.py``, PyTorch 1.5.1 of
    its ``environment.yml``): the constructor already counts one step, so 0-based epoch ``e``
    trains at the rate of ``last_epoch = e + 1``: 0.1 for epochs 0-148, 0.01 for 149-248 and
    0.001 for 249-349. Hence ``lr_boundaries=(149, 249)``.
    """
    return Config(
        dataset=dataset,
        model=model,
        num_epochs=350,
        batch_size=128,
        eval_batch_size=500,
        learning_rate=0.1,
        momentum=0.9,
        weight_decay=5e-4,
        lr_boundaries=(149, 249),
        loss_reduction="sum",
        clip_global_norm=2.0,
        augment=True,
        checkpoint_every_epochs=10,
    )


class ConfigError(ValueError):
    """A config the example cannot run (bad field value, unknown name); one line, for the CLI."""


def available_configs() -> tuple[str, ...]:
    """The config modules of this package, sorted."""
    return tuple(sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.ispkg))


def config_summaries() -> dict[str, str]:
    """``{name: the module docstring's first paragraph, shortened}`` for every config module."""
    out = {}
    for name in available_configs():
        spec = importlib.util.find_spec(f"{__name__}.{name}")
        doc = ast.get_docstring(ast.parse(Path(spec.origin).read_text())) or ""
        first_paragraph = " ".join(doc.strip().split("\n\n")[0].split())
        out[name] = textwrap.shorten(first_paragraph.replace("``", ""), 70, placeholder=" ...")
    return out


def get_config(name_or_path: str = "default") -> Config:
    """Loads ``get_config()`` from a module of this package or from a ``.py`` file path.

    Raises:
      ConfigError: an unknown name (the message lists the available ones), a missing file,
        or a module whose ``get_config()`` does not return a :class:`Config`.
    """
    if name_or_path.endswith(".py"):
        path = Path(name_or_path)
        if not path.is_file():
            raise ConfigError(f"config file {name_or_path} does not exist")
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ConfigError(f"cannot load config file {name_or_path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    elif name_or_path in available_configs():
        module = importlib.import_module(f"{__name__}.{name_or_path}")
    else:
        raise ConfigError(
            f"unknown config {name_or_path!r}; choose one of {', '.join(available_configs())} "
            "or a path to a .py file defining get_config()"
        )
    config = getattr(module, "get_config", lambda: None)()
    if not isinstance(config, Config):
        raise ConfigError(f"{name_or_path}: get_config() must return a Config")
    return config


def _int(low: int, high: int | None = None):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int):
            return f"must be an integer, got {value!r}"
        if value < low or (high is not None and value >= high):
            bound = f">= {low}" if high is None else f"in [{low}, {high})"
            return f"must be {bound}, got {value}"
        return None

    return check


def _float(low: float, high: float | None = None, *, open_low=False, closed_high=False):
    def check(value):
        if isinstance(value, bool) or not isinstance(value, int | float):
            return f"must be a number, got {value!r}"
        ok = math.isfinite(value) and (value > low if open_low else value >= low)
        if high is not None:
            ok = ok and (value <= high if closed_high else value < high)
        if not ok:
            lo = "(" if open_low else "["
            hi = "inf)" if high is None else (f"{high}]" if closed_high else f"{high})")
            return f"must lie in {lo}{low}, {hi}, got {value}"
        return None

    return check


def _choice(choices):
    def check(value):
        options = choices() if callable(choices) else choices
        if value not in options:
            return f"must be one of {', '.join(map(str, options))}; got {value!r}"
        return None

    return check


def _bool(value):
    return None if isinstance(value, bool) else f"must be True or False, got {value!r}"


def _optional(rule):
    return lambda value: None if value is None else rule(value)


def _losses(value):
    if not isinstance(value, tuple) or not value:
        return f"must be a non-empty tuple of loss names from {LOSS_CHOICES}"
    unknown = [v for v in value if not (isinstance(v, str) and is_loss_name(v))]
    if unknown:
        names = ", ".join(map(str, unknown))
        return f"contains unknown {names}; choose from {LOSS_CHOICES}"
    if len(set(value)) != len(value):
        return f"names a loss twice: {', '.join(value)}"
    return None


def _calibrators(value):
    if not isinstance(value, tuple) or not value:
        return f"must be a non-empty tuple of names from {', '.join(CALIBRATORS)}"
    unknown = [v for v in value if v not in CALIBRATORS]
    if unknown:
        names = ", ".join(map(str, unknown))
        return f"contains unknown {names}; choose from {', '.join(CALIBRATORS)}"
    if len(set(value)) != len(value):
        return f"names a calibrator twice: {', '.join(value)}"
    return None


def _datasets():
    from examples.compare_losses import input_pipeline

    return input_pipeline.DATASETS


def _models():
    from examples.compare_losses import models

    return models.MODELS


# One rule per Config field: None if the value is valid, else what is wrong (one line).
_RULES = {
    "dataset": _choice(_datasets),
    "model": _choice(_models),
    "losses": _losses,
    "num_epochs": _int(1),
    "batch_size": _int(1),
    "eval_batch_size": _int(1),
    "learning_rate": _float(0, open_low=True),
    "momentum": _float(0, 1),
    "weight_decay": _float(0),
    "lr_boundaries": lambda v: None if isinstance(v, tuple) else f"must be a tuple, got {v!r}",
    "lr_decay": _float(0, 1, open_low=True, closed_high=True),
    "loss_reduction": _choice(("mean", "sum")),
    "clip_global_norm": _optional(_float(0, open_low=True)),
    "augment": _bool,
    "val_fraction": _float(0, 1, open_low=True),
    "num_bins": _int(1),
    "seed": _int(0, 2**32),
    "mmce_weight": _float(0),
    "mmce_variant": _choice(("mukhoti2020", "kumar2018")),
    "ls_epsilon": _float(0, 1),
    "ls_paper_variant": _bool,
    "checkpoint_every_epochs": _int(1),
    "max_train_examples": _optional(_int(1)),
    "track_curves": _bool,
    "calibrators": _calibrators,
}


def validate(config: Config) -> Config:
    """Checks every field of ``config`` (and ``lr_boundaries`` against ``num_epochs``).

    Returns ``config`` unchanged; raises :class:`ConfigError` naming the first bad field
    (its command-line flag is ``--<field>`` where one exists).
    """
    for field in dataclasses.fields(config):
        rule = _RULES.get(field.name)
        problem = None if rule is None else rule(getattr(config, field.name))
        if problem:
            raise ConfigError(f"{field.name} {problem}")
    bounds, n = config.lr_boundaries, config.num_epochs
    ints = all(isinstance(b, int) and not isinstance(b, bool) for b in bounds)
    if not (ints and all(0 < b < n for b in bounds) and list(bounds) == sorted(set(bounds))):
        example = ",".join(str(b) for b in sorted({max(1, n // 2), max(1, 3 * n // 4)}) if b < n)
        raise ConfigError(
            f"lr_boundaries must be increasing epochs in [1, num_epochs) = [1, {n}), got "
            f"{bounds}; pass --lr_boundaries {example or 'none'}"
        )
    return config
