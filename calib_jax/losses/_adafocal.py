"""AdaFocal (Ghosh, Schaaf & Gormley 2022): focal loss with one ``γ`` per confidence bin, adapted
after every epoch from the calibration of a validation split."""

from __future__ import annotations

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.custom_derivatives import SymbolicZero

from calib_jax import _binning, _validation
from calib_jax.losses import _common
from calib_jax.losses._focal import _focal_term

Array = jax.Array
ArrayLike = jax.typing.ArrayLike


class AdaFocalState(NamedTuple):
    """The state of AdaFocal: one ``γ`` per bin of the label probability, and the bins.

    A pytree of two float32 arrays (jit/vmap-able, serialisable like any checkpointed pytree,
    e.g. with ``flax.serialization.to_bytes``). Create it with :func:`adafocal_init`, read it
    in :func:`adafocal_loss`, update it once per epoch with :func:`adafocal_update`.

    Attributes:
      gamma: ``[M]`` float32, ``γ`` of each bin. ``γ >= 0`` is the focal loss
        ``-(1 - p)^γ log p``; ``γ < 0`` the inverse-focal loss ``-(1 + p)^{|γ|} log p``.
      edges: ``[M - 1]`` float32 non-decreasing internal bin boundaries: a sample with label
        probability ``p`` reads bin ``#{m : edges[m] <= p}``, i.e. bin ``b`` holds
        ``[edges[b-1], edges[b])``, the first bin everything below ``edges[0]`` and the last
        everything from ``edges[-1]`` on.
    """

    gamma: Array
    edges: Array


def adafocal_init(num_bins: int = 15, *, gamma: float = 1.0) -> AdaFocalState:
    """The initial AdaFocal state: the same ``γ`` in ``num_bins`` equal-width bins.

    Args:
      num_bins: number of bins ``M`` (static int ``>= 1``; the authors use 15).
      gamma: the initial ``γ`` of every bin (finite; the authors' default is 1).

    Returns:
      An :class:`AdaFocalState` with ``gamma = [γ] * M`` and edges ``1/M, ..., (M-1)/M``.

    Raises:
      ValueError: ``num_bins < 1`` or a non-finite ``gamma``.

    Examples:
      >>> from calib_jax.losses import adafocal_init
      >>> state = adafocal_init(4)
      >>> print(state.gamma, state.edges)
      [1. 1. 1. 1.] [0.25 0.5  0.75]
    """
    num_bins = _validation.check_num_bins(num_bins)
    _validation.hyperparameter(gamma, "gamma", low=-np.inf)
    edges = np.arange(1, num_bins, dtype=np.float64) / num_bins
    return AdaFocalState(jnp.full((num_bins,), gamma, jnp.float32), jnp.asarray(edges, jnp.float32))


def _check_state(state: AdaFocalState) -> tuple[Array, Array]:
    gamma, edges = (jnp.asarray(x) for x in state)
    if gamma.ndim != 1 or edges.shape != (gamma.shape[0] - 1,):
        raise ValueError(
            "state must hold gamma [M] and edges [M - 1], got shapes "
            f"{gamma.shape} and {edges.shape}."
        )
    _validation.check_floating(gamma, "state.gamma")
    _validation.check_floating(edges, "state.edges")
    return gamma, edges


@jax.custom_jvp
def _inverse_focal_term(log_p: Array, gamma: Array) -> Array:
    """``-(1 + p)^γ · log p`` as a function of ``log p <= 0`` and ``γ >= 0``, elementwise."""
    return -jnp.exp(gamma * jnp.log1p(jnp.exp(log_p))) * log_p


def _inverse_focal_term_jvp(primals, tangents):
    # d/d(log p) = -w·(1 + γ·p·log p/(1 + p)) and d/dγ = -w·log(1 + p)·log p, w = (1 + p)^γ;
    # at log p = -inf (p = 0) both products are 0 in the limit, where autodiff gives 0·inf.
    log_p, gamma = primals
    d_log_p, d_gamma = tangents
    p = jnp.exp(log_p)
    log1p_p = jnp.log1p(p)
    w = jnp.exp(gamma * log1p_p)
    finite = log_p > -jnp.inf
    safe_log_p = jnp.where(finite, log_p, 0)
    out = -w * log_p
    tangent = jnp.zeros_like(out)
    if not isinstance(d_log_p, SymbolicZero):
        tangent = -w * (1 + gamma * p * safe_log_p / (1 + p)) * d_log_p
    if not isinstance(d_gamma, SymbolicZero):
        tangent = tangent - w * log1p_p * safe_log_p * d_gamma
    return out, tangent


_inverse_focal_term.defjvp(_inverse_focal_term_jvp, symbolic_zeros=True)


