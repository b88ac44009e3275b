"""AdaFocal in the example: its objective, the per-epoch γ update from the validation split, and
a resume that restores the AdaFocal state with the checkpoint."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("grain")

from flax import nnx

from calib_jax import losses as L
from examples.compare_losses import input_pipeline, train
from examples.compare_losses.configs import get_config

TINY = get_config("tiny").replace(losses=("adafocal",))


def test_objective_reads_the_state_and_reduces_like_the_others():
    rng = np.random.default_rng(0)
    logits = jnp.asarray(rng.normal(0, 2, (32, 10)), jnp.float32)
    labels = jnp.asarray(rng.integers(0, 10, 32), jnp.int32)
    where = jnp.arange(32) < 30
    state = L.AdaFocalState(jnp.linspace(-2, 5, 15), L.adafocal_init().edges)
    per = L.adafocal_loss(logits, labels, state=state)[:30]
    for reduction, expected in (("mean", per.mean()), ("sum", per.sum())):
        objective = train.make_objective("adafocal", TINY.replace(loss_reduction=reduction))
        value = objective(logits, labels, where=where, state=state)
        np.testing.assert_allclose(value, expected, rtol=1e-5)
    # No state: the initial one (γ = 1 in every bin), i.e. focal loss with γ = 1.
    np.testing.assert_allclose(
        objective(logits, labels),
        L.focal_loss(logits, labels, gamma=1.0).sum(),
        rtol=1e-5,
    )


def test_gamma_is_updated_each_epoch_and_restored_on_resume(tmp_path, monkeypatch):
    splits = input_pipeline.get_splits("digits", seed=0)
    updates = []
    real_update = train.adafocal_epoch_update

    def spy(loss_state, validation):
        new = real_update(loss_state, validation)
        updates.append((loss_state, validation, new))
        return new

    monkeypatch.setattr(train, "adafocal_epoch_update", spy)
    straight = train.train_and_evaluate(
        TINY, "adafocal", tmp_path / "a", splits=splits, progress=False
    )
    assert len(updates) == TINY.num_epochs
    first_in, first_val, first_out = updates[0]
    np.testing.assert_array_equal(first_in.gamma, L.adafocal_init(TINY.num_bins).gamma)
    np.testing.assert_array_equal(updates[1][0].gamma, first_out.gamma)  # the chain of epochs
    assert len(first_val.labels) == len(splits.validation)
    sums, edges = L.adafocal_validation_sums(first_val.logits, first_val.labels)
    np.testing.assert_allclose(
        first_out.gamma, L.adafocal_update(first_in, sums, edges=edges).gamma
    )
    assert not np.allclose(first_out.gamma, 1.0)
    saved = json.loads((tmp_path / "a" / "loss_state.json").read_text())
    assert saved["epoch"] == TINY.num_epochs
    np.testing.assert_array_equal(saved["gamma"], np.asarray(updates[-1][2].gamma))

    updates.clear()
    train.train_and_evaluate(
        TINY.replace(num_epochs=1), "adafocal", tmp_path / "b", splits=splits, progress=False
    )
    resumed = train.train_and_evaluate(
        TINY, "adafocal", tmp_path / "b", splits=splits, progress=False
    )
    # The resumed epoch trained with the state saved after epoch 1, so it matches the straight run.
    np.testing.assert_array_equal(updates[1][0].gamma, updates[0][2].gamma)
    assert resumed.losses == straight.losses[1:]
    a = jax.device_get(nnx.to_pure_dict(straight.state))
    b = jax.device_get(nnx.to_pure_dict(resumed.state))
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_array_equal(x, y)
