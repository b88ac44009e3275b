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