def adafocal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    state: AdaFocalState,
    where: ArrayLike | None = None,
) -> Array:
    r"""AdaFocal loss, per example: focal or inverse-focal loss with ``γ`` from the sample's bin.

    .. math::
      \ell = \begin{cases} -(1 - p_y)^{γ_b} \log p_y & γ_b \ge 0 \\
                           -(1 + p_y)^{|γ_b|} \log p_y & γ_b < 0 \end{cases},
      \qquad b = \#\{m : \mathrm{edges}_m \le \bar p_y\},

    where :math:`\bar p_y` is ``stop_gradient(p_y)`` (the bin, hence ``γ``, is a constant for
    the gradient with respect to the logits) and ``γ_b = state.gamma[b]``. As in the authors'
    code the bin is chosen by the probability of the *label* (their ``pt``), while
    :func:`adafocal_update` adapts ``γ`` from the validation *confidence* of each bin. The
    authors add ``1e-20`` to the base of the power "for numerical stability"; here the focal
    branch is :func:`focal_loss`'s (``1 - p`` as ``-expm1(log p)``, gradients finite for every
    finite logit and ``γ >= 0``), which differs from theirs by less than float32 rounding.
    The inverse-focal branch is finite too (its weight lies in ``[1, 2^{|γ|}]``). ``γ`` is
    differentiable with respect to ``state.gamma``. A NaN or infinite ``γ`` or edge anywhere in
    the state makes every row NaN.

    Args:
      logits: ``[..., K]`` floating logits.
      labels: ``[...]`` integer class indices in ``[0, K)``.
      state: an :class:`AdaFocalState` (``gamma [M]``, ``edges [M - 1]``).
      where: optional boolean mask broadcastable to ``labels.shape``; masked rows give 0.

    Returns:
      ``[...]`` per-example losses (float32 or wider).

    Raises:
      ValueError: a state whose shapes do not match.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import AdaFocalState, adafocal_loss
      >>> state = AdaFocalState(gamma=jnp.array([3.0, -1.0]), edges=jnp.array([0.5]))
      >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 1.0, 0.0]])
      >>> loss = adafocal_loss(logits, jnp.array([0, 2]), state=state)  # p_y = 0.84, 0.21
      >>> print([f"{float(x):.4f}" for x in loss])  # -(1 + 0.84) log 0.84, -(1 - 0.21)^3 log 0.21
      ['0.3132', '0.7593']

    References:
      Ghosh, Schaaf & Gormley, "AdaFocal: Calibration-aware Adaptive Focal Loss", NeurIPS 2022
      (code: 3mcloud/adafocal, ``losses/adafocal.py``).
    """
    gamma_table, edges = _check_state(state)
    z, labels, mask, _ = _common.prepare(logits, labels, where)
    return _common.apply_mask(_loss(z, labels, gamma_table, edges), mask)


# The bodies are jitted once checked: called eagerly, they would compile op by op.
@jax.jit
def _loss(z: Array, labels: Array, gamma_table: Array, edges: Array) -> Array:
    log_p = _common.label_log_prob(z, labels)
    p_bar = jnp.exp(jax.lax.stop_gradient(log_p))
    edges = edges.astype(log_p.dtype).reshape((1,) * p_bar.ndim + edges.shape)
    index = jnp.sum(p_bar[..., None] >= edges, axis=-1)
    gamma = gamma_table.astype(log_p.dtype)[index]
    # Both branches see a valid γ (>= 0), so the unselected one has a finite gradient too.
    focal = _focal_term(log_p, jnp.where(gamma > 0, gamma, 0))
    inverse = _inverse_focal_term(log_p, jnp.where(gamma < 0, -gamma, 0))
    poison = 0 * (jnp.sum(gamma_table) + jnp.sum(edges)).astype(log_p.dtype)
    return jnp.where(gamma >= 0, focal, inverse) + poison


