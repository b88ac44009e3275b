"""The training example (``examples/compare_losses``): pipeline, steps, sharding, resume, CLI,
and multi-process evaluation with ``jax.distributed``."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("tensorflow_datasets")
pytest.importorskip("grain")

import tensorflow_datasets as tfds
from flax import nnx

import calib_jax
from examples.compare_losses import input_pipeline, main, models, train
from examples.compare_losses.configs import ALL_LOSSES, EXTRA_LOSSES, get_config

ROOT = Path(__file__).resolve().parents[1]
TINY = get_config("tiny")


@pytest.fixture(scope="module")
def digits():
    return input_pipeline.get_splits("digits", seed=0)


# ----------------------------------------------------------------------------- pipeline


@pytest.mark.parametrize(
    ("name", "shape"),
    [("cifar10", (32, 32, 3)), ("mnist", (28, 28, 1)), ("svhn_cropped", (32, 32, 3))],
)
def test_pipeline_on_mock_tfds(name, shape):
    with tfds.testing.mock_data(num_examples=50):
        splits = input_pipeline.get_splits(name, seed=3)
        assert splits.info.image_shape == shape and splits.info.num_classes == 10
        assert (len(splits.train), len(splits.validation), len(splits.test)) == (45, 5, 50)
        batches = list(
            input_pipeline.train_batches(
                splits.train, splits.info, batch_size=16, seed=0, epoch=0, augment=True
            )
        )
        assert len(batches) == 2  # 45 // 16, incomplete batch dropped
        b = batches[0]
        assert b.image.shape == (16, *shape) and b.image.dtype == np.float32
        assert b.label.shape == (16,) and b.label.dtype == np.int32
        assert b.mask.all()
        ev = list(input_pipeline.eval_batches(splits.validation, splits.info, batch_size=4))
        assert [e.mask.sum() for e in ev] == [4, 1]
        assert all(e.image.shape == (4, *shape) for e in ev)


def test_validation_split_is_seeded_and_disjoint():
    tr, va = input_pipeline.split_train_validation(1000, val_fraction=0.1, seed=7)
    assert len(va) == 100 and len(tr) == 900
    assert not set(tr) & set(va) and len(set(tr) | set(va)) == 1000
    _, va2 = input_pipeline.split_train_validation(1000, val_fraction=0.1, seed=7)
    np.testing.assert_array_equal(va, va2)
    _, va3 = input_pipeline.split_train_validation(1000, val_fraction=0.1, seed=8)
    assert set(va) != set(va3)


def test_offline_digits_are_real_images(digits):
    info = digits.info
    assert (info.name, info.num_classes, info.image_shape) == ("digits", 10, (8, 8, 1))
    assert len(digits.train) + len(digits.validation) + len(digits.test) == 1797
    assert len(digits.validation) == round(0.1 * (1797 - len(digits.test)))
    labels = np.asarray([digits.test[i]["label"] for i in range(len(digits.test))])
    assert set(labels.tolist()) == set(range(10))
    # The test split does not depend on the run seed; the validation split does.
    other = input_pipeline.get_splits("digits", seed=1)
    assert all((other.test[i]["image"] == digits.test[i]["image"]).all() for i in range(0, 300, 37))
    batch = next(input_pipeline.eval_batches(digits.test, info, batch_size=64))
    assert batch.image.shape == (64, 8, 8, 1) and batch.image.dtype == np.float32
    # Real digits: ink in the middle columns, empty borders (noise would fill both).
    mean = batch.image.mean(axis=(0, 3))
    assert mean[:, 3:5].mean() > mean[:, 0].mean() + 1.0


def test_train_order_depends_only_on_seed_and_epoch(digits):
    def first(seed, epoch):
        it = input_pipeline.train_batches(
            digits.train, digits.info, batch_size=32, seed=seed, epoch=epoch
        )
        return next(it).label

    np.testing.assert_array_equal(first(0, 1), first(0, 1))
    assert not np.array_equal(first(0, 1), first(0, 2))


def test_missing_tfds_dataset_fails_fast_with_instructions(tmp_path, monkeypatch):
    start = time.perf_counter()
    with pytest.raises(RuntimeError, match="--download"):
        input_pipeline.get_splits("mnist", seed=0, data_dir=str(tmp_path))
    monkeypatch.setattr(input_pipeline, "_network_available", lambda: False)
    with pytest.raises(RuntimeError, match="no network"):
        input_pipeline.get_splits("cifar10", seed=0, data_dir=str(tmp_path), download=True)
    assert time.perf_counter() - start < 10
    with pytest.raises(ValueError, match="unknown dataset"):
        input_pipeline.get_splits("imagenet", seed=0)


# ----------------------------------------------------------------------------- steps


def _state(config, mesh, info):
    return train.create_train_state(config, info, steps_per_epoch=10, mesh=mesh)


def _fixed_batch(digits, n=64):
    b = next(input_pipeline.train_batches(digits.train, digits.info, batch_size=n, seed=0, epoch=0))
    return b.image, b.label


@pytest.mark.parametrize("loss", (*ALL_LOSSES, *EXTRA_LOSSES, "fl1.5"))
def test_one_step_lowers_each_loss(loss, digits):
    config = TINY.replace(learning_rate=0.05)
    mesh = train.make_mesh()
    graphdef, state = _state(config, mesh, digits.info)
    objective = train.make_objective(loss, config)

    @jax.jit
    def value(state, images, labels):
        model, _ = nnx.merge(graphdef, state)
        return objective(model(images), labels)

    images, labels = train.global_batch(mesh, *_fixed_batch(digits))
    before = float(value(state, images, labels))
    state, reported = train.make_train_step(graphdef, objective, mesh)(state, images, labels)
    assert float(reported) == pytest.approx(before, rel=1e-5)
    if loss == "dualfocal":
        # At initialisation the non-target probabilities are nearly equal, so the largest of
        # them (p_j) switches class within a tiny step: the loss is non-smooth there and one
        # step can rise (its gradient is checked against finite differences in
        # tests/test_losses_wider.py).
        return
    assert float(value(state, images, labels)) < before


def test_focal_names_and_the_mdca_objective(digits):
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(32, 10)), jnp.float32)
    labels = jnp.asarray(np.arange(32) % 10)
    where = jnp.arange(32) < 30
    assert train.focal_gamma("fl2.5") == 2.5 and train.focal_gamma("flsd53") is None
    for reduction in ("mean", "sum"):
        config = TINY.replace(loss_reduction=reduction)
        ce = train.make_objective("ce", config)(logits, labels, where=where)
        fl0 = train.make_objective("fl0", config)(logits, labels, where=where)
        np.testing.assert_allclose(fl0, ce, rtol=1e-6)
        fl2 = train.make_objective("fl2", config)(logits, labels, where=where)
        per = calib_jax.losses.focal_loss(logits, labels, gamma=2.0)[:30]
        np.testing.assert_allclose(fl2, per.sum() if reduction == "sum" else per.mean(), rtol=1e-5)
        mdca = train.make_objective("mdca", config)(logits, labels, where=where)
        penalty = calib_jax.losses.mdca_penalty(logits, labels, where=where)
        expected = ce + (30 if reduction == "sum" else 1) * penalty
        np.testing.assert_allclose(mdca, expected, rtol=1e-5)


def _batchnorm_resnet(seed=0):
    model = models.ResNet(
        10, 1, block=models.BasicBlock, stage_sizes=(1,), widths=(8,), rngs=nnx.Rngs(seed)
    )
    optimizer = nnx.Optimizer(model, train.create_optimizer(TINY, 10), wrt=nnx.Param)
    return nnx.split((model, optimizer))


@pytest.mark.parametrize("arch", ["small_cnn+mmce", "resnet_batchnorm+ce"])
def test_sharded_steps_match_single_device(arch, digits):
    assert jax.device_count() == 8, "conftest sets 8 virtual CPU devices"
    loss = arch.split("+")[1]
    objective = train.make_objective(loss, TINY)
    results = []
    for devices in (jax.devices()[:1], jax.devices()):
        mesh = train.make_mesh(devices)
        if arch.startswith("resnet"):
            graphdef, state = _batchnorm_resnet()
            state = jax.device_put(state, jax.sharding.NamedSharding(mesh, jax.P()))
        else:
            graphdef, state = _state(TINY, mesh, digits.info)
        step = train.make_train_step(graphdef, objective, mesh)
        it = input_pipeline.train_batches(digits.train, digits.info, batch_size=64, seed=0, epoch=0)
        losses = []
        for _ in range(3):
            b = next(it)
            images, labels = train.global_batch(mesh, b.image, b.label)
            state, loss_value = step(state, images, labels)
            losses.append(float(loss_value))
        if len(devices) > 1:
            assert images.sharding.num_devices == 8
        results.append((losses, jax.device_get(nnx.to_pure_dict(state))))
    (l1, s1), (l8, s8) = results
    np.testing.assert_allclose(l8, l1, rtol=1e-5)
    for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8), strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)


def test_streamed_eval_matches_exact_metrics(digits):
    mesh = train.make_mesh()
    graphdef, state = _state(TINY, mesh, digits.info)
    step = train.make_eval_step(graphdef, mesh, num_bins=15)
    ev = train.evaluate(step, state, digits.test, digits.info, mesh, batch_size=64, num_bins=15)
    assert ev.logits.shape == (len(digits.test), 10) and ev.labels.shape == (len(digits.test),)
    exact = calib_jax.metrics.calibration_report(
        ev.logits, ev.labels, from_logits=True, num_bins=15
    )
    for field in ("ece", "mce", "classwise_ece", "nll", "accuracy"):
        np.testing.assert_allclose(
            getattr(ev.report, field), getattr(exact, field), rtol=1e-5, atol=1e-6
        )


def test_checkpoint_resume_gives_the_same_next_steps(tmp_path, digits):
    config = TINY.replace(losses=("ce",))
    straight = train.train_and_evaluate(config, "ce", tmp_path / "a", splits=digits, progress=False)
    first = train.train_and_evaluate(
        config.replace(num_epochs=1), "ce", tmp_path / "b", splits=digits, progress=False
    )
    resumed = train.train_and_evaluate(config, "ce", tmp_path / "b", splits=digits, progress=False)
    assert first.losses == straight.losses[:1]
    assert resumed.losses == straight.losses[1:]  # only the epoch after the checkpoint ran
    a = jax.device_get(nnx.to_pure_dict(straight.state))
    b = jax.device_get(nnx.to_pure_dict(resumed.state))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(straight.test.logits, resumed.test.logits)


# ----------------------------------------------------------------------------- CLI


def test_cli_end_to_end_on_tiny_config(tmp_path, capsys):
    rows = main.main(
        ["--config", "tiny", "--losses", "ce,fl3", "--workdir", str(tmp_path), "--no_progress"]
    )
    out = capsys.readouterr().out
    assert "| ce | none |" in out and "| fl3 | TS (ECE grid) |" in out
    assert [(r["loss"], r["calibration"]) for r in rows] == [
        (loss, c) for loss in ("ce", "fl3") for c in ("none", "TS (NLL)", "TS (ECE grid)")
    ]
    for loss in ("ce", "fl3"):
        mine = [r for r in rows if r["loss"] == loss]
        # Temperature scaling never changes the prediction, so never the error.
        assert len({r["error"] for r in mine}) == 1
        assert all(r["temperature"] > 0 for r in mine[1:])
        png = tmp_path / f"reliability_{loss}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rows"] == rows and saved["config"]["dataset"] == "digits"
    assert (tmp_path / "results.md").read_text().count("\n| ") == 7  # header + 6 rows
    with pytest.raises(SystemExit):
        main.main(["--losses", "ce,nope", "--workdir", str(tmp_path)])


# ----------------------------------------------------------------------------- multi-process

_WORKER = textwrap.dedent(
    """
    import sys
    import jax
    jax.distributed.initialize(
        coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2])
    )
    from examples.compare_losses import input_pipeline, train
    from examples.compare_losses.configs import get_config

    assert jax.process_count() == 2 and jax.device_count() == 4
    splits = input_pipeline.get_splits("digits", seed=0)
    mesh = train.make_mesh()
    graphdef, state = train.create_train_state(
        get_config("tiny"), splits.info, steps_per_epoch=10, mesh=mesh
    )
    step = train.make_eval_step(graphdef, mesh, num_bins=15)
    ev = train.evaluate(step, state, splits.test, splits.info, mesh, batch_size=64, num_bins=15)
    print("RESULT", repr(float(ev.report.ece)), repr(float(ev.report.accuracy)), len(ev.labels))
    """
)


def test_two_process_distributed_eval_matches_one_process(digits):
    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, f"localhost:{port}", str(i)],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    outputs = []
    for p in procs:
        try:
            out, err = p.communicate(timeout=120)
        finally:
            p.kill()
        assert p.returncode == 0, err[-3000:]
        outputs.append(next(line for line in out.splitlines() if line.startswith("RESULT")))

    mesh = train.make_mesh()
    graphdef, state = _state(TINY, mesh, digits.info)
    step = train.make_eval_step(graphdef, mesh, num_bins=15)
    ev = train.evaluate(step, state, digits.test, digits.info, mesh, batch_size=64, num_bins=15)
    for line in outputs:
        _, ece, acc, n = line.split()
        assert int(n) == len(digits.test)
        assert float(acc) == pytest.approx(float(ev.report.accuracy), abs=1e-7)
        assert float(ece) == pytest.approx(float(ev.report.ece), abs=1e-6)


# ----------------------------------------------------------------------------- models


def _abstract_forward(model, shape):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    out = jax.eval_shape(
        lambda p, r, x: nnx.merge(graphdef, p, r)(x),
        params,
        rest,
        jax.ShapeDtypeStruct(shape, jnp.float32),
    )
    return sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params)), out.shape


# Abstract evaluation only (no allocation, no compilation). ResNet-110 and DenseNet-121 are too
# slow to trace here; their blocks are covered by the small instances below and the BN test.
@pytest.mark.parametrize(
    ("name", "millions", "head"), [("resnet50", 23.52, 2048), ("wide_resnet26_10", 26.80, 640)]
)
def test_paper_architectures_shapes_and_sizes(name, millions, head):
    model = nnx.eval_shape(
        lambda: models.create_model(name, num_classes=100, image_shape=(32, 32, 3), seed=0)
    )
    count, shape = _abstract_forward(model, (2, 32, 32, 3))
    assert shape == (2, 100)
    # Published sizes are for 10 classes: remove the 90 extra rows of the linear head.
    assert count - 90 * (head + 1) == pytest.approx(millions * 1e6, rel=2e-3)


def test_small_densenet_and_resnet_blocks():
    dense = nnx.eval_shape(
        lambda: models.DenseNet(10, 3, block_sizes=(2, 2), growth=4, rngs=nnx.Rngs(0))
    )
    assert _abstract_forward(dense, (2, 16, 16, 3))[1] == (2, 10)
    resnet = nnx.eval_shape(
        lambda: models.ResNet(
            10,
            3,
            block=models.BasicBlock,
            stage_sizes=(1, 1, 1),
            widths=(4, 8, 16),
            rngs=nnx.Rngs(0),
        )
    )
    assert _abstract_forward(resnet, (2, 16, 16, 3))[1] == (2, 10)
