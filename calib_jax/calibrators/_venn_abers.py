"""Inductive Venn–Abers prediction (Vovk & Petej 2014) on probabilities."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from calib_jax import _validation as v
from calib_jax.calibrators._base import Array, ArrayLike, Calibrator
from calib_jax.calibrators._nonparametric import _make, _tie_groups, _valid_apply_input

# Left ends j handled per step of the minimax scan (a [_CHUNK, N + 1] block at a time).
_CHUNK = 64


class VennAbersParams(NamedTuple):
    """Fitted inductive Venn–Abers predictor, per column (one for binary or top-label input):
    the sorted distinct calibration scores ``thresholds [C, N]`` (padded with ``+inf``) and the
    isotonic values at a test score inserted with label 0, ``p0 [C, N + 1]``, and with label 1,
    ``p1 [C, N + 1]``, one per gap between consecutive distinct scores (padding: NaN)."""

    thresholds: Array
    p0: Array
    p1: Array


def _minimax(cum_s: Array, cum_w: Array, num_groups: Array, extra: float) -> Array:
    """``f(i) = max_{j <= i} min_{k >= i} (S_k - S_j + extra) / (W_k - W_j + 1)``, ``i = 0..G``.

    The isotonic fit at a point is the max over left block ends of the min over right ends of
    the block mean; a test point inserted in gap ``i`` (after ``i`` distinct groups) with
    label ``extra`` joins groups ``j..k-1``, so this is its fitted value. Computed as a scan over
    chunks of ``j``, each a reversed running minimum over ``k``: ``O(G^2)`` work, ``O(G)``
    memory per ``j``. The plain reference path of :func:`_bridge` (tests compare the two).
    """
    size = cum_s.shape[0]
    idx = jnp.arange(size)
    pad = (-size) % _CHUNK
    starts = jnp.pad(idx, (0, pad), constant_values=size).reshape(-1, _CHUNK)
    valid_k = idx <= num_groups

    def step(best, js):
        sj = cum_s[jnp.minimum(js, size - 1)][:, None]
        wj = cum_w[jnp.minimum(js, size - 1)][:, None]
        ratio = (cum_s[None] - sj + extra) / (cum_w[None] - wj + 1)
        ratio = jnp.where((idx[None] >= js[:, None]) & valid_k[None], ratio, jnp.inf)
        right_min = lax.cummin(ratio, axis=1, reverse=True)
        usable = (idx[None] >= js[:, None]) & (js[:, None] <= num_groups)
        return jnp.maximum(best, jnp.max(jnp.where(usable, right_min, -jnp.inf), axis=0)), None

    best, _ = lax.scan(step, jnp.full(size, -jnp.inf, cum_s.dtype), starts)
    return jnp.where(idx <= num_groups, best, jnp.nan)


def _hull_links_unbatched(x: Array, y: Array, count: Array) -> Array:
    """``prev[i]``: the vertex before point ``i`` on the lower convex hull of points ``0..i``
    (``-1`` for ``i = 0`` and for ``i >= count``), for points with strictly increasing ``x``.

    Andrew's monotone chain as one ``lax.while_loop`` of at most ``2·count`` O(1) steps (each
    pushes the next point or pops the top vertex). As in :mod:`calib_jax.calibrators._pav`,
    the top two vertices live in loop-carried scalars and the stack array is only written
    below them, so no step reads a slot that it writes (XLA would copy the array each step).
    Collinear vertices are dropped.
    """
    n = x.shape[0]
    get = lambda a, j: lax.dynamic_index_in_dim(a, jnp.clip(j, 0, n - 1), 0, keepdims=False)
    put = lambda a, v_, j: lax.dynamic_update_index_in_dim(a, v_, jnp.clip(j, 0, n - 1), 0)

    def slope(a, b):
        return (get(y, b) - get(y, a)) / (get(x, b) - get(x, a))

    def cond(state):
        return state[0] < count

    def body(state):
        i, t, stack, top, below, prev = state
        pop = (t >= 2) & (slope(below, top) >= slope(top, i))
        prev = jnp.where(pop, prev, put(prev, jnp.where(t >= 1, top, -1), i))
        # Spill `below` to slot t - 2 (a rewrite of a free slot when popping).
        stack = put(stack, below, t - 2)
        under = get(stack, t - 3)
        return (
            jnp.where(pop, i, i + 1),
            jnp.where(pop, t - 1, t + 1),
            stack,
            jnp.where(pop, below, i),
            jnp.where(pop, under, top),
            prev,
        )

    minus = jnp.full(n, -1, jnp.int32)
    init = (jnp.int32(0), jnp.int32(0), minus, jnp.int32(-1), jnp.int32(-1), minus)
    return lax.while_loop(cond, body, init)[-1]


@jax.custom_batching.custom_vmap
def _hull_links(x: Array, y: Array, count: Array) -> Array:
    return _hull_links_unbatched(x, y, count)


@_hull_links.def_vmap
def _hull_links_vmap(axis_size, in_batched, x, y, count):
    # A batched while loop would turn the in-place stack writes into whole-array scatters.
    x, y, count = (
        a if b else jnp.broadcast_to(a, (axis_size, *jnp.shape(a)))
        for a, b in zip((x, y, count), in_batched, strict=True)
    )
    return lax.map(lambda a: _hull_links(*a), (x, y, count)), True


def _jumps(links: Array, levels: int) -> Array:
    """``[levels, n + 1]`` pointer-doubling table: row ``t`` follows ``links`` ``2^t`` times;
    ``-1`` becomes the sentinel ``n``, which points to itself."""
    n = links.shape[0]
    first = jnp.concatenate([jnp.where(links < 0, n, links), jnp.array([n], links.dtype)])
    rows = [first]
    for _ in range(levels - 1):
        rows.append(rows[-1][rows[-1]])
    return jnp.stack(rows)


def _bridge(cum_s: Array, cum_w: Array, num_groups: Array) -> tuple[Array, Array]:
    """:func:`_minimax` for ``extra = 0`` and ``1`` in ``O(G log² G)`` work and ``O(G)``
    sequential steps: the same values (the same block means, rounded once).

    With the points ``P_k = (W_k, S_k)`` of the cumulative-sum diagram, the value at gap ``i``
    is the slope of the lower common tangent ("bridge") between the lower hull of the left
    points ``P_j - (1, extra)``, ``j <= i``, and the lower hull of the right points ``P_k``,
    ``k >= i``: ``max_j min_k`` of the slopes (Vovk, Petej & Fedorova 2015 compute the same
    values from the greatest convex minorants of the diagram). Every prefix hull is the chain
    of ``prev`` links from its last point and every suffix hull the chain of ``next`` links
    from its first (two monotone-chain passes, :func:`_hull_links`), so for all gaps at once
    the bridge is found by nested binary searches over pointer-doubling tables: the tangent
    from a left vertex to the right chain, inside a search along the left chain for the vertex
    whose tangent line passes under its neighbour. The slopes are ratios of integers below
    ``2^24`` (label and sample counts), so each is the correctly rounded true slope.
    """
    size = cum_s.shape[0]
    count = num_groups + 1
    idx = jnp.arange(size)
    prev = _hull_links(cum_w, cum_s, count)
    # Suffix hulls are prefix hulls of the mirrored diagram (x -> -x, order reversed).
    mirror = jnp.clip(num_groups - idx, 0, size - 1)
    back = _hull_links(-cum_w[mirror], cum_s[mirror], count)
    nxt = jnp.where((idx <= num_groups) & (back[mirror] >= 0), num_groups - back[mirror], -1)
    levels = max(1, int(np.ceil(np.log2(size + 1))))
    up, down = _jumps(prev, levels), _jumps(nxt, levels)
    xs = jnp.concatenate([cum_w, cum_w[-1:]])
    ys = jnp.concatenate([cum_s, cum_s[-1:]])
    # Both extras at once, as rows: one traced copy of each search keeps compilation short.
    extra = jnp.array([[0.0], [1.0]], cum_s.dtype)
    start = jnp.broadcast_to(idx, (2, size))

    def slope(j, k):
        return (ys[k] - ys[j] + extra) / (xs[k] - xs[j] + 1)

    def search(table, pred):
        """Per gap, the last vertex of the chain from the gap's own point (following
        ``table[0]``) at which the monotone ``pred`` (true, then false) holds, and whether it
        holds at the first one: step 0 tests the start, step ``t`` a jump of
        ``2^(levels - t)`` vertices."""

        def step(t, carry):
            cur, holds = carry
            cand = jnp.where(t == 0, start, table[jnp.maximum(levels - t, 0)][cur])
            ok = (cand < size) & pred(cand)
            return jnp.where(holds & ok, cand, cur), jnp.where(t == 0, ok, holds)

        return lax.fori_loop(0, levels + 1, step, (start, jnp.ones((2, size), bool)))

    def tangent(a):
        # Along the right chain the slope from a falls until the tangent vertex.
        def pred(b):
            nb = down[0][b]
            return (nb < size) & (slope(a, nb) < slope(a, b))

        last, holds = search(down, pred)
        return jnp.where(holds, down[0][last], start)

    def left_pred(a):
        # The tangent line from a passes above its left neighbour: the bridge lies further.
        pa = up[0][a]
        b = tangent(a)
        return (pa < size) & (slope(pa, b) > slope(a, b))

    last, holds = search(up, left_pred)
    a = jnp.where(holds, up[0][last], start)
    values = jnp.where(idx <= num_groups, slope(a, tangent(a)), jnp.nan)
    return values[0], values[1]


def _cumulative_groups(scores: Array, targets: Array, weights: Array):
    # Exactly tied calibration scores form one group (a tied test score joins it).
    g_sum, g_weight, g_x, num_groups = _tie_groups(scores, targets, weights)
    zero = jnp.zeros(1, g_sum.dtype)
    cum_s = jnp.concatenate([zero, jnp.cumsum(g_sum)])
    cum_w = jnp.concatenate([zero, jnp.cumsum(g_weight)])
    thresholds = jnp.where(jnp.arange(scores.shape[-1]) < num_groups, g_x, jnp.inf)
    return cum_s, cum_w, thresholds, num_groups


def _venn_abers_column(scores: Array, targets: Array, weights: Array) -> VennAbersParams:
    cum_s, cum_w, thresholds, num_groups = _cumulative_groups(scores, targets, weights)
    p0, p1 = _bridge(cum_s, cum_w, num_groups)
    return VennAbersParams(thresholds, p0, p1)


def _venn_abers_column_reference(scores: Array, targets: Array, weights: Array):
    """:func:`_venn_abers_column` by the ``O(N^2)`` minimax formula (the plain path, for tests)."""
    cum_s, cum_w, thresholds, num_groups = _cumulative_groups(scores, targets, weights)
    p0 = _minimax(cum_s, cum_w, num_groups, 0.0)
    p1 = _minimax(cum_s, cum_w, num_groups, 1.0)
    return VennAbersParams(thresholds, p0, p1)


def _interval_column(params: VennAbersParams, s: Array) -> Array:
    # A test score equal to a calibration score joins its group: for label 1 that is the gap
    # before the group, for label 0 the gap after it (the same isotonic fit, see the tests).
    p0 = params.p0[jnp.searchsorted(params.thresholds, s, side="right")]
    p1 = params.p1[jnp.searchsorted(params.thresholds, s, side="left")]
    return jnp.stack([p0, p1], axis=-1)


def _merged(interval: Array) -> Array:
    p0, p1 = interval[..., 0], interval[..., 1]
    return p1 / (1 - p0 + p1)


def venn_abers_interval(params: VennAbersParams, probs: ArrayLike) -> Array:
    """The Venn–Abers interval ``[p0, p1]`` of each test score, from :func:`venn_abers`'s
    parameters.

    For binary ``probs [N]`` (positive-class probabilities) it brackets ``P(y = 1)``; for
    ``probs [..., K]`` it brackets the probability that the input row's argmax is correct
    (top-label). ``p0 <= p1``; ``apply`` returns the merged estimate
    ``p1 / (1 - p0 + p1)``, which lies in ``[p0, p1]``.

    Args:
      params: :class:`VennAbersParams` from ``venn_abers().fit``.
      probs: ``[N]`` binary or ``[..., K]`` probabilities.

    Returns:
      ``[N, 2]`` or ``[..., 2]``: ``(p0, p1)`` per test point; NaN where the input is invalid
      (NaN, out of ``[0, 1]``, rows not summing to one), which raises eagerly.

    Examples:
      >>> import jax.numpy as jnp, calib_jax as cj
      >>> va = cj.calibrators.venn_abers()
      >>> params = va.fit(jnp.array([0.1, 0.3, 0.6, 0.8]), jnp.array([0, 1, 0, 1]))
      >>> p0, p1 = cj.calibrators.venn_abers_interval(params, jnp.array([0.7]))[0]
      >>> print(f"{float(p0):.4f} {float(p1):.4f}")
      0.3333 1.0000
      >>> print(f"{float(va.apply(params, jnp.array([0.7]))[0, 1]):.4f}")
      0.6000
    """
    v.check_floating(probs, "probs")
    raw = jnp.asarray(probs)
    x = v.to_compute_dtype(probs)
    first = jax.tree.map(lambda a: a[0], params)
    if params.thresholds.shape[0] == 1 and x.ndim == 1:
        ok = _valid_apply_input(raw, x, from_logits=False, binary=True)
        return jnp.where(ok[..., None], _interval_column(first, x), jnp.nan)
    if x.ndim < 2:
        raise ValueError(f"venn_abers_interval needs [N] or [..., K] probs, got {x.shape}.")
    ok = _valid_apply_input(raw, x, from_logits=False, binary=False)[..., None]
    return jnp.where(ok, _interval_column(first, jnp.max(x, axis=-1)), jnp.nan)


def venn_abers() -> Calibrator:
    """Inductive Venn–Abers predictor (IVAP): two isotonic fits per test score.

    .. math:: p_0(s) = f_{D \\cup \\{(s, 0)\\}}(s),\\quad p_1(s) = f_{D \\cup \\{(s, 1)\\}}(s),
              \\quad \\hat p(s) = \\frac{p_1(s)}{1 - p_0(s) + p_1(s)}

    ``f_D`` is the isotonic (non-decreasing, least-squares) fit of the 0/1 targets of the
    calibration set ``D`` on its scores; the test point is added with label 0 and with label
    1, and the two fitted values at it bracket the probability (Vovk & Petej 2014). The merged
    point estimate ``p1 / (1 - p0 + p1)`` (Vovk, Petej & Fedorova 2015) is what ``apply``
    returns; :func:`venn_abers_interval` returns ``[p0, p1]``. Both depend on the test score
    only through its position among the distinct calibration scores, so ``fit`` precomputes
    them for every gap (a test score equal to a calibration score joins that score's group, as
    exactly tied scores are pooled), each as the minimax formula of the isotonic fit,
    ``max_j min_k`` of block means over prefix sums, found as the bridge between two convex
    hulls of the cumulative-sum diagram (Vovk, Petej & Fedorova 2015): one sort, two
    ``O(N)`` hull passes and ``O(N log² N)`` vectorised binary-search work, ``O(N log N)``
    memory; no Python loop, so ``fit`` is jit- and vmap-able.

    Binary ``probs [N]`` (positive-class probability, labels in ``{0, 1}``); ``[N, K]``
    probabilities are calibrated top-label: the confidence against the correctness of the
    input's argmax ``j*``, ``out[j*]`` the merged estimate and the other classes rescaled to
    fill the row (the output's argmax can differ from ``j*``).

    Returns:
      A :class:`Calibrator` (``inputs="probs"``): ``fit(probs [N, K] or [N], labels [N], *,
      where=None) -> VennAbersParams(thresholds [1, N], p0 [1, N + 1], p1 [1, N + 1])``;
      ``apply(params, probs) -> probs`` (``[N, 2]`` for binary input), and
      ``venn_abers_interval(params, probs) -> [..., 2]``. Invalid fit data raise eagerly and
      give NaN parameters under ``jit``.

    Examples:
      >>> import jax, jax.numpy as jnp, calib_jax as cj
      >>> s = jax.random.uniform(jax.random.key(0), (1000,))
      >>> y = jax.random.bernoulli(jax.random.key(1), s**2).astype(jnp.int32)
      >>> va = cj.calibrators.venn_abers()
      >>> params = jax.jit(va.fit)(s, y)
      >>> lo, hi = cj.calibrators.venn_abers_interval(params, jnp.array([0.5]))[0]
      >>> print(f"{float(lo):.2f} {float(hi):.2f}")
      0.32 0.33

    References:
      Vovk, Petej. Venn-Abers Predictors. UAI 2014.
      Vovk, Petej, Fedorova. Large-scale probabilistic predictors with and without guarantees
      of validity. NeurIPS 2015.
    """

    def fit_columns(scores: Array, targets: Array, weights: Array) -> VennAbersParams:
        return jax.vmap(_venn_abers_column, in_axes=(0, 0, None))(scores, targets, weights)

    def apply_column(params: VennAbersParams, s: Array) -> Array:
        return _merged(_interval_column(params, s))

    # The shared plumbing takes binary [N] scores in its one-vs-rest mode only.
    binary = _make("venn_abers", fit_columns, apply_column, mode="one_vs_rest", from_logits=False)
    top = _make("venn_abers", fit_columns, apply_column, mode="top_label", from_logits=False)

    def fit(probs: ArrayLike, labels: ArrayLike, *, where: ArrayLike | None = None):
        return (binary if jnp.ndim(probs) == 1 else top).fit(probs, labels, where=where)

    def apply(params: VennAbersParams, probs: ArrayLike) -> Array:
        return (binary if jnp.ndim(probs) == 1 else top).apply(params, probs)

    return Calibrator(fit, apply, None, "probs")
