"""Training and evaluation: an NNX model, an optax optimizer and any calib_jax loss.

* :func:`make_train_step`: one jit-compiled SGD step, data-parallel over a mesh with one
  ``"data"`` axis (parameters replicated, batch sharded; XLA inserts the gradient all-reduce
  and computes batch-norm statistics over the global batch, so the result matches a
  single-device step).
* :func:`make_eval_step`: a jit-compiled pass that returns the logits and feeds the streaming
  :class:`calib_jax.metrics.CalibrationState`: each device adds its shard's per-bin sums,
  then ``lax.psum`` over the data axis. Across hosts (``jax.distributed``) the mesh spans
  every process's devices, so the same psum gives the global state.
* :func:`train_and_evaluate`: the loop, with orbax checkpoints (resume gives bit-identical
  continuation: the data order depends only on seed and epoch) and tqdm progress.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import orbax.checkpoint as ocp
from flax import nnx
from jax.sharding import AxisType, NamedSharding
from jax.sharding import PartitionSpec as P

import calib_jax
from examples.compare_losses import input_pipeline, models
from examples.compare_losses.configs import Config

DATA_AXIS = "data"

Objective = Callable[..., jax.Array]


def make_objective(name: str, config: Config) -> Objective:
    """The scalar training objective ``objective(logits, labels, where=None)`` for ``name``.

    ``ce`` cross-entropy, ``brier`` Brier score, ``mmce`` CE + λ·MMCE_w (λ =
    ``config.mmce_weight``, MMCE_w normalised as ``config.mmce_variant``), ``ls`` label
    smoothing (``config.ls_epsilon``, paper variant by default), ``fl3`` focal loss γ = 3,
    ``flsd53`` sample-dependent focal loss (γ = 5 below p_y = 0.2, else 3); ``fl<γ>`` focal
    loss with any γ (``fl0`` is cross-entropy; the γ sweep); losses of the wider field with
    their authors' defaults: ``mbls`` margin-based label smoothing (m = 10, α = 0.1),
    ``logitnorm`` (τ = 0.04), ``dualfocal`` (γ = 5), ``poly1`` (ε = 1), ``mdca`` CE + β·MDCA
    with β = 1 (the MDCA paper's weight for NLL), ``adafocal`` (a γ per bin, ``num_bins`` of
    the config, updated after each epoch from the validation split by
    :func:`adafocal_epoch_update`; its objective takes ``state=``, the
    :class:`calib_jax.losses.AdaFocalState`, default the initial one). All are built
    with :func:`calib_jax.losses.scalar_objective`, reduced over the batch as
    ``config.loss_reduction`` says; under ``"sum"`` the Brier score stays a batch mean, as the
    paper code's ``BrierScore`` (``Losses/brier_score.py``) divides by the batch size.
    """
    return _objective(
        name,
        config.mmce_weight,
        config.ls_epsilon,
        config.ls_paper_variant,
        config.mmce_variant,
        config.loss_reduction,
        config.num_bins,
    )


# Cached so that runs with the same loss share one function object, hence one compiled step.
@functools.cache
def _objective(
    name: str,
    mmce: float,
    ls_epsilon: float,
    ls_paper_variant: bool,
    mmce_variant: str,
    reduction: str,
    num_bins: int,
) -> Objective:
    L = calib_jax.losses
    per_example = {
        "ce": L.cross_entropy,
        "brier": L.brier_score,
        "mmce": L.cross_entropy,
        "ls": functools.partial(
            L.label_smoothing_cross_entropy,
            epsilon=ls_epsilon,
            paper_variant=ls_paper_variant,
        ),
        "fl3": functools.partial(L.focal_loss, gamma=3.0),
        "flsd53": functools.partial(L.adaptive_focal_loss, boundaries=(0.2,), gammas=(5.0, 3.0)),
        "mbls": L.margin_label_smoothing,
        "logitnorm": L.logit_norm_cross_entropy,
        "dualfocal": L.dual_focal_loss,
        "poly1": L.poly1_cross_entropy,
        "mdca": L.cross_entropy,
    }
    if name == "adafocal":
        return _adafocal_objective(mmce_variant, reduction, num_bins)
    gamma = focal_gamma(name)
    if gamma is not None:
        per_example[name] = functools.partial(L.focal_loss, gamma=gamma)
    if name not in per_example:
        raise ValueError(f"unknown loss {name!r}; choose from {sorted(per_example)}")
    objective = L.scalar_objective(
        per_example[name],
        mmce_weight=mmce if name == "mmce" else 0.0,
        mmce_variant=mmce_variant,
        reduction="mean" if name == "brier" else reduction,
    )
    if name != "mdca":
        return objective

    def with_mdca(logits, labels, where=None):
        # The penalty is a batch mean; under "sum" it scales with the batch like the CE term.
        n = labels.size if where is None else jnp.sum(where)
        scale = n if reduction == "sum" else 1.0
        return objective(logits, labels, where=where) + scale * L.mdca_penalty(
            logits, labels, where=where
        )

    return with_mdca


def _adafocal_objective(mmce_variant: str, reduction: str, num_bins: int) -> Objective:
    L = calib_jax.losses

    def adafocal(logits, labels, where=None, *, state=None):
        state = L.adafocal_init(num_bins) if state is None else state
        per_example = functools.partial(L.adafocal_loss, state=state)
        objective = L.scalar_objective(
            per_example, mmce_weight=0.0, mmce_variant=mmce_variant, reduction=reduction
        )
        return objective(logits, labels, where=where)

    return adafocal


def adafocal_epoch_update(
    loss_state: calib_jax.losses.AdaFocalState, validation: Evaluation
) -> calib_jax.losses.AdaFocalState:
    """AdaFocal's γ update from the validation split, over the authors' equal-mass bins."""
    L = calib_jax.losses
    num_bins = loss_state.gamma.shape[0]
    sums, edges = L.adafocal_validation_sums(
        validation.logits, validation.labels, num_bins=num_bins
    )
    return L.adafocal_update(loss_state, sums, edges=edges)


def focal_gamma(name: str) -> float | None:
    """γ of a focal-loss name ``fl<γ>`` (``fl0``, ``fl2.5``, ...), else ``None``."""
    match = re.fullmatch(r"fl(\d+(?:\.\d+)?)", name)
    return None if match is None else float(match.group(1))


def create_optimizer(config: Config, steps_per_epoch: int) -> optax.GradientTransformation:
    """SGD with momentum, coupled L2 weight decay and the config's step schedule.

    In PyTorch's order: the loss gradient is first clipped to ``config.clip_global_norm`` (if
    set; ``optax.clip_by_global_norm``, which scales by ``max_norm / norm`` where PyTorch's
    ``clip_grad_norm`` uses ``max_norm / (norm + 1e-6)``), then ``weight_decay · params`` is
    added, then momentum and the learning rate of :func:`learning_rate_schedule` apply.
    """
    return _sgd(
        config.learning_rate,
        config.momentum,
        config.weight_decay,
        tuple(b * steps_per_epoch for b in config.lr_boundaries),
        config.lr_decay,
        config.clip_global_norm,
    )


def learning_rate_schedule(config: Config, steps_per_epoch: int) -> optax.Schedule:
    """Step → learning rate: ``config.learning_rate`` times ``config.lr_decay`` per boundary
    reached, so every step of 0-based epoch ``e`` uses ``lr · decay^#{b ≤ e}``."""
    return _schedule(
        config.learning_rate,
        tuple(b * steps_per_epoch for b in config.lr_boundaries),
        config.lr_decay,
    )


