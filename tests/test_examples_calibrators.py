"""The example's post-hoc column with any calibrator: --calibrators and compare.calibrate."""

import jax
import numpy as np
import pytest

pytest.importorskip("flax")
pytest.importorskip("grain")

import calib_jax
from examples.compare_losses import compare, main, train
from examples.compare_losses.configs import CALIBRATORS


def test_flag_selects_calibrators_and_every_name_has_a_calibrator():
    def config(*argv):
        return main.make_config(main.parse_args(list(argv)))

    assert config().calibrators == ("ts_nll", "ts_ece_grid")
    assert config("--calibrators", "dirichlet, venn_abers").calibrators == (
        "dirichlet",
        "venn_abers",
    )
    assert config("--calibrators", "all").calibrators == CALIBRATORS
    assert set(compare.CALIBRATORS) == set(CALIBRATORS)
    # Post-hoc calibrators do not change training: the checkpoints are shared.
    assert compare.config_hash(config("--calibrators", "beta")) == compare.config_hash(config())


def _evaluation(seed, n):
    rng = np.random.default_rng(seed)
    logits = (3 * rng.normal(size=(n, 10))).astype(np.float32)
    probs = np.asarray(jax.nn.softmax(logits / 2.5))
    labels = (probs.cumsum(-1) > rng.random((n, 1))).argmax(-1).astype(np.int32)
    return train.Evaluation(logits, labels, None)


def test_calibrate_runs_the_wider_calibrators_on_logits_and_probabilities():
    names = ("ets", "beta", "venn_abers")  # on logits, on probabilities, top-label
    rows = compare.calibrate(
        (_evaluation(0, 300), _evaluation(1, 200)), num_bins=15, calibrators=names
    )
    assert [r[0] for r in rows] == ["none", *(compare.CALIBRATORS[k][0] for k in names)]
    labels = _evaluation(1, 200).labels
    for name, t, report, probs in rows:
        assert t is None, name
        np.testing.assert_allclose(probs.sum(-1), 1, atol=1e-5, err_msg=name)
        # The row's metrics are those of the returned test probabilities.
        logp = np.log(np.maximum(probs, np.finfo(np.float32).tiny))
        expected = calib_jax.metrics.calibration_report(logp, labels, from_logits=True, num_bins=15)
        np.testing.assert_allclose(report.ece, expected.ece, atol=1e-5, err_msg=name)
        np.testing.assert_allclose(report.accuracy, expected.accuracy, err_msg=name)
    before = rows[0][2].ece
    assert all(report.ece < before for _, _, report, _ in rows[1:])  # over-confident input
