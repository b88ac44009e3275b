"""The paper code's training recipe in the example (examples/compare_losses): summed loss,
gradient clipping before the coupled weight decay, and its learning-rate schedule.

What the references reproduce, from torrvision/focal_calibration (commit 475422a):
``train_utils.py`` lines 44-58 (``loss.backward()``, ``clip_grad_norm(params, 2)``,
``optimizer.step()`` of ``optim.SGD(lr, momentum, weight_decay)``, ``train.py`` lines 223-229),
``Losses/loss.py`` lines 17-18 (``reduction='sum'``), and the schedule of ``train.py`` line
235 (``MultiStepLR(milestones=[150, 250], gamma=0.1)``) stepped at line 278, at the start of
every epoch.
"""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

pytest.importorskip("flax")

from flax import nnx

from examples.compare_losses import train
from examples.compare_losses.configs import get_config

PAPER_CONFIGS = (
    "cifar10_resnet50",
    "cifar10_resnet110",
    "cifar10_wide_resnet26_10",
    "cifar10_densenet121",
    "cifar100_resnet110",
)
# 0-based epoch -> learning rate of the paper code (see paper_cifar_config's docstring).
PAPER_LR = {0: 0.1, 148: 0.1, 149: 0.01, 150: 0.01, 248: 0.01, 249: 0.001, 250: 0.001, 349: 0.001}


def test_schedule_matches_the_paper_codes_epoch_alignment():
    config = get_config("cifar10_resnet50")
    spe = 3
    schedule = train.learning_rate_schedule(config, spe)
    for epoch, lr in PAPER_LR.items():
        first, last = epoch * spe, (epoch + 1) * spe - 1
        np.testing.assert_allclose(
            [float(schedule(first)), float(schedule(last))], [lr, lr], rtol=1e-6
        )
    # The rate the optimizer really applies: plain SGD on one scalar with gradient 1.
    tx = train.create_optimizer(
        config.replace(momentum=0.0, weight_decay=0.0, clip_global_norm=None), spe
    )
    params = jnp.zeros(())

    def step(state, _):
        updates, state = tx.update(jnp.ones(()), state, params)
        return state, -updates

    _, applied = jax.lax.scan(step, tx.init(params), length=350 * spe)
    for epoch, lr in PAPER_LR.items():
        np.testing.assert_allclose(applied[epoch * spe : (epoch + 1) * spe], lr, rtol=1e-6)