def _schedule(learning_rate: float, boundaries: tuple[int, ...], decay: float) -> optax.Schedule:
    return optax.piecewise_constant_schedule(learning_rate, dict.fromkeys(boundaries, decay))


# The optimizer is a static part of the NNX graph: the same object for the same
# hyperparameters keeps the graphdef, hence the compiled steps, shared between runs.
@functools.cache
def _sgd(
    learning_rate: float,
    momentum: float,
    weight_decay: float,
    boundaries: tuple[int, ...],
    decay: float,
    clip_global_norm: float | None = None,
) -> optax.GradientTransformation:
    clip = () if clip_global_norm is None else (optax.clip_by_global_norm(clip_global_norm),)
    return optax.chain(
        *clip,
        optax.add_decayed_weights(weight_decay),
        optax.sgd(_schedule(learning_rate, boundaries, decay), momentum=momentum),
    )


def make_mesh(devices: Iterable[jax.Device] | None = None) -> jax.sharding.Mesh:
    """A 1-D mesh over ``devices`` (default: every device of every process), axis ``"data"``.

    The axis is ``Auto`` so that XLA propagates shardings through ops such as segment sums.
    """
    devices = np.asarray(list(jax.devices() if devices is None else devices))
    return jax.sharding.Mesh(devices, (DATA_AXIS,), axis_types=(AxisType.Auto,))


