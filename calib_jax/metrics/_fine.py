"""KS error, ECE-sweep and the selective curves from the fine confidence histogram of
:class:`~calib_jax.metrics.CalibrationState`, each with a guaranteed error bound.

A fine bucket ``b`` holds ``n_b`` samples (``A_b`` correct, confidence sum ``C_b``) whose
confidences lie in ``[lo_b, hi_b]``; buckets are ordered by confidence, so the exact sorted
order of the samples is the buckets' order with an unknown order inside each bucket (a group of
equal confidences never spans two buckets). Every estimate below is exact at bucket ends and
bounds what can happen inside a bucket over every order of its samples.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from calib_jax import _binning
from calib_jax.metrics import _selective
from calib_jax.metrics._wider import _ratio_le

Array = jax.Array

# Largest number of equal-mass bins the streamed ECE-sweep tries (a static array size); past it
# the error bound is infinite.
SWEEP_MAX_BINS = 4096


def bucket_edges(fine_bits: int, exp_lo: int, half: int) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` float64 confidence range of each bucket of ``fine_bucket``."""
    rank = np.arange(half + 1)
    t = np.maximum(rank - 1, 0)
    exponent = (t >> fine_bits) + exp_lo - 127
    width = 2.0**exponent * 2.0**-fine_bits
    lo_d = 2.0**exponent * (1 + (t & ((1 << fine_bits) - 1)) * 2.0**-fine_bits)
    lo_d[0], width[0] = 0.0, 2.0 ** (exp_lo - 127)
    hi_d = np.minimum(lo_d + width, 0.5)
    return np.concatenate([lo_d, (1 - hi_d)[::-1]]), np.concatenate([hi_d, (1 - lo_d)[::-1]])


def lower_edges_f32(fine_bits: int, exp_lo: int, half: int) -> np.ndarray:
    """Each bucket's lower edge rounded down to float32 (a valid lower bound of its values)."""
    lo = bucket_edges(fine_bits, exp_lo, half)[0]
    lo32 = lo.astype(np.float32)
    return np.where(lo32 > lo, np.nextafter(lo32, np.float32(0)), lo32)


def _with_zero(x: Array) -> Array:
    """Prefix sums along the last axis with a leading 0."""
    zero = jnp.zeros((*x.shape[:-1], 1), x.dtype)
    return jnp.concatenate([zero, _binning.prefix_sum(x)], axis=-1)


# ---------------------------------------------------------------------------------------------
# KS error and the selective curves, in one compiled function (their prefix sums are shared).


def _ks(count: Array, correct: Array, conf: Array, lo: Array, total: Array):
    """``(KS at bucket ends, bound)``: the exact KS lies in ``[value, value + bound]``."""
    n = count.astype(jnp.float32)
    a = correct.astype(jnp.float32)
    h = _binning.prefix_sum(conf - a)  # N·h at the end of each bucket
    before = h - (conf - a)
    # Inside bucket b, after L of its samples: Σc <= L·C/n (the L smallest) and Σa >= L - (n - A),
    # so N·h <= before + (n - A)·C/n at its peak L = n - A; Σc >= L·lo and Σa <= min(L, A),
    # so N·h >= before - A·(1 - lo) at L = A.
    upper = before + (n - a) * conf / jnp.maximum(n, 1)
    lower = before - a * (1 - lo)
    value = jnp.max(jnp.abs(h)) / total
    outer = jnp.max(jnp.where(n > 0, jnp.maximum(upper, -lower), 0)) / total
    return value, jnp.maximum(outer - value, 0)


def _curve(count: Array, correct: Array) -> _selective._Curve:
    """Buckets as segments of the descending curve, errors spread evenly inside each (exact at
    bucket ends; a bucket is a tie group of the exact curve when its confidences are equal)."""
    n = count.astype(jnp.float32)
    err = (count - correct).astype(jnp.float32)
    # One scan of both integer rows (exact); each scan compiles to a large graph.
    cw, ce = _binning.prefix_sum(jnp.stack([count, count - correct])).astype(jnp.float32)
    total, err_total = cw[-1], ce[-1]
    slope = err / jnp.maximum(n, 1)
    return _selective._Curve(total - cw, n, err_total - ce, slope, total, jnp.float32(0))


def _poison(conf: Array) -> Array:
    """0, or NaN once an invalid sample was added (it leaves a NaN confidence sum)."""
    return 0 * jnp.sum(conf)


