"""Adapters of the streaming state: a flax.nnx metric in a real NNX train/eval loop, and a clu
metric in a clu Collection, both against the one-shot report and a float64 NumPy ECE."""

import itertools

import numpy as np
import pytest

pytest.importorskip("flax")

import jax
import jax.numpy as jnp
import optax
from flax import nnx

import calib_jax as cj
from calib_jax.integrations.nnx import CalibrationMetric

K, BINS = 10, 15


def _ece_reference(logits, labels, num_bins=BINS):
    """Float64 top-label ECE with bins ((m-1)/M, m/M] decided on the float32 confidence."""
    z = np.asarray(logits, np.float64)
    p = np.exp(z - z.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    conf = p.max(1)
    correct = (p.argmax(1) == np.asarray(labels)).astype(np.float64)
    edges = np.linspace(0.0, 1.0, num_bins + 1)
    ece = 0.0
    for lo, hi in itertools.pairwise(edges):
        inside = (conf > lo) & (conf <= hi) if lo > 0 else conf <= hi
        if inside.any():
            ece += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return ece


def _data(n=700, seed=0):
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(digits.target))[:n]
    return (digits.data[idx] / 16.0).astype(np.float32), digits.target[idx].astype(np.int32)


class _MLP(nnx.Module):
    def __init__(self, rngs):
        self.hidden = nnx.Linear(64, 32, rngs=rngs)
        self.out = nnx.Linear(32, K, rngs=rngs)

    def __call__(self, x):
        return self.out(nnx.relu(self.hidden(x)))


def test_nnx_metric_in_a_real_train_and_eval_loop():
    x, y = _data()
    model = _MLP(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1, momentum=0.9), wrt=nnx.Param)
    metrics = nnx.MultiMetric(
        calibration=CalibrationMetric(K, num_bins=BINS), loss=nnx.metrics.Average("loss")
    )

    @nnx.jit
    def train_step(model, optimizer, xb, yb):
        def loss_fn(model):
            return cj.losses.focal_loss(model(xb), yb, gamma=3.0).mean()

        loss, grads = nnx.value_and_grad(loss_fn)(model)
        optimizer.update(model, grads)
        return loss

    @nnx.jit
    def eval_step(model, metrics, xb, yb, mask):
        logits = model(xb)
        loss = cj.losses.cross_entropy(logits, yb, where=mask)
        metrics.update(logits=logits, labels=yb, mask=mask, loss=loss)  # mask: both metrics
        return logits

    for _ in range(3):
        for start in range(0, 512, 64):
            train_step(model, optimizer, x[start : start + 64], y[start : start + 64])
    x_test, y_test = x[512:], y[512:]  # 188 rows: the last batch of 64 is padded
    logits = []
    for start in range(0, len(y_test), 64):
        xb, yb = x_test[start : start + 64], y_test[start : start + 64]
        mask = np.arange(64) < len(yb)
        pad = 64 - len(yb)
        xb, yb = np.pad(xb, ((0, pad), (0, 0))), np.pad(yb, (0, pad))
        logits.append(np.asarray(eval_step(model, metrics, xb, yb, mask))[mask])
    logits = np.concatenate(logits)
    report = metrics.compute()["calibration"]
    exact = cj.metrics.calibration_report(logits, y_test, from_logits=True, num_bins=BINS)
    for field in ("ece", "mce", "classwise_ece", "nll", "accuracy", "brier"):
        np.testing.assert_allclose(getattr(report, field), getattr(exact, field), rtol=1e-5)
    np.testing.assert_allclose(report.ece, _ece_reference(logits, y_test), atol=1e-6)
    assert 0.0 < float(report.ece) and 0.5 < float(report.accuracy) < 1.0
    assert int(metrics.calibration.state.get_value().count.sum()) == len(y_test)
    metrics.reset()
    assert int(metrics.calibration.state.get_value().count.sum()) == 0


def test_nnx_metric_names_and_missing_keywords():
    metric = CalibrationMetric(3, num_bins=5, from_logits=False, predictions_name="probs")
    p = jnp.array([[0.2, 0.3, 0.5], [0.6, 0.3, 0.1]])
    metric.update(probs=p, labels=jnp.array([2, 1]), unrelated=jnp.ones(4))
    np.testing.assert_allclose(
        metric.compute().ece, cj.metrics.ece(p, jnp.array([2, 1]), num_bins=5), rtol=1e-6
    )
    with pytest.raises(TypeError, match=r"\['probs'\]"):
        metric.update(logits=p, labels=jnp.array([2, 1]))


def test_clu_metric_in_a_collection_with_merge_and_device_reduce():
    clu_metrics = pytest.importorskip("clu.metrics")
    from calib_jax.integrations.clu import calibration_metric

    assert calibration_metric(K, num_bins=BINS) is calibration_metric(K, num_bins=BINS)
    Metrics = clu_metrics.Collection.create(
        calibration=calibration_metric(K, num_bins=BINS),
        loss=clu_metrics.Average.from_output("loss"),
    )
    rng = np.random.default_rng(1)
    logits = (3.0 * rng.normal(size=(300, K))).astype(np.float32)
    labels = rng.integers(0, K, 300).astype(np.int32)

    @jax.jit
    def batch_metrics(z, yb, mask):
        loss = cj.losses.cross_entropy(z, yb, where=mask)
        return Metrics.single_from_model_output(logits=z, labels=yb, mask=mask, loss=loss)

    merged = Metrics.empty()
    for start in range(0, 300, 100):
        mask = np.ones(100, bool)
        mask[-7:] = start != 200  # the last batch carries 7 padding rows
        z, yb = logits[start : start + 100], labels[start : start + 100]
        merged = merged.merge(batch_metrics(z, yb, mask))
    keep = np.ones(300, bool)
    keep[-7:] = False
    report = merged.compute()["calibration"]
    exact = cj.metrics.calibration_report(
        logits[keep], labels[keep], from_logits=True, num_bins=BINS
    )
    for field in ("ece", "mce", "classwise_ece", "nll", "accuracy"):
        np.testing.assert_allclose(getattr(report, field), getattr(exact, field), rtol=1e-5)
    np.testing.assert_allclose(report.ece, _ece_reference(logits[keep], labels[keep]), atol=1e-6)

    # Two "devices" stacked on a leading axis (what all_gather gives in pmap): reduce = merge.
    a = batch_metrics(logits[:150], labels[:150], np.ones(150, bool))
    b = batch_metrics(logits[150:], labels[150:], np.ones(150, bool))
    stacked = jax.tree.map(lambda u, v: jnp.stack([u, v]), a, b)
    reduced = stacked.reduce().compute()["calibration"]
    np.testing.assert_allclose(reduced.ece, a.merge(b).compute()["calibration"].ece, rtol=1e-6)
    with pytest.raises(TypeError, match="labels"):
        calibration_metric(K).from_model_output(logits=logits)
    with pytest.raises(ValueError, match="classes"):
        calibration_metric(4).from_model_output(logits=logits, labels=labels)