def create_train_state(
    config: Config,
    info: input_pipeline.DatasetInfo,
    *,
    steps_per_epoch: int,
    mesh: jax.sharding.Mesh,
) -> tuple[nnx.GraphDef, nnx.State]:
    """The model and optimizer as (graphdef, state); the state is replicated over ``mesh``.

    Initialisation runs under ``jit`` with replicated outputs, so every device (and every
    process) computes the same parameters in place instead of receiving them from a host.
    """
    graphdef, init = _initializer(
        config.model,
        info.num_classes,
        info.image_shape,
        config.seed,
        create_optimizer(config, steps_per_epoch),
        mesh,
    )
    return graphdef, init()


@functools.cache
def _initializer(
    model_name: str,
    num_classes: int,
    image_shape: tuple[int, int, int],
    seed: int,
    tx: optax.GradientTransformation,
    mesh: jax.sharding.Mesh,
) -> tuple[nnx.GraphDef, Callable[[], nnx.State]]:
    def build():
        model = models.create_model(
            model_name, num_classes=num_classes, image_shape=image_shape, seed=seed
        )
        return nnx.split((model, nnx.Optimizer(model, tx, wrt=nnx.Param)))

    graphdef, _ = nnx.split(nnx.eval_shape(lambda: nnx.merge(*build())))
    return graphdef, jax.jit(lambda: build()[1], out_shardings=NamedSharding(mesh, P()))


@functools.lru_cache(maxsize=64)
def make_train_step(
    graphdef: nnx.GraphDef, objective: Objective, mesh: jax.sharding.Mesh
) -> Callable[..., tuple[nnx.State, jax.Array]]:
    """``step(state, images, labels, loss_state=None) -> (state, loss)``, jit-compiled and
    data-parallel; ``loss_state`` (replicated) is passed to the objective as ``state=`` when
    given (AdaFocal's per-bin γ).

    Cached on its (hashable) arguments, so every run with the same architecture, loss and mesh
    reuses one compiled step.

    ``images [B, H, W, C]`` and ``labels [B]`` are sharded over the mesh's data axis
    (``B`` divisible by the number of devices); the state stays replicated.
    """

    def step(state, images, labels, loss_state):
        model, optimizer = nnx.merge(graphdef, state)
        model.train()

        def loss_fn(model):
            if loss_state is None:
                return objective(model(images), labels)
            return objective(model(images), labels, state=loss_state)

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return nnx.state((model, optimizer)), loss

    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    jitted = jax.jit(
        step, in_shardings=(repl, data, data, repl), out_shardings=(repl, repl), donate_argnums=0
    )

    def run(state, images, labels, loss_state=None):
        return jitted(state, images, labels, loss_state)

    return run


