"""chex in the tests: every public metric, loss and calibrator under ``chex.variants`` (with and
without ``jit``, each also under ``vmap``), no retracing across equal-shape batches
(``chex.assert_max_traces``), value checks under :func:`calib_jax.validation.checked` in both
modes, and the public pytrees (parameters, results, streaming state) through flax msgpack.

The cases enumerate ``__all__`` of ``calib_jax.metrics``, ``calib_jax.losses`` and
``calib_jax.calibrators``: a public name without a case fails
:func:`test_every_public_name_has_a_case`.
Each mode is compared with the other (``jit`` against eager and eager against ``jit``); the
float64 references of each quantity live in the test module of its family. All cases share
one shape (N = 16, K = 3) so that compiled functions are reused.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import chex
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from absl.testing import parameterized
from jax.experimental import checkify

import calib_jax as cj
from calib_jax import calibrators as cal
from calib_jax import losses as cl
from calib_jax import metrics as cm

N, K, BINS = 16, 3, 5


def _batch(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = (rng.normal(size=(N, K)) * 2).astype(np.float32)
    y = rng.integers(0, K, N).astype(np.int32)
    y[:K] = np.arange(K)  # every class present, so every fit sees two or more classes
    return z, y


BATCHES = [_batch(seed) for seed in range(3)]


def _bad(z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The batch with one label out of ``[0, K)``: a value check of every case."""
    y = y.copy()
    y[-1] = K
    return z, y


def _probs(z):
    return jax.nn.softmax(z, axis=-1)


def _binary(z, y):
    """Binary ``[N]`` positive-class probabilities and ``{0, 1}`` labels (``K`` -> out of range)."""
    return jax.nn.sigmoid(z[:, 0]), jnp.where(y == K, 2, y == 1).astype(y.dtype)


class Case(NamedTuple):
    fn: Callable[[Any, Any], Any]  # (logits [N, K], labels [N]) -> pytree of arrays
    returns: str | None = None  # the public result type's name, checked with isinstance
    message: str = "labels must lie"  # what checked() reports for _bad(...)


def _loss(loss_fn: Callable[..., Any]) -> Callable[[Any, Any], Any]:
    """A loss case: per-example values and the gradient of their sum (losses must be
    differentiable in every mode)."""

    def value_and_grad(z, y):
        def total(z):
            per_example = loss_fn(z, y)
            return jnp.sum(per_example), per_example

        (_, per_example), grad = jax.value_and_grad(total, has_aux=True)(z)
        return per_example, grad

    return value_and_grad


def _sigmoid_targets(z, y):
    # Multi-label 0/1 targets from the labels; an out-of-range label becomes a target of 2.
    return jax.nn.one_hot(y, K, dtype=z.dtype) + 2.0 * (y >= K)[:, None]


