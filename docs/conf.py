"""Sphinx configuration of the calib_jax documentation.

Build: ``python -m sphinx -W --keep-going -b html docs docs/_build/html`` (see the README).
Tutorials under ``tutorials/`` are MyST notebooks, executed on every build (nothing cached).
"""

from __future__ import annotations

import importlib
import inspect
import os
import re
import shutil
from pathlib import Path

import calib_jax

DOCS = Path(__file__).resolve().parent

project = "calib_jax"
author = "the calib_jax authors"
copyright = "2026, the calib_jax authors"
release = version = calib_jax.__version__

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.autosummary",
    "sphinx.ext.napoleon",
    "sphinx.ext.mathjax",
    "sphinx.ext.viewcode",
    "myst_nb",
]

# The public API: the modules whose ``__all__`` the reference must cover, name by name.
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

source_suffix = {".rst": "restructuredtext", ".md": "myst-nb"}
exclude_patterns = ["_build", "**.ipynb_checkpoints", "Thumbs.db", ".DS_Store"]
templates_path = ["_templates"]

# Every reference to a calib_jax object must resolve; names of other libraries are plain text
# (intersphinx is off: the build never reaches the network).
nitpicky = True
nitpick_ignore_regex = [
    (r"py:.*", r"(jax|jaxlib|numpy|np|jnp|optax|chex|flax|nnx|clu|matplotlib|typing)(\..*)?"),
    (r"py:.*", r"(Array|ArrayLike|DTypeLike|Any|Callable|Sequence|Mapping|Iterable|F|T)"),
    (r"py:.*", r"(collections\.abc|types|functools)\..*"),
    (r"py:.*", r"(int|float|bool|str|tuple|list|dict|None|NamedTuple|optional)"),
    (r"py:.*", r"(Axes|Figure|calib_jax\.validation\.F)"),
    # Private modules named in a docstring are shown as code, not linked.
    (r"py:.*", r"calib_jax(\.\w+)*\._\w+(\..*)?"),
]

autosummary_generate = True
autosummary_imported_members = True
autodoc_default_options = {"members": True, "show-inheritance": False}
autodoc_typehints = "signature"

autodoc_member_order = "bysource"
add_module_names = False
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False

myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence", "deflist"]
myst_heading_anchors = 3
nb_execution_mode = "force"
# Generous per cell: a CI machine running other tests beside the build is slow.
nb_execution_timeout = 600
# A failing cell is a warning (an error under -W) that names the cell; the build goes on, so
# --keep-going reports every failure at once.
nb_execution_raise_on_error = False
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "furo"
html_title = f"calib_jax {release}"
html_static_path: list[str] = []
html_theme_options = {"navigation_with_keys": True}

# The tutorials' kernels start with these (the sharding tutorial sets its own device count
# before importing JAX; the rest run on one CPU device).
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def _public_names() -> dict[str, list[str]]:
    names = {}
    for module_name in PUBLIC_MODULES:
        module = importlib.import_module(module_name)
        names[module_name] = list(getattr(module, "__all__", []))
    return names


def _fresh_generated(app) -> None:
    # Stubs of a removed name must not survive into the next build.
    shutil.rmtree(DOCS / "api" / "generated", ignore_errors=True)


_LISTED = re.compile(r"^[ ]+~?([A-Za-z_][\w.]*)[ ]*$", re.M)