@functools.lru_cache(maxsize=64)
def make_eval_step(
    graphdef: nnx.GraphDef, mesh: jax.sharding.Mesh, *, num_bins: int
) -> Callable[..., tuple[Any, jax.Array]]:
    """``step(state, metrics, images, labels, mask) -> (metrics, logits, labels)``.

    ``metrics`` is a :class:`calib_jax.metrics.CalibrationState`; each device updates an empty
    state with its shard (padding rows masked out), the per-device states are summed with
    ``lax.psum`` over the data axis and merged into ``metrics``. The logits and labels come
    back replicated so every process can read all of them (for post-hoc calibration).
    """

    def logits_fn(state, images):
        model, _ = nnx.merge(graphdef, state)
        model.eval()
        return model(images).astype(jnp.float32)

    def local_update(logits, labels, mask):
        empty = calib_jax.metrics.CalibrationState.empty(logits.shape[-1], num_bins=num_bins)
        local = empty.update(logits, labels, from_logits=True, where=mask)
        return jax.tree.map(lambda x: jax.lax.psum(x, DATA_AXIS), local)

    def step(state, metrics, images, labels, mask):
        logits = logits_fn(state, images)
        batch_metrics = jax.shard_map(
            local_update,
            mesh=mesh,
            in_specs=(P(DATA_AXIS), P(DATA_AXIS), P(DATA_AXIS)),
            out_specs=P(),
        )(logits, labels, mask)
        return metrics.merge(batch_metrics), logits, labels

    repl, data = NamedSharding(mesh, P()), NamedSharding(mesh, P(DATA_AXIS))
    return jax.jit(
        step, in_shardings=(repl, repl, data, data, data), out_shardings=(repl, repl, repl)
    )


def global_batch(mesh: jax.sharding.Mesh, *arrays: np.ndarray) -> tuple[jax.Array, ...]:
    """Host-local batch shards → global arrays sharded over the data axis (multi-process
    safe: each process passes only its own rows)."""
    sharding = NamedSharding(mesh, P(DATA_AXIS))
    return tuple(jax.make_array_from_process_local_data(sharding, a) for a in arrays)


def _host(x: jax.Array) -> np.ndarray:
    """A replicated array as NumPy (reads the local copy; works across processes)."""
    return np.asarray(x.addressable_data(0))


@dataclasses.dataclass(frozen=True)
class Evaluation:
    """Logits and labels of one split (padding removed) and its streamed calibration report."""

    logits: np.ndarray
    labels: np.ndarray
    report: Any


def evaluate(
    eval_step: Callable[..., tuple[Any, jax.Array]],
    state: nnx.State,
    source: input_pipeline.Source,
    info: input_pipeline.DatasetInfo,
    mesh: jax.sharding.Mesh,
    *,
    batch_size: int,
    num_bins: int,
) -> Evaluation:
    """Runs ``eval_step`` over all of ``source``; every process gets the global result."""
    empty, compute = _metric_fns(mesh, info.num_classes, num_bins)
    metrics = empty()
    logits, labels = [], []
    batches = input_pipeline.eval_batches(
        source,
        info,
        batch_size=batch_size,
        process_index=jax.process_index(),
        process_count=jax.process_count(),
    )
    for batch in batches:
        images, y, mask = global_batch(mesh, batch.image, batch.label, batch.mask)
        metrics, batch_logits, batch_labels = eval_step(state, metrics, images, y, mask)
        logits.append(_host(batch_logits))
        labels.append(_host(batch_labels))
    n = len(source)
    report = jax.tree.map(_host, compute(metrics))
    return Evaluation(np.concatenate(logits)[:n], np.concatenate(labels)[:n], report)


@functools.cache
def _metric_fns(mesh: jax.sharding.Mesh, num_classes: int, num_bins: int):
    """Jitted (empty, compute) of the streaming state with replicated outputs: eager ops on
    arrays that span several processes would each compile and synchronise separately."""
    repl = NamedSharding(mesh, P())
    state = calib_jax.metrics.CalibrationState
    empty = jax.jit(lambda: state.empty(num_classes, num_bins=num_bins), out_shardings=repl)
    compute = jax.jit(lambda m: m.compute(), out_shardings=repl)
    return empty, compute


