"""Experiment configurations: each module here defines ``get_config() -> Config``.

``--config`` takes a module name from this package (``default``, ``tiny``, ``overconfident``,
``cifar10_resnet50``, ...) or a path to a Python file defining ``get_config``.
"""

from __future__ import annotations

import dataclasses
import importlib
import importlib.util
from pathlib import Path

ALL_LOSSES = ("ce", "brier", "mmce", "ls", "fl3", "flsd53")


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


def get_config(name_or_path: str = "default") -> Config:
    """Loads ``get_config()`` from a module of this package or from a ``.py`` file path."""
    if name_or_path.endswith(".py"):
        path = Path(name_or_path)
        spec = importlib.util.spec_from_file_location(path.stem, path)
        if spec is None or spec.loader is None:
            raise ValueError(f"cannot load config file {name_or_path}")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    else:
        try:
            module = importlib.import_module(f"{__name__}.{name_or_path}")
        except ModuleNotFoundError as err:
            raise ValueError(f"unknown config {name_or_path!r}") from err
    return module.get_config()