def adafocal_validation_sums(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    num_bins: int = 15,
    where: ArrayLike | None = None,
) -> tuple[_binning.BinSums, Array]:
    """Per-bin validation sums over the equal-mass bins of the authors' AdaFocal code.

    The bins are those of the AdaECE of Mukhoti et al.'s code, which the AdaFocal code reuses:
    with the top-label confidences ``c`` (max softmax; the prediction is the first maximum) of
    the ``n`` validation samples sorted as ``s``, the ``M + 1`` edges are
    ``np.interp(linspace(0, n, M + 1), arange(n), s)`` and bin ``b`` holds ``(e_b, e_{b+1}]``, so
    every sample equal to the smallest confidence falls below the first bin and is left out
    (as there). Membership is decided exactly: an interpolated edge lies strictly between two
    consecutive sorted confidences, so a sample is above it iff it is above the lower one.

    Pass the result to :func:`adafocal_update` as ``(sums, edges=edges)``: the training bins
    then follow the validation bins, as in the authors' code. The returned internal edges
    ``e_1 .. e_{M-1}`` are interpolated in float32.

    Args:
      logits: ``[N, K]`` floating validation logits.
      labels: ``[N]`` integer labels in ``[0, K)``.
      num_bins: number of bins ``M`` (static int ``>= 1``).
      where: optional bool ``[N]`` mask (padding rows).

    Returns:
      ``(sums, edges)``: :class:`calib_jax.metrics.BinSums` with ``[M]`` int32 ``count`` and
      ``correct`` and float32 ``confidence`` sums, and the ``[M - 1]`` float32 internal edges.
      NaN/inf logits or out-of-range labels (raised eagerly, checkify checks under ``jit``)
      or no sample at all make every confidence sum and edge NaN.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import adafocal_validation_sums
      >>> logits = jnp.log(jnp.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]]))
      >>> sums, edges = adafocal_validation_sums(logits, jnp.array([0, 1, 1, 0]), num_bins=2)
      >>> print(sums.count, sums.correct, edges)  # 0.6 is the smallest confidence: left out
      [2 1] [1 1] [0.8]
    """
    num_bins = _validation.check_num_bins(num_bins)
    _validation.check_rank(logits, 2, "logits")
    z, labels, mask, num_classes = _common.prepare(logits, labels, where)
    # A -inf logit is invalid input; the log-softmax below would drop it as a plausible limit.
    z = jnp.where(z == -jnp.inf, jnp.nan, z)
    keep = jnp.ones((z.shape[0],), bool) if mask is None else mask
    count = jnp.sum(keep.astype(jnp.int32))
    _validation.check_value(count > 0, "adafocal_validation_sums needs at least one sample.")
    return _equal_mass_sums(z, labels, keep, num_classes, num_bins)