def _checkpoint_manager(workdir: Path, every: int) -> ocp.CheckpointManager:
    options = ocp.CheckpointManagerOptions(
        max_to_keep=2, save_interval_steps=every, enable_async_checkpointing=False
    )
    return ocp.CheckpointManager(workdir.resolve() / "checkpoints", options=options)


def _restore(manager: ocp.CheckpointManager, state: nnx.State) -> tuple[nnx.State, int]:
    """Restores the latest checkpoint into ``state`` (same shardings); returns the next epoch."""
    epoch = manager.latest_step()
    if epoch is None:
        return state, 0
    target = jax.tree.map(ocp.utils.to_shape_dtype_struct, nnx.to_pure_dict(state))
    restored = manager.restore(epoch, args=ocp.args.StandardRestore(target))
    nnx.replace_by_pure_dict(state, restored)
    return state, epoch


# Per-epoch quantities of the training curves (``config.track_curves``).
CURVE_FIELDS = ("train_loss", "test_error", "test_nll", "test_ece")


@dataclasses.dataclass(frozen=True)
class TrainResult:
    """What :func:`train_and_evaluate` returns: final state, per-epoch mean losses of the epochs
    run by this call, the validation and test evaluations used for post-hoc calibration and
    the table, and the training curves.

    ``curves`` maps each of :data:`CURVE_FIELDS` to one value per epoch since the start of
    training (kept across resumes in the checkpoint folder's ``history.json``); the test
    fields are filled only with ``config.track_curves``. ``train_error`` is the final model's
    error on the training examples it was trained on (evaluation mode), with
    ``config.track_curves``, else ``None``.
    """

    state: nnx.State
    losses: list[float]
    validation: Evaluation
    test: Evaluation
    curves: dict[str, list[float]] = dataclasses.field(default_factory=dict)
    train_error: float | None = None


def _history_path(workdir: Path) -> Path:
    return workdir.resolve() / "history.json"


def _load_history(workdir: Path | None, epoch: int) -> dict[str, list[float]]:
    """The curves of the first ``epoch`` epochs saved beside the checkpoints (empty lists if
    none were saved, e.g. a run from before curves were recorded)."""
    history: dict[str, list[float]] = {k: [] for k in CURVE_FIELDS}
    if workdir is not None and epoch > 0 and _history_path(workdir).exists():
        saved = json.loads(_history_path(workdir).read_text())
        history.update({k: list(v[:epoch]) for k, v in saved.items() if k in history})
    return history


def _loss_state_path(workdir: Path) -> Path:
    return workdir.resolve() / "loss_state.json"


def _save_loss_state(workdir: Path, epoch: int, loss_state) -> None:
    """The AdaFocal state after ``epoch`` epochs, beside the checkpoint of that epoch."""
    fields = {k: np.asarray(v).tolist() for k, v in loss_state._asdict().items()}
    _loss_state_path(workdir).write_text(json.dumps({"epoch": epoch, **fields}))


def _load_loss_state(workdir: str | Path | None, epoch: int, initial):
    """The saved AdaFocal state of ``epoch`` (the resumed checkpoint), else ``initial``."""
    if workdir is None or epoch == 0:
        return initial
    path = _loss_state_path(Path(workdir))
    saved = json.loads(path.read_text()) if path.exists() else {}
    if saved.get("epoch") != epoch:
        raise RuntimeError(f"{path} does not hold the AdaFocal state of epoch {epoch}")
    return type(initial)(*(jnp.asarray(saved[k], jnp.float32) for k in initial._fields))


