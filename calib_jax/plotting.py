"""Reliability diagrams with matplotlib.

matplotlib is imported inside the functions, so ``import calib_jax`` never needs it (install
the ``plot`` extra to draw). The functions draw per-bin statistics: a
:class:`calib_jax.metrics.ReliabilityDiagram` (from :func:`calib_jax.metrics.reliability_diagram`
or :meth:`calib_jax.metrics.CalibrationState.reliability_diagram`), a
:class:`~calib_jax.metrics.CalibrationState` itself, or any object with the array attributes
``count, accuracy, confidence, lower, upper`` (one entry per bin). Figures are created as
:class:`matplotlib.figure.Figure` objects with the constrained layout engine and without
pyplot, so no GUI backend is involved and nothing is clipped; save them with
``fig.savefig(path)``.

How to read a diagram: each non-empty bin is a bar of height ``acc_m`` over its confidence
interval; a gap bar joins it to the bin's mean confidence ``conf_m``, vermilion where the model
is over-confident (``conf_m > acc_m``, gap below the diagonal) and green where it is
under-confident (``acc_m > conf_m``). Bins holding few samples (their accuracy is noise) are
drawn faint. The lower panel is the histogram of samples per bin.

:func:`plot_smooth_reliability_diagram` draws the kernel-smoothed curve of
:func:`calib_jax.metrics.smooth_reliability_diagram` in the same colours, with the density of
the confidences below it; :func:`plot_risk_coverage` draws the risk-coverage curve of
selective prediction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = [
    "plot_reliability_diagram",
    "plot_reliability_diagrams",
    "plot_risk_coverage",
    "plot_smooth_reliability_diagram",
]

# Okabe-Ito colours: distinguishable with the common colour-vision deficiencies, and opaque so
# that overlapping bars never mix into a third colour.
ACCURACY_COLOR = "#56B4E9"
OVERCONFIDENT_COLOR = "#D55E00"
UNDERCONFIDENT_COLOR = "#009E73"
COUNT_COLOR = "#7F7F7F"
FAINT_ALPHA = 0.3


class _BinStats(Protocol):
    count: Any
    accuracy: Any
    confidence: Any
    lower: Any
    upper: Any


_FIELDS = ("count", "accuracy", "confidence", "lower", "upper")


def _bins_of(diagram: Any) -> Any:
    """Per-bin statistics from what the user passed (a diagram or a streaming state)."""
    from calib_jax import metrics

    if isinstance(diagram, metrics.CalibrationState):
        return diagram.reliability_diagram()
    if isinstance(diagram, metrics.CalibrationReport):
        raise TypeError(
            "a CalibrationReport holds scalar metrics, not per-bin statistics; pass "
            "calib_jax.metrics.reliability_diagram(predictions, labels) or a CalibrationState"
        )
    if (
        isinstance(diagram, np.ndarray)
        or hasattr(diagram, "__jax_array__")
        or (hasattr(diagram, "shape") and hasattr(diagram, "dtype"))
    ):
        raise TypeError(
            "got an array; pass per-bin statistics from "
            "calib_jax.metrics.reliability_diagram(predictions, labels) or a CalibrationState"
        )
    missing = [f for f in _FIELDS if not hasattr(diagram, f)]
    if missing:
        raise TypeError(
            f"diagram lacks the per-bin fields {missing}; pass "
            "calib_jax.metrics.reliability_diagram(predictions, labels) or a CalibrationState"
        )
    return diagram


def _as_numpy(diagram: _BinStats) -> dict[str, np.ndarray]:
    arrays = {f: np.asarray(getattr(diagram, f), dtype=np.float64) for f in _FIELDS}
    shapes = {a.shape for a in arrays.values()}
    if len(shapes) != 1 or len(next(iter(shapes))) != 1:
        raise ValueError(f"per-bin fields must be 1-D arrays of one length, got {shapes}")
    return arrays


def _ece_and_accuracy(d: dict[str, np.ndarray]) -> tuple[float, float]:
    total = d["count"].sum()
    if total == 0:
        return 0.0, float("nan")
    weights = d["count"] / total
    ece = float(np.sum(weights * np.abs(d["accuracy"] - d["confidence"])))
    return ece, float(np.sum(weights * d["accuracy"]))


def faint_threshold(total: float) -> float:
    """Bins with fewer samples than this are drawn faint: ``max(10, 1% of the samples)``.

    With fewer than 10 samples a bin's accuracy has a standard error above ~0.15; the 1% share
    keeps bins that hardly move the ECE from looking as important as the bins that decide it.
    """
    return max(10.0, math.ceil(0.01 * total))


def _legend_handles(any_faint: bool, faint_label: str) -> list[Any]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    handles = [
        Patch(facecolor=ACCURACY_COLOR, edgecolor="black", linewidth=0.5, label="accuracy"),
        Patch(
            facecolor=OVERCONFIDENT_COLOR,
            edgecolor="black",
            linewidth=0.5,
            label="gap, over-confident",
        ),
        Patch(
            facecolor=UNDERCONFIDENT_COLOR,
            edgecolor="black",
            linewidth=0.5,
            label="gap, under-confident",
        ),
        Line2D([], [], linestyle="--", color="black", linewidth=1, label="perfect calibration"),
    ]
    if any_faint:
        handles.append(
            Patch(
                facecolor=ACCURACY_COLOR,
                alpha=FAINT_ALPHA,
                edgecolor="black",
                linestyle=":",
                label=faint_label,
            )
        )
    return handles


def _draw(
    d: dict[str, np.ndarray],
    ax: Axes,
    count_ax: Axes | None,
    *,
    title: str | None,
    show_gap: bool,
    log_counts: bool,
    faint_below: float | None,
) -> tuple[bool, float]:
    """Draws one diagram into ``ax`` (and its histogram into ``count_ax``); returns whether any
    bin is faint and the threshold used."""
    total = d["count"].sum()
    threshold = faint_threshold(total) if faint_below is None else float(faint_below)
    keep = d["count"] > 0
    faint = keep & (d["count"] < threshold)
    lower, width = d["lower"][keep], (d["upper"] - d["lower"])[keep]
    acc, conf, dim = d["accuracy"][keep], d["confidence"][keep], faint[keep]
    alpha = np.where(dim, FAINT_ALPHA, 1.0)
    style = np.where(dim, ":", "-")
    bars = ax.bar(
        lower, acc, width=width, align="edge", color=ACCURACY_COLOR, edgecolor="black", lw=0.5
    )
    for bar, a, s in zip(bars, alpha, style, strict=True):
        bar.set_alpha(a)
        bar.set_linestyle(s)
    if show_gap:
        colors = np.where(conf > acc, OVERCONFIDENT_COLOR, UNDERCONFIDENT_COLOR)
        gaps = ax.bar(
            lower,
            np.abs(conf - acc),
            bottom=np.minimum(acc, conf),
            width=width,
            align="edge",
            color=colors,
            edgecolor="black",
            lw=0.5,
        )
        for bar, a, s in zip(gaps, alpha, style, strict=True):
            bar.set_alpha(a)
            bar.set_linestyle(s)
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_ylabel("accuracy")
    ece, accuracy = _ece_and_accuracy(d)
    stats = f"ECE {100 * ece:.2f}%, accuracy {100 * accuracy:.1f}%, N = {total:g}"
    ax.set_title(stats if title is None else f"{title}\n{stats}", fontsize="medium")
    if count_ax is None:
        ax.set_xlabel("confidence")
        return bool(faint.any()), threshold
    edges_lower, edges_width = d["lower"], d["upper"] - d["lower"]
    hist = count_ax.bar(
        edges_lower,
        d["count"],
        width=edges_width,
        align="edge",
        color=COUNT_COLOR,
        edgecolor="black",
        lw=0.5,
    )
    for bar, f in zip(hist, faint, strict=True):
        bar.set_alpha(FAINT_ALPHA if f else 1.0)
    if log_counts:
        count_ax.set_yscale("log")
        count_ax.set_ylim(bottom=0.8)
    count_ax.set_xlim(0, 1)
    count_ax.set_ylabel("samples" + (" (log)" if log_counts else ""))
    count_ax.set_xlabel("confidence")
    ax.tick_params(labelbottom=False)
    return bool(faint.any()), threshold


def plot_reliability_diagram(
    diagram: Any,
    *,
    ax: Axes | None = None,
    count_ax: Axes | None = None,
    title: str | None = None,
    show_gap: bool = True,
    show_counts: bool = True,
    log_counts: bool = False,
    faint_below: float | None = None,
    legend: bool = True,
) -> Axes:
    """Draws one reliability diagram: per-bin accuracy against confidence, with a histogram of
    the samples per bin below it.

    Each non-empty bin ``m`` is a bar over its confidence interval ``(lower_m, upper_m]`` of
    height ``acc_m``; with ``show_gap`` a second bar spans the gap between ``acc_m`` and the mean
    confidence ``conf_m``, vermilion where ``conf_m > acc_m`` (over-confident) and green where
    ``acc_m > conf_m`` (under-confident). The dashed diagonal is perfect calibration. Bins with
    fewer than ``faint_below`` samples are drawn faint with dotted edges. The title states the
    ECE recomputed from the bins, ``Σ_m (|B_m|/N)·|acc_m - conf_m|`` (the value of
    :func:`calib_jax.metrics.ece` for the same binning), the accuracy and ``N``. Empty bins
    (``count == 0``) draw no bar. The legend sits outside the data, to the right.

    Args:
      diagram: a :class:`calib_jax.metrics.ReliabilityDiagram`, a
        :class:`calib_jax.metrics.CalibrationState`, or an object with 1-D fields ``count,
        accuracy, confidence, lower, upper`` of length ``M``.
      ax: Axes for the diagram; with ``None`` a new figure is made (with the histogram below
        when ``show_counts``).
      count_ax: Axes for the histogram when ``ax`` is given (no histogram if ``None``).
      title: first line of the title.
      show_gap: draw the accuracy-confidence gap bars.
      show_counts: with ``ax=None``, add the histogram panel.
      log_counts: logarithmic histogram axis (shows bins of 1-10 samples next to a top bin
        of thousands).
      faint_below: sample count under which a bin is drawn faint; ``None`` uses
        ``max(10, 1% of N)``.
      legend: draw the legend (outside the data, right of ``ax``).

    Returns:
      The diagram's Axes (its figure is ``ax.figure``).

    Raises:
      TypeError: ``diagram`` is a :class:`~calib_jax.metrics.CalibrationReport` (scalars
        only), an array, or lacks a per-bin field.
      ValueError: the per-bin fields are not 1-D arrays of one length.

    Examples:
      >>> import types
      >>> import numpy as np
      >>> from calib_jax.plotting import plot_reliability_diagram
      >>> bins = types.SimpleNamespace(
      ...     count=np.array([0, 10, 30]), accuracy=np.array([0.0, 0.4, 0.9]),
      ...     confidence=np.array([0.0, 0.5, 0.8]), lower=np.array([0.0, 1 / 3, 2 / 3]),
      ...     upper=np.array([1 / 3, 2 / 3, 1.0]))
      >>> ax = plot_reliability_diagram(bins, title="model")
      >>> print(ax.get_title())
      model
      ECE 10.00%, accuracy 77.5%, N = 40
      >>> len(ax.patches)  # two accuracy bars, two gap bars
      4

    References:
      DeGroot & Fienberg 1983, "The Comparison and Evaluation of Forecasters"; Niculescu-Mizil
      & Caruana 2005; Guo et al. 2017, "On Calibration of Modern Neural Networks", Fig. 1.
    """
    d = _as_numpy(_bins_of(diagram))
    if ax is None:
        from matplotlib.figure import Figure

        if show_counts:
            fig = Figure(figsize=(6.4, 5.6), layout="constrained")
            ax, count_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        else:
            fig = Figure(figsize=(6.4, 4.4), layout="constrained")
            ax = fig.subplots()
    any_faint, threshold = _draw(
        d,
        ax,
        count_ax,
        title=title,
        show_gap=show_gap,
        log_counts=log_counts,
        faint_below=faint_below,
    )
    if legend:
        ax.legend(
            handles=_legend_handles(any_faint, f"faint: < {threshold:g} samples"),
            loc="upper left",
            bbox_to_anchor=(1.03, 1.0),
            borderaxespad=0.0,
            fontsize="small",
        )
    return ax


def plot_reliability_diagrams(
    diagrams: Sequence[Any],
    *,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    panel_size: float = 3.8,
    show_counts: bool = True,
    **kwargs: Any,
) -> Figure:
    """Draws several reliability diagrams side by side (e.g. before / after calibration).

    Each column is drawn by :func:`plot_reliability_diagram` (same conventions; ``**kwargs``
    such as ``show_gap``, ``log_counts`` and ``faint_below`` are passed on), with its
    histogram below it when ``show_counts``; one legend for the figure sits below the panels.

    Args:
      diagrams: ``D`` diagrams (anything :func:`plot_reliability_diagram` accepts).
      titles: ``D`` panel titles, or ``None``.
      suptitle: figure title.
      panel_size: width of one column in inches.
      show_counts: draw the histogram row.
      **kwargs: forwarded to :func:`plot_reliability_diagram`.

    Returns:
      A :class:`matplotlib.figure.Figure` with ``D`` columns.

    Examples:
      >>> import types
      >>> import numpy as np
      >>> from calib_jax.plotting import plot_reliability_diagrams
      >>> def bins(acc):
      ...     return types.SimpleNamespace(
      ...         count=np.array([5, 5]), accuracy=np.array(acc), confidence=np.array([0.3, 0.8]),
      ...         lower=np.array([0.0, 0.5]), upper=np.array([0.5, 1.0]))
      >>> fig = plot_reliability_diagrams([bins([0.2, 0.6]), bins([0.3, 0.8])],
      ...                                 titles=["before", "after"])
      >>> [ax.get_title().splitlines()[0] for ax in fig.axes if ax.get_title()]
      ['before', 'after']

    References:
      Guo et al. 2017, "On Calibration of Modern Neural Networks", Fig. 1 (uncalibrated vs.
      temperature-scaled); Mukhoti et al. 2020, "Calibrating Deep Neural Networks using Focal
      Loss".
    """
    from matplotlib.figure import Figure

    if len(diagrams) == 0:
        raise ValueError("need at least one diagram")
    if titles is not None and len(titles) != len(diagrams):
        raise ValueError(f"got {len(titles)} titles for {len(diagrams)} diagrams")
    unknown = set(kwargs) - {"show_gap", "log_counts", "faint_below"}
    if unknown:
        raise TypeError(f"unexpected keyword arguments {sorted(unknown)}")
    n = len(diagrams)
    height = panel_size * (1.45 if show_counts else 1.1) + 0.6
    fig = Figure(figsize=(panel_size * n, height), layout="constrained")
    if show_counts:
        grid = np.asarray(fig.subplots(2, n, sharex="col", height_ratios=[3, 1], squeeze=False))
        pairs = list(zip(grid[0], grid[1], strict=True))
    else:
        pairs = [(ax, None) for ax in np.atleast_1d(fig.subplots(1, n))]
    any_faint, thresholds = False, set()
    for i, ((ax, count_ax), diagram) in enumerate(zip(pairs, diagrams, strict=True)):
        d = _as_numpy(_bins_of(diagram))
        faint, threshold = _draw(
            d,
            ax,
            count_ax,
            title=None if titles is None else titles[i],
            show_gap=kwargs.get("show_gap", True),
            log_counts=kwargs.get("log_counts", False),
            faint_below=kwargs.get("faint_below"),
        )
        any_faint |= faint
        thresholds.add(threshold)
    faint_label = (
        f"faint: < {thresholds.pop():g} samples"
        if len(thresholds) == 1
        else "faint: < max(10, 1% of N) samples"
    )
    handles = _legend_handles(any_faint, faint_label)
    # One legend row needs about 1.9 inches per entry; narrower figures wrap it.
    ncols = max(1, min(len(handles), int(panel_size * n / 1.9)))
    fig.legend(handles=handles, loc="outside lower center", ncols=ncols, fontsize="small")
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig


_SMOOTH_FIELDS = ("mesh", "curve", "density", "bandwidth", "smooth_ece")


def plot_smooth_reliability_diagram(
    diagram: Any,
    *,
    ax: Axes | None = None,
    density_ax: Axes | None = None,
    title: str | None = None,
    show_density: bool = True,
    legend: bool = True,
) -> Axes:
    """Draws a smoothed reliability diagram: the kernel-smoothed curve against the confidence,
    with the density of the confidences below it.

    The curve ``t - r̂_σ(t)`` (see :func:`calib_jax.metrics.smooth_reliability_diagram`) is
    drawn as a line; the area between it and the dashed diagonal is filled vermilion where the
    model is over-confident (curve below the diagonal) and green where it is under-confident,
    so ``∫ |filled height| · density`` is the smooth ECE. The title states the smooth ECE and
    the bandwidth ``σ``. The curve may leave ``[0, 1]`` by about ``σ`` near the ends; the
    vertical axis is widened to show it.

    Args:
      diagram: a :class:`calib_jax.metrics.SmoothReliabilityDiagram`, or an object with 1-D
        fields ``mesh, curve, density`` of one length and scalars ``bandwidth, smooth_ece``.
      ax: Axes for the curve; with ``None`` a new figure is made (with the density below when
        ``show_density``).
      density_ax: Axes for the density when ``ax`` is given (no density panel if ``None``).
      title: first line of the title.
      show_density: with ``ax=None``, add the density panel.
      legend: draw the legend (outside the data, right of ``ax``).

    Returns:
      The curve's Axes (its figure is ``ax.figure``).

    Raises:
      TypeError: ``diagram`` lacks one of the fields.
      ValueError: the fields ``mesh, curve, density`` are not 1-D arrays of one length.

    Examples:
      >>> import types
      >>> import numpy as np
      >>> from calib_jax.plotting import plot_smooth_reliability_diagram
      >>> t = np.linspace(0, 1, 5)
      >>> d = types.SimpleNamespace(mesh=t, curve=t - 0.1, density=np.ones(5),
      ...                           bandwidth=0.05, smooth_ece=0.1)
      >>> ax = plot_smooth_reliability_diagram(d, title="model")
      >>> print(ax.get_title())
      model
      smooth ECE 10.00%, σ = 0.0500

    References:
      Błasiok & Nakkiran, "Smooth ECE: Principled Reliability Diagrams via Kernel Smoothing",
      ICLR 2024.
    """
    missing = [f for f in _SMOOTH_FIELDS if not hasattr(diagram, f)]
    if missing:
        raise TypeError(
            f"diagram lacks the fields {missing}; pass "
            "calib_jax.metrics.smooth_reliability_diagram(predictions, labels)"
        )
    t, curve, density = (
        np.asarray(getattr(diagram, f), dtype=np.float64) for f in ("mesh", "curve", "density")
    )
    if t.ndim != 1 or t.shape != curve.shape or t.shape != density.shape:
        raise ValueError(
            f"mesh, curve and density must be 1-D arrays of one length, got shapes "
            f"{t.shape}, {curve.shape}, {density.shape}"
        )
    if ax is None:
        from matplotlib.figure import Figure

        if show_density:
            fig = Figure(figsize=(6.4, 5.6), layout="constrained")
            ax, density_ax = fig.subplots(2, 1, sharex=True, height_ratios=[3, 1])
        else:
            fig = Figure(figsize=(6.4, 4.4), layout="constrained")
            ax = fig.subplots()
    over = curve < t
    ax.fill_between(t, curve, t, where=over, interpolate=True, color=OVERCONFIDENT_COLOR, lw=0)
    ax.fill_between(t, curve, t, where=~over, interpolate=True, color=UNDERCONFIDENT_COLOR, lw=0)
    ax.plot(t, curve, color="black", linewidth=1.5)
    ax.plot([0, 1], [0, 1], linestyle="--", color="black", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(min(0.0, float(np.nanmin(curve))), max(1.0, float(np.nanmax(curve))))
    ax.set_ylabel("smoothed accuracy")
    ece, sigma = float(diagram.smooth_ece), float(diagram.bandwidth)
    stats = f"smooth ECE {100 * ece:.2f}%, σ = {sigma:.4f}"
    ax.set_title(stats if title is None else f"{title}\n{stats}", fontsize="medium")
    if density_ax is None:
        ax.set_xlabel("confidence")
    else:
        density_ax.fill_between(t, density, color=COUNT_COLOR, lw=0)
        density_ax.set_xlim(0, 1)
        density_ax.set_ylim(bottom=0)
        density_ax.set_ylabel("density")
        density_ax.set_xlabel("confidence")
        ax.tick_params(labelbottom=False)
    if legend:
        from matplotlib.lines import Line2D
        from matplotlib.patches import Patch

        handles = [
            Line2D([], [], color="black", linewidth=1.5, label="smoothed curve"),
            Patch(facecolor=OVERCONFIDENT_COLOR, label="gap, over-confident"),
            Patch(facecolor=UNDERCONFIDENT_COLOR, label="gap, under-confident"),
            Line2D([], [], linestyle="--", color="black", linewidth=1, label="perfect calibration"),
        ]
        ax.legend(
            handles=handles,
            loc="upper left",
            bbox_to_anchor=(1.03, 1.0),
            borderaxespad=0.0,
            fontsize="small",
        )
    return ax


RISK_COLOR = "#0072B2"


def plot_risk_coverage(
    predictions: Any,
    labels: Any,
    *,
    from_logits: bool = False,
    where: Any = None,
    weights: Any = None,
    num_points: int = 200,
    ax: Axes | None = None,
    label: str | None = None,
    title: str | None = None,
    color: str | None = None,
) -> Axes:
    """Draws the risk-coverage curve of selective prediction: the error rate among the most
    confident samples against the fraction of samples kept.

    The curve is :func:`calib_jax.metrics.selective_risk` at ``num_points`` evenly spaced
    coverages ``κ_j = j / num_points``, ``j = 1 … num_points`` (same conventions: samples
    sorted by descending confidence, tie groups share their errors evenly, weights act as
    replicated samples). A dotted horizontal line marks the risk at full coverage (the error
    rate); the legend entry states :func:`calib_jax.metrics.aurc`, the mean of the risk over
    all ``N`` coverages. A lower curve is better: confident predictions are more often right.
    Pass ``ax`` (and ``label``) to draw several models on one axes.

    Args:
      predictions: ``[N, K]`` probabilities (logits with ``from_logits=True``) or ``[N]``
        binary positive-class probabilities, as for :func:`calib_jax.metrics.aurc`.
      labels: ``[N]`` integer labels.
      from_logits: ``predictions`` holds logits.
      where: optional bool ``[N]`` mask.
      weights: optional non-negative ``[N]`` sample weights.
      num_points: number of coverages drawn (int ``>= 2``).
      ax: Axes to draw into; ``None`` makes a new figure.
      label: the curve's name in the legend (``"model"`` if ``None``).
      title: the axes title.
      color: the curve's colour (``None``: blue for a new figure, matplotlib's cycle on a
        given ``ax``).

    Returns:
      The Axes (its figure is ``ax.figure``).

    Examples:
      >>> import numpy as np
      >>> from calib_jax.plotting import plot_risk_coverage
      >>> probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.4, 0.6]], np.float32)
      >>> ax = plot_risk_coverage(probs, np.array([0, 1, 1, 0]), num_points=4)
      >>> [round(float(r), 3) for r in ax.lines[0].get_ydata()]
      [0.0, 0.5, 0.333, 0.5]
      >>> ax.get_legend().get_texts()[0].get_text()
      'model (AURC 0.333)'

    References:
      Geifman & El-Yaniv 2017, "Selective Classification for Deep Neural Networks"; Traub et
      al. 2024, "Overcoming Common Flaws in the Evaluation of Selective Classification
      Systems".
    """
    import jax

    from calib_jax import metrics

    if isinstance(num_points, bool) or not isinstance(num_points, int | np.integer):
        raise TypeError(f"num_points must be an int, got {type(num_points).__name__}")
    if num_points < 2:
        raise ValueError(f"num_points must be >= 2, got {num_points}")
    kw = {"from_logits": from_logits, "where": where, "weights": weights}
    coverage = np.arange(1, num_points + 1, dtype=np.float32) / num_points
    risk = jax.vmap(lambda k: metrics.selective_risk(predictions, labels, coverage=k, **kw))(
        coverage
    )
    risk = np.asarray(risk, dtype=np.float64)
    aurc = float(metrics.aurc(predictions, labels, **kw))
    new = ax is None
    if new:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(5.6, 4.4), layout="constrained").subplots()
    if color is None and new:
        color = RISK_COLOR
    name = "model" if label is None else label
    (line,) = ax.plot(coverage, risk, color=color, linewidth=1.5, label=f"{name} (AURC {aurc:.3f})")
    ax.axhline(risk[-1], color=line.get_color(), linestyle=":", linewidth=1)
    ax.set_xlim(0, 1)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("coverage (fraction of samples kept)")
    ax.set_ylabel("selective risk (error rate)")
    if title is not None:
        ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small")
    return ax