def _check_api_coverage(app) -> None:
    """Warn (an error under ``-W``) for a public name that no API page lists."""
    from sphinx.util import logging

    logger = logging.getLogger("calib_jax.docs")
    listed: set[str] = set()
    for page in (DOCS / "api").glob("*.rst"):
        text = page.read_text()
        for block in re.finditer(r"^\.\. autosummary::\n((?:[ ]+.*\n|\n)+)", text, flags=re.M):
            # Entries are relative to the last ``currentmodule`` above the table.
            current = re.findall(r"^\.\. currentmodule:: ([\w.]+)", text[: block.start()], re.M)
            prefix = current[-1] if current else ""
            for entry in _LISTED.findall(block.group(1)):
                listed.add(entry if entry.startswith("calib_jax") else f"{prefix}.{entry}")
    for module_name, public in _public_names().items():
        for name in public:
            qualified = f"{module_name}.{name}"
            obj = getattr(importlib.import_module(module_name), name)
            if inspect.ismodule(obj):
                continue
            if qualified not in listed:
                logger.warning(
                    "public name %s has no entry in docs/api/ (add it to an autosummary "
                    "table of the page of %s)",
                    qualified,
                    module_name,
                )


def _check_docstring(app, what, name, obj, options, lines) -> None:
    if name.startswith("calib_jax") and not any(line.strip() for line in lines):
        from sphinx.util import logging

        logging.getLogger("calib_jax.docs").warning("%s %s has no docstring", what, name)


_SECTION = re.compile(
    r"^\s*(Args|Arguments|Returns|Yields|Raises|Examples|Example|References|Attributes|Note|"
    r"Notes|Warning|See Also):\s*$"
)


def _blank_line_before_sections(app, what, name, obj, options, lines) -> None:
    # A docstring assembled from a shared template may put "Args:" right under a paragraph;
    # docutils then reads the section as a block quote that ends without a blank line.
    i = 1
    while i < len(lines):
        if _SECTION.match(lines[i]) and lines[i - 1].strip():
            lines.insert(i, "")
            i += 1
        i += 1


def _public_by_short_name() -> dict[str, str]:
    by_name: dict[str, list[str]] = {}
    for module_name, public in _public_names().items():
        for name in public:
            by_name.setdefault(name, []).append(f"{module_name}.{name}")
    return {name: full[0] for name, full in by_name.items() if len(full) == 1}


def _resolve_public_name(app, env, node, contnode):
    """Link ``CalibrationReport`` or ``calib_jax.metrics._report.CalibrationReport`` (as type
    hints and short references in docstrings spell it) to its public page."""
    if node.get("refdomain") != "py":
        return None
    target = node["reftarget"].removeprefix("~")
    short = target.rsplit(".", 1)[-1]
    if "." in target and not target.startswith("calib_jax."):
        return None
    public = _public_by_short_name().get(short)
    if public is None or public == target:
        return None
    domain = env.get_domain("py")
    return domain.resolve_xref(
        env, node["refdoc"], app.builder, node["reftype"], public, node, contnode
    )


# JAX's ArrayLike is a union of eight types; signatures show its name instead.
# (autodoc_type_aliases renders "ArrayLike | None" as a TypeAliasForwardRef repr in Sphinx 9.)
_ARRAY_LIKE = re.compile(
    r"~?([\w.]+\.)?Array \| ~?(numpy\.)?ndarray \| ~?(numpy\.)?bool_? \| ~?(numpy\.)?number"
    r" \| bool \| int \| float \| complex"
)


def _short_array_like(app, what, name, obj, options, signature, return_annotation):
    if signature is None:
        return None
    return _ARRAY_LIKE.sub("ArrayLike", signature), return_annotation


def _skip_namedtuple_fields(app, what, name, obj, skip, options):
    # A NamedTuple's fields are documented in its docstring ("Attributes:"); the generated
    # "Alias for field number i" entries would describe them a second time.
    if what == "class" and (getattr(obj, "__doc__", "") or "").startswith("Alias for field"):
        return True
    return None


def setup(app):
    app.connect("autodoc-skip-member", _skip_namedtuple_fields)
    app.connect("builder-inited", _fresh_generated, priority=100)
    app.connect("builder-inited", _check_api_coverage, priority=900)
    app.connect("autodoc-process-docstring", _check_docstring)
    app.connect("autodoc-process-docstring", _blank_line_before_sections, priority=100)
    app.connect("missing-reference", _resolve_public_name)
    app.connect("autodoc-process-signature", _short_array_like)