def train_and_evaluate(
    config: Config,
    loss_name: str,
    workdir: str | Path | None,
    *,
    splits: input_pipeline.Splits | None = None,
    mesh: jax.sharding.Mesh | None = None,
    progress: bool = True,
) -> TrainResult:
    """Trains ``config.model`` with loss ``loss_name`` and evaluates on validation and test.

    With a ``workdir``, an orbax checkpoint is written every ``config.checkpoint_every_epochs``
    epochs and at the end, and training resumes from the latest one.
    """
    from tqdm.auto import tqdm

    mesh = make_mesh() if mesh is None else mesh
    if splits is None:
        splits = input_pipeline.get_splits(
            config.dataset, seed=config.seed, val_fraction=config.val_fraction
        )
    train_source = splits.train
    if config.max_train_examples is not None:
        keep = np.arange(min(config.max_train_examples, len(train_source)))
        train_source = input_pipeline.SubsetSource(train_source, keep)
    steps_per_epoch = len(train_source) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError("batch_size is larger than the training set")
    for b in (config.batch_size, config.eval_batch_size):
        if b % mesh.size:
            raise ValueError(f"batch size {b} is not divisible by the {mesh.size} devices")

    graphdef, state = create_train_state(
        config, splits.info, steps_per_epoch=steps_per_epoch, mesh=mesh
    )
    train_step = make_train_step(graphdef, make_objective(loss_name, config), mesh)
    eval_step = make_eval_step(graphdef, mesh, num_bins=config.num_bins)

    manager = None
    start = 0
    if workdir is not None:
        manager = _checkpoint_manager(Path(workdir), config.checkpoint_every_epochs)
        state, start = _restore(manager, state)
    history = _load_history(None if workdir is None else Path(workdir), start)
    kwargs = dict(batch_size=config.eval_batch_size, num_bins=config.num_bins)
    loss_state = None
    if loss_name == "adafocal":
        loss_state = _load_loss_state(
            workdir, start, calib_jax.losses.adafocal_init(config.num_bins)
        )

    epoch_losses: list[float] = []
    bar = tqdm(
        range(start, config.num_epochs),
        desc=f"{loss_name:>6}",
        disable=not progress or jax.process_index() != 0,
        leave=False,
    )
    for epoch in bar:
        total = jnp.zeros((), jnp.float32)
        batches = input_pipeline.train_batches(
            train_source,
            splits.info,
            batch_size=config.batch_size,
            seed=config.seed,
            epoch=epoch,
            augment=config.augment,
            process_index=jax.process_index(),
            process_count=jax.process_count(),
        )
        for batch in batches:
            images, labels = global_batch(mesh, batch.image, batch.label)
            state, loss = train_step(state, images, labels, loss_state)
            total = total + loss
        if loss_state is not None:
            validation = evaluate(eval_step, state, splits.validation, splits.info, mesh, **kwargs)
            loss_state = adafocal_epoch_update(loss_state, validation)
        epoch_losses.append(float(total) / steps_per_epoch)
        history["train_loss"].append(epoch_losses[-1])
        postfix = {"loss": f"{epoch_losses[-1]:.4f}"}
        if config.track_curves:
            report = evaluate(eval_step, state, splits.test, splits.info, mesh, **kwargs).report
            history["test_error"].append(float(report.error))
            history["test_nll"].append(float(report.nll))
            history["test_ece"].append(float(report.ece))
            postfix.update(
                err=f"{history['test_error'][-1]:.4f}", nll=f"{history['test_nll'][-1]:.3f}"
            )
        bar.set_postfix(postfix)
        if manager is not None:
            done = epoch + 1
            if done % config.checkpoint_every_epochs == 0 or done == config.num_epochs:
                manager.save(done, args=ocp.args.StandardSave(nnx.to_pure_dict(state)), force=True)
                if jax.process_index() == 0:
                    _history_path(Path(workdir)).write_text(json.dumps(history))
                    if loss_state is not None:
                        _save_loss_state(Path(workdir), done, loss_state)
    if manager is not None:
        manager.wait_until_finished()
        manager.close()

    train_error = None
    if config.track_curves:
        train_eval = evaluate(eval_step, state, train_source, splits.info, mesh, **kwargs)
        train_error = float(train_eval.report.error)
    return TrainResult(
        state,
        epoch_losses,
        evaluate(eval_step, state, splits.validation, splits.info, mesh, **kwargs),
        evaluate(eval_step, state, splits.test, splits.info, mesh, **kwargs),
        curves=history,
        train_error=train_error,
    )