METRIC_CASES: dict[str, Case] = {
    "accuracy": Case(lambda z, y: cm.accuracy(_probs(z), y)),
    "ada_ece": Case(lambda z, y: cm.ada_ece(_probs(z), y, num_bins=BINS)),
    "augrc": Case(lambda z, y: cm.augrc(z, y, from_logits=True)),
    "aurc": Case(lambda z, y: cm.aurc(_probs(z), y)),
    "bootstrap": Case(
        lambda z, y: cm.bootstrap(
            cm.ece, _probs(z), y, key=jax.random.key(0), num_resamples=4, num_bins=BINS
        )
    ),
    "brier": Case(lambda z, y: cm.brier(_probs(z), y)),
    "brier_decomposition": Case(
        lambda z, y: cm.brier_decomposition(_probs(z), y), "BrierDecomposition"
    ),
    "calibration_refinement": Case(
        lambda z, y: cm.calibration_refinement(z, y), "CalibrationRefinement"
    ),
    "calibration_report": Case(
        lambda z, y: cm.calibration_report(z, y, from_logits=True, num_bins=BINS),
        "CalibrationReport",
    ),
    "classwise_ece": Case(lambda z, y: cm.classwise_ece(_probs(z), y, num_bins=BINS)),
    "coverage_at_risk": Case(lambda z, y: cm.coverage_at_risk(_probs(z), y, risk=0.4)),
    "debiased_l2_ece": Case(lambda z, y: cm.debiased_l2_ece(_probs(z), y, num_bins=BINS)),
    "ece": Case(lambda z, y: cm.ece(_probs(z), y, num_bins=BINS)),
    "ece_sweep": Case(lambda z, y: cm.ece_sweep(_probs(z), y)),
    "ks_error": Case(lambda z, y: cm.ks_error(_probs(z), y)),
    "lp_ece": Case(lambda z, y: cm.lp_ece(z, y, num_bins=BINS, from_logits=True)),
    "mce": Case(lambda z, y: cm.mce(_probs(z), y, num_bins=BINS)),
    "nll": Case(lambda z, y: cm.nll(z, y, from_logits=True)),
    "overconfidence_error": Case(lambda z, y: cm.overconfidence_error(_probs(z), y, num_bins=BINS)),
    "reliability_diagram": Case(
        lambda z, y: cm.reliability_diagram(_probs(z), y, num_bins=BINS), "ReliabilityDiagram"
    ),
    "score_decomposition": Case(
        lambda z, y: cm.score_decomposition(*_binary(z, y)), "ScoreDecomposition"
    ),
    "selective_risk": Case(lambda z, y: cm.selective_risk(_probs(z), y, coverage=0.5)),
    "skce": Case(lambda z, y: cm.skce(_probs(z), y)),
    "smooth_ece": Case(lambda z, y: cm.smooth_ece(_probs(z), y)),
    "smooth_reliability_diagram": Case(
        lambda z, y: cm.smooth_reliability_diagram(z, y, num_points=20, from_logits=True),
        "SmoothReliabilityDiagram",
    ),
    "underconfidence_error": Case(
        lambda z, y: cm.underconfidence_error(_probs(z), y, num_bins=BINS)
    ),
    # The streaming state: from_batch, update (merge) and compute, in one function.
    "CalibrationState": Case(
        lambda z, y: (
            cm.CalibrationState.empty(K, num_bins=BINS)
            .update(z[: N // 2], y[: N // 2], from_logits=True)
            .update(_probs(z[N // 2 :]), y[N // 2 :])
            .compute()
        ),
        "CalibrationReport",
    ),
    "SmoothECEState": Case(
        lambda z, y: (
            cm.SmoothECEState.empty()
            .update(z[: N // 2], y[: N // 2], from_logits=True)
            .update(_probs(z[N // 2 :]), y[N // 2 :])
            .compute(bandwidth=0.1)
        )
    ),
}


def _adafocal_update(z, y):
    sums, edges = cl.adafocal_validation_sums(z, y, num_bins=BINS)
    return cl.adafocal_update(cl.adafocal_init(BINS), sums, edges=edges)


LOSS_CASES: dict[str, Case] = {
    "adafocal_loss": Case(
        _loss(lambda z, y: cl.adafocal_loss(z, y, state=cl.adafocal_init(BINS, gamma=2.0)))
    ),
    "adafocal_update": Case(_adafocal_update, "AdaFocalState"),
    "adafocal_validation_sums": Case(lambda z, y: cl.adafocal_validation_sums(z, y, num_bins=BINS)),
    "adaptive_focal_loss": Case(_loss(cl.adaptive_focal_loss)),
    "brier_score": Case(_loss(cl.brier_score)),
    "cross_entropy": Case(_loss(cl.cross_entropy)),
    "dca_penalty": Case(_loss(cl.dca_penalty)),
    "dual_focal_loss": Case(_loss(cl.dual_focal_loss)),
    "entropy_regularized_cross_entropy": Case(
        _loss(functools.partial(cl.entropy_regularized_cross_entropy, beta=0.1))
    ),
    "focal_loss": Case(_loss(cl.focal_loss)),
    "label_smoothing_cross_entropy": Case(_loss(cl.label_smoothing_cross_entropy)),
    "logit_norm_cross_entropy": Case(_loss(cl.logit_norm_cross_entropy)),
    "margin_label_smoothing": Case(_loss(cl.margin_label_smoothing)),
    "mdca_penalty": Case(_loss(cl.mdca_penalty)),
    "mmce": Case(_loss(functools.partial(cl.mmce, weighted=True))),
    "poly1_cross_entropy": Case(_loss(cl.poly1_cross_entropy)),
    "scalar_objective": Case(_loss(cl.scalar_objective(cl.focal_loss, mmce_weight=2.0))),
    "sigmoid_focal_loss": Case(
        _loss(lambda z, y: cl.sigmoid_focal_loss(z, _sigmoid_targets(z, y))),
        message="targets must lie",
    ),
}


class CalibratorCase(NamedTuple):
    make: Callable[[], cal.Calibrator]
    params: type
    binary: bool = False  # fit on binary [N] input (sigmoid of the first logit column)


CALIBRATOR_CASES: dict[str, CalibratorCase] = {
    "bbq": CalibratorCase(cal.bbq, cal.BBQParams),
    "beta_calibration": CalibratorCase(
        functools.partial(cal.beta_calibration, max_iter=20), cal.BetaParams
    ),
    "dirichlet_calibration": CalibratorCase(
        functools.partial(cal.dirichlet_calibration, lambdas=(1e-2, 1.0), num_folds=2, max_iter=50),
        cal.DirichletParams,
    ),
    "ensemble_temperature_scaling": CalibratorCase(
        cal.ensemble_temperature_scaling, cal.EnsembleTemperatureParams
    ),
    "histogram_binning": CalibratorCase(
        functools.partial(cal.histogram_binning, num_bins=BINS), cal.HistogramBinningParams
    ),
    "isotonic_regression": CalibratorCase(cal.isotonic_regression, cal.IsotonicParams),
    "matrix_scaling": CalibratorCase(
        functools.partial(cal.matrix_scaling, l2=1e-2, max_iter=50), cal.MatrixScalingParams
    ),
    "platt_scaling": CalibratorCase(cal.platt_scaling, cal.PlattParams, binary=True),
    "temperature_scaling": CalibratorCase(cal.temperature_scaling, cal.TemperatureParams),
    "vector_scaling": CalibratorCase(
        functools.partial(cal.vector_scaling, max_iter=50), cal.VectorScalingParams
    ),
    "venn_abers": CalibratorCase(cal.venn_abers, cal.VennAbersParams, binary=True),
}

# Calibrator-module functions that are not constructors: plain cases.
CALIBRATOR_FUNCTION_CASES: dict[str, Case] = {
    "calibrate_and_report": Case(
        lambda z, y: cal.calibrate_and_report(
            cal.temperature_scaling(),
            z[: N // 2],
            y[: N // 2],
            z[N // 2 :],
            y[N // 2 :],
            num_bins=BINS,
        ),
        "CalibrationResult",
    ),
    "venn_abers_interval": Case(
        lambda z, y: cal.venn_abers_interval(
            cal.venn_abers().fit(*_binary(z, y)), _binary(z, y)[0]
        ),
    ),
}

FUNCTION_CASES = {**METRIC_CASES, **LOSS_CASES, **CALIBRATOR_FUNCTION_CASES}

# Public functions without data arguments, run inside the case named (in both modes).
CALLED_IN_CASE = {"adafocal_init": "adafocal_update"}

# Public types that no function case returns, with how the test builds one.
TYPE_BUILDERS: dict[str, Callable[[], Any]] = {
    "BinSums": lambda: cm.BinSums(
        jnp.arange(BINS, dtype=jnp.int32), jnp.zeros(BINS, jnp.int32), jnp.ones(BINS)
    ),
    "Calibrator": cal.temperature_scaling,
}

TOL = {"rtol": 1e-5, "atol": 1e-6}
FIT_TOL = {"rtol": 1e-4, "atol": 1e-5}  # iterative fits: jit and eager round differently


_EAGER: dict[str, Any] = {}


def _eager(name: str) -> Any:
    """The case on batch 0 without ``jit`` (the eager variant's result when it ran first)."""
    if name not in _EAGER:
        _EAGER[name] = FUNCTION_CASES[name].fn(*(jnp.asarray(a) for a in BATCHES[0]))
    return _EAGER[name]


@functools.cache
def _counted(name: str) -> Callable[..., Any]:
    """The case wrapped in ``chex.assert_max_traces(n=1)``: one object per case, so that every
    ``jax.jit`` of it shares one trace and one compilation in the whole session."""
    fn = FUNCTION_CASES[name].fn

    def evaluate(z, y):
        return fn(z, y)

    # chex counts traces per (call stack, source, __name__): a distinct name per case.
    evaluate.__name__ = f"evaluate_{name}"
    return chex.assert_max_traces(evaluate, n=1)


def _fit_data(case: CalibratorCase, index: int) -> tuple[Any, Any, Any]:
    """``(x, labels, x_test)`` for a calibrator case."""
    z, y = (jnp.asarray(a) for a in BATCHES[index])
    z_test = jnp.asarray(BATCHES[2][0])
    if case.binary:
        x, y = _binary(z, y)
        x_test, _ = _binary(z_test, y)
        if case.params is cal.PlattParams:  # Platt takes binary logits
            x, x_test = z[:, 0], z_test[:, 0]
        return x, y, x_test
    if case.make().inputs == "probs":
        return _probs(z), y, _probs(z_test)
    return z, y, z_test


@functools.cache
def _calibrator(name: str) -> cal.Calibrator:
    """One calibrator object per case, so that every ``jax.jit`` of its fit or apply shares
    one compilation."""
    return CALIBRATOR_CASES[name].make()


@functools.cache
def _vfit(name: str) -> Callable[..., Any]:
    return jax.vmap(_calibrator(name).fit)


def _fit_pair(case: CalibratorCase) -> tuple[Any, Any]:
    """Two stacked fit sets: batch 0, and batch 1 with every label out of range."""
    (x0, y0, _), (x1, y1, _) = _fit_data(case, 0), _fit_data(case, 1)
    return jnp.stack([x0, x1]), jnp.stack([y0, jnp.full_like(y1, K)])


_EAGER_FITS: dict[str, tuple[Any, Any]] = {}


def _eager_fit(name: str) -> tuple[Any, Any]:
    """``(params, apply(params, x_test))`` without ``jit`` on batch 0."""
    if name not in _EAGER_FITS:
        x, y, x_test = _fit_data(CALIBRATOR_CASES[name], 0)
        params = _calibrator(name).fit(x, y)
        _EAGER_FITS[name] = params, _calibrator(name).apply(params, x_test)
    return _EAGER_FITS[name]


def _public(name: str) -> type:
    """The public type ``name`` from ``calib_jax.metrics``, ``.losses`` or ``.calibrators``."""
    (found,) = {getattr(m, name) for m in (cm, cl, cal) if name in m.__all__}
    return found


def _index(tree: Any, i: int) -> Any:
    return jax.tree.map(lambda a: a[i], tree)


def _floats(tree: Any) -> list[Any]:
    return [leaf for leaf in jax.tree.leaves(tree) if jnp.issubdtype(leaf.dtype, jnp.floating)]


def test_every_public_name_has_a_case():
    assert set(CALLED_IN_CASE.values()) <= set(FUNCTION_CASES)
    covered = set(FUNCTION_CASES) | set(CALIBRATOR_CASES) | set(TYPE_BUILDERS)
    covered |= set(CALLED_IN_CASE)
    covered |= {case.returns for case in FUNCTION_CASES.values() if case.returns}
    covered |= {case.params.__name__ for case in CALIBRATOR_CASES.values()}
    public = set(cm.__all__) | set(cl.__all__) | set(cal.__all__)
    missing = sorted(public - covered)
    assert not missing, f"public names without a case in tests/test_chex.py: {missing}"
    assert not covered - public, f"cases for names that are not public: {covered - public}"


@functools.cache
def _batched(name: str) -> Callable[..., Any]:
    """``vmap`` of the trace-counting case: what the ``jit`` variant compiles, one object per
    case so that every ``jax.jit`` of it shares one compilation."""
    return jax.vmap(_counted(name))


# Batches of two (a good batch, then the bad one), all of one shape: no retrace between them.
PAIRS = [
    tuple(np.stack(pair) for pair in zip(batch, _bad(*BATCHES[0]), strict=True))
    for batch in BATCHES
]


class FunctionVariantsTest(chex.TestCase):
    """Every metric, loss (value and gradient) and calibrator-module function in both modes.

    Eager: the result equals the compiled one, and a bad label raises ``ValueError`` at once.
    ``jit``: one compiled ``vmap(case)`` runs on three stacked pairs (a good batch, a bad
    batch) of one shape with a single trace (``chex.assert_max_traces``); the bad batch gives
    NaN, the good batch the eager result. One compilation per case keeps the module fast;
    ``vmap`` runs compiled only (eagerly it applies the same batching rules op by op).
    ``checkify`` under ``jit`` is :func:`test_checked_raises_under_jit`.
    """

    @chex.variants(without_jit=True, with_jit=True)
    @parameterized.named_parameters((name, name) for name in sorted(FUNCTION_CASES))
    def test_modes_agree(self, name):
        case = FUNCTION_CASES[name]
        if self.variant.type == chex.ChexVariantType.WITHOUT_JIT:
            out = self.variant(case.fn)(*(jnp.asarray(a) for a in BATCHES[0]))
            _EAGER.setdefault(name, out)
            compiled = jax.jit(_batched(name))(*PAIRS[0])
            chex.assert_trees_all_close(out, _index(compiled, 0), **TOL)
            with pytest.raises(ValueError, match=case.message):
                self.variant(case.fn)(*(jnp.asarray(a) for a in _bad(*BATCHES[0])))
        else:
            fn = self.variant(_batched(name))
            for i, pair in enumerate(PAIRS):  # one trace for all three (assert_max_traces)
                outs = fn(*pair)
                chex.assert_tree_shape_prefix(outs, (2,))
                assert any(np.isnan(leaf).any() for leaf in _floats(_index(outs, 1)))
                if i == 0:
                    out = _index(outs, 0)
                    chex.assert_trees_all_close(out, _eager(name), **TOL)
        if case.returns is not None:
            assert isinstance(out, _public(case.returns))
        # Results are float32 (metrics accumulate in float32 or wider whatever the input).
        for leaf in _floats(out):
            chex.assert_type(leaf, jnp.float32)


@pytest.mark.parametrize("name", ["ece", "ece_sweep", "focal_loss"])
def test_checked_raises_under_jit(name):
    safe = cj.validation.checked(jax.jit(FUNCTION_CASES[name].fn))
    # checkify's JaxRuntimeError is a ValueError, like the eager checks' error.
    with pytest.raises(ValueError, match=FUNCTION_CASES[name].message) as info:
        safe(*_bad(*BATCHES[0]))
    assert isinstance(info.value, checkify.JaxRuntimeError)


def test_assert_max_traces_catches_a_retrace():
    chex.clear_trace_counter()

    def evaluate(p, y):
        return cm.ece(p, y, num_bins=BINS)

    evaluate = jax.jit(chex.assert_max_traces(evaluate, n=1))
    z, y = BATCHES[0]
    evaluate(_probs(z), y)
    with pytest.raises(AssertionError, match="traced > 1 times"):
        evaluate(_probs(z[:-1]), y[:-1])


class CalibratorVariantsTest(chex.TestCase):
    """Every calibrator's fit and apply in both modes.

    Eager: fit and apply equal the compiled ones; bad labels raise ``ValueError`` at once.
    ``jit``: one compiled ``vmap(fit)`` over two stacked validation sets (the second with bad
    labels) gives the eager parameters for the first and NaN parameters for the second.
    """

    @chex.variants(without_jit=True, with_jit=True)
    @parameterized.named_parameters((name, name) for name in sorted(CALIBRATOR_CASES))
    def test_fit_and_apply_modes_agree(self, name):
        case, calibrator = CALIBRATOR_CASES[name], _calibrator(name)
        x, y, x_test = _fit_data(case, 0)
        if self.variant.type == chex.ChexVariantType.WITHOUT_JIT:
            params = self.variant(calibrator.fit)(x, y)
            probs = self.variant(calibrator.apply)(params, x_test)
            _EAGER_FITS.setdefault(name, (params, probs))
            compiled = _index(jax.jit(_vfit(name))(*_fit_pair(case)), 0)
            chex.assert_trees_all_close(params, compiled, **FIT_TOL)
            chex.assert_trees_all_close(
                probs, jax.jit(calibrator.apply)(compiled, x_test), **FIT_TOL
            )
            with pytest.raises(ValueError, match="labels must lie"):
                self.variant(calibrator.fit)(x, jnp.full_like(y, K))
        else:
            both = self.variant(_vfit(name))(*_fit_pair(case))
            chex.assert_tree_shape_prefix(both, (2,))
            assert all(np.isnan(leaf).all() for leaf in _floats(_index(both, 1)))
            params = _index(both, 0)
            expected_params, expected_probs = _eager_fit(name)
            chex.assert_trees_all_close(params, expected_params, **FIT_TOL)
            probs = self.variant(calibrator.apply)(params, x_test)
            chex.assert_trees_all_close(probs, expected_probs, **FIT_TOL)
        assert isinstance(params, case.params)
        chex.assert_shape(probs, (N, 2 if case.binary else K))


@pytest.mark.parametrize(
    "name", ["bbq", "beta_calibration", "histogram_binning", "isotonic_regression", "venn_abers"]
)
def test_binning_apply_checks_the_params_pytree(name):
    params, probs = _eager_fit(name)
    x_test = _fit_data(CALIBRATOR_CASES[name], 0)[2]
    stacked = jax.tree.map(lambda a: jnp.stack([a, a]), params)
    # chex.assert_tree_shape_prefix: every leaf starts with the fitted columns.
    with pytest.raises(ValueError, match=r"not one fit.*jax\.vmap"):
        _calibrator(name).apply(stacked, x_test)
    vmapped = jax.vmap(_calibrator(name).apply, in_axes=(0, None))(stacked, x_test)
    chex.assert_trees_all_close(_index(vmapped, 1), probs, **TOL)


def _round_trip(tree: Any) -> Any:
    restored = flax.serialization.from_bytes(tree, flax.serialization.to_bytes(tree))
    assert type(restored) is type(tree)
    chex.assert_trees_all_equal_structs(restored, tree)
    chex.assert_trees_all_equal(restored, tree)
    return restored


@pytest.mark.parametrize("name", sorted(CALIBRATOR_CASES))
def test_calibrator_params_round_trip_through_msgpack(name):
    case = CALIBRATOR_CASES[name]
    params, probs = _eager_fit(name)
    restored = _round_trip(params)
    chex.assert_trees_all_close(
        _calibrator(name).apply(restored, _fit_data(case, 0)[2]), probs, **TOL
    )


def test_result_types_and_state_round_trip_through_msgpack():
    z, y = (jnp.asarray(a) for a in BATCHES[0])
    state = cm.CalibrationState.from_batch(z, y, num_bins=BINS, from_logits=True)
    restored = _round_trip(state)
    more = cm.CalibrationState.from_batch(*BATCHES[1], num_bins=BINS, from_logits=True)
    chex.assert_trees_all_close(restored.merge(more).compute(), state.merge(more).compute(), **TOL)
    for name in sorted(FUNCTION_CASES):
        if FUNCTION_CASES[name].returns is not None:
            _round_trip(_eager(name))
    _round_trip(TYPE_BUILDERS["BinSums"]())
    _round_trip(cm.SmoothECEState.from_batch(z, y, from_logits=True))


def test_params_restore_with_orbax(tmp_path):
    ocp = pytest.importorskip("orbax.checkpoint")
    params, _ = _eager_fit("matrix_scaling")
    with ocp.StandardCheckpointer() as checkpointer:
        checkpointer.save(tmp_path / "params", params)
        checkpointer.wait_until_finished()
        restored = checkpointer.restore(tmp_path / "params", params)
    assert isinstance(restored, cal.MatrixScalingParams)
    chex.assert_trees_all_equal(restored, params)
