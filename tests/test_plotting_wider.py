"""Plots of the wider-field metrics: what is drawn matches the statistics."""

import types

import matplotlib.colors
import numpy as np
import pytest

pytest.importorskip("matplotlib")

import calib_jax
from calib_jax import plotting


def _binary(n=600, seed=0, shift=0.1):
    rng = np.random.default_rng(seed)
    p = rng.random(n).astype(np.float32)
    y = (rng.random(n) < np.clip(p - shift, 0, 1)).astype(np.int32)
    return p, y


def test_smooth_diagram_draws_the_curve_the_gap_and_the_density(tmp_path):
    p, y = _binary()
    d = calib_jax.metrics.smooth_reliability_diagram(p, y, bandwidth=0.05, num_points=100)
    ax = plotting.plot_smooth_reliability_diagram(d, title="model")
    curve, diagonal = ax.lines[0], ax.lines[1]
    np.testing.assert_allclose(curve.get_xdata(), np.asarray(d.mesh))
    np.testing.assert_allclose(curve.get_ydata(), np.asarray(d.curve))
    np.testing.assert_allclose(diagonal.get_xydata(), [[0, 0], [1, 1]])
    over, under = ax.collections[:2]
    assert matplotlib.colors.to_hex(over.get_facecolor()[0]) == plotting.OVERCONFIDENT_COLOR.lower()
    assert matplotlib.colors.to_hex(under.get_facecolor()[0]) == (
        plotting.UNDERCONFIDENT_COLOR.lower()
    )
    # Shifted labels: the model is over-confident almost everywhere, so the over-confident
    # fill covers more area than the under-confident one.
    area = lambda c: sum(abs(_polygon_area(path.vertices)) for path in c.get_paths())
    assert area(over) > 5 * area(under)
    assert ax.get_title() == (
        f"model\nsmooth ECE {100 * float(d.smooth_ece):.2f}%, σ = {float(d.bandwidth):.4f}"
    )
    # The curve leaves [0, 1] near the ends; the axis shows it.
    lo, hi = ax.get_ylim()
    assert lo <= float(np.min(d.curve)) and hi >= float(np.max(d.curve))
    density_ax = next(a for a in ax.figure.axes if a is not ax)
    (fill,) = density_ax.collections
    top = fill.get_paths()[0].vertices[:, 1].max()
    np.testing.assert_allclose(top, float(np.max(d.density)), rtol=1e-6)
    path = tmp_path / "smooth.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000


def _polygon_area(v):
    x, y = v[:, 0], v[:, 1]
    return 0.5 * np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y)


def test_smooth_diagram_without_density_panel_and_bad_input():
    t = np.linspace(0, 1, 5)
    d = types.SimpleNamespace(mesh=t, curve=t, density=np.ones(5), bandwidth=0.1, smooth_ece=0.0)
    ax = plotting.plot_smooth_reliability_diagram(d, show_density=False, legend=False)
    assert len(ax.figure.axes) == 1 and ax.get_legend() is None
    assert ax.get_xlabel() == "confidence"
    with pytest.raises(TypeError, match="curve"):
        plotting.plot_smooth_reliability_diagram(types.SimpleNamespace(mesh=t))
    bad = types.SimpleNamespace(**{**vars(d), "curve": t[:3]})
    with pytest.raises(ValueError, match="one length"):
        plotting.plot_smooth_reliability_diagram(bad)


def _multiclass(n=500, k=4, seed=0):
    rng = np.random.default_rng(seed)
    z = 2.0 * rng.normal(size=(n, k)).astype(np.float32)
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    # Right with probability the confidence: confident predictions are more often right.
    right = rng.random(n) < p.max(-1)
    y = np.where(right, z.argmax(-1), (z.argmax(-1) + 1) % k).astype(np.int32)
    return p.astype(np.float32), y


def test_risk_coverage_curve_is_the_selective_risk_and_legend_states_aurc(tmp_path):
    p, y = _multiclass()
    ax = plotting.plot_risk_coverage(p, y, num_points=5, title="selective")
    curve, full = ax.lines[0], ax.lines[1]
    coverage = np.arange(1, 6) / 5
    np.testing.assert_allclose(curve.get_xdata(), coverage, rtol=1e-6)
    expected = [float(calib_jax.metrics.selective_risk(p, y, coverage=k)) for k in coverage]
    np.testing.assert_allclose(curve.get_ydata(), expected, atol=1e-6)
    # The dotted line is the error rate at full coverage.
    error_rate = 1 - float(calib_jax.metrics.accuracy(p, y))
    np.testing.assert_allclose(full.get_ydata(), [error_rate, error_rate], atol=1e-6)
    aurc = float(calib_jax.metrics.aurc(p, y))
    assert ax.get_legend().get_texts()[0].get_text() == f"model (AURC {aurc:.3f})"
    assert ax.get_title() == "selective"
    assert matplotlib.colors.to_hex(curve.get_color()) == plotting.RISK_COLOR.lower()
    # Confidence ranks errors here: the most confident fifth has a lower risk than all data.
    assert curve.get_ydata()[0] < error_rate
    path = tmp_path / "risk.png"
    ax.figure.savefig(path)
    assert path.stat().st_size > 1000


def test_risk_coverage_overlays_models_on_one_axes_and_checks_input():
    p, y = _multiclass()
    keep = np.arange(500) % 2 == 0
    ax = plotting.plot_risk_coverage(p, y, num_points=5, label="all")
    plotting.plot_risk_coverage(p, y, where=keep, num_points=5, ax=ax, label="half")
    texts = [t.get_text() for t in ax.get_legend().get_texts()]
    assert texts[0].startswith("all (AURC") and texts[1].startswith("half (AURC")
    np.testing.assert_allclose(
        ax.lines[2].get_ydata()[-1],
        float(calib_jax.metrics.selective_risk(p[keep], y[keep], coverage=1.0)),
        atol=1e-6,
    )
    assert ax.lines[0].get_color() != ax.lines[2].get_color()
    with pytest.raises(ValueError, match="num_points"):
        plotting.plot_risk_coverage(p, y, num_points=1)
    with pytest.raises(ValueError, match="labels must lie"):
        plotting.plot_risk_coverage(p, np.full(500, 7, np.int32))