@functools.partial(jax.jit, static_argnums=(3, 4))
def _equal_mass_sums(
    z: Array, labels: Array, keep: Array, num_classes: int, num_bins: int
) -> tuple[_binning.BinSums, Array]:
    count = jnp.sum(keep.astype(jnp.int32))
    conf = jnp.exp(jnp.max(jax.nn.log_softmax(z, axis=-1), axis=-1))
    valid_label = (labels >= 0) & (labels < num_classes)
    conf = jnp.where(valid_label, conf, jnp.nan)
    correct = jnp.argmax(z, axis=-1) == labels
    s = jnp.sort(jnp.where(keep, conf, jnp.inf))
    last = jnp.maximum(count - 1, 0)
    # Position m·n/M of the m-th edge as an exact quotient and remainder (integer arithmetic).
    scaled = jnp.arange(num_bins + 1, dtype=jnp.int32) * count
    i0 = jnp.minimum(scaled // num_bins, last)
    frac = (scaled % num_bins).astype(s.dtype) / num_bins
    i1 = jnp.minimum(i0 + 1, last)
    edges = jnp.where(i0 >= last, s[last], s[i0] + frac * (s[i1] - s[i0]))
    lower = s[i0]  # c > edge_m iff c > lower_m for every sample c (see the docstring)
    b = jnp.searchsorted(lower, conf, side="left") - 1
    b = jnp.where(keep & (b >= 0) & (b < num_bins), b, num_bins)
    slots = num_bins + 1
    counts = jnp.zeros((slots,), jnp.int32).at[b].add(1)[:num_bins]
    corrects = jnp.zeros((slots,), jnp.int32).at[b].add(correct.astype(jnp.int32))[:num_bins]
    confidence = _binning.segment_sum(jnp.where(keep, conf, 0), b, slots)[:num_bins]
    poison = jnp.where(count > 0, 0, jnp.nan) + 0 * jnp.sum(jnp.where(keep, conf, 0))
    return (
        _binning.BinSums(counts, corrects, confidence + poison),
        edges[1:num_bins] + poison,
    )


def adafocal_update(
    state: AdaFocalState,
    sums: _binning.BinSums,
    *,
    edges: ArrayLike | None = None,
    lam: float = 1.0,
    gamma_min: float = -2.0,
    gamma_max: float = 20.0,
    switch_point: float = 0.2,
) -> AdaFocalState:
    r"""One AdaFocal update of ``γ`` per bin from validation per-bin sums.

    With the validation gap of bin ``b``, ``g_b = \bar c_b - \bar a_b`` (mean confidence minus
    accuracy, 0 for an empty bin), the authors' rule is

    .. math::
      γ' = γ\, e^{\operatorname{sign}(γ)\, λ\, g_b}, \qquad
      γ' \leftarrow \begin{cases} -s & 0 < γ' < s \\ s & -s < γ' \le 0 \end{cases}, \qquad
      γ_b \leftarrow \operatorname{clip}(γ', γ_{\min}, γ_{\max}),

    (``sign(0)`` taken as ``-1``, as their ``if prev_gamma > 0``): an over-confident bin
    (``g > 0``) raises a positive ``γ``; once ``|γ|`` falls below the switch point ``s`` it
    jumps to the other sign, to the inverse-focal loss that raises confidence. Defaults are the
    authors' (``λ = 1``, ``γ ∈ [-2, 20]``, ``s = 0.2``; 15 bins, initial ``γ = 1``), who update
    once per epoch from the validation split.

    ``sums`` may come from :func:`adafocal_validation_sums` (the authors' equal-mass bins; pass
    its edges too, and the training bins follow them) or from any per-bin top-label sums with
    the state's bins, e.g. the equal-width bins of a streamed
    :class:`calib_jax.metrics.CalibrationState` ``s``:
    ``BinSums(s.count, s.correct, s.confidence)`` for a state made by :func:`adafocal_init`.

    Args:
      state: the current :class:`AdaFocalState` (``M`` bins).
      sums: :class:`calib_jax.metrics.BinSums` with ``[M]`` ``count``, ``correct`` and
        ``confidence`` sums of the validation samples in each bin (int or float counts).
      edges: optional ``[M - 1]`` new internal edges (default: keep the state's).
      lam: ``λ >= 0``, the step size of the exponential update.
      gamma_min: the lower clip of ``γ`` (``<= gamma_max``).
      gamma_max: the upper clip of ``γ``.
      switch_point: ``s >= 0``; ``|γ|`` below it switches between focal and inverse focal.

    Returns:
      The new :class:`AdaFocalState` (float32). NaN sums or edges give NaN in the state.

    Raises:
      ValueError: shapes that do not match the state, or a hyperparameter out of range.

    Examples:
      >>> import jax.numpy as jnp
      >>> from calib_jax.losses import adafocal_init, adafocal_update
      >>> from calib_jax.metrics import BinSums
      >>> sums = BinSums(count=jnp.array([10, 0]), correct=jnp.array([5, 0]),
      ...                confidence=jnp.array([8.0, 0.0]))  # bin 0: conf 0.8 vs accuracy 0.5
      >>> print(adafocal_update(adafocal_init(2), sums).gamma)  # 1·e^0.3, unchanged
      [1.3498588 1.       ]

    References:
      Ghosh, Schaaf & Gormley, "AdaFocal: Calibration-aware Adaptive Focal Loss", NeurIPS 2022
      (code: 3mcloud/adafocal, ``losses/adafocal.py``, ``update_bin_stats``; defaults in
      ``main.py``).
    """
    gamma, old_edges = _check_state(state)
    num_bins = gamma.shape[0]
    count, correct, confidence = (jnp.asarray(x) for x in sums)
    for name, x in (("count", count), ("correct", correct), ("confidence", confidence)):
        if x.shape != (num_bins,):
            raise ValueError(f"sums.{name} must have shape ({num_bins},), got {x.shape}.")
    new_edges = old_edges if edges is None else jnp.asarray(edges)
    if new_edges.shape != old_edges.shape:
        raise ValueError(f"edges must have shape {old_edges.shape}, got {new_edges.shape}.")
    _validation.hyperparameter(lam, "lam")
    _validation.hyperparameter(switch_point, "switch_point")
    for name, value in (("gamma_min", gamma_min), ("gamma_max", gamma_max)):
        _validation.hyperparameter(value, name, low=-np.inf)
    if not isinstance(gamma_min, jax.core.Tracer) and not isinstance(gamma_max, jax.core.Tracer):
        if gamma_min > gamma_max:
            raise ValueError(f"gamma_min must be <= gamma_max, got {gamma_min} > {gamma_max}.")
    f32 = jnp.float32
    gamma = gamma.astype(f32)
    n = count.astype(f32)
    filled = n > 0
    gap = jnp.where(
        filled, (confidence.astype(f32) - correct.astype(f32)) / jnp.where(filled, n, 1), 0
    )
    step = jnp.where(gamma > 0, lam, -lam) * gap
    nxt = gamma * jnp.exp(step.astype(f32))
    switch = jnp.asarray(switch_point, f32)
    nxt = jnp.where(jnp.abs(nxt) < switch, jnp.where(nxt > 0, -switch, switch), nxt)
    # clip keeps NaN (bad sums) as NaN.
    return AdaFocalState(jnp.clip(nxt, gamma_min, gamma_max).astype(f32), new_edges.astype(f32))
