"""Reliability diagrams with matplotlib.

matplotlib is imported inside the functions, so ``import calib_jax`` never needs it (install
the ``plot`` extra to use this module). The functions draw per-bin statistics as returned by
:func:`calib_jax.metrics.reliability_diagram`; any object with the array attributes
``count, accuracy, confidence, lower, upper`` (one entry per bin) works. Figures are created
as :class:`matplotlib.figure.Figure` objects without pyplot, so no GUI backend is involved;
save them with ``fig.savefig(path)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["reliability_diagram", "reliability_diagrams"]


class _BinStats(Protocol):
    count: Any
    accuracy: Any
    confidence: Any
    lower: Any
    upper: Any


def _as_numpy(diagram: _BinStats) -> dict[str, np.ndarray]:
    fields = ("count", "accuracy", "confidence", "lower", "upper")
    missing = [f for f in fields if not hasattr(diagram, f)]
    if missing:
        raise TypeError(f"diagram lacks the per-bin fields {missing}")
    arrays = {f: np.asarray(getattr(diagram, f), dtype=np.float64) for f in fields}
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


def reliability_diagram(
    diagram: _BinStats,
    *,
    ax: Axes | None = None,
    title: str | None = None,
    show_gap: bool = True,
    show_counts: bool = True,
) -> Axes:
    """Draws one reliability diagram: per-bin accuracy against confidence.

    Each non-empty bin ``m`` is a bar over its confidence interval ``(lower_m, upper_m]`` of
    height ``acc_m``; with ``show_gap`` a hatched red bar spans the gap from ``acc_m`` to the
    mean confidence ``conf_m``. The diagonal is perfect calibration. The legend states the ECE
    recomputed from the bins, ``Σ_m (|B_m|/N)·|acc_m - conf_m|`` (the same value as
    :func:`calib_jax.metrics.ece` for the same binning). With ``show_counts`` the share of
    samples per bin is drawn as a grey step line on a right-hand axis. Empty bins
    (``count == 0``) are not drawn.

    Args:
      diagram: per-bin statistics with 1-D fields ``count, accuracy, confidence, lower,
        upper`` of length ``M`` (e.g. from :func:`calib_jax.metrics.reliability_diagram`).
      ax: matplotlib Axes to draw into; a new figure is created when ``None``.
      title: Axes title.
      show_gap: draw the accuracy-confidence gap bars.
      show_counts: draw the per-bin share of samples on a secondary axis.

    Returns:
      The Axes drawn into (its figure is ``ax.figure``).

    Examples:
      >>> import types
      >>> import numpy as np
      >>> from calib_jax.plotting import reliability_diagram
      >>> bins = types.SimpleNamespace(
      ...     count=np.array([0, 10, 30]), accuracy=np.array([0.0, 0.4, 0.9]),
      ...     confidence=np.array([0.0, 0.5, 0.8]), lower=np.array([0.0, 1 / 3, 2 / 3]),
      ...     upper=np.array([1 / 3, 2 / 3, 1.0]))
      >>> ax = reliability_diagram(bins, title="model")
      >>> ax.get_title(), len(ax.patches)
      ('model', 4)
      >>> ax.get_legend().get_texts()[1].get_text()
      'Gap (ECE 10.00%)'

    References:
      DeGroot & Fienberg 1983, "The Comparison and Evaluation of Forecasters"; Niculescu-Mizil
      & Caruana 2005; Guo et al. 2017, "On Calibration of Modern Neural Networks", Fig. 1.
    """
    d = _as_numpy(diagram)
    if ax is None:
        from matplotlib.figure import Figure

        ax = Figure(figsize=(4.0, 4.0)).subplots()
    keep = d["count"] > 0
    lower, upper = d["lower"][keep], d["upper"][keep]
    acc, conf = d["accuracy"][keep], d["confidence"][keep]
    width = upper - lower
    ece, accuracy = _ece_and_accuracy(d)
    ax.bar(
        lower,
        acc,
        width=width,
        align="edge",
        color="tab:blue",
        edgecolor="black",
        linewidth=0.5,
        label=f"Accuracy ({100 * accuracy:.1f}% overall)",
    )
    if show_gap:
        ax.bar(
            lower,
            conf - acc,
            bottom=acc,
            width=width,
            align="edge",
            color="tab:red",
            alpha=0.3,
            edgecolor="tab:red",
            hatch="//",
            linewidth=0.5,
            label=f"Gap (ECE {100 * ece:.2f}%)",
        )
    ax.plot([0, 1], [0, 1], linestyle="--", color="gray", linewidth=1)
    if show_counts and d["count"].sum() > 0:
        share = ax.twinx()
        edges = np.append(d["lower"], d["upper"][-1])
        share.stairs(d["count"] / d["count"].sum(), edges, color="gray", alpha=0.6)
        share.set_ylim(0, 1)
        share.set_ylabel("share of samples", color="gray")
        share.tick_params(axis="y", colors="gray")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("confidence")
    ax.set_ylabel("accuracy")
    ax.legend(loc="upper left", fontsize="small")
    if title is not None:
        ax.set_title(title)
    return ax


def reliability_diagrams(
    diagrams: Sequence[_BinStats],
    *,
    titles: Sequence[str] | None = None,
    suptitle: str | None = None,
    panel_size: float = 4.0,
    **kwargs: Any,
) -> Figure:
    """Draws several reliability diagrams side by side (e.g. before / after calibration).

    Each panel is drawn by :func:`reliability_diagram` (same conventions; ``**kwargs`` are
    passed on) on a shared confidence axis.

    Args:
      diagrams: ``D`` per-bin statistics, one per panel, each with fields of length ``M_d``.
      titles: ``D`` panel titles, or ``None``.
      suptitle: figure title.
      panel_size: width and height of one panel in inches.
      **kwargs: forwarded to :func:`reliability_diagram` (``show_gap``, ``show_counts``).

    Returns:
      A :class:`matplotlib.figure.Figure` with ``D`` panels in one row.

    Examples:
      >>> import types
      >>> import numpy as np
      >>> from calib_jax.plotting import reliability_diagrams
      >>> def bins(acc):
      ...     return types.SimpleNamespace(
      ...         count=np.array([5, 5]), accuracy=np.array(acc), confidence=np.array([0.3, 0.8]),
      ...         lower=np.array([0.0, 0.5]), upper=np.array([0.5, 1.0]))
      >>> fig = reliability_diagrams([bins([0.2, 0.6]), bins([0.3, 0.8])],
      ...                            titles=["before", "after"])
      >>> [ax.get_title() for ax in fig.axes if ax.get_title()]
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
    fig = Figure(figsize=(panel_size * len(diagrams), panel_size), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(diagrams)))
    for i, (ax, diagram) in enumerate(zip(axes, diagrams, strict=True)):
        reliability_diagram(diagram, ax=ax, title=None if titles is None else titles[i], **kwargs)
    if suptitle is not None:
        fig.suptitle(suptitle)
    return fig
