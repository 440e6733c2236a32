"""Sphinx configuration of the flask-rbac-abac documentation (``make docs``)."""

from __future__ import annotations

import sys
from importlib.metadata import version as dist_version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # idp_app and example_service are not installed, only importable

project = "flask-rbac-abac"
author = "the flask-rbac-abac authors"
copyright = "the flask-rbac-abac authors"
release = dist_version("flask-rbac-abac")
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.viewcode",
    "sphinxcontrib.openapi",
]

source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build"]
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 3

autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": True}

# Off on purpose: the reference follows docstrings other changes rewrite; a missing target for a
# type in a signature must not break the build. Real errors (bad markup, missing files) still do.
nitpicky = False

html_theme = "furo"
html_title = f"flask-rbac-abac {release}"
