"""Sphinx configuration for the flask-plainqueue docs (built with ``-W``)."""

from __future__ import annotations

import configparser
import os
import socket
from pathlib import Path

DOCS = Path(__file__).parent
ROOT = DOCS.parent

# The version lives in setup.cfg only.
_setup = configparser.ConfigParser()
_setup.read(ROOT / "setup.cfg")

project = "flask-plainqueue"
author = "flask-plainqueue developers"
copyright = f"2026, {author}"
release = _setup["metadata"]["version"]
version = ".".join(release.split(".")[:2])

extensions = [
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
]

exclude_patterns = ["_build", "benchmarks/**", "examples/**"]

autodoc_typehints = "description"
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True}
autoclass_content = "class"

_INTERSPHINX = {
    "python": ("https://docs.python.org/3/", None),
    "flask": ("https://flask.palletsprojects.com/en/stable/", None),
    "flask_sqlalchemy": ("https://flask-sqlalchemy.readthedocs.io/en/stable/", None),
    "sqlalchemy": ("https://docs.sqlalchemy.org/en/20/", None),
}


def _intersphinx_enabled() -> bool:
    """Whether to fetch the inventories: ``PLAINQUEUE_DOCS_INTERSPHINX=0`` or ``1``
    decides; otherwise only when docs.python.org is reachable, so that an offline
    ``sphinx-build -W`` does not fail on the unreachable inventories (links to
    other projects' docs then render as plain code)."""
    setting = os.environ.get("PLAINQUEUE_DOCS_INTERSPHINX")
    if setting in ("0", "1"):
        return setting == "1"
    try:
        socket.create_connection(("docs.python.org", 443), timeout=3).close()
    except OSError:
        return False
    return True


intersphinx_mapping = _INTERSPHINX if _intersphinx_enabled() else {}

html_theme = "furo"
html_title = f"flask-plainqueue {release}"
# The dashboard page's screenshots.
html_static_path = ["_static"]