def test_schedule_matches_torch_multisteplr_stepped_at_epoch_start():
    torch = pytest.importorskip("torch")
    param = torch.nn.Parameter(torch.zeros(()))
    optimizer = torch.optim.SGD([param], lr=0.1, momentum=0.9, weight_decay=5e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[150, 250], gamma=0.1)
    schedule = train.learning_rate_schedule(get_config("cifar10_resnet50"), 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch warns about stepping before optimizer.step()
        for epoch in range(350):
            scheduler.step()  # as train.py does, before the epoch's training
            expected = optimizer.param_groups[0]["lr"]
            assert float(schedule(epoch)) == pytest.approx(expected, rel=1e-6), epoch
            if epoch in PAPER_LR:
                assert expected == pytest.approx(PAPER_LR[epoch], rel=1e-9)


@pytest.mark.parametrize("name", PAPER_CONFIGS)
def test_paper_configs_use_the_paper_codes_recipe(name):
    config = get_config(name)
    assert (config.loss_reduction, config.clip_global_norm) == ("sum", 2.0)
    assert (config.mmce_variant, config.mmce_weight) == ("mukhoti2020", 2.0)
    assert (config.num_epochs, config.lr_boundaries, config.lr_decay) == (350, (149, 249), 0.1)
    assert (config.learning_rate, config.momentum, config.weight_decay) == (0.1, 0.9, 5e-4)
    assert (config.batch_size, config.val_fraction, config.augment) == (128, 0.1, True)


@pytest.mark.parametrize("name", ["default", "overconfident"])
def test_offline_configs_train_the_code_mmce_with_lambda_2(name):
    config = get_config(name)
    assert (config.mmce_variant, config.mmce_weight) == ("mukhoti2020", 2.0)
    assert (config.loss_reduction, config.clip_global_norm) == ("mean", None)


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def test_objective_reductions_follow_the_paper_code():
    config = get_config("cifar10_resnet50")
    rng = np.random.default_rng(0)
    z = rng.normal(size=(6, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 3, 0, 1], np.int32)
    p = _softmax(z.astype(np.float64))
    onehot = np.eye(4)[y]
    ce = -np.log(p[np.arange(6), y])
    brier = ((p - onehot) ** 2).sum(-1)
    summed = train.make_objective("ce", config)
    np.testing.assert_allclose(float(summed(z, y)), ce.sum(), rtol=1e-5)
    # Losses/brier_score.py: the code's Brier score divides by the batch size.
    np.testing.assert_allclose(
        float(train.make_objective("brier", config)(z, y)), brier.mean(), 1e-5
    )
    mean = config.replace(loss_reduction="mean")
    np.testing.assert_allclose(float(train.make_objective("ce", mean)(z, y)), ce.mean(), rtol=1e-5)
    mmce_sum = float(train.make_objective("mmce", config)(z, y))
    mmce_mean = float(train.make_objective("mmce", mean)(z, y))
    np.testing.assert_allclose(mmce_sum, 6 * mmce_mean, rtol=1e-5)


def _reference_steps(w, b, batches, *, lr, momentum, wd, clip):
    """Two steps of the paper code in float64: summed CE, PyTorch's clip_grad_norm (scale
    max_norm / (norm + 1e-6) when that is < 1), then SGD with coupled weight decay and momentum
    (PyTorch: d = g + wd·θ; buf = d on the first step, else momentum·buf + d; θ -= lr·buf)."""
    w, b = w.astype(np.float64), b.astype(np.float64)
    buf, norms = None, []
    for x, y in batches:
        x = x.astype(np.float64)
        g_logits = _softmax(x @ w + b) - np.eye(w.shape[1])[y]  # d(sum CE)/d logits
        gw, gb = x.T @ g_logits, g_logits.sum(0)
        norm = np.sqrt((gw**2).sum() + (gb**2).sum())
        norms.append(norm)
        coef = clip / (norm + 1e-6)
        if coef < 1:
            gw, gb = gw * coef, gb * coef
        d = (gw + wd * w, gb + wd * b)
        buf = d if buf is None else tuple(momentum * u + v for u, v in zip(buf, d, strict=True))
        w, b = w - lr * buf[0], b - lr * buf[1]
    return w, b, norms


def _batches(scale, batch, seed):
    rng = np.random.default_rng(seed)
    return [
        (
            (scale * rng.normal(size=(batch, 6))).astype(np.float32),
            rng.integers(0, 4, batch).astype(np.int32),
        )
        for _ in range(2)
    ]


# (input scale, batch): the summed gradient's norm is > 2 (clipped) or < 2 (not clipped).
CASES = {"clipped": (1.0, 16), "unclipped": (0.05, 2)}


@pytest.mark.parametrize("case", CASES)
def test_sum_and_clip_steps_match_the_hand_computed_update(case):
    scale, batch = CASES[case]
    config = get_config("cifar10_resnet50").replace(learning_rate=0.1)
    model = nnx.Linear(6, 4, rngs=nnx.Rngs(0))
    w0, b0 = np.asarray(model.kernel[...]), np.asarray(model.bias[...])
    b0 = b0 + np.linspace(-0.3, 0.3, 4, dtype=np.float32)  # a nonzero bias sees the decay
    model.bias[...] = jnp.asarray(b0)
    optimizer = nnx.Optimizer(model, train.create_optimizer(config, 10), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    mesh = train.make_mesh(jax.devices()[:1])
    step = train.make_train_step(graphdef, train.make_objective("ce", config), mesh)
    batches = _batches(scale, batch, seed=1)
    for x, y in batches:
        state, _ = step(state, *train.global_batch(mesh, x, y))
    model, _ = nnx.merge(graphdef, state)
    w, b, norms = _reference_steps(
        w0, b0, batches, lr=0.1, momentum=0.9, wd=5e-4, clip=config.clip_global_norm
    )
    np.testing.assert_allclose(np.asarray(model.kernel[...]), w, rtol=2e-5, atol=1e-6)
    np.testing.assert_allclose(np.asarray(model.bias[...]), b, rtol=2e-5, atol=1e-6)
    if case == "clipped":
        assert min(norms) > 4.0
        # Clipping changed the update: without it the same steps land elsewhere.
        free, _, _ = _reference_steps(w0, b0, batches, lr=0.1, momentum=0.9, wd=5e-4, clip=np.inf)
        assert not np.allclose(free, w, rtol=1e-2)
    else:
        assert max(norms) < 1.5


@pytest.mark.parametrize("case", CASES)
def test_sum_and_clip_steps_match_torch(case):
    torch = pytest.importorskip("torch")
    scale, batch = CASES[case]
    config = get_config("cifar10_resnet50")
    model = nnx.Linear(6, 4, rngs=nnx.Rngs(2))
    linear = torch.nn.Linear(6, 4).double()
    with torch.no_grad():
        linear.weight.copy_(torch.tensor(np.asarray(model.kernel[...]).T, dtype=torch.float64))
        linear.bias.copy_(torch.tensor(np.asarray(model.bias[...]), dtype=torch.float64))
    sgd = torch.optim.SGD(linear.parameters(), lr=0.1, momentum=0.9, weight_decay=5e-4)
    optimizer = nnx.Optimizer(model, train.create_optimizer(config, 10), wrt=nnx.Param)
    graphdef, state = nnx.split((model, optimizer))
    mesh = train.make_mesh(jax.devices()[:1])
    step = train.make_train_step(graphdef, train.make_objective("ce", config), mesh)
    for x, y in _batches(scale, batch, seed=3):
        state, _ = step(state, *train.global_batch(mesh, x, y))
        sgd.zero_grad()
        loss = torch.nn.functional.cross_entropy(
            linear(torch.tensor(x, dtype=torch.float64)),
            torch.tensor(y, dtype=torch.int64),
            reduction="sum",
        )
        loss.backward()
        torch.nn.utils.clip_grad_norm_(linear.parameters(), 2.0)
        sgd.step()
    model, _ = nnx.merge(graphdef, state)
    np.testing.assert_allclose(
        np.asarray(model.kernel[...]), linear.weight.detach().numpy().T, rtol=2e-5, atol=1e-6
    )
    np.testing.assert_allclose(
        np.asarray(model.bias[...]), linear.bias.detach().numpy(), rtol=2e-5, atol=1e-6
    )


def test_clip_comes_before_the_weight_decay():
    # Clipping the decayed gradient instead would shrink the decay term too.
    tx = train.create_optimizer(
        get_config("cifar10_resnet50").replace(momentum=0.0, learning_rate=1.0), 1
    )
    params = {"w": jnp.full((4,), 10.0)}
    grads = {"w": jnp.full((4,), 3.0)}  # norm 6 > 2: clipped to 1 per entry
    updates, _ = tx.update(grads, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -(1.0 + 5e-4 * 10.0), rtol=1e-6)
    assert isinstance(tx, optax.GradientTransformation)