def _envelopes(c: _selective._Curve, e: Array) -> tuple[_selective._Curve, _selective._Curve]:
    """The highest and lowest error curves over every order inside each bucket: errors first
    (slope 1 over ``e`` positions, then flat) or last (flat over ``n - e``, then slope 1)."""
    n = c.w

    def join(first, second):
        return _selective._Curve(
            *(jnp.concatenate([a, b]) for a, b in zip(first, second, strict=True)),
            c.total,
            jnp.float32(0),
        )

    one, zero = jnp.ones_like(n), jnp.zeros_like(n)
    upper = join((c.t0, e, c.e0, one), (c.t0 + e, n - e, c.e0 + e, zero))
    lower = join((c.t0, n - e, c.e0, zero), (c.t0 + n - e, e, c.e0, one))
    return upper, lower


@jax.jit
def curves(
    count: Array, correct: Array, conf: Array, lo: Array, coverage: Array, risk: Array
) -> dict:
    """``{name: (value, bound)}`` for ``ks``, ``aurc``, ``augrc``, ``risk`` (at ``coverage``) and
    ``coverage`` (at ``risk``)."""
    c = _curve(count, correct)._replace(poison=_poison(conf))
    n = c.w
    e = (count - correct).astype(jnp.float32)
    # Any order inside a bucket puts the error count within e(n - e)/n of the even spread at
    # every position, and its sum over the bucket's positions within e(n - e)/2 of it.
    spread = e * (n - e) / jnp.maximum(n, 1)
    dh = _selective._harmonic_diff(c.t0, c.t0 + n)
    aurc_bound = jnp.sum(jnp.where(n > 0, spread * dh, 0)) / c.total
    augrc_bound = jnp.sum(e * (n - e)) / 2 / (c.total * c.total)
    # At t = κN, j samples into a bucket, the error count lies in [max(0, j - (n - e)), min(j, e)]
    # above the errors of the more confident buckets.
    t = coverage.astype(jnp.float32) * c.total
    j = jnp.clip(t - c.t0, 0, n)
    even = j * c.slope
    dev = jnp.maximum(jnp.minimum(j, e) - even, even - jnp.maximum(0, j - (n - e)))
    inside = (n > 0) & (t > c.t0) & (t < c.t0 + n)
    out = {
        "ks": _ks(count, correct, conf, lo, c.total),
        "aurc": (_selective._aurc_weighted(c), aurc_bound),
        "augrc": (_selective._augrc(c), augrc_bound),
        "risk": (_selective._risk_at(c, coverage), jnp.max(jnp.where(inside, dev, 0)) / t),
    }
    # The exact curve lies between the envelopes, so its coverage at a risk lies between
    # theirs (the highest curve reaches the risk first).
    upper, lower = _envelopes(c, e)
    cov = _selective._coverage_at(c, risk)
    cov_lo, cov_hi = _selective._coverage_at(upper, risk), _selective._coverage_at(lower, risk)
    out["coverage"] = (cov, jnp.maximum(cov - cov_lo, cov_hi - cov))
    return {name: (value + c.poison, bound + c.poison) for name, (value, bound) in out.items()}


# ---------------------------------------------------------------------------------------------
# ECE-sweep.


class _Prefix:
    """Cumulative bucket sums with a leading 0, and the bucket ranges."""

    def __init__(self, count, correct, conf, lo):
        self.n, self.a, self.c, self.lo = count, correct, conf, lo
        self.cw, self.ca = _with_zero(jnp.stack([count, correct]))
        self.cc = _with_zero(conf)

    def at(self, pos: Array) -> tuple[Array, ...]:
        """At sorted positions ``pos`` (int32): correct-count bounds ``(lo, hi)`` and estimate,
        confidence-sum bounds ``(lo, hi)`` (the estimate is ``hi``, the proportional split)."""
        f = self.n.shape[0]
        # cw[j] <= pos < cw[j + 1]: pos cuts bucket j, k samples in (j = f, k = 0 at the end).
        j = jnp.searchsorted(self.cw, pos, side="right") - 1
        k = pos - self.cw[j]
        jb = jnp.minimum(j, f - 1)
        n, a = self.n[jb], self.a[jb]
        base_a = self.ca[j]
        a_lo = base_a + jnp.maximum(0, k - (n - a))
        a_hi = base_a + jnp.minimum(k, a)
        kf, nf = k.astype(jnp.float32), jnp.maximum(n, 1).astype(jnp.float32)
        a_est = base_a.astype(jnp.float32) + kf * a.astype(jnp.float32) / nf
        c_lo = self.cc[j] + kf * self.lo[jb]
        c_hi = self.cc[j] + kf * self.c[jb] / nf
        return a_lo.astype(jnp.float32), a_hi.astype(jnp.float32), a_est, c_lo, c_hi


