"""The documentation site builds with warnings as errors, and covers every public name.

One Sphinx build (about two minutes on two CPU cores, most of it the executed tutorials) into a
temporary folder; nothing is cached between runs. ``-W`` makes a broken cross-reference, a
malformed docstring, a public name without an API entry (docs/conf.py checks ``__all__``) or a
failing tutorial cell an error.
"""

import importlib
import inspect
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"

PUBLIC_MODULES = (
    "calib_jax",
    "calib_jax.losses",
    "calib_jax.metrics",
    "calib_jax.calibrators",
    "calib_jax.plotting",
    "calib_jax.validation",
    "calib_jax.integrations.nnx",
    "calib_jax.integrations.clu",
)
PAGES = (
    "index",
    "conventions",
    "performance",
    "changelog",
    "api/index",
    "api/losses",
    "api/metrics",
    "api/calibrators",
    "api/plotting",
    "api/validation",
    "api/integrations",
)
# Figures each tutorial draws: one image per figure (a figure shown twice, or as a text repr
# when the notebook has no inline backend, fails).
FIGURES = {"calibrate_nnx": 1, "which_metric": 2, "compare_calibrators": 2}
TUTORIALS = (*FIGURES, "sharded_evaluation")


def _build(out: Path) -> Path:
    command = [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
    proc = subprocess.run(
        [*command, "-d", str(out / "doctrees"), str(DOCS), str(out / "html")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert proc.returncode == 0, proc.stdout[-5000:] + proc.stderr[-20000:]
    return out / "html"


def _public_names():
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        for name in module.__all__:
            if not inspect.ismodule(getattr(module, name)):
                yield f"{module_name}.{name}"


def test_docs_conf_lists_the_same_public_modules():
    text = (DOCS / "conf.py").read_text()
    block = re.search(r"PUBLIC_MODULES = \((.*?)\)", text, flags=re.S).group(1)
    assert tuple(re.findall(r'"([\w.]+)"', block)) == PUBLIC_MODULES


def test_docs_build_with_warnings_as_errors(tmp_path):
    # One test, one build: under pytest-xdist separate tests could each build the site.
    site = _build(tmp_path)
    _check_pages_exist(site)
    _check_every_public_name_has_an_api_page(site)
    _check_api_pages_render_docstrings(site)
    _check_tutorials_ran_and_drew_their_figures(site)


def _check_pages_exist(site):
    for page in (*PAGES, *(f"tutorials/{t}" for t in TUTORIALS)):
        html = (site / f"{page}.html").read_text()
        assert "<h1>" in html, page


def _check_every_public_name_has_an_api_page(site):
    names = list(_public_names())
    assert len(names) > 60
    missing = []
    for qualified in names:
        page = site / "api" / "generated" / f"{qualified}.html"
        if not page.is_file() or f'id="{qualified}"' not in page.read_text():
            missing.append(qualified)
    assert not missing, f"public names without an API page: {missing}"


def _check_api_pages_render_docstrings(site):
    html = (site / "api" / "generated" / "calib_jax.metrics.ece.html").read_text()
    assert "Expected calibration error" in html
    assert 'class="math' in html  # the formula went through the math extension
    assert "Parameters" in html and "Returns" in html  # napoleon parsed the Google sections
    assert "ndarray | bool" not in html  # signatures keep the ArrayLike alias


def _check_tutorials_ran_and_drew_their_figures(site):
    for name, count in FIGURES.items():
        html = (site / "tutorials" / f"{name}.html").read_text()
        images = re.findall(r'<img [^>]*src="([^"]+\.png)"', html)
        assert len(images) == count, (name, images)
        assert "&lt;Figure size" not in html, name
        for src in images:
            assert (site / "tutorials" / src).stat().st_size > 10_000, (name, src)
    sharded = (site / "tutorials" / "sharded_evaluation.html").read_text()
    assert "CpuDevice(id=7)" in sharded  # the kernel really had eight devices


def test_home_page_example_runs():
    text = (DOCS / "index.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert blocks
    for block in blocks:
        exec(compile(block, "docs/index.md", "exec"), {})


def test_readme_says_how_to_build_the_docs():
    readme = (ROOT / "README.md").read_text()
    assert re.search(r"python -m sphinx -W --keep-going -b html docs \S+", readme)
