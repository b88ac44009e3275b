"""Package-level checks: public API documented, lint clean, validation helpers."""

import inspect
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import calib_jax as cj
from calib_jax import _binning, _validation

ROOT = Path(__file__).resolve().parents[1]


def _public_callables():
    from calib_jax import plotting

    for mod in (cj.losses, cj.metrics, cj.calibrators, cj.validation, plotting):
        for name in getattr(mod, "__all__", []):
            yield f"{mod.__name__}.{name}", getattr(mod, name)


def test_every_public_name_is_documented():
    public = list(_public_callables())
    assert len(public) > 30
    missing = [name for name, obj in public if not inspect.getdoc(obj)]
    assert not missing, f"public names without a docstring: {missing}"


def _public_functions():
    for qualname, obj in _public_callables():
        if inspect.isfunction(obj):
            yield qualname, obj
        elif inspect.isclass(obj):
            for attr, member in vars(obj).items():
                if isinstance(member, classmethod | staticmethod):
                    member = member.__func__
                if not attr.startswith("_") and inspect.isfunction(member):
                    yield f"{qualname}.{attr}", member


def test_every_public_function_has_type_hints():
    functions = list(_public_functions())
    assert len(functions) > 30
    missing = []
    for qualname, fn in functions:
        sig = inspect.signature(fn)
        params = [
            p
            for p, spec in sig.parameters.items()
            if p not in ("self", "cls") and spec.annotation is inspect.Parameter.empty
        ]
        if params or sig.return_annotation is inspect.Signature.empty:
            missing.append((qualname, params))
    assert not missing, f"public functions without full type hints: {missing}"


def test_ruff_clean():
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "calib_jax", "tests", "benchmarks", "examples"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_core_package_has_only_core_dependencies():
    import tomllib

    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    names = sorted(d.split(">")[0].split("=")[0].split("<")[0].strip() for d in deps)
    assert names == ["chex", "jax", "jaxlib", "optax"]


def test_take_label_poisons_out_of_range():
    x = jnp.arange(6.0).reshape(2, 3)
    out = _validation.take_label(x, jnp.array([2, 0]))
    np.testing.assert_array_equal(out, [2.0, 3.0])
    bad = _validation.take_label(x, jnp.array([-1, 3]))
    assert np.isnan(np.asarray(bad)).all()


def test_check_value_eager_and_checked_under_jit():
    with pytest.raises(ValueError, match="labels must lie"):
        _validation.check_labels_in_range(jnp.array([0, 5]), 3)

    def f(labels):
        _validation.check_labels_in_range(labels, 3)
        return labels.sum()

    assert int(jax.jit(f)(jnp.array([0, 5]))) == 5  # unchecked jit: no error, no cost
    with pytest.raises(Exception, match="labels must lie"):
        cj.validation.checked(jax.jit(f))(jnp.array([0, 5]))
    assert int(cj.validation.checked(jax.jit(f))(jnp.array([0, 2]))) == 2


def test_check_probabilities():
    _validation.check_probabilities(jnp.array([[0.5, 0.5]]))
    with pytest.raises(ValueError, match="probabilities"):
        _validation.check_probabilities(jnp.array([[0.5, 0.6]]))
    with pytest.raises(ValueError, match="probabilities"):
        _validation.check_probabilities(jnp.array([[1.5, -0.5]]))
    with pytest.raises(ValueError, match="probabilities"):
        _validation.check_probabilities(jnp.array([[jnp.nan, 1.0]]))


@pytest.mark.parametrize("num_bins", [1, 2, 3, 10, 15, 100])
def test_bin_index_matches_exact_rational_rule(num_bins):
    from fractions import Fraction
    from math import ceil

    rng = np.random.default_rng(num_bins)
    edges = _binning.internal_edges(num_bins, np.dtype(np.float32))
    c = np.concatenate(
        [
            rng.random(2000).astype(np.float32),
            np.float32([0.0, 1.0, 0.2, 0.4, 0.6, 0.8, 1 / 3, 2 / 3]),
            edges,
            np.nextafter(edges, np.float32(2)),
            np.nextafter(edges, np.float32(-1)),
        ]
    ).astype(np.float32)
    expected = [max(0, ceil(Fraction(float(x)) * num_bins) - 1) for x in c]
    np.testing.assert_array_equal(
        np.asarray(_binning.bin_index(jnp.asarray(c), num_bins)), expected
    )
    # bf16 values are exactly representable in float32: same rule.
    cb = jnp.asarray(c[:200], jnp.bfloat16)
    expected_b = [
        max(0, ceil(Fraction(float(x)) * num_bins) - 1) for x in np.asarray(cb, np.float32)
    ]
    np.testing.assert_array_equal(np.asarray(_binning.bin_index(cb, num_bins)), expected_b)


def test_float32_point_two_is_in_bin_four_of_fifteen():
    idx = _binning.bin_index(jnp.float32([0.2, 0.4, 0.6, 0.8, 0.0, 1.0]), 15)
    np.testing.assert_array_equal(np.asarray(idx), [3, 6, 9, 12, 0, 14])


def test_num_bins_validated():
    with pytest.raises(ValueError):
        _binning.bin_index(jnp.zeros(3), 0)
    with pytest.raises(TypeError):
        _binning.bin_index(jnp.zeros(3), 2.5)
