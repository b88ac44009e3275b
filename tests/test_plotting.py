"""Reliability-diagram plots: what is drawn matches the per-bin statistics."""

import subprocess
import sys
import types

import numpy as np
import pytest

pytest.importorskip("matplotlib")

import matplotlib.colors
from matplotlib.backends.backend_agg import FigureCanvasAgg

import calib_jax
from calib_jax import plotting


def _data(n=400, k=4, seed=0, hit=0.0):
    """Random predictions; a share ``hit`` of the labels is the prediction (with ``hit = 0.6``
    low-confidence bins are under-confident and high-confidence bins over-confident)."""
    rng = np.random.default_rng(seed)
    logits = 2.0 * rng.normal(size=(n, k)).astype(np.float32)
    probs = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    labels = np.where(rng.random(n) < hit, logits.argmax(-1), rng.integers(0, k, n))
    return probs.astype(np.float32), labels


def _colors(bars):
    return [matplotlib.colors.to_hex(b.get_facecolor()[:3]) for b in bars]


def test_bars_match_bins_gap_colours_and_title_states_ece():
    probs, labels = _data(hit=0.6)
    diagram = calib_jax.metrics.reliability_diagram(probs, labels, num_bins=10)
    ax = plotting.plot_reliability_diagram(diagram, title="t")
    count = np.asarray(diagram.count)
    acc, conf = np.asarray(diagram.accuracy), np.asarray(diagram.confidence)
    keep = count > 0
    assert 0 < keep.sum() < 10  # some bins empty (confidence >= 1/4), so skipping is tested
    bars = ax.patches
    acc_bars, gap_bars = bars[: keep.sum()], bars[keep.sum() :]
    assert len(gap_bars) == keep.sum()
    np.testing.assert_allclose([b.get_height() for b in acc_bars], acc[keep], rtol=1e-6)
    np.testing.assert_allclose(
        [b.get_x() for b in acc_bars], np.asarray(diagram.lower)[keep], rtol=1e-6
    )
    # Gap bars span accuracy ↔ mean confidence, coloured by the sign of the gap.
    np.testing.assert_allclose([b.get_y() for b in gap_bars], np.minimum(acc, conf)[keep])
    np.testing.assert_allclose(
        [b.get_y() + b.get_height() for b in gap_bars], np.maximum(acc, conf)[keep], rtol=1e-5
    )
    over = conf[keep] > acc[keep]
    assert over.any() and (~over).any()  # both kinds of gap are drawn in this data
    expected = np.where(over, plotting.OVERCONFIDENT_COLOR, plotting.UNDERCONFIDENT_COLOR)
    assert _colors(gap_bars) == [c.lower() for c in expected]
    assert len(set(_colors(acc_bars))) == 1
    assert plotting.OVERCONFIDENT_COLOR != plotting.UNDERCONFIDENT_COLOR
    ece = float(calib_jax.metrics.ece(probs, labels, num_bins=10))
    accuracy = float(calib_jax.metrics.accuracy(probs, labels))
    assert ax.get_title() == (
        f"t\nECE {100 * ece:.2f}%, accuracy {100 * accuracy:.1f}%, N = {len(labels)}"
    )


def test_histogram_panel_counts_and_faint_bins():
    probs, labels = _data(n=400)
    diagram = calib_jax.metrics.reliability_diagram(probs, labels, num_bins=10)
    count = np.asarray(diagram.count)
    ax = plotting.plot_reliability_diagram(diagram, log_counts=True)
    count_ax = next(a for a in ax.figure.axes if a is not ax)
    assert count_ax.get_yscale() == "log"
    np.testing.assert_array_equal([b.get_height() for b in count_ax.patches], count)
    threshold = plotting.faint_threshold(count.sum())
    assert threshold == 10  # max(10, 1% of 400)
    keep = count > 0
    faint = count[keep] < threshold
    assert faint.any() and (~faint).any()
    alphas = [b.get_alpha() for b in ax.patches[: keep.sum()]]
    assert alphas == [plotting.FAINT_ALPHA if f else 1.0 for f in faint]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend[-1] == "faint: < 10 samples"
    # An explicit threshold: nothing faint, no faint legend entry.
    ax = plotting.plot_reliability_diagram(diagram, faint_below=1)
    assert {b.get_alpha() for b in ax.patches} == {1.0}
    assert len(ax.get_legend().get_texts()) == 4


