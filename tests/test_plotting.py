"""Reliability-diagram plots: what is drawn matches the per-bin statistics."""

import subprocess
import sys
import types

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import calib_jax
from calib_jax import plotting


def _data(n=400, k=4, seed=0):
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(n, k)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = rng.integers(0, k, n)
    return probs.astype(np.float32), labels


def test_bars_match_bins_and_legend_states_ece():
    probs, labels = _data()
    diagram = calib_jax.metrics.reliability_diagram(probs, labels, num_bins=10)
    ax = plotting.reliability_diagram(diagram, title="t")
    count = np.asarray(diagram.count)
    keep = count > 0
    assert 0 < keep.sum() < 10  # some bins empty (confidence >= 1/4), so skipping is tested
    bars = ax.patches
    acc_bars, gap_bars = bars[: keep.sum()], bars[keep.sum() :]
    assert len(gap_bars) == keep.sum()
    np.testing.assert_allclose(
        [b.get_height() for b in acc_bars], np.asarray(diagram.accuracy)[keep], rtol=1e-6
    )
    np.testing.assert_allclose(
        [b.get_x() for b in acc_bars], np.asarray(diagram.lower)[keep], rtol=1e-6
    )
    # Gap bars span accuracy → mean confidence.
    np.testing.assert_allclose(
        [b.get_y() + b.get_height() for b in gap_bars],
        np.asarray(diagram.confidence)[keep],
        rtol=1e-5,
    )
    expected = float(calib_jax.metrics.ece(probs, labels, num_bins=10))
    legend = ax.get_legend().get_texts()[1].get_text()
    assert legend == f"Gap (ECE {100 * expected:.2f}%)"
    assert ax.get_title() == "t"


def test_side_by_side_panels_and_png(tmp_path):
    probs, labels = _data()
    before = calib_jax.metrics.reliability_diagram(probs, labels, num_bins=15)
    sharp = probs**3 / (probs**3).sum(-1, keepdims=True)
    after = calib_jax.metrics.reliability_diagram(sharp, labels, num_bins=15)
    fig = plotting.reliability_diagrams(
        [before, after], titles=["before", "after"], suptitle="s", show_counts=False
    )
    assert [ax.get_title() for ax in fig.axes] == ["before", "after"]
    path = tmp_path / "r.png"
    fig.savefig(path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="titles"):
        plotting.reliability_diagrams([before, after], titles=["one"])
    with pytest.raises(ValueError, match="at least one"):
        plotting.reliability_diagrams([])


def test_bad_diagrams_raise():
    with pytest.raises(TypeError, match="lacks"):
        plotting.reliability_diagram(types.SimpleNamespace(count=np.ones(3)))
    bad = types.SimpleNamespace(
        count=np.ones(3),
        accuracy=np.ones(3),
        confidence=np.ones(2),
        lower=np.ones(3),
        upper=np.ones(3),
    )
    with pytest.raises(ValueError, match="one length"):
        plotting.reliability_diagram(bad)


def test_all_empty_diagram_draws_nothing():
    empty = types.SimpleNamespace(
        count=np.zeros(3),
        accuracy=np.zeros(3),
        confidence=np.zeros(3),
        lower=np.array([0, 1 / 3, 2 / 3]),
        upper=np.array([1 / 3, 2 / 3, 1]),
    )
    ax = plotting.reliability_diagram(empty)
    assert len(ax.patches) == 0


def test_importing_calib_jax_does_not_import_matplotlib():
    code = "import sys, calib_jax, calib_jax.plotting; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