def _lp(size: Array, gap: Array, total: Array, p: float) -> Array:
    live = size > 0
    term = jnp.where(live, size * (gap / jnp.where(live, size, 1)) ** p, 0)
    return (jnp.sum(term) / total) ** (1.0 / p)


@functools.partial(jax.jit, static_argnames=("p",))
def ece_sweep(count: Array, correct: Array, conf: Array, lo: Array, p: float):
    """``(value, bound, b)``: the sweep on the proportional split, and the largest distance to
    any value the exact sweep can take given the histogram (see the method's docstring)."""
    pre = _Prefix(count, correct, conf, lo)
    total_int = pre.cw[-1]
    total = total_int.astype(jnp.float32)
    max_bins = jnp.maximum(total_int, 1)
    m = jnp.arange(SWEEP_MAX_BINS + 1, dtype=jnp.int32)

    def bins(b):
        q, r = total_int // b, total_int % b
        mm = jnp.minimum(m, b)
        a_lo, a_hi, a_est, c_lo, c_hi = pre.at(mm * q + jnp.minimum(mm, r))
        size = jnp.diff(mm * q + jnp.minimum(mm, r)).astype(jnp.float32)
        sa_lo = jnp.maximum(a_lo[1:] - a_hi[:-1], 0)
        sa_hi = jnp.minimum(a_hi[1:] - a_lo[:-1], size)
        g_lo = a_lo[1:] - a_hi[:-1] - (c_hi[1:] - c_lo[:-1])
        g_hi = a_hi[1:] - a_lo[:-1] - (c_lo[1:] - c_hi[:-1])
        gap_est = jnp.abs(jnp.diff(a_est) - jnp.diff(c_hi))
        # |Σ(a - c)| over a bin is at most its size (a in {0, 1}, c in [0, 1]).
        gap_min = jnp.minimum(jnp.maximum(jnp.maximum(g_lo, -g_hi), 0), size)
        gap_max = jnp.minimum(jnp.maximum(jnp.abs(g_lo), jnp.abs(g_hi)), size)
        sa_est = jnp.diff(a_est)
        return size, sa_lo, sa_hi, sa_est, gap_est, gap_min, gap_max

    def monotone(b, size, lo_num, hi_num):
        # lo_num[m]/size[m] <= hi_num[m+1]/size[m+1] for every adjacent pair of the b bins.
        ok = _ratio_le(lo_num[:-1], size[:-1], hi_num[1:], size[1:])
        return jnp.all(ok | (m[:-2] >= b - 1))

    def body(st):
        b, cur, hist_b, hist_val, v_min, v_max, _ = st
        size, _, _, _, gap_est, gap_min, gap_max = cur
        nxt = bins(jnp.minimum(b + 1, SWEEP_MAX_BINS))
        size1, sa_lo1, sa_hi1, sa_est1 = nxt[:4]
        last = b >= max_bins
        certain = monotone(b + 1, size1, sa_hi1, sa_lo1) & ~last
        possible = monotone(b + 1, size1, sa_lo1, sa_hi1) & ~last
        approx = monotone(b + 1, size1, sa_est1, sa_est1) & ~last
        # b is a possible exact b* unless b + 1 is monotone for every order.
        candidate = ~certain
        v_min = jnp.where(candidate, jnp.minimum(v_min, _lp(size, gap_min, total, p)), v_min)
        v_max = jnp.where(candidate, jnp.maximum(v_max, _lp(size, gap_max, total, p)), v_max)
        first = (hist_b == 0) & ~approx
        hist_val = jnp.where(first, _lp(size, gap_est, total, p), hist_val)
        hist_b = jnp.where(first, b, hist_b)
        done = ~possible | (b >= SWEEP_MAX_BINS)
        return b + 1, nxt, hist_b, hist_val, v_min, v_max, done

    inf = jnp.float32(jnp.inf)
    one = jnp.int32(1)
    init = (one, bins(one), jnp.int32(0), jnp.float32(0), inf, -inf, jnp.bool_(False))
    b, _, hist_b, hist_val, v_min, v_max, _ = jax.lax.while_loop(lambda st: ~st[-1], body, init)
    capped = (b > SWEEP_MAX_BINS) & (max_bins > SWEEP_MAX_BINS)
    bound = jnp.maximum(hist_val - v_min, v_max - hist_val)
    bound = jnp.where(capped | (hist_b == 0), inf, bound)
    poison = _poison(conf)
    return hist_val + poison, bound + poison, hist_b