def _inside(inner, outer, tol=1.0):
    return (
        inner.x0 >= outer.x0 - tol
        and inner.y0 >= outer.y0 - tol
        and inner.x1 <= outer.x1 + tol
        and inner.y1 <= outer.y1 + tol
    )


@pytest.mark.parametrize("panels", [1, 2, 3])
def test_nothing_clipped_and_legend_outside_the_data(panels, tmp_path):
    probs, labels = _data()
    diagram = calib_jax.metrics.reliability_diagram(probs, labels, num_bins=15)
    if panels == 1:
        fig = plotting.plot_reliability_diagram(diagram, title="one").figure
        legend = fig.axes[0].get_legend()
    else:
        fig = plotting.plot_reliability_diagrams(
            [diagram] * panels, titles=["a", "b", "c"][:panels]
        )
        legend = fig.legends[0]
    canvas = FigureCanvasAgg(fig)
    canvas.draw()  # runs the layout engine
    renderer = canvas.get_renderer()
    page = fig.bbox
    for ax in fig.axes:
        assert _inside(ax.get_tightbbox(renderer), page)
    box = legend.get_window_extent(renderer)
    assert _inside(box, page)
    for ax in fig.axes:  # the legend covers no data region
        assert not box.overlaps(ax.get_window_extent(renderer))


def test_state_is_accepted_and_report_names_the_right_constructor():
    probs, labels = _data()
    state = calib_jax.metrics.CalibrationState.empty(4, num_bins=10).update(probs, labels)
    from_state = plotting.plot_reliability_diagram(state)
    direct = plotting.plot_reliability_diagram(
        calib_jax.metrics.reliability_diagram(probs, labels, num_bins=10)
    )
    assert [b.get_height() for b in from_state.patches] == pytest.approx(
        [b.get_height() for b in direct.patches], rel=1e-6
    )
    report = calib_jax.metrics.calibration_report(probs, labels, num_bins=10)
    with pytest.raises(TypeError, match=r"CalibrationReport.*reliability_diagram\("):
        plotting.plot_reliability_diagram(report)
    with pytest.raises(TypeError, match="got an array"):
        plotting.plot_reliability_diagram(probs)


def test_reachable_from_the_package():
    assert calib_jax.plotting is plotting
    assert not hasattr(plotting, "reliability_diagram")  # no clash with the metric


def test_side_by_side_panels_and_png(tmp_path):
    probs, labels = _data()
    before = calib_jax.metrics.reliability_diagram(probs, labels, num_bins=15)
    sharp = probs**3 / (probs**3).sum(-1, keepdims=True)
    after = calib_jax.metrics.reliability_diagram(sharp, labels, num_bins=15)
    fig = plotting.plot_reliability_diagrams(
        [before, after], titles=["before", "after"], suptitle="s", show_counts=False
    )
    assert [ax.get_title().splitlines()[0] for ax in fig.axes] == ["before", "after"]
    path = tmp_path / "r.png"
    fig.savefig(path)
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="titles"):
        plotting.plot_reliability_diagrams([before, after], titles=["one"])
    with pytest.raises(ValueError, match="at least one"):
        plotting.plot_reliability_diagrams([])
    with pytest.raises(TypeError, match="unexpected"):
        plotting.plot_reliability_diagrams([before], show_gaps=False)


def test_bad_diagrams_raise():
    with pytest.raises(TypeError, match="lacks"):
        plotting.plot_reliability_diagram(types.SimpleNamespace(count=np.ones(3)))
    bad = types.SimpleNamespace(
        count=np.ones(3),
        accuracy=np.ones(3),
        confidence=np.ones(2),
        lower=np.ones(3),
        upper=np.ones(3),
    )
    with pytest.raises(ValueError, match="one length"):
        plotting.plot_reliability_diagram(bad)


def test_all_empty_diagram_draws_nothing():
    empty = types.SimpleNamespace(
        count=np.zeros(3),
        accuracy=np.zeros(3),
        confidence=np.zeros(3),
        lower=np.array([0, 1 / 3, 2 / 3]),
        upper=np.array([1 / 3, 2 / 3, 1]),
    )
    ax = plotting.plot_reliability_diagram(empty)
    assert len(ax.patches) == 0


def test_importing_calib_jax_does_not_import_matplotlib():
    code = "import sys, calib_jax, calib_jax.plotting; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
