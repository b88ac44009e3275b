"""Backend-keyed performance thresholds: every size cut-off by which a hot path chooses between
two exact formulations of the same quantity, in one place.

The values were measured on XLA:CPU (``benchmarks/``; the reasons are in the git history of the
modules using them). On any other backend (GPU, TPU, ...) the plain formulations are used until
someone measures there: they are the reference paths that the tests compare the tuned ones with,
so both give the same numbers; only the speed differs.

The choice is made when a function is traced, from ``jax.default_backend()``. :func:`override`
forces one table (for tests and for measuring another backend's table).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import NamedTuple

import jax


class Tuning(NamedTuple):
    """Thresholds of one backend.

    Attributes:
      fused_first_max: decide first-maximum correctness without ``argmax`` (a variadic reduction
        that XLA:CPU runs about 10x slower than ``max`` on wide rows); False: ``argmax``.
      unroll_max_columns: rows of at most this many columns are reduced column by column, as one
        fused elementwise loop over rows (XLA:CPU's reductions along a short minor axis are
        slow); 0 turns this off.
      recheck_min_scores: from this many scores ``N·K`` on (and for rows wider than
        ``unroll_max_columns``), ties of the maximum are decided by re-reading only the rows
        that may hold one, instead of one more pass over all rows.
      recheck_max_fraction: ... unless more than this fraction of the rows needs a re-read.
      select_min_samples: AdaECE finds its equal-mass boundaries by two histogram passes
        instead of a sort from this many samples on.
      matvec_max_classes: label smoothing reads ``mean_k z_k`` as a matrix-vector product up
        to this many classes, as a row sum above.
      materialise_top_label: the binned metrics on narrow ``[N, K]`` probabilities compute the
        per-sample confidence and correctness once, inside a conditional that the compiler does
        not fuse through. XLA:CPU otherwise recomputes that cheap elementwise pass inside each
        of its three consumers (bin, correct slot, confidence offset), reading the
        probabilities three times (``optimization_barrier`` does not stop it).
      max_by_bits: the probability check of wide float32 rows takes each row's maximum as the
        unsigned maximum of the bit patterns, in one reduction with the row sum (XLA:CPU runs a
        float ``max`` reduction at about half the speed of a sum, and does not fuse sibling
        reductions); False: plain ``min``, ``max`` and ``sum``.
    """

    fused_first_max: bool
    unroll_max_columns: int
    recheck_min_scores: int
    recheck_max_fraction: float
    select_min_samples: int
    matvec_max_classes: int
    materialise_top_label: bool
    max_by_bits: bool


# Measured on XLA:CPU (2-core x86-64; benchmarks/RESULTS.md): the first-maximum and
# probability-check formulations at 1M x 10, 100k x 100 and 20k x 1000; the recheck's loop costs
# 2-2.6x per score what one pass does, so a full pass wins from ~40% of the rows on; the
# 2^16-bucket histogram of AdaECE beats the sort from 2^15 samples on; label smoothing's
# matrix-vector product beat the row sum up to K = 32 (1.9 vs 3.3 ms at K = 10, 2.6 vs 1.4 ms
# at K = 100, for 10^7 logits); one materialised top-label pass made jit(ece) on 1M x 10
# probabilities 0.61x as long (paired, loaded machine; benchmarks/RESULTS.md).
CPU = Tuning(
    fused_first_max=True,
    unroll_max_columns=64,
    recheck_min_scores=2**21,
    recheck_max_fraction=0.4,
    select_min_samples=2**15,
    matvec_max_classes=32,
    materialise_top_label=True,
    max_by_bits=True,
)

# The reference formulations: argmax, plain row reductions, a sort, a row sum.
PLAIN = Tuning(
    fused_first_max=False,
    unroll_max_columns=0,
    recheck_min_scores=2**62,
    recheck_max_fraction=0.0,
    select_min_samples=2**62,
    matvec_max_classes=0,
    materialise_top_label=False,
    max_by_bits=False,
)

_MEASURED = {"cpu": CPU}
_forced: Tuning | None = None


def current() -> Tuning:
    """The table of the default backend (or the one :func:`override` forces)."""
    if _forced is not None:
        return _forced
    return _MEASURED.get(jax.default_backend(), PLAIN)


@contextlib.contextmanager
def override(table: Tuning) -> Iterator[None]:
    """Use ``table`` inside the block. Compiled functions are cleared on entry and exit, since
    the choice is made at trace time and ``jit`` caches traces."""
    global _forced
    previous = _forced
    jax.clear_caches()
    _forced = table
    try:
        yield
    finally:
        _forced = previous
        jax.clear_caches()
